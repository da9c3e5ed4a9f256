//! `bench-preview`: how fast a pull request gets a preview, how fast it goes away, and what one
//! preview lifetime costs the kube-apiserver and the forge.
//!
//! Flow: a control plane (`KUBECONFIG` when set, else a fresh one that dies with this process,
//! started with an audit log of the operator's requests), the forge emulator in this process
//! with one repository holding the realistic ten-object preview app
//! (operator/tests/fixtures/preview/app), a webhook from the emulator to the operator, one
//! operator process (real binary, least-privilege RBAC, JSON debug log), and a Repository that
//! previews pull requests labelled `preview`. Then, `--iterations` times, one preview lifetime:
//! open a labelled pull request → Ready → push to it → Ready at the new head → close → gone, and
//! measure
//! - webhook → first status: from the pull request being opened (the emulator sends the
//!   webhook at once) to the first `pullwarden/preview` commit status on its head SHA;
//! - open → Ready: to the PreviewEnvironment being `Ready` at that SHA (namespace, confinement,
//!   ten objects applied by impersonation, Deployment Available through kwok, write-back);
//! - push → Ready: from the push to `Ready` at the new SHA;
//! - teardown: from closing the pull request to the preview namespace being gone;
//! - requests per phase (open→Ready, push→Ready, close→gone; back-to-back windows, each ending
//!   `--settle` after its goal so late echoes land in the phase that caused them): the
//!   kube-apiserver requests of the operator's own user and of the impersonated preview user by
//!   verb and resource (audit log, [`pullwarden_bench::audit`]), the forge requests by kind
//!   (emulator counts, [`pullwarden_bench::forge`]), and the operator's own count of
//!   renders, deploys and syncs (its log, [`pullwarden_bench::oplog`]).
//!
//! Prints one JSON object (progress on stderr). Times are wall-clock on a shared machine: read
//! them as orders of magnitude, together with the machine facts in the output. Request counts do
//! not depend on the machine's speed except where the operator polls (today: every second while
//! a Deployment is not yet available).

use anyhow::{Context as _, Result, anyhow, bail};
use clap::Parser;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use pullwarden::api::{PreviewEnvironment, PreviewPhase, Repository};
use pullwarden::controller::preview::confine::PREVIEW_USER;
use pullwarden_bench::window::{Window, consecutive};
use pullwarden_bench::{
    Plane, audit, forge, oplog, parse_duration, procfs, rates, run_interruptible, window,
};
use pullwarden_emulator::{
    ClientCounts, Emulator, EmulatorConfig, EmulatorHandle, HookSpec, PullSpec, PushSpec, RepoSpec,
};
use pullwarden_harness::cluster::{Cluster, TestNamespace, apply_crds};
use pullwarden_harness::operator::{
    OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT, Operator, OperatorOptions,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const TOKEN: &str = "ghp_bench_preview";
const HOOK_SECRET: &str = "bench-preview-hook";
const TIMEOUT: Duration = Duration::from_secs(180);
/// The phases of one preview lifetime, in order.
const PHASES: [&str; 3] = ["open_to_ready", "push_to_ready", "close_to_gone"];

#[derive(Debug, Parser)]
#[command(
    name = "bench-preview",
    about = "PR-open → preview-Ready, push → Ready and teardown times for a ten-object preview, \
             with the kube-apiserver and forge requests of each phase"
)]
struct Args {
    /// Preview lifetimes (open → Ready → push → Ready → close → gone), one after the other.
    #[arg(long, default_value_t = 5)]
    iterations: usize,
    /// How long each phase goes on after its goal was reached (echoes of the operator's own
    /// writes, requeues), before the next one starts.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    settle: Duration,
    /// Also write the JSON result to this file.
    #[arg(long)]
    output: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    pullwarden_bench::report("bench-preview", args.output.as_deref(), run_outside(&args))
}

/// Starts or adopts the cluster, runs the benchmark, stops what it started however `run` ended.
fn run_outside(args: &Args) -> Result<Value> {
    let users: Vec<String> = audited_users().map(|(_, user)| user).collect();
    let users = users.join(",");
    let plane = Plane::start_with_env("bench-preview", &[("PULLWARDEN_AUDIT_USERS", &users)])?;
    run_interruptible(run(&plane, args))
}

/// The identities whose kube-apiserver requests are counted: label → user name.
fn audited_users() -> impl Iterator<Item = (&'static str, String)> {
    [
        (
            "operator",
            format!("system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT}"),
        ),
        ("preview", PREVIEW_USER.to_string()),
    ]
    .into_iter()
}

fn preview_app() -> Result<BTreeMap<String, Option<String>>> {
    pullwarden_harness::fixtures::preview_app("deploy/preview")
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

/// What one preview lifetime recorded while it ran; its requests are counted after the run.
struct Lifetime {
    /// The PreviewEnvironment, which is also its namespace.
    preview: String,
    /// Objects the preview applied (`status.inventoryCount` when Ready).
    objects: u32,
    /// `PHASES.len() + 1` instants: the phases are the windows between them.
    boundaries: Vec<Timestamp>,
    /// The bench token's emulator counts at each boundary.
    forge: Vec<ClientCounts>,
}

async fn token_counts(emu: &EmulatorHandle) -> Result<ClientCounts> {
    Ok(emu
        .request_counts()
        .await?
        .clients
        .get(TOKEN)
        .cloned()
        .unwrap_or_default())
}

/// Ends a phase `settle` after its goal: records the boundary and the forge counts there.
async fn end_phase(
    emu: &EmulatorHandle,
    settle: Duration,
    boundaries: &mut Vec<Timestamp>,
    forge: &mut Vec<ClientCounts>,
) -> Result<()> {
    tokio::time::sleep(settle).await;
    boundaries.push(Timestamp::now());
    forge.push(token_counts(emu).await?);
    Ok(())
}

/// Waits until the preview is `Ready` at `sha`; returns it.
async fn wait_ready(
    previews: &Api<PreviewEnvironment>,
    name: &str,
    sha: &str,
) -> Result<PreviewEnvironment> {
    let start = Instant::now();
    loop {
        if let Some(pe) = previews.get_opt(name).await?
            && pe.status.as_ref().is_some_and(|s| {
                s.phase == PreviewPhase::Ready && s.deployed_sha.as_deref() == Some(sha)
            })
        {
            return Ok(pe);
        }
        if start.elapsed() > TIMEOUT {
            bail!("preview {name} not Ready at {sha} after {TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn run(plane: &Plane, args: &Args) -> Result<Value> {
    let cluster: &Cluster = plane.cluster();
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

    let setup_start = Timestamp::now();
    let setup_forge = token_counts(&emu).await?;
    let op = Operator::start(
        cluster,
        OperatorOptions {
            namespace: Some(n.clone()),
            // The operator's own account of renders and deploys (see bench::oplog).
            env: vec![("RUST_LOG".into(), "info,pullwarden=debug".into())],
            args: vec!["--log-format".into(), "json".into()],
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
            json!({"metadata": {"name": name, "labels": {"pullwarden.dev/credentials": "true"}},
                   "stringData": {key: value}}),
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
    let (mut first_status, mut to_ready, mut push_to_ready) = (Vec::new(), Vec::new(), Vec::new());
    let (mut terminating, mut teardown) = (Vec::new(), Vec::new());
    let mut lifetimes: Vec<Lifetime> = Vec::new();
    let mut peak_rss = 0.0f64;
    for i in 0..args.iterations {
        let mut boundaries = vec![Timestamp::now()];
        let mut forge_counts = vec![token_counts(&emu).await?];

        // Phase 1: branch pushed, pull request opened → Ready.
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
        let ready = wait_ready(&previews, &name, &sha).await?;
        to_ready.push(opened.elapsed().as_secs_f64());
        let objects = ready.status.map_or(0, |s| s.inventory_count);
        if let Some(mem) = procfs::memory(pid) {
            peak_rss = peak_rss.max(mem.hwm_mib());
        }
        end_phase(&emu, args.settle, &mut boundaries, &mut forge_counts).await?;

        // Phase 2: a push to the pull request → Ready at the new head.
        let pushed = Instant::now();
        let push = emu
            .push_to_pull(
                &repo_path,
                pr.number,
                PushSpec {
                    files: [(format!("src/change-{i}.txt"), Some(format!("{i} again\n")))].into(),
                    ..Default::default()
                },
            )
            .await?;
        wait_ready(&previews, &name, &push.after).await?;
        push_to_ready.push(pushed.elapsed().as_secs_f64());
        end_phase(&emu, args.settle, &mut boundaries, &mut forge_counts).await?;

        // Phase 3: closed → the namespace and the PreviewEnvironment gone.
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
        poll_until(
            "PreviewEnvironment gone",
            Duration::from_millis(100),
            || async { Ok(previews.get_opt(&name).await?.is_none()) },
        )
        .await?;
        end_phase(&emu, args.settle, &mut boundaries, &mut forge_counts).await?;
        eprintln!(
            "bench-preview: #{i}: first status {:.3}s, ready {:.3}s, push → ready {:.3}s, namespace deleting {:.3}s, gone {:.3}s",
            first_status[i], to_ready[i], push_to_ready[i], terminating[i], teardown[i]
        );
        lifetimes.push(Lifetime {
            preview: name,
            objects,
            boundaries,
            forge: forge_counts,
        });
    }
    let setup_end = lifetimes
        .first()
        .map_or_else(Timestamp::now, |l| l.boundaries[0]);
    let setup_forge_end = match lifetimes.first() {
        Some(l) => l.forge[0].clone(),
        None => token_counts(&emu).await?,
    };
    let mem = procfs::memory(pid);
    let machine = procfs::machine();
    let operator_bin = pullwarden_harness::operator::operator_binary()?;
    let log_text = std::fs::read_to_string(&op.log_path)
        .with_context(|| format!("reading {}", op.log_path.display()))?;
    drop(op);

    let requests = count_requests(
        plane,
        &lifetimes,
        &oplog::parse(&log_text),
        &n,
        Window {
            phase: "setup",
            start: setup_start,
            end: setup_end,
        },
        &rates::delta_counts(&setup_forge, &setup_forge_end),
        args.settle,
    )?;
    Ok(json!({
        "benchmark": "preview",
        "iterations": args.iterations,
        "objects_per_preview": lifetimes.iter().map(|l| l.objects).max().unwrap_or(0),
        "webhook_to_first_status_s": summary(&first_status),
        "open_to_ready_s": summary(&to_ready),
        "push_to_ready_s": summary(&push_to_ready),
        "close_to_namespace_deleting_s": summary(&terminating),
        "close_to_namespace_gone_s": summary(&teardown),
        "requests": requests,
        "operator": {
            "rss_mib": mem.as_ref().map(|m| procfs::round1(m.rss_mib())),
            "peak_rss_mib": procfs::round1(peak_rss.max(mem.as_ref().map(|m| m.hwm_mib()).unwrap_or(0.0))),
            "binary": operator_bin.display().to_string(),
            "profile": profile_of(&operator_bin),
        },
        "machine": serde_json::to_value(&machine)?,
    }))
}

/// The requests of every phase of every lifetime, their mean per lifetime, and the figures the
/// goal of issue 10 is stated in.
fn count_requests(
    plane: &Plane,
    lifetimes: &[Lifetime],
    log: &[oplog::Line],
    repository: &str,
    setup: Window,
    setup_forge: &ClientCounts,
    settle: Duration,
) -> Result<Value> {
    let audit_path = plane.audit_log();
    let api = match &audit_path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let (api, skipped) = audit::parse(&text);
            if skipped > 0 {
                eprintln!(
                    "bench-preview: {skipped} lines of {} were not audit events",
                    path.display()
                );
            }
            Some(api)
        }
        None => {
            eprintln!(
                "bench-preview: no kube-apiserver audit log (an adopted cluster not started with \
                 PULLWARDEN_AUDIT_USERS); kube-apiserver requests are not counted"
            );
            None
        }
    };
    let users: Vec<(&str, String)> = audited_users().collect();
    let labels: Vec<(&str, &str)> = users.iter().map(|(l, u)| (*l, u.as_str())).collect();
    let operator_user = users[0].1.as_str();
    let kube = |w: &Window| -> Value {
        api.as_ref().map_or(Value::Null, |api| {
            audit::to_json(&audit::count(
                api.iter().filter(|r| w.contains(r.at)),
                &labels,
            ))
        })
    };
    let phase = |w: &Window, delta: &ClientCounts, preview: &str| -> Value {
        json!({
            "kube": kube(w),
            "forge": forge::to_json(delta),
            "operator_log": oplog::count(log.iter().filter(|l| w.contains(l.at)), preview, repository),
        })
    };

    let mut detailed = Vec::new();
    let mut per_iteration = Vec::new();
    for l in lifetimes {
        let mut out = serde_json::Map::new();
        let mut brief = serde_json::Map::new();
        let windows = consecutive(&PHASES, &l.boundaries);
        for (k, w) in windows.iter().enumerate() {
            let p = phase(
                w,
                &rates::delta_counts(&l.forge[k], &l.forge[k + 1]),
                &l.preview,
            );
            brief.insert(w.phase.into(), headline(&p));
            out.insert(w.phase.into(), p);
        }
        let whole = Window {
            phase: "lifetime",
            start: l.boundaries[0],
            end: l.boundaries[PHASES.len()],
        };
        let forge_delta = rates::delta_counts(&l.forge[0], &l.forge[PHASES.len()]);
        let total = phase(&whole, &forge_delta, &l.preview);
        let in_lifetime: Option<Vec<&audit::ApiRequest>> = api
            .as_ref()
            .map(|api| api.iter().filter(|r| whole.contains(r.at)).collect());
        let g = goal(
            l,
            &total,
            in_lifetime.as_deref(),
            operator_user,
            &forge_delta,
        );
        brief.insert("lifetime".into(), headline(&total));
        brief.insert("goal".into(), g.clone());
        out.insert("lifetime".into(), total);
        out.insert("goal".into(), g);
        detailed.push(Value::Object(out));
        per_iteration.push(Value::Object(brief));
    }
    let counters: serde_json::Map<String, Value> = oplog::COUNTERS
        .iter()
        .map(|c| (c.name.to_string(), json!(c.message)))
        .collect();
    Ok(json!({
        "phases": PHASES,
        "settle_s": settle.as_secs_f64(),
        "identities": users.iter().map(|(l, u)| (l.to_string(), json!(u))).collect::<serde_json::Map<_, _>>(),
        "audit_log": audit_path.map(|p| p.display().to_string()),
        "operator_log_messages": counters,
        "per_lifetime": window::mean(&detailed),
        "per_iteration": per_iteration,
        "setup": phase(&setup, setup_forge, ""),
    }))
}

/// The few numbers of a phase worth reading side by side across iterations.
fn headline(phase: &Value) -> Value {
    json!({
        "kube_operator": phase["kube"]["operator"]["total"].as_u64().unwrap_or(0),
        "kube_preview": phase["kube"]["preview"]["total"].as_u64().unwrap_or(0),
        "forge": phase["forge"]["total"],
        "forge_charged": phase["forge"]["charged"],
        "renders": phase["operator_log"]["renders"],
        "deploys": phase["operator_log"]["deploys"],
    })
}

/// Issue 10's goal for one lifetime, measured beside it: applies = objects × deploys plus the
/// confinement once per namespace, no re-render while waiting, at most three forge requests per
/// deploy beyond the write-back itself.
fn goal(
    l: &Lifetime,
    total: &Value,
    api: Option<&[&audit::ApiRequest]>,
    operator_user: &str,
    forge_delta: &ClientCounts,
) -> Value {
    let deploys = total["operator_log"]["deploys"].as_u64().unwrap_or(0);
    let renders = total["operator_log"]["renders"].as_u64().unwrap_or(0);
    let ns = l.preview.as_str();
    let (object_applies, confinement, confinement_objects) = match api {
        Some(api) => {
            let object_applies = api
                .iter()
                .filter(|r| r.acting_user() == PREVIEW_USER && r.verb == "patch")
                .count();
            // The operator's own applies of the preview namespace and of what it puts in it.
            let confinement: Vec<_> = api
                .iter()
                .filter(|r| r.impersonated.is_none() && r.user == operator_user)
                .filter(|r| r.verb == "patch")
                .filter(|r| {
                    r.namespace.as_deref() == Some(ns)
                        || (r.resource == "namespaces" && r.name.as_deref() == Some(ns))
                })
                .collect();
            let distinct: std::collections::BTreeSet<_> =
                confinement.iter().map(|r| (&r.resource, &r.name)).collect();
            (
                json!(object_applies),
                json!(confinement.len()),
                json!(distinct.len()),
            )
        }
        None => (Value::Null, Value::Null, Value::Null),
    };
    let write_back = forge::by_kind(forge_delta)
        .get("write_back")
        .map_or(0, |k| k.requests);
    let beyond = forge_delta.total.saturating_sub(write_back);
    json!({
        "objects": l.objects,
        "deploys": deploys,
        "object_applies": object_applies,
        "object_applies_goal": u64::from(l.objects) * deploys,
        "confinement_applies": confinement,
        "confinement_applies_goal": confinement_objects,
        "renders": renders,
        "re_renders": renders.saturating_sub(deploys),
        "re_renders_goal": 0,
        "forge_write_back": write_back,
        "forge_beyond_write_back": beyond,
        "forge_beyond_write_back_goal": 3 * deploys,
    })
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
