//! The Gitea REST API (`/api/v1`), shaped after Gitea's `modules/structs` types (no response
//! examples exist in the fixtures; field names follow Gitea's swagger).
//!
//! Flow: [`ROUTES`] → [`dispatch`]; pagination is Gitea's `page` + `limit` with `Link` and
//! `X-Total-Count`. Gitea has no API rate limit, so none is applied or reported.
use http::StatusCode;
use serde_json::{Value, json};

use super::auth::{Identity, can_see};
use super::data::{self, PrFacts, commit_author_login};
use super::git::{CommitInfo, FileDiff};
use super::model::{Forge, StatusSpec};
use super::ops;
use super::reply::{ApiRequest, Reply, merge, paginate};
use super::router::{Route, routes};
use super::state::{Comment, Pull, Repo, Shared, State, Status, User, iso};

/// Handler tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum H {
    User,
    Repo,
    Pulls,
    Pull,
    PullFiles,
    PullReviews,
    PullCommits,
    Branches,
    Branch,
    CreateStatus,
    Statuses,
    CombinedStatus,
    Commit,
    Comments,
    CreateComment,
    EditComment,
    DeleteComment,
}

/// The implemented Gitea endpoints (relative to `/api/v1`).
pub static ROUTES: &[Route<H>] = routes![
    H;
    "GET" "/user" => User,
    "GET" "/repos/{owner}/{repo}" => Repo,
    "GET" "/repos/{owner}/{repo}/pulls" => Pulls,
    "GET" "/repos/{owner}/{repo}/pulls/{index}" => Pull,
    "GET" "/repos/{owner}/{repo}/pulls/{index}/files" => PullFiles,
    "GET" "/repos/{owner}/{repo}/pulls/{index}/reviews" => PullReviews,
    "GET" "/repos/{owner}/{repo}/pulls/{index}/commits" => PullCommits,
    "GET" "/repos/{owner}/{repo}/branches" => Branches,
    "GET" "/repos/{owner}/{repo}/branches/{branch*}" => Branch,
    "POST" "/repos/{owner}/{repo}/statuses/{sha}" => CreateStatus,
    "GET" "/repos/{owner}/{repo}/statuses/{sha}" => Statuses,
    "GET" "/repos/{owner}/{repo}/commits/{ref*}/statuses" => Statuses,
    "GET" "/repos/{owner}/{repo}/commits/{ref*}/status" => CombinedStatus,
    "GET" "/repos/{owner}/{repo}/git/commits/{sha}" => Commit,
    "GET" "/repos/{owner}/{repo}/issues/{index}/comments" => Comments,
    "POST" "/repos/{owner}/{repo}/issues/{index}/comments" => CreateComment,
    "PATCH" "/repos/{owner}/{repo}/issues/comments/{id}" => EditComment,
    "DELETE" "/repos/{owner}/{repo}/issues/comments/{id}" => DeleteComment,
];

/// `api.User`.
pub fn user_json(base: &str, u: &User) -> Value {
    json!({
        "id": u.id, "login": u.login, "login_name": "", "source_id": 0, "full_name": u.name, "email": u.email,
        "avatar_url": format!("{base}/avatars/{}", u.login), "html_url": format!("{base}/{}", u.login),
        "language": "", "is_admin": false, "last_login": iso(0), "created": iso(0), "restricted": false,
        "active": true, "prohibit_login": false, "location": "", "website": "", "description": "",
        "visibility": "public", "followers_count": 0, "following_count": 0, "starred_repos_count": 0,
        "username": u.login,
    })
}

/// `api.Repository`.
pub fn repo_json(st: &State, base: &str, repo: &Repo) -> Value {
    let host = base.trim_start_matches("http://");
    let open_prs = repo.pulls.values().filter(|p| p.open).count();
    merge([
        json!({
            "id": repo.id, "owner": user_json(base, &st.user_ro(&repo.owner)), "name": repo.name, "full_name": repo.path,
            "description": repo.description.clone().unwrap_or_default(), "empty": repo.branches.is_empty(),
            "private": repo.private, "fork": repo.fork_of.is_some(), "template": false, "parent": null, "mirror": false, "size": 1,
            "language": "", "languages_url": format!("{base}/api/v1/repos/{}/languages", repo.path),
            "html_url": format!("{base}/{}", repo.path), "url": format!("{base}/api/v1/repos/{}", repo.path), "link": "",
            "ssh_url": format!("git@{host}:{}.git", repo.path), "clone_url": format!("{base}/{}.git", repo.path),
            "original_url": "", "website": "", "stars_count": 0, "forks_count": 0, "watchers_count": 0,
            "open_issues_count": 0, "open_pr_counter": open_prs, "release_counter": 0,
        }),
        json!({
            "default_branch": repo.default_branch, "archived": false,
            "created_at": iso(repo.created_at), "updated_at": iso(repo.updated_at), "archived_at": iso(0),
            "permissions": {"admin": true, "push": true, "pull": true},
            "has_issues": true, "internal_tracker": {"enable_time_tracker": false, "allow_only_contributors_to_track_time": true, "enable_issue_dependencies": true},
            "has_wiki": false, "has_pull_requests": true, "has_projects": false, "has_releases": true,
            "has_packages": false, "has_actions": false, "ignore_whitespace_conflicts": false,
        }),
        json!({
            "allow_merge_commits": true, "allow_rebase": true, "allow_rebase_explicit": true, "allow_squash_merge": true,
            "allow_fast_forward_only_merge": false, "allow_rebase_update": true,
            "default_delete_branch_after_merge": false, "default_merge_style": "merge",
            "default_allow_maintainer_edit": false, "avatar_url": "", "internal": false, "mirror_interval": "",
            "object_format_name": "sha1", "mirror_updated": iso(0), "repo_transfer": null, "topics": [],
        }),
    ])
}

fn label_json(base: &str, repo: &Repo, name: &str) -> Value {
    let l = repo.labels.get(name);
    json!({
        "id": l.map_or(0, |l| l.id), "name": name, "exclusive": false, "is_archived": false,
        "color": l.map_or("ededed", |l| l.color.as_str()), "description": l.and_then(|l| l.description.clone()).unwrap_or_default(),
        "url": format!("{base}/api/v1/repos/{}/labels/{}", repo.path, l.map_or(0, |l| l.id)),
    })
}

fn branch_info(st: &State, base: &str, repo: &Repo, git_ref: &str, sha: &str) -> Value {
    json!({
        "label": git_ref, "ref": git_ref, "sha": sha, "repo_id": repo.id, "repo": repo_json(st, base, repo),
    })
}

/// `api.PullRequest`.
pub fn pull_json(st: &State, base: &str, repo: &Repo, pr: &Pull, facts: &PrFacts) -> Value {
    let head_repo = st.repos.get(&pr.head_repo).unwrap_or(repo);
    let html = format!("{base}/{}/pulls/{}", repo.path, pr.number);
    merge([
        json!({
            "id": pr.id, "url": html, "number": pr.number, "user": user_json(base, &st.user_ro(&pr.author)),
            "title": pr.title, "body": pr.body,
            "labels": pr.labels.iter().map(|l| label_json(base, repo, l)).collect::<Vec<_>>(),
            "milestone": null, "assignee": null, "assignees": null, "requested_reviewers": null,
            "requested_reviewers_teams": null, "state": if pr.open { "open" } else { "closed" }, "draft": pr.draft,
            "is_locked": false, "comments": repo.comments.iter().filter(|c| c.number == pr.number).count(),
        }),
        json!({
            "review_comments": 0, "additions": facts.additions, "deletions": facts.deletions,
            "changed_files": facts.files.len(), "html_url": html, "diff_url": format!("{html}.diff"),
            "patch_url": format!("{html}.patch"), "mergeable": pr.open, "merged": pr.merged,
            "merged_at": pr.merged_at.map(iso), "merge_commit_sha": pr.merge_commit_sha,
            "merged_by": pr.merged_by.as_ref().map_or(Value::Null, |u| user_json(base, &st.user_ro(u))),
            "allow_maintainer_edit": false,
            "base": branch_info(st, base, repo, &pr.base_ref, &facts.base_sha),
            "head": branch_info(st, base, head_repo, &pr.head_ref, &pr.head_sha),
            "merge_base": facts.merge_base, "due_date": null,
            "created_at": iso(pr.created_at), "updated_at": iso(pr.updated_at), "closed_at": pr.closed_at.map(iso),
            "pin_order": 0,
        }),
    ])
}

/// `api.Issue` for a pull request (webhooks).
pub fn issue_json(st: &State, base: &str, repo: &Repo, pr: &Pull) -> Value {
    let html = format!("{base}/{}/pulls/{}", repo.path, pr.number);
    json!({
        "id": pr.id, "url": format!("{base}/api/v1/repos/{}/issues/{}", repo.path, pr.number), "html_url": html,
        "number": pr.number, "user": user_json(base, &st.user_ro(&pr.author)), "original_author": "",
        "original_author_id": 0, "title": pr.title, "body": pr.body, "ref": "", "assets": [],
        "labels": pr.labels.iter().map(|l| label_json(base, repo, l)).collect::<Vec<_>>(),
        "milestone": null, "assignee": null, "assignees": null, "state": if pr.open { "open" } else { "closed" },
        "is_locked": false, "comments": repo.comments.iter().filter(|c| c.number == pr.number).count(),
        "created_at": iso(pr.created_at), "updated_at": iso(pr.updated_at), "closed_at": pr.closed_at.map(iso),
        "due_date": null,
        "pull_request": {"merged": pr.merged, "merged_at": pr.merged_at.map(iso), "draft": pr.draft, "html_url": html},
        "repository": {"id": repo.id, "name": repo.name, "owner": repo.owner, "full_name": repo.path},
        "pin_order": 0,
    })
}

/// `api.Comment`.
pub fn comment_json(st: &State, base: &str, repo: &Repo, c: &Comment) -> Value {
    json!({
        "id": c.id, "html_url": format!("{base}/{}/pulls/{}#issuecomment-{}", repo.path, c.number, c.id),
        "pull_request_url": format!("{base}/{}/pulls/{}", repo.path, c.number),
        "issue_url": "", "user": user_json(base, &st.user_ro(&c.user)), "original_author": "",
        "original_author_id": 0, "body": c.body, "assets": [],
        "created_at": iso(c.created_at), "updated_at": iso(c.updated_at),
    })
}

fn changed_file_json(base: &str, repo: &Repo, head: &str, f: &FileDiff) -> Value {
    let status = match f.status.as_str() {
        "removed" => "deleted",
        "added" => "added",
        "renamed" => "renamed",
        _ => "changed",
    };
    json!({
        "filename": f.filename, "previous_filename": f.previous_filename.clone().unwrap_or_default(),
        "status": status, "additions": f.additions, "deletions": f.deletions, "changes": f.additions + f.deletions,
        "html_url": format!("{base}/{}/src/commit/{head}/{}", repo.path, f.filename),
        "contents_url": format!("{base}/api/v1/repos/{}/contents/{}?ref={head}", repo.path, f.filename),
        "raw_url": format!("{base}/{}/raw/commit/{head}/{}", repo.path, f.filename),
    })
}

fn commit_json(
    st: &State,
    base: &str,
    repo: &Repo,
    c: &CommitInfo,
    files: Option<&[FileDiff]>,
) -> Value {
    let meta = repo.commit_meta.get(&c.sha).cloned().unwrap_or_default();
    let author =
        commit_author_login(st, repo, c).map_or(Value::Null, |l| user_json(base, &st.user_ro(&l)));
    let api = format!("{base}/api/v1/repos/{}", repo.path);
    let mut v = json!({
        "url": format!("{api}/git/commits/{}", c.sha), "sha": c.sha, "created": iso(c.committer_time),
        "html_url": format!("{base}/{}/commit/{}", repo.path, c.sha),
        "commit": {
            "url": format!("{api}/git/commits/{}", c.sha),
            "author": {"name": c.author_name, "email": c.author_email, "date": iso(c.author_time)},
            "committer": {"name": c.committer_name, "email": c.committer_email, "date": iso(c.committer_time)},
            "message": format!("{}\n", c.message),
            "tree": {"url": format!("{api}/git/trees/{}", c.tree), "sha": c.tree, "created": iso(c.committer_time)},
            "verification": {
                "verified": meta.verified, "reason": if meta.verified { "" } else { "gpg.error.not_signed_commit" },
                "signature": "", "signer": null, "payload": "",
            },
        },
        "author": author.clone(), "committer": author,
        "parents": c.parents.iter().map(|p| json!({"url": format!("{api}/git/commits/{p}"), "sha": p, "created": iso(c.committer_time)})).collect::<Vec<_>>(),
    });
    if let (Some(files), Some(m)) = (files, v.as_object_mut()) {
        let a: u64 = files.iter().map(|f| f.additions).sum();
        let d: u64 = files.iter().map(|f| f.deletions).sum();
        m.insert(
            "files".into(),
            json!(
                files
                    .iter()
                    .map(|f| json!({"filename": f.filename, "status": f.status}))
                    .collect::<Vec<_>>()
            ),
        );
        m.insert(
            "stats".into(),
            json!({"total": a + d, "additions": a, "deletions": d}),
        );
    }
    v
}

fn status_json(st: &State, base: &str, repo: &Repo, s: &Status) -> Value {
    json!({
        "id": s.id, "status": s.state, "target_url": s.target_url.clone().unwrap_or_default(),
        "description": s.description.clone().unwrap_or_default(),
        "url": format!("{base}/api/v1/repos/{}/statuses/{}", repo.path, s.sha), "context": s.context,
        "creator": user_json(base, &st.user_ro(&s.creator)),
        "created_at": iso(s.created_at), "updated_at": iso(s.updated_at),
    })
}

/// Gitea's combined state: the worst state wins (error > failure > warning > pending > success).
fn combined(states: &[&str]) -> &'static str {
    let rank = |s: &str| match s {
        "error" => 4,
        "failure" => 3,
        "warning" => 2,
        "pending" => 1,
        _ => 0,
    };
    match states.iter().map(|s| rank(s)).max() {
        Some(4) => "error",
        Some(3) => "failure",
        Some(2) => "warning",
        Some(0) => "success",
        _ => "pending",
    }
}

fn visible<'a>(st: &'a State, req: &ApiRequest) -> Result<&'a Repo, Reply> {
    let key = format!("{}/{}", req.param("owner"), req.param("repo"));
    match st.repos.get(&key) {
        Some(r) if r.forge == Forge::Gitea && can_see(st, &req.ident, r) => Ok(r),
        _ => Err(Reply::not_found(Forge::Gitea, "Repository")),
    }
}

fn require_auth(req: &ApiRequest) -> Result<String, Reply> {
    match &req.ident {
        Identity::Token(t) => Ok(t.login.clone()),
        _ => Err(Reply::error(
            Forge::Gitea,
            StatusCode::UNAUTHORIZED,
            "token is required",
        )),
    }
}

/// The pull request `{index}` names; `7.diff` (Gitea's `pulls/{index}.{diffType}`) is #7.
fn pr_of<'a>(repo: &'a Repo, req: &ApiRequest) -> Result<&'a Pull, Reply> {
    let index = req.param("index");
    index
        .strip_suffix(".diff")
        .unwrap_or(index)
        .parse::<u64>()
        .ok()
        .and_then(|n| repo.pulls.get(&n))
        .ok_or_else(|| Reply::not_found(Forge::Gitea, "PullRequest"))
}

/// `GET /repos/{owner}/{repo}/pulls/{index}.diff`: the pull request as one `git diff` text.
fn unified_diff(files: &[FileDiff]) -> Reply {
    let mut out = String::new();
    for f in files {
        let old = f.previous_filename.as_deref().unwrap_or(&f.filename);
        out.push_str(&format!("diff --git a/{old} b/{}\n", f.filename));
        let (from, to) = match f.status.as_str() {
            "added" => ("/dev/null".to_string(), format!("b/{}", f.filename)),
            "removed" => (format!("a/{old}"), "/dev/null".to_string()),
            _ => (format!("a/{old}"), format!("b/{}", f.filename)),
        };
        match &f.patch {
            Some(p) => out.push_str(&format!("--- {from}\n+++ {to}\n{p}\n")),
            None => out.push_str(&format!("Binary files {from} and {to} differ\n")),
        }
    }
    Reply {
        status: StatusCode::OK,
        body: None,
        text: Some(out),
        headers: Vec::new(),
    }
}

/// Runs one Gitea handler.
pub async fn dispatch(shared: &Shared, h: H, req: &ApiRequest) -> Reply {
    match run(shared, h, req).await {
        Ok(r) | Err(r) => r,
    }
}

async fn run(shared: &Shared, h: H, req: &ApiRequest) -> Result<Reply, Reply> {
    let base = req.web_base();
    match h {
        H::User => {
            let login = require_auth(req)?;
            let st = shared.state.lock().await;
            Ok(Reply::ok(user_json(&base, &st.user_ro(&login))))
        }
        H::Repo => {
            let st = shared.state.lock().await;
            let repo = visible(&st, req)?;
            Ok(Reply::ok(repo_json(&st, &base, repo)))
        }
        H::Pulls => {
            let repo = {
                let st = shared.state.lock().await;
                visible(&st, req)?.clone()
            };
            let want = req.q("state").unwrap_or("open");
            let mut prs: Vec<&Pull> = repo
                .pulls
                .values()
                .filter(|p| match want {
                    "all" => true,
                    "closed" => !p.open,
                    _ => p.open,
                })
                .collect();
            match req.q("sort").unwrap_or("newest") {
                "oldest" => prs.sort_by_key(|p| p.number),
                "recentupdate" => {
                    prs.sort_by_key(|p| (p.updated_at, p.number));
                    prs.reverse();
                }
                "leastupdate" => prs.sort_by_key(|p| (p.updated_at, p.number)),
                _ => {
                    prs.sort_by_key(|p| p.number);
                    prs.reverse();
                }
            }
            let mut facts = Vec::new();
            for p in &prs {
                facts.push(data::facts_for(shared, &repo, p).await);
            }
            let st = shared.state.lock().await;
            let items = prs
                .iter()
                .zip(facts)
                .map(|(p, f)| pull_json(&st, &base, &repo, p, &f))
                .collect();
            Ok(paginate(req, items))
        }
        H::Pull | H::PullFiles | H::PullCommits | H::PullReviews => {
            let (repo, pr) = {
                let st = shared.state.lock().await;
                let repo = visible(&st, req)?.clone();
                let pr = pr_of(&repo, req)?.clone();
                (repo, pr)
            };
            let facts = data::facts_for(shared, &repo, &pr).await;
            let st = shared.state.lock().await;
            Ok(match h {
                H::Pull if req.param("index").ends_with(".diff") => unified_diff(&facts.files),
                H::Pull => Reply::ok(pull_json(&st, &base, &repo, &pr, &facts)),
                H::PullFiles => {
                    paginate(req, facts.files.iter().map(|f| changed_file_json(&base, &repo, &pr.head_sha, f)).collect())
                }
                H::PullCommits => paginate(req, facts.commits.iter().map(|c| commit_json(&st, &base, &repo, c, None)).collect()),
                _ => paginate(
                    req,
                    pr.reviews
                        .iter()
                        .map(|r| {
                            let state = match r.state.as_str() {
                                "CHANGES_REQUESTED" => "REQUEST_CHANGES",
                                "COMMENTED" => "COMMENT",
                                s => s,
                            };
                            json!({
                                "id": r.id, "user": user_json(&base, &st.user_ro(&r.user)), "team": null,
                                "state": state, "body": r.body, "commit_id": r.commit_id,
                                "stale": r.commit_id != pr.head_sha, "official": true, "dismissed": false,
                                "comments_count": 0, "submitted_at": iso(r.submitted_at), "updated_at": iso(r.submitted_at),
                                "html_url": format!("{base}/{}/pulls/{}#issuecomment-{}", repo.path, pr.number, r.id),
                                "pull_request_url": format!("{base}/{}/pulls/{}", repo.path, pr.number),
                            })
                        })
                        .collect(),
                ),
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
                    Some(s) => vec![(b.to_string(), s.clone())],
                    None => return Err(Reply::not_found(Forge::Gitea, "Branch")),
                }
            } else {
                repo.branches
                    .iter()
                    .map(|(n, s)| (n.clone(), s.clone()))
                    .collect()
            };
            let mut items = Vec::new();
            for (name, sha) in names {
                let Some(c) = data::commit(shared, &repo.git_dir, &sha).await else {
                    continue;
                };
                let st = shared.state.lock().await;
                let login = commit_author_login(&st, &repo, &c).unwrap_or_default();
                items.push(json!({
                    "name": name,
                    "commit": {
                        "id": c.sha, "message": format!("{}\n", c.message), "url": format!("{base}/{}/commit/{}", repo.path, c.sha),
                        "author": {"name": c.author_name, "email": c.author_email, "username": login},
                        "committer": {"name": c.committer_name, "email": c.committer_email, "username": login},
                        "verification": null, "timestamp": iso(c.committer_time), "added": null, "removed": null, "modified": null,
                    },
                    "protected": false, "required_approvals": 0, "enable_status_check": false,
                    "status_check_contexts": [], "user_can_push": true, "user_can_merge": true,
                    "effective_branch_protection_name": "",
                }));
            }
            if h == H::Branch {
                Ok(Reply::ok(items.pop().unwrap_or(Value::Null)))
            } else {
                Ok(paginate(req, items))
            }
        }
        H::CreateStatus => {
            let login = require_auth(req)?;
            let body = req.json()?;
            let s = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
            let state = s("state").unwrap_or_default();
            if !["pending", "success", "error", "failure", "warning"].contains(&state.as_str()) {
                return Err(Reply::invalid(Forge::Gitea, "invalid state"));
            }
            let path = {
                let st = shared.state.lock().await;
                visible(&st, req)?.path.clone()
            };
            let spec = StatusSpec {
                context: s("context").unwrap_or_else(|| "default".into()),
                state,
                description: s("description"),
                target_url: s("target_url"),
                user: Some(login),
            };
            let status = ops::set_status(shared, &path, req.param("sha"), spec)
                .await
                .map_err(|e| Reply::invalid(Forge::Gitea, &e.to_string()))?;
            let st = shared.state.lock().await;
            Ok(Reply::created(status_json(
                &st,
                &base,
                &st.repos[&path],
                &status,
            )))
        }
        H::Statuses | H::CombinedStatus => {
            let repo = {
                let st = shared.state.lock().await;
                visible(&st, req)?.clone()
            };
            let r = if req.param("sha").is_empty() {
                req.param("ref")
            } else {
                req.param("sha")
            };
            let sha = data::resolve(&repo, r)
                .await
                .ok_or_else(|| Reply::not_found(Forge::Gitea, "Commit"))?;
            let st = shared.state.lock().await;
            let all = repo.statuses_for(&sha);
            if h == H::Statuses {
                return Ok(paginate(
                    req,
                    all.into_iter()
                        .map(|s| status_json(&st, &base, &repo, s))
                        .collect(),
                ));
            }
            let mut seen = std::collections::HashSet::new();
            let latest: Vec<&Status> = all
                .into_iter()
                .filter(|s| seen.insert(s.context.clone()))
                .collect();
            let states: Vec<&str> = latest.iter().map(|s| s.state.as_str()).collect();
            Ok(Reply::ok(json!({
                "state": if latest.is_empty() { "" } else { combined(&states) }, "sha": sha, "total_count": latest.len(),
                "statuses": latest.iter().map(|s| status_json(&st, &base, &repo, s)).collect::<Vec<_>>(),
                "repository": repo_json(&st, &base, &repo),
                "commit_url": format!("{base}/api/v1/repos/{}/git/commits/{sha}", repo.path),
                "url": format!("{base}/api/v1/repos/{}/commits/{sha}/status", repo.path),
            })))
        }
        H::Commit => {
            let repo = {
                let st = shared.state.lock().await;
                visible(&st, req)?.clone()
            };
            let c = match data::resolve(&repo, req.param("sha")).await {
                Some(sha) => data::commit(shared, &repo.git_dir, &sha).await,
                None => None,
            }
            .ok_or_else(|| Reply::not_found(Forge::Gitea, "Commit"))?;
            let files = data::commit_files(shared, &repo.git_dir, &c).await;
            let st = shared.state.lock().await;
            Ok(Reply::ok(commit_json(&st, &base, &repo, &c, Some(&files))))
        }
        H::Comments => {
            let st = shared.state.lock().await;
            let repo = visible(&st, req)?;
            let n: u64 = req.param("index").parse().unwrap_or(0);
            if !repo.pulls.contains_key(&n) {
                return Err(Reply::not_found(Forge::Gitea, "Issue"));
            }
            let items: Vec<Value> = repo
                .comments
                .iter()
                .filter(|c| c.number == n)
                .map(|c| comment_json(&st, &base, repo, c))
                .collect();
            Ok(paginate(req, items))
        }
        H::CreateComment => {
            let login = require_auth(req)?;
            let body = req.json()?;
            let text = body
                .get("body")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let path = {
                let st = shared.state.lock().await;
                visible(&st, req)?.path.clone()
            };
            let n: u64 = req.param("index").parse().unwrap_or(0);
            let c = ops::add_comment(shared, &path, n, &login, &text)
                .await
                .map_err(|_| Reply::not_found(Forge::Gitea, "Issue"))?;
            let st = shared.state.lock().await;
            Ok(Reply::created(comment_json(
                &st,
                &base,
                &st.repos[&path],
                &c,
            )))
        }
        H::EditComment | H::DeleteComment => {
            let login = require_auth(req)?;
            let path = {
                let st = shared.state.lock().await;
                visible(&st, req)?.path.clone()
            };
            let id: u64 = req.param("id").parse().unwrap_or(0);
            if h == H::DeleteComment {
                ops::delete_comment(shared, &path, id)
                    .await
                    .map_err(|_| Reply::not_found(Forge::Gitea, "Comment"))?;
                return Ok(Reply::no_content());
            }
            let body = req.json()?;
            let text = body
                .get("body")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let c = ops::edit_comment(shared, &path, id, &login, &text)
                .await
                .map_err(|_| Reply::not_found(Forge::Gitea, "Comment"))?;
            let st = shared.state.lock().await;
            Ok(Reply::ok(comment_json(&st, &base, &st.repos[&path], &c)))
        }
    }
}
