//! The one owner of "what runs here": containers, their identities, lifecycles and log
//! sources. Reads discovery events, resolves identities (in the background, so a slow ECS
//! agent never holds up the loop), starts a tailer per log source, and tells tailers when
//! their container exits so they read to the end and stop.
//!
//! Every state change is recorded in SQLite (`state::history`), so identities outlive
//! Docker's memory of a container.

use std::collections::{HashMap, HashSet};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::batch::{Batch, SourceInfo};
use crate::config::Config;
use crate::control::InventoryView;
use crate::death::{self, DeathTracker};
use crate::discover::docker_api::DockerApi;
use crate::discover::{ContainerEvent, DiscoverySource, ProcessExit, Sighting};
use crate::identify::cgroup::{self, CgroupLayout};
use crate::identify::ecs_agent::EcsAgentClient;
use crate::identify::{
    CgroupHint, ContainerId, ContainerIdentity, DockerContainerInfo, EcsTask, docker_config, labels,
};
use crate::internal_events;
use crate::state::{DeathSource, Lifecycle, Store};
use crate::tail::budget::MemoryBudget;
use crate::tail::format::LogFormat;
use crate::tail::quiet_tick::QuietTick;
use crate::tail::rotation_guard::RotationGuard;
use crate::tail::tailer::{SourceSpec, Tailer, spawn_run};

/// What an identification pass found.
#[derive(Debug)]
struct Identified {
    container_id: ContainerId,
    info: Option<DockerContainerInfo>,
    agent: Option<EcsTask>,
    /// The agent was needed (the labels do not name the task) and did not name it.
    agent_missing: bool,
}

struct Entry {
    identity_tx: watch::Sender<Arc<ContainerIdentity>>,
    running_tx: watch::Sender<bool>,
    hint: Option<CgroupHint>,
    info: Option<DockerContainerInfo>,
    agent: Option<EcsTask>,
    pid: Option<i32>,
    lifecycle: Lifecycle,
    /// Source keys with a tailer running.
    active: HashSet<String>,
    /// Where each source's tailers left off (`SourceSpec::left_at`): a tailer started again
    /// resumes there, not at the committed checkpoint behind the batches in flight.
    left_at: HashMap<String, Arc<std::sync::Mutex<Option<crate::state::Checkpoint>>>>,
    /// An identification pass is in flight.
    identifying: bool,
    /// Something changed while a pass was in flight: run another when it returns (an exit
    /// seen mid-pass must still have its exit code read).
    identify_again: bool,
    /// Docker's view was read at least once (files or API).
    docker_known: bool,
    /// The ECS agent is needed for the task and has not named it yet.
    agent_missing: bool,
    /// Passes started since for that ([`AGENT_LATER_PASSES`] at most).
    agent_passes: u32,
    /// Discovery sources that saw it since their last full scan.
    seen_by: HashSet<DiscoverySource>,
    /// How its runs ended, and whether the sinks were told (`death.rs`).
    death: DeathTracker,
}

/// Settings the inventory needs from the configuration.
#[derive(Clone, Debug)]
pub struct InventorySettings {
    /// The whole configuration (host paths, tail settings).
    pub config: Config,
}

/// The inventory task.
pub struct Inventory {
    config: Config,
    store: Store,
    layout: Option<CgroupLayout>,
    docker: DockerApi,
    agent: Arc<EcsAgentClient>,
    batch_tx: mpsc::Sender<Batch>,
    entries: HashMap<ContainerId, Entry>,
    identified_tx: mpsc::Sender<Identified>,
    identified_rx: mpsc::Receiver<Identified>,
    finished_tx: mpsc::Sender<(ContainerId, String)>,
    finished_rx: mpsc::Receiver<(ContainerId, String)>,
    tailers: TaskTracker,
    tail_shutdown: CancellationToken,
    /// Opens rotated files at creation; `None` if inotify is unavailable.
    rotation_guard: Option<RotationGuard>,
    /// The clock quiet files are polled by, started with the first tailer.
    quiet_tick: Option<QuietTick>,
    /// What the control API sees: published after every change (see `publish`).
    view: InventoryView,
    /// The memory every source's batches in flight share (`tail.in_flight_bytes`).
    budget: Arc<MemoryBudget>,
}

impl Inventory {
    /// Builds the inventory. Tailers it starts stop on `tail_shutdown`.
    pub fn new(
        config: Config,
        store: Store,
        layout: Option<CgroupLayout>,
        docker: DockerApi,
        agent: Arc<EcsAgentClient>,
        batch_tx: mpsc::Sender<Batch>,
        tail_shutdown: CancellationToken,
    ) -> Self {
        let (identified_tx, identified_rx) = mpsc::channel(256);
        let (finished_tx, finished_rx) = mpsc::channel(256);
        Self {
            store,
            layout,
            docker,
            agent,
            batch_tx,
            entries: HashMap::new(),
            identified_tx,
            identified_rx,
            finished_tx,
            finished_rx,
            tailers: TaskTracker::new(),
            tail_shutdown,
            rotation_guard: match RotationGuard::start() {
                Ok(g) => Some(g),
                Err(e) => {
                    warn!(error = %internal_events::chain(&e), "No rotation guard; rotated files are found by name scans only.");
                    None
                }
            },
            quiet_tick: None,
            view: InventoryView::new(),
            budget: MemoryBudget::new(config.tail.in_flight_bytes),
            config,
        }
    }

    /// Publishes into `view` (the control API's) instead of a private one.
    pub fn with_view(mut self, view: InventoryView) -> Self {
        self.view = view;
        self
    }

    /// Runs until `events` closes or `stop` fires, then waits for its tailers to stop (they
    /// stop on the tail shutdown token) and returns.
    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<ContainerEvent>,
        stop: CancellationToken,
    ) {
        let mut globs = tokio::time::interval(self.config.tail.glob_interval);
        globs.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                ev = events.recv() => match ev {
                    Some(ev) => self.on_event(ev),
                    None => break,
                },
                Some(done) = self.identified_rx.recv() => self.on_identified(done),
                Some((id, key)) = self.finished_rx.recv() => self.on_source_finished(&id, &key),
                _ = globs.tick() => self.refresh_declared_files(),
            }
        }
        self.tailers.close();
        self.tailers.wait().await;
    }

    fn on_event(&mut self, ev: ContainerEvent) {
        let (event, via) = match &ev {
            ContainerEvent::Seen(s) => ("seen", s.source),
            ContainerEvent::Exited { source, .. } => ("exited", *source),
            ContainerEvent::Removed { source, .. } => ("removed", *source),
            ContainerEvent::ScanComplete { source } => ("scan_complete", *source),
            ContainerEvent::ProcessExited(_) => ("process_exited", DiscoverySource::Ebpf),
        };
        internal_events::DiscoveryEventReceived {
            event,
            source: via.as_str(),
        }
        .emit();
        match ev {
            ContainerEvent::Seen(s) => self.on_seen(s),
            ContainerEvent::Exited {
                container_id,
                source,
            } => {
                debug!(%container_id, via = source.as_str(), "Container exited.");
                self.reidentify(&container_id);
                self.set_lifecycle(&container_id, Lifecycle::Exited);
            }
            ContainerEvent::Removed {
                container_id,
                source,
            } => {
                debug!(%container_id, via = source.as_str(), "Container removed.");
                self.set_lifecycle(&container_id, Lifecycle::Removed);
                self.forget_if_done(&container_id);
            }
            ContainerEvent::ScanComplete { source } => self.on_scan_complete(source),
            ContainerEvent::ProcessExited(exit) => self.on_process_exit(exit),
        }
    }

    fn on_seen(&mut self, s: Sighting) {
        let id = s.container_id.clone();
        let is_new = !self.entries.contains_key(&id);
        if is_new {
            internal_events::ContainerDiscovered {
                container_id: id.as_str(),
                source: s.source.as_str(),
            }
            .emit();
            let hint = s.cgroup_path.as_deref().and_then(cgroup::parse_cgroup_path);
            let identity = ContainerIdentity::new(id.clone());
            let (identity_tx, _) = watch::channel(Arc::new(identity));
            let (running_tx, _) = watch::channel(true);
            self.entries.insert(
                id.clone(),
                Entry {
                    identity_tx,
                    running_tx,
                    hint,
                    info: None,
                    agent: None,
                    pid: None,
                    lifecycle: Lifecycle::Running,
                    active: HashSet::new(),
                    left_at: HashMap::new(),
                    identifying: false,
                    identify_again: false,
                    docker_known: false,
                    agent_missing: false,
                    agent_passes: 0,
                    seen_by: HashSet::new(),
                    death: DeathTracker::new(s.source),
                },
            );
        }
        let layout = self.layout.clone();
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        e.seen_by.insert(s.source);
        let mut changed = false;
        if let Some(path) = &s.cgroup_path {
            if e.hint.is_none() {
                e.hint = cgroup::parse_cgroup_path(path);
            }
            let current = e.identity_tx.borrow().clone();
            if current.cgroup_path.as_deref() != Some(path.as_str()) || current.cgroup_id.is_none()
            {
                let mut next = (*current).clone();
                next.cgroup_path = Some(path.clone());
                next.cgroup_id = s.cgroup_id.or_else(|| {
                    layout
                        .as_ref()
                        .and_then(|l| cgroup::cgroup_id(l, path).ok())
                });
                e.identity_tx.send_replace(Arc::new(next));
                changed = true;
            }
        }
        // A sighting's PID may be any process in the container (a procfs scan meets forked
        // children too); it replaces the known one only once that process is gone, so the
        // init PID Docker reported stays the container's PID while it lives.
        if let Some(pid) = s.pid
            && e.pid.is_none_or(|known| {
                known != pid
                    && !self
                        .config
                        .host
                        .procfs_root
                        .join(known.to_string())
                        .exists()
            })
        {
            e.pid = Some(pid);
        }
        // A live process (procfs, Docker's start event with its PID) or a container cgroup
        // on a container thought gone means it runs again (restart policy, `docker start`).
        // Docker's listing after a reconnect names exited containers too: not a sign of life.
        let live = s.pid.is_some()
            || matches!(s.source, DiscoverySource::Cgroupfs | DiscoverySource::Ebpf);
        if e.lifecycle != Lifecycle::Running && live && e.lifecycle != Lifecycle::Removed {
            e.death.new_run();
            e.lifecycle = Lifecycle::Running;
            e.running_tx.send_replace(true);
            changed = true;
        }
        if is_new || changed || !e.docker_known {
            self.reidentify(&id);
        }
        self.publish(&id);
    }

    /// Starts a background identification pass unless one is in flight.
    fn reidentify(&mut self, id: &ContainerId) {
        let Some(e) = self.entries.get_mut(id) else {
            return;
        };
        if e.identifying {
            e.identify_again = true;
            return;
        }
        e.identifying = true;
        let docker_root = self.config.host.docker_root.clone();
        let docker = self.docker.clone();
        let agent = self.agent.clone();
        let hint = e.hint.clone();
        let id = id.clone();
        let tx = self.identified_tx.clone();
        tokio::spawn(async move {
            let done = identify(id, hint, docker_root, docker, agent).await;
            let _ = tx.send(done).await;
        });
    }

    fn on_identified(&mut self, done: Identified) {
        let Some(e) = self.entries.get_mut(&done.container_id) else {
            return;
        };
        e.identifying = false;
        let again = std::mem::take(&mut e.identify_again);
        if let Some(info) = done.info {
            e.docker_known = true;
            if !info.state.running
                && info.state.finished_at.is_some()
                && e.lifecycle == Lifecycle::Running
                && e.pid.is_none()
            {
                e.lifecycle = Lifecycle::Exited;
                e.running_tx.send_replace(false);
            }
            if info.state.running && info.state.pid > 0 {
                e.pid = Some(info.state.pid);
            }
            e.info = Some(info);
        }
        if done.agent.is_some() {
            e.agent = done.agent;
        }
        e.agent_missing = done.agent_missing && e.agent.is_none();
        let identity = build_identity(
            &e.identity_tx.borrow(),
            e.hint.as_ref(),
            e.info.as_ref(),
            e.agent.as_ref(),
        );
        e.identity_tx.send_replace(Arc::new(identity.clone()));
        let (exit_code, oom) = match &e.info {
            Some(i) if !i.state.running => (i.state.exit_code, Some(i.state.oom_killed)),
            _ => (None, None),
        };
        let oom = e.death.merge_oom(oom);
        if let Err(err) = self
            .store
            .record_container(&identity, e.lifecycle, exit_code, oom)
        {
            internal_events::CheckpointWriteError { error: &err }.emit();
        }
        if let Err(err) = self.store.record_discovered_via(
            identity.container_id.as_str(),
            e.death.discovered_via.as_str(),
        ) {
            internal_events::CheckpointWriteError { error: &err }.emit();
        }
        let id = done.container_id;
        self.remember_run(&id);
        self.publish(&id);
        // A pass asked for meanwhile (its cgroup appeared: the container started) knows
        // more; its tailers start with that one.
        if !again && self.has_started(&id) {
            self.ensure_output_source(&id);
            self.start_declared_files(&id);
        }
        if again {
            self.reidentify(&id);
        }
        self.maybe_log_death(&id);
        self.forget_if_done(&id);
    }

    fn set_lifecycle(&mut self, id: &ContainerId, lifecycle: Lifecycle) {
        let Some(e) = self.entries.get_mut(id) else {
            return;
        };
        if e.lifecycle == Lifecycle::Removed {
            return;
        }
        e.lifecycle = lifecycle;
        e.running_tx.send_replace(false);
        e.pid = None;
        let identity = e.identity_tx.borrow().clone();
        let (exit_code, oom) = match &e.info {
            Some(i) => (i.state.exit_code, Some(i.state.oom_killed)),
            None => (None, None),
        };
        let oom = e.death.merge_oom(oom);
        if let Err(err) = self
            .store
            .record_container(&identity, lifecycle, exit_code, oom)
        {
            internal_events::CheckpointWriteError { error: &err }.emit();
        }
        self.remember_run(id);
        self.publish(id);
    }

    /// A discovery source finished a full scan: containers it no longer sees may be gone.
    fn on_scan_complete(&mut self, source: DiscoverySource) {
        self.view.mark_ready();
        let mut gone = Vec::new();
        let mut check = Vec::new();
        for (id, e) in &mut self.entries {
            let seen = e.seen_by.remove(&source);
            if seen || e.lifecycle == Lifecycle::Removed {
                continue;
            }
            match source {
                // Docker keeps a directory per container until `docker rm`. A container never
                // identified that has also stopped (a sighting that raced its removal) goes too.
                DiscoverySource::DockerRoot
                    if e.docker_known || e.lifecycle == Lifecycle::Exited =>
                {
                    gone.push(id.clone())
                }
                // No process left: confirm with Docker's state before calling it exited.
                DiscoverySource::Procfs if e.lifecycle == Lifecycle::Running => {
                    check.push(id.clone())
                }
                _ => {}
            }
        }
        for id in gone {
            self.set_lifecycle(&id, Lifecycle::Removed);
            self.forget_if_done(&id);
        }
        for id in check {
            let docker_says_running = self
                .entries
                .get(&id)
                .and_then(|e| e.info.as_ref())
                .is_some_and(|i| i.state.running);
            let dir = self
                .config
                .host
                .docker_root
                .join("containers")
                .join(id.as_str());
            match docker_config::read_container_info(&self.config.host.docker_root, &id) {
                Ok(info) if info.state.running => {
                    if let Some(e) = self.entries.get_mut(&id) {
                        e.info = Some(info);
                    }
                }
                Ok(info) => {
                    if let Some(e) = self.entries.get_mut(&id) {
                        e.info = Some(info);
                    }
                    self.set_lifecycle(&id, Lifecycle::Exited);
                }
                Err(_) if !dir.exists() && !docker_says_running => {
                    self.set_lifecycle(&id, Lifecycle::Exited)
                }
                Err(_) => {}
            }
        }
        // Retry identities that are still incomplete (Docker socket was down, agent slow),
        // and Docker's view of stopped containers whose death is not known yet (Docker writes
        // its final state a little after the process is gone).
        let incomplete: Vec<ContainerId> = self
            .entries
            .iter()
            .filter(|(id, e)| {
                (!e.docker_known && e.lifecycle != Lifecycle::Removed)
                    || self.death_pending(id, e)
                    || (e.agent_missing
                        && e.lifecycle == Lifecycle::Running
                        && e.agent_passes < AGENT_LATER_PASSES)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in incomplete {
            if let Some(e) = self.entries.get_mut(&id)
                && e.agent_missing
                && !e.identifying
            {
                e.agent_passes += 1;
            }
            self.reidentify(&id);
        }
    }

    /// Drops a removed container whose sources are all read: its history stays in SQLite,
    /// and the inventory's memory does not grow with container churn.
    fn forget_if_done(&mut self, id: &ContainerId) {
        if self.entries.get(id).is_some_and(|e| {
            e.lifecycle == Lifecycle::Removed && e.active.is_empty() && !e.identifying
        }) {
            self.entries.remove(id);
        }
    }

    fn on_source_finished(&mut self, id: &ContainerId, key: &str) {
        self.view.source_finished(id, key);
        let restart = match self.entries.get_mut(id) {
            Some(e) => {
                e.active.remove(key);
                e.lifecycle == Lifecycle::Running && *e.running_tx.borrow()
            }
            None => false,
        };
        if restart {
            // It came back while its tailer was finishing.
            self.ensure_output_source(id);
            self.start_declared_files(id);
        }
        self.maybe_log_death(id);
        self.forget_if_done(id);
    }

    /// The kernel saw a process of the container die (eBPF): record an OOM kill, and for the
    /// init process the death of the run, before the `Exited` that follows.
    fn on_process_exit(&mut self, exit: ProcessExit) {
        let Some(e) = self.entries.get_mut(&exit.container_id) else {
            return;
        };
        debug!(container_id = %exit.container_id, pid = exit.pid, comm = %exit.comm, init = exit.init,
            status = exit.exit_status, signal = ?exit.signal, oom_killed = exit.oom_killed, "Container process exited.");
        let death = e.death.on_process_exit(&exit);
        let id = exit.container_id.as_str();
        if exit.oom_killed
            && let Err(err) = self.store.record_oom_kill(id, exit.pid)
        {
            internal_events::CheckpointWriteError { error: &err }.emit();
        }
        if let Some(death) = death {
            // The row exists once identified; record it now so the death has a row to go to.
            let identity = e.identity_tx.borrow().clone();
            let oom = e.death.merge_oom(None);
            let recorded = self
                .store
                .record_container(&identity, Lifecycle::Exited, death.exit_code, oom)
                .and_then(|()| self.store.record_death(id, &death));
            if let Err(err) = recorded {
                internal_events::CheckpointWriteError { error: &err }.emit();
            }
        }
    }

    /// A stopped container whose output was read to the end, waiting for Docker to say how it
    /// died (the kernel did not: eBPF off or the exit missed).
    fn death_pending(&self, id: &ContainerId, e: &Entry) -> bool {
        e.lifecycle == Lifecycle::Exited
            && !e.death.logged()
            && e.info.as_ref().is_some_and(|i| i.state.running)
            && !e
                .active
                .contains(&SourceInfo::container_output(id.clone()).key)
    }

    /// Sends the record that tells the sinks how a run ended (`death.rs`), once: when the
    /// container has stopped, its output was read to the end, and the kernel or Docker says
    /// how it died.
    fn maybe_log_death(&mut self, id: &ContainerId) {
        let Some(e) = self.entries.get_mut(id) else {
            return;
        };
        let output_key = SourceInfo::container_output(id.clone()).key;
        if e.lifecycle == Lifecycle::Running || e.death.logged() || e.active.contains(&output_key) {
            return;
        }
        let state = e.info.as_ref().map(|i| &i.state);
        let Some(death) = e.death.death(state) else {
            return;
        };
        let first_in_process = !e.death.any_logged();
        e.death.mark_logged();
        if death.source == DeathSource::Docker
            && let Err(err) = self.store.record_death(id.as_str(), &death)
        {
            internal_events::CheckpointWriteError { error: &err }.emit();
        }
        // A restarted collector: was this run's record delivered before? Docker's StartedAt
        // names the run (its death came after it).
        let run_started = state
            .and_then(|s| s.started_at.as_deref())
            .and_then(death::parse_docker_time_ms)
            .filter(|t| *t <= death.time_ms)
            .unwrap_or(death.time_ms);
        if first_in_process && death::delivered_before(&self.store, id, run_started) {
            return;
        }
        let batch = death::lifecycle_batch(e.identity_tx.borrow().clone(), &death);
        let tx = self.batch_tx.clone();
        // Never block the inventory on the sinks; the tracker waits for it at shutdown.
        self.tailers.spawn(async move {
            let _ = tx.send(batch).await;
        });
    }

    /// Whether the container has started: a process or a cgroup was seen, or Docker says it
    /// ran (or Docker's view is unreadable: then assume so). A container only created has
    /// no output yet, and its identity is not complete: the ECS agent is asked once its
    /// cgroup names the task, at start. Its tailers start with the pass that follows, so its
    /// first lines carry the whole identity (the pass at `docker create` would otherwise
    /// start them with half of it).
    fn has_started(&self, id: &ContainerId) -> bool {
        self.entries.get(id).is_some_and(|e| {
            e.hint.is_some()
                || e.pid.is_some()
                || e.info
                    .as_ref()
                    .is_none_or(|i| i.state.running || i.state.started_at.is_some())
        })
    }

    /// Starts the tailer of the container's stdout/stderr log when it has none.
    fn ensure_output_source(&mut self, id: &ContainerId) {
        let Some(e) = self.entries.get(id) else {
            return;
        };
        let json_file = match &e.info {
            Some(info) => info.log_driver.as_deref().is_none_or(|d| d == "json-file"),
            // Not readable yet: Docker is the only runtime whose files we know; wait for
            // its files to appear rather than guess for others.
            None => e
                .hint
                .as_ref()
                .is_some_and(|h| h.runtime == crate::identify::Runtime::Docker),
        };
        if !json_file {
            return;
        }
        // Docker's own LogPath names the host path as Docker sees it; when the collector runs
        // with the host mounted elsewhere, the configured docker_root is the truth.
        let path = self
            .config
            .host
            .docker_root
            .join("containers")
            .join(id.as_str())
            .join(format!("{id}-json.log"));
        let info = Arc::new(SourceInfo::container_output(id.clone()));
        self.start_tailer(info, path, LogFormat::DockerJson);
    }

    fn start_declared_files(&mut self, id: &ContainerId) {
        let Some(e) = self.entries.get(id) else {
            return;
        };
        let Some(info) = &e.info else { return };
        let declared = labels::declared_log_globs(&info.labels);
        for (glob, why) in &declared.rejected {
            warn!(container_id = %id, glob = %glob, reason = why, "Declared log path rejected.");
        }
        if declared.globs.is_empty() {
            return;
        }
        let running = e.lifecycle == Lifecycle::Running;
        let pid = if running { e.pid } else { None };
        let mut found = Vec::new();
        for g in &declared.globs {
            found.extend(resolve_declared(
                Path::new(g),
                &info.mounts,
                pid,
                &self.config.host.procfs_root,
            ));
        }
        for (container_path, host_path) in found {
            let info = Arc::new(SourceInfo::declared_file(id.clone(), container_path));
            self.start_tailer(info, host_path, LogFormat::Plain);
        }
    }

    fn refresh_declared_files(&mut self) {
        let ids: Vec<ContainerId> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                e.lifecycle == Lifecycle::Running
                    && e.info
                        .as_ref()
                        .is_some_and(|i| i.labels.contains_key(labels::COLLECTOR_LOGS))
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.start_declared_files(&id);
        }
    }

    fn start_tailer(&mut self, info: Arc<SourceInfo>, path: PathBuf, format: LogFormat) {
        let Some(e) = self.entries.get_mut(&info.container_id) else {
            return;
        };
        // A stopped container's source is started again (each exit signal asks for an
        // identification pass) only when its file grew since its tailers left off: dockerd
        // may write the last output after the tailer ended (a busy host), but a tailer that
        // reopens an unchanged file only waits out `exit_settle`, showing the source active
        // in `inspect` after the task was reported done.
        if e.active.contains(&info.key)
            || (e.lifecycle != Lifecycle::Running && !grew_since(e.left_at.get(&info.key), &path))
        {
            return;
        }
        // Watch for new files before the tailer lists the existing ones: nothing created in
        // between can be missed.
        let new_files = self.rotation_guard.as_ref().and_then(|g| match g.watch(&path) {
            Ok(rx) => Some(rx),
            Err(err) => {
                debug!(source = %info.key, error = %internal_events::chain(&err), "Rotation guard cannot watch; name scans only.");
                None
            }
        });
        let spec_path = path.clone();
        let spec = SourceSpec {
            info: info.clone(),
            path,
            format,
            identity: e.identity_tx.subscribe(),
            running: e.running_tx.subscribe(),
            new_files,
            quiet_tick: Some(
                self.quiet_tick
                    .get_or_insert_with(|| QuietTick::start(self.config.tail.quiet_poll_interval))
                    .clone(),
            ),
            left_at: Some(e.left_at.entry(info.key.clone()).or_default().clone()),
            budget: Some(self.budget.clone()),
        };
        let tailer = match Tailer::new(
            spec,
            self.config.tail.clone(),
            self.store.clone(),
            self.batch_tx.clone(),
        ) {
            Ok(t) => t,
            Err(err) => {
                warn!(source = %info.key, error = %internal_events::chain(&err), "Cannot start tailer; will retry.");
                return;
            }
        };
        e.active.insert(info.key.clone());
        self.view.source_started(info.clone(), spec_path);
        let finished = self.finished_tx.clone();
        let shutdown = self.tail_shutdown.clone();
        self.tailers.spawn(async move {
            let outcome = spawn_run(tailer, shutdown).await;
            if outcome == crate::tail::tailer::TailOutcome::Finished {
                let _ = finished
                    .send((info.container_id.clone(), info.key.clone()))
                    .await;
            }
        });
    }
}

/// Whether the file at `path` holds more than the source's tailers left off at: another
/// file there now, or the same one longer. Unknown (nothing left, the file gone) counts as
/// grown: reading again is the safe side.
fn grew_since(
    left_at: Option<&Arc<std::sync::Mutex<Option<crate::state::Checkpoint>>>>,
    path: &Path,
) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let Some(left) = left_at.and_then(|l| l.lock().unwrap_or_else(|p| p.into_inner()).clone())
    else {
        return true;
    };
    match std::fs::metadata(path) {
        Ok(m) => !left.fingerprint.same_inode(m.dev(), m.ino()) || m.len() > left.offset,
        Err(_) => true,
    }
}

// ---------------------------------------------------------------------------------------------
// Publishing for the control API (`collector inspect`) and the history's run columns.
// ---------------------------------------------------------------------------------------------

impl Inventory {
    /// Copies a container's state into the control API's view.
    fn publish(&self, id: &ContainerId) {
        let Some(e) = self.entries.get(id) else {
            return;
        };
        let seen_by = e.seen_by.iter().map(|s| s.as_str()).collect();
        self.view.publish_container(
            e.identity_tx.borrow().clone(),
            e.lifecycle,
            e.pid,
            e.info.as_ref(),
            seen_by,
        );
    }

    /// Remembers the container's last PID and Docker's start and finish times, so `inspect`
    /// can answer after `docker rm`.
    fn remember_run(&self, id: &ContainerId) {
        let Some(e) = self.entries.get(id) else {
            return;
        };
        let state = e.info.as_ref().map(|i| &i.state);
        let started = state.and_then(|s| s.started_at.as_deref());
        let finished = state
            .filter(|s| !s.running)
            .and_then(|s| s.finished_at.as_deref());
        if let Err(err) = self.store.record_run(id.as_str(), e.pid, started, finished) {
            internal_events::CheckpointWriteError { error: &err }.emit();
        }
    }
}

/// Reads Docker's view (files first: they work without the socket; then the API), then asks
/// the ECS agent when the labels do not name the task.
async fn identify(
    id: ContainerId,
    hint: Option<CgroupHint>,
    docker_root: PathBuf,
    docker: DockerApi,
    agent: Arc<EcsAgentClient>,
) -> Identified {
    let from_files = {
        let (root, id) = (docker_root.clone(), id.clone());
        tokio::task::spawn_blocking(move || docker_config::read_container_info(&root, &id)).await
    };
    let info = match from_files {
        Ok(Ok(info)) => Some(info),
        Ok(Err(err)) => {
            internal_events::IdentifyError {
                container_id: id.as_str(),
                via: "docker_root",
                error: &err,
            }
            .emit();
            match docker.inspect(&id).await {
                Ok(info) => Some(info),
                Err(err) => {
                    internal_events::IdentifyError {
                        container_id: id.as_str(),
                        via: "docker_api",
                        error: &err,
                    }
                    .emit();
                    None
                }
            }
        }
        Err(_) => None,
    };
    let labelled = info
        .as_ref()
        .and_then(|i| labels::ecs_from_labels(&i.labels));
    let complete = labelled
        .as_ref()
        .is_some_and(|e| e.task_arn.is_some() && e.container_name.is_some() && e.family.is_some());
    let might_be_ecs = labelled.is_some() || hint.as_ref().is_some_and(|h| h.task_id.is_some());
    let mut agent_task = None;
    let agent_wanted = might_be_ecs && !complete;
    if agent_wanted {
        for attempt in 0..=AGENT_ATTEMPT_RETRIES {
            match agent.task_for_container(&id).await {
                Ok(Some(task)) => {
                    let cluster = agent.metadata().await.ok().and_then(|m| m.cluster);
                    agent_task = Some(task.ecs_task(&id, cluster.as_deref()));
                }
                Ok(None) => {}
                // A slow or restarting agent: the client's back-off is short at first, so
                // wait it out a little before the tailer starts with half an identity.
                Err(err)
                    if attempt < AGENT_ATTEMPT_RETRIES
                        && err.is_unreachable()
                        && err.retry_in() <= AGENT_RETRY_WAIT =>
                {
                    tokio::time::sleep(err.retry_in()).await;
                    continue;
                }
                Err(err) => internal_events::IdentifyError {
                    container_id: id.as_str(),
                    via: "ecs_agent",
                    error: &err,
                }
                .emit(),
            }
            break;
        }
    }
    Identified {
        container_id: id,
        info,
        agent_missing: agent_wanted && agent_task.is_none(),
        agent: agent_task,
    }
}

/// How often one identification pass asks the ECS agent again after it could not be
/// reached, and the longest back-off it waits out for that.
const AGENT_ATTEMPT_RETRIES: u32 = 2;
const AGENT_RETRY_WAIT: Duration = Duration::from_secs(2);

/// How many later passes (one per discovery scan, about a second apart) ask the agent again
/// for a container it did not name yet (unreachable, or it did not know the container yet).
const AGENT_LATER_PASSES: u32 = 120;

/// Merges every source into one identity; earlier sources are the more specific.
fn build_identity(
    previous: &ContainerIdentity,
    hint: Option<&CgroupHint>,
    info: Option<&DockerContainerInfo>,
    agent: Option<&EcsTask>,
) -> ContainerIdentity {
    let mut identity = previous.clone();
    if let Some(info) = info {
        identity.docker_name = Some(info.name.clone());
        identity.image = Some(info.image.clone());
        identity.labels = info.labels.clone();
    }
    let mut ecs = info
        .and_then(|i| labels::ecs_from_labels(&i.labels))
        .unwrap_or_default();
    if let Some(a) = agent {
        ecs.merge_from(a);
    }
    if let Some(h) = hint {
        ecs.merge_from(&EcsTask {
            task_id: h.task_id.clone(),
            ..Default::default()
        });
    }
    if let Some(prev) = &previous.ecs {
        ecs.merge_from(prev);
    }
    identity.ecs = (ecs != EcsTask::default()).then_some(ecs);
    identity.group = labels::group_of(&identity.labels, hint, identity.ecs.as_ref());
    identity
}

/// Resolves a declared glob (a path inside the container) to host files: through the bind
/// mount or volume that holds it (works after the container exits), else through
/// `/proc/<pid>/root` while it runs. Returns `(path in container, host path)` pairs. Rotated
/// siblings (`x.log.1`) and compressed archives are left to the tailer of their base file.
fn resolve_declared(
    glob_in_container: &Path,
    mounts: &[crate::identify::Mount],
    pid: Option<i32>,
    procfs_root: &Path,
) -> Vec<(PathBuf, PathBuf)> {
    let best = mounts
        .iter()
        .filter(|m| glob_in_container.starts_with(&m.destination))
        .max_by_key(|m| m.destination.components().count());
    let (host_prefix, container_prefix): (PathBuf, PathBuf) = match (best, pid) {
        (Some(m), _) => (m.source.clone(), m.destination.clone()),
        (None, Some(pid)) => (
            procfs_root.join(pid.to_string()).join("root"),
            PathBuf::from("/"),
        ),
        (None, None) => return Vec::new(),
    };
    let Ok(rest) = glob_in_container.strip_prefix(&container_prefix) else {
        return Vec::new();
    };
    if rest.components().any(|c| matches!(c, Component::ParentDir)) {
        return Vec::new();
    }
    let pattern = host_prefix.join(rest);
    let Some(pattern_str) = pattern.to_str() else {
        return Vec::new();
    };
    let Ok(paths) = glob::glob(pattern_str) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for host in paths.flatten() {
        if !host.is_file() || is_rotated_or_archive(&host) {
            continue;
        }
        if let Ok(rel) = host.strip_prefix(&host_prefix) {
            out.push((container_prefix.join(rel), host.clone()));
        }
    }
    out
}

fn is_rotated_or_archive(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if [".gz", ".xz", ".zst", ".bz2"]
        .iter()
        .any(|s| name.ends_with(s))
    {
        return true;
    }
    match name.rsplit_once('.') {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            p.with_file_name(base).exists()
        }
        _ => false,
    }
}

/// How long a drained inventory waits for identity passes in flight at shutdown.
pub const IDENTIFY_GRACE: Duration = Duration::from_millis(200);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identify::Mount;

    #[test]
    fn declared_globs_resolve_through_mounts_and_skip_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("vol");
        std::fs::create_dir_all(host.join("sub")).unwrap();
        for f in [
            "a.log",
            "a.log.1",
            "b.log",
            "b.log.2.gz",
            "sub/c.log",
            "x.txt",
        ] {
            std::fs::write(host.join(f), b"").unwrap();
        }
        let mounts = vec![
            Mount {
                source: PathBuf::from("/nonexistent"),
                destination: PathBuf::from("/var"),
            },
            Mount {
                source: host.clone(),
                destination: PathBuf::from("/var/log/app"),
            },
        ];
        let mut got = resolve_declared(
            Path::new("/var/log/app/*.log"),
            &mounts,
            None,
            Path::new("/proc"),
        );
        got.sort();
        assert_eq!(
            got,
            vec![
                (PathBuf::from("/var/log/app/a.log"), host.join("a.log")),
                (PathBuf::from("/var/log/app/b.log"), host.join("b.log")),
            ]
        );
        assert!(
            resolve_declared(
                Path::new("/elsewhere/*.log"),
                &mounts,
                None,
                Path::new("/proc")
            )
            .is_empty()
        );
    }

    #[test]
    fn declared_globs_resolve_through_proc_root_while_running() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("42/root/tmp");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("x.log"), b"").unwrap();
        let got = resolve_declared(Path::new("/tmp/x.log"), &[], Some(42), dir.path());
        assert_eq!(got, vec![(PathBuf::from("/tmp/x.log"), root.join("x.log"))]);
    }
}

/// The inventory driven by hand over a Docker root holding one exited container, with no
/// Docker socket, ECS agent or procfs behind it.
#[cfg(test)]
mod lifecycle_tests {
    use super::*;

    /// `testdata/docker/exited-*`: a container that exited with code 3.
    const EXITED_ID: &str = "6975020fe5ffb4741653bcb1b7ae590421826386233578127a7c546b820c1758";

    fn testdata(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/testdata/docker/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    /// Feeds the inventory what its run loop would, until `done` holds (or 10 s pass),
    /// returning every record sent to the sinks meanwhile.
    async fn pump(
        inv: &mut Inventory,
        batches: &mut mpsc::Receiver<Batch>,
        done: impl Fn(&Inventory) -> bool,
    ) -> Vec<String> {
        let mut lines = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !done(inv) {
            tokio::select! {
                Some(d) = inv.identified_rx.recv() => inv.on_identified(d),
                Some((id, key)) = inv.finished_rx.recv() => inv.on_source_finished(&id, &key),
                Some(b) = batches.recv() => lines.extend(
                    b.records.iter().map(|r| String::from_utf8_lossy(r.message).into_owned()),
                ),
                _ = tokio::time::sleep_until(deadline) => panic!("the inventory did not settle"),
            }
        }
        lines
    }

    #[tokio::test]
    async fn an_exit_seen_after_the_output_was_read_out_reopens_it_only_when_it_grew() {
        let root = tempfile::tempdir().unwrap();
        let id = ContainerId::parse(EXITED_ID).unwrap();
        let docker_root = root.path().join("docker");
        let dir = docker_root.join("containers").join(EXITED_ID);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("config.v2.json"),
            testdata("exited-config.v2.json"),
        )
        .unwrap();
        std::fs::write(
            dir.join("hostconfig.json"),
            testdata("exited-hostconfig.json"),
        )
        .unwrap();
        std::fs::write(
            dir.join(format!("{EXITED_ID}-json.log")),
            concat!(
                r#"{"log":"one\n","stream":"stdout","time":"2026-11-22T00:40:13.896Z"}"#,
                "\n",
                r#"{"log":"two\n","stream":"stderr","time":"2026-11-22T00:40:13.897Z"}"#,
                "\n",
            ),
        )
        .unwrap();
        let mut config = Config::default();
        config.host.docker_root = docker_root;
        config.host.procfs_root = root.path().join("proc");
        config.tail.exit_settle = Duration::from_millis(50);
        let (batch_tx, mut batches) = mpsc::channel(16);
        let agent = EcsAgentClient::try_new(
            "http://127.0.0.1:9",
            Duration::from_millis(100),
            Duration::from_secs(1),
        )
        .unwrap();
        let mut inv = Inventory::new(
            config,
            Store::in_memory().unwrap(),
            None,
            DockerApi::new(root.path().join("no-docker.sock")),
            Arc::new(agent),
            batch_tx,
            CancellationToken::new(),
        );
        let key = SourceInfo::container_output(id.clone()).key;
        let output_started = |inv: &Inventory| inv.entries[&id].active.contains(&key);

        // Found after its exit (a restarted collector): its output is read out once.
        inv.on_event(ContainerEvent::Seen(Sighting {
            container_id: id.clone(),
            cgroup_path: None,
            cgroup_id: None,
            pid: None,
            source: DiscoverySource::DockerRoot,
        }));
        pump(&mut inv, &mut batches, output_started).await;
        let lines = pump(&mut inv, &mut batches, |inv| !output_started(inv)).await;
        assert_eq!(lines, ["one", "two"]);
        assert_eq!(inv.entries[&id].lifecycle, Lifecycle::Exited);

        // Late exit signals (Docker's `die`, the cgroup's removal) each ask for a pass.
        for source in [DiscoverySource::DockerApi, DiscoverySource::Cgroupfs] {
            inv.on_event(ContainerEvent::Exited {
                container_id: id.clone(),
                source,
            });
            pump(&mut inv, &mut batches, |inv| !inv.entries[&id].identifying).await;
            assert!(
                !output_started(&inv),
                "a pass after {source:?}'s exit started the finished output again"
            );
        }
        // Docker writes its last output after the tailer ended (a busy host): the next pass
        // reads it.
        let log = inv
            .config
            .host
            .docker_root
            .join("containers")
            .join(EXITED_ID)
            .join(format!("{EXITED_ID}-json.log"));
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        std::io::Write::write_all(
            &mut f,
            concat!(
                r#"{"log":"three\n","stream":"stdout","time":"2026-11-22T00:40:13.898Z"}"#,
                "\n"
            )
            .as_bytes(),
        )
        .unwrap();
        inv.on_event(ContainerEvent::Exited {
            container_id: id.clone(),
            source: DiscoverySource::DockerApi,
        });
        pump(&mut inv, &mut batches, output_started).await;
        let lines = pump(&mut inv, &mut batches, |inv| !output_started(inv)).await;
        assert_eq!(lines, ["three"]);

        // A new run reads it again.
        inv.on_event(ContainerEvent::Seen(Sighting {
            container_id: id.clone(),
            cgroup_path: None,
            cgroup_id: None,
            pid: Some(1),
            source: DiscoverySource::Procfs,
        }));
        pump(&mut inv, &mut batches, |inv| !inv.entries[&id].identifying).await;
        assert!(output_started(&inv), "a new run must be tailed");
    }
}
