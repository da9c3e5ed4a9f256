//! The forge emulator: one HTTP server that stands in for GitHub, GitLab and Gitea in tests,
//! benchmarks and the demo.
//!
//! Flow: [`Emulator::start`] binds a free `127.0.0.1` port (or the configured address),
//! creates the state directory (a temp dir unless given) and serves:
//! - git smart HTTP for every repository (`/{owner}/{repo}.git`, GitLab
//!   `/{group/...}/{project}.git`) through `git http-backend` ([`git_http`]), backed by real
//!   bare repositories on disk ([`git`]);
//! - the REST APIs: GitHub at `/` and `/api/v3` ([`github`]), GitLab at `/api/v4`
//!   ([`gitlab`]), Gitea at `/api/v1` ([`gitea`]), each with its auth, errors, pagination,
//!   ETags and rate limits ([`server`] runs that pipeline, [`faults`] can break it);
//! - the admin API at `/_emulator` ([`admin`]), which tests drive through the typed
//!   [`AdminClient`] that [`EmulatorHandle`] dereferences to. Admin changes make real commits
//!   and send signed webhooks in the forges' real payload shapes ([`webhooks`]).
//!
//! Everything except git objects lives in memory ([`state`]); dropping the handle (or
//! [`EmulatorHandle::shutdown`]) stops the server and removes a temporary state directory.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::sync::{Mutex, watch};

pub mod admin;
pub mod auth;
pub mod client;
pub mod data;
pub mod faults;
pub mod git;
pub mod git_http;
pub mod gitea;
pub mod github;
pub mod github_json;
pub mod gitlab;
pub mod metrics;
pub mod model;
pub mod ops;
pub mod ratelimit;
pub mod reply;
pub mod router;
pub mod server;
pub mod state;
pub mod webhooks;

pub use client::AdminClient;
pub use model::*;

/// How to run an emulator.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Listen address; `None` = a free port on 127.0.0.1.
    pub addr: Option<SocketAddr>,
    /// Where bare repositories live; `None` = a temporary directory removed on drop.
    pub state_dir: Option<PathBuf>,
    /// Base URL put in payloads and clone URLs; `None` = `http://<bound address>`.
    pub public_url: Option<String>,
    /// Requests per window for tokens and installations (GitHub: 5000/hour).
    pub default_rate_limit: u32,
    /// Requests per window for unauthenticated callers (GitHub: 60/hour).
    pub anonymous_rate_limit: u32,
    /// Rate-limit window.
    pub rate_limit_window_secs: u64,
    /// Timeout of one webhook delivery.
    pub webhook_timeout_secs: u64,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            addr: None,
            state_dir: None,
            public_url: None,
            default_rate_limit: 5000,
            anonymous_rate_limit: 60,
            rate_limit_window_secs: 3600,
            webhook_timeout_secs: 10,
        }
    }
}

/// Entry point.
#[derive(Debug)]
pub struct Emulator;

impl Emulator {
    /// Starts an emulator in this process (on the current tokio runtime).
    pub async fn start(config: EmulatorConfig) -> Result<EmulatorHandle> {
        let addr = config
            .addr
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let local = listener.local_addr()?;
        let (tempdir, state_dir) = match &config.state_dir {
            Some(d) => (None, d.clone()),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("forge-emulator-")
                    .tempdir()?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        let repo_root = state_dir.join("repos");
        tokio::fs::create_dir_all(&repo_root).await?;
        let repo_root = tokio::fs::canonicalize(&repo_root).await?;
        let url = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{local}"))
            .trim_end_matches('/')
            .to_string();
        let (tx, rx) = watch::channel(false);
        let shared = state::Shared {
            state: Arc::new(Mutex::new(state::State::default())),
            public_url: url.clone(),
            repo_root,
            config: Arc::new(config),
            http: reqwest::Client::builder()
                .build()
                .context("webhook HTTP client")?,
            cache: Default::default(),
            shutdown: rx.clone(),
        };
        let task = tokio::spawn(server::serve(listener, shared.clone(), rx));
        Ok(EmulatorHandle {
            url: url.clone(),
            addr: local,
            admin: AdminClient::new(url),
            shutdown: tx,
            task: Some(task),
            state_dir,
            _tempdir: tempdir,
        })
    }
}

/// A running emulator. Dereferences to its [`AdminClient`].
#[derive(Debug)]
pub struct EmulatorHandle {
    url: String,
    addr: SocketAddr,
    admin: AdminClient,
    shutdown: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
    state_dir: PathBuf,
    _tempdir: Option<tempfile::TempDir>,
}

impl EmulatorHandle {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// GitHub API base (github.com layout, API at the root).
    pub fn github_api_url(&self) -> String {
        self.url.clone()
    }

    /// GitHub Enterprise API base (`/api/v3`).
    pub fn github_enterprise_api_url(&self) -> String {
        format!("{}/api/v3", self.url)
    }

    /// GitLab API base (`/api/v4`).
    pub fn gitlab_api_url(&self) -> String {
        format!("{}/api/v4", self.url)
    }

    /// Gitea API base (`/api/v1`).
    pub fn gitea_api_url(&self) -> String {
        format!("{}/api/v1", self.url)
    }

    /// `host:port`, as the `gitlab` crate's builder wants it.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Smart-HTTP clone URL of a repository.
    pub fn clone_url(&self, path: &str) -> String {
        format!("{}/{}.git", self.url, path.trim_matches('/'))
    }

    /// The state directory (bare repositories under `repos/`).
    pub fn state_dir(&self) -> &std::path::Path {
        &self.state_dir
    }

    /// The admin client.
    pub fn admin(&self) -> &AdminClient {
        &self.admin
    }

    /// Stops the server and waits for it.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl std::ops::Deref for EmulatorHandle {
    type Target = AdminClient;

    fn deref(&self) -> &AdminClient {
        &self.admin
    }
}

impl Drop for EmulatorHandle {
    fn drop(&mut self) {
        // Stops the accept loop and the webhook workers; git children die with their futures.
        let _ = self.shutdown.send(true);
    }
}
