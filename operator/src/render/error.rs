//! Why a render was refused. One error carries *every* problem of its stage, so a PR author
//! fixes them in one round; nothing of a failed render is ever applied.
//!
//! The one-line [`RenderError::summary`] (≤ 140 bytes, for commit statuses) and the Markdown
//! list [`RenderError::markdown`] (for the sticky comment) live in `super::report`.

use std::fmt;

/// A problem located in a file (or in a template field such as `template.namespace`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Path relative to the template directory, or the template field.
    pub file: String,
    /// 1-based index of the YAML document in the file (counting empty documents).
    pub document: Option<usize>,
    /// 1-based line.
    pub line: Option<usize>,
    pub message: String,
}

impl Problem {
    /// `file:line`, `file (document N)` or `file`.
    pub fn location(&self) -> String {
        match (self.line, self.document) {
            (Some(line), _) => format!("{}:{line}", self.file),
            (None, Some(doc)) => format!("{} (document {doc})", self.file),
            (None, None) => self.file.clone(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location(), self.message)
    }
}

/// An object the safety rules refuse, with every reason found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub file: String,
    /// 1-based index of the YAML document in the file.
    pub document: usize,
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// Never empty.
    pub reasons: Vec<RefusalReason>,
}

impl Refusal {
    /// `Kind/name`.
    pub fn object(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (document {}): {} {}: ",
            self.file,
            self.document,
            self.api_version,
            self.object()
        )?;
        for (i, r) in self.reasons.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// One reason to refuse an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefusalReason {
    /// The kind is not in the allow-list. `short` is a few words for the status line.
    KindNotAllowed {
        short: &'static str,
        why: &'static str,
    },
    /// The kind is allowed, in another API version.
    ApiVersion {
        expected: &'static str,
    },
    /// `metadata.namespace` names another namespace.
    Namespace {
        namespace: String,
        preview: String,
    },
    InvalidName {
        why: String,
    },
    /// Same kind and name as an earlier object.
    Duplicate {
        file: String,
        document: usize,
    },
    /// A malformed field the checks depend on (e.g. `metadata.labels` not a mapping).
    Malformed {
        field: String,
        why: &'static str,
    },
    /// `metadata.finalizers` would keep the namespace from ever being deleted.
    Finalizers,
    /// A name starting with `pullwarden-`, reserved for Pullwarden's own objects.
    ReservedName,
    /// Service `spec.type` ExternalName, or NodePort/LoadBalancer not in the operator's
    /// `allowed` list.
    ServiceType {
        service_type: String,
        allowed: Vec<String>,
    },
    /// Service `spec.externalIPs`.
    ExternalIps,
    /// An Ingress rule or TLS entry (`field`) without a host.
    IngressNoHost {
        field: String,
    },
    /// An Ingress host with a wildcard.
    IngressWildcard {
        host: String,
    },
    /// An Ingress host that is neither the rendered host nor under the preview domain.
    IngressHost {
        host: String,
        rendered: String,
        domain: Option<String>,
    },
    /// Ingress `spec.defaultBackend` (or the old `spec.backend`).
    IngressDefaultBackend,
    /// `spec.ingressClassName` other than the operator's (`None`: none configured).
    IngressClass {
        class: String,
        expected: Option<String>,
    },
    /// An Ingress annotation the operator does not allow.
    IngressAnnotation {
        key: String,
    },
    /// A Secret that asks for a ServiceAccount token.
    ServiceAccountToken,
    /// A NetworkPolicy peer outside what the preview's default-deny policy admits
    /// (NetworkPolicies are additive, so any wider peer would open the wall).
    NetworkPeer {
        peer: String,
    },
    /// A pod template field the product forbids (host namespaces, hostPath, privileged,
    /// nodeName, tolerations, …).
    PodSpec {
        field: String,
    },
}

impl RefusalReason {
    /// A few words for the ≤ 140-byte status line.
    pub fn short(&self) -> String {
        match self {
            RefusalReason::KindNotAllowed { short, .. } => (*short).to_string(),
            RefusalReason::ApiVersion { expected } => format!("use {expected}"),
            RefusalReason::Namespace { namespace, .. } => format!("in {namespace}"),
            RefusalReason::InvalidName { .. } => "invalid name".into(),
            RefusalReason::Duplicate { .. } => "duplicate".into(),
            RefusalReason::Malformed { field, .. } => format!("bad {field}"),
            RefusalReason::Finalizers => "finalizers".into(),
            RefusalReason::ReservedName => "reserved name".into(),
            RefusalReason::ServiceType { service_type, .. } => service_type.clone(),
            RefusalReason::ExternalIps => "externalIPs".into(),
            RefusalReason::IngressNoHost { .. } => "Ingress without host".into(),
            RefusalReason::IngressWildcard { host } => format!("wildcard host {host}"),
            RefusalReason::IngressHost { host, .. } => format!("host {host}"),
            RefusalReason::IngressDefaultBackend => "defaultBackend".into(),
            RefusalReason::IngressClass { class, .. } => format!("ingress class {class}"),
            RefusalReason::IngressAnnotation { key } => format!("annotation {key}"),
            RefusalReason::ServiceAccountToken => "service-account token".into(),
            RefusalReason::NetworkPeer { peer } => format!("network peer {peer}"),
            RefusalReason::PodSpec { field } => field.clone(),
        }
    }
}

impl fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefusalReason::KindNotAllowed { why, .. } => f.write_str(why),
            RefusalReason::ApiVersion { expected } => {
                write!(f, "this kind is allowed only as apiVersion {expected}")
            }
            RefusalReason::Namespace { namespace, preview } => write!(
                f,
                "metadata.namespace is {namespace:?}; objects may only live in the preview namespace {preview:?} (omit metadata.namespace)"
            ),
            RefusalReason::InvalidName { why } => write!(f, "invalid metadata.name: {why}"),
            RefusalReason::Duplicate { file, document } => write!(
                f,
                "an object of the same kind and name is already defined in {file} (document {document})"
            ),
            RefusalReason::Malformed { field, why } => write!(f, "{field} {why}"),
            RefusalReason::Finalizers => f.write_str(
                "metadata.finalizers are not allowed: they would block deleting the preview",
            ),
            RefusalReason::ReservedName => f.write_str(
                "names starting with `pullwarden-` are reserved for the objects Pullwarden itself creates in the preview namespace (its ServiceAccount, RoleBinding, quota, LimitRange and NetworkPolicy); rename the object",
            ),
            RefusalReason::ServiceType {
                service_type,
                allowed,
            } => {
                if service_type == "ExternalName" {
                    f.write_str("Service type ExternalName is never allowed (it lets an Ingress or a client be redirected to any name); use ClusterIP and an Ingress")
                } else {
                    write!(
                        f,
                        "Service type {service_type} is not allowed on this cluster (it exposes the preview outside the cluster); use ClusterIP and an Ingress"
                    )?;
                    if !allowed.is_empty() {
                        write!(f, " (the operator allows {})", allowed.join(", "))?;
                    }
                    Ok(())
                }
            }
            RefusalReason::ExternalIps => f.write_str(
                "Service spec.externalIPs is not allowed (it can intercept cluster traffic)",
            ),
            RefusalReason::IngressNoHost { field } => write!(
                f,
                "{field} has no host; every Ingress rule and TLS entry must name the preview's host (a host-less rule catches traffic for every name)"
            ),
            RefusalReason::IngressWildcard { host } => write!(
                f,
                "Ingress host {host:?} is a wildcard; name the preview's host exactly"
            ),
            RefusalReason::IngressHost {
                host,
                rendered,
                domain,
            } => {
                write!(f, "Ingress host {host:?} is not this preview's: ")?;
                match (rendered.is_empty(), domain) {
                    (false, Some(d)) => write!(
                        f,
                        "use {rendered:?} (`{{{{host}}}}`) or a name under {d:?}"
                    ),
                    (false, None) => write!(f, "use {rendered:?} (`{{{{host}}}}`)"),
                    (true, Some(d)) => write!(f, "use a name under {d:?}"),
                    (true, None) => f.write_str(
                        "this preview has no host (template.host) and the operator configured no preview domain, so no Ingress host is allowed",
                    ),
                }
            }
            RefusalReason::IngressDefaultBackend => f.write_str(
                "Ingress spec.defaultBackend is not allowed (it receives traffic for every host); route the preview's host in spec.rules",
            ),
            RefusalReason::IngressClass { class, expected } => match expected {
                Some(e) => write!(
                    f,
                    "ingressClassName {class:?} is not allowed; previews use the class {e:?} (omit the field and Pullwarden sets it)"
                ),
                None => write!(
                    f,
                    "ingressClassName {class:?} is not allowed; previews use the cluster's default class (omit the field)"
                ),
            },
            RefusalReason::IngressAnnotation { key } => write!(
                f,
                "Ingress annotation {key:?} is not allowed (only annotations the operator lists pass: they configure the ingress controller)"
            ),
            RefusalReason::ServiceAccountToken => f.write_str(
                "Secrets of type kubernetes.io/service-account-token (or with the kubernetes.io/service-account.name annotation) are not allowed: they would hold a ServiceAccount's API token",
            ),
            RefusalReason::NetworkPeer { peer } => write!(
                f,
                "NetworkPolicy peer {peer} is not allowed: NetworkPolicies add up, so a preview may only name pods of its own namespace, the ingress controller's namespace (ingress) and kube-system on port 53 (egress); other egress is the operator's --preview-egress-cidrs"
            ),
            RefusalReason::PodSpec { field } => {
                write!(f, "pod template uses {field}, which previews may not use")
            }
        }
    }
}

/// Why nothing was rendered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RenderError {
    /// Invalid parameters: head SHA, `template.vars` names, the rendered namespace or host.
    Params(Vec<String>),
    /// Files of a format Pullwarden does not render (kustomize, Helm).
    Unsupported(Vec<Problem>),
    /// Placeholder syntax errors and unknown parameters.
    Template(Vec<Problem>),
    /// Invalid UTF-8 or YAML, and documents that are not Kubernetes objects.
    Parse(Vec<Problem>),
    /// A size limit was exceeded (files, bytes, objects, expansion).
    Limit(String),
    /// The safety rules refused objects.
    Refused(Vec<Refusal>),
    /// Not produced by rendering: the API server refused an object while it was applied
    /// (RBAC of the impersonated ServiceAccount, admission, validation). The controller wraps
    /// such errors here so they are reported like refusals. Objects before it may have been
    /// applied.
    Applied(String),
}

impl RenderError {
    /// Every problem as one line each: what `Display` joins and Markdown lists.
    pub fn lines(&self) -> Vec<String> {
        match self {
            RenderError::Params(v) => v.clone(),
            RenderError::Unsupported(v) | RenderError::Template(v) | RenderError::Parse(v) => {
                v.iter().map(ToString::to_string).collect()
            }
            RenderError::Limit(m) | RenderError::Applied(m) => vec![m.clone()],
            RenderError::Refused(v) => v.iter().map(ToString::to_string).collect(),
        }
    }

    /// A heading for the problem list, e.g. `2 template errors`.
    pub fn heading(&self) -> String {
        let n = self.lines().len();
        let (one, many) = match self {
            RenderError::Params(_) => ("invalid preview parameter", "invalid preview parameters"),
            RenderError::Unsupported(_) => ("unsupported file", "unsupported files"),
            RenderError::Template(_) => ("template error", "template errors"),
            RenderError::Parse(_) => ("invalid manifest", "invalid manifests"),
            RenderError::Limit(_) => ("limit exceeded", "limits exceeded"),
            RenderError::Refused(_) => ("refused object", "refused objects"),
            RenderError::Applied(_) => ("rejected by the API server", "rejected by the API server"),
        };
        if n == 1 {
            one.to_string()
        } else {
            format!("{n} {many}")
        }
    }
}

impl fmt::Display for RenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.heading(), self.lines().join("; "))
    }
}

impl std::error::Error for RenderError {}
