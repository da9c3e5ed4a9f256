//! An in-memory [`Forge`] for unit tests of the controllers' I/O halves (sync, write-back,
//! teardown) without a cluster or an HTTP server. Test-only: it is compiled for `cargo test`
//! of this crate and nowhere else.
//!
//! It keeps what a forge keeps (pull requests, branches, checks, commit statuses, deployments
//! with their status history, comments) and a log of every call by operation name, so a test
//! can assert "nothing new was written" as well as what was. Any operation can be made to fail
//! with [`FakeForge::fail`].

use super::*;
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// What the fake forge holds; tests read and seed it through [`FakeForge::state`].
#[derive(Debug, Default)]
pub struct FakeState {
    pub default_branch: String,
    pub branches: Vec<Branch>,
    pub pull_requests: BTreeMap<u64, PullRequest>,
    pub checks: HashMap<String, Vec<CheckResult>>,
    /// Every commit status written, in order.
    pub statuses: Vec<(String, CommitStatus)>,
    /// Deployments by id: the request and every status set on it, in order.
    pub deployments: BTreeMap<
        u64,
        (
            DeploymentRequest,
            Vec<(DeploymentState, DeploymentStatusUpdate)>,
        ),
    >,
    /// Comments per pull request number.
    pub comments: BTreeMap<u64, Vec<Comment>>,
    /// Operation names in call order (`get_pull_request`, `set_commit_status`, ...).
    pub calls: Vec<&'static str>,
    failures: HashMap<&'static str, fn() -> ForgeError>,
    next_id: u64,
}

impl FakeState {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Calls of `operation` so far.
    pub fn count(&self, operation: &str) -> usize {
        self.calls.iter().filter(|c| **c == operation).count()
    }
}

#[derive(Debug)]
pub struct FakeForge {
    kind: ForgeKind,
    coordinates: RepoCoordinates,
    state: Mutex<FakeState>,
}

impl FakeForge {
    pub fn new(kind: ForgeKind) -> Self {
        let url = match kind {
            ForgeKind::Gitlab => "https://gitlab.example.com/team/web.git",
            ForgeKind::Gitea => "https://gitea.example.com/team/web.git",
            _ => "https://github.com/team/web.git",
        };
        FakeForge {
            kind,
            coordinates: RepoCoordinates::parse(kind, url, None).expect("fake coordinates"),
            state: Mutex::new(FakeState {
                default_branch: "main".into(),
                ..FakeState::default()
            }),
        }
    }

    pub fn github() -> Self {
        Self::new(ForgeKind::Github)
    }

    /// The forge's state, to seed it or to assert on it.
    pub fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().expect("fake forge lock")
    }

    /// Makes every later call of `operation` fail with `error()` (until [`FakeForge::heal`]).
    pub fn fail(&self, operation: &'static str, error: fn() -> ForgeError) {
        self.state().failures.insert(operation, error);
    }

    pub fn heal(&self, operation: &'static str) {
        self.state().failures.remove(operation);
    }

    /// An open pull request `number` with head `sha` on branch `feature-<number>`.
    pub fn open_pull_request(&self, number: u64, sha: &str) -> PullRequest {
        let pr = PullRequest {
            body: String::new(),
            number,
            title: format!("Change {number}"),
            author: "alice".into(),
            head_sha: sha.into(),
            head_ref: format!("feature-{number}"),
            base_ref: "main".into(),
            labels: Vec::new(),
            draft: false,
            fork: false,
            url: format!("https://github.com/team/web/pull/{number}"),
            updated_at: jiff::Timestamp::UNIX_EPOCH,
            state: PullRequestState::Open,
        };
        self.state().pull_requests.insert(number, pr.clone());
        pr
    }

    /// Records the call, then answers with the injected failure of `operation`, if any.
    fn call(
        &self,
        operation: &'static str,
    ) -> Result<std::sync::MutexGuard<'_, FakeState>, ForgeError> {
        let mut state = self.state();
        state.calls.push(operation);
        match state.failures.get(operation) {
            Some(err) => Err(err()),
            None => Ok(state),
        }
    }
}

fn not_found(what: String) -> ForgeError {
    ForgeError::NotFound { message: what }
}

#[async_trait]
impl Forge for FakeForge {
    fn kind(&self) -> ForgeKind {
        self.kind
    }

    fn coordinates(&self) -> &RepoCoordinates {
        &self.coordinates
    }

    async fn default_branch(&self) -> Result<String, ForgeError> {
        Ok(self.call("default_branch")?.default_branch.clone())
    }

    async fn list_branches(&self) -> Result<Vec<Branch>, ForgeError> {
        Ok(self.call("list_branches")?.branches.clone())
    }

    async fn list_open_pull_requests(&self) -> Result<Vec<PullRequest>, ForgeError> {
        let state = self.call("list_open_pull_requests")?;
        Ok(state
            .pull_requests
            .values()
            .filter(|pr| pr.state == PullRequestState::Open)
            .cloned()
            .collect())
    }

    async fn get_pull_request(&self, number: u64) -> Result<PullRequest, ForgeError> {
        let state = self.call("get_pull_request")?;
        state
            .pull_requests
            .get(&number)
            .cloned()
            .ok_or_else(|| not_found(format!("pull request {number}")))
    }

    async fn list_changed_files(&self, _number: u64) -> Result<Vec<ChangedFile>, ForgeError> {
        drop(self.call("list_changed_files")?);
        Ok(Vec::new())
    }

    async fn list_reviews(&self, _number: u64) -> Result<Vec<Review>, ForgeError> {
        drop(self.call("list_reviews")?);
        Ok(Vec::new())
    }

    async fn list_commits(&self, _number: u64) -> Result<Vec<Commit>, ForgeError> {
        drop(self.call("list_commits")?);
        Ok(Vec::new())
    }

    async fn list_comments(&self, number: u64) -> Result<Vec<Comment>, ForgeError> {
        let state = self.call("list_comments")?;
        Ok(state.comments.get(&number).cloned().unwrap_or_default())
    }

    async fn checks_for_sha(&self, sha: &str) -> Result<Vec<CheckResult>, ForgeError> {
        let state = self.call("checks_for_sha")?;
        Ok(state.checks.get(sha).cloned().unwrap_or_default())
    }

    async fn set_commit_status(&self, sha: &str, status: &CommitStatus) -> Result<(), ForgeError> {
        let mut state = self.call("set_commit_status")?;
        state.statuses.push((sha.to_owned(), status.clone()));
        Ok(())
    }

    async fn upsert_check_run(&self, _run: &CheckRunOutput) -> Result<CheckRunId, ForgeError> {
        let mut state = self.call("upsert_check_run")?;
        Ok(CheckRunId(state.id()))
    }

    async fn create_deployment(&self, req: &DeploymentRequest) -> Result<DeploymentId, ForgeError> {
        let mut state = self.call("create_deployment")?;
        let id = state.id();
        state.deployments.insert(id, (req.clone(), Vec::new()));
        Ok(DeploymentId(id))
    }

    async fn set_deployment_status(
        &self,
        id: DeploymentId,
        deployment_state: DeploymentState,
        update: &DeploymentStatusUpdate,
    ) -> Result<(), ForgeError> {
        let mut state = self.call("set_deployment_status")?;
        let (_, statuses) = state
            .deployments
            .get_mut(&id.0)
            .ok_or_else(|| not_found(format!("deployment {id}")))?;
        statuses.push((deployment_state, update.clone()));
        Ok(())
    }

    async fn find_deployment(
        &self,
        environment: &str,
        sha: &str,
    ) -> Result<Option<DeploymentId>, ForgeError> {
        let state = self.call("find_deployment")?;
        Ok(state
            .deployments
            .iter()
            .rev()
            .find(|(_, (req, _))| req.environment == environment && req.sha == sha)
            .map(|(id, _)| DeploymentId(*id)))
    }

    async fn upsert_sticky_section(
        &self,
        number: u64,
        marker: &str,
        section: &str,
        text: &str,
    ) -> Result<Option<CommentId>, ForgeError> {
        let mut state = self.call("upsert_sticky_section")?;
        let id = CommentId(state.id());
        let comments = state.comments.entry(number).or_default();
        if let Some(existing) = comments.iter_mut().find(|c| c.body.contains(marker)) {
            existing.body = splice_section(marker, Some(&existing.body), section, text);
            return Ok(Some(existing.id));
        }
        if text.trim().is_empty() {
            return Ok(None);
        }
        let body = splice_section(marker, None, section, text);
        comments.push(Comment {
            id,
            author: "pullwarden[bot]".into(),
            author_id: Some(1),
            body,
            created_at: jiff::Timestamp::UNIX_EPOCH,
        });
        Ok(Some(id))
    }

    async fn is_trusted(
        &self,
        user: &Actor,
        trusted_users: &[String],
        _trusted_teams: &[String],
    ) -> Result<bool, ForgeError> {
        drop(self.call("is_trusted")?);
        Ok(listed_user(trusted_users, user))
    }

    async fn list_label_events(&self, _number: u64) -> Result<Vec<LabelEvent>, ForgeError> {
        drop(self.call("list_label_events")?);
        Ok(Vec::new())
    }

    async fn head_pushed_at(
        &self,
        _number: u64,
        _sha: &str,
    ) -> Result<Option<jiff::Timestamp>, ForgeError> {
        drop(self.call("head_pushed_at")?);
        Ok(None)
    }

    fn rate_limit(&self) -> Option<RateLimit> {
        None
    }

    async fn git_credentials(&self) -> Result<Credentials, ForgeError> {
        drop(self.call("git_credentials")?);
        Ok(Credentials::Anonymous)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_fake_keeps_one_sticky_comment_and_logs_calls() {
        let forge = FakeForge::github();
        forge.open_pull_request(7, "abc");
        let first = forge
            .upsert_sticky_section(7, "<!-- m -->", "preview", "one")
            .await
            .unwrap();
        let second = forge
            .upsert_sticky_section(7, "<!-- m -->", "preview", "two")
            .await
            .unwrap();
        assert_eq!(first, second);
        assert_eq!(forge.state().comments[&7].len(), 1);
        assert!(forge.state().comments[&7][0].body.contains("\ntwo\n"));
        forge.fail("get_pull_request", || ForgeError::Transient {
            message: "down".into(),
        });
        assert!(forge.get_pull_request(7).await.is_err());
        forge.heal("get_pull_request");
        assert_eq!(forge.get_pull_request(7).await.unwrap().head_sha, "abc");
        assert_eq!(forge.state().count("get_pull_request"), 2);
        assert_eq!(forge.state().count("upsert_sticky_section"), 2);
    }
}
