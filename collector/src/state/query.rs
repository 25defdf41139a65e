//! Read queries for `collector inspect` and the control API: find remembered containers by
//! whatever a person has at hand (an id prefix, a name, a PID from a kernel log, a cgroup, a
//! task), and read each log source's progress.
//!
//! All of them work on a read-only handle ([`Store::open_read_only`]), also on an older file,
//! which lacks the newer columns (PID lookups then find less, or nothing on version 1).

use rusqlite::params_from_iter;

use super::history::{record_columns, record_from_row};
use super::{Checkpoint, ContainerRecord, SourceCounters, StateError, Store};

/// What to look remembered containers up by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerMatch<'a> {
    /// The full container id.
    Id(&'a str),
    /// The start of the container id (`docker ps` shows 12 characters).
    IdPrefix(&'a str),
    /// The Docker name (without `/`) or the container name of the task definition.
    Name(&'a str),
    /// The cgroup id (inode of the cgroup v2 directory).
    CgroupId(u64),
    /// The cgroup path relative to the hierarchy root.
    CgroupPath(&'a str),
    /// The ECS task id; a UUID matches with or without its dashes.
    TaskId(&'a str),
    /// The full ECS task ARN.
    TaskArn(&'a str),
    /// A PID of the container: the last one seen in it, its init's at exit, or the OOM
    /// killer's victim (the PID a kernel OOM report names).
    Pid(i32),
}

/// A log source as the state database remembers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceRecord {
    /// The source key: `<container id>/json` or `<container id>/file:<path in container>`.
    pub key: String,
    /// Host path of the live file when last read.
    pub path: String,
    /// Delivered lines and bytes, rotations, truncations, bytes lost.
    pub counters: SourceCounters,
    /// When its counters last moved (ms since epoch): the last delivery committed.
    pub updated_ms: i64,
    /// The newest checkpoint: which file and how far every sink acknowledged it.
    pub checkpoint: Option<Checkpoint>,
}

impl Store {
    /// Remembered containers matching `what`, most recently seen first.
    ///
    /// # Errors
    /// The read failed or a stored identity does not decode.
    pub fn find_containers(
        &self,
        what: ContainerMatch<'_>,
    ) -> Result<Vec<ContainerRecord>, StateError> {
        let (condition, arg): (&str, String) = match what {
            ContainerMatch::Id(id) => ("container_id = ?1", id.to_owned()),
            ContainerMatch::IdPrefix(prefix) => (
                "substr(container_id, 1, length(?1)) = ?1",
                prefix.to_owned(),
            ),
            ContainerMatch::Name(name) => (
                "docker_name = ?1 OR json_extract(identity, '$.ecs.container_name') = ?1",
                name.to_owned(),
            ),
            ContainerMatch::CgroupId(id) => ("cgroup_id = ?1", id.to_string()),
            ContainerMatch::CgroupPath(path) => ("cgroup_path = ?1", path.to_owned()),
            ContainerMatch::TaskId(id) => (
                "replace(task_id, '-', '') = ?1",
                id.replace('-', "").to_ascii_lowercase(),
            ),
            ContainerMatch::TaskArn(arn) => ("task_arn = ?1", arn.to_owned()),
            ContainerMatch::Pid(_) if self.version < 2 => return Ok(Vec::new()),
            ContainerMatch::Pid(pid) if self.version < 3 => {
                ("exit_pid = ?1 OR oom_victim_pid = ?1", pid.to_string())
            }
            ContainerMatch::Pid(pid) => (
                "last_pid = ?1 OR exit_pid = ?1 OR oom_victim_pid = ?1",
                pid.to_string(),
            ),
        };
        self.select_records(condition, &[arg])
    }

    /// Every remembered container, most recently seen first.
    ///
    /// # Errors
    /// The read failed or a stored identity does not decode.
    pub fn all_containers(&self) -> Result<Vec<ContainerRecord>, StateError> {
        self.select_records("1", &[])
    }

    fn select_records(
        &self,
        condition: &str,
        args: &[String],
    ) -> Result<Vec<ContainerRecord>, StateError> {
        let q = |source| StateError::Query {
            operation: "find containers",
            source,
        };
        let sql = format!(
            "SELECT {} FROM containers WHERE {condition} ORDER BY last_seen_ms DESC, container_id",
            record_columns(self.version)
        );
        let conn = self.lock();
        let mut st = conn.prepare(&sql).map_err(q)?;
        let rows = st
            .query_map(params_from_iter(args.iter()), record_from_row)
            .map_err(q)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row.map_err(q)??);
        }
        Ok(out)
    }

    /// The log sources of a container with their newest checkpoint, by key.
    ///
    /// # Errors
    /// The read failed.
    pub fn sources(&self, container_id: &str) -> Result<Vec<SourceRecord>, StateError> {
        let q = |source| StateError::Query {
            operation: "read sources",
            source,
        };
        let mut records: Vec<SourceRecord> = {
            let conn = self.lock();
            let mut st = conn
                .prepare_cached(
                    "SELECT source, path, lines, bytes, skipped, rotations, truncations, lost_bytes, updated_ms, lost_files
                     FROM sources WHERE container_id = ?1 ORDER BY source",
                )
                .map_err(q)?;
            let rows = st
                .query_map([container_id], |r| {
                    Ok(SourceRecord {
                        key: r.get(0)?,
                        path: r.get(1)?,
                        counters: SourceCounters {
                            lines: r.get::<_, i64>(2)? as u64,
                            bytes: r.get::<_, i64>(3)? as u64,
                            skipped: r.get::<_, i64>(4)? as u64,
                            rotations: r.get::<_, i64>(5)? as u64,
                            truncations: r.get::<_, i64>(6)? as u64,
                            lost_bytes: r.get::<_, i64>(7)? as u64,
                            lost_files: r.get::<_, i64>(9)? as u64,
                        },
                        updated_ms: r.get(8)?,
                        checkpoint: None,
                    })
                })
                .map_err(q)?;
            rows.collect::<Result<_, _>>().map_err(q)?
        };
        for r in &mut records {
            r.checkpoint = self.checkpoints(&r.key)?.into_iter().next();
        }
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identify::{CgroupId, ContainerId, ContainerIdentity, EcsTask, TaskArn};
    use crate::state::{CheckpointUpdate, Lifecycle};
    use crate::tail::fingerprint::Fingerprint;

    fn remember(
        s: &Store,
        id: &str,
        name: &str,
        ecs_name: Option<&str>,
        arn: Option<&str>,
    ) -> ContainerIdentity {
        let mut identity = ContainerIdentity::new(ContainerId::parse(id).unwrap());
        identity.docker_name = Some(name.to_owned());
        identity.cgroup_id = Some(CgroupId(id.len() as u64 + u64::from(id.as_bytes()[0])));
        identity.cgroup_path = Some(format!("/docker/{id}"));
        if let Some(arn) = arn {
            let arn = TaskArn::parse(arn).unwrap();
            identity.ecs = Some(EcsTask {
                task_id: Some(arn.task_id().clone()),
                task_arn: Some(arn),
                container_name: ecs_name.map(str::to_owned),
                ..Default::default()
            });
        }
        s.record_container(&identity, Lifecycle::Running, None, None)
            .unwrap();
        identity
    }

    #[test]
    fn containers_are_found_by_every_handle() {
        let s = Store::in_memory().unwrap();
        let a = "a".repeat(64);
        let b = format!("ab{}", "c".repeat(62));
        let uuid = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0";
        let arn = format!("arn:aws:ecs:us-east-1:123456789012:task/{uuid}");
        remember(&s, &a, "ecs-web-1-web-x", Some("web"), Some(&arn));
        remember(&s, &b, "plain", None, None);
        s.record_run(&b, Some(77), None, None).unwrap();
        s.record_oom_kill(&a, 88).unwrap();
        let b_path = format!("/docker/{b}");
        let dashless = uuid.replace('-', "");
        let ids = |m| {
            s.find_containers(m)
                .unwrap()
                .into_iter()
                .map(|r| r.identity.container_id.to_string())
                .collect::<Vec<_>>()
        };
        let cases: Vec<(ContainerMatch<'_>, Vec<&String>)> = vec![
            (ContainerMatch::Id(&a), vec![&a]),
            (ContainerMatch::IdPrefix("a"), vec![&b, &a]),
            (ContainerMatch::IdPrefix("ab"), vec![&b]),
            (ContainerMatch::Name("web"), vec![&a]),
            (ContainerMatch::Name("ecs-web-1-web-x"), vec![&a]),
            (ContainerMatch::Name("plain"), vec![&b]),
            (ContainerMatch::CgroupPath(&b_path), vec![&b]),
            (ContainerMatch::CgroupId(64 + u64::from(b'a')), vec![&b, &a]),
            (ContainerMatch::TaskId(uuid), vec![&a]),
            (ContainerMatch::TaskId(&dashless), vec![&a]),
            (ContainerMatch::TaskArn(&arn), vec![&a]),
            (ContainerMatch::Pid(77), vec![&b]),
            (ContainerMatch::Pid(88), vec![&a]),
            (ContainerMatch::Pid(78), vec![]),
        ];
        for (m, want) in cases {
            let mut got = ids(m);
            got.sort();
            let mut want: Vec<String> = want.into_iter().cloned().collect();
            want.sort();
            assert_eq!(got, want, "{m:?}");
        }
        assert_eq!(s.all_containers().unwrap().len(), 2);
    }

    #[test]
    fn sources_carry_their_newest_checkpoint() {
        let s = Store::in_memory().unwrap();
        let update = |ino, offset| CheckpointUpdate {
            source: "c/json".into(),
            container_id: "c".into(),
            checkpoint: Checkpoint {
                fingerprint: Fingerprint {
                    dev: 1,
                    ino,
                    head_len: 4,
                    head_hash: 9,
                },
                path: "/p".into(),
                offset,
            },
            counters: SourceCounters {
                lines: 2,
                bytes: 10,
                rotations: u64::from(ino == 6),
                ..Default::default()
            },
        };
        s.checkpoint(&[update(5, 10)]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        s.checkpoint(&[update(6, 3)]).unwrap();
        let sources = s.sources("c").unwrap();
        assert_eq!(sources.len(), 1);
        assert_eq!(sources[0].counters.lines, 4);
        assert_eq!(sources[0].counters.rotations, 1);
        let cp = sources[0].checkpoint.as_ref().unwrap();
        assert_eq!((cp.fingerprint.ino, cp.offset), (6, 3));
    }
}
