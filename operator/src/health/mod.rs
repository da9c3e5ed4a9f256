//! HealthCheck probing, outside the reconcile loop.
//!
//! - [`probe`]: one HTTP/TCP/gRPC probe through the outbound guard.
//! - [`state`]: the state machine (`Unknown → OK ⇄ Degraded`) and when a transition alerts, pure.
//! - [`window`]: the bounded rolling window behind availability and latency percentiles, pure.
//! - [`schedule`]: when each check probes next (one heap for all checks), pure.
pub mod probe;
pub mod schedule;
pub mod state;
pub mod window;
