//! Which containers exist on this host, found at start and followed live.
//!
//! Every source below sends [`ContainerEvent`]s into one bounded channel that the inventory
//! reads. Sources overlap on purpose: each one misses something (a container that lives 50 ms
//! has no cgroup left to scan; Docker's socket may be down; inotify queues overflow), and the
//! inventory treats repeated sightings as idempotent.
//!
//! - `procfs.rs`: scan of `/proc/*/cgroup` (containers with a live process).
//! - `cgroupfs.rs`: walk of the cgroup hierarchies plus inotify on them (mkdir/rmdir).
//! - `docker_root.rs`: `docker_root/containers/<id>/` directories plus inotify on that folder:
//!   sees a container from `docker create` until `docker rm`, even with the socket down.
//! - `docker_api.rs`: the Docker events stream and inspect, through bollard, API version
//!   negotiated with the daemon.
//! - `ebpf.rs`: tracepoints on cgroup mkdir/rmdir and on the exec/exit of container init
//!   processes and OOM kills (feature `ebpf`, optional at run time): sees a container start
//!   and die the instant the kernel does, and how it died.
//! - A periodic rescan (driven by the app) reruns the scans to repair whatever events missed.

pub mod cgroupfs;
pub mod docker_api;
pub mod docker_root;
pub mod ebpf;
pub mod procfs;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::identify::{CgroupId, ContainerId};

/// Which discovery source produced a sighting (kept for `inspect` and self-telemetry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DiscoverySource {
    /// `/proc/<pid>/cgroup`.
    Procfs,
    /// cgroupfs walk or inotify.
    Cgroupfs,
    /// `docker_root/containers`.
    DockerRoot,
    /// Docker events or list.
    DockerApi,
    /// eBPF tracepoints (`ebpf.rs`).
    Ebpf,
}

impl DiscoverySource {
    /// Stable lowercase name, used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Procfs => "procfs",
            Self::Cgroupfs => "cgroupfs",
            Self::DockerRoot => "docker_root",
            Self::DockerApi => "docker_api",
            Self::Ebpf => "ebpf",
        }
    }
}

/// A container was seen, with whatever the source knows about where it lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sighting {
    /// The container.
    pub container_id: ContainerId,
    /// The cgroup path relative to the hierarchy root (as in `/proc/<pid>/cgroup`).
    pub cgroup_path: Option<String>,
    /// The cgroup v2 directory inode, when the source could stat it.
    pub cgroup_id: Option<CgroupId>,
    /// A live PID in the container, when the source saw one.
    pub pid: Option<i32>,
    /// Who saw it.
    pub source: DiscoverySource,
}

/// What discovery tells the inventory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContainerEvent {
    /// The container exists (created or running). Repeated sightings are normal.
    Seen(Sighting),
    /// The container's process exited (Docker `die`, or its cgroup was removed).
    Exited {
        /// The container.
        container_id: ContainerId,
        /// Who noticed.
        source: DiscoverySource,
    },
    /// The container is gone from the runtime (`docker rm`): its directory was deleted.
    Removed {
        /// The container.
        container_id: ContainerId,
        /// Who noticed.
        source: DiscoverySource,
    },
    /// A source finished a full scan; every container it saw was sent before this. The
    /// inventory uses it to notice containers that vanished while events were missed.
    ScanComplete {
        /// Which source scanned.
        source: DiscoverySource,
    },
    /// The kernel saw a process of the container die (eBPF only): its init process (the
    /// container ended with it) or a process the OOM killer chose.
    ProcessExited(ProcessExit),
}

/// How a process of a container ended, as the kernel reported it (`ebpf.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessExit {
    /// The container.
    pub container_id: ContainerId,
    /// Host PID of the process (its thread group id in the initial pid namespace).
    pub pid: i32,
    /// Its command name.
    pub comm: String,
    /// It was the container's init process (pid 1 of the container's pid namespace): the
    /// container ended with it.
    pub init: bool,
    /// The status it exited with (0-255); meaningful when `signal` is `None`.
    pub exit_status: i32,
    /// The signal that ended it.
    pub signal: Option<i32>,
    /// It dumped core.
    pub core_dumped: bool,
    /// The OOM killer chose it (`oom:mark_victim`).
    pub oom_killed: bool,
    /// When it died (ms since the Unix epoch).
    pub time_ms: i64,
}

/// Sends and empties `out`; false when the watcher must stop (shutdown, or nobody listens).
/// Waiting on a full channel is the backpressure: events queue in the kernel meanwhile, and an
/// inotify overflow there is repaired by a rescan.
pub(crate) async fn send_all(
    out: &mut Vec<ContainerEvent>,
    tx: &mpsc::Sender<ContainerEvent>,
    shutdown: &CancellationToken,
    watcher: &'static str,
) -> bool {
    for event in out.drain(..) {
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            sent = tx.send(event) => if sent.is_err() {
                debug!(watcher, "Discovery channel closed; watcher stops.");
                return false;
            },
        }
    }
    true
}
