//! The confinement of a preview namespace: ownership labels, Pod Security `restricted`, quota,
//! limits, and a ServiceAccount bound to `pullwarden-preview-workload` inside that namespace only.
//!
//! Builders are pure; [`ensure`] applies them with the operator's own identity (these are the
//! only objects in a preview namespace not created by impersonating the preview's
//! ServiceAccount).

use crate::api::{PreviewEnvironment, PreviewQuota};
use crate::context::Context;
use crate::error::Error;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

/// Label on a preview namespace: uid of the PreviewEnvironment that owns it. Pullwarden never
/// deletes a namespace without this label matching.
pub const OWNER_UID_LABEL: &str = "pullwarden.dev/preview-uid";
/// Label on a preview namespace: `<namespace>.<name>` of the owning PreviewEnvironment.
pub const OWNER_LABEL: &str = "pullwarden.dev/preview";
/// The preview namespace's ServiceAccount that manifests are applied as.
pub const PREVIEW_SERVICE_ACCOUNT: &str = "pullwarden-preview";
/// The ClusterRole bound (inside the preview namespace only) to that ServiceAccount.
pub const WORKLOAD_CLUSTER_ROLE: &str = "pullwarden-preview-workload";

/// `<namespace>.<name>` of a preview, as a label value (≤ 63 chars, hashed when longer).
pub fn owner_label_value(pe: &PreviewEnvironment) -> String {
    let raw = format!("{}.{}", pe.namespace().unwrap_or_default(), pe.name_any());
    if raw.len() <= 63 {
        return raw;
    }
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(raw.as_bytes()));
    format!(
        "{}-{}",
        &raw[..50].trim_end_matches(['-', '.']),
        &digest[..12]
    )
}

/// Whether a namespace's labels say this preview owns it.
pub fn owned_by(ns: &Namespace, pe: &PreviewEnvironment) -> bool {
    let uid = pe.meta().uid.as_deref().unwrap_or_default();
    !uid.is_empty() && ns.labels().get(OWNER_UID_LABEL).map(String::as_str) == Some(uid)
}

/// The namespace manifest.
pub fn namespace_manifest(name: &str, pe: &PreviewEnvironment) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {
                OWNER_UID_LABEL: pe.meta().uid.clone().unwrap_or_default(),
                OWNER_LABEL: owner_label_value(pe),
                "app.kubernetes.io/managed-by": "pullwarden",
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
                "pod-security.kubernetes.io/warn": "restricted",
            },
        },
    })
}

/// Default quota when the template sets none: enough for a typical web app preview, small
/// enough that a runaway PR cannot starve the cluster.
pub fn default_quota() -> Value {
    json!({"hard": {
        "pods": "30", "services": "15", "services.loadbalancers": "0", "services.nodeports": "0",
        "persistentvolumeclaims": "5", "requests.storage": "20Gi",
        "requests.cpu": "4", "requests.memory": "8Gi", "limits.memory": "16Gi",
    }})
}

/// Default container requests/limits, so that pods without resources still fit the quota.
pub fn default_limit_range() -> Value {
    json!({"limits": [{
        "type": "Container",
        "default": {"cpu": "500m", "memory": "512Mi"},
        "defaultRequest": {"cpu": "50m", "memory": "64Mi"},
    }]})
}

/// Every confinement object (besides the namespace), in apply order.
pub fn confinement_manifests(namespace: &str, quota: Option<&PreviewQuota>) -> Vec<Value> {
    let labels = json!({"app.kubernetes.io/managed-by": "pullwarden"});
    let quota_spec = quota
        .and_then(|q| q.resource_quota.as_ref())
        .map(|q| serde_json::to_value(q).expect("serialisable"))
        .unwrap_or_else(default_quota);
    let limits_spec = quota
        .and_then(|q| q.limit_range.as_ref())
        .map(|l| serde_json::to_value(l).expect("serialisable"))
        .unwrap_or_else(default_limit_range);
    vec![
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": PREVIEW_SERVICE_ACCOUNT, "namespace": namespace, "labels": labels},
            "automountServiceAccountToken": false}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": PREVIEW_SERVICE_ACCOUNT, "namespace": namespace, "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": WORKLOAD_CLUSTER_ROLE},
            "subjects": [{"kind": "ServiceAccount", "name": PREVIEW_SERVICE_ACCOUNT, "namespace": namespace}]}),
        json!({"apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": {"name": "pullwarden-preview", "namespace": namespace, "labels": labels},
            "spec": quota_spec}),
        json!({"apiVersion": "v1", "kind": "LimitRange",
            "metadata": {"name": "pullwarden-preview", "namespace": namespace, "labels": labels},
            "spec": limits_spec}),
    ]
}

/// Creates or updates the namespace and its confinement. Refuses a namespace that exists and is
/// not owned by this preview (someone else's namespace is never adopted, let alone deleted).
pub async fn ensure(ctx: &Context, pe: &PreviewEnvironment, namespace: &str) -> Result<(), Error> {
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    if let Some(existing) = namespaces.get_opt(namespace).await?
        && !owned_by(&existing, pe)
    {
        return Err(Error::InvalidSpec(format!(
            "namespace {namespace} already exists and is not owned by this preview; choose another template.namespace"
        )));
    }
    let params = PatchParams::apply(&Context::field_manager("preview")).force();
    namespaces
        .patch(
            namespace,
            &params,
            &Patch::Apply(&namespace_manifest(namespace, pe)),
        )
        .await?;
    for manifest in confinement_manifests(namespace, pe.spec.template.quota.as_ref()) {
        let kind = manifest["kind"].as_str().unwrap_or_default();
        let name = manifest["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        match kind {
            "ServiceAccount" => {
                let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), namespace);
                api.patch(&name, &params, &Patch::Apply(&manifest)).await?;
            }
            _ => {
                let (ar, _) = super::apply::api_resource(&manifest)?;
                let api: Api<kube::api::DynamicObject> =
                    Api::namespaced_with(ctx.client.clone(), namespace, &ar);
                api.patch(&name, &params, &Patch::Apply(&manifest)).await?;
            }
        }
    }
    Ok(())
}

/// Deletes the namespace if (and only if) this preview owns it. Returns whether a delete was
/// issued or the namespace is already gone.
pub async fn teardown(
    ctx: &Context,
    pe: &PreviewEnvironment,
    namespace: &str,
) -> Result<bool, Error> {
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    match namespaces.get_opt(namespace).await? {
        None => Ok(true),
        Some(ns) if owned_by(&ns, pe) => {
            if ns.metadata.deletion_timestamp.is_none() {
                match namespaces
                    .delete(namespace, &DeleteParams::background())
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(true)
        }
        Some(_) => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preview() -> PreviewEnvironment {
        let mut pe: PreviewEnvironment = serde_json::from_value(json!({
            "apiVersion": "pullwarden.dev/v1alpha1", "kind": "PreviewEnvironment",
            "metadata": {"name": "web-pr-1", "namespace": "team", "uid": "1234-abcd"},
            "spec": {"repositoryRef": {"name": "web"}, "pullRequest": 1, "template": {"path": "deploy"}}
        }))
        .unwrap();
        pe.metadata.uid = Some("1234-abcd".into());
        pe
    }

    #[test]
    fn namespace_carries_ownership_and_pod_security() {
        let m = namespace_manifest("web-pr-1", &preview());
        assert_eq!(m["metadata"]["labels"][OWNER_UID_LABEL], "1234-abcd");
        assert_eq!(
            m["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
            "restricted"
        );
        let ns: Namespace = serde_json::from_value(m).unwrap();
        assert!(owned_by(&ns, &preview()));
        let mut other = preview();
        other.metadata.uid = Some("other".into());
        assert!(
            !owned_by(&ns, &other),
            "a different preview does not own it"
        );
        let foreign: Namespace =
            serde_json::from_value(json!({"metadata": {"name": "kube-system"}})).unwrap();
        assert!(!owned_by(&foreign, &preview()));
    }

    #[test]
    fn confinement_binds_only_the_workload_role_in_the_namespace() {
        let objs = confinement_manifests("web-pr-1", None);
        let rb = objs.iter().find(|o| o["kind"] == "RoleBinding").unwrap();
        assert_eq!(rb["roleRef"]["name"], WORKLOAD_CLUSTER_ROLE);
        assert_eq!(rb["metadata"]["namespace"], "web-pr-1");
        assert_eq!(rb["subjects"][0]["namespace"], "web-pr-1");
        let quota = objs.iter().find(|o| o["kind"] == "ResourceQuota").unwrap();
        assert_eq!(quota["spec"]["hard"]["services.loadbalancers"], "0");
        assert!(
            objs.iter()
                .all(|o| o["metadata"]["namespace"] == "web-pr-1")
        );
    }

    #[test]
    fn long_owner_labels_are_hashed_within_63_chars() {
        let mut pe = preview();
        pe.metadata.name = Some("x".repeat(200));
        let v = owner_label_value(&pe);
        assert!(v.len() <= 63, "{v}");
    }
}
