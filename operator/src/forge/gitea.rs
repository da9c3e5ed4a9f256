//! Gitea (and Forgejo) through its REST API (`/api/v1`) with reqwest.
//!
//! Flow: the transport adds `Authorization: token …` (or basic auth) only for requests to the
//! configured API origin, and the budget handles ETags, pagination (`Link` headers; page size via
//! `limit`, which the server clamps to its `MAX_RESPONSE_ITEMS`) and retries. Gitea's pull-request
//! JSON is GitHub-shaped, so the GitHub parsers are reused where the fields agree. Gitea has no
//! check runs and no deployments API: those methods return `Unsupported`.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use http::{HeaderMap, HeaderValue, Method, header};
use jiff::Timestamp;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;

use super::Forge;
use super::budget::{ApiRequest, BudgetConfig, RawResponse, Transport};
use super::coords::{RepoCoordinates, encode_path_segment as enc};
use super::credentials::Credentials;
use super::error::ForgeError;
use super::github;
use super::shared::{CredentialState, api_url, http_client, reqwest_error};
use super::types::*;

// ---------------------------------------------------------------------------------------------
// Transport
// ---------------------------------------------------------------------------------------------

pub(crate) struct GiteaTransport {
    http: reqwest::Client,
    origin: url::Origin,
    auth: Option<HeaderValue>,
}

impl fmt::Debug for GiteaTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GiteaTransport")
            .field("origin", &self.origin.ascii_serialization())
            .field("authenticated", &self.auth.is_some())
            .finish()
    }
}

impl GiteaTransport {
    pub(crate) fn new(
        api_base: &str,
        creds: &Credentials,
        ca_pem: Option<&[u8]>,
        config: &BudgetConfig,
        guard: Option<&crate::net::Guard>,
    ) -> Result<Self, ForgeError> {
        let origin = url::Url::parse(api_base)
            .map_err(|e| ForgeError::invalid_config(format!("bad Gitea API base: {e}")))?
            .origin();
        let auth = match creds {
            Credentials::Token(t) => Some(format!("token {}", t.expose_secret())),
            Credentials::Basic { username, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{}", password.expose_secret()))
            )),
            Credentials::Anonymous => None,
            other => {
                return Err(ForgeError::invalid_config(format!(
                    "Gitea API access needs `token` or `username`/`password`, not {}",
                    other.type_name()
                )));
            }
        };
        let auth = auth
            .map(|a| {
                HeaderValue::from_str(&a).map(|mut v| {
                    v.set_sensitive(true);
                    v
                })
            })
            .transpose()
            .map_err(|_| {
                ForgeError::invalid_config(
                    "credential contains characters not allowed in an HTTP header",
                )
            })?;
        Ok(GiteaTransport {
            http: http_client(guard, ca_pem, config.request_timeout)?,
            origin,
            auth,
        })
    }
}

#[async_trait]
impl Transport for GiteaTransport {
    async fn send(&self, req: &ApiRequest, extra: HeaderMap) -> Result<RawResponse, ForgeError> {
        let url = url::Url::parse(&req.url)
            .map_err(|e| ForgeError::invalid_config(format!("bad request URL: {e}")))?;
        if url.origin() != self.origin {
            return Err(ForgeError::invalid_response(format!(
                "refusing to send Gitea credentials to {}",
                url.origin().ascii_serialization()
            )));
        }
        let mut builder = self
            .http
            .request(req.method.clone(), url)
            .header(header::ACCEPT, "application/json")
            .headers(extra);
        if let Some(auth) = &self.auth {
            builder = builder.header(header::AUTHORIZATION, auth.clone());
        }
        if let Some(body) = &req.body {
            builder = builder.json(body);
        }
        let resp = builder.send().await.map_err(|e| reqwest_error(&e))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(|e| reqwest_error(&e))?;
        Ok(RawResponse {
            status,
            headers,
            body,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// JSON shapes that differ from GitHub's
// ---------------------------------------------------------------------------------------------

/// Gitea's default `WORK_IN_PROGRESS_PREFIXES`; servers before `draft` existed mark drafts so.
const WIP_PREFIXES: [&str; 2] = ["wip:", "[wip]"];

/// A pull request diff larger than this is not split into per-file patches (the files then
/// have none, and `secretScan` says it could not scan them).
const MAX_DIFF_BYTES: usize = 16 * 1024 * 1024;

/// The hunks (from the first `@@`) of each file in a `git diff` text, by new path (the old
/// path for a deletion). Binary files have no hunks and no entry.
pub(crate) fn patches_by_path(diff: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for block in diff
        .split("\ndiff --git ")
        .map(|b| b.trim_start_matches("diff --git "))
    {
        let mut path: Option<&str> = None;
        let mut hunks = Vec::new();
        let mut in_hunks = false;
        for line in block.lines() {
            if in_hunks {
                hunks.push(line);
            } else if let Some(p) = line.strip_prefix("+++ b/") {
                path = Some(p);
            } else if let Some(p) = line.strip_prefix("--- a/") {
                path = path.or(Some(p));
            } else if line.starts_with("@@ ") {
                in_hunks = true;
                hunks.push(line);
            }
        }
        if let (Some(p), false) = (path, hunks.is_empty()) {
            out.insert(p.to_owned(), hunks.join("\n"));
        }
    }
    out
}

pub(crate) fn to_pull(p: github::Pull) -> PullRequest {
    let wip = {
        let t = p.title.trim_start().to_ascii_lowercase();
        WIP_PREFIXES.iter().any(|w| t.starts_with(w))
    };
    let mut pr = github::to_pull(p);
    pr.draft = pr.draft || wip;
    pr
}

#[derive(Debug, Deserialize)]
pub(crate) struct BranchJson {
    pub name: String,
    pub commit: BranchCommit,
}

#[derive(Debug, Deserialize)]
pub(crate) struct BranchCommit {
    pub id: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ReviewJson {
    pub user: Option<github::User>,
    pub state: String,
    #[serde(default)]
    pub commit_id: Option<String>,
    #[serde(default)]
    pub submitted_at: Option<Timestamp>,
    #[serde(default)]
    pub dismissed: bool,
}

pub(crate) fn to_review(r: ReviewJson) -> Review {
    let state = if r.dismissed {
        ReviewState::Dismissed
    } else {
        match r.state.as_str() {
            "APPROVED" => ReviewState::Approved,
            "REQUEST_CHANGES" => ReviewState::ChangesRequested,
            "PENDING" | "REQUEST_REVIEW" => ReviewState::Pending,
            _ => ReviewState::Commented,
        }
    };
    Review {
        user: r.user.map(|u| u.login).unwrap_or_default(),
        state,
        commit_sha: r.commit_id,
        submitted_at: r.submitted_at,
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct StatusJson {
    pub context: String,
    #[serde(alias = "state")]
    pub status: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub target_url: Option<String>,
    #[serde(default)]
    pub updated_at: Option<Timestamp>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct CombinedStatus {
    #[serde(default)]
    pub statuses: Option<Vec<StatusJson>>,
}

pub(crate) fn to_check(s: StatusJson) -> CheckResult {
    CheckResult {
        state: github::status_state(&s.status),
        name: s.context,
        source: CheckSource::Status,
        url: s.target_url,
        updated_at: s.updated_at,
        description: s.description,
    }
}

/// One entry of `GET /repos/{owner}/{repo}/issues/{index}/timeline` (Gitea 1.17+): comments,
/// label changes, pushes, ... each stamped by the server.
#[derive(Debug, Deserialize)]
pub(crate) struct TimelineJson {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub user: Option<github::User>,
    #[serde(default)]
    pub body: Option<String>,
    pub created_at: Timestamp,
    #[serde(default)]
    pub label: Option<github::IssueEventLabel>,
}

/// The body of a `pull_push` timeline entry. A force push lists `[old head, new head]`; a
/// plain push the commits it added.
#[derive(Debug, Deserialize)]
struct PushContent {
    #[serde(default)]
    commit_ids: Vec<String>,
}

/// Label changes in a timeline (Gitea stores `"1"` as the body of an addition).
pub(crate) fn to_label_events(timeline: &[TimelineJson]) -> Vec<LabelEvent> {
    timeline
        .iter()
        .filter(|t| t.kind == "label")
        .filter_map(|t| {
            Some(LabelEvent {
                label: t.label.as_ref()?.name.clone(),
                actor: t
                    .user
                    .as_ref()
                    .map(github::User::actor)
                    .unwrap_or_else(|| Actor::login("")),
                added: t.body.as_deref() == Some("1"),
                created_at: t.created_at,
            })
        })
        .collect()
}

/// When `sha` was last pushed to the pull request: the newest `pull_push` entry naming it.
pub(crate) fn pushed_at(timeline: &[TimelineJson], sha: &str) -> Option<Timestamp> {
    timeline
        .iter()
        .filter(|t| t.kind == "pull_push")
        .filter(|t| {
            t.body
                .as_deref()
                .and_then(|b| serde_json::from_str::<PushContent>(b).ok())
                .is_some_and(|c| c.commit_ids.iter().any(|id| id.eq_ignore_ascii_case(sha)))
        })
        .map(|t| t.created_at)
        .max()
}

#[derive(Debug, Deserialize)]
struct TeamSearch {
    #[serde(default)]
    data: Vec<TeamJson>,
}

#[derive(Debug, Deserialize)]
struct TeamJson {
    id: u64,
    name: String,
}

// ---------------------------------------------------------------------------------------------
// The forge
// ---------------------------------------------------------------------------------------------

pub(crate) struct GiteaForge {
    coords: RepoCoordinates,
    state: Arc<CredentialState>,
    credentials: Credentials,
}

impl fmt::Debug for GiteaForge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GiteaForge")
            .field("repo", &self.coords)
            .field("credentials", &self.credentials)
            .finish()
    }
}

impl GiteaForge {
    pub(crate) fn new(
        coords: RepoCoordinates,
        state: Arc<CredentialState>,
        credentials: Credentials,
    ) -> Self {
        GiteaForge {
            coords,
            state,
            credentials,
        }
    }

    fn url(&self, suffix: &str, query: &[(&str, &str)]) -> String {
        api_url(
            &self.coords.api_base,
            &format!(
                "/repos/{}/{}{suffix}",
                enc(&self.coords.owner),
                enc(&self.coords.name)
            ),
            query,
        )
    }

    fn limit(&self) -> String {
        self.state.budget.config().per_page.to_string()
    }

    async fn identity(&self) -> Result<String, ForgeError> {
        self.state
            .identity
            .get_or_try_init(|| async {
                let me: github::User = self
                    .state
                    .get(&api_url(&self.coords.api_base, "/user", &[]), "/user")
                    .await?;
                Ok(me.login)
            })
            .await
            .cloned()
    }

    async fn timeline(&self, number: u64) -> Result<Vec<TimelineJson>, ForgeError> {
        let limit = self.limit();
        self.state
            .get_all(
                &self.url(&format!("/issues/{number}/timeline"), &[("limit", &limit)]),
                "/repos/{owner}/{repo}/issues/{index}/timeline",
            )
            .await
    }

    async fn raw_comments(&self, number: u64) -> Result<Vec<github::CommentJson>, ForgeError> {
        let limit = self.limit();
        self.state
            .get_all(
                &self.url(&format!("/issues/{number}/comments"), &[("limit", &limit)]),
                "/repos/{owner}/{repo}/issues/{index}/comments",
            )
            .await
    }
}

#[async_trait]
impl Forge for GiteaForge {
    fn kind(&self) -> ForgeKind {
        ForgeKind::Gitea
    }

    fn coordinates(&self) -> &RepoCoordinates {
        &self.coords
    }

    async fn default_branch(&self) -> Result<String, ForgeError> {
        let repo: github::RepoJson = self
            .state
            .get(&self.url("", &[]), "/repos/{owner}/{repo}")
            .await?;
        Ok(repo.default_branch)
    }

    async fn list_branches(&self) -> Result<Vec<Branch>, ForgeError> {
        let limit = self.limit();
        let items: Vec<BranchJson> = self
            .state
            .get_all(
                &self.url("/branches", &[("limit", &limit)]),
                "/repos/{owner}/{repo}/branches",
            )
            .await?;
        Ok(items
            .into_iter()
            .map(|b| Branch {
                name: b.name,
                sha: b.commit.id,
            })
            .collect())
    }

    async fn list_open_pull_requests(&self) -> Result<Vec<PullRequest>, ForgeError> {
        let limit = self.limit();
        let items: Vec<github::Pull> = self
            .state
            .get_all(
                &self.url(
                    "/pulls",
                    &[("state", "open"), ("sort", "oldest"), ("limit", &limit)],
                ),
                "/repos/{owner}/{repo}/pulls",
            )
            .await?;
        Ok(items.into_iter().map(to_pull).collect())
    }

    async fn get_pull_request(&self, number: u64) -> Result<PullRequest, ForgeError> {
        let p: github::Pull = self
            .state
            .get(
                &self.url(&format!("/pulls/{number}"), &[]),
                "/repos/{owner}/{repo}/pulls/{index}",
            )
            .await?;
        Ok(to_pull(p))
    }

    async fn list_changed_files(&self, number: u64) -> Result<Vec<ChangedFile>, ForgeError> {
        let limit = self.limit();
        let items: Vec<github::FileJson> = self
            .state
            .get_all(
                &self.url(&format!("/pulls/{number}/files"), &[("limit", &limit)]),
                "/repos/{owner}/{repo}/pulls/{index}/files",
            )
            .await?;
        let mut files: Vec<ChangedFile> = items.into_iter().map(github::to_file).collect();
        // Gitea's file list has no patches; its `.diff` of the whole pull request does.
        let diff = self
            .state
            .execute(&ApiRequest::get(
                self.url(&format!("/pulls/{number}.diff"), &[]),
                "/repos/{owner}/{repo}/pulls/{index}.diff",
            ))
            .await?;
        if diff.body.len() <= MAX_DIFF_BYTES {
            let mut patches = patches_by_path(&String::from_utf8_lossy(&diff.body));
            for f in &mut files {
                f.patch = patches.remove(&f.path);
            }
        }
        Ok(files)
    }

    async fn list_reviews(&self, number: u64) -> Result<Vec<Review>, ForgeError> {
        let limit = self.limit();
        let items: Vec<ReviewJson> = self
            .state
            .get_all(
                &self.url(&format!("/pulls/{number}/reviews"), &[("limit", &limit)]),
                "/repos/{owner}/{repo}/pulls/{index}/reviews",
            )
            .await?;
        Ok(items.into_iter().map(to_review).collect())
    }

    async fn list_commits(&self, number: u64) -> Result<Vec<Commit>, ForgeError> {
        let limit = self.limit();
        let items: Vec<github::CommitJson> = self
            .state
            .get_all(
                &self.url(&format!("/pulls/{number}/commits"), &[("limit", &limit)]),
                "/repos/{owner}/{repo}/pulls/{index}/commits",
            )
            .await?;
        Ok(items.into_iter().map(github::to_commit).collect())
    }

    async fn list_comments(&self, number: u64) -> Result<Vec<Comment>, ForgeError> {
        Ok(self
            .raw_comments(number)
            .await?
            .iter()
            .map(github::to_comment)
            .collect())
    }

    async fn checks_for_sha(&self, sha: &str) -> Result<Vec<CheckResult>, ForgeError> {
        let limit = self.limit();
        let mut all = Vec::new();
        for page in self
            .state
            .get_pages(
                &self.url(
                    &format!("/commits/{}/status", enc(sha)),
                    &[("limit", &limit)],
                ),
                "/repos/{owner}/{repo}/commits/{ref}/status",
            )
            .await?
        {
            let combined: CombinedStatus = page.json()?;
            all.extend(
                combined
                    .statuses
                    .unwrap_or_default()
                    .into_iter()
                    .map(to_check),
            );
        }
        Ok(github::merge_checks(all))
    }

    async fn set_commit_status(&self, sha: &str, status: &CommitStatus) -> Result<(), ForgeError> {
        let mut body = json!({
            "state": github::status_state_str(status.state),
            "context": status.context,
            "description": truncate_chars(&status.description, STATUS_DESCRIPTION_MAX_CHARS),
        });
        if let Some(url) = &status.target_url {
            body["target_url"] = json!(url);
        }
        self.state
            .send_unit(
                Method::POST,
                &self.url(&format!("/statuses/{}", enc(sha)), &[]),
                "/repos/{owner}/{repo}/statuses/{sha}",
                body,
                true,
            )
            .await
    }

    async fn upsert_check_run(&self, _run: &CheckRunOutput) -> Result<CheckRunId, ForgeError> {
        Err(ForgeError::unsupported("upsert_check_run", "gitea"))
    }

    async fn create_deployment(
        &self,
        _req: &DeploymentRequest,
    ) -> Result<DeploymentId, ForgeError> {
        Err(ForgeError::unsupported("create_deployment", "gitea"))
    }

    async fn set_deployment_status(
        &self,
        _id: DeploymentId,
        _state: DeploymentState,
        _update: &DeploymentStatusUpdate,
    ) -> Result<(), ForgeError> {
        Err(ForgeError::unsupported("set_deployment_status", "gitea"))
    }

    async fn find_deployment(
        &self,
        _environment: &str,
        _sha: &str,
    ) -> Result<Option<DeploymentId>, ForgeError> {
        Err(ForgeError::unsupported("find_deployment", "gitea"))
    }

    async fn upsert_sticky_section(
        &self,
        number: u64,
        marker: &str,
        section: &str,
        text: &str,
    ) -> Result<Option<CommentId>, ForgeError> {
        super::sticky::upsert_section(
            self,
            &self.state,
            &self.coords,
            number,
            marker,
            section,
            text,
        )
        .await
    }

    async fn is_trusted(
        &self,
        actor: &Actor,
        trusted_users: &[String],
        trusted_teams: &[String],
    ) -> Result<bool, ForgeError> {
        if listed_user(trusted_users, actor) {
            return Ok(true);
        }
        let user = actor.login.as_str();
        if user.is_empty() {
            return Ok(false);
        }
        for team in trusted_teams {
            let (org, name) = team
                .split_once('/')
                .unwrap_or((self.coords.owner.as_str(), team.as_str()));
            let found: TeamSearch = self
                .state
                .get(
                    &api_url(
                        &self.coords.api_base,
                        &format!("/orgs/{}/teams/search", enc(org)),
                        &[("q", name)],
                    ),
                    "/orgs/{org}/teams/search",
                )
                .await?;
            for t in found
                .data
                .iter()
                .filter(|t| t.name.eq_ignore_ascii_case(name))
            {
                let url = api_url(
                    &self.coords.api_base,
                    &format!("/teams/{}/members/{}", t.id, enc(user)),
                    &[],
                );
                match self
                    .state
                    .get::<serde_json::Value>(&url, "/teams/{id}/members/{username}")
                    .await
                {
                    Ok(_) => return Ok(true),
                    // For this endpoint 404 is the answer "not a member".
                    Err(ForgeError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(false)
    }

    async fn list_label_events(&self, number: u64) -> Result<Vec<LabelEvent>, ForgeError> {
        Ok(to_label_events(&self.timeline(number).await?))
    }

    async fn head_pushed_at(
        &self,
        number: u64,
        sha: &str,
    ) -> Result<Option<Timestamp>, ForgeError> {
        Ok(pushed_at(&self.timeline(number).await?, sha))
    }

    fn rate_limit(&self) -> Option<RateLimit> {
        self.state.budget.rate_limit()
    }

    async fn git_credentials(&self) -> Result<Credentials, ForgeError> {
        Ok(self.credentials.clone())
    }
}

#[async_trait]
impl super::sticky::CommentApi for GiteaForge {
    async fn own_comments(&self, number: u64) -> Result<Vec<Comment>, ForgeError> {
        let me = self.identity().await?;
        Ok(self
            .raw_comments(number)
            .await?
            .iter()
            .map(github::to_comment)
            .filter(|c| c.author.eq_ignore_ascii_case(&me))
            .collect())
    }

    async fn edit_comment(
        &self,
        _number: u64,
        id: CommentId,
        body: &str,
    ) -> Result<CommentId, ForgeError> {
        self.state
            .send_comment(
                Method::PATCH,
                &self.url(&format!("/issues/comments/{}", id.0), &[]),
                "/repos/{owner}/{repo}/issues/comments/{id}",
                body,
                true,
            )
            .await
    }

    async fn create_comment(&self, number: u64, body: &str) -> Result<CommentId, ForgeError> {
        self.state
            .send_comment(
                Method::POST,
                &self.url(&format!("/issues/{number}/comments"), &[]),
                "/repos/{owner}/{repo}/issues/{index}/comments",
                body,
                false,
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pull_request_diff_splits_into_patches_by_path() {
        let diff = "diff --git a/src/a.rs b/src/a.rs\nindex 1..2 100644\n--- a/src/a.rs\n+++ b/src/a.rs\n@@ -1 +1,2 @@\n x\n+++counter;\ndiff --git a/old.txt b/new.txt\nsimilarity index 90%\nrename from old.txt\nrename to new.txt\n--- a/old.txt\n+++ b/new.txt\n@@ -1 +1 @@\n-a\n+b\ndiff --git a/gone.md b/gone.md\ndeleted file mode 100644\n--- a/gone.md\n+++ /dev/null\n@@ -1 +0,0 @@\n-bye\ndiff --git a/logo.png b/logo.png\nBinary files a/logo.png and b/logo.png differ\n";
        let patches = patches_by_path(diff);
        assert_eq!(patches["src/a.rs"], "@@ -1 +1,2 @@\n x\n+++counter;");
        assert_eq!(patches["new.txt"], "@@ -1 +1 @@\n-a\n+b");
        assert_eq!(patches["gone.md"], "@@ -1 +0,0 @@\n-bye");
        assert!(!patches.contains_key("logo.png"), "binary: no hunks");
        assert_eq!(patches.len(), 3);
        assert!(patches_by_path("").is_empty());
    }

    #[test]
    fn parses_the_timeline() {
        // Gitea's TimelineComment (`services/convert/issue_comment.go`): `type` is the comment
        // type's name, `body` its content — "1" for an added label, push details as JSON.
        let t: Vec<TimelineJson> = serde_json::from_value(json!([
            {"id": 1, "type": "label", "user": {"id": 5, "login": "maint"}, "body": "1",
             "created_at": "2024-05-01T10:00:00Z", "label": {"id": 2, "name": "ok-to-preview"}},
            {"id": 2, "type": "pull_push", "user": {"id": 9, "login": "mallory"},
             "body": r#"{"is_force_push":false,"commit_ids":["aaa","bbb"]}"#,
             "created_at": "2024-05-01T10:05:00Z"},
            {"id": 3, "type": "pull_push", "user": {"id": 9, "login": "mallory"},
             "body": r#"{"is_force_push":true,"commit_ids":["bbb","ccc"]}"#,
             "created_at": "2024-05-01T10:10:00Z"},
            {"id": 4, "type": "label", "user": {"id": 5, "login": "maint"}, "body": "",
             "created_at": "2024-05-01T10:11:00Z", "label": {"id": 2, "name": "ok-to-preview"}},
            {"id": 5, "type": "comment", "user": {"id": 5, "login": "maint"},
             "body": "/ok-to-preview", "created_at": "2024-05-01T10:12:00Z"}
        ]))
        .unwrap();
        let labels = to_label_events(&t);
        assert_eq!(labels.len(), 2);
        assert!(labels[0].added && !labels[1].added);
        assert_eq!(labels[0].actor.id, Some(5));
        assert_eq!(
            pushed_at(&t, "aaa").unwrap().to_string(),
            "2024-05-01T10:05:00Z"
        );
        assert_eq!(
            pushed_at(&t, "ccc").unwrap().to_string(),
            "2024-05-01T10:10:00Z"
        );
        assert_eq!(pushed_at(&t, "ddd"), None);
    }

    #[test]
    fn parses_gitea_shapes() {
        // A Gitea pull request (GitHub-shaped; `draft` absent on older servers).
        let p: github::Pull = serde_json::from_value(json!({
            "number": 7, "title": "WIP: try things", "user": {"login": "dev"},
            "head": {"sha": "abc", "ref": "feature", "repo": {"full_name": "org/app"}},
            "base": {"sha": "def", "ref": "main", "repo": {"full_name": "org/app"}},
            "labels": [{"name": "preview"}], "html_url": "https://gitea/org/app/pulls/7",
            "updated_at": "2024-05-01T10:00:00+02:00", "state": "open", "merged": false
        }))
        .unwrap();
        let pr = to_pull(p);
        assert!(pr.draft, "WIP prefix marks a draft");
        assert!(!pr.fork);
        assert_eq!(pr.updated_at.to_string(), "2024-05-01T08:00:00Z");
        assert_eq!(pr.labels, vec!["preview".to_string()]);

        let b: Vec<BranchJson> =
            serde_json::from_value(json!([{"name": "main", "commit": {"id": "0123"}}])).unwrap();
        assert_eq!(b[0].commit.id, "0123");

        let r = to_review(
            serde_json::from_value(json!({"user": {"login": "rev"}, "state": "REQUEST_CHANGES",
                "commit_id": "abc", "submitted_at": "2024-05-01T10:00:00Z", "dismissed": false}))
            .unwrap(),
        );
        assert_eq!(r.state, ReviewState::ChangesRequested);
        let r = to_review(
            serde_json::from_value(
                json!({"user": {"login": "rev"}, "state": "APPROVED", "dismissed": true}),
            )
            .unwrap(),
        );
        assert_eq!(r.state, ReviewState::Dismissed);

        let combined: CombinedStatus = serde_json::from_value(json!({
            "state": "failure", "statuses": [
                {"context": "ci", "status": "failure", "target_url": "https://ci"},
                {"context": "lint", "state": "warning"}
            ]
        }))
        .unwrap();
        let checks: Vec<CheckResult> = combined
            .statuses
            .unwrap()
            .into_iter()
            .map(to_check)
            .collect();
        assert_eq!(checks[0].state, CheckState::Failure);
        assert_eq!(checks[1].state, CheckState::Neutral);
        let empty: CombinedStatus = serde_json::from_value(json!({"statuses": null})).unwrap();
        assert!(empty.statuses.is_none());
    }

    #[test]
    fn transport_refuses_other_credentials_and_origins() {
        let ssh = Credentials::Ssh {
            identity: secrecy::SecretString::from("k".to_string()),
            known_hosts: "h".into(),
        };
        let cfg = BudgetConfig::default();
        assert_eq!(
            GiteaTransport::new("https://g/api/v1", &ssh, None, &cfg, None)
                .unwrap_err()
                .category(),
            "InvalidConfig"
        );
        let t = GiteaTransport::new(
            "https://g/api/v1",
            &Credentials::Token(secrecy::SecretString::from("tok".to_string())),
            None,
            &cfg,
            None,
        )
        .unwrap();
        assert!(!format!("{t:?}").contains("tok"));
    }
}
