//! Self-telemetry of the CloudWatch Logs sink: its events, counters and metric names.
//!
//! Kept apart from the shared tables in `mod.rs` and `names.rs` so sinks can be added
//! without touching them; `/metrics` renders these through [`render`].

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::{debug, info, warn};

use crate::ship::cloudwatch_batch::BuildStats;

/// PutLogEvents requests acknowledged.
pub const REQUESTS: &str = "collector_cloudwatch_requests_total";
/// PutLogEvents requests that failed (after the SDK's own attempts; each is retried).
pub const REQUEST_ERRORS: &str = "collector_cloudwatch_request_errors_total";
/// Events in acknowledged requests.
pub const EVENTS: &str = "collector_cloudwatch_events_total";
/// Bytes of acknowledged requests as the service counts them (messages + 26 per event).
pub const BYTES: &str = "collector_cloudwatch_sent_bytes_total";
/// The most events one acknowledged request held (gauge, since start).
pub const REQUEST_EVENTS_MAX: &str = "collector_cloudwatch_request_events_max";
/// The largest acknowledged request in bytes (gauge, since start).
pub const REQUEST_BYTES_MAX: &str = "collector_cloudwatch_request_bytes_max";
/// Events the service refused (`rejectedLogEventsInfo`, or a request refused as invalid):
/// lost.
pub const EVENTS_REJECTED: &str = "collector_cloudwatch_events_rejected_total";
/// Records changed to fit the service, by `reason`.
pub const RECORDS_ADJUSTED: &str = "collector_cloudwatch_records_adjusted_total";
/// Log groups and streams created (label `kind`).
pub const RESOURCES_CREATED: &str = "collector_cloudwatch_resources_created_total";

/// The sink's counters.
#[derive(Debug)]
pub struct CloudWatchCounters {
    /// See [`REQUESTS`].
    pub requests: AtomicU64,
    /// See [`REQUEST_ERRORS`].
    pub request_errors: AtomicU64,
    /// See [`EVENTS`].
    pub events: AtomicU64,
    /// See [`BYTES`].
    pub bytes: AtomicU64,
    /// See [`REQUEST_EVENTS_MAX`].
    pub request_events_max: AtomicU64,
    /// See [`REQUEST_BYTES_MAX`].
    pub request_bytes_max: AtomicU64,
    /// See [`EVENTS_REJECTED`].
    pub events_rejected: AtomicU64,
    /// See [`RECORDS_ADJUSTED`], by [`ADJUST_REASONS`].
    pub adjusted: [AtomicU64; ADJUST_REASONS.len()],
    /// Log groups created.
    pub groups_created: AtomicU64,
    /// Log streams created.
    pub streams_created: AtomicU64,
}

/// The `reason` label values of [`RECORDS_ADJUSTED`].
pub const ADJUST_REASONS: [&str; 6] = [
    "invalid_utf8",
    "split",
    "empty_skipped",
    "too_old_clamped",
    "too_new_clamped",
    "bad_time",
];

/// The counters.
pub static COUNTERS: CloudWatchCounters = CloudWatchCounters {
    requests: AtomicU64::new(0),
    request_errors: AtomicU64::new(0),
    events: AtomicU64::new(0),
    bytes: AtomicU64::new(0),
    request_events_max: AtomicU64::new(0),
    request_bytes_max: AtomicU64::new(0),
    events_rejected: AtomicU64::new(0),
    adjusted: [const { AtomicU64::new(0) }; ADJUST_REASONS.len()],
    groups_created: AtomicU64::new(0),
    streams_created: AtomicU64::new(0),
};

/// Records were turned into events; some had to be changed.
pub struct CloudWatchEventsPrepared<'a> {
    /// What changed.
    pub stats: &'a BuildStats,
}

impl CloudWatchEventsPrepared<'_> {
    /// Counts; logs (debug) only when something changed.
    pub fn emit(self) {
        let s = self.stats;
        let values = [
            s.invalid_utf8,
            s.split_records,
            s.empty_skipped,
            s.clamped_old,
            s.clamped_future,
            s.bad_time,
        ];
        for (c, v) in COUNTERS.adjusted.iter().zip(values) {
            if v > 0 {
                c.fetch_add(v, Ordering::Relaxed);
            }
        }
        if values.iter().any(|&v| v > 0) {
            debug!(?s, "Records adjusted to CloudWatch's limits.");
        }
    }
}

/// A PutLogEvents request was acknowledged.
pub struct CloudWatchRequestSent<'a> {
    /// Events in it.
    pub events: u64,
    /// Its size as the service counts it.
    pub bytes: u64,
    /// Events the service refused in its answer.
    pub rejected: u64,
    /// The group.
    pub group: &'a str,
    /// The stream.
    pub stream: &'a str,
}

impl CloudWatchRequestSent<'_> {
    /// Counts (debug log: per request).
    pub fn emit(self) {
        let c = &COUNTERS;
        c.requests.fetch_add(1, Ordering::Relaxed);
        c.events.fetch_add(self.events, Ordering::Relaxed);
        c.bytes.fetch_add(self.bytes, Ordering::Relaxed);
        c.request_events_max
            .fetch_max(self.events, Ordering::Relaxed);
        c.request_bytes_max.fetch_max(self.bytes, Ordering::Relaxed);
        debug!(
            group = self.group,
            stream = self.stream,
            events = self.events,
            bytes = self.bytes,
            "PutLogEvents acknowledged."
        );
        if self.rejected > 0 {
            c.events_rejected
                .fetch_add(self.rejected, Ordering::Relaxed);
            warn!(
                group = self.group,
                stream = self.stream,
                rejected = self.rejected,
                "CloudWatch refused events of a request (too old, too new or expired); they are lost."
            );
        }
    }
}

/// A request failed (it will be retried).
pub struct CloudWatchRequestFailed;

impl CloudWatchRequestFailed {
    /// Counts (the shipper logs the error).
    pub fn emit(self) {
        COUNTERS.request_errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// Events refused without an answer per event (a request refused as invalid).
pub struct CloudWatchEventsRejected {
    /// How many.
    pub events: u64,
}

impl CloudWatchEventsRejected {
    /// Counts (the sink logs the error).
    pub fn emit(self) {
        COUNTERS
            .events_rejected
            .fetch_add(self.events, Ordering::Relaxed);
    }
}

/// A log group or stream was created.
pub struct CloudWatchResourceCreated<'a> {
    /// `log_group` or `log_stream`.
    pub kind: &'static str,
    /// Its name.
    pub name: &'a str,
}

impl CloudWatchResourceCreated<'_> {
    /// Logs and counts.
    pub fn emit(self) {
        let c = if self.kind == "log_group" {
            &COUNTERS.groups_created
        } else {
            &COUNTERS.streams_created
        };
        c.fetch_add(1, Ordering::Relaxed);
        info!(
            kind = self.kind,
            name = self.name,
            "CloudWatch resource created."
        );
    }
}

/// Appends the sink's metrics in the Prometheus text format.
pub fn render(out: &mut String) {
    let c = &COUNTERS;
    let mut one = |name: &str, kind: &str, help: &str, v: &AtomicU64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
            v.load(Ordering::Relaxed)
        );
    };
    one(
        REQUESTS,
        "counter",
        "PutLogEvents requests acknowledged.",
        &c.requests,
    );
    one(
        REQUEST_ERRORS,
        "counter",
        "PutLogEvents requests that failed after the SDK's attempts (retried).",
        &c.request_errors,
    );
    one(
        EVENTS,
        "counter",
        "Events in acknowledged requests.",
        &c.events,
    );
    one(
        BYTES,
        "counter",
        "Bytes of acknowledged requests, messages plus 26 per event.",
        &c.bytes,
    );
    one(
        REQUEST_EVENTS_MAX,
        "gauge",
        "Most events in one acknowledged request since start.",
        &c.request_events_max,
    );
    one(
        REQUEST_BYTES_MAX,
        "gauge",
        "Largest acknowledged request in bytes since start.",
        &c.request_bytes_max,
    );
    one(
        EVENTS_REJECTED,
        "counter",
        "Events CloudWatch refused (too old, too new, expired, invalid): lost.",
        &c.events_rejected,
    );
    let _ = writeln!(
        out,
        "# HELP {RECORDS_ADJUSTED} Records changed to fit CloudWatch's limits, by reason.\n# TYPE {RECORDS_ADJUSTED} counter"
    );
    for (reason, v) in ADJUST_REASONS.iter().zip(&c.adjusted) {
        let _ = writeln!(
            out,
            "{RECORDS_ADJUSTED}{{reason=\"{reason}\"}} {}",
            v.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(
        out,
        "# HELP {RESOURCES_CREATED} Log groups and streams created.\n# TYPE {RESOURCES_CREATED} counter\n{RESOURCES_CREATED}{{kind=\"log_group\"}} {}\n{RESOURCES_CREATED}{{kind=\"log_stream\"}} {}",
        c.groups_created.load(Ordering::Relaxed),
        c.streams_created.load(Ordering::Relaxed)
    );
}
