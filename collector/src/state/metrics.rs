//! Per-task metrics (Graphite and StatsD): the latest value of each path, a bounded history
//! per path, and what each task lost. Keyed by owner: the task id, `container:<id>` for a
//! container outside a task, or `unattributed`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{StateError, Store, now_ms};
use crate::metrics::Chunk;

/// Bounds applied while writing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricLimits {
    /// Samples kept per path (oldest deleted first).
    pub history_per_path: usize,
    /// Distinct paths per owner.
    pub max_paths_per_owner: usize,
}

/// What a write did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetricWrite {
    /// Samples stored.
    pub stored: u64,
    /// Samples of new paths over the owner's path bound.
    pub path_limited: u64,
}

/// The samples of one (owner, path) in one write.
struct PathGroup<'a> {
    /// Samples received.
    n: i64,
    /// Name of the container that sent the last one.
    container_name: Option<&'a str>,
    /// The last `history_per_path` of them: `(timestamp, value, container id)`.
    tail: VecDeque<(i64, f64, Option<&'a str>)>,
}

/// One owner's record.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MetricOwnerRecord {
    /// The owner key.
    pub owner: String,
    /// Task ARN, when known.
    pub task_arn: Option<String>,
    /// Cluster, when known.
    pub cluster: Option<String>,
    /// Task definition family, when known.
    pub family: Option<String>,
    /// Task definition revision, when known.
    pub revision: Option<i64>,
    /// Samples stored.
    pub samples: i64,
    /// Lines rejected by the parser.
    pub rejected: i64,
    /// Samples dropped over the rate bound.
    pub rate_limited: i64,
    /// Samples dropped over the path bound.
    pub path_limited: i64,
    /// First sample (ms since the epoch).
    pub first_ms: i64,
    /// Last sample or loss (ms since the epoch).
    pub last_ms: i64,
}

/// One path of an owner.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MetricPathRecord {
    /// The sender's path.
    pub path: String,
    /// Latest value.
    pub value: f64,
    /// Its timestamp (seconds since the epoch).
    pub timestamp: i64,
    /// The container that sent it last.
    pub container_id: Option<String>,
    /// Its name.
    pub container_name: Option<String>,
    /// Samples received for the path.
    pub samples: i64,
    /// When the latest arrived (ms since the epoch).
    pub received_ms: i64,
    /// Older samples, newest first: `(timestamp, value)`.
    pub history: Vec<(i64, f64)>,
}

impl Store {
    /// Writes chunks in one transaction: owners' counters, latest values, history (trimmed
    /// to `limits.history_per_path` per touched path).
    ///
    /// Samples are grouped by owner and path first: the latest value is written once per
    /// path and only the samples the history keeps are inserted, so a burst on few paths
    /// costs a few statements, not three per sample.
    ///
    /// # Errors
    /// A failed statement; nothing of the transaction is kept then.
    pub fn record_metrics(
        &self,
        chunks: &[Arc<Chunk>],
        limits: MetricLimits,
    ) -> Result<MetricWrite, StateError> {
        let q = |operation| move |source| StateError::Query { operation, source };
        // Group by (owner, path), in arrival order.
        let mut groups: HashMap<(&str, &str), PathGroup<'_>> = HashMap::new();
        let mut order: Vec<(&str, &str)> = Vec::new();
        for chunk in chunks {
            let o = &chunk.origin;
            let container_id = o.container_id.as_ref().map(|c| c.as_str());
            for s in &chunk.samples {
                let key = (o.owner.as_str(), s.path.as_str());
                let g = groups.entry(key).or_insert_with(|| {
                    order.push(key);
                    PathGroup {
                        n: 0,
                        container_name: None,
                        tail: VecDeque::new(),
                    }
                });
                g.n += 1;
                g.container_name = o.container_name.as_deref();
                if g.tail.len() == limits.history_per_path {
                    g.tail.pop_front();
                }
                g.tail.push_back((s.timestamp, s.value, container_id));
            }
        }
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(q("begin metrics write"))?;
        let now = now_ms();
        let mut out = MetricWrite::default();
        {
            let mut owner = tx
                .prepare_cached(
                    "INSERT INTO metric_owners (owner, task_arn, cluster, family, revision, samples,
                         rejected, rate_limited, path_limited, first_ms, last_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?7, 0, ?8, ?8)
                     ON CONFLICT (owner) DO UPDATE SET
                         task_arn = coalesce(excluded.task_arn, task_arn),
                         cluster = coalesce(excluded.cluster, cluster),
                         family = coalesce(excluded.family, family),
                         revision = coalesce(excluded.revision, revision),
                         rejected = rejected + excluded.rejected,
                         rate_limited = rate_limited + excluded.rate_limited,
                         last_ms = excluded.last_ms",
                )
                .map_err(q("prepare metric owner"))?;
            for chunk in chunks {
                let o = &chunk.origin;
                owner
                    .execute(params![
                        o.owner,
                        o.task_arn,
                        o.cluster,
                        o.family,
                        o.revision,
                        chunk.rejected as i64,
                        chunk.rate_limited as i64,
                        now
                    ])
                    .map_err(q("write metric owner"))?;
            }
            let mut exists = tx
                .prepare_cached("SELECT 1 FROM metric_latest WHERE owner = ?1 AND path = ?2")
                .map_err(q("prepare metric path"))?;
            let mut count = tx
                .prepare_cached("SELECT count(*) FROM metric_latest WHERE owner = ?1")
                .map_err(q("prepare metric count"))?;
            let mut latest = tx
                .prepare_cached(
                    "INSERT INTO metric_latest (owner, path, value, timestamp, container_id,
                         container_name, samples, received_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (owner, path) DO UPDATE SET
                         value = excluded.value, timestamp = excluded.timestamp,
                         container_id = excluded.container_id,
                         container_name = excluded.container_name,
                         samples = samples + excluded.samples,
                         received_ms = excluded.received_ms",
                )
                .map_err(q("prepare metric latest"))?;
            let mut history = tx
                .prepare_cached(
                    "INSERT INTO metric_history (owner, path, timestamp, value, container_id, received_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(q("prepare metric history"))?;
            let mut trim = tx
                .prepare_cached(
                    "DELETE FROM metric_history WHERE owner = ?1 AND path = ?2 AND rowid NOT IN
                     (SELECT rowid FROM metric_history WHERE owner = ?1 AND path = ?2
                      ORDER BY rowid DESC LIMIT ?3)",
                )
                .map_err(q("prepare metric trim"))?;
            let mut per_owner: HashMap<&str, (i64, i64)> = HashMap::new();
            for key @ (owner_key, path) in order {
                let g = &groups[&key];
                let counts = per_owner.entry(owner_key).or_default();
                let known = exists
                    .query_row(params![owner_key, path], |_| Ok(()))
                    .optional()
                    .map_err(q("read metric path"))?
                    .is_some();
                if !known {
                    let n: i64 = count
                        .query_row(params![owner_key], |r| r.get(0))
                        .map_err(q("count metric paths"))?;
                    if n as usize >= limits.max_paths_per_owner {
                        counts.1 += g.n;
                        continue;
                    }
                }
                let Some(&(ts, value, container_id)) = g.tail.back() else {
                    continue;
                };
                latest
                    .execute(params![
                        owner_key,
                        path,
                        value,
                        ts,
                        container_id,
                        g.container_name,
                        g.n,
                        now
                    ])
                    .map_err(q("write metric latest"))?;
                for (ts, value, container_id) in &g.tail {
                    history
                        .execute(params![owner_key, path, ts, value, container_id, now])
                        .map_err(q("write metric history"))?;
                }
                trim.execute(params![owner_key, path, limits.history_per_path as i64])
                    .map_err(q("trim metric history"))?;
                counts.0 += g.n;
            }
            let mut counted = tx
                .prepare_cached(
                    "UPDATE metric_owners SET samples = samples + ?2, path_limited = path_limited + ?3
                     WHERE owner = ?1",
                )
                .map_err(q("prepare metric owner count"))?;
            for (owner_key, (stored, limited)) in per_owner {
                counted
                    .execute(params![owner_key, stored, limited])
                    .map_err(q("count metric samples"))?;
                out.stored += stored as u64;
                out.path_limited += limited as u64;
            }
        }
        tx.commit().map_err(q("commit metrics write"))?;
        Ok(out)
    }

    /// An owner's record (`owner` is a task id, `container:<id>` or `unattributed`).
    ///
    /// # Errors
    /// A failed query.
    pub fn metric_owner(&self, owner: &str) -> Result<Option<MetricOwnerRecord>, StateError> {
        if self.version < 4 {
            return Ok(None);
        }
        self.lock()
            .query_row(
                "SELECT owner, task_arn, cluster, family, revision, samples, rejected,
                        rate_limited, path_limited, first_ms, last_ms
                 FROM metric_owners WHERE owner = ?1",
                params![owner],
                |r| {
                    Ok(MetricOwnerRecord {
                        owner: r.get(0)?,
                        task_arn: r.get(1)?,
                        cluster: r.get(2)?,
                        family: r.get(3)?,
                        revision: r.get(4)?,
                        samples: r.get(5)?,
                        rejected: r.get(6)?,
                        rate_limited: r.get(7)?,
                        path_limited: r.get(8)?,
                        first_ms: r.get(9)?,
                        last_ms: r.get(10)?,
                    })
                },
            )
            .optional()
            .map_err(|source| StateError::Query {
                operation: "read metric owner",
                source,
            })
    }

    /// An owner's paths with their latest values and, when `history`, their history.
    /// `container_id` narrows it to what one container sent last.
    ///
    /// # Errors
    /// A failed query.
    pub fn metric_paths(
        &self,
        owner: Option<&str>,
        container_id: Option<&str>,
        history: bool,
    ) -> Result<Vec<MetricPathRecord>, StateError> {
        if self.version < 4 {
            return Ok(Vec::new());
        }
        let q = |operation| move |source| StateError::Query { operation, source };
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT owner, path, value, timestamp, container_id, container_name, samples, received_ms
                 FROM metric_latest
                 WHERE (?1 IS NULL OR owner = ?1) AND (?2 IS NULL OR container_id = ?2)
                 ORDER BY path LIMIT 100000",
            )
            .map_err(q("prepare metric paths"))?;
        let rows = stmt
            .query_map(params![owner, container_id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    MetricPathRecord {
                        path: r.get(1)?,
                        value: r.get(2)?,
                        timestamp: r.get(3)?,
                        container_id: r.get(4)?,
                        container_name: r.get(5)?,
                        samples: r.get(6)?,
                        received_ms: r.get(7)?,
                        history: Vec::new(),
                    },
                ))
            })
            .map_err(q("read metric paths"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(q("read metric paths"))?;
        let mut out = Vec::with_capacity(rows.len());
        let mut hist = conn
            .prepare_cached(
                "SELECT timestamp, value FROM metric_history WHERE owner = ?1 AND path = ?2
                 ORDER BY rowid DESC",
            )
            .map_err(q("prepare metric history"))?;
        for (owner, mut rec) in rows {
            if history {
                rec.history = hist
                    .query_map(params![owner, rec.path], |r| Ok((r.get(0)?, r.get(1)?)))
                    .map_err(q("read metric history"))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(q("read metric history"))?;
            }
            out.push(rec);
        }
        Ok(out)
    }

    /// Forgets owners with no sample for longer than `retention_ms`, with their paths.
    ///
    /// # Errors
    /// A failed statement.
    pub fn expire_metrics(&self, retention_ms: i64) -> Result<usize, StateError> {
        let cutoff = now_ms().saturating_sub(retention_ms);
        let conn = self.lock();
        let run = |sql: &str| {
            conn.execute(sql, params![cutoff])
                .map_err(|source| StateError::Query {
                    operation: "expire metrics",
                    source,
                })
        };
        run(
            "DELETE FROM metric_history WHERE owner IN (SELECT owner FROM metric_owners WHERE last_ms < ?1)",
        )?;
        run(
            "DELETE FROM metric_latest WHERE owner IN (SELECT owner FROM metric_owners WHERE last_ms < ?1)",
        )?;
        run("DELETE FROM metric_owners WHERE last_ms < ?1")
    }
}

/// Version 5: per-task metrics.
pub(super) const MIGRATION_5: &str = "
BEGIN;
CREATE TABLE IF NOT EXISTS metric_owners (
    owner        TEXT    PRIMARY KEY,  -- task id | 'container:<id>' | 'unattributed'
    task_arn     TEXT,
    cluster      TEXT,
    family       TEXT,
    revision     INTEGER,
    samples      INTEGER NOT NULL DEFAULT 0,  -- samples stored
    rejected     INTEGER NOT NULL DEFAULT 0,  -- lines the parser rejected
    rate_limited INTEGER NOT NULL DEFAULT 0,  -- samples over metrics.max_samples_per_second
    path_limited INTEGER NOT NULL DEFAULT 0,  -- samples of paths over metrics.max_paths_per_task
    first_ms     INTEGER NOT NULL,
    last_ms      INTEGER NOT NULL              -- last sample or loss; retention counts from here
);
CREATE TABLE IF NOT EXISTS metric_latest (
    owner          TEXT    NOT NULL,
    path           TEXT    NOT NULL,
    value          REAL    NOT NULL,
    timestamp      INTEGER NOT NULL,  -- the sample's (seconds since the epoch)
    container_id   TEXT,              -- who sent the latest
    container_name TEXT,
    samples        INTEGER NOT NULL,
    received_ms    INTEGER NOT NULL,
    PRIMARY KEY (owner, path)
);
CREATE INDEX IF NOT EXISTS metric_latest_container ON metric_latest (container_id);
CREATE TABLE IF NOT EXISTS metric_history (
    owner        TEXT    NOT NULL,
    path         TEXT    NOT NULL,
    timestamp    INTEGER NOT NULL,
    value        REAL    NOT NULL,
    container_id TEXT,
    received_ms  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS metric_history_path ON metric_history (owner, path);
PRAGMA user_version = 5;
COMMIT;
";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identify::{ContainerId, TaskId};
    use crate::metrics::{Origin, Sample};

    fn origin(task: &str, c: char) -> Arc<Origin> {
        let mut o = Origin::unattributed();
        o.owner = task.to_owned();
        o.task_id = TaskId::parse(task);
        o.container_id = ContainerId::parse(&c.to_string().repeat(64));
        o.container_name = Some(format!("c{c}"));
        Arc::new(o)
    }

    fn chunk(origin: &Arc<Origin>, samples: &[(&str, f64)]) -> Arc<Chunk> {
        Arc::new(Chunk {
            origin: origin.clone(),
            samples: samples
                .iter()
                .map(|(p, v)| Sample {
                    path: (*p).to_owned(),
                    value: *v,
                    timestamp: 1_790_000_000,
                })
                .collect(),
            rejected: 1,
            rate_limited: 0,
        })
    }

    #[test]
    fn a_burst_on_one_path_in_one_write_keeps_the_newest_history() {
        let s = Store::in_memory().unwrap();
        let t = "3".repeat(32);
        let o = origin(&t, 'c');
        let values: Vec<(String, f64)> = (0..250).map(|i| ("p".to_owned(), f64::from(i))).collect();
        let samples: Vec<(&str, f64)> = values.iter().map(|(p, v)| (p.as_str(), *v)).collect();
        let limits = MetricLimits {
            history_per_path: 100,
            max_paths_per_owner: 10,
        };
        let w = s
            .record_metrics(
                &[chunk(&o, &samples[..100]), chunk(&o, &samples[100..])],
                limits,
            )
            .unwrap();
        assert_eq!(w.stored, 250);
        let p = s.metric_paths(Some(&t), None, true).unwrap();
        assert_eq!((p[0].value, p[0].samples), (249.0, 250));
        let hist: Vec<f64> = p[0].history.iter().map(|h| h.1).collect();
        assert_eq!(hist, (150..250).rev().map(f64::from).collect::<Vec<_>>());
        assert_eq!(s.metric_owner(&t).unwrap().unwrap().samples, 250);
    }

    #[test]
    fn same_path_of_two_tasks_stays_apart_and_history_is_bounded() {
        let s = Store::in_memory().unwrap();
        let (t1, t2) = ("1".repeat(32), "2".repeat(32));
        let (o1, o2) = (origin(&t1, 'a'), origin(&t2, 'b'));
        let limits = MetricLimits {
            history_per_path: 3,
            max_paths_per_owner: 2,
        };
        for i in 0..5 {
            let w = s
                .record_metrics(
                    &[
                        chunk(&o1, &[("app.x", f64::from(i))]),
                        chunk(&o2, &[("app.x", 100.0 + f64::from(i))]),
                    ],
                    limits,
                )
                .unwrap();
            assert_eq!(w.stored, 2);
        }
        let p1 = s.metric_paths(Some(&t1), None, true).unwrap();
        assert_eq!(p1.len(), 1);
        assert_eq!(p1[0].value, 4.0);
        assert_eq!(p1[0].samples, 5);
        let hist: Vec<f64> = p1[0].history.iter().map(|h| h.1).collect();
        assert_eq!(hist, [4.0, 3.0, 2.0]);
        let p2 = s.metric_paths(Some(&t2), None, false).unwrap();
        assert_eq!(p2[0].value, 104.0);
        assert_eq!(p2[0].container_name.as_deref(), Some("cb"));
        // The path bound: a third path is dropped and counted.
        let w = s
            .record_metrics(
                &[chunk(&o1, &[("b", 1.0), ("c", 1.0), ("app.x", 9.0)])],
                limits,
            )
            .unwrap();
        assert_eq!((w.stored, w.path_limited), (2, 1));
        let owner = s.metric_owner(&t1).unwrap().unwrap();
        assert_eq!(
            (owner.samples, owner.path_limited, owner.rejected),
            (7, 1, 6)
        );
        assert_eq!(s.expire_metrics(60_000).unwrap(), 0);
        assert_eq!(s.expire_metrics(-60_000).unwrap(), 2);
        assert!(s.metric_owner(&t1).unwrap().is_none());
        assert!(s.metric_paths(Some(&t1), None, false).unwrap().is_empty());
    }
}
