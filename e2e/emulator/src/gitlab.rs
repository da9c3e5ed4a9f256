//! The GitLab REST API (`/api/v4`), shapes from the GitLab docs examples in
//! `test-data/gitlab/rest`.
//!
//! Flow: [`ROUTES`] → [`dispatch`]. Projects are addressed by numeric id or URL-encoded full
//! path (`group%2Fsub%2Fproject`), decoded by the router after matching one segment. Merge
//! requests are the emulator's pull requests (iid = number); notes are its comments;
//! approvals are the latest `APPROVED` review per user; environments are implied by deployments
//! (a stop marks one `stopped` until its next deployment).
use http::StatusCode;
use serde_json::{Value, json};

use super::auth::{Identity, can_see};
use super::data::{self, PrFacts};
use super::git::CommitInfo;
use super::model::{Forge, StatusSpec};
use super::ops;
use super::reply::{ApiRequest, Reply, merge, paginate};
use super::router::{Route, routes};
use super::state::{Deployment, DeploymentStatus, Pull, Repo, Shared, State, User, iso_ms, now};

/// Handler tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum H {
    User,
    Project,
    Mrs,
    Mr,
    MrDiffs,
    MrApprovals,
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
    "GET" "/projects/{id}" => Project,
    "GET" "/projects/{id}/merge_requests" => Mrs,
    "GET" "/projects/{id}/merge_requests/{iid}" => Mr,
    "GET" "/projects/{id}/merge_requests/{iid}/diffs" => MrDiffs,
    "GET" "/projects/{id}/merge_requests/{iid}/approvals" => MrApprovals,
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

/// A merge request (list and single share one shape; `full` adds the single-MR extras).
pub fn mr_json(
    st: &State,
    base: &str,
    repo: &Repo,
    pr: &Pull,
    facts: &PrFacts,
    full: bool,
) -> Value {
    let head_repo = st.repos.get(&pr.head_repo).unwrap_or(repo);
    let (state, _) = mr_state(pr);
    let notes = repo
        .comments
        .iter()
        .filter(|c| c.number == pr.number)
        .count();
    let merged_by = pr
        .merged_by
        .as_ref()
        .map_or(Value::Null, |u| user_json(base, &st.user_ro(u)));
    let mut v = merge([
        json!({
            "id": pr.id, "iid": pr.number, "project_id": repo.id, "title": pr.title, "description": pr.body,
            "state": state, "imported": false, "imported_from": "none",
            "created_at": iso_ms(pr.created_at), "updated_at": iso_ms(pr.updated_at),
            "merged_by": merged_by, "merge_user": merged_by, "merged_at": pr.merged_at.map(iso_ms),
            "merge_after": null, "prepared_at": iso_ms(pr.created_at),
            "closed_by": if !pr.open && !pr.merged { json!(user_json(base, &st.user_ro(&pr.author))) } else { Value::Null },
            "closed_at": if pr.merged { Value::Null } else { json!(pr.closed_at.map(iso_ms)) },
        }),
        json!({
            "target_branch": pr.base_ref, "source_branch": pr.head_ref, "user_notes_count": notes,
            "upvotes": 0, "downvotes": 0, "author": user_json(base, &st.user_ro(&pr.author)),
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
    ]);
    if full && let Some(m) = v.as_object_mut() {
        m.insert("subscribed".into(), json!(false));
        m.insert("changes_count".into(), json!(facts.files.len().to_string()));
        m.insert("latest_build_started_at".into(), Value::Null);
        m.insert("latest_build_finished_at".into(), Value::Null);
        m.insert("first_deployed_to_production_at".into(), Value::Null);
        m.insert("pipeline".into(), Value::Null);
        m.insert("head_pipeline".into(), Value::Null);
        m.insert(
            "diff_refs".into(),
            json!({"base_sha": facts.merge_base, "head_sha": pr.head_sha, "start_sha": facts.base_sha}),
        );
        m.insert("merge_error".into(), Value::Null);
        m.insert("first_contribution".into(), json!(false));
        m.insert("user".into(), json!({"can_merge": true}));
    }
    v
}

/// A commit (`stats` when asked).
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
        m.insert("status".into(), Value::Null);
        m.insert("last_pipeline".into(), Value::Null);
    }
    v
}

fn status_json(st: &State, base: &str, s: &super::state::Status) -> Value {
    let finished = matches!(
        s.state.as_str(),
        "success" | "failed" | "canceled" | "skipped"
    );
    json!({
        "id": s.id, "sha": s.sha, "ref": s.git_ref, "status": s.state, "name": s.context,
        "target_url": s.target_url, "description": s.description,
        "created_at": iso_ms(s.created_at), "started_at": if s.state == "pending" { Value::Null } else { json!(iso_ms(s.created_at)) },
        "finished_at": if finished { json!(iso_ms(s.updated_at)) } else { Value::Null },
        "allow_failure": false, "coverage": null, "pipeline_id": null,
        "author": user_json(base, &st.user_ro(&s.creator)),
    })
}

fn note_json(st: &State, base: &str, repo: &Repo, pr: &Pull, c: &super::state::Comment) -> Value {
    json!({
        "id": c.id, "type": null, "body": c.body, "attachment": null,
        "author": user_json(base, &st.user_ro(&c.user)),
        "created_at": iso_ms(c.created_at), "updated_at": iso_ms(c.updated_at),
        "system": false, "noteable_id": pr.id, "noteable_type": "MergeRequest", "project_id": repo.id,
        "noteable_iid": pr.number, "resolvable": false, "confidential": false, "internal": false,
        "commands_changes": {},
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
                .map(|p| mr_json(&st, &base, &repo, p, &data::light_facts(&repo, p), false))
                .collect();
            Ok(paginate(req, items))
        }
        H::Mr | H::MrDiffs | H::MrCommits | H::MrApprovals => {
            let (repo, pr) = {
                let st = shared.state.lock().await;
                let repo = visible(&st, req)?.clone();
                let pr = mr(&repo, req)?.clone();
                (repo, pr)
            };
            let facts = data::facts_for(shared, &repo, &pr).await;
            let st = shared.state.lock().await;
            Ok(match h {
                H::Mr => Reply::ok(mr_json(&st, &base, &repo, &pr, &facts, true)),
                H::MrDiffs => paginate(
                    req,
                    facts
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
                        .collect(),
                ),
                H::MrCommits => paginate(req, facts.commits.iter().rev().map(|c| commit_json(&base, &repo, c, None)).collect()),
                _ => {
                    let mut latest: Vec<(String, &super::state::Review)> = Vec::new();
                    for r in &pr.reviews {
                        latest.retain(|(u, _)| *u != r.user);
                        latest.push((r.user.clone(), r));
                    }
                    let approved: Vec<Value> = latest
                        .iter()
                        .filter(|(_, r)| r.state == "APPROVED")
                        .map(|(u, r)| json!({"user": user_json(&base, &st.user_ro(u)), "approved_at": iso_ms(r.submitted_at)}))
                        .collect();
                    let (state, _) = mr_state(&pr);
                    Reply::ok(json!({
                        "id": pr.id, "iid": pr.number, "project_id": repo.id, "title": pr.title, "description": pr.body,
                        "state": state, "created_at": iso_ms(pr.created_at), "updated_at": iso_ms(pr.updated_at),
                        "merge_status": "can_be_merged", "approved": !approved.is_empty(),
                        "approvals_required": 0, "approvals_left": 0, "approved_by": approved,
                    }))
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
                Ok(Reply::ok(items.pop().unwrap_or(Value::Null)))
            } else {
                Ok(paginate(req, items))
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
            Ok(Reply::ok(commit_json(&base, &repo, &ci, Some((a, d)))))
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
            Ok(paginate(
                req,
                list.into_iter()
                    .map(|s| status_json(&st, &base, s))
                    .collect(),
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
            Ok(Reply::created(status_json(&st, &base, &status)))
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
