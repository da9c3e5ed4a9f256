//! `bench-gate-forge`: what a PolicyGate evaluation costs the forge — the other half of
//! `bench-gate` (which measures evaluation in process).
//!
//! Flow: a control plane (`KUBECONFIG` when set, else a fresh one that dies with this process),
//! the forge emulator in this process (GitHub face) with one repository and one open pull request
//! of `--files` changed files (20 added lines each), a webhook to one operator process (real
//! binary), a Repository (`interval: 30m`: everything below is webhook-driven) and a gate of 12
//! rules reading every part of the snapshot (files with diffs, reviews, commits, checks, team
//! membership; the `previewHealthy` rule is skipped by its `if`: no preview). Three windows, each from an emulator counter reset to the gate's
//! status showing the expected verdict (plus `--settle` for late requests):
//! - `cold`: the gate is applied and evaluates the pull request for the first time (and writes
//!   its status and sticky-comment section);
//! - `review`: a reviewer approves; the webhook re-evaluates (the Repository sync the same
//!   webhook triggers is counted too: the emulator cannot tell whose request it was);
//! - `unchanged`: a reconcile of the gate is requested with nothing changed.
//!
//! For each: requests, how many were `304 Not Modified` (free on GitHub's quota) and how many
//! the emulator charged, by route. Prints one JSON object (progress on stderr).

use anyhow::{Result, bail};
use clap::Parser;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use pullwarden::api::PolicyGate;
use pullwarden_bench::{Plane, parse_duration, run_interruptible};
use pullwarden_emulator::{
    ClientCounts, Emulator, EmulatorConfig, EmulatorHandle, HookSpec, PullSpec, PushSpec, RepoSpec,
};
use pullwarden_harness::cluster::{TestNamespace, apply_crds};
use pullwarden_harness::operator::{Operator, OperatorOptions};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const TOKEN: &str = "ghp_bench_gate";
const HOOK_SECRET: &str = "bench-gate-hook";
const CONTEXT: &str = "pullwarden/gate/bench";
const TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Parser)]
#[command(about = "Forge requests per PolicyGate evaluation (JSON)")]
struct Args {
    /// Changed files in the pull request.
    #[arg(long, default_value_t = 200)]
    files: usize,
    /// Leave out the two rules that read the head's checks (the `cel` rule and the `if` of
    /// `previewHealthy`: CEL may read `pr.checks`), replaced by two that do not.
    #[arg(long)]
    without_checks: bool,
    /// Wait after each goal before closing its window.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    settle: Duration,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result =
        Plane::start("bench-gate-forge").and_then(|plane| run_interruptible(run(&plane, &args)));
    match result {
        Ok(v) => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench-gate-forge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn gate_manifest(without_checks: bool) -> Value {
    let mut manifest = json!({
        "apiVersion": "pullwarden.dev/v1alpha1", "kind": "PolicyGate", "metadata": {"name": "bench"},
        "spec": {"repositoryRef": {"name": "shop"}, "interval": "30m", "rules": [
            {"name": "approvals", "approvals": {"count": 1, "teams": ["acme/reviewers"]}},
            {"name": "veto", "disapproval": {"users": ["carol"]}},
            {"name": "paths", "changedFiles": {"paths": ["src/**", "docs/**"]}},
            {"name": "lines", "modifiedLines": {"max": 100000}},
            {"name": "files", "maxFiles": {"max": 5000}},
            {"name": "branches", "branches": {"target": ["main"]}},
            {"name": "labels", "labels": {"forbid": ["do-not-merge"]}},
            {"name": "title", "title": {"matches": "^(feat|fix)"}},
            {"name": "signed", "signedCommits": {}},
            {"name": "secrets", "secretScan": {}},
            {"name": "preview", "if": "pr.preview.exists", "previewHealthy": {}},
            {"name": "small_commits", "cel": {"expression": "pr.commits.all(c, size(c.message) < 1000)"}},
        ]}
    });
    if without_checks {
        manifest["spec"]["rules"][10] = json!({"name": "no_wip", "labels": {"forbid": ["wip"]}});
        manifest["spec"]["rules"][11] = json!({"name": "few_files", "maxFiles": {"max": 9999}});
    }
    manifest
}

fn summary(c: &ClientCounts) -> Value {
    let mut by_route: BTreeMap<String, Value> = BTreeMap::new();
    for (route, statuses) in &c.routes {
        by_route.insert(route.clone(), json!(statuses));
    }
    json!({
        "requests": c.total,
        "not_modified": c.not_modified,
        "charged": c.charged,
        "charged_by_route": c.charged_routes,
        "by_route": by_route,
    })
}

async fn wait_description(emu: &EmulatorHandle, sha: &str, prefix: &str) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let mut statuses: Vec<_> = emu
            .statuses("acme/shop", Some(sha))
            .await?
            .into_iter()
            .filter(|s| s.context == CONTEXT)
            .collect();
        statuses.sort_by_key(|s| s.id);
        if statuses
            .last()
            .and_then(|s| s.description.as_deref())
            .is_some_and(|d| d.starts_with(prefix))
        {
            return Ok(start.elapsed());
        }
        if start.elapsed() > TIMEOUT {
            bail!("no {CONTEXT} status starting with {prefix:?} on {sha}: {statuses:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn window(emu: &EmulatorHandle, settle: Duration) -> Result<ClientCounts> {
    tokio::time::sleep(settle).await;
    let counts = emu.request_counts().await?;
    Ok(counts.clients.get(TOKEN).cloned().unwrap_or_default())
}

async fn run(plane: &Plane, args: &Args) -> Result<Value> {
    let cluster = plane.cluster();
    let client: Client = cluster.client().await?;
    apply_crds(&client).await?;
    let ns = TestNamespace::new(cluster, "bench-gate").await?;
    let n = ns.name().to_string();
    let emu = Emulator::start(EmulatorConfig::default()).await?;
    emu.token(TOKEN, "pullwarden-bot").await?;
    let info = emu
        .create_repo(RepoSpec {
            path: "acme/shop".into(),
            private: true,
            ..Default::default()
        })
        .await?;
    let one = |p: &str, c: String| (p.to_string(), Some(c));
    emu.push(
        "acme/shop",
        PushSpec {
            branch: "main".into(),
            files: BTreeMap::from([one("README.md", "shop\n".into())]),
            ..Default::default()
        },
    )
    .await?;
    let files: BTreeMap<String, Option<String>> = (0..args.files)
        .map(|i| {
            let body: String = (0..20)
                .map(|l| format!("pub fn f{i}_{l}(x: u64) -> u64 {{ x.wrapping_mul({l}) }}\n"))
                .collect();
            one(&format!("src/m{i:04}.rs"), body)
        })
        .collect();
    let pushed = emu
        .push(
            "acme/shop",
            PushSpec {
                branch: "feature".into(),
                files,
                from: Some("main".into()),
                verified: true,
                ..Default::default()
            },
        )
        .await?;
    let pr = emu
        .open_pull(
            "acme/shop",
            PullSpec {
                head: "feature".into(),
                title: "feat: many modules".into(),
                author: Some("alice".into()),
                ..Default::default()
            },
        )
        .await?;
    emu.set_team_membership("acme", "reviewers", "bob", "member")
        .await?;

    let op = Operator::start(
        cluster,
        OperatorOptions {
            namespace: Some(n.clone()),
            ..Default::default()
        },
    )
    .await?;
    op.wait_ready(Duration::from_secs(90)).await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &n);
    for (name, key, value) in [
        ("shop-token", "token", TOKEN),
        ("shop-hook", "secret", HOOK_SECRET),
    ] {
        let s: Secret = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"pullwarden.dev/credentials": "true"}},
            "stringData": {key: value},
        }))?;
        secrets.create(&PostParams::default(), &s).await?;
    }
    let pp = PatchParams::apply("pullwarden.dev/bench").force();
    let repos: Api<pullwarden::api::Repository> = Api::namespaced(client.clone(), &n);
    repos
        .patch(
            "shop",
            &pp,
            &Patch::Apply(json!({
                "apiVersion": "pullwarden.dev/v1alpha1", "kind": "Repository", "metadata": {"name": "shop"},
                "spec": {"provider": "github", "url": info.clone_url, "apiUrl": emu.github_api_url(),
                    "allowInsecureHTTP": true, "interval": "30m",
                    "auth": {"secretRef": {"name": "shop-token"}},
                    "webhook": {"secretRef": {"name": "shop-hook"}}},
            })),
        )
        .await?;
    emu.add_hook(
        "acme/shop",
        HookSpec {
            url: format!("http://{}/hooks/github", op.webhook_addr),
            secret: Some(HOOK_SECRET.into()),
            events: vec![],
        },
    )
    .await?;
    // Let the Repository's first sync finish before counting.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let sha = pushed.after.clone();
    emu.reset_request_counts().await?;
    let gates: Api<PolicyGate> = Api::namespaced(client.clone(), &n);
    gates
        .patch(
            "bench",
            &pp,
            &Patch::Apply(gate_manifest(args.without_checks)),
        )
        .await?;
    // With CEL the `previewHealthy` rule is skipped by its `if` (no preview): 11 apply.
    let (cold_goal, review_goal) = match args.without_checks {
        false => ("10/11 rules passed: approvals 0/1", "11/11 rules passed"),
        true => ("11/12 rules passed: approvals 0/1", "12/12 rules passed"),
    };
    let cold_latency = wait_description(&emu, &sha, cold_goal).await?;
    let cold = window(&emu, args.settle).await?;

    emu.reset_request_counts().await?;
    emu.add_review("acme/shop", pr.number, "bob", "APPROVED")
        .await?;
    let review_latency = wait_description(&emu, &sha, review_goal).await?;
    let review = window(&emu, args.settle).await?;

    emu.reset_request_counts().await?;
    let patch =
        json!({"metadata": {"annotations": {"pullwarden.dev/reconcile-requested-at": "bench"}}});
    gates
        .patch("bench", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let start = Instant::now();
    loop {
        let g = gates.get("bench").await?;
        if g.status
            .as_ref()
            .and_then(|s| s.common.last_handled_reconcile_at.as_deref())
            == Some("bench")
        {
            break;
        }
        if start.elapsed() > TIMEOUT {
            bail!("the requested reconcile was not handled");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let unchanged = window(&emu, args.settle).await?;
    drop(op);
    Ok(json!({
        "benchmark": "bench-gate-forge",
        "files": args.files,
        "rules": 12,
        "rules_read_checks": !args.without_checks,
        "cold": {"status_after_ms": cold_latency.as_millis() as u64, "forge": summary(&cold)},
        "after_review_event": {"status_after_ms": review_latency.as_millis() as u64, "forge": summary(&review)},
        "unchanged_reconcile": {"forge": summary(&unchanged)},
    }))
}
