//! In-memory state of the emulated forges.
//!
//! Everything except git objects lives here behind one `tokio::sync::Mutex` (see
//! [`Shared`]): users, tokens, Apps, repositories with their pull requests, reviews, comments,
//! statuses, check runs, deployments and webhooks, plus the delivery log, fault rules and request
//! counters. Branch heads are *cached* here but always re-read from the real refs after every
//! write ([`super::git::Git::branches`]), so the SHAs served are the SHAs `git ls-remote` sees.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::{Mutex, mpsc};

use super::faults::FaultRule;
use super::metrics::Counters;
use super::model::{DeliveryInfo, Forge};
use super::ratelimit::Bucket;

/// A user or organisation. Ids come from one counter shared by every entity, so they are unique
/// across kinds, which keeps the forges' "id" fields unambiguous in tests.
#[derive(Debug, Clone)]
pub struct User {
    pub id: u64,
    pub login: String,
    pub name: String,
    pub email: String,
    /// `User`, `Organization` or `Bot`.
    pub kind: String,
}

/// What a credential is.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenKind {
    /// A personal access token registered through the admin API.
    Personal,
    /// An installation token issued by `POST /app/installations/{id}/access_tokens`.
    Installation {
        installation_id: u64,
        expires_at: i64,
    },
}

#[derive(Debug, Clone)]
pub struct Token {
    pub token: String,
    pub login: String,
    pub forge: Option<Forge>,
    pub kind: TokenKind,
    /// Private repositories visible to the token (`None` = all).
    pub repos: Option<Vec<String>>,
    /// Key of the rate-limit bucket and of the request counters.
    pub client: String,
}

#[derive(Debug, Clone)]
pub struct App {
    pub app_id: u64,
    pub slug: String,
    pub owner: String,
    pub public_key_pem: String,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct Installation {
    pub id: u64,
    pub app_id: u64,
    pub account: String,
    pub repositories: Option<Vec<String>>,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct Membership {
    pub role: String,
    pub state: String,
}

#[derive(Debug, Clone)]
pub struct Label {
    pub id: u64,
    pub name: String,
    pub color: String,
    pub description: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Review {
    pub id: u64,
    pub user: String,
    /// `APPROVED`, `CHANGES_REQUESTED`, `COMMENTED`.
    pub state: String,
    pub body: String,
    pub commit_id: String,
    pub submitted_at: i64,
}

#[derive(Debug, Clone)]
pub struct Pull {
    pub number: u64,
    pub id: u64,
    pub title: String,
    pub body: String,
    pub author: String,
    /// Repository (full path) holding the head branch: this repository unless a fork.
    pub head_repo: String,
    pub head_ref: String,
    /// Last known head SHA; refreshed from the head repository's real ref on every write.
    pub head_sha: String,
    pub base_ref: String,
    /// Tip of the base branch when the PR was closed/merged (open PRs use the live tip).
    pub base_sha_at_close: Option<String>,
    pub draft: bool,
    pub labels: Vec<String>,
    pub open: bool,
    pub merged: bool,
    pub merged_at: Option<i64>,
    pub merged_by: Option<String>,
    pub merge_commit_sha: Option<String>,
    pub closed_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub reviews: Vec<Review>,
    pub fork: bool,
    /// Every head the pull request had, with the time it became the head (GitLab merge request
    /// versions are built from it).
    pub pushes: Vec<(String, i64)>,
}

#[derive(Debug, Clone)]
pub struct Comment {
    pub id: u64,
    /// Issue / PR number (GitLab: MR iid).
    pub number: u64,
    pub user: String,
    pub body: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub edit_count: u32,
}

/// A label change on a pull request, kept so the forge can list it with its time and actor
/// (GitHub issue events).
#[derive(Debug, Clone)]
pub struct LabelChange {
    pub id: u64,
    pub number: u64,
    pub user: String,
    pub label: String,
    pub added: bool,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct Status {
    pub id: u64,
    pub sha: String,
    pub context: String,
    pub state: String,
    pub description: Option<String>,
    pub target_url: Option<String>,
    pub creator: String,
    pub git_ref: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone)]
pub struct CheckRun {
    pub id: u64,
    pub suite_id: u64,
    pub head_sha: String,
    pub name: String,
    pub status: String,
    pub conclusion: Option<String>,
    pub started_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub external_id: Option<String>,
    pub details_url: Option<String>,
    pub title: Option<String>,
    pub summary: Option<String>,
    pub text: Option<String>,
    pub app_id: u64,
    pub update_count: u32,
}

#[derive(Debug, Clone)]
pub struct DeploymentStatus {
    pub id: u64,
    pub state: String,
    pub description: String,
    pub environment_url: Option<String>,
    pub log_url: Option<String>,
    pub creator: String,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct Deployment {
    pub id: u64,
    /// GitLab per-project iid.
    pub iid: u64,
    pub sha: String,
    pub git_ref: String,
    pub task: String,
    pub environment: String,
    pub description: Option<String>,
    pub payload: Value,
    pub creator: String,
    pub transient_environment: bool,
    pub production_environment: bool,
    pub created_at: i64,
    pub updated_at: i64,
    pub statuses: Vec<DeploymentStatus>,
}

#[derive(Debug, Clone)]
pub struct Hook {
    pub id: u64,
    pub url: String,
    pub secret: Option<String>,
    pub events: Vec<String>,
    pub created_at: i64,
    /// Ordered delivery queue of this hook (one worker per hook keeps events in order).
    pub queue: mpsc::UnboundedSender<u64>,
}

/// Emulator-side facts about a commit that git does not carry.
#[derive(Debug, Clone, Default)]
pub struct CommitMeta {
    pub author_login: Option<String>,
    pub verified: bool,
}

#[derive(Debug, Clone)]
pub struct Repo {
    pub id: u64,
    pub forge: Forge,
    pub path: String,
    pub owner: String,
    pub name: String,
    pub default_branch: String,
    pub private: bool,
    pub description: Option<String>,
    /// Parent repository when this is a fork.
    pub fork_of: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub pushed_at: i64,
    /// Branch → head, mirrored from the real refs.
    pub branches: BTreeMap<String, String>,
    pub pulls: BTreeMap<u64, Pull>,
    /// Next issue/PR number (GitHub and Gitea share it between issues and PRs).
    pub next_number: u64,
    pub comments: Vec<Comment>,
    /// Label changes of pull requests, oldest first (`labeled` / `unlabeled` issue events).
    pub label_changes: Vec<LabelChange>,
    pub statuses: Vec<Status>,
    pub check_runs: Vec<CheckRun>,
    pub deployments: Vec<Deployment>,
    /// Environments stopped since their last deployment (GitLab `POST .../environments/:id/stop`;
    /// a new deployment to the environment makes it available again, as on GitLab).
    pub stopped_environments: BTreeSet<String>,
    pub hooks: Vec<Hook>,
    pub collaborators: BTreeMap<String, String>,
    pub labels: BTreeMap<String, Label>,
    pub commit_meta: HashMap<String, CommitMeta>,
    pub git_dir: PathBuf,
}

impl Repo {
    /// Names of the environments deployments were made to, first deployment first.
    pub fn environment_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for d in &self.deployments {
            if !names.contains(&d.environment.as_str()) {
                names.push(&d.environment);
            }
        }
        names
    }

    /// `available` or `stopped` (GitLab's environment states the emulator models).
    pub fn environment_state(&self, name: &str) -> &'static str {
        if self.stopped_environments.contains(name) {
            "stopped"
        } else {
            "available"
        }
    }

    /// The environment URL: the newest deployment status of the environment that carries one.
    pub fn environment_url(&self, name: &str) -> Option<String> {
        self.deployments
            .iter()
            .rev()
            .filter(|d| d.environment == name)
            .find_map(|d| {
                d.statuses
                    .iter()
                    .rev()
                    .find_map(|s| s.environment_url.clone())
            })
    }

    /// Statuses of one commit, newest first (the order every forge lists them in).
    pub fn statuses_for(&self, sha: &str) -> Vec<&Status> {
        let mut v: Vec<&Status> = self.statuses.iter().filter(|s| s.sha == sha).collect();
        v.reverse();
        v
    }
}

/// One recorded webhook delivery attempt.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub info: DeliveryInfo,
}

/// The whole mutable world.
#[derive(Debug, Default)]
pub struct State {
    pub next_id: u64,
    pub users: BTreeMap<String, User>,
    pub tokens: HashMap<String, Token>,
    pub apps: BTreeMap<u64, App>,
    pub installations: BTreeMap<u64, Installation>,
    /// (org, team slug) → login → membership.
    pub teams: BTreeMap<(String, String), BTreeMap<String, Membership>>,
    pub repos: BTreeMap<String, Repo>,
    pub deliveries: Vec<Delivery>,
    pub faults: Vec<FaultRule>,
    pub buckets: HashMap<String, Bucket>,
    pub counters: Counters,
}

impl State {
    /// A fresh id from the shared counter.
    pub fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The user with this login, created with defaults on first sight: forge events name users
    /// by login, and tests should not have to pre-register every reviewer.
    pub fn user(&mut self, login: &str) -> User {
        if let Some(u) = self.users.get(login) {
            return u.clone();
        }
        let id = self.id();
        let u = User {
            id,
            login: login.to_string(),
            name: display_name(login),
            email: format!("{login}@users.noreply.emulator.local"),
            kind: if login.ends_with("[bot]") {
                "Bot".into()
            } else {
                "User".into()
            },
        };
        self.users.insert(login.to_string(), u.clone());
        u
    }

    /// Read-only lookup that does not create; unknown logins get a deterministic stand-in.
    pub fn user_ro(&self, login: &str) -> User {
        self.users.get(login).cloned().unwrap_or_else(|| User {
            id: 0,
            login: login.to_string(),
            name: display_name(login),
            email: format!("{login}@users.noreply.emulator.local"),
            kind: "User".into(),
        })
    }

    /// GitLab addresses projects by numeric id or by full path.
    pub fn repo_by_gitlab_id(&self, id: &str) -> Option<&Repo> {
        match id.parse::<u64>() {
            Ok(n) => self
                .repos
                .values()
                .find(|r| r.id == n && r.forge == Forge::Gitlab),
            Err(_) => self.repos.get(id).filter(|r| r.forge == Forge::Gitlab),
        }
    }
}

fn display_name(login: &str) -> String {
    let mut c = login.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// Shared, cloneable handle to the state and the environment it lives in.
#[derive(Debug, Clone)]
pub struct Shared {
    pub state: Arc<Mutex<State>>,
    /// Base URL of the emulator (`http://127.0.0.1:PORT`), used in webhook payloads.
    pub public_url: String,
    /// Directory holding the bare repositories (`<state-dir>/repos`).
    pub repo_root: PathBuf,
    pub config: Arc<super::EmulatorConfig>,
    pub http: reqwest::Client,
    /// Git facts by SHA (see [`super::data`]).
    pub cache: super::data::CacheHandle,
    /// Flips to `true` on shutdown (stops the webhook workers).
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// RFC 3339 `2024-01-02T03:04:05Z`, the format GitHub and Gitea use.
pub fn iso(ts: i64) -> String {
    jiff::Timestamp::from_second(ts)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// GitLab's millisecond form `2024-01-02T03:04:05.000Z`.
pub fn iso_ms(ts: i64) -> String {
    jiff::Timestamp::from_second(ts)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S.000Z").to_string())
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".into())
}

/// The all-zero SHA forges use for "no commit" in push events.
pub const ZERO_SHA: &str = "0000000000000000000000000000000000000000";
