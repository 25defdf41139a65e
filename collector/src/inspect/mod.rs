//! `collector inspect`: from whatever a person has at hand to the whole chain.
//!
//! An argument may be a PID, a full or short container id, a container name (Docker's, or
//! the task definition's), a cgroup id, a cgroup path, a task ARN or a task id (32 hex or
//! UUID). [`classify`] lists the kinds its syntax allows, most specific first; `query` tries
//! them in turn against the live daemon ([`crate::control::InventoryView`]), the state
//! database's history, procfs, cgroupfs and Docker's files, and gathers the chain:
//!
//! ```text
//! PID(s) -> cgroup path and id -> container -> task -> log sources -> destinations -> metrics
//! ```
//!
//! The same code answers inside the daemon (control API `GET /v1/inspect`) and in the CLI
//! when no daemon runs ([`AnsweredBy::Offline`]); the types here are the JSON both print.
//!
//! - `query.rs`: resolution and gathering.
//! - `render.rs`: the aligned text for people and the JSON for scripts.
//! - `command.rs`: the `inspect` command (daemon or offline, exit codes).
//! - `follow.rs`: the `tail` command.

mod command;
mod follow;
mod query;
mod render;

use serde::{Deserialize, Serialize};

pub use command::{ColorChoice, InspectArgs, Outcome, inspect_command};
pub use follow::{TailArgs, tail_command};
pub use query::{World, bytes_behind, inspect, overview};
pub use render::{render_inspection, render_overview};

/// `PID_MAX_LIMIT` on 64-bit Linux (`include/linux/threads.h`): no PID is larger.
pub const PID_MAX: u64 = 4_194_304;

/// Errors of `inspect`.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The argument is no kind of thing `inspect` knows.
    #[error("{message}")]
    Usage {
        /// What is wrong with it.
        message: String,
    },
    /// The argument names more than one thing of the same kind.
    #[error("{query:?} matches {} {}s; give more of it or use --kind", candidates.len(), kind.noun())]
    Ambiguous {
        /// The argument.
        query: String,
        /// The kind it was taken as.
        kind: Kind,
        /// What it matches (`<short id> <name>`).
        candidates: Vec<String>,
    },
    /// Nothing known matches.
    #[error("nothing matches {query:?} (looked for: {}){}", tried.join(", "), hint.as_deref().map(|h| format!("; {h}")).unwrap_or_default())]
    NotFound {
        /// The argument.
        query: String,
        /// The kinds looked for.
        tried: Vec<String>,
        /// A fact that explains the miss (a PID outside any container).
        hint: Option<String>,
    },
    /// The state database could not be read.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
}

/// The kinds of argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A process id.
    Pid,
    /// The inode of a cgroup v2 directory.
    CgroupId,
    /// A cgroup path (relative to the hierarchy root, or under the cgroupfs root).
    CgroupPath,
    /// 64 hex characters.
    ContainerId,
    /// The start of a container id.
    ShortContainerId,
    /// Docker's name, or the container name of the task definition.
    ContainerName,
    /// `arn:<partition>:ecs:<region>:<account>:task/...`.
    TaskArn,
    /// The last segment of a task ARN.
    TaskId,
}

impl Kind {
    /// For messages: "a PID", "a task ARN".
    pub fn noun(self) -> &'static str {
        match self {
            Self::Pid => "PID",
            Self::CgroupId => "cgroup id",
            Self::CgroupPath => "cgroup path",
            Self::ContainerId => "container id",
            Self::ShortContainerId => "short container id",
            Self::ContainerName => "container name",
            Self::TaskArn => "task ARN",
            Self::TaskId => "task id",
        }
    }

    /// The `--kind` group this kind belongs to.
    pub fn group(self) -> KindFilter {
        match self {
            Self::Pid => KindFilter::Pid,
            Self::CgroupId => KindFilter::CgroupId,
            Self::CgroupPath => KindFilter::CgroupPath,
            Self::ContainerId | Self::ShortContainerId | Self::ContainerName => {
                KindFilter::Container
            }
            Self::TaskArn | Self::TaskId => KindFilter::Task,
        }
    }
}

/// `--kind`: restricts how an ambiguous argument (`1234`: a PID, a cgroup id or a short
/// container id?) is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KindFilter {
    /// `pid`.
    Pid,
    /// `cgroup-id`.
    CgroupId,
    /// `cgroup-path`.
    CgroupPath,
    /// `container`: a full or short id, or a name.
    Container,
    /// `task`: an ARN or a task id.
    Task,
}

impl KindFilter {
    /// The `--kind` values.
    pub const VALUES: [&'static str; 5] = ["pid", "cgroup-id", "cgroup-path", "container", "task"];

    /// Parses a `--kind` value.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pid" => Self::Pid,
            "cgroup-id" => Self::CgroupId,
            "cgroup-path" => Self::CgroupPath,
            "container" => Self::Container,
            "task" => Self::Task,
            _ => return None,
        })
    }

    /// The `--kind` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pid => "pid",
            Self::CgroupId => "cgroup-id",
            Self::CgroupPath => "cgroup-path",
            Self::Container => "container",
            Self::Task => "task",
        }
    }
}

/// The kinds `arg`'s syntax allows, most specific first.
///
/// # Errors
/// [`InspectError::Usage`] when it can be no kind at all (or none of `filter`).
pub fn classify(arg: &str, filter: Option<KindFilter>) -> Result<Vec<Kind>, InspectError> {
    let is_hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    let is_name = |s: &str| {
        // Docker's rule for names: [a-zA-Z0-9][a-zA-Z0-9_.-]+; task definition names allow
        // letters, digits, '_' and '-' (a subset).
        let mut b = s.bytes();
        b.next().is_some_and(|c| c.is_ascii_alphanumeric())
            && b.all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c))
    };
    let mut kinds = Vec::new();
    if arg.starts_with("arn:") {
        kinds.push(Kind::TaskArn);
    } else if let Some(rest) = arg.strip_prefix('/') {
        kinds.push(Kind::CgroupPath);
        if is_name(rest) {
            kinds.push(Kind::ContainerName);
        }
    } else {
        if !arg.is_empty() && arg.bytes().all(|b| b.is_ascii_digit()) {
            if arg.parse::<u64>().is_ok_and(|n| n > 0 && n <= PID_MAX) {
                kinds.push(Kind::Pid);
            }
            if arg.parse::<u64>().is_ok() {
                kinds.push(Kind::CgroupId);
            }
        }
        let lower = arg.to_ascii_lowercase();
        if crate::identify::ContainerId::parse(&lower).is_some() {
            kinds.push(Kind::ContainerId);
        }
        if crate::identify::TaskId::parse(arg).is_some() {
            kinds.push(Kind::TaskId);
        }
        if is_hex(arg) && arg.len() < 64 {
            kinds.push(Kind::ShortContainerId);
        }
        if is_name(arg) {
            kinds.push(Kind::ContainerName);
        }
    }
    if let Some(f) = filter {
        kinds.retain(|k| k.group() == f);
    }
    if kinds.is_empty() {
        let message = match filter {
            Some(f) => format!("{arg:?} cannot be a {}", f.as_str()),
            None => format!(
                "{arg:?} is not a PID, container id or name, cgroup id or path, task ARN or task id"
            ),
        };
        return Err(InspectError::Usage { message });
    }
    Ok(kinds)
}

/// Who answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnsweredBy {
    /// The running daemon, through its control socket: live read positions and sink errors.
    Daemon,
    /// This process, from the state database, procfs, cgroupfs and Docker's files.
    Offline,
}

/// How the argument was understood.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recognised {
    /// The kind.
    pub kind: Kind,
    /// In words, with what was found: "PID 1234 (running)".
    pub description: String,
}

/// The answer to `collector inspect <thing>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inspection {
    /// The argument as given.
    pub query: String,
    /// How it was understood.
    pub recognised: Recognised,
    /// Who answered.
    pub answered_by: AnsweredBy,
    /// What could not be known, and other facts worth a sentence.
    pub notes: Vec<String>,
    /// The task, when the thing is in one (for a task argument, always).
    pub task: Option<TaskView>,
    /// The containers: one for a container-like argument, every member for a task.
    pub containers: Vec<ContainerView>,
}

/// An ECS task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskView {
    /// The task id.
    pub task_id: String,
    /// The full ARN, when a label or the agent said it.
    pub task_arn: Option<String>,
    /// The cluster.
    pub cluster: Option<String>,
    /// Task definition family.
    pub family: Option<String>,
    /// Task definition revision.
    pub revision: Option<u32>,
    /// Every container of the task known here.
    pub containers: Vec<TaskMember>,
    /// Its companion's latest drain, while the daemon remembers the task (live only).
    #[serde(default)]
    pub drain: Option<crate::drain::DrainStatus>,
}

/// A container of a task, in one line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskMember {
    /// Full id.
    pub container_id: String,
    /// Its best name.
    pub name: String,
    /// Its state.
    pub state: String,
}

/// One container and everything downstream of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerView {
    /// Full id.
    pub container_id: String,
    /// The 12 characters `docker ps` shows.
    pub short_id: String,
    /// Docker's name.
    pub docker_name: Option<String>,
    /// The task definition's container name.
    pub container_name: Option<String>,
    /// Image reference.
    pub image: Option<String>,
    /// `created`, `running`, `exited`, `removed` or `unknown`.
    pub state: String,
    /// Docker's start time of the last run (RFC 3339).
    pub started_at: Option<String>,
    /// Docker's finish time of the last run (RFC 3339).
    pub finished_at: Option<String>,
    /// Exit code of the last run.
    pub exit_code: Option<i64>,
    /// Whether the OOM killer ended the last run.
    pub oom_killed: Option<bool>,
    /// The signal that ended its init process, when the kernel reported the exit (eBPF).
    pub exit_signal: Option<i32>,
    /// The PID the OOM killer chose in it (eBPF).
    pub oom_victim_pid: Option<i32>,
    /// Who reported how the last run ended: `ebpf` (the kernel) or `docker`.
    pub death_reported_by: Option<String>,
    /// The discovery source that saw it first (`ebpf`, `cgroupfs`, `docker_root`, ...).
    pub discovered_via: Option<String>,
    /// When the collector first saw it.
    pub first_seen: Option<String>,
    /// When the collector saw it removed.
    pub removed_seen: Option<String>,
    /// The processes in its cgroup now.
    pub pids: Vec<i32>,
    /// The last PID seen in it (kept after exit).
    pub last_pid: Option<i32>,
    /// Its cgroup.
    pub cgroup: Option<CgroupView>,
    /// Its task id, when in an ECS task.
    pub task_id: Option<String>,
    /// How its logs are grouped outside ECS (`compose project shop`).
    pub group: String,
    /// Where the facts came from: `daemon`, `history`, `docker`, `procfs`, `cgroupfs`.
    pub known_from: Vec<String>,
    /// Its log sources.
    pub sources: Vec<SourceView>,
    /// Where its lines go.
    pub destinations: Vec<DestinationView>,
    /// Metrics received from it.
    pub metrics: MetricsView,
}

/// A container's cgroup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupView {
    /// Path relative to the hierarchy root.
    pub path: Option<String>,
    /// Inode of its cgroup v2 directory (what BPF's `bpf_get_current_cgroup_id()` returns).
    pub id: Option<u64>,
}

/// One log source of a container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceView {
    /// The key in the state database.
    pub key: String,
    /// `container_output` (stdout and stderr), `file` (declared), or `lifecycle` (the
    /// collector's own record of how each run ended, delivered like a log line).
    pub kind: String,
    /// For a declared file: its path inside the container.
    pub container_path: Option<String>,
    /// Host path of the live file.
    pub path: String,
    /// Bytes in the live file and the rotated files not yet read to their end.
    pub size: Option<u64>,
    /// Offset after the last delivered line, in `offset_path`.
    pub offset: Option<u64>,
    /// The file the offset is in, when it is not `path` (a rotated file).
    pub offset_path: Option<String>,
    /// Bytes written and not yet delivered.
    pub bytes_behind: Option<u64>,
    /// When a batch of it was last delivered (the daemon's clock), or last committed.
    pub last_read: Option<String>,
    /// A tailer reads it now (unknown without the daemon).
    pub active: Option<bool>,
    /// Lines delivered to every sink.
    pub lines_delivered: u64,
    /// File bytes those lines covered.
    pub bytes_delivered: u64,
    /// Corrupt lines skipped.
    pub lines_skipped: u64,
    /// Rotations followed.
    pub rotations: u64,
    /// Truncations seen.
    pub truncations: u64,
    /// Bytes known lost.
    pub bytes_lost: u64,
    /// Rotated files lost whole: deleted before they could be opened (size unknown).
    #[serde(default)]
    pub files_lost: u64,
}

/// Where one source's lines go in one sink.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationView {
    /// The sink (`file`, `discard`; later `cloudwatch_logs`, `s3`).
    pub sink: String,
    /// The source key.
    pub source: String,
    /// Where: files for the local sink, a log group and stream, S3 keys.
    pub locations: Vec<String>,
    /// Lines of the source every sink acknowledged.
    pub lines_delivered: u64,
    /// The sink's last error (any source), when the daemon answers.
    pub last_error: Option<String>,
    /// When that error happened.
    pub last_error_at: Option<String>,
}

/// Metrics received from a container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsView {
    /// Whether any arrived.
    pub received: bool,
    /// Why not, or what.
    pub note: String,
    /// Metric paths whose latest value this container sent.
    #[serde(default)]
    pub paths: u64,
    /// The latest values, `path = value @ timestamp` (the first few, by path).
    #[serde(default)]
    pub latest: Vec<String>,
    /// What its task (or the container, outside a task) lost: lines rejected, samples over
    /// the rate bound, samples of paths over the path bound.
    #[serde(default)]
    pub lost: Option<String>,
}

/// The answer to `collector inspect` without an argument: one line per task and container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overview {
    /// Who answered.
    pub answered_by: AnsweredBy,
    /// What could not be known.
    pub notes: Vec<String>,
    /// Tasks.
    pub tasks: Vec<TaskRow>,
    /// Containers (in tasks or not).
    pub containers: Vec<ContainerRow>,
    /// Removed containers left out (shown with `--all`).
    pub hidden_removed: usize,
}

/// A task in the overview.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRow {
    /// Task id.
    pub task_id: String,
    /// ARN.
    pub task_arn: Option<String>,
    /// `family:revision`.
    pub definition: Option<String>,
    /// `running` when any container runs, else the state of the most recent one.
    pub state: String,
    /// How many containers.
    pub containers: usize,
    /// Sum of its containers' bytes behind.
    pub bytes_behind: Option<u64>,
    /// The latest delivery among its containers.
    pub last_read: Option<String>,
}

/// A container in the overview.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRow {
    /// Full id.
    pub container_id: String,
    /// Best name.
    pub name: String,
    /// Docker's name.
    pub docker_name: Option<String>,
    /// Its task.
    pub task_id: Option<String>,
    /// State.
    pub state: String,
    /// Image.
    pub image: Option<String>,
    /// Lines delivered over all its sources.
    pub lines_delivered: u64,
    /// Bytes behind over all its sources.
    pub bytes_behind: Option<u64>,
    /// Latest delivery among its sources.
    pub last_read: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_classified_by_syntax() {
        let id64 = "ab".repeat(32);
        let uuid = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0";
        let cases: Vec<(&str, Vec<Kind>)> = vec![
            (
                "1234",
                vec![
                    Kind::Pid,
                    Kind::CgroupId,
                    Kind::ShortContainerId,
                    Kind::ContainerName,
                ],
            ),
            (
                "99999999",
                vec![Kind::CgroupId, Kind::ShortContainerId, Kind::ContainerName],
            ),
            (&id64, vec![Kind::ContainerId, Kind::ContainerName]),
            (
                "abcdef012345",
                vec![Kind::ShortContainerId, Kind::ContainerName],
            ),
            (
                "0123456789abcdef0123456789abcdef",
                vec![Kind::TaskId, Kind::ShortContainerId, Kind::ContainerName],
            ),
            (uuid, vec![Kind::TaskId, Kind::ContainerName]),
            (
                "arn:aws:ecs:us-east-1:1:task/c/0123456789abcdef0123456789abcdef",
                vec![Kind::TaskArn],
            ),
            ("/docker/abc", vec![Kind::CgroupPath]),
            ("/web", vec![Kind::CgroupPath, Kind::ContainerName]),
            ("web", vec![Kind::ContainerName]),
            ("ecs-app-1-web-f0a1", vec![Kind::ContainerName]),
        ];
        for (arg, want) in cases {
            assert_eq!(classify(arg, None).unwrap(), want, "{arg}");
        }
        assert_eq!(
            classify("1234", Some(KindFilter::CgroupId)).unwrap(),
            vec![Kind::CgroupId]
        );
        for bad in ["", "has space", "-x", "a/b", "é"] {
            assert!(
                matches!(classify(bad, None), Err(InspectError::Usage { .. })),
                "{bad:?}"
            );
        }
        assert!(matches!(
            classify("web", Some(KindFilter::Pid)),
            Err(InspectError::Usage { .. })
        ));
    }
}
