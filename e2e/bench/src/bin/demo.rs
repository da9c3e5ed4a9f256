//! `demo`: Pullwarden's whole loop on this machine, no Docker, no internet.
//!
//! Brings up a local control plane (etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler, kwok; or the cluster of `KUBECONFIG`), installs the CRDs and the
//! least-privilege RBAC, starts the forge emulator (standing in for GitHub) and the operator, applies
//! the examples (`examples/*.yaml`, into namespace `team-shop`; they point at github.com, which
//! is unreachable here, so they show how Pullwarden reports that), then follows a repository
//! in the emulator: a pull request labelled `preview` is opened, its preview deployed into a
//! confined namespace, and the preview URL, the commit status and the sticky comment are
//! printed. Then it keeps everything running for you to explore until Ctrl-C (or exits at once
//! with `--exit`).

use anyhow::{Context as _, Result, anyhow, bail};
use clap::Parser;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use pullwarden::api::{PreviewEnvironment, PreviewPhase, Repository};
use pullwarden_emulator::{
    Emulator, EmulatorConfig, EmulatorHandle, HookSpec, PullSpec, PushSpec, RepoSpec,
};
use pullwarden_harness::cluster::{Cluster, apply_crds, repo_root};
use pullwarden_harness::operator::{Operator, OperatorOptions};
use serde_json::json;
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const NS: &str = "demo";
const TOKEN: &str = "ghp_demo_token";
const HOOK_SECRET: &str = "demo-webhook-secret";
const REPO: &str = "acme/shop";
const TIMEOUT: Duration = Duration::from_secs(180);

#[derive(Debug, Parser)]
#[command(
    name = "demo",
    about = "Pullwarden end to end on a local control plane with the forge emulator"
)]
struct Args {
    /// Exit once the preview is shown instead of waiting for Ctrl-C.
    #[arg(long)]
    exit: bool,
    /// Control plane state directory (kept while the demo runs).
    #[arg(long, default_value = "/tmp/pullwarden-demo")]
    dir: std::path::PathBuf,
}

fn say(msg: impl AsRef<str>) {
    eprintln!("\x1b[1m==>\x1b[0m {}", msg.as_ref());
}

fn main() -> ExitCode {
    let args = Args::parse();
    let cluster = match Cluster::from_env() {
        Some(c) => {
            say("using the cluster of KUBECONFIG");
            c
        }
        None => {
            say(format!(
                "starting a local control plane in {} (first run: builds Kubernetes once)",
                args.dir.display()
            ));
            match Cluster::start(&args.dir, 1, Some(std::process::id())) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("demo: {e:#}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        tokio::select! {
            r = run(&cluster, &args) => r,
            _ = tokio::signal::ctrl_c() => { say("stopping"); Ok(()) }
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(5));
    if cluster.state_dir().is_some()
        && let Err(e) = cluster.stop()
    {
        eprintln!("demo: {e:#}");
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn preview_app() -> Result<BTreeMap<String, Option<String>>> {
    pullwarden_harness::fixtures::preview_app("deploy/preview")
        .context("reading the preview app fixture")
}

async fn secret(client: &Client, ns: &str, name: &str, key: &str, value: &str) -> Result<()> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let s: Secret = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"pullwarden.dev/credentials": "true"}},
        "stringData": {key: value},
    }))?;
    if api.create(&PostParams::default(), &s).await.is_err() {
        api.replace(name, &PostParams::default(), &s).await?;
    }
    Ok(())
}

async fn run(cluster: &Cluster, args: &Args) -> Result<()> {
    let client = cluster.client().await?;
    say("installing the CRDs (crds/)");
    apply_crds(&client).await?;
    for ns in [NS, "team-shop"] {
        let _ = cluster.kubectl(["create", "namespace", ns]).await;
    }

    say("starting the forge emulator (GitHub stand-in)");
    let emu: EmulatorHandle = Emulator::start(EmulatorConfig::default()).await?;
    emu.token(TOKEN, "pullwarden-bot").await?;
    let info = emu
        .create_repo(RepoSpec {
            path: REPO.into(),
            private: true,
            ..Default::default()
        })
        .await?;
    emu.push(
        REPO,
        PushSpec {
            branch: "main".into(),
            files: preview_app()?,
            message: Some("Add the preview app".into()),
            ..Default::default()
        },
    )
    .await?;

    say("starting Pullwarden (least-privilege ServiceAccount from config/rbac)");
    let op = Operator::start(cluster, OperatorOptions::default()).await?;
    op.wait_ready(TIMEOUT).await?;

    say(
        "applying examples/ into namespace team-shop (they follow github.com: expect a Transient forge error here, no internet)",
    );
    for file in [
        "repository.yaml",
        "previewenvironment.yaml",
        "policygate.yaml",
        "healthcheck.yaml",
        "plugin.yaml",
    ] {
        let text = std::fs::read_to_string(repo_root().join("examples").join(file))?;
        cluster
            .kubectl_with_stdin(["apply", "-f", "-"], &text)
            .await
            .with_context(|| format!("applying examples/{file}"))?;
    }

    say(format!(
        "following {REPO} in the emulator: Repository demo/shop, previews for PRs labelled `preview`"
    ));
    secret(&client, NS, "shop-token", "token", TOKEN).await?;
    secret(&client, NS, "shop-webhook", "secret", HOOK_SECRET).await?;
    let repos: Api<Repository> = Api::namespaced(client.clone(), NS);
    let manifest = json!({
        "apiVersion": "pullwarden.dev/v1alpha1", "kind": "Repository", "metadata": {"name": "shop"},
        "spec": {
            "provider": "github", "url": info.clone_url, "apiUrl": emu.github_api_url(), "allowInsecureHTTP": true,
            "auth": {"secretRef": {"name": "shop-token"}}, "webhook": {"secretRef": {"name": "shop-webhook"}},
            "interval": "1m", "pullRequests": {"labels": ["preview"]},
            "preview": {"path": "deploy/preview", "host": "pr-{{number}}.shop.preview.localhost", "vars": {"image": "registry.local/acme/shop"}, "ttl": "72h"},
        }
    });
    repos
        .patch(
            "shop",
            &PatchParams::apply("pullwarden.dev/demo").force(),
            &Patch::Apply(&manifest),
        )
        .await?;
    emu.add_hook(
        REPO,
        HookSpec {
            url: format!("http://{}/hooks/github", op.webhook_addr),
            secret: Some(HOOK_SECRET.into()),
            events: vec![],
        },
    )
    .await?;

    emu.create_branch(REPO, "add-cart", Some("main")).await?;
    emu.push(
        REPO,
        PushSpec {
            branch: "add-cart".into(),
            files: [("src/cart.txt".to_string(), Some("cart\n".to_string()))].into(),
            message: Some("Add a cart".into()),
            ..Default::default()
        },
    )
    .await?;
    let started = Instant::now();
    let pr = emu
        .open_pull(
            REPO,
            PullSpec {
                head: "add-cart".into(),
                title: "Add a shopping cart".into(),
                author: Some("alice".into()),
                labels: vec!["preview".into()],
                ..Default::default()
            },
        )
        .await?;
    say(format!(
        "opened pull request #{} ({}) with label `preview`",
        pr.number,
        &pr.head_sha[..7]
    ));

    let previews: Api<PreviewEnvironment> = Api::namespaced(client.clone(), NS);
    let name = format!("shop-pr-{}", pr.number);
    let ready = loop {
        if let Some(pe) = previews.get_opt(&name).await? {
            let st = pe.status.clone().unwrap_or_default();
            if st.phase == PreviewPhase::Ready {
                break pe;
            }
            if st.phase == PreviewPhase::Failed {
                bail!("the preview failed: {}", st.message.unwrap_or_default());
            }
        }
        if started.elapsed() > TIMEOUT {
            bail!(
                "the preview was not Ready after {TIMEOUT:?}; operator log: {}",
                op.log_path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let st = ready.status.clone().unwrap_or_default();
    say(format!(
        "preview Ready after {:.1}s",
        started.elapsed().as_secs_f64()
    ));
    println!();
    println!("  Preview URL:   {}", st.url.as_deref().unwrap_or("-"));
    println!(
        "  Namespace:     {} ({} objects, Pod Security restricted)",
        st.namespace.as_deref().unwrap_or("-"),
        st.inventory_count
    );
    println!(
        "  Deployed SHA:  {}",
        st.deployed_sha.as_deref().unwrap_or("-")
    );
    for s in emu.statuses(REPO, Some(&pr.head_sha)).await? {
        println!(
            "  PR status:     {} = {} — {} → {}",
            s.context,
            s.state,
            s.description.unwrap_or_default(),
            s.target_url.unwrap_or_default()
        );
    }
    for d in emu.deployments(REPO).await? {
        if let Some(last) = d.statuses.last() {
            println!(
                "  Deployment:    {} = {} → {}",
                d.environment,
                last.state,
                last.environment_url.clone().unwrap_or_default()
            );
        }
    }
    if let Some(c) = emu.comments(REPO, pr.number).await?.into_iter().next() {
        println!("\n  Sticky comment on #{}:\n", pr.number);
        for line in c.body.lines() {
            println!("    {line}");
        }
    }
    println!();
    let table = cluster
        .kubectl(["get", "pullwarden", "-A"])
        .await
        .unwrap_or_default();
    println!("$ kubectl get pullwarden -A\n{table}");

    if args.exit {
        return Ok(());
    }
    let kubectl_dir = cluster
        .bin_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    println!("Everything keeps running. In another shell:");
    println!(
        "  export KUBECONFIG={}",
        cluster.kubeconfig().to_string_lossy()
    );
    if !kubectl_dir.is_empty() {
        println!("  export PATH={kubectl_dir}:$PATH");
    }
    println!("  kubectl get previewenvironments -n {NS} -w");
    println!(
        "  curl -s -XPOST {}/_emulator/repos/{REPO}/-/pulls/{}/close   # close the PR: the preview goes away",
        emu.url(),
        pr.number
    );
    println!(
        "  curl -s {}/metrics | grep ^pullwarden_",
        format_args!("http://{}", op.admin_addr)
    );
    println!(
        "Forge emulator admin API: {}/_emulator (docs/forge-emulator.md). Operator log: {}",
        emu.url(),
        op.log_path.display()
    );
    println!("Press Ctrl-C to stop everything.");
    std::future::pending::<()>().await;
    drop(op);
    Err(anyhow!("unreachable"))
}
