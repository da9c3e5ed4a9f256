//! Repository → PreviewEnvironment: one preview per selected pull request.
//!
//! Creation and head moves are server-side applies (field manager `pullwarden.dev/repository`)
//! of previews owned by the Repository. Deletion happens only for a confirmed reason:
//! - the pull request is still open but no longer selected (label removed, became a draft, the
//!   fork policy changed) — known from a complete, successful list of open pull requests;
//! - the pull request is not in the open list and the forge confirms it is closed or merged;
//! - the per-repository cap, oldest idle first, never a preview whose PR carries `keepLabel`.
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
use crate::api::{PreviewEnvironment, PreviewEnvironmentSpec, PreviewTemplate, Repository};
use crate::context::Context;
use crate::error::Error;
use crate::forge::{Forge, PullRequest, PullRequestState};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use tracing::info;

/// Label carrying the owning Repository's name on generated previews.
pub const REPOSITORY_LABEL: &str = "pullwarden.dev/repository";
/// Label carrying the pull request number on generated previews.
pub const PULL_REQUEST_LABEL: &str = "pullwarden.dev/pull-request";

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

/// The pull requests that get a preview under the cap: keep-labelled first, then most recently
/// pushed (updated), at most `cap`.
pub fn capped<'a>(
    selected: &'a [PullRequest],
    cap: Option<u32>,
    keep_label: &str,
) -> Vec<&'a PullRequest> {
    let mut prs: Vec<&PullRequest> = selected.iter().collect();
    prs.sort_by(|a, b| {
        let ka = a.labels.iter().any(|l| l == keep_label);
        let kb = b.labels.iter().any(|l| l == keep_label);
        kb.cmp(&ka)
            .then(b.updated_at.cmp(&a.updated_at))
            .then(a.number.cmp(&b.number))
    });
    if let Some(cap) = cap {
        let keep = prs
            .iter()
            .filter(|p| p.labels.iter().any(|l| l == keep_label))
            .count();
        prs.truncate((cap as usize).max(keep));
    }
    prs
}

/// Why an existing preview is to be deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeleteReason {
    Deselected,
    Closed,
    Merged,
    OverCap,
}

impl DeleteReason {
    fn as_str(&self) -> &'static str {
        match self {
            DeleteReason::Deselected => "no longer selected",
            DeleteReason::Closed => "pull request closed",
            DeleteReason::Merged => "pull request merged",
            DeleteReason::OverCap => "over the maxPreviews cap",
        }
    }
}

/// Creates, moves and deletes this Repository's previews (`owned`: from [`owned_previews`]).
/// Returns a one-line summary.
pub async fn reconcile_previews(
    ctx: &Context,
    repo: &Repository,
    forge: &dyn Forge,
    snapshot: &Snapshot,
    owned: &BTreeMap<u64, PreviewEnvironment>,
) -> Result<String, Error> {
    let Some(preview) = &repo.spec.preview else {
        return Ok(String::new());
    };
    let namespace = repo.namespace().unwrap_or_default();
    let repo_name = repo.name_any();
    let api: Api<PreviewEnvironment> = Api::namespaced(ctx.client.clone(), &namespace);

    let cap = effective_max_previews(
        preview.max_previews,
        ctx.config.settings.previews.default_max_previews,
    );
    let wanted = capped(
        &snapshot.pull_requests,
        Some(cap),
        &preview.template.keep_label,
    );
    let wanted_numbers: BTreeSet<u64> = wanted.iter().map(|p| p.number).collect();
    let open_numbers: BTreeSet<u64> = snapshot.pull_requests.iter().map(|p| p.number).collect();

    // Decide deletions first, confirming with the forge; any error aborts before anything is
    // deleted.
    let mut deletions: Vec<(String, DeleteReason)> = Vec::new();
    for (number, pe) in owned {
        if wanted_numbers.contains(number) {
            continue;
        }
        let reason = if open_numbers.contains(number) {
            DeleteReason::OverCap
        } else {
            match forge.get_pull_request(*number).await?.state {
                PullRequestState::Closed => DeleteReason::Closed,
                PullRequestState::Merged => DeleteReason::Merged,
                // Open but not in the selected list: its labels, draft state or fork policy
                // no longer qualify.
                PullRequestState::Open => DeleteReason::Deselected,
            }
        };
        deletions.push((pe.name_any(), reason));
    }

    let owner = repo
        .controller_owner_ref(&())
        .ok_or_else(|| Error::Internal("repository has no uid".into()))?;
    let params = PatchParams::apply(&Context::field_manager("repository")).force();
    for pr in &wanted {
        let name = preview_name(&repo_name, pr.number);
        let (head_sha, unapproved_head_sha) = preview_heads(pr, snapshot);
        let spec = PreviewEnvironmentSpec {
            repository_ref: crate::api::LocalObjectReference {
                name: repo_name.clone(),
            },
            pull_request: Some(pr.number),
            branch: None,
            head_sha: Some(head_sha),
            unapproved_head_sha,
            template: preview.template.clone(),
            suspend: false,
        };
        let unchanged = owned.get(&pr.number).is_some_and(|pe| pe.spec == spec);
        if unchanged {
            continue;
        }
        let body = json!({
            "apiVersion": PreviewEnvironment::api_version(&()),
            "kind": PreviewEnvironment::kind(&()),
            "metadata": {
                "name": name,
                "labels": { REPOSITORY_LABEL: repo_name, PULL_REQUEST_LABEL: pr.number.to_string() },
                "ownerReferences": [owner],
            },
            "spec": spec,
        });
        api.patch(&name, &params, &Patch::Apply(&body)).await?;
        info!(preview = %name, sha = ?spec.head_sha, unapproved = ?spec.unapproved_head_sha, "preview applied");
    }
    for (name, reason) in &deletions {
        info!(preview = %name, reason = reason.as_str(), "deleting preview");
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(format!("{} previews", wanted.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pr(number: u64, updated: i64, labels: &[&str]) -> PullRequest {
        PullRequest {
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

    #[test]
    fn cap_keeps_newest_and_never_drops_keep_labelled() {
        let prs = vec![
            pr(1, 10, &[]),
            pr(2, 30, &[]),
            pr(3, 5, &["keep-preview"]),
            pr(4, 20, &[]),
        ];
        let kept: Vec<u64> = capped(&prs, Some(2), "keep-preview")
            .iter()
            .map(|p| p.number)
            .collect();
        assert_eq!(kept, vec![3, 2]);
        let all: Vec<u64> = capped(&prs, None, "keep-preview")
            .iter()
            .map(|p| p.number)
            .collect();
        assert_eq!(all.len(), 4);
        // More keep-labelled previews than the cap: all of them stay.
        let keeps = vec![pr(1, 1, &["k"]), pr(2, 2, &["k"])];
        assert_eq!(capped(&keeps, Some(1), "k").len(), 2);
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
