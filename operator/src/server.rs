//! The admin server on `--admin-addr`: `/metrics`, `/healthz`, `/readyz`.
//!
//! `/readyz` turns ready only after every controller's watch has listed its objects, so a
//! rolling update never routes to (or counts as available) a replica that has not caught up. A
//! standby replica (leader election on, lease held elsewhere) is ready: it is healthy and will
//! take over when the leader goes away.

use crate::context::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

/// The replica's role as far as readiness is concerned (0 = starting).
#[derive(Debug, Default)]
pub struct Role(AtomicU8);

impl Role {
    const STANDBY: u8 = 1;
    const LEADER: u8 = 2;

    pub fn set_standby(&self) {
        self.0.store(Self::STANDBY, Ordering::Release);
    }
    pub fn set_leader(&self) {
        self.0.store(Self::LEADER, Ordering::Release);
    }
    pub fn is_leader(&self) -> bool {
        self.0.load(Ordering::Acquire) == Self::LEADER
    }
    fn get(&self) -> u8 {
        self.0.load(Ordering::Acquire)
    }
}

#[derive(Clone, Debug)]
struct AdminState {
    ctx: Context,
    role: Arc<Role>,
}

pub fn admin_router(ctx: Context, role: Arc<Role>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(AdminState { ctx, role })
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.ctx.metrics.encode(),
    )
}

async fn readyz(State(state): State<AdminState>) -> (StatusCode, String) {
    match state.role.get() {
        Role::STANDBY => (
            StatusCode::OK,
            "ok: standby, waiting for the leader lease".into(),
        ),
        Role::LEADER if state.ctx.is_synced() => (StatusCode::OK, "ok".into()),
        Role::LEADER => {
            let pending = state.ctx.watch_synced.pending();
            let detail = if pending.is_empty() {
                "waiting for CRDs".to_string()
            } else {
                pending.join(", ")
            };
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: watches not synced yet: {detail}"),
            )
        }
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: starting".into(),
        ),
    }
}
