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

struct Subscriber {
    name: OsString,
    tx: mpsc::Sender<File>,
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
    pub fn watch(&self, path: &Path) -> Result<mpsc::Receiver<File>, RotationGuardError> {
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
        entry.subscribers.push(Subscriber { name, tx });
        Ok(rx)
    }
}

fn run(mut inotify: Inotify, registry: Registry) {
    // The guard must win the race against the writer's next rotations even on a loaded host:
    // ask for a higher scheduling priority for this thread (root only; harmless if refused).
    // SAFETY: gettid and setpriority take no pointers; a failure only leaves the priority.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, -10);
    }
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
        for event in events {
            if event.mask.contains(EventMask::Q_OVERFLOW) {
                warn!(
                    "Rotation guard's inotify queue overflowed; tailers fall back to scanning rotated names."
                );
                continue;
            }
            if event.mask.contains(EventMask::IGNORED) {
                registry.remove(&event.wd);
                continue;
            }
            let Some(name) = event.name else { continue };
            let Some(watch) = registry.get_mut(&event.wd) else {
                continue;
            };
            watch.subscribers.retain(|s| !s.tx.is_closed());
            for sub in watch.subscribers.iter().filter(|s| s.name == name) {
                // By the time this runs, the file created may already have been renamed to
                // `x.log.1` (or further) and a newer one created. Opening the whole chain,
                // oldest first, catches it wherever it is now; the tailer drops the files it
                // already holds or has finished.
                let path = watch.dir.join(name);
                for (file, p) in super::tailer::open_chain(&path) {
                    if sub.tx.try_send(file).is_err() {
                        debug!(path = %p.display(), "Tailer far behind; a rotated file is left to the name scan.");
                    }
                }
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
            let mut f = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap()
                .unwrap();
            let mut s = String::new();
            f.read_to_string(&mut s).unwrap();
            got.push(s);
        }
        let want: Vec<String> = (0..10).map(|i| format!("generation {i}\n")).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let guard = RotationGuard::start().unwrap();
        assert!(guard.watch(Path::new("/nonexistent/dir/x.log")).is_err());
    }
}
