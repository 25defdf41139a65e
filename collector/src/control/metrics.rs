//! `/metrics`: the collector's own health in the Prometheus text exposition format 0.0.4
//! (<https://prometheus.io/docs/instrumenting/exposition_formats/>).
//!
//! Counters come from `internal_events::COUNTERS` and the sinks' [`SinkStats`]; gauges are
//! computed at scrape time from the [`InventoryView`] (a `stat` per active source: cheap, and
//! scrapes are rare). Names are in `internal_events::names`; labels are low-cardinality only.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::tap::SinkStats;
use super::view::InventoryView;
use crate::internal_events::{COUNTERS, DISCOVERY_EVENTS, DISCOVERY_SOURCES, names};
use crate::state::Lifecycle;

/// One exposition, family by family.
struct Exposition {
    out: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let v = v
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(self.out, "{k}=\"{v}\"");
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    fn counter(&mut self, name: &str, help: &str, c: &AtomicU64) {
        self.family(name, "counter", help);
        self.sample(name, &[], c.load(Ordering::Relaxed));
    }
}

/// Renders every metric.
pub fn render_metrics(view: &InventoryView, sinks: &[Arc<SinkStats>], uptime: Duration) -> String {
    let mut e = Exposition { out: String::new() };
    let c = &COUNTERS;
    e.counter(
        names::RECORDS_READ,
        "Records read from log files (taken by the shipper).",
        &c.records_read,
    );
    e.counter(
        names::BYTES_READ,
        "Log file bytes read, format overhead included.",
        &c.bytes_read,
    );
    e.counter(
        names::RECORDS_DELIVERED,
        "Records every sink acknowledged.",
        &c.records_delivered,
    );
    e.counter(
        names::BYTES_DELIVERED,
        "Message bytes every sink acknowledged.",
        &c.bytes_delivered,
    );
    for (name, help, pick) in [
        (names::SINK_RECORDS, "Records each sink took.", 0),
        (names::SINK_BYTES, "Message bytes each sink took.", 1),
        (names::SINK_BATCHES, "Batches each sink took.", 2),
        (
            names::SINK_ERRORS,
            "Failed sends and syncs per sink; each is retried.",
            3,
        ),
    ] {
        e.family(name, "counter", help);
        for s in sinks {
            let v = [&s.records, &s.bytes, &s.batches, &s.errors][pick].load(Ordering::Relaxed);
            e.sample(name, &[("sink", s.name)], v);
        }
    }
    e.counter(
        names::LINES_SKIPPED,
        "Corrupt log lines skipped.",
        &c.lines_skipped,
    );
    e.counter(
        names::LOST_BYTES,
        "Log bytes known lost: truncated before they were read.",
        &c.lost_bytes,
    );
    e.counter(
        names::FILES_ROTATED,
        "Log file rotations followed.",
        &c.files_rotated,
    );
    e.counter(
        names::FILES_TRUNCATED,
        "Log file truncations seen.",
        &c.files_truncated,
    );
    e.counter(
        names::FILES_LOST,
        "Rotated log files deleted before they could be opened: their lines are lost.",
        &c.files_lost,
    );
    e.counter(
        names::CHECKPOINT_ERRORS,
        "Checkpoint commits that failed (retried).",
        &c.checkpoint_errors,
    );
    e.counter(
        names::CONTAINERS_DISCOVERED,
        "Containers seen for the first time.",
        &c.containers_discovered,
    );
    e.counter(
        names::IDENTIFY_ERRORS,
        "Identity look-ups that failed (Docker, ECS agent).",
        &c.identify_errors,
    );
    e.family(
        names::DISCOVERY_EVENTS,
        "counter",
        "Discovery events the inventory took in, by event and source.",
    );
    for (i, event) in DISCOVERY_EVENTS.iter().enumerate() {
        for (j, source) in DISCOVERY_SOURCES.iter().enumerate() {
            // Only the kernel reports process exits: no always-zero series for the others.
            if *event == "process_exited" && *source != "ebpf" {
                continue;
            }
            e.sample(
                names::DISCOVERY_EVENTS,
                &[("event", event), ("source", source)],
                c.discovery_events[i][j].load(Ordering::Relaxed),
            );
        }
    }
    e.counter(
        names::EBPF_EVENTS,
        "Records read from the eBPF ring buffer.",
        &c.ebpf_events,
    );
    e.counter(
        names::EBPF_EVENTS_DROPPED,
        "eBPF records the kernel dropped (ring buffer full); the rescan repairs discovery.",
        &c.ebpf_events_dropped,
    );
    e.counter(
        names::TAIL_BATCHES_DROPPED,
        "Batches slow `collector tail` readers missed (never data the sinks miss).",
        &c.tail_batches_dropped,
    );

    let containers = view.containers();
    e.family(
        names::CONTAINERS,
        "gauge",
        "Containers known to the running inventory, by state.",
    );
    for (state, lifecycle) in [
        ("running", Lifecycle::Running),
        ("exited", Lifecycle::Exited),
        ("removed", Lifecycle::Removed),
    ] {
        e.sample(
            names::CONTAINERS,
            &[("state", state)],
            containers
                .iter()
                .filter(|c| c.lifecycle == lifecycle)
                .count(),
        );
    }
    let sources: Vec<_> = containers.iter().flat_map(|c| c.sources.iter()).collect();
    e.family(
        names::LOG_SOURCES,
        "gauge",
        "Log sources, by state: read now, or read to their end after their container exited.",
    );
    e.sample(
        names::LOG_SOURCES,
        &[("state", "active")],
        sources.iter().filter(|(_, s)| s.active).count(),
    );
    e.sample(
        names::LOG_SOURCES,
        &[("state", "finished")],
        sources.iter().filter(|(_, s)| !s.active).count(),
    );
    let behind: u64 = sources
        .iter()
        .filter(|(_, s)| s.active)
        .filter_map(|(key, s)| {
            let at = view.delivered(key).map(|d| (d.dev, d.ino, d.offset));
            crate::inspect::bytes_behind(Path::new(&s.path), at).1
        })
        .sum();
    e.family(
        names::BYTES_BEHIND,
        "gauge",
        "Bytes written to log files and not yet delivered, over active sources.",
    );
    e.sample(names::BYTES_BEHIND, &[], behind);
    e.family(names::UPTIME, "gauge", "Seconds since the daemon started.");
    e.sample(names::UPTIME, &[], uptime.as_secs());
    e.family(
        names::BUILD_INFO,
        "gauge",
        "Always 1; the version is a label.",
    );
    e.sample(
        names::BUILD_INFO,
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    crate::metrics::events::render(&mut e.out);
    if sinks.iter().any(|s| s.name == "cloudwatch") {
        crate::internal_events::cloudwatch::render(&mut e.out);
    }
    if sinks.iter().any(|s| s.name == "s3") {
        crate::internal_events::s3::render(&mut e.out);
    }
    e.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_has_a_typed_family_and_a_valid_name() {
        let sinks = vec![Arc::new(SinkStats::new("file", "/x".into()))];
        let text = render_metrics(&InventoryView::new(), &sinks, Duration::from_secs(3));
        let mut typed = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(matches!(kind, "counter" | "gauge"), "{line}");
                assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
                assert!(typed.insert(name.to_owned()), "family twice: {line}");
            } else if !line.starts_with("# HELP ") {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(typed.contains(name), "untyped sample: {line}");
                assert!(
                    name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                    "{line}"
                );
                assert!(
                    !line.contains("container_id") && !line.contains("task"),
                    "{line}"
                );
            }
        }
        assert!(text.contains("collector_sink_sent_records_total{sink=\"file\"} 0\n"));
        assert!(text.contains("collector_uptime_seconds 3\n"));
    }
}
