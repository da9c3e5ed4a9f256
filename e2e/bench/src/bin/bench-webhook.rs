//! `bench-webhook`: the webhook server under an anonymous attack, on loopback only.
//!
//! Flow: a control plane (`KUBECONFIG` when set, else a fresh one that dies with this process),
//! the forge emulator in this process with one repository, one operator process (the release
//! binary with its *default* webhook limits, least-privilege RBAC) and a Repository with an
//! opted-in webhook Secret. Then, for `--duration`, at the same time:
//! - slowloris: from `--slowloris-addresses` addresses, `per-address cap + 2` connections each
//!   that send a request line and never finish their headers (re-opened when cut);
//! - slow bodies: from `--slow-body-addresses` addresses, as many connections that declare a
//!   1 MiB body and drip one byte a second;
//! - memory pinning: from `--pinning-addresses` addresses, as many connections that send
//!   1 MiB - 1 byte of a 1 MiB body at once and stall;
//! - many connections from one address: a new connection every `--flood-interval`, held until
//!   the server closes it;
//! - failing signatures: `--forgers` loops sending 64 KiB deliveries with a wrong signature
//!   from 127.0.0.1, the address the honest deliveries come from;
//! - and every `--valid-interval` a correctly signed GitHub delivery from 127.0.0.1, timed from
//!   connect to response.
//!
//! Attackers use distinct loopback addresses (127.0.1.x, 127.0.2.x, ...). The operator's RSS is
//! sampled every 50 ms. Prints one JSON object (progress on stderr): peak RSS, attack sizes, the
//! answers each attack got, the valid deliveries' statuses and latency, and the operator's own
//! counters. Times are wall-clock on a shared machine: read them with the machine facts.

use anyhow::{Result, anyhow, bail};
use clap::Parser;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use pullwarden::api::Repository;
use pullwarden_bench::attack::{self, Signature, WRONG_SIGNATURE};
use pullwarden_bench::{Plane, parse_duration, procfs, run_interruptible};
use pullwarden_emulator::{Emulator, EmulatorConfig, PushSpec, RepoSpec};
use pullwarden_harness::cluster::{Cluster, TestNamespace, apply_crds};
use pullwarden_harness::operator::{Operator, OperatorOptions};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

const TOKEN: &str = "ghp_bench_webhook";
const HOOK_SECRET: &str = "bench-webhook-hook";
const TIMEOUT: Duration = Duration::from_secs(180);
const MIB: usize = 1024 * 1024;
/// `--webhook-max-connections-per-address` of the operator (its default).
const PER_ADDRESS: usize = 8;

#[derive(Debug, Parser)]
#[command(
    name = "bench-webhook",
    about = "Webhook server under slowloris, slow-body, pinning and connection-flood attacks"
)]
struct Args {
    /// How long the attack runs.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    duration: Duration,
    /// Addresses sending slowloris headers.
    #[arg(long, default_value_t = 8)]
    slowloris_addresses: u8,
    /// Addresses dripping slow bodies.
    #[arg(long, default_value_t = 8)]
    slow_body_addresses: u8,
    /// Addresses pinning (almost) 1 MiB bodies.
    #[arg(long, default_value_t = 2)]
    pinning_addresses: u8,
    /// Pause between two connections of the one-address flood.
    #[arg(long, default_value = "2ms", value_parser = parse_duration)]
    flood_interval: Duration,
    /// Concurrent loops sending wrongly signed deliveries from the honest address.
    #[arg(long, default_value_t = 2)]
    forgers: usize,
    /// Pause between two valid deliveries (keep duration / interval under the per-Repository
    /// burst of 60, or valid deliveries are rate limited per Repository by design).
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    valid_interval: Duration,
    /// Also write the JSON result to this file.
    #[arg(long)]
    output: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    pullwarden_bench::report("bench-webhook", args.output.as_deref(), run_outside(&args))
}

fn run_outside(args: &Args) -> Result<Value> {
    let plane = Plane::start("bench-webhook")?;
    run_interruptible(run(plane.cluster(), args))
}

/// Answers an attack got, by status (`closed` when the server closed without answering).
#[derive(Debug, Default)]
struct Tally {
    connections: u64,
    connect_errors: u64,
    answers: BTreeMap<String, u64>,
}

impl Tally {
    fn answered(&mut self, status: Option<u16>) {
        let key = status.map_or("closed".to_owned(), |s| s.to_string());
        *self.answers.entry(key).or_default() += 1;
    }

    fn json(&self) -> Value {
        json!({"connections": self.connections, "connect_errors": self.connect_errors, "answers": self.answers})
    }
}

type Shared = Arc<Mutex<Tally>>;

fn record(tally: &Shared, f: impl FnOnce(&mut Tally)) {
    f(&mut tally
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner));
}

fn address(block: u8, n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, block, n.saturating_add(1)))
}

/// Keeps one attacking connection open from `source` until `end`: `open` starts it, then the
/// server's answer (or close) is awaited, counted, and the connection re-opened.
async fn hold<F, Fut>(tally: Shared, end: Instant, open: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<tokio::net::TcpStream>>,
{
    while Instant::now() < end {
        let mut stream = match open().await {
            Ok(stream) => stream,
            Err(_) => {
                record(&tally, |t| t.connect_errors += 1);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        record(&tally, |t| t.connections += 1);
        let left = end.saturating_duration_since(Instant::now());
        match attack::read_answer(&mut stream, left).await {
            Ok(answer) => {
                record(&tally, |t| t.answered(answer.status));
                // A refusal is answered at once: do not turn the attack into a busy loop.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(_) => break, // still held when the attack ended
        }
    }
}

/// A slow body that drips one more byte every second until the server answers.
async fn drip(source: IpAddr, target: SocketAddr, end: Instant) -> Result<tokio::net::TcpStream> {
    let mut stream = attack::slow_body(source, target, MIB, 1).await?;
    let mut probe = [0u8; 1];
    while Instant::now() < end {
        match tokio::time::timeout(Duration::from_secs(1), stream.peek(&mut probe)).await {
            // The server answered or closed: hand the stream back to be read.
            Ok(_) => break,
            Err(_) => {
                if stream.write_all(b" ").await.is_err() {
                    break;
                }
            }
        }
    }
    Ok(stream)
}

fn summary_ms(samples: &[f64]) -> Value {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        sorted
            .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    let r1 = |x: f64| (x * 10.0).round() / 10.0;
    json!({
        "p50": r1(pick(0.5)),
        "p90": r1(pick(0.9)),
        "max": r1(sorted.last().copied().unwrap_or(0.0)),
        "min": r1(sorted.first().copied().unwrap_or(0.0)),
    })
}

async fn run(cluster: &Cluster, args: &Args) -> Result<Value> {
    if args.valid_interval.is_zero()
        || args.duration.as_secs_f64() / args.valid_interval.as_secs_f64() > 60.0
    {
        bail!("--duration / --valid-interval must stay under the per-Repository burst of 60");
    }
    let client: Client = cluster.client().await?;
    apply_crds(&client).await?;
    let ns = TestNamespace::new(cluster, "bench-webhook").await?;
    let n = ns.name().to_string();

    let emu = Emulator::start(EmulatorConfig::default()).await?;
    emu.token(TOKEN, "pullwarden-bot").await?;
    let repo_path = format!("acme/{n}");
    let info = emu
        .create_repo(RepoSpec {
            path: repo_path.clone(),
            private: true,
            ..Default::default()
        })
        .await?;
    emu.push(
        &repo_path,
        PushSpec {
            branch: "main".into(),
            files: [("README.md".to_owned(), Some("bench\n".to_owned()))].into(),
            ..Default::default()
        },
    )
    .await?;

    let op = Operator::start(
        cluster,
        OperatorOptions {
            namespace: Some(n.clone()),
            ..Default::default()
        },
    )
    .await?;
    op.wait_ready(TIMEOUT).await?;
    let pid = op.pid().ok_or_else(|| anyhow!("operator has no pid"))?;
    let target = op.webhook_addr;

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &n);
    for (name, key, value) in [
        ("forge-token", "token", TOKEN),
        ("forge-hook", "secret", HOOK_SECRET),
    ] {
        let s: Secret = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"pullwarden.dev/credentials": "true"}},
            "stringData": {key: value},
        }))?;
        secrets.create(&PostParams::default(), &s).await?;
    }
    let repos: Api<Repository> = Api::namespaced(client.clone(), &n);
    let manifest = json!({
        "apiVersion": "pullwarden.dev/v1alpha1", "kind": "Repository", "metadata": {"name": n},
        "spec": {
            "provider": "github", "url": info.clone_url, "apiUrl": emu.github_api_url(), "allowInsecureHTTP": true,
            "auth": {"secretRef": {"name": "forge-token"}}, "webhook": {"secretRef": {"name": "forge-hook"}},
            "interval": "30m",
        }
    });
    repos
        .patch(
            &n,
            &PatchParams::apply("pullwarden.dev/bench").force(),
            &Patch::Apply(&manifest),
        )
        .await?;
    let synced_by = Instant::now() + TIMEOUT;
    loop {
        let synced = repos.get(&n).await?.status.is_some_and(|s| {
            s.common
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        });
        if synced {
            break;
        }
        if Instant::now() > synced_by {
            bail!("the Repository did not sync within {TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let payload = attack::pull_request_payload(&info.clone_url, 1);
    // One delivery before the attack: the baseline latency and a warm Secret cache.
    let warm = attack::send(
        attack::loopback(1),
        target,
        &attack::github_request("warm-up", &payload, Signature::With(HOOK_SECRET), None),
        Duration::from_secs(30),
    )
    .await?;
    if warm.status != Some(202) {
        bail!("the warm-up delivery was not accepted: {}", warm.text);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = procfs::memory(pid).ok_or_else(|| anyhow!("no /proc/{pid}/status"))?;
    let metrics_before = op.metrics().await?;
    eprintln!(
        "bench-webhook: baseline RSS {} MiB; attacking for {:?}",
        baseline.rss_mib(),
        args.duration
    );

    let start = Instant::now();
    let end = start + args.duration;
    let peak_rss = Arc::new(Mutex::new(baseline.rss_kib));
    let sampler = {
        let peak_rss = peak_rss.clone();
        tokio::spawn(async move {
            while Instant::now() < end {
                if let Some(m) = procfs::memory(pid) {
                    let mut peak = peak_rss
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    *peak = (*peak).max(m.rss_kib);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let mut tasks = Vec::new();
    let slowloris: Shared = Shared::default();
    let slow_bodies: Shared = Shared::default();
    let pinning: Shared = Shared::default();
    let flood: Shared = Shared::default();
    let forged: Shared = Shared::default();
    for a in 0..args.slowloris_addresses {
        for _ in 0..PER_ADDRESS + 2 {
            let source = address(1, a);
            tasks.push(tokio::spawn(hold(slowloris.clone(), end, move || {
                attack::slow_headers(source, target)
            })));
        }
    }
    for a in 0..args.slow_body_addresses {
        for _ in 0..PER_ADDRESS + 2 {
            let source = address(2, a);
            tasks.push(tokio::spawn(hold(slow_bodies.clone(), end, move || {
                drip(source, target, end)
            })));
        }
    }
    for a in 0..args.pinning_addresses {
        for _ in 0..PER_ADDRESS + 2 {
            let source = address(3, a);
            tasks.push(tokio::spawn(hold(pinning.clone(), end, move || {
                attack::slow_body(source, target, MIB, MIB - 1)
            })));
        }
    }
    {
        let flood = flood.clone();
        let interval = args.flood_interval;
        tasks.push(tokio::spawn(async move {
            let source = address(4, 0);
            let mut held = Vec::new();
            while Instant::now() < end {
                let flood = flood.clone();
                held.push(tokio::spawn(async move {
                    match attack::connect_from(source, target).await {
                        Ok(mut stream) => {
                            record(&flood, |t| t.connections += 1);
                            let left = end.saturating_duration_since(Instant::now());
                            if let Ok(answer) = attack::read_answer(&mut stream, left).await {
                                record(&flood, |t| t.answered(answer.status));
                            }
                        }
                        Err(_) => record(&flood, |t| t.connect_errors += 1),
                    }
                }));
                tokio::time::sleep(interval).await;
            }
            for task in held {
                let _ = task.await;
            }
        }));
    }
    // A real payload for the real repository (JSON allows trailing whitespace), so each forged
    // delivery is parsed and HMAC-verified before it fails.
    let mut forged_body = payload.clone();
    forged_body.resize(64 * 1024, b' ');
    for _ in 0..args.forgers {
        let forged = forged.clone();
        let request = attack::github_request(
            "forged",
            &forged_body,
            Signature::Verbatim(WRONG_SIGNATURE),
            None,
        );
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                record(&forged, |t| t.connections += 1);
                match attack::send(
                    attack::loopback(1),
                    target,
                    &request,
                    Duration::from_secs(30),
                )
                .await
                {
                    Ok(answer) => record(&forged, |t| t.answered(answer.status)),
                    Err(_) => record(&forged, |t| t.connect_errors += 1),
                }
            }
        }));
    }

    // The honest deliveries, one at a time, while all of the above runs. The first one waits
    // a moment so that the attack connections are in place.
    tokio::time::sleep(Duration::from_secs(1).min(args.duration / 4)).await;
    let mut latencies_ms = Vec::new();
    let mut valid_answers: BTreeMap<String, u64> = BTreeMap::new();
    let mut i = 0;
    while Instant::now() + args.valid_interval < end {
        i += 1;
        let request = attack::github_request(
            &format!("valid-{i}-{}", uuid::Uuid::new_v4()),
            &payload,
            Signature::With(HOOK_SECRET),
            None,
        );
        let sent = Instant::now();
        let answer = attack::send(
            attack::loopback(1),
            target,
            &request,
            Duration::from_secs(30),
        )
        .await;
        let status = answer.as_ref().ok().and_then(|a| a.status);
        if status == Some(202) {
            latencies_ms.push(sent.elapsed().as_secs_f64() * 1000.0);
        }
        *valid_answers
            .entry(status.map_or("none".to_owned(), |s| s.to_string()))
            .or_default() += 1;
        tokio::time::sleep(args.valid_interval).await;
    }
    for task in tasks {
        let _ = task.await;
    }
    let _ = sampler.await;
    let attack_secs = start.elapsed().as_secs_f64();
    let after = procfs::memory(pid);
    let metrics_after = op.metrics().await?;
    let counters = |text: &str| -> BTreeMap<String, f64> {
        text.lines()
            .filter(|l| {
                l.starts_with("pullwarden_webhook_requests_total{forge=\"github\"")
                    || l.starts_with("pullwarden_webhook_connections_refused_total")
            })
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                Some((name.to_owned(), value.parse().ok()?))
            })
            .collect()
    };
    let (before, now) = (counters(&metrics_before), counters(&metrics_after));
    let deltas: BTreeMap<String, f64> = now
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d > 0.0)
        .collect();
    let accepted = latencies_ms.len();
    let peak = *peak_rss
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let tally = |t: &Shared| {
        t.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .json()
    };
    let within_1s = latencies_ms.iter().filter(|ms| **ms <= 1000.0).count();
    eprintln!(
        "bench-webhook: {accepted} valid deliveries accepted, {within_1s} within 1 s; peak RSS {} MiB",
        procfs::kib_to_mib(peak)
    );
    Ok(json!({
        "duration_s": (attack_secs * 10.0).round() / 10.0,
        "operator_limits": {
            "note": "defaults of pullwarden run (release build)",
            "max_connections": 1024, "max_connections_per_address": PER_ADDRESS,
            "max_in_flight_requests": 256, "max_in_flight_body_bytes": 32 * MIB,
            "max_body_bytes": MIB, "header_read_timeout_s": 10, "body_read_timeout_s": 10,
        },
        "attack": {
            "slowloris": {"addresses": args.slowloris_addresses, "connections_per_address": PER_ADDRESS + 2, "result": tally(&slowloris)},
            "slow_bodies": {"addresses": args.slow_body_addresses, "connections_per_address": PER_ADDRESS + 2, "declared_bytes": MIB, "drip": "1 byte/s", "result": tally(&slow_bodies)},
            "pinning": {"addresses": args.pinning_addresses, "connections_per_address": PER_ADDRESS + 2, "sent_bytes": MIB - 1, "result": tally(&pinning)},
            "connection_flood": {"addresses": 1, "interval_ms": args.flood_interval.as_millis() as u64, "result": tally(&flood)},
            "failing_signatures": {"loops": args.forgers, "body_bytes": 64 * 1024, "from": "127.0.0.1 (the honest address)", "result": tally(&forged)},
        },
        "valid_deliveries": {
            "from": "127.0.0.1",
            "sent": valid_answers.values().sum::<u64>(),
            "answers": valid_answers,
            "accepted_within_1s": within_1s,
            "latency_ms": summary_ms(&latencies_ms),
        },
        "operator_counters": deltas,
        "rss_mib": {
            "baseline": baseline.rss_mib(),
            "peak_during_attack": procfs::kib_to_mib(peak),
            "after": after.map(|m| m.rss_mib()),
            "hwm_since_start": after.map(|m| m.hwm_mib()),
        },
        "machine": serde_json::to_value(procfs::machine())?,
    }))
}
