//! The operator's Prometheus metrics.

use crate::forge::ForgeMetrics;
use crate::webhook::WebhookMetrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: String,
    pub category: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GateLabels {
    /// `namespace/name` of the PolicyGate (bounded by the number of gates).
    pub gate: String,
    pub result: String,
    pub mode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HealthLabels {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeLabels {
    /// `http`, `tcp` or `grpc`.
    pub probe: String,
    /// `success`, `failure`, `refused` or `nodata`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    /// The state entered: `OK`, `Degraded` or `Unknown`.
    pub to: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub plugin_type: String,
    pub result: String,
}

fn histogram_seconds() -> Histogram {
    // 5ms .. ~40s: reconciles are mostly API round trips.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

fn histogram_minutes() -> Histogram {
    // 1s .. ~9h: preview time-to-ready and PR lead times.
    Histogram::new(exponential_buckets(1.0, 2.5, 16))
}

/// Every metric family of the operator. Cheap to clone (all families are `Arc`s inside).
#[derive(Clone, Debug)]
pub struct Metrics {
    pub reconciles: Family<KindLabels, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Family<KindLabels, Histogram>,
    pub previews: Family<PhaseLabels, Gauge>,
    pub preview_time_to_ready: Histogram,
    pub gate_decisions: Family<GateLabels, Counter>,
    pub health: HealthMetrics,
    pub plugin_deliveries: Family<DeliveryLabels, Counter>,
    pub pr_lead_time: Histogram,
    pub pr_time_to_first_review: Histogram,
    pub leader: Gauge,
    /// Last known phase per preview, from which `previews` is recomputed.
    preview_phases: Arc<std::sync::Mutex<std::collections::HashMap<String, &'static str>>>,
    pub forge: ForgeMetrics,
    pub webhook: WebhookMetrics,
    registry: Arc<Registry>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let reconciles = Family::<KindLabels, Counter>::default();
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let reconcile_duration = Family::<KindLabels, Histogram>::new_with_constructor(
            histogram_seconds as fn() -> Histogram,
        );
        let previews = Family::<PhaseLabels, Gauge>::default();
        let preview_time_to_ready = histogram_minutes();
        let gate_decisions = Family::<GateLabels, Counter>::default();
        let health = HealthMetrics::default();
        let plugin_deliveries = Family::<DeliveryLabels, Counter>::default();
        let pr_lead_time = histogram_minutes();
        let pr_time_to_first_review = histogram_minutes();
        let leader = Gauge::default();
        let forge = ForgeMetrics::default();
        let webhook = WebhookMetrics::default();

        registry.register(
            "pullwarden_reconciles",
            "Reconciles run, by kind",
            reconciles.clone(),
        );
        registry.register(
            "pullwarden_reconcile_errors",
            "Reconciles that failed, by kind and error category",
            reconcile_errors.clone(),
        );
        registry.register(
            "pullwarden_reconcile_duration_seconds",
            "Reconcile duration, by kind",
            reconcile_duration.clone(),
        );
        registry.register(
            "pullwarden_previews",
            "PreviewEnvironments by phase",
            previews.clone(),
        );
        registry.register(
            "pullwarden_preview_time_to_ready_seconds",
            "Time from a new head SHA to the preview being Ready",
            preview_time_to_ready.clone(),
        );
        registry.register(
            "pullwarden_gate_decisions",
            "PolicyGate verdicts written to pull requests (a changed decision per head SHA), by gate, result and mode",
            gate_decisions.clone(),
        );
        health.register(&mut registry);
        registry.register(
            "pullwarden_plugin_deliveries",
            "Plugin deliveries, by plugin type and result",
            plugin_deliveries.clone(),
        );
        registry.register(
            "pullwarden_pull_request_lead_time_seconds",
            "Pull request lead time, opened to merged",
            pr_lead_time.clone(),
        );
        registry.register(
            "pullwarden_pull_request_time_to_first_review_seconds",
            "Time from a pull request being opened to its first review",
            pr_time_to_first_review.clone(),
        );
        registry.register(
            "pullwarden_leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        forge.register(&mut registry);
        webhook.register(&mut registry);

        Metrics {
            reconciles,
            reconcile_errors,
            reconcile_duration,
            previews,
            preview_time_to_ready,
            gate_decisions,
            health,
            plugin_deliveries,
            pr_lead_time,
            pr_time_to_first_review,
            leader,
            preview_phases: Arc::default(),
            forge,
            webhook,
            registry: Arc::new(registry),
        }
    }

    /// Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// Starts measuring one reconcile of `kind`; the duration is recorded when dropped.
    pub fn reconcile(&self, kind: &str) -> ReconcileMeasurer {
        let labels = KindLabels {
            kind: kind.to_owned(),
        };
        self.reconciles.get_or_create(&labels).inc();
        ReconcileMeasurer {
            start: Instant::now(),
            labels,
            metric: self.reconcile_duration.clone(),
        }
    }

    /// One gate verdict written to a pull request (a changed decision, not a re-evaluation).
    pub fn gate_decision(&self, gate: &str, result: &str, mode: &str) {
        self.gate_decisions
            .get_or_create(&GateLabels {
                gate: gate.to_owned(),
                result: result.to_owned(),
                mode: mode.to_owned(),
            })
            .inc();
    }

    /// Records the phase of one preview (`None` once deleted) and updates
    /// `pullwarden_previews{phase}`.
    pub fn set_preview_phase(&self, preview: &str, phase: Option<&'static str>) {
        let mut phases = self.preview_phases.lock().expect("preview phases lock");
        let before = phases.get(preview).copied();
        match phase {
            Some(p) => phases.insert(preview.to_owned(), p),
            None => phases.remove(preview),
        };
        if let Some(old) = before {
            self.previews
                .get_or_create(&PhaseLabels {
                    phase: old.to_owned(),
                })
                .dec();
        }
        if let Some(new) = phase {
            self.previews
                .get_or_create(&PhaseLabels {
                    phase: new.to_owned(),
                })
                .inc();
        }
    }

    /// Counts a failed reconcile.
    pub fn reconcile_failure(&self, kind: &str, category: &str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels {
                kind: kind.to_owned(),
                category: category.to_owned(),
            })
            .inc();
    }
}

/// HealthCheck probing.
#[derive(Clone, Debug)]
pub struct HealthMetrics {
    /// 1 while a check is OK, 0 while Degraded; no series while Unknown (or deleted).
    pub up: Family<HealthLabels, Gauge>,
    pub probe_duration: Family<ProbeLabels, Histogram>,
    pub transitions: Family<TransitionLabels, Counter>,
    /// How late probes started against their schedule (queueing for a probe slot included).
    pub start_delay: Histogram,
    /// Degraded → OK.
    pub time_to_restore: Histogram,
    pub status_writes: Counter,
}

impl Default for HealthMetrics {
    fn default() -> Self {
        HealthMetrics {
            up: Family::default(),
            probe_duration: Family::new_with_constructor(histogram_probe as fn() -> Histogram),
            transitions: Family::default(),
            start_delay: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            time_to_restore: histogram_minutes(),
            status_writes: Counter::default(),
        }
    }
}

fn histogram_probe() -> Histogram {
    // 0.5ms .. ~16s: loopback answers to timeouts.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl HealthMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "pullwarden_healthcheck_up",
            "1 while a HealthCheck is OK, 0 while Degraded (no series while Unknown)",
            self.up.clone(),
        );
        registry.register(
            "pullwarden_probe_duration_seconds",
            "HealthCheck probe duration, by probe kind and result",
            self.probe_duration.clone(),
        );
        registry.register(
            "pullwarden_health_transitions",
            "HealthCheck state changes, by the state entered",
            self.transitions.clone(),
        );
        registry.register(
            "pullwarden_probe_start_delay_seconds",
            "How late HealthCheck probes started against their schedule",
            self.start_delay.clone(),
        );
        registry.register(
            "pullwarden_health_time_to_restore_seconds",
            "Time a HealthCheck spent Degraded before it was OK again",
            self.time_to_restore.clone(),
        );
        registry.register(
            "pullwarden_health_status_writes",
            "HealthCheck status writes by the probe scheduler (state changes and the bounded refresh)",
            self.status_writes.clone(),
        );
    }

    /// Sets or clears `pullwarden_healthcheck_up` for one check.
    pub fn set_up(&self, namespace: &str, name: &str, state: Option<crate::api::HealthState>) {
        let labels = HealthLabels {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        match state {
            Some(crate::api::HealthState::Ok) => {
                self.up.get_or_create(&labels).set(1);
            }
            Some(crate::api::HealthState::Degraded) => {
                self.up.get_or_create(&labels).set(0);
            }
            _ => {
                self.up.remove(&labels);
            }
        }
    }
}

/// Records a reconcile's duration when dropped.
#[derive(Debug)]
pub struct ReconcileMeasurer {
    start: Instant,
    labels: KindLabels,
    metric: Family<KindLabels, Histogram>,
}

impl Drop for ReconcileMeasurer {
    fn drop(&mut self) {
        self.metric
            .get_or_create(&self.labels)
            .observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconcile_metrics_are_encoded_with_labels() {
        let m = Metrics::new();
        drop(m.reconcile("Repository"));
        m.reconcile_failure("Repository", "SecretNotFound");
        let text = m.encode();
        assert!(
            text.contains("pullwarden_reconciles_total{kind=\"Repository\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "pullwarden_reconcile_errors_total{kind=\"Repository\",category=\"SecretNotFound\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("pullwarden_reconcile_duration_seconds_count{kind=\"Repository\"} 1")
        );
    }

    #[test]
    fn preview_phase_gauge_follows_transitions() {
        let m = Metrics::new();
        m.set_preview_phase("a/p1", Some("Deploying"));
        m.set_preview_phase("a/p2", Some("Deploying"));
        m.set_preview_phase("a/p1", Some("Ready"));
        m.set_preview_phase("a/p1", Some("Ready"));
        m.set_preview_phase("a/p2", None);
        let text = m.encode();
        assert!(
            text.contains("pullwarden_previews{phase=\"Ready\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("pullwarden_previews{phase=\"Deploying\"} 0"),
            "{text}"
        );
    }
}
