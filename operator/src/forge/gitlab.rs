//! GitLab (gitlab.com and self-managed) through the `gitlab` crate's `AsyncGitlab`.
//!
//! Flow: the transport sends every request through our own guarded reqwest client
//! (`crate::net`) with the `PRIVATE-TOKEN` header, and verifies the token lazily on first use
//! with `GET /api/v4/user` (async and fallible, while [`super::ForgeClients`] hands out clients
//! synchronously); a failed check is not cached, the next call retries. The raw response with
//! headers goes back to the budget, so it sees `ETag`, `RateLimit-*` and `X-Next-Page`.
//!
//! Merge requests are addressed by `iid`; approvals become [`Review`]s, notes are comments (the
//! sticky comment is a note), commit statuses map to GitLab's `pending|running|success|failed|
//! canceled`, and deployments/environments carry the preview link.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use http::{HeaderMap, HeaderValue, Method, header};
use jiff::Timestamp;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;

use super::Forge;
use super::budget::{ApiRequest, BudgetConfig, RawResponse, Transport, error_message};
use super::coords::{RepoCoordinates, encode_path_segment as enc};
use super::credentials::Credentials;
use super::error::ForgeError;
use super::shared::{CredentialState, IdJson, USER_AGENT, api_url, http_client, reqwest_error};
use super::types::*;

// ---------------------------------------------------------------------------------------------
// Transport
// ---------------------------------------------------------------------------------------------

pub(crate) struct GitlabTransport {
    http: reqwest::Client,
    /// `https://host[:port][/relative-root]/api/v4`, no trailing slash.
    api_base: String,
    origin: url::Origin,
    /// `PRIVATE-TOKEN` (a personal, project or group access token), marked sensitive.
    token: Option<HeaderValue>,
    /// The token is verified once (`GET /user`) before the first request, as `GitlabBuilder`
    /// did; a failed check is not cached, so the next call tries again.
    verified: tokio::sync::OnceCell<()>,
}

impl fmt::Debug for GitlabTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitlabTransport")
            .field("api_base", &self.api_base)
            .field("authenticated", &self.token.is_some())
            .finish()
    }
}

fn status_error(status: http::StatusCode, msg: &str) -> ForgeError {
    match status.as_u16() {
        401 | 403 => ForgeError::auth(format!("GitLab rejected the token ({status}): {msg}")),
        404 => ForgeError::invalid_config(format!(
            "no GitLab API answered GET /user ({status}); check url/apiUrl"
        )),
        429 => ForgeError::RateLimited {
            reset: Timestamp::now() + jiff::SignedDuration::from_secs(60),
            message: format!("GitLab rate limit while verifying the token: {msg}"),
        },
        s if s >= 500 => ForgeError::transient(format!("GitLab {status}: {msg}")),
        _ => ForgeError::invalid_response(format!("GitLab {status}: {msg}")),
    }
}

impl GitlabTransport {
    /// Requests go through our own reqwest client (not the `gitlab` crate's, which cannot take
    /// the outbound guard and follows redirects with the `PRIVATE-TOKEN` header to any host).
    pub(crate) fn new(
        api_base: &str,
        creds: &Credentials,
        ca_pem: Option<&[u8]>,
        config: &BudgetConfig,
        guard: Option<&crate::net::Guard>,
    ) -> Result<Self, ForgeError> {
        if !(api_base.starts_with("https://") || api_base.starts_with("http://")) {
            return Err(ForgeError::invalid_config(format!(
                "GitLab API base {api_base:?} must be http(s)"
            )));
        }
        let api_base = api_base.trim_end_matches('/');
        if !api_base.ends_with("/api/v4") {
            return Err(ForgeError::invalid_config(format!(
                "GitLab API base {api_base:?} must end with /api/v4"
            )));
        }
        let origin = url::Url::parse(api_base)
            .map_err(|e| ForgeError::invalid_config(format!("bad GitLab API base: {e}")))?
            .origin();
        let token = match creds {
            Credentials::Token(t) => {
                let mut v = HeaderValue::from_str(t.expose_secret()).map_err(|_| {
                    ForgeError::invalid_config(
                        "credential contains characters not allowed in an HTTP header",
                    )
                })?;
                v.set_sensitive(true);
                Some(v)
            }
            Credentials::Anonymous => None,
            other => {
                return Err(ForgeError::invalid_config(format!(
                    "GitLab API access needs a `token` credential, not {}",
                    other.type_name()
                )));
            }
        };
        Ok(GitlabTransport {
            http: http_client(guard, ca_pem, config.request_timeout)?,
            api_base: api_base.to_string(),
            origin,
            token,
            verified: tokio::sync::OnceCell::new(),
        })
    }

    fn request(&self, method: Method, url: url::Url) -> reqwest::RequestBuilder {
        let mut builder = self
            .http
            .request(method, url)
            .header(header::USER_AGENT, USER_AGENT)
            .header(header::ACCEPT, "application/json");
        if let Some(token) = &self.token {
            builder = builder.header("PRIVATE-TOKEN", token.clone());
        }
        builder
    }

    async fn verify(&self) -> Result<(), ForgeError> {
        if self.token.is_none() {
            return Ok(());
        }
        self.verified
            .get_or_try_init(|| async {
                let url = url::Url::parse(&format!("{}/user", self.api_base))
                    .map_err(|e| ForgeError::invalid_config(format!("bad GitLab URL: {e}")))?;
                let resp = self
                    .request(Method::GET, url)
                    .send()
                    .await
                    .map_err(|e| reqwest_error(&e))?;
                let status = resp.status();
                if status.is_success() {
                    return Ok(());
                }
                let body = resp.bytes().await.unwrap_or_default();
                Err(status_error(status, &error_message(&body)))
            })
            .await
            .map(|_| ())
    }
}

#[async_trait]
impl Transport for GitlabTransport {
    async fn send(&self, req: &ApiRequest, extra: HeaderMap) -> Result<RawResponse, ForgeError> {
        let url = url::Url::parse(&req.url)
            .map_err(|e| ForgeError::invalid_config(format!("bad request URL: {e}")))?;
        if url.origin() != self.origin {
            return Err(ForgeError::invalid_response(format!(
                "refusing to send GitLab credentials to {}",
                url.origin().ascii_serialization()
            )));
        }
        self.verify().await?;
        let mut builder = self.request(req.method.clone(), url).headers(extra);
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
// JSON shapes
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub(crate) struct UserJson {
    pub username: String,
    /// Stable account id (usernames can be changed).
    #[serde(default)]
    pub id: Option<u64>,
}

impl UserJson {
    fn actor(&self) -> Actor {
        Actor {
            login: self.username.clone(),
            id: self.id,
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct MergeRequestJson {
    pub iid: u64,
    pub title: String,
    #[serde(default)]
    pub description: Option<String>,
    pub author: Option<UserJson>,
    #[serde(default)]
    pub sha: Option<String>,
    pub source_branch: String,
    pub target_branch: String,
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default)]
    pub draft: Option<bool>,
    #[serde(default)]
    pub work_in_progress: Option<bool>,
    #[serde(default)]
    pub source_project_id: Option<u64>,
    #[serde(default)]
    pub target_project_id: Option<u64>,
    pub web_url: String,
    pub updated_at: Timestamp,
    pub state: String,
}

pub(crate) fn to_pull(m: MergeRequestJson) -> PullRequest {
    let state = match m.state.as_str() {
        "opened" => PullRequestState::Open,
        "merged" => PullRequestState::Merged,
        // closed and locked
        _ => PullRequestState::Closed,
    };
    PullRequest {
        number: m.iid,
        title: m.title,
        body: m.description.unwrap_or_default(),
        author: m.author.map(|a| a.username).unwrap_or_default(),
        head_sha: m.sha.unwrap_or_default(),
        head_ref: m.source_branch,
        base_ref: m.target_branch,
        labels: m.labels,
        draft: m.draft.or(m.work_in_progress).unwrap_or(false),
        fork: match (m.source_project_id, m.target_project_id) {
            (Some(s), Some(t)) => s != t,
            _ => true,
        },
        url: m.web_url,
        updated_at: m.updated_at,
        state,
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct DiffJson {
    pub old_path: String,
    pub new_path: String,
    #[serde(default)]
    pub new_file: bool,
    #[serde(default)]
    pub renamed_file: bool,
    #[serde(default)]
    pub deleted_file: bool,
    #[serde(default)]
    pub diff: String,
    /// GitLab sends no `diff` for these (over its diff limits).
    #[serde(default)]
    pub too_large: bool,
    #[serde(default)]
    pub collapsed: bool,
}

/// Added/removed line counts of a unified-diff hunk body (GitLab sends hunks without file
/// headers, so every `+`/`-` line counts).
pub(crate) fn count_diff(diff: &str) -> (u64, u64) {
    diff.lines()
        .fold((0, 0), |(a, d), line| match line.as_bytes().first() {
            Some(b'+') => (a + 1, d),
            Some(b'-') => (a, d + 1),
            _ => (a, d),
        })
}

pub(crate) fn to_file(d: DiffJson) -> ChangedFile {
    let (additions, deletions) = count_diff(&d.diff);
    let diff_withheld = (d.too_large || d.collapsed) && d.diff.is_empty();
    let status = if d.new_file {
        FileStatus::Added
    } else if d.deleted_file {
        FileStatus::Removed
    } else if d.renamed_file {
        FileStatus::Renamed
    } else {
        FileStatus::Modified
    };
    ChangedFile {
        previous_path: (d.renamed_file || d.old_path != d.new_path).then_some(d.old_path),
        path: d.new_path,
        additions,
        deletions,
        status,
        patch: (!d.diff.is_empty()).then_some(d.diff),
        diff_withheld,
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct ApprovedBy {
    pub user: UserJson,
    #[serde(default)]
    pub approved_at: Option<Timestamp>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ApprovalsJson {
    #[serde(default)]
    pub approved_by: Vec<ApprovedBy>,
}

pub(crate) fn to_reviews(a: ApprovalsJson) -> Vec<Review> {
    a.approved_by
        .into_iter()
        .map(|ab| Review {
            user: ab.user.username,
            state: ReviewState::Approved,
            // GitLab resets approvals on push itself (project setting); it reports no SHA.
            commit_sha: None,
            submitted_at: ab.approved_at,
        })
        .collect()
}

#[derive(Debug, Deserialize)]
pub(crate) struct CommitJson {
    pub id: String,
    #[serde(default)]
    pub author_name: Option<String>,
    pub message: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct SignatureJson {
    #[serde(default)]
    pub verification_status: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct NoteJson {
    pub id: u64,
    pub author: Option<UserJson>,
    pub body: String,
    pub created_at: Timestamp,
    #[serde(default)]
    pub system: bool,
}

pub(crate) fn to_comment(n: &NoteJson) -> Comment {
    Comment {
        id: CommentId(n.id),
        author: n
            .author
            .as_ref()
            .map(|a| a.username.clone())
            .unwrap_or_default(),
        author_id: n.author.as_ref().and_then(|a| a.id),
        body: n.body.clone(),
        created_at: n.created_at,
    }
}

/// GitLab's Developer role: the lowest access level that may push to the project. Guests (10),
/// Reporters (20) and "minimal access" (5) members do not count as trusted.
pub const DEVELOPER_ACCESS: u64 = 30;

/// A group member (`GET /groups/:id/members/all/:user_id`).
#[derive(Debug, Deserialize)]
pub(crate) struct MemberJson {
    #[serde(default)]
    pub access_level: u64,
    /// `active`, or `awaiting` / `blocked` for members who cannot act yet.
    #[serde(default)]
    pub state: Option<String>,
}

/// Whether a group membership makes its holder trusted: Developer or above, and active.
pub(crate) fn member_trusted(m: &MemberJson) -> bool {
    m.access_level >= DEVELOPER_ACCESS && m.state.as_deref().is_none_or(|s| s == "active")
}

#[derive(Debug, Deserialize)]
pub(crate) struct LabelRefJson {
    pub name: String,
}

/// One entry of `GET /projects/:id/merge_requests/:iid/resource_label_events`.
#[derive(Debug, Deserialize)]
pub(crate) struct LabelEventJson {
    #[serde(default)]
    pub user: Option<UserJson>,
    pub created_at: Timestamp,
    /// Null when the label was deleted from the project since.
    #[serde(default)]
    pub label: Option<LabelRefJson>,
    pub action: String,
}

pub(crate) fn to_label_events(events: Vec<LabelEventJson>) -> Vec<LabelEvent> {
    let mut out: Vec<LabelEvent> = events
        .into_iter()
        .filter_map(|e| {
            Some(LabelEvent {
                label: e.label?.name,
                actor: e
                    .user
                    .as_ref()
                    .map(UserJson::actor)
                    .unwrap_or_else(|| Actor::login("")),
                added: e.action == "add",
                created_at: e.created_at,
            })
        })
        .collect();
    out.sort_by_key(|e| e.created_at);
    out
}

/// One merge request diff version (`GET /projects/:id/merge_requests/:iid/versions`): GitLab
/// creates one per push, stamped with its own clock.
#[derive(Debug, Deserialize)]
pub(crate) struct VersionJson {
    pub head_commit_sha: String,
    pub created_at: Timestamp,
}

/// When `sha` last became the head: the newest version whose head it is.
pub(crate) fn pushed_at(versions: &[VersionJson], sha: &str) -> Option<Timestamp> {
    versions
        .iter()
        .filter(|v| v.head_commit_sha.eq_ignore_ascii_case(sha))
        .map(|v| v.created_at)
        .max()
}

#[derive(Debug, Deserialize)]
pub(crate) struct StatusJson {
    pub name: String,
    pub status: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub target_url: Option<String>,
    #[serde(default)]
    pub created_at: Option<Timestamp>,
    #[serde(default)]
    pub started_at: Option<Timestamp>,
    #[serde(default)]
    pub finished_at: Option<Timestamp>,
}

pub(crate) fn check_state(status: &str) -> CheckState {
    match status {
        "success" => CheckState::Success,
        "failed" => CheckState::Failure,
        "canceled" | "canceling" => CheckState::Error,
        "skipped" => CheckState::Skipped,
        // created, waiting_for_resource, preparing, pending, running, scheduled, manual
        _ => CheckState::Pending,
    }
}

pub(crate) fn to_check(s: StatusJson) -> CheckResult {
    CheckResult {
        state: check_state(&s.status),
        name: s.name,
        source: CheckSource::Status,
        url: s.target_url,
        updated_at: s.finished_at.or(s.started_at).or(s.created_at),
        description: s.description,
    }
}

pub(crate) fn status_state_str(s: StatusState) -> &'static str {
    match s {
        StatusState::Pending => "pending",
        StatusState::Success => "success",
        // GitLab has no "error"; a gate that could not decide must still block.
        StatusState::Failure | StatusState::Error => "failed",
    }
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
pub(crate) struct ProjectJson {
    #[serde(default)]
    pub default_branch: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct EnvironmentRef {
    pub id: u64,
}

#[derive(Debug, Deserialize)]
pub(crate) struct DeploymentJson {
    pub id: u64,
    pub sha: String,
    #[serde(default)]
    pub environment: Option<EnvironmentRef>,
}

fn is_same_state_transition(e: &ForgeError) -> bool {
    // GitLab answers 400 "Cannot transition status via :run from :running" when the status is
    // already what we ask for: the desired state holds.
    matches!(e, ForgeError::InvalidConfig { message } if message.contains("Cannot transition status"))
}

// ---------------------------------------------------------------------------------------------
// The forge
// ---------------------------------------------------------------------------------------------

pub(crate) struct GitlabForge {
    coords: RepoCoordinates,
    state: Arc<CredentialState>,
    credentials: Credentials,
}

impl fmt::Debug for GitlabForge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitlabForge")
            .field("repo", &self.coords)
            .field("credentials", &self.credentials)
            .finish()
    }
}

impl GitlabForge {
    pub(crate) fn new(
        coords: RepoCoordinates,
        state: Arc<CredentialState>,
        credentials: Credentials,
    ) -> Self {
        GitlabForge {
            coords,
            state,
            credentials,
        }
    }

    fn url(&self, suffix: &str, query: &[(&str, &str)]) -> String {
        api_url(
            &self.coords.api_base,
            &format!("/projects/{}{suffix}", self.coords.gitlab_project_id()),
            query,
        )
    }

    fn per_page(&self) -> String {
        self.state.budget.config().per_page.to_string()
    }

    async fn identity(&self) -> Result<String, ForgeError> {
        self.state
            .identity
            .get_or_try_init(|| async {
                let me: UserJson = self
                    .state
                    .get(&api_url(&self.coords.api_base, "/user", &[]), "/user")
                    .await?;
                Ok(me.username)
            })
            .await
            .cloned()
    }

    async fn notes(&self, number: u64) -> Result<Vec<NoteJson>, ForgeError> {
        let pp = self.per_page();
        self.state
            .get_all(
                &self.url(
                    &format!("/merge_requests/{number}/notes"),
                    &[
                        ("sort", "asc"),
                        ("order_by", "created_at"),
                        ("per_page", &pp),
                    ],
                ),
                "/projects/{id}/merge_requests/{iid}/notes",
            )
            .await
    }

    async fn commit_verified(&self, sha: &str) -> Result<bool, ForgeError> {
        match self
            .state
            .get::<SignatureJson>(
                &self.url(&format!("/repository/commits/{}/signature", enc(sha)), &[]),
                "/projects/{id}/repository/commits/{sha}/signature",
            )
            .await
        {
            Ok(sig) => Ok(sig.verification_status.as_deref() == Some("verified")),
            // For this endpoint 404 is the answer "not signed".
            Err(ForgeError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl Forge for GitlabForge {
    fn kind(&self) -> ForgeKind {
        ForgeKind::Gitlab
    }

    fn coordinates(&self) -> &RepoCoordinates {
        &self.coords
    }

    async fn default_branch(&self) -> Result<String, ForgeError> {
        let p: ProjectJson = self.state.get(&self.url("", &[]), "/projects/{id}").await?;
        p.default_branch.ok_or_else(|| {
            ForgeError::not_found("project has no default branch (empty repository)")
        })
    }

    async fn list_branches(&self) -> Result<Vec<Branch>, ForgeError> {
        let pp = self.per_page();
        let items: Vec<BranchJson> = self
            .state
            .get_all(
                &self.url("/repository/branches", &[("per_page", &pp)]),
                "/projects/{id}/repository/branches",
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
        let pp = self.per_page();
        let items: Vec<MergeRequestJson> = self
            .state
            .get_all(
                &self.url(
                    "/merge_requests",
                    &[
                        ("state", "opened"),
                        ("order_by", "created_at"),
                        ("sort", "asc"),
                        ("per_page", &pp),
                    ],
                ),
                "/projects/{id}/merge_requests",
            )
            .await?;
        Ok(items.into_iter().map(to_pull).collect())
    }

    async fn get_pull_request(&self, number: u64) -> Result<PullRequest, ForgeError> {
        let mr: MergeRequestJson = self
            .state
            .get(
                &self.url(&format!("/merge_requests/{number}"), &[]),
                "/projects/{id}/merge_requests/{iid}",
            )
            .await?;
        Ok(to_pull(mr))
    }

    async fn list_changed_files(&self, number: u64) -> Result<Vec<ChangedFile>, ForgeError> {
        let pp = self.per_page();
        let items: Vec<DiffJson> = self
            .state
            .get_all(
                &self.url(
                    &format!("/merge_requests/{number}/diffs"),
                    &[("per_page", &pp)],
                ),
                "/projects/{id}/merge_requests/{iid}/diffs",
            )
            .await?;
        Ok(items.into_iter().map(to_file).collect())
    }

    async fn list_reviews(&self, number: u64) -> Result<Vec<Review>, ForgeError> {
        let a: ApprovalsJson = self
            .state
            .get(
                &self.url(&format!("/merge_requests/{number}/approvals"), &[]),
                "/projects/{id}/merge_requests/{iid}/approvals",
            )
            .await?;
        Ok(to_reviews(a))
    }

    async fn list_commits(&self, number: u64) -> Result<Vec<Commit>, ForgeError> {
        let pp = self.per_page();
        let items: Vec<CommitJson> = self
            .state
            .get_all(
                &self.url(
                    &format!("/merge_requests/{number}/commits"),
                    &[("per_page", &pp)],
                ),
                "/projects/{id}/merge_requests/{iid}/commits",
            )
            .await?;
        let mut out = Vec::with_capacity(items.len());
        for c in items {
            // One (conditional, cached) request per commit: GitLab lists no verification flag.
            let verified = self.commit_verified(&c.id).await?;
            out.push(Commit {
                sha: c.id,
                author: c.author_name.unwrap_or_default(),
                message: c.message,
                verified,
            });
        }
        Ok(out)
    }

    async fn list_comments(&self, number: u64) -> Result<Vec<Comment>, ForgeError> {
        Ok(self
            .notes(number)
            .await?
            .iter()
            .filter(|n| !n.system)
            .map(to_comment)
            .collect())
    }

    async fn checks_for_sha(&self, sha: &str) -> Result<Vec<CheckResult>, ForgeError> {
        let pp = self.per_page();
        let items: Vec<StatusJson> = self
            .state
            .get_all(
                &self.url(
                    &format!("/repository/commits/{}/statuses", enc(sha)),
                    &[("per_page", &pp)],
                ),
                "/projects/{id}/repository/commits/{sha}/statuses",
            )
            .await?;
        Ok(super::github::merge_checks(
            items.into_iter().map(to_check).collect(),
        ))
    }

    async fn set_commit_status(&self, sha: &str, status: &CommitStatus) -> Result<(), ForgeError> {
        let mut body = json!({
            "state": status_state_str(status.state),
            "name": status.context,
            "description": truncate_chars(&status.description, STATUS_DESCRIPTION_MAX_CHARS),
        });
        if let Some(url) = &status.target_url {
            body["target_url"] = json!(url);
        }
        match self
            .state
            .send_unit(
                Method::POST,
                &self.url(&format!("/statuses/{}", enc(sha)), &[]),
                "/projects/{id}/statuses/{sha}",
                body,
                true,
            )
            .await
        {
            Err(e) if is_same_state_transition(&e) => Ok(()),
            other => other,
        }
    }

    async fn upsert_check_run(&self, _run: &CheckRunOutput) -> Result<CheckRunId, ForgeError> {
        Err(ForgeError::unsupported("upsert_check_run", "gitlab"))
    }

    async fn create_deployment(&self, req: &DeploymentRequest) -> Result<DeploymentId, ForgeError> {
        let created: IdJson = self
            .state
            .send(
                Method::POST,
                &self.url("/deployments", &[]),
                "/projects/{id}/deployments",
                json!({
                    "environment": req.environment,
                    "sha": req.sha,
                    "ref": req.git_ref,
                    "tag": false,
                    "status": "running",
                }),
                false,
            )
            .await?;
        Ok(DeploymentId(created.id))
    }

    async fn set_deployment_status(
        &self,
        id: DeploymentId,
        state: DeploymentState,
        update: &DeploymentStatusUpdate,
    ) -> Result<(), ForgeError> {
        let deployment: DeploymentJson = self
            .state
            .get(
                &self.url(&format!("/deployments/{}", id.0), &[]),
                "/projects/{id}/deployments/{deployment_id}",
            )
            .await?;
        let env_id = deployment.environment.map(|e| e.id);
        if let (Some(env), Some(url)) = (env_id, &update.environment_url) {
            self.state
                .send_unit(
                    Method::PUT,
                    &self.url(&format!("/environments/{env}"), &[]),
                    "/projects/{id}/environments/{environment_id}",
                    json!({ "external_url": url }),
                    true,
                )
                .await?;
        }
        let status = match state {
            DeploymentState::Pending | DeploymentState::InProgress => "running",
            DeploymentState::Success => "success",
            DeploymentState::Failure | DeploymentState::Error => "failed",
            DeploymentState::Inactive => {
                let env = env_id.ok_or_else(|| {
                    ForgeError::invalid_response("deployment has no environment to stop")
                })?;
                return self
                    .state
                    .send_unit(
                        Method::POST,
                        &self.url(&format!("/environments/{env}/stop"), &[]),
                        "/projects/{id}/environments/{environment_id}/stop",
                        json!({}),
                        true,
                    )
                    .await;
            }
        };
        match self
            .state
            .send_unit(
                Method::PUT,
                &self.url(&format!("/deployments/{}", id.0), &[]),
                "/projects/{id}/deployments/{deployment_id}",
                json!({ "status": status }),
                true,
            )
            .await
        {
            Err(e) if is_same_state_transition(&e) => Ok(()),
            other => other,
        }
    }

    async fn find_deployment(
        &self,
        environment: &str,
        sha: &str,
    ) -> Result<Option<DeploymentId>, ForgeError> {
        let pp = self.per_page();
        let items: Vec<DeploymentJson> = self
            .state
            .get_all(
                &self.url(
                    "/deployments",
                    &[
                        ("environment", environment),
                        ("order_by", "id"),
                        ("sort", "desc"),
                        ("per_page", &pp),
                    ],
                ),
                "/projects/{id}/deployments",
            )
            .await?;
        Ok(items
            .into_iter()
            .filter(|d| d.sha == sha)
            .map(|d| DeploymentId(d.id))
            .max())
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
        if trusted_teams.is_empty() {
            return Ok(false);
        }
        #[derive(Deserialize)]
        struct UserId {
            id: u64,
        }
        // The note's author id names the account for good; only without one is the username
        // resolved (as it is now).
        let uid = match actor.id {
            Some(id) => id,
            None if actor.login.is_empty() => return Ok(false),
            None => {
                let users: Vec<UserId> = self
                    .state
                    .get(
                        &api_url(
                            &self.coords.api_base,
                            "/users",
                            &[("username", &actor.login)],
                        ),
                        "/users",
                    )
                    .await?;
                let Some(uid) = users.first().map(|u| u.id) else {
                    return Ok(false);
                };
                uid
            }
        };
        for group in trusted_teams {
            let url = api_url(
                &self.coords.api_base,
                &format!("/groups/{}/members/all/{uid}", enc(group)),
                &[],
            );
            match self
                .state
                .get::<MemberJson>(&url, "/groups/{id}/members/all/{user_id}")
                .await
            {
                // Guests and Reporters are members too, but may not push: not trusted.
                Ok(m) if member_trusted(&m) => return Ok(true),
                Ok(_) => {}
                // For this endpoint 404 is the answer "not a member".
                Err(ForgeError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    async fn list_label_events(&self, number: u64) -> Result<Vec<LabelEvent>, ForgeError> {
        let pp = self.per_page();
        let events: Vec<LabelEventJson> = self
            .state
            .get_all(
                &self.url(
                    &format!("/merge_requests/{number}/resource_label_events"),
                    &[("per_page", &pp)],
                ),
                "/projects/{id}/merge_requests/{iid}/resource_label_events",
            )
            .await?;
        Ok(to_label_events(events))
    }

    async fn head_pushed_at(
        &self,
        number: u64,
        sha: &str,
    ) -> Result<Option<Timestamp>, ForgeError> {
        let pp = self.per_page();
        let versions: Vec<VersionJson> = self
            .state
            .get_all(
                &self.url(
                    &format!("/merge_requests/{number}/versions"),
                    &[("per_page", &pp)],
                ),
                "/projects/{id}/merge_requests/{iid}/versions",
            )
            .await?;
        Ok(pushed_at(&versions, sha))
    }

    fn rate_limit(&self) -> Option<RateLimit> {
        self.state.budget.rate_limit()
    }

    async fn git_credentials(&self) -> Result<Credentials, ForgeError> {
        Ok(self.credentials.clone())
    }
}

#[async_trait]
impl super::sticky::CommentApi for GitlabForge {
    async fn own_comments(&self, number: u64) -> Result<Vec<Comment>, ForgeError> {
        let me = self.identity().await?;
        Ok(self
            .notes(number)
            .await?
            .iter()
            .filter(|n| !n.system)
            .map(to_comment)
            .filter(|c| c.author.eq_ignore_ascii_case(&me))
            .collect())
    }

    async fn edit_comment(
        &self,
        number: u64,
        id: CommentId,
        body: &str,
    ) -> Result<CommentId, ForgeError> {
        self.state
            .send_comment(
                Method::PUT,
                &self.url(&format!("/merge_requests/{number}/notes/{}", id.0), &[]),
                "/projects/{id}/merge_requests/{iid}/notes/{note_id}",
                body,
                true,
            )
            .await
    }

    async fn create_comment(&self, number: u64, body: &str) -> Result<CommentId, ForgeError> {
        self.state
            .send_comment(
                Method::POST,
                &self.url(&format!("/merge_requests/{number}/notes"), &[]),
                "/projects/{id}/merge_requests/{iid}/notes",
                body,
                false,
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../test-data/gitlab/rest/",
                $name
            ))
        };
    }

    #[test]
    fn parses_merge_requests() {
        let mrs: Vec<MergeRequestJson> =
            serde_json::from_str(fixture!("list-project-merge-requests.json")).unwrap();
        let prs: Vec<PullRequest> = mrs.into_iter().map(to_pull).collect();
        assert_eq!(prs.len(), 1);
        let pr = &prs[0];
        assert_eq!(pr.number, 1);
        assert_eq!(pr.author, "admin");
        assert_eq!(pr.head_sha, "8888888888888888888888888888888888888888");
        assert_eq!(
            pr.labels,
            vec!["Community contribution".to_string(), "Manage".to_string()]
        );
        assert_eq!(pr.state, PullRequestState::Merged);
        assert!(!pr.draft);
        assert!(pr.fork, "source_project_id 2 != target_project_id 3");

        let single: MergeRequestJson =
            serde_json::from_str(fixture!("get-single-merge-request.json")).unwrap();
        let pr = to_pull(single);
        assert_eq!(pr.number, 133);
        assert_eq!(pr.state, PullRequestState::Open);
        assert!(!pr.fork);
        assert_eq!(pr.head_sha, "e82eb4a098e32c796079ca3915e07487fc4db24c");
        assert_eq!(
            pr.url,
            "https://gitlab.com/marcel.amirault/test-project/-/merge_requests/133"
        );

        let mut v: serde_json::Value =
            serde_json::from_str(fixture!("get-single-merge-request.json")).unwrap();
        v["state"] = json!("opened");
        v["source_project_id"] = json!(99);
        v["target_project_id"] = json!(3);
        v["draft"] = json!(true);
        let pr = to_pull(serde_json::from_value(v.clone()).unwrap());
        assert_eq!(pr.state, PullRequestState::Open);
        assert!(pr.fork && pr.draft);
        v["state"] = json!("locked");
        assert_eq!(
            to_pull(serde_json::from_value(v).unwrap()).state,
            PullRequestState::Closed
        );
    }

    #[test]
    fn parses_diffs_and_counts_lines() {
        let diffs: Vec<DiffJson> =
            serde_json::from_str(fixture!("list-merge-request-diffs.json")).unwrap();
        let files: Vec<ChangedFile> = diffs.into_iter().map(to_file).collect();
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].path, "README");
        assert_eq!(files[1].path, "VERSION");
        assert!(
            files
                .iter()
                .all(|f| f.status == FileStatus::Modified && f.previous_path.is_none())
        );
        // Real unified-diff bodies (the docs example indents its lines, so it counts nothing).
        assert_eq!(
            count_diff("@@ -1,3 +1,4 @@\n a\n-b\n+c\n+d\n--e\n\\ No newline"),
            (2, 2)
        );
        // Over GitLab's diff limits: no `diff`, and the counts are unknown, not zero.
        let huge: DiffJson = serde_json::from_value(serde_json::json!({
            "old_path": "dump.sql", "new_path": "dump.sql", "diff": "", "too_large": true
        }))
        .unwrap();
        let huge = to_file(huge);
        assert!(huge.diff_withheld && huge.patch.is_none());
        let renamed = to_file(DiffJson {
            too_large: false,
            collapsed: false,
            old_path: "a".into(),
            new_path: "b".into(),
            new_file: false,
            renamed_file: true,
            deleted_file: false,
            diff: String::new(),
        });
        assert_eq!(
            (renamed.status, renamed.previous_path.as_deref()),
            (FileStatus::Renamed, Some("a"))
        );
    }

    #[test]
    fn membership_label_events_and_versions() {
        // Shapes of GitLab's REST docs (group members, resource label events, MR versions).
        let member = |level: u64, state: &str| -> MemberJson {
            serde_json::from_value(serde_json::json!({
                "id": 1, "username": "raymond_smith", "access_level": level, "state": state
            }))
            .unwrap()
        };
        assert!(member_trusted(&member(30, "active")));
        assert!(member_trusted(&member(50, "active")));
        assert!(!member_trusted(&member(20, "active")), "Reporter");
        assert!(!member_trusted(&member(10, "active")), "Guest");
        assert!(!member_trusted(&member(5, "active")), "minimal access");
        assert!(!member_trusted(&member(40, "awaiting")));

        let events: Vec<LabelEventJson> = serde_json::from_value(serde_json::json!([
            {"id": 142, "user": {"id": 1, "name": "Administrator", "username": "root"},
             "created_at": "2018-08-20T13:38:20.077Z", "resource_type": "MergeRequest",
             "resource_id": 253, "label": {"id": 73, "name": "ok-to-preview"}, "action": "add"},
            {"id": 143, "user": {"id": 1, "username": "root"},
             "created_at": "2018-08-20T13:38:20.077Z", "label": null, "action": "remove"},
            {"id": 144, "user": {"id": 1, "username": "root"},
             "created_at": "2018-08-20T13:40:00Z", "label": {"id": 73, "name": "ok-to-preview"},
             "action": "remove"}
        ]))
        .unwrap();
        let l = to_label_events(events);
        assert_eq!(l.len(), 2, "a deleted label has no name to match");
        assert!(l[0].added && !l[1].added);
        assert_eq!(l[0].actor.id, Some(1));

        let versions: Vec<VersionJson> = serde_json::from_value(serde_json::json!([
            {"id": 110, "head_commit_sha": "33e2ee8579fda5bc36accc9c6fbd0b4fefda9e30",
             "base_commit_sha": "eeb57dffe83deb686a60a71c16c32f71046868fd",
             "start_commit_sha": "eeb57dffe83deb686a60a71c16c32f71046868fd",
             "created_at": "2016-07-26T14:44:48.926Z", "merge_request_id": 105,
             "state": "collected", "real_size": "1"},
            {"id": 108, "head_commit_sha": "3eed087b29835c48015768f839d76e5ea8f07a24",
             "created_at": "2016-07-25T14:21:33.028Z"}
        ]))
        .unwrap();
        assert_eq!(
            pushed_at(&versions, "3eed087b29835c48015768f839d76e5ea8f07a24")
                .unwrap()
                .to_string(),
            "2016-07-25T14:21:33.028Z"
        );
        assert_eq!(pushed_at(&versions, "0000"), None);
    }

    #[test]
    fn parses_approvals_notes_statuses_branches() {
        let a: ApprovalsJson =
            serde_json::from_str(fixture!("get-merge-request-approvals.json")).unwrap();
        let reviews = to_reviews(a);
        assert_eq!(reviews.len(), 1);
        assert_eq!(reviews[0].user, "root");
        assert_eq!(reviews[0].state, ReviewState::Approved);
        assert_eq!(
            reviews[0].submitted_at.unwrap().to_string(),
            "2016-06-09T01:45:21.72Z"
        );

        let note: NoteJson =
            serde_json::from_str(fixture!("create-merge-request-note.json")).unwrap();
        let c = to_comment(&note);
        assert_eq!(
            (c.id, c.author.as_str(), c.body.as_str()),
            (CommentId(301), "pipin", "Comment for MR")
        );
        assert!(!note.system);
        assert_eq!(c.author_id, Some(1));

        let statuses: Vec<StatusJson> =
            serde_json::from_str(fixture!("list-commit-statuses.json")).unwrap();
        let checks: Vec<CheckResult> = statuses.into_iter().map(to_check).collect();
        assert_eq!(checks[0].name, "bundler:audit");
        assert!(checks.iter().all(|c| c.state == CheckState::Pending));
        let posted: StatusJson = serde_json::from_str(fixture!("post-commit-status.json")).unwrap();
        assert!(!posted.name.is_empty());
        assert_eq!(check_state("failed"), CheckState::Failure);
        assert_eq!(check_state("canceled"), CheckState::Error);
        assert_eq!(check_state("running"), CheckState::Pending);
        assert_eq!(status_state_str(StatusState::Error), "failed");

        let branches: Vec<BranchJson> =
            serde_json::from_str(fixture!("list-branches.json")).unwrap();
        assert!(!branches.is_empty());
        assert_eq!(branches[0].commit.id.len(), 40);
        let single: BranchJson = serde_json::from_str(fixture!("get-single-branch.json")).unwrap();
        assert!(!single.name.is_empty());
        let commit: CommitJson = serde_json::from_str(fixture!("get-single-commit.json")).unwrap();
        assert_eq!(commit.id.len(), 40);
    }

    #[test]
    fn transport_needs_token_and_v4_base() {
        let token = Credentials::Token(secrecy::SecretString::from("t".to_string()));
        let cfg = BudgetConfig::default();
        let t = GitlabTransport::new("https://git.corp/gitlab/api/v4", &token, None, &cfg, None)
            .unwrap();
        assert_eq!(t.api_base, "https://git.corp/gitlab/api/v4");
        assert!(!format!("{t:?}").contains("\"t\""));
        let t =
            GitlabTransport::new("http://127.0.0.1:9/api/v4/", &token, None, &cfg, None).unwrap();
        assert_eq!(t.api_base, "http://127.0.0.1:9/api/v4");
        assert!(GitlabTransport::new("https://h/api/v3", &token, None, &cfg, None).is_err());
        let basic = Credentials::Basic {
            username: "u".into(),
            password: secrecy::SecretString::from("p".to_string()),
        };
        assert_eq!(
            GitlabTransport::new("https://h/api/v4", &basic, None, &cfg, None)
                .unwrap_err()
                .category(),
            "InvalidConfig"
        );
        assert!(is_same_state_transition(&ForgeError::invalid_config(
            "forge rejected the request (400 Bad Request): Cannot transition status via :run from :running"
        )));
    }
}
