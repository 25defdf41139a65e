//! Container discovery and death forensics from eBPF tracepoints (feature `ebpf`).
//!
//! The programs (`collector-ebpf/bpf/collector.bpf.c`, embedded by `build.rs`) report, through
//! one ring buffer read here on [`AsyncFd`]:
//! - `cgroup:cgroup_mkdir` of a container's cgroup v2 directory: a [`ContainerEvent::Seen`]
//!   with its cgroup path and id, before the container's first process runs, without waiting
//!   for inotify or Docker;
//! - `sched:sched_process_exec` of a container's init: `Seen` with its host PID;
//! - `sched:sched_process_exit` of a container's init, or of a process the OOM killer chose
//!   (`oom:mark_victim`): [`ContainerEvent::ProcessExited`] with exit status, signal, OOM kill
//!   and PID, then (init only) [`ContainerEvent::Exited`];
//! - `cgroup:cgroup_rmdir` of a container's cgroup: `Exited`.
//!
//! eBPF is optional at run time ([`EbpfMode`]): when the build, the kernel or the privileges do
//! not allow it, [`start`] logs one line that says why and the collector runs on its other
//! sources. Records the kernel dropped (ring buffer full) are counted per CPU by the programs,
//! logged here, and repaired by the periodic rescan (discovery) and Docker's state (exit codes).
//!
//! Requirements (see `docs/ebpf.md`): Linux 5.8+ (ring buffer, `bpf_ktime_get_boot_ns`),
//! kernel BTF at `/sys/kernel/btf/vmlinux` (CO-RE), a cgroup v2 hierarchy (unified or hybrid),
//! and CAP_BPF + CAP_PERFMON (or CAP_SYS_ADMIN) with root's access to tracefs.

use std::io;
use std::path::PathBuf;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::EbpfMode;
use crate::discover::ContainerEvent;
use crate::identify::cgroup::CgroupLayout;

/// Where the kernel publishes its own BTF; CO-RE relocations are resolved against it.
pub const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Where tracefs is mounted (or mounted by us when it is not; see [`EbpfSource`]).
pub const TRACEFS: &str = "/sys/kernel/tracing";

/// Errors of eBPF set-up. At run time nothing here is fatal unless `--ebpf on`.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    /// This build holds no eBPF object.
    #[error("eBPF support is compiled out of this build ({why})")]
    CompiledOut {
        /// Why: the feature is off, or clang was missing when it was built.
        why: &'static str,
    },
    /// The kernel publishes no BTF, so CO-RE relocations cannot be resolved.
    #[error("the kernel has no BTF at {path} (it needs CONFIG_DEBUG_INFO_BTF=y)")]
    NoBtf {
        /// The file looked for.
        path: PathBuf,
    },
    /// Loading the object (creating maps, relocating against the kernel's BTF) failed.
    #[cfg(feature = "ebpf")]
    #[error("cannot load the eBPF object")]
    LoadObject {
        /// The cause (boxed: aya's errors are large, and this one is rare).
        #[source]
        source: Box<aya::EbpfError>,
    },
    /// The object lacks a program or map this code names (a build mismatch: a bug).
    #[error("the eBPF object has no {kind} {name}; this is a bug")]
    Missing {
        /// `program` or `map`.
        kind: &'static str,
        /// Its name.
        name: &'static str,
    },
    /// The kernel refused a program (privileges, verifier).
    #[cfg(feature = "ebpf")]
    #[error("cannot load eBPF program {program}")]
    LoadProgram {
        /// The program.
        program: &'static str,
        /// The cause (the verifier's log is in it).
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// tracefs (which names tracepoint ids) is not mounted, and mounting it failed.
    #[error("tracefs is not mounted at {path}, and mounting it failed")]
    MountTracefs {
        /// Where it was to be mounted.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A program could not be attached to its tracepoint.
    #[cfg(feature = "ebpf")]
    #[error("cannot attach eBPF program {program} to tracepoint {category}:{name}")]
    AttachProgram {
        /// The program.
        program: &'static str,
        /// Tracepoint category.
        category: &'static str,
        /// Tracepoint name.
        name: &'static str,
        /// The cause.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// A map could not be opened.
    #[cfg(feature = "ebpf")]
    #[error("cannot open eBPF map {map}")]
    OpenMap {
        /// The map.
        map: &'static str,
        /// The cause.
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// The ring buffer could not be registered with the async runtime.
    #[error("cannot register the eBPF ring buffer with the async runtime")]
    RegisterRingBuf {
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The loading task panicked (a bug).
    #[error("the eBPF loading task failed; this is a bug")]
    LoadTask,
}

impl EbpfError {
    /// The cause in a few words, for the one log line of the fallback.
    pub fn reason(&self) -> &'static str {
        if let Self::CompiledOut { .. } = self {
            return "compiled out";
        }
        if let Self::NoBtf { .. } = self {
            return "no kernel BTF";
        }
        let os_error = io_error_in_chain(self).and_then(io::Error::raw_os_error);
        if matches!(os_error, Some(libc::EPERM | libc::EACCES)) {
            return "no CAP_BPF/CAP_PERFMON (or CAP_SYS_ADMIN)";
        }
        match self {
            Self::MountTracefs { .. } => "tracefs not mounted",
            #[cfg(feature = "ebpf")]
            Self::AttachProgram { .. } if os_error == Some(libc::ENOENT) => "tracepoint missing",
            #[cfg(feature = "ebpf")]
            Self::AttachProgram { .. } => "attach failed",
            #[cfg(feature = "ebpf")]
            Self::LoadProgram { .. } => "program rejected by the kernel",
            _ => "load failed",
        }
    }
}

/// The first [`io::Error`] among `e` and its causes.
fn io_error_in_chain<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a io::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            return Some(io);
        }
        cur = err.source();
    }
    None
}

/// What the eBPF reader needs from the configuration.
#[derive(Clone, Debug)]
pub struct EbpfSettings {
    /// `discovery.ebpf`.
    pub mode: EbpfMode,
    /// The host's procfs, to find the container of a process whose cgroup is not known yet.
    pub procfs_root: PathBuf,
    /// The cgroup hierarchies, to learn the containers that exist before the programs attach.
    pub layout: Option<CgroupLayout>,
}

/// Loads and attaches the programs as `settings.mode` asks.
///
/// `Off` gives `Ok(None)`. `Auto` gives `Ok(None)` too when eBPF is not possible here, after
/// one log line that says why. `On` makes that an error.
///
/// # Errors
/// Only with [`EbpfMode::On`]: why eBPF could not start.
pub async fn start(settings: EbpfSettings) -> Result<Option<EbpfSource>, EbpfError> {
    if settings.mode == EbpfMode::Off {
        info!(
            mode = "off",
            "eBPF disabled by configuration; discovery relies on inotify, procfs and Docker, and deaths on Docker's state."
        );
        return Ok(None);
    }
    let mode = settings.mode;
    match EbpfSource::load(settings).await {
        Ok(source) => Ok(Some(source)),
        Err(e) if mode == EbpfMode::Auto => {
            let mut error = crate::internal_events::chain(&e);
            debug!(error = %error, "eBPF set-up failed (full error).");
            // The verifier's log can be long: the first part says what failed.
            if error.len() > 400 {
                let mut cut = 400;
                while !error.is_char_boundary(cut) {
                    cut -= 1;
                }
                error.truncate(cut);
                error.push_str("...");
            }
            warn!(reason = e.reason(), error = %error, "eBPF unavailable; discovery relies on inotify, procfs and Docker, and deaths on Docker's state.");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

#[cfg(not(all(feature = "ebpf", collector_ebpf_object)))]
mod imp {
    //! This build has no eBPF object: [`EbpfSource::load`] always says so.

    use super::*;

    /// The eBPF source (absent from this build).
    #[derive(Debug)]
    pub struct EbpfSource {
        _never: std::convert::Infallible,
    }

    impl EbpfSource {
        pub(super) async fn load(_settings: EbpfSettings) -> Result<Self, EbpfError> {
            let why = if cfg!(feature = "ebpf") {
                "clang was missing or failed when it was built; install clang and rebuild"
            } else {
                "built without the `ebpf` feature"
            };
            Err(EbpfError::CompiledOut { why })
        }

        /// Never returns: there is no such source in this build.
        pub async fn run(self, _tx: mpsc::Sender<ContainerEvent>, _stop: CancellationToken) {
            match self._never {}
        }
    }
}

#[cfg(all(feature = "ebpf", collector_ebpf_object))]
mod imp {
    //! The loader and the ring buffer reader.

    use std::collections::HashMap;
    use std::path::Path;
    use std::time::Duration;

    use aya::maps::{MapData, PerCpuArray, RingBuf};
    use aya::programs::TracePoint;
    use collector_ebpf::abi::{self, Event, EventKind};
    use tokio::io::Interest;
    use tokio::io::unix::AsyncFd;

    use super::*;
    use crate::discover::{DiscoverySource, ProcessExit, Sighting, cgroupfs, send_all};
    use crate::identify::cgroup::{container_of, parse_container_dir, parse_proc_cgroup};
    use crate::identify::{CgroupId, ContainerId};
    use crate::internal_events;

    /// The object `build.rs` compiled. aya parses it in place, so it must be 8-byte aligned.
    static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("COLLECTOR_EBPF_OBJECT"));

    /// `oom:mark_victim` only adds the OOM attribution: the rest works without it.
    const OPTIONAL_PROGRAMS: [&str; 1] = ["mark_victim"];

    /// How often the per-CPU counters are read for drops.
    const COUNTERS_INTERVAL: Duration = Duration::from_secs(5);

    /// The loaded programs and the ring buffer they write to.
    pub struct EbpfSource {
        /// Keeps the programs attached (they detach when it drops).
        _ebpf: aya::Ebpf,
        ring: AsyncFd<RingBuf<MapData>>,
        counters: PerCpuArray<MapData, u64>,
        settings: EbpfSettings,
    }

    impl std::fmt::Debug for EbpfSource {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("EbpfSource")
        }
    }

    impl EbpfSource {
        pub(super) async fn load(settings: EbpfSettings) -> Result<Self, EbpfError> {
            // Parsing the kernel's BTF and verifying the programs take tens of milliseconds of
            // CPU: not on a runtime worker.
            let Loaded {
                ebpf,
                ring,
                counters,
            } = tokio::task::spawn_blocking(load_and_attach)
                .await
                .map_err(|_| EbpfError::LoadTask)??;
            // SAFETY: the ring buffer owns its map's file descriptor (through `MapData`) for
            // as long as it lives, and `as_raw_fd` always returns that descriptor; the
            // `AsyncFd` owns the ring buffer, so the descriptor outlives the registration.
            let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
                .map_err(|e| EbpfError::RegisterRingBuf {
                    source: e.into_parts().1,
                })?;
            Ok(Self {
                _ebpf: ebpf,
                ring,
                counters,
                settings,
            })
        }

        /// Reads the ring buffer until `stop`, sending what it reports to `tx`.
        pub async fn run(mut self, tx: mpsc::Sender<ContainerEvent>, stop: CancellationToken) {
            let mut reader = Reader::new(self.settings.procfs_root.clone());
            if let Some(layout) = self.settings.layout.clone() {
                // The containers that exist already: exec/exit records name only a cgroup id.
                match tokio::task::spawn_blocking(move || cgroupfs::scan_cgroupfs(&layout)).await {
                    Ok(Ok(found)) => reader.learn(&found),
                    Ok(Err(e)) => {
                        debug!(error = %internal_events::chain(&e), "eBPF reader: cgroupfs scan failed; cgroups are learned from /proc.")
                    }
                    Err(_) => {}
                }
            }
            let mut tick = tokio::time::interval(COUNTERS_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let (mut sent_seen, mut dropped_seen) = (0u64, 0u64);
            let mut out = Vec::new();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {
                        let (sent, dropped) = self.read_counters();
                        if dropped > dropped_seen {
                            internal_events::EbpfEventsDropped { count: dropped - dropped_seen, total: dropped }.emit();
                        }
                        internal_events::EbpfEventsReceived { count: sent.saturating_sub(sent_seen) }.emit();
                        (sent_seen, dropped_seen) = (sent, dropped);
                    }
                    guard = self.ring.readable_mut() => {
                        let mut guard = match guard {
                            Ok(g) => g,
                            Err(e) => {
                                warn!(error = %e, "eBPF ring buffer cannot be polled; eBPF discovery stops, the other sources go on.");
                                return;
                            }
                        };
                        let ring = guard.get_inner_mut();
                        while let Some(item) = ring.next() {
                            match Event::from_bytes(&item) {
                                Some(ev) => reader.handle(&ev, &mut out),
                                None => debug!(len = item.len(), "Short eBPF record skipped."),
                            }
                        }
                        guard.clear_ready();
                    }
                }
                if !out.is_empty() && !send_all(&mut out, &tx, &stop, "ebpf").await {
                    return;
                }
            }
        }

        /// Sums the per-CPU counters: (sent, dropped).
        fn read_counters(&self) -> (u64, u64) {
            let sum = |c: abi::Counter| {
                self.counters
                    .get(&(c as u32), 0)
                    .map(|v| v.iter().sum::<u64>())
                    .unwrap_or(0)
            };
            (sum(abi::Counter::Sent), sum(abi::Counter::Dropped))
        }
    }

    /// What [`load_and_attach`] gives.
    struct Loaded {
        ebpf: aya::Ebpf,
        ring: RingBuf<MapData>,
        counters: PerCpuArray<MapData, u64>,
    }

    /// Loads the object, then loads and attaches every program (blocking).
    fn load_and_attach() -> Result<Loaded, EbpfError> {
        if !Path::new(KERNEL_BTF).exists() {
            return Err(EbpfError::NoBtf {
                path: KERNEL_BTF.into(),
            });
        }
        let mut ebpf =
            aya::EbpfLoader::new()
                .load(OBJECT)
                .map_err(|source| EbpfError::LoadObject {
                    source: Box::new(source),
                })?;
        for (program, _, _) in collector_ebpf::PROGRAMS {
            let tp: &mut TracePoint = ebpf
                .program_mut(program)
                .ok_or(EbpfError::Missing {
                    kind: "program",
                    name: program,
                })?
                .try_into()
                .map_err(|source| EbpfError::LoadProgram {
                    program,
                    source: Box::new(source),
                })?;
            tp.load().map_err(|source| EbpfError::LoadProgram {
                program,
                source: Box::new(source),
            })?;
        }
        ensure_tracefs()?;
        for (program, category, name) in collector_ebpf::PROGRAMS {
            let tp: &mut TracePoint = ebpf
                .program_mut(program)
                .ok_or(EbpfError::Missing {
                    kind: "program",
                    name: program,
                })?
                .try_into()
                .map_err(|source| EbpfError::LoadProgram {
                    program,
                    source: Box::new(source),
                })?;
            if let Err(source) = tp.attach(category, name) {
                let err = EbpfError::AttachProgram {
                    program,
                    category,
                    name,
                    source: Box::new(source),
                };
                if OPTIONAL_PROGRAMS.contains(&program) {
                    warn!(reason = err.reason(), error = %internal_events::chain(&err), "eBPF: OOM kills will not be attributed to processes; Docker's OOM flag remains.");
                    continue;
                }
                return Err(err);
            }
        }
        let take = |ebpf: &mut aya::Ebpf, map: &'static str| {
            ebpf.take_map(map).ok_or(EbpfError::Missing {
                kind: "map",
                name: map,
            })
        };
        let ring =
            RingBuf::try_from(take(&mut ebpf, collector_ebpf::EVENTS_MAP)?).map_err(|source| {
                EbpfError::OpenMap {
                    map: collector_ebpf::EVENTS_MAP,
                    source: Box::new(source),
                }
            })?;
        let counters = PerCpuArray::try_from(take(&mut ebpf, collector_ebpf::COUNTERS_MAP)?)
            .map_err(|source| EbpfError::OpenMap {
                map: collector_ebpf::COUNTERS_MAP,
                source: Box::new(source),
            })?;
        info!(programs = ?collector_ebpf::PROGRAMS.map(|(_, c, n)| format!("{c}:{n}")), "eBPF programs attached.");
        Ok(Loaded {
            ebpf,
            ring,
            counters,
        })
    }

    /// Mounts tracefs at [`TRACEFS`] when no tracefs is found where aya looks
    /// (`/sys/kernel/tracing`, `/sys/kernel/debug/tracing`): tracepoints are attached by the
    /// ids it lists. Many hosts mount it at boot; a minimal host or a container may not.
    fn ensure_tracefs() -> Result<(), EbpfError> {
        let listed = |p: &str| Path::new(p).join("events").is_dir();
        if listed(TRACEFS) || listed("/sys/kernel/debug/tracing") {
            return Ok(());
        }
        let path = PathBuf::from(TRACEFS);
        let target = c"/sys/kernel/tracing";
        // SAFETY: every pointer is a NUL-terminated string that lives across the call; a null
        // `data` is allowed for tracefs.
        let rc = unsafe {
            libc::mount(
                c"nodev".as_ptr(),
                target.as_ptr(),
                c"tracefs".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(EbpfError::MountTracefs {
                path,
                source: io::Error::last_os_error(),
            });
        }
        info!(
            path = TRACEFS,
            "Mounted tracefs (needed to attach tracepoints)."
        );
        Ok(())
    }

    /// A container cgroup the reader knows.
    #[derive(Clone, Debug)]
    struct KnownCgroup {
        container_id: ContainerId,
        path: String,
    }

    /// Turns records into discovery events. Kept apart from the ring buffer so tests can
    /// feed it records.
    pub(super) struct Reader {
        procfs_root: PathBuf,
        /// Container cgroups by id: mkdir adds, rmdir removes, scans fill.
        cgroups: HashMap<u64, KnownCgroup>,
        /// CLOCK_REALTIME minus CLOCK_BOOTTIME, in ns: turns record times into wall clock.
        boot_to_real_ns: i128,
    }

    impl Reader {
        pub(super) fn new(procfs_root: PathBuf) -> Self {
            Self {
                procfs_root,
                cgroups: HashMap::new(),
                boot_to_real_ns: boot_to_real_ns(),
            }
        }

        fn learn(&mut self, sightings: &[Sighting]) {
            for s in sightings {
                if let (Some(id), Some(path)) = (s.cgroup_id, &s.cgroup_path) {
                    self.cgroups.insert(
                        id.0,
                        KnownCgroup {
                            container_id: s.container_id.clone(),
                            path: path.clone(),
                        },
                    );
                }
            }
        }

        fn time_ms(&self, time_ns: u64) -> i64 {
            ((i128::from(time_ns) + self.boot_to_real_ns) / 1_000_000) as i64
        }

        /// The container of a process in cgroup `cgroup_id`: known from a mkdir or scan, else
        /// read from `/proc/<pid>/cgroup`. Not remembered: on hosts whose runtime leaves
        /// processes at the v2 root (v1-only, old runc on hybrid), `cgroup_id` is the root's
        /// and the same for every container; the v1 lines of `/proc` tell them apart.
        /// The flag says whether `cgroup_id` is the container's own cgroup (known by id).
        fn container_of(&self, cgroup_id: u64, pid: u32) -> Option<(KnownCgroup, bool)> {
            if let Some(known) = self.cgroups.get(&cgroup_id) {
                return Some((known.clone(), true));
            }
            let text =
                std::fs::read_to_string(self.procfs_root.join(pid.to_string()).join("cgroup"))
                    .ok()?;
            let (hint, path) = container_of(&parse_proc_cgroup(&text))?;
            Some((
                KnownCgroup {
                    container_id: hint.container_id,
                    path,
                },
                false,
            ))
        }

        /// Appends the events `ev` means to `out`.
        pub(super) fn handle(&mut self, ev: &Event, out: &mut Vec<ContainerEvent>) {
            let Some(kind) = EventKind::from_raw(ev.kind) else {
                debug!(kind = ev.kind, "Unknown eBPF record kind skipped.");
                return;
            };
            match kind {
                EventKind::CgroupMkdir => {
                    let path = String::from_utf8_lossy(ev.path()).into_owned();
                    let Some(hint) = parse_container_dir(&path) else {
                        return;
                    };
                    self.cgroups.insert(
                        ev.cgroup_id,
                        KnownCgroup {
                            container_id: hint.container_id.clone(),
                            path: path.clone(),
                        },
                    );
                    out.push(ContainerEvent::Seen(Sighting {
                        container_id: hint.container_id,
                        cgroup_path: Some(path),
                        cgroup_id: Some(CgroupId(ev.cgroup_id)),
                        pid: None,
                        source: DiscoverySource::Ebpf,
                    }));
                }
                EventKind::CgroupRmdir => {
                    let path = String::from_utf8_lossy(ev.path());
                    let container_id = match self.cgroups.remove(&ev.cgroup_id) {
                        Some(known) => known.container_id,
                        None => match parse_container_dir(&path) {
                            Some(hint) => hint.container_id,
                            None => return,
                        },
                    };
                    out.push(ContainerEvent::Exited {
                        container_id,
                        source: DiscoverySource::Ebpf,
                    });
                }
                EventKind::Exec => {
                    let Some((known, own_cgroup)) = self.container_of(ev.cgroup_id, ev.pid) else {
                        return;
                    };
                    out.push(ContainerEvent::Seen(Sighting {
                        container_id: known.container_id,
                        cgroup_path: Some(known.path),
                        cgroup_id: own_cgroup.then_some(CgroupId(ev.cgroup_id)),
                        pid: i32::try_from(ev.pid).ok(),
                        source: DiscoverySource::Ebpf,
                    }));
                }
                EventKind::Exit => {
                    let Some((known, _)) = self.container_of(ev.cgroup_id, ev.pid) else {
                        return;
                    };
                    let init = ev.flags & abi::FLAG_PID_NS_INIT != 0;
                    out.push(ContainerEvent::ProcessExited(ProcessExit {
                        container_id: known.container_id.clone(),
                        pid: i32::try_from(ev.pid).unwrap_or(i32::MAX),
                        comm: String::from_utf8_lossy(ev.comm()).into_owned(),
                        init,
                        exit_status: ev.exit_code,
                        signal: (ev.signal != 0).then_some(ev.signal as i32),
                        core_dumped: ev.flags & abi::FLAG_CORE_DUMPED != 0,
                        oom_killed: ev.flags & abi::FLAG_OOM_VICTIM != 0,
                        time_ms: self.time_ms(ev.time_ns),
                    }));
                    if init {
                        out.push(ContainerEvent::Exited {
                            container_id: known.container_id,
                            source: DiscoverySource::Ebpf,
                        });
                    }
                }
            }
        }
    }

    /// CLOCK_REALTIME - CLOCK_BOOTTIME now, in ns.
    fn boot_to_real_ns() -> i128 {
        let read = |clock| {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: `ts` is a valid, writable timespec; both clocks exist on every Linux
            // this code runs on (BOOTTIME since 2.6.39).
            unsafe { libc::clock_gettime(clock, &mut ts) };
            i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
        };
        read(libc::CLOCK_REALTIME) - read(libc::CLOCK_BOOTTIME)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

        fn event(kind: EventKind, cgroup_id: u64, path: &str) -> Event {
            let mut ev = Event::from_bytes(&[0u8; abi::EVENT_SIZE]).unwrap();
            ev.kind = kind as u32;
            ev.cgroup_id = cgroup_id;
            ev.path[..path.len()].copy_from_slice(path.as_bytes());
            ev
        }

        #[test]
        fn records_become_discovery_events() {
            let mut r = Reader::new(PathBuf::from("/nonexistent"));
            let mut out = Vec::new();
            let id = ContainerId::parse(ID).unwrap();
            let path = format!("/docker/{ID}");
            // Not a container's own cgroup: nothing.
            r.handle(
                &event(EventKind::CgroupMkdir, 7, "/system.slice/cron.service"),
                &mut out,
            );
            r.handle(
                &event(EventKind::CgroupMkdir, 8, &format!("{path}/init.scope")),
                &mut out,
            );
            assert!(out.is_empty(), "{out:?}");
            r.handle(&event(EventKind::CgroupMkdir, 42, &path), &mut out);
            let mut exec = event(EventKind::Exec, 42, "/bin/sh");
            exec.pid = 1234;
            r.handle(&exec, &mut out);
            let mut exit = event(EventKind::Exit, 42, "");
            (exit.pid, exit.signal, exit.flags) =
                (1234, 9, abi::FLAG_PID_NS_INIT | abi::FLAG_OOM_VICTIM);
            exit.comm[..2].copy_from_slice(b"dd");
            r.handle(&exit, &mut out);
            r.handle(&event(EventKind::CgroupRmdir, 42, &path), &mut out);
            // An exit in a cgroup nobody knows, whose process is gone: nothing.
            r.handle(&event(EventKind::Exit, 99, ""), &mut out);
            let seen = |pid| {
                ContainerEvent::Seen(Sighting {
                    container_id: id.clone(),
                    cgroup_path: Some(path.clone()),
                    cgroup_id: Some(CgroupId(42)),
                    pid,
                    source: DiscoverySource::Ebpf,
                })
            };
            let exited = ContainerEvent::Exited {
                container_id: id.clone(),
                source: DiscoverySource::Ebpf,
            };
            let ContainerEvent::ProcessExited(p) = &out[2] else {
                panic!("{out:?}")
            };
            assert_eq!(
                (p.pid, p.signal, p.init, p.oom_killed, p.comm.as_str()),
                (1234, Some(9), true, true, "dd")
            );
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64;
            // Record time 0 is the boot: the past, not the epoch.
            assert!(
                p.time_ms > 1_600_000_000_000 && p.time_ms <= now_ms,
                "{}",
                p.time_ms
            );
            assert_eq!(
                out,
                vec![
                    seen(None),
                    seen(Some(1234)),
                    out[2].clone(),
                    exited.clone(),
                    exited
                ]
            );
        }

        /// Privileged: loads and attaches the real programs, then checks that the cgroup id a
        /// mkdir reports is the directory's inode and that an exit in it is reported with its
        /// status. Runs as root in `cargo xtask test`; without root it fails saying so.
        #[tokio::test]
        async fn programs_load_attach_and_report() {
            assert!(
                nix::unistd::geteuid().is_root(),
                "this test loads eBPF programs: run it as root (cargo xtask test)"
            );
            let layout =
                crate::identify::cgroup::detect_layout(Path::new("/sys/fs/cgroup")).unwrap();
            let v2 = layout.v2_root.clone().expect("a cgroup v2 hierarchy");
            let settings = EbpfSettings {
                mode: EbpfMode::On,
                procfs_root: "/proc".into(),
                layout: None,
            };
            let mut source = match start(settings).await {
                Ok(Some(s)) => s,
                Ok(None) => unreachable!("mode on"),
                Err(e) => panic!("eBPF did not start: {}", internal_events::chain(&e)),
            };
            // A container-shaped cgroup of our own (no runtime involved).
            let uuid = std::fs::read_to_string("/proc/sys/kernel/random/uuid")
                .unwrap()
                .trim()
                .replace('-', "");
            // An ECS-style task cgroup of its own: nothing shared with Docker's cgroups is
            // created or removed (`/ecs` itself may stay, as after any ECS test).
            let rel = format!("/ecs/{uuid}/{}", uuid.repeat(2));
            let dir = v2.join(&rel[1..]);
            std::fs::create_dir_all(&dir).unwrap();
            let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&dir).unwrap());
            std::fs::remove_dir(&dir).unwrap();
            std::fs::remove_dir(dir.parent().unwrap()).unwrap();
            let mut reader = Reader::new("/proc".into());
            let mut out = Vec::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while out.len() < 2 {
                let mut guard = tokio::time::timeout_at(deadline, source.ring.readable_mut())
                    .await
                    .expect("mkdir and rmdir reported within 10 s")
                    .unwrap();
                while let Some(item) = guard.get_inner_mut().next() {
                    let ev = Event::from_bytes(&item).unwrap();
                    let mut mine = Vec::new();
                    reader.handle(&ev, &mut mine);
                    out.extend(mine.into_iter().filter(|e| match e {
                        ContainerEvent::Seen(s) => s.cgroup_path.as_deref() == Some(rel.as_str()),
                        ContainerEvent::Exited { container_id, .. } => {
                            rel.ends_with(container_id.as_str())
                        }
                        _ => false,
                    }));
                }
                guard.clear_ready();
            }
            let ContainerEvent::Seen(s) = &out[0] else {
                panic!("{out:?}")
            };
            assert_eq!(
                s.cgroup_id,
                Some(CgroupId(inode)),
                "cgroup_mkdir's id is the v2 directory inode"
            );
            assert!(matches!(out[1], ContainerEvent::Exited { .. }), "{out:?}");
            let (sent, dropped) = source.read_counters();
            assert!(sent >= 2 && dropped == 0, "sent {sent} dropped {dropped}");
        }
    }
}

pub use imp::EbpfSource;
