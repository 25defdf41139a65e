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
//!    is read again at the next start (never lost, at most repeated);
//! 4. the control API stops last, so a draining daemon can still be inspected.
//!
//! Besides the stages: the control API (`crate::control`) on its unix socket, fed by the
//! inventory's view and by observer sinks around the real ones, and a periodic expiry of the
//! container history (`discovery.history_retention`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::control::{
    CompanionServer, ControlError, ControlServer, ControlState, CountingSink, DeliveryTap,
    InventoryView, ReadTap, TAIL_CHANNEL_BATCHES,
};
use crate::discover::cgroupfs::{CgroupWatcher, scan_cgroupfs};
use crate::discover::docker_api::DockerApi;
use crate::discover::docker_root::{DockerRootWatcher, scan_docker_root};
use crate::discover::ebpf::{self, EbpfSettings};
use crate::discover::procfs::scan_procfs;
use crate::discover::{ContainerEvent, DiscoverySource, Sighting};
use crate::drain::DrainBarrier;
use crate::identify::cgroup::{self, CgroupLayout};
use crate::identify::ecs_agent::EcsAgentClient;
use crate::inventory::Inventory;
use crate::ship::cloudwatch::{CloudWatchError, CloudWatchLogsSink};
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
    /// The control socket cannot be served (another daemon has it, or it cannot be created).
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The CloudWatch Logs sink's settings are not usable.
    #[error(transparent)]
    CloudWatch(#[from] CloudWatchError),
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
        std::fs::create_dir_all(&config.data_dir).map_err(|source| AppError::CreateDir {
            path: config.data_dir.clone(),
            source,
        })?;
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

        // The real sinks, each counted, between two observers: the read tap sees each batch
        // as the shipper takes it, the delivery tap once every real sink has it
        // (`crate::control` documents why that order holds).
        let view = InventoryView::new();
        let (tail_tx, _) = broadcast::channel(TAIL_CHANNEL_BATCHES);
        let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(ReadTap)];
        let mut sink_stats = Vec::new();
        // Batches waiting in sinks' disk buffers: a drain waits until they are sent.
        let mut buffer_gauges = Vec::new();
        if config.sinks.file.enabled {
            let dir = config.file_sink_dir();
            info!(dir = %dir.display(), "Local directory sink enabled.");
            let sink = CountingSink::new(
                Box::new(FileSink::new(dir.clone())),
                dir.display().to_string(),
            );
            sink_stats.push(sink.stats());
            sinks.push(Box::new(sink));
        }
        if config.sinks.discard.enabled {
            let sink = CountingSink::new(Box::new(DiscardSink::default()), "(dropped)".to_owned());
            sink_stats.push(sink.stats());
            sinks.push(Box::new(sink));
        }
        if config.sinks.cloudwatch.enabled {
            let cw = &config.sinks.cloudwatch;
            let location = match &cw.endpoint_url {
                Some(url) => format!("CloudWatch Logs at {url}"),
                None => "CloudWatch Logs".to_owned(),
            };
            let mut cloudwatch = CloudWatchLogsSink::build(cw).await?;
            if cw.buffer_max_bytes > 0 {
                let gauge = Arc::new(std::sync::atomic::AtomicU64::new(0));
                buffer_gauges.push(gauge.clone());
                cloudwatch = cloudwatch.with_buffer(crate::ship::BufferSettings {
                    dir: config.data_dir.join("buffer").join("cloudwatch"),
                    max_bytes: cw.buffer_max_bytes,
                    gauge,
                });
            }
            let sink = CountingSink::new(Box::new(cloudwatch), location);
            sink_stats.push(sink.stats());
            sinks.push(Box::new(sink));
        }
        let mut archive = None;
        if config.sinks.s3.enabled {
            let s3 = &config.sinks.s3;
            let sink = crate::ship::s3::S3Sink::build(s3, config.data_dir.join("s3")).await;
            archive = Some(sink.handle());
            let sink = CountingSink::new(
                Box::new(sink),
                format!("s3://{}/{}", s3.bucket, s3.key_prefix),
            );
            sink_stats.push(sink.stats());
            sinks.push(Box::new(sink));
        }
        sinks.push(Box::new(DeliveryTap::new(view.clone(), tail_tx.clone())));
        // Bound before anything runs: a second daemon on this data directory stops here.
        let control = if config.control.enabled {
            let state = ControlState::new(
                config.clone(),
                layout.clone(),
                view.clone(),
                sink_stats,
                tail_tx,
            );
            Some(ControlServer::bind(&config.control_socket(), state)?)
        } else {
            None
        };
        let control_stop = CancellationToken::new();
        let control_task = control.map(|c| tokio::spawn(c.run(control_stop.clone())));
        let (batch_tx, batch_rx) = mpsc::channel(config.tail.channel_batches);
        let shipper_abort = CancellationToken::new();
        let shipper = Shipper::new(
            sinks,
            store.clone(),
            ShipperSettings {
                sync_interval: config.sinks.file.sync_interval,
                max_batches_per_commit: 64,
            },
        );
        let shipper_task = tokio::spawn(shipper.run(batch_rx, shipper_abort.clone()));

        let discovery_stop = CancellationToken::new();
        let tail_stop = CancellationToken::new();
        let (event_tx, event_rx) = mpsc::channel::<ContainerEvent>(EVENT_CHANNEL);
        let docker = DockerApi::new(config.host.docker_socket.clone());
        let agent = Arc::new(EcsAgentClient::try_new(
            config.ecs.agent_uri.clone(),
            config.ecs.agent_timeout,
            config.ecs.cache_ttl,
        )?);

        // Metrics ingest (Graphite, StatsD): its own tasks, stopped with discovery.
        let metrics_stop = CancellationToken::new();
        let (mut metrics_tasks, metrics_barrier) = crate::metrics::spawn(
            &config,
            view.clone(),
            store.clone(),
            docker.clone(),
            batch_tx.clone(),
            metrics_stop.clone(),
        );

        // The companion API (drain barrier): stopped with the control API, after the sinks.
        let companion_task = if config.control.companion {
            let barrier = DrainBarrier::new(
                view.clone(),
                Store::open_read_only(&config.state_path()).ok(),
                archive,
                metrics_barrier,
            )
            .with_buffers(buffer_gauges);
            match CompanionServer::bind(
                &config.companion_socket(),
                config.host.procfs_root.clone(),
                view.clone(),
                barrier,
            ) {
                Ok(server) => Some(tokio::spawn(server.run(control_stop.clone()))),
                Err(e) => {
                    warn!(error = %crate::internal_events::chain(&e), "No companion API: drains cannot be asked on this host.");
                    None
                }
            }
        } else {
            None
        };

        let mut discovery = tokio::task::JoinSet::new();
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
        discovery.spawn(rescan_loop(
            config.clone(),
            layout.clone(),
            event_tx.clone(),
            discovery_stop.clone(),
        ));
        let retention = config.discovery.history_retention;
        let every = (retention / 4).clamp(EXPIRE_INTERVAL_MIN, EXPIRE_INTERVAL_MAX);
        discovery.spawn(expire_loop(
            store.clone(),
            view.clone(),
            retention,
            every,
            discovery_stop.clone(),
        ));
        let ebpf_tx = event_tx.clone();
        drop(event_tx);

        let ebpf_settings = EbpfSettings {
            mode: config.discovery.ebpf,
            procfs_root: config.host.procfs_root.clone(),
            layout: layout.clone(),
        };
        let inventory = Inventory::new(
            config.clone(),
            store.clone(),
            layout,
            docker,
            agent,
            batch_tx,
            tail_stop.clone(),
        )
        .with_view(view.clone());
        let inventory_stop = CancellationToken::new();
        let inventory_task = tokio::spawn(inventory.run(event_rx, inventory_stop.clone()));

        // eBPF last: loading takes 0.1-0.5 s of CPU (the kernel's BTF, the verifier), and the
        // other sources run meanwhile, so nothing waits for it; once attached it sees every
        // container first.
        if let Some(source) = ebpf::start(ebpf_settings).await? {
            discovery.spawn(source.run(ebpf_tx, discovery_stop.clone()));
        }

        info!(data_dir = %config.data_dir.display(), "Collector running.");
        shutdown.cancelled().await;
        info!("Shutting down: stopping discovery, then tailers, then draining sinks.");
        discovery_stop.cancel();
        while discovery.join_next().await.is_some() {}
        metrics_stop.cancel();
        while metrics_tasks.join_next().await.is_some() {}
        tail_stop.cancel();
        inventory_stop.cancel();
        if inventory_task.await.is_err() {
            warn!("Inventory task panicked; this is a bug.");
        }
        let abort = shipper_abort.clone();
        let deadline = tokio::spawn(async move {
            tokio::time::sleep(DRAIN_DEADLINE).await;
            warn!(
                "Drain deadline passed; undelivered batches will be read again at the next start."
            );
            abort.cancel();
        });
        if shipper_task.await.is_err() {
            warn!("Shipper task panicked; this is a bug.");
        }
        deadline.abort();
        control_stop.cancel();
        if let Some(task) = control_task
            && task.await.is_err()
        {
            warn!("Control API task panicked; this is a bug.");
        }
        if let Some(task) = companion_task
            && task.await.is_err()
        {
            warn!("Companion API task panicked; this is a bug.");
        }
        info!("Collector stopped.");
        Ok(())
    }
}

/// How often removed containers older than the retention are forgotten: a quarter of the
/// retention, between these bounds (a DELETE over a small table; never worth more often).
const EXPIRE_INTERVAL_MIN: Duration = Duration::from_secs(1);
/// See [`EXPIRE_INTERVAL_MIN`].
const EXPIRE_INTERVAL_MAX: Duration = Duration::from_secs(600);

/// Forgets containers removed longer than `retention` ago, from the history (with their
/// sources and checkpoints) and from the control API's view, at start and every `every`.
async fn expire_loop(
    store: Store,
    view: InventoryView,
    retention: Duration,
    every: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.expire_history(retention_ms)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => info!(
                containers = n,
                "Forgot containers removed longer ago than the history retention."
            ),
            Ok(Err(e)) => {
                warn!(error = %crate::internal_events::chain(&e), "History expiry failed; retrying later.")
            }
            Err(_) => warn!("History expiry task panicked; this is a bug."),
        }
        if let Some(cutoff) = std::time::SystemTime::now()
            .checked_sub(retention.min(crate::control::REMOVED_KEPT_FOR))
        {
            view.expire(cutoff);
        }
    }
}

/// Full scans of procfs, cgroupfs and the Docker root at start and every `rescan_interval`:
/// the repair path for anything the watchers missed.
async fn rescan_loop(
    config: Config,
    layout: Option<CgroupLayout>,
    tx: mpsc::Sender<ContainerEvent>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(config.discovery.rescan_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (procfs_root, docker_root, layout) = (
            config.host.procfs_root.clone(),
            config.host.docker_root.clone(),
            layout.clone(),
        );
        // A failed scan sends no ScanComplete: an empty result must never read as "every
        // container is gone".
        let scans = tokio::task::spawn_blocking(move || {
            let mut events: Vec<ContainerEvent> = Vec::new();
            match scan_procfs(&procfs_root) {
                Ok(found) => {
                    events.extend(found.into_iter().map(ContainerEvent::Seen));
                    events.push(ContainerEvent::ScanComplete {
                        source: DiscoverySource::Procfs,
                    });
                }
                Err(e) => warn!(error = %crate::internal_events::chain(&e), "procfs scan failed."),
            }
            if let Some(l) = &layout {
                match scan_cgroupfs(l) {
                    Ok(found) => {
                        events.extend(found.into_iter().map(ContainerEvent::Seen));
                        events.push(ContainerEvent::ScanComplete {
                            source: DiscoverySource::Cgroupfs,
                        });
                    }
                    Err(e) => {
                        warn!(error = %crate::internal_events::chain(&e), "cgroupfs scan failed.")
                    }
                }
            }
            match scan_docker_root(&docker_root) {
                Ok(ids) => {
                    events.extend(ids.into_iter().map(|container_id| {
                        ContainerEvent::Seen(Sighting {
                            container_id,
                            cgroup_path: None,
                            cgroup_id: None,
                            pid: None,
                            source: DiscoverySource::DockerRoot,
                        })
                    }));
                    events.push(ContainerEvent::ScanComplete {
                        source: DiscoverySource::DockerRoot,
                    });
                }
                Err(e) => {
                    debug!(error = %crate::internal_events::chain(&e), "Docker root scan failed.")
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identify::{ContainerId, ContainerIdentity};
    use crate::state::Lifecycle;

    #[tokio::test]
    async fn history_expiry_runs_periodically() {
        let store = Store::in_memory().unwrap();
        let view = InventoryView::new();
        let stop = CancellationToken::new();
        let (retention, every) = (Duration::from_millis(300), Duration::from_millis(50));
        let task = tokio::spawn(expire_loop(
            store.clone(),
            view.clone(),
            retention,
            every,
            stop.clone(),
        ));
        let identity = ContainerIdentity::new(ContainerId::parse(&"e".repeat(64)).unwrap());
        store
            .record_container(&identity, Lifecycle::Removed, Some(0), None)
            .unwrap();
        view.publish_container(
            Arc::new(identity.clone()),
            Lifecycle::Removed,
            None,
            None,
            Vec::new(),
        );
        // Still there within the retention (the loop ran at start and ticks meanwhile)...
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            store
                .container(identity.container_id.as_str())
                .unwrap()
                .is_some()
        );
        // ...gone from both soon after, without anything but the loop running.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while store
            .container(identity.container_id.as_str())
            .unwrap()
            .is_some()
            || view.container(&identity.container_id).is_some()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the history was never expired"
            );
            tokio::time::sleep(every).await;
        }
        stop.cancel();
        task.await.unwrap();
    }
}
