//! The product's safety rules for rendered objects (design: "Safety rules that are part of the
//! product"). Nothing here is configurable by a template: the only inputs besides the object
//! are the preview namespace, the rendered host and the operator's [`PreviewSettings`] (flags
//! of `pullwarden run`, chart values under `security:`), which a tenant cannot change.
//!
//! - Only the namespaced kinds of [`ALLOWED_KINDS`], in exactly the listed API version. The same
//!   list is granted to the preview identity by `config/rbac/preview_workload_role.yaml` and
//!   enforced for every writer by the admission policy `config/admission/policies.yaml` (tests
//!   keep the three equal), so RBAC and admission confine what the allow-list lets through, and
//!   the allow-list gives a clear message before anything is applied.
//! - `metadata.namespace` absent (it is then set) or equal to the preview namespace.
//! - Valid names; no two objects of the same kind and name (the later one is refused, because
//!   server-side apply would silently merge them). Names starting with [`RESERVED_PREFIX`] are
//!   Pullwarden's own (the namespace's ServiceAccount, RoleBinding, quota, LimitRange and
//!   default-deny NetworkPolicy): a template can neither replace nor prune them.
//! - No `metadata.finalizers`: an unknown finalizer keeps the namespace in `Terminating` forever.
//! - Services: no `ExternalName` (it lets an Ingress controller be pointed at any name), no
//!   `externalIPs` (CVE-2020-8554), NodePort/LoadBalancer only when the operator lists them in
//!   `service_types`.
//! - Ingresses: every rule has a host; hosts (of rules and TLS) equal the rendered `host` or sit
//!   under the operator's preview `domain`, never a wildcard; no `defaultBackend` (it catches
//!   every host); `ingressClassName` is the operator's class (set when absent) or, without one,
//!   absent; annotations only from the operator's allow-list (empty by default: annotations
//!   configure the controller — snippets, auth, cert-manager issuers — and
//!   `kubernetes.io/ingress.class` picks another controller), besides [`TOOL_ANNOTATIONS`].
//! - Secrets: no service-account token Secrets (type `kubernetes.io/service-account-token` or
//!   the `kubernetes.io/service-account.name` annotation): the token controller would fill in a
//!   token of a ServiceAccount of the namespace.
//! - Pod templates of Deployment, StatefulSet, Job and CronJob: no `hostNetwork`, `hostPID`,
//!   `hostIPC`, `hostPath` volumes, `hostPort`s or privileged containers (Pod Security
//!   `restricted` enforces these too, but only when pods are created — long after the apply
//!   "succeeded" — and then only in events nobody reads; refusing here puts the reason on the
//!   pull request); no `nodeName` (bypasses the scheduler and taints), no `system-*` priority
//!   class (preempts cluster components), no toleration of control-plane taints or of every
//!   taint, `runtimeClassName` only from the operator's list, no `serviceAccountToken`
//!   projections (tokens for other audiences, e.g. a cloud IAM or Vault trusting the cluster's
//!   issuer) and no Pullwarden ServiceAccount. `automountServiceAccountToken` is allowed: the
//!   pod's own ServiceAccount has no rights (RBAC binds the synthetic preview user, not a
//!   ServiceAccount).
//!
//! Checks run on the final JSON (placeholders substituted, typed), the same tree that is
//! applied, so a value cannot switch something on after the check.

use serde_json::Value;

use super::error::RefusalReason;
use super::params::{is_dns_label, is_dns_subdomain};
use crate::settings::PreviewSettings;

/// Names starting with this are reserved for the objects Pullwarden creates in a preview
/// namespace (`pullwarden-preview`, `pullwarden-default-deny`, and any later ones).
pub const RESERVED_PREFIX: &str = "pullwarden-";

/// Annotations written by deployment tools for their own bookkeeping (client-side apply, Argo
/// CD's resource tracking), which no ingress controller reads: always allowed on an Ingress.
pub const TOOL_ANNOTATIONS: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    "argocd.argoproj.io/tracking-id",
];

/// Control-plane node taints a preview pod may not tolerate.
pub const CONTROL_PLANE_TAINTS: &[&str] = &[
    "node-role.kubernetes.io/control-plane",
    "node-role.kubernetes.io/master",
];

/// What the checks of one object depend on besides the object.
#[derive(Clone, Copy, Debug)]
pub struct Scope<'a> {
    /// The preview namespace.
    pub namespace: &'a str,
    /// The rendered `host` (`""` without a host template).
    pub host: &'a str,
    pub settings: &'a PreviewSettings,
}

/// One kind a preview may contain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllowedKind {
    pub api_version: &'static str,
    pub kind: &'static str,
    /// The resource (plural) RBAC grants for this kind.
    pub resource: &'static str,
}

impl AllowedKind {
    /// API group (`""` for the core group).
    pub fn group(&self) -> &'static str {
        api_group(self.api_version)
    }
}

/// The allow-list, **in apply order**: identities and network policy first (pods never start
/// without their NetworkPolicy), then configuration and storage, Services, workloads, their
/// autoscaling and disruption budgets, and Ingress last (traffic is routed once the backends
/// exist). Keep in sync with `config/rbac/preview_workload_role.yaml`.
pub const ALLOWED_KINDS: &[AllowedKind] = &[
    AllowedKind {
        api_version: "v1",
        kind: "ServiceAccount",
        resource: "serviceaccounts",
    },
    AllowedKind {
        api_version: "networking.k8s.io/v1",
        kind: "NetworkPolicy",
        resource: "networkpolicies",
    },
    AllowedKind {
        api_version: "v1",
        kind: "ConfigMap",
        resource: "configmaps",
    },
    AllowedKind {
        api_version: "v1",
        kind: "Secret",
        resource: "secrets",
    },
    AllowedKind {
        api_version: "v1",
        kind: "PersistentVolumeClaim",
        resource: "persistentvolumeclaims",
    },
    AllowedKind {
        api_version: "v1",
        kind: "Service",
        resource: "services",
    },
    AllowedKind {
        api_version: "apps/v1",
        kind: "Deployment",
        resource: "deployments",
    },
    AllowedKind {
        api_version: "apps/v1",
        kind: "StatefulSet",
        resource: "statefulsets",
    },
    AllowedKind {
        api_version: "batch/v1",
        kind: "Job",
        resource: "jobs",
    },
    AllowedKind {
        api_version: "batch/v1",
        kind: "CronJob",
        resource: "cronjobs",
    },
    AllowedKind {
        api_version: "autoscaling/v2",
        kind: "HorizontalPodAutoscaler",
        resource: "horizontalpodautoscalers",
    },
    AllowedKind {
        api_version: "policy/v1",
        kind: "PodDisruptionBudget",
        resource: "poddisruptionbudgets",
    },
    AllowedKind {
        api_version: "networking.k8s.io/v1",
        kind: "Ingress",
        resource: "ingresses",
    },
];

/// Kinds refused with a specific explanation (any API version). Everything else not in
/// [`ALLOWED_KINDS`] gets the generic one.
const DENIED_KINDS: &[(&str, &str, &str)] = &[
    (
        "Namespace",
        "cluster-scoped",
        "Namespace is cluster-scoped; Pullwarden creates the preview namespace itself",
    ),
    (
        "ClusterRole",
        "cluster-scoped",
        "ClusterRole is cluster-scoped RBAC and is not allowed",
    ),
    (
        "ClusterRoleBinding",
        "cluster-scoped",
        "ClusterRoleBinding is cluster-scoped RBAC and is not allowed",
    ),
    (
        "Role",
        "RBAC",
        "RBAC objects are not allowed: a preview's permissions are fixed by Pullwarden",
    ),
    (
        "RoleBinding",
        "RBAC",
        "RBAC objects are not allowed: a preview's permissions are fixed by Pullwarden",
    ),
    (
        "CustomResourceDefinition",
        "cluster-scoped",
        "CustomResourceDefinition is cluster-scoped and is not allowed",
    ),
    (
        "MutatingWebhookConfiguration",
        "cluster-scoped",
        "admission webhooks are cluster-scoped and are not allowed",
    ),
    (
        "ValidatingWebhookConfiguration",
        "cluster-scoped",
        "admission webhooks are cluster-scoped and are not allowed",
    ),
    (
        "ValidatingAdmissionPolicy",
        "cluster-scoped",
        "admission policies are cluster-scoped and are not allowed",
    ),
    (
        "ValidatingAdmissionPolicyBinding",
        "cluster-scoped",
        "admission policies are cluster-scoped and are not allowed",
    ),
    (
        "MutatingAdmissionPolicy",
        "cluster-scoped",
        "admission policies are cluster-scoped and are not allowed",
    ),
    (
        "MutatingAdmissionPolicyBinding",
        "cluster-scoped",
        "admission policies are cluster-scoped and are not allowed",
    ),
    (
        "PodSecurityPolicy",
        "cluster-scoped",
        "PodSecurityPolicy is cluster-scoped and is not allowed",
    ),
    (
        "PersistentVolume",
        "cluster-scoped",
        "PersistentVolume is cluster-scoped; use a PersistentVolumeClaim",
    ),
    (
        "StorageClass",
        "cluster-scoped",
        "StorageClass is cluster-scoped and is not allowed",
    ),
    (
        "PriorityClass",
        "cluster-scoped",
        "PriorityClass is cluster-scoped and is not allowed",
    ),
    (
        "RuntimeClass",
        "cluster-scoped",
        "RuntimeClass is cluster-scoped and is not allowed",
    ),
    (
        "IngressClass",
        "cluster-scoped",
        "IngressClass is cluster-scoped and is not allowed",
    ),
    (
        "APIService",
        "cluster-scoped",
        "APIService is cluster-scoped and is not allowed",
    ),
    (
        "DaemonSet",
        "DaemonSet",
        "DaemonSets are not allowed: they run a pod on every node",
    ),
    (
        "Pod",
        "bare Pod",
        "bare Pods are not allowed; use a Deployment or a Job",
    ),
    (
        "ReplicaSet",
        "ReplicaSet",
        "use a Deployment instead of a ReplicaSet",
    ),
    (
        "ReplicationController",
        "ReplicationController",
        "use a Deployment instead of a ReplicationController",
    ),
    (
        "ResourceQuota",
        "quota",
        "ResourceQuota and LimitRange come from the PreviewEnvironment's template.quota",
    ),
    (
        "LimitRange",
        "quota",
        "ResourceQuota and LimitRange come from the PreviewEnvironment's template.quota",
    ),
    (
        "Endpoints",
        "Endpoints",
        "Endpoints and EndpointSlices are not allowed: they can point a Service at any address",
    ),
    (
        "EndpointSlice",
        "Endpoints",
        "Endpoints and EndpointSlices are not allowed: they can point a Service at any address",
    ),
    (
        "List",
        "List",
        "List objects are not supported; write each object as its own YAML document",
    ),
];

/// API group of an `apiVersion` (`""` for the core group `v1`).
pub fn api_group(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

/// Position of `(api_version, kind)` in [`ALLOWED_KINDS`] (its apply rank), or why it is
/// refused.
pub fn allowed_kind(api_version: &str, kind: &str) -> Result<usize, RefusalReason> {
    if let Some(i) = ALLOWED_KINDS
        .iter()
        .position(|k| k.kind == kind && k.api_version == api_version)
    {
        return Ok(i);
    }
    if let Some(k) = ALLOWED_KINDS.iter().find(|k| k.kind == kind) {
        return Err(RefusalReason::ApiVersion {
            expected: k.api_version,
        });
    }
    if let Some((_, short, why)) = DENIED_KINDS.iter().find(|(k, _, _)| *k == kind) {
        return Err(RefusalReason::KindNotAllowed { short, why });
    }
    Err(RefusalReason::KindNotAllowed {
        short: "not allowed",
        why: "this kind is not in the allow-list (ServiceAccount, NetworkPolicy, ConfigMap, Secret, PersistentVolumeClaim, Service, Deployment, StatefulSet, Job, CronJob, HorizontalPodAutoscaler, PodDisruptionBudget, Ingress)",
    })
}

/// Rank of an inventory entry's kind by group and kind (any version), for pruning.
pub(crate) fn rank_by_group(api_version: &str, kind: &str) -> Option<usize> {
    let group = api_group(api_version);
    ALLOWED_KINDS
        .iter()
        .position(|k| k.kind == kind && k.group() == group)
}

/// Checks of one object of an allowed kind (the kind itself is checked by [`allowed_kind`]).
pub(crate) fn check_object(
    kind: &str,
    name: &str,
    body: &Value,
    scope: &Scope<'_>,
) -> Vec<RefusalReason> {
    let mut reasons = Vec::new();
    if let Some(why) = name_problem(kind, name) {
        reasons.push(RefusalReason::InvalidName { why });
    }
    if name.starts_with(RESERVED_PREFIX) {
        reasons.push(RefusalReason::ReservedName);
    }
    let metadata = &body["metadata"];
    match &metadata["namespace"] {
        Value::Null => {}
        Value::String(ns) if ns.is_empty() || ns == scope.namespace => {}
        Value::String(ns) => reasons.push(RefusalReason::Namespace {
            namespace: ns.clone(),
            preview: scope.namespace.to_string(),
        }),
        _ => reasons.push(RefusalReason::Malformed {
            field: "metadata.namespace".into(),
            why: "must be a string",
        }),
    }
    for field in ["labels", "annotations"] {
        if !matches!(metadata[field], Value::Null | Value::Object(_)) {
            reasons.push(RefusalReason::Malformed {
                field: format!("metadata.{field}"),
                why: "must be a mapping",
            });
        }
    }
    match &metadata["finalizers"] {
        Value::Null => {}
        Value::Array(a) if a.is_empty() => {}
        _ => reasons.push(RefusalReason::Finalizers),
    }
    match kind {
        "Service" => check_service(&body["spec"], scope.settings, &mut reasons),
        "Ingress" => check_ingress(body, scope, &mut reasons),
        "Secret" => check_secret(body, &mut reasons),
        "NetworkPolicy" => check_network_policy(&body["spec"], scope.settings, &mut reasons),
        "Deployment" | "StatefulSet" | "Job" => {
            check_pod_spec(
                &body["spec"]["template"]["spec"],
                scope.settings,
                &mut reasons,
            );
        }
        "CronJob" => check_pod_spec(
            &body["spec"]["jobTemplate"]["spec"]["template"]["spec"],
            scope.settings,
            &mut reasons,
        ),
        _ => {}
    }
    reasons
}

/// Fields the operator's settings force on an accepted object: `ingressClassName` of an
/// Ingress without one, when a class is configured (a different one was refused).
pub(crate) fn force_fields(kind: &str, body: &mut Value, settings: &PreviewSettings) {
    if kind == "Ingress"
        && let Some(class) = &settings.ingress_class
        && let Some(obj) = body.as_object_mut()
    {
        let spec = obj
            .entry("spec")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(spec) = spec.as_object_mut() {
            spec.insert("ingressClassName".into(), Value::String(class.clone()));
        }
    }
}

/// Kubernetes' name rules for the allowed kinds.
fn name_problem(kind: &str, name: &str) -> Option<String> {
    match kind {
        // Service names become DNS labels and must start with a letter (RFC 1035).
        "Service" => {
            let starts_with_letter = name.bytes().next().is_some_and(|b| b.is_ascii_lowercase());
            (!(is_dns_label(name) && starts_with_letter)).then(|| {
                "Service names must be RFC 1035 labels: at most 63 lowercase letters, digits and `-`, starting with a letter".to_string()
            })
        }
        // The controller appends an 11-character suffix to Job names it creates.
        "CronJob" if name.len() > 52 => Some("CronJob names must be at most 52 characters".into()),
        _ => (!is_dns_subdomain(name)).then(|| {
            "names must be RFC 1123 subdomains: lowercase letters, digits, `-` and `.`, at most 253".to_string()
        }),
    }
}

fn check_service(spec: &Value, settings: &PreviewSettings, reasons: &mut Vec<RefusalReason>) {
    match &spec["type"] {
        Value::Null => {}
        Value::String(t) if t == "ClusterIP" => {}
        Value::String(t) if t == "ExternalName" => reasons.push(RefusalReason::ServiceType {
            service_type: t.clone(),
            allowed: Vec::new(),
        }),
        Value::String(t) if settings.service_types.contains(t) => {}
        Value::String(t) => reasons.push(RefusalReason::ServiceType {
            service_type: t.clone(),
            allowed: settings.service_types.clone(),
        }),
        _ => reasons.push(RefusalReason::Malformed {
            field: "spec.type".into(),
            why: "must be a string",
        }),
    }
    match &spec["externalIPs"] {
        Value::Null => {}
        Value::Array(a) if a.is_empty() => {}
        _ => reasons.push(RefusalReason::ExternalIps),
    }
}

/// Whether an annotation key passes the operator's allow-list (exact keys, or prefixes ending
/// in `*`) or is one of the [`TOOL_ANNOTATIONS`].
pub fn annotation_allowed(key: &str, allow: &[String]) -> bool {
    TOOL_ANNOTATIONS.contains(&key)
        || allow.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => key.starts_with(prefix),
            None => key == p,
        })
}

/// Whether an Ingress host is the preview's own: the rendered host, or a name under the
/// operator's preview domain (not the domain itself: that is nobody's preview).
pub fn host_allowed(host: &str, rendered: &str, domain: Option<&str>) -> bool {
    let host = host.to_ascii_lowercase();
    (!rendered.is_empty() && host == rendered)
        || domain.is_some_and(|d| {
            host.strip_suffix(d)
                .and_then(|h| h.strip_suffix('.'))
                .is_some_and(|h| !h.is_empty())
        })
}

fn check_ingress(body: &Value, scope: &Scope<'_>, reasons: &mut Vec<RefusalReason>) {
    let settings = scope.settings;
    let spec = &body["spec"];
    let mut check_host = |host: &Value, field: String| match host.as_str() {
        None | Some("") => reasons.push(RefusalReason::IngressNoHost { field }),
        Some(h) if h.contains('*') => {
            reasons.push(RefusalReason::IngressWildcard { host: h.into() })
        }
        Some(h) if host_allowed(h, scope.host, settings.domain.as_deref()) => {}
        Some(h) => reasons.push(RefusalReason::IngressHost {
            host: h.into(),
            rendered: scope.host.into(),
            domain: settings.domain.clone(),
        }),
    };
    for (i, rule) in spec["rules"].as_array().into_iter().flatten().enumerate() {
        check_host(&rule["host"], format!("spec.rules[{i}]"));
    }
    for (i, tls) in spec["tls"].as_array().into_iter().flatten().enumerate() {
        for (j, host) in tls["hosts"].as_array().into_iter().flatten().enumerate() {
            check_host(host, format!("spec.tls[{i}].hosts[{j}]"));
        }
    }
    match (&spec["ingressClassName"], &settings.ingress_class) {
        (Value::Null, _) => {}
        (Value::String(c), Some(expected)) if c == expected => {}
        (Value::String(c), expected) => reasons.push(RefusalReason::IngressClass {
            class: c.clone(),
            expected: expected.clone(),
        }),
        _ => reasons.push(RefusalReason::Malformed {
            field: "spec.ingressClassName".into(),
            why: "must be a string",
        }),
    }
    if !spec["defaultBackend"].is_null() || !spec["backend"].is_null() {
        reasons.push(RefusalReason::IngressDefaultBackend);
    }
    if let Some(annotations) = body["metadata"]["annotations"].as_object() {
        for key in annotations.keys() {
            if !annotation_allowed(key, &settings.ingress_annotations) {
                reasons.push(RefusalReason::IngressAnnotation { key: key.clone() });
            }
        }
    }
}

/// The namespace a peer's `namespaceSelector` selects by exact name, if that is all it does.
fn selected_namespace(selector: &Value) -> Option<&str> {
    let labels = selector["matchLabels"].as_object()?;
    let exprs_empty = selector["matchExpressions"]
        .as_array()
        .is_none_or(|a| a.is_empty());
    (labels.len() == 1 && exprs_empty)
        .then(|| labels.get("kubernetes.io/metadata.name")?.as_str())
        .flatten()
}

/// Tenant NetworkPolicies may narrow traffic but not widen Pullwarden's default-deny one:
/// peers are pods of the preview namespace, the ingress controller's namespace (ingress only)
/// or kube-system with every port 53 (egress, DNS); never an `ipBlock`.
fn check_network_policy(
    spec: &Value,
    settings: &PreviewSettings,
    reasons: &mut Vec<RefusalReason>,
) {
    let mut refuse = |peer: String| reasons.push(RefusalReason::NetworkPeer { peer });
    for (direction, rules, peers_key) in [
        ("ingress", &spec["ingress"], "from"),
        ("egress", &spec["egress"], "to"),
    ] {
        for (i, rule) in rules.as_array().into_iter().flatten().enumerate() {
            let dns_only = rule["ports"].as_array().is_some_and(|ports| {
                !ports.is_empty() && ports.iter().all(|p| p["port"] == 53 || p["port"] == "53")
            });
            let peers = rule[peers_key].as_array();
            if peers.is_none_or(|p| p.is_empty()) {
                // An empty peer list means "everywhere".
                refuse(format!("{direction}[{i}] (no {peers_key}: every address)"));
                continue;
            }
            for peer in peers.into_iter().flatten() {
                if !peer["ipBlock"].is_null() {
                    refuse(format!("{direction}[{i}] ipBlock"));
                    continue;
                }
                let ns_selector = &peer["namespaceSelector"];
                if ns_selector.is_null() {
                    continue;
                }
                let allowed = match (direction, selected_namespace(ns_selector)) {
                    ("ingress", Some(ns)) => ns == settings.ingress_namespace,
                    ("egress", Some("kube-system")) => dns_only,
                    _ => false,
                };
                if !allowed {
                    refuse(format!("{direction}[{i}] namespaceSelector {ns_selector}"));
                }
            }
        }
    }
}

fn check_secret(body: &Value, reasons: &mut Vec<RefusalReason>) {
    if body["type"] == "kubernetes.io/service-account-token"
        || !body["metadata"]["annotations"]["kubernetes.io/service-account.name"].is_null()
    {
        reasons.push(RefusalReason::ServiceAccountToken);
    }
}

fn check_pod_spec(pod: &Value, settings: &PreviewSettings, reasons: &mut Vec<RefusalReason>) {
    let mut refuse = |field: String| reasons.push(RefusalReason::PodSpec { field });
    for field in ["hostNetwork", "hostPID", "hostIPC"] {
        if pod[field] == Value::Bool(true) {
            refuse(field.to_string());
        }
    }
    if !pod["nodeName"].is_null() {
        refuse("nodeName".into());
    }
    if let Some(class) = pod["priorityClassName"].as_str()
        && class.starts_with("system-")
    {
        refuse(format!("priorityClassName {class}"));
    }
    match pod["runtimeClassName"].as_str() {
        None => {}
        Some(class) if settings.runtime_classes.iter().any(|c| c == class) => {}
        Some(class) => refuse(format!("runtimeClassName {class}")),
    }
    for field in ["serviceAccountName", "serviceAccount"] {
        if let Some(sa) = pod[field].as_str()
            && sa.starts_with(RESERVED_PREFIX)
        {
            refuse(format!("{field} {sa} (Pullwarden's own)"));
        }
    }
    for t in pod["tolerations"].as_array().into_iter().flatten() {
        let key = t["key"].as_str().unwrap_or("");
        if key.is_empty() && t["operator"] == "Exists" {
            refuse("a toleration of every taint (no key, operator Exists)".into());
        } else if CONTROL_PLANE_TAINTS.contains(&key) {
            refuse(format!("a toleration of {key}"));
        }
    }
    for volume in pod["volumes"].as_array().into_iter().flatten() {
        let name = volume["name"].as_str().unwrap_or("?");
        if !volume["hostPath"].is_null() {
            refuse(format!("hostPath (volume {name})"));
        }
        let sources = volume["projected"]["sources"].as_array();
        if sources
            .into_iter()
            .flatten()
            .any(|s| !s["serviceAccountToken"].is_null())
        {
            refuse(format!("a serviceAccountToken projection (volume {name})"));
        }
    }
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        for c in pod[list].as_array().into_iter().flatten() {
            let name = c["name"].as_str().unwrap_or("?");
            if c["securityContext"]["privileged"] == Value::Bool(true) {
                refuse(format!("privileged (container {name})"));
            }
            // `hostPort: 0` means "none"; anything else set is refused (even a malformed value,
            // which the API server would reject anyway).
            let host_port = c["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| !p["hostPort"].is_null() && p["hostPort"].as_i64() != Some(0));
            if host_port {
                refuse(format!("hostPort (container {name})"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeSet;

    /// The allow-list and the RBAC role granted to previews describe the same set: every
    /// allowed kind is writable (server-side apply patches, pruning deletes) and every writable
    /// resource is allowed.
    #[test]
    fn allow_list_matches_the_preview_workload_role() {
        let role: Value = serde_yaml::from_str(include_str!(
            "../../../config/rbac/preview_workload_role.yaml"
        ))
        .unwrap();
        let mut writable = BTreeSet::new();
        for rule in role["rules"].as_array().unwrap() {
            let verbs: Vec<&str> = rule["verbs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            let writes = ["create", "patch", "delete"]
                .iter()
                .all(|v| verbs.contains(v));
            let any_write = ["create", "patch", "update", "delete", "*"]
                .iter()
                .any(|v| verbs.contains(v));
            assert_eq!(writes, any_write, "partial write verbs in {rule}");
            if !writes {
                continue;
            }
            assert!(
                verbs.contains(&"get"),
                "server-side apply needs get: {rule}"
            );
            for g in rule["apiGroups"].as_array().unwrap() {
                for r in rule["resources"].as_array().unwrap() {
                    writable.insert((g.as_str().unwrap(), r.as_str().unwrap()));
                }
            }
        }
        let allowed: BTreeSet<(&str, &str)> = ALLOWED_KINDS
            .iter()
            .map(|k| (k.group(), k.resource))
            .collect();
        assert_eq!(allowed, writable);
        assert_eq!(
            allowed.len(),
            ALLOWED_KINDS.len(),
            "duplicate allow-list entries"
        );
    }

    /// The admission policy of `config/admission` allows the same kinds for every writer, and
    /// names the same tool annotations and control-plane taints.
    #[test]
    fn admission_policies_match_the_renderer() {
        let text = include_str!("../../../config/admission/policies.yaml");
        let docs: Vec<Value> = serde_yaml::Deserializer::from_str(text)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .filter(|d: &Value| !d.is_null())
            .collect();
        let policy = |name: &str| {
            docs.iter()
                .find(|d| d["metadata"]["name"] == name)
                .unwrap_or_else(|| panic!("{name} missing"))
        };
        let variable = |policy: &Value, name: &str| -> String {
            policy["spec"]["variables"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == name)
                .unwrap_or_else(|| panic!("variable {name} missing"))["expression"]
                .as_str()
                .unwrap()
                .to_string()
        };
        // The quoted strings of a CEL list literal.
        let quoted = |expr: &str| -> BTreeSet<String> {
            expr.split('\'')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect()
        };
        let kinds = policy("pullwarden-preview-kinds");
        let allowed: BTreeSet<String> = ALLOWED_KINDS
            .iter()
            .map(|k| format!("{}/{}", k.group(), k.resource))
            .collect();
        assert_eq!(quoted(&variable(kinds, "allowed")), allowed);
        let ingress = policy("pullwarden-preview-ingress");
        let tools = quoted(&variable(ingress, "allowedAnnotations"));
        for a in TOOL_ANNOTATIONS {
            assert!(tools.contains(*a), "{a}");
        }
        let pods = serde_json::to_string(policy("pullwarden-preview-pods")).unwrap();
        for t in CONTROL_PLANE_TAINTS {
            assert!(pods.contains(t), "{t}");
        }
        for doc in &docs {
            for rule in doc["spec"]["matchConstraints"]["resourceRules"]
                .as_array()
                .into_iter()
                .flatten()
            {
                assert_eq!(rule["scope"], "Namespaced", "{}", doc["metadata"]["name"]);
            }
        }
    }

    #[test]
    fn allowed_kinds_and_versions() {
        assert_eq!(allowed_kind("v1", "ServiceAccount"), Ok(0));
        assert!(allowed_kind("apps/v1", "Deployment").is_ok());
        assert_eq!(
            allowed_kind("autoscaling/v1", "HorizontalPodAutoscaler"),
            Err(RefusalReason::ApiVersion {
                expected: "autoscaling/v2"
            })
        );
        assert!(matches!(
            allowed_kind("extensions/v1beta1", "Ingress"),
            Err(RefusalReason::ApiVersion { .. })
        ));
    }

    #[test]
    fn every_denied_kind_is_refused_with_its_reason() {
        for (api, kind, short) in [
            (
                "rbac.authorization.k8s.io/v1",
                "ClusterRole",
                "cluster-scoped",
            ),
            (
                "rbac.authorization.k8s.io/v1",
                "ClusterRoleBinding",
                "cluster-scoped",
            ),
            ("rbac.authorization.k8s.io/v1", "Role", "RBAC"),
            ("rbac.authorization.k8s.io/v1", "RoleBinding", "RBAC"),
            ("v1", "Namespace", "cluster-scoped"),
            (
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                "cluster-scoped",
            ),
            (
                "admissionregistration.k8s.io/v1",
                "MutatingWebhookConfiguration",
                "cluster-scoped",
            ),
            (
                "admissionregistration.k8s.io/v1",
                "ValidatingWebhookConfiguration",
                "cluster-scoped",
            ),
            ("policy/v1beta1", "PodSecurityPolicy", "cluster-scoped"),
            ("apps/v1", "DaemonSet", "DaemonSet"),
            ("v1", "Pod", "bare Pod"),
            ("v1", "ResourceQuota", "quota"),
            ("v1", "Endpoints", "Endpoints"),
            ("v1", "List", "List"),
            ("example.com/v1", "Widget", "not allowed"),
        ] {
            match allowed_kind(api, kind) {
                Err(RefusalReason::KindNotAllowed { short: s, .. }) => {
                    assert_eq!(s, short, "{kind}")
                }
                other => panic!("{kind}: {other:?}"),
            }
        }
        // No kind is both allowed and denied.
        for (kind, _, _) in DENIED_KINDS {
            assert!(ALLOWED_KINDS.iter().all(|k| k.kind != *kind), "{kind}");
        }
    }

    const HOST: &str = "pr-1.shop.preview.test";

    /// The checks with the default settings, namespace `pv` and host [`HOST`].
    fn check(kind: &str, name: &str, body: &Value) -> Vec<RefusalReason> {
        check_with(kind, name, body, &PreviewSettings::default())
    }

    fn check_with(
        kind: &str,
        name: &str,
        body: &Value,
        settings: &PreviewSettings,
    ) -> Vec<RefusalReason> {
        let scope = Scope {
            namespace: "pv",
            host: HOST,
            settings,
        };
        check_object(kind, name, body, &scope)
    }

    fn deployment(pod: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
               "spec": {"template": {"spec": pod}}})
    }

    fn shorts(reasons: &[RefusalReason]) -> Vec<String> {
        reasons.iter().map(RefusalReason::short).collect()
    }

    #[test]
    fn namespace_must_be_absent_or_the_preview_namespace() {
        let ok = json!({"metadata": {"name": "a", "namespace": "pv"}});
        assert!(check("ConfigMap", "a", &ok).is_empty());
        let empty = json!({"metadata": {"name": "a", "namespace": ""}});
        assert!(check("ConfigMap", "a", &empty).is_empty());
        let other = json!({"metadata": {"name": "a", "namespace": "kube-system"}});
        assert_eq!(shorts(&check("ConfigMap", "a", &other)), ["in kube-system"]);
        let bad = json!({"metadata": {"name": "a", "namespace": 3}});
        assert_eq!(
            shorts(&check("ConfigMap", "a", &bad)),
            ["bad metadata.namespace"]
        );
    }

    #[test]
    fn names_follow_kubernetes_rules() {
        let body = json!({"metadata": {}});
        assert!(check("ConfigMap", "app.config-1", &body).is_empty());
        for (kind, name) in [
            ("ConfigMap", "App"),
            ("ConfigMap", "a_b"),
            ("ConfigMap", "-a"),
            ("Service", "1web"),
            ("Service", "web.api"),
            ("CronJob", &"c".repeat(53)),
        ] {
            assert_eq!(
                shorts(&check(kind, name, &body)),
                ["invalid name"],
                "{kind} {name}"
            );
        }
        assert!(check("CronJob", &"c".repeat(52), &body).is_empty());
        assert!(check("Deployment", &"d".repeat(253), &body).is_empty());
    }

    #[test]
    fn finalizers_and_bad_labels_are_refused() {
        let body = json!({"metadata": {"finalizers": ["example.com/never"], "labels": "x"}});
        assert_eq!(
            shorts(&check("ConfigMap", "a", &body)),
            ["bad metadata.labels", "finalizers"]
        );
        let empty = json!({"metadata": {"finalizers": []}});
        assert!(check("ConfigMap", "a", &empty).is_empty());
    }

    #[test]
    fn service_exposure_is_refused() {
        for t in ["NodePort", "LoadBalancer", "ExternalName"] {
            let svc = json!({"metadata": {}, "spec": {"type": t}});
            assert_eq!(shorts(&check("Service", "web", &svc)), [t]);
        }
        let ips = json!({"metadata": {}, "spec": {"externalIPs": ["10.0.0.1"]}});
        assert_eq!(shorts(&check("Service", "web", &ips)), ["externalIPs"]);
        let ok = json!({"metadata": {}, "spec": {"type": "ClusterIP", "externalIPs": []}});
        assert!(check("Service", "web", &ok).is_empty());
    }

    #[test]
    fn host_access_in_pod_templates_is_refused() {
        let pod = json!({
            "hostNetwork": true, "hostPID": true, "hostIPC": true,
            "volumes": [{"name": "root", "hostPath": {"path": "/"}}, {"name": "tmp", "emptyDir": {}}],
            "initContainers": [{"name": "init", "securityContext": {"privileged": true}}],
            "containers": [
                {"name": "app", "ports": [{"containerPort": 80, "hostPort": 80}]},
                {"name": "ok", "ports": [{"containerPort": 81}], "securityContext": {"privileged": false}}
            ]
        });
        assert_eq!(
            shorts(&check("Deployment", "web", &deployment(pod.clone()))),
            [
                "hostNetwork",
                "hostPID",
                "hostIPC",
                "hostPath (volume root)",
                "privileged (container init)",
                "hostPort (container app)"
            ]
        );
        let cron = json!({"metadata": {}, "spec": {"jobTemplate": {"spec": {"template": {"spec": {"hostNetwork": true}}}}}});
        assert_eq!(shorts(&check("CronJob", "c", &cron)), ["hostNetwork"]);
        for kind in ["StatefulSet", "Job"] {
            let body = json!({"metadata": {}, "spec": {"template": {"spec": {"hostPID": true}}}});
            assert_eq!(shorts(&check(kind, "w", &body)), ["hostPID"], "{kind}");
        }
        // A restricted pod passes.
        let fine = json!({"containers": [{"name": "app", "securityContext": {"allowPrivilegeEscalation": false}}]});
        assert!(check("Deployment", "web", &deployment(fine)).is_empty());
    }

    #[test]
    fn rank_by_group_ignores_the_version() {
        assert_eq!(
            rank_by_group("autoscaling/v2beta2", "HorizontalPodAutoscaler"),
            rank_by_group("autoscaling/v2", "HorizontalPodAutoscaler")
        );
        assert!(rank_by_group("autoscaling/v2", "HorizontalPodAutoscaler").is_some());
        assert_eq!(rank_by_group("rbac.authorization.k8s.io/v1", "Role"), None);
        assert_eq!(rank_by_group("apps/v1", "ConfigMap"), None);
    }
}
