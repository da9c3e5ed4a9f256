//! `pullwarden run`: wires the Context, the admin and webhook servers, leader election and the
//! controllers together, and shuts them down cleanly on SIGTERM/SIGINT.

use crate::context::{Config, Context};
use crate::controller::{self, directory::KubeDirectory};
use crate::leader::{ElectionConfig, LeaderElector};
use crate::server::{Role, admin_router};
use crate::telemetry::Metrics;
use crate::webhook::WebhookState;
use anyhow::Context as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;
use tracing::{error, info};

/// Options of `pullwarden run`.
#[derive(Clone, Debug, clap::Args)]
pub struct RunOptions {
    /// Address of the admin server (`/metrics`, `/healthz`, `/readyz`).
    #[arg(long, default_value = "0.0.0.0:8080", env = "PULLWARDEN_ADMIN_ADDR")]
    pub admin_addr: SocketAddr,
    /// Address of the webhook server (`/hooks/github`, `/hooks/gitlab`, `/hooks/gitea`).
    #[arg(long, default_value = "0.0.0.0:8081", env = "PULLWARDEN_WEBHOOK_ADDR")]
    pub webhook_addr: SocketAddr,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "PULLWARDEN_NAMESPACE")]
    pub namespace: Option<String>,
    /// Elect a leader with a coordination.k8s.io Lease; only the leader runs controllers.
    #[arg(long, env = "PULLWARDEN_LEADER_ELECT")]
    pub leader_elect: bool,
    /// Namespace of the leader Lease (default: the watched namespace, the Pod's namespace, or
    /// `default`).
    #[arg(long, env = "PULLWARDEN_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// Name of the leader Lease (replicas with the same name and namespace elect one leader).
    #[arg(
        long,
        default_value = "pullwarden-leader",
        env = "PULLWARDEN_LEADER_ELECTION_ID"
    )]
    pub leader_election_id: String,
    /// This replica's identity (default: the Pod name from `POD_NAME`, else the host name + pid).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Limits of the webhook server (see the `webhook` module docs and docs/security.md).
    #[command(flatten)]
    pub webhook: crate::webhook::WebhookOptions,
    /// Directory for cached git fetches.
    #[arg(long, env = "PULLWARDEN_GIT_CACHE_DIR")]
    pub git_cache_dir: Option<PathBuf>,
    /// Operator-level safety settings (docs/security.md).
    #[command(flatten)]
    pub safety: crate::settings::SafetyOptions,
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "pullwarden".into());
    format!("{host}-{}", std::process::id())
}

/// Resolves when SIGTERM or SIGINT arrives.
async fn termination_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler can be installed");
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received, shutting down"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT received, shutting down"),
    }
}

/// A cloneable future that resolves once `rx` sees `true`.
fn signalled(
    mut rx: watch::Receiver<bool>,
) -> impl std::future::Future<Output = ()> + Send + Sync + Clone + 'static {
    let fut = async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    futures::FutureExt::shared(Box::pin(fut))
}

/// Runs the operator until SIGTERM (exit 0) or lost leadership (error: the process must exit so
/// it never acts on stale leadership).
pub async fn run(opts: RunOptions) -> anyhow::Result<()> {
    let kube_config = kube::Config::infer()
        .await
        .context("loading the Kubernetes configuration (KUBECONFIG or in-cluster)")?;
    let identity = opts.identity.clone().unwrap_or_else(default_identity);
    let config = Config {
        namespace: opts.namespace.clone(),
        instance: identity.clone(),
        git_cache_dir: opts
            .git_cache_dir
            .clone()
            .unwrap_or_else(|| Config::default().git_cache_dir),
        settings: crate::settings::Settings::from_options(&opts.safety)
            .map_err(|e| anyhow::anyhow!("invalid safety setting: {e}"))?,
        ..Config::default()
    };
    let metrics = Metrics::new();
    let ctx = Context::new(kube_config, config, metrics.clone())
        .context("building the Kubernetes client")?;
    let client = ctx.client.clone();
    let role = Arc::new(Role::default());

    let (stop_tx, stop_rx) = watch::channel(false);
    let stop = signalled(stop_rx);

    let admin = tokio::net::TcpListener::bind(opts.admin_addr)
        .await
        .with_context(|| format!("binding the admin server to {}", opts.admin_addr))?;
    info!(addr = %opts.admin_addr, "admin server listening");
    let admin_task = tokio::spawn(
        axum::serve(admin, admin_router(ctx.clone(), role.clone()))
            .with_graceful_shutdown(stop.clone())
            .into_future(),
    );

    let directory = KubeDirectory::start(ctx.clone(), opts.webhook.candidate_limits());
    let webhook_state = WebhookState::new(
        opts.webhook.config(),
        Arc::new(directory),
        metrics.webhook.clone(),
    );
    let webhook_listener = tokio::net::TcpListener::bind(opts.webhook_addr)
        .await
        .with_context(|| format!("binding the webhook server to {}", opts.webhook_addr))?;
    info!(addr = %opts.webhook_addr, "webhook server listening");
    let webhook_task = tokio::spawn(crate::webhook::serve(
        webhook_listener,
        webhook_state,
        stop.clone(),
    ));

    let signal_tx = stop_tx.clone();
    tokio::spawn(async move {
        termination_signal().await;
        let _ = signal_tx.send(true);
    });

    let mut lost_leadership = false;
    if opts.leader_elect {
        let lease_ns = opts
            .leader_election_namespace
            .clone()
            .or_else(|| opts.namespace.clone())
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| "default".into());
        let election = ElectionConfig {
            lease_name: opts.leader_election_id.clone(),
            ..ElectionConfig::new(&lease_ns, &identity)
        };
        let mut elector = LeaderElector::new(client.clone(), election);
        role.set_standby();
        info!(identity = %identity, namespace = %lease_ns, "campaigning for leadership");
        if elector.acquire(stop.clone()).await {
            // What this process wrote before a standby spell may have been edited since.
            ctx.forges.forget_written_comments();
            role.set_leader();
            ctx.leader.store(true, std::sync::atomic::Ordering::Release);
            metrics.leader.set(1);
            let (lost_tx, lost_rx) = watch::channel(false);
            let controllers_stop = {
                let stop = stop.clone();
                let lost = signalled(lost_rx);
                futures::FutureExt::shared(Box::pin(async move {
                    tokio::select! { _ = stop => {}, _ = lost => {} }
                }))
            };
            let controllers = tokio::spawn(controller::run_all(ctx.clone(), controllers_stop));
            tokio::select! {
                _ = elector.hold() => {
                    lost_leadership = true;
                    let _ = lost_tx.send(true);
                }
                _ = stop.clone() => {}
            }
            let _ = controllers.await;
            ctx.leader
                .store(false, std::sync::atomic::Ordering::Release);
            metrics.leader.set(0);
            if !lost_leadership {
                elector.release().await;
            }
        }
    } else {
        role.set_leader();
        ctx.leader.store(true, std::sync::atomic::Ordering::Release);
        controller::run_all(ctx.clone(), stop.clone()).await;
    }

    let _ = stop_tx.send(true);
    if let Err(e) = admin_task.await {
        error!(error = %e, "admin server task failed");
    }
    match webhook_task.await {
        Ok(Err(e)) => error!(error = %e, "webhook server failed"),
        Err(e) => error!(error = %e, "webhook server task failed"),
        Ok(Ok(())) => {}
    }
    if lost_leadership {
        anyhow::bail!("lost leadership; exiting so that only the new leader writes");
    }
    info!("shut down cleanly");
    Ok(())
}
