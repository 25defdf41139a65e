//! The collector's per-task companion: a static binary in a `FROM scratch` image, container
//! name `collector-companion`, docker label `collector.role=companion`.
//!
//! In the task it:
//! 1. relays Graphite plaintext lines from `127.0.0.1:13290` (TCP and UDP) to the daemon's
//!    `graphite.sock`; the daemon attributes them to the task by the kernel's peer
//!    credentials of the companion;
//! 2. learns its identity (cgroup path, task metadata endpoint) and the names of the task's
//!    other containers;
//! 3. waits until the other containers have exited (or SIGTERM), flushes the relay, and waits
//!    until the daemon has delivered everything the task wrote; then exits with a code that
//!    says how it went.
//!
//! # Layout
//! In data-flow order:
//! - [`cli`]: options, each also an environment variable.
//! - [`framing`]: newline framing with a line-length bound (relay and drain answers).
//! - [`relay`]: the TCP/UDP listeners, the bounded queue and the persistent connection to
//!   `graphite.sock`, and the flush before step B.
//! - [`identity`]: own task and container from `/proc/self/cgroup` and the task metadata
//!   endpoint v4; the other containers' names.
//! - [`drain`]: step A (`exited`), the relay flush, step B (`drained`); its [`drain::client`]
//!   speaks HTTP/1.1 over `companion.sock` and [`drain::ndjson`] reads the streamed answers.
//! - [`signals`]: SIGTERM/SIGINT counting.
//! - [`outcome`]: the final log line and the exit code.
//! - [`health`]: `companion health`.
//!
//! # Wire protocol (daemon side: the collector's companion API)
//!
//! **Metrics.** A stream connection to `$COLLECTOR_SOCKET_DIR/graphite.sock` carrying Graphite
//! plaintext lines, `path value [timestamp]\n`, whole lines only. The companion keeps one
//! connection open. To flush, it half-closes it (`shutdown(SHUT_WR)`) and reads the daemon's
//! `ok <instance>\n` and close: the daemon answers so once every line it read is queued for
//! its store. `<instance>` names the daemon run; the drain's first line names the run that
//! answers it, and when they differ (a restart in between) the relay writes its recent lines
//! again and flushes before asking again. The daemon holds samples in memory for up to its
//! `metrics.flush_interval`, so the relay keeps the lines of the last 10 s (at most 1 MiB,
//! and from the flush on until it exits) and writes them again whenever it sees the daemon
//! go: samples arrive at least once. Lines after a flush go over a new connection.
//!
//! **Drain.** HTTP/1.1 on `$COLLECTOR_SOCKET_DIR/companion.sock`, one request per connection,
//! empty body, answers `200` with `Content-Type: application/x-ndjson`: one JSON object per
//! line, streamed, the last one final.
//! - Step A: `POST /v1/drain?phase=exited[&expect=name1,name2]` (`expect`: the names of the
//!   task's other containers, from the task metadata, comma-separated, each percent-encoded;
//!   absent when unknown). Lines: `{"task": {...}, "caller": {...}}` first, then
//!   `{"waiting": {...}}` about every second, and finally `{"exited": {...}}` when every
//!   other container of the caller's task has exited, or `{"error": {"kind": "...",
//!   "message": "..."}}`.
//! - Step B: `POST /v1/drain[?expect=...]`: the daemon stores every metric sample received
//!   from the task, waits until every other container has exited, their log files are read
//!   to the end, every sink acknowledged every line and (S3 sink on) the task's archive and
//!   its `_COMPLETE` marker are uploaded. Lines: `{"waiting": {...}}`, finally
//!   `{"drained": {"containers": [{"name", "container_id", "exit_code", "lines", "bytes",
//!   "lost_bytes", "lost_files"}], "s3": {...} | null, "elapsed_ms": N}}` or `{"error": ...}`.
//! - Both are idempotent: the companion retries a connection failure, a 5xx answer or an
//!   answer that ends without a final line (daemon restart) with backoff, 200 ms doubling to
//!   2 s. A 4xx answer or an `error` line is final (exit 5). Unknown keys and lines are
//!   ignored, so the daemon can add fields.
//! - The daemon authorises by the caller's peer credentials (`not_in_task`, `forbidden`).
//!
//! # Exit codes
//! | code | outcome |
//! |---|---|
//! | 0 | drained: per-container lines and bytes logged |
//! | 1 | runtime failure before draining (the relay address cannot be bound) |
//! | 2 | the drain deadline (`--drain-timeout`, from `exited` or SIGTERM) passed, naming the step and the last progress; or a second SIGTERM/SIGINT |
//! | 3 | the collector is unreachable: no connect for `--unreachable-timeout` in a row (`0`: forever) while waiting, or until the deadline once draining |
//! | 4 | drained with loss: `lost_bytes` or `lost_files` above 0 (never hidden behind 0) |
//! | 5 | refused by the collector: an `error` line, its message printed |
//! | 64 | usage |
//!
//! # Footprint
//! Measured with `cargo xtask image --only companion` (profile `release-small`:
//! `opt-level = "s"`, fat LTO, one codegen unit, `panic = "abort"`, stripped; target
//! `x86_64-unknown-linux-musl`, static-pie), Rust 1.95, 2026-12-03:
//!
//! | what | size |
//! |---|---|
//! | binary `/companion` | 1 415 200 bytes (1.35 MiB) |
//! | image `collector-companion:latest` (`FROM scratch`, the binary only) | 1.35 MiB |
//! | resident memory while waiting for a collector (`VmRSS`, relay listening, one thread) | 1 368 KiB |
//! | `docker stats` memory usage, same state | 820 KiB |
//!
//! One thread (tokio `current_thread`), musl's allocator, no TLS and no DNS: it connects
//! only to `127.0.0.1`, unix sockets, and the metadata endpoint's IP literal. The relay's
//! memory is bounded by its queue (1 MiB of lines, or `--max-line` plus a read if larger),
//! the recent lines kept for a replay (1 MiB) and 64 served TCP connections (16 KiB read buffer and at most one partial line each).

pub mod cli;
pub mod drain;
pub mod framing;
pub mod health;
pub mod identity;
pub mod outcome;
pub mod relay;
pub mod signals;

mod backoff;

use crate::cli::{Options, Switch};
use crate::drain::DrainSettings;
use crate::outcome::Outcome;
use crate::relay::{RelayHandle, RelaySettings};
use crate::signals::Signals;

/// Runs the companion (`companion run`) to its outcome.
pub async fn run(options: &Options, mut signals: Signals) -> Outcome {
    let relay = match options.relay {
        Switch::On => {
            let settings = RelaySettings {
                listen: options.listen,
                graphite_socket: options.graphite_socket(),
                max_line: options.max_line as usize,
            };
            match RelayHandle::spawn(settings).await {
                Ok(relay) => Some(relay),
                Err(err) => return Outcome::Failed(error_chain(&err)),
            }
        }
        Switch::Off => {
            tracing::info!("Relay off (COLLECTOR_RELAY=off).");
            None
        }
    };
    let identity = identity::resolve(
        &options.cgroup_file,
        options.metadata_uri.as_deref(),
        &options.container_name,
    )
    .await;
    identity.log();
    let settings = DrainSettings {
        socket: options.companion_socket(),
        expect: identity.others,
        drain_timeout: options.drain_timeout,
        unreachable_timeout: options.unreachable_limit(),
    };
    let outcome = drain::run(&settings, relay.as_ref(), &mut signals).await;
    if let Some(relay) = &relay {
        relay.stats().log();
    }
    outcome
}

/// An error and its causes, `: `-separated (what `{:#}` prints for `anyhow`).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
