//! Checkpoints: where each source's files were read up to, as acknowledged by every sink.

use rusqlite::params;

use super::{StateError, Store, now_ms};
use crate::tail::fingerprint::Fingerprint;

/// A stored resume point for one file of a source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The file's identity.
    pub fingerprint: Fingerprint,
    /// Host path it had when last read.
    pub path: String,
    /// Offset after the last acknowledged line.
    pub offset: u64,
}

/// Counters that travel with an acknowledgement and add up in the `sources` table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceCounters {
    /// Records delivered.
    pub lines: u64,
    /// File bytes those records covered.
    pub bytes: u64,
    /// Corrupt lines skipped.
    pub skipped: u64,
    /// Rotations followed.
    pub rotations: u64,
    /// Truncations seen.
    pub truncations: u64,
    /// Bytes known lost.
    pub lost_bytes: u64,
    /// Rotated files deleted before they could be opened (their size is unknown).
    pub lost_files: u64,
}

impl SourceCounters {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &SourceCounters) {
        self.lines += other.lines;
        self.bytes += other.bytes;
        self.skipped += other.skipped;
        self.rotations += other.rotations;
        self.truncations += other.truncations;
        self.lost_bytes += other.lost_bytes;
        self.lost_files += other.lost_files;
    }
}

/// One acknowledged position to persist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointUpdate {
    /// Source key.
    pub source: String,
    /// Container the source belongs to.
    pub container_id: String,
    /// The file and where it was acknowledged up to.
    pub checkpoint: Checkpoint,
    /// What this acknowledgement adds to the source's counters.
    pub counters: SourceCounters,
}

impl Store {
    /// Persists acknowledged positions (one transaction for all of them).
    ///
    /// # Errors
    /// The write failed (disk full, I/O error); nothing of this call is committed then.
    pub fn checkpoint(&self, updates: &[CheckpointUpdate]) -> Result<(), StateError> {
        let q = |source| StateError::Query {
            operation: "checkpoint",
            source,
        };
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(q)?;
        let now = now_ms();
        {
            let mut cp = tx
                .prepare_cached(
                    "INSERT INTO checkpoints (source, dev, ino, head_len, head_hash, path, offset, updated_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (source, dev, ino) DO UPDATE SET
                       head_len = excluded.head_len, head_hash = excluded.head_hash,
                       path = excluded.path, offset = excluded.offset, updated_ms = excluded.updated_ms",
                )
                .map_err(q)?;
            let mut src = tx
                .prepare_cached(
                    "INSERT INTO sources (source, container_id, path, lines, bytes, skipped, rotations, truncations, lost_bytes, updated_ms, lost_files)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                     ON CONFLICT (source) DO UPDATE SET
                       path = excluded.path,
                       lines = lines + excluded.lines, bytes = bytes + excluded.bytes,
                       skipped = skipped + excluded.skipped, rotations = rotations + excluded.rotations,
                       truncations = truncations + excluded.truncations,
                       lost_bytes = lost_bytes + excluded.lost_bytes,
                       lost_files = lost_files + excluded.lost_files,
                       updated_ms = excluded.updated_ms",
                )
                .map_err(q)?;
            for u in updates {
                let fp = &u.checkpoint.fingerprint;
                cp.execute(params![
                    u.source,
                    fp.dev as i64,
                    fp.ino as i64,
                    fp.head_len as i64,
                    fp.head_hash as i64,
                    u.checkpoint.path,
                    u.checkpoint.offset as i64,
                    now
                ])
                .map_err(q)?;
                let c = &u.counters;
                src.execute(params![
                    u.source,
                    u.container_id,
                    u.checkpoint.path,
                    c.lines as i64,
                    c.bytes as i64,
                    c.skipped as i64,
                    c.rotations as i64,
                    c.truncations as i64,
                    c.lost_bytes as i64,
                    now,
                    c.lost_files as i64
                ])
                .map_err(q)?;
            }
        }
        tx.commit().map_err(q)
    }

    /// The stored checkpoints of a source, newest first.
    ///
    /// # Errors
    /// The read failed.
    pub fn checkpoints(&self, source: &str) -> Result<Vec<Checkpoint>, StateError> {
        let q = |source| StateError::Query {
            operation: "read checkpoints",
            source,
        };
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(
                "SELECT dev, ino, head_len, head_hash, path, offset FROM checkpoints
                 WHERE source = ?1 ORDER BY updated_ms DESC",
            )
            .map_err(q)?;
        let rows = st
            .query_map([source], |r| {
                Ok(Checkpoint {
                    fingerprint: Fingerprint {
                        dev: r.get::<_, i64>(0)? as u64,
                        ino: r.get::<_, i64>(1)? as u64,
                        head_len: r.get::<_, i64>(2)? as u32,
                        head_hash: r.get::<_, i64>(3)? as u64,
                    },
                    path: r.get(4)?,
                    offset: r.get::<_, i64>(5)? as u64,
                })
            })
            .map_err(q)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(q)
    }

    /// Forgets checkpoints of a source's files that no longer exist, keeping `keep`.
    ///
    /// # Errors
    /// The write failed.
    pub fn prune_checkpoints(&self, source: &str, keep: &[(u64, u64)]) -> Result<(), StateError> {
        let q = |source| StateError::Query {
            operation: "prune checkpoints",
            source,
        };
        let conn = self.lock();
        let mut st = conn
            .prepare_cached("SELECT dev, ino FROM checkpoints WHERE source = ?1")
            .map_err(q)?;
        let all: Vec<(i64, i64)> = st
            .query_map([source], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(q)?
            .collect::<Result<_, _>>()
            .map_err(q)?;
        for (dev, ino) in all {
            if !keep.contains(&(dev as u64, ino as u64)) {
                conn.execute(
                    "DELETE FROM checkpoints WHERE source = ?1 AND dev = ?2 AND ino = ?3",
                    params![source, dev, ino],
                )
                .map_err(q)?;
            }
        }
        Ok(())
    }

    /// Counters of every source of a container.
    ///
    /// # Errors
    /// The read failed.
    pub fn source_counters(
        &self,
        container_id: &str,
    ) -> Result<Vec<(String, String, SourceCounters)>, StateError> {
        let q = |source| StateError::Query {
            operation: "read sources",
            source,
        };
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(
                "SELECT source, path, lines, bytes, skipped, rotations, truncations, lost_bytes, lost_files
                 FROM sources WHERE container_id = ?1 ORDER BY source",
            )
            .map_err(q)?;
        let rows = st
            .query_map([container_id], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    SourceCounters {
                        lines: r.get::<_, i64>(2)? as u64,
                        bytes: r.get::<_, i64>(3)? as u64,
                        skipped: r.get::<_, i64>(4)? as u64,
                        rotations: r.get::<_, i64>(5)? as u64,
                        truncations: r.get::<_, i64>(6)? as u64,
                        lost_bytes: r.get::<_, i64>(7)? as u64,
                        lost_files: r.get::<_, i64>(8)? as u64,
                    },
                ))
            })
            .map_err(q)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(source: &str, ino: u64, offset: u64, lines: u64) -> CheckpointUpdate {
        CheckpointUpdate {
            source: source.into(),
            container_id: "c".into(),
            checkpoint: Checkpoint {
                fingerprint: Fingerprint {
                    dev: 1,
                    ino,
                    head_len: 10,
                    head_hash: 99,
                },
                path: "/p".into(),
                offset,
            },
            counters: SourceCounters {
                lines,
                bytes: offset,
                ..Default::default()
            },
        }
    }

    #[test]
    fn checkpoints_move_and_counters_add_up() {
        let s = Store::in_memory().unwrap();
        s.checkpoint(&[update("a", 5, 100, 3)]).unwrap();
        s.checkpoint(&[update("a", 5, 250, 4), update("b", 6, 7, 1)])
            .unwrap();
        let cps = s.checkpoints("a").unwrap();
        assert_eq!(cps.len(), 1);
        assert_eq!(cps[0].offset, 250);
        let counters = s.source_counters("c").unwrap();
        assert_eq!(counters[0].2.lines, 7);
        assert_eq!(counters[1].2.lines, 1);
    }

    #[test]
    fn prune_keeps_only_live_files() {
        let s = Store::in_memory().unwrap();
        s.checkpoint(&[update("a", 5, 1, 1), update("a", 6, 1, 1)])
            .unwrap();
        s.prune_checkpoints("a", &[(1, 6)]).unwrap();
        let cps = s.checkpoints("a").unwrap();
        assert_eq!(cps.len(), 1);
        assert_eq!(cps[0].fingerprint.ino, 6);
    }
}
