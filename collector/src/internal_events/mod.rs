//! Self-telemetry: one struct per event, `emit()` logs it and counts it.
//!
//! Counters are process-wide atomics read by the control API's `/metrics` (and by tests);
//! their names follow `collector_<name>[_<unit>]_total` and live in [`names`]. Labels are
//! low-cardinality only: never a container id or task ARN (those go in the log line).

pub mod cloudwatch;
pub mod names;
pub mod s3;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::{debug, error, info, warn};

use crate::tail::format::DecodeError;

/// Process-wide counters.
#[derive(Debug, Default)]
pub struct Counters {
    /// Containers discovered (first sighting).
    pub containers_discovered: AtomicU64,
    /// Log lines skipped as corrupt.
    pub lines_skipped: AtomicU64,
    /// Rotations followed.
    pub files_rotated: AtomicU64,
    /// Truncations seen.
    pub files_truncated: AtomicU64,
    /// Rotated log files deleted before they could be opened.
    pub files_lost: AtomicU64,
    /// Records delivered to every sink.
    pub records_delivered: AtomicU64,
    /// Message bytes delivered to every sink.
    pub bytes_delivered: AtomicU64,
    /// Batches a sink refused (retried).
    pub sink_errors: AtomicU64,
    /// Checkpoint commits that failed (retried).
    pub checkpoint_errors: AtomicU64,
    /// Identity look-ups that failed (Docker, ECS agent).
    pub identify_errors: AtomicU64,
    /// Records read from the eBPF ring buffer.
    pub ebpf_events: AtomicU64,
    /// eBPF records lost in the kernel (ring buffer full).
    pub ebpf_events_dropped: AtomicU64,
    /// Records the shipper took from the tailers (read from log files).
    pub records_read: AtomicU64,
    /// Log file bytes those records covered (format overhead included).
    pub bytes_read: AtomicU64,
    /// Bytes known lost (a file truncated before it was read).
    pub lost_bytes: AtomicU64,
    /// Discovery events the inventory took in, by [`DISCOVERY_EVENTS`] x [`DISCOVERY_SOURCES`].
    pub discovery_events: [[AtomicU64; DISCOVERY_SOURCES.len()]; DISCOVERY_EVENTS.len()],
    /// Batches a slow `collector tail` reader missed (the reader's loss, never the sinks').
    pub tail_batches_dropped: AtomicU64,
}

/// The `event` label values of discovery events.
pub const DISCOVERY_EVENTS: [&str; 5] = [
    "seen",
    "exited",
    "removed",
    "scan_complete",
    "process_exited",
];

/// The `source` label values of discovery events (`DiscoverySource::as_str`).
pub const DISCOVERY_SOURCES: [&str; 5] =
    ["procfs", "cgroupfs", "docker_root", "docker_api", "ebpf"];

/// The counters.
pub static COUNTERS: Counters = Counters {
    containers_discovered: AtomicU64::new(0),
    lines_skipped: AtomicU64::new(0),
    files_rotated: AtomicU64::new(0),
    files_truncated: AtomicU64::new(0),
    files_lost: AtomicU64::new(0),
    records_delivered: AtomicU64::new(0),
    bytes_delivered: AtomicU64::new(0),
    sink_errors: AtomicU64::new(0),
    checkpoint_errors: AtomicU64::new(0),
    identify_errors: AtomicU64::new(0),
    ebpf_events: AtomicU64::new(0),
    ebpf_events_dropped: AtomicU64::new(0),
    records_read: AtomicU64::new(0),
    bytes_read: AtomicU64::new(0),
    lost_bytes: AtomicU64::new(0),
    discovery_events: [const { [const { AtomicU64::new(0) }; DISCOVERY_SOURCES.len()] };
        DISCOVERY_EVENTS.len()],
    tail_batches_dropped: AtomicU64::new(0),
};

fn inc(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// A container was seen for the first time.
pub struct ContainerDiscovered<'a> {
    /// Its id.
    pub container_id: &'a str,
    /// Who saw it.
    pub source: &'static str,
}

impl ContainerDiscovered<'_> {
    /// Logs and counts.
    pub fn emit(self) {
        inc(&COUNTERS.containers_discovered, 1);
        info!(container_id = %self.container_id, via = self.source, "Container discovered.");
    }
}

/// A corrupt line was skipped.
pub struct LogLineSkipped<'a> {
    /// Source key.
    pub source: &'a str,
    /// What was wrong.
    pub error: &'a DecodeError,
}

impl LogLineSkipped<'_> {
    /// Logs and counts. The log is rate-limited to the first few and then every 1000th,
    /// so a corrupt file cannot flood the collector's own log.
    pub fn emit(self) {
        let n = COUNTERS.lines_skipped.fetch_add(1, Ordering::Relaxed);
        if n < 10 || n.is_multiple_of(1000) {
            warn!(source = %self.source, error = %self.error, skipped_total = n + 1, "Corrupt log line skipped.");
        }
    }
}

/// A log file was rotated and the new file picked up.
pub struct LogFileRotated<'a> {
    /// Source key.
    pub source: &'a str,
    /// The new file.
    pub path: &'a Path,
}

impl LogFileRotated<'_> {
    /// Logs and counts.
    pub fn emit(self) {
        inc(&COUNTERS.files_rotated, 1);
        debug!(source = %self.source, path = %self.path.display(), "Log file rotated.");
    }
}

/// A log file shrank below the read offset.
pub struct LogFileTruncated<'a> {
    /// Source key.
    pub source: &'a str,
    /// The file.
    pub path: &'a Path,
    /// Its new size.
    pub size: u64,
    /// Where we were.
    pub offset: u64,
}

impl LogFileTruncated<'_> {
    /// Logs and counts.
    pub fn emit(self) {
        inc(&COUNTERS.files_truncated, 1);
        warn!(source = %self.source, path = %self.path.display(), size = self.size, offset = self.offset,
            "Log file truncated; reading it again from the start.");
    }
}

/// Rotated log files were deleted before the collector could open them: their lines are lost.
pub struct LogFilesLost<'a> {
    /// Source key.
    pub source: &'a str,
    /// The live file's path.
    pub path: &'a Path,
    /// How many files.
    pub files: u64,
}

impl LogFilesLost<'_> {
    /// Logs and counts.
    pub fn emit(self) {
        inc(&COUNTERS.files_lost, self.files);
        error!(source = %self.source, path = %self.path.display(), files = self.files,
            "Rotated log files were deleted before they could be opened; their lines are lost.");
    }
}

/// Every sink acknowledged a batch.
pub struct BatchDelivered {
    /// Records.
    pub records: u64,
    /// Message bytes.
    pub bytes: u64,
}

impl BatchDelivered {
    /// Counts (no log: per batch, hot).
    pub fn emit(self) {
        inc(&COUNTERS.records_delivered, self.records);
        inc(&COUNTERS.bytes_delivered, self.bytes);
    }
}

/// A sink failed to take a batch; it will be retried.
pub struct SinkSendError<'a> {
    /// Sink name.
    pub sink: &'static str,
    /// The error.
    pub error: &'a dyn std::error::Error,
}

impl SinkSendError<'_> {
    /// Logs and counts.
    pub fn emit(self) {
        let n = COUNTERS.sink_errors.fetch_add(1, Ordering::Relaxed);
        if n < 10 || n.is_multiple_of(100) {
            warn!(sink = self.sink, error = %crate::internal_events::chain(self.error), "Sink failed to take a batch; retrying.");
        }
    }
}

/// Persisting checkpoints failed; retried with the next batch.
pub struct CheckpointWriteError<'a> {
    /// The error.
    pub error: &'a dyn std::error::Error,
}

impl CheckpointWriteError<'_> {
    /// Logs and counts.
    pub fn emit(self) {
        inc(&COUNTERS.checkpoint_errors, 1);
        warn!(error = %chain(self.error), "Checkpoint write failed; retrying.");
    }
}

/// An identity look-up failed; the container keeps what is known and is retried on rescan.
pub struct IdentifyError<'a> {
    /// The container.
    pub container_id: &'a str,
    /// Which source.
    pub via: &'static str,
    /// The error.
    pub error: &'a dyn std::error::Error,
}

impl IdentifyError<'_> {
    /// Logs and counts.
    pub fn emit(self) {
        inc(&COUNTERS.identify_errors, 1);
        debug!(container_id = %self.container_id, via = self.via, error = %chain(self.error), "Identity look-up failed.");
    }
}

/// The eBPF programs wrote records (counted from their per-CPU counters).
pub struct EbpfEventsReceived {
    /// Records since the last count.
    pub count: u64,
}

impl EbpfEventsReceived {
    /// Counts (no log: periodic).
    pub fn emit(self) {
        inc(&COUNTERS.ebpf_events, self.count);
    }
}

/// The kernel dropped eBPF records because the ring buffer was full. Discovery is repaired by
/// the periodic rescan; a lost exit leaves the death to Docker's state.
pub struct EbpfEventsDropped {
    /// Records lost since the last count.
    pub count: u64,
    /// Records lost since start.
    pub total: u64,
}

impl EbpfEventsDropped {
    /// Logs (once per counter read, so at most every few seconds) and counts.
    pub fn emit(self) {
        inc(&COUNTERS.ebpf_events_dropped, self.count);
        warn!(
            count = self.count,
            total = self.total,
            "eBPF records dropped (ring buffer full); the rescan repairs discovery."
        );
    }
}

/// The shipper took a batch from the tailers (counted by the control API's read tap).
pub struct BatchRead {
    /// Records.
    pub records: u64,
    /// Log file bytes covered.
    pub bytes: u64,
    /// Bytes the tailer knows were lost before it could read them.
    pub lost_bytes: u64,
}

impl BatchRead {
    /// Counts (no log: per batch, hot).
    pub fn emit(self) {
        inc(&COUNTERS.records_read, self.records);
        inc(&COUNTERS.bytes_read, self.bytes);
        if self.lost_bytes > 0 {
            inc(&COUNTERS.lost_bytes, self.lost_bytes);
        }
    }
}

/// The inventory took in a discovery event.
pub struct DiscoveryEventReceived {
    /// One of [`DISCOVERY_EVENTS`].
    pub event: &'static str,
    /// One of [`DISCOVERY_SOURCES`].
    pub source: &'static str,
}

impl DiscoveryEventReceived {
    /// Counts (no log: the inventory logs what matters).
    pub fn emit(self) {
        let e = DISCOVERY_EVENTS.iter().position(|&n| n == self.event);
        let s = DISCOVERY_SOURCES.iter().position(|&n| n == self.source);
        if let (Some(e), Some(s)) = (e, s) {
            inc(&COUNTERS.discovery_events[e][s], 1);
        }
    }
}

/// A `collector tail` reader fell behind and missed batches.
pub struct TailBatchesDropped {
    /// How many.
    pub batches: u64,
}

impl TailBatchesDropped {
    /// Logs and counts.
    pub fn emit(self) {
        inc(&COUNTERS.tail_batches_dropped, self.batches);
        debug!(
            batches = self.batches,
            "A collector tail reader fell behind; batches skipped for it."
        );
    }
}

/// An error with its causes, `a: b: c`.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
