//! The PreviewEnvironment controller: one confined preview of one pull request (or branch).
//!
//! Pipeline per reconcile:
//! 1. deletion → teardown behind the finalizer `pullwarden.dev/preview-teardown`: delete the
//!    namespace (only if its ownership labels say it is ours), delete the Argo CD Application,
//!    mark the forge deployment inactive, update the sticky comment;
//! 2. dereference — the Repository, its credentials, the forge client; resolve the pull request
//!    (title, author, branches, head) or the branch head;
//! 3. TTL — past `ttl` without a push (and without `keepLabel`): tear down, phase `Expired`;
//!    a fork's unapproved newer head (`spec.unapprovedHeadSha`): phase `WaitingForApproval`,
//!    said on the PR, nothing new deployed ([`approval`]);
//! 4. `waitFor.checks` — phase `WaitingForChecks` until the head SHA's named checks succeeded;
//! 5. build (pure, [`crate::render`]) — fetch the template directory at the head SHA, render
//!    the parameters, enforce the safety rules; a refusal applies nothing;
//! 6. apply — namespace + confinement ([`confine`]), then the objects with server-side apply
//!    while impersonating the synthetic preview identity ([`apply`]); prune what the previous
//!    revision had and this one has not; or, for `delivery: argocd`, the restricted AppProject
//!    and the Application ([`argocd`]);
//! 7. wait — Deployments/StatefulSets available (phase `Deploying` → `Ready`);
//! 8. write-back ([`writeback`]) — commit status, deployment with `environment_url`, one sticky
//!    comment — at most once per (SHA, state).

pub mod apply;
mod approval;
pub mod argocd;
pub mod confine;
pub mod writeback;

use super::{
    ControllerContext, KindController, primary_controller, publish, reconcile_guarded, refs, status,
};
use crate::api::{
    self, ConditionStatus, Delivery, InventoryEntry, Outcome, PreviewEnvironment,
    PreviewEnvironmentStatus, PreviewPhase, ReportedState,
};
use crate::context::Context;
use crate::error::Error;
use crate::forge::{CheckState, Forge, PullRequestState};
use crate::render::{self, ParamsInput, PreviewParams, PreviewSource, RenderError, ReportState};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tracing::info;
use writeback::{Report, WriteState};

/// Finalizer guarding the teardown of state outside the object (namespace, forge deployment).
pub const FINALIZER: &str = "pullwarden.dev/preview-teardown";
/// Give up on workloads that are not available after this long.
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(600);
/// How often a deploying preview is re-checked.
const DEPLOY_POLL: Duration = Duration::from_secs(1);
/// How often a Ready preview is re-verified.
const READY_RECHECK: Duration = Duration::from_secs(60);

pub fn controller(cctx: Arc<ControllerContext>) -> KindController<PreviewEnvironment> {
    KindController::new(
        primary_controller::<PreviewEnvironment>(&cctx.ctx),
        |obj, cctx| Box::pin(reconcile_guarded(obj, cctx, reconcile)),
    )
}

/// What a preview deploys: the pull request or branch at a SHA.
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

async fn resolve_target(forge: &dyn Forge, pe: &PreviewEnvironment) -> Result<Target, Error> {
    if let Some(number) = pe.spec.pull_request {
        let pr = forge.get_pull_request(number).await?;
        Ok(Target {
            number: Some(number),
            head_sha: pe.spec.head_sha.clone().unwrap_or(pr.head_sha),
            branch: pr.head_ref,
            target_branch: pr.base_ref,
            title: pr.title,
            author: pr.author,
            labels: pr.labels,
            open: pr.state == PullRequestState::Open,
        })
    } else {
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
}

/// The state of the status being built during one reconcile.
struct Progress<'a> {
    pe: &'a PreviewEnvironment,
    status: PreviewEnvironmentStatus,
}

impl<'a> Progress<'a> {
    fn new(pe: &'a PreviewEnvironment) -> Self {
        Progress {
            pe,
            status: pe.status.clone().unwrap_or_default(),
        }
    }

    fn set(
        &mut self,
        phase: PreviewPhase,
        outcome: Outcome,
        deployed: Option<(ConditionStatus, &str, String)>,
        message: String,
    ) {
        let now = jiff::Timestamp::now();
        self.status.phase = phase;
        self.status.message = Some(message);
        self.status.common = status::common_status(self.pe, &outcome);
        if let Some((st, reason, msg)) = deployed {
            api::set_condition(
                &mut self.status.common.conditions,
                api::DEPLOYED,
                st,
                reason,
                msg,
                self.pe.meta().generation,
                now,
            );
        }
    }

    async fn write(self, ctx: &Context) -> Result<(), Error> {
        status::apply_status(ctx, self.pe, "preview", &self.status).await?;
        ctx.metrics.set_preview_phase(
            &super::object_key(self.pe),
            Some(self.status.phase.as_str()),
        );
        Ok(())
    }
}

async fn reconcile(
    pe: Arc<PreviewEnvironment>,
    cctx: Arc<ControllerContext>,
) -> Result<Action, Error> {
    let ctx = &cctx.ctx;
    let namespace = pe.namespace().unwrap_or_default();
    let api: Api<PreviewEnvironment> = Api::namespaced(ctx.client.clone(), &namespace);

    if pe.metadata.deletion_timestamp.is_some() {
        return cleanup(ctx, &api, &pe).await;
    }
    if !pe.finalizers().iter().any(|f| f == FINALIZER) {
        let mut finalizers = pe.finalizers().to_vec();
        finalizers.push(FINALIZER.into());
        let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": pe.resource_version()}});
        api.patch(
            &pe.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    }

    // Validate and dereference.
    super::repository::previews::validate_template(&pe.spec.template)
        .map_err(Error::InvalidSpec)?;
    let repo = refs::repository(ctx, &namespace, &pe.spec.repository_ref.name).await?;
    let coords = refs::coordinates(&repo.spec, &ctx.config.settings.network)?;
    let (creds, ca) = refs::credentials(ctx, &repo).await?;
    // The tenant's own git cache: a tree another namespace or credential fetched is never
    // served without this credential fetching it.
    let cache_scope = crate::git::CacheScope::new(&namespace, &creds);
    let forge = ctx
        .forges
        .client(refs::forge_kind(&repo.spec), &coords, creds, ca.clone())?;
    let mut progress = Progress::new(&pe);

    if pe.spec.suspend {
        let message =
            "spec.suspend is true: the current deployment stays, new revisions are not deployed"
                .to_string();
        let phase = progress.status.phase;
        progress.set(
            phase,
            Outcome::progressing("Suspended", message.clone()),
            None,
            message,
        );
        api::remove_condition(&mut progress.status.common.conditions, api::RECONCILING);
        progress.write(ctx).await?;
        return Ok(Action::await_change());
    }

    let target = resolve_target(forge.as_ref(), &pe).await?;
    tracing::debug!(preview = %pe.name_any(), sha = %target.head_sha, "target resolved");
    let now = jiff::Timestamp::now();
    let head_changed =
        progress.status.observed_head_sha.as_deref() != Some(target.head_sha.as_str());
    if head_changed {
        progress.status.observed_head_sha = Some(target.head_sha.clone());
        progress.status.last_push_time = Some(Time(now));
        progress.status.deploy_start_time = Some(Time(now));
    }
    let source = match target.number {
        Some(number) => PreviewSource::PullRequest {
            number,
            title: &target.title,
            author: &target.author,
            head_ref: &target.branch,
            base_ref: &target.target_branch,
        },
        None => PreviewSource::Branch {
            name: &target.branch,
            target_branch: &target.target_branch,
        },
    };
    let namespace_prefix = ctx
        .config
        .settings
        .previews
        .namespace_prefix
        .replace("{{tenant}}", &namespace);
    let params = PreviewParams::build_in(
        &ParamsInput {
            source,
            head_sha: &target.head_sha,
            owner: &coords.owner,
            repo: &coords.name,
            template: &pe.spec.template,
        },
        &namespace_prefix,
    )
    .map_err(|e| Error::InvalidSpec(e.to_string()))?;
    let preview_ns = params.namespace.clone();
    confine::check_namespace_name(&preview_ns, &namespace, &ctx.config.settings.previews)
        .map_err(Error::InvalidSpec)?;
    progress.status.namespace = Some(preview_ns.clone());
    let identity = confine::owner_label_value(&pe);
    let host = (!params.host.is_empty()).then_some(params.host.as_str());
    let reporter = Reporter::new(
        forge.as_ref(),
        &pe,
        &target.head_sha,
        &target.branch,
        &preview_ns,
        target.number,
    );

    // A hand-made preview of a closed pull request is not deployed.
    if !target.open {
        let message = "the pull request is closed; nothing is deployed".to_string();
        progress.set(
            PreviewPhase::Failed,
            Outcome::stalled("PullRequestClosed", message.clone()),
            None,
            message,
        );
        progress.write(ctx).await?;
        return Ok(Action::await_change());
    }

    // TTL. `recheck` is when a Ready preview is looked at again: every minute, or at its expiry
    // if that comes sooner.
    let mut recheck = READY_RECHECK;
    if let Some(ttl) = &pe.spec.template.ttl {
        let ttl = api::parse_duration("template.ttl", ttl).map_err(Error::InvalidSpec)?;
        let since = progress
            .status
            .last_push_time
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(now);
        let kept = target
            .labels
            .iter()
            .any(|l| *l == pe.spec.template.keep_label);
        let expires = since + jiff::SignedDuration::try_from(ttl).unwrap_or_default();
        if !kept && now >= expires {
            return expire(ctx, &reporter, &pe, progress).await;
        }
        if !kept {
            let left: Duration = expires.duration_since(now).try_into().unwrap_or_default();
            recheck = recheck.min(left + Duration::from_secs(1));
        }
    }

    // A fork's newer head without approval: report it, deploy nothing new (see `approval`).
    if let Some(pending) = pe.spec.unapproved_head_sha.as_deref() {
        let (f, r, t) = (forge.as_ref(), &repo, &target);
        return approval::wait(ctx, f, &pe, r, progress, t, &preview_ns, pending, recheck).await;
    }

    // Already deployed and ready: only re-verify.
    let ready_for_head = progress.status.phase == PreviewPhase::Ready
        && progress.status.deployed_sha.as_deref() == Some(target.head_sha.as_str())
        && progress.status.common.observed_generation == pe.meta().generation;

    // waitFor.checks.
    if !ready_for_head && let Some(wait) = &pe.spec.template.wait_for {
        let checks = forge.checks_for_sha(&target.head_sha).await?;
        let mut waiting = Vec::new();
        for required in &wait.checks {
            match checks.iter().find(|c| &c.name == required).map(|c| c.state) {
                Some(CheckState::Success) => {}
                Some(CheckState::Failure | CheckState::Error) => {
                    let message = format!(
                        "required check {required} failed on {}",
                        short(&target.head_sha)
                    );
                    return fail(
                        ctx,
                        &reporter,
                        &pe,
                        progress,
                        "RequiredCheckFailed",
                        message,
                    )
                    .await;
                }
                _ => waiting.push(required.clone()),
            }
        }
        if !waiting.is_empty() {
            if let Some(timeout) = &wait.timeout {
                let timeout =
                    api::parse_duration("waitFor.timeout", timeout).map_err(Error::InvalidSpec)?;
                let started = progress
                    .status
                    .deploy_start_time
                    .as_ref()
                    .map(|t| t.0)
                    .unwrap_or(now);
                if now >= started + jiff::SignedDuration::try_from(timeout).unwrap_or_default() {
                    let message = format!(
                        "checks {} did not succeed within {}",
                        waiting.join(", "),
                        wait.timeout
                            .as_ref()
                            .map(|t| t.to_string())
                            .unwrap_or_default()
                    );
                    return fail(ctx, &reporter, &pe, progress, "ChecksTimedOut", message).await;
                }
            }
            let message = format!(
                "waiting for checks {} on {}",
                waiting.join(", "),
                short(&target.head_sha)
            );
            reporter
                .say(
                    &mut progress.status.reported,
                    ReportState::Waiting,
                    &message,
                    None,
                    &[],
                )
                .await?;
            progress.set(
                PreviewPhase::WaitingForChecks,
                Outcome::progressing("WaitingForChecks", message.clone()),
                None,
                message,
            );
            progress.write(ctx).await?;
            return Ok(Action::requeue(Duration::from_secs(15)));
        }
    }

    if ready_for_head {
        let still = match pe.spec.template.delivery {
            Delivery::Manifests => {
                let client = apply::impersonated_client(ctx, &identity)?;
                apply::not_ready_workloads(&client, &progress.status.inventory).await?
            }
            Delivery::Argocd => {
                match argocd::ensure(ctx, &pe, &preview_ns, &coords.clone_url, &target.head_sha)
                    .await?
                {
                    argocd::AppState::Ready => Vec::new(),
                    argocd::AppState::Progressing(m) | argocd::AppState::Failed(m) => vec![m],
                }
            }
        };
        if still.is_empty() {
            return Ok(Action::requeue(recheck));
        }
        let message = format!("no longer available: {}", still.join(", "));
        api::set_condition(
            &mut progress.status.common.conditions,
            api::HEALTHY,
            ConditionStatus::False,
            "WorkloadsUnavailable",
            message.clone(),
            pe.meta().generation,
            now,
        );
        progress.status.message = Some(message);
        progress.write(ctx).await?;
        return Ok(Action::requeue(DEPLOY_POLL * 5));
    }

    // The per-namespace cap on previews (`--max-previews-per-namespace`), checked before a
    // deploy, never on a Ready re-check: the oldest previews of the namespace keep their place.
    // Only a preview that never deployed is counted against it (a live one is not evicted).
    let cap = ctx.config.settings.previews.max_previews_per_namespace;
    let never_deployed = progress.status.deployed_sha.is_none();
    let ranked: Vec<(Option<jiff::Timestamp>, String)> = if never_deployed {
        api.list_metadata(&kube::api::ListParams::default().match_any())
            .await?
            .items
            .iter()
            .filter(|m| m.metadata.deletion_timestamp.is_none())
            .map(|m| {
                (
                    m.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    m.name_any(),
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    if never_deployed && !within_namespace_cap(&ranked, &pe.name_any(), cap) {
        let message = format!(
            "namespace {namespace} has {} PreviewEnvironments; the operator allows {cap} (--max-previews-per-namespace): this one is not deployed until older ones are deleted",
            ranked.len()
        );
        progress.set(
            PreviewPhase::Failed,
            Outcome::stalled("PreviewLimitReached", message.clone()),
            None,
            message.clone(),
        );
        publish(
            ctx,
            pe.as_ref(),
            EventType::Warning,
            "PreviewLimitReached",
            "Deploy",
            &message,
        )
        .await;
        progress.write(ctx).await?;
        return Ok(Action::requeue(Duration::from_secs(300)));
    }

    // Report "deploying" once per SHA.
    if !writeback::already_reported(
        progress.status.reported.as_ref(),
        &target.head_sha,
        WriteState::Pending,
    ) {
        let message = format!("deploying {}", short(&target.head_sha));
        reporter
            .say(
                &mut progress.status.reported,
                ReportState::Deploying,
                &message,
                None,
                &[],
            )
            .await?;
        tracing::debug!(preview = %pe.name_any(), "reported deploying");
    }

    let url = params.url();
    let waiting: Vec<String> = match pe.spec.template.delivery {
        Delivery::Manifests => {
            let git_creds = forge.git_credentials().await?;
            tracing::debug!(preview = %pe.name_any(), url = %coords.clone_url, "fetching template");
            let files = ctx
                .git
                .fetch_tree_scoped(
                    &cache_scope,
                    &coords.clone_url,
                    &target.head_sha,
                    &pe.spec.template.path,
                    &git_creds,
                    ca.as_deref(),
                )
                .await?;
            let objects = match render::render(
                &files,
                &params,
                &pe.name_any(),
                &ctx.config.settings.previews,
            ) {
                Ok(objects) => objects,
                Err(err) => {
                    return refuse(ctx, &reporter, &pe, progress, &err).await;
                }
            };
            tracing::debug!(preview = %pe.name_any(), objects = objects.len(), "rendered");
            confine::ensure(ctx, &pe, &preview_ns, host).await?;
            tracing::debug!(preview = %pe.name_any(), namespace = %preview_ns, "namespace confined");
            let client = apply::impersonated_client(ctx, &identity)?;
            apply::await_grant(&client, &preview_ns).await?;
            if let Err(err) = apply::apply_objects(&client, &objects).await {
                return match err {
                    Error::ManifestsRefused(msg) => {
                        let render_err = RenderError::Applied(msg);
                        refuse(ctx, &reporter, &pe, progress, &render_err).await
                    }
                    other => Err(other),
                };
            }
            let inventory = render::inventory_entries(&objects);
            let stale = render::prune_set(&progress.status.inventory, &inventory);
            apply::prune(&client, &stale).await?;
            progress.status.inventory_count = u32::try_from(inventory.len()).unwrap_or(u32::MAX);
            progress.status.inventory = inventory.into_iter().take(256).collect();
            apply::not_ready_workloads(&client, &progress.status.inventory).await?
        }
        Delivery::Argocd => {
            // Project and ownership refusals come before the preview namespace exists.
            let plan =
                argocd::plan(ctx, &pe, &preview_ns, &coords.clone_url, &target.head_sha).await?;
            confine::ensure(ctx, &pe, &preview_ns, host).await?;
            match argocd::apply(ctx, plan).await? {
                argocd::AppState::Ready => Vec::new(),
                argocd::AppState::Progressing(m) => vec![m],
                argocd::AppState::Failed(m) => {
                    return fail(ctx, &reporter, &pe, progress, "ArgoCdFailed", m).await;
                }
            }
        }
    };

    let started = progress
        .status
        .deploy_start_time
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(now);
    if !waiting.is_empty() {
        let elapsed: Duration = now.duration_since(started).try_into().unwrap_or_default();
        if elapsed > DEPLOY_TIMEOUT {
            let message = format!(
                "not available after {}s: {}",
                DEPLOY_TIMEOUT.as_secs(),
                waiting.join(", ")
            );
            return fail(ctx, &reporter, &pe, progress, "DeployTimedOut", message).await;
        }
        let message = format!("waiting for {}", waiting.join(", "));
        progress.set(
            PreviewPhase::Deploying,
            Outcome::progressing("Deploying", message.clone()),
            Some(applied(progress.status.inventory_count, &target.head_sha)),
            message,
        );
        progress.write(ctx).await?;
        return Ok(Action::requeue(DEPLOY_POLL));
    }

    // Ready.
    let duration: Duration = now.duration_since(started).try_into().unwrap_or_default();
    ctx.metrics
        .preview_time_to_ready
        .observe(duration.as_secs_f64());
    progress.status.deployed_sha = Some(target.head_sha.clone());
    progress.status.url = url.clone();
    progress.status.ready_time = Some(Time(now));
    progress.status.last_deploy_duration = Some(format!("{:.1}s", duration.as_secs_f64()));
    let message = match &url {
        Some(u) => format!("{} is live at {u}", short(&target.head_sha)),
        None => format!(
            "{} is live in namespace {preview_ns}",
            short(&target.head_sha)
        ),
    };
    reporter
        .say(
            &mut progress.status.reported,
            ReportState::Ready,
            &message,
            url.as_deref(),
            &progress.status.inventory,
        )
        .await?;
    progress.set(
        PreviewPhase::Ready,
        Outcome::ready("Deployed", message.clone()),
        Some(applied(progress.status.inventory_count, &target.head_sha)),
        message,
    );
    api::set_condition(
        &mut progress.status.common.conditions,
        api::HEALTHY,
        ConditionStatus::True,
        "WorkloadsAvailable",
        "every workload is available",
        pe.meta().generation,
        now,
    );
    info!(preview = %pe.name_any(), sha = %target.head_sha, seconds = duration.as_secs_f64(), "preview ready");
    publish(
        ctx,
        pe.as_ref(),
        EventType::Normal,
        "PreviewReady",
        "Deploy",
        progress.status.message.as_deref().unwrap_or_default(),
    )
    .await;
    progress.write(ctx).await?;
    Ok(Action::requeue(recheck))
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

/// The `Applied` condition once a revision's objects are in the cluster.
fn applied(objects: u32, sha: &str) -> (ConditionStatus, &'static str, String) {
    (
        ConditionStatus::True,
        "Applied",
        format!("{objects} objects applied for {}", short(sha)),
    )
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(7)]
}

/// What every write-back of one preview has in common: where it goes (forge, head SHA, branch,
/// environment, pull request) and what the comment names (preview, namespace).
struct Reporter<'a> {
    forge: &'a dyn Forge,
    preview: &'a str,
    sha: &'a str,
    git_ref: &'a str,
    namespace: &'a str,
    environment: String,
    pull_request: Option<u64>,
}

impl<'a> Reporter<'a> {
    fn new(
        forge: &'a dyn Forge,
        pe: &'a PreviewEnvironment,
        sha: &'a str,
        git_ref: &'a str,
        namespace: &'a str,
        pull_request: Option<u64>,
    ) -> Self {
        Reporter {
            forge,
            preview: pe.metadata.name.as_deref().unwrap_or_default(),
            sha,
            git_ref,
            namespace,
            environment: format!("preview/{}", pe.name_any()),
            pull_request,
        }
    }

    /// Reports `state` with the standard sticky comment (status, deployment, comment; each at
    /// most once per SHA and state, see [`writeback`]) and records it in `reported`
    /// (`status.reported`).
    async fn say(
        &self,
        reported: &mut Option<ReportedState>,
        state: ReportState,
        message: &str,
        url: Option<&str>,
        objects: &[InventoryEntry],
    ) -> Result<(), Error> {
        let comment = render::report::comment_body(&render::report::CommentInput {
            preview: self.preview,
            state,
            url,
            sha: self.sha,
            namespace: self.namespace,
            detail: message,
            objects,
            error: None,
        });
        self.write(reported, state, message, url, comment).await
    }

    /// Reports `state` with a comment the caller wrote.
    async fn write(
        &self,
        reported: &mut Option<ReportedState>,
        state: ReportState,
        summary: &str,
        url: Option<&str>,
        comment: String,
    ) -> Result<(), Error> {
        let written = writeback::write(
            self.forge,
            reported.as_ref(),
            &Report {
                sha: self.sha,
                git_ref: self.git_ref,
                state: WriteState::from(state),
                description: render::report::status_description(state, summary),
                url: url.map(str::to_owned),
                environment: self.environment.clone(),
                pull_request: self.pull_request,
                comment,
            },
        )
        .await?;
        *reported = Some(written);
        Ok(())
    }
}

async fn fail(
    ctx: &Context,
    reporter: &Reporter<'_>,
    pe: &PreviewEnvironment,
    mut progress: Progress<'_>,
    reason: &str,
    message: String,
) -> Result<Action, Error> {
    reporter
        .say(
            &mut progress.status.reported,
            ReportState::Failed,
            &message,
            None,
            &[],
        )
        .await?;
    progress.set(
        PreviewPhase::Failed,
        Outcome::stalled(reason, message.clone()),
        None,
        message.clone(),
    );
    publish(ctx, pe, EventType::Warning, reason, "Deploy", &message).await;
    progress.write(ctx).await?;
    Ok(Action::await_change())
}

async fn refuse(
    ctx: &Context,
    reporter: &Reporter<'_>,
    pe: &PreviewEnvironment,
    mut progress: Progress<'_>,
    err: &RenderError,
) -> Result<Action, Error> {
    let summary = err.summary();
    let body =
        render::report::refusal_comment(reporter.preview, reporter.sha, reporter.namespace, err);
    reporter
        .write(
            &mut progress.status.reported,
            ReportState::Refused,
            &summary,
            None,
            body,
        )
        .await?;
    let message = err.to_string();
    progress.set(
        PreviewPhase::Failed,
        Outcome::stalled("ManifestsRefused", message.clone()),
        Some((ConditionStatus::False, "ManifestsRefused", message.clone())),
        summary,
    );
    publish(
        ctx,
        pe,
        EventType::Warning,
        "ManifestsRefused",
        "Deploy",
        &message,
    )
    .await;
    progress.write(ctx).await?;
    Ok(Action::await_change())
}

async fn expire(
    ctx: &Context,
    reporter: &Reporter<'_>,
    pe: &PreviewEnvironment,
    mut progress: Progress<'_>,
) -> Result<Action, Error> {
    if progress.status.phase == PreviewPhase::Expired {
        return Ok(Action::await_change());
    }
    teardown_children(ctx, pe, reporter.namespace).await?;
    let message = "expired: no push within the template's ttl; push to deploy again".to_string();
    reporter
        .say(
            &mut progress.status.reported,
            ReportState::Expired,
            &message,
            None,
            &[],
        )
        .await?;
    progress.status.inventory.clear();
    progress.status.inventory_count = 0;
    progress.status.url = None;
    progress.set(
        PreviewPhase::Expired,
        Outcome::ready("Expired", message.clone()),
        None,
        message,
    );
    progress.write(ctx).await?;
    Ok(Action::await_change())
}

async fn teardown_children(
    ctx: &Context,
    pe: &PreviewEnvironment,
    preview_ns: &str,
) -> Result<(), Error> {
    if pe.spec.template.delivery == Delivery::Argocd {
        argocd::teardown(ctx, pe, preview_ns).await?;
    }
    if !confine::teardown(ctx, pe, preview_ns).await? {
        tracing::warn!(
            namespace = preview_ns,
            "namespace is not owned by this preview; left alone"
        );
    }
    Ok(())
}

/// Teardown on deletion; the finalizer is removed only once everything outside the object is
/// handled. A forge error while marking the deployment inactive is retried (the namespace is
/// already gone by then; the finalizer keeps the object until the forge answers).
async fn cleanup(
    ctx: &Context,
    api: &Api<PreviewEnvironment>,
    pe: &PreviewEnvironment,
) -> Result<Action, Error> {
    if !pe.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let status = pe.status.clone().unwrap_or_default();
    if let Some(ns) = status.namespace.as_deref() {
        teardown_children(ctx, pe, ns).await?;
    }
    if let Some(reported) = status.reported.as_ref() {
        mark_inactive(
            ctx,
            pe,
            reported,
            status.namespace.as_deref().unwrap_or_default(),
        )
        .await?;
    }
    let finalizers: Vec<String> = pe
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    let patch =
        json!({"metadata": {"finalizers": finalizers, "resourceVersion": pe.resource_version()}});
    match api
        .patch(
            &pe.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    ctx.metrics.set_preview_phase(&super::object_key(pe), None);
    info!(preview = %pe.name_any(), "preview torn down");
    Ok(Action::await_change())
}

async fn mark_inactive(
    ctx: &Context,
    pe: &PreviewEnvironment,
    reported: &ReportedState,
    preview_ns: &str,
) -> Result<(), Error> {
    let namespace = pe.namespace().unwrap_or_default();
    // The Repository may be gone already (deleted with its previews): nothing to report to.
    let Ok(repo) = refs::repository(ctx, &namespace, &pe.spec.repository_ref.name).await else {
        return Ok(());
    };
    let coords = refs::coordinates(&repo.spec, &ctx.config.settings.network)?;
    let (creds, ca) = match refs::credentials(ctx, &repo).await {
        Ok(c) => c,
        Err(_) => return Ok(()),
    };
    let forge = ctx
        .forges
        .client(refs::forge_kind(&repo.spec), &coords, creds, ca)?;
    let message = "preview deleted: the namespace was torn down";
    Reporter::new(
        forge.as_ref(),
        pe,
        &reported.sha,
        pe.spec.branch.as_deref().unwrap_or_default(),
        preview_ns,
        pe.spec.pull_request,
    )
    .say(
        &mut Some(reported.clone()),
        ReportState::Deleted,
        message,
        None,
        &[],
    )
    .await?;
    Ok(())
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
