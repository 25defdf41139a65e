//! Resolving an argument to containers, and gathering each one's chain, from every source at
//! hand: the live daemon's view (inside the daemon), the state database's history, procfs,
//! cgroupfs and Docker's files. Each fact is taken from the most current source that has it;
//! a source that is missing (no daemon, no database, Docker forgot the container) only leaves
//! the facts it alone knew empty, and a note says so.

use std::cell::OnceCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{
    AnsweredBy, CgroupView, ContainerRow, ContainerView, DestinationView, InspectError, Inspection,
    Kind, KindFilter, MetricsView, Overview, Recognised, SourceView, TaskMember, TaskRow, TaskView,
    classify,
};
use crate::batch::SourceKind;
use crate::config::Config;
use crate::control::{InventoryView, LiveContainer, SinkStats};
use crate::identify::cgroup::{self, CgroupLayout};
use crate::identify::{
    ContainerId, ContainerIdentity, DockerContainerInfo, EcsTask, Group, TaskArn, docker_config,
    labels,
};
use crate::state::{ContainerMatch, ContainerRecord, Lifecycle, SourceRecord, Store};
use crate::tail::StdStream;

/// Rotated siblings (`path.1` .. `path.N`) looked at when measuring how far behind a source
/// is; the tailer looks at as many.
const MAX_ROTATED_SIBLINGS: u32 = 64;

/// cgroup directories deep that a search by cgroup id descends (`/ecs/<task>/<id>` is 3,
/// systemd's `kubepods.slice/kubepods-burstable.slice/...-pod<uid>.slice/<id>.scope` is 4).
const MAX_CGROUP_DEPTH: usize = 8;

/// Everything `inspect` may read. Built per question: cheap handles only.
pub struct World {
    /// Host paths, sinks, data directory.
    pub config: Config,
    /// The host's cgroup hierarchies, when detected.
    pub layout: Option<CgroupLayout>,
    /// The state database (read-only), when there is one.
    pub store: Option<Store>,
    /// The daemon's live view and sink stats, when the daemon itself answers.
    pub live: Option<(InventoryView, Vec<Arc<SinkStats>>)>,
    /// Facts about the sources themselves (no database, ...), copied into every answer.
    pub notes: Vec<String>,
    /// Docker's files of every container, read once per question when needed.
    docker_scan: OnceCell<Vec<DockerContainerInfo>>,
}

impl World {
    /// The sources for a question answered without the daemon.
    pub fn offline(config: Config) -> Self {
        let mut notes = Vec::new();
        let state = config.state_path();
        let store = if state.exists() {
            match Store::open_read_only(&state) {
                Ok(s) => Some(s),
                Err(e) => {
                    notes.push(format!(
                        "The state database cannot be read ({}): no history.",
                        crate::internal_events::chain(&e)
                    ));
                    None
                }
            }
        } else {
            notes.push(format!(
                "No state database at {}: the collector has not run with this data directory; only the host's files were read.",
                state.display()
            ));
            None
        };
        let layout = cgroup::detect_layout(&config.host.cgroupfs_root).ok();
        Self {
            config,
            layout,
            store,
            live: None,
            notes,
            docker_scan: OnceCell::new(),
        }
    }

    /// The sources for a question the daemon answers.
    pub fn daemon(
        config: Config,
        layout: Option<CgroupLayout>,
        store: Option<Store>,
        view: InventoryView,
        sinks: Vec<Arc<SinkStats>>,
    ) -> Self {
        Self {
            config,
            layout,
            store,
            live: Some((view, sinks)),
            notes: Vec::new(),
            docker_scan: OnceCell::new(),
        }
    }

    fn answered_by(&self) -> AnsweredBy {
        if self.live.is_some() {
            AnsweredBy::Daemon
        } else {
            AnsweredBy::Offline
        }
    }

    fn view(&self) -> Option<&InventoryView> {
        self.live.as_ref().map(|(v, _)| v)
    }

    fn live_containers(&self) -> Vec<LiveContainer> {
        self.view()
            .map(InventoryView::containers)
            .unwrap_or_default()
    }

    fn history(&self, what: ContainerMatch<'_>) -> Result<Vec<ContainerRecord>, InspectError> {
        match &self.store {
            Some(s) => Ok(s.find_containers(what)?),
            None => Ok(Vec::new()),
        }
    }

    fn docker_dir(&self, id: &ContainerId) -> PathBuf {
        self.config
            .host
            .docker_root
            .join("containers")
            .join(id.as_str())
    }

    /// Every container Docker keeps files for (read on first use).
    fn docker_containers(&self) -> &[DockerContainerInfo] {
        self.docker_scan.get_or_init(|| {
            let root = &self.config.host.docker_root;
            crate::discover::docker_root::scan_docker_root(root)
                .unwrap_or_default()
                .iter()
                .filter_map(|id| docker_config::read_container_info(root, id).ok())
                .collect()
        })
    }

    /// Whether the container still exists for its runtime (or, without Docker's files, the
    /// daemon has not seen it removed).
    fn is_current(&self, id: &ContainerId) -> bool {
        self.docker_dir(id)
            .join(docker_config::CONFIG_V2_FILE)
            .exists()
            || self
                .view()
                .and_then(|v| v.container(id))
                .is_some_and(|c| c.lifecycle != Lifecycle::Removed && c.docker.is_none())
    }
}

/// Candidate containers of one kind, with when each was last seen (for "the most recent").
#[derive(Default)]
struct Candidates {
    /// id -> last seen (ms since epoch); `i64::MAX` for containers seen live now.
    ids: BTreeMap<ContainerId, i64>,
    /// Set for task kinds: every candidate is a member, none is ambiguous.
    task_id: Option<String>,
    /// Words for [`Recognised::description`].
    description: String,
    /// A fact explaining a miss, or adding to a hit.
    hint: Option<String>,
    /// The miss is the answer: no other kind is tried (a live PID outside any container is
    /// that PID, not a short container id that happens to be its digits).
    definitive: bool,
}

impl Candidates {
    fn add(&mut self, id: ContainerId, seen_ms: i64) {
        let e = self.ids.entry(id).or_insert(seen_ms);
        *e = (*e).max(seen_ms);
    }

    fn add_records(&mut self, records: Vec<ContainerRecord>) {
        for r in records {
            self.add(r.identity.container_id, r.last_seen_ms);
        }
    }
}

const NOW: i64 = i64::MAX;

/// Answers `collector inspect <arg>`.
///
/// # Errors
/// [`InspectError::Usage`] for an argument of no known kind, [`InspectError::Ambiguous`]
/// when it names several containers, [`InspectError::NotFound`], and state database errors.
pub fn inspect(
    world: &World,
    arg: &str,
    filter: Option<KindFilter>,
) -> Result<Inspection, InspectError> {
    let kinds = classify(arg, filter)?;
    let mut hint = None;
    let mut chosen: Option<(Kind, Candidates)> = None;
    let mut also: Vec<String> = Vec::new();
    let mut missed: Vec<String> = Vec::new();
    for kind in kinds.iter().copied() {
        let c = candidates(world, kind, arg)?;
        if c.ids.is_empty() && c.task_id.is_none() {
            if c.definitive && chosen.is_none() {
                return Err(InspectError::NotFound {
                    query: arg.to_owned(),
                    tried: vec![kind.noun().to_owned()],
                    hint: c.hint,
                });
            }
            if let Some(h) = c.hint {
                if chosen.is_some() {
                    also.push(format!("Not taken as a {}: {h}.", kind.noun()));
                } else {
                    missed.push(format!("Not taken as a {}: {h}.", kind.noun()));
                    hint = hint.or(Some(h));
                }
            }
            continue;
        }
        if chosen.is_none() {
            chosen = Some((kind, c));
        } else if chosen
            .as_ref()
            .is_some_and(|(_, first)| first.ids.keys().ne(c.ids.keys()))
        {
            also.push(format!(
                "{arg:?} is also {} of other containers; use --kind {} for those",
                c.description,
                kind.group().as_str()
            ));
        }
    }
    let Some((kind, found)) = chosen else {
        return Err(InspectError::NotFound {
            query: arg.to_owned(),
            tried: kinds.iter().map(|k| k.noun().to_owned()).collect(),
            hint,
        });
    };
    let mut notes = world.notes.clone();
    let ids: Vec<ContainerId> = if found.task_id.is_some() {
        found.ids.keys().cloned().collect()
    } else {
        vec![pick_one(world, arg, kind, &found, &mut notes)?]
    };
    notes.extend(
        found
            .hint
            .clone()
            .map(|h| format!("{}: {h}.", capitalise(kind.noun()))),
    );
    notes.extend(missed);
    notes.extend(also);
    let mut containers = Vec::new();
    for id in &ids {
        containers.push(container_view(world, id)?);
    }
    // A task's containers by name, as people list them.
    containers.sort_by(|a, b| {
        let name = |c: &ContainerView| {
            c.container_name
                .clone()
                .or(c.docker_name.clone())
                .unwrap_or_default()
        };
        name(a)
            .cmp(&name(b))
            .then_with(|| a.container_id.cmp(&b.container_id))
    });
    let task_id = found
        .task_id
        .clone()
        .or_else(|| containers.first().and_then(|c| c.task_id.clone()));
    let task = match task_id {
        Some(t) => Some(task_view(world, &t, &containers)?),
        None => None,
    };
    if world.live.is_none() {
        notes.push(offline_unknowns());
    }
    Ok(Inspection {
        query: arg.to_owned(),
        recognised: Recognised {
            kind,
            description: found.description,
        },
        answered_by: world.answered_by(),
        notes,
        task,
        containers,
    })
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// What an offline answer cannot tell.
fn offline_unknowns() -> String {
    "Without the daemon, these are unknown: whether a tailer reads each source now, lines read \
     but not yet committed, and the sinks' errors; offsets and counts are as of the last commit."
        .to_owned()
}

/// One container out of several candidates of a container-like kind.
///
/// A container that still exists wins over ones in the history (Docker reuses names after
/// `docker rm`, the kernel reuses PIDs and cgroup inodes); among remembered ones only, a
/// reusable handle means the most recent. Otherwise the argument is ambiguous.
fn pick_one(
    world: &World,
    arg: &str,
    kind: Kind,
    found: &Candidates,
    notes: &mut Vec<String>,
) -> Result<ContainerId, InspectError> {
    let all: Vec<&ContainerId> = found.ids.keys().collect();
    if let [only] = all.as_slice() {
        return Ok((*only).clone());
    }
    let current: Vec<&ContainerId> = all
        .iter()
        .copied()
        .filter(|id| world.is_current(id))
        .collect();
    let reusable = matches!(kind, Kind::Pid | Kind::CgroupId | Kind::ContainerName);
    let pick = match current.as_slice() {
        [one] => Some((*one).clone()),
        [] if reusable => found
            .ids
            .iter()
            .max_by_key(|(_, seen)| **seen)
            .map(|(id, _)| id.clone()),
        _ => None,
    };
    match pick {
        Some(id) => {
            let others: Vec<&str> = all
                .iter()
                .filter(|o| ***o != id)
                .map(|o| o.short())
                .collect();
            notes.push(format!(
                "{arg:?} also matched {} earlier container(s) no longer present: {}.",
                others.len(),
                others.join(", ")
            ));
            Ok(id)
        }
        None => Err(InspectError::Ambiguous {
            query: arg.to_owned(),
            kind,
            candidates: all.iter().map(|id| describe_candidate(world, id)).collect(),
        }),
    }
}

fn describe_candidate(world: &World, id: &ContainerId) -> String {
    let identity = world
        .view()
        .and_then(|v| v.container(id))
        .map(|c| (*c.identity).clone())
        .or_else(|| {
            world
                .store
                .as_ref()
                .and_then(|s| s.container(id.as_str()).ok().flatten())
                .map(|r| r.identity)
        });
    match identity {
        Some(i) => format!("{} {}", id.short(), i.display_name()),
        None => id.short().to_owned(),
    }
}

/// The containers `arg` names when taken as `kind`.
fn candidates(world: &World, kind: Kind, arg: &str) -> Result<Candidates, InspectError> {
    let mut c = Candidates::default();
    let live = world.live_containers();
    match kind {
        Kind::Pid => {
            let pid: i32 = arg.parse().map_err(|_| InspectError::Usage {
                message: format!("{arg:?} is not a PID"),
            })?;
            let proc_file = world
                .config
                .host
                .procfs_root
                .join(pid.to_string())
                .join("cgroup");
            match fs::read_to_string(&proc_file) {
                Ok(text) => match cgroup::container_of(&cgroup::parse_proc_cgroup(&text)) {
                    Some((hint, path)) => {
                        c.add(hint.container_id, NOW);
                        c.description = format!("a PID, running in cgroup {path}");
                    }
                    None => {
                        let path = cgroup::parse_proc_cgroup(&text)
                            .v2_path()
                            .unwrap_or("?")
                            .to_owned();
                        c.hint = Some(format!(
                            "PID {pid} runs outside any container (cgroup {path})"
                        ));
                        c.definitive = true;
                    }
                },
                Err(_) => {
                    for l in live.iter().filter(|l| l.pid == Some(pid)) {
                        c.add(l.identity.container_id.clone(), NOW);
                    }
                    c.add_records(world.history(ContainerMatch::Pid(pid))?);
                    c.description =
                        "a PID no longer running: the last PID seen in the container".to_owned();
                    c.hint.get_or_insert_with(|| format!("no process {pid} runs now; PIDs are reused, so this is the most recent container it ran in"));
                }
            }
        }
        Kind::CgroupId => {
            let id: u64 = arg.parse().map_err(|_| InspectError::Usage {
                message: format!("{arg:?} is not a cgroup id"),
            })?;
            for l in live
                .iter()
                .filter(|l| l.identity.cgroup_id.map(|c| c.0) == Some(id))
            {
                c.add(l.identity.container_id.clone(), NOW);
            }
            c.add_records(world.history(ContainerMatch::CgroupId(id))?);
            if c.ids.is_empty()
                && let Some(path) = world.layout.as_ref().and_then(|l| find_cgroup_by_id(l, id))
                && let Some(hint) = cgroup::parse_cgroup_path(&path)
            {
                c.add(hint.container_id, NOW);
            }
            c.description = "a cgroup id".to_owned();
        }
        Kind::CgroupPath => {
            let path = relative_cgroup_path(world, arg);
            if let Some(hint) = cgroup::parse_cgroup_path(&path) {
                c.add(hint.container_id, NOW);
            }
            for l in live
                .iter()
                .filter(|l| l.identity.cgroup_path.as_deref() == Some(path.as_str()))
            {
                c.add(l.identity.container_id.clone(), NOW);
            }
            c.add_records(world.history(ContainerMatch::CgroupPath(&path))?);
            c.description = if path == arg {
                "a cgroup path".to_owned()
            } else {
                format!("a cgroup path ({path} in its hierarchy)")
            };
        }
        Kind::ContainerId => {
            let id = ContainerId::parse(&arg.to_ascii_lowercase()).ok_or_else(|| {
                InspectError::Usage {
                    message: format!("{arg:?} is not a container id"),
                }
            })?;
            let known = live.iter().any(|l| l.identity.container_id == id)
                || !world.history(ContainerMatch::Id(id.as_str()))?.is_empty()
                || world.docker_dir(&id).exists();
            if known {
                c.add(id.clone(), NOW);
            }
            c.description = "a full container id".to_owned();
        }
        Kind::ShortContainerId => {
            let prefix = arg.to_ascii_lowercase();
            for l in live
                .iter()
                .filter(|l| l.identity.container_id.as_str().starts_with(&prefix))
            {
                c.add(l.identity.container_id.clone(), NOW);
            }
            c.add_records(world.history(ContainerMatch::IdPrefix(&prefix))?);
            if let Ok(ids) =
                crate::discover::docker_root::scan_docker_root(&world.config.host.docker_root)
            {
                for id in ids
                    .into_iter()
                    .filter(|id| id.as_str().starts_with(&prefix))
                {
                    c.add(id, NOW);
                }
            }
            c.description = "a short container id".to_owned();
        }
        Kind::ContainerName => {
            let name = arg.strip_prefix('/').unwrap_or(arg);
            let named = |i: &ContainerIdentity| {
                i.docker_name.as_deref() == Some(name)
                    || i.ecs.as_ref().and_then(|e| e.container_name.as_deref()) == Some(name)
            };
            for l in live.iter().filter(|l| named(&l.identity)) {
                c.add(l.identity.container_id.clone(), NOW);
            }
            c.add_records(world.history(ContainerMatch::Name(name))?);
            if c.ids.is_empty() {
                for d in world.docker_containers() {
                    let ecs_name =
                        labels::ecs_from_labels(&d.labels).and_then(|e| e.container_name);
                    if d.name == name || ecs_name.as_deref() == Some(name) {
                        c.add(d.id.clone(), NOW);
                    }
                }
            }
            c.description = "a container name".to_owned();
        }
        Kind::TaskArn => {
            let arn = TaskArn::parse(arg).ok_or_else(|| InspectError::Usage {
                message: format!("{arg:?} is not an ECS task ARN"),
            })?;
            task_candidates(world, &live, arn.task_id().as_str(), Some(&arn), &mut c)?;
            c.description = "a task ARN".to_owned();
        }
        Kind::TaskId => {
            task_candidates(world, &live, arg, None, &mut c)?;
            c.description = "a task id".to_owned();
        }
    }
    Ok(c)
}

/// The containers of a task: live, remembered, and Docker's files (labels or cgroup parent),
/// always: a member the daemon has not identified yet (just created, or found by no
/// scan so far) is still a member, so `tail` names it from its first line.
fn task_candidates(
    world: &World,
    live: &[LiveContainer],
    task_id: &str,
    arn: Option<&TaskArn>,
    c: &mut Candidates,
) -> Result<(), InspectError> {
    let norm = |s: &str| s.replace('-', "").to_ascii_lowercase();
    let want = norm(task_id);
    let of = |e: Option<&EcsTask>| e.and_then(|e| e.task_id.as_ref()).map(|t| norm(t.as_str()));
    let mut stored_id = None;
    for l in live
        .iter()
        .filter(|l| of(l.identity.ecs.as_ref()).as_deref() == Some(want.as_str()))
    {
        stored_id = of_id(l.identity.ecs.as_ref());
        c.add(l.identity.container_id.clone(), NOW);
    }
    let mut records = world.history(ContainerMatch::TaskId(task_id))?;
    if let Some(arn) = arn {
        records.extend(world.history(ContainerMatch::TaskArn(arn.as_str()))?);
    }
    for r in &records {
        stored_id = stored_id.or_else(|| of_id(r.identity.ecs.as_ref()));
    }
    c.add_records(records);
    for d in world.docker_containers() {
        let labelled = labels::ecs_from_labels(&d.labels)
            .and_then(|e| e.task_id)
            .map(|t| t.as_str().to_owned());
        let parent = d
            .cgroup_parent
            .as_deref()
            .and_then(|p| p.strip_prefix("/ecs/"))
            .map(str::to_owned);
        if let Some(t) = labelled.or(parent).filter(|t| norm(t) == want) {
            stored_id.get_or_insert(t);
            c.add(d.id.clone(), NOW);
        }
    }
    if !c.ids.is_empty() {
        c.task_id = Some(stored_id.unwrap_or_else(|| task_id.to_ascii_lowercase()));
    }
    Ok(())
}

fn of_id(e: Option<&EcsTask>) -> Option<String> {
    e.and_then(|e| e.task_id.as_ref())
        .map(|t| t.as_str().to_owned())
}

/// A cgroup path as given, made relative to its hierarchy root when it names a directory
/// under the cgroupfs root (`/sys/fs/cgroup/system.slice/docker-<id>.scope`).
fn relative_cgroup_path(world: &World, arg: &str) -> String {
    let given = Path::new(arg);
    if let Some(layout) = &world.layout {
        let roots = layout
            .v2_root
            .iter()
            .chain(layout.v1.iter().map(|h| &h.path))
            .chain(std::iter::once(&layout.root));
        for root in roots {
            if let Ok(rest) = given.strip_prefix(root) {
                return format!("/{}", rest.display());
            }
        }
    }
    arg.trim_end_matches('/').to_owned()
}

/// The cgroup v2 directory whose inode is `id`, as a path relative to the hierarchy root.
fn find_cgroup_by_id(layout: &CgroupLayout, id: u64) -> Option<String> {
    let root = layout.v2_root.as_ref()?;
    let mut stack = vec![(root.clone(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let Ok(meta) = e.metadata() else { continue };
            let path = e.path();
            if meta.ino() == id {
                return path
                    .strip_prefix(root)
                    .ok()
                    .map(|r| format!("/{}", r.display()));
            }
            if depth + 1 < MAX_CGROUP_DEPTH {
                stack.push((path, depth + 1));
            }
        }
    }
    None
}

/// A daemon started after the container's cgroup was removed never saw it (its scans come
/// too late); the history keeps what an earlier daemon saw (`record_container` coalesces).
/// Taken whole, path and inode together, only when the daemon has neither.
fn cgroup_from_history(identity: &mut ContainerIdentity, history: &ContainerIdentity) {
    if identity.cgroup_path.is_none() && identity.cgroup_id.is_none() {
        identity.cgroup_path.clone_from(&history.cgroup_path);
        identity.cgroup_id = history.cgroup_id;
    }
}

/// Gathers one container's chain.
fn container_view(world: &World, id: &ContainerId) -> Result<ContainerView, InspectError> {
    let live = world.view().and_then(|v| v.container(id));
    let record = match &world.store {
        Some(s) => s.container(id.as_str())?,
        None => None,
    };
    let docker = docker_config::read_container_info(&world.config.host.docker_root, id).ok();
    let mut known_from = Vec::new();
    if live.is_some() {
        known_from.push("daemon".to_owned());
    }
    if record.is_some() {
        known_from.push("history".to_owned());
    }
    if docker.is_some() {
        known_from.push("docker".to_owned());
    }

    let mut identity = live
        .as_ref()
        .map(|l| (*l.identity).clone())
        .or_else(|| record.as_ref().map(|r| r.identity.clone()))
        .unwrap_or_else(|| ContainerIdentity::new(id.clone()));
    if let Some(r) = &record {
        cgroup_from_history(&mut identity, &r.identity);
    }
    if let Some(d) = &docker {
        identity.docker_name.get_or_insert_with(|| d.name.clone());
        identity.image.get_or_insert_with(|| d.image.clone());
        if identity.labels.is_empty() {
            identity.labels = d.labels.clone();
        }
    }
    // Docker's state, as current as it gets: the files now, else the daemon's last read.
    let docker_state = docker
        .as_ref()
        .or_else(|| live.as_ref().and_then(|l| l.docker.as_ref()))
        .map(|d| &d.state);
    let lifecycle = live
        .as_ref()
        .map(|l| l.lifecycle)
        .or_else(|| record.as_ref().map(|r| r.lifecycle));
    let state = match (&docker, lifecycle) {
        (Some(d), _) if d.state.running => "running",
        (Some(d), _) if d.state.finished_at.is_some() => "exited",
        (Some(_), _) => "created",
        (None, Some(Lifecycle::Removed)) => "removed",
        // Docker keeps a directory per container until `docker rm`: none means removed.
        (None, _) if world.config.host.docker_root.join("containers").is_dir() => "removed",
        (None, Some(Lifecycle::Running)) => "running",
        (None, Some(Lifecycle::Exited)) => "exited",
        (None, None) => "unknown",
    };
    let running = state == "running";

    // The cgroup: remembered, else from a live process of the container.
    let docker_pid = docker_state.map(|s| s.pid).filter(|p| *p > 0 && running);
    if identity.cgroup_path.is_none()
        && let Some(pid) = docker_pid.or(live.as_ref().and_then(|l| l.pid))
        && let Ok(text) = fs::read_to_string(
            world
                .config
                .host
                .procfs_root
                .join(pid.to_string())
                .join("cgroup"),
        )
        && let Some((hint, path)) = cgroup::container_of(&cgroup::parse_proc_cgroup(&text))
        && hint.container_id == *id
    {
        identity.cgroup_path = Some(path);
        known_from.push("procfs".to_owned());
    }
    if identity.ecs.is_none()
        && let Some(ecs) = labels::ecs_from_labels(&identity.labels)
    {
        identity.ecs = Some(ecs);
    }
    if identity.ecs.as_ref().is_none_or(|e| e.task_id.is_none())
        && let Some(hint) = identity
            .cgroup_path
            .as_deref()
            .and_then(cgroup::parse_cgroup_path)
        && hint.task_id.is_some()
    {
        identity
            .ecs
            .get_or_insert_with(EcsTask::default)
            .merge_from(&EcsTask {
                task_id: hint.task_id,
                ..Default::default()
            });
    }
    if identity.group == Group::Standalone {
        let hint = identity
            .cgroup_path
            .as_deref()
            .and_then(cgroup::parse_cgroup_path);
        identity.group = labels::group_of(&identity.labels, hint.as_ref(), identity.ecs.as_ref());
    }
    if identity.cgroup_id.is_none()
        && running
        && let (Some(layout), Some(path)) = (&world.layout, &identity.cgroup_path)
    {
        identity.cgroup_id = cgroup::cgroup_id(layout, path).ok();
    }
    let mut pids = Vec::new();
    if running && let (Some(layout), Some(path)) = (&world.layout, &identity.cgroup_path) {
        pids = cgroup_procs(layout, path);
        if !pids.is_empty() {
            known_from.push("cgroupfs".to_owned());
        }
    }
    if pids.is_empty()
        && let Some(p) = docker_pid
    {
        pids.push(p);
    }
    // The init process leads the list: PIDs wrap at `pid_max`, so it need not be the lowest.
    let init_pid = docker_pid.or(live.as_ref().and_then(|l| l.pid));
    if let Some(init) = init_pid
        && let Some(at) = pids.iter().position(|p| *p == init)
    {
        pids[..=at].rotate_right(1);
    }
    known_from.dedup();

    let ecs = identity.ecs.clone();
    let exit_code = match docker_state {
        Some(s) if !s.running => s.exit_code,
        _ => None,
    }
    .or(if running {
        None
    } else {
        record.as_ref().and_then(|r| r.exit_code)
    });
    let oom_killed = match docker_state {
        Some(s) if !s.running && s.finished_at.is_some() => Some(s.oom_killed),
        _ => None,
    }
    .or(if running {
        None
    } else {
        record.as_ref().and_then(|r| r.oom_killed)
    });
    let sources = source_views(world, id, live.as_ref(), docker.as_ref())?;
    let destinations = destination_views(world, &identity, &sources);
    Ok(ContainerView {
        container_id: id.to_string(),
        short_id: id.short().to_owned(),
        docker_name: identity.docker_name.clone(),
        container_name: ecs.as_ref().and_then(|e| e.container_name.clone()),
        image: identity.image.clone(),
        state: state.to_owned(),
        started_at: docker_state
            .and_then(|s| s.started_at.clone())
            .or_else(|| record.as_ref().and_then(|r| r.started_at.clone())),
        finished_at: if running {
            None
        } else {
            docker_state
                .and_then(|s| s.finished_at.clone())
                .or_else(|| record.as_ref().and_then(|r| r.finished_at.clone()))
                .or_else(|| record.as_ref().and_then(|r| r.died_ms).map(ms_to_rfc3339))
        },
        exit_code,
        oom_killed,
        exit_signal: if running {
            None
        } else {
            record.as_ref().and_then(|r| r.exit_signal)
        },
        oom_victim_pid: record.as_ref().and_then(|r| r.oom_victim_pid),
        death_reported_by: if running {
            None
        } else {
            record
                .as_ref()
                .and_then(|r| r.death_source)
                .map(|d| d.as_str().to_owned())
        },
        discovered_via: record.as_ref().and_then(|r| r.discovered_via.clone()),
        first_seen: record.as_ref().map(|r| ms_to_rfc3339(r.first_seen_ms)),
        removed_seen: record
            .as_ref()
            .and_then(|r| r.removed_ms)
            .map(ms_to_rfc3339),
        pids,
        // Docker's `State.Pid` is the init process; the daemon's may be any process it saw.
        last_pid: docker_pid
            .or(live.as_ref().and_then(|l| l.pid))
            .or(record.as_ref().and_then(|r| r.last_pid.or(r.exit_pid))),
        cgroup: (identity.cgroup_path.is_some() || identity.cgroup_id.is_some()).then(|| {
            CgroupView {
                path: identity.cgroup_path.clone(),
                id: identity.cgroup_id.map(|c| c.0),
            }
        }),
        task_id: ecs
            .as_ref()
            .and_then(|e| e.task_id.as_ref())
            .map(|t| t.as_str().to_owned()),
        group: describe_group(&identity.group),
        known_from,
        sources,
        destinations,
        metrics: metrics_view(world, id, ecs.as_ref().and_then(|e| e.task_id.as_ref())),
    })
}

/// Latest values shown per container.
const METRICS_SHOWN: usize = 10;

/// What the container sent over Graphite or StatsD, from the state database.
fn metrics_view(
    world: &World,
    id: &ContainerId,
    task_id: Option<&crate::identify::TaskId>,
) -> MetricsView {
    let none = |note: &str| MetricsView {
        received: false,
        note: note.to_owned(),
        paths: 0,
        latest: Vec::new(),
        lost: None,
    };
    let Some(store) = &world.store else {
        return none("unknown: no state database");
    };
    let paths = match store.metric_paths(None, Some(id.as_str()), false) {
        Ok(p) => p,
        Err(e) => return none(&format!("unknown: {}", crate::internal_events::chain(&e))),
    };
    let owner = match task_id {
        Some(t) => t.as_str().to_owned(),
        None => format!("container:{id}"),
    };
    let lost =
        store.metric_owner(&owner).ok().flatten().and_then(|o| {
            (o.rejected + o.rate_limited + o.path_limited > 0).then(|| {
            format!(
                "{} lines rejected, {} samples over the rate bound, {} over the path bound ({})",
                o.rejected,
                o.rate_limited,
                o.path_limited,
                if task_id.is_some() { "whole task" } else { "this container" }
            )
        })
        });
    if paths.is_empty() {
        let mut v =
            none("none received (Graphite on metrics.tcp/udp/unix, StatsD on metrics.statsd)");
        v.lost = lost;
        return v;
    }
    let last = paths.iter().map(|p| p.received_ms).max().unwrap_or(0);
    let samples: i64 = paths.iter().map(|p| p.samples).sum();
    MetricsView {
        received: true,
        note: format!(
            "{} paths, {samples} samples, last at {}; GET /v1/metrics/tasks/{owner}",
            paths.len(),
            ms_to_rfc3339(last)
        ),
        paths: paths.len() as u64,
        latest: paths
            .iter()
            .take(METRICS_SHOWN)
            .map(|p| format!("{} = {} @ {}", p.path, p.value, p.timestamp))
            .collect(),
        lost,
    }
}

fn describe_group(g: &Group) -> String {
    match g {
        Group::EcsTask { task_id } => format!("ecs task {task_id}"),
        Group::Compose { project, service } => match service {
            Some(s) => format!("compose project {project}, service {s}"),
            None => format!("compose project {project}"),
        },
        Group::Pod {
            namespace: Some(ns),
            pod,
        } => format!("kubernetes pod {ns}/{pod}"),
        Group::Pod {
            namespace: None,
            pod,
        } => format!("kubernetes pod {pod}"),
        Group::Standalone => "standalone".to_owned(),
    }
}

/// What is known of a container's identity: the daemon's live view, else the history, else
/// Docker's files (name and ECS labels only).
fn known_identity(world: &World, id: &ContainerId) -> Option<ContainerIdentity> {
    world
        .view()
        .and_then(|v| v.container(id))
        .map(|c| (*c.identity).clone())
        .or_else(|| {
            world
                .store
                .as_ref()
                .and_then(|s| s.container(id.as_str()).ok().flatten())
                .map(|r| r.identity)
        })
        .or_else(|| {
            docker_config::read_container_info(&world.config.host.docker_root, id)
                .ok()
                .map(|d| {
                    let mut i = ContainerIdentity::new(id.clone());
                    i.ecs = labels::ecs_from_labels(&d.labels);
                    i.docker_name = Some(d.name);
                    i
                })
        })
}

/// The PIDs in a cgroup (v2 first, else the first v1 hierarchy that has the directory).
fn cgroup_procs(layout: &CgroupLayout, path: &str) -> Vec<i32> {
    let Ok(dirs) = layout.dirs_for(path) else {
        return Vec::new();
    };
    for dir in dirs {
        if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
            let mut pids: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
            pids.sort_unstable();
            pids.dedup();
            return pids;
        }
    }
    Vec::new()
}

/// How far behind a log file chain is: `(size of the live file, bytes not yet delivered, the
/// file the delivered offset is in when it is a rotated one)`.
///
/// `delivered` is `(dev, ino, offset)` of the last delivered position. Files older than that
/// one were read; it and newer ones count from the offset and from 0. With no position, or
/// one in a file that is gone, the whole chain is behind: the tailer reads it all then too.
pub fn bytes_behind(
    path: &Path,
    delivered: Option<(u64, u64, u64)>,
) -> (Option<u64>, Option<u64>, Option<PathBuf>) {
    let mut chain: Vec<(PathBuf, u64, u64, u64)> = Vec::new();
    let mut missing = 0;
    for i in 1..=MAX_ROTATED_SIBLINGS {
        let mut p = path.as_os_str().to_owned();
        p.push(format!(".{i}"));
        match fs::metadata(&p) {
            Ok(m) if m.is_file() => {
                chain.push((PathBuf::from(p), m.dev(), m.ino(), m.len()));
                missing = 0;
            }
            _ => {
                missing += 1;
                if missing >= 2 {
                    break;
                }
            }
        }
    }
    chain.reverse();
    let live = fs::metadata(path).ok().filter(|m| m.is_file());
    if let Some(m) = &live {
        chain.push((path.to_owned(), m.dev(), m.ino(), m.len()));
    }
    if chain.is_empty() {
        return (None, None, None);
    }
    let size = live.map(|m| m.len());
    let at = delivered.and_then(|(dev, ino, offset)| {
        chain
            .iter()
            .position(|(_, d, i, _)| *d == dev && *i == ino)
            .map(|idx| (idx, offset))
    });
    let (behind, offset_path) = match at {
        Some((idx, offset)) => {
            let rest: u64 = chain[idx + 1..].iter().map(|c| c.3).sum();
            let in_file = chain[idx].3.saturating_sub(offset);
            let rotated = (chain[idx].0 != path).then(|| chain[idx].0.clone());
            (in_file + rest, rotated)
        }
        None => (chain.iter().map(|c| c.3).sum(), None),
    };
    (size, Some(behind), offset_path)
}

fn source_views(
    world: &World,
    id: &ContainerId,
    live: Option<&LiveContainer>,
    docker: Option<&DockerContainerInfo>,
) -> Result<Vec<SourceView>, InspectError> {
    let stored: Vec<SourceRecord> = match &world.store {
        Some(s) => s.sources(id.as_str())?,
        None => Vec::new(),
    };
    let mut keys: BTreeSet<String> = stored.iter().map(|s| s.key.clone()).collect();
    if let Some(l) = live {
        keys.extend(l.sources.keys().cloned());
    }
    let output_key = format!("{id}/json");
    let json_log = world.docker_dir(id).join(format!("{id}-json.log"));
    if keys.is_empty()
        && docker.is_some_and(|d| d.log_driver.as_deref().is_none_or(|l| l == "json-file"))
        && json_log.exists()
    {
        // Docker writes it; the collector has not delivered from it yet.
        keys.insert(output_key.clone());
    }
    let mut out = Vec::new();
    for key in keys {
        let rec = stored.iter().find(|s| s.key == key);
        let ls = live.and_then(|l| l.sources.get(&key));
        let path = ls
            .map(|s| s.path.to_string_lossy().into_owned())
            .or_else(|| rec.map(|r| r.path.clone()))
            .unwrap_or_else(|| json_log.to_string_lossy().into_owned());
        let delivered_live = world.view().and_then(|v| v.delivered(&key));
        let (position, last_read) = match (&delivered_live, rec.and_then(|r| r.checkpoint.as_ref()))
        {
            (Some(d), _) => (
                Some((d.dev, d.ino, d.offset)),
                Some(system_to_rfc3339(d.at)),
            ),
            (None, Some(cp)) => (
                Some((cp.fingerprint.dev, cp.fingerprint.ino, cp.offset)),
                rec.map(|r| ms_to_rfc3339(r.updated_ms)),
            ),
            (None, None) => (None, None),
        };
        let (size, behind, offset_path) = bytes_behind(Path::new(&path), position);
        let rest = key.strip_prefix(id.as_str()).unwrap_or("");
        let (kind, container_path) = match rest.strip_prefix("/file:") {
            Some(p) => ("file", Some(p.to_owned())),
            None if rest == "/lifecycle" => ("lifecycle", None),
            None => ("container_output", None),
        };
        // The lifecycle record is no file: its "offset" is a time.
        let (position, size, behind, offset_path) = if kind == "lifecycle" {
            (None, None, None, None)
        } else {
            (position, size, behind, offset_path)
        };
        let counters = rec.map(|r| r.counters).unwrap_or_default();
        out.push(SourceView {
            key: key.clone(),
            kind: kind.to_owned(),
            container_path,
            path,
            size,
            offset: position.map(|p| p.2),
            offset_path: offset_path.map(|p| p.to_string_lossy().into_owned()),
            bytes_behind: behind,
            last_read,
            active: world.live.as_ref().map(|_| ls.is_some_and(|s| s.active)),
            lines_delivered: counters.lines,
            bytes_delivered: counters.bytes,
            lines_skipped: counters.skipped,
            rotations: counters.rotations,
            truncations: counters.truncations,
            bytes_lost: counters.lost_bytes,
            files_lost: counters.lost_files,
        });
    }
    Ok(out)
}

fn destination_views(
    world: &World,
    identity: &ContainerIdentity,
    sources: &[SourceView],
) -> Vec<DestinationView> {
    let stats: HashMap<&str, &Arc<SinkStats>> = world
        .live
        .as_ref()
        .map(|(_, s)| s.iter().map(|s| (s.name, s)).collect())
        .unwrap_or_default();
    let mut sinks: Vec<&'static str> = Vec::new();
    if world.config.sinks.file.enabled {
        sinks.push("file");
    }
    if world.config.sinks.discard.enabled {
        sinks.push("discard");
    }
    let mut out = Vec::new();
    for sink in sinks {
        let last = stats.get(sink).and_then(|s| s.last_error());
        for s in sources {
            let kind = match (&s.container_path, s.kind.as_str()) {
                (Some(p), _) => SourceKind::DeclaredFile {
                    container_path: PathBuf::from(p),
                },
                (None, "lifecycle") => SourceKind::Lifecycle,
                (None, _) => SourceKind::ContainerOutput,
            };
            let locations = match sink {
                "file" => {
                    let dir = world
                        .config
                        .file_sink_dir()
                        .join(crate::ship::layout::container_dir(identity));
                    let streams: &[Option<StdStream>] = match kind {
                        SourceKind::ContainerOutput => {
                            &[Some(StdStream::Stdout), Some(StdStream::Stderr)]
                        }
                        SourceKind::DeclaredFile { .. }
                        | SourceKind::Lifecycle
                        | SourceKind::Metrics => &[None],
                    };
                    streams
                        .iter()
                        .map(|st| {
                            dir.join(crate::ship::layout::file_in_container_dir(&kind, *st))
                                .to_string_lossy()
                                .into_owned()
                        })
                        .collect()
                }
                _ => vec!["(dropped)".to_owned()],
            };
            out.push(DestinationView {
                sink: sink.to_owned(),
                source: s.key.clone(),
                locations,
                lines_delivered: s.lines_delivered,
                last_error: last.as_ref().map(|e| e.message.clone()),
                last_error_at: last.as_ref().map(|e| system_to_rfc3339(e.at)),
            });
        }
    }
    out
}

/// The task `task_id`, merged from its containers' identities.
fn task_view(
    world: &World,
    task_id: &str,
    shown: &[ContainerView],
) -> Result<TaskView, InspectError> {
    let mut members = Candidates::default();
    task_candidates(world, &world.live_containers(), task_id, None, &mut members)?;
    let mut ecs = EcsTask::default();
    let mut list = Vec::new();
    for id in members.ids.keys() {
        let state = match shown.iter().find(|c| c.container_id == id.as_str()) {
            Some(c) => c.state.clone(),
            None => container_view(world, id)?.state,
        };
        let known = known_identity(world, id);
        let name = known
            .as_ref()
            .map(|i| i.display_name().to_owned())
            .unwrap_or_else(|| id.short().to_owned());
        if let Some(e) = known.as_ref().and_then(|i| i.ecs.as_ref()) {
            ecs.merge_from(e);
        }
        list.push(TaskMember {
            container_id: id.to_string(),
            name,
            state,
        });
    }
    list.sort_by(|a, b| a.name.cmp(&b.name));
    let task_id = members.task_id.unwrap_or_else(|| task_id.to_owned());
    Ok(TaskView {
        drain: world.view().and_then(|v| v.drain(&task_id)),
        task_id,
        task_arn: ecs.task_arn.as_ref().map(|a| a.as_str().to_owned()),
        cluster: ecs.cluster.clone().or_else(|| {
            ecs.task_arn
                .as_ref()
                .and_then(|a| a.cluster().map(str::to_owned))
        }),
        family: ecs.family,
        revision: ecs.revision,
        containers: list,
    })
}

/// Answers `collector inspect` without an argument: every task and container known here.
/// Removed containers are left out unless `all`.
///
/// # Errors
/// State database errors.
pub fn overview(world: &World, all: bool) -> Result<Overview, InspectError> {
    let mut ids: BTreeSet<ContainerId> = world
        .live_containers()
        .into_iter()
        .map(|c| c.identity.container_id.clone())
        .collect();
    if let Some(s) = &world.store {
        ids.extend(
            s.all_containers()?
                .into_iter()
                .map(|r| r.identity.container_id),
        );
    }
    if let Ok(found) =
        crate::discover::docker_root::scan_docker_root(&world.config.host.docker_root)
    {
        ids.extend(found);
    }
    let mut rows = Vec::new();
    let mut hidden_removed = 0;
    for id in &ids {
        let v = container_view(world, id)?;
        if v.state == "removed" && !all {
            hidden_removed += 1;
            continue;
        }
        // Log files only: the lifecycle record has no bytes to be behind on, and is not a line
        // the container wrote.
        let logs: Vec<&SourceView> = v.sources.iter().filter(|s| s.kind != "lifecycle").collect();
        let behind: Option<u64> = logs.iter().map(|s| s.bytes_behind).sum();
        rows.push(ContainerRow {
            name: v
                .container_name
                .clone()
                .or(v.docker_name.clone())
                .unwrap_or_else(|| v.short_id.clone()),
            container_id: v.container_id,
            docker_name: v.docker_name,
            task_id: v.task_id,
            state: v.state,
            image: v.image,
            lines_delivered: logs.iter().map(|s| s.lines_delivered).sum(),
            bytes_behind: behind,
            last_read: v.sources.iter().filter_map(|s| s.last_read.clone()).max(),
        });
    }
    let mut tasks: BTreeMap<String, Vec<&ContainerRow>> = BTreeMap::new();
    for r in &rows {
        if let Some(t) = &r.task_id {
            tasks.entry(t.clone()).or_default().push(r);
        }
    }
    let mut task_rows = Vec::new();
    for (task_id, members) in tasks {
        let mut ecs = EcsTask::default();
        for m in &members {
            let id = ContainerId::parse(&m.container_id);
            let identity = id.as_ref().and_then(|id| known_identity(world, id));
            if let Some(e) = identity.and_then(|i| i.ecs) {
                ecs.merge_from(&e);
            }
        }
        let state = if members.iter().any(|m| m.state == "running") {
            "running".to_owned()
        } else {
            members
                .iter()
                .max_by_key(|m| m.last_read.clone())
                .map(|m| m.state.clone())
                .unwrap_or_default()
        };
        task_rows.push(TaskRow {
            task_id,
            task_arn: ecs.task_arn.as_ref().map(|a| a.as_str().to_owned()),
            definition: ecs.family.as_ref().map(|f| match ecs.revision {
                Some(r) => format!("{f}:{r}"),
                None => f.clone(),
            }),
            state,
            containers: members.len(),
            bytes_behind: members.iter().map(|m| m.bytes_behind).sum(),
            last_read: members.iter().filter_map(|m| m.last_read.clone()).max(),
        });
    }
    let mut notes = world.notes.clone();
    if world.live.is_none() {
        notes.push(offline_unknowns());
    }
    Ok(Overview {
        answered_by: world.answered_by(),
        notes,
        tasks: task_rows,
        containers: rows,
        hidden_removed,
    })
}

/// Milliseconds since the epoch as RFC 3339 (milliseconds).
fn ms_to_rfc3339(ms: i64) -> String {
    system_to_rfc3339(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
}

fn system_to_rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_behind_follows_rotated_files() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("a.log");
        std::fs::write(dir.path().join("a.log.2"), vec![b'x'; 100]).unwrap();
        std::fs::write(dir.path().join("a.log.1"), vec![b'x'; 50]).unwrap();
        std::fs::write(&live, vec![b'x'; 30]).unwrap();
        let id = |p: &Path| {
            let m = std::fs::metadata(p).unwrap();
            (m.dev(), m.ino())
        };
        let (dev, ino1) = id(&dir.path().join("a.log.1"));
        let (_, ino0) = id(&live);
        let cases = [
            (None, (Some(30), Some(180), None)),
            (Some((dev, ino0, 30)), (Some(30), Some(0), None)),
            (Some((dev, ino0, 10)), (Some(30), Some(20), None)),
            (
                Some((dev, ino1, 40)),
                (Some(30), Some(40), Some(dir.path().join("a.log.1"))),
            ),
            (Some((dev, 999_999_999, 5)), (Some(30), Some(180), None)),
        ];
        for (delivered, want) in cases {
            assert_eq!(bytes_behind(&live, delivered), want, "{delivered:?}");
        }
        assert_eq!(
            bytes_behind(&dir.path().join("gone.log"), None),
            (None, None, None)
        );
    }

    /// A fake host: Docker's files for `current` (running with `pid`), `/proc/<pid>/cgroup`,
    /// `/proc/1/cgroup` outside any container, and a history holding `current` and `gone`.
    fn fake_host(dir: &Path, current: &str, gone: &str, pid: i32) -> World {
        let docker = dir.join("docker/containers").join(current);
        fs::create_dir_all(&docker).unwrap();
        let task = "0123456789abcdef0123456789abcdef";
        let config = serde_json::json!({
            "ID": current, "Name": "/web",
            "Config": {"Image": "img:1", "Labels": {
                "com.amazonaws.ecs.task-arn": format!("arn:aws:ecs:us-east-1:1:task/c/{task}"),
                "com.amazonaws.ecs.container-name": "app"}},
            "State": {"Running": true, "Pid": pid, "StartedAt": "2026-01-01T00:00:00Z"}
        });
        fs::write(docker.join("config.v2.json"), config.to_string()).unwrap();
        for (p, path) in [
            (pid.to_string(), format!("/ecs/{task}/{current}")),
            ("1".to_owned(), "/init.scope".to_owned()),
        ] {
            fs::create_dir_all(dir.join("proc").join(&p)).unwrap();
            fs::write(
                dir.join("proc").join(&p).join("cgroup"),
                format!("0::{path}\n"),
            )
            .unwrap();
        }
        let store = Store::in_memory().unwrap();
        for (id, name) in [(current, "web"), (gone, "web")] {
            let mut identity = ContainerIdentity::new(ContainerId::parse(id).unwrap());
            identity.docker_name = Some(name.to_owned());
            let lifecycle = if id == gone {
                Lifecycle::Removed
            } else {
                Lifecycle::Running
            };
            store
                .record_container(&identity, lifecycle, Some(2), Some(false))
                .unwrap();
        }
        store
            .record_run(
                gone,
                Some(777),
                Some("2025-01-01T00:00:00Z"),
                Some("2025-01-01T00:01:00Z"),
            )
            .unwrap();
        let mut config = Config {
            data_dir: dir.join("data"),
            ..Config::default()
        };
        config.host.docker_root = dir.join("docker");
        config.host.procfs_root = dir.join("proc");
        config.host.cgroupfs_root = dir.join("cgroup");
        let mut world = World::offline(config);
        world.store = Some(store);
        world
    }

    #[test]
    fn arguments_resolve_from_the_hosts_files_and_the_history() {
        let dir = tempfile::tempdir().unwrap();
        let current = format!("ab{}", "1".repeat(62));
        let gone = format!("ab{}", "2".repeat(62));
        let world = fake_host(dir.path(), &current, &gone, 4242);
        let found = |arg: &str| {
            inspect(&world, arg, None).map(|i| {
                (
                    i.recognised.kind,
                    i.containers[0].container_id.clone(),
                    i.notes,
                )
            })
        };
        // A live PID, the task by id, the current container by its Docker and task names.
        for (arg, kind) in [
            ("4242", Kind::Pid),
            ("0123456789abcdef0123456789abcdef", Kind::TaskId),
            ("app", Kind::ContainerName),
        ] {
            let (k, id, _) = found(arg).unwrap();
            assert_eq!((k, id.as_str()), (kind, current.as_str()), "{arg}");
        }
        // A reused name: the container that still exists wins, and the other is mentioned.
        let (_, id, notes) = found("web").unwrap();
        assert_eq!(id, current);
        assert!(notes.iter().any(|n| n.contains(&gone[..12])), "{notes:?}");
        // A dead PID: the history's last container with it, removed, with its exit.
        let i = inspect(&world, "777", None).unwrap();
        let c = &i.containers[0];
        assert_eq!(
            (c.container_id.as_str(), c.state.as_str(), c.exit_code),
            (gone.as_str(), "removed", Some(2))
        );
        assert_eq!(c.finished_at.as_deref(), Some("2025-01-01T00:01:00Z"));
        assert_eq!(i.answered_by, AnsweredBy::Offline);
        // One prefix, an existing and a removed container: the existing one. With a second
        // existing one: ambiguous. A live PID outside containers: not found, even though "1"
        // is also a prefix.
        assert_eq!(found("ab").unwrap().1, current);
        let third = format!("ab{}", "3".repeat(62));
        fs::create_dir_all(dir.path().join("docker/containers").join(&third)).unwrap();
        fs::write(
            dir.path()
                .join("docker/containers")
                .join(&third)
                .join("config.v2.json"),
            format!("{{\"ID\":\"{third}\"}}"),
        )
        .unwrap();
        assert!(
            matches!(inspect(&world, "ab", None), Err(InspectError::Ambiguous { candidates, .. }) if candidates.len() == 3)
        );
        assert!(
            matches!(inspect(&world, "1", None), Err(InspectError::NotFound { hint: Some(h), .. }) if h.contains("outside"))
        );
        assert!(matches!(
            inspect(&world, "nosuch", None),
            Err(InspectError::NotFound { .. })
        ));
        let o = overview(&world, false).unwrap();
        assert_eq!(
            (o.containers.len(), o.hidden_removed, o.tasks.len()),
            (2, 1, 1)
        );
    }

    /// A task whose members the history knows only in part (one was just created): the
    /// member only Docker's files know is listed too, so `tail` names it from the start.
    #[test]
    fn a_task_lists_members_only_dockers_files_know() {
        let dir = tempfile::tempdir().unwrap();
        let current = format!("ab{}", "1".repeat(62));
        let gone = format!("ab{}", "2".repeat(62));
        let world = fake_host(dir.path(), &current, &gone, 4242);
        let task = "0123456789abcdef0123456789abcdef";
        let mut identity = ContainerIdentity::new(ContainerId::parse(&gone).unwrap());
        identity.ecs = Some(EcsTask {
            task_id: crate::identify::TaskId::parse(task),
            container_name: Some("worker".to_owned()),
            ..EcsTask::default()
        });
        world
            .store
            .as_ref()
            .unwrap()
            .record_container(&identity, Lifecycle::Removed, Some(0), Some(false))
            .unwrap();
        let i = inspect(&world, task, None).unwrap();
        let mut ids: Vec<&str> = i
            .containers
            .iter()
            .map(|c| c.container_id.as_str())
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, [current.as_str(), gone.as_str()]);
    }

    #[test]
    fn a_cgroup_the_daemon_never_saw_comes_from_the_history() {
        let id = ContainerId::parse(&"c".repeat(64)).unwrap();
        let mut history = ContainerIdentity::new(id.clone());
        history.cgroup_path = Some(format!("/ecs/{}/{id}", "0".repeat(32)));
        history.cgroup_id = Some(crate::identify::CgroupId(107_888));
        let mut live = ContainerIdentity::new(id.clone());
        cgroup_from_history(&mut live, &history);
        assert_eq!(
            (live.cgroup_path.as_deref(), live.cgroup_id),
            (history.cgroup_path.as_deref(), history.cgroup_id)
        );
        // What the daemon saw is never mixed with an older run's inode.
        let mut live = ContainerIdentity::new(id);
        live.cgroup_path = Some("/system.slice/docker.scope".to_owned());
        cgroup_from_history(&mut live, &history);
        assert_eq!(
            (live.cgroup_path.as_deref(), live.cgroup_id),
            (Some("/system.slice/docker.scope"), None)
        );
    }

    #[test]
    fn cgroup_ids_are_found_by_inode() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cgroup.controllers"), "").unwrap();
        let deep = dir.path().join("ecs/abc/def");
        std::fs::create_dir_all(&deep).unwrap();
        let layout = cgroup::detect_layout(dir.path()).unwrap();
        let ino = std::fs::metadata(&deep).unwrap().ino();
        assert_eq!(
            find_cgroup_by_id(&layout, ino).as_deref(),
            Some("/ecs/abc/def")
        );
        assert_eq!(find_cgroup_by_id(&layout, 1), None);
    }
}
