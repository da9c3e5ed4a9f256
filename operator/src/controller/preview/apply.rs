//! Applying a preview's objects while impersonating the synthetic preview identity (see
//! [`super::confine`]), so that Kubernetes RBAC — not only our allow-list — confines what a pull
//! request can create;
//! pruning objects of earlier revisions; reading workload readiness.

use super::confine::{PREVIEW_EXTRA, PREVIEW_GROUP, PREVIEW_USER};
use crate::api::InventoryEntry;
use crate::context::Context;
use crate::error::Error;
use crate::render::RenderedObject;
use kube::Client;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
};
use serde_json::Value;

/// The `ApiResource` of a manifest from its apiVersion and kind.
pub fn api_resource(manifest: &Value) -> Result<(ApiResource, GroupVersionKind), Error> {
    let api_version = manifest["apiVersion"].as_str().unwrap_or_default();
    let kind = manifest["kind"].as_str().unwrap_or_default();
    gvk_resource(api_version, kind)
}

fn gvk_resource(api_version: &str, kind: &str) -> Result<(ApiResource, GroupVersionKind), Error> {
    if api_version.is_empty() || kind.is_empty() {
        return Err(Error::Internal(
            "manifest without apiVersion or kind".into(),
        ));
    }
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    let gvk = GroupVersionKind::gvk(group, version, kind);
    Ok((ApiResource::from_gvk(&gvk), gvk))
}

/// A client that acts as the user `pullwarden:preview` (group `pullwarden:previews`), with the
/// preview named in a user extra for the audit log. The RoleBinding in `namespace` is what gives
/// this identity any right; it has no token a workload could obtain.
pub fn impersonated_client(ctx: &Context, preview: &str) -> Result<Client, Error> {
    let mut config = ctx.kube_config.clone();
    config.auth_info.impersonate = Some(PREVIEW_USER.into());
    config.auth_info.impersonate_groups = Some(vec![PREVIEW_GROUP.into()]);
    config.auth_info.impersonate_user_extra = Some(
        [(PREVIEW_EXTRA.to_string(), vec![preview.to_string()])]
            .into_iter()
            .collect(),
    );
    Ok(Client::try_from(config)?)
}

/// Waits until the API server's RBAC authorizer sees the namespace's RoleBinding for the
/// preview identity. The authorizer reads RoleBindings from an informer cache, so the first
/// apply right after the binding was created can be refused with a 403 that is not the PR's
/// fault (seen in CI). One SelfSubjectAccessReview per namespace confinement (the identity may
/// always ask about itself); still denied after ~5 s is a transient error retried with back-off,
/// never a refusal of the manifests.
pub async fn await_grant(client: &Client, namespace: &str) -> Result<(), Error> {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
    };
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(namespace.to_owned()),
                verb: Some("patch".into()),
                resource: Some("configmaps".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    for attempt in 0..25u32 {
        let answer = reviews.create(&Default::default(), &review).await?;
        if answer.status.is_some_and(|s| s.allowed) {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(
            50 + 10 * u64::from(attempt),
        ))
        .await;
    }
    Err(Error::Internal(format!(
        "the RoleBinding of the preview identity in {namespace} is not effective yet (RBAC cache); retrying"
    )))
}

/// Explains an API refusal of a PR's object: RBAC denials and validation errors are the PR's
/// problem (reported on it, retried on the next push), everything else is ours.
fn refusal(entry: &str, err: kube::Error) -> Error {
    match err {
        kube::Error::Api(s) if s.code == 403 => Error::ManifestsRefused(format!(
            "{entry}: forbidden for the preview identity: {}",
            s.message
        )),
        kube::Error::Api(s) if s.code == 400 || s.code == 422 || s.code == 404 => {
            Error::ManifestsRefused(format!(
                "{entry}: rejected by the API server: {}",
                s.message
            ))
        }
        other => other.into(),
    }
}

/// Server-side applies every object (field manager `pullwarden.dev/preview`) as the preview
/// identity.
pub async fn apply_objects(client: &Client, objects: &[RenderedObject]) -> Result<(), Error> {
    let params = PatchParams::apply(&Context::field_manager("preview")).force();
    for obj in objects {
        let (ar, _) = gvk_resource(&obj.api_version, &obj.kind)?;
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &obj.namespace, &ar);
        api.patch(&obj.name, &params, &Patch::Apply(&obj.body))
            .await
            .map_err(|e| refusal(&format!("{}/{}", obj.kind, obj.name), e))?;
    }
    Ok(())
}

/// Deletes objects of an earlier revision that the current one no longer has.
pub async fn prune(client: &Client, stale: &[InventoryEntry]) -> Result<(), Error> {
    for entry in stale {
        let (ar, _) = gvk_resource(&entry.api_version, &entry.kind)?;
        let Some(ns) = entry.namespace.as_deref() else {
            continue;
        };
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
        match api.delete(&entry.name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                return Err(refusal(
                    &format!("pruning {}/{}", entry.kind, entry.name),
                    e,
                ));
            }
        }
    }
    Ok(())
}

/// The `ApiResource` of a workload kind whose readiness previews wait for.
pub fn workload_resource(kind: &str) -> ApiResource {
    gvk_resource("apps/v1", kind)
        .map(|(ar, _)| ar)
        .expect("apps/v1 workload kinds resolve")
}

/// Scales the inventory's Deployments and StatefulSets to zero replicas (a sleeping preview).
/// The field manager is `pullwarden.dev/sleep`: the next apply of the revision (a wake-up or a
/// push) forces the rendered replica counts back.
pub async fn scale_to_zero(client: &Client, inventory: &[InventoryEntry]) -> Result<(), Error> {
    let params = PatchParams::apply(&Context::field_manager("sleep")).force();
    for entry in inventory {
        if !matches!(entry.kind.as_str(), "Deployment" | "StatefulSet") {
            continue;
        }
        let Some(ns) = entry.namespace.as_deref() else {
            continue;
        };
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), ns, &workload_resource(&entry.kind));
        let patch = serde_json::json!({
            "apiVersion": entry.api_version, "kind": entry.kind,
            "metadata": {"name": entry.name}, "spec": {"replicas": 0}
        });
        match api.patch(&entry.name, &params, &Patch::Apply(&patch)).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// What still blocks readiness (empty: every workload is available).
pub async fn not_ready_workloads(
    client: &Client,
    inventory: &[InventoryEntry],
) -> Result<Vec<String>, Error> {
    let mut waiting = Vec::new();
    for entry in inventory {
        if !matches!(entry.kind.as_str(), "Deployment" | "StatefulSet") {
            continue;
        }
        let (ar, _) = gvk_resource(&entry.api_version, &entry.kind)?;
        let Some(ns) = entry.namespace.as_deref() else {
            continue;
        };
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
        let Some(obj) = api.get_opt(&entry.name).await? else {
            waiting.push(format!("{}/{} (missing)", entry.kind, entry.name));
            continue;
        };
        if let Some(why) = workload_blocker(&entry.kind, &obj) {
            waiting.push(format!("{}/{} ({why})", entry.kind, entry.name));
        }
    }
    Ok(waiting)
}

/// Why a Deployment or StatefulSet is not yet available for its current generation.
pub fn workload_blocker(kind: &str, obj: &DynamicObject) -> Option<String> {
    let generation = obj.metadata.generation.unwrap_or(0);
    let spec_replicas = obj.data["spec"]["replicas"].as_i64().unwrap_or(1);
    let status = &obj.data["status"];
    let observed = status["observedGeneration"].as_i64().unwrap_or(0);
    if observed < generation {
        return Some("rollout not observed yet".into());
    }
    let n = |field: &str| status[field].as_i64().unwrap_or(0);
    match kind {
        "Deployment" => {
            let available = status["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Available" && c["status"] == "True")
            });
            if n("updatedReplicas") < spec_replicas {
                Some(format!("{}/{spec_replicas} updated", n("updatedReplicas")))
            } else if n("availableReplicas") < spec_replicas || !available {
                Some(format!(
                    "{}/{spec_replicas} available",
                    n("availableReplicas")
                ))
            } else {
                None
            }
        }
        "StatefulSet" => {
            if n("updatedReplicas") < spec_replicas || n("readyReplicas") < spec_replicas {
                Some(format!("{}/{spec_replicas} ready", n("readyReplicas")))
            } else {
                None
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(status: Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "p", "generation": 2},
            "spec": {"replicas": 2}, "status": status
        }))
        .unwrap()
    }

    #[test]
    fn deployment_readiness_needs_the_current_generation_available() {
        let stale = deployment(
            json!({"observedGeneration": 1, "updatedReplicas": 2, "availableReplicas": 2}),
        );
        assert_eq!(
            workload_blocker("Deployment", &stale).as_deref(),
            Some("rollout not observed yet")
        );
        let rolling = deployment(
            json!({"observedGeneration": 2, "updatedReplicas": 1, "availableReplicas": 2}),
        );
        assert_eq!(
            workload_blocker("Deployment", &rolling).as_deref(),
            Some("1/2 updated")
        );
        let unavailable = deployment(
            json!({"observedGeneration": 2, "updatedReplicas": 2, "availableReplicas": 2,
            "conditions": [{"type": "Available", "status": "False"}]}),
        );
        assert!(workload_blocker("Deployment", &unavailable).is_some());
        let ready = deployment(
            json!({"observedGeneration": 2, "updatedReplicas": 2, "availableReplicas": 2,
            "conditions": [{"type": "Available", "status": "True"}]}),
        );
        assert_eq!(workload_blocker("Deployment", &ready), None);
    }

    #[test]
    fn resources_from_api_versions() {
        let (ar, _) = gvk_resource("networking.k8s.io/v1", "Ingress").unwrap();
        assert_eq!(ar.plural, "ingresses");
        let (ar, _) = gvk_resource("v1", "ConfigMap").unwrap();
        assert_eq!((ar.group.as_str(), ar.plural.as_str()), ("", "configmaps"));
        let (ar, _) = gvk_resource("autoscaling/v2", "HorizontalPodAutoscaler").unwrap();
        assert_eq!(ar.plural, "horizontalpodautoscalers");
        let (ar, _) = gvk_resource("networking.k8s.io/v1", "NetworkPolicy").unwrap();
        assert_eq!(ar.plural, "networkpolicies");
    }
}
