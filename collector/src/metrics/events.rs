//! Self-telemetry of metrics ingest: process-wide counters, rendered into `/metrics` by
//! [`render`]. Per-task counts (what one task lost) are in the state database and the JSON
//! API instead: labels here stay low-cardinality (`reason`, `transport`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use super::parse::Rejection;

/// The `transport` label values.
pub const TRANSPORTS: [&str; 4] = ["tcp", "udp", "unix", "statsd"];

/// Counters of metrics ingest.
#[derive(Debug)]
pub struct MetricsCounters {
    /// Samples accepted, by transport.
    pub accepted: [AtomicU64; TRANSPORTS.len()],
    /// Lines rejected, by reason ([`Rejection::ALL`]).
    pub rejected: [AtomicU64; Rejection::ALL.len()],
    /// Samples over their task's rate bound.
    pub rate_limited: AtomicU64,
    /// Samples of a path beyond the task's path bound.
    pub path_limited: AtomicU64,
    /// UDP samples dropped because the ingest queue was full.
    pub queue_full: AtomicU64,
    /// Connections refused over the per-peer bound.
    pub connections_refused: AtomicU64,
    /// Samples no task or container could be found for (kept as "unattributed").
    pub unattributed: AtomicU64,
    /// Samples written to the state database.
    pub stored: AtomicU64,
    /// Store writes that failed (their samples are lost to the store, not to the forwarder).
    pub store_errors: AtomicU64,
    /// Samples the carbon forwarder wrote to its server.
    pub forwarded: AtomicU64,
    /// Samples the carbon forwarder dropped (queue full while the server was away).
    pub forward_dropped: AtomicU64,
    /// Connection attempts to the carbon server that failed.
    pub forward_errors: AtomicU64,
    /// Listener bind or accept failures (each retried).
    pub listener_errors: AtomicU64,
    /// StatsD lines rejected (any reason).
    pub statsd_rejected: AtomicU64,
    /// EMF lines handed to the shipper.
    pub emf_lines: AtomicU64,
    /// Samples the EMF writer dropped (queue full, over a bound, not a metric name).
    pub emf_dropped: AtomicU64,
}

/// The counters.
pub static COUNTERS: MetricsCounters = MetricsCounters {
    accepted: [const { AtomicU64::new(0) }; TRANSPORTS.len()],
    rejected: [const { AtomicU64::new(0) }; Rejection::ALL.len()],
    rate_limited: AtomicU64::new(0),
    path_limited: AtomicU64::new(0),
    queue_full: AtomicU64::new(0),
    connections_refused: AtomicU64::new(0),
    unattributed: AtomicU64::new(0),
    stored: AtomicU64::new(0),
    store_errors: AtomicU64::new(0),
    forwarded: AtomicU64::new(0),
    forward_dropped: AtomicU64::new(0),
    forward_errors: AtomicU64::new(0),
    listener_errors: AtomicU64::new(0),
    statsd_rejected: AtomicU64::new(0),
    emf_lines: AtomicU64::new(0),
    emf_dropped: AtomicU64::new(0),
};

/// Adds `n` to a counter.
pub fn add(c: &AtomicU64, n: u64) {
    if n > 0 {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// Metric names (`collector_metrics_*`).
pub mod names {
    /// Samples accepted (label `transport`).
    pub const ACCEPTED: &str = "collector_metrics_accepted_samples_total";
    /// Lines rejected (label `reason`).
    pub const REJECTED: &str = "collector_metrics_rejected_lines_total";
    /// Samples dropped (label `reason`: `rate_limit`, `path_limit`, `queue_full`).
    pub const DROPPED: &str = "collector_metrics_dropped_samples_total";
    /// Connections refused over the per-peer bound.
    pub const CONNECTIONS_REFUSED: &str = "collector_metrics_connections_refused_total";
    /// Samples kept as unattributed.
    pub const UNATTRIBUTED: &str = "collector_metrics_unattributed_samples_total";
    /// Samples stored.
    pub const STORED: &str = "collector_metrics_stored_samples_total";
    /// Failed store writes.
    pub const STORE_ERRORS: &str = "collector_metrics_store_errors_total";
    /// Samples forwarded to carbon.
    pub const FORWARDED: &str = "collector_metrics_forwarded_samples_total";
    /// Samples the forwarder dropped.
    pub const FORWARD_DROPPED: &str = "collector_metrics_forward_dropped_samples_total";
    /// Failed carbon connections or writes.
    pub const FORWARD_ERRORS: &str = "collector_metrics_forward_errors_total";
    /// Listener failures.
    pub const LISTENER_ERRORS: &str = "collector_metrics_listener_errors_total";
    /// StatsD lines rejected.
    pub const STATSD_REJECTED: &str = "collector_metrics_statsd_rejected_lines_total";
    /// EMF lines written.
    pub const EMF_LINES: &str = "collector_metrics_emf_lines_total";
    /// Samples the EMF writer dropped.
    pub const EMF_DROPPED: &str = "collector_metrics_emf_dropped_samples_total";
}

/// Appends the metrics-ingest families to a Prometheus text exposition.
pub fn render(out: &mut String) {
    let c = &COUNTERS;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let family = |out: &mut String, name: &str, help: &str, samples: &[(&str, &str, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (label, value, n) in samples {
            if label.is_empty() {
                let _ = writeln!(out, "{name} {n}");
            } else {
                let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {n}");
            }
        }
    };
    let accepted: Vec<_> = TRANSPORTS
        .iter()
        .zip(&c.accepted)
        .map(|(t, a)| ("transport", *t, load(a)))
        .collect();
    family(
        out,
        names::ACCEPTED,
        "Metric samples accepted, by transport.",
        &accepted,
    );
    let rejected: Vec<_> = Rejection::ALL
        .iter()
        .zip(&c.rejected)
        .map(|(r, a)| ("reason", r.as_str(), load(a)))
        .collect();
    family(
        out,
        names::REJECTED,
        "Graphite lines rejected, by reason.",
        &rejected,
    );
    family(
        out,
        names::DROPPED,
        "Valid samples dropped over a bound, by reason.",
        &[
            ("reason", "rate_limit", load(&c.rate_limited)),
            ("reason", "path_limit", load(&c.path_limited)),
            ("reason", "queue_full", load(&c.queue_full)),
        ],
    );
    for (name, help, counter) in [
        (
            names::CONNECTIONS_REFUSED,
            "Connections closed over the per-peer bound.",
            &c.connections_refused,
        ),
        (
            names::UNATTRIBUTED,
            "Samples from senders that are no known container.",
            &c.unattributed,
        ),
        (
            names::STORED,
            "Samples written to the state database.",
            &c.stored,
        ),
        (
            names::STORE_ERRORS,
            "State database writes of samples that failed.",
            &c.store_errors,
        ),
        (
            names::FORWARDED,
            "Samples written to the carbon server.",
            &c.forwarded,
        ),
        (
            names::FORWARD_DROPPED,
            "Samples the carbon forwarder dropped (queue full).",
            &c.forward_dropped,
        ),
        (
            names::FORWARD_ERRORS,
            "Failed connections or writes to the carbon server (retried).",
            &c.forward_errors,
        ),
        (
            names::LISTENER_ERRORS,
            "Metrics listener bind or accept failures (retried).",
            &c.listener_errors,
        ),
        (
            names::STATSD_REJECTED,
            "StatsD lines rejected.",
            &c.statsd_rejected,
        ),
        (
            names::EMF_LINES,
            "CloudWatch Embedded Metric Format lines handed to the sinks.",
            &c.emf_lines,
        ),
        (
            names::EMF_DROPPED,
            "Samples the EMF writer dropped (queue full, over a bound, or not a metric name).",
            &c.emf_dropped,
        ),
    ] {
        family(out, name, help, &[("", "", load(counter))]);
    }
}
