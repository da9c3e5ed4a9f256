//! Repository → PreviewEnvironment: one preview per selected pull request.
//!
//! Two halves: [`plan_previews`] (pure) turns the Repository, the forge snapshot and the
//! previews it owns into [`PreviewAction`]s; [`apply_plan`] carries them out (server-side
//! applies, the forge confirmations, deletes) and [`confirm_deletions`] is its forge part.
//!
//! Creation and head moves are server-side applies (field manager `pullwarden.dev/repository`)
//! of previews owned by the Repository. The applied body never carries `spec.suspend`, so the
//! field manager does not own it: a user who suspends a generated preview keeps it suspended
//! through every later sync ([`preview_body`]). Deletion is a normal delete (the preview
//! controller's finalizer tears the namespace down) and happens only for a confirmed reason:
//! - `spec.preview` was removed from the Repository: every preview it generated goes;
//! - the pull request is still open but no longer selected (label removed, became a draft, the
//!   fork policy changed) — known from a complete, successful list of open pull requests;
//! - the pull request is not in the open list and the forge confirms it is closed or merged;
//! - the per-repository cap: previews are ranked by their last push (`status.lastPushTime`,
//!   else their creation), never by other pull request activity; a preview whose PR carries
//!   `keepLabel` is never dropped. A pull request moved to a new head counts as pushed now, and
//!   so does one never seen without a preview; one the cap left out at its current head waits
//!   in `status.previewsOverCap` and only fills a free slot, so two pull requests never take
//!   turns evicting each other.
//!
//! A fork pull request under `requireApproval` whose newest head is not approved keeps its
//! preview at the last approved head, with `spec.unapprovedHeadSha` naming the waiting one (the
//! preview then reports `WaitingForApproval`); one never approved gets no preview.
//!
//! The cap is `maxPreviews`, defaulting to and bounded by the operator's
//! `--default-max-previews` ([`effective_max_previews`]).
//!
//! A forge error while confirming aborts without deleting anything. TTL expiry is the preview
//! controller's job (it tears down the namespace and keeps the object as `Expired` until the next
//! push), so an expired preview is not recreated here.

use super::{Snapshot, approval};
use crate::api::{
    OverCapPullRequest, PreviewEnvironment, PreviewEnvironmentSpec, PreviewTemplate, Repository,
};
use crate::context::Context;
use crate::error::Error;
use crate::forge::{Forge, ForgeError, PullRequest, PullRequestState};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use tracing::info;

/// Label carrying the owning Repository's name on generated previews.
pub const REPOSITORY_LABEL: &str = "pullwarden.dev/repository";
/// Label carrying the pull request number on generated previews.
pub const PULL_REQUEST_LABEL: &str = "pullwarden.dev/pull-request";
/// At most this many entries in `status.previewsOverCap`.
pub const OVER_CAP_LIMIT: usize = 256;

/// Checks a template for what the schema cannot: the path stays inside the repository.
pub fn validate_template(template: &PreviewTemplate) -> Result<(), String> {
    if template.path.split('/').any(|seg| seg == "..") {
        return Err(format!(
            "preview.path {:?} must not contain `..`",
            template.path
        ));
    }
    Ok(())
}

/// Name of the preview of pull request `number` of `repo` (a valid DNS subdomain).
pub fn preview_name(repo: &str, number: u64) -> String {
    let suffix = format!("-pr-{number}");
    let mut base: String = repo.chars().take(253 - suffix.len()).collect();
    while base.ends_with('-') || base.ends_with('.') {
        base.pop();
    }
    format!("{base}{suffix}")
}

/// The cap of one Repository: its `maxPreviews`, or the operator's default when unset; never
/// above the operator's default (a tenant cannot raise its own ceiling).
pub fn effective_max_previews(spec: Option<u32>, operator_default: u32) -> u32 {
    spec.unwrap_or(operator_default).min(operator_default)
}

/// What a pull request's preview deploys: `(headSha, unapprovedHeadSha)`. A fork pull request
/// under `requireApproval` deploys its last approved head while a newer one waits.
pub fn preview_heads(pr: &PullRequest, snapshot: &Snapshot) -> (String, Option<String>) {
    snapshot
        .fork_approvals
        .iter()
        .find(|r| r.number == pr.number)
        .and_then(approval::deploy_target)
        .unwrap_or_else(|| (pr.head_sha.clone(), None))
}

/// The PreviewEnvironments this Repository owns (by ownerReference), by pull request number.
/// Listed on every sync of a Repository with `spec.preview`; without it, only while the preview
/// controller's store shows one it owns (that is how removing `spec.preview` is acted on).
pub async fn owned_previews(
    ctx: &Context,
    repo: &Repository,
) -> Result<BTreeMap<u64, PreviewEnvironment>, Error> {
    let namespace = repo.namespace().unwrap_or_default();
    let api: Api<PreviewEnvironment> = Api::namespaced(ctx.client.clone(), &namespace);
    let existing = api
        .list(&ListParams::default().labels(&format!("{REPOSITORY_LABEL}={}", repo.name_any())))
        .await?;
    Ok(existing
        .items
        .into_iter()
        .filter(|p| {
            p.owner_references()
                .iter()
                .any(|o| Some(&o.uid) == repo.metadata.uid.as_ref())
        })
        .filter_map(|p| p.spec.pull_request.map(|n| (n, p)))
        .collect())
}

/// Why an existing preview is to be deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteReason {
    /// `spec.preview` was removed from the Repository.
    PreviewRemoved,
    Deselected,
    Closed,
    Merged,
    OverCap,
}

impl DeleteReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            DeleteReason::PreviewRemoved => "spec.preview removed",
            DeleteReason::Deselected => "no longer selected",
            DeleteReason::Closed => "pull request closed",
            DeleteReason::Merged => "pull request merged",
            DeleteReason::OverCap => "over the maxPreviews cap",
        }
    }
}

/// One step towards the previews the snapshot selects.
#[derive(Clone, Debug, PartialEq)]
pub enum PreviewAction {
    /// A selected pull request without a preview gets one.
    Create {
        number: u64,
        spec: PreviewEnvironmentSpec,
    },
    /// A preview's spec changes: a new head, a newer head that waits for approval, or an
    /// edited template.
    Move {
        number: u64,
        spec: PreviewEnvironmentSpec,
    },
    /// The preview's pull request is not among the selected open ones: the forge says whether
    /// it was closed, merged or deselected. A forge error deletes nothing.
    ConfirmClosed {
        number: u64,
        name: String,
    },
    Delete {
        name: String,
        reason: DeleteReason,
    },
    /// A selected pull request left out by the cap, at this head (`status.previewsOverCap`).
    WaitForSlot {
        number: u64,
        head_sha: String,
    },
}

/// How recently a pull request was pushed, for the cap. `Waiting` (left out at its current
/// head before) sorts below every push.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum LastPush {
    Waiting,
    At(Timestamp),
}

/// When the head a preview deploys was pushed: `status.lastPushTime`, else its creation.
fn last_push(pe: &PreviewEnvironment) -> Option<Timestamp> {
    pe.status
        .as_ref()
        .and_then(|s| s.last_push_time.as_ref())
        .or(pe.metadata.creation_timestamp.as_ref())
        .map(|t| t.0)
}

/// The spec a Repository wants for the preview of one pull request.
fn desired_spec(
    repo_name: &str,
    pr: &PullRequest,
    snapshot: &Snapshot,
    template: &PreviewTemplate,
) -> PreviewEnvironmentSpec {
    let (head_sha, unapproved_head_sha) = preview_heads(pr, snapshot);
    PreviewEnvironmentSpec {
        repository_ref: crate::api::LocalObjectReference {
            name: repo_name.to_owned(),
        },
        pull_request: Some(pr.number),
        branch: None,
        head_sha: Some(head_sha),
        unapproved_head_sha,
        template: template.clone(),
        // Never applied (see `preview_body`); a user's value is kept.
        suspend: false,
    }
}

/// Whether `current` already is `wanted`, apart from `suspend` (the user's field).
fn same_spec(current: &PreviewEnvironmentSpec, wanted: &PreviewEnvironmentSpec) -> bool {
    let mut current = current.clone();
    current.suspend = wanted.suspend;
    current == *wanted
}

/// What to do with this Repository's previews (pure). `owned`: from [`owned_previews`];
/// `operator_max`: `--default-max-previews`; `now`: the time a push seen in this sync counts
/// as. Previews already being deleted are left alone (their finalizer is at work).
pub fn plan_previews(
    repo: &Repository,
    snapshot: &Snapshot,
    owned: &BTreeMap<u64, PreviewEnvironment>,
    operator_max: u32,
    now: Timestamp,
) -> Vec<PreviewAction> {
    let live: BTreeMap<u64, &PreviewEnvironment> = owned
        .iter()
        .filter(|(_, pe)| pe.metadata.deletion_timestamp.is_none())
        .map(|(n, pe)| (*n, pe))
        .collect();
    let Some(preview) = &repo.spec.preview else {
        return live
            .values()
            .map(|pe| PreviewAction::Delete {
                name: pe.name_any(),
                reason: DeleteReason::PreviewRemoved,
            })
            .collect();
    };
    let repo_name = repo.name_any();
    let keep_label = preview.template.keep_label.as_str();
    let waited: BTreeMap<u64, &str> = repo
        .status
        .as_ref()
        .map(|s| s.previews_over_cap.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|w| (w.number, w.head_sha.as_str()))
        .collect();
    let terminating: BTreeSet<u64> = owned
        .keys()
        .filter(|n| !live.contains_key(n))
        .copied()
        .collect();

    // Rank the selected pull requests: keep-labelled first, then by last push, newest first.
    let mut candidates: Vec<(bool, LastPush, &PullRequest, PreviewEnvironmentSpec)> = snapshot
        .pull_requests
        .iter()
        .filter(|pr| !terminating.contains(&pr.number))
        .map(|pr| {
            let spec = desired_spec(&repo_name, pr, snapshot, &preview.template);
            let head = spec.head_sha.as_deref().unwrap_or_default();
            let pushed = match live.get(&pr.number) {
                Some(pe) if pe.spec.head_sha.as_deref() == Some(head) => {
                    LastPush::At(last_push(pe).unwrap_or(now))
                }
                // Moved to a new head: pushed now.
                Some(_) => LastPush::At(now),
                None if waited.get(&pr.number) == Some(&head) => LastPush::Waiting,
                None => LastPush::At(now),
            };
            let keep = pr.labels.iter().any(|l| l == keep_label);
            (keep, pushed, pr, spec)
        })
        .collect();
    candidates.sort_by_key(|c| std::cmp::Reverse((c.0, c.1, c.2.number)));
    let cap = effective_max_previews(preview.max_previews, operator_max) as usize;
    let kept = candidates.iter().filter(|c| c.0).count();
    let slots = cap.max(kept);

    let mut actions = Vec::new();
    for (i, (_, _, pr, spec)) in candidates.into_iter().enumerate() {
        let current = live.get(&pr.number);
        if i >= slots {
            if let Some(pe) = current {
                actions.push(PreviewAction::Delete {
                    name: pe.name_any(),
                    reason: DeleteReason::OverCap,
                });
            }
            actions.push(PreviewAction::WaitForSlot {
                number: pr.number,
                head_sha: spec.head_sha.clone().unwrap_or_default(),
            });
            continue;
        }
        match current {
            None => actions.push(PreviewAction::Create {
                number: pr.number,
                spec,
            }),
            Some(pe) if !same_spec(&pe.spec, &spec) => actions.push(PreviewAction::Move {
                number: pr.number,
                spec,
            }),
            Some(_) => {}
        }
    }
    let selected: BTreeSet<u64> = snapshot.pull_requests.iter().map(|p| p.number).collect();
    for (number, pe) in &live {
        if !selected.contains(number) {
            actions.push(PreviewAction::ConfirmClosed {
                number: *number,
                name: pe.name_any(),
            });
        }
    }
    actions
}

/// The server-side apply body of one generated preview (pure). `spec.suspend` is left out on
/// purpose: the field manager then does not own it, so a user's `suspend: true` survives.
pub fn preview_body(
    repo_name: &str,
    owner: &OwnerReference,
    spec: &PreviewEnvironmentSpec,
) -> Result<Value, Error> {
    let number = spec
        .pull_request
        .ok_or_else(|| Error::Internal("a generated preview needs a pull request".into()))?;
    let mut spec_json =
        serde_json::to_value(spec).map_err(|e| Error::Internal(format!("preview spec: {e}")))?;
    if let Some(fields) = spec_json.as_object_mut() {
        fields.remove("suspend");
    }
    Ok(json!({
        "apiVersion": PreviewEnvironment::api_version(&()),
        "kind": PreviewEnvironment::kind(&()),
        "metadata": {
            "name": preview_name(repo_name, number),
            "labels": { REPOSITORY_LABEL: repo_name, PULL_REQUEST_LABEL: number.to_string() },
            "ownerReferences": [owner],
        },
        "spec": spec_json,
    }))
}

/// Every deletion of the plan with its reason, asking the forge about each
/// [`PreviewAction::ConfirmClosed`]. Any forge error fails the whole list, so nothing is
/// deleted on a guess (a forge error is never "closed").
pub async fn confirm_deletions(
    forge: &dyn Forge,
    actions: &[PreviewAction],
) -> Result<Vec<(String, DeleteReason)>, ForgeError> {
    let mut deletions = Vec::new();
    for action in actions {
        match action {
            PreviewAction::Delete { name, reason } => deletions.push((name.clone(), *reason)),
            PreviewAction::ConfirmClosed { number, name } => {
                let reason = match forge.get_pull_request(*number).await?.state {
                    PullRequestState::Closed => DeleteReason::Closed,
                    PullRequestState::Merged => DeleteReason::Merged,
                    // Open but not in the selected list: its labels, draft state or fork policy
                    // no longer qualify.
                    PullRequestState::Open => DeleteReason::Deselected,
                };
                deletions.push((name.clone(), reason));
            }
            _ => {}
        }
    }
    Ok(deletions)
}

/// What [`apply_plan`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PreviewOutcome {
    /// Previews that stay (created, moved or unchanged).
    pub live: usize,
    pub deleted: Vec<(String, DeleteReason)>,
    /// Previews deleted before this sync whose teardown is still running.
    pub terminating: usize,
    /// `status.previewsOverCap`.
    pub over_cap: Vec<OverCapPullRequest>,
}

impl PreviewOutcome {
    /// The previews part of the Ready message; `None` for a Repository without `spec.preview`
    /// and no preview left.
    pub fn summary(&self, has_preview_spec: bool) -> Option<String> {
        if !has_preview_spec {
            let going = self.deleted.len() + self.terminating;
            return (going > 0)
                .then(|| format!("spec.preview removed: {going} previews being deleted"));
        }
        Some(match self.over_cap.len() {
            0 => format!("{} previews", self.live),
            n => format!(
                "{} previews, {n} waiting for a slot (maxPreviews)",
                self.live
            ),
        })
    }
}

/// Carries out the plan: applies first (a flaky confirmation must not hold back a push on
/// another pull request), then the forge confirmations, then the deletes.
pub async fn apply_plan(
    ctx: &Context,
    repo: &Repository,
    forge: &dyn Forge,
    actions: &[PreviewAction],
    owned: &BTreeMap<u64, PreviewEnvironment>,
) -> Result<PreviewOutcome, Error> {
    let namespace = repo.namespace().unwrap_or_default();
    let repo_name = repo.name_any();
    let api: Api<PreviewEnvironment> = Api::namespaced(ctx.client.clone(), &namespace);
    let owner = repo
        .controller_owner_ref(&())
        .ok_or_else(|| Error::Internal("repository has no uid".into()))?;
    let params = PatchParams::apply(&Context::field_manager("repository")).force();
    let mut outcome = PreviewOutcome::default();
    for action in actions {
        match action {
            PreviewAction::Create { spec, .. } | PreviewAction::Move { spec, .. } => {
                let body = preview_body(&repo_name, &owner, spec)?;
                let name = body["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                api.patch(&name, &params, &Patch::Apply(&body)).await?;
                info!(preview = %name, sha = ?spec.head_sha, unapproved = ?spec.unapproved_head_sha, "preview applied");
            }
            PreviewAction::WaitForSlot { number, head_sha } => {
                outcome.over_cap.push(OverCapPullRequest {
                    number: *number,
                    head_sha: head_sha.clone(),
                })
            }
            PreviewAction::ConfirmClosed { .. } | PreviewAction::Delete { .. } => {}
        }
    }
    outcome.over_cap.truncate(OVER_CAP_LIMIT);
    let deletions = confirm_deletions(forge, actions).await?;
    for (name, reason) in &deletions {
        info!(preview = %name, reason = reason.as_str(), "deleting preview");
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    let live = owned
        .values()
        .filter(|pe| pe.metadata.deletion_timestamp.is_none())
        .count();
    let created = actions
        .iter()
        .filter(|a| matches!(a, PreviewAction::Create { .. }))
        .count();
    outcome.live = (live + created).saturating_sub(deletions.len());
    outcome.terminating = owned.len() - live;
    outcome.deleted = deletions;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pr(number: u64, updated: i64, labels: &[&str]) -> PullRequest {
        PullRequest {
            body: String::new(),
            number,
            title: String::new(),
            author: "a".into(),
            head_sha: "b".repeat(40),
            head_ref: "h".into(),
            base_ref: "main".into(),
            labels: labels.iter().map(|s| s.to_string()).collect(),
            draft: false,
            fork: false,
            url: String::new(),
            updated_at: jiff::Timestamp::from_second(updated).unwrap(),
            state: PullRequestState::Open,
        }
    }

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "cccccccccccccccccccccccccccccccccccccccc";

    fn ts(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    /// Repository `web` in `team`; `preview`: the `spec.preview` JSON, `None` to leave it out.
    fn repository(preview: Option<Value>, over_cap: &[(u64, &str)]) -> Repository {
        let mut spec = json!({"provider": "github", "url": "https://github.com/team/web"});
        if let Some(p) = preview {
            spec["preview"] = p;
        }
        let mut repo: Repository = serde_json::from_value(json!({
            "apiVersion": "pullwarden.dev/v1alpha1", "kind": "Repository",
            "metadata": {"name": "web", "namespace": "team", "uid": "uid-web"},
            "spec": spec,
        }))
        .unwrap();
        repo.status = Some(crate::api::RepositoryStatus {
            previews_over_cap: over_cap
                .iter()
                .map(|(n, sha)| OverCapPullRequest {
                    number: *n,
                    head_sha: sha.to_string(),
                })
                .collect(),
            ..Default::default()
        });
        repo
    }

    fn with_previews(max: Option<u32>) -> Repository {
        let mut preview = json!({"path": "deploy/preview"});
        if let Some(max) = max {
            preview["maxPreviews"] = json!(max);
        }
        repository(Some(preview), &[])
    }

    fn open(number: u64, head: &str, updated: i64, labels: &[&str]) -> PullRequest {
        PullRequest {
            head_sha: head.into(),
            ..pr(number, updated, labels)
        }
    }

    fn snapshot(prs: Vec<PullRequest>) -> Snapshot {
        Snapshot {
            default_branch: "main".into(),
            branches: vec![],
            pull_requests: prs,
            fork_approvals: vec![],
        }
    }

    /// The preview `repo` generated for `pr` (as the plan wants it), pushed at `pushed` and
    /// created at `created`.
    fn existing(
        repo: &Repository,
        pr: &PullRequest,
        pushed: Option<i64>,
        created: i64,
    ) -> (u64, PreviewEnvironment) {
        let template = &repo.spec.preview.as_ref().unwrap().template;
        let spec = desired_spec("web", pr, &snapshot(vec![pr.clone()]), template);
        let mut pe = PreviewEnvironment::new(&preview_name("web", pr.number), spec);
        pe.metadata.namespace = Some("team".into());
        pe.metadata.creation_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(ts(created)),
        );
        pe.status = Some(crate::api::PreviewEnvironmentStatus {
            last_push_time: pushed
                .map(|p| k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(ts(p))),
            ..Default::default()
        });
        (pr.number, pe)
    }

    const NOW: i64 = 1_000_000;

    fn plan(
        repo: &Repository,
        prs: Vec<PullRequest>,
        owned: &BTreeMap<u64, PreviewEnvironment>,
    ) -> Vec<PreviewAction> {
        plan_previews(repo, &snapshot(prs), owned, 20, ts(NOW))
    }

    fn created(actions: &[PreviewAction]) -> Vec<u64> {
        actions
            .iter()
            .filter_map(|a| match a {
                PreviewAction::Create { number, .. } => Some(*number),
                _ => None,
            })
            .collect()
    }

    fn deleted(actions: &[PreviewAction]) -> Vec<(String, DeleteReason)> {
        actions
            .iter()
            .filter_map(|a| match a {
                PreviewAction::Delete { name, reason } => Some((name.clone(), *reason)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn selected_pull_requests_get_previews_and_unselected_ones_are_confirmed_first() {
        let repo = with_previews(None);
        let one = open(1, A, 10, &[]);
        let two = open(2, B, 10, &[]);
        let owned: BTreeMap<_, _> = [existing(&repo, &two, Some(5), 1)].into();
        // #1 is new, #2 is unchanged.
        let actions = plan(&repo, vec![one.clone(), two.clone()], &owned);
        assert_eq!(actions.len(), 1, "{actions:?}");
        let PreviewAction::Create { number: 1, spec } = &actions[0] else {
            panic!("{actions:?}")
        };
        assert_eq!(spec.head_sha.as_deref(), Some(A));
        assert_eq!(spec.pull_request, Some(1));
        assert_eq!(spec.repository_ref.name, "web");
        // #2 not in the selected list: the forge is asked before anything is deleted.
        let actions = plan(&repo, vec![one], &owned);
        assert_eq!(
            actions[1],
            PreviewAction::ConfirmClosed {
                number: 2,
                name: "web-pr-2".into()
            }
        );
        assert!(deleted(&actions).is_empty());
    }

    #[test]
    fn a_new_head_an_unapproved_head_or_a_template_edit_moves_the_preview() {
        use crate::api::{ForkApprovalState, ForkApprovalStatus};
        let repo = with_previews(None);
        let at_a = open(1, A, 10, &[]);
        let owned: BTreeMap<_, _> = [existing(&repo, &at_a, Some(5), 1)].into();
        let actions = plan(&repo, vec![open(1, B, 10, &[])], &owned);
        let [PreviewAction::Move { number: 1, spec }] = actions.as_slice() else {
            panic!("{actions:?}")
        };
        assert_eq!(spec.head_sha.as_deref(), Some(B));

        // A fork's newer head waits: the preview stays at A and names B as unapproved.
        let mut fork = open(1, B, 10, &[]);
        fork.fork = true;
        let mut snap = snapshot(vec![fork]);
        snap.fork_approvals = vec![ForkApprovalStatus {
            number: 1,
            head_sha: B.into(),
            state: ForkApprovalState::WaitingForApproval,
            approved_sha: Some(A.into()),
            ..Default::default()
        }];
        let actions = plan_previews(&repo, &snap, &owned, 20, ts(NOW));
        let [PreviewAction::Move { spec, .. }] = actions.as_slice() else {
            panic!("{actions:?}")
        };
        assert_eq!(
            (
                spec.head_sha.as_deref(),
                spec.unapproved_head_sha.as_deref()
            ),
            (Some(A), Some(B))
        );

        // A template edit.
        let edited = repository(Some(json!({"path": "deploy/other"})), &[]);
        let actions = plan(&edited, vec![at_a], &owned);
        assert!(
            matches!(&actions[..], [PreviewAction::Move { spec, .. }] if spec.template.path == "deploy/other"),
            "{actions:?}"
        );
    }

    #[test]
    fn a_suspend_set_by_a_user_is_not_a_change() {
        let repo = with_previews(None);
        let pr = open(1, A, 10, &[]);
        let (n, mut pe) = existing(&repo, &pr, Some(5), 1);
        pe.spec.suspend = true;
        let owned: BTreeMap<_, _> = [(n, pe)].into();
        assert_eq!(plan(&repo, vec![pr], &owned), vec![]);
    }

    #[test]
    fn the_applied_body_never_carries_suspend() {
        let repo = with_previews(None);
        let (_, pe) = existing(&repo, &open(7, A, 1, &[]), None, 1);
        let owner = repo.controller_owner_ref(&()).unwrap();
        let mut spec = pe.spec.clone();
        for suspend in [false, true] {
            spec.suspend = suspend;
            let body = preview_body("web", &owner, &spec).unwrap();
            assert!(body["spec"].get("suspend").is_none(), "{body}");
            assert_eq!(body["spec"]["headSha"], A);
            assert_eq!(body["metadata"]["name"], "web-pr-7");
            assert_eq!(body["metadata"]["labels"][PULL_REQUEST_LABEL], "7");
            assert_eq!(body["metadata"]["labels"][REPOSITORY_LABEL], "web");
            assert_eq!(body["metadata"]["ownerReferences"][0]["uid"], "uid-web");
        }
    }

    #[test]
    fn the_cap_ranks_by_last_push_never_by_other_activity() {
        let repo = with_previews(Some(2));
        // #1 has the most recent PR activity (a comment, a label) but the oldest push.
        let one = open(1, A, 900, &[]);
        let two = open(2, B, 100, &[]);
        let three = open(3, C, 100, &[]);
        let owned: BTreeMap<_, _> = [
            existing(&repo, &one, Some(10), 1),
            existing(&repo, &two, Some(30), 1),
            // No push recorded yet: its creation counts.
            existing(&repo, &three, None, 20),
        ]
        .into();
        let actions = plan(&repo, vec![one, two, three], &owned);
        assert_eq!(
            deleted(&actions),
            vec![("web-pr-1".into(), DeleteReason::OverCap)]
        );
        assert!(actions.contains(&PreviewAction::WaitForSlot {
            number: 1,
            head_sha: A.into()
        }));
    }

    #[test]
    fn a_waiting_pull_request_fills_only_free_slots_until_it_is_pushed() {
        let one = open(1, A, 900, &[]);
        let two = open(2, B, 100, &[]);
        let three = open(3, C, 100, &[]);
        let base = with_previews(Some(2));
        let owned: BTreeMap<_, _> = [
            existing(&base, &two, Some(30), 1),
            existing(&base, &three, Some(20), 1),
        ]
        .into();
        // #1 was left out at head A: it does not evict anyone (no ping-pong).
        let mut repo = base.clone();
        repo.status.as_mut().unwrap().previews_over_cap = vec![OverCapPullRequest {
            number: 1,
            head_sha: A.into(),
        }];
        let actions = plan(&repo, vec![one.clone(), two.clone(), three.clone()], &owned);
        assert_eq!(
            actions,
            vec![PreviewAction::WaitForSlot {
                number: 1,
                head_sha: A.into()
            }]
        );
        // A push to #1 (new head): it is now the most recently pushed and takes the slot of
        // the preview longest without a push (#3).
        let pushed = open(1, B, 900, &[]);
        let actions = plan(&repo, vec![pushed, two.clone(), three.clone()], &owned);
        assert_eq!(created(&actions), vec![1]);
        assert_eq!(
            deleted(&actions),
            vec![("web-pr-3".into(), DeleteReason::OverCap)]
        );
        // #2 closes: the waiting #1 fills the free slot.
        let actions = plan(&repo, vec![one, three], &owned);
        assert_eq!(created(&actions), vec![1]);
        assert!(deleted(&actions).is_empty());
    }

    #[test]
    fn keep_labelled_previews_are_never_dropped_by_the_cap() {
        let repo = with_previews(Some(1));
        let keep = |n, head| open(n, head, 1, &["keep-preview"]);
        let (one, two) = (keep(1, A), keep(2, B));
        let three = open(3, C, 1, &[]);
        let owned: BTreeMap<_, _> = [
            existing(&repo, &one, Some(1), 1),
            existing(&repo, &two, Some(2), 1),
            existing(&repo, &three, Some(999), 1),
        ]
        .into();
        let actions = plan(&repo, vec![one, two, three], &owned);
        // More keep-labelled previews than the cap: all of them stay, the unlabelled one goes
        // although it was pushed last.
        assert_eq!(
            deleted(&actions),
            vec![("web-pr-3".into(), DeleteReason::OverCap)]
        );
    }

    #[test]
    fn removing_spec_preview_deletes_every_generated_preview() {
        let with = with_previews(None);
        let (one, two) = (open(1, A, 1, &[]), open(2, B, 1, &[]));
        let (n2, mut terminating) = existing(&with, &two, None, 1);
        terminating.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(ts(5)));
        let owned: BTreeMap<_, _> = [existing(&with, &one, None, 1), (n2, terminating)].into();
        let without = repository(None, &[]);
        let actions = plan(&without, vec![one.clone(), two.clone()], &owned);
        // The one already being deleted is left to its finalizer.
        assert_eq!(
            actions,
            vec![PreviewAction::Delete {
                name: "web-pr-1".into(),
                reason: DeleteReason::PreviewRemoved
            }]
        );
        // With spec.preview, a terminating preview is neither moved nor recreated yet.
        assert_eq!(plan(&with, vec![one, two], &owned), vec![]);
    }

    #[test]
    fn previews_of_prs_not_selected_are_confirmed_with_the_forge() {
        use crate::forge::fake::FakeForge;
        let forge = FakeForge::github();
        forge.open_pull_request(1, A);
        forge.open_pull_request(2, B);
        forge.open_pull_request(3, C);
        forge.state().pull_requests.get_mut(&2).unwrap().state = PullRequestState::Closed;
        forge.state().pull_requests.get_mut(&3).unwrap().state = PullRequestState::Merged;
        let confirm = |n: u64| PreviewAction::ConfirmClosed {
            number: n,
            name: preview_name("web", n),
        };
        let actions = vec![
            confirm(1),
            confirm(2),
            confirm(3),
            PreviewAction::Delete {
                name: "web-pr-9".into(),
                reason: DeleteReason::OverCap,
            },
        ];
        let deletions = futures::executor::block_on(confirm_deletions(&forge, &actions)).unwrap();
        assert_eq!(
            deletions,
            vec![
                ("web-pr-1".into(), DeleteReason::Deselected),
                ("web-pr-2".into(), DeleteReason::Closed),
                ("web-pr-3".into(), DeleteReason::Merged),
                ("web-pr-9".into(), DeleteReason::OverCap),
            ]
        );
        assert_eq!(forge.state().count("get_pull_request"), 3);

        // A forge error is never "closed": nothing at all is deleted, not even the others.
        forge.fail("get_pull_request", || ForgeError::Transient {
            message: "502".into(),
        });
        assert!(futures::executor::block_on(confirm_deletions(&forge, &actions)).is_err());
        forge.heal("get_pull_request");
        // Neither is a pull request the forge does not know.
        let unknown = vec![confirm(42)];
        assert!(matches!(
            futures::executor::block_on(confirm_deletions(&forge, &unknown)),
            Err(ForgeError::NotFound { .. })
        ));
    }

    #[test]
    fn the_summary_says_what_happened() {
        let outcome = PreviewOutcome {
            live: 2,
            over_cap: vec![OverCapPullRequest {
                number: 3,
                head_sha: A.into(),
            }],
            ..Default::default()
        };
        assert_eq!(
            outcome.summary(true).as_deref(),
            Some("2 previews, 1 waiting for a slot (maxPreviews)")
        );
        // spec.preview removed: said as long as any of its previews is still being torn down.
        let removed = PreviewOutcome {
            deleted: vec![("web-pr-1".into(), DeleteReason::PreviewRemoved)],
            terminating: 1,
            ..Default::default()
        };
        assert_eq!(
            removed.summary(false).as_deref(),
            Some("spec.preview removed: 2 previews being deleted")
        );
        assert_eq!(PreviewOutcome::default().summary(false), None);
    }

    #[test]
    fn max_previews_defaults_to_and_stops_at_the_operator_setting() {
        assert_eq!(effective_max_previews(None, 20), 20);
        assert_eq!(effective_max_previews(Some(5), 20), 5);
        assert_eq!(effective_max_previews(Some(1000), 20), 20);
        assert_eq!(effective_max_previews(Some(20), 20), 20);
    }

    #[test]
    fn fork_previews_stay_at_the_approved_head() {
        use crate::api::{ForkApprovalState, ForkApprovalStatus};
        let mut p = pr(4, 1, &[]);
        p.fork = true;
        let (a, b) = ("a".repeat(40), "b".repeat(40));
        p.head_sha = b.clone();
        let mut snapshot = Snapshot {
            default_branch: "main".into(),
            branches: vec![],
            pull_requests: vec![p.clone()],
            fork_approvals: vec![ForkApprovalStatus {
                number: 4,
                head_sha: b.clone(),
                state: ForkApprovalState::WaitingForApproval,
                approved_sha: Some(a.clone()),
                ..Default::default()
            }],
        };
        assert_eq!(preview_heads(&p, &snapshot), (a.clone(), Some(b.clone())));
        snapshot.fork_approvals[0].state = ForkApprovalState::Approved;
        snapshot.fork_approvals[0].approved_sha = Some(b.clone());
        assert_eq!(preview_heads(&p, &snapshot), (b.clone(), None));
        // Not a fork under approval: its own head.
        snapshot.fork_approvals.clear();
        assert_eq!(preview_heads(&p, &snapshot), (b, None));
    }

    #[test]
    fn preview_names_are_valid_and_bounded() {
        assert_eq!(preview_name("web", 7), "web-pr-7");
        let long = "a".repeat(300);
        let name = preview_name(&long, 12345);
        assert!(name.len() <= 253);
        assert!(name.ends_with("-pr-12345"));
    }

    #[test]
    fn template_paths_cannot_escape() {
        let mut t: PreviewTemplate = serde_yaml::from_str("path: deploy/preview").unwrap();
        assert!(validate_template(&t).is_ok());
        t.path = "deploy/../../etc".into();
        assert!(validate_template(&t).unwrap_err().contains(".."));
    }
}
