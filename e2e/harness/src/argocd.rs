//! A real Argo CD for one test: Debian's `redis-server`, the Argo CD repo-server and the
//! application controller, built from the pinned `github.com/argoproj/argo-cd/v3` module by
//! `e2e/scripts/build-argocd.sh` (one binary; the component is chosen by `$ARGOCD_BINARY_NAME`).
//!
//! Only these two components run: Pullwarden writes the Application and AppProject objects
//! itself, so Argo CD's API server, UI, dex and ApplicationSet controller have nothing to do. The
//! controller watches one namespace (Argo CD's control-plane namespace, given per test) and
//! talks to the API server with the plane's admin kubeconfig — Argo CD's own privileges, like the
//! ClusterRole of a real install. `ARGOCD_FAKE_IN_CLUSTER` (Argo CD's switch for running
//! outside a pod) makes the in-cluster destination `https://kubernetes.default.svc` use that
//! kubeconfig, since the plane has no in-cluster DNS or service-account mount. Git credentials
//! reach git through Argo CD's own askpass helper (`argocd` on the repo-server's `PATH`, served
//! by the same binary).
//!
//! Every process listens on a free loopback port and is [`Supervised`] (killed on drop, and by the
//! plane's watchdog when the test process dies). Logs go to the plane's `logs/argocd-<n>/`
//! (`application-controller.log`, `repo-server.log`, `redis.log`; kept by `cluster-down` in
//! `~/.cache/pullwarden/cluster-logs/last`), clones and redis state to the plane's `argocd-<n>/`.
//! Start-up takes under 2 s, so each test that needs Argo CD starts its own (isolation:
//! one control-plane namespace, one redis, no state shared between tests).

use crate::cluster::{Cluster, repo_root};
use crate::process::{Supervised, free_addr};
use anyhow::{Context as _, Result, anyhow, bail};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Label Argo CD's settings informers select on.
const PART_OF: (&str, &str) = ("app.kubernetes.io/part-of", "argocd");
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The directory `build-argocd.sh` printed: `argocd` (the binary) and `crds/` (Argo CD's CRDs of
/// the same version). Built once per cache key; the first build takes minutes.
pub fn build_dir() -> Result<&'static Path> {
    static BUILT: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let script = repo_root().join("e2e/scripts/build-argocd.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // Progress of a first build goes straight to the test output.
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!(
                "{} failed ({}); stdout:\n{stdout}",
                script.display(),
                out.status
            ));
        }
        let dir = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
        if dir.join("argocd").is_file() {
            Ok(dir)
        } else {
            Err(format!(
                "{} printed {dir:?}, which holds no argocd binary",
                script.display()
            ))
        }
    });
    built
        .as_deref()
        .map_err(|e| anyhow!("Argo CD is unavailable: {e}"))
}

/// Server-side applies Argo CD's own CRDs (Application, AppProject) of the pinned
/// version and waits until they are Established (idempotent; the cluster is shared).
pub async fn install_crds(client: &kube::Client) -> Result<Vec<String>> {
    crate::cluster::apply_crds_from(client, &build_dir()?.join("crds")).await
}

/// One component: its process (killed on drop, stopped by the plane's watchdog) and log.
#[derive(Debug)]
struct Process {
    name: &'static str,
    process: Supervised,
    log: PathBuf,
}

impl Process {
    fn spawn(
        plane_state: Option<&Path>,
        name: &'static str,
        mut cmd: Command,
        log: PathBuf,
    ) -> Result<Self> {
        let file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        Ok(Process {
            name,
            process: Supervised::spawn(plane_state, name, &mut cmd)?,
            log,
        })
    }

    /// Fails with the log tail if the process has exited.
    fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.process.exited() {
            bail!(
                "{} exited ({status}); log tail:\n{}",
                self.name,
                log_tail(&self.log, 40)
            );
        }
        Ok(())
    }
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A running Argo CD (controller, repo-server, redis) whose control-plane namespace is
/// [`ArgoCd::namespace`]. Dropping it stops all three.
#[derive(Debug)]
pub struct ArgoCd {
    namespace: String,
    // Dropped in this order: the controller before the servers it calls.
    controller: Process,
    repo_server: Process,
    /// Held to be stopped on drop.
    _redis: Process,
    log_dir: PathBuf,
    /// The work directory of an Argo CD on an external cluster (removed on drop); on a plane this
    /// process started, the work directory goes with the plane.
    _tmp: Option<tempfile::TempDir>,
    /// A client is bound to the runtime that built it: one per call (see `cluster`).
    config: kube::Config,
}

impl ArgoCd {
    /// Starts Argo CD with `namespace` (which must exist) as its control-plane namespace:
    /// writes the minimal `argocd-cm` and `argocd-secret` there, starts redis, the repo-server
    /// and the controller, and waits until each answers.
    pub async fn start(cluster: &Cluster, namespace: &str) -> Result<ArgoCd> {
        let started = Instant::now();
        let binary = build_dir()?.join("argocd");
        let config = cluster.config().await?;
        write_settings(&kube::Client::try_from(config.clone())?, namespace).await?;

        let (work, log_dir, tmp_dir) = run_dirs(cluster)?;
        let plane = cluster.state_dir();
        let bin_dir = work.join("bin");
        let tmp = work.join("tmp");
        let home = work.join("home");
        for d in [&bin_dir, &tmp, &home, &work.join("tls"), &work.join("ssh")] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        // git runs $GIT_ASKPASS, which Argo CD sets to `argocd`, for the repository credentials.
        std::os::unix::fs::symlink(&binary, bin_dir.join("argocd"))
            .context("linking the askpass helper")?;
        let path = match std::env::var_os("PATH") {
            Some(p) => {
                let mut dirs = vec![bin_dir.clone()];
                dirs.extend(std::env::split_paths(&p));
                std::env::join_paths(dirs)?
            }
            None => bin_dir.clone().into_os_string(),
        };

        let redis_addr = free_addr();
        let mut redis_cmd = Command::new("redis-server");
        redis_cmd
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(redis_addr.port().to_string())
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .arg("--dir")
            .arg(&work);
        let mut redis = Process::spawn(plane, "argocd-redis", redis_cmd, log_dir.join("redis.log"))
            .context(
                "starting redis-server (apt-get install redis-server; build-argocd.sh installs it)",
            )?;

        // Environment both components share: the kubeconfig as the in-cluster config, state and
        // temporary clones under the run directory, no GnuPG (no signature verification here).
        let argo = |component: &str| {
            let mut cmd = Command::new(&binary);
            cmd.env("ARGOCD_BINARY_NAME", component)
                .env("KUBECONFIG", cluster.kubeconfig())
                .env("ARGOCD_FAKE_IN_CLUSTER", "true")
                .env("ARGOCD_GPG_ENABLED", "false")
                .env("ARGOCD_TLS_DATA_PATH", work.join("tls"))
                .env("ARGOCD_SSH_DATA_PATH", work.join("ssh"))
                .env("ARGOCD_ASK_PASS_SOCK", work.join("askpass.sock"))
                .env("HOME", &home)
                .env("TMPDIR", &tmp)
                .env("PATH", &path)
                .args(["--logformat", "text", "--loglevel", "info", "--redis"])
                .arg(redis_addr.to_string());
            cmd
        };

        let repo_addr = free_addr();
        let repo_metrics = free_addr();
        let mut repo_cmd = argo("argocd-repo-server");
        repo_cmd
            .args(["--address", "127.0.0.1", "--port"])
            .arg(repo_addr.port().to_string())
            .args(["--metrics-address", "127.0.0.1", "--metrics-port"])
            .arg(repo_metrics.port().to_string())
            .arg("--disable-tls");
        let mut repo_server = Process::spawn(
            plane,
            "argocd-repo-server",
            repo_cmd,
            log_dir.join("repo-server.log"),
        )?;

        // The controller's metrics server binds 0.0.0.0 (no address flag); the port is free.
        let controller_metrics = free_addr();
        let mut controller_cmd = argo("argocd-application-controller");
        controller_cmd
            .arg("--namespace")
            .arg(namespace)
            .arg("--repo-server")
            .arg(repo_addr.to_string())
            .arg("--repo-server-plaintext")
            .arg("--metrics-port")
            .arg(controller_metrics.port().to_string());
        let mut controller = Process::spawn(
            plane,
            "argocd-application-controller",
            controller_cmd,
            log_dir.join("application-controller.log"),
        )?;

        wait_tcp(&mut redis, redis_addr).await?;
        wait_healthz(&mut repo_server, repo_metrics).await?;
        wait_healthz(&mut controller, controller_metrics).await?;
        eprintln!(
            "pullwarden-e2e: Argo CD up in {:.1}s (namespace {namespace}, logs in {})",
            started.elapsed().as_secs_f64(),
            log_dir.display()
        );
        Ok(ArgoCd {
            namespace: namespace.to_owned(),
            controller,
            repo_server,
            _redis: redis,
            log_dir,
            _tmp: tmp_dir,
            config,
        })
    }

    /// Argo CD's control-plane namespace (Applications and AppProjects live here).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Gives Argo CD HTTP credentials for a git repository (a repository Secret, as
    /// `argocd repo add` writes it).
    pub async fn add_git_credentials(
        &self,
        url: &str,
        username: &str,
        password: &str,
    ) -> Result<()> {
        let client = kube::Client::try_from(self.config.clone())?;
        let secrets: Api<Secret> = Api::namespaced(client, &self.namespace);
        let name = format!("repo-{:x}", fnv(url));
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {
                PART_OF.0: PART_OF.1,
                "argocd.argoproj.io/secret-type": "repository",
            }},
            "stringData": {"type": "git", "url": url, "username": username, "password": password},
        }))?;
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .with_context(|| format!("creating the Argo CD repository Secret for {url}"))?;
        Ok(())
    }

    /// The last `lines` lines of the application controller's log.
    pub fn controller_log_tail(&self, lines: usize) -> String {
        log_tail(&self.controller.log, lines)
    }

    /// The last `lines` lines of the repo-server's log.
    pub fn repo_server_log_tail(&self, lines: usize) -> String {
        log_tail(&self.repo_server.log, lines)
    }

    /// Where the logs of this Argo CD are written.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }
}

/// A stable short name for a URL (Secret names cannot hold one).
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The minimal settings the controller reads: `argocd-cm` (defaults) and `argocd-secret` (the
/// server signature key it insists on), both labelled for Argo CD's informers.
async fn write_settings(client: &kube::Client, namespace: &str) -> Result<()> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "argocd-cm", "labels": {PART_OF.0: PART_OF.1}},
        "data": {},
    }))?;
    cms.create(&PostParams::default(), &cm)
        .await
        .with_context(|| format!("creating {namespace}/argocd-cm"))?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut key = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut key)?;
    let key: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "argocd-secret", "labels": {PART_OF.0: PART_OF.1}},
        "stringData": {"server.secretkey": key},
    }))?;
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .with_context(|| format!("creating {namespace}/argocd-secret"))?;
    Ok(())
}

/// Fresh work and log directories. On a plane this process started: the work directory (clones,
/// redis, the askpass socket) is the plane's `argocd-<n>/` and goes with it, the logs are in the
/// plane's `logs/argocd-<n>/`, which `cluster-down` keeps. Otherwise both live in a temporary
/// directory removed on drop.
fn run_dirs(cluster: &Cluster) -> Result<(PathBuf, PathBuf, Option<tempfile::TempDir>)> {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (work, log_dir, tmp) = match cluster.state_dir() {
        Some(state) => (
            state.join(format!("argocd-{n}")),
            state.join("logs").join(format!("argocd-{n}")),
            None,
        ),
        None => {
            let t = tempfile::Builder::new()
                .prefix("pullwarden-argocd-")
                .tempdir()?;
            (t.path().to_path_buf(), t.path().join("log"), Some(t))
        }
    };
    for d in [&work, &log_dir] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    Ok((work, log_dir, tmp))
}

async fn wait_tcp(process: &mut Process, addr: SocketAddr) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        process.check_alive()?;
        if Instant::now() >= deadline {
            bail!(
                "{} not listening on {addr} after {START_TIMEOUT:?}; log tail:\n{}",
                process.name,
                log_tail(&process.log, 40)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_healthz(process: &mut Process, metrics: SocketAddr) -> Result<()> {
    let url = format!("http://{metrics}/healthz");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let last = match http.get(&url).timeout(Duration::from_secs(2)).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => format!("HTTP {}", r.status()),
            Err(e) => e.to_string(),
        };
        process.check_alive()?;
        if Instant::now() >= deadline {
            bail!(
                "{} {url} not OK after {START_TIMEOUT:?} (last: {last}); log tail:\n{}",
                process.name,
                log_tail(&process.log, 40)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
