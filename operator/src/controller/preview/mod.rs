//! The PreviewEnvironment controller: one confined preview of one pull request (or branch).
//!
//! A short driver over a pure plan ([`plan`]):
//! 1. finalizer — kube-runtime's `finalizer()` with `pullwarden.dev/preview-teardown`; deletion
//!    goes to [`teardown`] (namespace, Argo CD objects, forge deployment inactive, comment);
//! 2. dereference — the Repository from the Repository controller's reflector store (no live
//!    GET); credentials and the forge client only once a step needs the forge;
//! 3. plan → act, in a loop: [`plan::plan`] either asks for one fact ([`plan::Need`]: the pull
//!    request, the head's checks, the workloads' readiness) or names a step; `Deploy` renders
//!    ([`crate::render`]), confines the namespace ([`confine`], once per namespace and
//!    confinement) and applies by impersonation ([`apply`]) or through Argo CD ([`argocd`]),
//!    once per revision (head SHA × generation);
//! 4. write-back ([`writeback`]) — at most one per (SHA, state); a failure is recorded in the
//!    `Reported` condition and retried, never blocking the deployment;
//! 5. one status write on every path, also on error (the progress of a failed reconcile is kept).
//!
//! Triggers: the object itself (generation, annotations, labels, finalizers), the preview
//! namespaces' Deployments and StatefulSets (a metadata watch by the `pullwarden.dev/preview`
//! label, mapped to their preview by namespace — readiness changes arrive as events, no polling),
//! and finished checks on a preview's head ([`crate::context::HeadEvent`]). Time-based steps
//! (TTL expiry, sleep) requeue at their deadline; transient failures back off per object.

pub mod apply;
mod approval;
pub mod argocd;
pub mod confine;
pub mod health;
pub mod plan;
mod teardown;
pub mod writeback;

use super::backoff::BackoffTracker;
use super::{ControllerContext, KindController, primary_controller, publish, refs, status};
use crate::api::{
    self, ConditionStatus, Delivery, Outcome, PreviewEnvironment, PreviewEnvironmentStatus,
    PreviewPhase, Repository,
};
use crate::context::Context;
use crate::error::Error;
use crate::forge::{CheckResult, Forge, PullRequestState};
use crate::render::{self, ParamsInput, PreviewParams, PreviewSource, RenderError, ReportState};
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::watcher;
use kube::runtime::{WatchStreamExt, finalizer};
use kube::{Client, Resource, ResourceExt};
use plan::{Facts, Failure, Need, Retry, Step, TargetFacts, short};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tracing::info;
use writeback::{Reporter, Say};

/// Finalizer guarding the teardown of state outside the object (namespace, forge deployment).
pub const FINALIZER: &str = "pullwarden.dev/preview-teardown";
/// Safety net while workloads roll out (their watch events normally come first).
const DEPLOYING_RECHECK: Duration = Duration::from_secs(30);
/// Argo CD Applications are not watched: a deploying one is re-read this often.
const ARGOCD_RECHECK: Duration = Duration::from_secs(5);
/// Safety net for a Ready preview (workload changes arrive as watch events).
const READY_RECHECK: Duration = Duration::from_secs(600);
/// While waiting for checks (a finished check on the head triggers at once).
const CHECKS_RECHECK: Duration = Duration::from_secs(15);
/// A failed write-back is retried after this long.
const WRITEBACK_RETRY: Duration = Duration::from_secs(20);

/// What the preview controller keeps between reconciles (all of it can be lost on a restart).
#[derive(Default)]
pub struct Shared {
    repositories: OnceLock<Store<DeserializeGuard<Repository>>>,
    previews: OnceLock<Store<DeserializeGuard<PreviewEnvironment>>>,
    /// HealthChecks (the ones `template.healthCheck` creates are read from here).
    health_checks: OnceLock<Store<DeserializeGuard<crate::api::HealthCheck>>>,
    /// One impersonated client per preview (its TLS connection pool is reused).
    clients: Mutex<HashMap<String, Client>>,
    /// Namespace → the confinement applied to it by this process (a hash of its manifests).
    confined: Mutex<HashMap<String, u64>>,
    /// Back-off of transient preview failures (checks failed, deploy timed out).
    retries: BackoffTracker,
    /// Preview namespace → its preview, registered before anything is applied there, so the
    /// first workload events are mapped even before the status naming the namespace is written.
    by_namespace: Mutex<HashMap<String, PreviewRef>>,
    /// The status this process last wrote per preview (by UID). The reflector store can lag
    /// behind our own write; a reconcile starting from the stale copy would write back or apply
    /// a second time. Only the leader writes preview status, so its own last write is the
    /// newest (a process that was not leader starts empty).
    written: Mutex<HashMap<String, PreviewEnvironmentStatus>>,
}

type PreviewRef = ObjectRef<DeserializeGuard<PreviewEnvironment>>;

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Shared {
    fn client(&self, ctx: &Context, pe: &PreviewEnvironment) -> Result<Client, Error> {
        let identity = confine::owner_label_value(pe);
        let mut clients = self.clients.lock().expect("clients lock");
        if let Some(client) = clients.get(&identity) {
            return Ok(client.clone());
        }
        let client = apply::impersonated_client(ctx, &identity)?;
        clients.insert(identity, client.clone());
        Ok(client)
    }

    /// The newest status of `pe` this process knows: its own last write, else the object's.
    fn status_of(&self, pe: &PreviewEnvironment) -> PreviewEnvironmentStatus {
        pe.uid()
            .and_then(|uid| {
                self.written
                    .lock()
                    .expect("written lock")
                    .get(&uid)
                    .cloned()
            })
            .or_else(|| pe.status.clone())
            .unwrap_or_default()
    }

    /// A torn-down namespace: confine it again if it comes back.
    /// The HealthCheck store (the HealthCheck controller is built after this one).
    pub fn set_health_checks(&self, store: Store<DeserializeGuard<crate::api::HealthCheck>>) {
        let _ = self.health_checks.set(store);
    }

    fn forget_namespace(&self, namespace: &str) {
        self.confined
            .lock()
            .expect("confined lock")
            .remove(namespace);
        self.by_namespace
            .lock()
            .expect("namespaces lock")
            .remove(namespace);
    }

    /// A deleted preview: nothing of it is kept.
    fn forget(&self, pe: &PreviewEnvironment, namespace: Option<&str>) {
        let identity = confine::owner_label_value(pe);
        self.clients.lock().expect("clients lock").remove(&identity);
        if let Some(ns) = namespace {
            self.forget_namespace(ns);
        }
        if let Some(uid) = pe.uid() {
            self.written.lock().expect("written lock").remove(&uid);
        }
        self.retries.reset(&super::object_key(pe));
    }
}

pub fn controller(
    cctx: Arc<ControllerContext>,
    repositories: Store<DeserializeGuard<Repository>>,
) -> KindController<PreviewEnvironment> {
    let ctx = &cctx.ctx;
    let mut controller = primary_controller::<PreviewEnvironment>(ctx);
    let previews = controller.store();
    let _ = cctx.previews.repositories.set(repositories);
    let _ = cctx.previews.previews.set(previews.clone());

    // Workloads of preview namespaces: metadata only (a status change bumps resourceVersion),
    // selected by the label every rendered object carries, mapped by namespace.
    for resource in [
        apply::workload_resource("Deployment"),
        apply::workload_resource("StatefulSet"),
    ] {
        let api: Api<kube::core::PartialObjectMeta<kube::api::DynamicObject>> =
            Api::all_with(ctx.client.clone(), &resource);
        let config = kube::runtime::watcher::Config::default().labels(render::PREVIEW_LABEL);
        let store = previews.clone();
        let shared = cctx.clone();
        let triggers = watcher(api, config)
            .default_backoff()
            .touched_objects()
            .filter_map(|obj| futures::future::ready(obj.ok()))
            .flat_map(move |meta| {
                let ns = meta.metadata.namespace.unwrap_or_default();
                let known = shared
                    .previews
                    .by_namespace
                    .lock()
                    .expect("namespaces lock")
                    .get(&ns)
                    .cloned();
                futures::stream::iter(match known {
                    Some(preview) => vec![preview],
                    None => previews_in_namespace(&store, &ns),
                })
            });
        controller = controller.reconcile_on(triggers);
    }
    // The HealthChecks of `template.healthCheck` (labelled with their preview): a state change
    // is the preview's `Healthy` condition and the `pullwarden/health` status.
    {
        let api: Api<kube::core::PartialObjectMeta<crate::api::HealthCheck>> =
            Api::all(ctx.client.clone());
        let config = kube::runtime::watcher::Config::default().labels(health::PREVIEW_LABEL);
        let triggers = watcher(api, config)
            .default_backoff()
            .touched_objects()
            .filter_map(|obj| futures::future::ready(obj.ok()))
            .filter_map(|meta| {
                let owner = meta
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(health::PREVIEW_LABEL))
                    .cloned();
                let ns = meta.metadata.namespace.clone().unwrap_or_default();
                futures::future::ready(owner.map(|o| ObjectRef::new(&o).within(&ns)))
            });
        controller = controller.reconcile_on(triggers);
    }
    if let Some(rx) = ctx.triggers.take_head_receiver() {
        let store = previews.clone();
        let events = super::repository::tokio_stream_from(rx)
            .flat_map(move |event| futures::stream::iter(previews_with_head(&store, &event)));
        controller = controller.reconcile_on(events);
    }
    KindController::new(controller, |obj, cctx| {
        Box::pin(super::reconcile_guarded(obj, cctx, reconcile))
    })
}

/// Whether any PreviewEnvironment in the reflector store is owned by `repo` (by UID). `true`
/// when the store is not set up yet, so the caller falls back to listing.
pub fn any_owned_by(cctx: &ControllerContext, repo: &Repository) -> bool {
    let Some(store) = cctx.previews.previews.get() else {
        return true;
    };
    let (namespace, uid) = (repo.namespace(), repo.metadata.uid.as_ref());
    store
        .state()
        .iter()
        .filter_map(|g| g.0.as_ref().ok())
        .any(|pe| {
            pe.namespace() == namespace && pe.owner_references().iter().any(|o| Some(&o.uid) == uid)
        })
}

/// The previews whose namespace is `namespace` (a workload event there concerns them).
fn previews_in_namespace(
    store: &Store<DeserializeGuard<PreviewEnvironment>>,
    namespace: &str,
) -> Vec<PreviewRef> {
    store
        .state()
        .iter()
        .filter_map(|g| g.0.as_ref().ok())
        .filter(|pe| pe.status.as_ref().and_then(|s| s.namespace.as_deref()) == Some(namespace))
        .map(|pe| ObjectRef::new(&pe.name_any()).within(&pe.namespace().unwrap_or_default()))
        .collect()
}

/// The previews of `event.repository` whose head is `event.sha` (a finished check concerns
/// their `waitFor`).
fn previews_with_head(
    store: &Store<DeserializeGuard<PreviewEnvironment>>,
    event: &crate::context::HeadEvent,
) -> Vec<ObjectRef<DeserializeGuard<PreviewEnvironment>>> {
    store
        .state()
        .iter()
        .filter_map(|g| g.0.as_ref().ok())
        .filter(|pe| {
            pe.namespace().as_deref() == Some(event.namespace.as_str())
                && pe.spec.repository_ref.name == event.repository
                && (pe.spec.head_sha.as_deref() == Some(event.sha.as_str())
                    || pe
                        .status
                        .as_ref()
                        .and_then(|s| s.observed_head_sha.as_deref())
                        == Some(event.sha.as_str()))
        })
        .map(|pe| ObjectRef::new(&pe.name_any()).within(&pe.namespace().unwrap_or_default()))
        .collect()
}

async fn reconcile(
    pe: Arc<PreviewEnvironment>,
    cctx: Arc<ControllerContext>,
) -> Result<Action, Error> {
    let api: Api<PreviewEnvironment> =
        Api::namespaced(cctx.ctx.client.clone(), &pe.namespace().unwrap_or_default());
    let result = finalizer(&api, FINALIZER, pe, |event| async {
        match event {
            finalizer::Event::Apply(pe) => Run::new(&cctx, &pe).drive_and_record().await,
            finalizer::Event::Cleanup(pe) => teardown::cleanup(&cctx, &pe).await,
        }
    })
    .await;
    result.map_err(|e| match e {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        finalizer::Error::AddFinalizer(e) | finalizer::Error::RemoveFinalizer(e) => e.into(),
        other => Error::Internal(other.to_string()),
    })
}

/// What a deploy needs to know about the pull request (or branch).
#[derive(Clone, Debug)]
pub struct Target {
    pub number: Option<u64>,
    pub head_sha: String,
    pub branch: String,
    pub target_branch: String,
    pub title: String,
    pub author: String,
    pub labels: Vec<String>,
    pub open: bool,
}

impl Target {
    fn facts(&self) -> TargetFacts {
        TargetFacts {
            open: self.open,
            labels: self.labels.clone(),
        }
    }

    fn source(&self) -> PreviewSource<'_> {
        match self.number {
            Some(number) => PreviewSource::PullRequest {
                number,
                title: &self.title,
                author: &self.author,
                head_ref: &self.branch,
                base_ref: &self.target_branch,
            },
            None => PreviewSource::Branch {
                name: &self.branch,
                target_branch: &self.target_branch,
            },
        }
    }
}

async fn resolve_target(forge: &dyn Forge, pe: &PreviewEnvironment) -> Result<Target, Error> {
    if let Some(number) = pe.spec.pull_request {
        let pr = forge.get_pull_request(number).await?;
        return Ok(Target {
            number: Some(number),
            head_sha: pe.spec.head_sha.clone().unwrap_or(pr.head_sha),
            branch: pr.head_ref,
            target_branch: pr.base_ref,
            title: pr.title,
            author: pr.author,
            labels: pr.labels,
            open: pr.state == PullRequestState::Open,
        });
    }
    let branch = pe.spec.branch.clone().unwrap_or_default();
    let default_branch = forge.default_branch().await?;
    let head = match &pe.spec.head_sha {
        Some(sha) => sha.clone(),
        None => forge
            .list_branches()
            .await?
            .into_iter()
            .find(|b| b.name == branch)
            .map(|b| b.sha)
            .ok_or_else(|| {
                Error::InvalidSpec(format!(
                    "branch {branch:?} does not exist in the repository"
                ))
            })?,
    };
    Ok(Target {
        number: None,
        head_sha: head,
        branch,
        target_branch: default_branch,
        title: String::new(),
        author: String::new(),
        labels: Vec::new(),
        open: true,
    })
}

/// One reconcile of one preview: the status being built and what was read so far.
struct Run<'a> {
    cctx: &'a ControllerContext,
    ctx: &'a Context,
    pe: &'a PreviewEnvironment,
    status: PreviewEnvironmentStatus,
    /// The Repository and its forge client, read once a step needs them.
    repo: Option<Arc<Repository>>,
    forge: Option<Arc<dyn Forge>>,
    /// The Repository's CA bundle (read with its credentials).
    ca: Option<Vec<u8>>,
    target: Option<Target>,
    checks: Option<Vec<CheckResult>>,
    not_ready: Option<Vec<String>>,
    /// Argo CD could not sync the applied revision (read with `not_ready`).
    sync_failed: Option<String>,
    /// Why the render or the apply refused the manifests (the comment lists every problem).
    refused: Option<RenderError>,
    /// Set when the write-back failed: retry soon.
    writeback_failed: bool,
}

impl<'a> Run<'a> {
    fn new(cctx: &'a ControllerContext, pe: &'a PreviewEnvironment) -> Self {
        Run {
            cctx,
            ctx: &cctx.ctx,
            pe,
            status: cctx.previews.status_of(pe),
            repo: None,
            forge: None,
            ca: None,
            target: None,
            checks: None,
            not_ready: None,
            sync_failed: None,
            refused: None,
            writeback_failed: false,
        }
    }

    fn key(&self) -> String {
        super::object_key(self.pe)
    }

    /// Drives the preview and writes its status once, on every path.
    async fn drive_and_record(mut self) -> Result<Action, Error> {
        let result = self.drive().await;
        if let Err(err) = &result {
            let outcome = if err.is_stalled() {
                Outcome::stalled(err.category(), err.to_string())
            } else {
                Outcome::progressing(err.category(), err.to_string())
            };
            self.status.common = status::common_status(self.pe, &outcome);
        }
        let written = self.write_status().await;
        let mut requeue = result?;
        written?;
        if self.writeback_failed {
            requeue = Some(requeue.map_or(WRITEBACK_RETRY, |d| d.min(WRITEBACK_RETRY)));
        }
        Ok(requeue.map_or_else(Action::await_change, Action::requeue))
    }

    async fn write_status(&self) -> Result<(), Error> {
        // Compared with what we wrote last (the store may not have caught up with it).
        let mut current = self.pe.clone();
        current.status = Some(self.cctx.previews.status_of(self.pe));
        let gate_facts = |st: &PreviewEnvironmentStatus| {
            (
                api::is_condition_true(&st.common.conditions, api::READY),
                api::find_condition(&st.common.conditions, api::HEALTHY).map(|c| c.status.clone()),
                st.deployed_sha.clone(),
            )
        };
        let gates_care = current.status.as_ref().map(gate_facts) != Some(gate_facts(&self.status));
        status::apply_status(self.ctx, &current, "preview", &self.status).await?;
        if gates_care {
            // `previewHealthy` rules of this Repository's gates decide on it.
            self.ctx.triggers.gates(crate::context::GateHint {
                namespace: self.pe.namespace().unwrap_or_default(),
                repository: self.pe.spec.repository_ref.name.clone(),
            });
        }
        if let Some(uid) = self.pe.uid() {
            self.cctx
                .previews
                .written
                .lock()
                .expect("written lock")
                .insert(uid, self.status.clone());
        }
        self.ctx
            .metrics
            .set_preview_phase(&self.key(), Some(self.status.phase.as_str()));
        Ok(())
    }

    fn repository(&mut self) -> Result<Arc<Repository>, Error> {
        if let Some(repo) = &self.repo {
            return Ok(repo.clone());
        }
        let namespace = self.pe.namespace().unwrap_or_default();
        let name = &self.pe.spec.repository_ref.name;
        let store = self
            .cctx
            .previews
            .repositories
            .get()
            .ok_or_else(|| Error::Internal("the Repository store is not set up".into()))?;
        let found = store
            .get(&ObjectRef::new(name).within(&namespace))
            .and_then(|g| g.0.as_ref().ok().cloned());
        let repo = match found {
            Some(repo) => Arc::new(repo),
            // Before the Repository watch has synced, absence means nothing yet.
            None if !self.ctx.watch_synced.all_synced() => {
                return Err(Error::Internal(
                    "waiting for the Repository watch to sync".into(),
                ));
            }
            None => {
                return Err(Error::ReferenceNotFound {
                    kind: "Repository",
                    namespace,
                    name: name.clone(),
                });
            }
        };
        self.repo = Some(repo.clone());
        Ok(repo)
    }

    async fn forge(&mut self) -> Result<Arc<dyn Forge>, Error> {
        if let Some(forge) = &self.forge {
            return Ok(forge.clone());
        }
        let repo = self.repository()?;
        let (forge, ca) = refs::forge_client(self.ctx, &repo).await?;
        self.forge = Some(forge.clone());
        self.ca = ca;
        Ok(forge)
    }

    async fn drive(&mut self) -> Result<Option<Duration>, Error> {
        super::repository::previews::validate_template(&self.pe.spec.template)
            .map_err(Error::InvalidSpec)?;
        let now = jiff::Timestamp::now();
        self.status.common.last_handled_reconcile_at = super::requested_at(self.pe)
            .or_else(|| self.status.common.last_handled_reconcile_at.clone());
        let wake = annotation(self.pe, api::WAKE_REQUESTED_AT);
        let wake_requested = wake.is_some() && wake != self.status.last_handled_wake_at;
        if wake_requested {
            self.status.last_handled_wake_at = wake;
            self.status.last_wake_time = Some(Time(now));
        }
        let head = match &self.pe.spec.head_sha {
            Some(sha) => sha.clone(),
            None => {
                self.observe(Need::Target).await?;
                self.target
                    .as_ref()
                    .map(|t| t.head_sha.clone())
                    .unwrap_or_default()
            }
        };
        plan::observe_head(&mut self.status, &head, now);
        // Only a preview that never deployed can be held by the cap (a store scan): others skip it.
        let never_deployed =
            self.status.deployed_sha.is_none() && self.status.applied_sha.is_none();
        let within_cap = !never_deployed || self.within_namespace_cap();

        for _ in 0..8 {
            let facts = Facts {
                now,
                head: &head,
                target: self.target.as_ref().map(Target::facts),
                checks: self.checks.as_deref(),
                not_ready: self.not_ready.as_deref(),
                sync_failed: self.sync_failed.as_deref(),
                within_cap,
                wake_requested,
            };
            match plan::plan(self.pe, &self.status, &facts) {
                Step::Observe(need) => self.observe(need).await?,
                Step::Deploy => {
                    if let Some(failure) = self.deploy(&head, now).await? {
                        return self.finish(Step::Fail(failure), &head, now).await;
                    }
                }
                step => return self.finish(step, &head, now).await,
            }
        }
        Err(Error::Internal("the preview plan did not settle".into()))
    }

    async fn observe(&mut self, need: Need) -> Result<(), Error> {
        match need {
            Need::Target => {
                let forge = self.forge().await?;
                self.target = Some(resolve_target(forge.as_ref(), self.pe).await?);
            }
            Need::Checks => {
                let forge = self.forge().await?;
                let head = self.status.observed_head_sha.clone().unwrap_or_default();
                self.checks = Some(forge.checks_for_sha(&head).await?);
            }
            Need::Workloads => {
                let not_ready = match self.pe.spec.template.delivery {
                    Delivery::Manifests => {
                        let client = self.cctx.previews.client(self.ctx, self.pe)?;
                        apply::not_ready_workloads(&client, &self.status.inventory).await?
                    }
                    Delivery::Argocd => {
                        let ns = self.status.namespace.clone().unwrap_or_default();
                        let head = self.status.applied_sha.clone().unwrap_or_default();
                        match argocd::observe(self.ctx, &ns, &head).await? {
                            argocd::AppState::Ready => Vec::new(),
                            argocd::AppState::Progressing(m) | argocd::AppState::Degraded(m) => {
                                vec![m]
                            }
                            argocd::AppState::SyncFailed(m) => {
                                self.sync_failed = Some(m.clone());
                                vec![m]
                            }
                        }
                    }
                };
                tracing::debug!(preview = %self.pe.name_any(), ?not_ready, "workloads observed");
                self.not_ready = Some(not_ready);
            }
        }
        Ok(())
    }

    /// Whether this preview is among the `--max-previews-per-namespace` oldest of its namespace
    /// (from the reflector store: no list per reconcile). A preview that deployed once is never
    /// displaced (the plan only asks for never-deployed ones).
    fn within_namespace_cap(&self) -> bool {
        let cap = self.ctx.config.settings.previews.max_previews_per_namespace;
        let Some(store) = self.cctx.previews.previews.get() else {
            return true;
        };
        let namespace = self.pe.namespace();
        let ranked: Vec<(Option<jiff::Timestamp>, String)> = store
            .state()
            .iter()
            .filter_map(|g| g.0.as_ref().ok())
            .filter(|p| p.namespace() == namespace && p.metadata.deletion_timestamp.is_none())
            .map(|p| {
                (
                    p.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    p.name_any(),
                )
            })
            .collect();
        within_namespace_cap(&ranked, &self.pe.name_any(), cap)
    }

    /// Renders and applies the current revision. `Some(failure)`: refused, nothing applied.
    async fn deploy(&mut self, head: &str, now: jiff::Timestamp) -> Result<Option<Failure>, Error> {
        let repo = self.repository()?;
        let coords = refs::coordinates(&repo.spec, &self.ctx.config.settings.network)?;
        let target = self
            .target
            .clone()
            .ok_or_else(|| Error::Internal("deploy without a resolved target".into()))?;
        let tenant = self.pe.namespace().unwrap_or_default();
        let settings = &self.ctx.config.settings.previews;
        let prefix = settings.namespace_prefix.replace("{{tenant}}", &tenant);
        let params = PreviewParams::build_in(
            &ParamsInput {
                source: target.source(),
                head_sha: head,
                owner: &coords.owner,
                repo: &coords.name,
                template: &self.pe.spec.template,
            },
            &prefix,
        )
        .map_err(|e| Error::InvalidSpec(e.to_string()))?;
        let preview_ns = params.namespace.clone();
        confine::check_namespace_name(&preview_ns, &tenant, settings)
            .map_err(Error::InvalidSpec)?;
        if self.status.applied_sha.as_deref() == Some(head) {
            // A redeploy of the same head (new generation, wake, retry): its own clock.
            self.status.deploy_start_time = Some(Time(now));
        }
        self.status.namespace = Some(preview_ns.clone());
        self.status.url = params.url();
        self.cctx
            .previews
            .by_namespace
            .lock()
            .expect("namespaces lock")
            .insert(
                preview_ns.clone(),
                ObjectRef::new(&self.pe.name_any()).within(&tenant),
            );
        let host = (!params.host.is_empty()).then_some(params.host.as_str());
        // Said before anything is fetched or applied (skipped for a revision already reported
        // ready), so a deploy that fails later still showed it started.
        let url = self.status.url.clone();
        let deploying = format!("deploying {}", short(head));
        self.report(ReportState::Deploying, head, &deploying, url.as_deref())
            .await;
        match self.pe.spec.template.delivery {
            Delivery::Manifests => {
                let forge = self.forge().await?;
                let git_creds = forge.git_credentials().await?;
                let ca = self.ca.clone();
                let scope = crate::git::CacheScope::new(&tenant, &git_creds);
                let files = self
                    .ctx
                    .git
                    .fetch_tree_scoped(
                        &scope,
                        &coords.clone_url,
                        head,
                        &self.pe.spec.template.path,
                        &git_creds,
                        ca.as_deref(),
                    )
                    .await?;
                let objects = match render::render(&files, &params, &self.pe.name_any(), settings) {
                    Ok(objects) => objects,
                    Err(err) => return Ok(Some(self.refuse(err))),
                };
                tracing::debug!(preview = %self.pe.name_any(), objects = objects.len(), "rendered");
                self.confine(&preview_ns, host).await?;
                let client = self.cctx.previews.client(self.ctx, self.pe)?;
                if let Err(err) = apply::apply_objects(&client, &objects).await {
                    return match err {
                        Error::ManifestsRefused(msg) => {
                            Ok(Some(self.refuse(RenderError::Applied(msg))))
                        }
                        other => Err(other),
                    };
                }
                let inventory = render::inventory_entries(&objects);
                let stale = render::prune_set(&self.status.inventory, &inventory);
                apply::prune(&client, &stale).await?;
                self.status.inventory_count = u32::try_from(inventory.len()).unwrap_or(u32::MAX);
                self.status.inventory = inventory.into_iter().take(256).collect();
            }
            Delivery::Argocd => {
                // Project and ownership refusals come before the preview namespace exists.
                let plan =
                    argocd::plan(self.ctx, self.pe, &preview_ns, &coords.clone_url, head).await?;
                self.confine(&preview_ns, host).await?;
                argocd::apply(self.ctx, plan).await?;
            }
        }
        tracing::debug!(preview = %self.pe.name_any(), namespace = %preview_ns, "applied");
        self.status.applied_sha = Some(head.to_owned());
        self.status.applied_generation = self.pe.metadata.generation;
        if self.status.phase == PreviewPhase::Sleeping {
            // Woken: the re-applied revision rolls out like any deploy.
            self.status.phase = PreviewPhase::Deploying;
        }
        self.not_ready = None;
        self.sync_failed = None;
        Ok(None)
    }

    /// Namespace + confinement, skipped when this process already applied the same
    /// confinement to it; a fresh one waits until RBAC sees the preview identity's binding.
    async fn confine(&self, namespace: &str, host: Option<&str>) -> Result<(), Error> {
        let hash =
            confine::fingerprint(self.pe, namespace, host, &self.ctx.config.settings.previews);
        let known = self
            .cctx
            .previews
            .confined
            .lock()
            .expect("confined lock")
            .get(namespace)
            == Some(&hash);
        if known {
            return Ok(());
        }
        confine::ensure(self.ctx, self.pe, namespace, host).await?;
        if self.pe.spec.template.delivery == Delivery::Manifests {
            let client = self.cctx.previews.client(self.ctx, self.pe)?;
            apply::await_grant(&client, namespace).await?;
        }
        tracing::debug!(preview = %self.pe.name_any(), namespace, "namespace confined");
        self.cctx
            .previews
            .confined
            .lock()
            .expect("confined lock")
            .insert(namespace.to_owned(), hash);
        Ok(())
    }

    /// Acts on a final step: status, write-back, events, and when to look again.
    async fn finish(
        &mut self,
        step: Step,
        head: &str,
        now: jiff::Timestamp,
    ) -> Result<Option<Duration>, Error> {
        let pe = self.pe;
        let deadline = plan::next_deadline(pe, &self.status, now);
        let at_deadline = |fallback: Option<Duration>| match (deadline, fallback) {
            (Some(d), Some(f)) => Some(d.min(f)),
            (d, f) => d.or(f),
        };
        let namespace = self.status.namespace.clone().unwrap_or_default();
        tracing::debug!(preview = %pe.name_any(), step = ?step, "planned");
        let action = match step {
            Step::Observe(_) | Step::Deploy => {
                return Err(Error::Internal("not a final step".into()));
            }
            Step::Suspended => {
                let message = "spec.suspend is true: the current deployment stays, new revisions are not deployed";
                self.set(
                    self.status.phase,
                    Outcome::progressing("Suspended", message),
                    message,
                );
                api::remove_condition(&mut self.status.common.conditions, api::RECONCILING);
                None
            }
            Step::Closed => {
                let message = "the pull request is closed; nothing is deployed";
                self.status.failure_reason = Some("PullRequestClosed".into());
                self.set(
                    PreviewPhase::Failed,
                    Outcome::stalled("PullRequestClosed", message),
                    message,
                );
                None
            }
            Step::Expire => {
                teardown::children(self.ctx, pe, &namespace).await?;
                self.cctx.previews.forget_namespace(&namespace);
                let message = "expired: no push within the template's ttl; push to deploy again";
                self.report(ReportState::Expired, head, message, None).await;
                self.status.inventory.clear();
                self.status.inventory_count = 0;
                self.status.url = None;
                self.status.applied_sha = None;
                self.status.applied_generation = None;
                self.set(
                    PreviewPhase::Expired,
                    Outcome::ready("Expired", message),
                    message,
                );
                None
            }
            Step::StayExpired | Step::StaySleeping | Step::StayFailed => {
                // Reported when entered (a failed write-back is retried: `say` skips what the
                // pull request already shows); only the acknowledgements above may change.
                let state = match step {
                    Step::StayExpired => Some(ReportState::Expired),
                    Step::StaySleeping => Some(ReportState::Sleeping),
                    _ => None,
                };
                if let Some(state) = state {
                    let message = self.status.message.clone().unwrap_or_default();
                    let url = self.status.url.clone();
                    self.report(state, head, &message, url.as_deref()).await;
                }
                self.status.common.observed_generation = pe.meta().generation;
                None
            }
            Step::Sleep => {
                let client = self.cctx.previews.client(self.ctx, pe)?;
                apply::scale_to_zero(&client, &self.status.inventory).await?;
                let message = format!(
                    "asleep after {} without a push; push, or run `kubectl annotate previewenvironment -n {} {} {}=$(date +%s) --overwrite` to wake it",
                    pe.spec
                        .template
                        .sleep_after
                        .as_ref()
                        .map(|d| d.to_string())
                        .unwrap_or_default(),
                    pe.namespace().unwrap_or_default(),
                    pe.name_any(),
                    api::WAKE_REQUESTED_AT,
                );
                let url = self.status.url.clone();
                self.report(ReportState::Sleeping, head, &message, url.as_deref())
                    .await;
                self.set(
                    PreviewPhase::Sleeping,
                    Outcome::ready("Sleeping", message.clone()),
                    &message,
                );
                self.healthy(ConditionStatus::Unknown, "Sleeping", "scaled to zero", now);
                None
            }
            Step::WaitForApproval(pending) => {
                let repo = self.repository()?;
                let message = approval::message(&repo, &self.status, &pending);
                let first = writeback::should_write(
                    self.status.reported.as_ref(),
                    &pending,
                    ReportState::WaitingForApproval,
                );
                self.report(ReportState::WaitingForApproval, &pending, &message, None)
                    .await;
                self.set(
                    PreviewPhase::WaitingForApproval,
                    Outcome::progressing("WaitingForApproval", message.clone()),
                    &message,
                );
                // Waiting on a person, not working: kstatus must not read it as in progress.
                api::remove_condition(&mut self.status.common.conditions, api::RECONCILING);
                if first {
                    publish(
                        self.ctx,
                        pe,
                        EventType::Normal,
                        "WaitingForApproval",
                        "Deploy",
                        &message,
                    )
                    .await;
                }
                at_deadline(None)
            }
            Step::WaitForChecks(waiting) => {
                let message = format!(
                    "waiting for checks {} on {}",
                    waiting.join(", "),
                    short(head)
                );
                self.report(ReportState::Waiting, head, &message, None)
                    .await;
                self.set(
                    PreviewPhase::WaitingForChecks,
                    Outcome::progressing("WaitingForChecks", message.clone()),
                    &message,
                );
                at_deadline(Some(CHECKS_RECHECK))
            }
            Step::Fail(failure) => self.fail(failure, head).await,
            Step::OverCap => {
                let cap = self.ctx.config.settings.previews.max_previews_per_namespace;
                let message = format!(
                    "namespace {} already has {cap} older PreviewEnvironments, the operator's limit (--max-previews-per-namespace): this one is not deployed until older ones are deleted",
                    pe.namespace().unwrap_or_default()
                );
                let first = self.status.failure_reason.as_deref() != Some("PreviewLimitReached");
                self.status.failure_reason = Some("PreviewLimitReached".into());
                self.set(
                    PreviewPhase::Failed,
                    Outcome::stalled("PreviewLimitReached", message.clone()),
                    &message,
                );
                if first {
                    publish(
                        self.ctx,
                        pe,
                        EventType::Warning,
                        "PreviewLimitReached",
                        "Deploy",
                        &message,
                    )
                    .await;
                }
                Some(Duration::from_secs(300))
            }
            Step::Deploying(waiting) => {
                let message = format!("waiting for {}", waiting.join(", "));
                let url = self.status.url.clone();
                self.report(
                    ReportState::Deploying,
                    head,
                    &format!("deploying {}", short(head)),
                    url.as_deref(),
                )
                .await;
                self.set(
                    PreviewPhase::Deploying,
                    Outcome::progressing("Deploying", message.clone()),
                    &message,
                );
                self.deployed(head, now);
                Some(match pe.spec.template.delivery {
                    Delivery::Manifests => DEPLOYING_RECHECK,
                    Delivery::Argocd => ARGOCD_RECHECK,
                })
            }
            Step::BecameReady => {
                let now = jiff::Timestamp::now();
                let started = self
                    .status
                    .deploy_start_time
                    .as_ref()
                    .map(|t| t.0)
                    .unwrap_or(now);
                let duration: Duration = now.duration_since(started).try_into().unwrap_or_default();
                self.ctx
                    .metrics
                    .preview_time_to_ready
                    .observe(duration.as_secs_f64());
                self.status.deployed_sha = Some(head.to_owned());
                self.status.ready_time = Some(Time(now));
                self.status.last_deploy_duration = Some(format!("{:.1}s", duration.as_secs_f64()));
                self.status.failure_reason = None;
                let message = self.ready_message(head);
                let url = self.status.url.clone();
                self.report(ReportState::Ready, head, &message, url.as_deref())
                    .await;
                self.set(
                    PreviewPhase::Ready,
                    Outcome::ready("Deployed", message.clone()),
                    &message,
                );
                self.deployed(head, now);
                self.health(head, now).await;
                self.cctx.previews.retries.reset(&self.key());
                info!(preview = %pe.name_any(), sha = %head, seconds = duration.as_secs_f64(), "preview ready");
                publish(
                    self.ctx,
                    pe,
                    EventType::Normal,
                    "PreviewReady",
                    "Deploy",
                    &message,
                )
                .await;
                at_deadline(Some(READY_RECHECK))
            }
            Step::StayReady => {
                let message = self.ready_message(head);
                let url = self.status.url.clone();
                self.report(ReportState::Ready, head, &message, url.as_deref())
                    .await;
                self.set(
                    PreviewPhase::Ready,
                    Outcome::ready("Deployed", message.clone()),
                    &message,
                );
                self.health(head, now).await;
                at_deadline(Some(READY_RECHECK))
            }
            Step::Unhealthy(down) => {
                let message = format!("no longer available: {}", down.join(", "));
                self.set(
                    PreviewPhase::Ready,
                    Outcome::ready("Deployed", self.ready_message(head)),
                    &message,
                );
                self.healthy(
                    ConditionStatus::False,
                    "WorkloadsUnavailable",
                    &message,
                    now,
                );
                self.report_health(head, ConditionStatus::False, &message)
                    .await;
                at_deadline(Some(DEPLOYING_RECHECK))
            }
        };
        Ok(action)
    }

    async fn fail(&mut self, failure: Failure, head: &str) -> Option<Duration> {
        let first = self.status.failure_reason.as_deref() != Some(failure.reason)
            || self.status.phase != PreviewPhase::Failed;
        self.status.failure_reason = Some(failure.reason.to_owned());
        let (outcome, action) = match failure.retry {
            Retry::OnChange => (
                Outcome::stalled(failure.reason, failure.message.clone()),
                None,
            ),
            Retry::Transient => {
                let delay = self.cctx.previews.retries.next_delay(&self.key());
                (
                    Outcome::progressing(
                        failure.reason,
                        format!(
                            "{}; retrying in {}s and on the next check or workload change",
                            failure.message,
                            delay.as_secs()
                        ),
                    ),
                    Some(delay),
                )
            }
        };
        match self.refused.take() {
            Some(err) => {
                let summary = err.summary();
                self.report_refusal(head, &summary, &err).await;
                api::set_condition(
                    &mut self.status.common.conditions,
                    api::DEPLOYED,
                    ConditionStatus::False,
                    "ManifestsRefused",
                    failure.message.clone(),
                    self.pe.meta().generation,
                    jiff::Timestamp::now(),
                );
                self.set(PreviewPhase::Failed, outcome, &summary);
            }
            None => {
                self.report(ReportState::Failed, head, &failure.message, None)
                    .await;
                self.set(PreviewPhase::Failed, outcome, &failure.message);
            }
        }
        if first {
            publish(
                self.ctx,
                self.pe,
                EventType::Warning,
                failure.reason,
                "Deploy",
                &failure.message,
            )
            .await;
        }
        action
    }

    fn refuse(&mut self, err: RenderError) -> Failure {
        let failure = Failure {
            reason: "ManifestsRefused",
            message: err.to_string(),
            retry: Retry::OnChange,
        };
        self.refused = Some(err);
        failure
    }

    fn ready_message(&self, head: &str) -> String {
        self.live_message(head)
    }

    /// `Healthy` of a Ready preview whose workloads are available: from its HealthCheck when
    /// `template.healthCheck` asks for one (created or updated here), else from the workloads.
    async fn health(&mut self, head: &str, now: jiff::Timestamp) {
        let check = health::ensure(self.ctx, self.cctx.previews.health_checks.get(), self.pe).await;
        let (st, reason, message) = match (&self.pe.spec.template.health_check, check) {
            (None, Ok(_)) => (
                ConditionStatus::True,
                "WorkloadsAvailable",
                "every workload is available".to_string(),
            ),
            (None, Err(e)) => (
                ConditionStatus::True,
                "WorkloadsAvailable",
                format!(
                    "every workload is available (the removed health check could not be deleted: {e})"
                ),
            ),
            (Some(_), Ok(hc)) => health::healthy(hc.as_deref()),
            (Some(_), Err(e)) => (
                ConditionStatus::Unknown,
                "HealthCheckNotApplied",
                format!("template.healthCheck: {e}"),
            ),
        };
        self.healthy(st, reason, &message, now);
        self.report_health(head, st, &message).await;
    }

    /// The `pullwarden/health` commit status on the head, once per (SHA, state).
    async fn report_health(&mut self, head: &str, st: ConditionStatus, message: &str) {
        if self.pe.spec.template.health_check.is_none() {
            return;
        }
        let (state, record, description) = health::status_for(st, message);
        if !health::should_write(self.status.health_reported.as_ref(), head, record) {
            return;
        }
        let forge = match self.forge().await {
            Ok(forge) => forge,
            Err(err) => {
                self.reported(Err(format!("no forge client for the health status: {err}")));
                return;
            }
        };
        let status = health::commit_status(state, &description, self.status.url.as_deref());
        match forge.set_commit_status(head, &status).await {
            Ok(()) => {
                self.status.health_reported = Some(api::ReportedState {
                    sha: head.to_owned(),
                    state: record.to_owned(),
                    ..Default::default()
                });
            }
            Err(crate::forge::ForgeError::Unsupported { .. }) => {}
            Err(e) => self.reported(Err(format!(
                "setting commit status {} on {}: {e}",
                health::STATUS_CONTEXT,
                plan::short(head)
            ))),
        }
    }

    fn live_message(&self, head: &str) -> String {
        match &self.status.url {
            Some(u) => format!("{} is live at {u}", short(head)),
            None => format!(
                "{} is live in namespace {}",
                short(head),
                self.status.namespace.as_deref().unwrap_or_default()
            ),
        }
    }

    fn set(&mut self, phase: PreviewPhase, outcome: Outcome, message: &str) {
        self.status.phase = phase;
        self.status.message = Some(message.to_owned());
        let conditions = std::mem::take(&mut self.status.common.conditions);
        let mut with_current = self.pe.clone();
        if let Some(s) = with_current.status.as_mut() {
            s.common.conditions = conditions;
        } else {
            with_current.status = Some(PreviewEnvironmentStatus {
                common: api::CommonStatus {
                    conditions,
                    ..Default::default()
                },
                ..Default::default()
            });
        }
        let handled = self.status.common.last_handled_reconcile_at.clone();
        self.status.common = status::common_status(&with_current, &outcome);
        self.status.common.last_handled_reconcile_at = handled;
    }

    fn deployed(&mut self, head: &str, now: jiff::Timestamp) {
        api::set_condition(
            &mut self.status.common.conditions,
            api::DEPLOYED,
            ConditionStatus::True,
            "Applied",
            format!(
                "{} objects applied for {}",
                self.status.inventory_count,
                short(head)
            ),
            self.pe.meta().generation,
            now,
        );
    }

    fn healthy(&mut self, st: ConditionStatus, reason: &str, message: &str, now: jiff::Timestamp) {
        api::set_condition(
            &mut self.status.common.conditions,
            api::HEALTHY,
            st,
            reason,
            message,
            self.pe.meta().generation,
            now,
        );
    }

    /// The one write-back call of a reconcile. A failure is recorded, never returned.
    async fn report(&mut self, state: ReportState, sha: &str, message: &str, url: Option<&str>) {
        let objects = self.status.inventory.clone();
        self.say(Say {
            state,
            sha,
            message,
            url,
            objects: &objects,
            refusal: None,
        })
        .await;
    }

    async fn report_refusal(&mut self, sha: &str, summary: &str, err: &RenderError) {
        self.say(Say {
            state: ReportState::Refused,
            sha,
            message: summary,
            url: None,
            objects: &[],
            refusal: Some(err),
        })
        .await;
    }

    async fn say(&mut self, say: Say<'_>) {
        if !writeback::should_write(self.status.reported.as_ref(), say.sha, say.state) {
            return;
        }
        let forge = match self.forge().await {
            Ok(forge) => forge,
            Err(err) => {
                self.reported(Err(format!("no forge client for the write-back: {err}")));
                return;
            }
        };
        let target_branch = self.target.as_ref().map(|t| t.branch.clone());
        let git_ref = target_branch
            .or_else(|| self.pe.spec.branch.clone())
            .unwrap_or_default();
        let namespace = self.status.namespace.clone().unwrap_or_default();
        let preview = self.pe.name_any();
        let reporter = Reporter {
            forge: forge.as_ref(),
            preview: &preview,
            git_ref: &git_ref,
            namespace: &namespace,
            pull_request: self.pe.spec.pull_request,
        };
        match reporter.say(self.status.reported.as_ref(), &say).await {
            Ok(Some(record)) => {
                self.status.reported = Some(record);
                self.reported(Ok(()));
            }
            Ok(None) => {}
            Err(err) => self.reported(Err(err.to_string())),
        }
    }

    fn reported(&mut self, result: Result<(), String>) {
        let (st, reason, message) = match result {
            Ok(()) => (
                ConditionStatus::True,
                "Written",
                "the pull request shows this state".to_string(),
            ),
            Err(message) => {
                self.writeback_failed = true;
                tracing::warn!(preview = %self.pe.name_any(), error = %message, "write-back failed; the deployment goes on");
                (ConditionStatus::False, "WriteBackFailed", message)
            }
        };
        api::set_condition(
            &mut self.status.common.conditions,
            api::REPORTED,
            st,
            reason,
            message,
            self.pe.meta().generation,
            jiff::Timestamp::now(),
        );
    }
}

fn annotation(pe: &PreviewEnvironment, key: &str) -> Option<String> {
    pe.metadata.annotations.as_ref()?.get(key).cloned()
}

/// Whether `me` is among the `cap` oldest previews of its namespace (by creation time, then
/// name): the ones beyond the cap wait, the older ones are never displaced by new ones.
fn within_namespace_cap(
    previews: &[(Option<jiff::Timestamp>, String)],
    me: &str,
    cap: u32,
) -> bool {
    let mut ranked: Vec<&(Option<jiff::Timestamp>, String)> = previews.iter().collect();
    ranked.sort_by(|a, b| (a.0.is_none(), a.0, &a.1).cmp(&(b.0.is_none(), b.0, &b.1)));
    ranked
        .iter()
        .take(usize::try_from(cap).unwrap_or(usize::MAX))
        .any(|(_, name)| name == me)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_namespace_cap_keeps_the_oldest_previews() {
        let t = |s: i64| Some(jiff::Timestamp::from_second(s).unwrap());
        let previews = vec![
            (t(30), "c".to_string()),
            (t(10), "a".to_string()),
            (t(20), "b".to_string()),
            (None, "new".to_string()),
        ];
        assert!(within_namespace_cap(&previews, "a", 2));
        assert!(within_namespace_cap(&previews, "b", 2));
        assert!(!within_namespace_cap(&previews, "c", 2));
        assert!(
            !within_namespace_cap(&previews, "new", 3),
            "no timestamp sorts last"
        );
        assert!(within_namespace_cap(&previews, "new", 4));
        assert!(!within_namespace_cap(&previews, "a", 0));
    }
}
