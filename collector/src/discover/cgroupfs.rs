//! Finds container cgroups by walking cgroupfs, and follows their mkdir/rmdir with inotify.
//!
//! Runtimes create a container's cgroup just before its first process starts and remove it
//! once the last one exits (runc and systemd `rmdir` it; Docker does so when the container
//! stops, long before `docker rm`). So a cgroup mkdir is a container start and an rmdir is its
//! exit, and both are seen here without the Docker socket, even for containers that live
//! for milliseconds.
//!
//! inotify is not recursive (inotify(7)): the watcher puts a watch on every directory of the
//! tree down to [`MAX_DEPTH`], and on each new one as it appears. It adds the watch on a
//! directory *before* listing it, so a child created in between shows up in the listing, or
//! as an event, or both; never neither. Duplicate sightings are fine: the inventory treats
//! `Seen` as idempotent.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, trace, warn};

use crate::discover::{ContainerEvent, DiscoverySource, Sighting};
use crate::identify::CgroupId;
use crate::identify::cgroup::{CgroupLayout, parse_container_dir};

/// How deep below the hierarchy root container cgroups are looked for. The deepest layouts in
/// use are 4 levels (`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope`,
/// `/ecs/<cluster>/<task>/<id>`, Docker-in-Docker `/docker/<id>/docker/<id>`); 6 leaves room
/// without walking the insides of every container.
pub const MAX_DEPTH: usize = 6;

/// Default cap on inotify watches held by one [`CgroupWatcher`]. Each watch costs kernel
/// memory (about 1 KiB) and counts against `fs.inotify.max_user_watches`, which is 8192 on
/// kernels before 5.11 and shared with every other inotify user on the host.
pub const DEFAULT_MAX_WATCHES: usize = 8192;

/// Size of the inotify read buffer: each event is 16 bytes plus the name, padded; cgroup
/// names are short, so this holds a few hundred events per read.
const EVENT_BUFFER_BYTES: usize = 16 * 1024;

/// Errors of cgroupfs discovery.
#[derive(Debug, thiserror::Error)]
pub enum CgroupfsError {
    /// The layout has no hierarchy to walk (cannot happen for a layout from
    /// `detect_layout`, which fails first).
    #[error("no cgroup hierarchy to walk under {root}")]
    NoHierarchy {
        /// The configured cgroupfs root.
        root: PathBuf,
    },
    /// The hierarchy root could not be listed.
    #[error("cannot list cgroup hierarchy root {path}")]
    ReadRoot {
        /// The hierarchy root.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: io::Error,
    },
    /// `inotify_init1` failed (`fs.inotify.max_user_instances` reached, or no inotify).
    #[error("cannot create an inotify instance")]
    InitInotify {
        /// The I/O failure.
        #[source]
        source: io::Error,
    },
    /// The watch on the hierarchy root could not be added.
    #[error("cannot watch cgroup hierarchy root {path}")]
    WatchRoot {
        /// The hierarchy root.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: io::Error,
    },
    /// Reading inotify events failed, or the inotify stream ended.
    #[error("cannot read inotify events for {path}")]
    ReadEvents {
        /// The hierarchy root.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: io::Error,
    },
}

/// One sighting for a container cgroup directory at absolute `abs`, relative path `rel`.
/// `None` when `rel` is not a container's own directory.
fn sighting_for(abs: &Path, rel: &str, is_v2: bool) -> Option<Sighting> {
    let hint = parse_container_dir(rel)?;
    // On the v2 hierarchy the directory inode is the cgroup id (see `identify::cgroup::cgroup_id`).
    let cgroup_id = if is_v2 {
        fs::symlink_metadata(abs).ok().map(|m| CgroupId(m.ino()))
    } else {
        None
    };
    Some(Sighting {
        container_id: hint.container_id,
        cgroup_path: Some(rel.to_owned()),
        cgroup_id,
        pid: None,
        source: DiscoverySource::Cgroupfs,
    })
}

/// The number of components of a relative cgroup path (`""` is the root, 0).
fn depth_of(rel: &str) -> usize {
    rel.split('/').filter(|c| !c.is_empty()).count()
}

/// Walks the subtree of `root` + `start` (a cgroup path, `""` for the root) breadth-first down
/// to [`MAX_DEPTH`], calling `before_list(abs, rel)` on each directory just before listing it,
/// and returns the container directories below `start` (not `start` itself).
///
/// `before_list` returns false to skip a directory (it vanished). Directories that vanish or
/// cannot be read mid-walk are skipped: containers stop all the time.
fn walk(
    root: &Path,
    is_v2: bool,
    start: &str,
    before_list: &mut dyn FnMut(&Path, &str) -> bool,
) -> Vec<Sighting> {
    let mut out = Vec::new();
    let mut queue = std::collections::VecDeque::from([start.to_owned()]);
    while let Some(rel) = queue.pop_front() {
        let abs = root.join(rel.trim_start_matches('/'));
        if !before_list(&abs, &rel) {
            continue;
        }
        let entries = match fs::read_dir(&abs) {
            Ok(entries) => entries,
            Err(error) => {
                debug!(message = "Skipping cgroup directory that cannot be listed (probably removed).", path = %abs.display(), %error);
                continue;
            }
        };
        let child_depth = depth_of(&rel) + 1;
        for entry in entries.flatten() {
            // `file_type` comes from readdir's d_type: no stat for the many interface files.
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let child = format!("{rel}/{name}");
            let child_abs = entry.path();
            if parse_container_dir(&child).is_some() {
                if fs::symlink_metadata(&child_abs).is_err() {
                    // Removed since the listing: the container is gone, don't report it.
                    continue;
                }
                out.extend(sighting_for(&child_abs, &child, is_v2));
            }
            if child_depth < MAX_DEPTH {
                queue.push_back(child);
            }
        }
    }
    out
}

/// Walks the hierarchy `layout` designates for discovery (v2, else one v1 hierarchy: see
/// [`CgroupLayout::walk_root`]) and returns one sighting per container cgroup, with its path
/// and, on v2, its cgroup id; sorted by cgroup path.
///
/// Synchronous (cgroupfs is memory-backed, so this never waits on a disk, but it makes one
/// `getdents` per directory): call it from `spawn_blocking` on hosts with many cgroups.
///
/// # Errors
/// [`CgroupfsError::NoHierarchy`] or [`CgroupfsError::ReadRoot`] when the hierarchy itself is
/// unusable; the caller must not treat that as "no containers".
pub fn scan_cgroupfs(layout: &CgroupLayout) -> Result<Vec<Sighting>, CgroupfsError> {
    let (root, is_v2) = layout
        .walk_root()
        .ok_or_else(|| CgroupfsError::NoHierarchy {
            root: layout.root.clone(),
        })?;
    fs::read_dir(root).map_err(|source| CgroupfsError::ReadRoot {
        path: root.to_path_buf(),
        source,
    })?;
    let mut sightings = walk(root, is_v2, "", &mut |_, _| true);
    sightings.sort_by(|a, b| a.cgroup_path.cmp(&b.cgroup_path));
    debug!(message = "Scanned cgroupfs.", root = %root.display(), containers = sightings.len());
    Ok(sightings)
}

/// A directory under watch.
struct Watched {
    /// Kept to remove the watch when the directory is renamed away.
    wd: WatchDescriptor,
    /// Its cgroup path, to name the children that events report by name only.
    rel: String,
}

/// The watcher's view of the tree: which watch descriptor is which directory.
struct Tree {
    root: PathBuf,
    is_v2: bool,
    watches: Watches,
    by_wd: HashMap<i32, Watched>,
    max_watches: usize,
    /// Set once the cap (ours or the kernel's `max_user_watches`) was hit, so the warning is
    /// logged once, not once per directory.
    capped: bool,
}

/// The events a cgroup directory watch asks for. `ONLYDIR` makes `inotify_add_watch` fail
/// rather than watch something that is not a directory.
fn dir_watch_mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::ONLYDIR
        | WatchMask::DONT_FOLLOW
}

impl Tree {
    /// Adds a watch on `abs`; false when the directory is gone. Past the cap the directory is
    /// still listed (containers already in it are found) but its later changes are left to
    /// the periodic rescan.
    fn add_watch(&mut self, abs: &Path, rel: &str) -> bool {
        if self.by_wd.len() >= self.max_watches {
            self.note_capped(None);
            return true;
        }
        match self.watches.add(abs, dir_watch_mask()) {
            Ok(wd) => {
                // Adding a watch on an inode already watched returns its descriptor again
                // (inotify_add_watch(2)), so rescans do not grow the table.
                self.by_wd.insert(
                    wd.get_watch_descriptor_id(),
                    Watched {
                        wd,
                        rel: rel.to_owned(),
                    },
                );
                true
            }
            Err(error) if error.raw_os_error() == Some(libc::ENOSPC) => {
                self.note_capped(Some(error));
                true
            }
            Err(error) => {
                debug!(message = "Cannot watch cgroup directory (probably removed).", path = %abs.display(), %error);
                false
            }
        }
    }

    fn note_capped(&mut self, kernel: Option<io::Error>) {
        if !self.capped {
            self.capped = true;
            warn!(
                message = "Too many cgroup directories to watch; changes below the unwatched ones are found by the periodic rescan only.",
                watches = self.by_wd.len(),
                max_watches = self.max_watches,
                kernel_error = kernel.map(|e| e.to_string()),
            );
        }
    }

    /// Watches and walks the subtree at `rel`, appending `Seen` for its containers.
    fn watch_subtree(&mut self, rel: &str, out: &mut Vec<ContainerEvent>) {
        let root = self.root.clone();
        let sightings = walk(&root, self.is_v2, rel, &mut |abs, rel| {
            self.add_watch(abs, rel)
        });
        out.extend(sightings.into_iter().map(ContainerEvent::Seen));
    }

    /// A full walk from the root: `Seen` for every container, then `ScanComplete`.
    fn rescan(&mut self, out: &mut Vec<ContainerEvent>) {
        self.watch_subtree("", out);
        out.push(ContainerEvent::ScanComplete {
            source: DiscoverySource::Cgroupfs,
        });
    }

    /// Drops the watches of `rel` and everything below it (it was renamed away; the new name
    /// arrives as `MOVED_TO` and is watched afresh).
    fn forget_subtree(&mut self, rel: &str) {
        let prefix = format!("{rel}/");
        let gone: Vec<i32> = self
            .by_wd
            .iter()
            .filter(|(_, w)| w.rel == rel || w.rel.starts_with(&prefix))
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some(w) = self.by_wd.remove(&id) {
                let _ = self.watches.remove(w.wd);
            }
        }
    }

    /// Turns one inotify event into container events.
    fn handle(
        &mut self,
        wd: i32,
        mask: EventMask,
        name: Option<&OsStr>,
        out: &mut Vec<ContainerEvent>,
    ) {
        if mask.contains(EventMask::Q_OVERFLOW) {
            // The kernel dropped events (more than fs.inotify.max_queued_events were pending):
            // any mkdir or rmdir may be lost. A full walk re-finds what exists and re-adds
            // missing watches; ScanComplete lets the inventory notice what vanished.
            warn!(message = "inotify queue overflowed on cgroupfs; rescanning.", root = %self.root.display());
            self.rescan(out);
            return;
        }
        if mask.contains(EventMask::IGNORED) {
            // The watched directory was removed (or the watch dropped): forget its descriptor.
            self.by_wd.remove(&wd);
            return;
        }
        if !mask.contains(EventMask::ISDIR) {
            return;
        }
        let (Some(parent), Some(name)) = (self.by_wd.get(&wd), name.and_then(OsStr::to_str)) else {
            return;
        };
        let rel = format!("{}/{name}", parent.rel);
        if mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
            let abs = self.root.join(rel.trim_start_matches('/'));
            if let Some(sighting) = sighting_for(&abs, &rel, self.is_v2) {
                trace!(message = "Container cgroup created.", cgroup_path = %rel);
                out.push(ContainerEvent::Seen(sighting));
            }
            if depth_of(&rel) < MAX_DEPTH {
                // `mkdir -p` makes parent and child in quick succession: the child may exist
                // before this watch does, so the new directory is listed, not just watched.
                self.watch_subtree(&rel, out);
            }
        } else if mask.intersects(EventMask::DELETE | EventMask::MOVED_FROM) {
            if mask.contains(EventMask::MOVED_FROM) {
                self.forget_subtree(&rel);
            }
            if let Some(hint) = parse_container_dir(&rel) {
                trace!(message = "Container cgroup removed.", cgroup_path = %rel);
                out.push(ContainerEvent::Exited {
                    container_id: hint.container_id,
                    source: DiscoverySource::Cgroupfs,
                });
            }
        }
    }
}

/// Follows container cgroups as they are created and removed, with inotify on every directory
/// of the discovery hierarchy.
///
/// Sends `Seen` (with cgroup path and, on v2, cgroup id) for every container cgroup at start
/// and on each mkdir, `Exited` on each rmdir, and `ScanComplete` after the initial walk and
/// after every rescan that an inotify queue overflow forces.
#[derive(Debug)]
pub struct CgroupWatcher {
    /// The host's hierarchies; the one watched is [`CgroupLayout::walk_root`].
    layout: CgroupLayout,
    /// Cap on watches; see [`DEFAULT_MAX_WATCHES`].
    max_watches: usize,
}

impl CgroupWatcher {
    /// A watcher for the hierarchy that `layout` designates for discovery.
    pub fn new(layout: CgroupLayout) -> Self {
        Self {
            layout,
            max_watches: DEFAULT_MAX_WATCHES,
        }
    }

    /// Sets the cap on inotify watches (at least 1: the root).
    pub fn with_max_watches(mut self, max_watches: usize) -> Self {
        self.max_watches = max_watches.max(1);
        self
    }

    /// Creates the inotify instance and the table of watches, with the root watched.
    fn start(&self) -> Result<(inotify::EventStream<Vec<u8>>, Tree), CgroupfsError> {
        let (root, is_v2) = self
            .layout
            .walk_root()
            .ok_or_else(|| CgroupfsError::NoHierarchy {
                root: self.layout.root.clone(),
            })?;
        let inotify = Inotify::init().map_err(|source| CgroupfsError::InitInotify { source })?;
        let stream = inotify
            .into_event_stream(vec![0u8; EVENT_BUFFER_BYTES])
            .map_err(|source| CgroupfsError::InitInotify { source })?;
        let mut tree = Tree {
            root: root.to_path_buf(),
            is_v2,
            watches: stream.watches(),
            by_wd: HashMap::new(),
            max_watches: self.max_watches,
            capped: false,
        };
        let wd = tree.watches.add(root, dir_watch_mask()).map_err(|source| {
            CgroupfsError::WatchRoot {
                path: root.to_path_buf(),
                source,
            }
        })?;
        tree.by_wd.insert(
            wd.get_watch_descriptor_id(),
            Watched {
                wd,
                rel: String::new(),
            },
        );
        Ok((stream, tree))
    }

    /// Watches, walks, then follows events until `shutdown` is cancelled or `tx` is closed
    /// (both a normal end, `Ok`).
    ///
    /// Walks run inline on the async task: cgroupfs is kernfs, memory-backed, so listing never
    /// waits on a device, and a walk after an event only covers the new directory.
    ///
    /// # Errors
    /// Setup failures ([`CgroupfsError::NoHierarchy`], [`CgroupfsError::InitInotify`],
    /// [`CgroupfsError::WatchRoot`]) and a
    /// failed or ended inotify stream ([`CgroupfsError::ReadEvents`]). Per-directory failures
    /// are logged and skipped.
    pub async fn run(
        self,
        tx: mpsc::Sender<ContainerEvent>,
        shutdown: CancellationToken,
    ) -> Result<(), CgroupfsError> {
        let (mut stream, mut tree) = self.start()?;
        info!(message = "Watching cgroupfs for containers.", root = %tree.root.display(), v2 = tree.is_v2);
        let mut out = Vec::new();
        tree.rescan(&mut out);
        loop {
            if !super::send_all(&mut out, &tx, &shutdown, "cgroupfs watcher").await {
                return Ok(());
            }
            let event = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                event = stream.next() => event,
            };
            let event = match event {
                Some(Ok(event)) => event,
                Some(Err(source)) => {
                    return Err(CgroupfsError::ReadEvents {
                        path: tree.root.clone(),
                        source,
                    });
                }
                None => {
                    let source =
                        io::Error::new(io::ErrorKind::UnexpectedEof, "inotify stream ended");
                    return Err(CgroupfsError::ReadEvents {
                        path: tree.root.clone(),
                        source,
                    });
                }
            };
            tree.handle(
                event.wd.get_watch_descriptor_id(),
                event.mask,
                event.name.as_deref(),
                &mut out,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::identify::ContainerId;
    use crate::identify::cgroup::detect_layout;
    use crate::test_support::TestContainer;

    const A: &str = "81509de4623e2fb6ac9a799df48d03c7a0787796cfd92fd984b80e027c4bb221";
    const B: &str = "38dcd24c1a7ac4b0401a1ed29ef79b0c030631df33322db9b092687c0bfd0a38";
    const C: &str = "ee08638adaaf009d78c248913f629e38299471d45fe7dc944d1039077e3424ca";
    const TASK: &str = "5a0d5ceddf6c44c1928d367a815d890f";

    /// A fake unified (v2) hierarchy: the root has `cgroup.controllers`.
    fn fake_v2() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("cgroup.controllers"), "memory pids\n").unwrap();
        dir
    }

    fn mkdirs(root: &Path, rel: &str) -> PathBuf {
        let p = root.join(rel);
        fs::create_dir_all(&p).unwrap();
        p
    }

    fn ino(p: &Path) -> Option<CgroupId> {
        Some(CgroupId(fs::metadata(p).unwrap().ino()))
    }

    fn seen(id: &str, path: &str, cgroup_id: Option<CgroupId>) -> ContainerEvent {
        ContainerEvent::Seen(Sighting {
            container_id: ContainerId::parse(id).unwrap(),
            cgroup_path: Some(path.to_owned()),
            cgroup_id,
            pid: None,
            source: DiscoverySource::Cgroupfs,
        })
    }

    fn exited(id: &str) -> ContainerEvent {
        ContainerEvent::Exited {
            container_id: ContainerId::parse(id).unwrap(),
            source: DiscoverySource::Cgroupfs,
        }
    }

    #[test]
    fn scan_v2_finds_container_dirs_only() {
        let root = fake_v2();
        let r = root.path();
        let a = mkdirs(r, &format!("docker/{A}"));
        mkdirs(r, &format!("docker/{A}/init"));
        let b = mkdirs(r, &format!("ecs/{TASK}/{B}"));
        let c = mkdirs(r, &format!("system.slice/docker-{C}.scope"));
        mkdirs(r, "system.slice/docker.service");
        // Too deep to be walked.
        mkdirs(r, &format!("a/b/c/d/e/f/{A}"));
        // A file named like a container is no cgroup.
        fs::write(r.join(format!("ecs/{TASK}/{C}")), "").unwrap();

        let got: Vec<ContainerEvent> = scan_cgroupfs(&detect_layout(r).unwrap())
            .unwrap()
            .into_iter()
            .map(ContainerEvent::Seen)
            .collect();
        assert_eq!(
            got,
            vec![
                seen(A, &format!("/docker/{A}"), ino(&a)),
                seen(B, &format!("/ecs/{TASK}/{B}"), ino(&b)),
                seen(C, &format!("/system.slice/docker-{C}.scope"), ino(&c)),
            ]
        );
    }

    #[test]
    fn scan_v1_only_walks_memory_without_cgroup_ids() {
        let root = tempfile::tempdir().unwrap();
        for h in ["memory", "pids"] {
            fs::create_dir(root.path().join(h)).unwrap();
            fs::write(root.path().join(h).join("cgroup.procs"), "").unwrap();
        }
        mkdirs(root.path(), &format!("memory/docker/{A}"));
        mkdirs(root.path(), &format!("pids/docker/{B}"));
        let got = scan_cgroupfs(&detect_layout(root.path()).unwrap()).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(
            ContainerEvent::Seen(got[0].clone()),
            seen(A, &format!("/docker/{A}"), None)
        );
    }

    async fn next(rx: &mut mpsc::Receiver<ContainerEvent>) -> ContainerEvent {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("event within 10 s")
            .expect("channel open")
    }

    /// Receives until `want` (ignoring other containers' events, for the real host).
    async fn expect_event(rx: &mut mpsc::Receiver<ContainerEvent>, want: &ContainerEvent) {
        loop {
            if &next(rx).await == want {
                return;
            }
        }
    }

    #[tokio::test]
    async fn watcher_reports_existing_then_mkdir_and_rmdir_in_order() {
        let root = fake_v2();
        let r = root.path().to_path_buf();
        let a = mkdirs(&r, &format!("docker/{A}"));
        let layout = detect_layout(&r).unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(CgroupWatcher::new(layout.clone()).run(tx, shutdown.clone()));

        assert_eq!(
            next(&mut rx).await,
            seen(A, &format!("/docker/{A}"), ino(&a))
        );
        assert_eq!(
            next(&mut rx).await,
            ContainerEvent::ScanComplete {
                source: DiscoverySource::Cgroupfs
            }
        );

        let b = mkdirs(&r, &format!("docker/{B}"));
        assert_eq!(
            next(&mut rx).await,
            seen(B, &format!("/docker/{B}"), ino(&b))
        );
        // `mkdir -p` of a new parent and the container under it: found by listing the new parent.
        let c = mkdirs(&r, &format!("ecs/{TASK}/{C}"));
        let want_c = seen(C, &format!("/ecs/{TASK}/{C}"), ino(&c));
        assert_eq!(next(&mut rx).await, want_c);
        // A nested cgroup inside a container is not another container.
        mkdirs(&r, &format!("docker/{B}/init"));
        fs::remove_dir(r.join(format!("docker/{B}/init"))).unwrap();
        fs::remove_dir(&b).unwrap();
        // The listing and the event may both report C: duplicates are allowed, and come before
        // its exit.
        let mut got = next(&mut rx).await;
        while got == want_c {
            got = next(&mut rx).await;
        }
        assert_eq!(got, exited(B));
        fs::remove_dir(&c).unwrap();
        assert_eq!(next(&mut rx).await, exited(C));

        shutdown.cancel();
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn watcher_stops_when_receiver_is_dropped() {
        let root = fake_v2();
        let layout = detect_layout(root.path()).unwrap();
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let run = CgroupWatcher::new(layout.clone()).run(tx, CancellationToken::new());
        tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn empty_layout_is_an_error_not_a_silent_watcher() {
        let layout = CgroupLayout {
            root: PathBuf::from("/nowhere"),
            v2_root: None,
            v1: Vec::new(),
        };
        let (tx, _rx) = mpsc::channel(1);
        let got = CgroupWatcher::new(layout.clone())
            .run(tx, CancellationToken::new())
            .await;
        assert!(matches!(got, Err(CgroupfsError::NoHierarchy { .. })));
        assert!(matches!(
            scan_cgroupfs(&layout),
            Err(CgroupfsError::NoHierarchy { .. })
        ));
    }

    #[tokio::test]
    async fn overflow_rescans_and_completes() {
        let root = fake_v2();
        let r = root.path();
        let a = mkdirs(r, &format!("docker/{A}"));
        let watcher = CgroupWatcher::new(detect_layout(r).unwrap());
        let (_stream, mut tree) = watcher.start().unwrap();
        let mut out = Vec::new();
        tree.rescan(&mut out);
        out.clear();
        // Created while events were being lost.
        let b = mkdirs(r, &format!("ecs/{TASK}/{B}"));
        tree.handle(-1, EventMask::Q_OVERFLOW, None, &mut out);
        assert_eq!(
            out,
            vec![
                seen(A, &format!("/docker/{A}"), ino(&a)),
                seen(B, &format!("/ecs/{TASK}/{B}"), ino(&b)),
                ContainerEvent::ScanComplete {
                    source: DiscoverySource::Cgroupfs
                },
            ]
        );
        // The rescan watched the new directories: root, docker, docker/A, ecs, ecs/TASK, ecs/TASK/B.
        assert_eq!(tree.by_wd.len(), 6);
    }

    #[tokio::test]
    async fn capped_watches_still_scan() {
        let root = fake_v2();
        let r = root.path().to_path_buf();
        let a = mkdirs(&r, &format!("docker/{A}"));
        let (tx, mut rx) = mpsc::channel(16);
        let shutdown = CancellationToken::new();
        let watcher = CgroupWatcher::new(detect_layout(&r).unwrap()).with_max_watches(1);
        let task = tokio::spawn(watcher.run(tx, shutdown.clone()));
        assert_eq!(
            next(&mut rx).await,
            seen(A, &format!("/docker/{A}"), ino(&a))
        );
        assert_eq!(
            next(&mut rx).await,
            ContainerEvent::ScanComplete {
                source: DiscoverySource::Cgroupfs
            }
        );
        // `docker` could not be watched: its new children are left to the periodic rescan...
        mkdirs(&r, &format!("docker/{B}"));
        // ...while the root still is watched.
        let c = mkdirs(&r, &format!("ecs/{TASK}/{C}"));
        assert_eq!(
            next(&mut rx).await,
            seen(C, &format!("/ecs/{TASK}/{C}"), ino(&c))
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(300), rx.recv())
                .await
                .is_err(),
            "nothing for docker/{B}"
        );
        shutdown.cancel();
        task.await.unwrap().unwrap();
    }

    /// This machine: a real container's cgroup appears in the v2 hierarchy of the hybrid host
    /// with its inode as cgroup id, and disappears when it stops.
    #[tokio::test]
    async fn real_container_seen_and_exited() {
        let layout = detect_layout(Path::new("/sys/fs/cgroup")).unwrap();
        let (tx, mut rx) = mpsc::channel(256);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(CgroupWatcher::new(layout.clone()).run(tx, shutdown.clone()));
        expect_event(
            &mut rx,
            &ContainerEvent::ScanComplete {
                source: DiscoverySource::Cgroupfs,
            },
        )
        .await;

        let c = tokio::task::spawn_blocking(TestContainer::run)
            .await
            .unwrap();
        let path = format!("/ecs/{}/{}", c.task, c.id);
        let dir = Path::new("/sys/fs/cgroup/unified").join(path.trim_start_matches('/'));
        expect_event(&mut rx, &seen(&c.id, &path, ino(&dir))).await;

        let scanned = scan_cgroupfs(&layout).unwrap();
        assert!(
            scanned.iter().any(|s| s.container_id.as_str() == c.id
                && s.cgroup_path.as_deref() == Some(path.as_str()))
        );

        let c = tokio::task::spawn_blocking(move || {
            c.kill();
            c
        })
        .await
        .unwrap();
        expect_event(&mut rx, &exited(&c.id)).await;
        shutdown.cancel();
        task.await.unwrap().unwrap();
    }
}
