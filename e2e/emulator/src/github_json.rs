//! GitHub-shaped JSON of the emulator's model: the `*_json` builders shared by the GitHub REST face
//! ([`super::github`]) and the webhook payloads ([`super::webhooks`], also Gitea's, which follow
//! GitHub's shapes), so REST bodies and webhook payloads agree. Every REST body validates against
//! the response schemas in `test-data/github/rest/schemas` (tested in the suite).
use base64::Engine;
use serde_json::{Value, json};

use super::data::{PrFacts, commit_author_login, pr_base_sha};
use super::git::{CommitInfo, FileDiff};
use super::reply::{ApiRequest, merge};
use super::state::{
    CheckRun, Comment, Deployment, DeploymentStatus, Installation, LabelChange, Pull, Repo, Review,
    State, Status, User, iso,
};

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

pub(super) fn node_id(kind: &str, id: u64) -> String {
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

pub(super) fn perm_rank(p: &str) -> u8 {
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

pub(super) fn app_json(st: &State, b: &Bases, app_id: u64) -> Value {
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
