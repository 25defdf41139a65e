//! Finds containers from Docker's `<docker_root>/containers/<id>/` directories, followed with inotify.
//!
//! Docker makes that directory at `docker create` (it holds `config.v2.json`,
//! `hostconfig.json` and the json-file log `<id>-json.log`) and deletes it at `docker rm`, so
//! it sees every container for its whole life, stopped ones included, without the Docker
//! socket. A directory deleted here is a container removed (`Removed`), not one that exited.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use inotify::{EventMask, Inotify, WatchMask};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, trace, warn};

use crate::discover::{ContainerEvent, DiscoverySource, Sighting};
use crate::identify::ContainerId;

/// How often the watcher looks again for a `containers` folder that does not exist yet
/// (Docker not installed or not started).
pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(5);

/// inotify read buffer: 16 bytes per event plus a 64-byte name, padded; a few hundred events.
const EVENT_BUFFER_BYTES: usize = 16 * 1024;

/// Errors of Docker root discovery.
#[derive(Debug, thiserror::Error)]
pub enum DockerRootError {
    /// `<docker_root>/containers` could not be listed (missing when Docker never ran).
    #[error("cannot list Docker containers folder {path}")]
    ReadContainersDir {
        /// The folder.
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
    /// The watch on the containers folder failed for a reason other than its absence.
    #[error("cannot watch Docker containers folder {path}")]
    WatchContainersDir {
        /// The folder.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: io::Error,
    },
    /// Reading inotify events failed, or the inotify stream ended.
    #[error("cannot read inotify events for {path}")]
    ReadEvents {
        /// The folder.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: io::Error,
    },
}

/// The containers Docker keeps a directory for under `<docker_root>/containers/`, sorted.
///
/// Entries that are not directories named by a full container id are ignored.
///
/// # Errors
/// [`DockerRootError::ReadContainersDir`] when the folder cannot be listed, including when it
/// does not exist yet; the caller must not treat that as "no containers".
pub fn scan_docker_root(docker_root: &Path) -> Result<Vec<ContainerId>, DockerRootError> {
    let dir = docker_root.join("containers");
    let entries = fs::read_dir(&dir).map_err(|source| DockerRootError::ReadContainersDir {
        path: dir.clone(),
        source,
    })?;
    let mut ids: Vec<ContainerId> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().to_str().and_then(ContainerId::parse))
        .collect();
    ids.sort();
    Ok(ids)
}

fn sighting(container_id: ContainerId) -> Sighting {
    Sighting {
        container_id,
        cgroup_path: None,
        cgroup_id: None,
        pid: None,
        source: DiscoverySource::DockerRoot,
    }
}

/// What the event loop does after an event.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Keep reading events.
    Continue,
    /// The folder itself went away: wait for it and watch it again.
    Reattach,
}

/// Follows `<docker_root>/containers/`: `Seen` on a new container directory, `Removed` when
/// one is deleted, and `ScanComplete` after every full listing.
#[derive(Debug)]
pub struct DockerRootWatcher {
    /// Docker's data root (`docker info` "Docker Root Dir", `/var/lib/docker` by default).
    docker_root: PathBuf,
    /// How often to look again for a missing `containers` folder.
    retry_interval: Duration,
}

impl DockerRootWatcher {
    /// A watcher for `<docker_root>/containers`.
    pub fn new(docker_root: impl Into<PathBuf>) -> Self {
        Self {
            docker_root: docker_root.into(),
            retry_interval: DEFAULT_RETRY_INTERVAL,
        }
    }

    /// Sets how often a missing folder is looked for again (tests shorten it).
    pub fn with_retry_interval(mut self, retry_interval: Duration) -> Self {
        self.retry_interval = retry_interval;
        self
    }

    fn containers_dir(&self) -> PathBuf {
        self.docker_root.join("containers")
    }

    /// A full listing: `Seen` for each container, then `ScanComplete`. Fails when the folder
    /// vanished since it was watched.
    fn rescan(&self, out: &mut Vec<ContainerEvent>) -> Result<(), DockerRootError> {
        let ids = scan_docker_root(&self.docker_root)?;
        debug!(
            message = "Scanned Docker containers folder.",
            containers = ids.len()
        );
        out.extend(ids.into_iter().map(|id| ContainerEvent::Seen(sighting(id))));
        out.push(ContainerEvent::ScanComplete {
            source: DiscoverySource::DockerRoot,
        });
        Ok(())
    }

    /// Turns one inotify event on the folder into container events.
    fn handle(&self, mask: EventMask, name: Option<&OsStr>, out: &mut Vec<ContainerEvent>) -> Next {
        if mask.contains(EventMask::Q_OVERFLOW) {
            warn!(message = "inotify queue overflowed on the Docker containers folder; rescanning.", path = %self.containers_dir().display());
            return match self.rescan(out) {
                Ok(()) => Next::Continue,
                Err(_) => Next::Reattach,
            };
        }
        if mask.intersects(EventMask::IGNORED | EventMask::DELETE_SELF | EventMask::MOVE_SELF) {
            warn!(message = "Docker containers folder was removed or moved; waiting for it to come back.", path = %self.containers_dir().display());
            return Next::Reattach;
        }
        if !mask.contains(EventMask::ISDIR) {
            return Next::Continue;
        }
        let Some(id) = name.and_then(OsStr::to_str).and_then(ContainerId::parse) else {
            return Next::Continue;
        };
        if mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
            trace!(message = "Docker container directory created.", container_id = %id);
            out.push(ContainerEvent::Seen(sighting(id)));
        } else if mask.intersects(EventMask::DELETE | EventMask::MOVED_FROM) {
            trace!(message = "Docker container directory deleted.", container_id = %id);
            out.push(ContainerEvent::Removed {
                container_id: id,
                source: DiscoverySource::DockerRoot,
            });
        }
        Next::Continue
    }

    /// Watches the folder (waiting for it to exist), lists it, then follows events until
    /// `shutdown` is cancelled or `tx` is closed (both a normal end, `Ok`).
    ///
    /// A missing folder is logged once and looked for again every retry interval: a host
    /// where Docker is not installed yet must not stop the collector. The watch is added
    /// before the listing, so a directory created in between is reported at least once.
    ///
    /// # Errors
    /// [`DockerRootError::InitInotify`], [`DockerRootError::WatchContainersDir`] (other than
    /// absence, e.g. permissions) and a failed inotify stream ([`DockerRootError::ReadEvents`]).
    pub async fn run(
        self,
        tx: mpsc::Sender<ContainerEvent>,
        shutdown: CancellationToken,
    ) -> Result<(), DockerRootError> {
        let dir = self.containers_dir();
        let inotify = Inotify::init().map_err(|source| DockerRootError::InitInotify { source })?;
        let mut stream = inotify
            .into_event_stream(vec![0u8; EVENT_BUFFER_BYTES])
            .map_err(|source| DockerRootError::InitInotify { source })?;
        let mut watches = stream.watches();
        let mask = WatchMask::CREATE
            | WatchMask::DELETE
            | WatchMask::MOVED_FROM
            | WatchMask::MOVED_TO
            | WatchMask::DELETE_SELF
            | WatchMask::MOVE_SELF
            | WatchMask::ONLYDIR;
        let mut logged_missing = false;
        let mut out = Vec::new();

        'attach: loop {
            // Wait for the folder, then watch it before listing it.
            let wd = loop {
                match watches.add(&dir, mask) {
                    Ok(wd) => break wd,
                    Err(error)
                        if matches!(error.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) =>
                    {
                        if !logged_missing {
                            logged_missing = true;
                            info!(message = "Docker containers folder does not exist yet; looking again periodically.", path = %dir.display(), retry = ?self.retry_interval);
                        }
                        tokio::select! {
                            _ = shutdown.cancelled() => return Ok(()),
                            _ = tokio::time::sleep(self.retry_interval) => continue,
                        }
                    }
                    Err(source) => {
                        return Err(DockerRootError::WatchContainersDir {
                            path: dir.clone(),
                            source,
                        });
                    }
                }
            };
            logged_missing = false;
            info!(message = "Watching Docker containers folder.", path = %dir.display());
            if self.rescan(&mut out).is_err() {
                let _ = watches.remove(wd);
                continue 'attach;
            }

            loop {
                if !super::send_all(&mut out, &tx, &shutdown, "Docker root watcher").await {
                    return Ok(());
                }
                let event = tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    event = stream.next() => event,
                };
                let event = match event {
                    Some(Ok(event)) => event,
                    Some(Err(source)) => {
                        return Err(DockerRootError::ReadEvents {
                            path: dir.clone(),
                            source,
                        });
                    }
                    None => {
                        let source =
                            io::Error::new(io::ErrorKind::UnexpectedEof, "inotify stream ended");
                        return Err(DockerRootError::ReadEvents {
                            path: dir.clone(),
                            source,
                        });
                    }
                };
                // Events of an earlier watch of the folder (before it was removed and came
                // back) say nothing about the current one.
                if event.wd != wd && !event.mask.contains(EventMask::Q_OVERFLOW) {
                    continue;
                }
                if self.handle(event.mask, event.name.as_deref(), &mut out) == Next::Reattach {
                    let _ = watches.remove(wd);
                    // Events already produced (before the folder went) are still true.
                    if !super::send_all(&mut out, &tx, &shutdown, "Docker root watcher").await {
                        return Ok(());
                    }
                    continue 'attach;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TestContainer;

    const A: &str = "81509de4623e2fb6ac9a799df48d03c7a0787796cfd92fd984b80e027c4bb221";
    const B: &str = "38dcd24c1a7ac4b0401a1ed29ef79b0c030631df33322db9b092687c0bfd0a38";
    const C: &str = "ee08638adaaf009d78c248913f629e38299471d45fe7dc944d1039077e3424ca";

    fn id(s: &str) -> ContainerId {
        ContainerId::parse(s).unwrap()
    }

    fn seen(s: &str) -> ContainerEvent {
        ContainerEvent::Seen(sighting(id(s)))
    }

    fn removed(s: &str) -> ContainerEvent {
        ContainerEvent::Removed {
            container_id: id(s),
            source: DiscoverySource::DockerRoot,
        }
    }

    const COMPLETE: ContainerEvent = ContainerEvent::ScanComplete {
        source: DiscoverySource::DockerRoot,
    };

    #[test]
    fn scan_lists_container_dirs_only() {
        let root = tempfile::tempdir().unwrap();
        let c = root.path().join("containers");
        for name in [B, A, "not-an-id"] {
            fs::create_dir_all(c.join(name)).unwrap();
        }
        fs::write(c.join(C), "a file, not a container directory").unwrap();
        assert_eq!(scan_docker_root(root.path()).unwrap(), vec![id(B), id(A)]);
        let missing = tempfile::tempdir().unwrap();
        assert!(matches!(
            scan_docker_root(missing.path()),
            Err(DockerRootError::ReadContainersDir { .. })
        ));
    }

    async fn next(rx: &mut mpsc::Receiver<ContainerEvent>) -> ContainerEvent {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("event within 10 s")
            .expect("channel open")
    }

    #[tokio::test]
    async fn waits_for_folder_then_follows_create_and_delete_in_order() {
        let root = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let shutdown = CancellationToken::new();
        let watcher =
            DockerRootWatcher::new(root.path()).with_retry_interval(Duration::from_millis(20));
        let task = tokio::spawn(watcher.run(tx, shutdown.clone()));

        // No folder yet: nothing, and the watcher keeps running.
        assert!(
            tokio::time::timeout(Duration::from_millis(100), rx.recv())
                .await
                .is_err()
        );
        assert!(!task.is_finished());

        let c = root.path().join("containers");
        fs::create_dir_all(c.join(A)).unwrap();
        assert_eq!(next(&mut rx).await, seen(A));
        assert_eq!(next(&mut rx).await, COMPLETE);

        fs::create_dir(c.join(B)).unwrap();
        fs::write(c.join(B).join("config.v2.json"), "{}").unwrap();
        fs::create_dir(c.join("tmp-not-an-id")).unwrap();
        fs::remove_dir_all(c.join(A)).unwrap();
        // Docker-style rename into place, then away.
        fs::create_dir(root.path().join(C)).unwrap();
        fs::rename(root.path().join(C), c.join(C)).unwrap();
        fs::rename(c.join(C), root.path().join(C)).unwrap();
        assert_eq!(next(&mut rx).await, seen(B));
        assert_eq!(next(&mut rx).await, removed(A));
        assert_eq!(next(&mut rx).await, seen(C));
        assert_eq!(next(&mut rx).await, removed(C));

        // The folder goes and comes back (Docker reinstalled): watched and listed again.
        fs::remove_dir_all(&c).unwrap();
        assert_eq!(next(&mut rx).await, removed(B));
        fs::create_dir_all(c.join(C)).unwrap();
        // C is found by the listing (before `ScanComplete`) or, when it was made just after
        // the listing, by its event (after).
        let got = [next(&mut rx).await, next(&mut rx).await];
        assert!(
            got == [seen(C), COMPLETE] || got == [COMPLETE, seen(C)],
            "{got:?}"
        );

        shutdown.cancel();
        task.await.unwrap().unwrap();
    }

    #[test]
    fn overflow_rescans_and_completes() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("containers").join(A)).unwrap();
        let watcher = DockerRootWatcher::new(root.path());
        let mut out = Vec::new();
        assert_eq!(
            watcher.handle(EventMask::Q_OVERFLOW, None, &mut out),
            Next::Continue
        );
        assert_eq!(out, vec![seen(A), COMPLETE]);
        out.clear();
        // A non-directory entry named like a container is not one.
        assert_eq!(
            watcher.handle(EventMask::CREATE, Some(OsStr::new(B)), &mut out),
            Next::Continue
        );
        assert!(out.is_empty());
    }

    /// This machine: `docker create` then `docker rm` show up in /var/lib/docker/containers.
    #[tokio::test]
    async fn real_docker_create_and_rm() {
        let (tx, mut rx) = mpsc::channel(256);
        let shutdown = CancellationToken::new();
        let task =
            tokio::spawn(DockerRootWatcher::new("/var/lib/docker").run(tx, shutdown.clone()));
        while next(&mut rx).await != COMPLETE {}

        let c = tokio::task::spawn_blocking(TestContainer::create)
            .await
            .unwrap();
        let want = seen(&c.id);
        while next(&mut rx).await != want {}
        assert!(
            scan_docker_root(Path::new("/var/lib/docker"))
                .unwrap()
                .iter()
                .any(|i| i.as_str() == c.id)
        );

        let c = tokio::task::spawn_blocking(move || {
            c.remove();
            c
        })
        .await
        .unwrap();
        let want = removed(&c.id);
        while next(&mut rx).await != want {}
        shutdown.cancel();
        task.await.unwrap().unwrap();
    }
}
