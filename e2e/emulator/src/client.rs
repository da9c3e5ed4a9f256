//! Typed async client for the admin API. [`super::EmulatorHandle`] dereferences to one, so a
//! test writes `emu.create_repo(...)`; scripts driving a standalone `forge-emulator` build one
//! with [`AdminClient::new`].
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::model::{
    ActorSpec, AppSpec, BranchSpec, CheckRunInfo, CheckRunSpec, CollaboratorSpec, CommentInfo,
    CommentSpec, DeliveryInfo, DeploymentInfo, EnvironmentInfo, FaultInfo, FaultSpec, ForkSpec,
    HookInfo, HookSpec, InstallationSpec, LabelSpec, MembershipSpec, PullInfo, PullSpec,
    PullUpdate, PushResult, PushSpec, RateLimitSpec, RepoInfo, RepoSpec, RequestCounts, ReviewInfo,
    ReviewSpec, StatusInfo, StatusSpec, TokenInfo, TokenSpec, UserInfo, UserSpec,
};

/// Client of `/_emulator/...`.
#[derive(Debug, Clone)]
pub struct AdminClient {
    base: String,
    http: reqwest::Client,
}

impl AdminClient {
    /// A client for the emulator at `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: impl Into<String>) -> Self {
        Self {
            base: base.into().trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/_emulator{path}", self.base)
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T> {
        let mut req = self.http.request(method.clone(), self.url(path));
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            bail!("{method} {path}: {status}: {text}");
        }
        serde_json::from_str(&text).with_context(|| format!("{method} {path}: decoding {text}"))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call::<(), T>(reqwest::Method::GET, path, None).await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn put<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }

    async fn patch<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.call(reqwest::Method::PATCH, path, Some(body)).await
    }

    async fn delete(&self, path: &str) -> Result<()> {
        self.call::<(), Value>(reqwest::Method::DELETE, path, None)
            .await
            .map(|_| ())
    }

    fn repo(path: &str) -> String {
        format!("/repos/{}/-", path.trim_matches('/'))
    }

    // ---- identities -------------------------------------------------------------------

    /// Registers a token (`POST /_emulator/tokens`).
    pub async fn add_token(&self, spec: TokenSpec) -> Result<TokenInfo> {
        self.post("/tokens", &spec).await
    }

    /// Shorthand: a token for `login` valid on every forge.
    pub async fn token(&self, token: &str, login: &str) -> Result<TokenInfo> {
        self.add_token(TokenSpec {
            token: token.into(),
            login: login.into(),
            ..Default::default()
        })
        .await
    }

    /// Revokes a token.
    pub async fn remove_token(&self, token: &str) -> Result<()> {
        self.delete(&format!("/tokens/{token}")).await
    }

    /// Changes a client's rate-limit bucket (`client` = token, `installation:<id>`, `anonymous`).
    pub async fn set_rate_limit(&self, client: &str, spec: RateLimitSpec) -> Result<Value> {
        self.put(&format!("/rate-limits/{client}"), &spec).await
    }

    /// Registers or updates a user.
    pub async fn add_user(&self, spec: UserSpec) -> Result<UserInfo> {
        self.post("/users", &spec).await
    }

    /// Registers a GitHub App with its public key.
    pub async fn add_app(&self, spec: AppSpec) -> Result<Value> {
        self.post("/apps", &spec).await
    }

    /// Installs a GitHub App on an account.
    pub async fn add_installation(&self, app_id: u64, spec: InstallationSpec) -> Result<Value> {
        self.post(&format!("/apps/{app_id}/installations"), &spec)
            .await
    }

    /// Puts `user` in `org/team` with `role` (`member` or `maintainer`).
    pub async fn set_team_membership(
        &self,
        org: &str,
        team: &str,
        user: &str,
        role: &str,
    ) -> Result<Value> {
        let spec = MembershipSpec {
            role: Some(role.into()),
            state: None,
        };
        self.put(
            &format!("/orgs/{org}/teams/{team}/memberships/{user}"),
            &spec,
        )
        .await
    }

    /// Removes a team membership.
    pub async fn remove_team_membership(&self, org: &str, team: &str, user: &str) -> Result<()> {
        self.delete(&format!("/orgs/{org}/teams/{team}/memberships/{user}"))
            .await
    }

    /// Grants `user` a permission on a repository.
    pub async fn set_collaborator(
        &self,
        repo: &str,
        user: &str,
        permission: &str,
    ) -> Result<Value> {
        self.put(
            &format!("{}/collaborators/{user}", Self::repo(repo)),
            &CollaboratorSpec {
                permission: permission.into(),
            },
        )
        .await
    }

    // ---- repositories and git ---------------------------------------------------------

    /// Creates a repository (real bare git repository + first commit).
    pub async fn create_repo(&self, spec: RepoSpec) -> Result<RepoInfo> {
        self.post("/repos", &spec).await
    }

    /// Forks `parent` to `path` (same forge, parent's history and branches).
    pub async fn fork_repo(&self, parent: &str, path: &str) -> Result<RepoInfo> {
        self.post(
            &format!("{}/forks", Self::repo(parent)),
            &ForkSpec {
                path: path.into(),
                private: false,
            },
        )
        .await
    }

    /// Reads a repository back (branch heads from the real refs).
    pub async fn repo_info(&self, repo: &str) -> Result<RepoInfo> {
        self.get(&format!("{}/info", Self::repo(repo))).await
    }

    /// Pushes one real commit.
    pub async fn push(&self, repo: &str, spec: PushSpec) -> Result<PushResult> {
        self.post(&format!("{}/commits", Self::repo(repo)), &spec)
            .await
    }

    /// Creates a branch at `from` (default branch when `None`).
    pub async fn create_branch(
        &self,
        repo: &str,
        name: &str,
        from: Option<&str>,
    ) -> Result<PushResult> {
        let spec = BranchSpec {
            name: name.into(),
            from: from.map(str::to_string),
        };
        self.post(&format!("{}/branches", Self::repo(repo)), &spec)
            .await
    }

    /// Deletes a branch.
    pub async fn delete_branch(&self, repo: &str, name: &str) -> Result<()> {
        self.delete(&format!("{}/branches/{name}", Self::repo(repo)))
            .await
    }

    /// Branch → head SHA.
    pub async fn branches(&self, repo: &str) -> Result<std::collections::BTreeMap<String, String>> {
        self.get(&format!("{}/branches", Self::repo(repo))).await
    }

    // ---- pull requests ----------------------------------------------------------------

    /// Opens a pull / merge request.
    pub async fn open_pull(&self, repo: &str, spec: PullSpec) -> Result<PullInfo> {
        self.post(&format!("{}/pulls", Self::repo(repo)), &spec)
            .await
    }

    /// Reads a pull request back.
    pub async fn pull(&self, repo: &str, n: u64) -> Result<PullInfo> {
        self.get(&format!("{}/pulls/{n}", Self::repo(repo))).await
    }

    /// Edits title/body or draft state.
    pub async fn update_pull(&self, repo: &str, n: u64, upd: PullUpdate) -> Result<PullInfo> {
        self.patch(&format!("{}/pulls/{n}", Self::repo(repo)), &upd)
            .await
    }

    /// Pushes a commit to the PR's head branch (`synchronize`).
    pub async fn push_to_pull(&self, repo: &str, n: u64, spec: PushSpec) -> Result<PushResult> {
        self.post(&format!("{}/pulls/{n}/commits", Self::repo(repo)), &spec)
            .await
    }

    /// Adds a label.
    pub async fn add_label(&self, repo: &str, n: u64, label: &str) -> Result<PullInfo> {
        self.post(
            &format!("{}/pulls/{n}/labels", Self::repo(repo)),
            &LabelSpec {
                name: label.into(),
                user: None,
            },
        )
        .await
    }

    /// Adds a label as `user` (the forge records who and when: GitHub issue events).
    pub async fn add_label_by(
        &self,
        repo: &str,
        n: u64,
        label: &str,
        user: &str,
    ) -> Result<PullInfo> {
        self.post(
            &format!("{}/pulls/{n}/labels", Self::repo(repo)),
            &LabelSpec {
                name: label.into(),
                user: Some(user.into()),
            },
        )
        .await
    }

    /// Removes a label.
    pub async fn remove_label(&self, repo: &str, n: u64, label: &str) -> Result<PullInfo> {
        self.call::<(), PullInfo>(
            reqwest::Method::DELETE,
            &format!("{}/pulls/{n}/labels/{label}", Self::repo(repo)),
            None,
        )
        .await
    }

    /// Closes without merging.
    pub async fn close_pull(&self, repo: &str, n: u64) -> Result<PullInfo> {
        self.post(
            &format!("{}/pulls/{n}/close", Self::repo(repo)),
            &ActorSpec::default(),
        )
        .await
    }

    /// Reopens.
    pub async fn reopen_pull(&self, repo: &str, n: u64) -> Result<PullInfo> {
        self.post(
            &format!("{}/pulls/{n}/reopen", Self::repo(repo)),
            &ActorSpec::default(),
        )
        .await
    }

    /// Merges with a merge commit on the base branch.
    pub async fn merge_pull(&self, repo: &str, n: u64, user: Option<&str>) -> Result<PullInfo> {
        self.post(
            &format!("{}/pulls/{n}/merge", Self::repo(repo)),
            &ActorSpec {
                user: user.map(str::to_string),
            },
        )
        .await
    }

    /// Submits a review (`APPROVED`, `CHANGES_REQUESTED`, `COMMENTED`).
    pub async fn add_review(
        &self,
        repo: &str,
        n: u64,
        user: &str,
        state: &str,
    ) -> Result<ReviewInfo> {
        let spec = ReviewSpec {
            user: user.into(),
            state: state.into(),
            body: None,
        };
        self.post(&format!("{}/pulls/{n}/reviews", Self::repo(repo)), &spec)
            .await
    }

    /// Adds an issue comment / MR note as `user`.
    pub async fn add_comment(
        &self,
        repo: &str,
        n: u64,
        user: &str,
        body: &str,
    ) -> Result<CommentInfo> {
        let spec = CommentSpec {
            user: user.into(),
            body: body.into(),
        };
        self.post(&format!("{}/pulls/{n}/comments", Self::repo(repo)), &spec)
            .await
    }

    /// Comments of a PR with their edit counts.
    pub async fn comments(&self, repo: &str, n: u64) -> Result<Vec<CommentInfo>> {
        self.get(&format!("{}/pulls/{n}/comments", Self::repo(repo)))
            .await
    }

    // ---- CI results written by others, and what Pullwarden wrote ---------------------

    /// Sets a commit status as an external CI would.
    pub async fn set_status(&self, repo: &str, sha: &str, spec: StatusSpec) -> Result<StatusInfo> {
        self.post(&format!("{}/statuses/{sha}", Self::repo(repo)), &spec)
            .await
    }

    /// All statuses (optionally of one commit), oldest first.
    pub async fn statuses(&self, repo: &str, sha: Option<&str>) -> Result<Vec<StatusInfo>> {
        let q = sha.map(|s| format!("?sha={s}")).unwrap_or_default();
        self.get(&format!("{}/statuses{q}", Self::repo(repo))).await
    }

    /// Adds a check run as another App would.
    pub async fn add_check_run(&self, repo: &str, spec: CheckRunSpec) -> Result<CheckRunInfo> {
        self.post(&format!("{}/check-runs", Self::repo(repo)), &spec)
            .await
    }

    /// All check runs (optionally of one commit).
    pub async fn check_runs(&self, repo: &str, sha: Option<&str>) -> Result<Vec<CheckRunInfo>> {
        let q = sha.map(|s| format!("?sha={s}")).unwrap_or_default();
        self.get(&format!("{}/check-runs{q}", Self::repo(repo)))
            .await
    }

    /// Deployments with their statuses.
    pub async fn deployments(&self, repo: &str) -> Result<Vec<DeploymentInfo>> {
        self.get(&format!("{}/deployments", Self::repo(repo))).await
    }

    /// Environments implied by the deployments, with their state (GitLab: `stopped` after a stop).
    pub async fn environments(&self, repo: &str) -> Result<Vec<EnvironmentInfo>> {
        self.get(&format!("{}/environments", Self::repo(repo)))
            .await
    }

    // ---- webhooks ---------------------------------------------------------------------

    /// Configures a webhook (GitHub sends `ping` at once).
    pub async fn add_hook(&self, repo: &str, spec: HookSpec) -> Result<HookInfo> {
        self.post(&format!("{}/hooks", Self::repo(repo)), &spec)
            .await
    }

    /// Webhooks of a repository.
    pub async fn hooks(&self, repo: &str) -> Result<Vec<HookInfo>> {
        self.get(&format!("{}/hooks", Self::repo(repo))).await
    }

    /// Removes a webhook.
    pub async fn remove_hook(&self, repo: &str, id: u64) -> Result<()> {
        self.delete(&format!("{}/hooks/{id}", Self::repo(repo)))
            .await
    }

    /// Delivery attempts, oldest first, optionally for one repository.
    pub async fn deliveries(&self, repo: Option<&str>) -> Result<Vec<DeliveryInfo>> {
        let q = repo.map(|r| format!("?repo={r}")).unwrap_or_default();
        self.get(&format!("/deliveries{q}")).await
    }

    /// Waits until `repo` has at least `count` finished (not pending) deliveries.
    pub async fn wait_for_deliveries(
        &self,
        repo: &str,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<DeliveryInfo>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let all = self.deliveries(Some(repo)).await?;
            let done = all.iter().filter(|d| d.outcome != "pending").count();
            if done >= count && all.iter().all(|d| d.outcome != "pending") {
                return Ok(all);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "timed out waiting for {count} deliveries on {repo}; have {done} done of {}",
                    all.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Re-sends a delivery with the same GUID.
    pub async fn redeliver(&self, id: u64) -> Result<DeliveryInfo> {
        self.post(&format!("/deliveries/{id}/redeliver"), &json!({}))
            .await
    }

    // ---- faults and counts --------------------------------------------------------------

    /// Adds a fault rule.
    pub async fn add_fault(&self, spec: FaultSpec) -> Result<FaultInfo> {
        self.post("/faults", &spec).await
    }

    /// Live fault rules.
    pub async fn faults(&self) -> Result<Vec<FaultInfo>> {
        self.get("/faults").await
    }

    /// Removes every fault rule.
    pub async fn clear_faults(&self) -> Result<()> {
        self.delete("/faults").await
    }

    /// Request counts per client, route and status.
    pub async fn request_counts(&self) -> Result<RequestCounts> {
        self.get("/requests").await
    }

    /// Resets the request counts.
    pub async fn reset_request_counts(&self) -> Result<()> {
        self.delete("/requests").await
    }
}
