//! The TOML configuration: defaults, layering, validation.
//!
//! Layers, later wins: built-in defaults < the TOML file (`--config`, `COLLECTOR_CONFIG`, or
//! `/etc/collector/config.toml` when present) < `COLLECTOR_*` environment variables (nested
//! keys joined with `__`, e.g. `COLLECTOR_HOST__DOCKER_SOCKET`) < command-line flags. Unknown
//! keys anywhere are an error that names the key. The `///` comments on the fields below are
//! the reference documentation (`docs/configuration.md` mirrors them).

mod cloudwatch;
mod paths;
mod s3;

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub use cloudwatch::{CloudWatchSinkConfig, RETENTION_DAYS};
pub use paths::HostConfig;
pub use s3::S3SinkConfig;

/// The configuration file read when none is named and it exists.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/collector/config.toml";

/// The default data directory: SQLite state and the local sink's files.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/collector";

/// Top-level keys that `COLLECTOR_<KEY>` environment variables may set.
const ENV_SECTIONS: &[&str] = &[
    "data_dir",
    "host",
    "ecs",
    "discovery",
    "tail",
    "sinks",
    "control",
    "metrics",
];

/// Errors while loading or validating the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file named explicitly does not exist or cannot be read.
    #[error("cannot read configuration file {path}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A key has a bad value, is unknown, or the TOML does not parse.
    #[error("invalid configuration{}: {message}{}", key_hint(.key), env_hint(.key))]
    Invalid {
        /// The dotted key path, when the error is tied to one.
        key: Option<String>,
        /// What is wrong.
        message: String,
    },
}

fn key_hint(key: &Option<String>) -> String {
    key.as_ref()
        .map(|k| format!(" at `{k}`"))
        .unwrap_or_default()
}

fn env_hint(key: &Option<String>) -> String {
    match key {
        Some(k) if !k.is_empty() => format!(
            " (set in the TOML file or as COLLECTOR_{})",
            k.replace('.', "__").to_ascii_uppercase()
        ),
        _ => String::new(),
    }
}

impl From<figment::Error> for ConfigError {
    fn from(e: figment::Error) -> Self {
        let key = (!e.path.is_empty()).then(|| e.path.join("."));
        ConfigError::Invalid {
            key,
            message: e.kind.to_string(),
        }
    }
}

/// The whole configuration (`*Config`: as the user wrote it; validated by [`Config::validate`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the collector keeps its state (`state.db`, SQLite) and, by default, the local
    /// sink's files (`logs/`). One directory, so backing up or wiping the collector is one
    /// path. Flag `--data-dir`, env `COLLECTOR_DATA_DIR`.
    pub data_dir: PathBuf,
    /// Host paths, so the collector can run in a container with the host mounted elsewhere.
    pub host: HostConfig,
    /// The ECS agent.
    pub ecs: EcsConfig,
    /// Container discovery.
    pub discovery: DiscoveryConfig,
    /// Log file reading.
    pub tail: TailConfig,
    /// Where records go.
    pub sinks: SinksConfig,
    /// The control API (`collector inspect`, `collector tail`, `/metrics`).
    pub control: ControlConfig,
    /// Metrics ingest: Graphite and StatsD listeners, per-task store, carbon forwarding
    /// (`crate::metrics::MetricsConfig` documents every key).
    pub metrics: crate::metrics::MetricsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            host: HostConfig::default(),
            ecs: EcsConfig::default(),
            discovery: DiscoveryConfig::default(),
            tail: TailConfig::default(),
            sinks: SinksConfig::default(),
            control: ControlConfig::default(),
            metrics: crate::metrics::MetricsConfig::default(),
        }
    }
}

/// The ECS agent's introspection API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EcsConfig {
    /// Base URI of the agent introspection API (`/v1/tasks?dockerid=`); the agent listens on
    /// the host network at port 51678. Asked only for containers whose labels do not already
    /// name their task.
    pub agent_uri: String,
    /// Per-request timeout: the agent answers from memory, so a slow answer means trouble and
    /// must not hold up tailing.
    #[serde(with = "humantime_serde")]
    pub agent_timeout: Duration,
    /// How long an agent answer (found or not found) is reused.
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
}

impl Default for EcsConfig {
    fn default() -> Self {
        Self {
            agent_uri: "http://127.0.0.1:51678".to_owned(),
            agent_timeout: Duration::from_millis(500),
            cache_ttl: Duration::from_secs(60),
        }
    }
}

/// Container discovery.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoveryConfig {
    /// Full rescan of procfs, cgroupfs and the Docker root, repairing what events missed
    /// (inotify queue overflow, a restarted Docker, an absent socket).
    #[serde(with = "humantime_serde")]
    pub rescan_interval: Duration,
    /// Follow the Docker events stream (through `host.docker_socket`).
    pub docker_events: bool,
    /// Watch cgroupfs with inotify.
    pub cgroup_inotify: bool,
    /// Watch `docker_root/containers` with inotify (a container appears at `docker create`).
    pub docker_root_inotify: bool,
    /// eBPF tracepoints: a container is seen the instant its cgroup is made, and how it died
    /// (exit code, signal, OOM kill and victim PID) is recorded. `auto` uses them when the
    /// build, kernel and privileges allow and otherwise logs why once and goes on without;
    /// `on` makes that a start-up error; `off` never loads them. Flag `--ebpf`.
    pub ebpf: EbpfMode,
    /// How long an exited container's history (identity, counts) is kept in SQLite.
    #[serde(with = "humantime_serde")]
    pub history_retention: Duration,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            rescan_interval: Duration::from_secs(10),
            docker_events: true,
            cgroup_inotify: true,
            docker_root_inotify: true,
            ebpf: EbpfMode::Auto,
            history_retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Whether eBPF is used (`discovery.ebpf`, `--ebpf`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum EbpfMode {
    /// When the build, the kernel and the privileges allow; otherwise say why and go on.
    Auto,
    /// Required: the collector does not start without it.
    On,
    /// Never.
    Off,
}

/// Where a tailer starts in a file it has no checkpoint for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadFrom {
    /// From the first byte: nothing written before the collector started is lost.
    Beginning,
    /// From the current end: only new lines.
    End,
}

/// Log file reading.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TailConfig {
    /// Longest line kept whole, in bytes; longer lines are cut into pieces of this size,
    /// each marked as split (never dropped). Also bounds the memory a source holds for one
    /// line. Docker's 16 KiB partial pieces are joined up to this size.
    pub max_line_bytes: usize,
    /// Size of one read; larger reads cost fewer syscalls per gigabyte.
    pub read_bytes: usize,
    /// How often an idle file is checked for new data, rotation and truncation (the longest
    /// wait; a busy file is re-read at once).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How often a file quiet for 10 s or more is checked: most containers write in bursts,
    /// and a thousand idle files polled at `poll_interval` cost more than all else the
    /// collector does while idle. The first line after a long silence waits at most this.
    #[serde(with = "humantime_serde")]
    pub quiet_poll_interval: Duration,
    /// After its container exits, a file is read until it has been quiet this long, so the
    /// runtime's last writes are not missed.
    #[serde(with = "humantime_serde")]
    pub exit_settle: Duration,
    /// Where to start in a file that has no checkpoint.
    pub read_from: ReadFrom,
    /// How often declared-file globs are re-evaluated for new files.
    #[serde(with = "humantime_serde")]
    pub glob_interval: Duration,
    /// Records buffered between the tailers and the sinks. Bounded: when sinks are slow,
    /// tailers wait (files on disk are the buffer), nothing is dropped.
    pub channel_batches: usize,
    /// Bytes that all sources' batches on their way to the sinks may hold together (read
    /// buffers and decoded text); a read pass waits for room (`tail/budget.rs`). The channel
    /// and the shipper count batches; this bounds their memory when many files are read at
    /// once.
    pub in_flight_bytes: usize,
}

impl Default for TailConfig {
    fn default() -> Self {
        Self {
            max_line_bytes: 2 * 1024 * 1024,
            read_bytes: 256 * 1024,
            poll_interval: Duration::from_millis(200),
            quiet_poll_interval: Duration::from_secs(1),
            exit_settle: Duration::from_millis(500),
            read_from: ReadFrom::Beginning,
            glob_interval: Duration::from_secs(2),
            channel_batches: 64,
            in_flight_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Where records go. A checkpoint advances only when every enabled sink has the batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinksConfig {
    /// The local directory sink (the default).
    pub file: FileSinkConfig,
    /// The discard sink: accepts and drops everything (benchmarks, dry runs).
    pub discard: DiscardSinkConfig,
    /// CloudWatch Logs (`ship::cloudwatch`).
    pub cloudwatch: CloudWatchSinkConfig,
    /// S3 task archives (`ship::s3`).
    pub s3: S3SinkConfig,
}

impl Default for SinksConfig {
    fn default() -> Self {
        Self {
            file: FileSinkConfig::default(),
            discard: DiscardSinkConfig { enabled: false },
            cloudwatch: CloudWatchSinkConfig::default(),
            s3: S3SinkConfig::default(),
        }
    }
}

/// The local directory sink.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileSinkConfig {
    /// On by default.
    pub enabled: bool,
    /// Root of the tree; defaults to `<data_dir>/logs`.
    pub dir: Option<PathBuf>,
    /// How often written files are fsynced. Checkpoints advance only after the sink's data is
    /// in the files; a sync bounds what a power loss (not a process crash) can take.
    #[serde(with = "humantime_serde")]
    pub sync_interval: Duration,
}

impl Default for FileSinkConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: None,
            sync_interval: Duration::from_secs(1),
        }
    }
}

/// The discard sink.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscardSinkConfig {
    /// Off by default.
    pub enabled: bool,
}

/// The control API: HTTP on a unix socket, read by `collector inspect` and `collector tail`,
/// and scraped for `/metrics`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// Serve the control API. Without it, `collector inspect` still answers from the state
    /// database and the host's files, but cannot show live read positions or sink errors.
    pub enabled: bool,
    /// The socket; defaults to `<data_dir>/control.sock`. Created with mode 0600, so only
    /// its owner (root) can connect: the API names every container and task on the host.
    pub socket: Option<PathBuf>,
    /// Serve the companion API (the drain barrier the per-task `companion` shim calls).
    pub companion: bool,
    /// Its socket; defaults to `<data_dir>/task/companion.sock`, beside the Graphite socket,
    /// so a task mounts one directory for both. Mode 0666: any process may connect, and
    /// each call acts only on the caller's own task, found from the kernel's peer
    /// credentials (`SO_PEERCRED`, `unix(7)`).
    pub companion_socket: Option<PathBuf>,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            socket: None,
            companion: true,
            companion_socket: None,
        }
    }
}

/// Command-line values that override everything else.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
}

impl Config {
    /// Loads the layered configuration.
    ///
    /// `file`: an explicitly named file must exist; without one, `/etc/collector/config.toml`
    /// is read when present.
    ///
    /// # Errors
    /// A named file that cannot be read, TOML that does not parse, an unknown key or a value
    /// of the wrong type, and any failure of [`Config::validate`].
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        Self::load_from(file, overrides, Env::prefixed("COLLECTOR_").split("__"))
    }

    /// The configuration of a TOML text alone: built-in defaults < `text`, then
    /// [`Config::validate`]. No file, environment variable or flag is read, so the result
    /// depends on `text` only (the fuzz target `config` and tests use it).
    ///
    /// # Errors
    /// TOML that does not parse, an unknown key or a value of the wrong type, and any failure
    /// of [`Config::validate`].
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let fig = Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(text));
        let config: Config = fig.extract()?;
        config.validate()?;
        Ok(config)
    }

    fn load_from(
        file: Option<&Path>,
        overrides: &Overrides,
        env: Env,
    ) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
                        path: path.to_owned(),
                        source,
                    })?;
                fig = fig.merge(Toml::string(&text));
            }
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
                fig = fig.merge(Toml::file(DEFAULT_CONFIG_PATH));
            }
            None => {}
        }
        // COLLECTOR_CONFIG names the file itself; it is not a key. Only variables that name a
        // key of the configuration are read: other programs' COLLECTOR_* variables (a test
        // harness's COLLECTOR_BIN) are not configuration. Inside a known section, an unknown
        // key is still an error that names it.
        fig = fig.merge(env.ignore(&["config"]).filter(|k| {
            let first = k.as_str().split(['.', '_']).next().unwrap_or("");
            let first = if k.as_str().to_ascii_lowercase().starts_with("data_dir") {
                "data_dir"
            } else {
                first
            };
            ENV_SECTIONS.iter().any(|s| s.eq_ignore_ascii_case(first))
        }));
        if let Some(dir) = &overrides.data_dir {
            fig = fig.merge(Serialized::default("data_dir", dir));
        }
        let config: Config = fig.extract()?;
        config.validate()?;
        Ok(config)
    }

    /// Semantic checks that serde cannot express.
    ///
    /// # Errors
    /// The first invalid value, with its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, message: &str| {
            Err(ConfigError::Invalid {
                key: Some(key.to_owned()),
                message: message.to_owned(),
            })
        };
        if self.tail.max_line_bytes < 1024 {
            return bad("tail.max_line_bytes", "must be at least 1024");
        }
        if self.tail.read_bytes < 4096 || self.tail.read_bytes > 64 * 1024 * 1024 {
            return bad("tail.read_bytes", "must be between 4096 and 67108864");
        }
        if self.tail.channel_batches == 0 {
            return bad("tail.channel_batches", "must be at least 1");
        }
        // Below one read pass (4 reads and their decoded text), passes run one at a time.
        if self.tail.in_flight_bytes < 8 * self.tail.read_bytes {
            return bad(
                "tail.in_flight_bytes",
                "must be at least 8 times tail.read_bytes (one read pass)",
            );
        }
        if self.tail.poll_interval.is_zero() {
            return bad("tail.poll_interval", "must be more than zero");
        }
        if self.tail.quiet_poll_interval < self.tail.poll_interval {
            return bad(
                "tail.quiet_poll_interval",
                "must be at least tail.poll_interval",
            );
        }
        if self.discovery.rescan_interval < Duration::from_millis(100) {
            return bad("discovery.rescan_interval", "must be at least 100ms");
        }
        if !self.sinks.file.enabled
            && !self.sinks.discard.enabled
            && !self.sinks.cloudwatch.enabled
            && !self.sinks.s3.enabled
        {
            return bad("sinks", "at least one sink must be enabled");
        }
        self.sinks.cloudwatch.validate()?;
        self.sinks.s3.validate()?;
        if self.data_dir.as_os_str().is_empty() {
            return bad("data_dir", "must not be empty");
        }
        if self.discovery.history_retention.is_zero() {
            return bad("discovery.history_retention", "must be more than zero");
        }
        if self
            .control
            .socket
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return bad("control.socket", "must not be empty");
        }
        if self
            .control
            .companion_socket
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return bad("control.companion_socket", "must not be empty");
        }
        if let Err((key, message)) = self.metrics.check() {
            return bad(key, message);
        }
        Ok(())
    }

    /// The local sink's root directory.
    pub fn file_sink_dir(&self) -> PathBuf {
        self.sinks
            .file
            .dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("logs"))
    }

    /// The control API's socket.
    pub fn control_socket(&self) -> PathBuf {
        self.control
            .socket
            .clone()
            .unwrap_or_else(|| self.data_dir.join("control.sock"))
    }

    /// The directory of the sockets tasks use (`graphite.sock`, `companion.sock`): the one
    /// directory a task's companion mounts.
    pub fn task_socket_dir(&self) -> PathBuf {
        self.data_dir.join("task")
    }

    /// The companion API's socket.
    pub fn companion_socket(&self) -> PathBuf {
        self.control
            .companion_socket
            .clone()
            .unwrap_or_else(|| self.task_socket_dir().join("companion.sock"))
    }

    /// The SQLite state file.
    pub fn state_path(&self) -> PathBuf {
        self.data_dir.join("state.db")
    }

    /// The effective configuration as TOML (`--print-config`).
    ///
    /// # Errors
    /// Only if serialisation fails, which would be a bug.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|e| ConfigError::Invalid {
            key: None,
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        Config::load_from(
            Some(&path),
            &Overrides::default(),
            Env::prefixed("COLLECTOR_TEST_NONE_"),
        )
    }

    #[test]
    fn empty_file_is_the_embedded_default() {
        assert_eq!(load_str("").unwrap(), Config::default());
    }

    #[test]
    fn unknown_keys_are_named() {
        let cases = [
            ("bogus = 1", "bogus"),
            ("[host]\nprocfs = \"/x\"", "procfs"),
            ("[sinks.file]\nenable = true", "enable"),
        ];
        for (text, key) in cases {
            let err = load_str(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text:?} -> {err}");
        }
    }

    #[test]
    fn values_are_checked_with_their_key() {
        let err = load_str("[tail]\nmax_line_bytes = 10")
            .unwrap_err()
            .to_string();
        assert!(err.contains("tail.max_line_bytes"), "{err}");
        assert!(err.contains("COLLECTOR_TAIL__MAX_LINE_BYTES"), "{err}");
        let err = load_str("[tail]\npoll_interval = \"soon\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("tail.poll_interval"), "{err}");
    }

    #[test]
    fn layers_apply_in_order() {
        let c = load_str("data_dir = \"/from/file\"\n[host]\nprocfs_root = \"/host/proc\"\n[tail]\npoll_interval = \"50ms\"").unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/from/file"));
        assert_eq!(c.host.procfs_root, PathBuf::from("/host/proc"));
        assert_eq!(c.tail.poll_interval, Duration::from_millis(50));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "data_dir = \"/from/file\"").unwrap();
        let o = Overrides {
            data_dir: Some("/from/flag".into()),
        };
        let c = Config::load_from(Some(&path), &o, Env::prefixed("COLLECTOR_TEST_NONE_")).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/from/flag"));
    }

    #[test]
    #[allow(
        clippy::result_large_err,
        reason = "figment's Jail API fixes the closure's error type"
    )]
    fn environment_sets_known_keys_and_leaves_other_programs_variables() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("COLLECTOR_DATA_DIR", "/from/env");
            jail.set_env("COLLECTOR_TAIL__POLL_INTERVAL", "70ms");
            jail.set_env("COLLECTOR_BIN", "/usr/bin/collector");
            let c = Config::load_from(
                None,
                &Overrides::default(),
                Env::prefixed("COLLECTOR_").split("__"),
            )
            .unwrap();
            assert_eq!(c.data_dir, PathBuf::from("/from/env"));
            assert_eq!(c.tail.poll_interval, Duration::from_millis(70));
            jail.set_env("COLLECTOR_TAIL__POLL", "70ms");
            let err = Config::load_from(
                None,
                &Overrides::default(),
                Env::prefixed("COLLECTOR_").split("__"),
            )
            .unwrap_err();
            assert!(err.to_string().contains("poll"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn a_named_missing_file_is_an_error() {
        let err = Config::load(
            Some(Path::new("/nonexistent/c.toml")),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::ReadFile { .. }));
    }

    #[test]
    fn ebpf_mode_is_a_small_enumeration() {
        assert_eq!(load_str("").unwrap().discovery.ebpf, EbpfMode::Auto);
        assert_eq!(
            load_str("[discovery]\nebpf = \"off\"")
                .unwrap()
                .discovery
                .ebpf,
            EbpfMode::Off
        );
        let err = load_str("[discovery]\nebpf = \"maybe\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("discovery.ebpf") && err.contains("COLLECTOR_DISCOVERY__EBPF"),
            "{err}"
        );
    }

    #[test]
    fn printed_config_round_trips() {
        let text = Config::default().to_toml().unwrap();
        assert_eq!(load_str(&text).unwrap(), Config::default());
    }
}
