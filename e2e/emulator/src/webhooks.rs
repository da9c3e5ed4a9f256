//! Webhook payloads and their signed, ordered, asynchronous delivery.
//!
//! Flow: an operation ([`super::ops`]) produces [`Event`]s and calls [`emit`] with the state
//! locked. For every hook of the repository subscribed to the event, [`emit`] renders the
//! forge's payload — GitHub and GitLab payloads start from the real example payloads in
//! `test-data` (their top-level keys, in their order) filled with the live repository, pull
//! request, SHAs, labels and sender; Gitea pull-request payloads follow Gitea's
//! `api.PullRequestPayload` since no example exists — signs it, records a pending
//! [`Delivery`] and queues its id on the hook's channel. One worker per hook sends them in
//! order and records status code, error and duration; a failing receiver never affects the
//! emulator. A redelivery re-sends the recorded bytes with the same delivery GUID.
use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;

use super::data;
use super::git::CommitInfo;
use super::github_json::{self as github, Bases};
use super::model::{DeliveryInfo, Forge};
use super::state::{Delivery, Hook, Repo, Shared, State, iso};
use super::{gitea, gitlab};

/// Something that happened on a repository.
#[derive(Debug, Clone)]
pub enum Event {
    /// Commits pushed, a branch created or deleted.
    Push {
        git_ref: String,
        before: String,
        after: String,
        pusher: String,
        created: bool,
        deleted: bool,
        commits: Vec<CommitInfo>,
    },
    /// A pull-request action (GitHub action names).
    PullRequest {
        number: u64,
        action: String,
        sender: String,
        label: Option<String>,
        before: Option<String>,
        after: Option<String>,
        changes: Option<Value>,
    },
    /// A review was submitted.
    Review {
        number: u64,
        review_id: u64,
        sender: String,
    },
    /// A comment on a pull request was created or edited.
    IssueComment {
        number: u64,
        comment_id: u64,
        action: String,
        sender: String,
    },
    /// A commit status was recorded, through the admin API (CI) or the REST API (Pullwarden's
    /// own writes echo back, as on the real forges): GitHub and Gitea `status`; GitLab sends
    /// nothing (it reports external statuses as pipelines, which the emulator does not have).
    Status { status_id: u64 },
    /// A hook was created (GitHub).
    Ping { hook_id: u64 },
}

impl Event {
    /// The subscription name used in [`super::model::HookSpec::events`].
    fn kind(&self) -> &'static str {
        match self {
            Event::Push { .. } => "push",
            Event::PullRequest { .. } => "pull_request",
            Event::Review { .. } => "pull_request_review",
            Event::IssueComment { .. } => "issue_comment",
            Event::Status { .. } => "status",
            Event::Ping { .. } => "ping",
        }
    }
}

fn template(name: &str) -> &'static Value {
    static T: LazyLock<BTreeMap<&'static str, Value>> = LazyLock::new(|| {
        let raw: [(&str, &str); 15] = [
            (
                "gh/pull_request.opened",
                include_str!("../../../test-data/github/webhooks/pull_request.opened.json"),
            ),
            (
                "gh/pull_request.synchronize",
                include_str!("../../../test-data/github/webhooks/pull_request.synchronize.json"),
            ),
            (
                "gh/pull_request.labeled",
                include_str!("../../../test-data/github/webhooks/pull_request.labeled.json"),
            ),
            (
                "gh/pull_request.unlabeled",
                include_str!("../../../test-data/github/webhooks/pull_request.unlabeled.json"),
            ),
            (
                "gh/pull_request.closed",
                include_str!("../../../test-data/github/webhooks/pull_request.closed.json"),
            ),
            (
                "gh/pull_request.reopened",
                include_str!("../../../test-data/github/webhooks/pull_request.reopened.json"),
            ),
            (
                "gh/pull_request.ready_for_review",
                include_str!(
                    "../../../test-data/github/webhooks/pull_request.ready_for_review.json"
                ),
            ),
            (
                "gh/pull_request.converted_to_draft",
                include_str!(
                    "../../../test-data/github/webhooks/pull_request.converted_to_draft.json"
                ),
            ),
            (
                "gh/pull_request_review.submitted",
                include_str!(
                    "../../../test-data/github/webhooks/pull_request_review.submitted.json"
                ),
            ),
            (
                "gh/issue_comment.created",
                include_str!("../../../test-data/github/webhooks/issue_comment.created.json"),
            ),
            (
                "gh/push",
                include_str!("../../../test-data/github/webhooks/push.branch-created.json"),
            ),
            (
                "gh/ping",
                include_str!("../../../test-data/github/webhooks/ping.json"),
            ),
            (
                "gl/merge_request",
                include_str!("../../../test-data/gitlab/webhooks/merge_request.open.json"),
            ),
            (
                "gl/push",
                include_str!("../../../test-data/gitlab/webhooks/push.json"),
            ),
            (
                "gl/note",
                include_str!("../../../test-data/gitlab/webhooks/note.merge_request.json"),
            ),
        ];
        let mut m: BTreeMap<&'static str, Value> = raw
            .iter()
            .map(|(k, v)| (*k, serde_json::from_str(v).unwrap_or(Value::Null)))
            .collect();
        m.insert(
            "gitea/push",
            serde_json::from_str(include_str!("../../../test-data/gitea/webhooks/push.json"))
                .unwrap_or(Value::Null),
        );
        m
    });
    T.get(name).unwrap_or(&Value::Null)
}

/// Builds a payload with exactly the template's top-level keys: live values fill them, keys
/// the live event lacks are dropped (e.g. `installation` without an App), and live keys the
/// template does not have are kept only when listed in `extras` (fields the forge sends for
/// events no fixture shows, such as `changes` of `edited`). Key order is serde_json's.
fn shape(template_name: &str, mut live: Map<String, Value>, extras: &[&str]) -> Value {
    let mut out = Map::new();
    if let Some(t) = template(template_name).as_object() {
        for k in t.keys() {
            if let Some(v) = live.remove(k) {
                out.insert(k.clone(), v);
            }
        }
    }
    for (k, v) in live {
        if extras.contains(&k.as_str()) {
            out.insert(k, v);
        }
    }
    Value::Object(out)
}

/// The top-level keys of a fixture template (tests compare payloads against them).
pub fn template_keys(template_name: &str) -> Vec<String> {
    template(template_name)
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn subscribed(hook: &Hook, kind: &str) -> bool {
    kind == "ping" || hook.events.is_empty() || hook.events.iter().any(|e| e == "*" || e == kind)
}

/// Renders and queues deliveries of `events` for every hook of `path`.
pub async fn emit(shared: &Shared, st: &mut State, path: &str, events: Vec<Event>) {
    let Some(repo) = st.repos.get(path).cloned() else {
        return;
    };
    if repo.hooks.is_empty() {
        return;
    }
    let mut pending = Vec::new();
    for ev in &events {
        let hooks: Vec<&Hook> = repo
            .hooks
            .iter()
            .filter(|h| subscribed(h, ev.kind()))
            .collect();
        if hooks.is_empty() {
            continue;
        }
        let rendered = match repo.forge {
            Forge::Github => render_github(shared, st, &repo, ev).await,
            Forge::Gitlab => render_gitlab(shared, st, &repo, ev).await,
            Forge::Gitea => render_gitea(shared, st, &repo, ev).await,
        };
        let Some((event_name, event_type, payload)) = rendered else {
            continue;
        };
        for h in hooks {
            if let Event::Ping { hook_id } = ev
                && *hook_id != h.id
            {
                continue;
            }
            pending.push((
                h.clone(),
                event_name.clone(),
                event_type.clone(),
                payload.clone(),
            ));
        }
    }
    for (hook, event_name, event_type, payload) in pending {
        let id = st.id();
        let body = serde_json::to_string(&payload).unwrap_or_default();
        let guid = uuid::Uuid::new_v4().to_string();
        let headers = sign(
            shared,
            repo.forge,
            &hook,
            &repo,
            &event_name,
            &event_type,
            &guid,
            &body,
        );
        let action = payload
            .get("action")
            .or_else(|| {
                payload
                    .get("object_attributes")
                    .and_then(|o| o.get("action"))
            })
            .and_then(Value::as_str)
            .map(str::to_string);
        st.deliveries.push(Delivery {
            info: DeliveryInfo {
                id,
                guid,
                hook_id: hook.id,
                repo: repo.path.clone(),
                forge: repo.forge,
                event: event_name,
                action,
                url: hook.url.clone(),
                headers,
                body,
                redelivery: false,
                outcome: "pending".into(),
                status_code: None,
                error: None,
                duration_ms: None,
            },
        });
        let _ = hook.queue.send(id);
    }
}

fn hmac_hex_256(secret: &str, body: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .expect("hmac accepts any key length");
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn hmac_hex_1(secret: &str, body: &str) -> String {
    let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(secret.as_bytes())
        .expect("hmac accepts any key length");
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[allow(clippy::too_many_arguments)]
fn sign(
    shared: &Shared,
    forge: Forge,
    hook: &Hook,
    repo: &Repo,
    event: &str,
    event_type: &str,
    guid: &str,
    body: &str,
) -> BTreeMap<String, String> {
    let mut h = BTreeMap::new();
    h.insert("Content-Type".into(), "application/json".into());
    match forge {
        Forge::Github => {
            h.insert("User-Agent".into(), "GitHub-Hookshot/emulator".into());
            h.insert("X-GitHub-Event".into(), event.into());
            h.insert("X-GitHub-Delivery".into(), guid.into());
            h.insert("X-GitHub-Hook-ID".into(), hook.id.to_string());
            h.insert(
                "X-GitHub-Hook-Installation-Target-Type".into(),
                "repository".into(),
            );
            h.insert(
                "X-GitHub-Hook-Installation-Target-ID".into(),
                repo.id.to_string(),
            );
            if let Some(s) = &hook.secret {
                h.insert(
                    "X-Hub-Signature-256".into(),
                    format!("sha256={}", hmac_hex_256(s, body)),
                );
                h.insert(
                    "X-Hub-Signature".into(),
                    format!("sha1={}", hmac_hex_1(s, body)),
                );
            }
        }
        Forge::Gitlab => {
            h.insert("User-Agent".into(), "GitLab/17.5.0".into());
            h.insert("X-Gitlab-Event".into(), event.into());
            h.insert("X-Gitlab-Event-UUID".into(), guid.into());
            h.insert(
                "X-Gitlab-Webhook-UUID".into(),
                uuid::Uuid::from_u64_pair(0x6769_746c_6162, hook.id).to_string(),
            );
            h.insert("Idempotency-Key".into(), guid.into());
            h.insert("X-Gitlab-Instance".into(), shared.public_url.clone());
            if let Some(s) = &hook.secret {
                h.insert("X-Gitlab-Token".into(), s.clone());
            }
        }
        Forge::Gitea => {
            let sig = hook
                .secret
                .as_deref()
                .map(|s| hmac_hex_256(s, body))
                .unwrap_or_default();
            h.insert("User-Agent".into(), "Go-http-client/1.1".into());
            for prefix in ["X-Gitea", "X-Gogs"] {
                h.insert(format!("{prefix}-Delivery"), guid.into());
                h.insert(format!("{prefix}-Event"), event.into());
                h.insert(format!("{prefix}-Event-Type"), event_type.into());
                h.insert(format!("{prefix}-Signature"), sig.clone());
            }
            h.insert("X-GitHub-Delivery".into(), guid.into());
            h.insert("X-GitHub-Event".into(), event.into());
            h.insert("X-GitHub-Event-Type".into(), event_type.into());
            if let Some(s) = &hook.secret {
                h.insert(
                    "X-Hub-Signature".into(),
                    format!("sha1={}", hmac_hex_1(s, body)),
                );
                h.insert("X-Hub-Signature-256".into(), format!("sha256={sig}"));
            }
        }
    }
    h
}

fn hook_bases(shared: &Shared) -> Bases {
    Bases {
        api: shared.public_url.clone(),
        web: shared.public_url.clone(),
    }
}

fn installation_of(st: &State, repo: &Repo) -> Option<Value> {
    st.installations
        .values()
        .find(|i| super::auth::installation_covers(st, i.id, repo))
        .map(|i| json!({"id": i.id, "node_id": base64_id("023:IntegrationInstallation", i.id)}))
}

fn base64_id(kind: &str, id: u64) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{kind}{id}"))
}

async fn render_github(
    shared: &Shared,
    st: &State,
    repo: &Repo,
    ev: &Event,
) -> Option<(String, String, Value)> {
    let b = hook_bases(shared);
    let mut live = Map::new();
    let repo_v = github::repo_json(st, &b, repo, None);
    let (event, tpl) = match ev {
        Event::Ping { hook_id } => {
            let hook = repo.hooks.iter().find(|h| h.id == *hook_id)?;
            let ra = format!("{}/repos/{}/hooks/{}", b.api, repo.path, hook.id);
            live.insert("zen".into(), json!("Keep it logically awesome."));
            live.insert("hook_id".into(), json!(hook.id));
            live.insert(
                "hook".into(),
                json!({
                    "type": "Repository", "id": hook.id, "name": "web", "active": true,
                    "events": if hook.events.is_empty() { vec!["*".to_string()] } else { hook.events.clone() },
                    "config": {"content_type": "json", "url": hook.url, "insecure_ssl": "0"},
                    "updated_at": iso(hook.created_at), "created_at": iso(hook.created_at),
                    "url": ra, "test_url": format!("{ra}/test"), "ping_url": format!("{ra}/pings"),
                    "deliveries_url": format!("{ra}/deliveries"),
                    "last_response": {"code": null, "status": "unused", "message": null},
                }),
            );
            live.insert("repository".into(), repo_v);
            live.insert(
                "sender".into(),
                github::user_json(&b, &st.user_ro(&repo.owner)),
            );
            ("ping", "gh/ping".to_string())
        }
        Event::Push {
            git_ref,
            before,
            after,
            pusher,
            created,
            deleted,
            commits,
        } => {
            let user = st.user_ro(pusher);
            let mut rv = repo_v;
            if let Some(m) = rv.as_object_mut() {
                // Push payloads carry Unix times and two extra keys (a GitHub quirk).
                m.insert("created_at".into(), json!(repo.created_at));
                m.insert("pushed_at".into(), json!(repo.pushed_at));
                m.insert("stargazers".into(), json!(0));
                m.insert("master_branch".into(), json!(repo.default_branch));
                m.insert("custom_properties".into(), json!({}));
            }
            let mut cs = Vec::new();
            for c in commits {
                cs.push(push_commit_github(shared, &b, st, repo, c).await);
            }
            live.insert("ref".into(), json!(git_ref));
            live.insert("before".into(), json!(before));
            live.insert("after".into(), json!(after));
            live.insert("repository".into(), rv);
            live.insert(
                "pusher".into(),
                json!({"name": user.login, "email": user.email}),
            );
            live.insert("sender".into(), github::user_json(&b, &user));
            if let Some(i) = installation_of(st, repo) {
                live.insert("installation".into(), i);
            }
            live.insert("created".into(), json!(created));
            live.insert("deleted".into(), json!(deleted));
            live.insert("forced".into(), json!(false));
            live.insert("base_ref".into(), Value::Null);
            let compare = if *created || *deleted {
                format!("{}/{}/commit/{after}", b.web, repo.path)
            } else {
                format!(
                    "{}/{}/compare/{}...{}",
                    b.web,
                    repo.path,
                    &before[..12.min(before.len())],
                    &after[..12.min(after.len())]
                )
            };
            live.insert("compare".into(), json!(compare));
            live.insert(
                "head_commit".into(),
                cs.last().cloned().unwrap_or(Value::Null),
            );
            live.insert("commits".into(), json!(cs));
            ("push", "gh/push".to_string())
        }
        Event::PullRequest {
            number,
            action,
            sender,
            label,
            before,
            after,
            changes,
        } => {
            let pr = repo.pulls.get(number)?;
            let facts = data::facts_for(shared, repo, pr).await;
            live.insert("action".into(), json!(action));
            live.insert("number".into(), json!(number));
            live.insert(
                "pull_request".into(),
                github::pull_json(st, &b, repo, pr, &facts, true),
            );
            if let Some(l) = label {
                live.insert("label".into(), github::label_json(&b, repo, l));
            }
            if let (Some(be), Some(af)) = (before, after) {
                live.insert("before".into(), json!(be));
                live.insert("after".into(), json!(af));
            }
            if let Some(c) = changes {
                live.insert("changes".into(), c.clone());
            }
            live.insert("repository".into(), repo_v);
            if let Some(i) = installation_of(st, repo) {
                live.insert("installation".into(), i);
            }
            live.insert("sender".into(), github::user_json(&b, &st.user_ro(sender)));
            let tpl = match action.as_str() {
                "opened" | "synchronize" | "labeled" | "unlabeled" | "closed" | "reopened"
                | "ready_for_review" | "converted_to_draft" => format!("gh/pull_request.{action}"),
                _ => "gh/pull_request.opened".to_string(),
            };
            ("pull_request", tpl)
        }
        Event::Review {
            number,
            review_id,
            sender,
        } => {
            let pr = repo.pulls.get(number)?;
            let review = pr.reviews.iter().find(|r| r.id == *review_id)?;
            let facts = data::facts_for(shared, repo, pr).await;
            live.insert("action".into(), json!("submitted"));
            live.insert(
                "review".into(),
                github::review_json(st, &b, repo, pr, review),
            );
            live.insert(
                "pull_request".into(),
                github::pull_json(st, &b, repo, pr, &facts, false),
            );
            live.insert("repository".into(), repo_v);
            live.insert("sender".into(), github::user_json(&b, &st.user_ro(sender)));
            if let Some(i) = installation_of(st, repo) {
                live.insert("installation".into(), i);
            }
            (
                "pull_request_review",
                "gh/pull_request_review.submitted".to_string(),
            )
        }
        Event::Status { status_id } => {
            // No maintainer-written example exists: the fields follow GitHub's documented
            // `status` event (the status itself, the commit, the branches whose head it is).
            let x = repo.statuses.iter().find(|x| x.id == *status_id)?;
            let ra = format!("{}/repos/{}", b.api, repo.path);
            let branches: Vec<Value> = repo
                .branches
                .iter()
                .filter(|(_, head)| **head == x.sha)
                .map(|(name, head)| {
                    json!({"name": name, "protected": false,
                           "commit": {"sha": head, "url": format!("{ra}/commits/{head}")}})
                })
                .collect();
            let mut payload = json!({
                "id": x.id, "sha": x.sha, "name": repo.path, "target_url": x.target_url,
                "context": x.context, "description": x.description, "state": x.state,
                "commit": {
                    "sha": x.sha, "url": format!("{ra}/commits/{}", x.sha),
                    "html_url": format!("{}/{}/commit/{}", b.web, repo.path, x.sha),
                },
                "branches": branches,
                "created_at": iso(x.created_at), "updated_at": iso(x.updated_at),
                "repository": repo_v,
                "sender": github::user_json(&b, &st.user_ro(&x.creator)),
            });
            if let (Some(m), Some(i)) = (payload.as_object_mut(), installation_of(st, repo)) {
                m.insert("installation".into(), i);
            }
            return Some(("status".into(), "status".into(), payload));
        }
        Event::IssueComment {
            number,
            comment_id,
            action,
            sender,
        } => {
            let pr = repo.pulls.get(number)?;
            let c = repo.comments.iter().find(|c| c.id == *comment_id)?;
            live.insert("action".into(), json!(action));
            live.insert("issue".into(), github::issue_json(st, &b, repo, pr));
            live.insert("comment".into(), github::comment_json(st, &b, repo, c));
            live.insert("repository".into(), repo_v);
            live.insert("sender".into(), github::user_json(&b, &st.user_ro(sender)));
            ("issue_comment", "gh/issue_comment.created".to_string())
        }
    };
    Some((
        event.to_string(),
        event.to_string(),
        shape(&tpl, live, &["changes"]),
    ))
}

async fn push_commit_github(
    shared: &Shared,
    b: &Bases,
    st: &State,
    repo: &Repo,
    c: &CommitInfo,
) -> Value {
    let files = data::commit_files(shared, &repo.git_dir, c).await;
    let pick = |s: &str| {
        files
            .iter()
            .filter(|f| f.status == s)
            .map(|f| f.filename.clone())
            .collect::<Vec<_>>()
    };
    let login = data::commit_author_login(st, repo, c).unwrap_or_default();
    json!({
        "id": c.sha, "tree_id": c.tree, "distinct": true, "message": c.message,
        "timestamp": iso(c.committer_time), "url": format!("{}/{}/commit/{}", b.web, repo.path, c.sha),
        "author": {"name": c.author_name, "email": c.author_email, "username": login},
        "committer": {"name": c.committer_name, "email": c.committer_email, "username": login},
        "added": pick("added"), "removed": pick("removed"), "modified": pick("modified"),
    })
}

async fn render_gitlab(
    shared: &Shared,
    st: &State,
    repo: &Repo,
    ev: &Event,
) -> Option<(String, String, Value)> {
    let base = &shared.public_url;
    let mut live = Map::new();
    let project = gitlab::project_hook_json(base, repo);
    let repository = json!({
        "name": repo.name, "url": format!("{base}/{}.git", repo.path), "description": repo.description.clone().unwrap_or_default(),
        "homepage": format!("{base}/{}", repo.path),
        "git_http_url": format!("{base}/{}.git", repo.path), "git_ssh_url": format!("git@{}:{}.git", base.trim_start_matches("http://"), repo.path),
        "visibility_level": if repo.private { 0 } else { 20 },
    });
    match ev {
        Event::Ping { .. } | Event::Status { .. } => None,
        Event::Push {
            git_ref,
            before,
            after,
            pusher,
            commits,
            ..
        } => {
            let u = st.user_ro(pusher);
            let mut cs = Vec::new();
            for c in commits {
                let files = data::commit_files(shared, &repo.git_dir, c).await;
                let pick = |s: &str| {
                    files
                        .iter()
                        .filter(|f| f.status == s)
                        .map(|f| f.filename.clone())
                        .collect::<Vec<_>>()
                };
                cs.push(json!({
                    "id": c.sha, "message": c.message, "title": c.title(), "timestamp": iso(c.committer_time),
                    "url": format!("{base}/{}/-/commit/{}", repo.path, c.sha),
                    "author": {"name": c.author_name, "email": c.author_email},
                    "added": pick("added"), "modified": pick("modified"), "removed": pick("removed"),
                }));
            }
            live.insert("object_kind".into(), json!("push"));
            live.insert("event_name".into(), json!("push"));
            live.insert("before".into(), json!(before));
            live.insert("after".into(), json!(after));
            live.insert("ref".into(), json!(git_ref));
            live.insert(
                "ref_protected".into(),
                json!(git_ref == &format!("refs/heads/{}", repo.default_branch)),
            );
            live.insert(
                "checkout_sha".into(),
                if after.chars().all(|c| c == '0') {
                    Value::Null
                } else {
                    json!(after)
                },
            );
            live.insert("user_id".into(), json!(u.id));
            live.insert("user_name".into(), json!(u.name));
            live.insert("user_username".into(), json!(u.login));
            live.insert("user_email".into(), json!(u.email));
            live.insert(
                "user_avatar".into(),
                json!(format!(
                    "{base}/uploads/-/system/user/avatar/{}/avatar.png",
                    u.id
                )),
            );
            live.insert("project_id".into(), json!(repo.id));
            live.insert("project".into(), project);
            live.insert("repository".into(), repository);
            live.insert("total_commits_count".into(), json!(cs.len()));
            live.insert("commits".into(), json!(cs));
            Some((
                "Push Hook".into(),
                "push".into(),
                shape("gl/push", live, &[]),
            ))
        }
        Event::PullRequest {
            number,
            action,
            sender,
            label,
            before,
            ..
        } => {
            let pr = repo.pulls.get(number)?;
            let gl_action = match action.as_str() {
                "opened" => "open",
                "closed" if pr.merged => "merge",
                "closed" => "close",
                "reopened" => "reopen",
                _ => "update",
            };
            let mut changes = Map::new();
            changes.insert(
                "updated_at".into(),
                json!({"previous": iso(pr.created_at), "current": iso(pr.updated_at)}),
            );
            match action.as_str() {
                "labeled" | "unlabeled" => {
                    let cur: Vec<Value> = pr
                        .labels
                        .iter()
                        .map(|l| gitlab::label_json(repo, l))
                        .collect();
                    let mut prev = pr.labels.clone();
                    if action == "labeled" {
                        prev.retain(|l| Some(l) != label.as_ref());
                    } else if let Some(l) = label {
                        prev.push(l.clone());
                    }
                    let prev: Vec<Value> =
                        prev.iter().map(|l| gitlab::label_json(repo, l)).collect();
                    changes.insert("labels".into(), json!({"previous": prev, "current": cur}));
                }
                "ready_for_review" | "converted_to_draft" => {
                    changes.insert(
                        "draft".into(),
                        json!({"previous": !pr.draft, "current": pr.draft}),
                    );
                }
                "opened" => {
                    changes.insert("state_id".into(), json!({"previous": null, "current": 1}));
                }
                _ => {}
            }
            let facts = data::facts_for(shared, repo, pr).await;
            let mut attrs = gitlab::mr_hook_attributes(st, base, repo, pr, &facts);
            if let Some(m) = attrs.as_object_mut() {
                m.insert("action".into(), json!(gl_action));
                if let Some(old) = before {
                    m.insert("oldrev".into(), json!(old));
                }
            }
            live.insert("object_kind".into(), json!("merge_request"));
            live.insert("event_type".into(), json!("merge_request"));
            live.insert(
                "user".into(),
                gitlab::hook_user_json(base, &st.user_ro(sender)),
            );
            live.insert("project".into(), project);
            live.insert("repository".into(), repository);
            live.insert("object_attributes".into(), attrs);
            live.insert(
                "labels".into(),
                json!(
                    pr.labels
                        .iter()
                        .map(|l| gitlab::label_json(repo, l))
                        .collect::<Vec<_>>()
                ),
            );
            live.insert("changes".into(), Value::Object(changes));
            live.insert("assignees".into(), json!([]));
            live.insert("reviewers".into(), json!([]));
            Some((
                "Merge Request Hook".into(),
                "merge_request".into(),
                shape("gl/merge_request", live, &[]),
            ))
        }
        Event::Review {
            number,
            review_id,
            sender,
        } => {
            let pr = repo.pulls.get(number)?;
            let review = pr.reviews.iter().find(|r| r.id == *review_id)?;
            // GitLab has approvals, not reviews: only an approval produces an event.
            if review.state != "APPROVED" {
                return None;
            }
            let facts = data::facts_for(shared, repo, pr).await;
            let mut attrs = gitlab::mr_hook_attributes(st, base, repo, pr, &facts);
            if let Some(m) = attrs.as_object_mut() {
                m.insert("action".into(), json!("approved"));
            }
            live.insert("object_kind".into(), json!("merge_request"));
            live.insert("event_type".into(), json!("merge_request"));
            live.insert(
                "user".into(),
                gitlab::hook_user_json(base, &st.user_ro(sender)),
            );
            live.insert("project".into(), project);
            live.insert("repository".into(), repository);
            live.insert("object_attributes".into(), attrs);
            live.insert(
                "labels".into(),
                json!(
                    pr.labels
                        .iter()
                        .map(|l| gitlab::label_json(repo, l))
                        .collect::<Vec<_>>()
                ),
            );
            live.insert("changes".into(), json!({}));
            live.insert("assignees".into(), json!([]));
            live.insert("reviewers".into(), json!([]));
            Some((
                "Merge Request Hook".into(),
                "merge_request".into(),
                shape("gl/merge_request", live, &[]),
            ))
        }
        Event::IssueComment {
            number,
            comment_id,
            action,
            sender,
        } => {
            let pr = repo.pulls.get(number)?;
            let c = repo.comments.iter().find(|c| c.id == *comment_id)?;
            let facts = data::facts_for(shared, repo, pr).await;
            let author = st.user_ro(&c.user);
            live.insert("object_kind".into(), json!("note"));
            live.insert("event_type".into(), json!("note"));
            live.insert(
                "user".into(),
                gitlab::hook_user_json(base, &st.user_ro(sender)),
            );
            live.insert("project_id".into(), json!(repo.id));
            live.insert("project".into(), project);
            live.insert("repository".into(), repository);
            live.insert(
                "object_attributes".into(),
                json!({
                    "id": c.id, "note": c.body, "noteable_type": "MergeRequest", "author_id": author.id,
                    "created_at": gitlab::hook_time(c.created_at), "updated_at": gitlab::hook_time(c.updated_at),
                    "project_id": repo.id, "attachment": null, "line_code": null, "commit_id": "",
                    "noteable_id": pr.id, "system": false, "st_diff": null,
                    "action": if action == "edited" { "update" } else { "create" },
                    "url": format!("{base}/{}/-/merge_requests/{}#note_{}", repo.path, pr.number, c.id),
                }),
            );
            live.insert(
                "merge_request".into(),
                gitlab::mr_hook_attributes(st, base, repo, pr, &facts),
            );
            Some((
                "Note Hook".into(),
                "note".into(),
                shape("gl/note", live, &[]),
            ))
        }
    }
}

async fn render_gitea(
    shared: &Shared,
    st: &State,
    repo: &Repo,
    ev: &Event,
) -> Option<(String, String, Value)> {
    let base = &shared.public_url;
    let repo_v = gitea::repo_json(st, base, repo);
    match ev {
        Event::Ping { .. } => None,
        Event::Status { status_id } => {
            // Gitea's `api.CommitStatusPayload` (no example exists to copy).
            let x = repo.statuses.iter().find(|x| x.id == *status_id)?;
            let payload = json!({
                "id": x.id, "sha": x.sha, "context": x.context, "state": x.state,
                "description": x.description.clone().unwrap_or_default(),
                "target_url": x.target_url.clone().unwrap_or_default(),
                "commit": {"id": x.sha, "url": format!("{base}/{}/commit/{}", repo.path, x.sha)},
                "created_at": iso(x.created_at), "updated_at": iso(x.updated_at),
                "repository": repo_v, "sender": gitea::user_json(base, &st.user_ro(&x.creator)),
            });
            Some(("status".into(), "status".into(), payload))
        }
        Event::Push {
            git_ref,
            before,
            after,
            pusher,
            commits,
            ..
        } => {
            let u = st.user_ro(pusher);
            let mut cs = Vec::new();
            for c in commits {
                let files = data::commit_files(shared, &repo.git_dir, c).await;
                let pick = |s: &str| {
                    files
                        .iter()
                        .filter(|f| f.status == s)
                        .map(|f| f.filename.clone())
                        .collect::<Vec<_>>()
                };
                let login = data::commit_author_login(st, repo, c).unwrap_or_default();
                cs.push(json!({
                    "id": c.sha, "message": format!("{}\n", c.message), "url": format!("{base}/{}/commit/{}", repo.path, c.sha),
                    "author": {"name": c.author_name, "email": c.author_email, "username": login},
                    "committer": {"name": c.committer_name, "email": c.committer_email, "username": login},
                    "verification": null, "timestamp": iso(c.committer_time),
                    "added": pick("added"), "removed": pick("removed"), "modified": pick("modified"),
                }));
            }
            let mut live = Map::new();
            live.insert("ref".into(), json!(git_ref));
            live.insert("before".into(), json!(before));
            live.insert("after".into(), json!(after));
            live.insert(
                "compare_url".into(),
                json!(format!("{base}/{}/compare/{before}...{after}", repo.path)),
            );
            live.insert("total_commits".into(), json!(cs.len()));
            live.insert(
                "head_commit".into(),
                cs.last().cloned().unwrap_or(Value::Null),
            );
            live.insert("commits".into(), json!(cs));
            live.insert("repository".into(), repo_v);
            live.insert("pusher".into(), gitea::user_json(base, &u));
            live.insert("sender".into(), gitea::user_json(base, &u));
            Some((
                "push".into(),
                "push".into(),
                shape("gitea/push", live, &["total_commits", "head_commit"]),
            ))
        }
        Event::PullRequest {
            number,
            action,
            sender,
            label: _,
            ..
        } => {
            let pr = repo.pulls.get(number)?;
            let facts = data::facts_for(shared, repo, pr).await;
            let (gitea_action, event_type) = match action.as_str() {
                "opened" => ("opened", "pull_request"),
                "synchronize" => ("synchronized", "pull_request_sync"),
                "labeled" | "unlabeled" => ("label_updated", "pull_request_label"),
                "closed" => ("closed", "pull_request"),
                "reopened" => ("reopened", "pull_request"),
                _ => ("edited", "pull_request"),
            };
            let commit_id = if action == "synchronize" {
                pr.head_sha.clone()
            } else {
                String::new()
            };
            let payload = json!({
                "action": gitea_action, "number": pr.number,
                "pull_request": gitea::pull_json(st, base, repo, pr, &facts),
                "requested_reviewer": null,
                "repository": repo_v, "sender": gitea::user_json(base, &st.user_ro(sender)),
                "commit_id": commit_id, "review": null,
            });
            Some(("pull_request".into(), event_type.into(), payload))
        }
        Event::Review {
            number,
            review_id,
            sender,
        } => {
            let pr = repo.pulls.get(number)?;
            let review = pr.reviews.iter().find(|r| r.id == *review_id)?;
            let facts = data::facts_for(shared, repo, pr).await;
            let (event, event_type, kind) = match review.state.as_str() {
                "APPROVED" => (
                    "pull_request_approved",
                    "pull_request_review_approved",
                    "pull_request_review_approved",
                ),
                "CHANGES_REQUESTED" => (
                    "pull_request_rejected",
                    "pull_request_review_rejected",
                    "pull_request_review_rejected",
                ),
                _ => (
                    "pull_request_comment",
                    "pull_request_review_comment",
                    "pull_request_review_comment",
                ),
            };
            let payload = json!({
                "action": "reviewed", "number": pr.number,
                "pull_request": gitea::pull_json(st, base, repo, pr, &facts),
                "requested_reviewer": null,
                "repository": repo_v, "sender": gitea::user_json(base, &st.user_ro(sender)),
                "commit_id": review.commit_id, "review": {"type": kind, "content": review.body},
            });
            Some((event.into(), event_type.into(), payload))
        }
        Event::IssueComment {
            number,
            comment_id,
            action,
            sender,
        } => {
            let pr = repo.pulls.get(number)?;
            let c = repo.comments.iter().find(|c| c.id == *comment_id)?;
            let payload = json!({
                "action": action, "issue": gitea::issue_json(st, base, repo, pr),
                "comment": gitea::comment_json(st, base, repo, c),
                "repository": repo_v, "sender": gitea::user_json(base, &st.user_ro(sender)),
                "is_pull": true,
            });
            Some((
                "issue_comment".into(),
                "pull_request_comment".into(),
                payload,
            ))
        }
    }
}

/// Starts the worker that sends one hook's deliveries in order.
pub fn spawn_worker(shared: Shared, mut rx: mpsc::UnboundedReceiver<u64>) {
    tokio::spawn(async move {
        let mut shutdown = shared.shutdown.clone();
        loop {
            tokio::select! {
                id = rx.recv() => match id {
                    Some(id) => deliver(&shared, id).await,
                    None => break,
                },
                _ = shutdown.changed() => break,
            }
        }
    });
}

async fn deliver(shared: &Shared, id: u64) {
    let Some(d) = ({
        let st = shared.state.lock().await;
        st.deliveries
            .iter()
            .find(|d| d.info.id == id)
            .map(|d| d.info.clone())
    }) else {
        return;
    };
    let mut req = shared
        .http
        .post(&d.url)
        .timeout(Duration::from_secs(shared.config.webhook_timeout_secs));
    for (k, v) in &d.headers {
        req = req.header(k, v);
    }
    let started = Instant::now();
    let res = req.body(d.body.clone()).send().await;
    let elapsed = started.elapsed().as_millis() as u64;
    let (code, error) = match res {
        Ok(r) => {
            let code = r.status().as_u16();
            // Drain the body so the connection can be reused; its content is not needed.
            let _ = r.bytes().await;
            (Some(code), None)
        }
        Err(e) => (None, Some(e.to_string())),
    };
    let mut st = shared.state.lock().await;
    if let Some(rec) = st.deliveries.iter_mut().find(|x| x.info.id == id) {
        rec.info.status_code = code;
        rec.info.error = error;
        rec.info.duration_ms = Some(elapsed);
        rec.info.outcome = if code.is_some_and(|c| (200..300).contains(&c)) {
            "delivered".into()
        } else {
            "failed".into()
        };
    }
}

/// Re-sends a recorded delivery (same GUID and bytes) as a new attempt.
pub async fn redeliver(shared: &Shared, id: u64) -> Option<DeliveryInfo> {
    let mut st = shared.state.lock().await;
    let old = st.deliveries.iter().find(|d| d.info.id == id)?.info.clone();
    let new_id = st.id();
    let mut info = old.clone();
    info.id = new_id;
    info.redelivery = true;
    info.outcome = "pending".into();
    info.status_code = None;
    info.error = None;
    info.duration_ms = None;
    st.deliveries.push(Delivery { info: info.clone() });
    let queue = st
        .repos
        .get(&old.repo)
        .and_then(|r| r.hooks.iter().find(|h| h.id == old.hook_id))
        .map(|h| h.queue.clone());
    drop(st);
    match queue {
        Some(q) => {
            let _ = q.send(new_id);
        }
        None => {
            let shared = shared.clone();
            tokio::spawn(async move { deliver(&shared, new_id).await });
        }
    }
    Some(info)
}
