//! HealthCheck probing, outside the reconcile loop.
//!
//! - [`probe`]: one HTTP/TCP/gRPC probe through the outbound guard.
pub mod probe;
