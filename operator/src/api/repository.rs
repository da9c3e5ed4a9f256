//! `Repository`: a Git repository Pullwarden follows.

use super::common::*;
use super::preview::PreviewTemplate;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Git repository to follow: its branches and pull requests are read from the forge (webhooks
/// first, polling as the safety net) and, when `preview` is set, each selected pull request gets a
/// PreviewEnvironment.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "pullwarden.dev",
    version = "v1alpha1",
    kind = "Repository",
    namespaced,
    status = "RepositoryStatus",
    shortname = "pwrepo",
    category = "pullwarden",
    printcolumn(name = "Provider", type_ = "string", json_path = ".spec.provider"),
    printcolumn(name = "URL", type_ = "string", json_path = ".spec.url", priority = 1),
    printcolumn(
        name = "Default",
        type_ = "string",
        json_path = ".status.defaultBranch"
    ),
    printcolumn(
        name = "PRs",
        type_ = "integer",
        json_path = ".status.pullRequestCount"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(name = "Last Sync", type_ = "date", json_path = ".status.lastSyncTime"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self.url.startsWith('https://') || self.url.startsWith('ssh://') || self.url.matches('^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:.+$') || (self.url.startsWith('http://') && self.allowInsecureHTTP)").message("url must be https://, ssh:// or scp-like (git@host:path); plain http:// needs allowInsecureHTTP: true"))]
#[x_kube(validation = Rule::new("duration(self.interval) >= duration('10s')").message("interval must be at least 10s (polling faster only burns forge quota; use webhooks)"))]
#[x_kube(validation = Rule::new("!has(self.maxInterval) || duration(self.maxInterval) >= duration(self.interval)").message("maxInterval must not be shorter than interval"))]
#[x_kube(validation = Rule::new("self.provider != 'git' || !has(self.pullRequests)").message("provider git follows branches only; remove pullRequests or choose github, gitlab or gitea"))]
#[serde(rename_all = "camelCase")]
pub struct RepositorySpec {
    /// The forge hosting the repository. `git` is a plain Git server: branches only, read with
    /// `git ls-remote`, no pull requests and no write-back.
    pub provider: Provider,
    /// Clone URL: `https://host/owner/repo(.git)`, `ssh://git@host/owner/repo.git` or
    /// `git@host:owner/repo.git`. Webhook payloads are matched against it.
    #[schemars(length(min = 1, max = 2048))]
    pub url: String,
    /// API base URL for GitHub Enterprise Server, self-managed GitLab or Gitea (for example
    /// `https://github.example.com/api/v3`). Derived from `url` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = r"^https?://"))]
    pub api_url: Option<String>,
    /// Allow plain `http://` URLs (tokens travel unencrypted). Only for local test forges.
    #[serde(default, rename = "allowInsecureHTTP")]
    pub allow_insecure_http: bool,
    /// Credentials for the forge API and for fetching preview templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<RepositoryAuth>,
    /// Inbound webhook verification. Without it webhooks for this repository are refused and
    /// Pullwarden relies on polling alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookVerification>,
    /// How often to poll when no webhook arrives. Jitter is added by the controller.
    #[serde(default = "default_interval")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub interval: Duration,
    /// Upper bound for adaptive polling: quiet repositories are polled less often, up to this.
    /// Defaults to `interval` (no back-off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub max_interval: Option<Duration>,
    /// Which branches are tracked in status (globs; exclude wins).
    #[serde(default)]
    pub branches: BranchSelector,
    /// Which pull requests are selected (for status and previews). Not valid for provider `git`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_requests: Option<PullRequestSelector>,
    /// When set, every selected pull request gets a PreviewEnvironment built from this template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<RepositoryPreview>,
    /// Stop syncing and creating previews; existing previews are left as they are.
    #[serde(default)]
    pub suspend: bool,
}

fn default_interval() -> Duration {
    "5m".parse().expect("valid duration")
}

/// The forge kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Github,
    Gitlab,
    Gitea,
    Git,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Github => "github",
            Provider::Gitlab => "gitlab",
            Provider::Gitea => "gitea",
            Provider::Git => "git",
        }
    }
}

/// Where the forge credentials live.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryAuth {
    /// Secret holding exactly one credential form: `token`; `githubAppID` +
    /// `githubInstallationID` + `githubPrivateKey`; `username` + `password`; or `identity`
    /// (SSH private key) + `known_hosts`.
    pub secret_ref: SecretReference,
    /// Secret with a PEM bundle (key `ca.crt`) of private CAs to trust for this forge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretReference>,
}

/// How inbound webhooks for this repository are verified.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookVerification {
    /// Secret with the HMAC key (GitHub, Gitea) or the token (GitLab) configured on the forge.
    pub secret_ref: SecretReference,
    /// Key in the Secret.
    #[serde(default = "default_webhook_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_webhook_key() -> String {
    "secret".into()
}

/// Branch globs with GitHub's semantics: `*` does not cross `/`, `**` does; also `?` and `[abc]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BranchSelector {
    /// Branches to track. Defaults to all (`**`).
    #[serde(default = "default_include")]
    #[schemars(length(max = 64))]
    pub include: Vec<String>,
    /// Branches to ignore even when included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub exclude: Vec<String>,
}

impl Default for BranchSelector {
    fn default() -> Self {
        BranchSelector {
            include: default_include(),
            exclude: Vec::new(),
        }
    }
}

fn default_include() -> Vec<String> {
    vec!["**".into()]
}

/// Which pull requests are selected. All conditions must hold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.forks != 'requireApproval' || size(self.trustedUsers) + size(self.trustedTeams) > 0").message("forks: requireApproval needs trustedUsers or trustedTeams who may approve"))]
pub struct PullRequestSelector {
    /// Labels the pull request must all carry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub labels: Vec<String>,
    /// Labels that exclude a pull request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub not_labels: Vec<String>,
    /// Target (base) branch globs. Defaults to any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub target_branches: Vec<String>,
    /// Also select draft pull requests.
    #[serde(default)]
    pub include_drafts: bool,
    /// Only pull requests by these authors (forge logins). Empty means anyone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub authors: Vec<String>,
    /// Pull requests from forks: `deny` never selects them; `requireApproval` deploys a head
    /// only once a trusted user approved that very head (added `trustLabel`, or commented
    /// `/ok-to-preview` on a line of its own outside code blocks and quotes, after the head was
    /// pushed) — every later push waits in phase `WaitingForApproval`; `allow` treats them like
    /// any other pull request (their manifests still run confined).
    #[serde(default)]
    pub forks: ForkPolicy,
    /// Label a trusted user adds to approve a fork pull request's current head. It counts only
    /// when added after that head was pushed: after a push, remove and add it again.
    #[serde(default = "default_trust_label")]
    #[schemars(length(min = 1, max = 63))]
    pub trust_label: String,
    /// Users who may approve fork pull requests: `id:<n>` names the forge account with numeric
    /// id `n` (GitHub and Gitea `user.id`, GitLab `author.id`), which stays with the account
    /// across renames; a plain entry matches the login, case-insensitively, which is weaker (a
    /// login given up by a rename can be registered by someone else).
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub trusted_users: Vec<String>,
    /// Teams whose members may approve: `org/team` on GitHub and Gitea, group full paths on
    /// GitLab (members with Developer access or above only).
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub trusted_teams: Vec<String>,
}

impl Default for PullRequestSelector {
    fn default() -> Self {
        PullRequestSelector {
            labels: Vec::new(),
            not_labels: Vec::new(),
            target_branches: Vec::new(),
            include_drafts: false,
            authors: Vec::new(),
            forks: ForkPolicy::default(),
            trust_label: default_trust_label(),
            trusted_users: Vec::new(),
            trusted_teams: Vec::new(),
        }
    }
}

fn default_trust_label() -> String {
    "ok-to-preview".into()
}

/// Fork pull request policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ForkPolicy {
    #[default]
    Deny,
    RequireApproval,
    Allow,
}

/// The preview template of a Repository plus the per-repository limits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryPreview {
    /// At most this many live previews for this Repository; beyond it the oldest idle preview
    /// (longest without a push: its `status.lastPushTime`, else its creation; never one
    /// carrying `keepLabel`) is deleted. A pull request left out waits in
    /// `status.previewsOverCap` until a slot frees up or it is pushed to. Unset: the operator's
    /// default (`--default-max-previews`, 20); a larger value is lowered to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_previews: Option<u32>,
    /// The template each PreviewEnvironment is created from.
    #[serde(flatten)]
    pub template: PreviewTemplate,
}

/// Observed state of a Repository.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryStatus {
    #[serde(flatten)]
    pub common: CommonStatus,
    /// The repository's default branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_branch: Option<String>,
    /// Tracked branches (at most 100; see `branchCount`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub branches: Vec<BranchStatus>,
    /// Number of tracked branches, including those not listed.
    #[serde(default)]
    pub branch_count: u32,
    /// Selected open pull requests (at most 100, most recently updated first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub pull_requests: Vec<PullRequestStatus>,
    /// Number of selected open pull requests, including those not listed.
    #[serde(default)]
    pub pull_request_count: u32,
    /// Last successful read from the forge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// Last verified webhook delivery for this repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// When the next poll is due (without a webhook).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_sync_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// The forge API quota of this Repository's credential, as last seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitStatus>,
    /// What the last sync's reads cost on the forge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_cost: Option<SyncCost>,
    /// Path on the webhook server where this forge's deliveries are accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_path: Option<String>,
    /// Open fork pull requests under `forks: requireApproval`: the head Pullwarden sees, since
    /// when, and the last head a trusted user approved (at most 256, most recently updated
    /// first). An approval counts only for the head it was given on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub fork_approvals: Vec<ForkApprovalStatus>,
    /// Selected pull requests that have no preview because of `maxPreviews`, with the head they
    /// were at (at most 256). They get a preview when a slot frees up; after a push (a new
    /// head) they count as the most recently pushed and take the slot of the preview longest
    /// without a push.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub previews_over_cap: Vec<OverCapPullRequest>,
}

/// Forge API responses one sync read, and how many were `304 Not Modified` (answered from the
/// ETag cache; free on GitHub's quota). Gitea's JSON API sends no ETags, so there an idle poll
/// pays every response in full: prefer webhooks and a long `interval`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncCost {
    pub requests: u32,
    pub not_modified: u32,
}

/// A selected pull request waiting for a preview slot under `maxPreviews`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OverCapPullRequest {
    pub number: u64,
    /// The head it was at when the cap left it out.
    pub head_sha: String,
}

/// The approval record of one fork pull request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ForkApprovalStatus {
    pub number: u64,
    /// The pull request's head as the forge reports it now.
    pub head_sha: String,
    /// When Pullwarden first saw `headSha` as this pull request's head (rounded up to the
    /// second). A `/ok-to-preview` comment or the trust label counts for `headSha` only when the
    /// forge created it after this time, or after `headPushedTime`. Commit dates never count:
    /// whoever makes a commit sets them.
    pub head_observed_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    /// When the forge itself recorded the push of `headSha` (GitLab merge request versions,
    /// Gitea timeline). GitHub keeps no such record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_pushed_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// `Approved` when `headSha` is approved, else `WaitingForApproval`.
    pub state: ForkApprovalState,
    /// The last head a trusted user approved; its preview stays deployed while a newer head
    /// waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_sha: Option<String>,
    /// What approved `approvedSha`, e.g. `comment 123 by maintainer (id 7)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    /// When that approval was given (the forge's time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// Why approval attempts for `headSha` did not count (newest first, at most 10), e.g.
    /// `comment 9 by mallory (id 3): not a trusted user`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub ignored: Vec<String>,
}

impl Default for ForkApprovalStatus {
    fn default() -> Self {
        ForkApprovalStatus {
            number: 0,
            head_sha: String::new(),
            head_observed_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                jiff::Timestamp::UNIX_EPOCH,
            ),
            head_pushed_time: None,
            state: ForkApprovalState::default(),
            approved_sha: None,
            approved_by: None,
            approved_time: None,
            ignored: Vec::new(),
        }
    }
}

/// Whether a fork pull request's current head is approved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ForkApprovalState {
    #[default]
    WaitingForApproval,
    Approved,
}

/// A tracked branch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BranchStatus {
    pub name: String,
    pub sha: String,
}

/// A selected open pull request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PullRequestStatus {
    pub number: u64,
    pub title: String,
    pub author: String,
    pub head_sha: String,
    pub head_ref: String,
    pub base_ref: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    #[serde(default)]
    pub draft: bool,
    #[serde(default)]
    pub fork: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

/// Forge API quota.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitStatus {
    pub remaining: u64,
    pub limit: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

impl HasCommonStatus for Repository {
    fn common(&self) -> Option<&CommonStatus> {
        self.status.as_ref().map(|s| &s.common)
    }
}
