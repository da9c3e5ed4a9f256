//! `bench-health`: what probing many HealthChecks costs the operator, and how punctual the one
//! scheduler is.
//!
//! Flow: a control plane (`KUBECONFIG` when set, else a fresh one that dies with this process,
//! started with an audit log of the operator's requests), one loopback HTTP server in this
//! process answering any path `200 ok` at once and counting requests
//! ([`HttpTarget::many`]), one operator process (real binary, least-privilege RBAC, its own
//! namespace, `RUST_LOG=info`). Then:
//! 1. idle: the operator with no HealthCheck for `--idle`: its CPU and RSS baseline;
//! 2. `--checks` HealthChecks (`http://127.0.0.1:<port>/c/<i>`, `--interval`, the default
//!    thresholds) created `--create-concurrency` at a time, until every one is `OK`;
//! 3. `--warmup`, then the measured `--window`: operator CPU (`/proc/<pid>/stat`) and RSS
//!    (`/proc/<pid>/status`, sampled every second) above the idle baseline; probes per second
//!    (the server's counter); probe start delay p50/p99 (how late probes started against their
//!    schedule: the operator's `pullwarden_probe_start_delay_seconds` histogram, the window's
//!    bucket deltas); HealthCheck status writes per minute (the kube-apiserver audit log:
//!    the operator's `patch`/`update` of `healthchecks/status`, cross-checked with the
//!    operator's own `pullwarden_health_status_writes` counter).
//!
//! Prints one JSON object (progress on stderr). CPU and RSS are of a shared 2-core machine that
//! also runs the control plane and this process's HTTP server: read them with the machine facts
//! and `bench_cpu_cores` in the output. The goals of issue 13 are ≤ 0.25 cores and ≤ 64 MiB
//! above idle for 5,000 checks at a 10 s interval.

use anyhow::{Context as _, Result, anyhow, bail};
use clap::Parser;
use futures::StreamExt as _;
use jiff::Timestamp;
use kube::Api;
use kube::api::{ListParams, PostParams};
use pullwarden::api::{HealthCheck, HealthState};
use pullwarden_bench::prom::Scrape;
use pullwarden_bench::{Plane, audit, parse_duration, procfs, run_interruptible};
use pullwarden_harness::cluster::{TestNamespace, apply_crds};
use pullwarden_harness::operator::{
    OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT, Operator, OperatorOptions,
};
use pullwarden_harness::probe_targets::HttpTarget;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const START_DELAY: &str = "pullwarden_probe_start_delay_seconds";
const PROBE_DURATION: &str = "pullwarden_probe_duration_seconds";
const STATUS_WRITES: &str = "pullwarden_health_status_writes_total";

#[derive(Debug, Parser)]
#[command(
    name = "bench-health",
    about = "Operator CPU and RSS above idle, probe start-delay p50/p99, probes per second and \
             status writes per minute for N HealthChecks against a loopback server"
)]
struct Args {
    /// HealthChecks to create.
    #[arg(long, default_value_t = 5000)]
    checks: usize,
    /// `spec.interval` of every check.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    interval: Duration,
    /// `spec.timeout` of every check.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    /// How long the idle operator (no HealthCheck) is measured for its baseline.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    idle: Duration,
    /// Time between every check being OK and the start of the measured window.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    warmup: Duration,
    /// The measured window.
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    window: Duration,
    /// Creates in flight at once while setting up.
    #[arg(long, default_value_t = 16)]
    create_concurrency: usize,
    /// The operator's `--health-status-interval` (unset: the operator's default, 5m).
    #[arg(long, value_parser = parse_duration)]
    status_interval: Option<Duration>,
    /// The operator's `--health-probe-concurrency` (unset: the operator's default, 256).
    #[arg(long)]
    probe_concurrency: Option<usize>,
    /// Also write the JSON result to this file.
    #[arg(long)]
    output: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    pullwarden_bench::report("bench-health", args.output.as_deref(), run_outside(&args))
}

fn operator_user() -> String {
    format!("system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT}")
}

/// Starts or adopts the cluster, runs the benchmark, stops what it started however `run` ended.
fn run_outside(args: &Args) -> Result<Value> {
    let plane = Plane::start_with_env(
        "bench-health",
        &[("PULLWARDEN_AUDIT_USERS", &operator_user())],
    )?;
    run_interruptible(run(&plane, args))
}

/// The operator's CPU seconds and RSS (KiB).
fn usage(pid: u32) -> Result<(f64, u64)> {
    let cpu = procfs::cpu_seconds(pid).ok_or_else(|| anyhow!("no /proc/{pid}/stat"))?;
    let mem = procfs::memory(pid).ok_or_else(|| anyhow!("no /proc/{pid}/status"))?;
    Ok((cpu, mem.rss_kib))
}

/// RSS samples (KiB) once a second while `span` passes.
async fn sample_rss(pid: u32, span: Duration) -> Vec<u64> {
    let end = Instant::now() + span;
    let mut samples = Vec::new();
    while Instant::now() < end {
        if let Some(m) = procfs::memory(pid) {
            samples.push(m.rss_kib);
        }
        tokio::time::sleep(
            Duration::from_secs(1).min(end.saturating_duration_since(Instant::now())),
        )
        .await;
    }
    if let Some(m) = procfs::memory(pid) {
        samples.push(m.rss_kib);
    }
    samples
}

fn mean(xs: &[u64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.iter().sum::<u64>() as f64 / xs.len() as f64
}

fn mib(kib: f64) -> f64 {
    procfs::round1(kib / 1024.0)
}

fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Cumulative bucket counts (`le` → count) of histogram `name`, summed over its other labels.
fn buckets(scrape: &Scrape, name: &str) -> BTreeMap<String, f64> {
    scrape.sum_by(&format!("{name}_bucket"), &[], &["le"])
}

/// One histogram's observations between two scrapes: (upper bound, cumulative count), sorted by
/// bound, `+Inf` last.
fn bucket_delta(before: &Scrape, after: &Scrape, name: &str) -> Vec<(f64, f64)> {
    let b = buckets(before, name);
    let mut out: Vec<(f64, f64)> = buckets(after, name)
        .into_iter()
        .filter_map(|(le, count)| {
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((bound, count - b.get(&le).copied().unwrap_or(0.0)))
        })
        .collect();
    out.sort_by(|x, y| x.0.total_cmp(&y.0));
    out
}

/// The `q` quantile of cumulative buckets, interpolated linearly inside its bucket (as
/// Prometheus' `histogram_quantile` does), and the bucket's upper bound. `None` without
/// observations.
fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<(f64, f64)> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev_bound = 0.0;
    let mut prev_count = 0.0;
    for &(bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                // Above the last finite bound: that bound is all the histogram can say.
                return Some((prev_bound, bound));
            }
            let in_bucket = count - prev_count;
            let frac = if in_bucket > 0.0 {
                (rank - prev_count) / in_bucket
            } else {
                1.0
            };
            return Some((prev_bound + (bound - prev_bound) * frac, bound));
        }
        prev_bound = bound;
        prev_count = count;
    }
    None
}

fn quantiles_json(buckets: &[(f64, f64)]) -> Value {
    let pick = |q: f64| {
        quantile(buckets, q).map(|(v, le)| {
            json!({"s": r3(v), "bucket_le_s": if le.is_finite() { json!(le) } else { json!("+Inf") }})
        })
    };
    json!({
        "observations": buckets.last().map_or(0.0, |b| b.1),
        "p50": pick(0.5),
        "p99": pick(0.99),
    })
}

fn manifest(i: usize, url: &str, args: &Args) -> Result<HealthCheck> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "pullwarden.dev/v1alpha1",
        "kind": "HealthCheck",
        "metadata": {"name": format!("c-{i}")},
        "spec": {
            "target": {"url": url},
            "probe": {"http": {}},
            "interval": pullwarden_bench::go_duration(args.interval),
            "timeout": pullwarden_bench::go_duration(args.timeout),
        },
    }))?)
}

async fn states(checks: &Api<HealthCheck>) -> Result<BTreeMap<String, usize>> {
    let mut out = BTreeMap::new();
    let mut params = ListParams::default().limit(1000);
    loop {
        let page = checks.list(&params).await?;
        for h in &page.items {
            let state = h.status.as_ref().map(|s| s.state).unwrap_or_default();
            *out.entry(format!("{state:?}")).or_default() += 1;
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(out),
        }
    }
}

async fn run(plane: &Plane, args: &Args) -> Result<Value> {
    if args.checks == 0 || args.window.is_zero() {
        bail!("--checks and --window must be positive");
    }
    let cluster = plane.cluster();
    let client = cluster.client().await?;
    apply_crds(&client).await?;
    let ns = TestNamespace::new(cluster, "bench-health").await?;
    let n = ns.name().to_string();
    let server = HttpTarget::many().await?;

    let mut op_args = Vec::new();
    if let Some(d) = args.status_interval {
        op_args.push(format!(
            "--health-status-interval={}",
            pullwarden_bench::go_duration(d)
        ));
    }
    if let Some(c) = args.probe_concurrency {
        op_args.push(format!("--health-probe-concurrency={c}"));
    }
    let op = Operator::start(
        cluster,
        OperatorOptions {
            namespace: Some(n.clone()),
            // Per-probe debug lines would be the benchmark's main cost.
            env: vec![("RUST_LOG".into(), "info".into())],
            args: op_args.clone(),
            ..Default::default()
        },
    )
    .await?;
    op.wait_ready(Duration::from_secs(120)).await?;
    let pid = op.pid().ok_or_else(|| anyhow!("operator has no pid"))?;

    // 1. Idle baseline.
    eprintln!("bench-health: idle baseline for {:?}", args.idle);
    let (idle_cpu0, _) = usage(pid)?;
    let idle_rss = sample_rss(pid, args.idle).await;
    let (idle_cpu1, _) = usage(pid)?;
    let idle_cores = (idle_cpu1 - idle_cpu0) / args.idle.as_secs_f64().max(1e-9);
    let idle_rss_kib = mean(&idle_rss);

    // 2. The checks.
    let checks: Api<HealthCheck> = Api::namespaced(client.clone(), &n);
    let created = Instant::now();
    let objects: Vec<HealthCheck> = (0..args.checks)
        .map(|i| manifest(i, &server.url(&format!("/c/{i}")), args))
        .collect::<Result<_>>()?;
    let results: Vec<Result<()>> = futures::stream::iter(objects)
        .map(|hc| {
            let checks = checks.clone();
            async move {
                checks
                    .create(&PostParams::default(), &hc)
                    .await
                    .map(|_| ())
                    .with_context(|| format!("creating {}", hc.metadata.name.unwrap_or_default()))
            }
        })
        .buffer_unordered(args.create_concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<()>>>()?;
    let create_s = created.elapsed().as_secs_f64();
    eprintln!(
        "bench-health: {} HealthChecks created in {create_s:.1}s",
        args.checks
    );

    let deadline = Instant::now() + Duration::from_secs(600) + args.interval * 6;
    let all_ok_s = loop {
        let s = states(&checks).await?;
        let ok = s
            .get(&format!("{:?}", HealthState::Ok))
            .copied()
            .unwrap_or(0);
        if ok == args.checks {
            break created.elapsed().as_secs_f64();
        }
        if Instant::now() > deadline {
            bail!(
                "not every check became OK (states {s:?}); operator log tail:\n{}",
                op.log_tail(30)
            );
        }
        eprintln!("bench-health: states {s:?}");
        tokio::time::sleep(Duration::from_secs(5)).await;
    };
    eprintln!(
        "bench-health: all OK {all_ok_s:.1}s after the first create; warming up {:?}",
        args.warmup
    );
    tokio::time::sleep(args.warmup).await;

    // 3. The window.
    let load_before = procfs::load_average();
    let bench_pid = std::process::id();
    let before = Scrape::parse(&op.metrics().await?);
    let t0 = Timestamp::now();
    let started = Instant::now();
    let (cpu0, _) = usage(pid)?;
    let bench_cpu0 = procfs::cpu_seconds(bench_pid);
    let requests0 = server.requests();
    eprintln!("bench-health: measuring for {:?}", args.window);
    let rss = sample_rss(pid, args.window).await;
    let (cpu1, _) = usage(pid)?;
    let bench_cpu1 = procfs::cpu_seconds(bench_pid);
    let requests1 = server.requests();
    let elapsed = started.elapsed().as_secs_f64();
    let t1 = Timestamp::now();
    let after = Scrape::parse(&op.metrics().await?);
    let end_states = states(&checks).await?;

    let cores = (cpu1 - cpu0) / elapsed;
    let rss_mean = mean(&rss);
    let rss_peak = rss.iter().copied().max().unwrap_or(0) as f64;
    let probes_per_s = (requests1 - requests0) as f64 / elapsed;
    let expected_per_s = args.checks as f64 / args.interval.as_secs_f64();
    let start_delay = bucket_delta(&before, &after, START_DELAY);
    let probe_duration = bucket_delta(&before, &after, PROBE_DURATION);
    let writes_counter = after.sum(STATUS_WRITES, &[]) - before.sum(STATUS_WRITES, &[]);

    // Status writes as the kube-apiserver saw them.
    let audit_path = plane.audit_log();
    let api = match &audit_path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let (requests, _) = audit::parse(&text);
            let user = operator_user();
            let in_window: Vec<&audit::ApiRequest> = requests
                .iter()
                .filter(|r| r.at >= t0 && r.at < t1 && r.acting_user() == user)
                .collect();
            let status_writes = in_window
                .iter()
                .filter(|r| {
                    r.resource == "healthchecks/status"
                        && matches!(r.verb.as_str(), "patch" | "update")
                })
                .count();
            let counts = audit::count(in_window.iter().copied(), &[("operator", &user)]);
            Some((status_writes, audit::to_json(&counts)))
        }
        None => {
            eprintln!(
                "bench-health: no kube-apiserver audit log (an adopted cluster not started with \
                 PULLWARDEN_AUDIT_USERS): status writes come from the operator's counter only"
            );
            None
        }
    };
    let per_min = |n: f64| r3(n * 60.0 / elapsed);

    Ok(json!({
        "checks": args.checks,
        "interval_s": args.interval.as_secs_f64(),
        "timeout_s": args.timeout.as_secs_f64(),
        "operator_args": op_args,
        "setup": {
            "create_s": r3(create_s),
            "all_ok_s": r3(all_ok_s),
        },
        "window_s": r3(elapsed),
        "idle": {
            "seconds": args.idle.as_secs_f64(),
            "cpu_cores": r3(idle_cores),
            "rss_mib": mib(idle_rss_kib),
        },
        "operator": {
            "cpu_cores": r3(cores),
            "cpu_cores_above_idle": r3(cores - idle_cores),
            "rss_mib_mean": mib(rss_mean),
            "rss_mib_peak": mib(rss_peak),
            "rss_mib_above_idle": mib(rss_mean - idle_rss_kib),
            "rss_mib_peak_above_idle": mib(rss_peak - idle_rss_kib),
        },
        "goals": {
            "cpu_cores_above_idle_max": 0.25,
            "rss_mib_above_idle_max": 64,
            "cpu_met": cores - idle_cores <= 0.25,
            "rss_met": (rss_peak - idle_rss_kib) / 1024.0 <= 64.0,
        },
        "probes": {
            "per_s": r3(probes_per_s),
            "expected_per_s": r3(expected_per_s),
            "in_window": requests1 - requests0,
        },
        "probe_start_delay": quantiles_json(&start_delay),
        "probe_duration": quantiles_json(&probe_duration),
        "status_writes": {
            "per_min_audit": api.as_ref().map(|(n, _)| per_min(*n as f64)),
            "per_min_operator_counter": per_min(writes_counter),
            "in_window_audit": api.as_ref().map(|(n, _)| *n),
        },
        "kube_api_requests_in_window": api.map(|(_, counts)| counts),
        "states_at_end": end_states,
        "bench_cpu_cores": match (bench_cpu0, bench_cpu1) {
            (Some(a), Some(b)) => json!(r3((b - a) / elapsed)),
            _ => Value::Null,
        },
        "load_avg_1m_before_window": load_before,
        "audit_log": audit_path.map(|p| p.display().to_string()),
        "machine": serde_json::to_value(procfs::machine())?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_the_bucket_that_holds_the_rank() {
        let b = [
            (0.001, 50.0),
            (0.002, 90.0),
            (0.004, 100.0),
            (f64::INFINITY, 100.0),
        ];
        let (p50, le) = quantile(&b, 0.5).unwrap();
        assert!((p50 - 0.001).abs() < 1e-12 && le == 0.001);
        let (p99, le) = quantile(&b, 0.99).unwrap();
        assert!((p99 - 0.0038).abs() < 1e-9, "{p99}");
        assert_eq!(le, 0.004);
        assert_eq!(quantile(&[(0.001, 0.0), (f64::INFINITY, 0.0)], 0.5), None);
        // Beyond the last finite bound only that bound is known.
        let tail = [(1.0, 1.0), (f64::INFINITY, 10.0)];
        assert_eq!(quantile(&tail, 0.99), Some((1.0, f64::INFINITY)));
    }

    #[test]
    fn bucket_deltas_are_taken_per_bound_over_every_series() {
        let before = Scrape::parse(
            "x_bucket{kind=\"http\",le=\"0.1\"} 1\nx_bucket{kind=\"http\",le=\"+Inf\"} 2\n",
        );
        let after = Scrape::parse(
            "x_bucket{kind=\"http\",le=\"0.1\"} 4\nx_bucket{kind=\"http\",le=\"+Inf\"} 6\n\
             x_bucket{kind=\"tcp\",le=\"0.1\"} 1\nx_bucket{kind=\"tcp\",le=\"+Inf\"} 1\n",
        );
        assert_eq!(
            bucket_delta(&before, &after, "x"),
            vec![(0.1, 4.0), (f64::INFINITY, 5.0)]
        );
    }
}
