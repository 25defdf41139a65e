//! Command line and environment: every option also comes from an environment variable, so
//! the task definition configures the companion with `environment` entries alone.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::outcome::EXIT_CODES_HELP;

/// The companion's command line.
#[derive(Debug, Parser)]
#[command(
    name = "companion",
    version,
    about = "Per-task shim of the ECS collector: relays Graphite lines to the host's collector \
             and, when the task's other containers have exited, waits until the collector has \
             delivered everything they wrote.",
    after_help = EXIT_CODES_HELP
)]
pub struct Cli {
    /// What to do (default: run).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options shared by the subcommands.
    #[command(flatten)]
    pub options: Options,
}

/// The subcommands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Relay metrics, wait for the task's other containers, drain (the default).
    Run,
    /// Exit 0 when the relay (or, with the relay off, the collector's socket) accepts a
    /// connection within 1 s: the container health check.
    Health,
}

/// On or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

/// The options (all `global`, so `companion health --listen ...` works too).
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The host directory with the collector's sockets (graphite.sock, companion.sock),
    /// mounted read-only into the task.
    #[arg(
        long,
        env = "COLLECTOR_SOCKET_DIR",
        default_value = "/run/collector",
        global = true
    )]
    pub socket_dir: PathBuf,
    /// Where the relay listens for Graphite plaintext (TCP and UDP).
    #[arg(
        long,
        env = "COLLECTOR_LISTEN",
        default_value = "127.0.0.1:13290",
        global = true
    )]
    pub listen: SocketAddr,
    /// The relay; `off` in host network mode, where jobs reach the collector directly.
    #[arg(
        long,
        env = "COLLECTOR_RELAY",
        default_value = "on",
        value_enum,
        global = true
    )]
    pub relay: Switch,
    /// The longest Graphite line relayed, in bytes (newline excluded); longer lines are
    /// dropped and counted.
    #[arg(long, env = "COLLECTOR_MAX_LINE", default_value_t = 64 * 1024,
          value_parser = clap::value_parser!(u32).range(1..=16 * 1024 * 1024), global = true)]
    pub max_line: u32,
    /// From the task's exit (or SIGTERM) to the end of the drain; keep it below the task's
    /// stopTimeout (120 s).
    #[arg(long, env = "COLLECTOR_DRAIN_TIMEOUT", default_value = "110s",
          value_parser = humantime::parse_duration, global = true)]
    pub drain_timeout: Duration,
    /// How long the collector's socket may refuse connections in a row before giving up
    /// (exit 3) while waiting for the task's containers; `0` waits forever.
    #[arg(long, env = "COLLECTOR_UNREACHABLE_TIMEOUT", default_value = "60s",
          value_parser = humantime::parse_duration, global = true)]
    pub unreachable_timeout: Duration,
    /// This container's name in the task definition (excluded from the containers waited
    /// for when the task metadata does not say which one is ours).
    #[arg(
        long,
        env = "COLLECTOR_CONTAINER_NAME",
        default_value = "collector-companion",
        global = true
    )]
    pub container_name: String,
    /// The task metadata endpoint v4 (ECS sets it in every container).
    #[arg(long, env = "ECS_CONTAINER_METADATA_URI_V4", global = true)]
    pub metadata_uri: Option<String>,
    /// Where to read the own cgroup from.
    #[arg(
        long,
        env = "COLLECTOR_CGROUP_FILE",
        default_value = "/proc/self/cgroup",
        global = true,
        hide = true
    )]
    pub cgroup_file: PathBuf,
    /// Log level: error, warn, info, debug, trace.
    #[arg(
        long,
        env = "COLLECTOR_LOG_LEVEL",
        default_value = "info",
        global = true
    )]
    pub log_level: tracing::level_filters::LevelFilter,
    /// Log JSON objects instead of plain text.
    #[arg(long, env = "COLLECTOR_LOG_JSON", global = true)]
    pub log_json: bool,
}

impl Options {
    /// The daemon's Graphite socket.
    pub fn graphite_socket(&self) -> PathBuf {
        self.socket_dir.join("graphite.sock")
    }

    /// The daemon's drain socket.
    pub fn companion_socket(&self) -> PathBuf {
        self.socket_dir.join("companion.sock")
    }

    /// `None` for `0` (wait forever).
    pub fn unreachable_limit(&self) -> Option<Duration> {
        (!self.unreachable_timeout.is_zero()).then_some(self.unreachable_timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_spellings() {
        let cli = Cli::try_parse_from(["companion"]).unwrap();
        assert_eq!(cli.command, None);
        assert_eq!(cli.options.listen.to_string(), "127.0.0.1:13290");
        assert_eq!(cli.options.drain_timeout, Duration::from_secs(110));
        assert_eq!(
            cli.options.unreachable_limit(),
            Some(Duration::from_secs(60))
        );
        assert_eq!(cli.options.max_line, 65536);
        assert_eq!(
            cli.options.companion_socket(),
            PathBuf::from("/run/collector/companion.sock")
        );
        let cli = Cli::try_parse_from([
            "companion",
            "health",
            "--relay",
            "off",
            "--unreachable-timeout",
            "0",
        ])
        .unwrap();
        assert_eq!(cli.command, Some(Command::Health));
        assert_eq!(cli.options.relay, Switch::Off);
        assert_eq!(cli.options.unreachable_limit(), None);
        for bad in [
            &["companion", "--drain-timeout", "soon"][..],
            &["companion", "--max-line", "0"],
            &["companion", "--listen", "localhost"],
            &["companion", "frobnicate"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }
}
