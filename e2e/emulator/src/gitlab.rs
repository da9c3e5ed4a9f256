//! The GitLab REST API (`/api/v4`).
//!
//! Flow: [`ROUTES`] → [`dispatch`]. Projects are addressed by numeric id or URL-encoded full
//! path (`group%2Fsub%2Fproject`), decoded by the router after matching one segment. Merge
//! requests are the emulator's pull requests (iid = number); notes are its comments;
//! approvals are the latest `APPROVED` review per user; environments are implied by deployments
//! (a stop marks one `stopped` until its next deployment).
//!
//! Documented bodies. Every response GitLab's REST docs give an example for
//! (`test-data/gitlab/rest`, listed in its `index.json`) is built from that example by
//! `conform`: the body has exactly the example's keys, at the top level and in every nested
//! object and list element (users, `pipeline`/`head_pipeline` with `detailed_status`,
//! `diff_refs`, `references`, a branch's `commit`, approval `rules`, ...). A key the emulator
//! models carries the live value. A key it does not model keeps the example's value only when
//! that is a boolean or `null` (flags and absent metadata, e.g. `imported`, `discussion_locked`;
//! the builders set every flag whose example value would mislead, such as
//! `merge_when_pipeline_succeeds`), is `null` where GitLab sends `null` when it has nothing
//! ([`nullable`]), and otherwise gets a neutral value of the example's type (`0`, `""`, `[]`):
//! no example string, number or URL reaches a client. Live keys the example lacks are dropped.
//! Documented: list and get merge requests, MR diffs, `approvals`, `approval_state`, notes (the
//! documented note object, for list, get, create and edit), branches (list and single), a single
//! commit, commit statuses (list and post).
//!
//! The unit tests (`gitlab/tests.rs`) call each of them on a live project and compare the body
//! with the example file: keys, JSON types, live values, no example URL or SHA, and no key
//! served neutral.
//!
//! Hand-built (the docs give no example, so their shapes are unchecked): `/user`, `/users?username=`,
//! `/projects/:id`, MR `commits`, `versions`, `resource_label_events`, group members, a
//! commit's `signature`, deployments and environments.
//!
//! Pipelines. GitLab files the external statuses of one commit and ref under one pipeline
//! (created by the first of them, source `external`) whose status is the composite of the
//! latest status per name. The emulator derives those pipelines from the statuses ([`Pipeline`]:
//! id = its first status's id, iid = creation order in the project) and serves them as a merge
//! request's `pipeline`/`head_pipeline` and a commit's `last_pipeline`/`status`.
use std::collections::{BTreeMap, HashSet};
use std::sync::LazyLock;

use http::StatusCode;
use serde_json::{Value, json};

use super::auth::{Identity, can_see};
use super::data::{self, PrFacts};
use super::git::CommitInfo;
use super::model::{Forge, StatusSpec};
use super::ops;
use super::reply::{ApiRequest, Reply, merge, paginate};
use super::router::{Route, routes};
use super::state::{
    Deployment, DeploymentStatus, Pull, Repo, Shared, State, Status, User, ZERO_SHA, iso_ms, now,
};

/// Handler tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum H {
    User,
    Project,
    Mrs,
    Users,
    Mr,
    MrDiffs,
    MrApprovals,
    MrApprovalState,
    MrCommits,
    MrVersions,
    MrLabelEvents,
    GroupMember,
    Notes,
    CreateNote,
    Note,
    UpdateNote,
    Branches,
    Branch,
    Commit,
    CommitSignature,
    CommitStatuses,
    CreateStatus,
    CreateDeployment,
    Deployments,
    Deployment,
    UpdateDeployment,
    Environments,
    UpdateEnvironment,
    StopEnvironment,
}

/// The implemented GitLab endpoints (relative to `/api/v4`).
pub static ROUTES: &[Route<H>] = routes![
    H;
    "GET" "/user" => User,
    "GET" "/users" => Users,
    "GET" "/projects/{id}" => Project,
    "GET" "/projects/{id}/merge_requests" => Mrs,
    "GET" "/projects/{id}/merge_requests/{iid}" => Mr,
    "GET" "/projects/{id}/merge_requests/{iid}/diffs" => MrDiffs,
    "GET" "/projects/{id}/merge_requests/{iid}/approvals" => MrApprovals,
    "GET" "/projects/{id}/merge_requests/{iid}/approval_state" => MrApprovalState,
    "GET" "/projects/{id}/merge_requests/{iid}/commits" => MrCommits,
    "GET" "/projects/{id}/merge_requests/{iid}/versions" => MrVersions,
    "GET" "/projects/{id}/merge_requests/{iid}/resource_label_events" => MrLabelEvents,
    "GET" "/groups/{id}/members/all/{user_id}" => GroupMember,
    "GET" "/projects/{id}/merge_requests/{iid}/notes" => Notes,
    "POST" "/projects/{id}/merge_requests/{iid}/notes" => CreateNote,
    "GET" "/projects/{id}/merge_requests/{iid}/notes/{note_id}" => Note,
    "PUT" "/projects/{id}/merge_requests/{iid}/notes/{note_id}" => UpdateNote,
    "GET" "/projects/{id}/repository/branches" => Branches,
    "GET" "/projects/{id}/repository/branches/{branch*}" => Branch,
    "GET" "/projects/{id}/repository/commits/{sha*}/statuses" => CommitStatuses,
    "GET" "/projects/{id}/repository/commits/{sha*}/signature" => CommitSignature,
    "GET" "/projects/{id}/repository/commits/{sha*}" => Commit,
    "POST" "/projects/{id}/statuses/{sha}" => CreateStatus,
    "POST" "/projects/{id}/deployments" => CreateDeployment,
    "GET" "/projects/{id}/deployments" => Deployments,
    "GET" "/projects/{id}/deployments/{deployment_id}" => Deployment,
    "PUT" "/projects/{id}/deployments/{deployment_id}" => UpdateDeployment,
    "GET" "/projects/{id}/environments" => Environments,
    "PUT" "/projects/{id}/environments/{environment_id}" => UpdateEnvironment,
    "POST" "/projects/{id}/environments/{environment_id}/stop" => StopEnvironment,
];

/// The documented example responses (`test-data/gitlab/rest`), by file name.
fn examples() -> &'static BTreeMap<&'static str, Value> {
    static EXAMPLES: LazyLock<BTreeMap<&'static str, Value>> = LazyLock::new(|| {
        let raw: [(&str, &str); 11] = [
            (
                "list-project-merge-requests.json",
                include_str!("../../../test-data/gitlab/rest/list-project-merge-requests.json"),
            ),
            (
                "get-single-merge-request.json",
                include_str!("../../../test-data/gitlab/rest/get-single-merge-request.json"),
            ),
            (
                "list-merge-request-diffs.json",
                include_str!("../../../test-data/gitlab/rest/list-merge-request-diffs.json"),
            ),
            (
                "get-merge-request-approvals.json",
                include_str!("../../../test-data/gitlab/rest/get-merge-request-approvals.json"),
            ),
            (
                "get-merge-request-approval-state.json",
                include_str!(
                    "../../../test-data/gitlab/rest/get-merge-request-approval-state.json"
                ),
            ),
            (
                "post-commit-status.json",
                include_str!("../../../test-data/gitlab/rest/post-commit-status.json"),
            ),
            (
                "list-commit-statuses.json",
                include_str!("../../../test-data/gitlab/rest/list-commit-statuses.json"),
            ),
            (
                "get-single-commit.json",
                include_str!("../../../test-data/gitlab/rest/get-single-commit.json"),
            ),
            (
                "create-merge-request-note.json",
                include_str!("../../../test-data/gitlab/rest/create-merge-request-note.json"),
            ),
            (
                "list-branches.json",
                include_str!("../../../test-data/gitlab/rest/list-branches.json"),
            ),
            (
                "get-single-branch.json",
                include_str!("../../../test-data/gitlab/rest/get-single-branch.json"),
            ),
        ];
        raw.iter()
            .map(|(name, text)| {
                let mut v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
                for (example, key, like) in SAME_AS {
                    if example == name {
                        let item = if v.is_array() { &mut v[0] } else { &mut v };
                        let model = item[*like].clone();
                        item[*key] = model;
                    }
                }
                (*name, v)
            })
            .collect()
    });
    &EXAMPLES
}

/// Keys an example shows as `null` although GitLab sends an object there when it has one, of
/// the same entity as another key of the example (`UserBasic` for all of these): the emulator
/// shapes that object like the other key. (example, key, shaped like).
const SAME_AS: &[(&str, &str, &str)] = &[
    ("list-project-merge-requests.json", "closed_by", "author"),
    ("get-single-merge-request.json", "merged_by", "author"),
    ("get-single-merge-request.json", "merge_user", "author"),
    ("get-single-merge-request.json", "closed_by", "author"),
];

/// Merge-request keys that are `null` when the merge request has none although an example
/// shows a value: merge facts while unmerged, an unset `merge_after`, no assignee or
/// milestone, the unset project defaults, and no pipeline (its timings while it runs).
const MR_NULLABLE: &[&str] = &[
    "merged_by",
    "merge_user",
    "merged_at",
    "merge_after",
    "assignee",
    "milestone",
    "should_remove_source_branch",
    "approvals_before_merge",
    "latest_build_started_at",
    "pipeline",
    "head_pipeline",
    "head_pipeline.started_at",
    "head_pipeline.finished_at",
    "head_pipeline.duration",
    "head_pipeline.queued_duration",
];

/// Paths (dot-separated; list elements are transparent) of an example whose value is `null`
/// when GitLab has nothing for it, although the example shows a value. Tests accept `null`
/// there; `conform` uses `null` for such keys the emulator does not model.
pub fn nullable(example: &str) -> &'static [&'static str] {
    match example {
        "list-project-merge-requests.json" | "get-single-merge-request.json" => MR_NULLABLE,
        // A commit without pipelines.
        "get-single-commit.json" => &["last_pipeline", "status"],
        // A status posted without a description, URL, coverage or ref; a running one.
        "post-commit-status.json" => &["coverage", "finished_at"],
        "list-commit-statuses.json" => &["target_url", "ref"],
        _ => &[],
    }
}

/// The documented example `name`, with the [`SAME_AS`] substitutions (tests read the files).
fn template(name: &str) -> &'static Value {
    examples().get(name).unwrap_or(&Value::Null)
}

/// `live` shaped like the documented example `name` (the rule is in the module doc).
fn conform(name: &str, live: Value) -> Value {
    let mut neutral = Vec::new();
    let v = shape(template(name), Some(live), "", nullable(name), &mut neutral);
    record_neutral(name, neutral);
    v
}

/// Items of a documented list, each shaped like the example's first element.
fn conform_items(name: &str, items: Vec<Value>) -> Vec<Value> {
    let first = &template(name)[0];
    let mut neutral = Vec::new();
    let out = items
        .into_iter()
        .map(|v| shape(first, Some(v), "", nullable(name), &mut neutral))
        .collect();
    record_neutral(name, neutral);
    out
}

/// Documented keys that got a neutral value (unit tests require none: every key of the
/// examples that is not a flag or null-able is modelled).
#[cfg(test)]
static NEUTRAL: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn record_neutral(name: &str, paths: Vec<String>) {
    #[cfg(test)]
    NEUTRAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .extend(paths.into_iter().map(|p| format!("{name}: {p}")));
    #[cfg(not(test))]
    let _ = (name, paths);
}

/// `example`'s keys with `live`'s values; `neutral` collects the paths that got a neutral value.
fn shape(
    example: &Value,
    live: Option<Value>,
    path: &str,
    nullable: &[&str],
    neutral: &mut Vec<String>,
) -> Value {
    match (example, live) {
        (Value::Object(keys), Some(Value::Object(mut live))) => Value::Object(
            keys.iter()
                .map(|(k, ex)| {
                    let v = live.remove(k);
                    // Scalars need no path (it names only keys shaped or filled below).
                    let p = match &v {
                        Some(Value::Object(_) | Value::Array(_)) | None if !path.is_empty() => {
                            format!("{path}.{k}")
                        }
                        Some(Value::Object(_) | Value::Array(_)) | None => k.clone(),
                        Some(_) => String::new(),
                    };
                    (k.clone(), shape(ex, v, &p, nullable, neutral))
                })
                .collect(),
        ),
        (Value::Array(ex), Some(Value::Array(live))) => match ex.first() {
            Some(first @ Value::Object(_)) => Value::Array(
                live.into_iter()
                    .map(|v| shape(first, Some(v), path, nullable, neutral))
                    .collect(),
            ),
            _ => Value::Array(live),
        },
        (_, Some(v)) => v,
        (_, None) if nullable.contains(&path) => Value::Null,
        (Value::Null | Value::Bool(_), None) => example.clone(),
        (Value::Object(_), None) => shape(example, Some(json!({})), path, nullable, neutral),
        (ex, None) => {
            neutral.push(path.to_string());
            match ex {
                Value::Number(_) => json!(0),
                Value::String(_) => json!(""),
                _ => json!([]),
            }
        }
    }
}

/// A pipeline implied by external commit statuses (see the module doc).
#[derive(Debug)]
pub struct Pipeline<'a> {
    pub id: u64,
    pub iid: u64,
    pub sha: &'a str,
    pub git_ref: Option<&'a str>,
    /// Its statuses, oldest first (never empty).
    pub statuses: Vec<&'a Status>,
}

impl Pipeline<'_> {
    /// GitLab's composite status over the latest status per name
    /// (`Gitlab::Ci::Status::Composite`, without manual/scheduled jobs).
    pub fn status(&self) -> &'static str {
        let mut latest: Vec<&Status> = Vec::new();
        for s in &self.statuses {
            latest.retain(|x| x.context != s.context);
            latest.push(s);
        }
        let states: Vec<&str> = latest
            .iter()
            .map(|s| match s.state.as_str() {
                "failure" | "error" => "failed",
                other => other,
            })
            .collect();
        let only = |allowed: &[&str]| states.iter().all(|s| allowed.contains(s));
        let any = |wanted: &[&str]| states.iter().any(|s| wanted.contains(s));
        if only(&["skipped"]) {
            "skipped"
        } else if only(&["success", "skipped"]) {
            "success"
        } else if only(&["created"]) {
            "created"
        } else if only(&["canceled", "success", "skipped"]) {
            "canceled"
        } else if only(&["pending", "created", "skipped"]) {
            "pending"
        } else if any(&["running", "pending", "created"]) {
            "running"
        } else {
            "failed"
        }
    }
}

/// The pipelines of one commit, oldest first.
pub fn pipelines_for<'a>(repo: &'a Repo, sha: &str) -> Vec<Pipeline<'a>> {
    let mut seen: HashSet<(&str, Option<&str>)> = HashSet::new();
    let mut out: Vec<Pipeline<'a>> = Vec::new();
    for s in &repo.statuses {
        let first = seen.insert((s.sha.as_str(), s.git_ref.as_deref()));
        if s.sha != sha {
            continue;
        }
        if first {
            out.push(Pipeline {
                id: s.id,
                iid: seen.len() as u64,
                sha: &s.sha,
                git_ref: s.git_ref.as_deref(),
                statuses: vec![s],
            });
        } else if let Some(p) = out.iter_mut().find(|p| p.git_ref == s.git_ref.as_deref()) {
            p.statuses.push(s);
        }
    }
    out
}

/// The head pipeline of a merge request: the newest pipeline of its head commit on its source
/// branch (or on any ref when none is).
fn head_pipeline<'a>(repo: &'a Repo, pr: &Pull) -> Option<Pipeline<'a>> {
    let mut all = pipelines_for(repo, &pr.head_sha);
    let i = all
        .iter()
        .rposition(|p| p.git_ref == Some(pr.head_ref.as_str()))
        .or_else(|| all.len().checked_sub(1))?;
    Some(all.swap_remove(i))
}

/// A pipeline with every key GitLab's pipeline entities have (basic and detailed).
fn pipeline_json(st: &State, base: &str, repo: &Repo, p: &Pipeline) -> Value {
    let status = p.status();
    let created = p.statuses[0].created_at;
    let updated = p
        .statuses
        .iter()
        .map(|s| s.updated_at)
        .max()
        .unwrap_or(created);
    let started = p
        .statuses
        .iter()
        .filter(|s| !matches!(s.state.as_str(), "pending" | "created"))
        .map(|s| s.created_at)
        .min();
    let finished =
        matches!(status, "success" | "failed" | "canceled" | "skipped").then_some(updated);
    let label = if status == "success" {
        "passed"
    } else {
        status
    };
    let details = format!("/{}/-/pipelines/{}", repo.path, p.id);
    json!({
        "id": p.id, "iid": p.iid, "project_id": repo.id, "sha": p.sha, "ref": p.git_ref,
        "status": status, "source": "external",
        "created_at": iso_ms(created), "updated_at": iso_ms(updated), "web_url": format!("{base}{details}"),
        "before_sha": ZERO_SHA, "tag": false, "yaml_errors": null,
        "user": user_live(base, &st.user_ro(&p.statuses[0].creator)),
        "started_at": started.map(iso_ms), "finished_at": finished.map(iso_ms), "committed_at": null,
        "duration": started.zip(finished).map(|(s, f)| f - s),
        "queued_duration": started.map(|s| s - created), "coverage": null,
        "detailed_status": {
            "icon": format!("status_{status}"), "text": label, "label": label, "group": status,
            "tooltip": label, "has_details": true, "details_path": details, "illustration": null,
            "favicon": format!("/assets/ci_favicons/favicon_status_{status}.png"),
        },
        "archived": false,
    })
}

/// A user with every key GitLab's user entities in the documented examples have (the
/// emulator does not model a user's creation time: the epoch, as `/user` says).
fn user_live(base: &str, u: &User) -> Value {
    merge([
        user_json(base, u),
        json!({"email": u.email, "created_at": iso_ms(0)}),
    ])
}

/// GitLab's "basic user".
pub fn user_json(base: &str, u: &User) -> Value {
    json!({
        "id": u.id, "username": u.login, "name": u.name, "state": "active", "locked": false,
        "avatar_url": format!("{base}/uploads/-/system/user/avatar/{}/avatar.png", u.id),
        "web_url": format!("{base}/{}", u.login),
    })
}

/// The user object in hook payloads.
pub fn hook_user_json(base: &str, u: &User) -> Value {
    json!({
        "id": u.id, "name": u.name, "username": u.login,
        "avatar_url": format!("{base}/uploads/-/system/user/avatar/{}/avatar.png", u.id), "email": u.email,
    })
}

/// Hook timestamps (`2015-05-17 18:21:36 UTC`).
pub fn hook_time(ts: i64) -> String {
    jiff::Timestamp::from_second(ts)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

/// The project object in hook payloads.
pub fn project_hook_json(base: &str, repo: &Repo) -> Value {
    let host = base.trim_start_matches("http://");
    json!({
        "id": repo.id, "name": repo.name, "description": repo.description.clone().unwrap_or_default(),
        "web_url": format!("{base}/{}", repo.path), "avatar_url": null,
        "git_ssh_url": format!("git@{host}:{}.git", repo.path), "git_http_url": format!("{base}/{}.git", repo.path),
        "namespace": repo.owner, "visibility_level": if repo.private { 0 } else { 20 },
        "path_with_namespace": repo.path, "default_branch": repo.default_branch, "ci_config_path": "",
        "homepage": format!("{base}/{}", repo.path), "url": format!("{base}/{}.git", repo.path),
        "ssh_url": format!("git@{host}:{}.git", repo.path), "http_url": format!("{base}/{}.git", repo.path),
    })
}

/// A label in hook payloads.
pub fn label_json(repo: &Repo, name: &str) -> Value {
    let l = repo.labels.get(name);
    json!({
        "id": l.map_or(0, |l| l.id), "title": name,
        "color": format!("#{}", l.map_or("ededed", |l| l.color.as_str())), "project_id": repo.id,
        "created_at": iso_ms(repo.created_at), "updated_at": iso_ms(repo.created_at), "template": false,
        "description": l.and_then(|l| l.description.clone()), "type": "ProjectLabel", "group_id": null,
    })
}

fn mr_state(pr: &Pull) -> (&'static str, u8) {
    if pr.merged {
        ("merged", 3)
    } else if pr.open {
        ("opened", 1)
    } else {
        ("closed", 2)
    }
}

/// `object_attributes` of a Merge Request Hook (also `merge_request` of a Note Hook).
pub fn mr_hook_attributes(
    st: &State,
    base: &str,
    repo: &Repo,
    pr: &Pull,
    facts: &PrFacts,
) -> Value {
    let author = st.user_ro(&pr.author);
    let head_repo = st.repos.get(&pr.head_repo).unwrap_or(repo);
    let (state, state_id) = mr_state(pr);
    let last = facts.commits.last();
    merge([
        json!({
            "id": pr.id, "iid": pr.number, "target_branch": pr.base_ref, "source_branch": pr.head_ref,
            "source_project_id": head_repo.id, "author_id": author.id, "assignee_ids": [], "assignee_id": null,
            "reviewer_ids": [], "title": pr.title,
            "created_at": hook_time(pr.created_at), "updated_at": hook_time(pr.updated_at),
            "last_edited_at": null, "last_edited_by_id": null, "milestone_id": null,
            "state_id": state_id, "state": state, "blocking_discussions_resolved": true,
            "work_in_progress": pr.draft, "draft": pr.draft, "first_contribution": false,
        }),
        json!({
            "merge_status": "can_be_merged", "target_project_id": repo.id, "description": pr.body,
            "prepared_at": hook_time(pr.created_at), "total_time_spent": 0, "time_change": 0,
            "human_total_time_spent": null, "human_time_change": null, "human_time_estimate": null,
            "url": format!("{base}/{}/-/merge_requests/{}", repo.path, pr.number),
            "source": project_hook_json(base, head_repo), "target": project_hook_json(base, repo),
            "last_commit": last.map_or(Value::Null, |c| json!({
                "id": c.sha, "message": c.message, "title": c.title(), "timestamp": super::state::iso(c.committer_time),
                "url": format!("{base}/{}/-/commit/{}", repo.path, c.sha),
                "author": {"name": c.author_name, "email": c.author_email},
            })),
            "labels": pr.labels.iter().map(|l| label_json(repo, l)).collect::<Vec<_>>(),
            "detailed_merge_status": detailed_merge_status(pr),
            "merge_commit_sha": pr.merge_commit_sha,
        }),
    ])
}

fn detailed_merge_status(pr: &Pull) -> &'static str {
    if !pr.open {
        "not_open"
    } else if pr.draft {
        "draft_status"
    } else {
        "mergeable"
    }
}

/// `GET /projects/:id`.
pub fn project_json(st: &State, base: &str, repo: &Repo) -> Value {
    let host = base.trim_start_matches("http://");
    let owner = st.user_ro(&repo.owner);
    let namespace = &repo.path[..repo.path.len() - repo.name.len() - 1];
    let api = format!("{base}/api/v4/projects/{}", repo.id);
    merge([
        json!({
            "id": repo.id, "description": repo.description, "name": repo.name,
            "name_with_namespace": repo.path.replace('/', " / "), "path": repo.name, "path_with_namespace": repo.path,
            "created_at": iso_ms(repo.created_at), "default_branch": repo.default_branch, "tag_list": [], "topics": [],
            "ssh_url_to_repo": format!("git@{host}:{}.git", repo.path), "http_url_to_repo": format!("{base}/{}.git", repo.path),
            "web_url": format!("{base}/{}", repo.path), "readme_url": format!("{base}/{}/-/blob/{}/README.md", repo.path, repo.default_branch),
            "avatar_url": null, "forks_count": 0, "star_count": 0, "last_activity_at": iso_ms(repo.updated_at),
            "namespace": {
                "id": owner.id, "name": namespace, "path": namespace.rsplit('/').next().unwrap_or(namespace),
                "kind": if namespace.contains('/') || owner.kind == "Organization" { "group" } else { "user" },
                "full_path": namespace, "parent_id": null, "avatar_url": null, "web_url": format!("{base}/{namespace}"),
            },
        }),
        json!({
            "container_registry_image_prefix": format!("{host}/{}", repo.path),
            "_links": {
                "self": api, "issues": format!("{api}/issues"), "merge_requests": format!("{api}/merge_requests"),
                "repo_branches": format!("{api}/repository/branches"), "labels": format!("{api}/labels"),
                "events": format!("{api}/events"), "members": format!("{api}/members"),
                "cluster_agents": format!("{api}/cluster_agents"),
            },
            "packages_enabled": false, "empty_repo": repo.branches.is_empty(), "archived": false,
            "visibility": if repo.private { "private" } else { "public" },
        }),
        json!({
            "resolve_outdated_diff_discussions": false, "issues_enabled": true, "merge_requests_enabled": true,
            "wiki_enabled": false, "jobs_enabled": true, "snippets_enabled": false,
            "container_registry_enabled": false, "service_desk_enabled": false,
            "can_create_merge_request_in": true, "issues_access_level": "enabled", "repository_access_level": "enabled",
            "merge_requests_access_level": "enabled", "forking_access_level": "enabled", "builds_access_level": "enabled",
        }),
        json!({
            "shared_runners_enabled": true, "lfs_enabled": false, "creator_id": owner.id,
            "import_status": "none", "open_issues_count": 0, "ci_default_git_depth": 20,
            "public_jobs": true, "ci_config_path": null, "shared_with_groups": [],
            "only_allow_merge_if_pipeline_succeeds": false, "allow_merge_on_skipped_pipeline": null,
            "request_access_enabled": true, "only_allow_merge_if_all_discussions_are_resolved": false,
            "remove_source_branch_after_merge": true, "printing_merge_request_link_enabled": true,
            "merge_method": "merge", "squash_option": "default_off", "autoclose_referenced_issues": true,
            "permissions": {"project_access": {"access_level": 40, "notification_level": 3}, "group_access": null},
        }),
    ])
}

/// A merge request with every key of the documented list and single examples; [`conform`]
/// keeps the ones each example has. `head` is the head pipeline (single merge request only).
fn mr_live(
    st: &State,
    base: &str,
    repo: &Repo,
    pr: &Pull,
    facts: &PrFacts,
    head: Option<&Pipeline>,
) -> Value {
    let head_repo = st.repos.get(&pr.head_repo).unwrap_or(repo);
    let (state, _) = mr_state(pr);
    let user = |login: &str| user_live(base, &st.user_ro(login));
    let notes = repo
        .comments
        .iter()
        .filter(|c| c.number == pr.number)
        .count();
    let merged_by = pr.merged_by.as_deref().map_or(Value::Null, user);
    let pipeline = head.map_or(Value::Null, |p| pipeline_json(st, base, repo, p));
    let started = pipeline.get("started_at").cloned().unwrap_or(Value::Null);
    let finished = pipeline.get("finished_at").cloned().unwrap_or(Value::Null);
    merge([
        json!({
            "id": pr.id, "iid": pr.number, "project_id": repo.id, "title": pr.title, "description": pr.body,
            "state": state, "imported": false, "imported_from": "none",
            "created_at": iso_ms(pr.created_at), "updated_at": iso_ms(pr.updated_at),
            "merged_by": merged_by, "merge_user": merged_by, "merged_at": pr.merged_at.map(iso_ms),
            "merge_after": null, "prepared_at": iso_ms(pr.created_at),
            "closed_by": if !pr.open && !pr.merged { user(&pr.author) } else { Value::Null },
            "closed_at": if pr.merged { Value::Null } else { json!(pr.closed_at.map(iso_ms)) },
        }),
        json!({
            "target_branch": pr.base_ref, "source_branch": pr.head_ref, "user_notes_count": notes,
            "upvotes": 0, "downvotes": 0, "author": user(&pr.author),
            "assignees": [], "assignee": null, "reviewers": [],
            "source_project_id": head_repo.id, "target_project_id": repo.id,
            "labels": pr.labels, "draft": pr.draft, "work_in_progress": pr.draft, "milestone": null,
            "merge_when_pipeline_succeeds": false, "merge_status": "can_be_merged",
            "detailed_merge_status": detailed_merge_status(pr),
        }),
        json!({
            "sha": pr.head_sha, "merge_commit_sha": pr.merge_commit_sha, "squash_commit_sha": null,
            "discussion_locked": null, "should_remove_source_branch": null, "force_remove_source_branch": false,
            "reference": format!("!{}", pr.number),
            "references": {"short": format!("!{}", pr.number), "relative": format!("!{}", pr.number), "full": format!("{}!{}", repo.path, pr.number)},
            "web_url": format!("{base}/{}/-/merge_requests/{}", repo.path, pr.number),
            "time_stats": {"time_estimate": 0, "total_time_spent": 0, "human_time_estimate": null, "human_total_time_spent": null},
            "squash": false, "squash_on_merge": false, "task_completion_status": {"count": 0, "completed_count": 0},
            "has_conflicts": false, "blocking_discussions_resolved": true, "approvals_before_merge": null,
        }),
        json!({
            "subscribed": false, "changes_count": facts.files.len().to_string(),
            "latest_build_started_at": started, "latest_build_finished_at": finished,
            "first_deployed_to_production_at": null,
            "pipeline": pipeline, "head_pipeline": pipeline,
            "diff_refs": {"base_sha": facts.merge_base, "head_sha": pr.head_sha, "start_sha": facts.base_sha},
            "merge_error": null, "first_contribution": false, "user": {"can_merge": true},
        }),
    ])
}

/// A commit (`stats` when asked). Hand-built for MR `commits`; branches and the single commit
/// shape it like their examples.
pub fn commit_json(base: &str, repo: &Repo, c: &CommitInfo, stats: Option<(u64, u64)>) -> Value {
    let mut v = json!({
        "id": c.sha, "short_id": &c.sha[..8.min(c.sha.len())], "created_at": iso_ms(c.committer_time),
        "parent_ids": c.parents, "title": c.title(), "message": c.message,
        "author_name": c.author_name, "author_email": c.author_email, "authored_date": iso_ms(c.author_time),
        "committer_name": c.committer_name, "committer_email": c.committer_email,
        "committed_date": iso_ms(c.committer_time), "trailers": {}, "extended_trailers": {},
        "web_url": format!("{base}/{}/-/commit/{}", repo.path, c.sha),
    });
    if let (Some((a, d)), Some(m)) = (stats, v.as_object_mut()) {
        m.insert(
            "stats".into(),
            json!({"additions": a, "deletions": d, "total": a + d}),
        );
    }
    v
}

/// A commit status with every key of the documented list and post examples.
fn status_live(st: &State, base: &str, s: &Status) -> Value {
    let finished = matches!(
        s.state.as_str(),
        "success" | "failed" | "canceled" | "skipped"
    );
    json!({
        "id": s.id, "sha": s.sha, "ref": s.git_ref, "status": s.state, "name": s.context,
        "target_url": s.target_url, "description": s.description,
        "created_at": iso_ms(s.created_at), "started_at": if s.state == "pending" { Value::Null } else { json!(iso_ms(s.created_at)) },
        "finished_at": if finished { json!(iso_ms(s.updated_at)) } else { Value::Null },
        "allow_failure": false, "coverage": null,
        "author": user_live(base, &st.user_ro(&s.creator)),
    })
}

/// The documented note object (every note endpoint returns it).
fn note_json(st: &State, base: &str, repo: &Repo, pr: &Pull, c: &super::state::Comment) -> Value {
    conform(
        "create-merge-request-note.json",
        json!({
            "id": c.id, "body": c.body, "attachment": null,
            "author": user_live(base, &st.user_ro(&c.user)),
            "created_at": iso_ms(c.created_at), "updated_at": iso_ms(c.updated_at),
            "system": false, "noteable_id": pr.id, "noteable_type": "MergeRequest", "project_id": repo.id,
            "noteable_iid": pr.number, "resolvable": false, "confidential": false, "internal": false,
        }),
    )
}

/// The latest `APPROVED` review per user who still approves, oldest first.
fn approvers(pr: &Pull) -> Vec<&super::state::Review> {
    let mut latest: Vec<&super::state::Review> = Vec::new();
    for r in &pr.reviews {
        latest.retain(|x| x.user != r.user);
        latest.push(r);
    }
    latest.retain(|r| r.state == "APPROVED");
    latest
}

/// `approval_state` (Premium): the emulator has no approval rules, so the project's implicit
/// "All Members" `any_approver` rule with no required approvals (id = the merge request's);
/// eligible are the approvers and the collaborators who can push.
fn approval_state_live(st: &State, base: &str, repo: &Repo, pr: &Pull) -> Value {
    let approved: Vec<&str> = approvers(pr).iter().map(|r| r.user.as_str()).collect();
    let mut eligible: Vec<&str> = repo
        .collaborators
        .iter()
        .filter(|(_, perm)| !matches!(perm.as_str(), "read" | "pull" | "triage"))
        .map(|(login, _)| login.as_str())
        .collect();
    eligible.extend(approved.iter().copied());
    eligible.sort_unstable();
    eligible.dedup();
    let users = |logins: &[&str]| -> Vec<Value> {
        logins
            .iter()
            .map(|l| user_live(base, &st.user_ro(l)))
            .collect()
    };
    json!({
        "approval_rules_overwritten": false,
        "rules": [{
            "id": pr.id, "name": "All Members", "rule_type": "any_approver",
            "eligible_approvers": users(&eligible), "approvals_required": 0, "users": [], "groups": [],
            "contains_hidden_groups": false, "approved_by": users(&approved), "source_rule": null,
            "approved": true, "overridden": false,
        }],
    })
}

fn env_id(repo: &Repo, name: &str) -> u64 {
    // Environments are implied by deployments; derive a stable id from the first deployment.
    repo.deployments
        .iter()
        .find(|d| d.environment == name)
        .map_or(0, |d| d.id + 500_000)
}

fn environment_json(base: &str, repo: &Repo, name: &str) -> Value {
    let first = repo.deployments.iter().find(|d| d.environment == name);
    let url = repo.environment_url(name);
    let slug: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    json!({
        "id": env_id(repo, name), "name": name, "slug": slug, "external_url": url,
        "state": repo.environment_state(name), "tier": if name.starts_with("prod") { "production" } else { "development" },
        "created_at": first.map(|d| iso_ms(d.created_at)), "updated_at": first.map(|d| iso_ms(d.updated_at)),
        "project_id": repo.id, "web_url": format!("{base}/{}/-/environments/{}", repo.path, env_id(repo, name)),
    })
}

fn deployment_json(st: &State, base: &str, repo: &Repo, d: &Deployment) -> Value {
    let status = d.statuses.last().map_or("created", |s| s.state.as_str());
    json!({
        "id": d.id, "iid": d.iid, "ref": d.git_ref, "sha": d.sha,
        "created_at": iso_ms(d.created_at), "updated_at": iso_ms(d.updated_at), "status": status,
        "user": user_json(base, &st.user_ro(&d.creator)),
        "environment": environment_json(base, repo, &d.environment),
        "deployable": null,
    })
}

fn visible<'a>(st: &'a State, req: &ApiRequest) -> Result<&'a Repo, Reply> {
    match st.repo_by_gitlab_id(req.param("id")) {
        Some(r) if can_see(st, &req.ident, r) => Ok(r),
        _ => Err(Reply::not_found(Forge::Gitlab, "Project")),
    }
}

fn mr<'a>(repo: &'a Repo, req: &ApiRequest) -> Result<&'a Pull, Reply> {
    req.param("iid")
        .parse::<u64>()
        .ok()
        .and_then(|n| repo.pulls.get(&n))
        .ok_or_else(|| Reply::not_found(Forge::Gitlab, "Not found"))
}

fn require_auth(req: &ApiRequest) -> Result<String, Reply> {
    match &req.ident {
        Identity::Token(t) => Ok(t.login.clone()),
        _ => Err(Reply::with(
            StatusCode::UNAUTHORIZED,
            json!({"message": "401 Unauthorized"}),
        )),
    }
}

fn base(req: &ApiRequest) -> String {
    req.web_base()
}

/// Runs one GitLab handler.
pub async fn dispatch(shared: &Shared, h: H, req: &ApiRequest) -> Reply {
    match run(shared, h, req).await {
        Ok(r) | Err(r) => r,
    }
}

async fn run(shared: &Shared, h: H, req: &ApiRequest) -> Result<Reply, Reply> {
    let base = base(req);
    match h {
        H::User => {
            let login = require_auth(req)?;
            let st = shared.state.lock().await;
            let u = st.user_ro(&login);
            let mut v = user_json(&base, &u);
            if let Some(m) = v.as_object_mut() {
                m.insert("created_at".into(), json!(iso_ms(0)));
                m.insert("bio".into(), json!(""));
                m.insert("public_email".into(), json!(u.email));
                m.insert("email".into(), json!(u.email));
                m.insert("is_admin".into(), json!(false));
                m.insert("bot".into(), json!(u.kind == "Bot"));
            }
            Ok(Reply::ok(v))
        }
        H::Users => {
            // `?username=` looks one account up (an empty list when there is none), as GitLab.
            require_auth(req)?;
            let st = shared.state.lock().await;
            let found: Vec<Value> = req
                .q("username")
                .and_then(|name| st.users.get(name))
                .map(|u| user_json(&base, u))
                .into_iter()
                .collect();
            Ok(Reply::ok(json!(found)))
        }
        H::Project => {
            let st = shared.state.lock().await;
            let repo = visible(&st, req)?;
            Ok(Reply::ok(project_json(&st, &base, repo)))
        }
        H::Mrs => {
            let repo = {
                let st = shared.state.lock().await;
                visible(&st, req)?.clone()
            };
            let want = req.q("state").unwrap_or("all");
            let labels: Vec<&str> = req
                .q("labels")
                .map(|l| l.split(',').filter(|s| !s.is_empty()).collect())
                .unwrap_or_default();
            let mut prs: Vec<&Pull> = repo
                .pulls
                .values()
                .filter(|p| want == "all" || mr_state(p).0 == want)
                .filter(|p| req.q("source_branch").is_none_or(|b| b == p.head_ref))
                .filter(|p| req.q("target_branch").is_none_or(|b| b == p.base_ref))
                .filter(|p| labels.iter().all(|l| p.labels.iter().any(|x| x == l)))
                .collect();
            match req.q("order_by").unwrap_or("created_at") {
                "updated_at" => prs.sort_by_key(|p| (p.updated_at, p.number)),
                _ => prs.sort_by_key(|p| p.number),
            }
            if req.q("sort") != Some("asc") {
                prs.reverse();
            }
            // List items carry no diff statistics, so no git work per merge request.
            let st = shared.state.lock().await;
            let items = prs
                .iter()
                .map(|p| mr_live(&st, &base, &repo, p, &data::light_facts(&repo, p), None))
                .collect();
            Ok(paginate(
                req,
                conform_items("list-project-merge-requests.json", items),
            ))
        }
        H::Mr | H::MrDiffs | H::MrCommits | H::MrApprovals | H::MrApprovalState => {
            let (repo, pr) = {
                let st = shared.state.lock().await;
                let repo = visible(&st, req)?.clone();
                let pr = mr(&repo, req)?.clone();
                (repo, pr)
            };
            let facts = data::facts_for(shared, &repo, &pr).await;
            let st = shared.state.lock().await;
            Ok(match h {
                H::Mr => {
                    let head = head_pipeline(&repo, &pr);
                    let live = mr_live(&st, &base, &repo, &pr, &facts, head.as_ref());
                    Reply::ok(conform("get-single-merge-request.json", live))
                }
                H::MrDiffs => {
                    let items = facts
                        .files
                        .iter()
                        .map(|f| {
                            json!({
                                "old_path": f.previous_filename.clone().unwrap_or_else(|| f.filename.clone()),
                                "new_path": f.filename,
                                "a_mode": if f.status == "added" { "0".to_string() } else { f.old_mode.clone() },
                                "b_mode": if f.status == "removed" { "0".to_string() } else { f.new_mode.clone() },
                                "diff": f.patch.as_ref().map(|p| format!("{p}\n")).unwrap_or_default(),
                                "collapsed": false, "too_large": false,
                                "new_file": f.status == "added", "renamed_file": f.status == "renamed",
                                "deleted_file": f.status == "removed", "generated_file": false,
                            })
                        })
                        .collect();
                    paginate(req, conform_items("list-merge-request-diffs.json", items))
                }
                H::MrCommits => paginate(
                    req,
                    facts
                        .commits
                        .iter()
                        .rev()
                        .map(|c| commit_json(&base, &repo, c, None))
                        .collect(),
                ),
                H::MrApprovalState => Reply::ok(conform(
                    "get-merge-request-approval-state.json",
                    approval_state_live(&st, &base, &repo, &pr),
                )),
                _ => {
                    let approved: Vec<Value> = approvers(&pr)
                        .iter()
                        .map(|r| json!({"user": user_live(&base, &st.user_ro(&r.user)), "approved_at": iso_ms(r.submitted_at)}))
                        .collect();
                    let (state, _) = mr_state(&pr);
                    Reply::ok(conform(
                        "get-merge-request-approvals.json",
                        json!({
                            "id": pr.id, "iid": pr.number, "project_id": repo.id, "title": pr.title, "description": pr.body,
                            "state": state, "created_at": iso_ms(pr.created_at), "updated_at": iso_ms(pr.updated_at),
                            "merge_status": "can_be_merged",
                            "approvals_required": 0, "approvals_left": 0, "approved_by": approved,
                        }),
                    ))
                }
            })
        }
        H::MrVersions => {
            // One version per push, newest first, as GitLab lists them.
            let st = shared.state.lock().await;
            let repo = visible(&st, req)?;
            let pr = mr(repo, req)?;
            let items = pr
                .pushes
                .iter()
                .enumerate()
                .rev()
                .map(|(i, (sha, at))| {
                    json!({
                        "id": pr.id * 1000 + i as u64, "head_commit_sha": sha,
                        "created_at": iso_ms(*at), "merge_request_id": pr.id,
                        "state": "collected", "real_size": "1",
                    })
                })
                .collect();
            Ok(paginate(req, items))
        }
        H::MrLabelEvents => {
            let st = shared.state.lock().await;
            let repo = visible(&st, req)?;
            let pr = mr(repo, req)?;
            let items = repo
                .label_changes
                .iter()
                .filter(|e| e.number == pr.number)
                .map(|e| {
                    json!({
                        "id": e.id, "user": user_json(&base, &st.user_ro(&e.user)),
                        "created_at": iso_ms(e.created_at), "resource_type": "MergeRequest",
                        "resource_id": pr.id, "label": {"id": 0, "name": e.label},
                        "action": if e.added { "add" } else { "remove" },
                    })
                })
                .collect();
            Ok(paginate(req, items))
        }
        H::GroupMember => {
            // Groups are the admin API's teams: `org/team` (or a top-level `org`), with the role
            // naming a GitLab access level.
            let st = shared.state.lock().await;
            require_auth(req)?;
            let group = req.param("id");
            let key = match group.split_once('/') {
                Some((org, team)) => (org.to_string(), team.to_string()),
                None => (group.to_string(), String::new()),
            };
            let uid: u64 = req.param("user_id").parse().unwrap_or(0);
            let user = st.users.values().find(|u| u.id == uid);
            let member = user.and_then(|u| st.teams.get(&key)?.get(&u.login).map(|m| (u, m)));
            match member {
                Some((u, m)) => {
                    let level = match m.role.as_str() {
                        "guest" => 10,
                        "reporter" => 20,
                        "maintainer" => 40,
                        "owner" => 50,
                        // `developer`, and GitHub's `member`.
                        _ => 30,
                    };
                    let mut v = user_json(&base, u);
                    if let Some(o) = v.as_object_mut() {
                        o.insert("access_level".into(), json!(level));
                        o.insert("state".into(), json!(m.state));
                    }
                    Ok(Reply::ok(v))
                }
                None => Err(Reply::not_found(Forge::Gitlab, "Member")),
            }
        }
        H::Notes => {
            let st = shared.state.lock().await;
            let repo = visible(&st, req)?;
            let pr = mr(repo, req)?;
            let mut notes: Vec<&super::state::Comment> = repo
                .comments
                .iter()
                .filter(|c| c.number == pr.number)
                .collect();
            if req.q("order_by") == Some("updated_at") {
                notes.sort_by_key(|c| (c.updated_at, c.id));
            }
            if req.q("sort") != Some("asc") {
                notes.reverse();
            }
            Ok(paginate(
                req,
                notes
                    .into_iter()
                    .map(|c| note_json(&st, &base, repo, pr, c))
                    .collect(),
            ))
        }
        H::Note => {
            let st = shared.state.lock().await;
            let repo = visible(&st, req)?;
            let pr = mr(repo, req)?;
            let id: u64 = req.param("note_id").parse().unwrap_or(0);
            let c = repo
                .comments
                .iter()
                .find(|c| c.id == id && c.number == pr.number)
                .ok_or_else(|| Reply::not_found(Forge::Gitlab, "Note"))?;
            Ok(Reply::ok(note_json(&st, &base, repo, pr, c)))
        }
        H::CreateNote | H::UpdateNote => {
            let login = require_auth(req)?;
            let body = req.json()?;
            let Some(text) = body.get("body").and_then(Value::as_str).map(str::to_string) else {
                return Err(Reply::with(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "body is missing"}),
                ));
            };
            let (path, n) = {
                let st = shared.state.lock().await;
                let repo = visible(&st, req)?;
                (repo.path.clone(), mr(repo, req)?.number)
            };
            let c = if h == H::CreateNote {
                ops::add_comment(shared, &path, n, &login, &text).await
            } else {
                let id: u64 = req.param("note_id").parse().unwrap_or(0);
                ops::edit_comment(shared, &path, id, &login, &text).await
            }
            .map_err(|_| Reply::not_found(Forge::Gitlab, "Note"))?;
            let st = shared.state.lock().await;
            let repo = &st.repos[&path];
            let v = note_json(&st, &base, repo, &repo.pulls[&n], &c);
            Ok(if h == H::CreateNote {
                Reply::created(v)
            } else {
                Reply::ok(v)
            })
        }
        H::Branches | H::Branch => {
            let repo = {
                let st = shared.state.lock().await;
                visible(&st, req)?.clone()
            };
            let names: Vec<(String, String)> = if h == H::Branch {
                let b = req.param("branch");
                match repo.branches.get(b) {
                    Some(sha) => vec![(b.to_string(), sha.clone())],
                    None => return Err(Reply::not_found(Forge::Gitlab, "Branch")),
                }
            } else {
                repo.branches
                    .iter()
                    .filter(|(n, _)| req.q("search").is_none_or(|s| n.contains(s)))
                    .map(|(n, s)| (n.clone(), s.clone()))
                    .collect()
            };
            let mut items = Vec::new();
            for (name, sha) in names {
                let Some(ci) = data::commit(shared, &repo.git_dir, &sha).await else {
                    continue;
                };
                items.push(json!({
                    "name": name, "merged": false, "protected": name == repo.default_branch,
                    "default": name == repo.default_branch, "developers_can_push": false, "developers_can_merge": false,
                    "can_push": true, "web_url": format!("{base}/{}/-/tree/{name}", repo.path),
                    "commit": commit_json(&base, &repo, &ci, None),
                }));
            }
            if h == H::Branch {
                let one = items.pop().unwrap_or(Value::Null);
                Ok(Reply::ok(conform("get-single-branch.json", one)))
            } else {
                Ok(paginate(req, conform_items("list-branches.json", items)))
            }
        }
        H::Commit => {
            let repo = {
                let st = shared.state.lock().await;
                visible(&st, req)?.clone()
            };
            let ci = match data::resolve(&repo, req.param("sha")).await {
                Some(sha) => data::commit(shared, &repo.git_dir, &sha).await,
                None => None,
            };
            let ci = ci.ok_or_else(|| Reply::not_found(Forge::Gitlab, "Commit"))?;
            let files = data::commit_files(shared, &repo.git_dir, &ci).await;
            let a = files.iter().map(|f| f.additions).sum();
            let d = files.iter().map(|f| f.deletions).sum();
            let mut live = commit_json(&base, &repo, &ci, Some((a, d)));
            let st = shared.state.lock().await;
            let last = pipelines_for(&repo, &ci.sha).pop();
            live["status"] = json!(last.as_ref().map(Pipeline::status));
            live["last_pipeline"] =
                last.map_or(Value::Null, |p| pipeline_json(&st, &base, &repo, &p));
            Ok(Reply::ok(conform("get-single-commit.json", live)))
        }
        H::CommitSignature => {
            // GitLab answers 404 for an unsigned commit; a verified one gets its GPG facts
            // (the emulator's stand-in key is the committer's).
            let repo = {
                let st = shared.state.lock().await;
                visible(&st, req)?.clone()
            };
            let ci = match data::resolve(&repo, req.param("sha")).await {
                Some(sha) => data::commit(shared, &repo.git_dir, &sha).await,
                None => None,
            };
            let ci = ci.ok_or_else(|| Reply::not_found(Forge::Gitlab, "Commit"))?;
            if !repo.commit_meta.get(&ci.sha).is_some_and(|m| m.verified) {
                return Err(Reply::not_found(Forge::Gitlab, "Signature"));
            }
            Ok(Reply::ok(json!({
                "signature_type": "PGP", "verification_status": "verified",
                "gpg_key_id": repo.id, "gpg_key_primary_keyid": ci.sha[..16.min(ci.sha.len())].to_ascii_uppercase(),
                "gpg_key_user_name": ci.committer_name, "gpg_key_user_email": ci.committer_email,
                "gpg_key_subkey_id": null, "commit_source": "gitaly",
            })))
        }
        H::CommitStatuses => {
            let repo = {
                let st = shared.state.lock().await;
                visible(&st, req)?.clone()
            };
            let sha = data::resolve(&repo, req.param("sha"))
                .await
                .ok_or_else(|| Reply::not_found(Forge::Gitlab, "Commit"))?;
            let st = shared.state.lock().await;
            let mut list = repo.statuses_for(&sha);
            if req.q("all") != Some("true") {
                let mut seen = std::collections::HashSet::new();
                list.retain(|s| seen.insert(s.context.clone()));
            }
            list.retain(|s| req.q("name").is_none_or(|n| n == s.context));
            list.retain(|s| req.q("ref").is_none_or(|r| s.git_ref.as_deref() == Some(r)));
            let items = list
                .into_iter()
                .map(|s| status_live(&st, &base, s))
                .collect();
            Ok(paginate(
                req,
                conform_items("list-commit-statuses.json", items),
            ))
        }
        H::CreateStatus => {
            let login = require_auth(req)?;
            let body = req.json()?;
            let s = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
            let state = s("state").unwrap_or_default();
            if ![
                "pending", "running", "success", "failed", "canceled", "skipped",
            ]
            .contains(&state.as_str())
            {
                return Err(Reply::with(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "state does not have a valid value"}),
                ));
            }
            let path = {
                let st = shared.state.lock().await;
                visible(&st, req)?.path.clone()
            };
            let spec = StatusSpec {
                context: s("name")
                    .or_else(|| s("context"))
                    .unwrap_or_else(|| "default".into()),
                state,
                description: s("description"),
                target_url: s("target_url"),
                user: Some(login),
            };
            let mut status = ops::set_status(shared, &path, req.param("sha"), spec)
                .await
                .map_err(|_| Reply::not_found(Forge::Gitlab, "Commit"))?;
            if let Some(r) = s("ref") {
                let mut st = shared.state.lock().await;
                if let Some(x) = st
                    .repos
                    .get_mut(&path)
                    .and_then(|r| r.statuses.iter_mut().find(|x| x.id == status.id))
                {
                    x.git_ref = Some(r.clone());
                }
                status.git_ref = Some(r);
            }
            let st = shared.state.lock().await;
            Ok(Reply::created(conform(
                "post-commit-status.json",
                status_live(&st, &base, &status),
            )))
        }
        H::CreateDeployment => {
            let login = require_auth(req)?;
            let body = req.json()?;
            let s = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
            let (Some(env), Some(sha), Some(git_ref)) = (s("environment"), s("sha"), s("ref"))
            else {
                return Err(Reply::with(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "environment, sha, ref are missing"}),
                ));
            };
            let status = s("status").unwrap_or_else(|| "created".into());
            if ![
                "created", "running", "success", "failed", "canceled", "blocked",
            ]
            .contains(&status.as_str())
            {
                return Err(Reply::with(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "status does not have a valid value"}),
                ));
            }
            let mut st = shared.state.lock().await;
            let path = visible(&st, req)?.path.clone();
            let id = st.id();
            let sid = st.id();
            let t = now();
            let repo = st
                .repos
                .get_mut(&path)
                .ok_or_else(|| Reply::not_found(Forge::Gitlab, "Project"))?;
            let iid = repo.deployments.len() as u64 + 1;
            repo.stopped_environments.remove(&env);
            repo.deployments.push(Deployment {
                id,
                iid,
                sha,
                git_ref,
                task: "deploy".into(),
                environment: env.clone(),
                description: None,
                payload: json!({}),
                creator: login.clone(),
                transient_environment: false,
                production_environment: env.starts_with("prod"),
                created_at: t,
                updated_at: t,
                statuses: vec![DeploymentStatus {
                    id: sid,
                    state: status,
                    description: String::new(),
                    environment_url: None,
                    log_url: None,
                    creator: login,
                    created_at: t,
                }],
            });
            let repo = &st.repos[&path];
            Ok(Reply::created(deployment_json(
                &st,
                &base,
                repo,
                repo.deployments.last().expect("just pushed"),
            )))
        }
        H::Deployments => {
            let st = shared.state.lock().await;
            let repo = visible(&st, req)?;
            let mut list: Vec<&Deployment> = repo
                .deployments
                .iter()
                .filter(|d| req.q("environment").is_none_or(|e| e == d.environment))
                .filter(|d| {
                    req.q("status")
                        .is_none_or(|s| d.statuses.last().is_some_and(|x| x.state == s))
                })
                .collect();
            if req.q("sort") == Some("desc") {
                list.reverse();
            }
            Ok(paginate(
                req,
                list.into_iter()
                    .map(|d| deployment_json(&st, &base, repo, d))
                    .collect(),
            ))
        }
        H::Deployment => {
            let st = shared.state.lock().await;
            let repo = visible(&st, req)?;
            let id: u64 = req.param("deployment_id").parse().unwrap_or(0);
            let d = repo
                .deployments
                .iter()
                .find(|d| d.id == id)
                .ok_or_else(|| Reply::not_found(Forge::Gitlab, "Deployment"))?;
            Ok(Reply::ok(deployment_json(&st, &base, repo, d)))
        }
        H::UpdateDeployment => {
            let login = require_auth(req)?;
            let body = req.json()?;
            let status = body
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if !["running", "success", "failed", "canceled"].contains(&status.as_str()) {
                return Err(Reply::with(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "status does not have a valid value"}),
                ));
            }
            let mut st = shared.state.lock().await;
            let path = visible(&st, req)?.path.clone();
            let sid = st.id();
            let id: u64 = req.param("deployment_id").parse().unwrap_or(0);
            let repo = st
                .repos
                .get_mut(&path)
                .ok_or_else(|| Reply::not_found(Forge::Gitlab, "Project"))?;
            let d = repo
                .deployments
                .iter_mut()
                .find(|d| d.id == id)
                .ok_or_else(|| Reply::not_found(Forge::Gitlab, "Deployment"))?;
            d.updated_at = now();
            d.statuses.push(DeploymentStatus {
                id: sid,
                state: status,
                description: String::new(),
                environment_url: None,
                log_url: None,
                creator: login,
                created_at: now(),
            });
            let repo = &st.repos[&path];
            let d = repo
                .deployments
                .iter()
                .find(|d| d.id == id)
                .expect("found above");
            Ok(Reply::ok(deployment_json(&st, &base, repo, d)))
        }
        H::UpdateEnvironment | H::StopEnvironment => {
            // Environments are implied by deployments: `external_url` is kept on the newest
            // deployment of the environment, as a status carrying the URL; stopping marks the
            // environment `stopped` until its next deployment (an environment without an
            // `on_stop` job stops at once on GitLab, which is the only kind the emulator has).
            let login = require_auth(req)?;
            let url = match h {
                H::UpdateEnvironment => req
                    .json()?
                    .get("external_url")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                _ => None,
            };
            let mut st = shared.state.lock().await;
            let path = visible(&st, req)?.path.clone();
            let sid = st.id();
            let id: u64 = req.param("environment_id").parse().unwrap_or(0);
            let repo = st
                .repos
                .get_mut(&path)
                .ok_or_else(|| Reply::not_found(Forge::Gitlab, "Project"))?;
            let name = repo
                .deployments
                .iter()
                .map(|d| d.environment.clone())
                .find(|n| env_id(repo, n) == id)
                .ok_or_else(|| Reply::not_found(Forge::Gitlab, "Environment"))?;
            if let Some(url) = url
                && let Some(d) = repo
                    .deployments
                    .iter_mut()
                    .rev()
                    .find(|d| d.environment == name)
            {
                let state = d
                    .statuses
                    .last()
                    .map_or("created".to_string(), |s| s.state.clone());
                d.statuses.push(DeploymentStatus {
                    id: sid,
                    state,
                    description: String::new(),
                    environment_url: Some(url),
                    log_url: None,
                    creator: login,
                    created_at: now(),
                });
            }
            if h == H::StopEnvironment {
                repo.stopped_environments.insert(name.clone());
            }
            let repo = &st.repos[&path];
            Ok(Reply::ok(environment_json(&base, repo, &name)))
        }
        H::Environments => {
            let st = shared.state.lock().await;
            let repo = visible(&st, req)?;
            let mut names = repo.environment_names();
            names.retain(|n| req.q("name").is_none_or(|q| q == *n));
            names.retain(|n| req.q("search").is_none_or(|q| n.contains(q)));
            names.retain(|n| {
                req.q("states")
                    .is_none_or(|q| q == repo.environment_state(n))
            });
            Ok(paginate(
                req,
                names
                    .into_iter()
                    .map(|n| environment_json(&base, repo, n))
                    .collect(),
            ))
        }
    }
}

#[cfg(test)]
mod tests;
