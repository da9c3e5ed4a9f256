//! The GitHub REST API (served at `/` and at `/api/v3`, the Enterprise layout).
//!
//! Flow: [`ROUTES`] maps method + template to an [`H`] tag; [`dispatch`] resolves the
//! repository (404 when the caller may not see it, like GitHub), reads what it needs from the
//! state and from git ([`super::data`]), and builds bodies with the `*_json` builders of
//! [`super::github_json`], which the webhook payloads share. Every body validates against the
//! response schemas in `test-data/github/rest/schemas` (tested).
use http::StatusCode;
use serde_json::{Value, json};

use super::auth::{Identity, can_see, installation_covers};
use super::data::{self};
use super::github_json::*;
use super::model::Forge;
use super::ops;
use super::reply::{ApiRequest, Reply, paginate};
use super::router::{Route, routes};
use super::state::{
    CheckRun, Deployment, DeploymentStatus, Pull, Repo, Shared, State, Token, TokenKind, iso, now,
};

/// Handler tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum H {
    Repo,
    Pulls,
    Pull,
    PullFiles,
    PullReviews,
    PullCommits,
    Branches,
    Branch,
    GitRef,
    Commit,
    CombinedStatus,
    Statuses,
    CreateStatus,
    CheckRunsForRef,
    CreateCheckRun,
    UpdateCheckRun,
    GetCheckRun,
    CreateDeployment,
    Deployments,
    GetDeployment,
    CreateDeploymentStatus,
    DeploymentStatuses,
    IssueComments,
    CreateIssueComment,
    GetIssueComment,
    UpdateIssueComment,
    DeleteIssueComment,
    IssueEvents,
    Issue,
    RateLimit,
    RepoInstallation,
    CreateInstallationToken,
    App,
    TeamMembership,
    CollaboratorPermission,
    User,
}

/// The implemented GitHub endpoints.
pub static ROUTES: &[Route<H>] = routes![
    H;
    "GET" "/rate_limit" => RateLimit,
    "GET" "/user" => User,
    "GET" "/app" => App,
    "POST" "/app/installations/{installation_id}/access_tokens" => CreateInstallationToken,
    "GET" "/orgs/{org}/teams/{team}/memberships/{username}" => TeamMembership,
    "GET" "/repos/{owner}/{repo}" => Repo,
    "GET" "/repos/{owner}/{repo}/installation" => RepoInstallation,
    "GET" "/repos/{owner}/{repo}/collaborators/{username}/permission" => CollaboratorPermission,
    "GET" "/repos/{owner}/{repo}/pulls" => Pulls,
    "GET" "/repos/{owner}/{repo}/pulls/{number}" => Pull,
    "GET" "/repos/{owner}/{repo}/pulls/{number}/files" => PullFiles,
    "GET" "/repos/{owner}/{repo}/pulls/{number}/reviews" => PullReviews,
    "GET" "/repos/{owner}/{repo}/pulls/{number}/commits" => PullCommits,
    "GET" "/repos/{owner}/{repo}/branches" => Branches,
    "GET" "/repos/{owner}/{repo}/branches/{branch*}" => Branch,
    "GET" "/repos/{owner}/{repo}/git/ref/{ref*}" => GitRef,
    "GET" "/repos/{owner}/{repo}/commits/{ref*}/status" => CombinedStatus,
    "GET" "/repos/{owner}/{repo}/commits/{ref*}/statuses" => Statuses,
    "GET" "/repos/{owner}/{repo}/commits/{ref*}/check-runs" => CheckRunsForRef,
    "GET" "/repos/{owner}/{repo}/commits/{ref*}" => Commit,
    "POST" "/repos/{owner}/{repo}/statuses/{sha}" => CreateStatus,
    "POST" "/repos/{owner}/{repo}/check-runs" => CreateCheckRun,
    "GET" "/repos/{owner}/{repo}/check-runs/{id}" => GetCheckRun,
    "PATCH" "/repos/{owner}/{repo}/check-runs/{id}" => UpdateCheckRun,
    // GitHub accepts POST for PATCH endpoints (some clients, octocrab among them, use it).
    "POST" "/repos/{owner}/{repo}/check-runs/{id}" => UpdateCheckRun,
    "POST" "/repos/{owner}/{repo}/deployments" => CreateDeployment,
    "GET" "/repos/{owner}/{repo}/deployments" => Deployments,
    "GET" "/repos/{owner}/{repo}/deployments/{id}" => GetDeployment,
    "POST" "/repos/{owner}/{repo}/deployments/{id}/statuses" => CreateDeploymentStatus,
    "GET" "/repos/{owner}/{repo}/deployments/{id}/statuses" => DeploymentStatuses,
    "GET" "/repos/{owner}/{repo}/issues/comments/{id}" => GetIssueComment,
    "PATCH" "/repos/{owner}/{repo}/issues/comments/{id}" => UpdateIssueComment,
    "POST" "/repos/{owner}/{repo}/issues/comments/{id}" => UpdateIssueComment,
    "DELETE" "/repos/{owner}/{repo}/issues/comments/{id}" => DeleteIssueComment,
    "GET" "/repos/{owner}/{repo}/issues/{number}/comments" => IssueComments,
    "POST" "/repos/{owner}/{repo}/issues/{number}/comments" => CreateIssueComment,
    "GET" "/repos/{owner}/{repo}/issues/{number}/events" => IssueEvents,
    "GET" "/repos/{owner}/{repo}/issues/{number}" => Issue,
];

fn repo_key(req: &ApiRequest) -> String {
    format!("{}/{}", req.param("owner"), req.param("repo"))
}

/// Looks up the request's repository, answering 404 when it does not exist on GitHub or the
/// caller may not see it.
fn visible_repo<'a>(st: &'a State, req: &ApiRequest) -> Result<&'a Repo, Reply> {
    match st.repos.get(&repo_key(req)) {
        Some(r) if r.forge == Forge::Github && can_see(st, &req.ident, r) => Ok(r),
        _ => Err(Reply::not_found(Forge::Github, "Repository")),
    }
}

fn require_auth(req: &ApiRequest) -> Result<(), Reply> {
    match req.ident {
        Identity::Token(_) => Ok(()),
        Identity::App(_) => Err(Reply::error(
            Forge::Github,
            StatusCode::FORBIDDEN,
            "Resource not accessible by integration",
        )),
        _ => Err(Reply::error(
            Forge::Github,
            StatusCode::UNAUTHORIZED,
            "Requires authentication",
        )),
    }
}

fn actor(req: &ApiRequest) -> String {
    match &req.ident {
        Identity::Token(Token {
            kind: TokenKind::Installation { .. },
            login,
            ..
        }) => login.clone(),
        Identity::Token(t) => t.login.clone(),
        _ => "ghost".into(),
    }
}

fn number(req: &ApiRequest, name: &str) -> Result<u64, Reply> {
    req.param(name)
        .parse()
        .map_err(|_| Reply::not_found(Forge::Github, "Resource"))
}

/// Runs one GitHub handler.
pub async fn dispatch(shared: &Shared, h: H, req: &ApiRequest) -> Reply {
    match run(shared, h, req).await {
        Ok(r) | Err(r) => r,
    }
}

async fn run(shared: &Shared, h: H, req: &ApiRequest) -> Result<Reply, Reply> {
    let b = Bases::of(req);
    match h {
        H::RateLimit => {
            let mut st = shared.state.lock().await;
            let bucket = super::server::bucket(&mut st, &req.ident, &shared.config).cloned();
            let core = bucket.map_or_else(
                || json!({"limit": 0, "remaining": 0, "reset": now(), "used": 0}),
                |bk| json!({"limit": bk.limit, "remaining": bk.remaining, "reset": bk.reset, "used": bk.used(), "resource": "core"}),
            );
            let other = |limit: u32| json!({"limit": limit, "remaining": limit, "reset": now() + 60, "used": 0});
            Ok(Reply::ok(json!({
                "resources": {"core": core, "search": other(30), "graphql": other(5000), "integration_manifest": other(5000), "code_search": other(10)},
                "rate": core,
            })))
        }
        H::User => {
            let st = shared.state.lock().await;
            match &req.ident {
                Identity::Token(t) if t.kind == TokenKind::Personal => {
                    let u = st.user_ro(&t.login);
                    let mut v = user_json(&b, &u);
                    if let Some(m) = v.as_object_mut() {
                        m.insert("name".into(), json!(u.name));
                        m.insert("email".into(), json!(u.email));
                        m.insert("company".into(), Value::Null);
                        m.insert("blog".into(), json!(""));
                        m.insert("location".into(), Value::Null);
                        m.insert("hireable".into(), Value::Null);
                        m.insert("bio".into(), Value::Null);
                        m.insert("twitter_username".into(), Value::Null);
                        m.insert(
                            "public_repos".into(),
                            json!(
                                st.repos
                                    .values()
                                    .filter(|r| r.owner == u.login && !r.private)
                                    .count()
                            ),
                        );
                        m.insert("public_gists".into(), json!(0));
                        m.insert("followers".into(), json!(0));
                        m.insert("following".into(), json!(0));
                        m.insert("created_at".into(), json!(iso(0)));
                        m.insert("updated_at".into(), json!(iso(0)));
                    }
                    Ok(Reply::ok(v))
                }
                Identity::Token(_) | Identity::App(_) => Err(Reply::error(
                    Forge::Github,
                    StatusCode::FORBIDDEN,
                    "Resource not accessible by integration",
                )),
                _ => Err(Reply::error(
                    Forge::Github,
                    StatusCode::UNAUTHORIZED,
                    "Requires authentication",
                )),
            }
        }
        H::App => {
            let Identity::App(app_id) = req.ident else {
                return Err(app_jwt_required());
            };
            let st = shared.state.lock().await;
            Ok(Reply::ok(app_json(&st, &b, app_id)))
        }
        H::CreateInstallationToken => {
            let Identity::App(app_id) = req.ident else {
                return Err(app_jwt_required());
            };
            let id: u64 = number(req, "installation_id")?;
            let mut st = shared.state.lock().await;
            let Some(inst) = st
                .installations
                .get(&id)
                .filter(|i| i.app_id == app_id)
                .cloned()
            else {
                return Err(Reply::not_found(Forge::Github, "Installation"));
            };
            let token = format!("ghs_{}", random_token(36));
            let expires_at = now() + 3600;
            let login = format!(
                "{}[bot]",
                st.apps.get(&app_id).map_or("app", |a| a.slug.as_str())
            );
            st.tokens.insert(
                token.clone(),
                Token {
                    token: token.clone(),
                    login,
                    forge: Some(Forge::Github),
                    kind: TokenKind::Installation {
                        installation_id: id,
                        expires_at,
                    },
                    repos: inst.repositories.clone(),
                    client: format!("installation:{id}"),
                },
            );
            Ok(Reply::created(json!({
                "token": token, "expires_at": iso(expires_at),
                "permissions": {"checks": "write", "metadata": "read", "pull_requests": "write", "statuses": "write", "contents": "read", "deployments": "write", "issues": "write"},
                "repository_selection": if inst.repositories.is_some() { "selected" } else { "all" },
            })))
        }
        H::TeamMembership => {
            let st = shared.state.lock().await;
            if matches!(req.ident, Identity::Anonymous) {
                return Err(Reply::error(
                    Forge::Github,
                    StatusCode::UNAUTHORIZED,
                    "Requires authentication",
                ));
            }
            let key = (req.param("org").to_string(), req.param("team").to_string());
            let m = st
                .teams
                .get(&key)
                .and_then(|t| t.get(req.param("username")));
            match m {
                Some(m) => Ok(Reply::ok(json!({
                    "url": format!("{}/organizations/{}/team/{}/memberships/{}", b.api, req.param("org"), req.param("team"), req.param("username")),
                    "role": m.role, "state": m.state,
                }))),
                None => Err(Reply::not_found(Forge::Github, "Membership")),
            }
        }
        H::Repo => {
            let st = shared.state.lock().await;
            let repo = visible_repo(&st, req)?;
            Ok(Reply::ok(repo_json(&st, &b, repo, req.ident.login())))
        }
        H::RepoInstallation => {
            let Identity::App(app_id) = req.ident else {
                return Err(app_jwt_required());
            };
            let st = shared.state.lock().await;
            let repo = st
                .repos
                .get(&repo_key(req))
                .filter(|r| r.forge == Forge::Github);
            let inst = repo.and_then(|r| {
                st.installations
                    .values()
                    .find(|i| i.app_id == app_id && installation_covers(&st, i.id, r))
            });
            match inst {
                Some(i) => Ok(Reply::ok(installation_json(&st, &b, i))),
                None => Err(Reply::not_found(Forge::Github, "Installation")),
            }
        }
        H::CollaboratorPermission => {
            let st = shared.state.lock().await;
            let repo = visible_repo(&st, req)?;
            require_auth(req)?;
            let login = req.param("username");
            if !st.users.contains_key(login) && repo.owner != login {
                return Err(Reply::not_found(Forge::Github, "User"));
            }
            let role = permission_of(repo, login);
            let permission = match role {
                "admin" => "admin",
                "maintain" | "write" | "push" => "write",
                "triage" | "read" => "read",
                _ => "none",
            };
            let mut user = user_json(&b, &st.user_ro(login));
            if let Some(m) = user.as_object_mut() {
                m.insert("role_name".into(), json!(role));
                let rank = perm_rank(role);
                m.insert("permissions".into(), json!({"admin": rank >= 4, "maintain": rank >= 3, "push": rank >= 2, "triage": rank >= 1, "pull": true}));
            }
            Ok(Reply::ok(
                json!({"permission": permission, "role_name": role, "user": user}),
            ))
        }
        H::Pulls => {
            let st = shared.state.lock().await;
            let repo = visible_repo(&st, req)?.clone();
            let state_q = req.q("state").unwrap_or("open");
            let mut pulls: Vec<Pull> = repo
                .pulls
                .values()
                .filter(|p| match state_q {
                    "all" => true,
                    "closed" => !p.open,
                    _ => p.open,
                })
                .filter(|p| req.q("base").is_none_or(|b| b == p.base_ref))
                .filter(|p| {
                    req.q("head").is_none_or(|h| {
                        let head_owner = p.head_repo.split('/').next().unwrap_or("");
                        h == format!("{head_owner}:{}", p.head_ref) || h == p.head_ref
                    })
                })
                .cloned()
                .collect();
            let asc = req.q("direction") == Some("asc");
            match req.q("sort").unwrap_or("created") {
                "updated" => pulls.sort_by_key(|p| (p.updated_at, p.number)),
                _ => pulls.sort_by_key(|p| p.number),
            }
            if !asc {
                pulls.reverse();
            }
            // List items are `pull-request-simple`: no diff statistics, so no git work.
            let items = pulls
                .iter()
                .map(|p| pull_json(&st, &b, &repo, p, &data::light_facts(&repo, p), false))
                .collect();
            Ok(paginate(req, items))
        }
        H::Pull | H::PullFiles | H::PullCommits | H::PullReviews => {
            let (repo, pr) = {
                let st = shared.state.lock().await;
                let repo = visible_repo(&st, req)?.clone();
                let n = number(req, "number")?;
                let pr = repo
                    .pulls
                    .get(&n)
                    .cloned()
                    .ok_or_else(|| Reply::not_found(Forge::Github, "PullRequest"))?;
                (repo, pr)
            };
            let facts = data::facts_for(shared, &repo, &pr).await;
            let st = shared.state.lock().await;
            Ok(match h {
                H::Pull => Reply::ok(pull_json(&st, &b, &repo, &pr, &facts, true)),
                H::PullFiles => paginate(
                    req,
                    facts
                        .files
                        .iter()
                        .take(3000)
                        .map(|f| diff_entry_json(&b, &repo, &pr.head_sha, f))
                        .collect(),
                ),
                H::PullCommits => paginate(
                    req,
                    facts
                        .commits
                        .iter()
                        .take(250)
                        .map(|c| commit_json(&st, &b, &repo, c, None))
                        .collect(),
                ),
                _ => paginate(
                    req,
                    pr.reviews
                        .iter()
                        .map(|r| review_json(&st, &b, &repo, &pr, r))
                        .collect(),
                ),
            })
        }
        H::Branches => {
            let st = shared.state.lock().await;
            let repo = visible_repo(&st, req)?;
            let only_protected = req.q("protected") == Some("true");
            let items = repo
                .branches
                .iter()
                .filter(|_| !only_protected)
                .map(|(name, sha)| {
                    json!({
                        "name": name,
                        "commit": {"sha": sha, "url": format!("{}/repos/{}/commits/{sha}", b.api, repo.path)},
                        "protected": false,
                    })
                })
                .collect();
            Ok(paginate(req, items))
        }
        H::Branch => {
            let repo = {
                let st = shared.state.lock().await;
                visible_repo(&st, req)?.clone()
            };
            let name = req.param("branch");
            let Some(sha) = repo.branches.get(name) else {
                return Err(Reply::error(
                    Forge::Github,
                    StatusCode::NOT_FOUND,
                    "Branch not found",
                ));
            };
            let ci = data::commit(shared, &repo.git_dir, sha)
                .await
                .ok_or_else(|| Reply::not_found(Forge::Github, "Commit"))?;
            let st = shared.state.lock().await;
            let ra = format!("{}/repos/{}", b.api, repo.path);
            Ok(Reply::ok(json!({
                "name": name, "commit": commit_json(&st, &b, &repo, &ci, None),
                "_links": {"self": format!("{ra}/branches/{name}"), "html": format!("{}/{}/tree/{name}", b.web, repo.path)},
                "protected": false,
                "protection": {"enabled": false, "required_status_checks": {"enforcement_level": "off", "contexts": [], "checks": []}},
                "protection_url": format!("{ra}/branches/{name}/protection"),
            })))
        }
        H::GitRef => {
            let st = shared.state.lock().await;
            let repo = visible_repo(&st, req)?;
            let r = req.param("ref");
            let sha = r.strip_prefix("heads/").and_then(|b| repo.branches.get(b));
            match sha {
                Some(sha) => Ok(Reply::ok(json!({
                    "ref": format!("refs/{r}"), "node_id": node_id("03:Ref", repo.id),
                    "url": format!("{}/repos/{}/git/refs/{r}", b.api, repo.path),
                    "object": {"type": "commit", "sha": sha, "url": format!("{}/repos/{}/git/commits/{sha}", b.api, repo.path)},
                }))),
                None => Err(Reply::not_found(Forge::Github, "Ref")),
            }
        }
        H::Commit => {
            let repo = {
                let st = shared.state.lock().await;
                visible_repo(&st, req)?.clone()
            };
            let ci = match data::resolve(&repo, req.param("ref")).await {
                Some(sha) => data::commit(shared, &repo.git_dir, &sha).await,
                None => None,
            };
            let Some(ci) = ci else {
                return Err(Reply::invalid(
                    Forge::Github,
                    &format!("No commit found for SHA: {}", req.param("ref")),
                ));
            };
            let files = data::commit_files(shared, &repo.git_dir, &ci).await;
            let st = shared.state.lock().await;
            Ok(Reply::ok(commit_json(&st, &b, &repo, &ci, Some(&files))))
        }
        H::CombinedStatus | H::Statuses | H::CheckRunsForRef => {
            let repo = {
                let st = shared.state.lock().await;
                visible_repo(&st, req)?.clone()
            };
            let Some(sha) = data::resolve(&repo, req.param("ref")).await else {
                return Err(Reply::invalid(
                    Forge::Github,
                    &format!("No commit found for SHA: {}", req.param("ref")),
                ));
            };
            let st = shared.state.lock().await;
            Ok(match h {
                H::CombinedStatus => {
                    let mut v = combined_status_json(&st, &b, &repo, &sha);
                    // The combined status paginates its `statuses` array (per_page, max 100).
                    let per = req
                        .q("per_page")
                        .and_then(|p| p.parse::<usize>().ok())
                        .unwrap_or(30)
                        .clamp(1, 100);
                    let page = req
                        .q("page")
                        .and_then(|p| p.parse::<usize>().ok())
                        .unwrap_or(1)
                        .max(1);
                    if let Some(arr) = v.get_mut("statuses").and_then(Value::as_array_mut) {
                        let kept: Vec<Value> =
                            arr.drain(..).skip((page - 1) * per).take(per).collect();
                        *arr = kept;
                    }
                    Reply::ok(v)
                }
                H::Statuses => paginate(
                    req,
                    repo.statuses_for(&sha)
                        .into_iter()
                        .map(|s| status_json(&st, &b, &repo, s))
                        .collect(),
                ),
                _ => {
                    let mut runs: Vec<&CheckRun> = repo
                        .check_runs
                        .iter()
                        .filter(|c| c.head_sha == sha)
                        .rev()
                        .collect();
                    if req.q("filter").unwrap_or("latest") == "latest" {
                        let mut seen = std::collections::HashSet::new();
                        runs.retain(|c| seen.insert((c.name.clone(), c.app_id)));
                    }
                    if let Some(n) = req.q("check_name") {
                        runs.retain(|c| c.name == n);
                    }
                    if let Some(s) = req.q("status") {
                        runs.retain(|c| c.status == s);
                    }
                    let total = runs.len();
                    let items: Vec<Value> = runs
                        .iter()
                        .map(|c| check_run_json(&st, &b, &repo, c))
                        .collect();
                    let mut page = paginate(req, items);
                    let slice = page.body.take().unwrap_or(Value::Array(Vec::new()));
                    page.body = Some(json!({"total_count": total, "check_runs": slice}));
                    page
                }
            })
        }
        H::CreateStatus => {
            require_auth(req)?;
            let body = req.json()?;
            let state = body.get("state").and_then(Value::as_str).unwrap_or("");
            if !["error", "failure", "pending", "success"].contains(&state) {
                return Err(Reply::invalid(
                    Forge::Github,
                    "Validation Failed: state is not included in the list",
                ));
            }
            let description = body
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_string);
            if description
                .as_ref()
                .is_some_and(|d| d.chars().count() > 140)
            {
                return Err(Reply::invalid(
                    Forge::Github,
                    "Validation Failed: description is too long (maximum is 140 characters)",
                ));
            }
            let spec = super::model::StatusSpec {
                context: body
                    .get("context")
                    .and_then(Value::as_str)
                    .unwrap_or("default")
                    .to_string(),
                state: state.to_string(),
                description,
                target_url: body
                    .get("target_url")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                user: Some(actor(req)),
            };
            let path = {
                let st = shared.state.lock().await;
                visible_repo(&st, req)?.path.clone()
            };
            let sha = req.param("sha").to_string();
            let status = ops::set_status(shared, &path, &sha, spec)
                .await
                .map_err(|e| Reply::invalid(Forge::Github, &e.to_string()))?;
            let st = shared.state.lock().await;
            let repo = visible_repo(&st, req)?;
            Ok(Reply::created(status_json(&st, &b, repo, &status)))
        }
        H::CreateCheckRun | H::UpdateCheckRun => {
            require_auth(req)?;
            {
                let st = shared.state.lock().await;
                visible_repo(&st, req)?;
            }
            let Identity::Token(Token {
                kind:
                    TokenKind::Installation {
                        installation_id, ..
                    },
                ..
            }) = &req.ident
            else {
                return Err(Reply::error(
                    Forge::Github,
                    StatusCode::FORBIDDEN,
                    "You must authenticate via a GitHub App.",
                ));
            };
            let body = req.json()?;
            let mut st = shared.state.lock().await;
            let app_id = st
                .installations
                .get(installation_id)
                .map_or(0, |i| i.app_id);
            let key = repo_key(req);
            let t = now();
            let s = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
            let id = if h == H::CreateCheckRun {
                let (Some(name), Some(head_sha)) = (s("name"), s("head_sha")) else {
                    return Err(Reply::invalid(
                        Forge::Github,
                        "Validation Failed: name and head_sha are required",
                    ));
                };
                let id = st.id();
                let suite_id = st.id();
                let Some(repo) = st.repos.get_mut(&key) else {
                    return Err(Reply::not_found(Forge::Github, "Repository"));
                };
                let conclusion = s("conclusion");
                let status = s("status").unwrap_or_else(|| {
                    if conclusion.is_some() {
                        "completed".into()
                    } else {
                        "queued".into()
                    }
                });
                let output = body.get("output");
                repo.check_runs.push(CheckRun {
                    id,
                    suite_id,
                    head_sha,
                    name,
                    completed_at: if status == "completed" { Some(t) } else { None },
                    started_at: Some(t),
                    status,
                    conclusion,
                    external_id: s("external_id"),
                    details_url: s("details_url"),
                    title: output
                        .and_then(|o| o.get("title"))
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    summary: output
                        .and_then(|o| o.get("summary"))
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    text: output
                        .and_then(|o| o.get("text"))
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    app_id,
                    update_count: 0,
                });
                id
            } else {
                let id: u64 = number(req, "id")?;
                let Some(repo) = st.repos.get_mut(&key) else {
                    return Err(Reply::not_found(Forge::Github, "Repository"));
                };
                let Some(c) = repo.check_runs.iter_mut().find(|c| c.id == id) else {
                    return Err(Reply::not_found(Forge::Github, "CheckRun"));
                };
                if c.app_id != app_id {
                    return Err(Reply::error(
                        Forge::Github,
                        StatusCode::FORBIDDEN,
                        &format!(
                            "Invalid app_id `{app_id}` - check run can only be modified by the GitHub App that created it."
                        ),
                    ));
                }
                if let Some(v) = s("name") {
                    c.name = v;
                }
                if let Some(v) = s("details_url") {
                    c.details_url = Some(v);
                }
                if let Some(v) = s("external_id") {
                    c.external_id = Some(v);
                }
                if let Some(v) = s("conclusion") {
                    c.conclusion = Some(v);
                    c.status = "completed".into();
                    c.completed_at = Some(t);
                }
                if let Some(v) = s("status") {
                    if v == "completed" && c.completed_at.is_none() {
                        c.completed_at = Some(t);
                    }
                    c.status = v;
                }
                if let Some(o) = body.get("output") {
                    let g = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_string);
                    if g("title").is_some() {
                        c.title = g("title");
                    }
                    if g("summary").is_some() {
                        c.summary = g("summary");
                    }
                    if g("text").is_some() {
                        c.text = g("text");
                    }
                }
                c.update_count += 1;
                id
            };
            let repo = &st.repos[&key];
            let c = repo
                .check_runs
                .iter()
                .find(|c| c.id == id)
                .cloned()
                .ok_or_else(|| Reply::not_found(Forge::Github, "CheckRun"))?;
            let v = check_run_json(&st, &b, repo, &c);
            Ok(if h == H::CreateCheckRun {
                Reply::created(v)
            } else {
                Reply::ok(v)
            })
        }
        H::GetCheckRun => {
            let st = shared.state.lock().await;
            let repo = visible_repo(&st, req)?;
            let id: u64 = number(req, "id")?;
            let c = repo
                .check_runs
                .iter()
                .find(|c| c.id == id)
                .ok_or_else(|| Reply::not_found(Forge::Github, "CheckRun"))?;
            Ok(Reply::ok(check_run_json(&st, &b, repo, c)))
        }
        H::CreateDeployment => {
            require_auth(req)?;
            let body = req.json()?;
            let repo = {
                let st = shared.state.lock().await;
                visible_repo(&st, req)?.clone()
            };
            let git_ref = body
                .get("ref")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let Some(sha) = data::resolve(&repo, &git_ref).await else {
                return Err(Reply::error(
                    Forge::Github,
                    StatusCode::CONFLICT,
                    &format!("No ref found for: {git_ref}"),
                ));
            };
            let environment = body
                .get("environment")
                .and_then(Value::as_str)
                .unwrap_or("production")
                .to_string();
            let mut st = shared.state.lock().await;
            let id = st.id();
            let t = now();
            let d = Deployment {
                id,
                iid: 0,
                sha,
                git_ref,
                task: body
                    .get("task")
                    .and_then(Value::as_str)
                    .unwrap_or("deploy")
                    .to_string(),
                production_environment: body
                    .get("production_environment")
                    .and_then(Value::as_bool)
                    .unwrap_or(environment == "production"),
                environment,
                description: body
                    .get("description")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                payload: match body.get("payload") {
                    Some(Value::String(s)) => serde_json::from_str(s).unwrap_or_else(|_| json!(s)),
                    Some(v @ Value::Object(_)) => v.clone(),
                    _ => json!({}),
                },
                creator: actor(req),
                transient_environment: body
                    .get("transient_environment")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                created_at: t,
                updated_at: t,
                statuses: Vec::new(),
            };
            let repo = st
                .repos
                .get_mut(&repo.path)
                .ok_or_else(|| Reply::not_found(Forge::Github, "Repository"))?;
            repo.deployments.push(d.clone());
            let repo = &st.repos[&repo_key(req)];
            Ok(Reply::created(deployment_json(&st, &b, repo, &d)))
        }
        H::Deployments => {
            let st = shared.state.lock().await;
            let repo = visible_repo(&st, req)?;
            let items = repo
                .deployments
                .iter()
                .rev()
                .filter(|d| req.q("sha").is_none_or(|s| s == d.sha))
                .filter(|d| req.q("ref").is_none_or(|s| s == d.git_ref))
                .filter(|d| req.q("task").is_none_or(|s| s == d.task))
                .filter(|d| req.q("environment").is_none_or(|s| s == d.environment))
                .map(|d| deployment_json(&st, &b, repo, d))
                .collect();
            Ok(paginate(req, items))
        }
        H::GetDeployment => {
            let st = shared.state.lock().await;
            let repo = visible_repo(&st, req)?;
            let id: u64 = number(req, "id")?;
            let d = repo
                .deployments
                .iter()
                .find(|d| d.id == id)
                .ok_or_else(|| Reply::not_found(Forge::Github, "Deployment"))?;
            Ok(Reply::ok(deployment_json(&st, &b, repo, d)))
        }
        H::CreateDeploymentStatus => {
            require_auth(req)?;
            let body = req.json()?;
            let state = body
                .get("state")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if ![
                "error",
                "failure",
                "inactive",
                "in_progress",
                "queued",
                "pending",
                "success",
            ]
            .contains(&state.as_str())
            {
                return Err(Reply::invalid(
                    Forge::Github,
                    "Validation Failed: state is not included in the list",
                ));
            }
            let id: u64 = number(req, "id")?;
            let mut st = shared.state.lock().await;
            visible_repo(&st, req)?;
            let sid = st.id();
            let t = now();
            let key = repo_key(req);
            let creator = actor(req);
            let repo = st
                .repos
                .get_mut(&key)
                .ok_or_else(|| Reply::not_found(Forge::Github, "Repository"))?;
            let Some(pos) = repo.deployments.iter().position(|d| d.id == id) else {
                return Err(Reply::not_found(Forge::Github, "Deployment"));
            };
            let s = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
            let status = DeploymentStatus {
                id: sid,
                state: state.clone(),
                description: s("description").unwrap_or_default(),
                environment_url: s("environment_url"),
                log_url: s("log_url").or_else(|| s("target_url")),
                creator: creator.clone(),
                created_at: t,
            };
            if let Some(env) = s("environment") {
                repo.deployments[pos].environment = env;
            }
            repo.deployments[pos].statuses.push(status.clone());
            repo.deployments[pos].updated_at = t;
            // auto_inactive (default true): earlier successful deployments of the same
            // environment become inactive, as on GitHub.
            if state == "success"
                && body
                    .get("auto_inactive")
                    .and_then(Value::as_bool)
                    .unwrap_or(true)
            {
                let env = repo.deployments[pos].environment.clone();
                let mut next = sid;
                for (i, d) in repo.deployments.iter_mut().enumerate() {
                    if i != pos
                        && d.environment == env
                        && !d.transient_environment
                        && d.statuses.last().is_some_and(|s| s.state == "success")
                    {
                        next += 1_000_000;
                        d.statuses.push(DeploymentStatus {
                            id: next,
                            state: "inactive".into(),
                            description: String::new(),
                            environment_url: None,
                            log_url: None,
                            creator: creator.clone(),
                            created_at: t,
                        });
                    }
                }
            }
            let repo = &st.repos[&key];
            Ok(Reply::created(deployment_status_json(
                &st,
                &b,
                repo,
                &repo.deployments[pos],
                &status,
            )))
        }
        H::DeploymentStatuses => {
            let st = shared.state.lock().await;
            let repo = visible_repo(&st, req)?;
            let id: u64 = number(req, "id")?;
            let d = repo
                .deployments
                .iter()
                .find(|d| d.id == id)
                .ok_or_else(|| Reply::not_found(Forge::Github, "Deployment"))?;
            Ok(paginate(
                req,
                d.statuses
                    .iter()
                    .rev()
                    .map(|s| deployment_status_json(&st, &b, repo, d, s))
                    .collect(),
            ))
        }
        H::IssueComments => {
            let st = shared.state.lock().await;
            let repo = visible_repo(&st, req)?;
            let n = number(req, "number")?;
            if !repo.pulls.contains_key(&n) {
                return Err(Reply::not_found(Forge::Github, "Issue"));
            }
            let since = req
                .q("since")
                .and_then(|s| s.parse::<jiff::Timestamp>().ok())
                .map(|t| t.as_second());
            let items = repo
                .comments
                .iter()
                .filter(|c| c.number == n && since.is_none_or(|s| c.updated_at >= s))
                .map(|c| comment_json(&st, &b, repo, c))
                .collect();
            Ok(paginate(req, items))
        }
        H::IssueEvents => {
            // Only label changes are recorded; GitHub lists them as `labeled` / `unlabeled`.
            let st = shared.state.lock().await;
            let repo = visible_repo(&st, req)?;
            let n = number(req, "number")?;
            if !repo.pulls.contains_key(&n) {
                return Err(Reply::not_found(Forge::Github, "Issue"));
            }
            let items = repo
                .label_changes
                .iter()
                .filter(|e| e.number == n)
                .map(|e| label_event_json(&st, &b, repo, e))
                .collect();
            Ok(paginate(req, items))
        }
        H::Issue => {
            let st = shared.state.lock().await;
            let repo = visible_repo(&st, req)?;
            let n = number(req, "number")?;
            let pr = repo
                .pulls
                .get(&n)
                .ok_or_else(|| Reply::not_found(Forge::Github, "Issue"))?;
            Ok(Reply::ok(issue_json(&st, &b, repo, pr)))
        }
        H::CreateIssueComment => {
            require_auth(req)?;
            let body = req.json()?;
            let Some(text) = body.get("body").and_then(Value::as_str) else {
                return Err(Reply::invalid(
                    Forge::Github,
                    "Validation Failed: body is missing",
                ));
            };
            let path = {
                let st = shared.state.lock().await;
                visible_repo(&st, req)?.path.clone()
            };
            let n = number(req, "number")?;
            let c = ops::add_comment(shared, &path, n, &actor(req), text)
                .await
                .map_err(|_| Reply::not_found(Forge::Github, "Issue"))?;
            let st = shared.state.lock().await;
            Ok(Reply::created(comment_json(&st, &b, &st.repos[&path], &c)))
        }
        H::GetIssueComment => {
            let st = shared.state.lock().await;
            let repo = visible_repo(&st, req)?;
            let id: u64 = number(req, "id")?;
            let c = repo
                .comments
                .iter()
                .find(|c| c.id == id)
                .ok_or_else(|| Reply::not_found(Forge::Github, "Comment"))?;
            Ok(Reply::ok(comment_json(&st, &b, repo, c)))
        }
        H::UpdateIssueComment | H::DeleteIssueComment => {
            require_auth(req)?;
            let path = {
                let st = shared.state.lock().await;
                visible_repo(&st, req)?.path.clone()
            };
            let id: u64 = number(req, "id")?;
            if h == H::DeleteIssueComment {
                ops::delete_comment(shared, &path, id)
                    .await
                    .map_err(|_| Reply::not_found(Forge::Github, "Comment"))?;
                return Ok(Reply::no_content());
            }
            let body = req.json()?;
            let Some(text) = body.get("body").and_then(Value::as_str) else {
                return Err(Reply::invalid(
                    Forge::Github,
                    "Validation Failed: body is missing",
                ));
            };
            let c = ops::edit_comment(shared, &path, id, &actor(req), text)
                .await
                .map_err(|_| Reply::not_found(Forge::Github, "Comment"))?;
            let st = shared.state.lock().await;
            Ok(Reply::ok(comment_json(&st, &b, &st.repos[&path], &c)))
        }
    }
}

fn app_jwt_required() -> Reply {
    Reply::error(
        Forge::Github,
        StatusCode::UNAUTHORIZED,
        "A JSON web token could not be decoded",
    )
}

/// Random alphanumeric string (tokens, GUIDs).
pub fn random_token(len: usize) -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}
