//! `collector`: the daemon's command line. Thin: parse, load configuration, run.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use collector::app::App;
use collector::config::{Config, EbpfMode, Overrides};
use collector::telemetry;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Exit code for bad usage or configuration (sysexits EX_USAGE, as linkerd does).
const EXIT_USAGE: u8 = 64;

#[derive(Parser)]
/// The command line.
#[command(name = "collector", version, about = "Host-level log and metric collector for containers on AWS ECS")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (no configuration needed: local directory sink and SQLite state under
    /// the data directory).
    Run {
        /// TOML configuration file (default: /etc/collector/config.toml when present).
        #[arg(long, env = "COLLECTOR_CONFIG")]
        config: Option<PathBuf>,
        /// Data directory for state and the local sink (default /var/lib/collector; also
        /// `data_dir` in TOML and COLLECTOR_DATA_DIR).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Print the effective configuration as TOML and exit.
        #[arg(long)]
        print_config: bool,
        /// Log as JSON lines instead of text.
        #[arg(long)]
        log_json: bool,
        /// eBPF discovery and death forensics: auto (when possible), on (required), off
        /// (also `discovery.ebpf` in TOML and COLLECTOR_DISCOVERY__EBPF).
        #[arg(long, value_enum)]
        ebpf: Option<EbpfMode>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config, data_dir, print_config, log_json, ebpf } => {
            let overrides = Overrides { data_dir };
            let config = match Config::load(config.as_deref(), &overrides) {
                Ok(mut c) => {
                    // The flag beats every other layer.
                    if let Some(mode) = ebpf {
                        c.discovery.ebpf = mode;
                    }
                    c
                }
                Err(e) => {
                    eprintln!("collector: {e}");
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            if print_config {
                return match config.to_toml() {
                    Ok(t) => {
                        print!("{t}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("collector: {e}");
                        ExitCode::FAILURE
                    }
                };
            }
            telemetry::init(if log_json { telemetry::LogFormat::Json } else { telemetry::LogFormat::Text });
            match run(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("collector: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn run(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let mut term = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            trigger.cancel();
        });
        App::new(config).run(shutdown).await.context("collector failed")
    })
}
