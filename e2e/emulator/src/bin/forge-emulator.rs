//! `forge-emulator`: the forge emulator as a standalone process, for the demo and for
//! measuring other GitOps tools side by side with Pullwarden (each tool gets its own token; the
//! admin API's `/_emulator/requests` then shows who asked what).
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use pullwarden_emulator::{Emulator, EmulatorConfig};

/// Emulates GitHub (`/`, `/api/v3`), GitLab (`/api/v4`) and Gitea (`/api/v1`) with real git
/// repositories served over smart HTTP. Admin API under `/_emulator`.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8880")]
    addr: SocketAddr,
    /// Directory for the bare repositories (created if missing; a temp dir when omitted).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Base URL clients reach the emulator at (default `http://<addr>`).
    #[arg(long)]
    public_url: Option<String>,
    /// Rate limit per token per window.
    #[arg(long, default_value_t = 5000)]
    rate_limit: u32,
    /// Rate limit for unauthenticated callers per window.
    #[arg(long, default_value_t = 60)]
    anonymous_rate_limit: u32,
    /// Rate-limit window in seconds.
    #[arg(long, default_value_t = 3600)]
    rate_limit_window: u64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let handle = Emulator::start(EmulatorConfig {
        addr: Some(args.addr),
        state_dir: args.state_dir,
        public_url: args.public_url,
        default_rate_limit: args.rate_limit,
        anonymous_rate_limit: args.anonymous_rate_limit,
        rate_limit_window_secs: args.rate_limit_window,
        ..Default::default()
    })
    .await?;
    println!(
        "forge-emulator listening on {} (state in {})",
        handle.url(),
        handle.state_dir().display()
    );
    println!(
        "  GitHub {}  GitHub Enterprise {}",
        handle.github_api_url(),
        handle.github_enterprise_api_url()
    );
    println!(
        "  GitLab {}  Gitea {}",
        handle.gitlab_api_url(),
        handle.gitea_api_url()
    );
    println!(
        "  admin  {}/_emulator (see docs/forge-emulator.md)",
        handle.url()
    );
    tokio::signal::ctrl_c().await?;
    handle.shutdown().await;
    Ok(())
}
