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
//! - A periodic rescan (driven by the app) reruns the scans to repair whatever events missed.

pub mod cgroupfs;
pub mod docker_api;
pub mod docker_root;
pub mod procfs;

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
}

impl DiscoverySource {
    /// Stable lowercase name, used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Procfs => "procfs",
            Self::Cgroupfs => "cgroupfs",
            Self::DockerRoot => "docker_root",
            Self::DockerApi => "docker_api",
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
}
