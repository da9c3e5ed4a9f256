//! Provider `git`: any git remote, branches only.
//!
//! Flow: `default_branch` and `list_branches` run one `ls-remote` each through the git module
//! (git2 on a blocking thread); everything that needs a forge API returns
//! `ForgeError::Unsupported` so callers report it instead of assuming an empty answer.

use std::fmt;

use async_trait::async_trait;

use super::Forge;
use super::coords::RepoCoordinates;
use super::credentials::Credentials;
use super::error::ForgeError;
use super::types::*;
use crate::git;

pub(crate) struct GitForge {
    coords: RepoCoordinates,
    credentials: Credentials,
    ca_pem: Option<Vec<u8>>,
    guard: Option<crate::net::Guard>,
}

impl fmt::Debug for GitForge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitForge")
            .field("repo", &self.coords)
            .field("credentials", &self.credentials)
            .finish()
    }
}

impl GitForge {
    pub(crate) fn new(
        coords: RepoCoordinates,
        credentials: Credentials,
        ca_pem: Option<Vec<u8>>,
        guard: Option<crate::net::Guard>,
    ) -> Self {
        GitForge {
            coords,
            credentials,
            ca_pem,
            guard,
        }
    }

    fn unsupported<T>(operation: &'static str) -> Result<T, ForgeError> {
        Err(ForgeError::unsupported(operation, "git"))
    }
}

#[async_trait]
impl Forge for GitForge {
    fn kind(&self) -> ForgeKind {
        ForgeKind::Git
    }

    fn coordinates(&self) -> &RepoCoordinates {
        &self.coords
    }

    async fn default_branch(&self) -> Result<String, ForgeError> {
        git::default_branch_guarded(
            &self.coords.clone_url,
            &self.credentials,
            self.ca_pem.as_deref(),
            self.guard.as_ref(),
        )
        .await
    }

    async fn list_branches(&self) -> Result<Vec<Branch>, ForgeError> {
        let refs = git::ls_remote_guarded(
            &self.coords.clone_url,
            &self.credentials,
            self.ca_pem.as_deref(),
            self.guard.as_ref(),
        )
        .await?;
        Ok(git::branches(&refs.refs))
    }

    async fn list_open_pull_requests(&self) -> Result<Vec<PullRequest>, ForgeError> {
        Self::unsupported("list_open_pull_requests")
    }

    async fn get_pull_request(&self, _number: u64) -> Result<PullRequest, ForgeError> {
        Self::unsupported("get_pull_request")
    }

    async fn list_changed_files(&self, _number: u64) -> Result<Vec<ChangedFile>, ForgeError> {
        Self::unsupported("list_changed_files")
    }

    async fn list_reviews(&self, _number: u64) -> Result<Vec<Review>, ForgeError> {
        Self::unsupported("list_reviews")
    }

    async fn list_commits(&self, _number: u64) -> Result<Vec<Commit>, ForgeError> {
        Self::unsupported("list_commits")
    }

    async fn list_comments(&self, _number: u64) -> Result<Vec<Comment>, ForgeError> {
        Self::unsupported("list_comments")
    }

    async fn checks_for_sha(&self, _sha: &str) -> Result<Vec<CheckResult>, ForgeError> {
        Self::unsupported("checks_for_sha")
    }

    async fn set_commit_status(
        &self,
        _sha: &str,
        _status: &CommitStatus,
    ) -> Result<(), ForgeError> {
        Self::unsupported("set_commit_status")
    }

    async fn upsert_check_run(&self, _run: &CheckRunOutput) -> Result<CheckRunId, ForgeError> {
        Self::unsupported("upsert_check_run")
    }

    async fn create_deployment(
        &self,
        _req: &DeploymentRequest,
    ) -> Result<DeploymentId, ForgeError> {
        Self::unsupported("create_deployment")
    }

    async fn set_deployment_status(
        &self,
        _id: DeploymentId,
        _state: DeploymentState,
        _update: &DeploymentStatusUpdate,
    ) -> Result<(), ForgeError> {
        Self::unsupported("set_deployment_status")
    }

    async fn find_deployment(
        &self,
        _environment: &str,
        _sha: &str,
    ) -> Result<Option<DeploymentId>, ForgeError> {
        Self::unsupported("find_deployment")
    }

    async fn upsert_sticky_section(
        &self,
        _number: u64,
        _marker: &str,
        _section: &str,
        _text: &str,
    ) -> Result<Option<CommentId>, ForgeError> {
        Self::unsupported("upsert_sticky_section")
    }

    async fn is_trusted(
        &self,
        _user: &Actor,
        _trusted_users: &[String],
        _trusted_teams: &[String],
    ) -> Result<bool, ForgeError> {
        Self::unsupported("is_trusted")
    }

    async fn list_label_events(&self, _number: u64) -> Result<Vec<LabelEvent>, ForgeError> {
        Self::unsupported("list_label_events")
    }

    async fn head_pushed_at(
        &self,
        _number: u64,
        _sha: &str,
    ) -> Result<Option<jiff::Timestamp>, ForgeError> {
        Self::unsupported("head_pushed_at")
    }

    fn rate_limit(&self) -> Option<RateLimit> {
        None
    }

    async fn git_credentials(&self) -> Result<Credentials, ForgeError> {
        Ok(self.credentials.clone())
    }
}
