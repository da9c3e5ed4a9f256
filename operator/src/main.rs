//! The `pullwarden` binary: a thin command-line shell over the library.

use clap::{Parser, Subcommand};
use pullwarden::run::RunOptions;
use pullwarden::telemetry::{LogFormat, init_logging};

#[derive(Debug, Parser)]
#[command(
    name = "pullwarden",
    version,
    about = "Kubernetes operator for the whole pull-request loop"
)]
struct Cli {
    /// Log format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "PULLWARDEN_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the operator.
    Run(Box<RunOptions>),
    /// Print the CustomResourceDefinitions as YAML (crds/ is generated from this).
    Crd {
        /// Write one file per CRD into this directory instead of printing.
        #[arg(long)]
        out_dir: Option<std::path::PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd { out_dir: None } => {
            for crd in pullwarden::api::all_crds() {
                print!("---\n{}", pullwarden::api::crd_yaml(&crd));
            }
            Ok(())
        }
        Command::Crd { out_dir: Some(dir) } => {
            std::fs::create_dir_all(&dir)?;
            for (name, content) in pullwarden::api::crd_files() {
                let path = dir.join(name);
                std::fs::write(&path, content)?;
                println!("wrote {}", path.display());
            }
            Ok(())
        }
        Command::Run(opts) => {
            init_logging(cli.log_format);
            // rustls needs exactly one process-wide crypto provider; every TLS client here
            // (kube, octocrab, reqwest) is built on aws-lc-rs.
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(pullwarden::run::run(*opts))
        }
    }
}
