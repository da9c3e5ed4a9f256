//! The forge layer: one interface to GitHub, GitLab, Gitea and plain git, with one API budget
//! per credential.
//!
//! Flow: a controller parses its Repository into [`RepoCoordinates`] and its Secret into
//! [`Credentials`], then asks the shared [`ForgeClients`] for a client
//! (`clients.client(kind, &coords, creds, ca_pem)`). Clients of the same credential on the same
//! API base share one [`budget::Budget`] — quota view, ETag cache, back-off state — so every
//! controller spends one quota and a repeated poll of an unchanged repository costs only 304s.
//! Each provider module maps its REST JSON into the neutral types of [`types`]; methods a
//! provider cannot do return [`ForgeError::Unsupported`], and every failure is an error (never an
//! empty list, never "closed").

pub mod budget;
mod clients;
pub mod coords;
pub mod credentials;
pub mod error;
#[cfg(test)]
pub mod fake;
mod generic;
pub mod gitea;
pub mod github;
pub mod gitlab;
pub mod metrics;
mod shared;
mod sticky;
pub mod types;

use std::fmt::Debug;

use async_trait::async_trait;

pub use budget::{BudgetConfig, CallCost, measure_cost};
pub use clients::ForgeClients;
pub use coords::{RepoCoordinates, canonical_url_of};
pub use credentials::Credentials;
pub use error::ForgeError;
pub use metrics::ForgeMetrics;
pub use types::*;

/// One repository on one forge, seen through one credential.
///
/// Pull-request numbers are GitHub/Gitea numbers and GitLab merge-request `iid`s.
#[async_trait]
pub trait Forge: Send + Sync + Debug {
    fn kind(&self) -> ForgeKind;

    fn coordinates(&self) -> &RepoCoordinates;

    /// The repository's default branch name (no `refs/heads/`).
    async fn default_branch(&self) -> Result<String, ForgeError>;

    /// Every branch (all pages).
    async fn list_branches(&self) -> Result<Vec<Branch>, ForgeError>;

    /// Every open pull request (all pages; never truncated).
    async fn list_open_pull_requests(&self) -> Result<Vec<PullRequest>, ForgeError>;

    /// One pull request in any state. This is how callers confirm a close or merge; a
    /// `NotFound` here means "cannot see it", not "closed".
    async fn get_pull_request(&self, number: u64) -> Result<PullRequest, ForgeError>;

    async fn list_changed_files(&self, number: u64) -> Result<Vec<ChangedFile>, ForgeError>;

    async fn list_reviews(&self, number: u64) -> Result<Vec<Review>, ForgeError>;

    async fn list_commits(&self, number: u64) -> Result<Vec<Commit>, ForgeError>;

    async fn list_comments(&self, number: u64) -> Result<Vec<Comment>, ForgeError>;

    /// Commit statuses and check runs of `sha`, latest per context name.
    async fn checks_for_sha(&self, sha: &str) -> Result<Vec<CheckResult>, ForgeError>;

    async fn set_commit_status(&self, sha: &str, status: &CommitStatus) -> Result<(), ForgeError>;

    /// Create or update (by name, on `head_sha`) our check run. GitHub App credentials only.
    async fn upsert_check_run(&self, run: &CheckRunOutput) -> Result<CheckRunId, ForgeError>;

    async fn create_deployment(&self, req: &DeploymentRequest) -> Result<DeploymentId, ForgeError>;

    async fn set_deployment_status(
        &self,
        id: DeploymentId,
        state: DeploymentState,
        update: &DeploymentStatusUpdate,
    ) -> Result<(), ForgeError>;

    /// The newest deployment of `sha` to `environment`, so a restarted operator reuses it
    /// instead of creating a duplicate.
    async fn find_deployment(
        &self,
        environment: &str,
        sha: &str,
    ) -> Result<Option<DeploymentId>, ForgeError>;

    /// Set one section (`preview`, `gate/<name>`) of the one comment of ours carrying `marker`
    /// (an HTML comment such as `<!-- pullwarden:preview -->`, its first line), creating the
    /// comment when missing and keeping every other section as it is ([`splice_section`]). An
    /// empty `text` removes the section (and creates nothing: `None`). Unchanged bodies are not
    /// rewritten. Writers of one comment are serialised inside the process.
    async fn upsert_sticky_section(
        &self,
        number: u64,
        marker: &str,
        section: &str,
        text: &str,
    ) -> Result<Option<CommentId>, ForgeError>;

    /// Whether `user` is named in `trusted_users` (see [`listed_user`]: `id:<n>` by stable id,
    /// otherwise by login, case-insensitive) or an active member of one of `trusted_teams`
    /// (GitHub `org/team-slug` or `team-slug` in the repository owner's org; GitLab group full
    /// paths, counting only Developer (access level 30) and above; Gitea `org/team`).
    async fn is_trusted(
        &self,
        user: &Actor,
        trusted_users: &[String],
        trusted_teams: &[String],
    ) -> Result<bool, ForgeError>;

    /// Labels added to and removed from pull request `number`, oldest first, with the forge's
    /// time of each change (GitHub issue events, GitLab resource label events, Gitea timeline).
    async fn list_label_events(&self, number: u64) -> Result<Vec<LabelEvent>, ForgeError>;

    /// When, by the forge's own clock, `sha` last became the head of pull request `number`
    /// (GitLab merge request versions, Gitea `pull_push` timeline entries). `None` when the forge
    /// keeps no such record (GitHub: its timeline dates commits, which their authors set).
    async fn head_pushed_at(
        &self,
        number: u64,
        sha: &str,
    ) -> Result<Option<jiff::Timestamp>, ForgeError>;

    /// The rate limit last reported for this client's credential.
    fn rate_limit(&self) -> Option<RateLimit>;

    /// Credentials for git over https/ssh (fetching preview templates). For a GitHub App this is
    /// a fresh installation token; otherwise the configured credentials.
    async fn git_credentials(&self) -> Result<Credentials, ForgeError>;
}
