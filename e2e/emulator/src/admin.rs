//! The admin API (`/_emulator/...`): JSON over HTTP, used by tests (through
//! [`super::client::AdminClient`]), the demo and benchmark scripts.
//!
//! Flow: match the route, parse the JSON body into a [`super::model`] type, call the
//! operation in [`super::ops`] (which does the git work and emits webhooks) or read the state,
//! answer JSON. Repository paths may contain slashes (GitLab subgroups), so per-repository
//! routes separate the path from the action with `/-/`, as GitLab's own URLs do. Admin
//! requests are never counted, rate-limited or subject to fault injection.
use bytes::Bytes;
use http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::faults::FaultRule;
use super::model::{
    ActorSpec, AppSpec, BranchSpec, CheckRunSpec, CollaboratorSpec, CommentSpec, FaultSpec,
    ForkSpec, HookSpec, InstallationSpec, LabelSpec, MembershipSpec, PullSpec, PullUpdate,
    PushSpec, RateLimitSpec, RepoSpec, ReviewSpec, StatusSpec, TokenInfo, TokenSpec, UserInfo,
    UserSpec,
};
use super::ops;
use super::ratelimit::Bucket;
use super::router::{self, Route, routes};
use super::server::{Resp, json_response};
use super::state::{App, Installation, Membership, Shared, Token, TokenKind, now};
use super::webhooks;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum A {
    Health,
    AddToken,
    RemoveToken,
    SetRateLimit,
    GetRateLimit,
    AddUser,
    AddApp,
    AddInstallation,
    SetMembership,
    RemoveMembership,
    CreateRepo,
    ForkRepo,
    ListRepos,
    RepoInfo,
    SetCollaborator,
    Push,
    Branches,
    CreateBranch,
    DeleteBranch,
    OpenPull,
    ListPulls,
    GetPull,
    UpdatePull,
    PushToPull,
    AddLabel,
    RemoveLabel,
    ClosePull,
    ReopenPull,
    MergePull,
    AddReview,
    AddComment,
    ListComments,
    SetStatus,
    ListStatuses,
    AddCheckRun,
    ListCheckRuns,
    ListDeployments,
    ListEnvironments,
    AddHook,
    ListHooks,
    RemoveHook,
    ListDeliveries,
    GetDelivery,
    Redeliver,
    AddFault,
    ListFaults,
    ClearFaults,
    RemoveFault,
    Requests,
    ResetRequests,
}

static ROUTES: &[Route<A>] = routes![
    A;
    "GET" "/_emulator/health" => Health,
    "POST" "/_emulator/tokens" => AddToken,
    "DELETE" "/_emulator/tokens/{token}" => RemoveToken,
    "PUT" "/_emulator/rate-limits/{client}" => SetRateLimit,
    "GET" "/_emulator/rate-limits/{client}" => GetRateLimit,
    "POST" "/_emulator/users" => AddUser,
    "POST" "/_emulator/apps" => AddApp,
    "POST" "/_emulator/apps/{app_id}/installations" => AddInstallation,
    "PUT" "/_emulator/orgs/{org}/teams/{team}/memberships/{user}" => SetMembership,
    "DELETE" "/_emulator/orgs/{org}/teams/{team}/memberships/{user}" => RemoveMembership,
    "POST" "/_emulator/repos" => CreateRepo,
    "GET" "/_emulator/repos" => ListRepos,
    "GET" "/_emulator/repos/{path*}/-/info" => RepoInfo,
    "POST" "/_emulator/repos/{path*}/-/forks" => ForkRepo,
    "PUT" "/_emulator/repos/{path*}/-/collaborators/{user}" => SetCollaborator,
    "POST" "/_emulator/repos/{path*}/-/commits" => Push,
    "GET" "/_emulator/repos/{path*}/-/branches" => Branches,
    "POST" "/_emulator/repos/{path*}/-/branches" => CreateBranch,
    "DELETE" "/_emulator/repos/{path*}/-/branches/{name*}" => DeleteBranch,
    "POST" "/_emulator/repos/{path*}/-/pulls" => OpenPull,
    "GET" "/_emulator/repos/{path*}/-/pulls" => ListPulls,
    "GET" "/_emulator/repos/{path*}/-/pulls/{n}" => GetPull,
    "PATCH" "/_emulator/repos/{path*}/-/pulls/{n}" => UpdatePull,
    "POST" "/_emulator/repos/{path*}/-/pulls/{n}/commits" => PushToPull,
    "POST" "/_emulator/repos/{path*}/-/pulls/{n}/labels" => AddLabel,
    "DELETE" "/_emulator/repos/{path*}/-/pulls/{n}/labels/{name}" => RemoveLabel,
    "POST" "/_emulator/repos/{path*}/-/pulls/{n}/close" => ClosePull,
    "POST" "/_emulator/repos/{path*}/-/pulls/{n}/reopen" => ReopenPull,
    "POST" "/_emulator/repos/{path*}/-/pulls/{n}/merge" => MergePull,
    "POST" "/_emulator/repos/{path*}/-/pulls/{n}/reviews" => AddReview,
    "POST" "/_emulator/repos/{path*}/-/pulls/{n}/comments" => AddComment,
    "GET" "/_emulator/repos/{path*}/-/pulls/{n}/comments" => ListComments,
    "POST" "/_emulator/repos/{path*}/-/statuses/{sha}" => SetStatus,
    "GET" "/_emulator/repos/{path*}/-/statuses" => ListStatuses,
    "POST" "/_emulator/repos/{path*}/-/check-runs" => AddCheckRun,
    "GET" "/_emulator/repos/{path*}/-/check-runs" => ListCheckRuns,
    "GET" "/_emulator/repos/{path*}/-/deployments" => ListDeployments,
    "GET" "/_emulator/repos/{path*}/-/environments" => ListEnvironments,
    "POST" "/_emulator/repos/{path*}/-/hooks" => AddHook,
    "GET" "/_emulator/repos/{path*}/-/hooks" => ListHooks,
    "DELETE" "/_emulator/repos/{path*}/-/hooks/{id}" => RemoveHook,
    "GET" "/_emulator/deliveries" => ListDeliveries,
    "GET" "/_emulator/deliveries/{id}" => GetDelivery,
    "POST" "/_emulator/deliveries/{id}/redeliver" => Redeliver,
    "POST" "/_emulator/faults" => AddFault,
    "GET" "/_emulator/faults" => ListFaults,
    "DELETE" "/_emulator/faults" => ClearFaults,
    "DELETE" "/_emulator/faults/{id}" => RemoveFault,
    "GET" "/_emulator/requests" => Requests,
    "DELETE" "/_emulator/requests" => ResetRequests,
];

struct AdminErr(StatusCode, String);

impl From<anyhow::Error> for AdminErr {
    fn from(e: anyhow::Error) -> Self {
        let msg = format!("{e:#}");
        let status = if msg.starts_with("no repository") || msg.starts_with("no pull request") {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        AdminErr(status, msg)
    }
}

fn body<T: DeserializeOwned>(b: &Bytes) -> Result<T, AdminErr> {
    let b: &[u8] = if b.is_empty() { b"{}" } else { b };
    serde_json::from_slice(b)
        .map_err(|e| AdminErr(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

fn ok<T: serde::Serialize>(status: StatusCode, v: &T) -> Result<Resp, AdminErr> {
    Ok(json_response(
        status,
        &serde_json::to_value(v).unwrap_or(Value::Null),
    ))
}

/// Handles one admin request.
pub async fn handle(shared: &Shared, parts: &http::request::Parts, b: Bytes) -> Resp {
    let path = parts.uri.path();
    let Some(m) = router::find(ROUTES, parts.method.as_str(), path) else {
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({"message": format!("no admin endpoint {} {path}; see docs/forge-emulator.md", parts.method)}),
        );
    };
    let p = |name: &str| {
        m.params
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(String::new(), |(_, v)| v.clone())
    };
    let query: std::collections::HashMap<String, String> = parts
        .uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let n = || {
        p("n")
            .parse::<u64>()
            .map_err(|_| AdminErr(StatusCode::BAD_REQUEST, "bad number".into()))
    };
    let result: Result<Resp, AdminErr> = async {
        match m.handler {
            A::Health => ok(StatusCode::OK, &json!({"status": "ok", "url": shared.public_url})),
            A::AddToken => {
                let spec: TokenSpec = body(&b)?;
                if spec.token.is_empty() || spec.login.is_empty() {
                    return Err(AdminErr(StatusCode::BAD_REQUEST, "token and login are required".into()));
                }
                let mut st = shared.state.lock().await;
                st.user(&spec.login);
                let limit = spec.rate_limit.unwrap_or(shared.config.default_rate_limit);
                let bucket = Bucket::new(limit, shared.config.rate_limit_window_secs);
                st.buckets.insert(spec.token.clone(), bucket.clone());
                st.tokens.insert(
                    spec.token.clone(),
                    Token {
                        token: spec.token.clone(),
                        login: spec.login.clone(),
                        forge: spec.forge,
                        kind: TokenKind::Personal,
                        repos: spec.repos.clone(),
                        client: spec.token.clone(),
                    },
                );
                ok(StatusCode::CREATED, &TokenInfo { token: spec.token, login: spec.login, limit, remaining: limit, reset: bucket.reset })
            }
            A::RemoveToken => {
                let mut st = shared.state.lock().await;
                st.tokens.remove(&p("token"));
                ok(StatusCode::OK, &json!({}))
            }
            A::SetRateLimit | A::GetRateLimit => {
                let mut st = shared.state.lock().await;
                let client = p("client");
                let default = shared.config.default_rate_limit;
                let window = shared.config.rate_limit_window_secs;
                let bk = st.buckets.entry(client.clone()).or_insert_with(|| Bucket::new(default, window));
                if m.handler == A::SetRateLimit {
                    let spec: RateLimitSpec = body(&b)?;
                    if let Some(w) = spec.window_secs {
                        bk.window_secs = w;
                        bk.reset = now() + w as i64;
                    }
                    if let Some(l) = spec.limit {
                        bk.limit = l;
                        bk.remaining = l;
                    }
                    if let Some(r) = spec.remaining {
                        bk.remaining = r.min(bk.limit);
                    }
                }
                ok(StatusCode::OK, &json!({"client": client, "limit": bk.limit, "remaining": bk.remaining, "used": bk.used(), "reset": bk.reset}))
            }
            A::AddUser => {
                let spec: UserSpec = body(&b)?;
                let mut st = shared.state.lock().await;
                let mut u = st.user(&spec.login);
                if let Some(n) = spec.name {
                    u.name = n;
                }
                if let Some(e) = spec.email {
                    u.email = e;
                }
                if let Some(k) = spec.kind {
                    u.kind = k;
                }
                st.users.insert(u.login.clone(), u.clone());
                ok(StatusCode::CREATED, &UserInfo { id: u.id, login: u.login, name: u.name, email: u.email, kind: u.kind })
            }
            A::AddApp => {
                let spec: AppSpec = body(&b)?;
                jsonwebtoken::DecodingKey::from_rsa_pem(spec.public_key_pem.as_bytes())
                    .map_err(|e| AdminErr(StatusCode::BAD_REQUEST, format!("public_key_pem is not an RSA public key: {e}")))?;
                let mut st = shared.state.lock().await;
                let owner = spec.owner.clone().unwrap_or_else(|| ops::DEFAULT_USER.into());
                st.user(&owner);
                let slug = spec.slug.clone().unwrap_or_else(|| format!("app-{}", spec.app_id));
                st.user(&format!("{slug}[bot]"));
                st.apps.insert(
                    spec.app_id,
                    App { app_id: spec.app_id, slug: slug.clone(), owner, public_key_pem: spec.public_key_pem, created_at: now() },
                );
                ok(StatusCode::CREATED, &json!({"app_id": spec.app_id, "slug": slug}))
            }
            A::AddInstallation => {
                let spec: InstallationSpec = body(&b)?;
                let app_id: u64 = p("app_id").parse().unwrap_or(0);
                let mut st = shared.state.lock().await;
                if !st.apps.contains_key(&app_id) {
                    return Err(AdminErr(StatusCode::NOT_FOUND, format!("no app {app_id}")));
                }
                st.user(&spec.account);
                st.installations.insert(
                    spec.installation_id,
                    Installation {
                        id: spec.installation_id,
                        app_id,
                        account: spec.account.clone(),
                        repositories: spec.repositories.clone(),
                        created_at: now(),
                    },
                );
                let limit = spec.rate_limit.unwrap_or(shared.config.default_rate_limit);
                st.buckets.insert(
                    format!("installation:{}", spec.installation_id),
                    Bucket::new(limit, shared.config.rate_limit_window_secs),
                );
                ok(StatusCode::CREATED, &json!({"installation_id": spec.installation_id, "app_id": app_id}))
            }
            A::SetMembership | A::RemoveMembership => {
                let mut st = shared.state.lock().await;
                let key = (p("org"), p("team"));
                if m.handler == A::RemoveMembership {
                    if let Some(t) = st.teams.get_mut(&key) {
                        t.remove(&p("user"));
                    }
                    return ok(StatusCode::OK, &json!({}));
                }
                let spec: MembershipSpec = body(&b)?;
                st.user(&p("user"));
                st.user(&p("org"));
                let ms = Membership {
                    role: spec.role.unwrap_or_else(|| "member".into()),
                    state: spec.state.unwrap_or_else(|| "active".into()),
                };
                st.teams.entry(key).or_default().insert(p("user"), ms.clone());
                ok(StatusCode::OK, &json!({"role": ms.role, "state": ms.state}))
            }
            A::CreateRepo => {
                let spec: RepoSpec = body(&b)?;
                ok(StatusCode::CREATED, &ops::create_repo(shared, spec, None).await?)
            }
            A::ForkRepo => {
                let fork: ForkSpec = body(&b)?;
                let forge = {
                    let st = shared.state.lock().await;
                    st.repos
                        .get(&p("path"))
                        .map(|r| r.forge)
                        .ok_or_else(|| AdminErr(StatusCode::NOT_FOUND, format!("no repository {}", p("path"))))?
                };
                let spec = RepoSpec { forge, path: fork.path, private: fork.private, ..Default::default() };
                ok(StatusCode::CREATED, &ops::create_repo(shared, spec, Some(p("path"))).await?)
            }
            A::ListRepos => {
                let st = shared.state.lock().await;
                let v: Vec<_> = st.repos.values().map(|r| ops::repo_info(shared, r)).collect();
                ok(StatusCode::OK, &v)
            }
            A::RepoInfo | A::Branches => {
                let st = shared.state.lock().await;
                let r = st.repos.get(&p("path")).ok_or_else(|| AdminErr(StatusCode::NOT_FOUND, format!("no repository {}", p("path"))))?;
                if m.handler == A::Branches {
                    return ok(StatusCode::OK, &r.branches);
                }
                ok(StatusCode::OK, &ops::repo_info(shared, r))
            }
            A::SetCollaborator => {
                let spec: CollaboratorSpec = body(&b)?;
                let mut st = shared.state.lock().await;
                st.user(&p("user"));
                let r = st.repos.get_mut(&p("path")).ok_or_else(|| AdminErr(StatusCode::NOT_FOUND, format!("no repository {}", p("path"))))?;
                r.collaborators.insert(p("user"), spec.permission.clone());
                ok(StatusCode::OK, &json!({"user": p("user"), "permission": spec.permission}))
            }
            A::Push => ok(StatusCode::CREATED, &ops::push(shared, &p("path"), body::<PushSpec>(&b)?).await?),
            A::CreateBranch => ok(StatusCode::CREATED, &ops::create_branch(shared, &p("path"), body::<BranchSpec>(&b)?).await?),
            A::DeleteBranch => {
                ops::delete_branch(shared, &p("path"), &p("name")).await?;
                ok(StatusCode::OK, &json!({}))
            }
            A::OpenPull => ok(StatusCode::CREATED, &ops::open_pull(shared, &p("path"), body::<PullSpec>(&b)?).await?),
            A::ListPulls | A::GetPull => {
                let st = shared.state.lock().await;
                let r = st.repos.get(&p("path")).ok_or_else(|| AdminErr(StatusCode::NOT_FOUND, format!("no repository {}", p("path"))))?;
                if m.handler == A::ListPulls {
                    let v: Vec<_> = r.pulls.values().map(|pr| ops::pull_info(r, pr)).collect();
                    return ok(StatusCode::OK, &v);
                }
                let pr = r.pulls.get(&n()?).ok_or_else(|| AdminErr(StatusCode::NOT_FOUND, "no pull request".into()))?;
                ok(StatusCode::OK, &ops::pull_info(r, pr))
            }
            A::UpdatePull => ok(StatusCode::OK, &ops::update_pull(shared, &p("path"), n()?, body::<PullUpdate>(&b)?).await?),
            A::PushToPull => ok(StatusCode::CREATED, &ops::push_to_pull(shared, &p("path"), n()?, body::<PushSpec>(&b)?).await?),
            A::AddLabel => ok(StatusCode::OK, &ops::add_label(shared, &p("path"), n()?, body::<LabelSpec>(&b)?).await?),
            A::RemoveLabel => {
                let user = query.get("user").cloned();
                ok(StatusCode::OK, &ops::remove_label(shared, &p("path"), n()?, &p("name"), user).await?)
            }
            A::ClosePull => ok(StatusCode::OK, &ops::close_pull(shared, &p("path"), n()?, body::<ActorSpec>(&b)?.user).await?),
            A::ReopenPull => ok(StatusCode::OK, &ops::reopen_pull(shared, &p("path"), n()?, body::<ActorSpec>(&b)?.user).await?),
            A::MergePull => ok(StatusCode::OK, &ops::merge_pull(shared, &p("path"), n()?, body::<ActorSpec>(&b)?.user).await?),
            A::AddReview => ok(StatusCode::CREATED, &ops::add_review(shared, &p("path"), n()?, body::<ReviewSpec>(&b)?).await?),
            A::AddComment => {
                let spec: CommentSpec = body(&b)?;
                let c = ops::add_comment(shared, &p("path"), n()?, &spec.user, &spec.body).await?;
                ok(StatusCode::CREATED, &ops::comment_info(&c))
            }
            A::ListComments => {
                let st = shared.state.lock().await;
                let r = st.repos.get(&p("path")).ok_or_else(|| AdminErr(StatusCode::NOT_FOUND, format!("no repository {}", p("path"))))?;
                let num = n()?;
                let v: Vec<_> = r.comments.iter().filter(|c| c.number == num).map(ops::comment_info).collect();
                ok(StatusCode::OK, &v)
            }
            A::SetStatus => {
                let s = ops::set_status(shared, &p("path"), &p("sha"), body::<StatusSpec>(&b)?).await?;
                ok(StatusCode::CREATED, &ops::status_info(&s))
            }
            A::ListStatuses | A::ListCheckRuns | A::ListDeployments | A::ListEnvironments | A::ListHooks => {
                let st = shared.state.lock().await;
                let r = st.repos.get(&p("path")).ok_or_else(|| AdminErr(StatusCode::NOT_FOUND, format!("no repository {}", p("path"))))?;
                let sha = query.get("sha");
                match m.handler {
                    A::ListStatuses => {
                        let v: Vec<_> = r.statuses.iter().filter(|s| sha.is_none_or(|x| *x == s.sha)).map(ops::status_info).collect();
                        ok(StatusCode::OK, &v)
                    }
                    A::ListCheckRuns => {
                        let v: Vec<_> =
                            r.check_runs.iter().filter(|c| sha.is_none_or(|x| *x == c.head_sha)).map(ops::check_run_info).collect();
                        ok(StatusCode::OK, &v)
                    }
                    A::ListDeployments => ok(StatusCode::OK, &ops::deployment_infos(r)),
                    A::ListEnvironments => ok(StatusCode::OK, &ops::environment_infos(r)),
                    _ => {
                        let v: Vec<_> = r.hooks.iter().map(ops::hook_info).collect();
                        ok(StatusCode::OK, &v)
                    }
                }
            }
            A::AddCheckRun => ok(StatusCode::CREATED, &ops::add_check_run(shared, &p("path"), body::<CheckRunSpec>(&b)?).await?),
            A::AddHook => ok(StatusCode::CREATED, &ops::add_hook(shared, &p("path"), body::<HookSpec>(&b)?).await?),
            A::RemoveHook => {
                let mut st = shared.state.lock().await;
                let id: u64 = p("id").parse().unwrap_or(0);
                let r = st.repos.get_mut(&p("path")).ok_or_else(|| AdminErr(StatusCode::NOT_FOUND, format!("no repository {}", p("path"))))?;
                r.hooks.retain(|h| h.id != id);
                ok(StatusCode::OK, &json!({}))
            }
            A::ListDeliveries => {
                let st = shared.state.lock().await;
                let v: Vec<_> = st
                    .deliveries
                    .iter()
                    .map(|d| &d.info)
                    .filter(|d| query.get("repo").is_none_or(|r| *r == d.repo))
                    .filter(|d| query.get("event").is_none_or(|e| *e == d.event))
                    .filter(|d| query.get("hook_id").is_none_or(|h| *h == d.hook_id.to_string()))
                    .filter(|d| query.get("outcome").is_none_or(|o| *o == d.outcome))
                    .cloned()
                    .collect();
                ok(StatusCode::OK, &v)
            }
            A::GetDelivery => {
                let st = shared.state.lock().await;
                let id: u64 = p("id").parse().unwrap_or(0);
                let d = st.deliveries.iter().find(|d| d.info.id == id).ok_or_else(|| AdminErr(StatusCode::NOT_FOUND, "no delivery".into()))?;
                ok(StatusCode::OK, &d.info)
            }
            A::Redeliver => {
                let id: u64 = p("id").parse().unwrap_or(0);
                let d = webhooks::redeliver(shared, id).await.ok_or_else(|| AdminErr(StatusCode::NOT_FOUND, "no delivery".into()))?;
                ok(StatusCode::CREATED, &d)
            }
            A::AddFault => {
                let spec: FaultSpec = body(&b)?;
                let mut st = shared.state.lock().await;
                let id = st.id();
                let rule = FaultRule { id, spec, hits: 0 };
                let info = rule.info();
                st.faults.push(rule);
                ok(StatusCode::CREATED, &info)
            }
            A::ListFaults => {
                let st = shared.state.lock().await;
                let v: Vec<_> = st.faults.iter().map(FaultRule::info).collect();
                ok(StatusCode::OK, &v)
            }
            A::ClearFaults => {
                shared.state.lock().await.faults.clear();
                ok(StatusCode::OK, &json!({}))
            }
            A::RemoveFault => {
                let id: u64 = p("id").parse().unwrap_or(0);
                shared.state.lock().await.faults.retain(|f| f.id != id);
                ok(StatusCode::OK, &json!({}))
            }
            A::Requests => {
                let st = shared.state.lock().await;
                ok(StatusCode::OK, &st.counters.counts)
            }
            A::ResetRequests => {
                shared.state.lock().await.counters = Default::default();
                ok(StatusCode::OK, &json!({}))
            }
        }
    }
    .await;
    match result {
        Ok(r) => r,
        Err(AdminErr(status, message)) => json_response(status, &json!({ "message": message })),
    }
}
