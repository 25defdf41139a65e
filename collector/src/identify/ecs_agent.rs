//! ECS agent introspection API client (`/v1/tasks?dockerid=`, `/v1/metadata`) and the task metadata (TMDS v4) payload types.
//!
//! The agent's introspection server listens on the host at port 51678
//! (`ecs-agent/introspection/server.go`) and answers, per container id, which task the
//! container belongs to: the fallback for containers whose `com.amazonaws.ecs.*` labels are
//! missing. It needs no per-container token, unlike the task metadata endpoint v4 (TMDS,
//! `127.0.0.1:51679/v4/<id>/...`, whose id is in each container's
//! `ECS_CONTAINER_METADATA_URI_V4`); the TMDS types are here so payloads read through it, or
//! stored, share one definition.
//!
//! Every payload type ignores unknown fields and makes every non-key field optional: the
//! agent adds fields over time (`Image`, `ImageID`, `CreatedAt`, ... in `/v1/tasks`;
//! `FaultInjectionEnabled`, `ClockDrift` in `/task`), omits others (`DesiredStatus` is
//! `omitempty`), and writes Go `null` for nil slices.
//!
//! The client is built for hosts where the agent may be absent, slow or wrong: short timeouts,
//! a cap on body size, a cache of answers (positive and negative) per container, and a
//! back-off per base URI after the agent could not be reached, so a host without an agent
//! costs one failed connection per back-off period, not one per container.
//!
//! ```no_run
//! # async fn demo(id: collector::identify::ContainerId) -> Result<(), collector::identify::ecs_agent::EcsAgentError> {
//! use collector::identify::ecs_agent::{EcsAgentClient, EcsAgentSettings};
//!
//! let agent = EcsAgentClient::from_settings(EcsAgentSettings::default())?;
//! let cluster = agent.metadata().await.ok().and_then(|m| m.cluster);
//! if let Some(task) = agent.task_for_container(&id).await? {
//!     let ecs = task.ecs_task(&id, cluster.as_deref());
//!     println!("{:?}", ecs.family);
//! }
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Deserializer, Serialize};
use tokio::time::Instant;

use super::{ContainerId, EcsTask, TaskArn};

/// Where the agent's introspection server listens on the host
/// (`ecs-agent/introspection/server.go`, port 51678).
pub const DEFAULT_BASE_URI: &str = "http://127.0.0.1:51678";
/// The agent answers from memory in microseconds; half a second means it is stuck.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);
/// A container never changes task, so a found task stays valid for the container's life;
/// the TTL only bounds how stale `KnownStatus` and similar fields may get.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(600);
/// "Not found" is cached briefly: the agent records a container's `DockerId` only after
/// `docker create` returns, so Docker's `create` event can reach us before the agent knows.
pub const DEFAULT_NEGATIVE_CACHE_TTL: Duration = Duration::from_secs(10);
/// After connection failures or timeouts in a row, the agent is not asked again for at most
/// this long: the pause starts at [`FIRST_UNREACHABLE_BACKOFF`] and doubles per failure.
pub const DEFAULT_UNREACHABLE_BACKOFF: Duration = Duration::from_secs(30);
/// The pause after a first failure. One timeout on a busy host (the agent answers from
/// memory, but a loaded machine can delay it past [`DEFAULT_TIMEOUT`]) must not leave the
/// containers starting in the next half minute without their task.
pub const FIRST_UNREACHABLE_BACKOFF: Duration = Duration::from_millis(500);
/// Cap on a response body: one task object is a few KiB; a bigger answer is not the agent.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Cap on cached container answers, so a host that churns containers does not grow the
/// cache without bound; expired entries are pruned when it fills.
pub const MAX_CACHED_CONTAINERS: usize = 4096;

/// Errors talking to the ECS agent. Each is per request: the caller counts it and moves on.
#[derive(Debug, thiserror::Error)]
pub enum EcsAgentError {
    /// The configured base URI is not a plain `http://` URL (the agent serves no TLS).
    #[error("invalid ECS agent URI {uri:?}: {reason}")]
    ParseBaseUri {
        /// The configured value.
        uri: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The HTTP client could not be built (system resources).
    #[error("cannot build the HTTP client for the ECS agent")]
    BuildClient {
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// Connecting to the agent or exchanging the request failed (connection refused: no
    /// agent on this host, or it is restarting).
    #[error("request to the ECS agent failed: GET {url}")]
    SendRequest {
        /// The request URL.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The agent did not answer within the timeout.
    #[error("the ECS agent did not answer GET {url} within {timeout:?}")]
    RequestTimeout {
        /// The request URL.
        url: String,
        /// The timeout that expired.
        timeout: Duration,
    },
    /// The agent failed recently and is in back-off; no request was sent.
    #[error("the ECS agent at {base_uri} is unreachable; next try in {retry_in:?}")]
    AgentUnavailable {
        /// The agent's base URI.
        base_uri: String,
        /// Time left in the back-off.
        retry_in: Duration,
    },
    /// The body exceeded [`MAX_BODY_BYTES`].
    #[error("response to GET {url} is larger than {limit} bytes")]
    ReadResponse {
        /// The request URL.
        url: String,
        /// The cap that was exceeded.
        limit: usize,
    },
    /// The agent answered with a status other than 200 or (for task lookups) 404; the agent
    /// answers 400 when a query is malformed.
    #[error("the ECS agent answered {status} to GET {url}")]
    UnexpectedStatus {
        /// The request URL.
        url: String,
        /// The HTTP status.
        status: u16,
    },
    /// The body is not the JSON shape the agent serves.
    #[error("cannot parse the ECS agent's answer to GET {url}")]
    ParseResponse {
        /// The request URL.
        url: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
}

impl EcsAgentError {
    /// How long until the agent is asked again: what is left of the back-off, or (for the
    /// failure that starts it) the first pause.
    pub fn retry_in(&self) -> Duration {
        match self {
            Self::AgentUnavailable { retry_in, .. } => *retry_in,
            _ => FIRST_UNREACHABLE_BACKOFF,
        }
    }

    /// True when the agent could not be reached at all (refused, timed out, or in back-off),
    /// as opposed to answering something wrong; callers count the two separately.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Self::SendRequest { .. } | Self::RequestTimeout { .. } | Self::AgentUnavailable { .. }
        )
    }
}

/// Deserialises Go's `null` (a nil slice or map without `omitempty`) as the empty value.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `GET /v1/metadata`: the agent and its container instance.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentMetadata {
    /// The agent's `ECS_CLUSTER`: short name on EC2 (the same value as the
    /// `com.amazonaws.ecs.cluster` label).
    #[serde(rename = "Cluster")]
    pub cluster: Option<String>,
    /// The container instance ARN; `null` before the instance registered.
    #[serde(rename = "ContainerInstanceArn")]
    pub container_instance_arn: Option<String>,
    /// Agent version string; absent when the agent hides it (`HideAgentVersion`).
    #[serde(rename = "Version")]
    pub version: Option<String>,
}

/// `GET /v1/tasks`: every task the agent knows, running or stopped.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentTasks {
    /// The tasks; `null` in the agent's error body.
    #[serde(rename = "Tasks", default, deserialize_with = "null_as_default")]
    pub tasks: Vec<AgentTask>,
}

/// One task of the introspection API (`ecs-agent/introspection/v1/response.go` `TaskResponse`),
/// as returned by `/v1/tasks?dockerid=` and inside `/v1/tasks`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentTask {
    /// Task ARN: the key. Empty in the zero-value body the agent sends with 404/400.
    #[serde(rename = "Arn")]
    pub arn: String,
    /// Desired status; omitted by the agent in some transitions (see the fixtures README).
    #[serde(rename = "DesiredStatus")]
    pub desired_status: Option<String>,
    /// Known status (`RUNNING`, `STOPPED`, ...).
    #[serde(rename = "KnownStatus")]
    pub known_status: Option<String>,
    /// Task definition family.
    #[serde(rename = "Family")]
    pub family: Option<String>,
    /// Task definition revision, as a decimal string.
    #[serde(rename = "Version")]
    pub version: Option<String>,
    /// The task's containers, in random order (a Go map), without the pause container.
    #[serde(rename = "Containers", default, deserialize_with = "null_as_default")]
    pub containers: Vec<AgentContainer>,
}

/// One container of an introspection task (`ContainerResponse`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentContainer {
    /// The full container id: the key that matches a container to its task.
    #[serde(rename = "DockerId")]
    pub docker_id: String,
    /// Docker's name (`ecs-<family>-<rev>-<name>-<hex>`).
    #[serde(rename = "DockerName")]
    pub docker_name: Option<String>,
    /// Container name from the task definition.
    #[serde(rename = "Name")]
    pub name: Option<String>,
    /// Image reference (current agents only).
    #[serde(rename = "Image")]
    pub image: Option<String>,
    /// Image id (current agents only).
    #[serde(rename = "ImageID")]
    pub image_id: Option<String>,
    /// Creation time, RFC 3339 (current agents only).
    #[serde(rename = "CreatedAt")]
    pub created_at: Option<String>,
    /// Start time, RFC 3339 (current agents only).
    #[serde(rename = "StartedAt")]
    pub started_at: Option<String>,
    /// Port mappings.
    #[serde(rename = "Ports", default, deserialize_with = "null_as_default")]
    pub ports: Vec<Port>,
    /// Network attachments.
    #[serde(rename = "Networks", default, deserialize_with = "null_as_default")]
    pub networks: Vec<Network>,
    /// Volumes.
    #[serde(rename = "Volumes", default, deserialize_with = "null_as_default")]
    pub volumes: Vec<Volume>,
    /// Restarts by the agent's restart policy.
    #[serde(rename = "RestartCount")]
    pub restart_count: Option<u64>,
}

/// A port mapping (introspection and TMDS).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Port {
    /// Port inside the container.
    #[serde(rename = "ContainerPort")]
    pub container_port: Option<u16>,
    /// `tcp` or `udp`.
    #[serde(rename = "Protocol")]
    pub protocol: Option<String>,
    /// Port on the host.
    #[serde(rename = "HostPort")]
    pub host_port: Option<u16>,
    /// Host address bound.
    #[serde(rename = "HostIp")]
    pub host_ip: Option<String>,
}

/// A network attachment (introspection and TMDS); lets metrics be attributed by peer address.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Network {
    /// `awsvpc`, `bridge`, `host`, ...
    #[serde(rename = "NetworkMode")]
    pub network_mode: Option<String>,
    /// IPv4 addresses of the container.
    #[serde(
        rename = "IPv4Addresses",
        default,
        deserialize_with = "null_as_default"
    )]
    pub ipv4_addresses: Vec<String>,
    /// IPv6 addresses of the container.
    #[serde(
        rename = "IPv6Addresses",
        default,
        deserialize_with = "null_as_default"
    )]
    pub ipv6_addresses: Vec<String>,
    /// ENI attachment index (awsvpc).
    #[serde(rename = "AttachmentIndex")]
    pub attachment_index: Option<u32>,
    /// ENI MAC address (awsvpc).
    #[serde(rename = "MACAddress")]
    pub mac_address: Option<String>,
    /// Subnet (awsvpc).
    #[serde(rename = "IPv4SubnetCIDRBlock")]
    pub ipv4_subnet_cidr_block: Option<String>,
    /// IPv6 subnet (awsvpc).
    #[serde(rename = "IPv6SubnetCIDRBlock")]
    pub ipv6_subnet_cidr_block: Option<String>,
    /// DNS servers (Fargate).
    #[serde(
        rename = "DomainNameServers",
        default,
        deserialize_with = "null_as_default"
    )]
    pub domain_name_servers: Vec<String>,
    /// DNS search list (Fargate).
    #[serde(
        rename = "DomainNameSearchList",
        default,
        deserialize_with = "null_as_default"
    )]
    pub domain_name_search_list: Vec<String>,
    /// Private DNS name.
    #[serde(rename = "PrivateDNSName")]
    pub private_dns_name: Option<String>,
    /// Subnet gateway.
    #[serde(rename = "SubnetGatewayIpv4Address")]
    pub subnet_gateway_ipv4_address: Option<String>,
}

/// A volume of a task container (introspection and TMDS).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Volume {
    /// Docker's volume name.
    #[serde(rename = "DockerName")]
    pub docker_name: Option<String>,
    /// Host path.
    #[serde(rename = "Source")]
    pub source: Option<String>,
    /// Path inside the container.
    #[serde(rename = "Destination")]
    pub destination: Option<String>,
}

/// CPU and memory limits (TMDS). `CPU` is fractional at task level on Fargate (0.25).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// CPU units (1024 = one vCPU) for containers, vCPUs for Fargate tasks.
    #[serde(rename = "CPU")]
    pub cpu: Option<f64>,
    /// Memory in MiB.
    #[serde(rename = "Memory")]
    pub memory: Option<u64>,
}

/// TMDS v4 task (`GET ${ECS_CONTAINER_METADATA_URI_V4}/task` and `/taskWithTags`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TmdsTask {
    /// Cluster: short name on EC2, full ARN on Fargate.
    #[serde(rename = "Cluster")]
    pub cluster: Option<String>,
    /// Task ARN: the key.
    #[serde(rename = "TaskARN")]
    pub task_arn: String,
    /// Task definition family.
    #[serde(rename = "Family")]
    pub family: Option<String>,
    /// Task definition revision, as a decimal string.
    #[serde(rename = "Revision")]
    pub revision: Option<String>,
    /// Desired status.
    #[serde(rename = "DesiredStatus")]
    pub desired_status: Option<String>,
    /// Known status.
    #[serde(rename = "KnownStatus")]
    pub known_status: Option<String>,
    /// Containers, including the pause container (`Type: CNI_PAUSE`) on awsvpc.
    #[serde(rename = "Containers", default, deserialize_with = "null_as_default")]
    pub containers: Vec<TmdsContainer>,
    /// Task-level limits.
    #[serde(rename = "Limits")]
    pub limits: Option<Limits>,
    /// Image pull start, RFC 3339.
    #[serde(rename = "PullStartedAt")]
    pub pull_started_at: Option<String>,
    /// Image pull end, RFC 3339.
    #[serde(rename = "PullStoppedAt")]
    pub pull_stopped_at: Option<String>,
    /// When the task stopped, RFC 3339.
    #[serde(rename = "ExecutionStoppedAt")]
    pub execution_stopped_at: Option<String>,
    /// Availability zone name.
    #[serde(rename = "AvailabilityZone")]
    pub availability_zone: Option<String>,
    /// Availability zone id.
    #[serde(rename = "AvailabilityZoneID")]
    pub availability_zone_id: Option<String>,
    /// Task tags (`/taskWithTags` only).
    #[serde(rename = "TaskTags")]
    pub task_tags: Option<BTreeMap<String, String>>,
    /// Container instance tags (`/taskWithTags` on EC2 only).
    #[serde(rename = "ContainerInstanceTags")]
    pub container_instance_tags: Option<BTreeMap<String, String>>,
    /// `EC2`, `FARGATE` or `EXTERNAL`.
    #[serde(rename = "LaunchType")]
    pub launch_type: Option<String>,
    /// Why tags are missing (e.g. `ecs:ListTagsForResource` denied).
    #[serde(rename = "Errors", default, deserialize_with = "null_as_default")]
    pub errors: Vec<TmdsError>,
    /// VPC id (awsvpc).
    #[serde(rename = "VPCID")]
    pub vpc_id: Option<String>,
    /// ECS service name, when the task belongs to one.
    #[serde(rename = "ServiceName")]
    pub service_name: Option<String>,
    /// Clock accuracy (Fargate; newer EC2 agents).
    #[serde(rename = "ClockDrift")]
    pub clock_drift: Option<ClockDrift>,
    /// Fargate ephemeral storage use.
    #[serde(rename = "EphemeralStorageMetrics")]
    pub ephemeral_storage_metrics: Option<EphemeralStorageMetrics>,
    /// Whether fault injection is on (always emitted by agents from late 2024).
    #[serde(rename = "FaultInjectionEnabled")]
    pub fault_injection_enabled: Option<bool>,
}

/// TMDS v4 container (`GET ${ECS_CONTAINER_METADATA_URI_V4}` and inside [`TmdsTask`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TmdsContainer {
    /// Container id: 64 hex on EC2, `<32-hex task id>-<digits>` on Fargate. The key.
    #[serde(rename = "DockerId")]
    pub docker_id: String,
    /// Container name from the task definition.
    #[serde(rename = "Name")]
    pub name: Option<String>,
    /// Docker's name.
    #[serde(rename = "DockerName")]
    pub docker_name: Option<String>,
    /// Image reference.
    #[serde(rename = "Image")]
    pub image: Option<String>,
    /// Image id (empty for the pause container).
    #[serde(rename = "ImageID")]
    pub image_id: Option<String>,
    /// Port mappings.
    #[serde(rename = "Ports", default, deserialize_with = "null_as_default")]
    pub ports: Vec<Port>,
    /// Docker labels, including `com.amazonaws.ecs.*`.
    #[serde(rename = "Labels", default, deserialize_with = "null_as_default")]
    pub labels: BTreeMap<String, String>,
    /// Desired status.
    #[serde(rename = "DesiredStatus")]
    pub desired_status: Option<String>,
    /// Known status.
    #[serde(rename = "KnownStatus")]
    pub known_status: Option<String>,
    /// Exit code once stopped.
    #[serde(rename = "ExitCode")]
    pub exit_code: Option<i64>,
    /// Container limits.
    #[serde(rename = "Limits")]
    pub limits: Option<Limits>,
    /// Creation time, RFC 3339.
    #[serde(rename = "CreatedAt")]
    pub created_at: Option<String>,
    /// Start time, RFC 3339.
    #[serde(rename = "StartedAt")]
    pub started_at: Option<String>,
    /// End time, RFC 3339.
    #[serde(rename = "FinishedAt")]
    pub finished_at: Option<String>,
    /// `NORMAL`, `CNI_PAUSE`, ...: lets callers skip the pause container.
    #[serde(rename = "Type")]
    pub typ: Option<String>,
    /// Network attachments.
    #[serde(rename = "Networks", default, deserialize_with = "null_as_default")]
    pub networks: Vec<Network>,
    /// Health check state, when the task definition has one.
    #[serde(rename = "Health")]
    pub health: Option<Health>,
    /// Volumes.
    #[serde(rename = "Volumes", default, deserialize_with = "null_as_default")]
    pub volumes: Vec<Volume>,
    /// Log driver (`awslogs`, ...).
    #[serde(rename = "LogDriver")]
    pub log_driver: Option<String>,
    /// Log driver options.
    #[serde(rename = "LogOptions", default, deserialize_with = "null_as_default")]
    pub log_options: BTreeMap<String, String>,
    /// Container ARN.
    #[serde(rename = "ContainerARN")]
    pub container_arn: Option<String>,
    /// Fargate snapshotter.
    #[serde(rename = "Snapshotter")]
    pub snapshotter: Option<String>,
    /// Restarts by the agent's restart policy.
    #[serde(rename = "RestartCount")]
    pub restart_count: Option<u64>,
}

/// Container health (TMDS); the agent uses lowercase keys here.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// `HEALTHY`, `UNHEALTHY`, `UNKNOWN`.
    pub status: Option<String>,
    /// Since when, RFC 3339.
    #[serde(rename = "statusSince")]
    pub status_since: Option<String>,
    /// Exit code of the last check.
    #[serde(rename = "exitCode")]
    pub exit_code: Option<i64>,
    /// Output of the last check.
    pub output: Option<String>,
}

/// An error the agent reports inside a TMDS answer (e.g. tags it could not list).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TmdsError {
    /// The field left empty because of the error.
    #[serde(rename = "ErrorField")]
    pub error_field: Option<String>,
    /// AWS error code.
    #[serde(rename = "ErrorCode")]
    pub error_code: Option<String>,
    /// AWS error message.
    #[serde(rename = "ErrorMessage")]
    pub error_message: Option<String>,
    /// HTTP status of the failed AWS call.
    #[serde(rename = "StatusCode")]
    pub status_code: Option<u16>,
    /// AWS request id.
    #[serde(rename = "RequestId")]
    pub request_id: Option<String>,
    /// The resource the call was about.
    #[serde(rename = "ResourceARN")]
    pub resource_arn: Option<String>,
}

/// Clock accuracy reported by the agent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClockDrift {
    /// Error bound in milliseconds.
    #[serde(rename = "ClockErrorBound")]
    pub clock_error_bound: Option<f64>,
    /// When it was measured.
    #[serde(rename = "ReferenceTimestamp")]
    pub reference_timestamp: Option<String>,
    /// `SYNCHRONIZED` or `NOT_SYNCHRONIZED`.
    #[serde(rename = "ClockSynchronizationStatus")]
    pub clock_synchronization_status: Option<String>,
}

/// Fargate ephemeral storage use, in MiB.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EphemeralStorageMetrics {
    /// Used.
    #[serde(rename = "Utilized")]
    pub utilized: Option<u64>,
    /// Reserved.
    #[serde(rename = "Reserved")]
    pub reserved: Option<u64>,
}

/// Builds an [`EcsTask`] from the raw strings every ECS payload carries. An ARN that does not
/// parse leaves the ARN and task id unknown (we never guess), the rest is kept.
fn ecs_task_from(
    arn: &str,
    cluster: Option<&str>,
    family: Option<&str>,
    revision: Option<&str>,
    container_name: Option<&str>,
) -> EcsTask {
    let task_arn = TaskArn::parse(arn);
    let non_empty = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(str::to_owned);
    EcsTask {
        task_id: task_arn.as_ref().map(|a| a.task_id().clone()),
        // A new-format ARN names the cluster; use it when the caller has nothing better.
        cluster: non_empty(cluster).or_else(|| {
            task_arn
                .as_ref()
                .and_then(|a| a.cluster().map(str::to_owned))
        }),
        task_arn,
        family: non_empty(family),
        revision: revision.and_then(|r| r.trim().parse::<u32>().ok()),
        container_name: non_empty(container_name),
    }
}

impl AgentTask {
    /// The task as our identity type, for `container`.
    ///
    /// `cluster` comes from [`EcsAgentClient::metadata`] (introspection tasks do not carry
    /// it); without it the cluster segment of a new-format ARN is used. The container name is
    /// found by matching `DockerId`; it stays `None` when the container is not in this task.
    pub fn ecs_task(&self, container: &ContainerId, cluster: Option<&str>) -> EcsTask {
        let name = self
            .containers
            .iter()
            .find(|c| c.docker_id == container.as_str())
            .and_then(|c| c.name.as_deref());
        ecs_task_from(
            &self.arn,
            cluster,
            self.family.as_deref(),
            self.version.as_deref(),
            name,
        )
    }
}

impl TmdsTask {
    /// The task as our identity type, for `container` (container name by `DockerId`).
    pub fn ecs_task(&self, container: &ContainerId) -> EcsTask {
        let name = self
            .containers
            .iter()
            .find(|c| c.docker_id == container.as_str())
            .and_then(|c| c.name.as_deref());
        ecs_task_from(
            &self.task_arn,
            self.cluster.as_deref(),
            self.family.as_deref(),
            self.revision.as_deref(),
            name,
        )
    }
}

/// How to reach and cache the ECS agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EcsAgentSettings {
    /// Base URI of the introspection API, `http://host:port` (default [`DEFAULT_BASE_URI`]).
    pub base_uri: String,
    /// Timeout for a whole request, connect to last body byte (default [`DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
    /// How long a found task is reused (default [`DEFAULT_CACHE_TTL`]).
    pub cache_ttl: Duration,
    /// How long "no such container" is reused (default [`DEFAULT_NEGATIVE_CACHE_TTL`]).
    pub negative_cache_ttl: Duration,
    /// The longest pause in asking after the agent could not be reached (default
    /// [`DEFAULT_UNREACHABLE_BACKOFF`]); the pause starts at [`FIRST_UNREACHABLE_BACKOFF`]
    /// (or this, when smaller) and doubles with each failure in a row.
    pub unreachable_backoff: Duration,
}

impl Default for EcsAgentSettings {
    fn default() -> Self {
        Self {
            base_uri: DEFAULT_BASE_URI.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            cache_ttl: DEFAULT_CACHE_TTL,
            negative_cache_ttl: DEFAULT_NEGATIVE_CACHE_TTL,
            unreachable_backoff: DEFAULT_UNREACHABLE_BACKOFF,
        }
    }
}

/// Mutable client state; the lock is never held across an `.await`.
#[derive(Default)]
struct Cache {
    /// Per container: the answer and when it expires.
    tasks: HashMap<ContainerId, (Instant, Option<AgentTask>)>,
    /// `/v1/metadata` and when it expires.
    metadata: Option<(Instant, AgentMetadata)>,
    /// Set after a connection failure or timeout: no request before this instant.
    unreachable_until: Option<Instant>,
    /// The pause the next failure in a row sets; back to the first pause on an answer.
    next_backoff: Option<Duration>,
}

/// A client of one ECS agent's introspection API, with caching and back-off (see the module
/// docs). Share it behind an `Arc`; all methods take `&self`.
pub struct EcsAgentClient {
    settings: EcsAgentSettings,
    /// `base_uri` without a trailing `/`.
    base: String,
    http: reqwest::Client,
    cache: Mutex<Cache>,
}

impl std::fmt::Debug for EcsAgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EcsAgentClient")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl EcsAgentClient {
    /// Builds a client for the agent at `base_uri` with `timeout` per request and
    /// `cache_ttl` for found tasks; the other settings keep their defaults (the negative TTL
    /// is capped at `cache_ttl`). No request is made until the first lookup.
    ///
    /// # Errors
    /// As [`EcsAgentClient::from_settings`].
    pub fn try_new(
        base_uri: impl Into<String>,
        timeout: Duration,
        cache_ttl: Duration,
    ) -> Result<Self, EcsAgentError> {
        Self::from_settings(EcsAgentSettings {
            base_uri: base_uri.into(),
            timeout,
            cache_ttl,
            negative_cache_ttl: DEFAULT_NEGATIVE_CACHE_TTL.min(cache_ttl),
            unreachable_backoff: DEFAULT_UNREACHABLE_BACKOFF,
        })
    }

    /// Builds a client from full settings. No request is made until the first lookup.
    ///
    /// # Errors
    /// [`EcsAgentError::ParseBaseUri`] when `base_uri` is not an `http://` URL (the agent
    /// serves no TLS, and this build has none), [`EcsAgentError::BuildClient`] when the HTTP
    /// client cannot be created.
    pub fn from_settings(settings: EcsAgentSettings) -> Result<Self, EcsAgentError> {
        let uri = settings.base_uri.trim_end_matches('/');
        let bad = |reason| EcsAgentError::ParseBaseUri {
            uri: settings.base_uri.clone(),
            reason,
        };
        if !uri.starts_with("http://") {
            return Err(bad("must start with http://"));
        }
        let url = reqwest::Url::parse(uri).map_err(|_| bad("not a URL"))?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("has no host"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("must not have a query or fragment"));
        }
        let http = reqwest::Client::builder()
            // The agent is local: a proxy from the environment must never be used for it.
            .no_proxy()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .user_agent(concat!("collector/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| EcsAgentError::BuildClient { source })?;
        Ok(Self {
            base: uri.to_owned(),
            settings,
            http,
            cache: Mutex::new(Cache::default()),
        })
    }

    /// The settings the client was built with.
    pub fn settings(&self) -> &EcsAgentSettings {
        &self.settings
    }

    /// The task `id` belongs to, by `GET /v1/tasks?dockerid=<full id>`; `Ok(None)` when the
    /// agent does not know the container (404, or its zero-value task body). Answers are
    /// cached per container, found ones for `cache_ttl`, unknown ones for
    /// `negative_cache_ttl`; errors are not cached.
    ///
    /// The full id is sent on purpose: the agent treats ids longer than 12 characters as exact
    /// ids and shorter ones as prefixes (`ecs-agent/introspection/v1/handlers`).
    ///
    /// # Errors
    /// Any [`EcsAgentError`] but the build-time ones; [`EcsAgentError::is_unreachable`] tells
    /// "no agent here" from "the agent answered garbage".
    pub async fn task_for_container(
        &self,
        id: &ContainerId,
    ) -> Result<Option<AgentTask>, EcsAgentError> {
        let now = Instant::now();
        {
            let cache = self.lock();
            if let Some((expires, answer)) = cache.tasks.get(id)
                && *expires > now
            {
                return Ok(answer.clone());
            }
        }
        let url = format!("{}/v1/tasks?dockerid={}", self.base, id.as_str());
        let (status, body) = self.get(&url).await?;
        let answer = match status {
            reqwest::StatusCode::OK => {
                let task: AgentTask = serde_json::from_slice(&body)
                    .map_err(|source| EcsAgentError::ParseResponse { url, source })?;
                // A 200 with the zero-value task would be an agent bug; it still means "no
                // task", never a task with an empty ARN.
                Some(task).filter(|t| !t.arn.is_empty())
            }
            reqwest::StatusCode::NOT_FOUND => None,
            other => {
                return Err(EcsAgentError::UnexpectedStatus {
                    url,
                    status: other.as_u16(),
                });
            }
        };
        let ttl = match answer {
            Some(_) => self.settings.cache_ttl,
            None => self.settings.negative_cache_ttl,
        };
        let mut cache = self.lock();
        if cache.tasks.len() >= MAX_CACHED_CONTAINERS {
            let now = Instant::now();
            cache.tasks.retain(|_, (expires, _)| *expires > now);
            if cache.tasks.len() >= MAX_CACHED_CONTAINERS {
                // Everything is fresh: a burst of containers. Start over rather than grow.
                cache.tasks.clear();
            }
        }
        cache
            .tasks
            .insert(id.clone(), (Instant::now() + ttl, answer.clone()));
        Ok(answer)
    }

    /// The agent's `/v1/metadata` (cluster name, container instance ARN), cached for
    /// `cache_ttl`.
    ///
    /// # Errors
    /// As [`EcsAgentClient::task_for_container`]; any status but 200 is
    /// [`EcsAgentError::UnexpectedStatus`].
    pub async fn metadata(&self) -> Result<AgentMetadata, EcsAgentError> {
        {
            let cache = self.lock();
            if let Some((expires, metadata)) = &cache.metadata
                && *expires > Instant::now()
            {
                return Ok(metadata.clone());
            }
        }
        let url = format!("{}/v1/metadata", self.base);
        let (status, body) = self.get(&url).await?;
        if status != reqwest::StatusCode::OK {
            return Err(EcsAgentError::UnexpectedStatus {
                url,
                status: status.as_u16(),
            });
        }
        let metadata: AgentMetadata = serde_json::from_slice(&body)
            .map_err(|source| EcsAgentError::ParseResponse { url, source })?;
        self.lock().metadata = Some((Instant::now() + self.settings.cache_ttl, metadata.clone()));
        Ok(metadata)
    }

    /// Every task the agent knows (`GET /v1/tasks`), uncached: for warming up at start with
    /// one request instead of one per container.
    ///
    /// # Errors
    /// As [`EcsAgentClient::metadata`].
    pub async fn tasks(&self) -> Result<Vec<AgentTask>, EcsAgentError> {
        let url = format!("{}/v1/tasks", self.base);
        let (status, body) = self.get(&url).await?;
        if status != reqwest::StatusCode::OK {
            return Err(EcsAgentError::UnexpectedStatus {
                url,
                status: status.as_u16(),
            });
        }
        let tasks: AgentTasks = serde_json::from_slice(&body)
            .map_err(|source| EcsAgentError::ParseResponse { url, source })?;
        Ok(tasks.tasks)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        // The lock guards plain map updates that cannot panic half-way; a poisoned lock still
        // holds a consistent cache.
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One GET with the back-off, the timeout and the body cap applied. Returns the status
    /// and body of any answer; only failures to get an answer start the back-off.
    async fn get(&self, url: &str) -> Result<(reqwest::StatusCode, Bytes), EcsAgentError> {
        {
            let cache = self.lock();
            if let Some(until) = cache.unreachable_until {
                let now = Instant::now();
                if until > now {
                    return Err(EcsAgentError::AgentUnavailable {
                        base_uri: self.base.clone(),
                        retry_in: until - now,
                    });
                }
            }
        }
        let timeout = self.settings.timeout;
        let exchange = async {
            let mut resp = self.http.get(url).send().await?;
            let status = resp.status();
            if resp
                .content_length()
                .is_some_and(|n| n > MAX_BODY_BYTES as u64)
            {
                return Ok(None);
            }
            let mut body = BytesMut::new();
            while let Some(chunk) = resp.chunk().await? {
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    return Ok(None);
                }
                body.extend_from_slice(&chunk);
            }
            // `None`: the body is over the cap.
            Ok::<_, reqwest::Error>(Some((status, body.freeze())))
        };
        // reqwest's own timeout covers the same span; the outer one also bounds anything
        // reqwest does not (it is the contract callers rely on).
        let result = match tokio::time::timeout(timeout, exchange).await {
            Err(_) => Err(EcsAgentError::RequestTimeout {
                url: url.to_owned(),
                timeout,
            }),
            Ok(Err(source)) if source.is_timeout() => Err(EcsAgentError::RequestTimeout {
                url: url.to_owned(),
                timeout,
            }),
            Ok(Err(source)) => Err(EcsAgentError::SendRequest {
                url: url.to_owned(),
                source,
            }),
            Ok(Ok(None)) => Err(EcsAgentError::ReadResponse {
                url: url.to_owned(),
                limit: MAX_BODY_BYTES,
            }),
            Ok(Ok(Some(answer))) => Ok(answer),
        };
        let mut cache = self.lock();
        match &result {
            Err(error) if error.is_unreachable() => {
                let max = self.settings.unreachable_backoff;
                let backoff = cache
                    .next_backoff
                    .unwrap_or(FIRST_UNREACHABLE_BACKOFF)
                    .min(max);
                if cache.unreachable_until.is_none() {
                    tracing::info!(
                        base_uri = %self.base,
                        ?backoff,
                        %error,
                        "ECS agent unreachable; backing off.",
                    );
                }
                cache.unreachable_until = Some(Instant::now() + backoff);
                cache.next_backoff = Some((backoff * 2).min(max));
            }
            // It answered, even if wrongly: it is reachable.
            _ => {
                cache.next_backoff = None;
                if cache.unreachable_until.take().is_some() {
                    tracing::info!(base_uri = %self.base, "ECS agent reachable again.");
                }
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/testdata/ecs/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap()
    }

    fn cid(s: &str) -> ContainerId {
        ContainerId::parse(s).unwrap()
    }

    /// What `ecs-agent/introspection/v1/handlers` sends with 404 and 400: the zero value of
    /// `TaskResponse` (derived from the struct tags; see the fixtures README).
    const ZERO_TASK: &str =
        r#"{"Arn":"","KnownStatus":"","Family":"","Version":"","Containers":null}"#;

    const DOCKERID_FIXTURE_ID: &str =
        "79c796ed2a7f864f485c76f83f3165488097279d296a7c05bd5201a1c69b2920";

    #[test]
    fn introspection_fixtures_parse() {
        let meta: AgentMetadata =
            serde_json::from_slice(&fixture("introspection-v1-metadata.json")).unwrap();
        assert_eq!(meta.cluster.as_deref(), Some("cluster_name"));
        assert!(
            meta.container_instance_arn
                .unwrap()
                .contains(":container-instance/")
        );
        // ContainerInstanceArn null before registration; Version hidden.
        let meta: AgentMetadata =
            serde_json::from_str(r#"{"Cluster":"c","ContainerInstanceArn":null}"#).unwrap();
        assert_eq!((meta.container_instance_arn, meta.version), (None, None));

        // (file, tasks, containers in total, tasks without DesiredStatus)
        let cases = [
            ("introspection-v1-tasks.json", 1usize, 2usize, 0usize),
            ("introspection-v1-tasks-running-and-stopped.json", 2, 4, 1),
            (
                "SYNTHETIC-introspection-v1-tasks-current-shape.json",
                2,
                3,
                0,
            ),
        ];
        for (file, tasks, containers, no_desired) in cases {
            let parsed: AgentTasks = serde_json::from_slice(&fixture(file)).unwrap();
            assert_eq!(parsed.tasks.len(), tasks, "{file}");
            let n: usize = parsed.tasks.iter().map(|t| t.containers.len()).sum();
            assert_eq!(n, containers, "{file}");
            let missing = parsed
                .tasks
                .iter()
                .filter(|t| t.desired_status.is_none())
                .count();
            assert_eq!(missing, no_desired, "{file}");
            for c in parsed.tasks.iter().flat_map(|t| &t.containers) {
                assert!(
                    ContainerId::parse(&c.docker_id).is_some(),
                    "{file}: {}",
                    c.docker_id
                );
            }
        }
        // The newer optional fields of the current agent are read, not just tolerated.
        let current: AgentTasks = serde_json::from_slice(&fixture(
            "SYNTHETIC-introspection-v1-tasks-current-shape.json",
        ))
        .unwrap();
        let mysql = &current.tasks[0].containers[0];
        assert_eq!(mysql.image.as_deref(), Some("mysql"));
        assert_eq!(mysql.ports[0].container_port, Some(3306));
        assert_eq!(
            mysql.volumes[0].destination.as_deref(),
            Some("/var/lib/mysql")
        );
        let curl = &current.tasks[1].containers[0];
        assert_eq!(curl.networks[0].ipv4_addresses, ["10.0.2.61"]);
        assert_eq!(curl.restart_count, Some(0));

        let one: AgentTask =
            serde_json::from_slice(&fixture("introspection-v1-tasks-dockerid.json")).unwrap();
        assert_eq!(one.family.as_deref(), Some("nginx-efs"));
        assert_eq!(one.containers[0].docker_id, DOCKERID_FIXTURE_ID);

        let zero: AgentTask = serde_json::from_str(ZERO_TASK).unwrap();
        assert_eq!(zero.arn, "");
        assert!(zero.containers.is_empty());
        let none: AgentTasks = serde_json::from_str(r#"{"Tasks":null}"#).unwrap();
        assert!(none.tasks.is_empty());
    }

    #[test]
    fn tmds_fixtures_parse() {
        // (file, containers, launch type, errors, has task tags)
        let cases = [
            ("tmds-v4-task-ec2-awsvpc.json", 2usize, "EC2", 0usize, false),
            ("tmds-v4-task-fargate.json", 2, "FARGATE", 0, false),
            ("tmds-v4-taskWithTags-ec2.json", 2, "EC2", 0, true),
            ("tmds-v4-taskWithTags-error-ec2.json", 2, "EC2", 2, false),
        ];
        for (file, containers, launch, errors, tags) in cases {
            let task: TmdsTask = serde_json::from_slice(&fixture(file)).unwrap();
            assert_eq!(task.containers.len(), containers, "{file}");
            assert_eq!(task.launch_type.as_deref(), Some(launch), "{file}");
            assert_eq!(task.errors.len(), errors, "{file}");
            assert_eq!(task.task_tags.is_some(), tags, "{file}");
            assert!(TaskArn::parse(&task.task_arn).is_some(), "{file}");
            for c in &task.containers {
                assert!(
                    ContainerId::parse(&c.docker_id).is_some(),
                    "{file}: {}",
                    c.docker_id
                );
            }
        }
        let fargate: TmdsTask =
            serde_json::from_slice(&fixture("tmds-v4-task-fargate.json")).unwrap();
        assert_eq!(fargate.limits.as_ref().unwrap().cpu, Some(0.25));
        assert_eq!(
            fargate.ephemeral_storage_metrics.unwrap().reserved,
            Some(20496)
        );
        assert_eq!(
            fargate
                .clock_drift
                .unwrap()
                .clock_synchronization_status
                .as_deref(),
            Some("SYNCHRONIZED")
        );
        let ec2: TmdsTask =
            serde_json::from_slice(&fixture("tmds-v4-task-ec2-awsvpc.json")).unwrap();
        assert_eq!(ec2.containers[0].typ.as_deref(), Some("CNI_PAUSE"));
        let errors: TmdsTask =
            serde_json::from_slice(&fixture("tmds-v4-taskWithTags-error-ec2.json")).unwrap();
        assert_eq!(errors.errors[1].error_field.as_deref(), Some("TaskTags"));
        assert_eq!(errors.errors[1].status_code, Some(400));

        // (file, container id, task id from its labels)
        let containers = [
            (
                "tmds-v4-container-ec2-awsvpc.json",
                "ea32192c8553fbff06c9340478a2ff089b2bb5646fb718b4ee206641c9086d66",
                "awslogs",
            ),
            (
                "tmds-v4-container-fargate.json",
                "cd189a933e5849daa93386466019ab50-2495160603",
                "awslogs",
            ),
        ];
        for (file, id, driver) in containers {
            let c: TmdsContainer = serde_json::from_slice(&fixture(file)).unwrap();
            assert_eq!(c.docker_id, id, "{file}");
            assert_eq!(c.log_driver.as_deref(), Some(driver), "{file}");
            assert_eq!(c.name.as_deref(), Some("curl"), "{file}");
            let ecs = crate::identify::labels::ecs_from_labels(&c.labels).unwrap();
            assert_eq!(ecs.container_name.as_deref(), Some("curl"), "{file}");
            assert_eq!(c.limits.unwrap().memory, Some(128), "{file}");
        }
    }

    #[test]
    fn ecs_task_from_payloads() {
        let one: AgentTask =
            serde_json::from_slice(&fixture("introspection-v1-tasks-dockerid.json")).unwrap();
        let id = cid(DOCKERID_FIXTURE_ID);
        let ecs = one.ecs_task(&id, Some("prod"));
        assert_eq!(
            ecs.task_id.unwrap().as_str(),
            "e01d58a8-151b-40e8-bc01-22647b9ecfec"
        );
        assert_eq!(ecs.cluster.as_deref(), Some("prod"));
        assert_eq!(ecs.family.as_deref(), Some("nginx-efs"));
        assert_eq!(ecs.revision, Some(2));
        assert_eq!(ecs.container_name.as_deref(), Some("nginx"));
        // Without metadata, the ARN's cluster segment.
        assert_eq!(one.ecs_task(&id, None).cluster.as_deref(), Some("default"));
        // Another container: the task is known but not the name.
        let other = one.ecs_task(&cid(&"c".repeat(64)), None);
        assert_eq!((other.container_name, other.revision), (None, Some(2)));

        // The doc sample's ARN has a made-up task id: ARN unknown, the rest kept.
        let tasks: AgentTasks =
            serde_json::from_slice(&fixture("introspection-v1-tasks.json")).unwrap();
        let wordpress = cid("bf25c5c5b2d4dba68846c7236e75b6915e1e778d31611e3c6a06831e39814a15");
        let ecs = tasks.tasks[0].ecs_task(&wordpress, None);
        assert_eq!((ecs.task_arn, ecs.task_id, ecs.cluster), (None, None, None));
        assert_eq!(ecs.family.as_deref(), Some("hello_world"));
        assert_eq!(ecs.revision, Some(8));
        assert_eq!(ecs.container_name.as_deref(), Some("wordpress"));

        // Old-format ARN (no cluster segment).
        let stopped: AgentTasks =
            serde_json::from_slice(&fixture("introspection-v1-tasks-running-and-stopped.json"))
                .unwrap();
        let busybox = cid("f7f1f8a7a245c5da83aa92729bd28c6bcb004d1f6a35409e4207e1d34030e966");
        let ecs = stopped.tasks[0].ecs_task(&busybox, None);
        assert_eq!(
            ecs.task_id.unwrap().as_str(),
            "090eff9b-1ce3-4db6-848a-a8d14064fd24"
        );
        assert_eq!(ecs.cluster, None);
        assert_eq!(ecs.container_name.as_deref(), Some("busybox"));

        // TMDS on Fargate: cluster is the full ARN, container id the Fargate form; same
        // answer as the labels of that container.
        let fargate: TmdsTask =
            serde_json::from_slice(&fixture("tmds-v4-task-fargate.json")).unwrap();
        let app = cid("bfa2636268144d039771334145e490c5-3681984407");
        let ecs = fargate.ecs_task(&app);
        let labels = crate::identify::labels::ecs_from_labels(&fargate.containers[1].labels);
        assert_eq!(Some(ecs.clone()), labels);
        assert_eq!(ecs.container_name.as_deref(), Some("fargate-app"));
        assert_eq!(ecs.revision, Some(5));
    }

    /// What the test agent does with one request.
    #[derive(Clone)]
    enum Reply {
        /// Answer with this status and body.
        Answer(u16, Vec<u8>),
        /// Read the request and never answer.
        Hang,
    }

    /// A real HTTP/1.1 server on 127.0.0.1:0 that counts requests.
    struct TestAgent {
        uri: String,
        hits: Arc<AtomicUsize>,
        paths: Arc<Mutex<Vec<String>>>,
    }

    async fn start_agent(route: impl Fn(&str) -> Reply + Send + Sync + 'static) -> TestAgent {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let paths = Arc::new(Mutex::new(Vec::new()));
        let route = Arc::new(route);
        let (h, p) = (hits.clone(), paths.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let (hits, paths, route) = (h.clone(), p.clone(), route.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf).into_owned();
                    let path = head.split(' ').nth(1).unwrap_or_default().to_owned();
                    hits.fetch_add(1, Ordering::SeqCst);
                    paths.lock().unwrap().push(path.clone());
                    match route(&path) {
                        Reply::Answer(status, body) => {
                            let head = format!(
                                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n\
                                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                                body.len()
                            );
                            let _ = conn.write_all(head.as_bytes()).await;
                            let _ = conn.write_all(&body).await;
                            let _ = conn.shutdown().await;
                        }
                        Reply::Hang => {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            drop(conn);
                        }
                    }
                });
            }
        });
        TestAgent { uri, hits, paths }
    }

    fn client(uri: &str) -> EcsAgentClient {
        EcsAgentClient::from_settings(EcsAgentSettings {
            base_uri: uri.to_owned(),
            timeout: Duration::from_millis(300),
            negative_cache_ttl: Duration::from_millis(300),
            unreachable_backoff: Duration::from_millis(400),
            ..EcsAgentSettings::default()
        })
        .unwrap()
    }

    /// An agent serving the dockerid fixture for its container and the zero-value 404 for
    /// everything else, like `ecs-agent/introspection/v1/handlers`.
    fn fixture_route(path: &str) -> Reply {
        if path == format!("/v1/tasks?dockerid={DOCKERID_FIXTURE_ID}") {
            Reply::Answer(200, fixture("introspection-v1-tasks-dockerid.json"))
        } else if path == "/v1/metadata" {
            Reply::Answer(200, fixture("introspection-v1-metadata.json"))
        } else if path == "/v1/tasks" {
            Reply::Answer(
                200,
                fixture("introspection-v1-tasks-running-and-stopped.json"),
            )
        } else {
            Reply::Answer(404, ZERO_TASK.into())
        }
    }

    #[tokio::test]
    async fn found_unknown_and_cached() {
        let agent = start_agent(fixture_route).await;
        let client = client(&agent.uri);
        let id = cid(DOCKERID_FIXTURE_ID);

        let task = client.task_for_container(&id).await.unwrap().unwrap();
        assert_eq!(
            task.ecs_task(&id, None).container_name.as_deref(),
            Some("nginx")
        );
        assert_eq!(
            agent.paths.lock().unwrap()[0],
            format!("/v1/tasks?dockerid={id}")
        );
        // Cached: the agent is not asked again.
        let again = client.task_for_container(&id).await.unwrap();
        assert_eq!(again, Some(task));
        assert_eq!(agent.hits.load(Ordering::SeqCst), 1);

        // 404 with the zero-value body: not found, and that is cached too (briefly).
        let unknown = cid(&"d".repeat(64));
        assert_eq!(client.task_for_container(&unknown).await.unwrap(), None);
        assert_eq!(client.task_for_container(&unknown).await.unwrap(), None);
        assert_eq!(agent.hits.load(Ordering::SeqCst), 2);
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(client.task_for_container(&unknown).await.unwrap(), None);
        assert_eq!(
            agent.hits.load(Ordering::SeqCst),
            3,
            "negative entry expired"
        );
        // The found entry has the long TTL and is still served from the cache.
        assert!(client.task_for_container(&id).await.unwrap().is_some());
        assert_eq!(agent.hits.load(Ordering::SeqCst), 3);

        let meta = client.metadata().await.unwrap();
        assert_eq!(meta.cluster.as_deref(), Some("cluster_name"));
        client.metadata().await.unwrap();
        assert_eq!(agent.hits.load(Ordering::SeqCst), 4, "metadata cached");

        assert_eq!(client.tasks().await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn bad_answers_are_errors_and_not_cached() {
        let huge = vec![b' '; MAX_BODY_BYTES + 1];
        let cases: Vec<(&str, Reply, &str)> = vec![
            (
                "400 zero body",
                Reply::Answer(400, ZERO_TASK.into()),
                "UnexpectedStatus",
            ),
            (
                "500",
                Reply::Answer(500, b"oops".to_vec()),
                "UnexpectedStatus",
            ),
            (
                "garbage",
                Reply::Answer(200, b"<html>hello</html>".to_vec()),
                "ParseResponse",
            ),
            (
                "wrong types",
                Reply::Answer(200, br#"{"Arn":5}"#.to_vec()),
                "ParseResponse",
            ),
            (
                "truncated",
                Reply::Answer(
                    200,
                    fixture("introspection-v1-tasks-dockerid.json")[..40].to_vec(),
                ),
                "ParseResponse",
            ),
            ("huge", Reply::Answer(200, huge), "ReadResponse"),
        ];
        let id = cid(DOCKERID_FIXTURE_ID);
        for (name, reply, want) in cases {
            let agent = start_agent(move |_| reply.clone()).await;
            let client = client(&agent.uri);
            for attempt in 1..=2 {
                let err = client.task_for_container(&id).await.unwrap_err();
                assert!(format!("{err:?}").starts_with(want), "{name}: {err:?}");
                assert!(!err.is_unreachable(), "{name}");
                assert_eq!(
                    agent.hits.load(Ordering::SeqCst),
                    attempt,
                    "{name}: not cached"
                );
            }
        }
        // A 200 with the zero-value task is "not found", not a task with an empty ARN.
        let agent = start_agent(|_| Reply::Answer(200, ZERO_TASK.into())).await;
        assert_eq!(
            client(&agent.uri).task_for_container(&id).await.unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn hanging_agent_times_out_fast_then_backs_off() {
        let agent = start_agent(|_| Reply::Hang).await;
        let client = client(&agent.uri);
        let id = cid(DOCKERID_FIXTURE_ID);

        let started = std::time::Instant::now();
        let err = client.task_for_container(&id).await.unwrap_err();
        let took = started.elapsed();
        assert!(
            matches!(err, EcsAgentError::RequestTimeout { .. }),
            "{err:?}"
        );
        assert!(took < Duration::from_secs(2), "took {took:?}");
        assert!(err.is_unreachable());

        // In back-off: answered at once, without a request.
        let started = std::time::Instant::now();
        let err = client.metadata().await.unwrap_err();
        assert!(
            matches!(err, EcsAgentError::AgentUnavailable { .. }),
            "{err:?}"
        );
        assert!(started.elapsed() < Duration::from_millis(50));
        assert_eq!(agent.hits.load(Ordering::SeqCst), 1);

        // After the back-off, the agent is tried again.
        tokio::time::sleep(Duration::from_millis(450)).await;
        let err = client.task_for_container(&id).await.unwrap_err();
        assert!(
            matches!(err, EcsAgentError::RequestTimeout { .. }),
            "{err:?}"
        );
        assert_eq!(agent.hits.load(Ordering::SeqCst), 2);
    }

    /// The pause after failures in a row starts at half a second and doubles up to the
    /// configured maximum: one slow answer does not stop lookups for long.
    #[tokio::test]
    async fn the_back_off_doubles_from_half_a_second() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let client = EcsAgentClient::from_settings(EcsAgentSettings {
            base_uri: uri,
            ..EcsAgentSettings::default()
        })
        .unwrap();
        let id = cid(DOCKERID_FIXTURE_ID);
        let retry_in = |err: EcsAgentError| match err {
            EcsAgentError::AgentUnavailable { retry_in, .. } => retry_in,
            other => panic!("{other:?}"),
        };
        assert!(client.task_for_container(&id).await.is_err());
        let first = retry_in(client.task_for_container(&id).await.unwrap_err());
        assert!(first <= FIRST_UNREACHABLE_BACKOFF, "{first:?}");
        tokio::time::sleep(first + Duration::from_millis(20)).await;
        assert!(client.task_for_container(&id).await.is_err());
        let second = retry_in(client.task_for_container(&id).await.unwrap_err());
        assert!(
            second > FIRST_UNREACHABLE_BACKOFF && second <= FIRST_UNREACHABLE_BACKOFF * 2,
            "{second:?}"
        );
    }

    #[tokio::test]
    async fn no_agent_is_refused_then_backs_off() {
        // A port that was just free: nothing listens there.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let client = client(&uri);
        let id = cid(DOCKERID_FIXTURE_ID);
        let err = client.task_for_container(&id).await.unwrap_err();
        assert!(matches!(err, EcsAgentError::SendRequest { .. }), "{err:?}");
        let err = client.task_for_container(&id).await.unwrap_err();
        assert!(
            matches!(err, EcsAgentError::AgentUnavailable { .. }),
            "{err:?}"
        );
        assert!(err.is_unreachable());
    }

    #[test]
    fn base_uri_is_validated() {
        let cases = [
            ("http://127.0.0.1:51678", true),
            ("http://127.0.0.1:51678/", true),
            ("http://localhost:1", true),
            ("https://127.0.0.1:51678", false),
            ("127.0.0.1:51678", false),
            ("http://", false),
            ("http://h:1/?x=1", false),
            ("", false),
        ];
        for (uri, ok) in cases {
            let got = EcsAgentClient::from_settings(EcsAgentSettings {
                base_uri: uri.into(),
                ..EcsAgentSettings::default()
            });
            assert_eq!(got.is_ok(), ok, "{uri}: {got:?}");
        }
        let short =
            EcsAgentClient::try_new(DEFAULT_BASE_URI, DEFAULT_TIMEOUT, Duration::from_secs(2))
                .unwrap();
        assert_eq!(short.settings().negative_cache_ttl, Duration::from_secs(2));
        assert!(
            EcsAgentClient::try_new("localhost:51678", DEFAULT_TIMEOUT, DEFAULT_CACHE_TTL).is_err()
        );
    }
}
