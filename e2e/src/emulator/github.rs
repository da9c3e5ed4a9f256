//! The GitHub REST API (served at `/` and at `/api/v3`, the Enterprise layout).
//!
//! Flow: [`ROUTES`] maps method + template to an [`H`] tag; [`dispatch`] resolves the
//! repository (404 when the caller may not see it, like GitHub), reads what it needs from the
//! state and from git ([`super::data`]), and builds bodies with the `*_json` builders below.
//! The builders are also used for webhook payloads, so REST and webhooks agree. Every body
//! validates against the response schemas in `e2e/fixtures/github/rest/schemas` (tested).
use base64::Engine;
use http::StatusCode;
use serde_json::{Value, json};

use super::auth::{Identity, can_see, installation_covers};
use super::data::{self, PrFacts, commit_author_login, pr_base_sha};
use super::git::{CommitInfo, FileDiff};
use super::model::Forge;
use super::ops;
use super::reply::{ApiRequest, Reply, merge, paginate};
use super::router::Route;
use super::state::{
    CheckRun, Comment, Deployment, DeploymentStatus, Installation, LabelChange, Pull, Repo, Review,
    Shared, State, Status, Token, TokenKind, User, iso, now,
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

macro_rules! r {
    ($m:literal, $t:literal, $h:ident) => {
        Route {
            method: $m,
            template: $t,
            handler: H::$h,
        }
    };
}

/// The implemented GitHub endpoints.
pub static ROUTES: &[Route<H>] = &[
    r!("GET", "/rate_limit", RateLimit),
    r!("GET", "/user", User),
    r!("GET", "/app", App),
    r!(
        "POST",
        "/app/installations/{installation_id}/access_tokens",
        CreateInstallationToken
    ),
    r!(
        "GET",
        "/orgs/{org}/teams/{team}/memberships/{username}",
        TeamMembership
    ),
    r!("GET", "/repos/{owner}/{repo}", Repo),
    r!(
        "GET",
        "/repos/{owner}/{repo}/installation",
        RepoInstallation
    ),
    r!(
        "GET",
        "/repos/{owner}/{repo}/collaborators/{username}/permission",
        CollaboratorPermission
    ),
    r!("GET", "/repos/{owner}/{repo}/pulls", Pulls),
    r!("GET", "/repos/{owner}/{repo}/pulls/{number}", Pull),
    r!(
        "GET",
        "/repos/{owner}/{repo}/pulls/{number}/files",
        PullFiles
    ),
    r!(
        "GET",
        "/repos/{owner}/{repo}/pulls/{number}/reviews",
        PullReviews
    ),
    r!(
        "GET",
        "/repos/{owner}/{repo}/pulls/{number}/commits",
        PullCommits
    ),
    r!("GET", "/repos/{owner}/{repo}/branches", Branches),
    r!("GET", "/repos/{owner}/{repo}/branches/{branch*}", Branch),
    r!("GET", "/repos/{owner}/{repo}/git/ref/{ref*}", GitRef),
    r!(
        "GET",
        "/repos/{owner}/{repo}/commits/{ref*}/status",
        CombinedStatus
    ),
    r!(
        "GET",
        "/repos/{owner}/{repo}/commits/{ref*}/statuses",
        Statuses
    ),
    r!(
        "GET",
        "/repos/{owner}/{repo}/commits/{ref*}/check-runs",
        CheckRunsForRef
    ),
    r!("GET", "/repos/{owner}/{repo}/commits/{ref*}", Commit),
    r!("POST", "/repos/{owner}/{repo}/statuses/{sha}", CreateStatus),
    r!("POST", "/repos/{owner}/{repo}/check-runs", CreateCheckRun),
    r!("GET", "/repos/{owner}/{repo}/check-runs/{id}", GetCheckRun),
    r!(
        "PATCH",
        "/repos/{owner}/{repo}/check-runs/{id}",
        UpdateCheckRun
    ),
    // GitHub accepts POST for PATCH endpoints (some clients, octocrab among them, use it).
    r!(
        "POST",
        "/repos/{owner}/{repo}/check-runs/{id}",
        UpdateCheckRun
    ),
    r!(
        "POST",
        "/repos/{owner}/{repo}/deployments",
        CreateDeployment
    ),
    r!("GET", "/repos/{owner}/{repo}/deployments", Deployments),
    r!(
        "GET",
        "/repos/{owner}/{repo}/deployments/{id}",
        GetDeployment
    ),
    r!(
        "POST",
        "/repos/{owner}/{repo}/deployments/{id}/statuses",
        CreateDeploymentStatus
    ),
    r!(
        "GET",
        "/repos/{owner}/{repo}/deployments/{id}/statuses",
        DeploymentStatuses
    ),
    r!(
        "GET",
        "/repos/{owner}/{repo}/issues/comments/{id}",
        GetIssueComment
    ),
    r!(
        "PATCH",
        "/repos/{owner}/{repo}/issues/comments/{id}",
        UpdateIssueComment
    ),
    r!(
        "POST",
        "/repos/{owner}/{repo}/issues/comments/{id}",
        UpdateIssueComment
    ),
    r!(
        "DELETE",
        "/repos/{owner}/{repo}/issues/comments/{id}",
        DeleteIssueComment
    ),
    r!(
        "GET",
        "/repos/{owner}/{repo}/issues/{number}/comments",
        IssueComments
    ),
    r!(
        "POST",
        "/repos/{owner}/{repo}/issues/{number}/comments",
        CreateIssueComment
    ),
    r!(
        "GET",
        "/repos/{owner}/{repo}/issues/{number}/events",
        IssueEvents
    ),
    r!("GET", "/repos/{owner}/{repo}/issues/{number}", Issue),
];

/// Absolute URL roots for building bodies: from the request (REST) or the emulator's own URL
/// (webhooks).
#[derive(Debug, Clone)]
pub struct Bases {
    pub api: String,
    pub web: String,
}

impl Bases {
    /// From a request.
    pub fn of(req: &ApiRequest) -> Self {
        Self {
            api: req.api_base(),
            web: req.web_base(),
        }
    }
}

fn node_id(kind: &str, id: u64) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{kind}{id}"))
}

/// `simple-user`.
pub fn user_json(b: &Bases, u: &User) -> Value {
    let (a, w, l) = (&b.api, &b.web, &u.login);
    merge([
        json!({
            "login": l, "id": u.id, "node_id": node_id("04:User", u.id),
            "avatar_url": format!("{w}/avatars/{l}"), "gravatar_id": "",
            "url": format!("{a}/users/{l}"), "html_url": format!("{w}/{l}"),
            "followers_url": format!("{a}/users/{l}/followers"),
            "following_url": format!("{a}/users/{l}/following{{/other_user}}"),
            "gists_url": format!("{a}/users/{l}/gists{{/gist_id}}"),
        }),
        json!({
            "starred_url": format!("{a}/users/{l}/starred{{/owner}}{{/repo}}"),
            "subscriptions_url": format!("{a}/users/{l}/subscriptions"),
            "organizations_url": format!("{a}/users/{l}/orgs"),
            "repos_url": format!("{a}/users/{l}/repos"),
            "events_url": format!("{a}/users/{l}/events{{/privacy}}"),
            "received_events_url": format!("{a}/users/{l}/received_events"),
            "type": u.kind, "user_view_type": "public", "site_admin": false,
        }),
    ])
}

/// `repository` / `full-repository` (a superset of both schemas' required fields).
pub fn repo_json(st: &State, b: &Bases, repo: &Repo, viewer: Option<&str>) -> Value {
    let (a, w) = (&b.api, &b.web);
    let full = &repo.path;
    let ra = format!("{a}/repos/{full}");
    let owner = st.user_ro(&repo.owner);
    let open = repo.pulls.values().filter(|p| p.open).count();
    let perm = viewer.map(|v| permission_of(repo, v)).unwrap_or("read");
    let rank = perm_rank(perm);
    merge([
        json!({
            "id": repo.id, "node_id": node_id("010:Repository", repo.id), "name": repo.name, "full_name": full,
            "owner": user_json(b, &owner), "private": repo.private,
            "html_url": format!("{w}/{full}"), "description": repo.description, "fork": repo.fork_of.is_some(),
            "url": ra,
            "archive_url": format!("{ra}/{{archive_format}}{{/ref}}"),
            "assignees_url": format!("{ra}/assignees{{/user}}"),
            "blobs_url": format!("{ra}/git/blobs{{/sha}}"),
            "branches_url": format!("{ra}/branches{{/branch}}"),
            "collaborators_url": format!("{ra}/collaborators{{/collaborator}}"),
            "comments_url": format!("{ra}/comments{{/number}}"),
            "commits_url": format!("{ra}/commits{{/sha}}"),
            "compare_url": format!("{ra}/compare/{{base}}...{{head}}"),
            "contents_url": format!("{ra}/contents/{{+path}}"),
            "contributors_url": format!("{ra}/contributors"),
            "deployments_url": format!("{ra}/deployments"),
            "downloads_url": format!("{ra}/downloads"),
            "events_url": format!("{ra}/events"),
        }),
        json!({
            "forks_url": format!("{ra}/forks"),
            "git_commits_url": format!("{ra}/git/commits{{/sha}}"),
            "git_refs_url": format!("{ra}/git/refs{{/sha}}"),
            "git_tags_url": format!("{ra}/git/tags{{/sha}}"),
            "git_url": format!("{}/{full}.git", w.replacen("http://", "git://", 1)),
            "issue_comment_url": format!("{ra}/issues/comments{{/number}}"),
            "issue_events_url": format!("{ra}/issues/events{{/number}}"),
            "issues_url": format!("{ra}/issues{{/number}}"),
            "keys_url": format!("{ra}/keys{{/key_id}}"),
            "labels_url": format!("{ra}/labels{{/name}}"),
            "languages_url": format!("{ra}/languages"),
            "merges_url": format!("{ra}/merges"),
            "milestones_url": format!("{ra}/milestones{{/number}}"),
            "notifications_url": format!("{ra}/notifications{{?since,all,participating}}"),
            "pulls_url": format!("{ra}/pulls{{/number}}"),
            "releases_url": format!("{ra}/releases{{/id}}"),
        }),
        json!({
            "ssh_url": format!("git@{}:{full}.git", w.trim_start_matches("http://")),
            "stargazers_url": format!("{ra}/stargazers"),
            "statuses_url": format!("{ra}/statuses/{{sha}}"),
            "subscribers_url": format!("{ra}/subscribers"),
            "subscription_url": format!("{ra}/subscription"),
            "tags_url": format!("{ra}/tags"),
            "teams_url": format!("{ra}/teams"),
            "trees_url": format!("{ra}/git/trees{{/sha}}"),
            "clone_url": format!("{w}/{full}.git"),
            "mirror_url": null,
            "hooks_url": format!("{ra}/hooks"),
            "svn_url": format!("{w}/{full}"),
            "homepage": null, "language": null,
            "forks_count": 0, "forks": 0, "stargazers_count": 0, "watchers_count": 0, "watchers": 0,
        }),
        json!({
            "size": 1, "default_branch": repo.default_branch,
            "open_issues_count": open, "open_issues": open,
            "is_template": false, "topics": [],
            "has_issues": true, "has_projects": true, "has_wiki": true, "has_pages": false,
            "has_downloads": true, "has_discussions": false,
            "archived": false, "disabled": false,
            "visibility": if repo.private { "private" } else { "public" },
            "pushed_at": iso(repo.pushed_at), "created_at": iso(repo.created_at), "updated_at": iso(repo.updated_at),
            "permissions": {
                "admin": rank >= 4, "maintain": rank >= 3, "push": rank >= 2, "triage": rank >= 1, "pull": true
            },
            "allow_rebase_merge": true, "allow_squash_merge": true, "allow_merge_commit": true,
            "allow_auto_merge": false, "delete_branch_on_merge": false, "allow_forking": true,
            "web_commit_signoff_required": false,
            "license": null,
            "network_count": 0, "subscribers_count": 0, "custom_properties": {},
        }),
    ])
}

fn perm_rank(p: &str) -> u8 {
    match p {
        "admin" => 4,
        "maintain" => 3,
        "write" | "push" => 2,
        "triage" => 1,
        _ => 0,
    }
}

/// A user's role on a repository: explicit grant, else admin for the owner, else read.
pub fn permission_of<'a>(repo: &'a Repo, login: &str) -> &'a str {
    if let Some(p) = repo.collaborators.get(login) {
        return p.as_str();
    }
    if repo.owner == login { "admin" } else { "read" }
}

fn author_association(repo: &Repo, login: &str) -> &'static str {
    if repo.owner == login {
        "OWNER"
    } else if repo.collaborators.contains_key(login) {
        "COLLABORATOR"
    } else {
        "CONTRIBUTOR"
    }
}

/// `label`.
pub fn label_json(b: &Bases, repo: &Repo, name: &str) -> Value {
    let l = repo.labels.get(name);
    let id = l.map_or(0, |l| l.id);
    json!({
        "id": id, "node_id": node_id("05:Label", id),
        "url": format!("{}/repos/{}/labels/{}", b.api, repo.path, percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC)),
        "name": name, "description": l.and_then(|l| l.description.clone()).unwrap_or_default(),
        "color": l.map_or_else(|| "ededed".to_string(), |l| l.color.clone()), "default": false,
    })
}

fn branch_end(st: &State, b: &Bases, repo: &Repo, git_ref: &str, sha: &str) -> Value {
    json!({
        "label": format!("{}:{}", repo.owner, git_ref),
        "ref": git_ref,
        "sha": sha,
        "user": user_json(b, &st.user_ro(&repo.owner)),
        "repo": repo_json(st, b, repo, None),
    })
}

/// `pull-request` (full) or `pull-request-simple` (`full == false`).
pub fn pull_json(
    st: &State,
    b: &Bases,
    repo: &Repo,
    pr: &Pull,
    facts: &PrFacts,
    full: bool,
) -> Value {
    let (a, w) = (&b.api, &b.web);
    let ra = format!("{a}/repos/{}", repo.path);
    let n = pr.number;
    let html = format!("{w}/{}/pull/{n}", repo.path);
    let head_repo = st.repos.get(&pr.head_repo).unwrap_or(repo);
    let comments = repo.comments.iter().filter(|c| c.number == n).count();
    let links = json!({
        "self": {"href": format!("{ra}/pulls/{n}")},
        "html": {"href": html},
        "issue": {"href": format!("{ra}/issues/{n}")},
        "comments": {"href": format!("{ra}/issues/{n}/comments")},
        "review_comments": {"href": format!("{ra}/pulls/{n}/comments")},
        "review_comment": {"href": format!("{ra}/pulls/comments{{/number}}")},
        "commits": {"href": format!("{ra}/pulls/{n}/commits")},
        "statuses": {"href": format!("{ra}/statuses/{}", pr.head_sha)},
    });
    let mut v = merge([
        json!({
            "url": format!("{ra}/pulls/{n}"), "id": pr.id, "node_id": node_id("011:PullRequest", pr.id),
            "html_url": html, "diff_url": format!("{html}.diff"), "patch_url": format!("{html}.patch"),
            "issue_url": format!("{ra}/issues/{n}"),
            "commits_url": format!("{ra}/pulls/{n}/commits"),
            "review_comments_url": format!("{ra}/pulls/{n}/comments"),
            "review_comment_url": format!("{ra}/pulls/comments{{/number}}"),
            "comments_url": format!("{ra}/issues/{n}/comments"),
            "statuses_url": format!("{ra}/statuses/{}", pr.head_sha),
        }),
        json!({
            "number": n, "state": if pr.open { "open" } else { "closed" }, "locked": false,
            "title": pr.title, "user": user_json(b, &st.user_ro(&pr.author)), "body": pr.body,
            "labels": pr.labels.iter().map(|l| label_json(b, repo, l)).collect::<Vec<_>>(),
            "milestone": null, "active_lock_reason": null,
            "created_at": iso(pr.created_at), "updated_at": iso(pr.updated_at),
            "closed_at": pr.closed_at.map(iso), "merged_at": pr.merged_at.map(iso),
            "merge_commit_sha": pr.merge_commit_sha,
            "assignee": null, "assignees": [], "requested_reviewers": [], "requested_teams": [],
            "head": branch_end(st, b, head_repo, &pr.head_ref, &pr.head_sha),
            "base": branch_end(st, b, repo, &pr.base_ref, &facts.base_sha),
            "_links": links,
            "author_association": author_association(repo, &pr.author),
            "auto_merge": null, "draft": pr.draft,
        }),
    ]);
    if full && let Some(m) = v.as_object_mut() {
        m.insert("merged".into(), json!(pr.merged));
        m.insert(
            "mergeable".into(),
            if pr.open { json!(true) } else { Value::Null },
        );
        m.insert(
            "rebaseable".into(),
            if pr.open { json!(true) } else { Value::Null },
        );
        let ms = if !pr.open {
            "unknown"
        } else if pr.draft {
            "draft"
        } else {
            "clean"
        };
        m.insert("mergeable_state".into(), json!(ms));
        m.insert(
            "merged_by".into(),
            pr.merged_by
                .as_ref()
                .map_or(Value::Null, |u| user_json(b, &st.user_ro(u))),
        );
        m.insert("comments".into(), json!(comments));
        m.insert("review_comments".into(), json!(0));
        m.insert("maintainer_can_modify".into(), json!(false));
        m.insert("commits".into(), json!(facts.commits.len()));
        m.insert("additions".into(), json!(facts.additions));
        m.insert("deletions".into(), json!(facts.deletions));
        m.insert("changed_files".into(), json!(facts.files.len()));
    }
    v
}

/// `diff-entry`.
pub fn diff_entry_json(b: &Bases, repo: &Repo, head_sha: &str, f: &FileDiff) -> Value {
    let path_enc = f
        .filename
        .split('/')
        .map(|s| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        })
        .collect::<Vec<_>>()
        .join("/");
    let mut v = json!({
        "sha": if f.status == "removed" { f.old_sha.clone() } else { f.new_sha.clone() },
        "filename": f.filename, "status": f.status,
        "additions": f.additions, "deletions": f.deletions, "changes": f.additions + f.deletions,
        "blob_url": format!("{}/{}/blob/{head_sha}/{path_enc}", b.web, repo.path),
        "raw_url": format!("{}/{}/raw/{head_sha}/{path_enc}", b.web, repo.path),
        "contents_url": format!("{}/repos/{}/contents/{path_enc}?ref={head_sha}", b.api, repo.path),
    });
    if let Some(m) = v.as_object_mut() {
        if let Some(p) = &f.patch {
            m.insert("patch".into(), json!(p));
        }
        if let Some(p) = &f.previous_filename {
            m.insert("previous_filename".into(), json!(p));
        }
    }
    v
}

/// `commit` (with `files` and `stats` when given).
pub fn commit_json(
    st: &State,
    b: &Bases,
    repo: &Repo,
    ci: &CommitInfo,
    files: Option<&[FileDiff]>,
) -> Value {
    let ra = format!("{}/repos/{}", b.api, repo.path);
    let meta = repo.commit_meta.get(&ci.sha).cloned().unwrap_or_default();
    let author =
        commit_author_login(st, repo, ci).map_or(Value::Null, |l| user_json(b, &st.user_ro(&l)));
    let committer = if meta.verified {
        user_json(b, &st.user_ro("web-flow"))
    } else {
        author.clone()
    };
    let mut v = json!({
        "url": format!("{ra}/commits/{}", ci.sha), "sha": ci.sha, "node_id": node_id("06:Commit", ci.committer_time as u64),
        "html_url": format!("{}/{}/commit/{}", b.web, repo.path, ci.sha),
        "comments_url": format!("{ra}/commits/{}/comments", ci.sha),
        "commit": {
            "url": format!("{ra}/git/commits/{}", ci.sha),
            "author": {"name": ci.author_name, "email": ci.author_email, "date": iso(ci.author_time)},
            "committer": {"name": ci.committer_name, "email": ci.committer_email, "date": iso(ci.committer_time)},
            "message": ci.message,
            "tree": {"url": format!("{ra}/git/trees/{}", ci.tree), "sha": ci.tree},
            "comment_count": 0,
            "verification": {
                "verified": meta.verified,
                "reason": if meta.verified { "valid" } else { "unsigned" },
                "signature": if meta.verified { json!("-----BEGIN PGP SIGNATURE-----\nforge-emulator\n-----END PGP SIGNATURE-----") } else { Value::Null },
                "payload": if meta.verified { json!(format!("tree {}\n", ci.tree)) } else { Value::Null },
                "verified_at": if meta.verified { json!(iso(ci.committer_time)) } else { Value::Null },
            },
        },
        "author": author, "committer": committer,
        "parents": ci.parents.iter().map(|p| json!({
            "sha": p, "url": format!("{ra}/commits/{p}"), "html_url": format!("{}/{}/commit/{p}", b.web, repo.path)
        })).collect::<Vec<_>>(),
    });
    if let (Some(files), Some(m)) = (files, v.as_object_mut()) {
        let add: u64 = files.iter().map(|f| f.additions).sum();
        let del: u64 = files.iter().map(|f| f.deletions).sum();
        m.insert(
            "stats".into(),
            json!({"additions": add, "deletions": del, "total": add + del}),
        );
        m.insert(
            "files".into(),
            json!(
                files
                    .iter()
                    .map(|f| diff_entry_json(b, repo, &ci.sha, f))
                    .collect::<Vec<_>>()
            ),
        );
    }
    v
}

/// `status`.
pub fn status_json(st: &State, b: &Bases, repo: &Repo, s: &Status) -> Value {
    json!({
        "url": format!("{}/repos/{}/statuses/{}", b.api, repo.path, s.sha),
        "avatar_url": format!("{}/avatars/{}", b.web, s.creator),
        "id": s.id, "node_id": node_id("013:StatusContext", s.id),
        "state": s.state, "description": s.description, "target_url": s.target_url, "context": s.context,
        "created_at": iso(s.created_at), "updated_at": iso(s.updated_at),
        "creator": user_json(b, &st.user_ro(&s.creator)),
    })
}

/// `combined-commit-status`.
pub fn combined_status_json(st: &State, b: &Bases, repo: &Repo, sha: &str) -> Value {
    let latest = latest_statuses(repo, sha);
    let state = combined_state(latest.iter().map(|s| s.state.as_str()));
    json!({
        "state": state, "sha": sha, "total_count": latest.len(),
        "statuses": latest.iter().map(|s| {
            let mut v = status_json(st, b, repo, s);
            if let Some(m) = v.as_object_mut() { m.remove("creator"); m.insert("required".into(), json!(false)); }
            v
        }).collect::<Vec<_>>(),
        "repository": repo_json(st, b, repo, None),
        "commit_url": format!("{}/repos/{}/commits/{sha}", b.api, repo.path),
        "url": format!("{}/repos/{}/commits/{sha}/status", b.api, repo.path),
    })
}

/// The newest status per context of one commit.
pub fn latest_statuses<'a>(repo: &'a Repo, sha: &str) -> Vec<&'a Status> {
    let mut seen = std::collections::HashSet::new();
    repo.statuses_for(sha)
        .into_iter()
        .filter(|s| seen.insert(s.context.clone()))
        .collect()
}

/// GitHub's combined state: failure if any error/failure, pending if any pending or none,
/// else success.
pub fn combined_state<'a>(states: impl Iterator<Item = &'a str>) -> &'static str {
    let v: Vec<&str> = states.collect();
    if v.iter().any(|s| *s == "failure" || *s == "error") {
        "failure"
    } else if v.is_empty() || v.contains(&"pending") {
        "pending"
    } else {
        "success"
    }
}

fn app_json(st: &State, b: &Bases, app_id: u64) -> Value {
    let app = st.apps.get(&app_id);
    let slug = app.map_or_else(|| "external-ci".to_string(), |a| a.slug.clone());
    let owner = st.user_ro(app.map_or("emulator", |a| a.owner.as_str()));
    let created = app.map_or(0, |a| a.created_at);
    json!({
        "id": app_id, "slug": slug, "node_id": node_id("03:Integration", app_id),
        "client_id": format!("Iv1.{app_id:016x}"),
        "owner": user_json(b, &owner), "name": slug, "description": "",
        "external_url": format!("{}/apps/{slug}", b.web), "html_url": format!("{}/apps/{slug}", b.web),
        "created_at": iso(created), "updated_at": iso(created),
        "permissions": {"checks": "write", "metadata": "read", "pull_requests": "write", "statuses": "write", "contents": "read"},
        "events": ["pull_request", "push", "pull_request_review", "issue_comment"],
    })
}

/// `check-run`.
pub fn check_run_json(st: &State, b: &Bases, repo: &Repo, c: &CheckRun) -> Value {
    let ra = format!("{}/repos/{}", b.api, repo.path);
    let prs: Vec<Value> = repo
        .pulls
        .values()
        .filter(|p| p.open && p.head_sha == c.head_sha)
        .map(|p| {
            let base = pr_base_sha(repo, p);
            json!({
                "url": format!("{ra}/pulls/{}", p.number), "id": p.id, "number": p.number,
                "head": {"ref": p.head_ref, "sha": p.head_sha, "repo": {"id": repo.id, "url": ra, "name": repo.name}},
                "base": {"ref": p.base_ref, "sha": base, "repo": {"id": repo.id, "url": ra, "name": repo.name}},
            })
        })
        .collect();
    json!({
        "id": c.id, "head_sha": c.head_sha, "node_id": node_id("08:CheckRun", c.id), "external_id": c.external_id,
        "url": format!("{ra}/check-runs/{}", c.id), "html_url": format!("{}/{}/runs/{}", b.web, repo.path, c.id),
        "details_url": c.details_url, "status": c.status, "conclusion": c.conclusion,
        "started_at": c.started_at.map(iso), "completed_at": c.completed_at.map(iso),
        "output": {
            "title": c.title, "summary": c.summary, "text": c.text, "annotations_count": 0,
            "annotations_url": format!("{ra}/check-runs/{}/annotations", c.id),
        },
        "name": c.name, "check_suite": {"id": c.suite_id},
        "app": app_json(st, b, c.app_id),
        "pull_requests": prs,
    })
}

/// `deployment`.
pub fn deployment_json(st: &State, b: &Bases, repo: &Repo, d: &Deployment) -> Value {
    let ra = format!("{}/repos/{}", b.api, repo.path);
    json!({
        "url": format!("{ra}/deployments/{}", d.id), "id": d.id, "node_id": node_id("010:Deployment", d.id),
        "sha": d.sha, "ref": d.git_ref, "task": d.task, "payload": d.payload,
        "original_environment": d.environment, "environment": d.environment, "description": d.description,
        "creator": user_json(b, &st.user_ro(&d.creator)),
        "created_at": iso(d.created_at), "updated_at": iso(d.updated_at),
        "statuses_url": format!("{ra}/deployments/{}/statuses", d.id), "repository_url": ra,
        "transient_environment": d.transient_environment, "production_environment": d.production_environment,
    })
}

/// `deployment-status`.
pub fn deployment_status_json(
    st: &State,
    b: &Bases,
    repo: &Repo,
    d: &Deployment,
    s: &DeploymentStatus,
) -> Value {
    let ra = format!("{}/repos/{}", b.api, repo.path);
    let mut v = json!({
        "url": format!("{ra}/deployments/{}/statuses/{}", d.id, s.id), "id": s.id,
        "node_id": node_id("016:DeploymentStatus", s.id), "state": s.state,
        "creator": user_json(b, &st.user_ro(&s.creator)), "description": s.description,
        "environment": d.environment, "target_url": s.log_url.clone().unwrap_or_default(),
        "created_at": iso(s.created_at), "updated_at": iso(s.created_at),
        "deployment_url": format!("{ra}/deployments/{}", d.id), "repository_url": ra,
    });
    // Unset URLs are omitted rather than "" (the schema wants URIs when present).
    if let Some(m) = v.as_object_mut() {
        if let Some(u) = &s.environment_url {
            m.insert("environment_url".into(), json!(u));
        }
        if let Some(u) = &s.log_url {
            m.insert("log_url".into(), json!(u));
        }
    }
    v
}

/// `issue-comment`.
pub fn comment_json(st: &State, b: &Bases, repo: &Repo, c: &Comment) -> Value {
    let ra = format!("{}/repos/{}", b.api, repo.path);
    json!({
        "id": c.id, "node_id": node_id("012:IssueComment", c.id),
        "url": format!("{ra}/issues/comments/{}", c.id),
        "html_url": format!("{}/{}/pull/{}#issuecomment-{}", b.web, repo.path, c.number, c.id),
        "body": c.body, "user": user_json(b, &st.user_ro(&c.user)),
        "created_at": iso(c.created_at), "updated_at": iso(c.updated_at),
        "issue_url": format!("{ra}/issues/{}", c.number),
        "author_association": author_association(repo, &c.user),
    })
}

/// `issue-event` for a label change.
pub fn label_event_json(st: &State, b: &Bases, repo: &Repo, e: &LabelChange) -> Value {
    let ra = format!("{}/repos/{}", b.api, repo.path);
    json!({
        "id": e.id, "node_id": node_id("015:LabeledEvent", e.id),
        "url": format!("{ra}/issues/events/{}", e.id),
        "actor": user_json(b, &st.user_ro(&e.user)),
        "event": if e.added { "labeled" } else { "unlabeled" },
        "commit_id": null, "commit_url": null,
        "created_at": iso(e.created_at),
        "label": {"name": e.label, "color": repo.labels.get(&e.label).map(|l| l.color.clone()).unwrap_or_default()},
        "performed_via_github_app": null,
    })
}

/// `issue` for a pull request (the emulator has no plain issues).
pub fn issue_json(st: &State, b: &Bases, repo: &Repo, pr: &Pull) -> Value {
    let ra = format!("{}/repos/{}", b.api, repo.path);
    let n = pr.number;
    let html = format!("{}/{}/pull/{n}", b.web, repo.path);
    merge([
        json!({
            "id": pr.id, "node_id": node_id("05:Issue", pr.id), "url": format!("{ra}/issues/{n}"),
            "repository_url": ra, "labels_url": format!("{ra}/issues/{n}/labels{{/name}}"),
            "comments_url": format!("{ra}/issues/{n}/comments"), "events_url": format!("{ra}/issues/{n}/events"),
            "html_url": html, "number": n, "state": if pr.open { "open" } else { "closed" },
            "state_reason": null, "title": pr.title, "body": pr.body,
            "user": user_json(b, &st.user_ro(&pr.author)),
            "labels": pr.labels.iter().map(|l| label_json(b, repo, l)).collect::<Vec<_>>(),
        }),
        json!({
            "assignee": null, "assignees": [], "milestone": null, "locked": false, "active_lock_reason": null,
            "comments": repo.comments.iter().filter(|c| c.number == n).count(),
            "pull_request": {
                "url": format!("{ra}/pulls/{n}"), "html_url": html,
                "diff_url": format!("{html}.diff"), "patch_url": format!("{html}.patch"),
                "merged_at": pr.merged_at.map(iso),
            },
            "closed_at": pr.closed_at.map(iso), "created_at": iso(pr.created_at), "updated_at": iso(pr.updated_at),
            "draft": pr.draft, "author_association": author_association(repo, &pr.author),
            "reactions": {"url": format!("{ra}/issues/{n}/reactions"), "total_count": 0, "+1": 0, "-1": 0, "laugh": 0,
                "hooray": 0, "confused": 0, "heart": 0, "rocket": 0, "eyes": 0},
            "timeline_url": format!("{ra}/issues/{n}/timeline"),
        }),
    ])
}

/// `pull-request-review`.
pub fn review_json(st: &State, b: &Bases, repo: &Repo, pr: &Pull, r: &Review) -> Value {
    let ra = format!("{}/repos/{}", b.api, repo.path);
    let html = format!(
        "{}/{}/pull/{}#pullrequestreview-{}",
        b.web, repo.path, pr.number, r.id
    );
    json!({
        "id": r.id, "node_id": node_id("017:PullRequestReview", r.id),
        "user": user_json(b, &st.user_ro(&r.user)), "body": r.body, "state": r.state,
        "html_url": html, "pull_request_url": format!("{ra}/pulls/{}", pr.number),
        "_links": {"html": {"href": html}, "pull_request": {"href": format!("{ra}/pulls/{}", pr.number)}},
        "submitted_at": iso(r.submitted_at), "commit_id": r.commit_id,
        "author_association": author_association(repo, &r.user),
    })
}

/// `installation`.
pub fn installation_json(st: &State, b: &Bases, inst: &Installation) -> Value {
    let account = st.user_ro(&inst.account);
    let slug = st
        .apps
        .get(&inst.app_id)
        .map_or_else(|| "app".to_string(), |a| a.slug.clone());
    json!({
        "id": inst.id, "account": user_json(b, &account),
        "repository_selection": if inst.repositories.is_some() { "selected" } else { "all" },
        "access_tokens_url": format!("{}/app/installations/{}/access_tokens", b.api, inst.id),
        "repositories_url": format!("{}/installation/repositories", b.api),
        "html_url": format!("{}/settings/installations/{}", b.web, inst.id),
        "app_id": inst.app_id, "app_slug": slug, "client_id": format!("Iv1.{:016x}", inst.app_id),
        "target_id": account.id, "target_type": account.kind,
        "permissions": {"checks": "write", "metadata": "read", "pull_requests": "write", "statuses": "write", "contents": "read", "deployments": "write", "issues": "write"},
        "events": ["pull_request", "push", "pull_request_review", "issue_comment"],
        "created_at": iso(inst.created_at), "updated_at": iso(inst.created_at),
        "single_file_name": null, "has_multiple_single_files": false, "single_file_paths": [],
        "suspended_at": null, "suspended_by": null,
    })
}

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
