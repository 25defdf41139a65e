//! Opens a log file the instant it is created, so rotation under a fast writer cannot delete
//! it before its tailer gets to it.
//!
//! Docker's json-file driver with `max-size`/`max-file` renames `x.log` to `x.log.1` (and
//! `.1` to `.2`, deleting the oldest) and creates a new `x.log` (moby
//! `daemon/logger/loggerutils/logfile.go`). Under a writer producing megabytes per second a
//! file lives only a few milliseconds past its rotation; a tailer that notices rotation
//! between read passes can miss whole files. An open descriptor keeps a deleted file
//! readable, so this guard keeps one inotify instance for the host (instances are limited:
//! `fs.inotify.max_user_instances`, 128 by default) and a thread that opens each watched file
//! name as soon as `IN_CREATE`/`IN_MOVED_TO` reports it, then hands the descriptor to the
//! file's tailer. The tailer's own scan of `x.log.N` stays as the fallback (a queue overflow,
//! a guard that could not start).

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// Descriptors buffered per watched file before the guard gives up on one (a tailer that far
/// behind falls back to scanning names).
const PER_FILE_BUFFER: usize = 256;

/// Errors starting the guard.
#[derive(Debug, thiserror::Error)]
pub enum RotationGuardError {
    /// `inotify_init` failed (instance limit reached, no inotify).
    #[error("cannot create an inotify instance")]
    Init {
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The watch on a log directory could not be added.
    #[error("cannot watch {dir}")]
    Watch {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// What the guard tells a file's tailer.
#[derive(Debug)]
pub enum GuardEvent {
    /// A file created at the watched path since the last event, opened (oldest first).
    File(File),
    /// Files were created at the path and deleted (rotated out) before the guard could open
    /// them: their lines are lost. Counted, never silent.
    Lost(u64),
}

/// A file in the chain the guard holds open: the descriptor pins the inode, so a new file
/// cannot get its number while it is held, and "not held" means "new" without doubt.
struct Held {
    _file: File,
    dev: u64,
    ino: u64,
}

/// Opens and holds the chain at `path` as it is now.
fn hold(path: &Path) -> Vec<Held> {
    super::chain::open_chain(path)
        .into_iter()
        .filter_map(|(file, _)| {
            let meta = file.metadata().ok()?;
            Some(Held {
                dev: meta.dev(),
                ino: meta.ino(),
                _file: file,
            })
        })
        .collect()
}

struct Subscriber {
    name: OsString,
    tx: mpsc::Sender<GuardEvent>,
    /// The chain as last seen (at most `max-file` descriptors).
    held: Vec<Held>,
    /// New files found before their creation events were read (a later event's file seen
    /// while handling an earlier one).
    credit: u64,
}

impl Subscriber {
    /// Handles `created` creations at the path: sends the files not held before, oldest
    /// first, and the number of creations no file was found for (deleted before this ran).
    fn on_created(&mut self, path: &Path, created: u64) {
        let chain = super::chain::open_chain(path);
        let mut held = Vec::with_capacity(chain.len());
        let mut found = 0u64;
        for (file, p) in chain {
            let Ok(meta) = file.metadata() else { continue };
            let (dev, ino) = (meta.dev(), meta.ino());
            let known = self.held.iter().any(|h| h.dev == dev && h.ino == ino);
            if !known {
                found += 1;
                match file.try_clone() {
                    Ok(copy) => {
                        if self.tx.try_send(GuardEvent::File(copy)).is_err() {
                            debug!(path = %p.display(), "Tailer far behind; a rotated file is left to the name scan.");
                        }
                    }
                    Err(e) => {
                        debug!(path = %p.display(), error = %e, "Cannot duplicate a descriptor; the file is left to the name scan.")
                    }
                }
            }
            held.push(Held {
                _file: file,
                dev,
                ino,
            });
        }
        self.held = held;
        tracing::trace!(path = %path.display(), created, found, credit = self.credit, inodes = ?self.held.iter().map(|h| h.ino).collect::<Vec<_>>(), "Guard looked at the chain.");
        let covered = found + self.credit;
        let lost = created.saturating_sub(covered);
        self.credit = covered.saturating_sub(created);
        if lost > 0 {
            warn!(path = %path.display(), files = lost, "Log files were rotated out and deleted before they could be opened; their lines are lost.");
            let _ = self.tx.try_send(GuardEvent::Lost(lost));
        }
    }
}

struct DirWatch {
    dir: PathBuf,
    subscribers: Vec<Subscriber>,
}

type Registry = Arc<Mutex<HashMap<WatchDescriptor, DirWatch>>>;

/// Handle to the guard; cheap to clone.
#[derive(Clone)]
pub struct RotationGuard {
    watches: Arc<Mutex<Watches>>,
    registry: Registry,
}

impl std::fmt::Debug for RotationGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RotationGuard")
    }
}

impl RotationGuard {
    /// Starts the guard's thread.
    ///
    /// # Errors
    /// No inotify instance could be created.
    pub fn start() -> Result<Self, RotationGuardError> {
        let inotify = Inotify::init().map_err(|source| RotationGuardError::Init { source })?;
        let watches = Arc::new(Mutex::new(inotify.watches()));
        let registry: Registry = Arc::new(Mutex::new(HashMap::new()));
        let thread_registry = registry.clone();
        std::thread::Builder::new()
            .name("rotation-guard".into())
            .spawn(move || run(inotify, thread_registry))
            .map_err(|source| RotationGuardError::Init { source })?;
        Ok(Self { watches, registry })
    }

    /// Delivers an open descriptor of every file created at `path` from now on.
    ///
    /// # Errors
    /// The directory cannot be watched (it does not exist yet, or the watch limit
    /// `fs.inotify.max_user_watches` is reached): the caller relies on scanning.
    pub fn watch(&self, path: &Path) -> Result<mpsc::Receiver<GuardEvent>, RotationGuardError> {
        let (dir, name) = match (path.parent(), path.file_name()) {
            (Some(d), Some(n)) => (d.to_owned(), n.to_owned()),
            _ => {
                return Err(RotationGuardError::Watch {
                    dir: path.to_owned(),
                    source: std::io::ErrorKind::InvalidInput.into(),
                });
            }
        };
        let (tx, rx) = mpsc::channel(PER_FILE_BUFFER);
        // What exists now is not new: hold it before the watch starts, so every creation
        // event afterwards is matched against it. (A file created between this and the watch
        // shows up as new with no event of its own: it earns a credit, not a false loss.)
        let held = hold(path);
        // Register under the registry lock so the thread cannot see an event for the new
        // watch before its subscriber is listed.
        let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        let wd = self
            .watches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add(&dir, WatchMask::CREATE | WatchMask::MOVED_TO)
            .map_err(|source| RotationGuardError::Watch {
                dir: dir.clone(),
                source,
            })?;
        let entry = registry.entry(wd).or_insert_with(|| DirWatch {
            dir,
            subscribers: Vec::new(),
        });
        entry.subscribers.retain(|s| !s.tx.is_closed());
        entry.subscribers.push(Subscriber {
            name,
            tx,
            held,
            credit: 0,
        });
        Ok(rx)
    }
}

/// The guard must win the race against the writer's next rotations even on a loaded host: a
/// json-file log at 30 MB/s with `max-size=100k` rotates every 3 ms, so with `max-file=3` a
/// file is deleted about 6 ms after it is created. Under CFS, a woken thread can wait a whole
/// scheduling period (`sched_latency_ns`, 24 ms on a 2-core host) behind busy threads, nice
/// value or not; measured here, a nice -10 guard still lost files with both cores busy. The
/// guard's work per wake-up is a few `open` calls, so it asks for `SCHED_FIFO` (lowest
/// real-time priority, which preempts every normal thread at once; the kernel's real-time
/// throttling, `sched_rt_runtime_us`, bounds it even if it misbehaved), and falls back to
/// nice -10 where that is refused (no `CAP_SYS_NICE`, or a cgroup without real-time
/// runtime). See sched(7).
fn raise_priority() {
    // SAFETY: `sched_param` is plain integers, for which all-zero is valid. Zeroed and then
    // set, because musl's has more fields than glibc's (the images link the collector with
    // musl).
    let mut param: libc::sched_param = unsafe { std::mem::zeroed() };
    param.sched_priority = 1;
    // The raw system call, not libc's wrapper: musl's `sched_setscheduler` always fails with
    // ENOSYS (it declines Linux's per-thread semantics), and per thread is what we want.
    // SAFETY: pid 0 is the calling thread; `param` outlives the call.
    let fifo = unsafe {
        libc::syscall(
            libc::SYS_sched_setscheduler,
            0,
            libc::SCHED_FIFO,
            &raw const param,
        )
    } == 0;
    if fifo {
        debug!("Rotation guard runs at real-time priority (SCHED_FIFO 1).");
        return;
    }
    let err = std::io::Error::last_os_error();
    // SAFETY: gettid and setpriority take no pointers; a failure only leaves the priority.
    let niced = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, -10)
    } == 0;
    debug!(fifo_error = %err, niced, "Rotation guard without real-time priority; a host whose cores are all busy may delay it past a fast rotation (losses are counted).");
}

fn run(mut inotify: Inotify, registry: Registry) {
    raise_priority();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let events = match inotify.read_events_blocking(&mut buf) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                warn!(error = %e, "Rotation guard stopped; tailers fall back to scanning rotated names.");
                return;
            }
        };
        let mut registry = registry.lock().unwrap_or_else(|p| p.into_inner());
        // Creations per (watch, name) in this read: one chain opening answers all of them.
        let mut created: Vec<(WatchDescriptor, OsString, u64)> = Vec::new();
        let mut overflow = false;
        for event in events {
            if event.mask.contains(EventMask::Q_OVERFLOW) {
                overflow = true;
                continue;
            }
            if event.mask.contains(EventMask::IGNORED) {
                registry.remove(&event.wd);
                continue;
            }
            let Some(name) = event.name else { continue };
            match created
                .iter_mut()
                .find(|(wd, n, _)| *wd == event.wd && n.as_os_str() == name)
            {
                Some((_, _, count)) => *count += 1,
                None => created.push((event.wd.clone(), name.to_owned(), 1)),
            }
        }
        if overflow {
            // Events were dropped: look at every chain; creations cannot be counted.
            warn!(
                "Rotation guard's inotify queue overflowed; every watched chain is rescanned, and files lost meanwhile cannot be counted."
            );
            for watch in registry.values_mut() {
                let dir = watch.dir.clone();
                watch.subscribers.retain(|s| !s.tx.is_closed());
                for sub in &mut watch.subscribers {
                    let path = dir.join(&sub.name);
                    sub.on_created(&path, 0);
                    sub.credit = 0;
                }
            }
        }
        for (wd, name, count) in created {
            let Some(watch) = registry.get_mut(&wd) else {
                continue;
            };
            watch.subscribers.retain(|s| !s.tx.is_closed());
            let path = watch.dir.join(&name);
            for sub in watch.subscribers.iter_mut().filter(|s| s.name == name) {
                sub.on_created(&path, count);
            }
        }
        // Drop directories nobody listens to any more.
        let dead: Vec<WatchDescriptor> = registry
            .iter()
            .filter(|(_, w)| w.subscribers.iter().all(|s| s.tx.is_closed()))
            .map(|(wd, _)| wd.clone())
            .collect();
        if !dead.is_empty() {
            let mut watches = inotify.watches();
            for wd in dead {
                registry.remove(&wd);
                let _ = watches.remove(wd);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn files_deleted_soon_after_creation_are_still_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let guard = RotationGuard::start().unwrap();
        let mut rx = guard.watch(&path).unwrap();
        // Ten generations, each deleted 20 ms after it is created (far less than a tailer's
        // idle poll): only the guard's descriptors keep them.
        for i in 0..10 {
            let mut f = File::create(&path).unwrap();
            writeln!(f, "generation {i}").unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            std::fs::remove_file(&path).unwrap();
        }
        let mut got = Vec::new();
        while got.len() < 10 {
            let event = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap()
                .unwrap();
            let GuardEvent::File(mut f) = event else {
                panic!("a file was lost: {event:?}");
            };
            let mut s = String::new();
            f.read_to_string(&mut s).unwrap();
            got.push(s);
        }
        let want: Vec<String> = (0..10).map(|i| format!("generation {i}\n")).collect();
        assert_eq!(got, want);
    }

    /// Docker's rotation with `max-file=2`: `x.log` becomes `x.log.1` (replacing the older
    /// one) and a new `x.log` is created.
    fn rotate(path: &Path, text: &str) {
        std::fs::rename(path, format!("{}.1", path.display())).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn drain(rx: &mut mpsc::Receiver<GuardEvent>) -> (Vec<String>, u64) {
        let (mut files, mut lost) = (Vec::new(), 0);
        while let Ok(event) = rx.try_recv() {
            match event {
                GuardEvent::File(mut f) => {
                    let mut s = String::new();
                    f.read_to_string(&mut s).unwrap();
                    files.push(s);
                }
                GuardEvent::Lost(n) => lost += n,
            }
        }
        (files, lost)
    }

    #[test]
    fn files_deleted_before_the_guard_looks_are_counted_as_lost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        std::fs::write(&path, "before\n").unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let mut sub = Subscriber {
            name: "x.log".into(),
            tx,
            held: hold(&path),
            credit: 0,
        };
        // Three rotations before the guard runs: generation 0 is already deleted (inode
        // numbers get reused at once here, which the held descriptors make harmless).
        for i in 0..3 {
            rotate(&path, &format!("generation {i}\n"));
        }
        sub.on_created(&path, 3);
        let (files, lost) = drain(&mut rx);
        assert_eq!(files, ["generation 1\n", "generation 2\n"]);
        assert_eq!(lost, 1);
        // Nothing new, no event: nothing sent, nothing lost.
        sub.on_created(&path, 0);
        assert_eq!(drain(&mut rx), (vec![], 0));
    }

    #[test]
    fn a_file_found_before_its_event_is_not_a_loss() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let (tx, mut rx) = mpsc::channel(16);
        let mut sub = Subscriber {
            name: "x.log".into(),
            tx,
            held: hold(&path),
            credit: 0,
        };
        std::fs::write(&path, "generation 0\n").unwrap();
        rotate(&path, "generation 1\n");
        // The first creation's event is handled after both files exist...
        sub.on_created(&path, 1);
        assert_eq!(
            drain(&mut rx),
            (
                vec!["generation 0\n".to_owned(), "generation 1\n".to_owned()],
                0
            )
        );
        // ...so the second creation's event finds nothing new, and that is no loss.
        sub.on_created(&path, 1);
        assert_eq!(drain(&mut rx), (vec![], 0));
        // A third creation with no file (deleted at once) is one.
        rotate(&path, "generation 2\n");
        rotate(&path, "generation 3\n");
        rotate(&path, "generation 4\n");
        sub.on_created(&path, 3);
        assert_eq!(
            drain(&mut rx),
            (
                vec!["generation 3\n".to_owned(), "generation 4\n".to_owned()],
                1
            )
        );
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let guard = RotationGuard::start().unwrap();
        assert!(guard.watch(Path::new("/nonexistent/dir/x.log")).is_err());
    }
}
