//! The HealthCheck controller.
//!
//! Today it dereferences the target (PreviewEnvironment, Service, header Secret), validates the
//! spec including the SSRF rules for literal addresses, and reports. Probing is not implemented
//! yet; `Ready` says so (reason `ProbingNotImplemented`) and `state` stays `Unknown`.

use super::{
    ControllerContext, KindController, primary_controller, reconcile_guarded, refs, status,
};
use crate::api::{HealthCheck, HealthCheckStatus, Outcome, PreviewEnvironment};
use crate::error::Error;
use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use std::sync::Arc;

pub fn controller(cctx: Arc<ControllerContext>) -> KindController<HealthCheck> {
    KindController::new(primary_controller::<HealthCheck>(&cctx.ctx), |obj, cctx| {
        Box::pin(reconcile_guarded(obj, cctx, reconcile))
    })
}

async fn reconcile(hc: Arc<HealthCheck>, cctx: Arc<ControllerContext>) -> Result<Action, Error> {
    let ctx = &cctx.ctx;
    let namespace = hc.namespace().unwrap_or_default();
    let target = &hc.spec.target;

    // validate: literal addresses and metadata names now; resolved names at every probe.
    if let Some(url) = &target.url {
        let parsed =
            url::Url::parse(url).map_err(|e| Error::InvalidSpec(format!("target.url: {e}")))?;
        if parsed.host_str().is_none() {
            return Err(Error::InvalidSpec("target.url has no host".into()));
        }
        crate::net::Guard::from(&ctx.config.settings.network)
            .check_url(url)
            .map_err(|r| Error::InvalidSpec(format!("target.url: {r}")))?;
    }
    crate::api::parse_duration("interval", &hc.spec.interval).map_err(Error::InvalidSpec)?;
    crate::api::parse_duration("timeout", &hc.spec.timeout).map_err(Error::InvalidSpec)?;

    // dereference
    if let Some(preview) = &target.preview_ref {
        let api: Api<PreviewEnvironment> = Api::namespaced(ctx.client.clone(), &namespace);
        api.get_opt(&preview.name)
            .await?
            .ok_or_else(|| Error::ReferenceNotFound {
                kind: "PreviewEnvironment",
                namespace: namespace.clone(),
                name: preview.name.clone(),
            })?;
    }
    if let Some(svc) = &target.service {
        let api: Api<Service> = Api::namespaced(ctx.client.clone(), &namespace);
        api.get_opt(&svc.name)
            .await?
            .ok_or_else(|| Error::ReferenceNotFound {
                kind: "Service",
                namespace: namespace.clone(),
                name: svc.name.clone(),
            })?;
    }
    if let Some(http) = &hc.spec.probe.http
        && let Some(secret) = &http.headers_secret_ref
    {
        refs::secret_data(ctx, &namespace, &secret.name).await?;
    }

    let st = HealthCheckStatus {
        common: status::common_status(
            hc.as_ref(),
            &Outcome::stalled(
                "ProbingNotImplemented",
                "target and probe are valid; probing is not implemented in this version, so successThreshold, noData, maxLatency, probe.tcp and alert.pluginRefs have no effect and status.transitions, lastProbe, lastTransitionTime and latencyP50/P95 stay unset (docs/status.md)",
            ),
        ),
        ..hc.status.clone().unwrap_or_default()
    };
    status::apply_status(ctx, hc.as_ref(), "healthcheck", &st).await?;
    Ok(Action::await_change())
}
