//! A real Kubernetes control plane for tests, benchmarks and the demo.
//!
//! [`shared`] gives every test in a process the same [`Cluster`]. On first use it runs
//! `e2e/scripts/cluster-up.sh` (etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
//! kwok, built from the Kubernetes Go modules; no containers) in a fresh directory under the system
//! temp dir, passing `--owner-pid <this process>`: a detached watchdog then tears the plane down
//! once the test process is gone, however it ended (normal exit, panic, SIGKILL). Rust statics are
//! never dropped, so that watchdog is the teardown path, not a `Drop` impl.
//!
//! When `KUBECONFIG` is set, [`shared`] uses that cluster instead (kind, k3d, a real one, or a plane
//! started by hand with `cluster-up.sh`) and starts nothing.
//!
//! Each `#[tokio::test]` runs on its own runtime and a [`kube::Client`] is bound to the runtime
//! that created it, so [`Cluster::client`] builds a new client per call and [`shared`] is plain
//! synchronous code behind a [`OnceLock`].
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use pullwarden_harness::cluster::{self, TestNamespace};
//! let cluster = cluster::shared();
//! let client = cluster.client().await?;
//! let ns = TestNamespace::new(cluster, "my-test").await?;
//! // ... create objects in ns.name(), then wait_for(...) on them ...
//! # Ok(()) }
//! ```

use std::ffi::{OsStr, OsString};
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde::de::DeserializeOwned;
use serde::{Deserialize as _, Serialize};

/// Field manager for everything the harness applies server-side.
pub const FIELD_MANAGER: &str = "pullwarden.dev/e2e";
/// Label put on every [`TestNamespace`], so leftovers on a long-lived cluster are easy to find.
pub const TEST_NAMESPACE_LABEL: &str = "pullwarden.dev/test";

/// Said before starting, because a cold build of the binaries makes the first start very slow and
/// cargo test shows nothing else meanwhile.
const START_TIMEOUT_HINT: &str = "the first run builds Kubernetes from source and can take ~20 min";
const KUBECTL_TIMEOUT: Duration = Duration::from_secs(120);
const POLL_INTERVAL: Duration = Duration::from_millis(100);
const MAX_YAML_IN_ERRORS: usize = 4000;

/// A Kubernetes cluster the tests talk to: one this process started, or the one `KUBECONFIG`
/// names.
#[derive(Debug)]
pub struct Cluster {
    /// The value to use as `KUBECONFIG`: a single path for a plane we started, possibly a
    /// path list for an external cluster.
    kubeconfig: OsString,
    bin_dir: Option<PathBuf>,
    /// Set when this process started the plane (and cluster-down.sh may remove it).
    state_dir: Option<PathBuf>,
}

static SHARED: OnceLock<std::result::Result<Cluster, String>> = OnceLock::new();

/// The cluster shared by every test in this process, started on first use (see the module docs).
///
/// # Panics
/// If the control plane cannot be started; every later caller panics with the same message.
pub fn shared() -> &'static Cluster {
    try_shared().unwrap_or_else(|e| panic!("{e:#}"))
}

/// [`shared`], returning the start-up error instead of panicking.
pub fn try_shared() -> Result<&'static Cluster> {
    SHARED
        .get_or_init(|| init_shared().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow!("the shared test cluster is unavailable: {e}"))
}

fn init_shared() -> Result<Cluster> {
    if let Some(existing) = Cluster::from_env() {
        return Ok(existing);
    }
    // The script creates and later deletes this directory; keep() stops tempfile from racing it.
    let dir = tempfile::Builder::new()
        .prefix("pullwarden-e2e-")
        .tempdir()
        .context("creating the control plane's state directory")?
        .keep();
    Cluster::start(&dir, 1, Some(std::process::id()))
}

/// The repository checkout this crate lives in.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the harness crate lives at e2e/harness below the workspace root")
        .to_path_buf()
}

fn scripts_dir() -> PathBuf {
    repo_root().join("e2e/scripts")
}

impl Cluster {
    /// Starts a control plane in `dir` (created if missing; must be empty or hold an earlier
    /// plane) with `nodes` fake Nodes, by running `cluster-up.sh`. With `owner_pid`, the plane is
    /// torn down automatically once that process exits; otherwise call [`Cluster::stop`].
    pub fn start(dir: &Path, nodes: u32, owner_pid: Option<u32>) -> Result<Cluster> {
        Cluster::start_with_env(dir, nodes, owner_pid, &[])
    }

    /// [`Cluster::start`] with extra environment for `cluster-up.sh` (its opt-ins, e.g.
    /// `PULLWARDEN_AUDIT_USERS`).
    pub fn start_with_env(
        dir: &Path,
        nodes: u32,
        owner_pid: Option<u32>,
        env: &[(&str, &str)],
    ) -> Result<Cluster> {
        let script = scripts_dir().join("cluster-up.sh");
        let mut cmd = Command::new("bash");
        cmd.envs(env.iter().copied());
        cmd.arg(&script)
            .arg("--dir")
            .arg(dir)
            .arg("--nodes")
            .arg(nodes.to_string());
        if let Some(pid) = owner_pid {
            cmd.arg("--owner-pid").arg(pid.to_string());
        }
        // stderr carries progress (notably a long first build), so let it through live.
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let started = Instant::now();
        eprintln!(
            "pullwarden-e2e: starting a control plane in {} ({START_TIMEOUT_HINT})",
            dir.display()
        );
        let out = cmd.output();
        // When the script never got going (missing, not runnable), the directory it would own is
        // still empty and nobody else deletes it. `remove_dir` only removes an empty directory:
        // a plane that did start keeps its state for cluster-up's own cleanup.
        if !out.as_ref().is_ok_and(|o| o.status.success()) {
            let _ = std::fs::remove_dir(dir);
        }
        let out = out.with_context(|| format!("running {}", script.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "{} --dir {} failed ({}); its stderr above has the failing component's log tail \
                 and where all logs were saved. stdout:\n{stdout}",
                script.display(),
                dir.display(),
                out.status
            );
        }
        let kubeconfig = stdout
            .lines()
            .last()
            .and_then(|l| l.strip_prefix("export KUBECONFIG="))
            .ok_or_else(|| {
                anyhow!("cluster-up.sh printed no `export KUBECONFIG=` line:\n{stdout}")
            })?
            .to_owned();
        let state_dir = Path::new(&kubeconfig)
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| anyhow!("kubeconfig path {kubeconfig} has no parent"))?;
        let bin_dir = read_binpath(&state_dir)
            .with_context(|| format!("reading {}/binpath", state_dir.display()))?;
        eprintln!(
            "pullwarden-e2e: control plane up in {:.1}s, KUBECONFIG={kubeconfig}",
            started.elapsed().as_secs_f64()
        );
        Ok(Cluster {
            kubeconfig: kubeconfig.into(),
            bin_dir: Some(bin_dir),
            state_dir: Some(state_dir),
        })
    }

    /// The cluster named by `KUBECONFIG`, if set. The Kubernetes binaries are taken from a
    /// `binpath` file next to the kubeconfig (written by cluster-up.sh), else from
    /// `PULLWARDEN_K8S_BIN`, else `kubectl` is looked up on `PATH`.
    pub fn from_env() -> Option<Cluster> {
        let kubeconfig = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty())?;
        let mut paths = std::env::split_paths(&kubeconfig);
        let single = match (paths.next(), paths.next()) {
            (Some(p), None) => Some(p),
            _ => None,
        };
        let bin_dir = single
            .as_deref()
            .and_then(Path::parent)
            .and_then(|d| read_binpath(d).ok())
            .or_else(|| std::env::var_os("PULLWARDEN_K8S_BIN").map(PathBuf::from));
        Some(Cluster {
            kubeconfig,
            bin_dir,
            state_dir: None,
        })
    }

    /// The `KUBECONFIG` value for this cluster (a single path unless it came from a path list).
    pub fn kubeconfig(&self) -> &OsStr {
        &self.kubeconfig
    }

    /// Where etcd, kube-apiserver, kubectl, kwok etc. live, when known.
    pub fn bin_dir(&self) -> Option<&Path> {
        self.bin_dir.as_deref()
    }

    /// The plane's state directory (logs, pids, pki), when this process started it.
    pub fn state_dir(&self) -> Option<&Path> {
        self.state_dir.as_deref()
    }

    /// The kubectl matching the control plane's version, or `kubectl` from `PATH`.
    pub fn kubectl_path(&self) -> PathBuf {
        self.bin_dir
            .as_ref()
            .map_or_else(|| PathBuf::from("kubectl"), |d| d.join("kubectl"))
    }

    /// The client configuration for this cluster.
    pub async fn config(&self) -> Result<Config> {
        let mut merged: Option<Kubeconfig> = None;
        for path in std::env::split_paths(&self.kubeconfig).filter(|p| !p.as_os_str().is_empty()) {
            let next = Kubeconfig::read_from(&path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            merged = Some(match merged {
                None => next,
                Some(m) => m.merge(next)?,
            });
        }
        let kubeconfig = merged.ok_or_else(|| anyhow!("KUBECONFIG names no file"))?;
        Ok(Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?)
    }

    /// A new client, bound to the calling task's runtime.
    pub async fn client(&self) -> Result<Client> {
        Ok(Client::try_from(self.config().await?)?)
    }

    /// Runs kubectl against this cluster and returns its stdout; a non-zero exit is an error
    /// carrying stderr.
    pub async fn kubectl<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.kubectl_inner(args, None).await
    }

    /// [`Cluster::kubectl`] with `stdin` piped in, e.g. for `kubectl apply -f -`.
    pub async fn kubectl_with_stdin<I, S>(&self, args: I, stdin: &str) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.kubectl_inner(args, Some(stdin)).await
    }

    async fn kubectl_inner<I, S>(&self, args: I, stdin: Option<&str>) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        use tokio::io::AsyncWriteExt;

        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let shown = args
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        let mut child = tokio::process::Command::new(self.kubectl_path())
            .args(&args)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.kubectl_path().display()))?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes()).await?;
            // Dropping the pipe sends EOF; kubectl waits for it before doing anything.
            drop(pipe);
        }
        let out = tokio::time::timeout(KUBECTL_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| anyhow!("kubectl {shown} timed out after {KUBECTL_TIMEOUT:?}"))??;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "kubectl {shown} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                if stdout.is_empty() {
                    String::new()
                } else {
                    format!("\nstdout: {}", stdout.trim())
                }
            );
        }
        Ok(stdout)
    }

    /// Stops a plane this process started (runs cluster-down.sh, which keeps the logs in
    /// `~/.cache/pullwarden/cluster-logs/last`). A no-op for external clusters.
    pub fn stop(&self) -> Result<()> {
        let Some(dir) = &self.state_dir else {
            return Ok(());
        };
        let script = scripts_dir().join("cluster-down.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg("--dir")
            .arg(dir)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", script.display()))?;
        if !out.status.success() {
            bail!(
                "{} failed ({}): {}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

fn read_binpath(state_dir: &Path) -> Result<PathBuf> {
    let text = std::fs::read_to_string(state_dir.join("binpath"))?;
    Ok(PathBuf::from(text.trim()))
}

/// A throwaway namespace with a generated name, labelled `pullwarden.dev/test=true`, deleted
/// (best-effort, without waiting for it to disappear) when dropped.
#[derive(Debug)]
pub struct TestNamespace {
    name: String,
    config: Config,
}

impl TestNamespace {
    /// Creates a namespace named `<prefix>-<random>`; `prefix` is squashed into a valid name.
    pub async fn new(cluster: &Cluster, prefix: &str) -> Result<TestNamespace> {
        let config = cluster.config().await?;
        let api: Api<Namespace> = Api::all(Client::try_from(config.clone())?);
        let ns = Namespace {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}-", dns_label_prefix(prefix))),
                labels: Some([(TEST_NAMESPACE_LABEL.to_owned(), "true".to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        let created = api
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating a test namespace with prefix {prefix:?}"))?;
        let name = created
            .metadata
            .name
            .ok_or_else(|| anyhow!("the apiserver returned a namespace without a name"))?;
        Ok(TestNamespace { name, config })
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let name = std::mem::take(&mut self.name);
        let config = self.config.clone();
        // Drop often runs inside an async test, where blocking on the test's own runtime would
        // deadlock and its client may be unusable; a separate thread with its own runtime avoids
        // both. Joining makes sure the delete was sent before the test process can exit.
        let worker =
            std::thread::spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => return Err(anyhow!("building a runtime: {e}")),
                };
                runtime.block_on(async {
                    let api: Api<Namespace> = Api::all(Client::try_from(config)?);
                    let deleted = tokio::time::timeout(
                        Duration::from_secs(15),
                        api.delete(&name, &DeleteParams::background()),
                    )
                    .await
                    .map_err(|_| anyhow!("timed out deleting test namespace {name}"))?;
                    match deleted {
                        Ok(_) => Ok(()),
                        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                        Err(e) => Err(anyhow::Error::new(e)
                            .context(format!("deleting test namespace {name}"))),
                    }
                })
            });
        match worker.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("pullwarden-e2e: {e:#}"),
            Err(_) => eprintln!("pullwarden-e2e: the namespace cleanup thread panicked"),
        }
    }
}

/// Lowercase alphanumerics and '-', starting with a letter, at most 40 chars (leaving room for
/// the 5 random chars generateName appends, within the 63-char label limit).
fn dns_label_prefix(prefix: &str) -> String {
    let mut out = String::new();
    for c in prefix.chars() {
        let c = c.to_ascii_lowercase();
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if !(c == '-' && (out.is_empty() || out.ends_with('-'))) {
            out.push(c);
        }
        if out.len() >= 40 {
            break;
        }
    }
    let out = out.trim_end_matches('-');
    if out.starts_with(|c: char| c.is_ascii_lowercase()) {
        out.to_owned()
    } else {
        format!("t{out}").chars().take(40).collect()
    }
}

/// Server-side applies every CRD under the repository's `crds/` directory and waits until each
/// is `Established`. Returns the CRD names.
pub async fn apply_crds(client: &Client) -> Result<Vec<String>> {
    apply_crds_from(client, &repo_root().join("crds")).await
}

/// [`apply_crds`] for any directory of `*.yaml`/`*.yml` files holding only
/// CustomResourceDefinitions (several per file allowed).
pub async fn apply_crds_from(client: &Client, dir: &Path) -> Result<Vec<String>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading CRD directory {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    // kustomization.yaml lists the CRD files for kustomize; it is not itself a manifest.
    files.retain(|p| {
        matches!(p.extension().and_then(OsStr::to_str), Some("yaml" | "yml"))
            && p.file_name().and_then(OsStr::to_str) != Some("kustomization.yaml")
    });
    files.sort();

    let mut crds = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file)?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(doc)
                .with_context(|| format!("parsing {}", file.display()))?;
            if value.is_null() {
                continue;
            }
            let kind = value.get("kind").and_then(serde_yaml::Value::as_str);
            if kind != Some("CustomResourceDefinition") {
                bail!(
                    "{} holds a {} where only CustomResourceDefinitions are expected",
                    file.display(),
                    kind.unwrap_or("document without a kind")
                );
            }
            let crd: CustomResourceDefinition = serde_yaml::from_value(value)
                .with_context(|| format!("decoding a CRD in {}", file.display()))?;
            crds.push(crd);
        }
    }
    if crds.is_empty() {
        bail!("no CustomResourceDefinitions found in {}", dir.display());
    }

    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    // Force: a test run owns these objects, even if an earlier kubectl apply touched them.
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut names = Vec::new();
    for crd in &crds {
        let name = crd
            .metadata
            .name
            .clone()
            .ok_or_else(|| anyhow!("a CRD without metadata.name"))?;
        api.patch(&name, &params, &Patch::Apply(crd))
            .await
            .with_context(|| format!("applying CRD {name}"))?;
        names.push(name);
    }
    for name in &names {
        wait_for(
            &api,
            name,
            Duration::from_secs(60),
            &format!("CRD {name} to become Established"),
            |crd: &CustomResourceDefinition| {
                crd.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c.type_ == "Established" && c.status == "True")
                    })
            },
        )
        .await?;
    }
    Ok(names)
}

/// Polls `name` until `predicate` holds and returns that object. On timeout the error names
/// `description` and shows the last object seen (YAML, managedFields dropped, truncated), or says
/// it was never seen.
pub async fn wait_for<K, F>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    description: &str,
    mut predicate: F,
) -> Result<K>
where
    K: Clone + DeserializeOwned + Serialize + Debug,
    F: FnMut(&K) -> bool,
{
    let deadline = Instant::now() + timeout;
    let mut last: Option<K> = None;
    let mut gone_after_seen = false;
    loop {
        let last_error = match api.get_opt(name).await {
            Ok(Some(obj)) => {
                if predicate(&obj) {
                    return Ok(obj);
                }
                last = Some(obj);
                gone_after_seen = false;
                None
            }
            Ok(None) => {
                gone_after_seen = last.is_some();
                None
            }
            Err(e) => Some(e),
        };
        if Instant::now() >= deadline {
            let seen = match &last {
                None => "object never seen".to_owned(),
                Some(obj) => format!(
                    "last seen{}:\n{}",
                    if gone_after_seen {
                        " (since deleted)"
                    } else {
                        ""
                    },
                    to_short_yaml(obj)
                ),
            };
            let error = last_error
                .map(|e| format!("\nlast API error: {e}"))
                .unwrap_or_default();
            bail!("timed out after {timeout:?} waiting for {description} ({name}); {seen}{error}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Polls until `name` no longer exists. On timeout the error shows the object as last seen,
/// whose finalizers and conditions usually say what blocks the deletion.
pub async fn wait_until_gone<K>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    description: &str,
) -> Result<()>
where
    K: Clone + DeserializeOwned + Serialize + Debug,
{
    let deadline = Instant::now() + timeout;
    loop {
        let current = api.get_opt(name).await;
        match current {
            Ok(None) => return Ok(()),
            Ok(Some(obj)) if Instant::now() >= deadline => bail!(
                "timed out after {timeout:?} waiting for {description} ({name}); still there:\n{}",
                to_short_yaml(&obj)
            ),
            Err(e) if Instant::now() >= deadline => {
                bail!("timed out after {timeout:?} waiting for {description} ({name}): {e}")
            }
            _ => {}
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// YAML for error messages: without managedFields (noise) and cut at [`MAX_YAML_IN_ERRORS`].
pub fn to_short_yaml<T: Serialize>(obj: &T) -> String {
    let mut value = match serde_json::to_value(obj) {
        Ok(v) => v,
        Err(e) => return format!("<unserializable: {e}>"),
    };
    if let Some(meta) = value
        .get_mut("metadata")
        .and_then(serde_json::Value::as_object_mut)
    {
        meta.remove("managedFields");
    }
    let mut yaml =
        serde_yaml::to_string(&value).unwrap_or_else(|e| format!("<unserializable: {e}>"));
    if yaml.len() > MAX_YAML_IN_ERRORS {
        let mut cut = MAX_YAML_IN_ERRORS;
        while !yaml.is_char_boundary(cut) {
            cut -= 1;
        }
        yaml.truncate(cut);
        yaml.push_str("\n... (truncated)");
    }
    yaml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_become_valid_generate_names() {
        assert_eq!(
            dns_label_prefix("cluster_harness::GC"),
            "cluster-harness-gc"
        );
        assert_eq!(dns_label_prefix("9lives"), "t9lives");
        assert_eq!(dns_label_prefix("--"), "t");
        let long = dns_label_prefix(&"a".repeat(100));
        assert_eq!(long.len(), 40);
    }

    #[test]
    fn short_yaml_drops_managed_fields_and_truncates() {
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some("x".into()),
                annotations: Some([("big".to_owned(), "y".repeat(10_000))].into()),
                managed_fields: Some(vec![Default::default()]),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        let yaml = to_short_yaml(&ns);
        assert!(!yaml.contains("managedFields"), "{yaml}");
        assert!(yaml.ends_with("(truncated)"), "{yaml}");
        assert!(yaml.len() < MAX_YAML_IN_ERRORS + 100);
    }
}
