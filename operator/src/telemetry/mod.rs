//! Logs and metrics.
//!
//! Logs go through `tracing` (text or JSON lines, filter via `RUST_LOG`). Metrics are
//! prometheus-client families, all prefixed `pullwarden_`, gathered in one [`Metrics`] value
//! that every component registers into and the admin server encodes on `/metrics`.

mod logging;
mod metrics;

pub use logging::{LogFormat, init_logging};
pub use metrics::{HealthMetrics, Metrics, ProbeLabels, ReconcileMeasurer, TransitionLabels};
