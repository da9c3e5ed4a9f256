//! Runs the real `pullwarden` binary as a process against a test cluster.
//!
//! The operator runs as the `pullwarden-system/pullwarden` ServiceAccount bound to the
//! ClusterRole shipped in `config/rbac`, not as cluster-admin: every end-to-end test therefore
//! also proves that the least-privilege RBAC is enough.
//!
//! Processes are killed on drop. When the control plane was started by this test process, each
//! operator's pid is also recorded in the plane's pid directory, so the watchdog that tears the
//! plane down when the test process dies (even by SIGKILL) stops the operators too.

use crate::cluster::{Cluster, repo_root};
use crate::process::Supervised;
use anyhow::{Context as _, Result, anyhow, bail};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use kube::api::PostParams;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// Namespace and name of the operator's ServiceAccount (see config/rbac).
pub const OPERATOR_NAMESPACE: &str = "pullwarden-system";
pub const OPERATOR_SERVICE_ACCOUNT: &str = "pullwarden";

/// The `pullwarden` binary next to the test executable (cargo builds it for
/// `cargo test --workspace`; `PULLWARDEN_BIN` overrides).
pub fn operator_binary() -> Result<PathBuf> {
    if let Ok(path) = std::env::var("PULLWARDEN_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    // Test binaries live in target/<profile>/deps/, other binaries in target/<profile>/.
    let mut dir = exe
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent", exe.display()))?;
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir
            .parent()
            .ok_or_else(|| anyhow!("cannot locate the target directory from {}", exe.display()))?;
    }
    let candidate = dir.join("pullwarden");
    if !candidate.exists() {
        bail!(
            "{} does not exist: run `cargo build -p pullwarden` (or `just test`)",
            candidate.display()
        );
    }
    let bin_mtime = candidate.metadata()?.modified()?;
    if let Some(newer) = newest_source(&repo_root().join("operator/src"))
        && newer > bin_mtime
    {
        bail!(
            "{} is older than operator/src: run `cargo build -p pullwarden` (or `just test`)",
            candidate.display()
        );
    }
    Ok(candidate)
}

fn newest_source(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest_source(&path)
        } else {
            entry.metadata().ok()?.modified().ok()
        };
        newest = newest.max(t);
    }
    newest
}

/// A free loopback address.
pub use crate::process::free_addr;

static RBAC: OnceLock<Mutex<Option<PathBuf>>> = OnceLock::new();

/// A kubeconfig authenticating as the operator's ServiceAccount, after applying `config/rbac`
/// (idempotent; done once per test process).
pub async fn operator_kubeconfig(cluster: &Cluster) -> Result<PathBuf> {
    let lock = RBAC.get_or_init(|| Mutex::new(None));
    let mut guard = lock.lock().await;
    if let Some(path) = guard.as_ref() {
        return Ok(path.clone());
    }
    // Already existing (a reused cluster) is fine.
    let _ = cluster
        .kubectl(["create", "namespace", OPERATOR_NAMESPACE])
        .await;
    let rbac = repo_root().join("config/rbac");
    cluster
        .kubectl([
            "apply",
            "--server-side",
            "--field-manager=pullwarden.dev/e2e",
            "-k",
            rbac.to_str().unwrap(),
        ])
        .await
        .context("applying config/rbac")?;

    let client = cluster.client().await?;
    let sa: Api<ServiceAccount> = Api::namespaced(client, OPERATOR_NAMESPACE);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(24 * 3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let token = sa
        .create_token_request(OPERATOR_SERVICE_ACCOUNT, &PostParams::default(), &request)
        .await
        .context("requesting a token for the operator ServiceAccount")?
        .status
        .ok_or_else(|| anyhow!("TokenRequest without status"))?
        .token;

    let admin = kube::config::Kubeconfig::read_from(first_path(cluster.kubeconfig()))?;
    let ctx_name = admin
        .current_context
        .clone()
        .ok_or_else(|| anyhow!("kubeconfig without current-context"))?;
    let ctx = admin
        .contexts
        .iter()
        .find(|c| c.name == ctx_name)
        .and_then(|c| c.context.clone())
        .ok_or_else(|| anyhow!("current context not found"))?;
    let cluster_entry = admin
        .clusters
        .iter()
        .find(|c| c.name == ctx.cluster)
        .and_then(|c| c.cluster.clone())
        .ok_or_else(|| anyhow!("cluster entry not found"))?;
    let mut yaml = serde_yaml::Mapping::new();
    yaml.insert("apiVersion".into(), "v1".into());
    yaml.insert("kind".into(), "Config".into());
    yaml.insert("current-context".into(), "operator".into());
    yaml.insert(
        "clusters".into(),
        serde_yaml::to_value(vec![
            serde_json::json!({"name": "test", "cluster": cluster_entry}),
        ])?,
    );
    yaml.insert(
        "users".into(),
        serde_yaml::to_value(vec![
            serde_json::json!({"name": "operator", "user": {"token": token}}),
        ])?,
    );
    yaml.insert(
        "contexts".into(),
        serde_yaml::to_value(vec![serde_json::json!({"name": "operator", "context": {"cluster": "test", "user": "operator"}})])?,
    );
    let dir = work_root(cluster)?;
    let path = dir.join("operator-kubeconfig");
    write_private(&path, serde_yaml::to_string(&yaml)?.as_bytes())?;
    *guard = Some(path.clone());
    Ok(path)
}

/// Where this test process keeps operator kubeconfigs, logs and git caches.
///
/// For a plane this process started, that is the plane's own state directory: `cluster-down`
/// removes it and keeps everything under `logs/` in `~/.cache/pullwarden/cluster-logs/last`, so a
/// test run leaves nothing in `/tmp`. For an external cluster (`KUBECONFIG`), it is
/// `${PULLWARDEN_CACHE:-~/.cache/pullwarden}/operator-runs/<test pid>`, kept for debugging.
fn work_root(cluster: &Cluster) -> Result<PathBuf> {
    let dir = match cluster.state_dir() {
        Some(dir) => dir.join("operators"),
        None => cache_root()?
            .join("operator-runs")
            .join(std::process::id().to_string()),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Fresh directories per operator process: `operator-<n>/` for its log and one for its git cache.
///
/// Logs of a plane this process started live under the plane's `logs/`, so `cluster-down` keeps
/// them with the component logs; git caches stay under `operators/` and go with the plane.
fn next_run_dirs(cluster: &Cluster) -> Result<(PathBuf, PathBuf)> {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let work = work_root(cluster)?;
    let log_dir = match cluster.state_dir() {
        Some(state) => state.join("logs").join(format!("operator-{n}")),
        None => work.join(format!("operator-{n}")),
    };
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    Ok((log_dir, work.join(format!("operator-{n}-git-cache"))))
}

fn cache_root() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PULLWARDEN_CACHE") {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME").ok_or_else(|| anyhow!("HOME is not set"))?;
    Ok(PathBuf::from(home).join(".cache/pullwarden"))
}

/// Writes a file only the owner can read (it holds a ServiceAccount token).
fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(contents)?;
    Ok(())
}

fn first_path(kubeconfig: &std::ffi::OsStr) -> PathBuf {
    std::env::split_paths(kubeconfig).next().unwrap_or_default()
}

/// Options for one operator process.
#[derive(Clone, Debug, Default)]
pub struct OperatorOptions {
    /// `--namespace`: watch only this namespace (tests isolate themselves this way).
    pub namespace: Option<String>,
    /// `--leader-elect` with the lease in this namespace.
    pub leader_election_namespace: Option<String>,
    /// Name of the leader Lease.
    pub leader_election_id: Option<String>,
    /// Replica identity.
    pub identity: Option<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Extra `pullwarden run` flags (e.g. the safety settings of docs/security.md).
    pub args: Vec<String>,
    /// Start WITHOUT `--outbound-allow-cidrs=127.0.0.0/8`. The forge emulator listens on
    /// loopback, which the outbound guard refuses unless the operator allows it, so the
    /// harness allows it by default; a test of the guard itself sets this.
    pub refuse_loopback_forge: bool,
}

/// The flag the harness adds unless [`OperatorOptions::refuse_loopback_forge`] is set.
pub const ALLOW_LOOPBACK_FORGE: &str = "--outbound-allow-cidrs=127.0.0.0/8";

/// A running operator process.
#[derive(Debug)]
pub struct Operator {
    process: Supervised,
    pub admin_addr: SocketAddr,
    pub webhook_addr: SocketAddr,
    pub log_path: PathBuf,
}

impl Operator {
    /// Starts the operator and waits until its admin server answers.
    pub async fn start(cluster: &Cluster, opts: OperatorOptions) -> Result<Operator> {
        let kubeconfig = operator_kubeconfig(cluster).await?;
        let admin_addr = free_addr();
        let webhook_addr = free_addr();
        let (run_dir, git_cache) = next_run_dirs(cluster)?;
        let log_path = run_dir.join("operator.log");
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = Command::new(operator_binary()?);
        cmd.arg("run")
            .arg("--admin-addr")
            .arg(admin_addr.to_string())
            .arg("--webhook-addr")
            .arg(webhook_addr.to_string())
            .arg("--git-cache-dir")
            .arg(git_cache)
            .env("KUBECONFIG", &kubeconfig)
            .env(
                "RUST_LOG",
                std::env::var("PULLWARDEN_TEST_LOG")
                    .unwrap_or_else(|_| "info,pullwarden=debug".into()),
            )
            .env_remove("POD_NAME")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(ns) = &opts.namespace {
            cmd.arg("--namespace").arg(ns);
        }
        if let Some(ns) = &opts.leader_election_namespace {
            cmd.arg("--leader-elect")
                .arg("--leader-election-namespace")
                .arg(ns);
        }
        if let Some(id) = &opts.leader_election_id {
            cmd.arg("--leader-election-id").arg(id);
        }
        if let Some(id) = &opts.identity {
            cmd.arg("--identity").arg(id);
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        if !opts.refuse_loopback_forge {
            cmd.arg(ALLOW_LOOPBACK_FORGE);
        }
        cmd.args(&opts.args);
        let process = Supervised::spawn(cluster.state_dir(), "operator", &mut cmd)?;
        let op = Operator {
            process,
            admin_addr,
            webhook_addr,
            log_path,
        };
        op.wait_http("/healthz", Duration::from_secs(30)).await?;
        Ok(op)
    }

    /// Pid of the process.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    async fn wait_http(&self, path: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.get(path).await {
                Ok((200, body)) => return Ok(body),
                Ok((code, body)) => format!("{code}: {body}"),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                bail!(
                    "operator {path} not OK after {timeout:?} (last: {last}); log tail:\n{}",
                    self.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        self.wait_http("/readyz", timeout).await.map(|_| ())
    }

    /// GET on the admin server: (status, body).
    pub async fn get(&self, path: &str) -> Result<(u16, String)> {
        let url = format!("http://{}{}", self.admin_addr, path);
        let resp = reqwest::Client::new()
            .get(url)
            .timeout(Duration::from_secs(5))
            .send()
            .await?;
        let status = resp.status().as_u16();
        Ok((status, resp.text().await?))
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> Result<String> {
        let (code, body) = self.get("/metrics").await?;
        if code != 200 {
            bail!("/metrics answered {code}");
        }
        Ok(body)
    }

    /// The value of one sample line (`name{labels}`) in `/metrics`, if present.
    pub async fn metric(&self, sample: &str) -> Result<Option<f64>> {
        let text = self.metrics().await?;
        Ok(text.lines().find_map(|l| {
            l.strip_prefix(sample)
                .and_then(|rest| rest.trim().parse().ok())
        }))
    }

    /// The last `lines` lines of the operator's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGKILL, as a crash or an OOM kill would.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// SIGTERM and wait for a clean exit; returns the exit code.
    pub fn terminate(&mut self, timeout: Duration) -> Result<Option<i32>> {
        self.process.terminate(timeout)
    }
}
