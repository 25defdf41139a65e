//! Container history: identities and lifecycles, kept after Docker forgets a container so
//! late lines and later questions (`inspect`) still resolve.

use rusqlite::{OptionalExtension, params};

use super::{StateError, Store, now_ms};
use crate::identify::ContainerIdentity;

/// Where a container is in its life, as far as the collector knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifecycle {
    /// Its process runs (or it was created and not yet seen exiting).
    Running,
    /// Its process exited; its files may still be read.
    Exited,
    /// The runtime removed it.
    Removed,
}

impl Lifecycle {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Exited => "exited",
            Self::Removed => "removed",
        }
    }

    pub(super) fn parse(s: &str) -> Self {
        match s {
            "exited" => Self::Exited,
            "removed" => Self::Removed,
            _ => Self::Running,
        }
    }
}

/// A container as remembered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerRecord {
    /// Everything known about it.
    pub identity: ContainerIdentity,
    /// Its lifecycle.
    pub lifecycle: Lifecycle,
    /// Exit code of the last run, when known.
    pub exit_code: Option<i64>,
    /// Whether the OOM killer ended it.
    pub oom_killed: Option<bool>,
    /// First time the collector saw it (ms since epoch).
    pub first_seen_ms: i64,
    /// When it was seen exiting.
    pub exited_ms: Option<i64>,
    /// When it was seen removed.
    pub removed_ms: Option<i64>,
    /// The signal that ended its init process (9 = SIGKILL), when the kernel saw it (eBPF).
    pub exit_signal: Option<i32>,
    /// Host PID of the process the OOM killer chose in this container (eBPF).
    pub oom_victim_pid: Option<i32>,
    /// Host PID of the init process whose exit ended the last run (eBPF).
    pub exit_pid: Option<i32>,
    /// When the last run ended (ms since epoch): the kernel's time (eBPF) or Docker's
    /// `FinishedAt`.
    pub died_ms: Option<i64>,
    /// Who reported the death: the kernel or Docker.
    pub death_source: Option<DeathSource>,
    /// The discovery source that saw it first (`ebpf`, `cgroupfs`, `docker_root`, ...).
    pub discovered_via: Option<String>,
    /// Last time anything about it was recorded (ms since epoch).
    pub last_seen_ms: i64,
    /// The last PID seen in it, kept after it exits so an old PID (a kernel log line, an
    /// OOM report) still names its container.
    pub last_pid: Option<i32>,
    /// Docker's `State.StartedAt` of the last run (RFC 3339).
    pub started_at: Option<String>,
    /// Docker's `State.FinishedAt` of the last run (RFC 3339, as Docker wrote it).
    pub finished_at: Option<String>,
}

/// The columns [`ContainerRecord`] is read from, for a file of schema `version`: a read-only
/// handle may look at an older file, which lacks the newer columns (read as `NULL`).
pub(super) fn record_columns(version: i64) -> String {
    let v2 = "exit_signal, oom_victim_pid, exit_pid, died_ms, death_source, discovered_via";
    let v3 = "last_pid, started_at, finished_at";
    format!(
        "identity, lifecycle, exit_code, oom_killed, first_seen_ms, exited_ms, removed_ms, last_seen_ms, {}, {}",
        if version >= 2 {
            v2
        } else {
            "NULL, NULL, NULL, NULL, NULL, NULL"
        },
        if version >= 3 { v3 } else { "NULL, NULL, NULL" },
    )
}

/// Decodes a row selected with [`record_columns`].
pub(super) fn record_from_row(
    r: &rusqlite::Row<'_>,
) -> rusqlite::Result<Result<ContainerRecord, StateError>> {
    let json: String = r.get(0)?;
    let lifecycle: String = r.get(1)?;
    let death_source: Option<String> = r.get(12)?;
    let identity = match serde_json::from_str(&json) {
        Ok(identity) => identity,
        Err(source) => {
            return Ok(Err(StateError::Decode {
                what: "identity",
                source,
            }));
        }
    };
    Ok(Ok(ContainerRecord {
        identity,
        lifecycle: Lifecycle::parse(&lifecycle),
        exit_code: r.get(2)?,
        oom_killed: r.get(3)?,
        first_seen_ms: r.get(4)?,
        exited_ms: r.get(5)?,
        removed_ms: r.get(6)?,
        last_seen_ms: r.get(7)?,
        exit_signal: r.get(8)?,
        oom_victim_pid: r.get(9)?,
        exit_pid: r.get(10)?,
        died_ms: r.get(11)?,
        death_source: death_source.as_deref().and_then(DeathSource::parse),
        discovered_via: r.get(13)?,
        last_pid: r.get(14)?,
        started_at: r.get(15)?,
        finished_at: r.get(16)?,
    }))
}

/// Who reported a container's death.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeathSource {
    /// The kernel, through the eBPF programs: exact exit status, signal, OOM victim.
    Ebpf,
    /// Docker's state (`State.ExitCode`, `State.OOMKilled`, `State.FinishedAt`).
    Docker,
}

impl DeathSource {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ebpf => "ebpf",
            Self::Docker => "docker",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "ebpf" => Some(Self::Ebpf),
            "docker" => Some(Self::Docker),
            _ => None,
        }
    }
}

/// How a container's run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Death {
    /// Exit code as Docker reports it: the exit status, or 128 + the signal number.
    pub exit_code: Option<i64>,
    /// The signal that ended the init process.
    pub signal: Option<i32>,
    /// Whether the OOM killer killed a process of the container during the run.
    pub oom_killed: Option<bool>,
    /// Host PID of the OOM killer's victim.
    pub oom_victim_pid: Option<i32>,
    /// Host PID of the init process.
    pub pid: Option<i32>,
    /// When the run ended (ms since epoch).
    pub time_ms: i64,
    /// Who reported it.
    pub source: DeathSource,
}

impl Store {
    /// Records (or updates) a container's identity and lifecycle.
    ///
    /// # Errors
    /// The write failed.
    pub fn record_container(
        &self,
        identity: &ContainerIdentity,
        lifecycle: Lifecycle,
        exit_code: Option<i64>,
        oom_killed: Option<bool>,
    ) -> Result<(), StateError> {
        let q = |source| StateError::Query {
            operation: "record container",
            source,
        };
        let json = serde_json::to_string(identity).map_err(|source| StateError::Decode {
            what: "identity",
            source,
        })?;
        let ecs = identity.ecs.as_ref();
        let now = now_ms();
        let (exited, removed) = match lifecycle {
            Lifecycle::Running => (None, None),
            Lifecycle::Exited => (Some(now), None),
            Lifecycle::Removed => (Some(now), Some(now)),
        };
        self.lock()
            .execute(
                "INSERT INTO containers (container_id, docker_name, task_id, task_arn, cgroup_id, cgroup_path,
                    lifecycle, exit_code, oom_killed, identity, first_seen_ms, last_seen_ms, exited_ms, removed_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11, ?12, ?13)
                 ON CONFLICT (container_id) DO UPDATE SET
                    docker_name = excluded.docker_name, task_id = excluded.task_id, task_arn = excluded.task_arn,
                    cgroup_id = coalesce(excluded.cgroup_id, cgroup_id),
                    cgroup_path = coalesce(excluded.cgroup_path, cgroup_path),
                    lifecycle = excluded.lifecycle,
                    exit_code = coalesce(excluded.exit_code, exit_code),
                    oom_killed = coalesce(excluded.oom_killed, oom_killed),
                    identity = excluded.identity, last_seen_ms = excluded.last_seen_ms,
                    exited_ms = CASE WHEN excluded.lifecycle = 'running' THEN NULL ELSE coalesce(exited_ms, excluded.exited_ms) END,
                    removed_ms = coalesce(removed_ms, excluded.removed_ms)",
                params![
                    identity.container_id.as_str(),
                    identity.docker_name,
                    ecs.and_then(|e| e.task_id.as_ref()).map(|t| t.as_str().to_owned()),
                    ecs.and_then(|e| e.task_arn.as_ref()).map(|t| t.as_str().to_owned()),
                    identity.cgroup_id.map(|c| c.0 as i64),
                    identity.cgroup_path,
                    lifecycle.as_str(),
                    exit_code,
                    oom_killed,
                    json,
                    now,
                    exited,
                    removed,
                ],
            )
            .map_err(q)?;
        Ok(())
    }

    /// Records how a container's run ended (its row must exist: [`Store::record_container`]
    /// first). Fields the report does not know keep what is stored.
    ///
    /// # Errors
    /// The write failed.
    pub fn record_death(&self, container_id: &str, death: &Death) -> Result<(), StateError> {
        let q = |source| StateError::Query {
            operation: "record death",
            source,
        };
        self.lock()
            .execute(
                "UPDATE containers SET
                    exit_code = coalesce(?2, exit_code), exit_signal = ?3,
                    oom_killed = coalesce(?4, oom_killed), oom_victim_pid = coalesce(?5, oom_victim_pid),
                    exit_pid = coalesce(?6, exit_pid), died_ms = ?7, death_source = ?8
                 WHERE container_id = ?1",
                params![
                    container_id,
                    death.exit_code,
                    death.signal,
                    death.oom_killed,
                    death.oom_victim_pid,
                    death.pid,
                    death.time_ms,
                    death.source.as_str(),
                ],
            )
            .map_err(q)?;
        Ok(())
    }

    /// Records that the OOM killer chose `victim_pid` in a container (which may live on).
    ///
    /// # Errors
    /// The write failed.
    pub fn record_oom_kill(&self, container_id: &str, victim_pid: i32) -> Result<(), StateError> {
        let q = |source| StateError::Query {
            operation: "record OOM kill",
            source,
        };
        self.lock()
            .execute(
                "UPDATE containers SET oom_killed = 1, oom_victim_pid = ?2 WHERE container_id = ?1",
                params![container_id, victim_pid],
            )
            .map_err(q)?;
        Ok(())
    }

    /// Records the discovery source that saw a container first; later calls keep the first.
    ///
    /// # Errors
    /// The write failed.
    pub fn record_discovered_via(&self, container_id: &str, via: &str) -> Result<(), StateError> {
        let q = |source| StateError::Query {
            operation: "record discovery source",
            source,
        };
        self.lock()
            .execute(
                "UPDATE containers SET discovered_via = coalesce(discovered_via, ?2) WHERE container_id = ?1",
                params![container_id, via],
            )
            .map_err(q)?;
        Ok(())
    }

    /// A remembered container.
    ///
    /// # Errors
    /// The read failed or the stored identity does not decode.
    pub fn container(&self, container_id: &str) -> Result<Option<ContainerRecord>, StateError> {
        let q = |source| StateError::Query {
            operation: "read container",
            source,
        };
        let sql = format!(
            "SELECT {} FROM containers WHERE container_id = ?1",
            record_columns(self.version)
        );
        let row = self
            .lock()
            .query_row(&sql, [container_id], record_from_row)
            .optional()
            .map_err(q)?;
        row.transpose()
    }

    /// Records what Docker said about a container's last run: its PID (kept after exit) and
    /// start and finish times. Unknown values leave what is stored.
    ///
    /// # Errors
    /// The write failed.
    pub fn record_run(
        &self,
        container_id: &str,
        pid: Option<i32>,
        started_at: Option<&str>,
        finished_at: Option<&str>,
    ) -> Result<(), StateError> {
        let q = |source| StateError::Query {
            operation: "record container run",
            source,
        };
        self.lock()
            .execute(
                "UPDATE containers SET last_pid = coalesce(?2, last_pid),
                    started_at = coalesce(?3, started_at), finished_at = coalesce(?4, finished_at)
                 WHERE container_id = ?1",
                params![container_id, pid, started_at, finished_at],
            )
            .map_err(q)?;
        Ok(())
    }

    /// Forgets containers removed longer ago than `retention_ms`, with their sources and
    /// checkpoints.
    ///
    /// # Errors
    /// The write failed.
    pub fn expire_history(&self, retention_ms: i64) -> Result<usize, StateError> {
        let q = |source| StateError::Query {
            operation: "expire history",
            source,
        };
        let cutoff = now_ms() - retention_ms;
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(q)?;
        tx.execute(
            "DELETE FROM checkpoints WHERE source IN (SELECT s.source FROM sources s JOIN containers c
               ON s.container_id = c.container_id WHERE c.removed_ms IS NOT NULL AND c.removed_ms < ?1)",
            [cutoff],
        )
        .map_err(q)?;
        tx.execute(
            "DELETE FROM sources WHERE container_id IN (SELECT container_id FROM containers
               WHERE removed_ms IS NOT NULL AND removed_ms < ?1)",
            [cutoff],
        )
        .map_err(q)?;
        let n = tx
            .execute(
                "DELETE FROM containers WHERE removed_ms IS NOT NULL AND removed_ms < ?1",
                [cutoff],
            )
            .map_err(q)?;
        tx.commit().map_err(q)?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identify::{ContainerId, EcsTask, TaskId};

    #[test]
    fn history_survives_exit_and_removal() {
        let s = Store::in_memory().unwrap();
        let mut id = ContainerIdentity::new(ContainerId::parse(&"a".repeat(64)).unwrap());
        id.ecs = Some(EcsTask {
            task_id: TaskId::parse(&"b".repeat(32)),
            ..Default::default()
        });
        s.record_container(&id, Lifecycle::Running, None, None)
            .unwrap();
        s.record_container(&id, Lifecycle::Exited, Some(137), Some(true))
            .unwrap();
        s.record_run(
            &"a".repeat(64),
            Some(4242),
            Some("2026-01-01T00:00:00Z"),
            None,
        )
        .unwrap();
        s.record_run(&"a".repeat(64), None, None, Some("2026-01-01T00:00:09Z"))
            .unwrap();
        s.record_container(&id, Lifecycle::Removed, None, None)
            .unwrap();
        let r = s.container(&"a".repeat(64)).unwrap().unwrap();
        assert_eq!(r.last_pid, Some(4242));
        assert_eq!(r.started_at.as_deref(), Some("2026-01-01T00:00:00Z"));
        assert_eq!(r.finished_at.as_deref(), Some("2026-01-01T00:00:09Z"));
        assert_eq!(r.lifecycle, Lifecycle::Removed);
        assert_eq!(r.exit_code, Some(137));
        assert_eq!(r.oom_killed, Some(true));
        assert!(r.exited_ms.is_some() && r.removed_ms.is_some());
        assert_eq!(r.identity, id);
        assert_eq!(
            (r.exit_signal, r.died_ms, r.death_source),
            (None, None, None)
        );
        assert_eq!(s.expire_history(3_600_000).unwrap(), 0);
        assert_eq!(s.expire_history(-1).unwrap(), 1);
        assert!(s.container(&"a".repeat(64)).unwrap().is_none());
    }

    #[test]
    fn deaths_oom_kills_and_discovery_are_kept() {
        let s = Store::in_memory().unwrap();
        let id = ContainerIdentity::new(ContainerId::parse(&"c".repeat(64)).unwrap());
        let key = "c".repeat(64);
        s.record_container(&id, Lifecycle::Running, None, None)
            .unwrap();
        s.record_discovered_via(&key, "ebpf").unwrap();
        s.record_discovered_via(&key, "docker_root").unwrap();
        s.record_oom_kill(&key, 4321).unwrap();
        let death = Death {
            exit_code: Some(137),
            signal: Some(9),
            oom_killed: None,
            oom_victim_pid: None,
            pid: Some(4000),
            time_ms: 1_700_000_000_000,
            source: DeathSource::Ebpf,
        };
        s.record_death(&key, &death).unwrap();
        // Docker's later view of the same exit does not erase what the kernel said.
        s.record_container(&id, Lifecycle::Exited, Some(137), None)
            .unwrap();
        let r = s.container(&key).unwrap().unwrap();
        assert_eq!(
            (r.exit_code, r.exit_signal, r.oom_killed, r.oom_victim_pid),
            (Some(137), Some(9), Some(true), Some(4321))
        );
        assert_eq!(
            (r.exit_pid, r.died_ms, r.death_source),
            (Some(4000), Some(1_700_000_000_000), Some(DeathSource::Ebpf))
        );
        assert_eq!(r.discovered_via.as_deref(), Some("ebpf"));
    }
}
