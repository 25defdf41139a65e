//! The control API: HTTP/1.1 on a unix socket, for `collector inspect`, `collector tail` and
//! Prometheus.
//!
//! The socket is `<data_dir>/control.sock` (`control.socket`), created with mode 0600: the
//! answers name every container and task on the host, so only its owner (root) may ask. It
//! is the last thing to stop at shutdown, so a draining daemon can still be inspected.
//!
//! # Endpoints
//! Every answer is JSON unless said otherwise; errors are
//! `{"error": "usage"|"not_found"|"ambiguous"|"internal", "message": ..., "candidates": [...]}`
//! with status 400, 404, 400 and 500.
//!
//! | request | answer |
//! |---|---|
//! | `GET /live` | `200 live`: the process serves requests. |
//! | `GET /ready` | `200 ready` once the inventory took a first full discovery scan in (before that, "not found" may mean "not looked at yet"); `503` until then. |
//! | `GET /metrics` | The collector's own health in the Prometheus text format 0.0.4 (`crate::internal_events::names`). |
//! | `GET /v1/overview[?all=1]` | [`Overview`](crate::inspect::Overview): every task and container, one row each, with how far behind; removed containers only with `all`. |
//! | `GET /v1/inspect?q=THING[&kind=KIND]` | [`Inspection`](crate::inspect::Inspection): the whole chain for a PID, container id, short id or name, cgroup id or path, task ARN or task id. `KIND` is one of `pid`, `cgroup-id`, `cgroup-path`, `container`, `task`. |
//! | `GET /v1/containers/{id, short id or name}` | The same as `inspect` with `kind=container`. |
//! | `GET /v1/tasks/{ARN or task id}` | The same as `inspect` with `kind=task`. |
//! | `GET /v1/metrics/tasks/{ARN or task id}[?history=1]` | [`OwnerMetrics`](crate::metrics::api::OwnerMetrics): the task's Graphite/StatsD metrics: latest value per path (and, with `history`, the kept history, newest first), who sent it, and what the task lost (`rejected`, `rate_limited`, `path_limited`). Kept after the task ends for `metrics.retention`. |
//! | `GET /v1/metrics/containers/{container id}[?history=1]` | The same for a container outside any task. |
//! | `GET /v1/metrics/unattributed[?history=1]` | The same for senders no container was found for. |
//! | `GET /v1/sinks` | `[{"sink", "location", "records", "bytes", "batches", "errors", "last_error", "last_error_at"}]`. |
//! | `GET /v1/tail?q=THING[&kind=KIND]` | A stream of JSON lines (`application/x-ndjson`): first `{"following": {...}}` naming the task and containers, then one `{"container_id", "name", "file", "stream", "time", "message"}` per delivered line (`stream`: `stdout`, `stderr`, `lifecycle` for the collector's record of how a run ended, or `null` for a declared file), `{"dropped": n}` when this reader fell behind and missed `n` batches, and `{"end": reason}` before the stream closes (every container of it exited and its files were read to the end, or the daemon stops). |
//!
//! Metric labels are low-cardinality only (`sink`, `event`, `source`, `state`, and for metrics
//! ingest `transport` and `reason`); container ids
//! and task ARNs are in the JSON endpoints, never in `/metrics`.
//!
//! # Layout
//! - `view.rs`: [`InventoryView`], the live state the inventory and the delivery tap publish.
//! - `tap.rs`: observers on the shipper's sink list (read and delivery counts, `tail` feed).
//! - `server.rs`: the listener and the routes above.
//! - `client.rs`: the CLI's side.
//! - `companion.rs`: the companion API, on its own socket (the drain barrier, `crate::drain`).
//! - `metrics.rs`: the Prometheus text.

mod client;
mod companion;
mod metrics;
mod server;
mod socket;
mod tap;
mod view;

use std::path::PathBuf;

pub use client::{ControlClient, percent_decode, percent_encode};
pub use companion::CompanionServer;
pub use metrics::render_metrics;
pub use server::{ControlServer, ControlState};
pub use socket::bind_shared;
pub use tap::{
    CountingSink, DeliveryTap, LastError, ReadTap, SinkStats, TAIL_CHANNEL_BATCHES, TailBatch,
    TailLine, TailSender,
};
pub use view::{
    Delivered, InventoryView, LiveContainer, LiveSource, MAX_REMOVED_KEPT, REMOVED_KEPT_FOR,
};

/// Errors of the control API, on both sides.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The socket could not be created.
    #[error("cannot listen on {path}")]
    BindSocket {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Another process answers on the socket: two daemons must not share a data directory.
    #[error("another collector already serves {path}")]
    SocketInUse {
        /// The socket path.
        path: PathBuf,
    },
    /// Something that is not a socket is where the socket goes; it is left alone.
    #[error("{path} exists and is not a socket")]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// Nothing answers on the socket (no daemon, or it is not ours to read).
    #[error("cannot connect to {path}")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("control API request to {path} failed")]
    Request {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: hyper::Error,
    },
    /// The daemon's answer is not what this build expects (another version?).
    #[error("cannot decode the control API's answer")]
    Decode {
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

/// Test helpers shared by this module's tests: batches made the way the tailer makes them.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use crate::batch::{Batch, SourceInfo};
    use crate::identify::{ContainerId, ContainerIdentity};
    use crate::state::{Checkpoint, CheckpointUpdate, SourceCounters};
    use crate::tail::fingerprint::Fingerprint;
    use crate::tail::{LogRecord, LogRecords, StdStream};

    /// A batch of stdout `lines` of container `aaaa...`, acknowledging `offset`.
    pub(crate) fn test_batch(lines: &[&str], offset: u64) -> Batch {
        let id = ContainerId::parse(&"a".repeat(64)).expect("valid id");
        let mut records = LogRecords::new();
        for l in lines {
            records.push_copy(LogRecord {
                time: b"2026-01-01T00:00:00.000000001Z",
                stream: Some(StdStream::Stdout),
                message: l.as_bytes(),
                split: false,
            });
        }
        let source = Arc::new(SourceInfo::container_output(id.clone()));
        Batch {
            ack: CheckpointUpdate {
                source: source.key.clone(),
                container_id: id.to_string(),
                checkpoint: Checkpoint {
                    fingerprint: Fingerprint {
                        dev: 1,
                        ino: 2,
                        head_len: 0,
                        head_hash: 0,
                    },
                    path: "/x.log".into(),
                    offset,
                },
                counters: SourceCounters {
                    lines: lines.len() as u64,
                    bytes: offset,
                    ..Default::default()
                },
            },
            source,
            identity: Arc::new(ContainerIdentity::new(id)),
            records,
            last: false,
        }
    }
}
