//! Host paths: every place the collector reads the host from is configurable, so it can run
//! in a container with the host's filesystems mounted under `/host`, and tests can point it
//! at fake trees.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where the host's filesystems are.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostConfig {
    /// The host's procfs (`/host/proc` in a container with the host mounted).
    pub procfs_root: PathBuf,
    /// The host's cgroup filesystem root (v1, v2 or hybrid: detected from what is there).
    pub cgroupfs_root: PathBuf,
    /// Docker's data root: `containers/<id>/config.v2.json` and `<id>-json.log` live there.
    pub docker_root: PathBuf,
    /// Docker's API socket. Optional at run time: without it, identity comes from cgroup
    /// paths and Docker's files, and the socket is retried.
    pub docker_socket: PathBuf,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            procfs_root: PathBuf::from("/proc"),
            cgroupfs_root: PathBuf::from("/sys/fs/cgroup"),
            docker_root: PathBuf::from("/var/lib/docker"),
            docker_socket: PathBuf::from("/var/run/docker.sock"),
        }
    }
}
