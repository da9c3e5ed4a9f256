//! `template.healthCheck`: the HealthCheck a preview owns, and what its state means for the
//! preview and the pull request.
//!
//! - [`desired`] (pure): the HealthCheck `<preview>-health` in the preview's namespace,
//!   owned by the PreviewEnvironment (garbage-collected with it), probing its URL over HTTP;
//!   applied only when the store's copy differs, deleted when `template.healthCheck` goes.
//! - [`healthy`] (pure): the preview's `Healthy` condition from the workloads and the check's
//!   state: OK → True, Degraded → False (with the probe's error), Unknown or not created yet →
//!   Unknown (the `previewHealthy` gate rule waits on it).
//! - [`status_for`] (pure) and [`should_write`]: the `pullwarden/health` commit status on the
//!   head, once per (SHA, state), recorded in `status.healthReported`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::api::{
    ConditionStatus, HealthCheck, HealthCheckSpec, HealthState, HealthTarget, HttpProbe,
    LocalObjectReference, PreviewEnvironment, PreviewHealthCheck, Probe, ReportedState,
};
use crate::context::Context;
use crate::error::Error;
use crate::forge::{CommitStatus, StatusState};

/// Commit status context of preview health.
pub const STATUS_CONTEXT: &str = "pullwarden/health";
/// Label on a preview's HealthCheck: the PreviewEnvironment's name (the preview controller
/// watches HealthChecks with it).
pub const PREVIEW_LABEL: &str = "pullwarden.dev/preview-health-of";

/// The name of a preview's HealthCheck.
pub fn check_name(preview: &str) -> String {
    format!("{preview}-health")
}

/// Pure: the HealthCheck `template.healthCheck` asks for.
pub fn desired(pe: &PreviewEnvironment, spec: &PreviewHealthCheck) -> HealthCheck {
    let name = pe.name_any();
    let mut hc = HealthCheck::new(
        &check_name(&name),
        HealthCheckSpec {
            target: HealthTarget {
                url: None,
                preview_ref: Some(LocalObjectReference { name: name.clone() }),
                service: None,
            },
            probe: Probe {
                http: Some(HttpProbe {
                    method: Default::default(),
                    path: Some(spec.path.clone()),
                    headers: BTreeMap::new(),
                    headers_secret_ref: None,
                    expect_status: if spec.expect_status.is_empty() {
                        vec!["200-299".into()]
                    } else {
                        spec.expect_status.clone()
                    },
                    body_contains: None,
                    max_latency: None,
                }),
                tcp: None,
                grpc: None,
            },
            interval: spec
                .interval
                .unwrap_or_else(|| "30s".parse().expect("valid duration")),
            timeout: "5s".parse().expect("valid duration"),
            failure_threshold: 3,
            success_threshold: 1,
            no_data: Default::default(),
            tls: None,
            alert: None,
            suspend: false,
        },
    );
    hc.metadata.namespace = pe.namespace();
    hc.metadata.labels = Some(BTreeMap::from([(PREVIEW_LABEL.to_owned(), name.clone())]));
    hc.metadata.owner_references = Some(vec![OwnerReference {
        api_version: PreviewEnvironment::api_version(&()).into_owned(),
        kind: PreviewEnvironment::kind(&()).into_owned(),
        name,
        uid: pe.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }]);
    // A timeout above a short interval would be refused by the CRD.
    if let Ok(i) = crate::api::parse_duration("interval", &hc.spec.interval)
        && i < std::time::Duration::from_secs(5)
    {
        hc.spec.timeout = hc.spec.interval;
    }
    hc
}

fn owned_by(hc: &HealthCheck, pe: &PreviewEnvironment) -> bool {
    hc.owner_references()
        .iter()
        .any(|o| Some(&o.uid) == pe.uid().as_ref() && o.controller == Some(true))
}

/// Makes the preview's HealthCheck match `template.healthCheck` (created, updated or deleted)
/// and returns it as the watch last saw it.
pub async fn ensure(
    ctx: &Context,
    store: Option<&Store<DeserializeGuard<HealthCheck>>>,
    pe: &PreviewEnvironment,
) -> Result<Option<Arc<HealthCheck>>, Error> {
    let namespace = pe.namespace().unwrap_or_default();
    let name = check_name(&pe.name_any());
    let current = store
        .and_then(|s| s.get(&ObjectRef::new(&name).within(&namespace)))
        .and_then(|g| g.0.as_ref().ok().cloned().map(Arc::new));
    let api: Api<HealthCheck> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(spec) = &pe.spec.template.health_check else {
        if let Some(hc) = current.filter(|hc| owned_by(hc, pe)) {
            api.delete(&hc.name_any(), &DeleteParams::background())
                .await
                .map(|_| ())
                .or_else(|e| match e {
                    kube::Error::Api(s) if s.code == 404 => Ok(()),
                    e => Err(e),
                })?;
        }
        return Ok(None);
    };
    let want = desired(pe, spec);
    if let Some(hc) = &current {
        if !owned_by(hc, pe) {
            return Err(Error::InvalidSpec(format!(
                "template.healthCheck: a HealthCheck {name} that this preview does not own already exists; rename or delete it"
            )));
        }
        if hc.spec == want.spec {
            return Ok(current);
        }
    }
    let applied = api
        .patch(
            &name,
            &PatchParams::apply(&Context::field_manager("preview")).force(),
            &Patch::Apply(&want),
        )
        .await?;
    Ok(Some(current.unwrap_or_else(|| Arc::new(applied))))
}

/// Pure: the `Healthy` condition of a Ready preview whose workloads are available.
pub fn healthy(check: Option<&HealthCheck>) -> (ConditionStatus, &'static str, String) {
    let Some(hc) = check else {
        return (
            ConditionStatus::Unknown,
            "HealthCheckPending",
            "every workload is available; the health check is being created".into(),
        );
    };
    let st = hc.status.clone().unwrap_or_default();
    let error = st
        .last_probe
        .as_ref()
        .and_then(|p| p.error.clone())
        .unwrap_or_default();
    match st.state {
        HealthState::Ok => (
            ConditionStatus::True,
            "HealthCheckPassing",
            format!(
                "every workload is available and HealthCheck {} is OK{}",
                hc.name_any(),
                st.availability
                    .map(|a| format!(" (availability {a})"))
                    .unwrap_or_default()
            ),
        ),
        HealthState::Degraded => (
            ConditionStatus::False,
            "HealthCheckFailing",
            format!(
                "HealthCheck {} is Degraded after {} failed probes: {error}",
                hc.name_any(),
                st.consecutive_failures
            ),
        ),
        HealthState::Unknown => (
            ConditionStatus::Unknown,
            "HealthCheckPending",
            if error.is_empty() {
                format!(
                    "every workload is available; HealthCheck {} has no verdict yet",
                    hc.name_any()
                )
            } else {
                format!("HealthCheck {} has no verdict yet: {error}", hc.name_any())
            },
        ),
    }
}

/// Pure: the commit status for a health condition.
pub fn status_for(st: ConditionStatus, message: &str) -> (StatusState, &'static str, String) {
    let (state, record) = match st {
        ConditionStatus::True => (StatusState::Success, "success"),
        ConditionStatus::False => (StatusState::Failure, "failure"),
        ConditionStatus::Unknown => (StatusState::Pending, "pending"),
    };
    let mut description = message.to_owned();
    crate::api::truncate_at_char_boundary(&mut description, 140);
    (state, record, description)
}

/// Whether `record` on `sha` is news for the pull request.
pub fn should_write(previous: Option<&ReportedState>, sha: &str, record: &str) -> bool {
    previous.is_none_or(|p| p.sha != sha || p.state != record)
}

/// The commit status to send.
pub fn commit_status(state: StatusState, description: &str, url: Option<&str>) -> CommitStatus {
    CommitStatus::new(STATUS_CONTEXT, state, description, url.map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{HealthCheckStatus, ProbeResult};

    fn pe() -> PreviewEnvironment {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "pullwarden.dev/v1alpha1", "kind": "PreviewEnvironment",
            "metadata": {"name": "web-pr-7", "namespace": "team", "uid": "pe-uid"},
            "spec": {"repositoryRef": {"name": "web"}, "pullRequest": 7,
                     "template": {"path": "deploy", "healthCheck": {"path": "/healthz", "interval": "2s"}}}
        }))
        .unwrap()
    }

    #[test]
    fn the_owned_check_probes_the_preview() {
        let pe = pe();
        let hc = desired(&pe, pe.spec.template.health_check.as_ref().unwrap());
        assert_eq!(hc.metadata.name.as_deref(), Some("web-pr-7-health"));
        assert_eq!(hc.metadata.namespace.as_deref(), Some("team"));
        assert!(owned_by(&hc, &pe));
        assert_eq!(
            hc.spec.target.preview_ref.as_ref().unwrap().name,
            "web-pr-7"
        );
        let http = hc.spec.probe.http.as_ref().unwrap();
        assert_eq!(http.path.as_deref(), Some("/healthz"));
        assert_eq!(http.expect_status, vec!["200-299".to_string()]);
        // timeout never above the interval
        assert_eq!(hc.spec.timeout.to_string(), hc.spec.interval.to_string());
    }

    #[test]
    fn healthy_follows_the_check_state() {
        let pe = pe();
        let mut hc = desired(&pe, pe.spec.template.health_check.as_ref().unwrap());
        assert_eq!(healthy(None).0, ConditionStatus::Unknown);
        assert_eq!(healthy(Some(&hc)).1, "HealthCheckPending");
        hc.status = Some(HealthCheckStatus {
            state: HealthState::Degraded,
            consecutive_failures: 3,
            last_probe: Some(ProbeResult {
                error: Some("status 503 not in 200-299".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        let (st, reason, msg) = healthy(Some(&hc));
        assert_eq!((st, reason), (ConditionStatus::False, "HealthCheckFailing"));
        assert!(msg.contains("503"), "{msg}");
        hc.status.as_mut().unwrap().state = HealthState::Ok;
        assert_eq!(healthy(Some(&hc)).0, ConditionStatus::True);
    }

    #[test]
    fn one_status_per_sha_and_state() {
        let rec = ReportedState {
            sha: "a".into(),
            state: "success".into(),
            ..Default::default()
        };
        assert!(should_write(None, "a", "success"));
        assert!(!should_write(Some(&rec), "a", "success"));
        assert!(should_write(Some(&rec), "a", "failure"));
        assert!(should_write(Some(&rec), "b", "success"));
        let (state, record, d) = status_for(ConditionStatus::False, &"x".repeat(300));
        assert_eq!((state, record), (StatusState::Failure, "failure"));
        assert_eq!(d.len(), 140);
    }
}
