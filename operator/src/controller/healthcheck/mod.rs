//! The HealthCheck controller: a short driver over the pure plan; probing itself runs in the
//! one scheduler, never in a reconcile worker.
//!
//! - `mod.rs` (this file): validate and dereference (the header and CA Secrets) → the pure
//!   [`plan::plan`] → register with the scheduler → one status write. An invalid spec or a
//!   literal target the outbound guard refuses is reported (`Stalled`, reasons `InvalidSpec` /
//!   `TargetRefused`) and the check is not probed; a missing Secret is an error retried slowly.
//!   Requeued every five minutes so a changed Secret is picked up.
//! - [`plan`]: spec → [`plan::CheckPlan`]; in-memory state → status (pure).
//! - [`target`]: where a probe goes when it runs (preview URL from the store, a Service's ready
//!   endpoints).
//! - [`scheduler`]: the one scheduler: due times, the global concurrency limit, the state
//!   machine, status writes on change or at a bounded cadence, alert Events, metrics.

pub mod plan;
pub mod scheduler;
pub mod target;

use super::{
    ControllerContext, KindController, primary_controller, reconcile_guarded, refs, status,
};
use crate::api::{HealthCheck, Outcome};
use crate::error::Error;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use plan::{PlanError, SecretInputs};
use secrecy::SecretString;
use std::sync::Arc;
use std::time::Duration;

pub use scheduler::HealthScheduler;

/// How often a valid check is reconciled again without a change (Secrets are not watched).
const RESYNC: Duration = Duration::from_secs(300);

pub fn controller(cctx: Arc<ControllerContext>) -> KindController<HealthCheck> {
    KindController::new(primary_controller::<HealthCheck>(&cctx.ctx), |obj, cctx| {
        Box::pin(reconcile_guarded(obj, cctx, reconcile))
    })
}

/// Reads the Secrets a check uses.
async fn dereference(
    cctx: &ControllerContext,
    hc: &HealthCheck,
    namespace: &str,
) -> Result<SecretInputs, Error> {
    let ctx = &cctx.ctx;
    let mut inputs = SecretInputs::default();
    if let Some(secret) = hc
        .spec
        .probe
        .http
        .as_ref()
        .and_then(|h| h.headers_secret_ref.as_ref())
    {
        for (k, v) in refs::secret_data(ctx, namespace, &secret.name).await? {
            let value = String::from_utf8(v).map_err(|_| Error::SecretInvalid {
                namespace: namespace.to_owned(),
                name: secret.name.clone(),
                problem: format!("the value of {k:?} is not UTF-8 text"),
            })?;
            inputs.headers.push((k, SecretString::from(value)));
        }
    }
    if let Some(ca) = hc.spec.tls.as_ref().and_then(|t| t.ca_secret_ref.as_ref()) {
        let data = refs::secret_data(ctx, namespace, &ca.name).await?;
        let pem = data
            .get(&ca.key)
            .cloned()
            .ok_or_else(|| Error::SecretInvalid {
                namespace: namespace.to_owned(),
                name: ca.name.clone(),
                problem: format!("it has no key {:?}", ca.key),
            })?;
        inputs.ca_pem = Some(pem);
    }
    Ok(inputs)
}

async fn reconcile(hc: Arc<HealthCheck>, cctx: Arc<ControllerContext>) -> Result<Action, Error> {
    let ctx = &cctx.ctx;
    let namespace = hc.namespace().unwrap_or_default();
    let key = (namespace.clone(), hc.name_any());
    let inputs = match dereference(&cctx, &hc, &namespace).await {
        Ok(inputs) => inputs,
        Err(e) => {
            cctx.health.remove(ctx, &key);
            return Err(e);
        }
    };
    let guard = crate::net::Guard::from(&ctx.config.settings.network);
    let outcome = match plan::plan(&hc, inputs, &guard) {
        Ok(plan) => {
            // Plugin delivery does not exist yet (issue 14): say so rather than drop it silently.
            let plugins = hc
                .spec
                .alert
                .as_ref()
                .map(|a| {
                    a.plugin_refs
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            let alerts = if plugins.is_empty() {
                String::new()
            } else {
                format!(
                    "; alerts are recorded as Events only: plugin delivery is not implemented yet, so {} {} not notified",
                    plugins.join(", "),
                    if plugins.len() == 1 { "is" } else { "are" }
                )
            };
            let outcome = if plan.suspend {
                Outcome::ready(
                    "Suspended",
                    format!("spec.suspend is set: not probing; state kept{alerts}"),
                )
            } else {
                Outcome::ready(
                    "Probing",
                    format!(
                        "probing every {}{alerts}",
                        crate::health::window::format_latency(plan.interval)
                    ),
                )
            };
            let base = status::common_status(hc.as_ref(), &outcome);
            let st =
                cctx.health
                    .upsert(key, plan, hc.metadata.generation, base, hc.status.as_ref());
            status::apply_status(ctx, hc.as_ref(), "healthcheck", &st).await?;
            return Ok(Action::requeue(RESYNC));
        }
        Err(PlanError::Invalid(msg)) => {
            cctx.health.remove(ctx, &key);
            return Err(Error::InvalidSpec(msg));
        }
        Err(PlanError::Refused(msg)) => Outcome::stalled("TargetRefused", msg),
    };
    // A refused literal target: reported, never probed, until the spec changes.
    cctx.health.remove(ctx, &key);
    let st = crate::api::HealthCheckStatus {
        common: status::common_status(hc.as_ref(), &outcome),
        ..hc.status.clone().unwrap_or_default()
    };
    status::apply_status(ctx, hc.as_ref(), "healthcheck", &st).await?;
    Ok(Action::await_change())
}
