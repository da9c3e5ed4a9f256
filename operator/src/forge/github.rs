//! GitHub (github.com and Enterprise Server) through octocrab.
//!
//! Flow: octocrab owns authentication — personal/installation tokens, and for GitHub Apps the
//! JWT → installation-token exchange with caching and refresh on 401 — and the Enterprise base
//! URL. We bypass its typed API and call `build_request` + `execute`, which return the raw
//! `http::Response`, so the [`Budget`](super::budget::Budget) sees ETags and rate-limit headers.
//! Requests go out with a path relative to the base URI: octocrab only attaches installation
//! tokens to relative or api.github.com URIs, which also keeps our credential on our host.
//! octocrab's own retry/cache layers are not enabled (the budget does both).

use std::collections::HashMap;
use std::fmt;

use async_trait::async_trait;
use http::{HeaderMap, HeaderValue, Method, header};
use http_body_util::BodyExt;
use jiff::Timestamp;
use octocrab::Octocrab;
use octocrab::models::{AppId, InstallationId};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

use super::Forge;
use super::budget::{ApiRequest, BudgetConfig, RawResponse, Transport, Verdict, classify};
use super::coords::{RepoCoordinates, encode_path_segment as enc};
use super::credentials::Credentials;
use super::error::ForgeError;
use super::shared::{CredentialState, IdJson, api_url, http_client};
use super::types::*;

// ---------------------------------------------------------------------------------------------
// Transport
// ---------------------------------------------------------------------------------------------

pub(crate) struct GithubTransport {
    crab: Octocrab,
    api_base: String,
    /// Set for GitHub App credentials: lets callers mint git-over-https tokens.
    is_app: bool,
}

impl fmt::Debug for GithubTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GithubTransport")
            .field("api_base", &self.api_base)
            .field("is_app", &self.is_app)
            .finish()
    }
}

impl GithubTransport {
    pub(crate) fn new(
        api_base: &str,
        creds: &Credentials,
        ca_pem: Option<&[u8]>,
        config: &BudgetConfig,
        guard: Option<&crate::net::Guard>,
    ) -> Result<Self, ForgeError> {
        let http = http_client(guard, ca_pem, config.request_timeout)?;
        let builder = Octocrab::builder().base_uri(api_base).map_err(|e| {
            ForgeError::invalid_config(format!("GitHub API base {api_base:?} is invalid: {e}"))
        })?;
        let build_err = |e: octocrab::Error| {
            ForgeError::invalid_config(format!("cannot build GitHub client: {e}"))
        };
        let (crab, is_app) = match creds {
            Credentials::Token(t) => (
                builder
                    .personal_token(t.expose_secret().to_string())
                    .build_with_reqwest(http)
                    .map_err(build_err)?,
                false,
            ),
            Credentials::Basic { username, password } => (
                builder
                    .basic_auth(username.clone(), password.expose_secret().to_string())
                    .build_with_reqwest(http)
                    .map_err(build_err)?,
                false,
            ),
            Credentials::Anonymous => (builder.build_with_reqwest(http).map_err(build_err)?, false),
            Credentials::GithubApp {
                app_id,
                installation_id,
                private_key_pem,
            } => {
                let app = builder
                    .app_from_rsa_pem(AppId(*app_id), private_key_pem.expose_secret().as_bytes())
                    .map_err(|_| {
                        ForgeError::invalid_config(
                            "githubPrivateKey is not a usable RSA private key (PEM)",
                        )
                    })?
                    .build_with_reqwest(http)
                    .map_err(build_err)?;
                let inst = app
                    .installation(InstallationId(*installation_id))
                    .map_err(build_err)?;
                (inst, true)
            }
            Credentials::Ssh { .. } => {
                return Err(ForgeError::invalid_config(
                    "an SSH key cannot call the GitHub API; use a token or a GitHub App",
                ));
            }
        };
        Ok(GithubTransport {
            crab,
            api_base: api_base.trim_end_matches('/').to_string(),
            is_app,
        })
    }

    /// The path+query of `url` relative to the API origin (octocrab re-applies the base).
    fn relative(&self, url: &str) -> Result<String, ForgeError> {
        let base = url::Url::parse(&self.api_base)
            .map_err(|e| ForgeError::invalid_config(format!("bad API base: {e}")))?;
        let target = url::Url::parse(url)
            .map_err(|e| ForgeError::invalid_config(format!("bad request URL {url:?}: {e}")))?;
        if base.origin() != target.origin() {
            return Err(ForgeError::invalid_response(format!(
                "refusing to send GitHub credentials to {}",
                target.origin().ascii_serialization()
            )));
        }
        let mut rel = target.path().to_string();
        if let Some(q) = target.query() {
            rel.push('?');
            rel.push_str(q);
        }
        Ok(rel)
    }

    /// A fresh (cached by octocrab) installation token for git over https.
    pub(crate) async fn installation_token(&self) -> Result<secrecy::SecretString, ForgeError> {
        if !self.is_app {
            return Err(ForgeError::unsupported(
                "installation_token",
                "github (not a GitHub App credential)",
            ));
        }
        self.crab.installation_token().await.map_err(map_octocrab)
    }
}

fn map_octocrab(e: octocrab::Error) -> ForgeError {
    match e {
        // octocrab only interprets responses itself when minting installation tokens.
        octocrab::Error::GitHub { source, .. } => {
            let headers = source.headers.clone().unwrap_or_default();
            let body = json!({ "message": source.message }).to_string();
            match classify(
                source.status_code,
                &headers,
                body.as_bytes(),
                Timestamp::now(),
                std::time::Duration::from_secs(60),
            ) {
                Verdict::RateLimited { until, .. } => ForgeError::RateLimited {
                    reset: until,
                    message: format!("minting GitHub App installation token: {}", source.message),
                },
                Verdict::Retry(m) => {
                    ForgeError::transient(format!("minting GitHub App installation token: {m}"))
                }
                _ => ForgeError::auth(format!(
                    "GitHub App installation token request failed ({}): {}",
                    source.status_code, source.message
                )),
            }
        }
        octocrab::Error::JWT { .. } => {
            ForgeError::invalid_config("githubPrivateKey cannot sign a GitHub App JWT")
        }
        other => match crate::net::find_refusal(&other) {
            Some(refusal) => ForgeError::refused(refusal),
            None => ForgeError::transient(format!("GitHub request failed: {other}")),
        },
    }
}

#[async_trait]
impl Transport for GithubTransport {
    async fn send(&self, req: &ApiRequest, extra: HeaderMap) -> Result<RawResponse, ForgeError> {
        let mut builder = http::Request::builder()
            .method(req.method.clone())
            .uri(self.relative(&req.url)?)
            .header(
                header::ACCEPT,
                HeaderValue::from_static("application/vnd.github+json"),
            );
        for (k, v) in &extra {
            builder = builder.header(k, v);
        }
        let request = self
            .crab
            .build_request(builder, req.body.as_ref())
            .map_err(|e| ForgeError::invalid_config(format!("cannot build request: {e}")))?;
        let response = self.crab.execute(request).await.map_err(map_octocrab)?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| ForgeError::transient(format!("reading GitHub response: {e}")))?
            .to_bytes();
        Ok(RawResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// JSON shapes (only the fields we use; everything optional that GitHub may null)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub(crate) struct User {
    pub login: String,
    /// Stable account id (logins can be renamed).
    #[serde(default)]
    pub id: Option<u64>,
}

impl User {
    pub(crate) fn actor(&self) -> Actor {
        Actor {
            login: self.login.clone(),
            id: self.id,
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct RepoRef {
    pub full_name: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct GitRef {
    pub sha: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub repo: Option<RepoRef>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Label {
    pub name: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Pull {
    pub number: u64,
    pub title: String,
    #[serde(default)]
    pub body: Option<String>,
    pub user: Option<User>,
    pub head: GitRef,
    pub base: GitRef,
    #[serde(default)]
    pub labels: Vec<Label>,
    #[serde(default)]
    pub draft: Option<bool>,
    pub html_url: String,
    pub updated_at: Timestamp,
    pub state: String,
    #[serde(default)]
    pub merged: Option<bool>,
    #[serde(default)]
    pub merged_at: Option<String>,
    /// Only on the single-PR endpoint.
    #[serde(default)]
    pub commits: Option<u64>,
    #[serde(default)]
    pub changed_files: Option<u64>,
}

/// A head is a fork when it lives in another repository, or its repository is gone (a deleted
/// fork: nothing vouches for it).
pub(crate) fn is_fork(head: Option<&RepoRef>, base: Option<&RepoRef>) -> bool {
    match (
        head.and_then(|r| r.full_name.as_deref()),
        base.and_then(|r| r.full_name.as_deref()),
    ) {
        (Some(h), Some(b)) => !h.eq_ignore_ascii_case(b),
        _ => true,
    }
}

pub(crate) fn to_pull(p: Pull) -> PullRequest {
    // `state` first: an open PR is open whatever stale merge fields say (GitHub's own example
    // carries `merged_at` on an open PR).
    let merged = p.merged.unwrap_or(false) || p.merged_at.is_some();
    let state = match (p.state.as_str(), merged) {
        ("open", _) => PullRequestState::Open,
        (_, true) => PullRequestState::Merged,
        _ => PullRequestState::Closed,
    };
    PullRequest {
        number: p.number,
        title: p.title,
        body: p.body.unwrap_or_default(),
        author: p.user.map(|u| u.login).unwrap_or_default(),
        fork: is_fork(p.head.repo.as_ref(), p.base.repo.as_ref()),
        head_sha: p.head.sha,
        head_ref: p.head.git_ref,
        base_ref: p.base.git_ref,
        labels: p.labels.into_iter().map(|l| l.name).collect(),
        draft: p.draft.unwrap_or(false),
        url: p.html_url,
        updated_at: p.updated_at,
        state,
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct BranchCommit {
    pub sha: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct BranchJson {
    pub name: String,
    pub commit: BranchCommit,
}

#[derive(Debug, Deserialize)]
pub(crate) struct FileJson {
    pub filename: String,
    pub status: String,
    #[serde(default)]
    pub additions: u64,
    #[serde(default)]
    pub deletions: u64,
    #[serde(default)]
    pub previous_filename: Option<String>,
    /// Absent for binary files and diffs GitHub considers too large.
    #[serde(default)]
    pub patch: Option<String>,
}

pub(crate) fn file_status(s: &str) -> FileStatus {
    match s {
        "added" => FileStatus::Added,
        "modified" | "changed" => FileStatus::Modified,
        "removed" | "deleted" => FileStatus::Removed,
        "renamed" => FileStatus::Renamed,
        _ => FileStatus::Other,
    }
}

pub(crate) fn to_file(f: FileJson) -> ChangedFile {
    ChangedFile {
        status: file_status(&f.status),
        path: f.filename,
        previous_path: f.previous_filename,
        additions: f.additions,
        deletions: f.deletions,
        patch: f.patch,
        // GitHub counts the lines of a file whose patch it leaves out.
        diff_withheld: false,
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct ReviewJson {
    pub user: Option<User>,
    pub state: String,
    #[serde(default)]
    pub commit_id: Option<String>,
    #[serde(default)]
    pub submitted_at: Option<Timestamp>,
}

pub(crate) fn review_state(s: &str) -> ReviewState {
    match s.to_ascii_uppercase().as_str() {
        "APPROVED" => ReviewState::Approved,
        "CHANGES_REQUESTED" | "REQUEST_CHANGES" => ReviewState::ChangesRequested,
        "DISMISSED" => ReviewState::Dismissed,
        "PENDING" => ReviewState::Pending,
        _ => ReviewState::Commented,
    }
}

pub(crate) fn to_review(r: ReviewJson) -> Review {
    Review {
        user: r.user.map(|u| u.login).unwrap_or_default(),
        state: review_state(&r.state),
        commit_sha: r.commit_id,
        submitted_at: r.submitted_at,
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct Verification {
    #[serde(default)]
    pub verified: bool,
}

#[derive(Debug, Deserialize)]
pub(crate) struct GitAuthor {
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct CommitInner {
    pub message: String,
    #[serde(default)]
    pub author: Option<GitAuthor>,
    #[serde(default)]
    pub verification: Option<Verification>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct CommitJson {
    pub sha: String,
    pub commit: CommitInner,
    #[serde(default)]
    pub author: Option<User>,
}

pub(crate) fn to_commit(c: CommitJson) -> Commit {
    Commit {
        author: c
            .author
            .map(|u| u.login)
            .or_else(|| c.commit.author.and_then(|a| a.name))
            .unwrap_or_default(),
        verified: c.commit.verification.is_some_and(|v| v.verified),
        sha: c.sha,
        message: c.commit.message,
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct AppRef {
    pub id: u64,
}

#[derive(Debug, Deserialize)]
pub(crate) struct CommentJson {
    pub id: u64,
    pub user: Option<User>,
    #[serde(default)]
    pub body: Option<String>,
    pub created_at: Timestamp,
    #[serde(default)]
    pub performed_via_github_app: Option<AppRef>,
}

pub(crate) fn to_comment(c: &CommentJson) -> Comment {
    Comment {
        id: CommentId(c.id),
        author: c.user.as_ref().map(|u| u.login.clone()).unwrap_or_default(),
        author_id: c.user.as_ref().and_then(|u| u.id),
        body: c.body.clone().unwrap_or_default(),
        created_at: c.created_at,
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct IssueEventLabel {
    pub name: String,
}

/// One entry of `GET /repos/{owner}/{repo}/issues/{number}/events`.
#[derive(Debug, Deserialize)]
pub(crate) struct IssueEventJson {
    pub event: String,
    #[serde(default)]
    pub actor: Option<User>,
    pub created_at: Timestamp,
    #[serde(default)]
    pub label: Option<IssueEventLabel>,
}

/// The `labeled` / `unlabeled` events among an issue's events (others are skipped).
pub(crate) fn to_label_events(events: Vec<IssueEventJson>) -> Vec<LabelEvent> {
    events
        .into_iter()
        .filter_map(|e| {
            let added = match e.event.as_str() {
                "labeled" => true,
                "unlabeled" => false,
                _ => return None,
            };
            Some(LabelEvent {
                label: e.label?.name,
                actor: e
                    .actor
                    .as_ref()
                    .map(User::actor)
                    .unwrap_or_else(|| Actor::login("")),
                added,
                created_at: e.created_at,
            })
        })
        .collect()
}

#[derive(Debug, Deserialize)]
pub(crate) struct StatusJson {
    pub context: String,
    pub state: String,
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
    pub statuses: Vec<StatusJson>,
}

pub(crate) fn status_state(s: &str) -> CheckState {
    match s {
        "success" => CheckState::Success,
        "failure" => CheckState::Failure,
        "error" => CheckState::Error,
        "warning" => CheckState::Neutral,
        _ => CheckState::Pending,
    }
}

pub(crate) fn to_status_check(s: StatusJson) -> CheckResult {
    CheckResult {
        state: status_state(&s.state),
        name: s.context,
        source: CheckSource::Status,
        url: s.target_url,
        updated_at: s.updated_at,
        description: s.description,
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct CheckRunJson {
    pub id: u64,
    pub name: String,
    pub status: String,
    #[serde(default)]
    pub conclusion: Option<String>,
    #[serde(default)]
    pub html_url: Option<String>,
    #[serde(default)]
    pub details_url: Option<String>,
    #[serde(default)]
    pub started_at: Option<Timestamp>,
    #[serde(default)]
    pub completed_at: Option<Timestamp>,
    #[serde(default)]
    pub output: Option<CheckRunOutputJson>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct CheckRunOutputJson {
    #[serde(default)]
    pub title: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct CheckRunList {
    #[serde(default)]
    pub total_count: u64,
    #[serde(default)]
    pub check_runs: Vec<CheckRunJson>,
}

pub(crate) fn check_run_state(status: &str, conclusion: Option<&str>) -> CheckState {
    if status != "completed" {
        return CheckState::Pending;
    }
    match conclusion {
        Some("success") => CheckState::Success,
        Some("neutral") => CheckState::Neutral,
        Some("skipped") => CheckState::Skipped,
        Some("failure" | "action_required") => CheckState::Failure,
        Some("cancelled" | "timed_out" | "stale" | "startup_failure") => CheckState::Error,
        _ => CheckState::Pending,
    }
}

pub(crate) fn to_check_run(c: CheckRunJson) -> CheckResult {
    CheckResult {
        state: check_run_state(&c.status, c.conclusion.as_deref()),
        name: c.name,
        source: CheckSource::CheckRun,
        url: c.details_url.or(c.html_url),
        updated_at: c.completed_at.or(c.started_at),
        description: c.output.and_then(|o| o.title),
    }
}

/// Latest result per check name across statuses and check runs, sorted by name. Entries
/// without a time lose against timed ones; among equals the first seen wins.
pub fn merge_checks(all: Vec<CheckResult>) -> Vec<CheckResult> {
    let mut by_name: HashMap<String, CheckResult> = HashMap::new();
    for c in all {
        match by_name.get(&c.name) {
            Some(existing) if existing.updated_at >= c.updated_at => {}
            _ => {
                by_name.insert(c.name.clone(), c);
            }
        }
    }
    let mut out: Vec<CheckResult> = by_name.into_values().collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[derive(Debug, Deserialize)]
pub(crate) struct DeploymentJson {
    pub id: u64,
    pub sha: String,
    pub environment: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RepoJson {
    pub default_branch: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct MembershipJson {
    pub state: String,
}

pub(crate) fn status_state_str(s: StatusState) -> &'static str {
    match s {
        StatusState::Pending => "pending",
        StatusState::Success => "success",
        StatusState::Failure => "failure",
        StatusState::Error => "error",
    }
}

pub(crate) fn deployment_state_str(s: DeploymentState) -> &'static str {
    match s {
        DeploymentState::Pending => "pending",
        DeploymentState::InProgress => "in_progress",
        DeploymentState::Success => "success",
        DeploymentState::Failure => "failure",
        DeploymentState::Error => "error",
        DeploymentState::Inactive => "inactive",
    }
}

pub(crate) fn check_run_body(run: &CheckRunOutput) -> Result<serde_json::Value, ForgeError> {
    let status = match run.status {
        CheckRunStatus::Queued => "queued",
        CheckRunStatus::InProgress => "in_progress",
        CheckRunStatus::Completed => "completed",
    };
    let mut body = json!({
        "name": run.name,
        "head_sha": run.head_sha,
        "status": status,
        "output": {
            "title": truncate_chars(&run.title, 255),
            "summary": truncate_chars(&run.summary, CHECK_RUN_TEXT_MAX_CHARS),
        },
    });
    if let Some(text) = &run.text {
        body["output"]["text"] = json!(truncate_chars(text, CHECK_RUN_TEXT_MAX_CHARS));
    }
    if let Some(url) = &run.details_url {
        body["details_url"] = json!(url);
    }
    if run.status == CheckRunStatus::Completed {
        let conclusion = match run.conclusion {
            Some(CheckConclusion::Success) => "success",
            Some(CheckConclusion::Failure) => "failure",
            Some(CheckConclusion::Neutral) => "neutral",
            Some(CheckConclusion::Cancelled) => "cancelled",
            Some(CheckConclusion::Skipped) => "skipped",
            Some(CheckConclusion::TimedOut) => "timed_out",
            Some(CheckConclusion::ActionRequired) => "action_required",
            None => {
                return Err(ForgeError::invalid_config(format!(
                    "check run {:?} is completed but has no conclusion",
                    run.name
                )));
            }
        };
        body["conclusion"] = json!(conclusion);
    }
    Ok(body)
}

/// GitHub truncates list endpoints at these sizes without saying so; reaching one means we
/// must compare with the PR's own counters.
const MAX_PR_FILES: usize = 3_000;
const MAX_PR_COMMITS: usize = 250;

// ---------------------------------------------------------------------------------------------
// The forge
// ---------------------------------------------------------------------------------------------

pub(crate) struct GithubForge {
    coords: RepoCoordinates,
    state: Arc<CredentialState>,
    transport: Arc<GithubTransport>,
    credentials: Credentials,
}

impl fmt::Debug for GithubForge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GithubForge")
            .field("repo", &self.coords)
            .field("credentials", &self.credentials)
            .finish()
    }
}

impl GithubForge {
    pub(crate) fn new(
        coords: RepoCoordinates,
        state: Arc<CredentialState>,
        transport: Arc<GithubTransport>,
        credentials: Credentials,
    ) -> Self {
        GithubForge {
            coords,
            state,
            transport,
            credentials,
        }
    }

    fn repo_path(&self) -> String {
        format!(
            "/repos/{}/{}",
            enc(&self.coords.owner),
            enc(&self.coords.name)
        )
    }

    fn url(&self, suffix: &str, query: &[(&str, &str)]) -> String {
        api_url(
            &self.coords.api_base,
            &format!("{}{suffix}", self.repo_path()),
            query,
        )
    }

    fn per_page(&self) -> String {
        self.state.budget.config().per_page.to_string()
    }

    fn app_id(&self) -> Option<u64> {
        match &self.credentials {
            Credentials::GithubApp { app_id, .. } => Some(*app_id),
            _ => None,
        }
    }

    async fn identity(&self) -> Result<String, ForgeError> {
        self.state
            .identity
            .get_or_try_init(|| async {
                match &self.credentials {
                    Credentials::Basic { username, .. } => Ok(username.clone()),
                    _ => {
                        let me: User = self
                            .state
                            .get(&api_url(&self.coords.api_base, "/user", &[]), "/user")
                            .await?;
                        Ok(me.login)
                    }
                }
            })
            .await
            .cloned()
    }

    async fn raw_comments(&self, number: u64) -> Result<Vec<CommentJson>, ForgeError> {
        let pp = self.per_page();
        self.state
            .get_all(
                &self.url(&format!("/issues/{number}/comments"), &[("per_page", &pp)]),
                "/repos/{owner}/{repo}/issues/{number}/comments",
            )
            .await
    }
}

#[async_trait]
impl Forge for GithubForge {
    fn kind(&self) -> ForgeKind {
        ForgeKind::Github
    }

    fn coordinates(&self) -> &RepoCoordinates {
        &self.coords
    }

    async fn default_branch(&self) -> Result<String, ForgeError> {
        let repo: RepoJson = self
            .state
            .get(&self.url("", &[]), "/repos/{owner}/{repo}")
            .await?;
        Ok(repo.default_branch)
    }

    async fn list_branches(&self) -> Result<Vec<Branch>, ForgeError> {
        let pp = self.per_page();
        let items: Vec<BranchJson> = self
            .state
            .get_all(
                &self.url("/branches", &[("per_page", &pp)]),
                "/repos/{owner}/{repo}/branches",
            )
            .await?;
        Ok(items
            .into_iter()
            .map(|b| Branch {
                name: b.name,
                sha: b.commit.sha,
            })
            .collect())
    }

    async fn list_open_pull_requests(&self) -> Result<Vec<PullRequest>, ForgeError> {
        let pp = self.per_page();
        let items: Vec<Pull> = self
            .state
            .get_all(
                &self.url(
                    "/pulls",
                    &[
                        ("state", "open"),
                        ("sort", "created"),
                        ("direction", "asc"),
                        ("per_page", &pp),
                    ],
                ),
                "/repos/{owner}/{repo}/pulls",
            )
            .await?;
        Ok(items.into_iter().map(to_pull).collect())
    }

    async fn get_pull_request(&self, number: u64) -> Result<PullRequest, ForgeError> {
        let pull: Pull = self
            .state
            .get(
                &self.url(&format!("/pulls/{number}"), &[]),
                "/repos/{owner}/{repo}/pulls/{number}",
            )
            .await?;
        Ok(to_pull(pull))
    }

    async fn list_changed_files(&self, number: u64) -> Result<Vec<ChangedFile>, ForgeError> {
        let pp = self.per_page();
        let items: Vec<FileJson> = self
            .state
            .get_all(
                &self.url(&format!("/pulls/{number}/files"), &[("per_page", &pp)]),
                "/repos/{owner}/{repo}/pulls/{number}/files",
            )
            .await?;
        if items.len() >= MAX_PR_FILES {
            let pull: Pull = self
                .state
                .get(
                    &self.url(&format!("/pulls/{number}"), &[]),
                    "/repos/{owner}/{repo}/pulls/{number}",
                )
                .await?;
            if pull.changed_files.unwrap_or(u64::MAX) > items.len() as u64 {
                return Err(ForgeError::invalid_response(format!(
                    "pull request #{number} changes more than {MAX_PR_FILES} files; GitHub's API \
                     cannot list them all"
                )));
            }
        }
        Ok(items.into_iter().map(to_file).collect())
    }

    async fn list_reviews(&self, number: u64) -> Result<Vec<Review>, ForgeError> {
        let pp = self.per_page();
        let items: Vec<ReviewJson> = self
            .state
            .get_all(
                &self.url(&format!("/pulls/{number}/reviews"), &[("per_page", &pp)]),
                "/repos/{owner}/{repo}/pulls/{number}/reviews",
            )
            .await?;
        Ok(items.into_iter().map(to_review).collect())
    }

    async fn list_commits(&self, number: u64) -> Result<Vec<Commit>, ForgeError> {
        let pp = self.per_page();
        let items: Vec<CommitJson> = self
            .state
            .get_all(
                &self.url(&format!("/pulls/{number}/commits"), &[("per_page", &pp)]),
                "/repos/{owner}/{repo}/pulls/{number}/commits",
            )
            .await?;
        if items.len() >= MAX_PR_COMMITS {
            let pull: Pull = self
                .state
                .get(
                    &self.url(&format!("/pulls/{number}"), &[]),
                    "/repos/{owner}/{repo}/pulls/{number}",
                )
                .await?;
            if pull.commits.unwrap_or(u64::MAX) > items.len() as u64 {
                return Err(ForgeError::invalid_response(format!(
                    "pull request #{number} has more than {MAX_PR_COMMITS} commits; GitHub's API \
                     cannot list them all"
                )));
            }
        }
        Ok(items.into_iter().map(to_commit).collect())
    }

    async fn list_comments(&self, number: u64) -> Result<Vec<Comment>, ForgeError> {
        Ok(self
            .raw_comments(number)
            .await?
            .iter()
            .map(to_comment)
            .collect())
    }

    async fn checks_for_sha(&self, sha: &str) -> Result<Vec<CheckResult>, ForgeError> {
        let pp = self.per_page();
        let mut all = Vec::new();
        for page in self
            .state
            .get_pages(
                &self.url(
                    &format!("/commits/{}/status", enc(sha)),
                    &[("per_page", &pp)],
                ),
                "/repos/{owner}/{repo}/commits/{ref}/status",
            )
            .await?
        {
            let combined: CombinedStatus = page.json()?;
            all.extend(combined.statuses.into_iter().map(to_status_check));
        }
        let mut runs = Vec::new();
        for page in self
            .state
            .get_pages(
                &self.url(
                    &format!("/commits/{}/check-runs", enc(sha)),
                    &[("filter", "latest"), ("per_page", &pp)],
                ),
                "/repos/{owner}/{repo}/commits/{ref}/check-runs",
            )
            .await?
        {
            let list: CheckRunList = page.json()?;
            let total = list.total_count;
            runs.extend(list.check_runs);
            if runs.len() as u64 > total {
                return Err(ForgeError::invalid_response(
                    "check-runs pages hold more runs than total_count",
                ));
            }
        }
        all.extend(runs.into_iter().map(to_check_run));
        Ok(merge_checks(all))
    }

    async fn set_commit_status(&self, sha: &str, status: &CommitStatus) -> Result<(), ForgeError> {
        let mut body = json!({
            "state": status_state_str(status.state),
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

    async fn upsert_check_run(&self, run: &CheckRunOutput) -> Result<CheckRunId, ForgeError> {
        let Some(app_id) = self.app_id() else {
            return Err(ForgeError::unsupported(
                "upsert_check_run",
                "github with token credentials (check runs need a GitHub App)",
            ));
        };
        let body = check_run_body(run)?;
        let app = app_id.to_string();
        let existing: CheckRunList = self
            .state
            .get(
                &self.url(
                    &format!("/commits/{}/check-runs", enc(&run.head_sha)),
                    &[
                        ("check_name", &run.name),
                        ("app_id", &app),
                        ("filter", "latest"),
                    ],
                ),
                "/repos/{owner}/{repo}/commits/{ref}/check-runs",
            )
            .await?;
        let found = existing
            .check_runs
            .iter()
            .filter(|c| c.name == run.name)
            .map(|c| c.id)
            .max();
        let created: IdJson = match found {
            Some(id) => {
                self.state
                    .send(
                        Method::PATCH,
                        &self.url(&format!("/check-runs/{id}"), &[]),
                        "/repos/{owner}/{repo}/check-runs/{id}",
                        body,
                        true,
                    )
                    .await?
            }
            None => {
                self.state
                    .send(
                        Method::POST,
                        &self.url("/check-runs", &[]),
                        "/repos/{owner}/{repo}/check-runs",
                        body,
                        false,
                    )
                    .await?
            }
        };
        Ok(CheckRunId(created.id))
    }

    async fn create_deployment(&self, req: &DeploymentRequest) -> Result<DeploymentId, ForgeError> {
        let body = json!({
            // Pin to the exact commit we deploy, never a moving branch.
            "ref": req.sha,
            "environment": req.environment,
            "description": truncate_chars(&req.description, STATUS_DESCRIPTION_MAX_CHARS),
            "transient_environment": req.transient,
            "production_environment": req.production,
            "auto_merge": false,
            // Previews are deployed before other checks pass; gating is the PolicyGate's job.
            "required_contexts": [],
        });
        let created: serde_json::Value = self
            .state
            .send(
                Method::POST,
                &self.url("/deployments", &[]),
                "/repos/{owner}/{repo}/deployments",
                body,
                false,
            )
            .await?;
        created
            .get("id")
            .and_then(serde_json::Value::as_u64)
            .map(DeploymentId)
            .ok_or_else(|| {
                ForgeError::invalid_response(format!(
                    "deployment was not created: {}",
                    created.get("message").unwrap_or(&created)
                ))
            })
    }

    async fn set_deployment_status(
        &self,
        id: DeploymentId,
        state: DeploymentState,
        update: &DeploymentStatusUpdate,
    ) -> Result<(), ForgeError> {
        let mut body = json!({
            "state": deployment_state_str(state),
            "auto_inactive": true,
        });
        if let Some(u) = &update.environment_url {
            body["environment_url"] = json!(u);
        }
        if let Some(u) = &update.log_url {
            body["log_url"] = json!(u);
        }
        if let Some(d) = &update.description {
            body["description"] = json!(truncate_chars(d, STATUS_DESCRIPTION_MAX_CHARS));
        }
        self.state
            .send_unit(
                Method::POST,
                &self.url(&format!("/deployments/{}/statuses", id.0), &[]),
                "/repos/{owner}/{repo}/deployments/{id}/statuses",
                body,
                true,
            )
            .await
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
                        ("sha", sha),
                        ("per_page", &pp),
                    ],
                ),
                "/repos/{owner}/{repo}/deployments",
            )
            .await?;
        Ok(items
            .into_iter()
            .filter(|d| d.sha == sha && d.environment == environment)
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
        // Team memberships are looked up by login: the login a comment or event carries is the
        // account's current one, so it names the same account the id does.
        let user = actor.login.as_str();
        if user.is_empty() {
            return Ok(false);
        }
        for team in trusted_teams {
            let (org, slug) = team
                .split_once('/')
                .unwrap_or((self.coords.owner.as_str(), team.as_str()));
            let url = api_url(
                &self.coords.api_base,
                &format!(
                    "/orgs/{}/teams/{}/memberships/{}",
                    enc(org),
                    enc(slug),
                    enc(user)
                ),
                &[],
            );
            match self
                .state
                .get::<MembershipJson>(&url, "/orgs/{org}/teams/{team_slug}/memberships/{username}")
                .await
            {
                Ok(m) if m.state == "active" => return Ok(true),
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
        let events: Vec<IssueEventJson> = self
            .state
            .get_all(
                &self.url(&format!("/issues/{number}/events"), &[("per_page", &pp)]),
                "/repos/{owner}/{repo}/issues/{number}/events",
            )
            .await?;
        Ok(to_label_events(events))
    }

    /// GitHub records no push time for a pull request head: its timeline's `committed` entries
    /// carry the commit's own dates, which whoever made the commit chose.
    async fn head_pushed_at(
        &self,
        _number: u64,
        _sha: &str,
    ) -> Result<Option<Timestamp>, ForgeError> {
        Ok(None)
    }

    fn rate_limit(&self) -> Option<RateLimit> {
        self.state.budget.rate_limit()
    }

    async fn git_credentials(&self) -> Result<Credentials, ForgeError> {
        match &self.credentials {
            Credentials::GithubApp { .. } => Ok(Credentials::Token(
                self.transport.installation_token().await?,
            )),
            other => Ok(other.clone()),
        }
    }
}

#[async_trait]
impl super::sticky::CommentApi for GithubForge {
    async fn own_comments(&self, number: u64) -> Result<Vec<Comment>, ForgeError> {
        let raw = self.raw_comments(number).await?;
        // With App credentials, ours are those the App posted; else the token's user's.
        let app_id = self.app_id();
        let me = match app_id {
            Some(_) => None,
            None => Some(self.identity().await?),
        };
        Ok(raw
            .iter()
            .filter(|c| match app_id {
                Some(app) => c.performed_via_github_app.as_ref().map(|a| a.id) == Some(app),
                None => me.as_deref().is_some_and(|m| {
                    c.user
                        .as_ref()
                        .is_some_and(|u| m.eq_ignore_ascii_case(&u.login))
                }),
            })
            .map(to_comment)
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
                "/repos/{owner}/{repo}/issues/{number}/comments",
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
                "/../test-data/github/rest/",
                $name
            ))
        };
    }

    #[test]
    fn parses_pull_requests() {
        let pulls: Vec<Pull> = serde_json::from_str(fixture!("pulls-list.json")).unwrap();
        let prs: Vec<PullRequest> = pulls.into_iter().map(to_pull).collect();
        assert_eq!(prs.len(), 1);
        let pr = &prs[0];
        assert_eq!(pr.number, 1347);
        assert_eq!(pr.title, "Amazing new feature");
        assert_eq!(pr.author, "octocat");
        assert_eq!(pr.head_sha, "6dcb09b5b57875f334f61aebed695e2e4193db5e");
        assert_eq!(pr.head_ref, "new-topic");
        assert_eq!(pr.base_ref, "master");
        assert_eq!(pr.labels, vec!["bug".to_string()]);
        assert!(!pr.draft && !pr.fork);
        assert_eq!(pr.url, "https://github.com/octocat/Hello-World/pull/1347");
        assert_eq!(pr.updated_at.to_string(), "2011-01-26T19:01:12Z");
        assert_eq!(pr.state, PullRequestState::Open);

        let single: Pull = serde_json::from_str(fixture!("pulls-get.json")).unwrap();
        assert_eq!(single.commits, Some(3));
        assert_eq!(single.changed_files, Some(5));
        assert_eq!(to_pull(single).state, PullRequestState::Open);
    }

    #[test]
    fn pull_state_and_fork_rules() {
        let mut v: serde_json::Value = serde_json::from_str(fixture!("pulls-get.json")).unwrap();
        v["state"] = json!("closed");
        v["merged"] = json!(true);
        assert_eq!(
            to_pull(serde_json::from_value(v.clone()).unwrap()).state,
            PullRequestState::Merged
        );
        v["merged"] = json!(false);
        v["merged_at"] = json!(null);
        assert_eq!(
            to_pull(serde_json::from_value(v.clone()).unwrap()).state,
            PullRequestState::Closed
        );
        // Fork: head repo differs; deleted head repo counts as a fork.
        v["head"]["repo"]["full_name"] = json!("mallory/Hello-World");
        assert!(to_pull(serde_json::from_value(v.clone()).unwrap()).fork);
        v["head"]["repo"] = json!(null);
        assert!(to_pull(serde_json::from_value(v.clone()).unwrap()).fork);
        // The webhook payload shape parses too (same PR object).
        let hook: serde_json::Value = serde_json::from_str(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../test-data/github/webhooks/pull_request.closed.json"
        )))
        .unwrap();
        let pr = to_pull(serde_json::from_value(hook["pull_request"].clone()).unwrap());
        assert_eq!(pr.state, PullRequestState::Closed, "closed, not merged");
    }

    #[test]
    fn parses_files_reviews_commits_branches() {
        let files: Vec<FileJson> = serde_json::from_str(fixture!("pulls-list-files.json")).unwrap();
        let files: Vec<ChangedFile> = files.into_iter().map(to_file).collect();
        assert_eq!(
            files,
            vec![ChangedFile {
                diff_withheld: false,
                patch: Some(
                    "@@ -132,7 +132,7 @@ module Test @@ -1000,7 +1000,7 @@ module Test".into()
                ),
                path: "file1.txt".into(),
                previous_path: None,
                additions: 103,
                deletions: 21,
                status: FileStatus::Added
            }]
        );
        assert_eq!(file_status("renamed"), FileStatus::Renamed);
        assert_eq!(file_status("copied"), FileStatus::Other);

        let reviews: Vec<ReviewJson> =
            serde_json::from_str(fixture!("pulls-list-reviews.json")).unwrap();
        let r = to_review(reviews.into_iter().next().unwrap());
        assert_eq!(r.user, "octocat");
        assert_eq!(r.state, ReviewState::Approved);
        assert_eq!(
            r.commit_sha.as_deref(),
            Some("ecdd80bb57125d7ba9641ffaa4d7d2c19d3f3091")
        );
        assert_eq!(r.submitted_at.unwrap().to_string(), "2019-11-17T17:43:43Z");
        assert_eq!(
            review_state("CHANGES_REQUESTED"),
            ReviewState::ChangesRequested
        );
        assert_eq!(review_state("DISMISSED"), ReviewState::Dismissed);

        let commits: Vec<CommitJson> =
            serde_json::from_str(fixture!("pulls-list-commits.json")).unwrap();
        let c = to_commit(commits.into_iter().next().unwrap());
        assert_eq!(c.sha, "6dcb09b5b57875f334f61aebed695e2e4193db5e");
        assert_eq!(c.author, "octocat");
        assert_eq!(c.message, "Fix all the bugs");
        assert!(!c.verified);
        let signed: CommitJson = serde_json::from_value(json!({
            "sha": "a", "author": null,
            "commit": {"message": "m", "author": {"name": "Jane"}, "verification": {"verified": true}}
        }))
        .unwrap();
        let signed = to_commit(signed);
        assert!(signed.verified);
        assert_eq!(signed.author, "Jane");

        let branches: Vec<BranchJson> =
            serde_json::from_str(fixture!("repos-list-branches.json")).unwrap();
        assert_eq!(branches[0].name, "master");
        assert_eq!(
            branches[0].commit.sha,
            "c5b97d5ae6c19d5c5df71a34c7fbeeda2479ccbc"
        );
        let repo: RepoJson = serde_json::from_str(fixture!("repos-get.json")).unwrap();
        assert_eq!(repo.default_branch, "master");
    }

    #[test]
    fn parses_checks_and_merges_latest() {
        let combined: CombinedStatus =
            serde_json::from_str(fixture!("repos-get-combined-status-for-ref.json")).unwrap();
        let mut all: Vec<CheckResult> =
            combined.statuses.into_iter().map(to_status_check).collect();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].name, "continuous-integration/jenkins");
        assert_eq!(all[0].state, CheckState::Success);
        let runs: CheckRunList =
            serde_json::from_str(fixture!("checks-list-for-ref.json")).unwrap();
        assert_eq!(runs.total_count, 1);
        all.extend(runs.check_runs.into_iter().map(to_check_run));
        let run = all.iter().find(|c| c.name == "mighty_readme").unwrap();
        assert_eq!(
            (run.state, run.source),
            (CheckState::Neutral, CheckSource::CheckRun)
        );

        // An older status and a newer check run with the same name: the newer wins.
        let t = |s: i64| Some(Timestamp::from_second(s).unwrap());
        let merged = merge_checks(vec![
            CheckResult {
                description: None,
                name: "ci".into(),
                state: CheckState::Failure,
                source: CheckSource::Status,
                url: None,
                updated_at: t(10),
            },
            CheckResult {
                description: None,
                name: "ci".into(),
                state: CheckState::Success,
                source: CheckSource::CheckRun,
                url: None,
                updated_at: t(20),
            },
            CheckResult {
                description: None,
                name: "a".into(),
                state: CheckState::Pending,
                source: CheckSource::Status,
                url: None,
                updated_at: None,
            },
        ]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].name, "a");
        assert_eq!(merged[1].state, CheckState::Success);

        assert_eq!(check_run_state("in_progress", None), CheckState::Pending);
        assert_eq!(
            check_run_state("completed", Some("failure")),
            CheckState::Failure
        );
        assert_eq!(
            check_run_state("completed", Some("timed_out")),
            CheckState::Error
        );
        assert_eq!(
            check_run_state("completed", Some("skipped")),
            CheckState::Skipped
        );
        assert_eq!(status_state("pending"), CheckState::Pending);
        assert_eq!(status_state("error"), CheckState::Error);

        // The create/update responses parse as check runs too.
        for body in [
            fixture!("checks-create.json"),
            fixture!("checks-update.json"),
        ] {
            let c: CheckRunJson = serde_json::from_str(body).unwrap();
            assert!(c.id > 0);
        }
    }

    #[test]
    fn parses_comments_deployments_membership() {
        let comments: Vec<CommentJson> =
            serde_json::from_str(fixture!("issues-list-comments.json")).unwrap();
        let c = to_comment(&comments[0]);
        assert_eq!(
            (c.id, c.author.as_str(), c.body.as_str()),
            (CommentId(1), "octocat", "Me too")
        );
        assert_eq!(c.created_at.to_string(), "2011-04-14T16:00:49Z");
        assert_eq!(c.author_id, Some(1));
        assert_eq!(
            c.actor(),
            Actor {
                login: "octocat".into(),
                id: Some(1)
            }
        );
        let created: IdJson = serde_json::from_str(fixture!("issues-create-comment.json")).unwrap();
        assert_eq!(created.id, 1);

        let deployments: Vec<DeploymentJson> =
            serde_json::from_str(fixture!("repos-list-deployments.json")).unwrap();
        assert_eq!(deployments[0].id, 1);
        assert_eq!(
            deployments[0].sha,
            "a84d88e7554fc1fa21bcbc4efae3c782a70d2b9d"
        );
        assert_eq!(deployments[0].environment, "production");
        let d: IdJson = serde_json::from_str(fixture!("repos-create-deployment.json")).unwrap();
        assert_eq!(d.id, 1);
        let m: MembershipJson =
            serde_json::from_str(fixture!("teams-get-membership-for-user-in-org.json")).unwrap();
        assert_eq!(m.state, "active");
    }

    #[test]
    fn parses_label_events() {
        // The shape of GitHub's "List issue events" documentation (`labeled` example).
        let events: Vec<IssueEventJson> = serde_json::from_value(json!([
            {"id": 1, "event": "labeled", "actor": {"login": "octocat", "id": 1},
             "created_at": "2011-04-14T16:00:49Z", "commit_id": null,
             "label": {"name": "ok-to-preview", "color": "fc2929"}},
            {"id": 2, "event": "head_ref_force_pushed", "actor": {"login": "mallory", "id": 3},
             "created_at": "2011-04-14T16:01:00Z", "commit_id": null},
            {"id": 3, "event": "unlabeled", "actor": {"login": "octocat", "id": 1},
             "created_at": "2011-04-14T16:02:00Z", "label": {"name": "ok-to-preview"}},
        ]))
        .unwrap();
        let l = to_label_events(events);
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].label, "ok-to-preview");
        assert!(l[0].added && !l[1].added);
        assert_eq!(l[0].actor.id, Some(1));
        assert_eq!(l[0].created_at.to_string(), "2011-04-14T16:00:49Z");
    }

    #[test]
    fn check_run_bodies() {
        let mut run = CheckRunOutput {
            name: "pullwarden/gate/default".into(),
            head_sha: "abc".into(),
            status: CheckRunStatus::Completed,
            conclusion: Some(CheckConclusion::Failure),
            title: "1/2 rules passed".into(),
            summary: "x".repeat(70_000),
            text: Some("| rule | result |".into()),
            details_url: None,
        };
        let body = check_run_body(&run).unwrap();
        assert_eq!(body["conclusion"], "failure");
        assert_eq!(body["status"], "completed");
        assert_eq!(
            body["output"]["summary"].as_str().unwrap().chars().count(),
            CHECK_RUN_TEXT_MAX_CHARS
        );
        run.conclusion = None;
        assert_eq!(
            check_run_body(&run).unwrap_err().category(),
            "InvalidConfig"
        );
        run.status = CheckRunStatus::InProgress;
        let body = check_run_body(&run).unwrap();
        assert!(body.get("conclusion").is_none());
    }
}
