//! What a PreviewEnvironment should do next, decided from the object and what the driver has
//! observed so far (pure: no I/O, no clock; every decision is a unit test below).
//!
//! The driver ([`super`]) calls [`plan`] in a loop: when the plan needs a fact it does not have
//! yet (the pull request's labels, the head's checks, the workloads' readiness) it answers
//! [`Step::Observe`], the driver reads exactly that and plans again. So a Ready preview costs
//! only its workload reads, a deploying one no forge request at all, and a deploy
//! one pull-request read, one check read (with `waitFor`) and one git fetch.
//!
//! A revision is the head SHA at the object's generation: objects are rendered and applied
//! once per revision (`status.appliedSha` / `appliedGeneration`), never while waiting.

use crate::api::{PreviewEnvironment, PreviewEnvironmentStatus, PreviewPhase};
use crate::forge::{CheckResult, CheckState};
use jiff::{SignedDuration, Timestamp};
use std::time::Duration;

/// Give up on workloads that are not available after this long (phase `Failed`, reason
/// `DeployTimedOut`; it still turns Ready if they become available later).
pub const DEPLOY_TIMEOUT: Duration = Duration::from_secs(600);

/// A fact the plan needs before it can decide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// The pull request's metadata (open, labels, title, branches), or the branch's head.
    Target,
    /// Check runs and commit statuses of the head (`waitFor.checks`).
    Checks,
    /// Readiness of the applied workloads (or of the Argo CD Application).
    Workloads,
}

/// How a failure is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// It can heal by itself (a check re-run, workloads coming up): per-object back-off, and at
    /// once on the events that can change it (a finished check on the head, a workload change).
    Transient,
    /// Only a change of the object (a push moves `headSha`, an edited spec) can fix it.
    OnChange,
}

/// A failure of the current revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub reason: &'static str,
    pub message: String,
    pub retry: Retry,
}

impl Failure {
    fn transient(reason: &'static str, message: String) -> Self {
        Failure {
            reason,
            message,
            retry: Retry::Transient,
        }
    }
}

/// Reasons of failures that only a change fixes.
pub const PERMANENT_FAILURES: &[&str] = &["ManifestsRefused", "PullRequestClosed", "InvalidSpec"];

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Read a fact, then plan again.
    Observe(Need),
    /// `spec.suspend`: nothing new is deployed; what runs stays.
    Suspended,
    /// A hand-made preview of a closed pull request: nothing is deployed.
    Closed,
    /// Past `ttl` without a push (and without the keep label): tear down, phase `Expired`.
    Expire,
    /// Expired earlier; nothing to do until a push.
    StayExpired,
    /// Past `sleepAfter` without a push or wake: scale workloads to zero, phase `Sleeping`.
    Sleep,
    /// Asleep; nothing to do until a push or wake request.
    StaySleeping,
    /// A fork's newer head (`spec.unapprovedHeadSha`) waits for approval.
    WaitForApproval(String),
    /// `waitFor.checks` not all finished yet.
    WaitForChecks(Vec<String>),
    /// The current revision failed.
    Fail(Failure),
    /// The revision failed earlier for a reason only a change fixes: stay as reported.
    StayFailed,
    /// The per-namespace preview cap keeps this never-deployed preview waiting.
    OverCap,
    /// Render, confine the namespace, apply and prune the current revision.
    Deploy,
    /// Applied; these workloads are not available yet.
    Deploying(Vec<String>),
    /// Every workload of the applied revision is available (first time for it).
    BecameReady,
    /// Ready and every workload available (a re-check).
    StayReady,
    /// Ready earlier, but these workloads are no longer available (`Healthy` False).
    Unhealthy(Vec<String>),
}

/// The pull request (or branch) facts the plan reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetFacts {
    pub open: bool,
    pub labels: Vec<String>,
}

/// What the driver has observed in this reconcile.
#[derive(Clone, Debug, Default)]
pub struct Facts<'a> {
    pub now: Timestamp,
    /// The head to deploy: `spec.headSha`, or the resolved head of a hand-made preview.
    pub head: &'a str,
    pub target: Option<TargetFacts>,
    pub checks: Option<&'a [CheckResult]>,
    /// Workloads of the applied revision that are not available (empty: all are).
    pub not_ready: Option<&'a [String]>,
    /// Read with `not_ready` (`delivery: argocd`): Argo CD's attempt to sync the applied
    /// revision failed, and why. Argo CD may still retry, so the failure is transient.
    pub sync_failed: Option<&'a str>,
    /// Whether the preview is within `--max-previews-per-namespace` (oldest first).
    pub within_cap: bool,
    /// A new `pullwarden.dev/wake` annotation value.
    pub wake_requested: bool,
}

/// Records a head change in `status` (pure bookkeeping, before planning): a new head is a push,
/// restarting the TTL, the sleep timer and the deploy clock.
pub fn observe_head(status: &mut PreviewEnvironmentStatus, head: &str, now: Timestamp) {
    if status.observed_head_sha.as_deref() != Some(head) {
        status.observed_head_sha = Some(head.to_owned());
        status.last_push_time = Some(now.into());
        status.deploy_start_time = Some(now.into());
        status.failure_reason = None;
    }
}

/// Whether the current revision (head at this generation) is the applied one.
pub fn applied(pe: &PreviewEnvironment, status: &PreviewEnvironmentStatus, head: &str) -> bool {
    status.applied_sha.as_deref() == Some(head)
        && status.applied_generation == pe.metadata.generation
}

fn since(
    t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    now: Timestamp,
) -> Timestamp {
    t.map(|t| t.0).unwrap_or(now)
}

fn elapsed(from: Timestamp, now: Timestamp, limit: Duration) -> bool {
    now >= from + SignedDuration::try_from(limit).unwrap_or(SignedDuration::MAX)
}

fn parse(d: Option<&crate::api::Duration>) -> Option<Duration> {
    d.and_then(|d| crate::api::parse_duration("duration", d).ok())
}

/// When the TTL expires (`None`: no TTL).
pub fn expires_at(
    pe: &PreviewEnvironment,
    status: &PreviewEnvironmentStatus,
    now: Timestamp,
) -> Option<Timestamp> {
    let ttl = parse(pe.spec.template.ttl.as_ref())?;
    Some(since(status.last_push_time.as_ref(), now) + SignedDuration::try_from(ttl).ok()?)
}

/// When the preview falls asleep (`None`: `sleepAfter` unset).
pub fn sleeps_at(
    pe: &PreviewEnvironment,
    status: &PreviewEnvironmentStatus,
    now: Timestamp,
) -> Option<Timestamp> {
    // Argo CD would heal the replicas back: only rendered manifests sleep.
    if pe.spec.template.delivery == crate::api::Delivery::Argocd {
        return None;
    }
    let after = parse(pe.spec.template.sleep_after.as_ref())?;
    let pushed = since(status.last_push_time.as_ref(), now);
    let woken = status
        .last_wake_time
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(pushed);
    Some(pushed.max(woken) + SignedDuration::try_from(after).ok()?)
}

/// The next time-based decision (TTL expiry, falling asleep), to requeue at.
pub fn next_deadline(
    pe: &PreviewEnvironment,
    status: &PreviewEnvironmentStatus,
    now: Timestamp,
) -> Option<Duration> {
    [expires_at(pe, status, now), sleeps_at(pe, status, now)]
        .into_iter()
        .flatten()
        .filter(|t| *t > now)
        .min()
        .map(|t| {
            Duration::try_from(t.duration_since(now)).unwrap_or_default() + Duration::from_secs(1)
        })
}

/// Decides the next step. `status` is the status being built (after [`observe_head`]).
pub fn plan(pe: &PreviewEnvironment, status: &PreviewEnvironmentStatus, facts: &Facts<'_>) -> Step {
    let spec = &pe.spec;
    let now = facts.now;
    if spec.suspend {
        return Step::Suspended;
    }
    if spec.pull_request.is_some() && facts.target.as_ref().is_some_and(|t| !t.open) {
        return Step::Closed;
    }

    if expires_at(pe, status, now).is_some_and(|t| now >= t) {
        let Some(target) = &facts.target else {
            return Step::Observe(Need::Target);
        };
        if !target.labels.contains(&spec.template.keep_label) {
            return if status.phase == PreviewPhase::Expired {
                Step::StayExpired
            } else {
                Step::Expire
            };
        }
    }

    if let Some(pending) = &spec.unapproved_head_sha {
        return Step::WaitForApproval(pending.clone());
    }

    let is_applied = applied(pe, status, facts.head);
    let asleep = status.phase == PreviewPhase::Sleeping;
    if is_applied {
        let due = sleeps_at(pe, status, now).is_some_and(|t| now >= t) && !facts.wake_requested;
        if asleep && due {
            return Step::StaySleeping;
        }
        if due && status.phase == PreviewPhase::Ready {
            return Step::Sleep;
        }
    }
    // Waking re-applies the revision: the rendered replica counts come back.
    if is_applied && !asleep {
        if status.phase == PreviewPhase::Failed
            && status
                .failure_reason
                .as_deref()
                .is_some_and(|r| PERMANENT_FAILURES.contains(&r))
        {
            return Step::StayFailed;
        }
        let Some(not_ready) = facts.not_ready else {
            return Step::Observe(Need::Workloads);
        };
        let was_ready = status.phase == PreviewPhase::Ready
            && status.deployed_sha.as_deref() == Some(facts.head);
        // A refused sync is said at once rather than after the deploy timeout; it turns Ready
        // if a retry succeeds. A Ready preview whose self-heal sync fails is Unhealthy below.
        if let Some(failed) = facts.sync_failed
            && !was_ready
        {
            return Step::Fail(Failure::transient("SyncFailed", failed.to_owned()));
        }
        return match (was_ready, not_ready.is_empty()) {
            (true, true) => Step::StayReady,
            (true, false) => Step::Unhealthy(not_ready.to_vec()),
            (false, true) => Step::BecameReady,
            (false, false) => {
                let started = since(status.deploy_start_time.as_ref(), now);
                if elapsed(started, now, DEPLOY_TIMEOUT) {
                    Step::Fail(Failure::transient(
                        "DeployTimedOut",
                        format!(
                            "not available after {}s: {}",
                            DEPLOY_TIMEOUT.as_secs(),
                            not_ready.join(", ")
                        ),
                    ))
                } else {
                    Step::Deploying(not_ready.to_vec())
                }
            }
        };
    }

    // A revision refused earlier stays refused until the object changes.
    if status.phase == PreviewPhase::Failed
        && status.observed_head_sha.as_deref() == Some(facts.head)
        && status.common.observed_generation == pe.metadata.generation
        && status
            .failure_reason
            .as_deref()
            .is_some_and(|r| PERMANENT_FAILURES.contains(&r))
    {
        return Step::StayFailed;
    }

    if let Some(wait) = &spec.template.wait_for {
        let Some(checks) = facts.checks else {
            return Step::Observe(Need::Checks);
        };
        let mut waiting = Vec::new();
        for required in &wait.checks {
            match checks.iter().find(|c| &c.name == required).map(|c| c.state) {
                Some(CheckState::Success) => {}
                Some(CheckState::Failure | CheckState::Error) => {
                    return Step::Fail(Failure::transient(
                        "RequiredCheckFailed",
                        format!("required check {required} failed on {}", short(facts.head)),
                    ));
                }
                _ => waiting.push(required.clone()),
            }
        }
        if !waiting.is_empty() {
            let started = since(status.deploy_start_time.as_ref(), now);
            if let Some(timeout) = parse(wait.timeout.as_ref())
                && elapsed(started, now, timeout)
            {
                return Step::Fail(Failure::transient(
                    "ChecksTimedOut",
                    format!(
                        "checks {} did not succeed within {}",
                        waiting.join(", "),
                        wait.timeout
                            .as_ref()
                            .map(|t| t.to_string())
                            .unwrap_or_default()
                    ),
                ));
            }
            return Step::WaitForChecks(waiting);
        }
    }

    let never_deployed = status.deployed_sha.is_none() && status.applied_sha.is_none();
    if never_deployed && !facts.within_cap {
        return Step::OverCap;
    }
    if facts.target.is_none() {
        return Step::Observe(Need::Target);
    }
    Step::Deploy
}

pub fn short(sha: &str) -> &str {
    &sha[..sha.len().min(7)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forge::CheckSource;
    use serde_json::json;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn preview(template: serde_json::Value) -> PreviewEnvironment {
        let mut template = template;
        template["path"] = json!("deploy");
        serde_json::from_value(json!({
            "apiVersion": "pullwarden.dev/v1alpha1", "kind": "PreviewEnvironment",
            "metadata": {"name": "web-pr-1", "namespace": "team", "uid": "u1", "generation": 1},
            "spec": {"repositoryRef": {"name": "web"}, "pullRequest": 1, "headSha": A,
                     "template": template}
        }))
        .unwrap()
    }

    fn open() -> Option<TargetFacts> {
        Some(TargetFacts {
            open: true,
            labels: vec![],
        })
    }

    fn facts<'a>(now: Timestamp) -> Facts<'a> {
        Facts {
            now,
            head: A,
            target: None,
            checks: None,
            not_ready: None,
            sync_failed: None,
            within_cap: true,
            wake_requested: false,
        }
    }

    /// A status right after `observe_head(A)` at t(0).
    fn fresh() -> PreviewEnvironmentStatus {
        let mut status = PreviewEnvironmentStatus::default();
        observe_head(&mut status, A, t(0));
        status
    }

    fn applied_at(
        mut status: PreviewEnvironmentStatus,
        phase: PreviewPhase,
    ) -> PreviewEnvironmentStatus {
        status.applied_sha = Some(A.into());
        status.applied_generation = Some(1);
        status.phase = phase;
        if phase == PreviewPhase::Ready || phase == PreviewPhase::Sleeping {
            status.deployed_sha = Some(A.into());
        }
        status
    }

    fn check(name: &str, state: CheckState) -> CheckResult {
        CheckResult {
            description: None,
            name: name.into(),
            state,
            source: CheckSource::CheckRun,
            url: None,
            updated_at: None,
        }
    }

    #[test]
    fn a_new_revision_reads_its_target_then_deploys_once() {
        let pe = preview(json!({}));
        let status = fresh();
        assert_eq!(
            plan(&pe, &status, &facts(t(1))),
            Step::Observe(Need::Target)
        );
        let f = Facts {
            target: open(),
            ..facts(t(1))
        };
        assert_eq!(plan(&pe, &status, &f), Step::Deploy);
        // Applied: no second render, only the workloads are read.
        let status = applied_at(status, PreviewPhase::Deploying);
        assert_eq!(
            plan(&pe, &status, &facts(t(2))),
            Step::Observe(Need::Workloads)
        );
        let waiting = vec!["Deployment/web (0/1 available)".to_string()];
        let f = Facts {
            not_ready: Some(&waiting),
            ..facts(t(2))
        };
        assert_eq!(plan(&pe, &status, &f), Step::Deploying(waiting.clone()));
        let f = Facts {
            not_ready: Some(&[]),
            ..facts(t(3))
        };
        assert_eq!(plan(&pe, &status, &f), Step::BecameReady);
    }

    #[test]
    fn a_new_generation_or_head_is_a_new_revision() {
        let mut pe = preview(json!({}));
        let status = applied_at(fresh(), PreviewPhase::Ready);
        let f = Facts {
            target: open(),
            ..facts(t(5))
        };
        pe.metadata.generation = Some(2);
        assert_eq!(plan(&pe, &status, &f), Step::Deploy, "template changed");
        pe.metadata.generation = Some(1);
        let mut status = status;
        observe_head(&mut status, B, t(5));
        let f = Facts {
            head: B,
            target: open(),
            ..facts(t(5))
        };
        assert_eq!(plan(&pe, &status, &f), Step::Deploy, "pushed");
        assert_eq!(status.last_push_time.as_ref().unwrap().0, t(5));
    }

    #[test]
    fn ready_previews_follow_their_workloads_both_ways() {
        let pe = preview(json!({}));
        let status = applied_at(fresh(), PreviewPhase::Ready);
        let down = vec!["Deployment/web (0/1 available)".to_string()];
        let f = Facts {
            not_ready: Some(&down),
            ..facts(t(100))
        };
        assert_eq!(plan(&pe, &status, &f), Step::Unhealthy(down.clone()));
        let f = Facts {
            not_ready: Some(&[]),
            ..facts(t(101))
        };
        assert_eq!(plan(&pe, &status, &f), Step::StayReady);
    }

    #[test]
    fn the_deploy_timeout_fails_transiently_and_late_workloads_still_turn_ready() {
        let pe = preview(json!({}));
        let status = applied_at(fresh(), PreviewPhase::Deploying);
        let down = vec!["Deployment/web (0/1 available)".to_string()];
        let late = t(DEPLOY_TIMEOUT.as_secs() as i64 + 1);
        let f = Facts {
            not_ready: Some(&down),
            ..facts(late)
        };
        let Step::Fail(failure) = plan(&pe, &status, &f) else {
            panic!("expected a failure")
        };
        assert_eq!(
            (failure.reason, failure.retry),
            ("DeployTimedOut", Retry::Transient)
        );
        let mut failed = status.clone();
        failed.phase = PreviewPhase::Failed;
        failed.failure_reason = Some("DeployTimedOut".into());
        let f = Facts {
            not_ready: Some(&[]),
            ..facts(late)
        };
        assert_eq!(plan(&pe, &failed, &f), Step::BecameReady);
    }

    #[test]
    fn a_failed_argo_cd_sync_fails_at_once_and_still_turns_ready_if_a_retry_succeeds() {
        let pe = preview(json!({"delivery": "argocd"}));
        let status = applied_at(fresh(), PreviewPhase::Deploying);
        let why = "Argo CD could not sync abc: resource rbac.authorization.k8s.io:ClusterRoleBinding is not permitted in project p (ClusterRoleBinding x)".to_string();
        let waiting = vec![why.clone()];
        let f = Facts {
            not_ready: Some(&waiting),
            sync_failed: Some(&why),
            ..facts(t(10))
        };
        let Step::Fail(failure) = plan(&pe, &status, &f) else {
            panic!("expected a failure long before the deploy timeout")
        };
        assert_eq!(
            (failure.reason, failure.retry, failure.message.as_str()),
            ("SyncFailed", Retry::Transient, why.as_str())
        );
        let mut failed = status.clone();
        failed.phase = PreviewPhase::Failed;
        failed.failure_reason = Some("SyncFailed".into());
        let f = Facts {
            not_ready: Some(&[]),
            ..facts(t(20))
        };
        assert_eq!(
            plan(&pe, &failed, &f),
            Step::BecameReady,
            "a retry synced it"
        );
        // Ready at this revision, then a self-heal sync fails: unhealthy, not failed.
        let ready = applied_at(fresh(), PreviewPhase::Ready);
        let f = Facts {
            not_ready: Some(&waiting),
            sync_failed: Some(&why),
            ..facts(t(30))
        };
        assert_eq!(plan(&pe, &ready, &f), Step::Unhealthy(waiting.clone()));
    }

    #[test]
    fn wait_for_checks_waits_fails_retryably_and_times_out() {
        let pe = preview(json!({"waitFor": {"checks": ["build"], "timeout": "10m"}}));
        let status = fresh();
        assert_eq!(
            plan(&pe, &status, &facts(t(1))),
            Step::Observe(Need::Checks)
        );
        let none: Vec<CheckResult> = vec![];
        let f = Facts {
            checks: Some(&none),
            ..facts(t(1))
        };
        assert_eq!(
            plan(&pe, &status, &f),
            Step::WaitForChecks(vec!["build".into()])
        );
        let pending = vec![check("build", CheckState::Pending)];
        let f = Facts {
            checks: Some(&pending),
            ..facts(t(601))
        };
        let Step::Fail(failure) = plan(&pe, &status, &f) else {
            panic!()
        };
        assert_eq!(
            (failure.reason, failure.retry),
            ("ChecksTimedOut", Retry::Transient)
        );
        let failed = vec![check("build", CheckState::Failure)];
        let f = Facts {
            checks: Some(&failed),
            ..facts(t(2))
        };
        let Step::Fail(failure) = plan(&pe, &status, &f) else {
            panic!()
        };
        assert_eq!(
            (failure.reason, failure.retry),
            ("RequiredCheckFailed", Retry::Transient)
        );
        // Re-run to green on the same SHA: the failed preview deploys without a push.
        let mut status = status;
        status.phase = PreviewPhase::Failed;
        status.failure_reason = Some("RequiredCheckFailed".into());
        let green = vec![check("build", CheckState::Success)];
        let f = Facts {
            checks: Some(&green),
            target: open(),
            ..facts(t(3))
        };
        assert_eq!(plan(&pe, &status, &f), Step::Deploy);
    }

    #[test]
    fn a_refused_revision_waits_for_a_change() {
        let mut pe = preview(json!({}));
        let mut status = fresh();
        status.phase = PreviewPhase::Failed;
        status.failure_reason = Some("ManifestsRefused".into());
        status.common.observed_generation = Some(1);
        let f = Facts {
            target: open(),
            ..facts(t(1))
        };
        assert_eq!(plan(&pe, &status, &f), Step::StayFailed);
        pe.metadata.generation = Some(2);
        assert_eq!(
            plan(&pe, &status, &f),
            Step::Deploy,
            "an edited spec is tried again"
        );
        pe.metadata.generation = Some(1);
        observe_head(&mut status, B, t(2));
        let f = Facts {
            head: B,
            target: open(),
            ..facts(t(2))
        };
        assert_eq!(
            plan(&pe, &status, &f),
            Step::Deploy,
            "a push is tried again"
        );
    }

    #[test]
    fn ttl_expires_unless_kept_and_stays_expired_until_a_push() {
        let pe = preview(json!({"ttl": "1h"}));
        let status = applied_at(fresh(), PreviewPhase::Ready);
        let f = Facts {
            not_ready: Some(&[]),
            ..facts(t(3599))
        };
        assert_eq!(plan(&pe, &status, &f), Step::StayReady);
        assert_eq!(
            next_deadline(&pe, &status, t(3599)),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            plan(&pe, &status, &facts(t(3600))),
            Step::Observe(Need::Target)
        );
        let f = Facts {
            target: open(),
            ..facts(t(3600))
        };
        assert_eq!(plan(&pe, &status, &f), Step::Expire);
        let kept = Some(TargetFacts {
            open: true,
            labels: vec!["keep-preview".into()],
        });
        let f = Facts {
            target: kept,
            not_ready: Some(&[]),
            ..facts(t(3600))
        };
        assert_eq!(plan(&pe, &status, &f), Step::StayReady);
        let mut expired = status.clone();
        expired.phase = PreviewPhase::Expired;
        let f = Facts {
            target: open(),
            ..facts(t(4000))
        };
        assert_eq!(plan(&pe, &expired, &f), Step::StayExpired);
        observe_head(&mut expired, B, t(4000));
        let f = Facts {
            head: B,
            target: open(),
            ..facts(t(4000))
        };
        assert_eq!(plan(&pe, &expired, &f), Step::Deploy);
    }

    #[test]
    fn sleep_after_idles_and_a_wake_or_push_redeploys() {
        let pe = preview(json!({"sleepAfter": "30m"}));
        let status = applied_at(fresh(), PreviewPhase::Ready);
        assert_eq!(plan(&pe, &status, &facts(t(1800))), Step::Sleep);
        assert_eq!(
            next_deadline(&pe, &status, t(100)),
            Some(Duration::from_secs(1701))
        );
        let asleep = applied_at(fresh(), PreviewPhase::Sleeping);
        assert_eq!(plan(&pe, &asleep, &facts(t(1900))), Step::StaySleeping);
        // A wake request: the revision is applied again, restoring replicas.
        let f = Facts {
            wake_requested: true,
            target: open(),
            ..facts(t(1900))
        };
        assert_eq!(plan(&pe, &asleep, &f), Step::Deploy);
        let mut woken = asleep.clone();
        woken.last_wake_time = Some(t(1900).into());
        let f = Facts {
            target: open(),
            ..facts(t(1901))
        };
        assert_eq!(plan(&pe, &woken, &f), Step::Deploy, "not due any more");
        // Once re-applied (the driver marks a woken preview Deploying) it rolls out as usual.
        let mut redeployed = woken.clone();
        redeployed.phase = PreviewPhase::Deploying;
        assert_eq!(
            plan(&pe, &redeployed, &facts(t(1902))),
            Step::Observe(Need::Workloads)
        );
        // A deploying preview never falls asleep mid-rollout.
        let deploying = applied_at(fresh(), PreviewPhase::Deploying);
        assert_eq!(
            plan(&pe, &deploying, &facts(t(1800))),
            Step::Observe(Need::Workloads)
        );
    }

    #[test]
    fn suspend_closed_approval_and_the_cap() {
        let mut pe = preview(json!({}));
        let status = fresh();
        pe.spec.suspend = true;
        assert_eq!(plan(&pe, &status, &facts(t(1))), Step::Suspended);
        pe.spec.suspend = false;
        let closed = Some(TargetFacts {
            open: false,
            labels: vec![],
        });
        assert_eq!(
            plan(
                &pe,
                &status,
                &Facts {
                    target: closed,
                    ..facts(t(1))
                }
            ),
            Step::Closed
        );
        let f = Facts {
            within_cap: false,
            target: open(),
            ..facts(t(1))
        };
        assert_eq!(plan(&pe, &status, &f), Step::OverCap);
        let deployed = applied_at(fresh(), PreviewPhase::Ready);
        let mut moved = deployed.clone();
        observe_head(&mut moved, B, t(2));
        let f = Facts {
            head: B,
            within_cap: false,
            target: open(),
            ..facts(t(2))
        };
        assert_eq!(
            plan(&pe, &moved, &f),
            Step::Deploy,
            "a live preview is never capped"
        );
        pe.spec.unapproved_head_sha = Some(B.into());
        assert_eq!(
            plan(&pe, &deployed, &facts(t(3))),
            Step::WaitForApproval(B.into())
        );
    }
}
