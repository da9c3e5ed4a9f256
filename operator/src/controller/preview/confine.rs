//! The confinement of a preview namespace: an enforced name, ownership labels, Pod Security
//! `restricted`, the tenant's quota and limits under an operator ceiling, a default-deny
//! NetworkPolicy, and a RoleBinding of `pullwarden-preview-workload` to the synthetic preview
//! identity inside that namespace only.
//!
//! The identity: manifests are applied by impersonating the user [`PREVIEW_USER`] (group
//! [`PREVIEW_GROUP`]). No Secret, token or ServiceAccount stands behind it, so a workload in the
//! namespace cannot run as it or mint a token for it (a ServiceAccount could be both). RBAC
//! `resourceNames` cannot express "any user with this prefix", so one fixed user with an exact
//! impersonate grant is the narrowest form the manager's ClusterRole can hold; each preview
//! namespace's RoleBinding is what gives it rights there, and the namespace check of the safety
//! rules (and the admission policies) keeps a preview's objects in its own namespace. The user
//! extra [`PREVIEW_EXTRA`] names the preview in the API server's audit log.
//!
//! Quota: two ResourceQuotas. `pullwarden-preview` carries the tenant's `template.quota` (or the
//! defaults); `pullwarden-ceiling` carries the operator's ceiling (`--preview-quota-ceiling`)
//! without scopes. The API server enforces every quota of a namespace, so the effective limit is
//! the intersection by construction — a tenant quota with a `scopes` trick or a larger number
//! cannot lift the ceiling. The one LimitRange has the operator's per-container maximum
//! intersected in ([`limit_range_spec`]).
//!
//! Builders are pure; [`ensure`] applies them with the operator's own identity (these are the
//! only objects in a preview namespace not written as the preview identity).

use crate::api::{PreviewEnvironment, PreviewQuota};
use crate::context::Context;
use crate::error::Error;
use crate::settings::PreviewSettings;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

/// Label on a preview namespace: uid of the PreviewEnvironment that owns it. Pullwarden never
/// deletes a namespace without this label matching.
pub const OWNER_UID_LABEL: &str = "pullwarden.dev/preview-uid";
/// Label on a preview namespace: `<namespace>.<name>` of the owning PreviewEnvironment.
pub const OWNER_LABEL: &str = "pullwarden.dev/preview";
/// Label on a preview namespace: the namespace of the PreviewEnvironment (the tenant).
pub const TENANT_LABEL: &str = "pullwarden.dev/tenant";
/// Annotation on a preview namespace: the rendered preview host (read by the admission
/// policies' Ingress host rule).
pub const HOST_ANNOTATION: &str = "pullwarden.dev/preview-host";
/// The synthetic user manifests are applied as.
pub const PREVIEW_USER: &str = "pullwarden:preview";
/// The group of that user (admission policies match on it).
pub const PREVIEW_GROUP: &str = "pullwarden:previews";
/// User extra naming the preview (`<namespace>.<name>`) in audit logs.
pub const PREVIEW_EXTRA: &str = "preview.pullwarden.dev";
/// Name of the Pullwarden-owned RoleBinding, ResourceQuota and LimitRange (tenant values).
pub const CONFINEMENT_NAME: &str = "pullwarden-preview";
/// Name of the ResourceQuota holding the operator's ceiling.
pub const CEILING_NAME: &str = "pullwarden-ceiling";
/// Name of the default-deny NetworkPolicy.
pub const NETWORK_POLICY_NAME: &str = "pullwarden-default-deny";
/// The ClusterRole bound (inside the preview namespace only) to the preview identity.
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

/// Why a rendered preview namespace name may not be used, or `Ok`. The operator's form: the
/// name starts with `--preview-namespace-prefix` (`{{tenant}}` = the PreviewEnvironment's
/// namespace), is not a tenant namespace itself and matches no `--preview-namespace-deny` glob.
/// Without this a tenant could claim any free name: another tenant's future preview, or a name
/// that a dangling RoleBinding or an admission exemption elsewhere already trusts.
pub fn check_namespace_name(
    name: &str,
    tenant: &str,
    settings: &PreviewSettings,
) -> Result<(), String> {
    let prefix = settings.namespace_prefix.replace("{{tenant}}", tenant);
    if !name.starts_with(&prefix) || name.len() == prefix.len() {
        return Err(format!(
            "preview namespace {name:?} does not have the form the operator enforces: it must start with {prefix:?} (flag --preview-namespace-prefix={:?}); set template.namespace accordingly, e.g. \"{prefix}{{{{repo}}}}-pr-{{{{number}}}}\"",
            settings.namespace_prefix
        ));
    }
    for pattern in &settings.namespace_deny {
        let denied = globset::Glob::new(pattern)
            .map(|g| g.compile_matcher().is_match(name))
            .unwrap_or(pattern == name);
        if denied {
            return Err(format!(
                "preview namespace {name:?} is reserved by the operator (matches {pattern:?} of --preview-namespace-deny)"
            ));
        }
    }
    Ok(())
}

/// The namespace manifest.
pub fn namespace_manifest(name: &str, pe: &PreviewEnvironment, host: Option<&str>) -> Value {
    let mut annotations = serde_json::Map::new();
    if let Some(host) = host {
        annotations.insert(HOST_ANNOTATION.into(), json!(host));
    }
    json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {
                OWNER_UID_LABEL: pe.meta().uid.clone().unwrap_or_default(),
                OWNER_LABEL: owner_label_value(pe),
                TENANT_LABEL: pe.namespace().unwrap_or_default(),
                "app.kubernetes.io/managed-by": "pullwarden",
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
                "pod-security.kubernetes.io/warn": "restricted",
            },
            "annotations": annotations,
        },
    })
}

/// Default quota when the template sets none: enough for a typical web app preview, small
/// enough that a runaway PR cannot starve the cluster. The ceiling applies on top.
pub fn default_quota() -> Value {
    json!({"hard": {
        "pods": "30", "services": "15", "services.loadbalancers": "0", "services.nodeports": "0",
        "persistentvolumeclaims": "5", "requests.storage": "20Gi",
        "requests.cpu": "4", "requests.memory": "8Gi", "limits.memory": "16Gi",
    }})
}

/// Default container requests/limits, so that pods without resources still fit the quota
/// (including the ceiling's cpu limit and ephemeral-storage entries).
pub fn default_limit_range() -> Value {
    json!({"limits": [{
        "type": "Container",
        "default": {"cpu": "500m", "memory": "512Mi", "ephemeral-storage": "1Gi"},
        "defaultRequest": {"cpu": "50m", "memory": "64Mi", "ephemeral-storage": "64Mi"},
    }]})
}

fn map_of(pairs: &[(String, String)]) -> Value {
    Value::Object(
        pairs
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

/// The operator's ResourceQuota ceiling (no scopes: it counts everything in the namespace).
pub fn ceiling_quota(settings: &PreviewSettings) -> Value {
    json!({"hard": map_of(&settings.quota_ceiling)})
}

/// A Kubernetes quantity (`500m`, `2`, `4Gi`, `1e3`) as a number, for comparing limits.
pub fn quantity_value(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0f64.powi(2),
        "Gi" => 1024.0f64.powi(3),
        "Ti" => 1024.0f64.powi(4),
        "Pi" => 1024.0f64.powi(5),
        "Ei" => 1024.0f64.powi(6),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse().ok()?),
        _ => return None,
    };
    Some(number * factor)
}

/// The tenant's LimitRange (or the default) with the operator's per-container maximum
/// (`--preview-container-max`) intersected into its Container item: a tenant `max` above the
/// ceiling (or unreadable, or absent) becomes the ceiling. One LimitRange, not two, because
/// Kubernetes defaults a Container item's missing `default` to its `max`: a separate ceiling
/// object would give every container the maximum as its request. For the same reason a resource
/// the ceiling bounds gets Pullwarden's default when the tenant sets none.
pub fn limit_range_spec(tenant: Option<&Value>, settings: &PreviewSettings) -> Value {
    let mut spec = tenant.cloned().unwrap_or_else(default_limit_range);
    let defaults = default_limit_range();
    let fallback = &defaults["limits"][0];
    if !spec["limits"].is_array() {
        spec["limits"] = json!([]);
    }
    let limits = spec["limits"].as_array_mut().expect("an array");
    if !limits.iter().any(|l| l["type"] == "Container") {
        limits.push(json!({"type": "Container"}));
    }
    for item in limits.iter_mut().filter(|l| l["type"] == "Container") {
        for (resource, ceiling) in &settings.container_max {
            let tenant_max = item["max"][resource.as_str()]
                .as_str()
                .and_then(quantity_value);
            let lower = match (tenant_max, quantity_value(ceiling)) {
                (Some(t), Some(c)) => t > c,
                _ => true,
            };
            if lower {
                item["max"][resource.as_str()] = json!(ceiling);
            }
            for key in ["default", "defaultRequest"] {
                if item[key][resource.as_str()].is_null()
                    && !fallback[key][resource.as_str()].is_null()
                {
                    item[key][resource.as_str()] = fallback[key][resource.as_str()].clone();
                }
            }
        }
    }
    spec
}

/// Default-deny for ingress and egress; admitted: the namespace's own pods, the ingress
/// controller's namespace (ingress), DNS in kube-system and the operator's egress CIDRs
/// (egress). Tenant NetworkPolicies can only add peers inside the namespace (safety rules),
/// so this stays the boundary.
pub fn network_policy(namespace: &str, settings: &PreviewSettings) -> Value {
    let same_namespace = json!({"podSelector": {}});
    let mut egress = vec![
        json!({"to": [same_namespace]}),
        json!({
            "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}],
            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
        }),
    ];
    if !settings.egress_cidrs.is_empty() {
        let blocks: Vec<Value> = settings
            .egress_cidrs
            .iter()
            .map(|c| json!({"ipBlock": {"cidr": c.to_string()}}))
            .collect();
        egress.push(json!({ "to": blocks }));
    }
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": NETWORK_POLICY_NAME, "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "pullwarden"}},
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {"from": [same_namespace]},
                {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": settings.ingress_namespace}}}]},
            ],
            "egress": egress,
        },
    })
}

/// Every confinement object (besides the namespace), in apply order: the NetworkPolicy and the
/// ceilings before the RoleBinding, so nothing can be written as the preview identity before
/// the walls stand.
pub fn confinement_manifests(
    namespace: &str,
    quota: Option<&PreviewQuota>,
    settings: &PreviewSettings,
) -> Vec<Value> {
    let labels = json!({"app.kubernetes.io/managed-by": "pullwarden"});
    let quota_spec = quota
        .and_then(|q| q.resource_quota.as_ref())
        .map(|q| serde_json::to_value(q).expect("serialisable"))
        .unwrap_or_else(default_quota);
    let tenant_limits = quota
        .and_then(|q| q.limit_range.as_ref())
        .map(|l| serde_json::to_value(l).expect("serialisable"));
    let limits_spec = limit_range_spec(tenant_limits.as_ref(), settings);
    vec![
        network_policy(namespace, settings),
        json!({"apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": {"name": CEILING_NAME, "namespace": namespace, "labels": labels},
            "spec": ceiling_quota(settings)}),
        json!({"apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": {"name": CONFINEMENT_NAME, "namespace": namespace, "labels": labels},
            "spec": quota_spec}),
        json!({"apiVersion": "v1", "kind": "LimitRange",
            "metadata": {"name": CONFINEMENT_NAME, "namespace": namespace, "labels": labels},
            "spec": limits_spec}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": CONFINEMENT_NAME, "namespace": namespace, "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": WORKLOAD_CLUSTER_ROLE},
            "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": PREVIEW_USER}]}),
    ]
}

/// Creates or updates the namespace and its confinement. Refuses a namespace that exists and is
/// not owned by this preview (someone else's namespace is never adopted, let alone deleted).
/// A fingerprint of everything [`ensure`] writes for `namespace` (the namespace object and the
/// confinement manifests): equal fingerprints mean an `ensure` would change nothing.
pub fn fingerprint(
    pe: &PreviewEnvironment,
    namespace: &str,
    host: Option<&str>,
    settings: &PreviewSettings,
) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    namespace_manifest(namespace, pe, host)
        .to_string()
        .hash(&mut hasher);
    for manifest in confinement_manifests(namespace, pe.spec.template.quota.as_ref(), settings) {
        manifest.to_string().hash(&mut hasher);
    }
    hasher.finish()
}

pub async fn ensure(
    ctx: &Context,
    pe: &PreviewEnvironment,
    namespace: &str,
    host: Option<&str>,
) -> Result<(), Error> {
    let settings = &ctx.config.settings.previews;
    check_namespace_name(namespace, &pe.namespace().unwrap_or_default(), settings)
        .map_err(Error::InvalidSpec)?;
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    if let Some(existing) = namespaces.get_opt(namespace).await? {
        if !owned_by(&existing, pe) {
            return Err(Error::InvalidSpec(format!(
                "namespace {namespace} already exists and is not owned by this preview; choose another template.namespace"
            )));
        }
        // A previous teardown (TTL expiry) is still deleting it: writing now would race the
        // namespace controller removing the RoleBinding under our feet. Wait with back-off.
        if existing.metadata.deletion_timestamp.is_some() {
            return Err(Error::Internal(format!(
                "namespace {namespace} is still being deleted by an earlier teardown; deploying once it is gone"
            )));
        }
    }
    let params = PatchParams::apply(&Context::field_manager("preview")).force();
    namespaces
        .patch(
            namespace,
            &params,
            &Patch::Apply(&namespace_manifest(namespace, pe, host)),
        )
        .await?;
    for manifest in confinement_manifests(namespace, pe.spec.template.quota.as_ref(), settings) {
        let name = manifest["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let (ar, _) = super::apply::api_resource(&manifest)?;
        let api: Api<kube::api::DynamicObject> =
            Api::namespaced_with(ctx.client.clone(), namespace, &ar);
        api.patch(&name, &params, &Patch::Apply(&manifest)).await?;
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
    fn namespace_carries_ownership_tenant_host_and_pod_security() {
        let m = namespace_manifest("team-web-pr-1", &preview(), Some("pr-1.example.test"));
        assert_eq!(m["metadata"]["labels"][OWNER_UID_LABEL], "1234-abcd");
        assert_eq!(m["metadata"]["labels"][TENANT_LABEL], "team");
        assert_eq!(
            m["metadata"]["annotations"][HOST_ANNOTATION],
            "pr-1.example.test"
        );
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
    fn confinement_binds_only_the_synthetic_user_in_the_namespace() {
        let objs = confinement_manifests("team-web-pr-1", None, &PreviewSettings::default());
        let rb = objs.iter().find(|o| o["kind"] == "RoleBinding").unwrap();
        assert_eq!(rb["roleRef"]["name"], WORKLOAD_CLUSTER_ROLE);
        assert_eq!(rb["metadata"]["namespace"], "team-web-pr-1");
        assert_eq!(
            rb["subjects"],
            json!([{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": PREVIEW_USER}]),
            "no ServiceAccount subject: a workload could run as one"
        );
        assert!(
            objs.iter().all(|o| o["kind"] != "ServiceAccount"),
            "no identity a pod could use is created"
        );
        assert_eq!(
            objs.last().unwrap()["kind"],
            "RoleBinding",
            "the walls stand before the identity gets any right"
        );
        assert!(
            objs.iter()
                .all(|o| o["metadata"]["namespace"] == "team-web-pr-1")
        );
    }

    #[test]
    fn the_ceiling_is_a_separate_unscoped_quota_whatever_the_tenant_asks() {
        let tenant: PreviewQuota = serde_json::from_value(json!({
            "resourceQuota": {"hard": {"requests.cpu": "500", "pods": "1000"}, "scopes": ["Terminating"]},
            "limitRange": {"limits": [{"type": "Container", "max": {"cpu": "64"}}]}
        }))
        .unwrap();
        let settings = PreviewSettings::default();
        let objs = confinement_manifests("team-x", Some(&tenant), &settings);
        let quotas: Vec<&Value> = objs
            .iter()
            .filter(|o| o["kind"] == "ResourceQuota")
            .collect();
        assert_eq!(quotas.len(), 2);
        let ceiling = quotas
            .iter()
            .find(|q| q["metadata"]["name"] == CEILING_NAME)
            .unwrap();
        assert_eq!(ceiling["spec"]["hard"]["requests.cpu"], "4");
        assert_eq!(ceiling["spec"]["hard"]["services.loadbalancers"], "0");
        assert!(ceiling["spec"]["scopes"].is_null());
        for key in [
            "limits.cpu",
            "limits.memory",
            "requests.ephemeral-storage",
            "count/deployments.apps",
        ] {
            assert!(ceiling["spec"]["hard"][key].is_string(), "{key}");
        }
        let tenant_quota = quotas
            .iter()
            .find(|q| q["metadata"]["name"] == CONFINEMENT_NAME)
            .unwrap();
        assert_eq!(tenant_quota["spec"]["hard"]["pods"], "1000");
        let ranges: Vec<&Value> = objs.iter().filter(|o| o["kind"] == "LimitRange").collect();
        assert_eq!(
            ranges.len(),
            1,
            "one LimitRange: a max-only one would default limits to max"
        );
        let item = &ranges[0]["spec"]["limits"][0];
        assert_eq!(
            item["max"]["cpu"], "2",
            "the tenant's 64 cpus are lowered to the ceiling"
        );
        assert_eq!(item["max"]["memory"], "4Gi");
        assert_eq!(
            item["default"]["memory"], "512Mi",
            "a bounded resource gets a default"
        );
    }

    #[test]
    fn quantities_compare_across_suffixes() {
        assert_eq!(quantity_value("500m"), Some(0.5));
        assert_eq!(quantity_value("2"), Some(2.0));
        assert_eq!(quantity_value("4Gi"), Some(4.0 * 1024.0 * 1024.0 * 1024.0));
        assert_eq!(quantity_value("1e3"), Some(1000.0));
        assert!(quantity_value("3Gi").unwrap() < quantity_value("4G").unwrap());
        assert_eq!(quantity_value("lots"), None);
    }

    #[test]
    fn a_smaller_tenant_max_is_kept_and_garbage_is_replaced() {
        let settings = PreviewSettings::default();
        let tenant =
            json!({"limits": [{"type": "Container", "max": {"cpu": "500m", "memory": "lots"}}]});
        let spec = limit_range_spec(Some(&tenant), &settings);
        assert_eq!(spec["limits"][0]["max"]["cpu"], "500m");
        assert_eq!(spec["limits"][0]["max"]["memory"], "4Gi");
        let pods_only = json!({"limits": [{"type": "Pod", "max": {"cpu": "1"}}]});
        let spec = limit_range_spec(Some(&pods_only), &settings);
        assert_eq!(spec["limits"][1]["type"], "Container");
        assert_eq!(spec["limits"][1]["max"]["ephemeral-storage"], "4Gi");
    }

    #[test]
    fn default_limits_fill_every_resource_the_ceiling_quotas() {
        let defaults = default_limit_range();
        let d = &defaults["limits"][0];
        for resource in ["cpu", "memory", "ephemeral-storage"] {
            assert!(d["default"][resource].is_string(), "{resource}");
            assert!(d["defaultRequest"][resource].is_string(), "{resource}");
        }
    }

    #[test]
    fn network_policy_denies_by_default_and_admits_ingress_controller_and_dns() {
        let settings = PreviewSettings {
            egress_cidrs: vec!["10.20.0.0/16".parse().unwrap()],
            ..PreviewSettings::default()
        };
        let np = network_policy("team-x", &settings);
        assert_eq!(np["spec"]["podSelector"], json!({}));
        assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        let ingress = serde_json::to_string(&np["spec"]["ingress"]).unwrap();
        assert!(ingress.contains("ingress-nginx"), "{ingress}");
        assert!(!ingress.contains("ipBlock"), "{ingress}");
        let egress = serde_json::to_string(&np["spec"]["egress"]).unwrap();
        assert!(
            egress.contains("10.20.0.0/16") && egress.contains("53"),
            "{egress}"
        );
        assert!(!egress.contains("0.0.0.0/0"), "{egress}");
    }

    #[test]
    fn namespace_names_have_the_enforced_form() {
        let s = PreviewSettings::default();
        assert!(check_namespace_name("team-web-pr-1", "team", &s).is_ok());
        let err = check_namespace_name("web-pr-1", "team", &s).unwrap_err();
        assert!(
            err.contains("\"team-\"") && err.contains("--preview-namespace-prefix"),
            "{err}"
        );
        assert!(check_namespace_name("other-web-pr-1", "team", &s).is_err());
        assert!(check_namespace_name("team-", "team", &s).is_err());
        // The prefix lets tenant `kube` form `kube-system`; the deny-list still refuses it.
        let err = check_namespace_name("kube-system", "kube", &s).unwrap_err();
        assert!(err.contains("--preview-namespace-deny"), "{err}");
        let mut custom = s.clone();
        custom.namespace_prefix = "pv-{{tenant}}-".into();
        assert!(check_namespace_name("pv-team-7", "team", &custom).is_ok());
        assert!(check_namespace_name("team-7", "team", &custom).is_err());
    }

    #[test]
    fn long_owner_labels_are_hashed_within_63_chars() {
        let mut pe = preview();
        pe.metadata.name = Some("x".repeat(200));
        let v = owner_label_value(&pe);
        assert!(v.len() <= 63, "{v}");
    }
}
