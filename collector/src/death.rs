//! How containers die: the death of each run (from the kernel through eBPF, else from
//! Docker's state), and the final record that tells the sinks.
//!
//! The inventory keeps one [`DeathTracker`] per container. When a run has ended and the
//! container's output has been read to the end, it sends one [`lifecycle_batch`] through the
//! normal batch path: a record in the container's `lifecycle` source, which the local sink
//! writes to `lifecycle.log` next to `stdout.log`/`stderr.log`:
//!
//! ```text
//! 2026-05-01T12:00:00.123000000Z [collector] container exited: code=137 signal=SIGKILL oom_killed=true victim_pid=1234 pid=1234 via=ebpf
//! ```
//!
//! A record of its own rather than a line in `stderr.log`: the container's streams stay
//! exactly what the container wrote. Its checkpoint (source `<container id>/lifecycle`,
//! offset = the death's time in ms) is committed when every sink has it, like any other, so a
//! restarted collector does not log a death twice and a crash before delivery logs it again.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::batch::{Batch, SourceInfo, SourceKind};
use crate::discover::{DiscoverySource, ProcessExit};
use crate::identify::{ContainerId, ContainerIdentity, ContainerState};
use crate::state::{Checkpoint, CheckpointUpdate, Death, DeathSource, SourceCounters, Store};
use crate::tail::fingerprint::Fingerprint;
use crate::tail::{LogRecord, LogRecords};

/// What the inventory knows about one container's deaths.
#[derive(Clone, Debug)]
pub struct DeathTracker {
    /// The discovery source that saw the container first.
    pub discovered_via: DiscoverySource,
    /// Host PID the OOM killer chose during the current run (eBPF).
    oom_victim: Option<i32>,
    /// The current run's end as the kernel saw it (eBPF).
    kernel_death: Option<Death>,
    /// The current run's lifecycle record went to the sinks.
    logged: bool,
    /// Some run's record went to the sinks from this process (so the store need not be asked
    /// whether an earlier process delivered it).
    any_logged: bool,
}

impl DeathTracker {
    /// A container first seen by `via`.
    pub fn new(via: DiscoverySource) -> Self {
        Self {
            discovered_via: via,
            oom_victim: None,
            kernel_death: None,
            logged: false,
            any_logged: false,
        }
    }

    /// The container runs again (restart policy, `docker start`): the next death is new.
    pub fn new_run(&mut self) {
        self.oom_victim = None;
        self.kernel_death = None;
        self.logged = false;
    }

    /// Takes what the kernel reported; returns the death to record when it was the init.
    pub fn on_process_exit(&mut self, exit: &ProcessExit) -> Option<Death> {
        if exit.oom_killed {
            self.oom_victim = Some(exit.pid);
        }
        if !exit.init {
            return None;
        }
        let death = Death {
            exit_code: Some(match exit.signal {
                // What Docker and shells report for a process a signal ended.
                Some(sig) => 128 + i64::from(sig),
                None => i64::from(exit.exit_status),
            }),
            signal: exit.signal,
            // `oom:mark_victim` reports every OOM kill: none seen means none happened (unless
            // that one program could not be attached, which the collector logged at start;
            // Docker's flag is merged in then).
            oom_killed: Some(self.oom_victim.is_some()),
            oom_victim_pid: self.oom_victim,
            pid: Some(exit.pid),
            time_ms: exit.time_ms,
            source: DeathSource::Ebpf,
        };
        self.kernel_death = Some(death.clone());
        self.logged = false;
        Some(death)
    }

    /// The OOM victim of the current run, if the kernel reported one.
    pub fn oom_victim(&self) -> Option<i32> {
        self.oom_victim
    }

    /// Docker's OOM flag, unless the kernel saw an OOM kill in this run (Docker may not have
    /// written its flag yet, and a stale `false` must not erase the kernel's answer).
    pub fn merge_oom(&self, docker: Option<bool>) -> Option<bool> {
        if self.oom_victim.is_some() {
            Some(true)
        } else {
            docker
        }
    }

    /// The current run's death: the kernel's, with Docker's OOM flag merged in once Docker
    /// has it; else Docker's for a stopped container; `None` while neither knows.
    pub fn death(&self, docker: Option<&ContainerState>) -> Option<Death> {
        let docker_stopped = docker.filter(|s| !s.running);
        match &self.kernel_death {
            Some(d) => {
                let mut d = d.clone();
                if docker_stopped.is_some_and(|s| s.oom_killed) {
                    d.oom_killed = Some(true);
                }
                Some(d)
            }
            None => docker_stopped.and_then(death_from_docker),
        }
    }

    /// Whether the current run's lifecycle record went to the sinks.
    pub fn logged(&self) -> bool {
        self.logged
    }

    /// The current run's lifecycle record went to the sinks (or was found delivered).
    pub fn mark_logged(&mut self) {
        self.logged = true;
        self.any_logged = true;
    }

    /// Whether any run's record was handled by this process.
    pub fn any_logged(&self) -> bool {
        self.any_logged
    }
}

/// A stopped container's death as Docker records it; `None` for one that never ran.
pub fn death_from_docker(state: &ContainerState) -> Option<Death> {
    let time_ms = parse_docker_time_ms(state.finished_at.as_deref()?)?;
    Some(Death {
        exit_code: state.exit_code,
        signal: None,
        oom_killed: Some(state.oom_killed),
        oom_victim_pid: None,
        pid: None,
        time_ms,
        source: DeathSource::Docker,
    })
}

/// Docker's RFC 3339 UTC times (`2024-05-01T12:34:56.123456789Z`) in ms since the epoch.
pub fn parse_docker_time_ms(text: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339(text).ok()?;
    i64::try_from(t.duration_since(UNIX_EPOCH).ok()?.as_millis()).ok()
}

/// The source key of a container's lifecycle records.
pub fn lifecycle_source_key(container_id: &ContainerId) -> String {
    format!("{container_id}/lifecycle")
}

/// Whether the lifecycle record of the run that started at `run_started_ms` (Docker's
/// `StartedAt`; else the death's own time) was already delivered, by this process or an
/// earlier one: its checkpoint holds the time of the last death delivered.
pub fn delivered_before(store: &Store, container_id: &ContainerId, run_started_ms: i64) -> bool {
    store
        .checkpoints(&lifecycle_source_key(container_id))
        .ok()
        .and_then(|cps| cps.iter().map(|c| c.offset).max())
        .is_some_and(|logged| i64::try_from(logged).unwrap_or(i64::MAX) >= run_started_ms)
}

/// The text of a death record.
pub fn message(death: &Death) -> String {
    let mut m = String::from("[collector] container exited:");
    match death.exit_code {
        Some(c) => m.push_str(&format!(" code={c}")),
        None => m.push_str(" code=unknown"),
    }
    if death.source == DeathSource::Ebpf {
        match death.signal {
            Some(s) => m.push_str(&format!(" signal={}", signal_name(s))),
            None => m.push_str(" signal=none"),
        }
    }
    match death.oom_killed {
        Some(o) => m.push_str(&format!(" oom_killed={o}")),
        None => m.push_str(" oom_killed=unknown"),
    }
    if let Some(v) = death.oom_victim_pid {
        m.push_str(&format!(" victim_pid={v}"));
    }
    if let Some(p) = death.pid {
        m.push_str(&format!(" pid={p}"));
    }
    m.push_str(&format!(" via={}", death.source.as_str()));
    m
}

/// The batch that tells the sinks how a container's run ended: one record in the container's
/// lifecycle source, whose checkpoint (offset = the death's time in ms) marks it delivered.
pub fn lifecycle_batch(identity: Arc<ContainerIdentity>, death: &Death) -> Batch {
    let container_id = identity.container_id.clone();
    let key = lifecycle_source_key(&container_id);
    let text = message(death);
    let time =
        SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(death.time_ms).unwrap_or(0));
    let time = humantime::format_rfc3339_nanos(time).to_string();
    let mut records = LogRecords::new();
    records.push_copy(LogRecord {
        time: time.as_bytes(),
        stream: None,
        message: text.as_bytes(),
        split: false,
    });
    Batch {
        source: Arc::new(SourceInfo {
            key: key.clone(),
            container_id: container_id.clone(),
            kind: SourceKind::Lifecycle,
        }),
        identity,
        records,
        ack: CheckpointUpdate {
            source: key,
            container_id: container_id.to_string(),
            checkpoint: Checkpoint {
                // The offset is the death's time.
                fingerprint: Fingerprint::NOT_A_FILE,
                path: "(collector lifecycle)".to_owned(),
                offset: u64::try_from(death.time_ms).unwrap_or(0),
            },
            counters: SourceCounters {
                lines: 1,
                bytes: text.len() as u64,
                ..SourceCounters::default()
            },
        },
        last: true,
    }
}

/// `SIGKILL` for 9; the number for signals without a common name.
pub fn signal_name(signal: i32) -> Cow<'static, str> {
    let name = match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        31 => "SIGSYS",
        _ => return Cow::Owned(format!("SIG{signal}")),
    };
    Cow::Borrowed(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(pid: i32, init: bool, signal: Option<i32>, status: i32, oom: bool) -> ProcessExit {
        ProcessExit {
            container_id: ContainerId::parse(&"e".repeat(64)).unwrap(),
            pid,
            comm: "sh".into(),
            init,
            exit_status: status,
            signal,
            core_dumped: false,
            oom_killed: oom,
            time_ms: 1_700_000_000_123,
        }
    }

    #[test]
    fn kernel_reports_become_deaths_and_messages() {
        let mut t = DeathTracker::new(DiscoverySource::Ebpf);
        // A child the OOM killer chose, then the init that a signal ended.
        assert_eq!(
            t.on_process_exit(&exit(1300, false, Some(9), 0, true)),
            None
        );
        let d = t
            .on_process_exit(&exit(1200, true, Some(9), 0, false))
            .unwrap();
        assert_eq!(
            (d.exit_code, d.signal, d.oom_killed, d.oom_victim_pid, d.pid),
            (Some(137), Some(9), Some(true), Some(1300), Some(1200))
        );
        assert_eq!(
            message(&d),
            "[collector] container exited: code=137 signal=SIGKILL oom_killed=true victim_pid=1300 pid=1200 via=ebpf"
        );
        assert_eq!(t.merge_oom(Some(false)), Some(true));
        // The next run starts clean; an ordinary exit.
        t.new_run();
        let d = t
            .on_process_exit(&exit(1400, true, None, 3, false))
            .unwrap();
        let docker = ContainerState {
            running: false,
            oom_killed: false,
            exit_code: Some(3),
            ..Default::default()
        };
        let d2 = t.death(Some(&docker)).unwrap();
        assert_eq!(d2.oom_killed, Some(false));
        assert_eq!(
            message(&d2),
            "[collector] container exited: code=3 signal=none oom_killed=false pid=1400 via=ebpf"
        );
        assert_eq!(d.oom_killed, Some(false));
    }

    #[test]
    fn docker_state_is_the_fallback() {
        let t = DeathTracker::new(DiscoverySource::DockerRoot);
        let running = ContainerState {
            running: true,
            ..Default::default()
        };
        assert_eq!(t.death(Some(&running)), None);
        assert_eq!(t.death(None), None);
        let stopped = ContainerState {
            running: false,
            exit_code: Some(137),
            oom_killed: true,
            finished_at: Some("2024-05-01T12:34:56.123456789Z".into()),
            ..Default::default()
        };
        let d = t.death(Some(&stopped)).unwrap();
        assert_eq!(d.time_ms, 1_714_566_896_123);
        assert_eq!(
            message(&d),
            "[collector] container exited: code=137 oom_killed=true via=docker"
        );
        let never_ran = ContainerState {
            running: false,
            ..Default::default()
        };
        assert_eq!(t.death(Some(&never_ran)), None);
    }

    #[test]
    fn the_lifecycle_batch_carries_its_checkpoint() {
        let id = ContainerId::parse(&"f".repeat(64)).unwrap();
        let death = Death {
            exit_code: Some(0),
            signal: None,
            oom_killed: Some(false),
            oom_victim_pid: None,
            pid: None,
            time_ms: 1_714_566_896_123,
            source: DeathSource::Docker,
        };
        let b = lifecycle_batch(Arc::new(ContainerIdentity::new(id.clone())), &death);
        assert_eq!(b.source.kind, SourceKind::Lifecycle);
        assert_eq!(b.ack.source, format!("{id}/lifecycle"));
        assert_eq!(b.ack.checkpoint.offset, 1_714_566_896_123);
        let r = b.records.iter().next().unwrap();
        assert_eq!(r.time, b"2024-05-01T12:34:56.123000000Z");
        assert!(b.last);
        let store = Store::in_memory().unwrap();
        assert!(!delivered_before(&store, &id, 1));
        store.checkpoint(std::slice::from_ref(&b.ack)).unwrap();
        assert!(
            delivered_before(&store, &id, 1_714_566_000_000),
            "a run that started before the death"
        );
        assert!(
            !delivered_before(&store, &id, 1_714_566_900_000),
            "a later run"
        );
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(40), "SIG40");
    }
}
