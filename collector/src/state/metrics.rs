//! Per-task metrics (Graphite and StatsD): the latest value of each path, a bounded history
//! per path, and what each task lost. Keyed by owner: the task id, `container:<id>` for a
//! container outside a task, or `unattributed`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{StateError, Store, now_ms};
use crate::metrics::{Chunk, Origin};

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

/// Paths written per transaction at most: the state database has one connection, shared
/// with the shipper's checkpoint commits, which must not wait behind a long metrics write
/// (a path costs two statements, a few microseconds each).
const PATHS_PER_TRANSACTION: usize = 2_000;

/// Bytes of one entry of `metric_latest.history`: the sample's timestamp (`i64`, seconds
/// since the epoch) then its value (`f64`), both little-endian, oldest entry first.
const HISTORY_ENTRY_BYTES: usize = 16;

/// The samples of one (owner, path) received since the last write.
#[derive(Debug)]
struct PendingPath {
    /// When the path first arrived in this buffer: new paths are admitted under the
    /// owner's path bound in arrival order, as if each sample had been written at once.
    seq: u64,
    /// Samples received.
    n: i64,
    /// Who sent the latest: its container id and name are stored with the latest value.
    origin: Arc<Origin>,
    /// When the latest arrived (ms since the epoch).
    received_ms: i64,
    /// The newest `history_per_path` samples `(timestamp, value)`, oldest first; the last
    /// one is the latest value.
    ring: VecDeque<(i64, f64)>,
}

/// What one owner sent since the last write.
#[derive(Debug, Default)]
struct PendingOwner {
    /// Task ARN: the newest one a chunk carried (a later chunk without one keeps it).
    task_arn: Option<String>,
    /// Cluster, likewise.
    cluster: Option<String>,
    /// Task definition family, likewise.
    family: Option<String>,
    /// Task definition revision, likewise.
    revision: Option<u32>,
    /// The origin the identity was last taken from: a connection's chunks share one, so
    /// the fields are copied once per sender, not once per chunk.
    identity_from: Option<Arc<Origin>>,
    /// Lines rejected by the parser.
    rejected: u64,
    /// Samples dropped over the rate bound.
    rate_limited: u64,
    /// First and last chunk (ms since the epoch).
    first_ms: i64,
    /// See `first_ms`.
    last_ms: i64,
    /// Its paths, at most `max_paths_per_owner`.
    paths: HashMap<String, PendingPath>,
}

/// Samples received and not written yet, coalesced per (owner, path): the latest value,
/// the count and the newest `history_per_path` samples of each path, and each owner's
/// counters. Writing it costs two statements per path however many samples the path got,
/// where writing every sample cost one or more each (the store was the ingest bottleneck).
///
/// Bounded whatever the input rate: at most `max_paths_per_owner` paths per owner are held
/// ([`PendingMetrics::add`] stops at a new path past that, to be written first: only the
/// database knows whether the path is one of the owner's stored paths, or a new one to be
/// counted as path-limited) and [`PendingMetrics::is_full`] tells the writer to write it
/// when it holds [`PendingMetrics::MAX_PATHS`] paths or [`PendingMetrics::MAX_ENTRIES`]
/// history entries.
#[derive(Debug)]
pub struct PendingMetrics {
    /// The bounds the samples are held and written under.
    limits: MetricLimits,
    /// By owner key.
    owners: HashMap<String, PendingOwner>,
    /// Paths held, over every owner.
    paths: usize,
    /// History entries held, over every path.
    entries: usize,
    /// Samples received (including those dropped over the path bound): for the log of a
    /// failed write.
    samples: u64,
    /// The next path arrival number.
    seq: u64,
}

impl PendingMetrics {
    /// Paths held at most before the writer must write.
    pub const MAX_PATHS: usize = 20_000;

    /// History entries held at most before the writer must write (16 bytes each, so about
    /// 4 MB with the paths' names).
    pub const MAX_ENTRIES: usize = 250_000;

    /// An empty buffer for `limits`.
    pub fn new(limits: MetricLimits) -> Self {
        Self {
            limits,
            owners: HashMap::new(),
            paths: 0,
            entries: 0,
            samples: 0,
            seq: 0,
        }
    }

    /// Whether nothing waits to be written.
    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }

    /// Whether it reached one of its bounds and must be written before taking more.
    pub fn is_full(&self) -> bool {
        self.paths >= Self::MAX_PATHS || self.entries >= Self::MAX_ENTRIES
    }

    /// Everything held, leaving it empty (with the same bounds).
    pub fn take(&mut self) -> Self {
        std::mem::replace(self, Self::new(self.limits))
    }

    /// Samples received since the last write.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Takes a chunk received at `now_ms`, from its sample `from` on (0 the first time).
    /// `Some(i)` when it stopped at sample `i`, a new path of an owner that already has
    /// `max_paths_per_owner` paths held: write what is held, then add the rest from `i`.
    #[must_use = "a chunk may be taken only in part"]
    pub fn add(&mut self, chunk: &Chunk, now_ms: i64, from: usize) -> Option<usize> {
        let Self {
            limits,
            owners,
            paths,
            entries,
            samples,
            seq,
        } = self;
        let o = &chunk.origin;
        if !owners.contains_key(o.owner.as_str()) {
            owners.insert(
                o.owner.clone(),
                PendingOwner {
                    first_ms: now_ms,
                    ..PendingOwner::default()
                },
            );
        }
        let owner = owners
            .get_mut(o.owner.as_str())
            .expect("inserted just above");
        if !owner
            .identity_from
            .as_ref()
            .is_some_and(|from| Arc::ptr_eq(from, o))
        {
            let newer = |field: &mut Option<String>, value: &Option<String>| {
                if value.is_some() {
                    field.clone_from(value);
                }
            };
            newer(&mut owner.task_arn, &o.task_arn);
            newer(&mut owner.cluster, &o.cluster);
            newer(&mut owner.family, &o.family);
            owner.revision = o.revision.or(owner.revision);
            owner.identity_from = Some(o.clone());
        }
        if from == 0 {
            owner.rejected += chunk.rejected;
            owner.rate_limited += chunk.rate_limited;
        }
        owner.last_ms = now_ms;
        // The ring keeps at least the latest value, whatever the history bound says.
        let keep = limits.history_per_path.max(1);
        for (i, s) in chunk.samples.iter().enumerate().skip(from) {
            *samples += 1;
            if let Some(p) = owner.paths.get_mut(s.path.as_str()) {
                p.n += 1;
                p.received_ms = now_ms;
                if !Arc::ptr_eq(&p.origin, o) {
                    p.origin = o.clone();
                }
                if p.ring.len() == keep {
                    p.ring.pop_front();
                } else {
                    *entries += 1;
                }
                p.ring.push_back((s.timestamp, s.value));
                continue;
            }
            if owner.paths.len() >= limits.max_paths_per_owner {
                *samples -= 1;
                return Some(i);
            }
            *seq += 1;
            *paths += 1;
            *entries += 1;
            let mut ring = VecDeque::with_capacity(keep.min(16));
            ring.push_back((s.timestamp, s.value));
            owner.paths.insert(
                s.path.clone(),
                PendingPath {
                    seq: *seq,
                    n: 1,
                    origin: o.clone(),
                    received_ms: now_ms,
                    ring,
                },
            );
        }
        None
    }
}

/// One owner's share of a write: what it sent, and its paths in arrival order.
struct OwnerWork {
    key: String,
    owner: PendingOwner,
    paths: Vec<(String, PendingPath)>,
}

/// A slice of one owner's paths written in one transaction; the owner's counters other
/// than samples and path_limited are added with its first part only.
struct Part {
    owner: usize,
    paths: std::ops::Range<usize>,
    first: bool,
}

/// `old` (a stored history) followed by `new`, newest `keep` entries, encoded.
fn merge_history(old: &[u8], new: &VecDeque<(i64, f64)>, keep: usize) -> Vec<u8> {
    let new_n = new.len().min(keep);
    // Whole entries only: a damaged tail is dropped rather than misread.
    let whole = &old[..old.len() / HISTORY_ENTRY_BYTES * HISTORY_ENTRY_BYTES];
    let old_n = (whole.len() / HISTORY_ENTRY_BYTES).min(keep - new_n);
    let mut out = Vec::with_capacity((old_n + new_n) * HISTORY_ENTRY_BYTES);
    out.extend_from_slice(&whole[whole.len() - old_n * HISTORY_ENTRY_BYTES..]);
    for &(ts, value) in new.iter().skip(new.len() - new_n) {
        out.extend_from_slice(&ts.to_le_bytes());
        out.extend_from_slice(&value.to_le_bytes());
    }
    out
}

/// A stored history, newest first (as the API shows it).
fn decode_history(blob: &[u8]) -> Vec<(i64, f64)> {
    blob.chunks_exact(HISTORY_ENTRY_BYTES)
        .rev()
        .map(|e| {
            let (ts, value) = e.split_at(8);
            (
                i64::from_le_bytes(ts.try_into().expect("an entry is 8 + 8 bytes")),
                f64::from_le_bytes(value.try_into().expect("an entry is 8 + 8 bytes")),
            )
        })
        .collect()
}

impl Store {
    /// Writes chunks at once, through a [`PendingMetrics`] (several writes when an owner's
    /// path bound stops it).
    ///
    /// # Errors
    /// As [`Store::write_metrics`].
    pub fn record_metrics(
        &self,
        chunks: &[Arc<Chunk>],
        limits: MetricLimits,
    ) -> Result<MetricWrite, StateError> {
        let mut pending = PendingMetrics::new(limits);
        let mut out = MetricWrite::default();
        let now = now_ms();
        for c in chunks {
            let mut from = 0;
            while let Some(at) = pending.add(c, now, from) {
                let w = self.write_metrics(pending.take())?;
                out.stored += w.stored;
                out.path_limited += w.path_limited;
                from = at;
            }
        }
        let w = self.write_metrics(pending)?;
        out.stored += w.stored;
        out.path_limited += w.path_limited;
        Ok(out)
    }

    /// Writes what `pending` holds: owners' counters, latest values, and each path's history
    /// merged with the stored one (one read and one upsert per path), in transactions of at
    /// most [`PATHS_PER_TRANSACTION`] paths. New paths are admitted under the owner's path
    /// bound in the order they arrived.
    ///
    /// # Errors
    /// A failed statement; the transactions before it are kept, its own and those after it
    /// are not.
    pub fn write_metrics(&self, pending: PendingMetrics) -> Result<MetricWrite, StateError> {
        let limits = pending.limits;
        let work: Vec<OwnerWork> = pending
            .owners
            .into_iter()
            .map(|(key, mut owner)| {
                let mut paths: Vec<_> = owner.paths.drain().collect();
                paths.sort_unstable_by_key(|(_, p)| p.seq);
                OwnerWork { key, owner, paths }
            })
            .collect();
        let mut out = MetricWrite::default();
        let mut parts = Vec::new();
        let mut in_transaction = 0;
        for (i, w) in work.iter().enumerate() {
            let mut start = 0;
            loop {
                let end = (start + PATHS_PER_TRANSACTION - in_transaction).min(w.paths.len());
                parts.push(Part {
                    owner: i,
                    paths: start..end,
                    first: start == 0,
                });
                in_transaction += end - start;
                if in_transaction >= PATHS_PER_TRANSACTION {
                    self.write_parts(&work, &parts, limits, &mut out)?;
                    parts.clear();
                    in_transaction = 0;
                }
                start = end;
                if start >= w.paths.len() {
                    break;
                }
            }
        }
        if !parts.is_empty() {
            self.write_parts(&work, &parts, limits, &mut out)?;
        }
        Ok(out)
    }

    /// Writes `parts` of `work` in one transaction, adding what it stored to `out`.
    fn write_parts(
        &self,
        work: &[OwnerWork],
        parts: &[Part],
        limits: MetricLimits,
        out: &mut MetricWrite,
    ) -> Result<(), StateError> {
        let q = |operation| move |source| StateError::Query { operation, source };
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(q("begin metrics write"))?;
        let mut done = MetricWrite::default();
        {
            let mut owner_row = tx
                .prepare_cached(
                    "INSERT INTO metric_owners (owner, task_arn, cluster, family, revision, samples,
                         rejected, rate_limited, path_limited, first_ms, last_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?7, 0, ?8, ?9)
                     ON CONFLICT (owner) DO UPDATE SET
                         task_arn = coalesce(excluded.task_arn, task_arn),
                         cluster = coalesce(excluded.cluster, cluster),
                         family = coalesce(excluded.family, family),
                         revision = coalesce(excluded.revision, revision),
                         rejected = rejected + excluded.rejected,
                         rate_limited = rate_limited + excluded.rate_limited,
                         last_ms = max(last_ms, excluded.last_ms)",
                )
                .map_err(q("prepare metric owner"))?;
            let mut read = tx
                .prepare_cached("SELECT history FROM metric_latest WHERE owner = ?1 AND path = ?2")
                .map_err(q("prepare metric path"))?;
            let mut count = tx
                .prepare_cached("SELECT count(*) FROM metric_latest WHERE owner = ?1")
                .map_err(q("prepare metric count"))?;
            let mut latest = tx
                .prepare_cached(
                    "INSERT INTO metric_latest (owner, path, value, timestamp, container_id,
                         container_name, samples, received_ms, history)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                     ON CONFLICT (owner, path) DO UPDATE SET
                         value = excluded.value, timestamp = excluded.timestamp,
                         container_id = excluded.container_id,
                         container_name = excluded.container_name,
                         samples = samples + excluded.samples,
                         received_ms = excluded.received_ms,
                         history = excluded.history",
                )
                .map_err(q("prepare metric latest"))?;
            let mut counted = tx
                .prepare_cached(
                    "UPDATE metric_owners SET samples = samples + ?2, path_limited = path_limited + ?3
                     WHERE owner = ?1",
                )
                .map_err(q("prepare metric owner count"))?;
            for part in parts {
                let OwnerWork { key, owner, paths } = &work[part.owner];
                let (rejected, rate_limited) = if part.first {
                    (owner.rejected, owner.rate_limited)
                } else {
                    (0, 0)
                };
                let mut limited = 0u64;
                owner_row
                    .execute(params![
                        key,
                        owner.task_arn,
                        owner.cluster,
                        owner.family,
                        owner.revision,
                        rejected as i64,
                        rate_limited as i64,
                        owner.first_ms,
                        owner.last_ms
                    ])
                    .map_err(q("write metric owner"))?;
                // The owner's stored paths, counted once a new path needs it.
                let mut known: Option<usize> = None;
                let mut stored = 0u64;
                for (path, p) in &paths[part.paths.clone()] {
                    let old: Option<Vec<u8>> = read
                        .query_row(params![key, path], |r| r.get(0))
                        .optional()
                        .map_err(q("read metric path"))?;
                    if old.is_none() {
                        let n = match known {
                            Some(n) => n,
                            None => {
                                let n: i64 = count
                                    .query_row(params![key], |r| r.get(0))
                                    .map_err(q("count metric paths"))?;
                                usize::try_from(n).unwrap_or(0)
                            }
                        };
                        if n >= limits.max_paths_per_owner {
                            known = Some(n);
                            limited += p.n as u64;
                            continue;
                        }
                        known = Some(n + 1);
                    }
                    let Some(&(ts, value)) = p.ring.back() else {
                        continue;
                    };
                    let history = merge_history(
                        old.as_deref().unwrap_or_default(),
                        &p.ring,
                        limits.history_per_path.max(1),
                    );
                    latest
                        .execute(params![
                            key,
                            path,
                            value,
                            ts,
                            p.origin.container_id.as_ref().map(|c| c.as_str()),
                            p.origin.container_name,
                            p.n,
                            p.received_ms,
                            history
                        ])
                        .map_err(q("write metric latest"))?;
                    stored += p.n as u64;
                }
                counted
                    .execute(params![key, stored as i64, limited as i64])
                    .map_err(q("count metric samples"))?;
                done.stored += stored;
                done.path_limited += limited;
            }
        }
        tx.commit().map_err(q("commit metrics write"))?;
        out.stored += done.stored;
        out.path_limited += done.path_limited;
        Ok(())
    }

    /// An owner's record (`owner` is a task id, `container:<id>` or `unattributed`).
    ///
    /// # Errors
    /// A failed query.
    pub fn metric_owner(&self, owner: &str) -> Result<Option<MetricOwnerRecord>, StateError> {
        if self.version < 5 {
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
        if self.version < 5 {
            return Ok(Vec::new());
        }
        let q = |operation| move |source| StateError::Query { operation, source };
        let conn = self.lock();
        // Version 6 keeps the history beside the latest value; a read-only handle on an
        // older file reads its `metric_history` table instead.
        let blob = self.version >= 6;
        let sql = if blob {
            "SELECT owner, path, value, timestamp, container_id, container_name, samples, received_ms,
                    CASE WHEN ?3 THEN history END
             FROM metric_latest
             WHERE (?1 IS NULL OR owner = ?1) AND (?2 IS NULL OR container_id = ?2)
             ORDER BY path LIMIT 100000"
        } else {
            "SELECT owner, path, value, timestamp, container_id, container_name, samples, received_ms,
                    CASE WHEN ?3 THEN NULL END
             FROM metric_latest
             WHERE (?1 IS NULL OR owner = ?1) AND (?2 IS NULL OR container_id = ?2)
             ORDER BY path LIMIT 100000"
        };
        let mut stmt = conn
            .prepare_cached(sql)
            .map_err(q("prepare metric paths"))?;
        let rows = stmt
            .query_map(params![owner, container_id, history], |r| {
                let stored: Option<Vec<u8>> = r.get(8)?;
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
                        history: stored.as_deref().map(decode_history).unwrap_or_default(),
                    },
                ))
            })
            .map_err(q("read metric paths"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(q("read metric paths"))?;
        if blob || !history {
            return Ok(rows.into_iter().map(|(_, rec)| rec).collect());
        }
        let mut out = Vec::with_capacity(rows.len());
        let mut hist = conn
            .prepare_cached(
                "SELECT timestamp, value FROM metric_history WHERE owner = ?1 AND path = ?2
                 ORDER BY rowid DESC",
            )
            .map_err(q("prepare metric history"))?;
        for (owner, mut rec) in rows {
            rec.history = hist
                .query_map(params![owner, rec.path], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(q("read metric history"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(q("read metric history"))?;
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

/// Version 6: each path's history is one blob beside its latest value
/// (`metric_latest.history`, [`HISTORY_ENTRY_BYTES`] per sample, oldest first) instead of one
/// `metric_history` row per sample, so a write costs two statements per path rather than
/// one or more per sample. The rows of `metric_history` are folded into the blobs (oldest
/// first, as they were inserted), then the table is dropped; the sender's container id per
/// history sample, which nothing read, is not kept.
pub(super) fn migrate_6(conn: &rusqlite::Connection) -> Result<(), rusqlite::Error> {
    let tx = conn.unchecked_transaction()?;
    tx.execute_batch("ALTER TABLE metric_latest ADD COLUMN history BLOB NOT NULL DEFAULT x'';")?;
    {
        let mut rows = tx.prepare(
            "SELECT owner, path, timestamp, value FROM metric_history ORDER BY owner, path, rowid",
        )?;
        let mut set =
            tx.prepare("UPDATE metric_latest SET history = ?3 WHERE owner = ?1 AND path = ?2")?;
        // Rows come grouped by path: one blob is built at a time.
        let mut current: Option<(String, String)> = None;
        let mut blob = Vec::new();
        let mut it = rows.query([])?;
        while let Some(r) = it.next()? {
            let key: (String, String) = (r.get(0)?, r.get(1)?);
            if current.as_ref() != Some(&key) {
                if let Some((o, p)) = current.take() {
                    set.execute(params![o, p, blob])?;
                }
                blob.clear();
                current = Some(key);
            }
            blob.extend_from_slice(&r.get::<_, i64>(2)?.to_le_bytes());
            blob.extend_from_slice(&r.get::<_, f64>(3)?.to_le_bytes());
        }
        if let Some((o, p)) = current {
            set.execute(params![o, p, blob])?;
        }
    }
    tx.execute_batch("DROP TABLE metric_history; PRAGMA user_version = 6;")?;
    tx.commit()
}

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
    #[test]
    fn version_5_history_rows_become_blobs_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let t = "5".repeat(32);
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            for m in [
                super::super::MIGRATION_1,
                super::super::MIGRATION_2,
                super::super::MIGRATION_3,
                super::super::MIGRATION_4,
                MIGRATION_5,
            ] {
                conn.execute_batch(m).unwrap();
            }
            conn.execute(
                "INSERT INTO metric_owners (owner, samples, first_ms, last_ms) VALUES (?1, 3, 1, 1)",
                params![t],
            )
            .unwrap();
            for (p, n) in [("a", 3), ("b", 0)] {
                conn.execute(
                    "INSERT INTO metric_latest (owner, path, value, timestamp, samples, received_ms)
                     VALUES (?1, ?2, 2.5, 12, ?3, 1)",
                    params![t, p, n],
                )
                .unwrap();
            }
            for (ts, v) in [(10, 0.5), (11, 1.5), (12, 2.5)] {
                conn.execute(
                    "INSERT INTO metric_history (owner, path, timestamp, value, received_ms)
                     VALUES (?1, 'a', ?2, ?3, 1)",
                    params![t, ts, v],
                )
                .unwrap();
            }
        }
        let want = vec![(12, 2.5), (11, 1.5), (10, 0.5)];
        // A read-only handle on the old file reads the old table.
        let ro = Store::open_read_only(&path).unwrap();
        assert_eq!(
            ro.metric_paths(Some(&t), None, true).unwrap()[0].history,
            want
        );
        drop(ro);
        let s = Store::open(&path).unwrap();
        let p = s.metric_paths(Some(&t), None, true).unwrap();
        assert_eq!(p[0].history, want);
        assert!(p[1].history.is_empty());
        assert!(
            s.metric_paths(Some(&t), None, false).unwrap()[0]
                .history
                .is_empty()
        );
        let tables: i64 = s
            .lock()
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'metric_history'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 0);
        // New samples append to the migrated history, newest kept.
        let o = origin(&t, 'c');
        let limits = MetricLimits {
            history_per_path: 4,
            max_paths_per_owner: 10,
        };
        s.record_metrics(&[chunk(&o, &[("a", 7.0), ("a", 8.0)])], limits)
            .unwrap();
        let p = s.metric_paths(Some(&t), None, true).unwrap();
        let hist: Vec<f64> = p[0].history.iter().map(|h| h.1).collect();
        assert_eq!(hist, [8.0, 7.0, 2.5, 1.5]);
        assert_eq!(p[0].samples, 5);
    }

    #[test]
    fn the_buffer_holds_at_most_the_path_bound_per_owner() {
        let t = "4".repeat(32);
        let o = origin(&t, 'c');
        let mut pending = PendingMetrics::new(MetricLimits {
            history_per_path: 2,
            max_paths_per_owner: 2,
        });
        let c = chunk(
            &o,
            &[("a", 1.0), ("b", 2.0), ("a", 4.0), ("c", 3.0), ("a", 5.0)],
        );
        // "c" is a third path: held back until what is held is written.
        assert_eq!(pending.add(&c, 1, 0), Some(3));
        assert_eq!(
            (pending.paths, pending.entries, pending.samples()),
            (2, 3, 3)
        );
        let s = Store::in_memory().unwrap();
        let w = s.write_metrics(pending.take()).unwrap();
        assert!(pending.is_empty());
        assert_eq!((w.stored, w.path_limited), (3, 0));
        assert_eq!(pending.add(&c, 2, 3), None);
        let w = s.write_metrics(pending.take()).unwrap();
        assert_eq!((w.stored, w.path_limited), (1, 1));
        let owner = s.metric_owner(&t).unwrap().unwrap();
        // The chunk's rejected line is counted once.
        assert_eq!(
            (owner.samples, owner.path_limited, owner.rejected),
            (4, 1, 1)
        );
        let a = &s.metric_paths(Some(&t), None, true).unwrap()[0];
        assert_eq!((a.value, a.samples, a.history.len()), (5.0, 3, 2));
    }

    #[test]
    fn writes_of_many_paths_span_transactions_and_keep_the_path_bound() {
        let s = Store::in_memory().unwrap();
        let t = "6".repeat(32);
        let o = origin(&t, 'c');
        let names: Vec<String> = (0..PATHS_PER_TRANSACTION * 2 + 10)
            .map(|i| format!("p{i}"))
            .collect();
        let samples: Vec<(&str, f64)> = names.iter().map(|n| (n.as_str(), 1.0)).collect();
        let limits = MetricLimits {
            history_per_path: 5,
            max_paths_per_owner: PATHS_PER_TRANSACTION * 2,
        };
        let w = s.record_metrics(&[chunk(&o, &samples)], limits).unwrap();
        assert_eq!((w.stored, w.path_limited), (names.len() as u64 - 10, 10));
        let owner = s.metric_owner(&t).unwrap().unwrap();
        assert_eq!(
            (owner.samples, owner.path_limited, owner.rejected),
            (names.len() as i64 - 10, 10, 1)
        );
    }
}
