//! `collector`: the daemon's command line. Thin: parse, load configuration, run.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use collector::app::App;
use collector::config::{Config, EbpfMode, Overrides};
use collector::inspect::{ColorChoice, InspectArgs, KindFilter, Outcome, TailArgs};
use collector::taskdef::{self, DaemonOptions, InjectOptions, LogsRequest, Part, TaskdefError};
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
    /// Print ECS task definitions as JSON for `aws ecs ... --cli-input-json file://...`: the
    /// daemon's, or a task's with the companion shim added (docs/deploy-ecs.md).
    Taskdef {
        #[command(subcommand)]
        command: TaskdefCommand,
    },
}

#[derive(Subcommand)]
enum TaskdefCommand {
    /// Print the collector's task definition and its DAEMON service: `{"taskDefinition":
    /// ..., "service": ...}`, the inputs of `aws ecs register-task-definition` and `aws ecs
    /// create-service`; `--part task|service` prints one, ready for `--cli-input-json`.
    Daemon {
        /// The collector image (push it to ECR and give its URI).
        #[arg(long, default_value = taskdef::DEFAULT_DAEMON_IMAGE)]
        image: String,
        /// The cluster the service runs in.
        #[arg(long, default_value = taskdef::daemon::DEFAULT_CLUSTER)]
        cluster: String,
        /// Task definition family, also the service name.
        #[arg(long, default_value = taskdef::daemon::DEFAULT_FAMILY)]
        family: String,
        /// Memory ECS reserves for the collector on each instance, MiB.
        #[arg(long, value_name = "MiB", default_value_t = taskdef::daemon::DEFAULT_MEMORY_RESERVATION_MIB)]
        memory_reservation: u64,
        /// Hard memory limit, MiB.
        #[arg(long, value_name = "MiB", default_value_t = taskdef::daemon::DEFAULT_MEMORY_MIB)]
        memory: u64,
        /// CloudWatch Logs group for the collector's own messages (created if missing).
        #[arg(long, default_value = taskdef::daemon::DEFAULT_LOG_GROUP)]
        log_group: String,
        /// AWS region of the log group and the sinks (default: the instance's).
        #[arg(long, env = "AWS_REGION")]
        region: Option<String>,
        /// IAM role for the collector's AWS calls (CloudWatch Logs and S3 sinks).
        #[arg(long, value_name = "ARN")]
        task_role_arn: Option<String>,
        /// IAM role ECS uses to pull the image and create the log group.
        #[arg(long, value_name = "ARN")]
        execution_role_arn: Option<String>,
        /// Grant what eBPF needs (SYS_ADMIN, tracefs, memlock); off by default.
        #[arg(long)]
        ebpf: bool,
        /// A collector setting as an environment variable, e.g.
        /// COLLECTOR_SINKS__CLOUDWATCH__ENABLED=true (repeatable).
        #[arg(long = "env", value_name = "NAME=VALUE")]
        env: Vec<String>,
        /// Print both parts, or only the task definition or the service.
        #[arg(long, value_enum, default_value = "all")]
        part: Part,
    },
    /// Add the companion shim to a task definition (register-task-definition input, or
    /// describe-task-definition output) and print it for register-task-definition. Running it
    /// again on its output changes nothing.
    Inject {
        /// The task definition JSON; `-` for stdin.
        file: PathBuf,
        /// The companion image (default collector-companion:latest; an existing companion
        /// keeps its image).
        #[arg(long, value_name = "IMAGE")]
        companion_image: Option<String>,
        /// Also collect these files of a container: an absolute glob inside it (repeatable).
        #[arg(long = "logs", value_name = "CONTAINER=GLOB")]
        logs: Vec<String>,
        /// How long the companion lets the collector drain the task; under 120s (its
        /// stopTimeout).
        #[arg(long, default_value = "110s")]
        drain_timeout: String,
        /// Write here instead of stdout.
        #[arg(short = 'o', long, value_name = "FILE")]
        output: Option<PathBuf>,
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

/// Runs `collector taskdef ...`: 0, 64 for a bad input or option (the options are parsed
/// here, not by clap, so that every one of them exits 64), 1 for an I/O failure.
fn taskdef_command(command: TaskdefCommand) -> ExitCode {
    let result = match command {
        TaskdefCommand::Daemon {
            image,
            cluster,
            family,
            memory_reservation,
            memory,
            log_group,
            region,
            task_role_arn,
            execution_role_arn,
            ebpf,
            env,
            part,
        } => env
            .iter()
            .map(|e| taskdef::parse_env(e))
            .collect::<Result<Vec<_>, _>>()
            .map(|env| {
                let opts = DaemonOptions {
                    image,
                    cluster,
                    family,
                    memory_reservation,
                    memory,
                    log_group,
                    region,
                    task_role_arn,
                    execution_role_arn,
                    ebpf,
                    env,
                };
                print!("{}", taskdef::to_pretty_json(&taskdef::daemon(&opts, part)));
            }),
        TaskdefCommand::Inject {
            file,
            companion_image,
            logs,
            drain_timeout,
            output,
        } => inject(file, companion_image, logs, drain_timeout, output),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = if e.is_usage() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::FAILURE
            };
            eprintln!("collector: {:#}", anyhow::Error::from(e));
            code
        }
    }
}

/// `collector taskdef inject`: notes on stderr, the JSON on stdout or in `output`.
fn inject(
    file: PathBuf,
    companion_image: Option<String>,
    logs: Vec<String>,
    drain_timeout: String,
    output: Option<PathBuf>,
) -> Result<(), TaskdefError> {
    let opts = InjectOptions {
        companion_image,
        logs: logs
            .iter()
            .map(|l| l.parse::<LogsRequest>())
            .collect::<Result<_, _>>()?,
        drain_timeout: taskdef::parse_drain_timeout(&drain_timeout)?,
    };
    let input = taskdef::read_task_definition(&file)?;
    let injected = taskdef::inject(input, &opts)?;
    for note in &injected.notes {
        eprintln!("collector: {note}");
    }
    let text = taskdef::to_pretty_json(&injected.task_definition);
    match output {
        Some(path) => {
            std::fs::write(&path, text).map_err(|source| TaskdefError::WriteOutput { path, source })
        }
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Taskdef { command } => taskdef_command(command),
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

/// Makes the capabilities the binary's file grants effective. The `collector` image gives
/// `/collector` file capabilities (`security.capability`, permitted set only:
/// `DAC_READ_SEARCH`, `SYS_PTRACE`, and for eBPF `SYS_ADMIN`, `PERFMON`, `BPF`), so a collector
/// started as a non-root user (`--user 65534`) gets those of them its container's bounding
/// set allows (`--cap-add`), and no others (capabilities(7): P'(permitted) = F(permitted) &
/// P(bounding)). Without the file's effective bit they start permitted but not effective,
/// which also lets the image start when the bounding set lacks some of them (with the bit
/// set, execve(2) would fail with EPERM). Run as root, or with no file capabilities, this
/// changes nothing. Capabilities are per thread: this runs before any thread is started, so
/// every thread inherits them. Failing is logged, not fatal.
fn raise_permitted_capabilities() {
    /// `struct __user_cap_header_struct` (linux/capability.h).
    #[repr(C)]
    struct CapHeader {
        version: u32,
        pid: i32,
    }
    /// `struct __user_cap_data_struct`: one per 32 capabilities.
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct CapData {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    /// `_LINUX_CAPABILITY_VERSION_3`: 64-bit sets, as two `CapData`.
    const VERSION_3: u32 = 0x2008_0522;

    let mut header = CapHeader {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: with version 3, capget(2) reads the header and writes two `CapData` (the
    // kernel's layout, `repr(C)`) into `data`, which holds exactly two.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &raw mut header, data.as_mut_ptr()) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        tracing::warn!(error = %e, "Cannot read the process capabilities.");
        return;
    }
    if data.iter().all(|d| d.effective == d.permitted) {
        return;
    }
    for d in &mut data {
        d.effective = d.permitted;
    }
    let set = (u64::from(data[1].permitted) << 32) | u64::from(data[0].permitted);
    // SAFETY: capset(2) reads the header and two `CapData` from `data`; effective may be any
    // subset of permitted, and here it equals permitted.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &raw const header, data.as_ptr()) };
    if rc == 0 {
        tracing::info!(
            capabilities = format_args!("{set:#x}"),
            "Made the permitted capabilities effective."
        );
    } else {
        let e = std::io::Error::last_os_error();
        tracing::warn!(capabilities = format_args!("{set:#x}"), error = %e, "Cannot make the permitted capabilities effective.");
    }
}

/// Makes freed read buffers go back to the system. glibc raises its mmap threshold to the
/// size of any mmapped block that is freed, so after the first 256 KiB read buffer is freed
/// every later one comes from a heap arena, where freed memory stays in the process; with
/// 1,000 containers read once and quiet since, that kept 70 MB resident. A fixed threshold
/// (which also turns the dynamic adjustment off) and two arenas keep the footprint to what is
/// in use (mallopt(3)). musl (the static image build) has no `mallopt`; its allocator returns
/// freed memory to the system on its own.
fn tune_allocator() {
    // The read buffers of small files (sized to what is left to read) and the arenas their
    // escapes are decoded into are tens of KiB: from the heap, freed in any order, they left
    // holes glibc keeps; 1,000 containers of 100 kB kept 42 MB that `malloc_trim` gave back
    // (`cargo xtask bench --scenarios many`). Mapped, each goes back when freed.
    const MMAP_THRESHOLD: libc::c_int = 32 * 1024;
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets allocator parameters; it is called before other threads.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn run(config: Config) -> anyhow::Result<()> {
    raise_permitted_capabilities();
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
