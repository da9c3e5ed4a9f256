//! Rendering and validation of preview manifests (`delivery: manifests`). Pure: no I/O, no
//! Kubernetes client — the controller fetches the files and applies the result.
//!
//! # Flow
//! 1. [`PreviewParams::build`] (`params`): the parameter values from the pull request (or
//!    branch), the repository and the template, including the forced namespace and the
//!    validated host.
//! 2. [`render`]: select the manifest files of the template directory (`*.yaml`/`*.yml`, sorted
//!    by path, hidden files skipped, other files ignored; `kustomization.yaml` and `Chart.yaml`
//!    refused: those need `delivery: argocd`), apply the [`Limits`], replace placeholders by
//!    sentinels (`template`), parse every document into JSON with the values substituted and
//!    expansion bounded (`parse`), check that each document is a Kubernetes object, apply the
//!    safety rules (`safety`, with the operator's [`PreviewSettings`]), then set the namespace,
//!    the Pullwarden labels and the forced Ingress class and order the objects for apply.
//! 3. [`inventory_entries`] for `status.inventory`, [`prune_set`] for what to delete after a
//!    successful apply, and `report` for the commit status line and the sticky PR comment.
//!
//! # Safety reasoning
//! Everything in a template directory — the files and the PR title, branch and author they
//! quote — is written by whoever opens the pull request, so all of it is untrusted input.
//! - Nothing is partially accepted: each stage collects every problem of every file and fails
//!   as a whole ([`RenderError`]); an error means nothing is to be applied. A render with no
//!   object at all is an error too, since applying it would prune the whole preview.
//! - Substituted values cannot change the YAML structure: they are inserted after parsing
//!   (`template` module docs).
//! - What is checked is exactly what is applied: the JSON bodies returned are the trees the
//!   policy examined, plus the namespace and labels set here.
//! - Work is bounded: file count, total bytes, object count, and the size documents may expand
//!   to (YAML aliases, long values), enforced while parsing rather than after.
//! - These checks give a clear refusal on the pull request; they are not the only line:
//!   objects are applied impersonating the preview identity, whose RBAC grants exactly
//!   [`ALLOWED_KINDS`] in that namespace, Pod Security `restricted` applies there, and the
//!   ValidatingAdmissionPolicies of `config/admission` enforce the same rules for every writer.

mod error;
pub mod params;
pub mod parse;
pub mod report;
pub mod safety;
pub mod template;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::api::InventoryEntry;
use crate::git::TreeFile;
use crate::settings::PreviewSettings;

pub use error::{Problem, Refusal, RefusalReason, RenderError};
pub use params::{ParamsInput, PreviewParams, PreviewSource, force_namespace, slug};
pub use report::{CommentInput, ReportState, comment_body, refusal_comment, status_description};
pub use safety::{ALLOWED_KINDS, AllowedKind};

/// Label set on every rendered object: the PreviewEnvironment it belongs to (see
/// [`preview_label_value`]).
pub const PREVIEW_LABEL: &str = "pullwarden.dev/preview";
/// `app.kubernetes.io/managed-by` is set to [`MANAGED_BY`] on every rendered object.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "pullwarden";

/// Size limits of one render.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Manifest files (`*.yaml`/`*.yml`) considered.
    pub max_files: usize,
    /// Total bytes of those files.
    pub max_bytes: usize,
    /// Objects rendered (the inventory in the status holds at most 256).
    pub max_objects: usize,
    /// What the documents may expand to once aliases are resolved and values substituted
    /// (string bytes plus a fixed cost per node).
    pub max_rendered_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_files: 128,
            max_bytes: 4 << 20,
            max_objects: 256,
            max_rendered_bytes: 16 << 20,
        }
    }
}

/// One object to server-side apply.
#[derive(Clone, Debug, PartialEq)]
pub struct RenderedObject {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// Always the preview namespace.
    pub namespace: String,
    /// The object, with `metadata.namespace` and the Pullwarden labels set and server-populated
    /// fields removed.
    pub body: Value,
    /// Where it came from, for messages about apply errors.
    pub file: String,
    /// 1-based document index in `file`.
    pub document: usize,
}

impl RenderedObject {
    pub fn inventory_entry(&self) -> InventoryEntry {
        InventoryEntry {
            api_version: self.api_version.clone(),
            kind: self.kind.clone(),
            name: self.name.clone(),
            namespace: Some(self.namespace.clone()),
        }
    }
}

/// Renders with the default [`Limits`].
pub fn render(
    files: &[TreeFile],
    params: &PreviewParams,
    preview_name: &str,
    settings: &PreviewSettings,
) -> Result<Vec<RenderedObject>, RenderError> {
    render_with_limits(files, params, preview_name, settings, &Limits::default())
}

/// Renders the template directory `files` (paths relative to it) for the PreviewEnvironment
/// `preview_name`: the objects in apply order, or every problem found. `settings` are the
/// operator's (never the template's): the Ingress, Service and pod rules depend on them.
pub fn render_with_limits(
    files: &[TreeFile],
    params: &PreviewParams,
    preview_name: &str,
    settings: &PreviewSettings,
    limits: &Limits,
) -> Result<Vec<RenderedObject>, RenderError> {
    // PreviewParams fields are public; never trust a hand-made namespace.
    params::check_namespace(&params.namespace).map_err(|e| RenderError::Params(vec![e]))?;
    let namespace = params.namespace.as_str();

    let manifests = select_files(files)?;
    if manifests.len() > limits.max_files {
        return Err(RenderError::Limit(format!(
            "{} manifest files (limit {})",
            manifests.len(),
            limits.max_files
        )));
    }
    let total: usize = manifests.iter().map(|f| f.bytes.len()).sum();
    if total > limits.max_bytes {
        return Err(RenderError::Limit(format!(
            "manifest files total {total} bytes (limit {})",
            limits.max_bytes
        )));
    }

    // Placeholders → sentinels, every file, every problem.
    let mut prepared = Vec::with_capacity(manifests.len());
    let mut template_problems = Vec::new();
    let mut parse_problems = Vec::new();
    for f in &manifests {
        let Ok(text) = std::str::from_utf8(&f.bytes) else {
            parse_problems.push(Problem {
                file: f.path.clone(),
                document: None,
                line: None,
                message: "not valid UTF-8".into(),
            });
            continue;
        };
        match template::prepare_yaml(text, &f.path, params) {
            Ok(p) => prepared.push((f.path.as_str(), p)),
            Err(mut problems) => template_problems.append(&mut problems),
        }
    }
    if !template_problems.is_empty() {
        return Err(RenderError::Template(template_problems));
    }

    // Parse and check the object shape.
    let budget = parse::Budget::new(limits.max_rendered_bytes);
    let mut candidates = Vec::new();
    for (path, p) in &prepared {
        let docs = match parse::parse_documents(p, path, &budget) {
            Ok(docs) => docs,
            Err(parse::ParseFailure::Budget) => {
                return Err(RenderError::Limit(format!(
                    "the manifests expand to more than {} bytes once YAML aliases are resolved and parameters substituted",
                    limits.max_rendered_bytes
                )));
            }
            Err(parse::ParseFailure::TooComplex(problem)) => {
                return Err(RenderError::Limit(format!(
                    "{}: YAML nested too deeply or aliases repeated too often ({})",
                    problem.location(),
                    problem.message
                )));
            }
            Err(parse::ParseFailure::Problem(problem)) => {
                parse_problems.push(problem);
                continue;
            }
        };
        for (document, body) in docs {
            if candidates.len() == limits.max_objects {
                return Err(RenderError::Limit(format!(
                    "more than {} objects (the limit)",
                    limits.max_objects
                )));
            }
            match Candidate::new(path, document, body) {
                Ok(c) => candidates.push(c),
                Err(message) => parse_problems.push(Problem {
                    file: path.to_string(),
                    document: Some(document),
                    line: None,
                    message,
                }),
            }
        }
    }
    if !parse_problems.is_empty() {
        return Err(RenderError::Parse(parse_problems));
    }
    // An empty render would make the caller prune the whole preview; far more likely the path
    // is wrong than that an empty preview is wanted.
    if candidates.is_empty() {
        return Err(RenderError::Parse(vec![Problem {
            file: "(template directory)".into(),
            document: None,
            line: None,
            message: "no Kubernetes objects found (`*.yaml`/`*.yml` files under template.path)"
                .into(),
        }]));
    }

    // Safety rules.
    let scope = safety::Scope {
        namespace,
        host: &params.host,
        settings,
    };
    let mut refusals = Vec::new();
    let mut seen: BTreeMap<(String, String), (String, usize)> = BTreeMap::new();
    let mut accepted = Vec::with_capacity(candidates.len());
    for c in candidates {
        let mut reasons = match safety::allowed_kind(&c.api_version, &c.kind) {
            Ok(rank) => {
                let mut reasons = safety::check_object(&c.kind, &c.name, &c.body, &scope);
                let key = (c.kind.clone(), c.name.clone());
                match seen.get(&key) {
                    Some((file, document)) => reasons.push(RefusalReason::Duplicate {
                        file: file.clone(),
                        document: *document,
                    }),
                    None => {
                        seen.insert(key, (c.file.clone(), c.document));
                    }
                }
                if reasons.is_empty() {
                    accepted.push((rank, c));
                    continue;
                }
                reasons
            }
            Err(reason) => vec![reason],
        };
        reasons.dedup();
        refusals.push(Refusal {
            file: c.file,
            document: c.document,
            api_version: c.api_version,
            kind: c.kind,
            name: c.name,
            reasons,
        });
    }
    if !refusals.is_empty() {
        return Err(RenderError::Refused(refusals));
    }

    let label = preview_label_value(preview_name);
    accepted.sort_by(|(ra, a), (rb, b)| ra.cmp(rb).then_with(|| a.name.cmp(&b.name)));
    Ok(accepted
        .into_iter()
        .map(|(_, c)| c.finish(namespace, &label, settings))
        .collect())
}

/// A parsed document that has the shape of a Kubernetes object.
#[derive(Debug)]
struct Candidate {
    file: String,
    document: usize,
    api_version: String,
    kind: String,
    name: String,
    body: Value,
}

impl Candidate {
    fn new(file: &str, document: usize, body: Value) -> Result<Candidate, String> {
        let Value::Object(map) = &body else {
            return Err(format!(
                "a document must be a mapping (a Kubernetes object), not {}",
                json_type(&body)
            ));
        };
        let field = |name: &str| match map.get(name) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::String(_)) | None => Err(format!("missing {name}")),
            Some(other) => Err(format!("{name} must be a string, not {}", json_type(other))),
        };
        let api_version = field("apiVersion")?;
        let kind = field("kind")?;
        let name = match map.get("metadata") {
            Some(Value::Object(meta)) => match meta.get("name") {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                Some(Value::String(_)) | None => {
                    return Err(format!(
                        "{kind}: missing metadata.name (generateName is not supported: every object needs a stable name)"
                    ));
                }
                Some(other) => {
                    return Err(format!(
                        "{kind}: metadata.name must be a string, not {}",
                        json_type(other)
                    ));
                }
            },
            Some(other) => {
                return Err(format!(
                    "{kind}: metadata must be a mapping, not {}",
                    json_type(other)
                ));
            }
            None => return Err(format!("{kind}: missing metadata")),
        };
        Ok(Candidate {
            file: file.to_string(),
            document,
            api_version,
            kind,
            name,
            body,
        })
    }

    fn finish(
        mut self,
        namespace: &str,
        preview_label: &str,
        settings: &PreviewSettings,
    ) -> RenderedObject {
        safety::force_fields(&self.kind, &mut self.body, settings);
        if let Value::Object(obj) = &mut self.body {
            // Fields a server fills in: present in manifests exported with `kubectl get -o
            // yaml`, and rejected or misapplied by server-side apply (managedFields,
            // resourceVersion preconditions). Status is never ours to set.
            obj.remove("status");
            if let Some(Value::Object(meta)) = obj.get_mut("metadata") {
                for field in [
                    "resourceVersion",
                    "uid",
                    "selfLink",
                    "creationTimestamp",
                    "generation",
                    "managedFields",
                ] {
                    meta.remove(field);
                }
                meta.insert("namespace".into(), Value::String(namespace.to_string()));
                let labels = meta
                    .entry("labels")
                    .or_insert_with(|| Value::Object(Map::new()));
                if labels.is_null() {
                    *labels = Value::Object(Map::new());
                }
                if let Value::Object(labels) = labels {
                    // Ours win over the template's: pruning and ownership depend on them.
                    labels.insert(PREVIEW_LABEL.into(), preview_label.into());
                    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
                }
            }
        }
        RenderedObject {
            api_version: self.api_version,
            kind: self.kind,
            name: self.name,
            namespace: namespace.to_string(),
            body: self.body,
            file: self.file,
            document: self.document,
        }
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a sequence",
        Value::Object(_) => "a mapping",
    }
}

/// The manifest files, sorted by path; kustomize and Helm entry points are refused.
fn select_files(files: &[TreeFile]) -> Result<Vec<&TreeFile>, RenderError> {
    let mut manifests = Vec::new();
    let mut unsupported = Vec::new();
    for f in files {
        if f.path.split('/').any(|seg| seg.starts_with('.')) {
            continue;
        }
        let file_name = f
            .path
            .rsplit('/')
            .next()
            .unwrap_or(&f.path)
            .to_ascii_lowercase();
        let message = match file_name.as_str() {
            "kustomization.yaml" | "kustomization.yml" | "kustomization" => {
                Some("kustomize is not supported by `delivery: manifests`; use `delivery: argocd`")
            }
            "chart.yaml" | "chart.yml" => Some(
                "Helm charts are not supported by `delivery: manifests`; use `delivery: argocd`",
            ),
            _ => None,
        };
        if let Some(message) = message {
            unsupported.push(Problem {
                file: f.path.clone(),
                document: None,
                line: None,
                message: message.into(),
            });
        } else if file_name.ends_with(".yaml") || file_name.ends_with(".yml") {
            manifests.push(f);
        }
    }
    if !unsupported.is_empty() {
        unsupported.sort_by(|a, b| a.file.cmp(&b.file));
        return Err(RenderError::Unsupported(unsupported));
    }
    manifests.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(manifests)
}

/// The value of [`PREVIEW_LABEL`] for a PreviewEnvironment name: the name itself when it is a
/// valid label value (≤ 63 characters — every name the Repository controller generates for
/// short repository names), otherwise its first 54 characters and `-<8 hex digits of SHA-256 of
/// the name>`. Use this function for label selectors too.
pub fn preview_label_value(preview_name: &str) -> String {
    let valid = preview_name.len() <= 63
        && preview_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && preview_name
            .bytes()
            .next()
            .is_none_or(|b| b.is_ascii_alphanumeric())
        && preview_name
            .bytes()
            .last()
            .is_none_or(|b| b.is_ascii_alphanumeric());
    if valid {
        return preview_name.to_string();
    }
    let mut head: String = preview_name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(54)
        .collect();
    while head.ends_with(|c: char| !c.is_ascii_alphanumeric()) {
        head.pop();
    }
    let head = head.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    let hash = params::short_hash(preview_name);
    if head.is_empty() {
        hash
    } else {
        format!("{head}-{hash}")
    }
}

/// `status.inventory` entries of rendered objects, in apply order.
pub fn inventory_entries(objects: &[RenderedObject]) -> Vec<InventoryEntry> {
    objects
        .iter()
        .map(RenderedObject::inventory_entry)
        .collect()
}

/// Objects of the previous inventory that the current one no longer has: what to delete after
/// the current objects were applied successfully. Identity is (API group, kind, namespace,
/// name) — a changed API version (`autoscaling/v2beta2` → `v2`) is the same object and must not
/// be deleted. Defence in depth against an edited status: only namespaced entries of allowed
/// kinds are ever returned. Ordered for deletion: reverse apply order, then by name.
pub fn prune_set(previous: &[InventoryEntry], current: &[InventoryEntry]) -> Vec<InventoryEntry> {
    fn identity(e: &InventoryEntry) -> (&str, &str, Option<&str>, &str) {
        (
            safety::api_group(&e.api_version),
            e.kind.as_str(),
            e.namespace.as_deref(),
            e.name.as_str(),
        )
    }
    let keep: BTreeSet<_> = current.iter().map(identity).collect();
    let mut seen = BTreeSet::new();
    let mut out: Vec<(usize, &InventoryEntry)> = previous
        .iter()
        .filter(|e| e.namespace.as_deref().is_some_and(|ns| !ns.is_empty()))
        .filter(|e| !keep.contains(&identity(e)))
        .filter(|e| seen.insert(identity(e)))
        .filter_map(|e| safety::rank_by_group(&e.api_version, &e.kind).map(|r| (r, e)))
        .collect();
    out.sort_by(|(ra, a), (rb, b)| {
        rb.cmp(ra)
            .then_with(|| a.namespace.cmp(&b.namespace))
            .then_with(|| a.name.cmp(&b.name))
    });
    out.into_iter().map(|(_, e)| e.clone()).collect()
}
