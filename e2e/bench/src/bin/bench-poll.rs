//! `bench-poll`: what polling N unchanged GitHub repositories through ONE credential costs.
//!
//! Flow:
//! 1. a control plane (`KUBECONFIG` when set, else a fresh one in a temp dir that dies with this
//!    process), the CRDs and a throwaway namespace;
//! 2. the forge emulator in this process with N repositories (main + 2–4 feature branches, 0–3
//!    open pull requests, fixed seed), one token for all of them (one quota bucket, GitHub's
//!    5000/hour by default), one Secret and N Repository objects (`interval`, `maxInterval`);
//! 3. one operator process (the real binary, least-privilege RBAC) watching that namespace; we
//!    time how long until every Repository is `Ready=True/Synced` and what that first sync cost;
//! 4. **first cycle**: request counts are reset and we wait until every Repository has polled
//!    again (its `lastSyncTime` moved past the reset), counting the emulator's requests per route
//!    and status (304s included), the token's quota, the operator's own forge metrics, the
//!    kube-apiserver's request counters and the operator's CPU time;
//! 5. **steady state** (unless `--skip-steady` or `maxInterval == interval`): we wait until
//!    every Repository's scheduled interval has backed off to `maxInterval` (±10% jitter), then
//!    measure one more full cycle the same way;
//! 6. one JSON object on stdout (progress goes to stderr), including what a client without
//!    conditional requests would have been charged for the very same requests.
//!
//! Polls are counted, not assumed: every poll reads `GET /repos/{owner}/{repo}` exactly once, so
//! that route's count is the number of polls in the window (cross-checked against the number of
//! `lastSyncTime` moves the watch saw), and "requests per repository per cycle" is requests
//! divided by polls, whatever the jitter did to the window.
//!
//! `Operator::start` takes the binary from `PULLWARDEN_BIN`; since the environment of a running
//! Rust 2024 program can only be changed with `unsafe`, the process re-executes itself once with
//! `PULLWARDEN_BIN` set to `--operator-bin` (default: `pullwarden` next to this executable).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use clap::Parser;
use futures::{StreamExt as _, TryStreamExt as _};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use pullwarden::api::Repository;
use pullwarden_bench::fixture::{self, RepoPlan};
use pullwarden_bench::procfs::{self, Memory, kib_to_mib, round1};
use pullwarden_bench::prom::{Scrape, delta};
use pullwarden_bench::rates::{Sampler, Series, delta_counts};
use pullwarden_bench::tracker::{RepoState, Tracker};
use pullwarden_bench::{Plane, go_duration, parse_duration, run_interruptible};
use pullwarden_emulator::{
    ClientCounts, Emulator, EmulatorConfig, EmulatorHandle, RequestCounts, TokenSpec,
};
use pullwarden_harness::cluster::{Cluster, TestNamespace, apply_crds, repo_root};
use pullwarden_harness::operator::{Operator, OperatorOptions};
use serde_json::{Value, json};

/// The one token every Repository uses.
const TOKEN: &str = "ghp_bench_poll_shared_token";
/// Route every poll reads exactly once (`Forge::default_branch`).
const POLL_ROUTE: &str = "GET /repos/{owner}/{repo}";
const SECRET_NAME: &str = "forge-token";
/// A second token, only for measuring response sizes at the end.
const INSPECTOR_TOKEN: &str = "ghp_bench_poll_inspector";
/// Repositories whose poll responses are fetched to measure body sizes.
const BODY_SAMPLE: usize = 50;
const FIELD_MANAGER: &str = "pullwarden.dev/bench-poll";

#[derive(Debug, Parser)]
#[command(
    name = "bench-poll",
    about = "Requests, quota and memory of polling N unchanged GitHub repositories with one token"
)]
struct Args {
    /// Repositories (and Repository objects) to create.
    #[arg(long, default_value_t = 1000)]
    repos: usize,
    /// `spec.interval` of every Repository (the CRD requires at least 10s).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    interval: Duration,
    /// `spec.maxInterval`: quiet repositories back off up to this.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    max_interval: Duration,
    /// Measure only the first cycle at `interval`, not the backed-off steady state (which takes
    /// about 2 × maxInterval to reach and one more maxInterval to measure).
    #[arg(long)]
    skip_steady: bool,
    /// Seed of the repository fixture.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Quota of the shared token per hour (GitHub: 5000).
    #[arg(long, default_value_t = 5000)]
    rate_limit: u32,
    /// The pullwarden binary [default: $PULLWARDEN_BIN, else `pullwarden` next to this
    /// executable, i.e. the debug build]. Use a release build for absolute memory/CPU figures.
    #[arg(long)]
    operator_bin: Option<PathBuf>,
    /// RUST_LOG of the operator (debug logs for every poll of 1000 repositories cost CPU).
    #[arg(long, default_value = "info")]
    operator_log: String,
    /// Extra environment of the operator process, e.g. `MALLOC_ARENA_MAX=2` (repeatable).
    #[arg(long = "operator-env", value_name = "KEY=VALUE", value_parser = parse_env)]
    operator_env: Vec<(String, String)>,
    /// Repositories created concurrently in the emulator.
    #[arg(long, default_value_t = 4)]
    setup_concurrency: usize,
    /// Give up when not every Repository is Synced after this long.
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    sync_timeout: Duration,
    /// Also write the JSON result to this file.
    #[arg(long)]
    output: Option<PathBuf>,
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.interval < Duration::from_secs(10) || args.max_interval < args.interval {
        eprintln!("bench-poll: need interval >= 10s and max-interval >= interval");
        return ExitCode::from(2);
    }
    let bin = match operator_bin(&args) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("bench-poll: {e:#}");
            return ExitCode::from(2);
        }
    };
    if std::env::var_os("PULLWARDEN_BIN").as_deref() != Some(bin.as_os_str()) {
        return reexec_with(&bin);
    }
    warn_if_stale(&bin);
    pullwarden_bench::report(
        "bench-poll",
        args.output.as_deref(),
        run_outside(&args, &bin),
    )
}

/// `--operator-bin`, else `PULLWARDEN_BIN`, else `pullwarden` next to this executable.
fn operator_bin(args: &Args) -> Result<PathBuf> {
    let path = match (&args.operator_bin, std::env::var_os("PULLWARDEN_BIN")) {
        (Some(p), _) => p.clone(),
        (None, Some(p)) => PathBuf::from(p),
        (None, None) => std::env::current_exe()?
            .parent()
            .ok_or_else(|| anyhow!("this executable has no directory"))?
            .join("pullwarden"),
    };
    path.canonicalize().with_context(|| {
        format!(
            "operator binary {} not found: run `cargo build -p pullwarden` or pass --operator-bin",
            path.display()
        )
    })
}

/// Says so when `bin` is older than the operator's sources (a forgotten rebuild).
fn warn_if_stale(bin: &Path) {
    if let (Ok(bin_time), Some(src_time)) = (
        bin.metadata().and_then(|m| m.modified()),
        newest_mtime(&repo_root().join("operator/src")),
    ) && src_time > bin_time
    {
        eprintln!(
            "bench-poll: warning: {} is older than operator/src (rebuild with `cargo build -p pullwarden`)",
            bin.display()
        );
    }
}

fn newest_mtime(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest_mtime(&path)
        } else {
            entry.metadata().ok()?.modified().ok()
        };
        newest = newest.max(t);
    }
    newest
}

/// Runs this program again with `PULLWARDEN_BIN=bin` and returns its exit code.
fn reexec_with(bin: &Path) -> ExitCode {
    let status = std::env::current_exe().and_then(|exe| {
        std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env("PULLWARDEN_BIN", bin)
            .status()
    });
    match status {
        Ok(s) => ExitCode::from(u8::try_from(s.code().unwrap_or(1)).unwrap_or(1)),
        Err(e) => {
            eprintln!("bench-poll: re-executing with PULLWARDEN_BIN set: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Starts or adopts the cluster, runs the benchmark, stops what it started however `run` ended.
fn run_outside(args: &Args, bin: &Path) -> Result<Value> {
    let plane = Plane::start("bench-poll")?;
    run_interruptible(run(plane.cluster(), args, bin))
}

/// Everything a measurement window reads at its start and end.
struct Probe {
    at: Instant,
    /// The measured token's cumulative request counts.
    counts: ClientCounts,
    wall: Timestamp,
    quota: Quota,
    operator: Scrape,
    apiserver: Option<Scrape>,
    operator_cpu_s: Option<f64>,
    /// CPU seconds of the control plane's processes (when we started it).
    plane_cpu_s: BTreeMap<&'static str, f64>,
    bench_cpu_s: Option<f64>,
    memory: Option<Memory>,
    syncs_seen: u64,
}

/// The token's bucket as the emulator reports it.
#[derive(Clone, Copy, Debug, serde::Deserialize)]
struct Quota {
    limit: u64,
    remaining: u64,
    reset: i64,
}

/// What one measurement needs.
struct Bench<'a> {
    args: &'a Args,
    /// kube-apiserver and etcd, when this process started the plane.
    plane_pids: Vec<(&'static str, u32)>,
    emu: &'a EmulatorHandle,
    op: &'a Operator,
    pid: u32,
    kube: Client,
    tracker: &'a Tracker,
}

async fn run(cluster: &Cluster, args: &Args, bin: &Path) -> Result<Value> {
    let machine = procfs::machine();
    let client = cluster.client().await?;
    apply_crds(&client).await?;
    let ns = TestNamespace::new(cluster, "bench-poll").await?;
    let namespace = ns.name().to_owned();
    eprintln!("bench-poll: namespace {namespace}");

    let emu = Emulator::start(EmulatorConfig {
        default_rate_limit: args.rate_limit,
        ..EmulatorConfig::default()
    })
    .await?;
    emu.add_token(TokenSpec {
        token: TOKEN.into(),
        login: "pullwarden-bot".into(),
        rate_limit: Some(args.rate_limit),
        ..TokenSpec::default()
    })
    .await?;
    let plans = fixture::plan(args.repos, args.seed);
    eprintln!(
        "bench-poll: creating {} repositories in the emulator",
        plans.len()
    );
    let fixture = fixture::create(&emu, &plans, args.seed, args.setup_concurrency).await?;

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": SECRET_NAME, "labels": {"pullwarden.dev/credentials": "true"}},
        "stringData": {"token": TOKEN}
    }))?;
    secrets.create(&PostParams::default(), &secret).await?;
    let repos_api: Api<Repository> = Api::namespaced(client.clone(), &namespace);
    let tracker = Tracker::start(repos_api.clone());
    let create_s = create_repositories(&repos_api, &plans, &emu, args).await?;

    emu.reset_request_counts().await?;
    let sampler = Sampler::start(emu.admin().clone(), TOKEN.to_owned());
    let quota_start = quota(&emu).await?;
    let op_started = Instant::now();
    let op = Operator::start(
        cluster,
        OperatorOptions {
            namespace: Some(namespace.clone()),
            env: std::iter::once(("RUST_LOG".to_owned(), args.operator_log.clone()))
                .chain(args.operator_env.iter().cloned())
                .collect(),
            ..OperatorOptions::default()
        },
    )
    .await?;
    let pid = op.pid().context("the operator has no pid")?;
    let memory_at_start = procfs::memory(pid);
    op.wait_ready(Duration::from_secs(120)).await?;
    let ready_s = op_started.elapsed().as_secs_f64();
    eprintln!(
        "bench-poll: operator pid {pid} ready after {ready_s:.1}s (log: {})",
        op.log_path.display()
    );

    let bench = Bench {
        plane_pids: plane_pids(cluster),
        args,
        emu: &emu,
        op: &op,
        pid,
        kube: client.clone(),
        tracker: &tracker,
    };
    let (synced_s, first_synced_s) = bench.wait_all_synced(op_started).await?;
    let initial_counts = emu.request_counts().await?;
    let quota_after_sync = quota(&emu).await?;
    let memory_after_sync = procfs::memory(pid);
    let initial = token_counts(&initial_counts);
    eprintln!(
        "bench-poll: all {} Synced {synced_s:.1}s after the operator started ({} requests, {} quota)",
        args.repos,
        initial.total,
        quota_start
            .remaining
            .saturating_sub(quota_after_sync.remaining)
    );

    let first = bench.measure("first cycle").await?;
    let steady = if args.skip_steady || args.max_interval == args.interval {
        None
    } else {
        bench.wait_backed_off().await?;
        Some(bench.measure("steady state").await?)
    };

    // Let the sampler take one reading after the last window.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let series = sampler.series();
    let cold_end = first.end.at;
    let rates = json!({
        "about": "Most requests to one endpoint (route template) within any 60 s, and within any \
                  1 s, as sampled once a second. GitHub documents a secondary limit of 900 \
                  points per minute per REST endpoint (a GET is 1 point) and 100 concurrent \
                  requests; whether 304s count there is not documented, so all requests count.",
        "cold_start": peaks(&series, op_started, cold_end),
        "steady": steady.as_ref().map(|s| peaks(&series, s.start.at, s.end.at)),
    });
    let end_memory = procfs::memory(pid);
    let op_total = Scrape::parse(&op.metrics().await?);
    let bodies = sample_bodies(&emu, &plans).await?;
    let n = args.repos as f64;
    let first_json = first.to_json(args);
    let steady_json = steady.as_ref().map(|s| s.to_json(args));
    let limit = quota_start.limit as f64;
    let rpp = first.requests_per_poll();
    let naive_per_s = n * rpp / args.interval.as_secs_f64();
    let comparison = json!({
        "about": "A client without conditional requests sends the same requests per poll and is \
                  charged for every one of them; 'fixed_interval' also assumes no adaptive back-off. \
                  Projections multiply measured requests per poll by N and the schedule.",
        "quota_limit_per_hour": quota_start.limit,
        "first_cycle": {
            "pullwarden_quota_spent": first.quota_spent(),
            "naive_quota_spent": first.counts.total,
            "quota_x_cheaper": ratio(first.counts.total as f64, first.quota_spent() as f64),
        },
        "steady_state": steady.as_ref().map(|s| json!({
            "pullwarden_quota_per_hour": round1(s.quota_spent() as f64 / s.window_s() * 3600.0),
            "naive_same_schedule_quota_per_hour": round1(s.counts.total as f64 / s.window_s() * 3600.0),
            "quota_x_cheaper": ratio(s.counts.total as f64, s.quota_spent() as f64),
        })),
        "naive_fixed_interval": {
            "requests_per_poll": round2(rpp),
            "quota_per_hour": (naive_per_s * 3600.0).round(),
            "x_over_hourly_limit": round1(naive_per_s * 3600.0 / limit),
            "budget_exhausted_after_s": if naive_per_s > 0.0 { Some(round1(limit / naive_per_s)) } else { None },
        },
    });

    let shown = bin.display().to_string();
    let profile = if shown.contains("release") {
        "release"
    } else if shown.contains("debug") {
        "debug"
    } else {
        "unknown"
    };
    let mem = |m: Option<Memory>| m.map(|m| m.rss_mib());
    let rss_per_repo_kib = match (memory_at_start, end_memory) {
        (Some(a), Some(b)) if args.repos > 0 => Some(round1(
            (b.rss_kib as f64 - a.rss_kib as f64) / args.repos as f64,
        )),
        _ => None,
    };
    let forge_total = op_total.sum_by("pullwarden_forge_requests_total", &[], &["status"]);
    let conditional_total = op_total.sum_by(
        "pullwarden_forge_conditional_requests_total",
        &[],
        &["result"],
    );
    let errors_total = op_total.sum_by(
        "pullwarden_reconcile_errors_total",
        &[("kind", "Repository")],
        &["category"],
    );

    Ok(json!({
        "benchmark": "poll",
        "repositories": args.repos,
        "interval_s": args.interval.as_secs(),
        "max_interval_s": args.max_interval.as_secs(),
        "credentials": 1,
        "fixture": fixture,
        "repository_objects_created_s": round1(create_s),
        "operator_ready_s": round1(ready_s),
        "time_to_first_synced_s": round1(first_synced_s),
        "time_to_all_synced_s": round1(synced_s),
        "initial_sync": {
            "requests": initial.total,
            "not_modified": initial.not_modified,
            "quota_spent": quota_start.remaining.saturating_sub(quota_after_sync.remaining),
            "quota_remaining": quota_after_sync.remaining,
            "by_route": initial.routes,
        },
        "cycle": first_json,
        "steady": steady_json,
        "naive_comparison": comparison,
        "response_bodies": bodies,
        "request_rates": rates,
        "operator": {
            "binary": bin.display().to_string(),
            "profile": profile,
            "extra_env": args.operator_env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            "rss_mib_at_start": mem(memory_at_start),
            "rss_mib_after_initial_sync": mem(memory_after_sync),
            "rss_mib": mem(end_memory),
            "peak_rss_mib": end_memory.map(|m| m.hwm_mib()),
            "rss_kib_per_repository": rss_per_repo_kib,
            "cpu_s_total": procfs::cpu_seconds(pid).map(round1),
            "forge_requests_total_by_status": forge_total,
            "conditional_requests_total": conditional_total,
            "repository_reconcile_errors_total": errors_total,
        },
        "machine": machine,
    }))
}

/// Server-side applies one Repository per plan, 32 at a time. Returns the seconds it took.
async fn create_repositories(
    api: &Api<Repository>,
    plans: &[RepoPlan],
    emu: &EmulatorHandle,
    args: &Args,
) -> Result<f64> {
    let started = Instant::now();
    let params = PatchParams::apply(FIELD_MANAGER);
    let interval = go_duration(args.interval);
    let max_interval = go_duration(args.max_interval);
    futures::stream::iter(plans)
        .map(|p| {
            let body = json!({
                "apiVersion": "pullwarden.dev/v1alpha1", "kind": "Repository",
                "metadata": {"name": p.name, "labels": {"pullwarden.dev/bench": "poll"}},
                "spec": {
                    "provider": "github",
                    "url": emu.clone_url(&p.path),
                    "apiUrl": emu.github_api_url(),
                    "allowInsecureHTTP": true,
                    "auth": {"secretRef": {"name": SECRET_NAME}},
                    "interval": interval,
                    "maxInterval": max_interval,
                }
            });
            let params = &params;
            async move {
                api.patch(&p.name, params, &Patch::Apply(&body))
                    .await
                    .with_context(|| format!("applying Repository {}", p.name))
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    let s = started.elapsed().as_secs_f64();
    eprintln!(
        "bench-poll: {} Repository objects applied in {s:.1}s",
        plans.len()
    );
    Ok(s)
}

async fn quota(emu: &EmulatorHandle) -> Result<Quota> {
    let url = format!("{}/_emulator/rate-limits/{TOKEN}", emu.url());
    Ok(reqwest::get(&url)
        .await?
        .error_for_status()?
        .json::<Quota>()
        .await?)
}

/// Peak requests per endpoint within 60 s and within 1 s, between `from` and `to`.
fn peaks(series: &Series, from: Instant, to: Instant) -> Value {
    let per_minute = series.peak_per_window(from, to, Duration::from_secs(60));
    let per_second = series.peak_per_window(from, to, Duration::from_secs(1));
    json!({
        "window_s": round1(to.duration_since(from).as_secs_f64()),
        "max_per_minute_one_endpoint": per_minute.values().max(),
        "max_per_second_one_endpoint": per_second.values().max(),
        "per_minute_by_endpoint": per_minute,
    })
}

/// Sizes of the bodies one poll reads, fetched for a sample of repositories with a separate
/// token (so the measured token's counts stay clean): what the operator's ETag cache must hold per
/// repository for its 304s to keep working.
async fn sample_bodies(emu: &EmulatorHandle, plans: &[RepoPlan]) -> Result<Value> {
    emu.add_token(TokenSpec {
        token: INSPECTOR_TOKEN.into(),
        login: "bench-inspector".into(),
        rate_limit: Some(1_000_000),
        ..TokenSpec::default()
    })
    .await?;
    let http = reqwest::Client::new();
    let api = emu.github_api_url();
    let sample: Vec<&RepoPlan> = plans.iter().take(BODY_SAMPLE).collect();
    let mut bytes = 0usize;
    for p in &sample {
        for path in [
            String::new(),
            "/branches?per_page=100".to_owned(),
            "/pulls?state=open&sort=created&direction=asc&per_page=100".to_owned(),
        ] {
            let body = http
                .get(format!("{api}/repos/{}{path}", p.path))
                .header("authorization", format!("token {INSPECTOR_TOKEN}"))
                .send()
                .await?
                .error_for_status()?
                .bytes()
                .await?;
            bytes += body.len();
        }
    }
    let per_repo = if sample.is_empty() {
        0.0
    } else {
        bytes as f64 / sample.len() as f64
    };
    Ok(json!({
        "sampled_repositories": sample.len(),
        "urls_per_repository": 3,
        "bytes_per_repository": per_repo.round(),
        "all_repositories_mib": round1(per_repo * plans.len() as f64 / 1_048_576.0),
    }))
}

/// Pids of kube-apiserver and etcd from the plane's pid files ("PID STARTTIME"), when this
/// process started the plane.
fn plane_pids(cluster: &Cluster) -> Vec<(&'static str, u32)> {
    let Some(dir) = cluster.state_dir() else {
        return Vec::new();
    };
    ["kube-apiserver", "etcd"]
        .into_iter()
        .filter_map(|name| {
            let text =
                std::fs::read_to_string(dir.join("pids").join(format!("{name}.pid"))).ok()?;
            Some((name, text.split_whitespace().next()?.parse().ok()?))
        })
        .collect()
}

fn token_counts(counts: &RequestCounts) -> ClientCounts {
    counts.clients.get(TOKEN).cloned().unwrap_or_default()
}

impl Bench<'_> {
    /// Waits until every Repository is Ready=True/Synced. Returns (all, first) in seconds since
    /// `since`.
    async fn wait_all_synced(&self, since: Instant) -> Result<(f64, f64)> {
        let n = self.args.repos;
        let mut first = None;
        let mut last_report = Instant::now();
        loop {
            let s = self.tracker.summary();
            if first.is_none() && s.synced > 0 {
                first = Some(since.elapsed().as_secs_f64());
            }
            if s.synced >= n {
                return Ok((since.elapsed().as_secs_f64(), first.unwrap_or_default()));
            }
            self.check_alive()?;
            if since.elapsed() > self.args.sync_timeout {
                bail!(
                    "only {}/{n} Repositories Synced after {:?} (Ready status/reason: {:?}); operator log tail:\n{}",
                    s.synced,
                    self.args.sync_timeout,
                    s.reasons,
                    self.op.log_tail(40)
                );
            }
            if last_report.elapsed() >= Duration::from_secs(10) {
                last_report = Instant::now();
                eprintln!(
                    "bench-poll: {:>4.0}s: {}/{n} Synced {:?}; operator RSS {} MiB",
                    since.elapsed().as_secs_f64(),
                    s.synced,
                    s.reasons,
                    procfs::memory(self.pid).map_or(0.0, |m| m.rss_mib())
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until every Repository's scheduled interval is within the jitter of `maxInterval`.
    async fn wait_backed_off(&self) -> Result<()> {
        let max = self.args.max_interval.as_secs_f64();
        // ±10% jitter, and both timestamps are truncated to whole seconds.
        let threshold = max * 0.9 - 1.5;
        let started = Instant::now();
        let timeout = self.args.max_interval * 3 + Duration::from_secs(300);
        let mut last_report = Instant::now() - Duration::from_secs(60);
        eprintln!(
            "bench-poll: waiting for every Repository to back off to maxInterval ({max:.0}s ±10%)"
        );
        loop {
            let snap = self.tracker.snapshot();
            let mut intervals: Vec<f64> = snap
                .values()
                .filter_map(RepoState::scheduled_interval_s)
                .collect();
            intervals.sort_by(f64::total_cmp);
            let backed_off = intervals.iter().filter(|i| **i >= threshold).count();
            if backed_off >= self.args.repos {
                eprintln!(
                    "bench-poll: backed off after {:.0}s",
                    started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            self.check_alive()?;
            if started.elapsed() > timeout {
                bail!(
                    "only {backed_off}/{} Repositories backed off to ~{max:.0}s after {timeout:?}",
                    self.args.repos
                );
            }
            if last_report.elapsed() >= Duration::from_secs(30) {
                last_report = Instant::now();
                eprintln!(
                    "bench-poll: {:>4.0}s: {backed_off}/{} at maxInterval; scheduled intervals min/median/max {:.0}/{:.0}/{:.0}s",
                    started.elapsed().as_secs_f64(),
                    self.args.repos,
                    intervals.first().copied().unwrap_or_default(),
                    intervals
                        .get(intervals.len() / 2)
                        .copied()
                        .unwrap_or_default(),
                    intervals.last().copied().unwrap_or_default(),
                );
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    fn check_alive(&self) -> Result<()> {
        if procfs::memory(self.pid).is_none() {
            bail!(
                "the operator (pid {}) exited; log tail:\n{}",
                self.pid,
                self.op.log_tail(60)
            );
        }
        Ok(())
    }

    async fn probe(&self) -> Result<Probe> {
        let apiserver = match self
            .kube
            .request_text(http::Request::get("/metrics").body(Vec::new())?)
            .await
        {
            Ok(text) => Some(Scrape::parse(&text)),
            Err(e) => {
                eprintln!("bench-poll: kube-apiserver /metrics unavailable: {e}");
                None
            }
        };
        let counts = token_counts(&self.emu.request_counts().await?);
        Ok(Probe {
            counts,
            at: Instant::now(),
            wall: Timestamp::now(),
            quota: quota(self.emu).await?,
            operator: Scrape::parse(&self.op.metrics().await?),
            apiserver,
            operator_cpu_s: procfs::cpu_seconds(self.pid),
            plane_cpu_s: self
                .plane_pids
                .iter()
                .filter_map(|(name, pid)| Some((*name, procfs::cpu_seconds(*pid)?)))
                .collect(),
            bench_cpu_s: procfs::cpu_seconds(std::process::id()),
            memory: procfs::memory(self.pid),
            syncs_seen: self.tracker.summary().syncs,
        })
    }

    /// Reads everything, waits until every Repository has completed a poll after that, and
    /// reads everything again (the counts are cumulative; the phase reports the difference).
    async fn measure(&self, label: &str) -> Result<Phase> {
        let start = self.probe().await?;
        // lastSyncTime has whole seconds: a poll stamped at or after the next second surely
        // finished after the reset.
        let cutoff = Timestamp::from_second(start.wall.as_second() + 1)?;
        let deadline = self.args.max_interval.mul_f64(1.2) + Duration::from_secs(120);
        eprintln!("bench-poll: measuring the {label}: until every Repository polled once more");
        let mut last_report = Instant::now();
        let intervals = loop {
            let snap = self.tracker.snapshot();
            let pending = snap
                .values()
                .filter(|r| r.last_sync.is_none_or(|t| t < cutoff))
                .count();
            if pending == 0 && snap.len() >= self.args.repos {
                let mut v: Vec<f64> = snap
                    .values()
                    .filter_map(RepoState::scheduled_interval_s)
                    .collect();
                v.sort_by(f64::total_cmp);
                break v;
            }
            self.check_alive()?;
            if start.at.elapsed() > deadline {
                bail!(
                    "{pending} Repositories did not poll within {deadline:?} of the {label} start"
                );
            }
            if last_report.elapsed() >= Duration::from_secs(15) {
                last_report = Instant::now();
                eprintln!(
                    "bench-poll: {:>4.0}s: {pending} Repositories still to poll",
                    start.at.elapsed().as_secs_f64()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let end = self.probe().await?;
        let counts = delta_counts(&start.counts, &end.counts);
        let phase = Phase {
            label: label.to_owned(),
            counts,
            start,
            end,
            scheduled_intervals: intervals,
            n: self.args.repos,
        };
        eprintln!(
            "bench-poll: {label}: {:.1}s, {} polls, {} requests ({} not modified), {} quota",
            phase.window_s(),
            phase.polls(),
            phase.counts.total,
            phase.counts.not_modified,
            phase.quota_spent()
        );
        Ok(phase)
    }
}

/// One measurement window.
struct Phase {
    label: String,
    counts: ClientCounts,
    start: Probe,
    end: Probe,
    /// Scheduled intervals (nextSyncTime − lastSyncTime) of all Repositories at the end, sorted.
    scheduled_intervals: Vec<f64>,
    n: usize,
}

impl Phase {
    fn window_s(&self) -> f64 {
        self.end.at.duration_since(self.start.at).as_secs_f64()
    }

    fn polls(&self) -> u64 {
        self.counts
            .routes
            .get(POLL_ROUTE)
            .map_or(0, |s| s.values().sum())
    }

    fn requests_per_poll(&self) -> f64 {
        if self.polls() == 0 {
            0.0
        } else {
            self.counts.total as f64 / self.polls() as f64
        }
    }

    /// Requests GitHub charges for: everything but 304s and the free `GET /rate_limit`.
    fn quota_spent(&self) -> u64 {
        let free: u64 = self
            .counts
            .routes
            .iter()
            .filter(|(route, _)| route.ends_with("/rate_limit"))
            .flat_map(|(_, s)| s.values())
            .sum();
        self.counts
            .total
            .saturating_sub(self.counts.not_modified)
            .saturating_sub(free)
    }

    /// Quota spent according to the bucket (x-ratelimit-remaining), unless the window reset.
    fn quota_spent_by_bucket(&self) -> Option<u64> {
        (self.start.quota.reset == self.end.quota.reset).then(|| {
            self.start
                .quota
                .remaining
                .saturating_sub(self.end.quota.remaining)
        })
    }

    fn to_json(&self, args: &Args) -> Value {
        let w = self.window_s();
        let requests = self.counts.total;
        let polls = self.polls();
        let op = |name: &str, filter: &[(&str, &str)], keys: &[&str]| {
            delta(
                &self.start.operator.sum_by(name, filter, keys),
                &self.end.operator.sum_by(name, filter, keys),
            )
        };
        let forge = op("pullwarden_forge_requests_total", &[], &["status"]);
        let conditional = op(
            "pullwarden_forge_conditional_requests_total",
            &[],
            &["result"],
        );
        let reconciles = op(
            "pullwarden_reconciles_total",
            &[("kind", "Repository")],
            &["kind"],
        );
        let errors = op(
            "pullwarden_reconcile_errors_total",
            &[("kind", "Repository")],
            &["category"],
        );
        let dur_sum = op(
            "pullwarden_reconcile_duration_seconds_sum",
            &[("kind", "Repository")],
            &["kind"],
        );
        let dur_count = op(
            "pullwarden_reconcile_duration_seconds_count",
            &[("kind", "Repository")],
            &["kind"],
        );
        let mean_reconcile_ms = match (dur_sum.values().next(), dur_count.values().next()) {
            (Some(s), Some(c)) if *c > 0.0 => Some(round1(s / c * 1000.0)),
            _ => None,
        };
        let kube_api = match (&self.start.apiserver, &self.end.apiserver) {
            (Some(a), Some(b)) => {
                let mut out = BTreeMap::new();
                for resource in ["repositories", "secrets", "events", "previewenvironments"] {
                    let f = [("resource", resource)];
                    let keys = ["verb", "resource", "subresource"];
                    out.extend(delta(
                        &a.sum_by("apiserver_request_total", &f, &keys),
                        &b.sum_by("apiserver_request_total", &f, &keys),
                    ));
                }
                Some(out)
            }
            _ => None,
        };
        let cpu = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if w > 0.0 => Some(json!({
                "cpu_s": round2(b - a),
                "cores": round2((b - a) / w),
            })),
            _ => None,
        };
        let quantile = |q: f64| {
            let v = &self.scheduled_intervals;
            (!v.is_empty()).then(|| {
                let i = ((v.len() - 1) as f64 * q).round() as usize;
                round1(v[i])
            })
        };
        json!({
            "phase": self.label,
            "window_s": round1(w),
            "polls": polls,
            "polls_seen_in_status": self.end.syncs_seen - self.start.syncs_seen,
            "polls_per_repo": round2(polls as f64 / self.n as f64),
            "requests": requests,
            "requests_per_repo_per_cycle": round2(self.requests_per_poll()),
            "requests_per_s": round2(if w > 0.0 { requests as f64 / w } else { 0.0 }),
            "not_modified": self.counts.not_modified,
            "not_modified_ratio": round4(if requests > 0 { self.counts.not_modified as f64 / requests as f64 } else { 0.0 }),
            "quota_spent": self.quota_spent(),
            "quota_spent_x_ratelimit": self.quota_spent_by_bucket(),
            "quota_remaining": self.end.quota.remaining,
            "naive_quota_spent": requests,
            "by_route": self.counts.routes,
            "scheduled_interval_s": {
                "interval": args.interval.as_secs(),
                "max_interval": args.max_interval.as_secs(),
                "min": quantile(0.0), "median": quantile(0.5), "max": quantile(1.0),
            },
            "operator_metrics": {
                "forge_requests_by_status": forge,
                "conditional_requests": conditional,
                "repository_reconciles": reconciles.values().sum::<f64>(),
                "repository_reconcile_errors": errors,
                "mean_repository_reconcile_ms": mean_reconcile_ms,
            },
            "kube_api_requests": kube_api,
            "operator_cpu": cpu(self.start.operator_cpu_s, self.end.operator_cpu_s),
            "emulator_and_bench_cpu": cpu(self.start.bench_cpu_s, self.end.bench_cpu_s),
            "control_plane_cpu": self
                .start
                .plane_cpu_s
                .iter()
                .map(|(name, a)| (*name, cpu(Some(*a), self.end.plane_cpu_s.get(name).copied())))
                .collect::<BTreeMap<_, _>>(),
            "operator_rss_mib": self.end.memory.map(|m| kib_to_mib(m.rss_kib)),
        })
    }
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| round1(a / b))
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}
