//! Metric names, in one table (exposed by the control API's `/metrics`).

/// Containers discovered.
pub const CONTAINERS_DISCOVERED: &str = "collector_containers_discovered_total";
/// Corrupt lines skipped.
pub const LINES_SKIPPED: &str = "collector_log_lines_skipped_total";
/// Rotations followed.
pub const FILES_ROTATED: &str = "collector_log_files_rotated_total";
/// Truncations seen.
pub const FILES_TRUNCATED: &str = "collector_log_files_truncated_total";
/// Records delivered to every sink.
pub const RECORDS_DELIVERED: &str = "collector_records_delivered_total";
/// Message bytes delivered to every sink.
pub const BYTES_DELIVERED: &str = "collector_delivered_bytes_total";
/// Sink errors.
pub const SINK_ERRORS: &str = "collector_sink_errors_total";
/// Checkpoint write errors.
pub const CHECKPOINT_ERRORS: &str = "collector_checkpoint_errors_total";
/// Identity look-up errors.
pub const IDENTIFY_ERRORS: &str = "collector_identify_errors_total";
/// Records read from the eBPF ring buffer.
pub const EBPF_EVENTS: &str = "collector_ebpf_events_total";
/// eBPF records the kernel dropped (ring buffer full).
pub const EBPF_EVENTS_DROPPED: &str = "collector_ebpf_events_dropped_total";
