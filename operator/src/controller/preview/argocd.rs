//! `delivery: argocd`: instead of applying manifests, Pullwarden creates an Argo CD
//! `Application` pinned to the head SHA with the preview namespace as destination, and derives
//! readiness from the Application's health and sync status.
//!
//! In this mode Argo CD — not Pullwarden's allow-list, not the impersonated preview identity —
//! applies what the pull request contains (plain YAML, kustomize or Helm output), with Argo CD's
//! own privileges. Its AppProject is therefore the confinement, and none of it is tenant spec:
//! - Argo CD's namespace and the destination cluster are operator settings
//!   ([`ArgoCdSettings`]: `--argocd-namespace`, `--argocd-destination-server`); the old template
//!   fields are refused unless they say the same;
//! - the project is, by default, one restricted AppProject per preview that Pullwarden manages
//!   ([`project_manifest`]): the preview namespace on the configured server as the only
//!   destination, the Repository URL as the only source, no cluster-scoped kinds, the manifests
//!   allow-list ([`ALLOWED_KINDS`]) as the namespaced kinds. One per preview rather than one
//!   shared by all: Argo CD checks every resource's own `metadata.namespace` against the
//!   project's destinations, so a shared project listing every preview namespace (and every
//!   Repository URL) would let one pull request write into another tenant's preview; per preview,
//!   both lists have exactly one entry and no read-modify-write of a shared list is needed. A
//!   template may instead name a project the operator allows (`--argocd-allowed-projects`);
//!   `default` (every source, destination and kind) is always refused ([`choose_project`]);
//! - Pullwarden never writes an Application or AppProject it does not own: each is read first and
//!   written only when absent (create, which fails if one appeared meanwhile) or labelled with
//!   this preview's UID (apply with the resourceVersion that was read as a precondition)
//!   ([`ownership`]). Teardown deletes only those, with a UID precondition.
//!
//! Refusals are [`Error::InvalidSpec`]: the preview's `Ready=False`/`Stalled` reason, not retried
//! until the object changes; [`plan`] makes every decision before anything is written, so the
//! caller creates the preview namespace only once it passed.
//!
//! The Application lives in Argo CD's namespace, so it cannot carry an owner reference to the
//! preview; the preview's finalizer deletes it. No Argo CD resources finalizer is set: the preview
//! namespace (owned and deleted by Pullwarden) takes the deployed objects with it.

use super::confine::{OWNER_LABEL, OWNER_UID_LABEL, owner_label_value};
use crate::api::{ArgoCdOptions, PreviewEnvironment};
use crate::context::Context;
use crate::error::Error;
use crate::render::safety::ALLOWED_KINDS;
use crate::render::{MANAGED_BY, MANAGED_BY_LABEL};
use crate::settings::ArgoCdSettings;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
    PostParams, Preconditions,
};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

/// Argo CD's project that allows every source, destination and kind.
const DEFAULT_PROJECT: &str = "default";

/// The two Argo CD kinds Pullwarden writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgoKind {
    Application,
    AppProject,
}

impl ArgoKind {
    fn name(self) -> &'static str {
        match self {
            ArgoKind::Application => "Application",
            ArgoKind::AppProject => "AppProject",
        }
    }

    fn resource(self) -> ApiResource {
        let plural = match self {
            ArgoKind::Application => "applications",
            ArgoKind::AppProject => "appprojects",
        };
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("argoproj.io", "v1alpha1", self.name()),
            plural,
        )
    }

    fn api(self, ctx: &Context) -> Api<DynamicObject> {
        Api::namespaced_with(
            ctx.client.clone(),
            &ctx.config.settings.argocd.namespace,
            &self.resource(),
        )
    }
}

/// The Application's name: derived from the preview namespace (unique per preview).
pub fn application_name(preview_namespace: &str) -> String {
    format!("preview-{preview_namespace}")
}

/// The name of the AppProject Pullwarden manages for one preview: `<--argocd-project>-<preview
/// namespace>` (unique per preview, recognisable in Argo CD's UI).
pub fn managed_project_name(settings: &ArgoCdSettings, preview_namespace: &str) -> String {
    format!("{}-{preview_namespace}", settings.project)
}

/// The AppProject an Application uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Project {
    /// The restricted project Pullwarden manages for this preview.
    Managed(String),
    /// A project the operator manages and allows (`--argocd-allowed-projects`).
    Operator(String),
}

impl Project {
    pub fn name(&self) -> &str {
        match self {
            Project::Managed(n) | Project::Operator(n) => n,
        }
    }
}

/// Decides the project from the template's options and the operator's settings (pure). Also
/// refuses the deprecated template fields where they contradict the settings (objects written
/// under older CRDs carry their defaults, which equal the default settings and pass).
pub fn choose_project(
    opts: Option<&ArgoCdOptions>,
    settings: &ArgoCdSettings,
    preview_namespace: &str,
) -> Result<Project, String> {
    let opts = opts.cloned().unwrap_or_default();
    if let Some(ns) = opts
        .namespace
        .as_deref()
        .filter(|ns| *ns != settings.namespace)
    {
        return Err(format!(
            "template.argocd.namespace {ns:?} is refused: Argo CD's namespace is operator configuration (--argocd-namespace, here {:?}); remove the field",
            settings.namespace
        ));
    }
    if let Some(server) = opts
        .destination_server
        .as_deref()
        .filter(|s| *s != settings.destination_server)
    {
        return Err(format!(
            "template.argocd.destinationServer {server:?} is refused: the destination cluster is operator configuration (--argocd-destination-server, here {:?}); remove the field",
            settings.destination_server
        ));
    }
    let managed = || {
        let name = managed_project_name(settings, preview_namespace);
        if name.len() > 253 {
            return Err(format!(
                "AppProject name {name:?} is longer than 253 characters: shorten --argocd-project"
            ));
        }
        Ok(Project::Managed(name))
    };
    match opts.project.as_deref() {
        None => managed(),
        Some(DEFAULT_PROJECT) => Err(format!(
            "template.argocd.project `default` is refused: Argo CD's default project allows every source, destination and cluster-scoped kind; leave the field unset for the restricted project Pullwarden manages (--argocd-project {:?}){}",
            settings.project,
            allowed_hint(settings)
        )),
        Some(p) if p == settings.project => managed(),
        Some(p) if settings.allowed_projects.iter().any(|a| a == p) => {
            Ok(Project::Operator(p.to_owned()))
        }
        Some(p) => Err(format!(
            "template.argocd.project {p:?} is not allowed: leave the field unset for the restricted project Pullwarden manages (--argocd-project {:?}){}",
            settings.project,
            allowed_hint(settings)
        )),
    }
}

fn allowed_hint(settings: &ArgoCdSettings) -> String {
    if settings.allowed_projects.is_empty() {
        "; the operator allows no other project (--argocd-allowed-projects is empty)".into()
    } else {
        format!(
            " or name one of --argocd-allowed-projects: {}",
            settings.allowed_projects.join(", ")
        )
    }
}

/// Labels marking an Argo CD object as this preview's.
fn owner_labels(pe: &PreviewEnvironment) -> Value {
    json!({
        OWNER_UID_LABEL: pe.meta().uid.clone().unwrap_or_default(),
        OWNER_LABEL: owner_label_value(pe),
        MANAGED_BY_LABEL: MANAGED_BY,
    })
}

fn preview_annotation(pe: &PreviewEnvironment) -> Value {
    json!({"pullwarden.dev/preview": format!("{}/{}", pe.namespace().unwrap_or_default(), pe.name_any())})
}

/// The restricted AppProject of one preview (pure): the preview namespace on the configured
/// server as the only destination, `repo_url` as the only source, no cluster-scoped kinds
/// (`clusterResourceWhitelist: []` — Argo CD allows none when the list is empty), the manifests
/// allow-list as namespaced kinds (never empty: Argo CD reads an absent list as "every kind"),
/// and nothing else (no roles, no sync windows, no extra source namespaces).
pub fn project_manifest(
    pe: &PreviewEnvironment,
    settings: &ArgoCdSettings,
    name: &str,
    preview_namespace: &str,
    repo_url: &str,
) -> Value {
    let kinds: Vec<Value> = ALLOWED_KINDS
        .iter()
        .map(|k| json!({"group": k.group(), "kind": k.kind}))
        .collect();
    json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "AppProject",
        "metadata": {
            "name": name,
            "namespace": settings.namespace,
            "labels": owner_labels(pe),
            "annotations": preview_annotation(pe),
        },
        "spec": {
            "sourceRepos": [repo_url],
            "destinations": [{"server": settings.destination_server, "namespace": preview_namespace}],
            "clusterResourceWhitelist": [],
            "namespaceResourceWhitelist": kinds,
        },
    })
}

/// The Application manifest (pure).
pub fn application_manifest(
    pe: &PreviewEnvironment,
    settings: &ArgoCdSettings,
    project: &str,
    preview_namespace: &str,
    repo_url: &str,
    sha: &str,
) -> Value {
    json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
        "metadata": {
            "name": application_name(preview_namespace),
            "namespace": settings.namespace,
            "labels": owner_labels(pe),
            "annotations": preview_annotation(pe),
        },
        "spec": {
            "project": project,
            "source": {"repoURL": repo_url, "targetRevision": sha, "path": pe.spec.template.path},
            "destination": {"server": settings.destination_server, "namespace": preview_namespace},
            "syncPolicy": {"automated": {"prune": true, "selfHeal": true}},
        },
    })
}

/// Whether an existing Argo CD object may be written by this preview.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// Nothing there: create it.
    Absent,
    /// Labelled with this preview's UID: patch it, at this resourceVersion.
    Ours { resource_version: String },
    /// Someone else's (or unlabelled): leave it alone.
    NotOurs,
}

/// Decides from what a read returned (pure). An empty UID owns nothing.
pub fn ownership(existing: Option<&DynamicObject>, uid: &str) -> Ownership {
    match existing {
        None => Ownership::Absent,
        Some(obj)
            if !uid.is_empty()
                && obj.labels().get(OWNER_UID_LABEL).map(String::as_str) == Some(uid) =>
        {
            Ownership::Ours {
                resource_version: obj.resource_version().unwrap_or_default(),
            }
        }
        Some(_) => Ownership::NotOurs,
    }
}

/// The refusal for an object Pullwarden does not own.
pub fn not_owned_message(kind: ArgoKind, namespace: &str, name: &str, uid: &str) -> String {
    format!(
        "{kind}NotOwned: Argo CD {kind} {namespace}/{name} already exists and is not labelled {OWNER_UID_LABEL}={uid}; Pullwarden does not modify it. Delete or rename it, or give the preview another namespace",
        kind = kind.name()
    )
}

/// One write Pullwarden decided on.
#[derive(Debug)]
struct Write {
    kind: ArgoKind,
    name: String,
    manifest: Value,
    ownership: Ownership,
}

/// Everything decided before anything is written: the project and, for the Application (and the
/// managed AppProject), that they are absent or ours.
#[derive(Debug)]
pub struct Plan {
    pub project: Project,
    writes: Vec<Write>,
    sha: String,
}

/// Chooses the project and reads the objects to be written; refuses (writing nothing) when the
/// project is not allowed or an object exists that is not ours.
pub async fn plan(
    ctx: &Context,
    pe: &PreviewEnvironment,
    preview_namespace: &str,
    repo_url: &str,
    sha: &str,
) -> Result<Plan, Error> {
    let settings = &ctx.config.settings.argocd;
    let project = choose_project(
        pe.spec.template.argocd.as_ref(),
        settings,
        preview_namespace,
    )
    .map_err(Error::InvalidSpec)?;
    let uid = pe.meta().uid.clone().unwrap_or_default();
    let mut wanted = Vec::new();
    if let Project::Managed(name) = &project {
        let manifest = project_manifest(pe, settings, name, preview_namespace, repo_url);
        wanted.push((ArgoKind::AppProject, name.clone(), manifest));
    }
    let app = application_name(preview_namespace);
    let manifest = application_manifest(
        pe,
        settings,
        project.name(),
        preview_namespace,
        repo_url,
        sha,
    );
    wanted.push((ArgoKind::Application, app, manifest));
    let mut writes = Vec::new();
    for (kind, name, manifest) in wanted {
        let existing = read(ctx, kind, &name).await?;
        match ownership(existing.as_ref(), &uid) {
            Ownership::NotOurs => {
                return Err(Error::InvalidSpec(not_owned_message(
                    kind,
                    &settings.namespace,
                    &name,
                    &uid,
                )));
            }
            ownership => writes.push(Write {
                kind,
                name,
                manifest,
                ownership,
            }),
        }
    }
    Ok(Plan {
        project,
        writes,
        sha: sha.to_owned(),
    })
}

/// Writes what [`plan`] decided; returns the Application's state.
pub async fn apply(ctx: &Context, plan: Plan) -> Result<AppState, Error> {
    let mut app = None;
    for w in plan.writes {
        let written = write(ctx, &w).await?;
        if w.kind == ArgoKind::Application {
            app = Some(written);
        }
    }
    let app = app.ok_or_else(|| Error::Internal("the plan has no Application".into()))?;
    Ok(app_state(
        &serde_json::to_value(&app).unwrap_or_default(),
        &plan.sha,
    ))
}

/// Plans and applies: creates or updates the (project and) Application; returns its state.
pub async fn ensure(
    ctx: &Context,
    pe: &PreviewEnvironment,
    preview_namespace: &str,
    repo_url: &str,
    sha: &str,
) -> Result<AppState, Error> {
    let plan = plan(ctx, pe, preview_namespace, repo_url, sha).await?;
    apply(ctx, plan).await
}

/// Reads the Application's state without writing anything (a deploying or Ready preview).
pub async fn observe(ctx: &Context, preview_namespace: &str, sha: &str) -> Result<AppState, Error> {
    let name = application_name(preview_namespace);
    Ok(match read(ctx, ArgoKind::Application, &name).await? {
        Some(app) => app_state(&serde_json::to_value(&app).unwrap_or_default(), sha),
        None => AppState::Progressing(format!("Argo CD: Application {name} is missing")),
    })
}

fn not_installed(kind: ArgoKind, namespace: &str, message: &str) -> Error {
    Error::InvalidSpec(format!(
        "delivery argocd: the Argo CD {} API is not installed (or namespace {namespace} from --argocd-namespace is missing): {message}",
        kind.name()
    ))
}

async fn read(ctx: &Context, kind: ArgoKind, name: &str) -> Result<Option<DynamicObject>, Error> {
    match kind.api(ctx).get_opt(name).await {
        Ok(obj) => Ok(obj),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn write(ctx: &Context, w: &Write) -> Result<DynamicObject, Error> {
    let api = w.kind.api(ctx);
    let manager = Context::field_manager("preview");
    let result = match &w.ownership {
        // Create, not apply: if one appeared since the read, this fails (409) instead of
        // patching it, and the retry reads it again.
        Ownership::Absent => {
            let obj: DynamicObject = serde_json::from_value(w.manifest.clone())
                .map_err(|e| Error::Internal(format!("{} manifest: {e}", w.kind.name())))?;
            let params = PostParams {
                field_manager: Some(manager),
                ..Default::default()
            };
            api.create(&params, &obj).await
        }
        // The resourceVersion that was read is a precondition: if the object changed since
        // (e.g. was replaced by someone else's), the apply fails with 409 and is planned again.
        Ownership::Ours { resource_version } => {
            let mut manifest = w.manifest.clone();
            manifest["metadata"]["resourceVersion"] = json!(resource_version);
            let params = PatchParams::apply(&manager).force();
            api.patch(&w.name, &params, &Patch::Apply(&manifest)).await
        }
        Ownership::NotOurs => {
            return Err(Error::Internal(format!(
                "{} {} is not ours and was planned for a write",
                w.kind.name(),
                w.name
            )));
        }
    };
    match result {
        Ok(obj) => Ok(obj),
        Err(kube::Error::Api(s)) if s.code == 404 => Err(not_installed(
            w.kind,
            &ctx.config.settings.argocd.namespace,
            &s.message,
        )),
        Err(e) => Err(e.into()),
    }
}

/// Where an Application stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppState {
    /// Synced to `sha` and Healthy.
    Ready,
    /// Still syncing or progressing (with what Argo CD says).
    Progressing(String),
    /// Health `Degraded`: a workload may still recover by itself.
    Degraded(String),
    /// Argo CD's last attempt to sync `sha` failed — e.g. the AppProject does not permit a
    /// resource. Argo CD may still be retrying (an automated sync retries 5 times over ≈5
    /// minutes by default), so this can still turn into [`AppState::Ready`].
    SyncFailed(String),
}

/// How many per-resource reasons a sync failure message names.
const MAX_SYNC_REASONS: usize = 3;

/// Reads readiness from an Application's status (pure).
///
/// A failed sync is read from `status.operationState` of the operation that synced `sha`:
/// `phase: Failed`/`Error` (Argo CD gave up), or `Running` with a `retryCount` (waiting to retry
/// after a failed attempt). Argo CD's operation message is generic ("one or more synchronization
/// tasks are not valid"); the reasons are in `syncResult.resources[].message`.
pub fn app_state(app: &Value, sha: &str) -> AppState {
    let status = &app["status"];
    let health = status["health"]["status"].as_str().unwrap_or("Unknown");
    let sync = status["sync"]["status"].as_str().unwrap_or("Unknown");
    let revision = status["sync"]["revision"].as_str().unwrap_or_default();
    if let Some(failure) = sync_failure(&status["operationState"], sha) {
        return AppState::SyncFailed(failure);
    }
    if health == "Degraded" {
        let msg = status["health"]["message"]
            .as_str()
            .unwrap_or("Application is Degraded");
        return AppState::Degraded(format!("Argo CD: {msg}"));
    }
    if revision == sha && sync == "Synced" && health == "Healthy" {
        return AppState::Ready;
    }
    AppState::Progressing(format!(
        "Argo CD: sync {sync} at {}, health {health}",
        if revision.is_empty() { "?" } else { revision }
    ))
}

/// The message of a failed sync of `sha`, if the last operation is one (pure).
fn sync_failure(op: &Value, sha: &str) -> Option<String> {
    let op_revision = op["syncResult"]["revision"]
        .as_str()
        .or_else(|| op["operation"]["sync"]["revision"].as_str())
        .unwrap_or_default();
    if sha.is_empty() || op_revision != sha {
        return None;
    }
    let phase = op["phase"].as_str().unwrap_or_default();
    let retries = op["retryCount"].as_u64().unwrap_or(0);
    let retrying = phase == "Running" && retries > 0;
    if !matches!(phase, "Failed" | "Error") && !retrying {
        return None;
    }
    let failed: Vec<String> = op["syncResult"]["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| matches!(r["status"].as_str(), Some("SyncFailed")))
        .map(|r| {
            let message = r["message"].as_str().unwrap_or("sync failed");
            let kind = r["kind"].as_str().unwrap_or_default();
            let name = r["name"].as_str().unwrap_or_default();
            format!("{message} ({kind} {name})")
        })
        .collect();
    let reasons = if failed.is_empty() {
        // No per-resource reason (e.g. the manifests could not be generated): Argo CD's own
        // message, without the retry note it appends.
        let message = op["message"].as_str().unwrap_or("sync failed");
        message
            .split(". Retrying attempt #")
            .next()
            .unwrap_or(message)
            .to_owned()
    } else if failed.len() > MAX_SYNC_REASONS {
        format!(
            "{}; and {} more",
            failed[..MAX_SYNC_REASONS].join("; "),
            failed.len() - MAX_SYNC_REASONS
        )
    } else {
        failed.join("; ")
    };
    let short = &sha[..sha.len().min(7)];
    let limit = op["operation"]["retry"]["limit"].as_i64().unwrap_or(0);
    // No attempt count: the pull request keeps the first report of a (SHA, state).
    let retry = match (retrying, limit) {
        (true, 1..) => format!("; Argo CD retries up to {limit} times"),
        (true, _) => "; Argo CD retries".to_owned(),
        (false, _) => String::new(),
    };
    Some(format!("Argo CD could not sync {short}: {reasons}{retry}"))
}

/// Deletes the Application, then the preview's managed AppProject — each only if it is ours
/// (the delete carries the UID that was read as a precondition).
pub async fn teardown(
    ctx: &Context,
    pe: &PreviewEnvironment,
    preview_namespace: &str,
) -> Result<(), Error> {
    let uid = pe.meta().uid.clone().unwrap_or_default();
    let project = managed_project_name(&ctx.config.settings.argocd, preview_namespace);
    for (kind, name) in [
        (ArgoKind::Application, application_name(preview_namespace)),
        (ArgoKind::AppProject, project),
    ] {
        let existing = read(ctx, kind, &name).await?;
        if !matches!(ownership(existing.as_ref(), &uid), Ownership::Ours { .. }) {
            continue;
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: existing.and_then(|o| o.metadata.uid),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        match kind.api(ctx).delete(&name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ArgoCdSettings {
        ArgoCdSettings {
            namespace: "argocd".into(),
            project: "pullwarden-previews".into(),
            allowed_projects: vec!["team-previews".into()],
            destination_server: "https://kubernetes.default.svc".into(),
        }
    }

    fn options(v: Value) -> ArgoCdOptions {
        serde_json::from_value(v).unwrap()
    }

    fn preview() -> PreviewEnvironment {
        serde_json::from_value(json!({
            "apiVersion": "pullwarden.dev/v1alpha1", "kind": "PreviewEnvironment",
            "metadata": {"name": "web-pr-1", "namespace": "team", "uid": "u1"},
            "spec": {"repositoryRef": {"name": "web"}, "pullRequest": 1, "template": {"path": "deploy/preview", "delivery": "argocd"}}
        }))
        .unwrap()
    }

    fn existing(labels: Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
            "metadata": {"name": "preview-team-web-pr-1", "namespace": "argocd", "resourceVersion": "42", "labels": labels},
            "spec": {}
        }))
        .unwrap()
    }

    #[test]
    fn readiness_needs_the_head_sha_synced_and_healthy() {
        let sha = "a".repeat(40);
        let app = |sync: &str, health: &str, rev: &str| json!({"status": {"sync": {"status": sync, "revision": rev}, "health": {"status": health}}});
        assert_eq!(
            app_state(&app("Synced", "Healthy", &sha), &sha),
            AppState::Ready
        );
        assert!(matches!(
            app_state(&app("Synced", "Healthy", "old"), &sha),
            AppState::Progressing(_)
        ));
        assert!(matches!(
            app_state(&app("OutOfSync", "Progressing", &sha), &sha),
            AppState::Progressing(_)
        ));
        assert!(matches!(
            app_state(&app("Synced", "Degraded", &sha), &sha),
            AppState::Degraded(_)
        ));
        assert!(matches!(
            app_state(&json!({}), &sha),
            AppState::Progressing(_)
        ));
    }

    /// `status.operationState` as Argo CD v3.2 writes it for an automated sync that the
    /// AppProject refused (copied from a real run of the suite, names shortened).
    fn refused_operation(phase: &str, retry_count: u64, sha: &str) -> Value {
        json!({
            "finishedAt": "2026-12-02T14:37:30Z",
            "message": format!("one or more synchronization tasks are not valid. Retrying attempt #{retry_count} at 2:37PM."),
            "operation": {
                "initiatedBy": {"automated": true},
                "retry": {"limit": 5},
                "sync": {"prune": true, "revision": sha},
            },
            "phase": phase,
            "retryCount": retry_count,
            "syncResult": {
                "resources": [{
                    "group": "rbac.authorization.k8s.io", "kind": "ClusterRoleBinding",
                    "message": "resource rbac.authorization.k8s.io:ClusterRoleBinding is not permitted in project pullwarden-previews-web-pr-1",
                    "name": "escalate", "namespace": "web-pr-1", "status": "SyncFailed",
                    "syncPhase": "Sync", "version": "v1",
                }, {
                    "kind": "ConfigMap", "name": "web-config", "namespace": "web-pr-1",
                    "status": "Synced", "message": "configmap/web-config created", "version": "v1",
                }],
                "revision": sha,
            },
        })
    }

    #[test]
    fn a_refused_sync_is_a_failure_naming_argo_cd_s_reason_while_it_retries_and_after() {
        let sha = "28df7dd1fbc4fdd062701b7a69a3ec76877cfec2";
        let app = |op: Value| json!({"status": {"sync": {"status": "OutOfSync", "revision": sha}, "health": {"status": "Missing"}, "operationState": op}});
        let AppState::SyncFailed(retrying) =
            app_state(&app(refused_operation("Running", 3, sha)), sha)
        else {
            panic!("a retried sync is a failure");
        };
        assert_eq!(
            retrying,
            "Argo CD could not sync 28df7dd: resource rbac.authorization.k8s.io:ClusterRoleBinding is not permitted in project pullwarden-previews-web-pr-1 (ClusterRoleBinding escalate); Argo CD retries up to 5 times"
        );
        let AppState::SyncFailed(final_) =
            app_state(&app(refused_operation("Failed", 5, sha)), sha)
        else {
            panic!("a failed sync is a failure");
        };
        assert!(
            final_.ends_with("(ClusterRoleBinding escalate)"),
            "{final_}"
        );
        // Without per-resource reasons, Argo CD's message (minus its retry note).
        let mut op = refused_operation("Error", 0, sha);
        op["syncResult"]["resources"] = json!([]);
        op["message"] = json!("ComparisonError: failed to generate manifests");
        assert_eq!(
            app_state(&app(op), sha),
            AppState::SyncFailed(
                "Argo CD could not sync 28df7dd: ComparisonError: failed to generate manifests"
                    .into()
            )
        );
    }

    #[test]
    fn a_running_first_attempt_or_another_revision_s_failure_is_not_a_failure() {
        let sha = "a".repeat(40);
        let app = |op: Value| json!({"status": {"sync": {"status": "OutOfSync", "revision": sha}, "health": {"status": "Progressing"}, "operationState": op}});
        assert!(matches!(
            app_state(&app(refused_operation("Running", 0, &sha)), &sha),
            AppState::Progressing(_)
        ));
        assert!(matches!(
            app_state(&app(refused_operation("Failed", 5, "old")), &sha),
            AppState::Progressing(_)
        ));
        // A succeeded retry is no failure.
        let mut ok = refused_operation("Succeeded", 2, &sha);
        ok["syncResult"]["resources"][0]["status"] = json!("Synced");
        let ready = json!({"status": {"sync": {"status": "Synced", "revision": sha}, "health": {"status": "Healthy"}, "operationState": ok}});
        assert_eq!(app_state(&ready, &sha), AppState::Ready);
    }

    #[test]
    fn no_project_or_the_managed_name_gets_the_preview_s_own_project() {
        let s = settings();
        let managed = Project::Managed("pullwarden-previews-team-web-pr-1".into());
        assert_eq!(
            choose_project(None, &s, "team-web-pr-1"),
            Ok(managed.clone())
        );
        assert_eq!(
            choose_project(Some(&options(json!({}))), &s, "team-web-pr-1"),
            Ok(managed.clone())
        );
        assert_eq!(
            choose_project(
                Some(&options(json!({"project": "pullwarden-previews"}))),
                &s,
                "team-web-pr-1"
            ),
            Ok(managed)
        );
    }

    #[test]
    fn project_default_is_always_refused_naming_the_setting() {
        let mut s = settings();
        let err =
            choose_project(Some(&options(json!({"project": "default"}))), &s, "ns").unwrap_err();
        assert!(err.contains("`default` is refused"), "{err}");
        assert!(err.contains("--argocd-project"), "{err}");
        // Even if an operator listed it (Settings::from_options refuses that too).
        s.allowed_projects.push("default".into());
        assert!(choose_project(Some(&options(json!({"project": "default"}))), &s, "ns").is_err());
    }

    #[test]
    fn only_operator_allowed_projects_pass() {
        let s = settings();
        assert_eq!(
            choose_project(
                Some(&options(json!({"project": "team-previews"}))),
                &s,
                "ns"
            ),
            Ok(Project::Operator("team-previews".into()))
        );
        let err = choose_project(Some(&options(json!({"project": "prod"}))), &s, "ns").unwrap_err();
        assert!(err.contains("\"prod\" is not allowed"), "{err}");
        assert!(
            err.contains("--argocd-allowed-projects: team-previews"),
            "{err}"
        );
        let mut none = settings();
        none.allowed_projects.clear();
        let err =
            choose_project(Some(&options(json!({"project": "prod"}))), &none, "ns").unwrap_err();
        assert!(err.contains("allows no other project"), "{err}");
    }

    #[test]
    fn deprecated_namespace_and_server_are_refused_unless_they_match_the_settings() {
        let s = settings();
        let err = choose_project(
            Some(&options(json!({"namespace": "team-argocd"}))),
            &s,
            "ns",
        )
        .unwrap_err();
        assert!(err.contains("--argocd-namespace"), "{err}");
        let err = choose_project(
            Some(&options(
                json!({"destinationServer": "https://prod.example.com"}),
            )),
            &s,
            "ns",
        )
        .unwrap_err();
        assert!(err.contains("--argocd-destination-server"), "{err}");
        // What older CRDs defaulted (and the default settings say) passes.
        assert!(
            choose_project(
                Some(&options(
                    json!({"namespace": "argocd", "destinationServer": "https://kubernetes.default.svc"})
                )),
                &s,
                "ns"
            )
            .is_ok()
        );
    }

    #[test]
    fn an_overlong_managed_project_name_is_refused() {
        let mut s = settings();
        s.project = "p".repeat(200);
        let err = choose_project(None, &s, &"n".repeat(63)).unwrap_err();
        assert!(err.contains("--argocd-project"), "{err}");
    }

    #[test]
    fn the_managed_project_confines_to_the_namespace_the_repo_and_the_allow_list() {
        let pe = preview();
        let s = settings();
        let p = project_manifest(
            &pe,
            &s,
            "pullwarden-previews-team-web-pr-1",
            "team-web-pr-1",
            "https://git.example.com/acme/web.git",
        );
        assert_eq!(p["kind"], "AppProject");
        assert_eq!(p["metadata"]["namespace"], "argocd");
        assert_eq!(p["metadata"]["labels"][OWNER_UID_LABEL], "u1");
        assert_eq!(p["metadata"]["labels"][MANAGED_BY_LABEL], "pullwarden");
        let spec = &p["spec"];
        assert_eq!(
            spec["sourceRepos"],
            json!(["https://git.example.com/acme/web.git"])
        );
        assert_eq!(
            spec["destinations"],
            json!([{"server": "https://kubernetes.default.svc", "namespace": "team-web-pr-1"}])
        );
        assert_eq!(spec["clusterResourceWhitelist"], json!([]));
        let kinds = spec["namespaceResourceWhitelist"].as_array().unwrap();
        assert_eq!(kinds.len(), ALLOWED_KINDS.len());
        assert!(
            !kinds.is_empty(),
            "an empty or absent list allows every kind"
        );
        assert!(kinds.contains(&json!({"group": "", "kind": "ConfigMap"})));
        assert!(kinds.contains(&json!({"group": "apps", "kind": "Deployment"})));
        assert!(
            !kinds
                .iter()
                .any(|k| k["kind"] == "Role" || k["kind"] == "RoleBinding")
        );
        // Nothing else: no roles, sync windows, source namespaces, blacklists.
        let mut keys: Vec<&str> = spec
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "clusterResourceWhitelist",
                "destinations",
                "namespaceResourceWhitelist",
                "sourceRepos"
            ]
        );
    }

    #[test]
    fn application_is_pinned_to_the_sha_the_namespace_and_the_settings() {
        let pe = preview();
        let mut s = settings();
        s.namespace = "gitops".into();
        s.destination_server = "https://previews.example.com".into();
        let m = application_manifest(
            &pe,
            &s,
            "pullwarden-previews-web-pr-1",
            "web-pr-1",
            "https://git.example.com/acme/web.git",
            "abc",
        );
        assert_eq!(m["spec"]["source"]["targetRevision"], "abc");
        assert_eq!(m["spec"]["source"]["path"], "deploy/preview");
        assert_eq!(m["spec"]["project"], "pullwarden-previews-web-pr-1");
        assert_eq!(m["spec"]["destination"]["namespace"], "web-pr-1");
        assert_eq!(
            m["spec"]["destination"]["server"],
            "https://previews.example.com"
        );
        assert_eq!(m["metadata"]["namespace"], "gitops");
        assert_eq!(m["metadata"]["labels"][OWNER_UID_LABEL], "u1");
    }

    #[test]
    fn only_objects_labelled_with_this_uid_are_written() {
        assert_eq!(ownership(None, "u1"), Ownership::Absent);
        assert_eq!(
            ownership(Some(&existing(json!({OWNER_UID_LABEL: "u1"}))), "u1"),
            Ownership::Ours {
                resource_version: "42".into()
            }
        );
        assert_eq!(
            ownership(Some(&existing(json!({OWNER_UID_LABEL: "u2"}))), "u1"),
            Ownership::NotOurs
        );
        assert_eq!(
            ownership(Some(&existing(json!({"app": "web"}))), "u1"),
            Ownership::NotOurs
        );
        // Managed-by alone is not ownership, and an empty UID owns nothing.
        assert_eq!(
            ownership(
                Some(&existing(json!({MANAGED_BY_LABEL: "pullwarden"}))),
                "u1"
            ),
            Ownership::NotOurs
        );
        assert_eq!(
            ownership(Some(&existing(json!({OWNER_UID_LABEL: ""}))), ""),
            Ownership::NotOurs
        );
        let msg = not_owned_message(ArgoKind::Application, "argocd", "preview-x", "u1");
        assert!(msg.starts_with("ApplicationNotOwned: "), "{msg}");
        assert!(msg.contains("argocd/preview-x"), "{msg}");
    }
}
