//! SQLite state: checkpoints, per-source counters, and the history of containers.
//!
//! One database file, `<data_dir>/state.db`, in WAL mode with `synchronous = NORMAL`: a
//! commit survives a crash of the collector process (the WAL is in the page cache and the
//! kernel writes it) without an fsync per commit; only a power loss can take the last
//! commits, and then the sinks re-send rather than lose (checkpoints lag, never lead).
//! Operators can read it with the `sqlite3` shell; `docs/state.md` lists the schema.
//!
//! All access goes through [`Store`], a cheap-clone handle over one connection behind a
//! mutex: every statement is short (microseconds), so contention is not worth a pool.

mod checkpoint;
mod history;
mod metrics;
mod query;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::Connection;

pub use checkpoint::{Checkpoint, CheckpointUpdate, SourceCounters};
pub use history::{ContainerRecord, Death, DeathSource, Lifecycle};
pub use metrics::{MetricLimits, MetricOwnerRecord, MetricPathRecord, MetricWrite, PendingMetrics};
pub use query::{ContainerMatch, SourceRecord};

/// The schema version this build writes. Migrations below upgrade older files.
pub const SCHEMA_VERSION: i64 = 6;

/// Errors from the state database.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}")]
    CreateDataDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The database could not be opened or migrated.
    #[error("cannot open state database {path}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// The file was written by a newer collector.
    #[error(
        "state database {path} has schema version {found}, newer than this build's {SCHEMA_VERSION}"
    )]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: i64,
    },
    /// A statement failed.
    #[error("state database {operation} failed")]
    Query {
        /// What was being done.
        operation: &'static str,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// A stored value could not be decoded.
    #[error("state database holds an undecodable {what}")]
    Decode {
        /// Which value.
        what: &'static str,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

/// Cheap-clone handle to the state database.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    /// Schema version of the file (read-only handles do not migrate).
    version: i64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl Store {
    /// Opens (creating if needed) the database and migrates it to [`SCHEMA_VERSION`].
    ///
    /// # Errors
    /// The directory or file cannot be created, the file is not a database, or it was written
    /// by a newer version.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| StateError::CreateDataDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        let open_err = |source| StateError::Open {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA busy_timeout = 5000;
             PRAGMA foreign_keys = ON;",
        )
        .map_err(open_err)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(open_err)?;
        if version > SCHEMA_VERSION {
            return Err(StateError::NewerSchema {
                path: path.to_owned(),
                found: version,
            });
        }
        migrate(&conn, version).map_err(open_err)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            version: SCHEMA_VERSION,
        })
    }

    /// Opens an existing database read-only, for `collector inspect` and the control API:
    /// a second connection, so questions never wait on the daemon's writer (WAL lets readers
    /// and one writer work at once), and nothing is migrated or created.
    ///
    /// # Errors
    /// The file does not exist or is not a database, or it was written by a newer version.
    pub fn open_read_only(path: &Path) -> Result<Self, StateError> {
        use rusqlite::OpenFlags;
        let open_err = |source| StateError::Open {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_err)?;
        conn.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA query_only = ON;")
            .map_err(open_err)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(open_err)?;
        if version > SCHEMA_VERSION {
            return Err(StateError::NewerSchema {
                path: path.to_owned(),
                found: version,
            });
        }
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            version,
        })
    }

    /// An in-memory database, for tests.
    ///
    /// # Errors
    /// Only if SQLite itself fails.
    pub fn in_memory() -> Result<Self, StateError> {
        let conn = Connection::open_in_memory().map_err(|source| StateError::Open {
            path: ":memory:".into(),
            source,
        })?;
        migrate(&conn, 0).map_err(|source| StateError::Open {
            path: ":memory:".into(),
            source,
        })?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            version: SCHEMA_VERSION,
        })
    }

    /// The schema version of the file: a read-only handle may look at an older file whose
    /// tables lack the newer columns.
    pub fn schema_version(&self) -> i64 {
        self.version
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves the connection usable (SQLite rolls back an
        // open transaction when the statement is dropped), so poisoning is not fatal here.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Brings a database at `version` up to [`SCHEMA_VERSION`], one migration at a time.
fn migrate(conn: &Connection, version: i64) -> Result<(), rusqlite::Error> {
    if version < 1 {
        conn.execute_batch(MIGRATION_1)?;
    }
    if version < 2 {
        conn.execute_batch(MIGRATION_2)?;
    }
    if version < 3 {
        conn.execute_batch(MIGRATION_3)?;
    }
    if version < 4 {
        conn.execute_batch(MIGRATION_4)?;
    }
    if version < 5 {
        conn.execute_batch(metrics::MIGRATION_5)?;
    }
    if version < 6 {
        metrics::migrate_6(conn)?;
    }
    Ok(())
}

/// Version 1: checkpoints, source counters, container history.
const MIGRATION_1: &str = "
BEGIN;
CREATE TABLE IF NOT EXISTS checkpoints (
    source      TEXT    NOT NULL,  -- source key: '<container id>/json' or '<container id>/file:<path in container>'
    dev         INTEGER NOT NULL,  -- st_dev of the file
    ino         INTEGER NOT NULL,  -- st_ino of the file
    head_len    INTEGER NOT NULL,  -- bytes of the file head covered by head_hash
    head_hash   INTEGER NOT NULL,  -- FNV-1a of those bytes: tells inode reuse from the same file
    path        TEXT    NOT NULL,  -- host path the file had when last read
    offset      INTEGER NOT NULL,  -- byte offset after the last line every sink acknowledged
    updated_ms  INTEGER NOT NULL,
    PRIMARY KEY (source, dev, ino)
);
CREATE TABLE IF NOT EXISTS sources (
    source        TEXT    PRIMARY KEY,
    container_id  TEXT    NOT NULL,
    path          TEXT    NOT NULL,  -- host path of the live file
    lines         INTEGER NOT NULL DEFAULT 0,  -- records delivered to every sink
    bytes         INTEGER NOT NULL DEFAULT 0,  -- file bytes covered by delivered records
    skipped       INTEGER NOT NULL DEFAULT 0,  -- corrupt lines skipped
    rotations     INTEGER NOT NULL DEFAULT 0,
    truncations   INTEGER NOT NULL DEFAULT 0,
    lost_bytes    INTEGER NOT NULL DEFAULT 0,  -- bytes known lost (truncated before read)
    updated_ms    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sources_container ON sources (container_id);
CREATE TABLE IF NOT EXISTS containers (
    container_id  TEXT    PRIMARY KEY,
    docker_name   TEXT,
    task_id       TEXT,
    task_arn      TEXT,
    cgroup_id     INTEGER,
    cgroup_path   TEXT,
    lifecycle     TEXT    NOT NULL,  -- running | exited | removed
    exit_code     INTEGER,
    oom_killed    INTEGER,
    identity      TEXT    NOT NULL,  -- ContainerIdentity as JSON
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms  INTEGER NOT NULL,
    exited_ms     INTEGER,
    removed_ms    INTEGER
);
CREATE INDEX IF NOT EXISTS containers_task ON containers (task_id);
CREATE INDEX IF NOT EXISTS containers_cgroup ON containers (cgroup_id);
PRAGMA user_version = 1;
COMMIT;
";

/// Version 2: how containers died (eBPF or Docker) and how they were discovered.
/// `exit_code` and `oom_killed` (version 1) keep their meaning; the death record fills them too.
const MIGRATION_2: &str = "
BEGIN;
ALTER TABLE containers ADD COLUMN exit_signal    INTEGER;  -- signal that ended the init process (9 = SIGKILL)
ALTER TABLE containers ADD COLUMN oom_victim_pid INTEGER;  -- host PID the OOM killer chose in this container
ALTER TABLE containers ADD COLUMN exit_pid       INTEGER;  -- host PID of the init process that exited
ALTER TABLE containers ADD COLUMN died_ms        INTEGER;  -- when the last run ended
ALTER TABLE containers ADD COLUMN death_source   TEXT;     -- 'ebpf' (the kernel saw it) | 'docker' (Docker's state)
ALTER TABLE containers ADD COLUMN discovered_via TEXT;     -- first discovery source: ebpf | cgroupfs | procfs | docker_root | docker_api
PRAGMA user_version = 2;
COMMIT;
";

/// Version 3: what `collector inspect` shows after Docker forgot a container: the last PID
/// seen in it (to answer "which container was PID n?", also without eBPF) and Docker's own
/// start and finish times, as Docker wrote them.
const MIGRATION_3: &str = "
BEGIN;
ALTER TABLE containers ADD COLUMN last_pid    INTEGER;  -- last PID seen in it (its init process)
ALTER TABLE containers ADD COLUMN started_at  TEXT;     -- RFC 3339, Docker's State.StartedAt
ALTER TABLE containers ADD COLUMN finished_at TEXT;     -- RFC 3339, Docker's State.FinishedAt
CREATE INDEX IF NOT EXISTS containers_name ON containers (docker_name);
CREATE INDEX IF NOT EXISTS containers_pid ON containers (last_pid);
PRAGMA user_version = 3;
COMMIT;
";

/// Version 4: rotated files lost whole (deleted before they could be opened: their size is
/// unknown, so they are counted as files, beside `lost_bytes`).
const MIGRATION_4: &str = "
BEGIN;
ALTER TABLE sources ADD COLUMN lost_files INTEGER NOT NULL DEFAULT 0;
PRAGMA user_version = 4;
COMMIT;
";

/// Milliseconds since the Unix epoch, for timestamps in the database.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopen_keeps_data_and_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.db");
        {
            let s = Store::open(&path).unwrap();
            s.lock().execute("INSERT INTO sources (source, container_id, path, updated_ms) VALUES ('a','b','c',0)", []).unwrap();
        }
        let s = Store::open(&path).unwrap();
        let n: i64 = s
            .lock()
            .query_row("SELECT count(*) FROM sources", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn version_1_files_migrate_to_2_keeping_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATION_1).unwrap();
            conn.execute(
                "INSERT INTO containers (container_id, lifecycle, exit_code, oom_killed, identity, first_seen_ms, last_seen_ms)
                 VALUES ('c', 'exited', 137, 1, '{}', 1, 1)",
                [],
            )
            .unwrap();
        }
        let s = Store::open(&path).unwrap();
        let conn = s.lock();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let row: (i64, bool, Option<i64>, Option<String>) = conn
            .query_row(
                "SELECT exit_code, oom_killed, exit_signal, death_source FROM containers",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(row, (137, true, None, None));
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        Store::open(&path)
            .unwrap()
            .lock()
            .execute_batch("PRAGMA user_version = 99")
            .unwrap();
        assert!(matches!(
            Store::open(&path),
            Err(StateError::NewerSchema { found: 99, .. })
        ));
    }

    #[test]
    fn version_1_files_are_migrated_and_read_only_handles_see_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATION_1).unwrap();
        }
        let ro = Store::open_read_only(&path).unwrap();
        assert_eq!(ro.schema_version(), 1);
        let s = Store::open(&path).unwrap();
        assert_eq!(s.schema_version(), SCHEMA_VERSION);
        let n: i64 = s
            .lock()
            .query_row("SELECT count(last_pid) FROM containers", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
        let ro = Store::open_read_only(&path).unwrap();
        assert_eq!(ro.schema_version(), SCHEMA_VERSION);
        assert!(
            ro.lock().execute("DELETE FROM containers", []).is_err(),
            "read-only handle wrote"
        );
    }

    #[test]
    fn read_only_open_of_a_missing_file_fails_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        assert!(Store::open_read_only(&path).is_err());
        assert!(!path.exists());
    }

    #[test]
    fn garbage_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        std::fs::write(&path, vec![0x42u8; 8192]).unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(err.to_string().contains("state.db"), "{err}");
    }
}
