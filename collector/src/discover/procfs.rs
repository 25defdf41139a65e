//! Finds containers with a live process by reading `/proc/<pid>/cgroup` for every process.
//!
//! This is the discovery source that needs nothing but procfs: no Docker socket, no cgroupfs
//! mount. It only sees containers that have a process right now; the cgroupfs and Docker root
//! sources cover the rest. Paths in `/proc/<pid>/cgroup` are relative to the *reader's* cgroup
//! namespace (`cgroup_namespaces(7)`), so the collector must share the host's (`--cgroupns=host`)
//! for them to name host cgroups.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use tracing::{debug, trace};

use crate::discover::{DiscoverySource, Sighting};
use crate::identify::ContainerId;
use crate::identify::cgroup::{container_of, parse_proc_cgroup};

/// Errors of the procfs scan. Only the root failing is an error: a process exiting mid-scan is
/// normal and skipped.
#[derive(Debug, thiserror::Error)]
pub enum ProcfsError {
    /// The procfs root (`procfs_root`) could not be listed.
    #[error("cannot list procfs root {root}")]
    ReadRoot {
        /// The configured root.
        root: PathBuf,
        /// The I/O failure.
        #[source]
        source: io::Error,
    },
}

/// `/proc/<pid>/cgroup` is one line per hierarchy, a few hundred bytes; this covers any real
/// one in a single `read`, and the buffer is reused across processes.
const READ_BUFFER_BYTES: usize = 4096;

/// Scans `<procfs_root>/<pid>/cgroup` for every process and returns one sighting per
/// container (source [`DiscoverySource::Procfs`]), sorted by container id.
///
/// Each sighting keeps the lowest PID seen in the container, which is usually its init
/// process and so stays the same from one scan to the next. A process that exits between the
/// listing and the read (`ENOENT`, or `ESRCH` from a reaped task) or whose file is unreadable
/// is skipped. Cost: one open + read per process, with one reused buffer, and no allocation
/// for processes outside containers beyond the parse of their short file.
///
/// # Errors
/// [`ProcfsError::ReadRoot`] when the root itself cannot be listed. The caller must not treat
/// that as "no containers" (and must not send `ScanComplete` for it).
pub fn scan_procfs(procfs_root: &Path) -> Result<Vec<Sighting>, ProcfsError> {
    let entries = fs::read_dir(procfs_root).map_err(|source| ProcfsError::ReadRoot {
        root: procfs_root.to_path_buf(),
        source,
    })?;
    let mut found: HashMap<ContainerId, Sighting> = HashMap::new();
    let mut buf = Vec::with_capacity(READ_BUFFER_BYTES);
    let mut path = procfs_root.to_path_buf();
    let mut processes = 0usize;

    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(error) => {
                debug!(message = "Skipping unreadable procfs entry.", %error);
                continue;
            }
        };
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        processes += 1;

        path.push(&name);
        path.push("cgroup");
        let read = read_into(&path, &mut buf);
        path.pop();
        path.pop();
        if let Err(error) = read {
            trace!(message = "Skipping process whose cgroup file is unreadable (it probably exited).", pid, %error);
            continue;
        }
        let Ok(text) = std::str::from_utf8(&buf) else {
            debug!(
                message = "Skipping process with a non-UTF-8 cgroup file.",
                pid
            );
            continue;
        };
        let Some((hint, cgroup_path)) = container_of(&parse_proc_cgroup(text)) else {
            continue;
        };
        found
            .entry(hint.container_id.clone())
            .and_modify(|s| {
                if s.pid.is_none_or(|p| pid < p) {
                    s.pid = Some(pid);
                }
            })
            .or_insert_with(|| Sighting {
                container_id: hint.container_id,
                cgroup_path: Some(cgroup_path),
                cgroup_id: None,
                pid: Some(pid),
                source: DiscoverySource::Procfs,
            });
    }

    let mut sightings: Vec<Sighting> = found.into_values().collect();
    sightings.sort_by(|a, b| a.container_id.cmp(&b.container_id));
    debug!(
        message = "Scanned procfs.",
        processes,
        containers = sightings.len()
    );
    Ok(sightings)
}

/// Reads the whole file at `path` into `buf` (cleared first), reusing its allocation.
fn read_into(path: &Path, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.clear();
    File::open(path)?.read_to_end(buf)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TestContainer;

    const A: &str = "81509de4623e2fb6ac9a799df48d03c7a0787796cfd92fd984b80e027c4bb221";
    const B: &str = "38dcd24c1a7ac4b0401a1ed29ef79b0c030631df33322db9b092687c0bfd0a38";
    const TASK: &str = "5a0d5ceddf6c44c1928d367a815d890f";

    fn write_proc(root: &Path, pid: &str, cgroup: Option<&str>) {
        let dir = root.join(pid);
        fs::create_dir_all(&dir).unwrap();
        if let Some(text) = cgroup {
            fs::write(dir.join("cgroup"), text).unwrap();
        }
    }

    #[test]
    fn one_sighting_per_container_with_lowest_pid() {
        let root = tempfile::tempdir().unwrap();
        let p = root.path();
        write_proc(p, "1", Some("0::/init.scope\n"));
        write_proc(
            p,
            "300",
            Some(&format!("4:memory:/docker/{A}\n0::/docker/{A}\n")),
        );
        write_proc(
            p,
            "42",
            Some(&format!("4:memory:/docker/{A}\n0::/docker/{A}\n")),
        );
        write_proc(p, "77", Some(&format!("0::/ecs/{TASK}/{B}\n")));
        write_proc(p, "78", Some(&format!("0::/ecs/{TASK}/{B}/init\n")));
        // Exited between listing and reading: no cgroup file.
        write_proc(p, "500", None);
        // Not processes.
        write_proc(p, "self", Some(&format!("0::/docker/{B}\n")));
        write_proc(p, "sys", None);
        fs::write(p.join("cgroups"), "#subsys_name\n").unwrap();
        // Non-UTF-8 content.
        fs::create_dir_all(p.join("600")).unwrap();
        fs::write(p.join("600/cgroup"), b"0::/\xff\n").unwrap();

        let got = scan_procfs(p).unwrap();
        let want = vec![
            Sighting {
                container_id: ContainerId::parse(B).unwrap(),
                cgroup_path: Some(format!("/ecs/{TASK}/{B}")),
                cgroup_id: None,
                pid: Some(77),
                source: DiscoverySource::Procfs,
            },
            Sighting {
                container_id: ContainerId::parse(A).unwrap(),
                cgroup_path: Some(format!("/docker/{A}")),
                cgroup_id: None,
                pid: Some(42),
                source: DiscoverySource::Procfs,
            },
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn empty_and_missing_roots() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(scan_procfs(root.path()).unwrap(), vec![]);
        assert!(matches!(
            scan_procfs(&root.path().join("nope")),
            Err(ProcfsError::ReadRoot { .. })
        ));
    }

    /// The real /proc: a running container is found with one of its PIDs and its cgroup path.
    #[test]
    fn real_procfs_finds_running_container() {
        let c = TestContainer::run();
        let pid = c.pid();
        let got = scan_procfs(Path::new("/proc")).unwrap();
        let s = got
            .iter()
            .find(|s| s.container_id.as_str() == c.id)
            .expect("container sighted");
        assert_eq!(
            s.pid,
            Some(pid),
            "busybox `sleep` is the only process, so the lowest pid is init"
        );
        assert_eq!(
            s.cgroup_path.as_deref(),
            Some(format!("/ecs/{}/{}", c.task, c.id).as_str())
        );
        assert_eq!(s.source, DiscoverySource::Procfs);
        c.remove();
        let got = scan_procfs(Path::new("/proc")).unwrap();
        assert!(
            got.iter().all(|s| s.container_id.as_str() != c.id),
            "removed container no longer sighted"
        );
    }
}
