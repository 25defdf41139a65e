//! Wires the stages together and shuts them down in order.
//!
//! ```text
//! discovery tasks ──ContainerEvent──▶ inventory ──spawns──▶ tailers ──Batch──▶ shipper ──▶ sinks
//!   (docker root inotify,              (identity,             (one per            │
//!    cgroupfs inotify,                  lifecycle)             source)            ▼
//!    docker events, rescan)                                                 SQLite checkpoints
//! ```
//! Every channel is bounded: when sinks are slow, tailers wait and the files on disk are the
//! buffer.
//!
//! Shutdown order (SIGTERM), each step bounded by the drain deadline:
//! 1. stop discovery;
//! 2. stop the inventory and every tailer (a tailer stops between passes);
//! 3. the shipper delivers what is already in the channel, syncs the sinks and commits the
//!    final checkpoints; past the deadline it gives up retrying, and what it did not deliver
//!    is read again at the next start (never lost, at most repeated).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::discover::cgroupfs::{CgroupWatcher, scan_cgroupfs};
use crate::discover::docker_api::DockerApi;
use crate::discover::docker_root::{DockerRootWatcher, scan_docker_root};
use crate::discover::procfs::scan_procfs;
use crate::discover::{ContainerEvent, DiscoverySource, Sighting};
use crate::identify::cgroup::{self, CgroupLayout};
use crate::identify::ecs_agent::EcsAgentClient;
use crate::inventory::Inventory;
use crate::ship::discard::DiscardSink;
use crate::ship::file::FileSink;
use crate::ship::{Shipper, ShipperSettings, Sink};
use crate::state::{StateError, Store};

/// Errors that stop the collector from starting.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The state database cannot be used.
    #[error(transparent)]
    State(#[from] StateError),
    /// The ECS agent address is not usable.
    #[error(transparent)]
    EcsAgent(#[from] crate::identify::ecs_agent::EcsAgentError),
    /// `discovery.ebpf = "on"` and eBPF could not start.
    #[error("eBPF is required (discovery.ebpf = \"on\") but cannot start")]
    Ebpf(#[from] crate::discover::ebpf::EbpfError),
    /// The data directory cannot be created.
    #[error("cannot create {path}")]
    CreateDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// How long the shipper may take to deliver what is in flight at shutdown.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(20);

/// Capacity of the discovery event channel.
const EVENT_CHANNEL: usize = 1024;

/// The collector.
pub struct App {
    config: Config,
}

impl App {
    /// Prepares the collector from a validated configuration.
    pub fn new(config: Config) -> Self {
        Self { config }
    }

    /// Runs until `shutdown` fires, then drains in order.
    ///
    /// # Errors
    /// Only set-up failures (data directory, state database); everything at run time is
    /// retried or skipped and counted.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), AppError> {
        let config = self.config;
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|source| AppError::CreateDir { path: config.data_dir.clone(), source })?;
        let store = Store::open(&config.state_path())?;
        let layout = match cgroup::detect_layout(&config.host.cgroupfs_root) {
            Ok(l) => {
                info!(mode = ?l.mode(), root = %config.host.cgroupfs_root.display(), "cgroup hierarchies found.");
                Some(l)
            }
            Err(e) => {
                warn!(error = %crate::internal_events::chain(&e), "No usable cgroup filesystem; discovery relies on procfs and Docker.");
                None
            }
        };

        let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
        if config.sinks.file.enabled {
            let dir = config.file_sink_dir();
            info!(dir = %dir.display(), "Local directory sink enabled.");
            sinks.push(Box::new(FileSink::new(dir)));
        }
        if config.sinks.discard.enabled {
            sinks.push(Box::new(DiscardSink::default()));
        }
        let (batch_tx, batch_rx) = mpsc::channel(config.tail.channel_batches);
        let shipper_abort = CancellationToken::new();
        let shipper = Shipper::new(
            sinks,
            store.clone(),
            ShipperSettings { sync_interval: config.sinks.file.sync_interval, max_batches_per_commit: 64 },
        );
        let shipper_task = tokio::spawn(shipper.run(batch_rx, shipper_abort.clone()));

        let discovery_stop = CancellationToken::new();
        let tail_stop = CancellationToken::new();
        let (event_tx, event_rx) = mpsc::channel::<ContainerEvent>(EVENT_CHANNEL);
        let docker = DockerApi::new(config.host.docker_socket.clone());
        let agent = Arc::new(EcsAgentClient::try_new(config.ecs.agent_uri.clone(), config.ecs.agent_timeout, config.ecs.cache_ttl)?);

        let mut discovery = tokio::task::JoinSet::new();
        // eBPF first: attached before the scans start, nothing created meanwhile is missed.
        let ebpf = crate::discover::ebpf::start(crate::discover::ebpf::EbpfSettings {
            mode: config.discovery.ebpf,
            procfs_root: config.host.procfs_root.clone(),
            layout: layout.clone(),
        })
        .await?;
        if let Some(source) = ebpf {
            discovery.spawn(source.run(event_tx.clone(), discovery_stop.clone()));
        }
        if config.discovery.docker_root_inotify {
            let watcher = DockerRootWatcher::new(config.host.docker_root.clone());
            let (tx, stop) = (event_tx.clone(), discovery_stop.clone());
            discovery.spawn(async move {
                if let Err(e) = watcher.run(tx, stop).await {
                    warn!(error = %crate::internal_events::chain(&e), "Docker root watch stopped; the periodic rescan covers it.");
                }
            });
        }
        if config.discovery.cgroup_inotify
            && let Some(l) = &layout
        {
            let watcher = CgroupWatcher::new(l.clone());
            let (tx, stop) = (event_tx.clone(), discovery_stop.clone());
            discovery.spawn(async move {
                if let Err(e) = watcher.run(tx, stop).await {
                    warn!(error = %crate::internal_events::chain(&e), "cgroupfs watch stopped; the periodic rescan covers it.");
                }
            });
        }
        if config.discovery.docker_events {
            let (d, tx, stop) = (docker.clone(), event_tx.clone(), discovery_stop.clone());
            discovery.spawn(async move { d.run_events(tx, stop).await });
        }
        discovery.spawn(rescan_loop(config.clone(), layout.clone(), event_tx.clone(), discovery_stop.clone()));
        drop(event_tx);

        let inventory = Inventory::new(config.clone(), store.clone(), layout, docker, agent, batch_tx, tail_stop.clone());
        let inventory_stop = CancellationToken::new();
        let inventory_task = tokio::spawn(inventory.run(event_rx, inventory_stop.clone()));

        info!(data_dir = %config.data_dir.display(), "Collector running.");
        shutdown.cancelled().await;
        info!("Shutting down: stopping discovery, then tailers, then draining sinks.");
        discovery_stop.cancel();
        while discovery.join_next().await.is_some() {}
        tail_stop.cancel();
        inventory_stop.cancel();
        if inventory_task.await.is_err() {
            warn!("Inventory task panicked; this is a bug.");
        }
        let abort = shipper_abort.clone();
        let deadline = tokio::spawn(async move {
            tokio::time::sleep(DRAIN_DEADLINE).await;
            warn!("Drain deadline passed; undelivered batches will be read again at the next start.");
            abort.cancel();
        });
        if shipper_task.await.is_err() {
            warn!("Shipper task panicked; this is a bug.");
        }
        deadline.abort();
        info!("Collector stopped.");
        Ok(())
    }
}

/// Full scans of procfs, cgroupfs and the Docker root at start and every `rescan_interval`:
/// the repair path for anything the watchers missed.
async fn rescan_loop(config: Config, layout: Option<CgroupLayout>, tx: mpsc::Sender<ContainerEvent>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(config.discovery.rescan_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (procfs_root, docker_root, layout) =
            (config.host.procfs_root.clone(), config.host.docker_root.clone(), layout.clone());
        // A failed scan sends no ScanComplete: an empty result must never read as "every
        // container is gone".
        let scans = tokio::task::spawn_blocking(move || {
            let mut events: Vec<ContainerEvent> = Vec::new();
            match scan_procfs(&procfs_root) {
                Ok(found) => {
                    events.extend(found.into_iter().map(ContainerEvent::Seen));
                    events.push(ContainerEvent::ScanComplete { source: DiscoverySource::Procfs });
                }
                Err(e) => warn!(error = %crate::internal_events::chain(&e), "procfs scan failed."),
            }
            if let Some(l) = &layout {
                match scan_cgroupfs(l) {
                    Ok(found) => {
                        events.extend(found.into_iter().map(ContainerEvent::Seen));
                        events.push(ContainerEvent::ScanComplete { source: DiscoverySource::Cgroupfs });
                    }
                    Err(e) => warn!(error = %crate::internal_events::chain(&e), "cgroupfs scan failed."),
                }
            }
            match scan_docker_root(&docker_root) {
                Ok(ids) => {
                    events.extend(ids.into_iter().map(|container_id| {
                        ContainerEvent::Seen(Sighting { container_id, cgroup_path: None, cgroup_id: None, pid: None, source: DiscoverySource::DockerRoot })
                    }));
                    events.push(ContainerEvent::ScanComplete { source: DiscoverySource::DockerRoot });
                }
                Err(e) => debug!(error = %crate::internal_events::chain(&e), "Docker root scan failed."),
            }
            events
        })
        .await;
        let Ok(events) = scans else { continue };
        for ev in events {
            if tx.send(ev).await.is_err() {
                return;
            }
        }
    }
}
