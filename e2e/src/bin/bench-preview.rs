//! `bench-preview`: how fast a pull request gets a preview, and how fast it goes away.
//!
//! Flow: a control plane (`KUBECONFIG` when set, else a fresh one that dies with this process),
//! the forge emulator in this process with one repository holding the realistic ten-object
//! preview app (operator/tests/fixtures/preview/app), a webhook from the emulator to the
//! operator, one operator process (real binary, least-privilege RBAC), and a Repository that
//! previews pull requests labelled `preview`. Then, `--iterations` times: open a labelled pull
//! request and measure
//! - webhook → first status: from the pull request being opened (the emulator sends the
//!   webhook at once) to the first `pullwarden/preview` commit status on its head SHA;
//! - open → Ready: to the PreviewEnvironment being `Ready` at that SHA (namespace, confinement,
//!   ten objects applied by impersonation, Deployment Available through kwok, write-back);
//! - teardown: from closing the pull request to the preview namespace being gone.
//!
//! Prints one JSON object (progress on stderr). Times are wall-clock on a shared machine: read
//! them as orders of magnitude, together with the machine facts in the output.

use anyhow::{Context as _, Result, anyhow, bail};
use clap::Parser;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use pullwarden::api::{PreviewEnvironment, PreviewPhase, Repository};
use pullwarden_e2e::bench::{Plane, procfs, run_interruptible};
use pullwarden_e2e::cluster::{Cluster, TestNamespace, apply_crds};
use pullwarden_e2e::emulator::{
    Emulator, EmulatorConfig, EmulatorHandle, HookSpec, PullSpec, PushSpec, RepoSpec,
};
use pullwarden_e2e::operator::{Operator, OperatorOptions};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const TOKEN: &str = "ghp_bench_preview";
const HOOK_SECRET: &str = "bench-preview-hook";
const TIMEOUT: Duration = Duration::from_secs(180);

#[derive(Debug, Parser)]
#[command(
    name = "bench-preview",
    about = "PR-open → preview-Ready and teardown times for a ten-object preview"
)]
struct Args {
    /// Pull requests opened and closed, one after the other.
    #[arg(long, default_value_t = 5)]
    iterations: usize,
    /// Also write the JSON result to this file.
    #[arg(long)]
    output: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run_outside(&args) {
        Ok(result) => {
            let text = serde_json::to_string_pretty(&result).unwrap_or_default();
            if let Some(path) = &args.output
                && let Err(e) = std::fs::write(path, format!("{text}\n"))
            {
                eprintln!("bench-preview: writing {}: {e}", path.display());
            }
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench-preview: FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Starts or adopts the cluster, runs the benchmark, stops what it started however `run` ended.
fn run_outside(args: &Args) -> Result<Value> {
    let plane = Plane::start("bench-preview")?;
    run_interruptible(run(plane.cluster(), args))
}

fn preview_app() -> Result<BTreeMap<String, Option<String>>> {
    pullwarden_e2e::fixtures::preview_app("deploy/preview")
        .context("reading the preview app fixture")
}

async fn poll_until<F, Fut>(what: &str, step: Duration, mut check: F) -> Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let start = Instant::now();
    loop {
        if check().await? {
            return Ok(start.elapsed());
        }
        if start.elapsed() > TIMEOUT {
            bail!("{what}: not reached after {TIMEOUT:?}");
        }
        tokio::time::sleep(step).await;
    }
}

fn summary(samples: &[f64]) -> Value {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        sorted
            .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    let r3 = |x: f64| (x * 1000.0).round() / 1000.0;
    json!({
        "p50": r3(pick(0.5)),
        "max": r3(sorted.last().copied().unwrap_or(0.0)),
        "min": r3(sorted.first().copied().unwrap_or(0.0)),
        "samples": sorted.iter().map(|x| r3(*x)).collect::<Vec<_>>(),
    })
}

async fn run(cluster: &Cluster, args: &Args) -> Result<Value> {
    let client: Client = cluster.client().await?;
    apply_crds(&client).await?;
    let ns = TestNamespace::new(cluster, "bench-preview").await?;
    let n = ns.name().to_string();

    let emu: EmulatorHandle = Emulator::start(EmulatorConfig::default()).await?;
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
            files: preview_app()?,
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

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &n);
    for (name, key, value) in [
        ("forge-token", "token", TOKEN),
        ("forge-hook", "secret", HOOK_SECRET),
    ] {
        let s: Secret = serde_json::from_value(
            json!({"metadata": {"name": name, "labels": {"pullwarden.dev/credentials": "true"}}, "stringData": {key: value}}),
        )?;
        secrets.create(&PostParams::default(), &s).await?;
    }
    let repos: Api<Repository> = Api::namespaced(client.clone(), &n);
    let manifest = json!({
        "apiVersion": "pullwarden.dev/v1alpha1", "kind": "Repository", "metadata": {"name": n},
        "spec": {
            "provider": "github", "url": info.clone_url, "apiUrl": emu.github_api_url(), "allowInsecureHTTP": true,
            "auth": {"secretRef": {"name": "forge-token"}}, "webhook": {"secretRef": {"name": "forge-hook"}},
            "interval": "5m", "pullRequests": {"labels": ["preview"]},
            "preview": {"path": "deploy/preview", "host": "pr-{{number}}.{{repo}}.preview.test", "vars": {"image": "registry.test/acme/shop"}},
        }
    });
    repos
        .patch(
            &n,
            &PatchParams::apply("pullwarden.dev/bench").force(),
            &Patch::Apply(&manifest),
        )
        .await?;
    poll_until("first sync", Duration::from_millis(100), || async {
        Ok(repos.get(&n).await?.status.is_some_and(|s| {
            s.common
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        }))
    })
    .await?;
    emu.add_hook(
        &repo_path,
        HookSpec {
            url: format!("http://{}/hooks/github", op.webhook_addr),
            secret: Some(HOOK_SECRET.into()),
            events: vec![],
        },
    )
    .await?;

    let previews: Api<PreviewEnvironment> = Api::namespaced(client.clone(), &n);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let (mut first_status, mut to_ready, mut teardown) = (Vec::new(), Vec::new(), Vec::new());
    let mut terminating = Vec::new();
    let mut peak_rss = 0.0f64;
    for i in 0..args.iterations {
        let branch = format!("feature-{i}");
        emu.create_branch(&repo_path, &branch, Some("main")).await?;
        emu.push(
            &repo_path,
            PushSpec {
                branch: branch.clone(),
                files: [(format!("src/change-{i}.txt"), Some(format!("{i}\n")))].into(),
                ..Default::default()
            },
        )
        .await?;
        let opened = Instant::now();
        let pr = emu
            .open_pull(
                &repo_path,
                PullSpec {
                    head: branch,
                    title: format!("Change {i}"),
                    labels: vec!["preview".into()],
                    ..Default::default()
                },
            )
            .await?;
        let sha = pr.head_sha.clone();
        let name = format!("{n}-pr-{}", pr.number);
        let emu_ref = &emu;
        {
            let (repo_path, sha) = (repo_path.clone(), sha.clone());
            poll_until(
                "first commit status",
                Duration::from_millis(20),
                move || {
                    let (repo_path, sha) = (repo_path.clone(), sha.clone());
                    async move {
                        Ok(emu_ref
                            .statuses(&repo_path, Some(&sha))
                            .await?
                            .iter()
                            .any(|s| s.context == "pullwarden/preview"))
                    }
                },
            )
            .await?;
        }
        // The emulator sends the webhook while answering the open call, so the time from the
        // open call to the first status is webhook → first status (plus one admin round trip).
        first_status.push(opened.elapsed().as_secs_f64());
        let previews_ref = &previews;
        poll_until("preview Ready", Duration::from_millis(50), || {
            let (name, sha) = (name.clone(), sha.clone());
            async move {
                Ok(previews_ref
                    .get_opt(&name)
                    .await?
                    .and_then(|p| p.status)
                    .is_some_and(|s| {
                        s.phase == PreviewPhase::Ready
                            && s.deployed_sha.as_deref() == Some(sha.as_str())
                    }))
            }
        })
        .await?;
        let ready = opened.elapsed();
        to_ready.push(ready.as_secs_f64());
        if let Some(mem) = procfs::memory(pid) {
            peak_rss = peak_rss.max(mem.hwm_mib());
        }
        let preview_ns = name.clone();
        let closed = Instant::now();
        emu.close_pull(&repo_path, pr.number).await?;
        let ns_ref = &namespaces;
        // Pullwarden's part ends when it has deleted the namespace; the rest is Kubernetes'
        // namespace controller emptying it.
        poll_until("namespace terminating", Duration::from_millis(50), || {
            let preview_ns = preview_ns.clone();
            async move {
                Ok(ns_ref
                    .get_opt(&preview_ns)
                    .await?
                    .is_none_or(|ns| ns.metadata.deletion_timestamp.is_some()))
            }
        })
        .await?;
        terminating.push(closed.elapsed().as_secs_f64());
        poll_until("namespace gone", Duration::from_millis(100), || {
            let preview_ns = preview_ns.clone();
            async move { Ok(ns_ref.get_opt(&preview_ns).await?.is_none()) }
        })
        .await?;
        teardown.push(closed.elapsed().as_secs_f64());
        eprintln!(
            "bench-preview: #{i}: first status {:.3}s, ready {:.3}s, namespace deleting {:.3}s, gone {:.3}s",
            first_status[i], to_ready[i], terminating[i], teardown[i]
        );
    }
    let mem = procfs::memory(pid);
    let machine = procfs::machine();
    let operator_bin = pullwarden_e2e::operator::operator_binary()?;
    drop(op);
    Ok(json!({
        "benchmark": "preview",
        "iterations": args.iterations,
        "objects_per_preview": 10,
        "webhook_to_first_status_s": summary(&first_status),
        "open_to_ready_s": summary(&to_ready),
        "close_to_namespace_deleting_s": summary(&terminating),
        "close_to_namespace_gone_s": summary(&teardown),
        "operator": {
            "rss_mib": mem.as_ref().map(|m| procfs::round1(m.rss_mib())),
            "peak_rss_mib": procfs::round1(peak_rss.max(mem.as_ref().map(|m| m.hwm_mib()).unwrap_or(0.0))),
            "binary": operator_bin.display().to_string(),
            "profile": profile_of(&operator_bin),
        },
        "machine": serde_json::to_value(&machine)?,
    }))
}

/// `release` or `debug` from the cargo output directory the binary was built into.
fn profile_of(bin: &std::path::Path) -> &'static str {
    let dirs: Vec<_> = bin.components().map(|c| c.as_os_str().to_owned()).collect();
    if dirs.iter().any(|d| d == "release") {
        "release"
    } else if dirs.iter().any(|d| d == "debug") {
        "debug"
    } else {
        "unknown"
    }
}
