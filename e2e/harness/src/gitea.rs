//! A real Gitea server for the end-to-end suite: the pinned release built from the Go module proxy
//! by `e2e/scripts/build-gitea.sh`, started per test on loopback with sqlite, users and tokens
//! made through its CLI and API, repositories filled by real `git push` over smart HTTP.
//!
//! Each [`Gitea`] owns its work directory and process ([`Supervised`]: killed on drop and by the
//! plane's watchdog). Its log is kept under the plane's `logs/gitea-<n>/`, so `cluster-down`
//! saves it with the component logs in `~/.cache/pullwarden/cluster-logs/last`.
//!
//! What the real server does differently from the emulator (no ETag on the JSON API, webhook
//! order, review event names) is listed in docs/testing.md.

use crate::cluster::{Cluster, repo_root};
use crate::process::{Supervised, free_addr};
use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Password of every user the harness creates (Gitea's default policy accepts it).
const PASSWORD: &str = "pullwarden-E2E-pass1";

/// A Gitea account and its API token (scopes: all).
#[derive(Clone, Debug)]
pub struct GiteaUser {
    pub name: String,
    pub token: String,
}

/// A repository on the server.
#[derive(Clone, Debug)]
pub struct GiteaRepo {
    pub owner: String,
    pub name: String,
    /// Clone URL over HTTP (what a Repository's `spec.url` names).
    pub clone_url: String,
}

impl GiteaRepo {
    /// `owner/name`.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }
}

/// A running Gitea.
#[derive(Debug)]
pub struct Gitea {
    process: Option<Supervised>,
    bin: PathBuf,
    config: PathBuf,
    work: PathBuf,
    log_path: PathBuf,
    /// `http://127.0.0.1:<port>` (no trailing slash).
    pub base_url: String,
    /// The site administrator (owns the test repositories).
    pub admin: GiteaUser,
    http: reqwest::Client,
    cluster_state: Option<PathBuf>,
    _tmp: Option<tempfile::TempDir>,
}

/// The directory holding `gitea` and its `static/` assets, building them the first time.
pub fn gitea_dir() -> Result<PathBuf> {
    let script = repo_root().join("e2e/scripts/build-gitea.sh");
    let out = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!("{} failed ({})", script.display(), out.status);
    }
    let dir = String::from_utf8(out.stdout)?.trim().to_owned();
    Ok(PathBuf::from(dir))
}

impl Gitea {
    /// Starts a fresh Gitea (empty sqlite database) with an admin user `pullwarden-admin`.
    /// `cluster` ties the process to that plane's watchdog and log directory.
    pub async fn start(cluster: Option<&Cluster>) -> Result<Gitea> {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = gitea_dir()?;
        let cluster_state = cluster.and_then(Cluster::state_dir).map(Path::to_path_buf);
        let (work, tmp) = match &cluster_state {
            Some(state) => (state.join(format!("gitea-{n}")), None),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("pullwarden-gitea-")
                    .tempdir()?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let log_dir = match &cluster_state {
            Some(state) => state.join("logs").join(format!("gitea-{n}")),
            None => work.join("log"),
        };
        std::fs::create_dir_all(work.join("custom/conf"))?;
        std::fs::create_dir_all(&log_dir)?;
        let addr = free_addr();
        let base_url = format!("http://{addr}");
        let config = work.join("custom/conf/app.ini");
        std::fs::write(
            &config,
            app_ini(&work, &dir.join("static"), &log_dir, addr.port(), &base_url),
        )?;
        let bin = dir.join("gitea");
        let mut gitea = Gitea {
            process: None,
            bin,
            config,
            work,
            log_path: log_dir.join("stdout.log"),
            base_url,
            admin: GiteaUser {
                name: "pullwarden-admin".into(),
                token: String::new(),
            },
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            cluster_state,
            _tmp: tmp,
        };
        gitea.cli(&["migrate"])?;
        gitea.cli(&[
            "admin",
            "user",
            "create",
            "--admin",
            "--username",
            "pullwarden-admin",
            "--password",
            PASSWORD,
            "--email",
            "admin@gitea.test",
            "--must-change-password=false",
        ])?;
        gitea.admin.token = gitea.cli_token("pullwarden-admin")?;
        gitea.run().await?;
        Ok(gitea)
    }

    /// The API base a Repository's `spec.apiUrl` names.
    pub fn api_url(&self) -> String {
        format!("{}/api/v1", self.base_url)
    }

    /// Gitea's own log (router and webhook delivery lines), for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let path = self.log_path.with_file_name("gitea.log");
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--config")
            .arg(&self.config)
            .env("GITEA_WORK_DIR", &self.work)
            .env("HOME", &self.work)
            .current_dir(&self.work)
            .stdin(Stdio::null());
        cmd
    }

    fn cli(&self, args: &[&str]) -> Result<String> {
        let out = self.command().args(args).output()?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "gitea {}: {}\n{stdout}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(stdout)
    }

    /// A new API token for `user` from the CLI. CLI log lines go to stdout too, so the token is
    /// the line that looks like one (40 hex digits).
    fn cli_token(&self, user: &str) -> Result<String> {
        let out = self.cli(&[
            "admin",
            "user",
            "generate-access-token",
            "--username",
            user,
            "--token-name",
            "e2e",
            "--scopes",
            "all",
            "--raw",
        ])?;
        out.lines()
            .map(str::trim)
            .rfind(|l| l.len() == 40 && l.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("gitea generate-access-token printed no token:\n{out}"))
    }

    /// Starts `gitea web` and waits for the API.
    async fn run(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let mut cmd = self.command();
        cmd.arg("web").stdout(log.try_clone()?).stderr(log);
        self.process = Some(Supervised::spawn(
            self.cluster_state.as_deref(),
            "gitea",
            &mut cmd,
        )?);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = self
                .http
                .get(format!("{}/api/v1/version", self.base_url))
                .send()
                .await
                && r.status().is_success()
            {
                return Ok(());
            }
            if let Some(status) = self.process.as_mut().and_then(Supervised::exited) {
                bail!(
                    "gitea exited ({status}) before serving:\n{}",
                    self.log_tail(30)
                );
            }
            if Instant::now() > deadline {
                bail!("gitea did not serve /api/v1/version within 60s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM: the forge is down (connections refused) until [`Gitea::resume`].
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut p) = self.process.take() {
            p.terminate(Duration::from_secs(10))?;
        }
        Ok(())
    }

    /// Starts the same server again (same port, database and repositories).
    pub async fn resume(&mut self) -> Result<()> {
        self.run().await
    }

    /// A non-admin user with an API token (token made with basic auth, as a person would).
    pub async fn create_user(&self, name: &str) -> Result<GiteaUser> {
        self.cli(&[
            "admin",
            "user",
            "create",
            "--username",
            name,
            "--password",
            PASSWORD,
            "--email",
            &format!("{name}@gitea.test"),
            "--must-change-password=false",
        ])?;
        let r = self
            .http
            .post(format!("{}/users/{name}/tokens", self.api_url()))
            .basic_auth(name, Some(PASSWORD))
            .json(&json!({"name": "e2e", "scopes": ["all"]}))
            .send()
            .await?;
        let status = r.status();
        let body: Value = r.json().await?;
        let token = body["sha1"]
            .as_str()
            .ok_or_else(|| anyhow!("token for {name}: {status} {body}"))?;
        Ok(GiteaUser {
            name: name.to_owned(),
            token: token.to_owned(),
        })
    }

    /// An API call as `user`; returns the status and the JSON body (`null` when empty).
    pub async fn call(
        &self,
        user: &GiteaUser,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.api_url()))
            .header("Authorization", format!("token {}", user.token));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = r.status().as_u16();
        let text = r.text().await?;
        let value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, value))
    }

    /// [`Gitea::call`] that must succeed (2xx).
    pub async fn ok(
        &self,
        user: &GiteaUser,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let (status, value) = self.call(user, method.clone(), path, body).await?;
        if !(200..300).contains(&status) {
            bail!("{method} {path}: {status} {value}");
        }
        Ok(value)
    }

    /// A private repository owned by `owner`, its `main` branch holding `files`.
    pub async fn create_repo(
        &self,
        owner: &GiteaUser,
        name: &str,
        files: &BTreeMap<String, Option<String>>,
    ) -> Result<GiteaRepo> {
        let v = self
            .ok(
                owner,
                reqwest::Method::POST,
                "/user/repos",
                Some(json!({"name": name, "private": true, "default_branch": "main"})),
            )
            .await?;
        let repo = GiteaRepo {
            owner: owner.name.clone(),
            name: name.to_owned(),
            clone_url: v["clone_url"]
                .as_str()
                .ok_or_else(|| anyhow!("no clone_url in {v}"))?
                .to_owned(),
        };
        self.push(owner, &repo, "main", None, files, "Initial commit")?;
        Ok(repo)
    }

    /// Commits `files` (path → content, `None` deletes) on `branch` and pushes it with real git
    /// over smart HTTP as `user`; `from` starts a new branch at that branch's head. Returns the
    /// new head SHA.
    pub fn push(
        &self,
        user: &GiteaUser,
        repo: &GiteaRepo,
        branch: &str,
        from: Option<&str>,
        files: &BTreeMap<String, Option<String>>,
        message: &str,
    ) -> Result<String> {
        let checkout = tempfile::Builder::new()
            .prefix("gitea-push-")
            .tempdir_in(&self.work)?;
        let dir = checkout.path();
        let remote = authenticated_url(&repo.clone_url, user)?;
        let git = |args: &[&str]| -> Result<String> {
            let out = Command::new("git")
                .args(["-c", "init.defaultBranch=main", "-c", "user.name=e2e"])
                .args(["-c", &format!("user.email={}@gitea.test", user.name)])
                .args(args)
                .current_dir(dir)
                .env("GIT_TERMINAL_PROMPT", "0")
                .env("HOME", &self.work)
                .output()?;
            if !out.status.success() {
                bail!(
                    "git {}: {}",
                    args.first().copied().unwrap_or_default(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        };
        git(&["init", "-q"])?;
        git(&["remote", "add", "origin", &remote])?;
        let base = from.unwrap_or(branch);
        let has_base = !git(&["ls-remote", "--heads", "origin", base])?.is_empty();
        if has_base {
            git(&["fetch", "-q", "--depth=1", "origin", base])?;
            git(&["checkout", "-q", "-b", branch, "FETCH_HEAD"])?;
        } else {
            git(&["checkout", "-q", "-b", branch])?;
        }
        for (path, content) in files {
            let file = dir.join(path);
            match content {
                Some(c) => {
                    if let Some(parent) = file.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                    std::fs::write(&file, c)?;
                }
                None => {
                    let _ = std::fs::remove_file(&file);
                }
            }
        }
        git(&["add", "-A"])?;
        git(&["commit", "-q", "--allow-empty", "-m", message])?;
        git(&["push", "-q", "origin", &format!("HEAD:refs/heads/{branch}")])?;
        git(&["rev-parse", "HEAD"])
    }

    /// Adds a `gitea`-type webhook (JSON, HMAC secret) for every event.
    pub async fn add_hook(&self, repo: &GiteaRepo, url: &str, secret: &str) -> Result<Value> {
        self.ok(
            &self.admin,
            reqwest::Method::POST,
            &format!("/repos/{}/hooks", repo.full_name()),
            Some(json!({
                "type": "gitea",
                "active": true,
                "events": ["push", "pull_request", "pull_request_sync", "pull_request_label",
                           "pull_request_review", "issue_comment", "status", "repository", "create", "delete"],
                "config": {"url": url, "content_type": "json", "secret": secret},
            })),
        )
        .await
    }

    /// Opens a pull request `head` → `base` as `user`, with `labels` (created on the
    /// repository if missing). Returns the PR's JSON.
    pub async fn open_pull(
        &self,
        user: &GiteaUser,
        repo: &GiteaRepo,
        head: &str,
        title: &str,
        labels: &[&str],
    ) -> Result<Value> {
        let mut ids = Vec::new();
        for l in labels {
            ids.push(self.label_id(repo, l).await?);
        }
        self.ok(
            user,
            reqwest::Method::POST,
            &format!("/repos/{}/pulls", repo.full_name()),
            Some(json!({"head": head, "base": "main", "title": title, "labels": ids})),
        )
        .await
    }

    /// The id of label `name` on `repo`, creating it the first time.
    pub async fn label_id(&self, repo: &GiteaRepo, name: &str) -> Result<u64> {
        let path = format!("/repos/{}/labels", repo.full_name());
        let existing = self
            .ok(&self.admin, reqwest::Method::GET, &path, None)
            .await?;
        if let Some(id) = existing
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["name"] == name)
            .and_then(|l| l["id"].as_u64())
        {
            return Ok(id);
        }
        let v = self
            .ok(
                &self.admin,
                reqwest::Method::POST,
                &path,
                Some(json!({"name": name, "color": "#00aabb"})),
            )
            .await?;
        v["id"].as_u64().ok_or_else(|| anyhow!("label id in {v}"))
    }

    /// Closes pull request `number` without merging.
    pub async fn close_pull(&self, repo: &GiteaRepo, number: u64) -> Result<Value> {
        self.ok(
            &self.admin,
            reqwest::Method::PATCH,
            &format!("/repos/{}/pulls/{number}", repo.full_name()),
            Some(json!({"state": "closed"})),
        )
        .await
    }

    /// Commit statuses on `sha`, oldest first.
    pub async fn statuses(&self, repo: &GiteaRepo, sha: &str) -> Result<Vec<Value>> {
        let v = self
            .ok(
                &self.admin,
                reqwest::Method::GET,
                &format!(
                    "/repos/{}/commits/{sha}/statuses?sort=oldest&limit=50",
                    repo.full_name()
                ),
                None,
            )
            .await?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    /// Comments on issue/PR `number`, oldest first.
    pub async fn comments(&self, repo: &GiteaRepo, number: u64) -> Result<Vec<Value>> {
        let v = self
            .ok(
                &self.admin,
                reqwest::Method::GET,
                &format!("/repos/{}/issues/{number}/comments", repo.full_name()),
                None,
            )
            .await?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }
}

/// `http://user:token@host/...` for git over smart HTTP.
fn authenticated_url(clone_url: &str, user: &GiteaUser) -> Result<String> {
    let mut url = url::Url::parse(clone_url)?;
    url.set_username(&user.name)
        .map_err(|()| anyhow!("cannot set user on {clone_url}"))?;
    url.set_password(Some(&user.token))
        .map_err(|()| anyhow!("cannot set token on {clone_url}"))?;
    Ok(url.to_string())
}

/// A headless, offline app.ini: sqlite, no SSH/LFS/mail/actions/indexers, webhooks allowed to
/// loopback (the operator listens there), secrets pre-set so Gitea never rewrites the file.
fn app_ini(work: &Path, static_root: &Path, log_dir: &Path, port: u16, base_url: &str) -> String {
    let w = work.display();
    format!(
        r#"APP_NAME = pullwarden-e2e
RUN_MODE = prod
I_AM_BEING_UNSAFE_RUNNING_AS_ROOT = true
WORK_PATH = {w}

[server]
PROTOCOL = http
HTTP_ADDR = 127.0.0.1
HTTP_PORT = {port}
ROOT_URL = {base_url}/
DISABLE_SSH = true
OFFLINE_MODE = true
LFS_START_SERVER = false
STATIC_ROOT_PATH = {static_root}
APP_DATA_PATH = {w}/data

[database]
DB_TYPE = sqlite3
PATH = {w}/data/gitea.db
SQLITE_JOURNAL_MODE = WAL

[repository]
ROOT = {w}/repos
DEFAULT_BRANCH = main

[security]
INSTALL_LOCK = true
SECRET_KEY = pullwarden-e2e-not-a-secret
INTERNAL_TOKEN = eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJuYmYiOjE3MDAwMDAwMDB9.pullwarden-e2e-internal-token
PASSWORD_COMPLEXITY = off
MIN_PASSWORD_LENGTH = 8

[oauth2]
JWT_SECRET = cHVsbHdhcmRlbi1lMmUtand0LXNlY3JldC1ub3Qtc2VjcmV0

[webhook]
ALLOWED_HOST_LIST = loopback
DELIVER_TIMEOUT = 10

[service]
DISABLE_REGISTRATION = true
REQUIRE_SIGNIN_VIEW = false
DEFAULT_KEEP_EMAIL_PRIVATE = true

[mailer]
ENABLED = false

[actions]
ENABLED = false

[cron.update_checker]
ENABLED = false

[indexer]
ISSUE_INDEXER_TYPE = db
REPO_INDEXER_ENABLED = false

[cache]
ADAPTER = memory

[session]
PROVIDER = memory

[queue]
TYPE = channel

[log]
MODE = file
LEVEL = Info
ROOT_PATH = {log_dir}
"#,
        static_root = static_root.display(),
        log_dir = log_dir.display(),
    )
}
