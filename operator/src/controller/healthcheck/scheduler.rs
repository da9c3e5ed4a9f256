//! The one probe scheduler of the operator: every HealthCheck's probes run from here, outside
//! the reconcile workers.
//!
//! - one task owns the [`Schedule`] (a heap of due times, no task or timer per check), wakes
//!   at the earliest due check and starts its probe as a task that first waits for one of
//!   `--health-probe-concurrency` permits, so a slow target never blocks another check's
//!   schedule or a reconcile;
//! - at most one probe per check is in flight; the next is scheduled when a probe starts
//!   (fixed rate), so a changed spec takes effect at the next probe;
//! - a check is forgotten when the reconcile removes it (invalid spec, refused target) or when
//!   its probe comes due and the object is gone from the watch (deleted) or has another uid;
//! - results feed the pure state machine and window; status is written at once on a state
//!   change or a refusal change and otherwise at most every `--health-status-interval`, never
//!   per probe; degradations and recoveries become Events (with `alert.cooldown`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use jiff::Timestamp;
use kube::core::DeserializeGuard;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::plan::{self, CheckPlan, ProbeRecord, TargetPlan, compose};
use super::target::{self, Resolved};
use crate::api::{CommonStatus, HealthCheck, HealthCheckStatus, HealthState, PreviewEnvironment};
use crate::context::Context;
use crate::controller::{publish, status};
use crate::health::probe::{ProbeLimits, ProbeRequest, Prober};
use crate::health::schedule::{self as sched, Schedule};
use crate::health::state::{Machine, Verdict, alert_due};
use crate::health::window::Window;
use crate::telemetry::{ProbeLabels, TransitionLabels};

/// `(namespace, name)`.
pub type CheckKey = (String, String);

/// How long a Service's endpoints are reused between probes.
const SERVICE_CACHE: Duration = Duration::from_secs(30);

/// The most figure refreshes (status writes without a state change) per second over every
/// check: with many checks each is refreshed less often, so the API server's load from
/// refreshes does not grow with the number of checks.
pub const MAX_REFRESH_WRITES_PER_SECOND: f64 = 10.0;

/// Pure: how often one check's figures are refreshed when `checks` checks are probed.
pub fn refresh_cadence(configured: Duration, checks: usize) -> Duration {
    configured.max(Duration::from_secs_f64(
        checks as f64 / MAX_REFRESH_WRITES_PER_SECOND,
    ))
}

struct Entry {
    plan: Arc<CheckPlan>,
    generation: Option<i64>,
    /// The conditions the reconcile decided.
    base: CommonStatus,
    machine: Machine,
    window: Window,
    last: Option<ProbeRecord>,
    in_flight: bool,
    last_write: Option<Instant>,
    last_alert: Option<Timestamp>,
    service: Option<(Instant, Resolved)>,
}

impl Entry {
    fn status(&self, now: Timestamp) -> HealthCheckStatus {
        compose(
            &self.base,
            self.generation,
            &self.machine,
            &self.window,
            self.last.as_ref(),
            now,
        )
    }
}

/// See the module docs. Cheap to clone.
#[derive(Clone)]
pub struct HealthScheduler {
    inner: Arc<Inner>,
}

struct Inner {
    checks: Mutex<HashMap<CheckKey, Entry>>,
    schedule: Mutex<Schedule<CheckKey>>,
    wake: Notify,
    permits: OnceLock<Arc<Semaphore>>,
    prober: OnceLock<Prober>,
    checks_store: OnceLock<Store<DeserializeGuard<HealthCheck>>>,
    previews: OnceLock<Store<DeserializeGuard<PreviewEnvironment>>>,
}

impl std::fmt::Debug for HealthScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let checks = self
            .inner
            .checks
            .lock()
            .map(|c| c.len())
            .unwrap_or_default();
        f.debug_struct("HealthScheduler")
            .field("checks", &checks)
            .finish()
    }
}

impl Default for HealthScheduler {
    fn default() -> Self {
        HealthScheduler {
            inner: Arc::new(Inner {
                checks: Mutex::default(),
                schedule: Mutex::default(),
                wake: Notify::new(),
                permits: OnceLock::new(),
                prober: OnceLock::new(),
                checks_store: OnceLock::new(),
                previews: OnceLock::new(),
            }),
        }
    }
}

impl HealthScheduler {
    /// The watch stores the scheduler reads (set once, when the controllers are built).
    pub fn set_stores(
        &self,
        checks: Store<DeserializeGuard<HealthCheck>>,
        previews: Store<DeserializeGuard<PreviewEnvironment>>,
    ) {
        let _ = self.inner.checks_store.set(checks);
        let _ = self.inner.previews.set(previews);
    }

    /// Registers or updates a check after a successful reconcile; returns the status to write.
    /// A new check resumes from its recorded status (a restart neither forgets an outage nor
    /// counts a transition twice) and probes first at a random point within one interval.
    pub fn upsert(
        &self,
        key: CheckKey,
        plan: CheckPlan,
        generation: Option<i64>,
        base: CommonStatus,
        recorded: Option<&HealthCheckStatus>,
    ) -> HealthCheckStatus {
        let plan = Arc::new(plan);
        let now = Instant::now();
        let mut checks = self.inner.checks.lock().expect("checks lock");
        let reschedule = match checks.get_mut(&key) {
            Some(e) if e.plan.uid == plan.uid => {
                let reschedule = e.plan.reschedules(&plan);
                if e.plan.target != plan.target {
                    e.service = None;
                }
                e.plan = plan.clone();
                e.generation = generation;
                e.base = base;
                reschedule
            }
            _ => {
                checks.insert(
                    key.clone(),
                    Entry {
                        plan: plan.clone(),
                        generation,
                        base,
                        machine: Machine::resume(recorded),
                        window: Window::default(),
                        last: None,
                        in_flight: false,
                        last_write: None,
                        last_alert: None,
                        service: None,
                    },
                );
                true
            }
        };
        let status = checks[&key].status(Timestamp::now());
        drop(checks);
        if reschedule {
            let mut schedule = self.inner.schedule.lock().expect("schedule lock");
            if plan.suspend {
                schedule.remove(&key);
            } else {
                let unit: f64 = rand::random();
                schedule.set(key, sched::first_due(now, plan.interval, unit));
            }
            drop(schedule);
            self.inner.wake.notify_one();
        }
        status
    }

    /// Forgets a check (it is invalid, refused or gone); its metrics series go too.
    pub fn remove(&self, ctx: &Context, key: &CheckKey) {
        let removed = self
            .inner
            .checks
            .lock()
            .expect("checks lock")
            .remove(key)
            .is_some();
        self.inner
            .schedule
            .lock()
            .expect("schedule lock")
            .remove(key);
        if removed {
            ctx.metrics.health.set_up(&key.0, &key.1, None);
        }
    }

    /// The state of a check as this process knows it (tests, the preview binding).
    pub fn state(&self, key: &CheckKey) -> Option<HealthState> {
        self.inner
            .checks
            .lock()
            .expect("checks lock")
            .get(key)
            .map(|e| e.machine.state)
    }

    /// Runs the scheduler until `shutdown` resolves. In-flight probes finish on their own
    /// (each is bounded by its timeout).
    pub async fn run(self, ctx: Context, shutdown: impl std::future::Future<Output = ()>) {
        let settings = &ctx.config.settings.health;
        let permits = self
            .inner
            .permits
            .get_or_init(|| Arc::new(Semaphore::new(settings.probe_concurrency)))
            .clone();
        let prober = self
            .inner
            .prober
            .get_or_init(|| {
                Prober::new(
                    crate::net::Guard::from(&ctx.config.settings.network),
                    ProbeLimits::default(),
                )
            })
            .clone();
        tokio::pin!(shutdown);
        info!(
            concurrency = settings.probe_concurrency,
            "HealthCheck probe scheduler started"
        );
        loop {
            let next = self
                .inner
                .schedule
                .lock()
                .expect("schedule lock")
                .next_wake();
            let sleep = tokio::time::sleep_until(
                next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)),
            );
            tokio::select! {
                _ = &mut shutdown => break,
                // A new or changed check: recompute the next wake (due checks are started
                // below either way, so a stream of changes cannot starve them).
                _ = self.inner.wake.notified() => {}
                _ = sleep => {}
            }
            let now = Instant::now();
            let due = {
                let mut schedule = self.inner.schedule.lock().expect("schedule lock");
                let due = schedule.pop_due(now);
                schedule.compact();
                due
            };
            for (key, due_at) in due {
                self.start(&ctx, &prober, &permits, key, due_at, now);
            }
        }
        info!("HealthCheck probe scheduler stopped");
    }

    fn start(
        &self,
        ctx: &Context,
        prober: &Prober,
        permits: &Arc<Semaphore>,
        key: CheckKey,
        due_at: Instant,
        now: Instant,
    ) {
        // Deleted (or re-created under the same name) since the reconcile registered it.
        let current_uid = self
            .inner
            .checks_store
            .get()
            .and_then(|s| s.get(&ObjectRef::new(&key.1).within(&key.0)))
            .and_then(|g| g.0.as_ref().ok().and_then(|hc| hc.metadata.uid.clone()));
        let plan = {
            let mut checks = self.inner.checks.lock().expect("checks lock");
            let Some(entry) = checks.get_mut(&key) else {
                return;
            };
            if current_uid.as_deref() != Some(entry.plan.uid.as_str()) {
                drop(checks);
                debug!(check = %format!("{}/{}", key.0, key.1), "HealthCheck gone; no longer probed");
                self.remove(ctx, &key);
                return;
            }
            if entry.plan.suspend {
                return;
            }
            let plan = entry.plan.clone();
            // Keep the grid even when the previous probe still runs (it is then skipped).
            self.inner
                .schedule
                .lock()
                .expect("schedule lock")
                .set(key.clone(), sched::next_due(due_at, now, plan.interval));
            if entry.in_flight {
                return;
            }
            entry.in_flight = true;
            plan
        };
        let this = self.clone();
        let ctx = ctx.clone();
        let prober = prober.clone();
        let permits = permits.clone();
        tokio::spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return;
            };
            ctx.metrics.health.start_delay.observe(
                Instant::now()
                    .saturating_duration_since(due_at)
                    .as_secs_f64(),
            );
            this.probe(&ctx, &prober, key, plan).await;
        });
    }

    async fn probe(&self, ctx: &Context, prober: &Prober, key: CheckKey, plan: Arc<CheckPlan>) {
        let started = Timestamp::now();
        let resolved = self.resolve(ctx, &key, &plan).await;
        let (verdict, record, result) = match resolved {
            Resolved::Target(target) => {
                let out = prober
                    .probe(&ProbeRequest {
                        kind: plan.kind.clone(),
                        target,
                        timeout: plan.timeout,
                    })
                    .await;
                let result = match (out.success, out.refused) {
                    (true, _) => "success",
                    (false, true) => "refused",
                    (false, false) => "failure",
                };
                let verdict = if out.success {
                    Verdict::Success
                } else {
                    Verdict::Failure
                };
                (
                    verdict,
                    ProbeRecord {
                        time: started,
                        latency: out.latency,
                        status_code: out.status_code,
                        error: out.error,
                        refused: out.refused,
                    },
                    result,
                )
            }
            Resolved::NoData(why) => (
                Verdict::NoData,
                ProbeRecord {
                    time: started,
                    latency: Duration::ZERO,
                    status_code: None,
                    error: Some(format!("no data: {why}")),
                    refused: false,
                },
                "nodata",
            ),
            Resolved::Refused(why) => (
                Verdict::Failure,
                ProbeRecord {
                    time: started,
                    latency: Duration::ZERO,
                    status_code: None,
                    error: Some(why),
                    refused: true,
                },
                "refused",
            ),
        };
        ctx.metrics
            .health
            .probe_duration
            .get_or_create(&ProbeLabels {
                probe: plan.kind_name().into(),
                result: result.into(),
            })
            .observe(record.latency.as_secs_f64());
        self.record(ctx, key, &plan, verdict, record).await;
    }

    async fn resolve(&self, ctx: &Context, key: &CheckKey, plan: &Arc<CheckPlan>) -> Resolved {
        if matches!(plan.target, TargetPlan::Service { .. }) {
            let cached = self
                .inner
                .checks
                .lock()
                .expect("checks lock")
                .get(key)
                .and_then(|e| e.service.clone())
                .filter(|(at, _)| at.elapsed() < SERVICE_CACHE)
                .map(|(_, r)| r);
            if let Some(r) = cached {
                return r;
            }
            let r = target::resolve(&ctx.client, None, &self.route(ctx), &key.0, plan).await;
            if let Some(e) = self.inner.checks.lock().expect("checks lock").get_mut(key) {
                e.service = Some((Instant::now(), r.clone()));
            }
            return r;
        }
        target::resolve(
            &ctx.client,
            self.inner.previews.get(),
            &self.route(ctx),
            &key.0,
            plan,
        )
        .await
    }

    fn route(&self, ctx: &Context) -> target::PreviewRoute {
        target::PreviewRoute::from(&ctx.config.settings.previews)
    }

    /// Feeds one result to the check's state and writes status when it is due.
    async fn record(
        &self,
        ctx: &Context,
        key: CheckKey,
        plan: &Arc<CheckPlan>,
        verdict: Verdict,
        record: ProbeRecord,
    ) {
        let now = Timestamp::now();
        let (status, transition, alert, restored_after) = {
            let mut checks = self.inner.checks.lock().expect("checks lock");
            let status_interval =
                refresh_cadence(ctx.config.settings.health.status_interval, checks.len());
            let Some(entry) = checks.get_mut(&key) else {
                return;
            };
            entry.in_flight = false;
            if entry.plan.uid != plan.uid {
                return;
            }
            let degraded_since = (entry.machine.state == HealthState::Degraded)
                .then_some(entry.machine.last_transition)
                .flatten();
            let transition = entry.machine.observe(verdict, plan.thresholds, now);
            if verdict != Verdict::NoData {
                entry
                    .window
                    .record(now, verdict == Verdict::Success, record.latency);
            }
            let refusal_changed = entry.last.as_ref().map(|l| l.refused) != Some(record.refused)
                && record.refused
                || entry.last.as_ref().is_some_and(|l| l.refused) && !record.refused;
            entry.last = Some(record);
            let due = transition.is_some()
                || refusal_changed
                || entry
                    .last_write
                    .is_none_or(|at| at.elapsed() >= status_interval);
            let alert = transition
                .filter(|t| alert_due(t, entry.last_alert, plan.cooldown))
                .inspect(|t| entry.last_alert = Some(t.at));
            let restored_after = transition
                .filter(|t| t.is_recovery())
                .and(degraded_since)
                .map(|since| now.duration_since(since).as_secs_f64().max(0.0));
            let status = due.then(|| {
                entry.last_write = Some(Instant::now());
                entry.status(now)
            });
            ctx.metrics.health.set_up(
                &key.0,
                &key.1,
                Some(entry.machine.state).filter(|s| *s != HealthState::Unknown),
            );
            (status, transition, alert, restored_after)
        };
        if let Some(t) = transition {
            ctx.metrics
                .health
                .transitions
                .get_or_create(&TransitionLabels {
                    to: plan::state_word(t.to).into(),
                })
                .inc();
            info!(check = %format!("{}/{}", key.0, key.1), from = plan::state_word(t.from), to = plan::state_word(t.to), "HealthCheck state changed");
        }
        if let Some(seconds) = restored_after {
            ctx.metrics.health.time_to_restore.observe(seconds);
        }
        let Some(status) = status else {
            return;
        };
        let Some(hc) = self
            .inner
            .checks_store
            .get()
            .and_then(|s| s.get(&ObjectRef::new(&key.1).within(&key.0)))
            .and_then(|g| g.0.as_ref().ok().cloned())
        else {
            return;
        };
        if hc.metadata.uid.as_deref() != Some(plan.uid.as_str()) {
            return;
        }
        ctx.metrics.health.status_writes.inc();
        if let Err(e) = status::apply_status(ctx, &hc, "healthcheck", &status).await {
            warn!(check = %format!("{}/{}", key.0, key.1), error = %e, "could not write HealthCheck status");
            // Try again at the next probe.
            if let Some(entry) = self.inner.checks.lock().expect("checks lock").get_mut(&key) {
                entry.last_write = None;
            }
        }
        if let Some(t) = alert {
            let detail = status
                .last_probe
                .as_ref()
                .and_then(|p| p.error.clone())
                .unwrap_or_else(|| "probes succeed".into());
            let (type_, reason) = if t.is_recovery() {
                (EventType::Normal, "HealthRecovered")
            } else {
                (EventType::Warning, "HealthDegraded")
            };
            let note = format!(
                "{} → {} after {} consecutive {}: {detail}",
                plan::state_word(t.from),
                plan::state_word(t.to),
                if t.is_recovery() {
                    status.consecutive_successes
                } else {
                    status.consecutive_failures
                },
                if t.is_recovery() {
                    "successes"
                } else {
                    "failures"
                },
            );
            publish(ctx, &hc, type_, reason, "Probe", &note).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refreshes_are_bounded_over_all_checks() {
        let five_min = Duration::from_secs(300);
        assert_eq!(refresh_cadence(five_min, 100), five_min);
        assert_eq!(refresh_cadence(five_min, 3000), five_min);
        // 5,000 checks: each refreshed every 500 s, so at most 10 writes per second.
        assert_eq!(refresh_cadence(five_min, 5000), Duration::from_secs(500));
        assert_eq!(
            refresh_cadence(Duration::from_secs(2), 1),
            Duration::from_secs(2)
        );
    }
}
