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
use std::net::IpAddr;
use std::sync::Arc;

pub fn controller(cctx: Arc<ControllerContext>) -> KindController<HealthCheck> {
    KindController::new(primary_controller::<HealthCheck>(&cctx.ctx), |obj, cctx| {
        Box::pin(reconcile_guarded(obj, cctx, reconcile))
    })
}

/// Addresses never probed: link-local (incl. cloud metadata 169.254.169.254), unspecified,
/// broadcast and multicast.
pub fn refused_address(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) if v4.is_link_local() => Some("link-local (cloud metadata) address"),
        IpAddr::V4(v4) if v4.is_unspecified() => Some("unspecified address"),
        IpAddr::V4(v4) if v4.is_broadcast() || v4.is_multicast() => {
            Some("broadcast or multicast address")
        }
        IpAddr::V6(v6) if v6.is_unspecified() => Some("unspecified address"),
        IpAddr::V6(v6) if v6.is_multicast() => Some("multicast address"),
        IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => Some("link-local address"),
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .and_then(|v4| refused_address(IpAddr::V4(v4))),
        IpAddr::V4(_) => None,
    }
}

/// Checks a literal target URL against the SSRF rules (host names are checked per probe after
/// DNS resolution).
pub fn check_target_url(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("target.url: {e}"))?;
    let host = parsed.host_str().ok_or("target.url has no host")?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>()
        && let Some(why) = refused_address(ip)
    {
        return Err(format!(
            "target.url points at a {why} ({ip}), which is refused"
        ));
    }
    if host.eq_ignore_ascii_case("metadata.google.internal") {
        return Err("target.url points at a cloud metadata service, which is refused".into());
    }
    Ok(())
}

async fn reconcile(hc: Arc<HealthCheck>, cctx: Arc<ControllerContext>) -> Result<Action, Error> {
    let ctx = &cctx.ctx;
    let namespace = hc.namespace().unwrap_or_default();
    let target = &hc.spec.target;

    // validate
    if let Some(url) = &target.url {
        check_target_url(url).map_err(Error::InvalidSpec)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssrf_rules_for_literal_targets() {
        assert!(
            check_target_url("http://169.254.169.254/latest/meta-data")
                .unwrap_err()
                .contains("link-local")
        );
        assert!(
            check_target_url("http://0.0.0.0:8080/")
                .unwrap_err()
                .contains("unspecified")
        );
        assert!(
            check_target_url("http://[fe80::1]/")
                .unwrap_err()
                .contains("link-local")
        );
        assert!(
            check_target_url("http://[::ffff:169.254.169.254]/")
                .unwrap_err()
                .contains("link-local")
        );
        assert!(check_target_url("http://metadata.google.internal/").is_err());
        assert!(check_target_url("http://10.0.0.5:8080/healthz").is_ok());
        assert!(check_target_url("https://app.example.com/").is_ok());
    }
}
