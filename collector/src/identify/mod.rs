//! Who is this container? cgroup id <-> container id <-> ECS task.
//!
//! Identity comes from several sources, cheapest first, and each fills only what it knows:
//! 1. the cgroup path (`cgroup.rs`): container id, ECS task id, runtime;
//! 2. Docker's own files under `docker_root/containers/<id>/` (`docker_config.rs`): name,
//!    image, labels, log path, mounts, state; readable even when the Docker socket is not;
//! 3. the Docker API (`inspect`, in `crate::discover::docker_api`), same shape as 2;
//! 4. `com.amazonaws.ecs.*`, compose and Kubernetes labels (`labels.rs`);
//! 5. the ECS agent introspection API (`ecs_agent.rs`), for tasks whose labels are missing.
//!
//! Fields stay `None` until a source knows them: we never guess.

pub mod cgroup;
pub mod docker_config;
pub mod ecs_agent;
pub mod labels;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A container runtime id: 64 lowercase hex characters for Docker and containerd.
///
/// Fargate's task metadata reports `<32-hex task id>-<digits>` as its "DockerId"; that form is
/// accepted too, so identities read from Fargate payloads round-trip.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ContainerId(String);

impl ContainerId {
    /// Parses a full container id (64 hex, or Fargate's `<32 hex>-<digits>`).
    pub fn parse(s: &str) -> Option<Self> {
        let is_hex = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        };
        if s.len() == 64 && is_hex(s) {
            return Some(Self(s.to_owned()));
        }
        match s.split_once('-') {
            Some((task, digits))
                if task.len() == 32
                    && is_hex(task)
                    && !digits.is_empty()
                    && digits.bytes().all(|b| b.is_ascii_digit()) =>
            {
                Some(Self(s.to_owned()))
            }
            _ => None,
        }
    }

    /// The full id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 12-character short id `docker ps` shows.
    pub fn short(&self) -> &str {
        &self.0[..12.min(self.0.len())]
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ContainerId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s).ok_or_else(|| format!("not a container id: {s:?}"))
    }
}

impl From<ContainerId> for String {
    fn from(id: ContainerId) -> String {
        id.0
    }
}

/// The inode of a container's cgroup v2 directory: what `bpf_get_current_cgroup_id()` returns
/// for its processes (see `cgroup_id()` in the kernel's `include/linux/cgroup.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CgroupId(pub u64);

/// An ECS task id: the last segment of the task ARN (32 hex now; a UUID in old ARNs).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TaskId(String);

impl TaskId {
    /// Accepts 32 lowercase hex characters or a UUID (8-4-4-4-12 hex).
    pub fn parse(s: &str) -> Option<Self> {
        let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        if hex(s, 32) {
            return Some(Self(s.to_ascii_lowercase()));
        }
        let parts: Vec<&str> = s.split('-').collect();
        if parts.len() == 5 && [8, 4, 4, 4, 12].iter().zip(&parts).all(|(n, p)| hex(p, *n)) {
            return Some(Self(s.to_ascii_lowercase()));
        }
        None
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for TaskId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s).ok_or_else(|| format!("not an ECS task id: {s:?}"))
    }
}

impl From<TaskId> for String {
    fn from(id: TaskId) -> String {
        id.0
    }
}

/// An ECS task ARN, `arn:<partition>:ecs:<region>:<account>:task/[<cluster>/]<task id>`.
///
/// Old-format ARNs (before 2018) have no cluster segment.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TaskArn {
    arn: String,
    task_id: TaskId,
}

impl TaskArn {
    /// Validates the shape and extracts the task id.
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.splitn(6, ':');
        let (arn, _partition, service, _region, _account, resource) = (
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
        );
        if arn != "arn" || service != "ecs" {
            return None;
        }
        let rest = resource.strip_prefix("task/")?;
        let id = rest.rsplit('/').next()?;
        let task_id = TaskId::parse(id)?;
        Some(Self {
            arn: s.to_owned(),
            task_id,
        })
    }

    /// The full ARN.
    pub fn as_str(&self) -> &str {
        &self.arn
    }

    /// The task id (last segment).
    pub fn task_id(&self) -> &TaskId {
        &self.task_id
    }

    /// The cluster name, when the ARN is of the new format that carries it.
    pub fn cluster(&self) -> Option<&str> {
        let resource = self.arn.splitn(6, ':').nth(5)?;
        let rest = resource.strip_prefix("task/")?;
        let (cluster, _) = rest.rsplit_once('/')?;
        Some(cluster)
    }

    /// The region segment.
    pub fn region(&self) -> &str {
        self.arn.split(':').nth(3).unwrap_or("")
    }
}

impl fmt::Display for TaskArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.arn)
    }
}

impl TryFrom<String> for TaskArn {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s).ok_or_else(|| format!("not an ECS task ARN: {s:?}"))
    }
}

impl From<TaskArn> for String {
    fn from(arn: TaskArn) -> String {
        arn.arn
    }
}

/// What an ECS source says about a container's task. Every field is optional because each
/// source knows a different part (the cgroup path only knows the task id).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EcsTask {
    /// Task id, always known when any ECS source matched.
    pub task_id: Option<TaskId>,
    /// Full ARN (labels, agent).
    pub task_arn: Option<TaskArn>,
    /// Cluster: short name on EC2, full ARN on Fargate (label `com.amazonaws.ecs.cluster`).
    pub cluster: Option<String>,
    /// Task definition family.
    pub family: Option<String>,
    /// Task definition revision.
    pub revision: Option<u32>,
    /// Container name from the task definition.
    pub container_name: Option<String>,
}

impl EcsTask {
    /// Fills the fields `self` lacks from `other`; never overwrites what is known.
    pub fn merge_from(&mut self, other: &EcsTask) {
        if self.task_id.is_none() {
            self.task_id = other.task_id.clone();
        }
        if self.task_arn.is_none() {
            self.task_arn = other.task_arn.clone();
        }
        if self.task_id.is_none() {
            self.task_id = self.task_arn.as_ref().map(|a| a.task_id().clone());
        }
        if self.cluster.is_none() {
            self.cluster = other.cluster.clone();
        }
        if self.family.is_none() {
            self.family = other.family.clone();
        }
        if self.revision.is_none() {
            self.revision = other.revision;
        }
        if self.container_name.is_none() {
            self.container_name = other.container_name.clone();
        }
    }
}

/// How a container that is not in an ECS task is grouped on disk and in `inspect`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Group {
    /// An ECS task (see [`EcsTask`]).
    EcsTask {
        /// The task id.
        task_id: TaskId,
    },
    /// A Docker Compose project (`com.docker.compose.project` / `.service` labels).
    Compose {
        /// The compose project name.
        project: String,
        /// The compose service name.
        service: Option<String>,
    },
    /// A Kubernetes pod (`io.kubernetes.pod.*` labels or a kubepods cgroup path).
    Pod {
        /// Pod namespace, when labels say it.
        namespace: Option<String>,
        /// Pod name, or its UID when only the cgroup path is known.
        pod: String,
    },
    /// A container on its own.
    Standalone,
}

/// The container runtime that a cgroup path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Runtime {
    /// Docker (moby), including ECS on EC2.
    Docker,
    /// containerd (`cri-containerd-<id>.scope`, `/containerd/...`).
    Containerd,
    /// CRI-O (`crio-<id>.scope`).
    CriO,
    /// Podman / libpod (`libpod-<id>.scope`).
    Podman,
    /// Could not tell.
    Unknown,
}

/// What a container's cgroup path alone reveals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupHint {
    /// The container id (last path component that is one).
    pub container_id: ContainerId,
    /// The ECS task id when the path is an ECS layout (`/ecs/<task>/<id>`,
    /// `ecstasks-<task>.slice`).
    pub task_id: Option<TaskId>,
    /// The Kubernetes pod UID when the path is a kubepods slice.
    pub pod_uid: Option<String>,
    /// The runtime the path's naming scheme belongs to.
    pub runtime: Runtime,
}

/// A bind mount or volume of a container: how a path inside the container maps to the host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Host path (`MountPoints[*].Source`).
    pub source: PathBuf,
    /// Path inside the container (`MountPoints[*].Destination`).
    pub destination: PathBuf,
}

/// A container's run state as Docker records it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerState {
    /// True while the container's process runs.
    pub running: bool,
    /// Host PID of the container's init process while it runs (0 otherwise).
    pub pid: i32,
    /// Exit code of the last run.
    pub exit_code: Option<i64>,
    /// Whether the kernel's OOM killer ended the last run.
    pub oom_killed: bool,
    /// RFC 3339 start time of the last run.
    pub started_at: Option<String>,
    /// RFC 3339 end time of the last run (absent while running).
    pub finished_at: Option<String>,
}

/// What Docker knows about one container, from `config.v2.json` + `hostconfig.json` on disk or
/// from the API's inspect; both sources fill the same shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerContainerInfo {
    /// Full container id.
    pub id: ContainerId,
    /// Docker name without the leading `/`.
    pub name: String,
    /// Image reference the container was created from (`Config.Image`).
    pub image: String,
    /// `Config.Labels`.
    pub labels: BTreeMap<String, String>,
    /// The json-file log path, when the log driver writes one.
    pub log_path: Option<PathBuf>,
    /// The log driver (`json-file`, `local`, `awslogs`, ...).
    pub log_driver: Option<String>,
    /// Bind mounts and volumes.
    pub mounts: Vec<Mount>,
    /// Run state.
    pub state: ContainerState,
    /// `HostConfig.CgroupParent` (`/ecs/<task-id>` for ECS tasks with task limits on).
    pub cgroup_parent: Option<String>,
    /// RFC 3339 creation time.
    pub created: Option<String>,
}

/// Everything known about a container, merged from all sources.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerIdentity {
    /// Full container id: the key.
    pub container_id: ContainerId,
    /// cgroup v2 directory inode, once seen.
    pub cgroup_id: Option<CgroupId>,
    /// cgroup path (relative to the hierarchy root), once seen.
    pub cgroup_path: Option<String>,
    /// Docker name (without `/`).
    pub docker_name: Option<String>,
    /// Image reference.
    pub image: Option<String>,
    /// ECS task facts (None outside ECS).
    pub ecs: Option<EcsTask>,
    /// How the container is grouped.
    pub group: Group,
    /// Container labels (Docker) as last read.
    pub labels: BTreeMap<String, String>,
}

impl ContainerIdentity {
    /// Whether this is a task's companion shim ([`labels::COLLECTOR_ROLE`]).
    pub fn is_companion(&self) -> bool {
        self.labels.get(labels::COLLECTOR_ROLE).map(String::as_str) == Some(labels::ROLE_COMPANION)
    }

    /// A bare identity: only the id is known.
    pub fn new(container_id: ContainerId) -> Self {
        Self {
            container_id,
            cgroup_id: None,
            cgroup_path: None,
            docker_name: None,
            image: None,
            ecs: None,
            group: Group::Standalone,
            labels: BTreeMap::new(),
        }
    }

    /// The best human name: the task definition's container name, else the Docker name, else
    /// the short id.
    pub fn display_name(&self) -> &str {
        self.ecs
            .as_ref()
            .and_then(|e| e.container_name.as_deref())
            .or(self.docker_name.as_deref())
            .unwrap_or_else(|| self.container_id.short())
    }
}
