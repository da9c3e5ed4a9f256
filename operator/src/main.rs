//! The `pullwarden` binary: a thin command-line shell over the library.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};
use pullwarden::gate::offline::{self, GateTestOptions, OutputFormat};
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
    /// PolicyGate tools that need no cluster.
    Gate {
        #[command(subcommand)]
        command: GateCommand,
    },
}

#[derive(Debug, Subcommand)]
enum GateCommand {
    /// Evaluate a PolicyGate against one pull request offline and print the per-rule verdict.
    /// Exit code: 0 passed, 1 failed or pending, 2 invalid input or an evaluation error.
    Test(GateTestArgs),
}

#[derive(Debug, Args)]
struct GateTestArgs {
    /// The PolicyGate manifest (YAML, as applied with kubectl; the first PolicyGate in it).
    #[arg(long)]
    gate: PathBuf,
    /// The pull request: a snapshot JSON, a GitHub pull request (or bundle with its files,
    /// reviews, commits, statuses, check runs) or a GitLab merge request (or bundle).
    #[arg(long)]
    pr: PathBuf,
    /// The PolicyGate to pick when the manifest holds several.
    #[arg(long)]
    name: Option<String>,
    /// Show every reason in full and what each rule's outcome means.
    #[arg(long)]
    explain: bool,
    /// `text` (a table) or `json` (the verdict).
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Output {
    Text,
    Json,
}

/// Runs `gate test`: the only I/O is reading the two files and printing.
fn gate_test(args: GateTestArgs) -> u8 {
    let read = |flag: &str, path: &Path| {
        std::fs::read_to_string(path).map_err(|e| format!("--{flag}: {}: {e}", path.display()))
    };
    let (gate, pr) = match (read("gate", &args.gate), read("pr", &args.pr)) {
        (Ok(g), Ok(p)) => (g, p),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("{e}");
            return offline::EXIT_INVALID;
        }
    };
    let opts = GateTestOptions {
        name: args.name,
        explain: args.explain,
        format: match args.output {
            Output::Text => OutputFormat::Text,
            Output::Json => OutputFormat::Json,
        },
    };
    let out = offline::gate_test(&gate, &pr, &opts);
    print!("{}", out.stdout);
    eprint!("{}", out.stderr);
    let _ = std::io::stdout().flush();
    out.exit_code
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
        Command::Gate {
            command: GateCommand::Test(args),
        } => std::process::exit(i32::from(gate_test(args))),
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
