//! `collector taskdef`: ECS task definitions for the daemon and for tasks with the companion.
//!
//! - [`daemon`] prints the collector's own task definition and its `DAEMON` service, the
//!   inputs of `aws ecs register-task-definition` and `aws ecs create-service`.
//! - [`inject`] adds the companion shim (container, socket volume, `dependsOn`, Graphite
//!   address) to a user's task definition, keeping every field it does not know in place.
//!
//! Both print JSON ready for `--cli-input-json file://...`. The names below are a contract
//! with the companion and the daemon; `docs/deploy-ecs.md` walks through a deployment.
//!
//! ```no_run
//! use collector::taskdef::{InjectOptions, inject, parse_task_definition, to_pretty_json};
//!
//! let text = std::fs::read_to_string("my-task.json")?;
//! let injected = inject(parse_task_definition(&text, "my-task.json")?, &InjectOptions::default())?;
//! print!("{}", to_pretty_json(&injected.task_definition));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod container;
pub mod daemon;
pub mod inject;

use std::path::PathBuf;
use std::time::Duration;

pub use daemon::{DaemonOptions, Part, daemon, parse_env};
pub use inject::{
    InjectOptions, Injected, LogsRequest, READ_ONLY_FIELDS, inject, parse_drain_timeout,
    parse_task_definition, read_task_definition,
};

/// The daemon's data directory on the host (`data_dir`'s default).
pub const HOST_DATA_DIR: &str = "/var/lib/collector";
/// The host directory holding the two sockets tasks use: `graphite.sock` (Graphite relay)
/// and `companion.sock` (drain API). Tasks mount it, and only it, read-only.
pub const HOST_TASK_SOCKET_DIR: &str = "/var/lib/collector/task";
/// Where the companion sees [`HOST_TASK_SOCKET_DIR`] (its `COLLECTOR_SOCKET_DIR` default).
pub const COMPANION_SOCKET_DIR: &str = "/run/collector";
/// The companion container's name in a task definition.
pub const COMPANION_NAME: &str = "collector-companion";
/// The companion image used when none is given.
pub const DEFAULT_COMPANION_IMAGE: &str = "collector-companion:latest";
/// The collector image used when none is given.
pub const DEFAULT_DAEMON_IMAGE: &str = "collector:latest";
/// Docker label marking the companion: the collector leaves that container out of a task's
/// drain wait and of its S3 archive.
pub const ROLE_LABEL: &str = "collector.role";
/// [`ROLE_LABEL`]'s value on the companion.
pub const ROLE_COMPANION: &str = "companion";
/// The task volume naming [`HOST_TASK_SOCKET_DIR`].
pub const SOCKET_VOLUME: &str = "collector-task-sockets";
/// The Graphite plaintext port, the same for the companion's relay and the daemon
/// ([`crate::metrics::config::DEFAULT_PORT`]), so a sender needs no change between them.
pub const GRAPHITE_PORT: u16 = crate::metrics::config::DEFAULT_PORT;
/// The environment variable giving a job container the Graphite address to send to.
pub const GRAPHITE_ADDR_ENV: &str = "COLLECTOR_GRAPHITE_ADDR";
/// Seconds ECS waits after SIGTERM before SIGKILL, for the companion and the daemon: both
/// drain at stop. 120 s is the most Fargate allows and what we ask on EC2 too
/// (<https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_ContainerDefinition.html>,
/// `stopTimeout`).
pub const STOP_TIMEOUT_SECS: u64 = 120;
/// The companion's drain deadline when none is given: inside [`STOP_TIMEOUT_SECS`] with
/// 10 s left to report and exit before SIGKILL.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(110);

/// What can go wrong making a task definition.
#[derive(Debug, thiserror::Error)]
pub enum TaskdefError {
    /// The input file could not be read.
    #[error("cannot read {path}")]
    ReadInput {
        /// The file (`-` for stdin).
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The input is not JSON.
    #[error("{path} is not JSON")]
    ParseInput {
        /// The file (`-` for stdin).
        path: PathBuf,
        /// Where and why parsing stopped.
        #[source]
        source: serde_json::Error,
    },
    /// The output file could not be written.
    #[error("cannot write {path}")]
    WriteOutput {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The JSON is not a task definition (an object with `containerDefinitions`).
    #[error(
        "not a task definition: expected an object with `containerDefinitions` (the \
         register-task-definition input), or describe-task-definition's output \
         (`{{\"taskDefinition\": {{...}}}}`); {found}"
    )]
    NotATaskDefinition {
        /// What was found instead.
        found: String,
    },
    /// A container definition has no usable `name`.
    #[error("containerDefinitions[{index}] has no `name` string")]
    ContainerWithoutName {
        /// Its position in `containerDefinitions`.
        index: usize,
    },
    /// The task definition requires Fargate.
    #[error(
        "the task definition requires FARGATE ({requires:?} in requiresCompatibilities): on \
         Fargate no collector daemon runs beside the task and host volumes do not exist, so \
         the companion has nothing to relay to; run the task on EC2 or EXTERNAL capacity \
         (requiresCompatibilities [\"EC2\"])"
    )]
    Fargate {
        /// The task definition's `requiresCompatibilities`.
        requires: Vec<String>,
    },
    /// The network mode gives the job containers no way to reach the companion.
    #[error(
        "networkMode {mode:?} is not supported: use awsvpc, bridge or host (in `none` the \
         job containers cannot reach the companion's Graphite relay)"
    )]
    UnsupportedNetworkMode {
        /// The task definition's `networkMode`.
        mode: String,
    },
    /// Several containers claim to be the companion.
    #[error(
        "several containers are the companion (named {COMPANION_NAME} or labelled \
         {ROLE_LABEL}={ROLE_COMPANION}): {names:?}; keep one"
    )]
    SeveralCompanions {
        /// Their names.
        names: Vec<String>,
    },
    /// A `--logs` argument is not `CONTAINER=GLOB` with an absolute glob.
    #[error("bad --logs {arg:?}: {reason}")]
    BadLogs {
        /// The argument as given.
        arg: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A `--logs` argument names a container the task definition does not have.
    #[error(
        "--logs names container {name:?}, which the task definition does not have; its containers: {known:?}"
    )]
    UnknownLogsContainer {
        /// The name given.
        name: String,
        /// The job containers' names.
        known: Vec<String>,
    },
    /// The drain timeout is not a duration.
    #[error("bad --drain-timeout {value:?} (e.g. 110s)")]
    BadDrainTimeout {
        /// The value as given.
        value: String,
        /// Why it does not parse.
        #[source]
        source: humantime::DurationError,
    },
    /// The drain timeout leaves the companion no time before SIGKILL.
    #[error(
        "--drain-timeout {timeout:?} must be more than 0 and less than the companion's \
         stopTimeout ({STOP_TIMEOUT_SECS}s): ECS kills it at stopTimeout, before it could report"
    )]
    DrainTimeout {
        /// The drain timeout.
        timeout: Duration,
    },
    /// A `--env` argument of `taskdef daemon` is not `NAME=VALUE`.
    #[error("bad --env {arg:?}: expected NAME=VALUE")]
    BadEnv {
        /// The argument as given.
        arg: String,
    },
}

impl TaskdefError {
    /// True for errors in what the user gave (exit 64), false for I/O failures (exit 1).
    pub fn is_usage(&self) -> bool {
        !matches!(self, Self::ReadInput { .. } | Self::WriteOutput { .. })
    }
}

/// Pretty JSON (2-space indent, fields in their order) with a final newline, as
/// `--cli-input-json` reads it and as the golden files hold it.
pub fn to_pretty_json(value: &serde_json::Value) -> String {
    let mut s = serde_json::to_string_pretty(value)
        .expect("a serde_json::Value always serialises: its keys are strings");
    s.push('\n');
    s
}
