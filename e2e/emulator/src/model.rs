//! Wire types of the admin API (`/_emulator/...`), shared by the server ([`super::admin`]) and the
//! typed client ([`super::client::AdminClient`]) so both sides can never drift apart.
//!
//! Every request type has defaults for everything a test rarely cares about, so a test names
//! only what it asserts on.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Which forge a repository (or a token, a fault rule) belongs to.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Forge {
    /// GitHub (REST at `/` and `/api/v3`).
    #[default]
    Github,
    /// GitLab (REST at `/api/v4`).
    Gitlab,
    /// Gitea (REST at `/api/v1`).
    Gitea,
}

impl Forge {
    /// The lowercase name used in URLs and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Forge::Github => "github",
            Forge::Gitlab => "gitlab",
            Forge::Gitea => "gitea",
        }
    }
}

/// Registers an API token (`POST /_emulator/tokens`).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct TokenSpec {
    /// The secret the client sends (`Authorization: token X`, `Bearer X`, `PRIVATE-TOKEN: X`).
    pub token: String,
    /// The user the token authenticates as (created on first use).
    pub login: String,
    /// Restrict the token to one forge; `None` = valid on every forge.
    #[serde(default)]
    pub forge: Option<Forge>,
    /// Requests per window (GitHub default 5000/hour).
    #[serde(default)]
    pub rate_limit: Option<u32>,
    /// Private repositories (full paths) the token may see; `None` = all of them.
    #[serde(default)]
    pub repos: Option<Vec<String>>,
}

/// A registered token as the admin API reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenInfo {
    /// The token value.
    pub token: String,
    /// User login.
    pub login: String,
    /// Rate limit per window.
    pub limit: u32,
    /// Requests left in the current window.
    pub remaining: u32,
    /// Unix time at which the window resets.
    pub reset: i64,
}

/// Changes a client's rate-limit bucket (`PUT /_emulator/rate-limits/{client}`).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct RateLimitSpec {
    /// New limit per window.
    #[serde(default)]
    pub limit: Option<u32>,
    /// Set the remaining count directly (e.g. 0 to test exhaustion).
    #[serde(default)]
    pub remaining: Option<u32>,
    /// Window length in seconds (default 3600).
    #[serde(default)]
    pub window_secs: Option<u64>,
}

/// Registers a user (`POST /_emulator/users`); users are also created implicitly by login.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct UserSpec {
    /// Login / username.
    pub login: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Email used for commits.
    #[serde(default)]
    pub email: Option<String>,
    /// `User` (default), `Organization` or `Bot`.
    #[serde(default)]
    pub kind: Option<String>,
}

/// A user as the admin API reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserInfo {
    /// Numeric id (shared id space over all forges).
    pub id: u64,
    /// Login.
    pub login: String,
    /// Display name.
    pub name: String,
    /// Email.
    pub email: String,
    /// `User`, `Organization` or `Bot`.
    pub kind: String,
}

/// Registers a GitHub App (`POST /_emulator/apps`).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct AppSpec {
    /// The App id (the JWT `iss`).
    pub app_id: u64,
    /// URL slug (default `app-<id>`).
    #[serde(default)]
    pub slug: Option<String>,
    /// The App's RSA public key, PEM (PKCS#1 or SPKI); JWTs are verified against it.
    pub public_key_pem: String,
    /// Login of the account owning the App (default `emulator`).
    #[serde(default)]
    pub owner: Option<String>,
}

/// Installs a GitHub App on an account (`POST /_emulator/apps/{app_id}/installations`).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct InstallationSpec {
    /// Installation id (used in `/app/installations/{id}/access_tokens`).
    pub installation_id: u64,
    /// Account (user or org login) the App is installed on.
    pub account: String,
    /// Repositories (full paths) selected; `None` = all repositories of the account.
    #[serde(default)]
    pub repositories: Option<Vec<String>>,
    /// Rate limit of the installation's tokens (default 5000).
    #[serde(default)]
    pub rate_limit: Option<u32>,
}

/// Team membership (`PUT /_emulator/orgs/{org}/teams/{team}/memberships/{user}`).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct MembershipSpec {
    /// `member` (default) or `maintainer`.
    #[serde(default)]
    pub role: Option<String>,
    /// `active` (default) or `pending`.
    #[serde(default)]
    pub state: Option<String>,
}

/// Collaborator permission (`PUT /_emulator/repos/{path}/-/collaborators/{user}`).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct CollaboratorSpec {
    /// `admin`, `maintain`, `write`, `triage` or `read`.
    pub permission: String,
}

/// Creates a repository (`POST /_emulator/repos`).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct RepoSpec {
    /// Which forge serves it.
    pub forge: Forge,
    /// Full path: `owner/name` (GitHub, Gitea) or `group/sub/.../project` (GitLab).
    pub path: String,
    /// Default branch (default `main`); it gets an initial commit with a README.
    #[serde(default)]
    pub default_branch: Option<String>,
    /// Private repositories are visible only to tokens allowed to see them.
    #[serde(default)]
    pub private: bool,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Skip the initial commit (the repository then has no branches at all).
    #[serde(default)]
    pub empty: bool,
}

/// Forks a repository (`POST /_emulator/repos/{parent}/-/forks`): the new repository starts
/// with the parent's branches and history, as a forge fork does.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ForkSpec {
    /// Full path of the fork (same forge as the parent).
    pub path: String,
    /// Private fork.
    #[serde(default)]
    pub private: bool,
}

/// A repository as the admin API reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepoInfo {
    /// Numeric id (GitLab project id, GitHub/Gitea repository id).
    pub id: u64,
    /// Forge.
    pub forge: Forge,
    /// Full path.
    pub path: String,
    /// Default branch.
    pub default_branch: String,
    /// Private flag.
    pub private: bool,
    /// Smart-HTTP clone URL.
    pub clone_url: String,
    /// Base URL of the forge's REST API for this emulator.
    pub api_url: String,
    /// Bare repository on disk.
    pub git_dir: String,
    /// Branch name → head SHA, read from the real refs.
    pub branches: BTreeMap<String, String>,
}

/// Pushes one commit (`POST /_emulator/repos/{path}/-/commits`).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct PushSpec {
    /// Target branch; created (from `from` or the default branch) when missing.
    #[serde(default)]
    pub branch: String,
    /// Path → new content; `null` deletes the file.
    #[serde(default)]
    pub files: BTreeMap<String, Option<String>>,
    /// Commit message (default "Update files").
    #[serde(default)]
    pub message: Option<String>,
    /// Author login (default `emulator`); its name/email go into the commit.
    #[serde(default)]
    pub author: Option<String>,
    /// The forge reports the commit as signature-verified.
    #[serde(default)]
    pub verified: bool,
    /// Branch or SHA a new branch starts from (default: the default branch).
    #[serde(default)]
    pub from: Option<String>,
    /// Author and committer date (Unix seconds; default now). Any git author chooses these,
    /// so tests use it to show that commit dates prove nothing.
    #[serde(default)]
    pub date: Option<i64>,
}

/// The result of a push.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushResult {
    /// Branch pushed to.
    pub branch: String,
    /// Previous head (40 zeros for a new branch).
    pub before: String,
    /// New head: the real commit SHA.
    pub after: String,
}

/// Creates a branch (`POST /_emulator/repos/{path}/-/branches`).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct BranchSpec {
    /// Branch name.
    pub name: String,
    /// Branch or SHA to start from (default: the default branch).
    #[serde(default)]
    pub from: Option<String>,
}

/// Opens a pull/merge request (`POST /_emulator/repos/{path}/-/pulls`).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct PullSpec {
    /// Head branch (in `head_repo` for forks).
    pub head: String,
    /// Base branch (default: the default branch).
    #[serde(default)]
    pub base: Option<String>,
    /// Title.
    pub title: String,
    /// Body / description.
    #[serde(default)]
    pub body: Option<String>,
    /// Author login (default `emulator`).
    #[serde(default)]
    pub author: Option<String>,
    /// Draft.
    #[serde(default)]
    pub draft: bool,
    /// Labels set at creation (they do not emit `labeled` events).
    #[serde(default)]
    pub labels: Vec<String>,
    /// Full path of the fork the head branch lives in; makes this a fork PR.
    #[serde(default)]
    pub head_repo: Option<String>,
}

/// Updates a pull request (`PATCH /_emulator/repos/{path}/-/pulls/{n}`).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct PullUpdate {
    /// New title.
    #[serde(default)]
    pub title: Option<String>,
    /// New body.
    #[serde(default)]
    pub body: Option<String>,
    /// `false` marks a draft ready for review; `true` converts back to draft.
    #[serde(default)]
    pub draft: Option<bool>,
    /// Who made the change (webhook `sender`).
    #[serde(default)]
    pub user: Option<String>,
}

/// Who performs a state change (close, reopen, merge, label).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ActorSpec {
    /// Login (default `emulator`).
    #[serde(default)]
    pub user: Option<String>,
}

/// Adds a label (`POST /_emulator/repos/{path}/-/pulls/{n}/labels`).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct LabelSpec {
    /// Label name (created on the repository when new).
    pub name: String,
    /// Who labels.
    #[serde(default)]
    pub user: Option<String>,
}

/// A pull request as the admin API reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PullInfo {
    /// Number (GitLab: iid).
    pub number: u64,
    /// Global id.
    pub id: u64,
    /// Title.
    pub title: String,
    /// `open` or `closed`.
    pub state: String,
    /// Merged.
    pub merged: bool,
    /// Draft.
    pub draft: bool,
    /// Head branch.
    pub head_ref: String,
    /// Head SHA (from the real ref of the head repository).
    pub head_sha: String,
    /// Repository holding the head branch.
    pub head_repo: String,
    /// Base branch.
    pub base_ref: String,
    /// Base SHA (tip of the base branch, or at merge/close time).
    pub base_sha: String,
    /// Labels.
    pub labels: Vec<String>,
    /// Author login.
    pub author: String,
    /// Fork PR.
    pub fork: bool,
    /// The merge commit on the base branch, once merged.
    pub merge_commit_sha: Option<String>,
}

/// Submits a review (`POST /_emulator/repos/{path}/-/pulls/{n}/reviews`).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ReviewSpec {
    /// Reviewer login.
    pub user: String,
    /// `APPROVED`, `CHANGES_REQUESTED` or `COMMENTED`.
    pub state: String,
    /// Review body.
    #[serde(default)]
    pub body: Option<String>,
}

/// A review as the admin API reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReviewInfo {
    /// Id.
    pub id: u64,
    /// Reviewer.
    pub user: String,
    /// State.
    pub state: String,
    /// Body.
    pub body: String,
    /// Head SHA reviewed.
    pub commit_id: String,
}

/// Adds an issue comment / MR note (`POST /_emulator/repos/{path}/-/pulls/{n}/comments`).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct CommentSpec {
    /// Author login.
    pub user: String,
    /// Markdown body.
    pub body: String,
}

/// A comment with its edit history size, so tests can prove "one sticky comment updated in
/// place".
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommentInfo {
    /// Id.
    pub id: u64,
    /// Issue / PR number it belongs to.
    pub number: u64,
    /// Author login.
    pub user: String,
    /// Current body.
    pub body: String,
    /// How many times it was edited through the API.
    pub edit_count: u32,
    /// Created (RFC 3339).
    pub created_at: String,
    /// Last updated (RFC 3339).
    pub updated_at: String,
}

/// Sets a commit status as an external CI would (`POST /_emulator/repos/{path}/-/statuses/{sha}`).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct StatusSpec {
    /// Context (GitLab: name).
    pub context: String,
    /// State in the forge's own vocabulary (`success`, `failure`, `pending`, `error`; GitLab
    /// `running`, `failed`, `canceled`, ...; Gitea `warning`).
    pub state: String,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Link.
    #[serde(default)]
    pub target_url: Option<String>,
    /// Creator login (default `ci-bot`).
    #[serde(default)]
    pub user: Option<String>,
}

/// A commit status as the admin API reports it (written by anyone).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusInfo {
    /// Id.
    pub id: u64,
    /// Commit.
    pub sha: String,
    /// Context / name.
    pub context: String,
    /// State (forge vocabulary).
    pub state: String,
    /// Description.
    pub description: Option<String>,
    /// Link.
    pub target_url: Option<String>,
    /// Creator login.
    pub creator: String,
    /// Created (RFC 3339).
    pub created_at: String,
}

/// Creates a check run as another App would (`POST /_emulator/repos/{path}/-/check-runs`).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct CheckRunSpec {
    /// Commit.
    pub head_sha: String,
    /// Check name.
    pub name: String,
    /// `queued`, `in_progress` or `completed` (default `completed`).
    #[serde(default)]
    pub status: Option<String>,
    /// Conclusion when completed (default `success`).
    #[serde(default)]
    pub conclusion: Option<String>,
    /// App id that owns it (default 0: "external CI").
    #[serde(default)]
    pub app_id: Option<u64>,
}

/// A check run as the admin API reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckRunInfo {
    /// Id.
    pub id: u64,
    /// Commit.
    pub head_sha: String,
    /// Name.
    pub name: String,
    /// Status.
    pub status: String,
    /// Conclusion.
    pub conclusion: Option<String>,
    /// Output title.
    pub title: Option<String>,
    /// Output summary.
    pub summary: Option<String>,
    /// Output text.
    pub text: Option<String>,
    /// Owning App id.
    pub app_id: u64,
    /// Times it was updated (PATCH).
    pub update_count: u32,
}

/// A deployment and its statuses as the admin API reports them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeploymentInfo {
    /// Id.
    pub id: u64,
    /// Commit.
    pub sha: String,
    /// Ref.
    pub r#ref: String,
    /// Environment.
    pub environment: String,
    /// Creator login.
    pub creator: String,
    /// Description.
    pub description: Option<String>,
    /// Statuses, oldest first (GitLab: the status history of the deployment).
    pub statuses: Vec<DeploymentStatusInfo>,
}

/// One deployment status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeploymentStatusInfo {
    /// Id.
    pub id: u64,
    /// State.
    pub state: String,
    /// Description.
    pub description: String,
    /// Environment URL.
    pub environment_url: Option<String>,
    /// Log URL.
    pub log_url: Option<String>,
    /// Creator login.
    pub creator: String,
}

/// An environment, as the deployments to it imply (`GET /_emulator/repos/{path}/-/environments`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvironmentInfo {
    /// Name (e.g. `preview/app-pr-1`).
    pub name: String,
    /// `available`, or `stopped` after GitLab's `POST .../environments/:id/stop` until the
    /// next deployment.
    pub state: String,
    /// The newest environment URL any deployment status (GitLab: `external_url`) carried.
    pub external_url: Option<String>,
    /// Deployments to it.
    pub deployment_count: usize,
}

/// Configures a repository webhook (`POST /_emulator/repos/{path}/-/hooks`).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct HookSpec {
    /// Receiver URL.
    pub url: String,
    /// HMAC secret (GitHub, Gitea) or token (GitLab `X-Gitlab-Token`).
    #[serde(default)]
    pub secret: Option<String>,
    /// Events: `pull_request`, `push`, `pull_request_review`, `issue_comment` (or `*`);
    /// empty = all.
    #[serde(default)]
    pub events: Vec<String>,
}

/// A webhook as the admin API reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HookInfo {
    /// Hook id (`X-GitHub-Hook-ID`).
    pub id: u64,
    /// Receiver URL.
    pub url: String,
    /// Subscribed events (empty = all).
    pub events: Vec<String>,
    /// Whether a secret is set.
    pub has_secret: bool,
}

/// One webhook delivery attempt and its outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliveryInfo {
    /// Id of this attempt (use it to redeliver).
    pub id: u64,
    /// The delivery GUID sent in `X-GitHub-Delivery` / `X-Gitea-Delivery` /
    /// `X-Gitlab-Event-UUID` (kept by a redelivery).
    pub guid: String,
    /// Hook id.
    pub hook_id: u64,
    /// Repository path.
    pub repo: String,
    /// Forge.
    pub forge: Forge,
    /// Event header value (`pull_request`, `Merge Request Hook`, ...).
    pub event: String,
    /// Payload `action` (GitHub/Gitea) or `object_attributes.action` (GitLab), if any.
    pub action: Option<String>,
    /// Receiver URL.
    pub url: String,
    /// Request headers sent.
    pub headers: BTreeMap<String, String>,
    /// Raw request body sent (exact bytes that were signed).
    pub body: String,
    /// Whether this is a redelivery.
    pub redelivery: bool,
    /// `pending`, `delivered` (2xx), `failed` (non-2xx or transport error).
    pub outcome: String,
    /// Receiver's status code.
    pub status_code: Option<u16>,
    /// Transport error.
    pub error: Option<String>,
    /// Round-trip time.
    pub duration_ms: Option<u64>,
}

/// What a fault rule does.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultAction {
    /// Answer with this status (500, 502, 503, ...) and a JSON error body.
    Status {
        /// HTTP status.
        status: u16,
    },
    /// 429 Too Many Requests with `Retry-After`.
    TooManyRequests {
        /// Seconds in `Retry-After`.
        retry_after: u64,
    },
    /// GitHub's secondary rate limit: 403 + `Retry-After` + the real message.
    SecondaryRateLimit {
        /// Seconds in `Retry-After`.
        retry_after: u64,
    },
    /// Delay the request, then serve it normally.
    Latency {
        /// Added delay.
        millis: u64,
    },
    /// Close the connection without answering.
    DropConnection,
    /// `302 Found` to `location` + the request's path and query (e.g. another emulator's
    /// base URL, to test that clients follow no cross-origin redirect).
    Redirect {
        /// Base URL the request is redirected to (no trailing slash).
        location: String,
    },
}

/// Adds a fault rule (`POST /_emulator/faults`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultSpec {
    /// HTTP method to match (`None` = any).
    #[serde(default)]
    pub method: Option<String>,
    /// Path pattern; `*` matches any run of characters (including `/`).
    pub path: String,
    /// Only this forge's API (git smart-HTTP counts as the repository's forge).
    #[serde(default)]
    pub forge: Option<Forge>,
    /// Only requests with this token (`anonymous` for none).
    #[serde(default)]
    pub token: Option<String>,
    /// What to do.
    pub action: FaultAction,
    /// Apply to this many matching requests, then expire; `None` = until cleared.
    #[serde(default)]
    pub times: Option<u32>,
}

/// A fault rule as the admin API reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultInfo {
    /// Id.
    pub id: u64,
    /// The rule.
    pub spec: FaultSpec,
    /// How many requests it hit so far.
    pub hits: u32,
    /// Requests left before it expires (`None` = unlimited).
    pub remaining: Option<u32>,
}

/// Request counts for one client.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ClientCounts {
    /// Total requests.
    pub total: u64,
    /// How many of them were answered 304 Not Modified.
    pub not_modified: u64,
    /// `"METHOD /route/{template}"` → status code (as string) → count.
    pub routes: BTreeMap<String, BTreeMap<String, u64>>,
    /// How many were charged against the caller's rate limit: API requests the handler answered
    /// other than with 304 (not `GET /rate_limit`, not Gitea, not refused before the handler, not
    /// git smart HTTP).
    #[serde(default)]
    pub charged: u64,
    /// The charged requests per route.
    #[serde(default)]
    pub charged_routes: BTreeMap<String, u64>,
}

/// Request counts of all clients (`GET /_emulator/requests`). A client is a registered token
/// (keyed by the token), `installation:<id>` for App installation tokens, `app:<id>` for App
/// JWTs, `invalid` for unknown credentials and `anonymous`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct RequestCounts {
    /// Client → counts.
    pub clients: BTreeMap<String, ClientCounts>,
}

impl RequestCounts {
    /// Total requests of one client (0 when it made none).
    pub fn total(&self, client: &str) -> u64 {
        self.clients.get(client).map_or(0, |c| c.total)
    }

    /// Count of one route (e.g. `GET /repos/{owner}/{repo}/pulls`) for one client, all statuses.
    pub fn route(&self, client: &str, route: &str) -> u64 {
        self.clients
            .get(client)
            .and_then(|c| c.routes.get(route))
            .map_or(0, |s| s.values().sum())
    }
}

/// Generic JSON error of the admin API.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminError {
    /// What went wrong.
    pub message: String,
}

/// Payloads are kept as JSON values when a caller just wants to look.
pub type Json = Value;
