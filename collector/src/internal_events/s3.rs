//! Self-telemetry of the S3 archive sink: counters and metric names (rendered by `/metrics`
//! through [`render`] when the sink is enabled).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::{info, warn};

/// Chunks sealed from the spool.
pub const CHUNKS_SEALED: &str = "collector_s3_chunks_sealed_total";
/// Objects written (chunks, manifests, markers).
pub const OBJECTS_UPLOADED: &str = "collector_s3_objects_uploaded_total";
/// Bytes of objects written.
pub const BYTES_UPLOADED: &str = "collector_s3_uploaded_bytes_total";
/// Parts of multipart uploads written.
pub const PARTS_UPLOADED: &str = "collector_s3_multipart_parts_total";
/// Tasks whose archive is complete (manifest and marker written).
pub const TASKS_COMPLETED: &str = "collector_s3_tasks_completed_total";
/// Upload passes that failed (each retried with backoff).
pub const UPLOAD_ERRORS: &str = "collector_s3_upload_errors_total";

/// The sink's counters.
#[derive(Debug)]
pub struct S3Counters {
    /// See [`CHUNKS_SEALED`].
    pub chunks_sealed: AtomicU64,
    /// See [`OBJECTS_UPLOADED`].
    pub objects: AtomicU64,
    /// See [`BYTES_UPLOADED`].
    pub bytes: AtomicU64,
    /// See [`PARTS_UPLOADED`].
    pub parts: AtomicU64,
    /// See [`TASKS_COMPLETED`].
    pub tasks_completed: AtomicU64,
    /// See [`UPLOAD_ERRORS`].
    pub upload_errors: AtomicU64,
}

/// The counters.
pub static COUNTERS: S3Counters = S3Counters {
    chunks_sealed: AtomicU64::new(0),
    objects: AtomicU64::new(0),
    bytes: AtomicU64::new(0),
    parts: AtomicU64::new(0),
    tasks_completed: AtomicU64::new(0),
    upload_errors: AtomicU64::new(0),
};

/// A unit's spool was sealed into a chunk.
pub struct S3ChunkSealed<'a> {
    /// The unit (`tasks/<task id>`).
    pub unit: &'a str,
    /// The last chunk of an ended task.
    pub last: bool,
}

impl S3ChunkSealed<'_> {
    /// Logs and counts.
    pub fn emit(self) {
        COUNTERS.chunks_sealed.fetch_add(1, Ordering::Relaxed);
        info!(unit = self.unit, last = self.last, "S3 chunk sealed.");
    }
}

/// An object was written.
pub struct S3ObjectUploaded<'a> {
    /// Its key.
    pub key: &'a str,
    /// Its size.
    pub bytes: u64,
    /// Parts, when it was a multipart upload (0 otherwise).
    pub parts: u64,
}

impl S3ObjectUploaded<'_> {
    /// Logs and counts.
    pub fn emit(self) {
        COUNTERS.objects.fetch_add(1, Ordering::Relaxed);
        COUNTERS.bytes.fetch_add(self.bytes, Ordering::Relaxed);
        COUNTERS.parts.fetch_add(self.parts, Ordering::Relaxed);
        info!(
            key = self.key,
            bytes = self.bytes,
            parts = self.parts,
            "S3 object written."
        );
    }
}

/// A task's archive is complete.
pub struct S3TaskCompleted;

impl S3TaskCompleted {
    /// Counts (the sink logs it).
    pub fn emit(self) {
        COUNTERS.tasks_completed.fetch_add(1, Ordering::Relaxed);
    }
}

/// An upload pass failed; retried with backoff. Nothing is lost: the chunk stays sealed.
pub struct S3UploadFailed<'a> {
    /// The error.
    pub error: &'a dyn std::error::Error,
}

impl S3UploadFailed<'_> {
    /// Logs (the first few, then every 100th) and counts.
    pub fn emit(self) {
        let n = COUNTERS.upload_errors.fetch_add(1, Ordering::Relaxed);
        if n < 10 || n.is_multiple_of(100) {
            warn!(error = %super::chain(self.error), "S3 upload failed; retrying.");
        }
    }
}

/// Appends the sink's metrics in the Prometheus text format.
pub fn render(out: &mut String) {
    let c = &COUNTERS;
    for (name, help, v) in [
        (
            CHUNKS_SEALED,
            "Chunks sealed from the S3 spool.",
            &c.chunks_sealed,
        ),
        (
            OBJECTS_UPLOADED,
            "S3 objects written (chunks, manifests, markers).",
            &c.objects,
        ),
        (BYTES_UPLOADED, "Bytes of S3 objects written.", &c.bytes),
        (
            PARTS_UPLOADED,
            "Parts of S3 multipart uploads written.",
            &c.parts,
        ),
        (
            TASKS_COMPLETED,
            "Task archives completed (manifest and marker written).",
            &c.tasks_completed,
        ),
        (
            UPLOAD_ERRORS,
            "S3 upload passes that failed (retried with backoff).",
            &c.upload_errors,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            v.load(Ordering::Relaxed)
        );
    }
}
