//! Metric names, in one table (exposed by the control API's `/metrics`).
//!
//! Counters are `collector_<name>[_<unit>]_total` in base units; gauges drop `_total`.
//! Labels are low-cardinality only (`sink`, `event`, `source`, `state`): never a container
//! id or a task ARN.

/// Containers discovered.
pub const CONTAINERS_DISCOVERED: &str = "collector_containers_discovered_total";
/// Corrupt lines skipped.
pub const LINES_SKIPPED: &str = "collector_log_lines_skipped_total";
/// Rotations followed.
pub const FILES_ROTATED: &str = "collector_log_files_rotated_total";
/// Truncations seen.
pub const FILES_TRUNCATED: &str = "collector_log_files_truncated_total";
/// Rotated log files deleted before they could be opened (their lines are lost).
pub const FILES_LOST: &str = "collector_log_files_lost_total";
/// Records delivered to every sink.
pub const RECORDS_DELIVERED: &str = "collector_records_delivered_total";
/// Message bytes delivered to every sink.
pub const BYTES_DELIVERED: &str = "collector_delivered_bytes_total";
/// Failed sends and syncs, per sink (label `sink`); each is retried.
pub const SINK_ERRORS: &str = "collector_sink_errors_total";
/// Checkpoint write errors.
pub const CHECKPOINT_ERRORS: &str = "collector_checkpoint_errors_total";
/// Identity look-up errors.
pub const IDENTIFY_ERRORS: &str = "collector_identify_errors_total";
/// Records read from the eBPF ring buffer.
pub const EBPF_EVENTS: &str = "collector_ebpf_events_total";
/// eBPF records the kernel dropped (ring buffer full).
pub const EBPF_EVENTS_DROPPED: &str = "collector_ebpf_events_dropped_total";
/// Records read from log files (taken by the shipper).
pub const RECORDS_READ: &str = "collector_read_records_total";
/// Log file bytes read (format overhead included).
pub const BYTES_READ: &str = "collector_read_bytes_total";
/// Bytes known lost: truncated before they were read.
pub const LOST_BYTES: &str = "collector_lost_bytes_total";
/// Records each sink took (label `sink`).
pub const SINK_RECORDS: &str = "collector_sink_sent_records_total";
/// Message bytes each sink took (label `sink`).
pub const SINK_BYTES: &str = "collector_sink_sent_bytes_total";
/// Batches each sink took (label `sink`).
pub const SINK_BATCHES: &str = "collector_sink_sent_batches_total";
/// Discovery events taken in (labels `event`, `source`).
pub const DISCOVERY_EVENTS: &str = "collector_discovery_events_total";
/// Batches slow `collector tail` readers missed.
pub const TAIL_BATCHES_DROPPED: &str = "collector_tail_batches_dropped_total";
/// Containers known, by state (gauge, label `state`).
pub const CONTAINERS: &str = "collector_containers";
/// Log sources, by state (gauge, label `state`: `active` or `finished`).
pub const LOG_SOURCES: &str = "collector_log_sources";
/// Bytes written to log files and not yet delivered, summed over active sources (gauge).
pub const BYTES_BEHIND: &str = "collector_log_behind_bytes";
/// Seconds since the daemon started (gauge).
pub const UPTIME: &str = "collector_uptime_seconds";
/// Always 1, labelled with the version (gauge).
pub const BUILD_INFO: &str = "collector_build_info";
