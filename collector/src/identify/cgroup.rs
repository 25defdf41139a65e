//! Container identity from cgroups: path parsing, `/proc/<pid>/cgroup`, hierarchy layout and ids.
//!
//! A container runtime puts every container in a cgroup whose path carries the container id,
//! and often the ECS task id or Kubernetes pod uid: that is the cheapest identity there is,
//! readable without the Docker socket. The layouts handled, one per runtime and cgroup driver:
//!
//! | layout | example |
//! |---|---|
//! | Docker, cgroupfs driver | `/docker/<64 hex>` |
//! | ECS on EC2, task limits on (v1) | `/ecs/<task id>/<64 hex>` (task id 32 hex or UUID) |
//! | third-party data | `/ecs/<cluster>/<task id>/<64 hex>` |
//! | Fargate 1.4 | `/ecs/<32 hex task id>-<digits>` |
//! | ECS on EC2, cgroup v2 + systemd (AL2023) | `/ecstasks.slice/ecstasks-<task>.slice/docker-<id>.scope` |
//! | Docker, systemd driver | `/system.slice/docker-<id>.scope` |
//! | containerd / CRI, systemd | `.../kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope` |
//! | containerd / CRI, systemd, v1 view | `/system.slice/containerd.service/kubepods-...-pod<uid>.slice:cri-containerd:<id>` |
//! | Kubernetes, cgroupfs driver | `/kubepods/burstable/pod<uid>/<id>` |
//! | Podman | `/machine.slice/libpod-<id>.scope`, `/libpod_parent/libpod-<id>` |
//! | CRI-O | `.../crio-<id>.scope` |
//!
//! Nested directories below a container's cgroup (`init.scope`, systemd inside the container,
//! Docker-in-Docker's `/docker/<outer>/docker/<inner>`) belong to the innermost container id,
//! which is the one whose processes they hold.
//!
//! Paths in `/proc/<pid>/cgroup` are relative to the *reader's* cgroup namespace: the collector
//! must run in the host cgroup namespace (`--cgroupns=host`) to see host paths. A process that
//! reads its own file in a private namespace sees `0::/` and learns nothing (see
//! `cgroup_namespaces(7)`).

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::identify::{CgroupHint, CgroupId, ContainerId, Runtime, TaskId};

/// Errors of cgroup layout detection and cgroup id lookup.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// The configured cgroupfs root could not be listed.
    #[error("cannot read cgroupfs root {root}")]
    ReadRoot {
        /// The configured root (`cgroupfs_root`).
        root: PathBuf,
        /// The I/O failure.
        #[source]
        source: io::Error,
    },
    /// Neither a cgroup v2 hierarchy nor any v1 hierarchy was found under the root.
    #[error(
        "no cgroup hierarchy under {root} (neither cgroup.controllers nor v1 controller directories)"
    )]
    DetectLayout {
        /// The configured root (`cgroupfs_root`).
        root: PathBuf,
    },
    /// A cgroup id was asked for on a host without a cgroup v2 hierarchy (v1 only), where
    /// `bpf_get_current_cgroup_id()` has nothing to name.
    #[error("no cgroup v2 hierarchy under {root}: cgroup ids need cgroup v2")]
    NoV2Hierarchy {
        /// The configured root (`cgroupfs_root`).
        root: PathBuf,
    },
    /// The cgroup path is not absolute or climbs out of the hierarchy (`..`), as paths read
    /// from another cgroup namespace do.
    #[error("cgroup path {cgroup_path:?} is not a path inside the hierarchy")]
    InvalidCgroupPath {
        /// The path as given.
        cgroup_path: String,
    },
    /// The cgroup directory could not be stat'ed: usually the cgroup was removed (its
    /// container stopped).
    #[error("cannot stat cgroup directory {path}")]
    StatCgroupDir {
        /// The directory.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: io::Error,
    },
}

// ---------------------------------------------------------------------------------------------
// Path parsing
// ---------------------------------------------------------------------------------------------

/// What one path component says about a container.
struct ComponentId {
    container_id: ContainerId,
    /// `None` when the component alone does not tell (a bare id under `/docker`, `/ecs`, ...).
    runtime: Option<Runtime>,
    /// The pod uid a `<slice>:<runtime>:<id>` component carries in its slice part.
    pod_uid: Option<String>,
}

/// The runtime whose systemd scope or cgroup naming uses `prefix`.
fn runtime_of_prefix(prefix: &str) -> Option<Runtime> {
    match prefix {
        "docker" => Some(Runtime::Docker),
        "cri-containerd" | "nerdctl" => Some(Runtime::Containerd),
        "crio" => Some(Runtime::CriO),
        "libpod" => Some(Runtime::Podman),
        _ => None,
    }
}

/// The pod uid of a kubepods component: `kubepods-<qos>-pod<uid>.slice` (systemd driver, uid
/// with `_` for `-` because `-` separates slice levels in systemd unit names) or `pod<uid>`
/// (cgroupfs driver).
fn pod_uid_of(component: &str) -> Option<String> {
    let uid = if let Some(slice) = component.strip_suffix(".slice") {
        if !slice.starts_with("kubepods") {
            return None;
        }
        let (_, uid) = slice.rsplit_once("-pod")?;
        uid
    } else {
        component.strip_prefix("pod")?
    };
    let looks_like_uid = uid.len() >= 32
        && uid
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'_' || b == b'-');
    looks_like_uid.then(|| uid.replace('_', "-"))
}

/// Extracts a container id from one path component, in every naming scheme of the table in
/// the module docs.
fn component_id(component: &str) -> Option<ComponentId> {
    // containerd/CRI-O with the systemd driver on cgroup v1, seen from the runtime's own
    // cgroup: `kubepods-burstable-pod<uid>.slice:cri-containerd:<id>`.
    if let Some((slice, rest)) = component.split_once(':') {
        let (prefix, id) = rest.split_once(':')?;
        return Some(ComponentId {
            container_id: ContainerId::parse(id)?,
            runtime: Some(runtime_of_prefix(prefix).unwrap_or(Runtime::Unknown)),
            pod_uid: pod_uid_of(slice),
        });
    }
    let unit = component.strip_suffix(".scope").unwrap_or(component);
    if let Some((prefix, id)) = unit.rsplit_once('-')
        && let Some(runtime) = runtime_of_prefix(prefix)
        && let Some(container_id) = ContainerId::parse(id)
    {
        return Some(ComponentId {
            container_id,
            runtime: Some(runtime),
            pod_uid: None,
        });
    }
    // A bare id: `/docker/<id>`, `/ecs/<task>/<id>`, Fargate's `/ecs/<task>-<digits>`.
    let container_id = ContainerId::parse(component)?;
    Some(ComponentId {
        container_id,
        runtime: None,
        pod_uid: None,
    })
}

/// A parsed path: the hint and which component held the container id.
struct Parsed {
    hint: CgroupHint,
    id_index: usize,
    components: usize,
}

fn parse_components(path: &str) -> Option<Parsed> {
    // `(deleted)` is what the kernel appends in /proc/<pid>/cgroup when the process sits in
    // a cgroup that was removed (cgroups(7)).
    let path = path.strip_suffix(" (deleted)").unwrap_or(path);
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    // The innermost id wins: nested cgroups under a container (Docker-in-Docker, systemd in
    // the container) are still that container's processes, the deepest runtime's.
    let (id_index, found) = components
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, c)| component_id(c).map(|id| (i, id)))?;
    let before = &components[..id_index];

    let runtime = found.runtime.unwrap_or_else(|| {
        if found.container_id.as_str().len() != 64 {
            // `<32 hex>-<digits>` is Fargate platform 1.4, which runs tasks on containerd
            // (https://aws.amazon.com/blogs/containers/aws-fargate-launches-platform-version-1-4/).
            Runtime::Containerd
        } else if before.contains(&"docker") || before.contains(&"ecs") {
            // ECS on EC2 and Fargate 1.3 run Docker; `/ecs/<task>` is the agent's cgroup parent.
            Runtime::Docker
        } else if before.iter().any(|c| c.contains("containerd")) {
            Runtime::Containerd
        } else if before.contains(&"libpod_parent") {
            Runtime::Podman
        } else {
            Runtime::Unknown
        }
    });

    let task_id = ecs_task_id(before, &found.container_id);
    let pod_uid = found.pod_uid.or_else(|| {
        if before.iter().any(|c| c.starts_with("kubepods")) {
            before.iter().rev().find_map(|c| pod_uid_of(c))
        } else {
            None
        }
    });

    Some(Parsed {
        hint: CgroupHint {
            container_id: found.container_id,
            task_id,
            pod_uid,
            runtime,
        },
        id_index,
        components: components.len(),
    })
}

/// The ECS task id of a container, from the components before its id.
fn ecs_task_id(before: &[&str], container_id: &ContainerId) -> Option<TaskId> {
    // Fargate 1.4: the container id is `<task id>-<digits>`.
    if let Some((task, _)) = container_id.as_str().split_once('-') {
        return TaskId::parse(task);
    }
    // AL2023 (cgroup v2 + systemd): `ecstasks-<task>.slice`, per the agent's
    // `buildCgroupV2Root` (agent/api/task/task_linux.go).
    if let Some(task) = before
        .iter()
        .rev()
        .find_map(|c| c.strip_prefix("ecstasks-")?.strip_suffix(".slice"))
    {
        return TaskId::parse(task);
    }
    // cgroup v1: `/ecs/<task>/<id>` (agent default) or `/ecs/<cluster>/<task>/<id>`; the task
    // is the component right before the id, under an `ecs` component.
    let (&task, above) = before.split_last()?;
    if above.contains(&"ecs") {
        TaskId::parse(task)
    } else {
        None
    }
}

/// What a cgroup path says about the container whose processes it holds.
///
/// Accepts every layout in the module docs; the innermost container id wins, and components
/// below it (`/docker/<id>/init.scope`) are allowed. Returns `None` for the root (`/`, what a
/// container sees of itself in a private cgroup namespace) and for non-container cgroups
/// (`/system.slice/docker.service`, `/user.slice/...`, `/ecs/<task>` itself).
pub fn parse_cgroup_path(path: &str) -> Option<CgroupHint> {
    parse_components(path).map(|p| p.hint)
}

/// Like [`parse_cgroup_path`], but only for a container's own cgroup directory: the last
/// component must be the id. Discovery walks use it so that `/docker/<id>/init.scope` is not
/// reported as a second cgroup of the same container.
pub fn parse_container_dir(path: &str) -> Option<CgroupHint> {
    parse_components(path)
        .filter(|p| p.id_index + 1 == p.components)
        .map(|p| p.hint)
}

// ---------------------------------------------------------------------------------------------
// /proc/<pid>/cgroup
// ---------------------------------------------------------------------------------------------

/// One line of `/proc/<pid>/cgroup`: `hierarchy-ID:controller-list:cgroup-path` (cgroups(7)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupEntry<'a> {
    /// Hierarchy id; 0 is the cgroup v2 hierarchy.
    pub hierarchy_id: u32,
    /// Comma-separated controllers (`cpu,cpuacct`, `name=systemd`); empty for cgroup v2.
    pub controllers: &'a str,
    /// Path relative to the hierarchy root, as the reader's cgroup namespace sees it.
    pub path: &'a str,
}

impl CgroupEntry<'_> {
    /// True for the cgroup v2 line (`0::<path>`).
    pub fn is_v2(&self) -> bool {
        self.hierarchy_id == 0 && self.controllers.is_empty()
    }

    /// True when this v1 line's hierarchy carries `controller` (`memory`, `name=systemd`).
    pub fn has_controller(&self, controller: &str) -> bool {
        self.controllers.split(',').any(|c| c == controller)
    }
}

/// A parsed `/proc/<pid>/cgroup`, borrowing the text: discovery parses thousands of these per
/// scan, so no line is copied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcCgroup<'a> {
    /// The lines in file order; malformed lines are left out.
    pub entries: Vec<CgroupEntry<'a>>,
}

impl<'a> ProcCgroup<'a> {
    /// The cgroup v2 path, when the host has a v2 hierarchy.
    pub fn v2_path(&self) -> Option<&'a str> {
        self.entries.iter().find(|e| e.is_v2()).map(|e| e.path)
    }

    /// The path in the v1 hierarchy that carries `controller`.
    pub fn v1_path(&self, controller: &str) -> Option<&'a str> {
        self.entries
            .iter()
            .find(|e| !e.is_v2() && e.has_controller(controller))
            .map(|e| e.path)
    }
}

/// Parses the text of `/proc/<pid>/cgroup` (v1 `N:controllers:path` lines and the v2 `0::path`
/// line, in any mix).
pub fn parse_proc_cgroup(text: &str) -> ProcCgroup<'_> {
    let entries = text
        .lines()
        .filter_map(|line| {
            // The path may itself contain ':' (cgroup names are free-form): split twice only.
            let mut parts = line.splitn(3, ':');
            let hierarchy_id = parts.next()?.parse().ok()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            Some(CgroupEntry {
                hierarchy_id,
                controllers,
                path,
            })
        })
        .collect();
    ProcCgroup { entries }
}

/// The v1 controllers whose hierarchy is consulted, in order, when the v2 line names no
/// container: the ones Docker, runc and systemd always populate.
const PREFERRED_V1_CONTROLLERS: [&str; 4] = ["memory", "pids", "cpu", "name=systemd"];

/// The container a process belongs to, with the cgroup path that says so.
///
/// The v2 line is preferred: it is the hierarchy cgroup ids come from. On v1-only hosts, and
/// on hybrid hosts whose runtime leaves processes at the v2 root (runc before 1.0 joined only
/// v1 hierarchies), the memory, pids, cpu and name=systemd lines are tried, then any line.
pub fn container_of(pc: &ProcCgroup<'_>) -> Option<(CgroupHint, String)> {
    let v2 = pc.v2_path().into_iter();
    let v1 = PREFERRED_V1_CONTROLLERS
        .iter()
        .filter_map(|c| pc.v1_path(c));
    let rest = pc.entries.iter().map(|e| e.path);
    v2.chain(v1)
        .chain(rest)
        .find_map(|path| parse_cgroup_path(path).map(|hint| (hint, path.to_owned())))
}

// ---------------------------------------------------------------------------------------------
// Hierarchy layout
// ---------------------------------------------------------------------------------------------

/// Which cgroup hierarchies a host mounts (see the kernel's `Documentation/admin-guide/cgroup-v2.rst`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupMode {
    /// cgroup v2 only, mounted at the root (Amazon Linux 2023, current distributions).
    Unified,
    /// v1 controllers plus a v2 hierarchy at `<root>/unified` (systemd's "hybrid" mode).
    Hybrid,
    /// cgroup v1 only (Amazon Linux 2 without systemd's unified mount).
    Legacy,
}

/// One cgroup v1 hierarchy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct V1Hierarchy {
    /// Its mount directory (`<root>/memory`, `<root>/cpu,cpuacct`, `<root>/systemd`).
    pub path: PathBuf,
    /// The controllers it carries, spelled as in `/proc/<pid>/cgroup` (`name=systemd` for the
    /// `systemd` directory), so lines can be matched to directories.
    pub controllers: Vec<String>,
}

/// Where the cgroup hierarchies of the host are, under a configurable root.
///
/// Built from the filesystem, not from `/proc/self/mountinfo`: the collector may run in a
/// container that sees the host's `/sys/fs/cgroup` at `/host/sys/fs/cgroup`, where its own
/// mount table says nothing about the host's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupLayout {
    /// The configured root (`cgroupfs_root`), kept for error messages.
    pub root: PathBuf,
    /// The cgroup v2 hierarchy: the root itself (unified) or `<root>/unified` (hybrid).
    pub v2_root: Option<PathBuf>,
    /// The v1 hierarchies, sorted by path; empty on unified hosts.
    pub v1: Vec<V1Hierarchy>,
}

impl CgroupLayout {
    /// The host's mode.
    pub fn mode(&self) -> CgroupMode {
        match (&self.v2_root, self.v1.is_empty()) {
            (Some(_), true) => CgroupMode::Unified,
            (Some(_), false) => CgroupMode::Hybrid,
            (None, _) => CgroupMode::Legacy,
        }
    }

    /// The v1 hierarchy carrying `controller` (`memory`, `pids`, `name=systemd`).
    pub fn v1_hierarchy(&self, controller: &str) -> Option<&V1Hierarchy> {
        self.v1
            .iter()
            .find(|h| h.controllers.iter().any(|c| c == controller))
    }

    /// The one hierarchy that discovery walks, and whether it is the v2 one.
    ///
    /// cgroup v2 when present: its directory inodes are the cgroup ids, and runc creates
    /// container cgroups there on hybrid hosts too. On v1-only hosts, the memory hierarchy
    /// (then pids, then name=systemd, then any), which every runtime populates.
    pub fn walk_root(&self) -> Option<(&Path, bool)> {
        if let Some(v2) = &self.v2_root {
            return Some((v2, true));
        }
        ["memory", "pids", "name=systemd"]
            .iter()
            .find_map(|c| self.v1_hierarchy(c))
            .or_else(|| self.v1.first())
            .map(|h| (h.path.as_path(), false))
    }

    /// The directories of `cgroup_path` in every hierarchy: the v2 one first, then each v1
    /// one. Some may not exist (a v1 controller the runtime does not use).
    ///
    /// # Errors
    /// [`CgroupError::InvalidCgroupPath`] for a relative path or one with `..`.
    pub fn dirs_for(&self, cgroup_path: &str) -> Result<Vec<PathBuf>, CgroupError> {
        let rel = relative_cgroup_path(cgroup_path)?;
        Ok(self
            .v2_root
            .iter()
            .chain(self.v1.iter().map(|h| &h.path))
            .map(|root| root.join(rel))
            .collect())
    }
}

/// `cgroup_path` without its leading `/`, refusing anything that could leave the hierarchy.
fn relative_cgroup_path(cgroup_path: &str) -> Result<&str, CgroupError> {
    let invalid = || CgroupError::InvalidCgroupPath {
        cgroup_path: cgroup_path.to_owned(),
    };
    let rel = cgroup_path.strip_prefix('/').ok_or_else(invalid)?;
    if rel.split('/').any(|c| c == ".." || c == ".") {
        return Err(invalid());
    }
    Ok(rel.trim_end_matches('/'))
}

/// Detects the cgroup hierarchies under `cgroupfs_root` (normally `/sys/fs/cgroup`).
///
/// - unified: `<root>/cgroup.controllers` exists (only the v2 root has that file at the top);
/// - hybrid: `<root>/unified/cgroup.controllers` exists, plus v1 hierarchies;
/// - v1 hierarchies: subdirectories (not symlinks such as `cpu -> cpu,cpuacct`) that hold a
///   `cgroup.procs` file and no `cgroup.controllers`.
///
/// # Errors
/// [`CgroupError::ReadRoot`] when the root cannot be listed, [`CgroupError::DetectLayout`]
/// when it holds no hierarchy at all.
pub fn detect_layout(cgroupfs_root: &Path) -> Result<CgroupLayout, CgroupError> {
    let root = cgroupfs_root.to_path_buf();
    if root.join("cgroup.controllers").is_file() {
        return Ok(CgroupLayout {
            v2_root: Some(root.clone()),
            v1: Vec::new(),
            root,
        });
    }
    let unified = root.join("unified");
    let v2_root = unified
        .join("cgroup.controllers")
        .is_file()
        .then_some(unified);

    let read_root = |source| CgroupError::ReadRoot {
        root: root.clone(),
        source,
    };
    let mut v1 = Vec::new();
    for entry in fs::read_dir(&root).map_err(read_root)? {
        let entry = entry.map_err(read_root)?;
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let path = entry.path();
        if !is_dir || Some(&path) == v2_root.as_ref() {
            continue;
        }
        if !path.join("cgroup.procs").is_file() || path.join("cgroup.controllers").exists() {
            continue;
        }
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let controllers = if name == "systemd" {
            vec!["name=systemd".to_owned()]
        } else {
            name.split(',').map(str::to_owned).collect()
        };
        v1.push(V1Hierarchy { path, controllers });
    }
    v1.sort_by(|a, b| a.path.cmp(&b.path));

    if v2_root.is_none() && v1.is_empty() {
        return Err(CgroupError::DetectLayout { root });
    }
    Ok(CgroupLayout { root, v2_root, v1 })
}

/// The cgroup id of `cgroup_path`: the inode of its cgroup v2 directory.
///
/// That is what `bpf_get_current_cgroup_id()` returns: the kernel's `cgroup_id()` is the
/// kernfs node id, which kernfs also reports as the directory's inode number (64-bit kernels,
/// since Linux 5.5, `include/linux/kernfs.h`).
///
/// # Errors
/// [`CgroupError::NoV2Hierarchy`] on v1-only hosts, [`CgroupError::InvalidCgroupPath`] for a
/// path with `..`, [`CgroupError::StatCgroupDir`] when the directory is gone (the container
/// stopped) or cannot be read.
pub fn cgroup_id(layout: &CgroupLayout, cgroup_path: &str) -> Result<CgroupId, CgroupError> {
    let v2 = layout
        .v2_root
        .as_ref()
        .ok_or_else(|| CgroupError::NoV2Hierarchy {
            root: layout.root.clone(),
        })?;
    let path = v2.join(relative_cgroup_path(cgroup_path)?);
    match fs::metadata(&path) {
        Ok(meta) if meta.is_dir() => Ok(CgroupId(meta.ino())),
        Ok(_) => Err(CgroupError::StatCgroupDir {
            path,
            source: io::Error::new(io::ErrorKind::NotADirectory, "not a cgroup directory"),
        }),
        Err(source) => Err(CgroupError::StatCgroupDir { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    const ID: &str = "38dcd24c1a7ac4b0401a1ed29ef79b0c030631df33322db9b092687c0bfd0a38";
    const ID2: &str = "ee08638adaaf009d78c248913f629e38299471d45fe7dc944d1039077e3424ca";

    fn hint(id: &str, task: Option<&str>, pod: Option<&str>, runtime: Runtime) -> CgroupHint {
        CgroupHint {
            container_id: ContainerId::parse(id).unwrap(),
            task_id: task.map(|t| TaskId::parse(t).unwrap()),
            pod_uid: pod.map(str::to_owned),
            runtime,
        }
    }

    #[test]
    fn parse_cgroup_path_every_layout() {
        let pod = "0d1a2b3c-4d5e-6f70-8192-a3b4c5d6e7f8";
        let pod_ = "0d1a2b3c_4d5e_6f70_8192_a3b4c5d6e7f8";
        let task = "5a0d5ceddf6c44c1928d367a815d890f";
        let uuid = "a52246f2-daa7-47b4-9e84-0043331e1da0";
        let cases: Vec<(String, Option<CgroupHint>)> = vec![
            (
                format!("/docker/{ID}"),
                Some(hint(ID, None, None, Runtime::Docker)),
            ),
            (
                format!("/ecs/{task}/{ID}"),
                Some(hint(ID, Some(task), None, Runtime::Docker)),
            ),
            (
                format!("/ecs/{uuid}/{ID}"),
                Some(hint(ID, Some(uuid), None, Runtime::Docker)),
            ),
            (
                format!("/ecs/my-cluster/{task}/{ID}"),
                Some(hint(ID, Some(task), None, Runtime::Docker)),
            ),
            (
                format!("/ecs/{task}-1234567890"),
                Some(hint(
                    &format!("{task}-1234567890"),
                    Some(task),
                    None,
                    Runtime::Containerd,
                )),
            ),
            (
                format!("/ecstasks.slice/ecstasks-{task}.slice/docker-{ID}.scope"),
                Some(hint(ID, Some(task), None, Runtime::Docker)),
            ),
            (
                format!("/system.slice/docker-{ID}.scope"),
                Some(hint(ID, None, None, Runtime::Docker)),
            ),
            (
                format!(
                    "/system.slice/containerd.service/kubepods-burstable-pod{pod_}.slice:cri-containerd:{ID}"
                ),
                Some(hint(ID, None, Some(pod), Runtime::Containerd)),
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{pod_}.slice/cri-containerd-{ID}.scope"
                ),
                Some(hint(ID, None, Some(pod), Runtime::Containerd)),
            ),
            (
                format!("/kubepods.slice/kubepods-pod{pod_}.slice/crio-{ID}.scope"),
                Some(hint(ID, None, Some(pod), Runtime::CriO)),
            ),
            (
                format!("/kubepods/burstable/pod{pod}/{ID}"),
                Some(hint(ID, None, Some(pod), Runtime::Unknown)),
            ),
            (
                format!("/machine.slice/libpod-{ID}.scope"),
                Some(hint(ID, None, None, Runtime::Podman)),
            ),
            (
                format!("/libpod_parent/libpod-{ID}"),
                Some(hint(ID, None, None, Runtime::Podman)),
            ),
            (
                format!("/system.slice/nerdctl-{ID}.scope"),
                Some(hint(ID, None, None, Runtime::Containerd)),
            ),
            (
                format!("/default/{ID}"),
                Some(hint(ID, None, None, Runtime::Unknown)),
            ),
            // Below a container: still that container.
            (
                format!("/docker/{ID}/init"),
                Some(hint(ID, None, None, Runtime::Docker)),
            ),
            (
                format!("/system.slice/docker-{ID}.scope/init.scope"),
                Some(hint(ID, None, None, Runtime::Docker)),
            ),
            // Docker-in-Docker: the innermost container; the inner one is not the task's.
            (
                format!("/ecs/{task}/{ID}/docker/{ID2}"),
                Some(hint(ID2, None, None, Runtime::Docker)),
            ),
            // A removed cgroup as /proc shows it.
            (
                format!("/docker/{ID} (deleted)"),
                Some(hint(ID, None, None, Runtime::Docker)),
            ),
            // Not containers.
            ("/".into(), None),
            ("".into(), None),
            (format!("/ecs/{task}"), None),
            (format!("/ecstasks.slice/ecstasks-{task}.slice"), None),
            ("/system.slice/docker.service".into(), None),
            ("/system.slice/containerd.service".into(), None),
            ("/user.slice/user-1000.slice/session-2.scope".into(), None),
            ("/process_api/8ddb923e4999cdf34f0dd60b6dab9ab7".into(), None),
            (format!("/machine.slice/libpod-conmon-{ID}.scope"), None),
            (format!("/docker/{}", &ID[..63]), None),
            (format!("/docker/{}", ID.to_uppercase()), None),
        ];
        for (path, want) in cases {
            assert_eq!(parse_cgroup_path(&path), want, "path {path}");
        }
    }

    #[test]
    fn parse_container_dir_only_matches_the_container_directory() {
        let cases = [
            (format!("/docker/{ID}"), true),
            (format!("/system.slice/docker-{ID}.scope"), true),
            (format!("/docker/{ID}/init"), false),
            (format!("/system.slice/docker-{ID}.scope/init.scope"), false),
            ("/docker".to_owned(), false),
        ];
        for (path, want) in cases {
            assert_eq!(parse_container_dir(&path).is_some(), want, "path {path}");
        }
    }

    /// Every block of the ECS fixture file, with the container and task it must yield.
    #[test]
    fn container_of_every_fixture_block() {
        let text = include_str!("../../testdata/ecs/proc-pid-cgroup-samples.txt");
        let mut blocks: Vec<(String, String)> = Vec::new();
        for line in text.lines() {
            if let Some(header) = line.strip_prefix("## ") {
                let name = header.split_whitespace().next().unwrap().to_owned();
                blocks.push((name, String::new()));
            } else if !line.starts_with('#')
                && !line.is_empty()
                && let Some((_, body)) = blocks.last_mut()
            {
                body.push_str(line);
                body.push('\n');
            }
        }
        /// Container id, task id, runtime, and the controller of the line that must be chosen
        /// (`""` for the v2 line).
        type Want = Option<(&'static str, Option<&'static str>, Runtime, &'static str)>;
        let expected: [(&str, Want); 8] = [
            (
                "ec2-cgroupv1-task-limits",
                Some((
                    ID,
                    Some("a52246f2-daa7-47b4-9e84-0043331e1da0"),
                    Runtime::Docker,
                    "memory",
                )),
            ),
            (
                "ec2-cgroupv1-no-task-limits",
                Some((
                    "81509de4623e2fb6ac9a799df48d03c7a0787796cfd92fd984b80e027c4bb221",
                    None,
                    Runtime::Docker,
                    "memory",
                )),
            ),
            (
                "ec2-cgroupv1-cluster-in-path",
                Some((
                    "38fac3e99302b3622be089dd41e7ccf38aff368a86cc339972075136ee2710ce",
                    Some("5a0d5ceddf6c44c1928d367a815d890f"),
                    Runtime::Docker,
                    "cpu",
                )),
            ),
            (
                "fargate-1.3-cgroupv1",
                Some((
                    "432624d2150b349fe35ba397284dea788c2bf66b885d14dfc1569b01890ca7da",
                    Some("55091c13-b8cf-4801-b527-f4601742204d"),
                    Runtime::Docker,
                    "memory",
                )),
            ),
            (
                "fargate-1.4-cgroupv1",
                Some((
                    "34dc0b5e626f2c5c4c5170e34b10e765-1234567890",
                    Some("34dc0b5e626f2c5c4c5170e34b10e765"),
                    Runtime::Containerd,
                    "memory",
                )),
            ),
            (
                "ec2-cgroupv2-systemd-task-limits",
                Some((
                    ID2,
                    Some("158d1c8083dd49d6b527399fd6414f5c"),
                    Runtime::Docker,
                    "",
                )),
            ),
            (
                "ec2-cgroupv2-systemd-no-task-limits",
                Some((ID2, None, Runtime::Docker, "")),
            ),
            ("ec2-cgroupv2-inside-container", None),
        ];
        assert_eq!(
            blocks.len(),
            expected.len(),
            "every fixture block has an expectation"
        );
        for ((name, body), (want_name, want)) in blocks.iter().zip(expected) {
            assert_eq!(name, want_name);
            let pc = parse_proc_cgroup(body);
            assert!(!pc.entries.is_empty(), "{name}: lines parsed");
            let got = container_of(&pc);
            match want {
                None => assert_eq!(got, None, "{name}"),
                Some((id, task, runtime, controller)) => {
                    let (hint, path) = got.unwrap_or_else(|| panic!("{name}: no container"));
                    assert_eq!(hint.container_id.as_str(), id, "{name}");
                    assert_eq!(hint.task_id.as_ref().map(TaskId::as_str), task, "{name}");
                    assert_eq!(hint.runtime, runtime, "{name}");
                    let want_path = if controller.is_empty() {
                        pc.v2_path()
                    } else {
                        pc.v1_path(controller)
                    };
                    assert_eq!(
                        Some(path.as_str()),
                        want_path,
                        "{name}: path from the {controller:?} line"
                    );
                }
            }
        }
    }

    #[test]
    fn container_of_prefers_v2_then_memory_and_falls_back() {
        let cases = [
            // Hybrid, runc joined both: the v2 line.
            (
                format!("4:memory:/docker/{ID}\n0::/docker/{ID2}\n"),
                Some(format!("/docker/{ID2}")),
            ),
            // Hybrid, old runc left the process at the v2 root: memory.
            (
                format!("5:pids:/docker/{ID2}\n4:memory:/docker/{ID}\n0::/\n"),
                Some(format!("/docker/{ID}")),
            ),
            // Only an odd controller names it.
            (
                format!("3:freezer:/docker/{ID}\n2:memory:/\n"),
                Some(format!("/docker/{ID}")),
            ),
            // Path with ':' in it survives.
            (
                format!("1:name=systemd:/a:b/docker/{ID}\n"),
                Some(format!("/a:b/docker/{ID}")),
            ),
            (
                "0::/user.slice/user-0.slice/session-1.scope\n".to_owned(),
                None,
            ),
            ("garbage\n\n".to_owned(), None),
        ];
        for (text, want) in cases {
            let got = container_of(&parse_proc_cgroup(&text)).map(|(_, p)| p);
            assert_eq!(got, want, "text {text:?}");
        }
    }

    #[test]
    fn parse_proc_cgroup_fields() {
        let pc = parse_proc_cgroup("7:cpu,cpuacct:/a\n1:name=systemd:/b\n0::/c\nbad line\n");
        assert_eq!(pc.entries.len(), 3);
        assert_eq!(pc.v1_path("cpuacct"), Some("/a"));
        assert_eq!(pc.v1_path("name=systemd"), Some("/b"));
        assert_eq!(pc.v1_path("memory"), None);
        assert_eq!(pc.v2_path(), Some("/c"));
    }

    /// Builds a fake cgroupfs root: `v2` at the root or under `unified`, and v1 directories.
    fn fake_root(v2: Option<&str>, v1: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        if let Some(sub) = v2 {
            let v2_dir = dir.path().join(sub);
            fs::create_dir_all(&v2_dir).unwrap();
            fs::write(v2_dir.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
            fs::write(v2_dir.join("cgroup.procs"), "").unwrap();
        }
        for name in v1 {
            fs::create_dir_all(dir.path().join(name)).unwrap();
            fs::write(dir.path().join(name).join("cgroup.procs"), "").unwrap();
        }
        dir
    }

    #[test]
    fn detect_layout_unified_hybrid_legacy() {
        // Unified: child cgroups of the v2 root must not be mistaken for v1 hierarchies.
        let unified = fake_root(Some(""), &[]);
        fs::create_dir(unified.path().join("system.slice")).unwrap();
        fs::write(unified.path().join("system.slice/cgroup.procs"), "").unwrap();
        fs::write(unified.path().join("system.slice/cgroup.controllers"), "").unwrap();
        let layout = detect_layout(unified.path()).unwrap();
        assert_eq!(layout.mode(), CgroupMode::Unified);
        assert_eq!(layout.v2_root.as_deref(), Some(unified.path()));
        assert!(layout.v1.is_empty());
        assert_eq!(layout.walk_root(), Some((unified.path(), true)));

        let hybrid = fake_root(Some("unified"), &["memory", "cpu,cpuacct", "systemd"]);
        std::os::unix::fs::symlink("cpu,cpuacct", hybrid.path().join("cpu")).unwrap();
        fs::create_dir(hybrid.path().join("not-a-hierarchy")).unwrap();
        let layout = detect_layout(hybrid.path()).unwrap();
        assert_eq!(layout.mode(), CgroupMode::Hybrid);
        assert_eq!(layout.v2_root, Some(hybrid.path().join("unified")));
        let names: Vec<_> = layout.v1.iter().map(|h| h.controllers.join(",")).collect();
        assert_eq!(names, ["cpu,cpuacct", "memory", "name=systemd"]);
        assert_eq!(
            layout.v1_hierarchy("cpuacct").unwrap().path,
            hybrid.path().join("cpu,cpuacct")
        );
        assert_eq!(
            layout.walk_root(),
            Some((hybrid.path().join("unified").as_path(), true))
        );

        let legacy = fake_root(None, &["pids", "memory", "systemd"]);
        let layout = detect_layout(legacy.path()).unwrap();
        assert_eq!(layout.mode(), CgroupMode::Legacy);
        assert_eq!(
            layout.walk_root(),
            Some((legacy.path().join("memory").as_path(), false))
        );
        let legacy_no_memory = fake_root(None, &["cpu", "systemd"]);
        let layout = detect_layout(legacy_no_memory.path()).unwrap();
        assert_eq!(
            layout.walk_root().unwrap().0,
            legacy_no_memory.path().join("systemd")
        );
    }

    #[test]
    fn detect_layout_errors() {
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            detect_layout(empty.path()),
            Err(CgroupError::DetectLayout { .. })
        ));
        assert!(matches!(
            detect_layout(&empty.path().join("missing")),
            Err(CgroupError::ReadRoot { .. })
        ));
    }

    #[test]
    fn cgroup_id_is_the_v2_directory_inode() {
        let root = fake_root(Some("unified"), &["memory"]);
        let dir = root.path().join("unified/docker").join(ID);
        fs::create_dir_all(&dir).unwrap();
        let layout = detect_layout(root.path()).unwrap();
        let want = fs::metadata(&dir).unwrap().ino();
        assert_eq!(
            cgroup_id(&layout, &format!("/docker/{ID}")).unwrap(),
            CgroupId(want)
        );
        assert_eq!(
            cgroup_id(&layout, &format!("/docker/{ID}/")).unwrap(),
            CgroupId(want)
        );
        assert!(matches!(
            cgroup_id(&layout, "/docker/gone"),
            Err(CgroupError::StatCgroupDir { .. })
        ));
        assert!(matches!(
            cgroup_id(&layout, "/../etc"),
            Err(CgroupError::InvalidCgroupPath { .. })
        ));
        assert!(matches!(
            cgroup_id(&layout, "docker"),
            Err(CgroupError::InvalidCgroupPath { .. })
        ));

        let dirs = layout.dirs_for("/docker/x").unwrap();
        assert_eq!(
            dirs,
            [
                root.path().join("unified/docker/x"),
                root.path().join("memory/docker/x")
            ]
        );

        let legacy = fake_root(None, &["memory"]);
        let layout = detect_layout(legacy.path()).unwrap();
        assert!(matches!(
            cgroup_id(&layout, "/"),
            Err(CgroupError::NoV2Hierarchy { .. })
        ));
    }

    /// This machine is a hybrid host, and a real container's /proc/<pid>/cgroup, parsed and
    /// looked up, gives its id, its task and the inode of its v2 directory.
    #[test]
    fn real_host_layout_and_container() {
        let layout = detect_layout(Path::new("/sys/fs/cgroup")).unwrap();
        assert_eq!(layout.mode(), CgroupMode::Hybrid);
        assert!(layout.v1_hierarchy("memory").is_some());
        assert!(layout.v1_hierarchy("name=systemd").is_some());

        let c = crate::test_support::TestContainer::run();
        let text = fs::read_to_string(format!("/proc/{}/cgroup", c.pid())).unwrap();
        let (hint, path) = container_of(&parse_proc_cgroup(&text)).unwrap();
        assert_eq!(hint.container_id.as_str(), c.id);
        assert_eq!(
            hint.task_id.as_ref().map(TaskId::as_str),
            Some(c.task.as_str())
        );
        assert_eq!(hint.runtime, Runtime::Docker);
        assert_eq!(path, format!("/ecs/{}/{}", c.task, c.id));

        let id = cgroup_id(&layout, &path).unwrap();
        let v2_dir = Path::new("/sys/fs/cgroup/unified").join(path.trim_start_matches('/'));
        assert_eq!(id, CgroupId(fs::metadata(&v2_dir).unwrap().ino()));
        assert!(
            layout.dirs_for(&path).unwrap().iter().all(|d| d.is_dir()),
            "every hierarchy has the container"
        );

        c.remove();
        assert!(matches!(
            cgroup_id(&layout, &path),
            Err(CgroupError::StatCgroupDir { .. })
        ));
    }
}
