//! [`InventoryView`]: what the control API knows about the live daemon, published by the
//! inventory on every change and by the delivery tap once per delivered batch.
//!
//! The inventory owns containers; this is a read-only copy of the parts `inspect` needs, so
//! a question never waits on the inventory's loop, and the inventory never waits on a
//! question (a publish is a short write lock, a few per container lifetime). The tap writes
//! one entry per batch, never per line.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;

use crate::batch::{Batch, SourceInfo};
use crate::drain::DrainStatus;
use crate::identify::{ContainerId, ContainerIdentity, DockerContainerInfo};
use crate::state::Lifecycle;

/// A container as the running inventory sees it.
#[derive(Clone, Debug)]
pub struct LiveContainer {
    /// Everything known about it.
    pub identity: Arc<ContainerIdentity>,
    /// Running, exited or removed.
    pub lifecycle: Lifecycle,
    /// A PID in it while it runs (the lowest procfs saw, or Docker's `State.Pid`).
    pub pid: Option<i32>,
    /// Docker's view when last read (state, start and finish times, exit code, mounts).
    pub docker: Option<DockerContainerInfo>,
    /// The discovery sources that have seen it since their last full scan.
    pub seen_by: Vec<&'static str>,
    /// Its log sources, by key.
    pub sources: BTreeMap<String, LiveSource>,
    /// When the inventory saw it removed: the view forgets it after a while (see
    /// [`MAX_REMOVED_KEPT`] and [`REMOVED_KEPT_FOR`]); the history keeps it.
    pub removed_at: Option<SystemTime>,
}

/// The most removed containers the view keeps (the most recently removed). Each costs some
/// kilobytes (identity, Docker's view, sources): kept for the history's retention (7 days by
/// default), a host starting 15 containers a minute grew by 0.25 MiB a minute
/// (`cargo xtask soak`). `inspect` reads older ones from the history database.
pub const MAX_REMOVED_KEPT: usize = 256;

/// How long the view keeps a removed container at most (the history keeps it for its
/// retention): long enough for `inspect` to show its last delivery and its task's drain.
pub const REMOVED_KEPT_FOR: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// A log source the inventory started a tailer for.
#[derive(Clone, Debug)]
pub struct LiveSource {
    /// Which source.
    pub info: Arc<SourceInfo>,
    /// Host path of its live file.
    pub path: PathBuf,
    /// A tailer runs for it (false once it read its files to the end after the exit).
    pub active: bool,
}

/// Where delivery of a source stands: the position of the last batch every sink took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// Host path of the file the position is in.
    pub path: String,
    /// Device of that file.
    pub dev: u64,
    /// Inode of that file (a rotated file keeps its inode under a new name).
    pub ino: u64,
    /// Offset after the last delivered line.
    pub offset: u64,
    /// When the batch was delivered.
    pub at: SystemTime,
    /// The batch was the source's last: its files were read to the end after the exit.
    /// (The tailer may report itself finished before that batch is delivered.)
    pub last: bool,
}

#[derive(Debug, Default)]
struct ViewState {
    containers: HashMap<ContainerId, LiveContainer>,
    /// By source key.
    delivered: HashMap<String, Delivered>,
    /// The latest drain of each task, by task id.
    drains: HashMap<String, DrainStatus>,
}

/// Cheap-clone handle to the live view; see the module docs.
#[derive(Clone, Debug, Default)]
pub struct InventoryView {
    state: Arc<RwLock<ViewState>>,
    /// Set once the inventory has taken a first full scan in: before that, "not found" may
    /// only mean "not looked at yet" (`/ready`).
    ready: Arc<AtomicBool>,
}

impl InventoryView {
    /// An empty view.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, ViewState> {
        // Writers only replace whole values, so a panic mid-write leaves nothing torn.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, ViewState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes a container's current state (the inventory calls this after every change).
    pub fn publish_container(
        &self,
        identity: Arc<ContainerIdentity>,
        lifecycle: Lifecycle,
        pid: Option<i32>,
        docker: Option<&DockerContainerInfo>,
        seen_by: Vec<&'static str>,
    ) {
        let id = identity.container_id.clone();
        let mut state = self.write();
        let entry = state.containers.entry(id).or_insert_with(|| LiveContainer {
            identity: identity.clone(),
            lifecycle,
            pid,
            docker: None,
            seen_by: Vec::new(),
            sources: BTreeMap::new(),
            removed_at: None,
        });
        let newly_removed = lifecycle == Lifecycle::Removed && entry.removed_at.is_none();
        if newly_removed {
            entry.removed_at = Some(SystemTime::now());
        }
        entry.identity = identity;
        entry.lifecycle = lifecycle;
        entry.pid = pid;
        if docker.is_some() {
            entry.docker = docker.cloned();
        }
        entry.seen_by = seen_by;
        if newly_removed {
            forget_removed_over(&mut state, MAX_REMOVED_KEPT);
        }
    }

    /// A tailer was started for a source.
    pub fn source_started(&self, info: Arc<SourceInfo>, path: PathBuf) {
        let mut state = self.write();
        if let Some(c) = state.containers.get_mut(&info.container_id) {
            c.sources.insert(
                info.key.clone(),
                LiveSource {
                    info,
                    path,
                    active: true,
                },
            );
        }
    }

    /// A source's tailer finished: its files were read to the end after the exit.
    pub fn source_finished(&self, container_id: &ContainerId, key: &str) {
        let mut state = self.write();
        if let Some(s) = state
            .containers
            .get_mut(container_id)
            .and_then(|c| c.sources.get_mut(key))
        {
            s.active = false;
        }
    }

    /// Records where a delivered batch leaves its source (the delivery tap, once per batch).
    pub fn record_delivery(&self, batch: &Batch) {
        let cp = &batch.ack.checkpoint;
        let delivered = Delivered {
            path: cp.path.clone(),
            dev: cp.fingerprint.dev,
            ino: cp.fingerprint.ino,
            offset: cp.offset,
            at: SystemTime::now(),
            last: batch.last,
        };
        self.write()
            .delivered
            .insert(batch.ack.source.clone(), delivered);
    }

    /// Records where a task's drain stands (the drain barrier, at each evaluation).
    pub fn record_drain(&self, task_id: &str, status: DrainStatus) {
        self.write().drains.insert(task_id.to_owned(), status);
    }

    /// The latest drain of a task.
    pub fn drain(&self, task_id: &str) -> Option<DrainStatus> {
        self.read().drains.get(task_id).cloned()
    }

    /// Marks the inventory ready (it has taken a first full scan in).
    pub fn mark_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    /// Whether [`mark_ready`](Self::mark_ready) was called.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// One container.
    pub fn container(&self, id: &ContainerId) -> Option<LiveContainer> {
        self.read().containers.get(id).cloned()
    }

    /// Every container, in no particular order.
    pub fn containers(&self) -> Vec<LiveContainer> {
        self.read().containers.values().cloned().collect()
    }

    /// Where delivery of a source stands.
    pub fn delivered(&self, key: &str) -> Option<Delivered> {
        self.read().delivered.get(key).cloned()
    }

    /// Forgets containers removed before `cutoff`, with their sources' positions: the view
    /// keeps what the history keeps ([`crate::state::Store::expire_history`]).
    pub fn expire(&self, cutoff: SystemTime) -> usize {
        let mut state = self.write();
        let gone: Vec<ContainerId> = state
            .containers
            .iter()
            .filter(|(_, c)| c.removed_at.is_some_and(|t| t < cutoff))
            .map(|(id, _)| id.clone())
            .collect();
        forget(&mut state, &gone);
        gone.len()
    }
}

/// Forgets the longest-removed containers while more than `cap` removed ones are kept.
fn forget_removed_over(state: &mut ViewState, cap: usize) {
    let mut removed: Vec<(SystemTime, ContainerId)> = state
        .containers
        .iter()
        .filter_map(|(id, c)| Some((c.removed_at?, id.clone())))
        .collect();
    if removed.len() <= cap {
        return;
    }
    removed.sort();
    let over = removed.len() - cap;
    let gone: Vec<ContainerId> = removed.into_iter().take(over).map(|(_, id)| id).collect();
    forget(state, &gone);
}

/// Drops containers with their sources' positions, and the drains of tasks left with no
/// container in the view.
fn forget(state: &mut ViewState, gone: &[ContainerId]) {
    if gone.is_empty() {
        return;
    }
    for id in gone {
        if let Some(c) = state.containers.remove(id) {
            for key in c.sources.keys() {
                state.delivered.remove(key);
            }
        }
    }
    let tasks: std::collections::HashSet<String> = state
        .containers
        .values()
        .filter_map(|c| c.identity.ecs.as_ref()?.task_id.as_ref())
        .map(|t| t.as_str().to_owned())
        .collect();
    state.drains.retain(|t, _| tasks.contains(t));
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn identity(c: char) -> Arc<ContainerIdentity> {
        Arc::new(ContainerIdentity::new(
            ContainerId::parse(&c.to_string().repeat(64)).unwrap(),
        ))
    }

    #[test]
    fn containers_sources_and_expiry() {
        let view = InventoryView::new();
        let a = identity('a');
        view.publish_container(a.clone(), Lifecycle::Running, Some(7), None, vec!["procfs"]);
        let info = Arc::new(SourceInfo::container_output(a.container_id.clone()));
        view.source_started(info, PathBuf::from("/x.log"));
        let c = view.container(&a.container_id).unwrap();
        assert_eq!(
            (c.pid, c.sources.len(), c.sources.values().all(|s| s.active)),
            (Some(7), 1, true)
        );
        view.source_finished(&a.container_id, &format!("{}/json", a.container_id));
        assert!(
            !view
                .container(&a.container_id)
                .unwrap()
                .sources
                .values()
                .any(|s| s.active)
        );

        view.publish_container(a.clone(), Lifecycle::Removed, None, None, vec![]);
        assert_eq!(view.expire(SystemTime::now() - Duration::from_secs(60)), 0);
        assert_eq!(view.expire(SystemTime::now() + Duration::from_secs(1)), 1);
        assert!(view.container(&a.container_id).is_none());
        assert!(!view.is_ready());
        view.mark_ready();
        assert!(view.clone().is_ready());
    }

    /// Container churn does not grow the view: past `MAX_REMOVED_KEPT` removed containers,
    /// the longest-removed go; running ones always stay.
    #[test]
    fn removed_containers_are_bounded() {
        let view = InventoryView::new();
        let running = identity('f');
        view.publish_container(running.clone(), Lifecycle::Running, None, None, vec![]);
        let ids: Vec<Arc<ContainerIdentity>> = (0..MAX_REMOVED_KEPT + 40)
            .map(|i| {
                Arc::new(ContainerIdentity::new(
                    ContainerId::parse(&format!("{i:064x}")).unwrap(),
                ))
            })
            .collect();
        for id in &ids {
            view.publish_container(id.clone(), Lifecycle::Running, None, None, vec![]);
            view.publish_container(id.clone(), Lifecycle::Removed, None, None, vec![]);
        }
        assert_eq!(view.containers().len(), MAX_REMOVED_KEPT + 1);
        assert!(view.container(&running.container_id).is_some());
        let last = &ids[ids.len() - 1].container_id;
        assert!(view.container(last).is_some(), "the latest removed is kept");
    }
}
