//! `collector`: the daemon's command line. Thin: parse, load configuration, run.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use collector::app::App;
use collector::config::{Config, EbpfMode, Overrides};
use collector::inspect::{ColorChoice, InspectArgs, KindFilter, Outcome, TailArgs};
use collector::telemetry;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Exit code for bad usage or configuration (sysexits EX_USAGE, as linkerd does).
const EXIT_USAGE: u8 = 64;

/// `inspect` and `tail` exit codes, for scripts: found, not found, bad usage (clap's too).
const EXIT_FOUND: u8 = 0;
/// See [`EXIT_FOUND`].
const EXIT_NOT_FOUND: u8 = 1;
/// See [`EXIT_FOUND`].
const EXIT_BAD_ARGUMENT: u8 = 2;

#[derive(Parser)]
/// The command line.
#[command(
    name = "collector",
    version,
    about = "Host-level log and metric collector for containers on AWS ECS"
)]
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
    /// Show what the collector knows about a PID, container, cgroup or ECS task: the whole
    /// chain from processes to where its lines went. Without an argument: every task and
    /// container, one line each. Asks the running daemon, or reads the state database and
    /// the host's files when none runs. Exit 0 found, 1 not found, 2 bad argument.
    Inspect {
        /// A PID, a container id (full or short), a container name, a cgroup id or path, a
        /// task ARN or a task id (32 hex or UUID).
        thing: Option<String>,
        /// Take THING as this kind only (`1234`: a PID, a cgroup id or a short id?).
        #[arg(long, requires = "thing", value_parser = clap::builder::PossibleValuesParser::new(KindFilter::VALUES))]
        kind: Option<String>,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
        /// Without THING: list removed containers too.
        #[arg(long, conflicts_with = "thing")]
        all: bool,
        /// Do not ask the daemon; read the state database and the host's files.
        #[arg(long)]
        offline: bool,
        #[command(flatten)]
        common: ClientArgs,
    },
    /// Follow the lines of a task (every container, prefixed with its name) or of one
    /// container, live, as `docker logs -f` does for one. Needs the running daemon.
    Tail {
        /// A task ARN or id, or a container id, short id or name (any `inspect` argument).
        thing: String,
        /// Take THING as this kind only.
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(KindFilter::VALUES))]
        kind: Option<String>,
        /// Show the time each line was written.
        #[arg(long, short = 't')]
        timestamps: bool,
        #[command(flatten)]
        common: ClientArgs,
    },
}

/// Options of the commands that talk to a daemon: which one (by its configuration).
#[derive(clap::Args)]
struct ClientArgs {
    /// The daemon's TOML configuration (default: /etc/collector/config.toml when present).
    #[arg(long, env = "COLLECTOR_CONFIG")]
    config: Option<PathBuf>,
    /// The daemon's data directory (state database, control socket).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Colour the output: auto (when a terminal and NO_COLOR is unset), always, never.
    #[arg(long, default_value = "auto", value_parser = ["auto", "always", "never"])]
    color: String,
}

impl ClientArgs {
    /// The configuration and colour choice, or the exit code for a bad configuration.
    fn load(&self) -> Result<(Config, ColorChoice), ExitCode> {
        let overrides = Overrides {
            data_dir: self.data_dir.clone(),
        };
        let config = Config::load(self.config.as_deref(), &overrides).map_err(|e| {
            eprintln!("collector: {e}");
            ExitCode::from(EXIT_BAD_ARGUMENT)
        })?;
        let color = match self.color.as_str() {
            "always" => ColorChoice::Always,
            "never" => ColorChoice::Never,
            _ => ColorChoice::Auto,
        };
        Ok((config, color))
    }
}

fn exit(outcome: Outcome) -> ExitCode {
    ExitCode::from(match outcome {
        Outcome::Found => EXIT_FOUND,
        Outcome::NotFound => EXIT_NOT_FOUND,
        Outcome::Usage => EXIT_BAD_ARGUMENT,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Inspect {
            thing,
            kind,
            json,
            all,
            offline,
            common,
        } => {
            let (config, color) = match common.load() {
                Ok(c) => c,
                Err(code) => return code,
            };
            let kind = kind.as_deref().and_then(KindFilter::parse);
            let args = InspectArgs {
                config,
                thing,
                kind,
                json,
                all,
                offline,
                color,
            };
            exit(collector::inspect::inspect_command(
                args,
                &mut std::io::stdout().lock(),
                &mut std::io::stderr().lock(),
            ))
        }
        Command::Tail {
            thing,
            kind,
            timestamps,
            common,
        } => {
            let (config, color) = match common.load() {
                Ok(c) => c,
                Err(code) => return code,
            };
            let kind = kind.as_deref().and_then(KindFilter::parse);
            let args = TailArgs {
                config,
                thing,
                kind,
                timestamps,
                color,
            };
            exit(collector::inspect::tail_command(
                args,
                &mut std::io::stdout().lock(),
                &mut std::io::stderr().lock(),
            ))
        }
        Command::Run {
            config,
            data_dir,
            print_config,
            log_json,
            ebpf,
        } => {
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
            telemetry::init(if log_json {
                telemetry::LogFormat::Json
            } else {
                telemetry::LogFormat::Text
            });
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

/// Raises the soft limit on open files to the hard one: the daemon holds a descriptor per
/// live log file, per rotated file not yet read, and the rotation guard one per file of each
/// watched chain, so 1,000 containers need thousands; the usual soft default is 1,024
/// (getrlimit(2)). Failing to raise it is logged, not fatal.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(soft, hard, error = %e, "Cannot raise the open files limit.");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "Cannot read the open files limit."),
    }
}

/// Makes freed read buffers go back to the system. glibc raises its mmap threshold to the
/// size of any mmapped block that is freed, so after the first 256 KiB read buffer is freed
/// every later one comes from a heap arena, where freed memory stays in the process; with
/// 1,000 containers read once and quiet since, that kept 70 MB resident. A fixed threshold
/// (which also turns the dynamic adjustment off) and two arenas keep the footprint to what is
/// in use (mallopt(3)).
fn tune_allocator() {
    // SAFETY: mallopt only sets allocator parameters; it is called before other threads.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn run(config: Config) -> anyhow::Result<()> {
    tune_allocator();
    raise_open_files_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Blocking work (Docker config reads, cgroupfs walks, history queries) is short; a
        // thousand containers found at once must not mean a thousand threads.
        .max_blocking_threads(16)
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
        App::new(config)
            .run(shutdown)
            .await
            .context("collector failed")
    })
}
