//! Metrics ingest: Graphite plaintext (TCP, UDP, unix socket) and StatsD (UDP), each sample
//! attributed to the task and container that sent it, stored per task and forwarded.
//!
//! ```text
//! tcp.rs / udp.rs / unix.rs / statsd.rs ──Chunk──▶ store.rs (SQLite, per task) ──▶ control API
//!        │ attribute.rs (who sent it)        └──▶ carbon.rs (Graphite server, identity in path)
//!        │ parse.rs (strict), limit.rs (rate, connections)
//! ```
//!
//! Attribution comes from the connection, never from the data: a unix socket's peer
//! credentials (`SO_PEERCRED`, see `unix(7)`) give the sender's PID, `/proc/<pid>/cgroup`
//! names its container; a TCP or UDP peer address is matched with the addresses Docker gave
//! running containers. What the sender writes in a path never chooses a task, so one task
//! cannot write into another's metrics. Senders that match no container are kept under
//! `unattributed` and counted.
//!
//! Every queue is bounded; every sample dropped over a bound is counted, process-wide by
//! reason (`/metrics`) and per task (the state database, `GET /v1/metrics/tasks/{id}`).
//!
//! # Layout
//! - `config.rs`: `[metrics]`.
//! - `parse.rs`: the strict Graphite line parser and its rejection reasons.
//! - `framing.rs`: lines out of a byte stream, bounded.
//! - `attribute.rs`: peer -> container -> task; `netns.rs`: TCP peers in our own network
//!   namespace (host network mode) -> the process holding the socket.
//! - `limit.rs`: samples per second per task, connections per peer.
//! - `listen.rs`: the TCP, UDP and unix listeners.
//! - `statsd.rs`: StatsD parsing and per-interval aggregation.
//! - `store.rs`: the writer into the state database (`crate::state` holds the SQL).
//! - `carbon.rs`: the forwarder to a Graphite server.
//! - `emf.rs`: CloudWatch Embedded Metric Format lines in each container's log stream.
//! - `api.rs`: the JSON answers of the control API.
//! - `events.rs`: counters for `/metrics`.

pub mod api;
pub mod attribute;
pub mod carbon;
pub mod config;
pub mod emf;
pub mod events;
pub mod framing;
pub mod limit;
pub mod listen;
pub mod netns;
pub mod parse;
pub mod statsd;
pub mod store;

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use config::{CarbonConfig, MetricsConfig};

use crate::config::Config;
use crate::control::InventoryView;
use crate::discover::docker_api::DockerApi;
use crate::identify::{ContainerId, ContainerIdentity, TaskId};
use crate::state::Store;

/// Errors of the metrics listeners' set-up; each is logged, counted and retried.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The unix socket cannot be created.
    #[error("cannot create the metrics socket {path}")]
    BindUnix {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A listener cannot bind its address.
    #[error("cannot listen on {address} ({transport})")]
    Bind {
        /// `tcp`, `udp` or `statsd`.
        transport: &'static str,
        /// The address.
        address: std::net::SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Whose metrics a sample is: the key of the per-task store.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Owner {
    /// A container of an ECS task: the task owns it.
    Task(TaskId),
    /// A container outside any task.
    Container(ContainerId),
    /// A sender no container was found for.
    Unattributed,
}

impl Owner {
    /// The stored key: the task id, `container:<id>`, or `unattributed`.
    pub fn key(&self) -> String {
        match self {
            Owner::Task(t) => t.as_str().to_owned(),
            Owner::Container(c) => format!("container:{c}"),
            Owner::Unattributed => UNATTRIBUTED.to_owned(),
        }
    }
}

/// The owner key of unattributed samples.
pub const UNATTRIBUTED: &str = "unattributed";

/// Who sent a sample, as the connection says.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Origin {
    /// The store key ([`Owner::key`]).
    pub owner: String,
    /// The container, when found.
    pub container_id: Option<ContainerId>,
    /// Its task definition container name (else its Docker name).
    pub container_name: Option<String>,
    /// The task id, when the container is in a task.
    pub task_id: Option<TaskId>,
    /// The task ARN, when known.
    pub task_arn: Option<String>,
    /// The cluster, when known.
    pub cluster: Option<String>,
    /// The task definition family, when known.
    pub family: Option<String>,
    /// The task definition revision, when known.
    pub revision: Option<u32>,
    /// How it was found: `peer_credentials`, `peer_address`, `peer_socket`, or `none`.
    pub via: &'static str,
}

impl Origin {
    /// A sender no container was found for.
    pub fn unattributed() -> Self {
        Self {
            owner: UNATTRIBUTED.to_owned(),
            container_id: None,
            container_name: None,
            task_id: None,
            task_arn: None,
            cluster: None,
            family: None,
            revision: None,
            via: "none",
        }
    }

    /// The origin of a container with a known identity.
    pub fn of_identity(identity: &ContainerIdentity, via: &'static str) -> Self {
        let ecs = identity.ecs.as_ref();
        let task_id = ecs.and_then(|e| e.task_id.clone());
        let owner = match &task_id {
            Some(t) => Owner::Task(t.clone()),
            None => Owner::Container(identity.container_id.clone()),
        };
        Self {
            owner: owner.key(),
            container_id: Some(identity.container_id.clone()),
            container_name: Some(identity.display_name().to_owned()),
            task_id,
            task_arn: ecs
                .and_then(|e| e.task_arn.as_ref())
                .map(|a| a.as_str().to_owned()),
            cluster: ecs.and_then(|e| e.cluster.clone()),
            family: ecs.and_then(|e| e.family.clone()),
            revision: ecs.and_then(|e| e.revision),
            via,
        }
    }

    /// Whether no container was found.
    pub fn is_unattributed(&self) -> bool {
        self.container_id.is_none()
    }
}

/// One accepted sample.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The sender's metric path.
    pub path: String,
    /// A finite value.
    pub value: f64,
    /// Seconds since the epoch.
    pub timestamp: i64,
}

/// Samples of one sender from one read or datagram, with what was lost from it: the unit
/// that flows to the store and the forwarder (one `Arc` shared by both).
#[derive(Clone, Debug, PartialEq)]
pub struct Chunk {
    /// Who sent them.
    pub origin: Arc<Origin>,
    /// Accepted samples.
    pub samples: Vec<Sample>,
    /// Lines rejected by the parser.
    pub rejected: u64,
    /// Valid samples dropped over the task's rate bound.
    pub rate_limited: u64,
}

/// What the store writer takes, in order.
#[derive(Debug)]
pub enum StoreItem {
    /// Samples to write.
    Chunk(Arc<Chunk>),
    /// Answered once every item before it is written: the drain barrier's "every sample of
    /// this task received so far is stored".
    Barrier(tokio::sync::oneshot::Sender<()>),
}

/// Where accepted chunks go: the store writer and, when enabled, the carbon forwarder.
#[derive(Clone, Debug)]
pub struct Outputs {
    store: mpsc::Sender<StoreItem>,
    carbon: Option<mpsc::Sender<Arc<Chunk>>>,
    emf: Option<mpsc::Sender<Arc<Chunk>>>,
}

/// A handle for waiting until everything received so far is stored (the drain barrier).
#[derive(Clone, Debug)]
pub struct StoreBarrier {
    store: mpsc::Sender<StoreItem>,
}

impl StoreBarrier {
    /// Waits until every sample queued before this call is written to the state database.
    /// `false` when the writer has stopped (the daemon is shutting down).
    pub async fn wait(&self) -> bool {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.store.send(StoreItem::Barrier(tx)).await.is_err() {
            return false;
        }
        rx.await.is_ok()
    }
}

impl Outputs {
    /// Sends a chunk, waiting while the store's queue is full (TCP and unix: the sender
    /// slows down). The forwarder never makes a sender wait: its excess is dropped and
    /// counted.
    pub async fn send(&self, chunk: Chunk) {
        let chunk = Arc::new(chunk);
        self.forward(&chunk);
        let _ = self.store.send(StoreItem::Chunk(chunk)).await;
    }

    /// Sends a chunk without waiting (UDP): when the store's queue is full the chunk's
    /// samples are dropped and counted.
    pub fn try_send(&self, chunk: Chunk) {
        let chunk = Arc::new(chunk);
        self.forward(&chunk);
        let n = chunk.samples.len() as u64;
        if self.store.try_send(StoreItem::Chunk(chunk)).is_err() {
            events::add(&events::COUNTERS.queue_full, n);
        }
    }

    fn forward(&self, chunk: &Arc<Chunk>) {
        if let Some(tx) = &self.carbon
            && !chunk.samples.is_empty()
            && tx.try_send(chunk.clone()).is_err()
        {
            events::add(
                &events::COUNTERS.forward_dropped,
                chunk.samples.len() as u64,
            );
        }
        if let Some(tx) = &self.emf
            && !chunk.samples.is_empty()
            && !chunk.origin.is_unattributed()
            && tx.try_send(chunk.clone()).is_err()
        {
            events::add(&events::COUNTERS.emf_dropped, chunk.samples.len() as u64);
        }
    }
}

/// The Graphite unix socket: `metrics.unix`, else `<data_dir>/task/graphite.sock` (the
/// directory companions mount).
pub fn unix_socket_path(config: &Config) -> PathBuf {
    config
        .metrics
        .unix
        .clone()
        .unwrap_or_else(|| config.task_socket_dir().join("graphite.sock"))
}

/// Starts every configured listener, the store writer and the forwarder; they run until
/// `stop`. Nothing here fails: a listener that cannot bind is logged, counted and retried,
/// so a busy port never stops the collector's logs. Returns the tasks and, when ingest is
/// on, the store's barrier.
pub fn spawn(
    config: &Config,
    view: InventoryView,
    store: Store,
    docker: DockerApi,
    batches: mpsc::Sender<crate::batch::Batch>,
    stop: CancellationToken,
) -> (JoinSet<()>, Option<StoreBarrier>) {
    let mut tasks = JoinSet::new();
    let mc = &config.metrics;
    if !mc.enabled {
        return (tasks, None);
    }
    let (store_tx, store_rx) = mpsc::channel(mc.channel_chunks);
    tasks.spawn(store::run(
        store,
        store_rx,
        store::StoreSettings::from_config(mc),
        stop.clone(),
    ));
    let carbon = if mc.carbon.enabled {
        let (tx, rx) = mpsc::channel(mc.carbon.queue_chunks);
        tasks.spawn(carbon::run(mc.carbon.clone(), rx, stop.clone()));
        Some(tx)
    } else {
        None
    };
    let emf = if mc.emf.enabled {
        let (tx, rx) = mpsc::channel(mc.emf.queue_chunks);
        tasks.spawn(emf::run(
            mc.emf.namespace.clone(),
            mc.emf.interval,
            rx,
            view.clone(),
            batches,
            stop.clone(),
        ));
        Some(tx)
    } else {
        None
    };
    let barrier = StoreBarrier {
        store: store_tx.clone(),
    };
    let outputs = Outputs {
        store: store_tx,
        carbon,
        emf,
    };
    let attributor = Arc::new(attribute::Attributor::new(
        config.host.procfs_root.clone(),
        view,
        docker,
    ));
    let ingest = Arc::new(listen::Ingest::new(mc, attributor, outputs));
    let addr = |v: &str| v.parse::<std::net::SocketAddr>().ok();
    if let Some(a) = addr(&mc.tcp) {
        tasks.spawn(listen::run_tcp(ingest.clone(), a, stop.clone()));
    }
    if let Some(a) = addr(&mc.udp) {
        tasks.spawn(listen::run_udp(ingest.clone(), a, stop.clone()));
    }
    if mc.unix_enabled {
        tasks.spawn(listen::run_unix(
            ingest.clone(),
            unix_socket_path(config),
            stop.clone(),
        ));
    }
    if let Some(a) = addr(&mc.statsd) {
        tasks.spawn(statsd::run(
            ingest.clone(),
            a,
            mc.statsd_flush_interval,
            stop.clone(),
        ));
    }
    info!(tcp = %mc.tcp, udp = %mc.udp, statsd = %mc.statsd, carbon = mc.carbon.enabled, "Metrics ingest starting.");
    (tasks, Some(barrier))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(n: usize) -> Chunk {
        Chunk {
            origin: Arc::new(Origin::unattributed()),
            samples: (0..n)
                .map(|i| Sample {
                    path: format!("p{i}"),
                    value: 1.0,
                    timestamp: 1,
                })
                .collect(),
            rejected: 0,
            rate_limited: 0,
        }
    }

    #[test]
    fn full_queues_drop_and_count_without_waiting() {
        use std::sync::atomic::Ordering::Relaxed;
        let (store, _store_rx) = mpsc::channel(1);
        let (carbon, _carbon_rx) = mpsc::channel(1);
        let outputs = Outputs {
            store,
            carbon: Some(carbon),
            emf: None,
        };
        let (queue_full, forward_dropped) = (
            events::COUNTERS.queue_full.load(Relaxed),
            events::COUNTERS.forward_dropped.load(Relaxed),
        );
        for _ in 0..3 {
            outputs.try_send(chunk(2));
        }
        // The first chunk fits each queue; the other two are dropped, 2 samples each.
        // (The counters are process-wide: other tests may add to them meanwhile.)
        assert!(events::COUNTERS.queue_full.load(Relaxed) - queue_full >= 4);
        assert!(events::COUNTERS.forward_dropped.load(Relaxed) - forward_dropped >= 4);
    }

    #[test]
    fn owners_are_the_task_else_the_container() {
        let id = ContainerId::parse(&"c".repeat(64)).unwrap();
        let mut identity = ContainerIdentity::new(id.clone());
        assert_eq!(
            Origin::of_identity(&identity, "x").owner,
            format!("container:{id}")
        );
        identity.ecs = Some(crate::identify::EcsTask {
            task_id: TaskId::parse(&"1".repeat(32)),
            family: Some("web".into()),
            ..Default::default()
        });
        let o = Origin::of_identity(&identity, "x");
        assert_eq!(o.owner, "1".repeat(32));
        assert_eq!(o.family.as_deref(), Some("web"));
        assert!(!o.is_unattributed());
        assert_eq!(Owner::Unattributed.key(), UNATTRIBUTED);
    }
}
