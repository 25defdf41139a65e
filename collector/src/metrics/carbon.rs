//! The `carbon` forwarder: relays accepted samples to a Graphite server over TCP plaintext,
//! the sender's identity in the path (`metrics.carbon.template`).
//!
//! One connection; on a failed connect or write it reconnects with a back-off doubling from
//! [`BACKOFF_MIN`] to `max_backoff`. The lines of a write that failed are kept and written
//! again first (the server may then see some twice). Before each write the connection is
//! checked for the server's FIN (a server never writes to us, so a readable socket means it
//! closed): a restarted server is reconnected to instead of written into a dead connection.
//! A write the kernel took is counted as forwarded: TCP cannot tell whether the server read
//! it before it went away, so a server crash in the middle of a write may lose it. While the server is away, chunks wait in the bounded
//! queue and the excess is dropped and counted
//! (`collector_metrics_forward_dropped_samples_total`).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::events::{self, COUNTERS};
use super::{CarbonConfig, Chunk, Origin, Sample};

/// First wait before a reconnection.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);

/// How long a connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Chunks formatted into one write.
const CHUNKS_PER_WRITE: usize = 256;

/// Renders the forwarded path of `sample` from `template`.
pub fn render_path(template: &str, unattributed: &str, origin: &Origin, sample: &Sample) -> String {
    let template = if origin.is_unattributed() {
        unattributed
    } else {
        template
    };
    let revision = origin.revision.map(|r| r.to_string());
    let container_id = origin.container_id.as_ref().map(|c| c.short().to_owned());
    let mut out = String::with_capacity(template.len() + sample.path.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let name = &rest[open + 1..open + close];
        let value = match name {
            "path" => Some(sample.path.as_str()),
            "cluster" => origin.cluster.as_deref().map(cluster_name),
            "family" => origin.family.as_deref(),
            "revision" => revision.as_deref(),
            "task_id" => origin.task_id.as_ref().map(|t| t.as_str()),
            "container_name" => origin.container_name.as_deref(),
            "container_id" => container_id.as_deref(),
            _ => None,
        };
        if name == "path" {
            out.push_str(&sample.path);
        } else {
            push_component(&mut out, value.unwrap_or("unknown"));
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

/// The cluster's short name when it is given as an ARN (Fargate).
fn cluster_name(c: &str) -> &str {
    c.rsplit_once('/').map_or(c, |(_, name)| name)
}

/// One path component: characters that would add a level or break the line become `_`.
fn push_component(out: &mut String, value: &str) {
    out.extend(value.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            c
        } else {
            '_'
        }
    }));
}

/// Formats chunks as plaintext lines.
///
/// The template is rendered once per chunk (its samples share one origin) around a marker
/// path, and each line is the rendered text with the sample's path in the marker's place:
/// rendering it per sample (three allocations, a scan of the template) was a fifth of the
/// ingest's CPU. The marker is a NUL, which no accepted path holds and identity values
/// never render to; a template that renders it other than once is rendered per sample.
fn format(config: &CarbonConfig, chunks: &[Arc<Chunk>], out: &mut String) -> u64 {
    let marker = Sample {
        path: "\0".to_owned(),
        value: 0.0,
        timestamp: 0,
    };
    let mut n = 0;
    for c in chunks {
        let around = render_path(
            &config.template,
            &config.unattributed_template,
            &c.origin,
            &marker,
        );
        let split = around
            .split_once('\0')
            .filter(|(_, after)| !after.contains('\0'));
        for s in &c.samples {
            match split {
                Some((before, after)) => {
                    out.push_str(before);
                    out.push_str(&s.path);
                    out.push_str(after);
                }
                None => out.push_str(&render_path(
                    &config.template,
                    &config.unattributed_template,
                    &c.origin,
                    s,
                )),
            }
            out.push(' ');
            push_value(out, s.value);
            let _ = writeln!(out, " {}", s.timestamp);
            n += 1;
        }
    }
    n
}

/// Writes `value` exactly as `Display` does, integral values through `i64`: float
/// formatting was the forwarder's largest cost, and counters are integral. `Display` writes
/// an integral `f64` as its digits without a decimal point, as `i64` does; below 1e15 the
/// conversion is exact, and `-0.0` (written `-0`) and larger magnitudes go through
/// `Display`.
pub(crate) fn push_value(out: &mut String, value: f64) {
    if value.fract() == 0.0 && value.abs() < 1e15 && !(value == 0.0 && value.is_sign_negative()) {
        // Exact: integral and well inside i64.
        let _ = write!(out, "{}", value as i64);
    } else {
        let _ = write!(out, "{value}");
    }
}

/// Forwards until `stop` (then tries once to write what is queued) or until every sender is
/// gone.
pub async fn run(
    config: CarbonConfig,
    mut rx: mpsc::Receiver<Arc<Chunk>>,
    stop: CancellationToken,
) {
    let mut conn: Option<TcpStream> = None;
    let mut backoff = BACKOFF_MIN;
    // Lines formatted and not yet written, with their sample count.
    let mut pending = String::new();
    let mut pending_n = 0u64;
    let mut batch = Vec::with_capacity(CHUNKS_PER_WRITE);
    loop {
        if pending.is_empty() {
            tokio::select! {
                n = rx.recv_many(&mut batch, CHUNKS_PER_WRITE) => if n == 0 { return },
                _ = stop.cancelled() => {
                    flush_at_stop(&config, conn, &mut rx).await;
                    return;
                }
            }
            pending_n = format(&config, &batch, &mut pending);
            batch.clear();
            if pending.is_empty() {
                continue;
            }
        }
        if conn.is_none() {
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&config.address)).await {
                Ok(Ok(s)) => {
                    info!(address = %config.address, "Connected to the carbon server.");
                    let _ = s.set_nodelay(true);
                    conn = Some(s);
                    backoff = BACKOFF_MIN;
                }
                Ok(Err(e)) => {
                    events::add(&COUNTERS.forward_errors, 1);
                    warn!(address = %config.address, error = %e, retry_in = ?backoff, "Cannot connect to the carbon server.");
                }
                Err(_) => {
                    events::add(&COUNTERS.forward_errors, 1);
                    warn!(address = %config.address, retry_in = ?backoff, "Connecting to the carbon server timed out.");
                }
            }
        }
        // A Graphite server never writes to us: a readable socket that reads 0 bytes (or an
        // error) means it closed. Checked before each write, so a server that restarted is
        // reconnected to before lines are written into a dead connection, which the kernel
        // would accept and lose.
        if conn.as_ref().is_some_and(closed_by_peer) {
            events::add(&COUNTERS.forward_errors, 1);
            warn!(address = %config.address, "The carbon server closed the connection; reconnecting.");
            conn = None;
            continue;
        }
        if let Some(s) = conn.as_mut() {
            match s.write_all(pending.as_bytes()).await {
                Ok(()) => {
                    events::add(&COUNTERS.forwarded, pending_n);
                    pending.clear();
                    pending_n = 0;
                    continue;
                }
                Err(e) => {
                    events::add(&COUNTERS.forward_errors, 1);
                    warn!(address = %config.address, error = %e, "Writing to the carbon server failed; reconnecting.");
                    conn = None;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.cancelled() => {
                events::add(&COUNTERS.forward_dropped, pending_n);
                return;
            }
        }
        backoff = (backoff * 2).min(config.max_backoff);
    }
}

/// Whether the server closed (or reset) the connection, without waiting.
fn closed_by_peer(s: &TcpStream) -> bool {
    let mut probe = [0u8; 64];
    match s.try_read(&mut probe) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// At shutdown: what is queued, written once on the open connection within
/// [`STOP_FLUSH_TIMEOUT`]; what cannot be is counted as dropped.
async fn flush_at_stop(
    config: &CarbonConfig,
    conn: Option<TcpStream>,
    rx: &mut mpsc::Receiver<Arc<Chunk>>,
) {
    rx.close();
    let mut chunks = Vec::new();
    while let Ok(c) = rx.try_recv() {
        chunks.push(c);
    }
    let mut text = String::new();
    let n = format(config, &chunks, &mut text);
    if n == 0 {
        return;
    }
    let written = match conn {
        Some(mut s) => tokio::time::timeout(STOP_FLUSH_TIMEOUT, s.write_all(text.as_bytes()))
            .await
            .is_ok_and(|r| r.is_ok()),
        None => false,
    };
    if written {
        events::add(&COUNTERS.forwarded, n);
    } else {
        events::add(&COUNTERS.forward_dropped, n);
    }
}

/// How long the forwarder may take to write its queue at shutdown.
const STOP_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identify::{ContainerId, TaskId};

    fn sample(path: &str) -> Sample {
        Sample {
            path: path.to_owned(),
            value: 1.5,
            timestamp: 1_790_000_000,
        }
    }

    #[test]
    fn the_template_puts_the_identity_first_and_values_never_add_levels() {
        let mut o = Origin::unattributed();
        o.container_id = ContainerId::parse(&"a".repeat(64));
        o.task_id = TaskId::parse(&"1".repeat(32));
        o.cluster = Some("arn:aws:ecs:us-east-1:123456789012:cluster/prod.eu".into());
        o.family = Some("web app".into());
        o.container_name = Some("nginx".into());
        let t = CarbonConfig::default();
        assert_eq!(
            render_path(
                &t.template,
                &t.unattributed_template,
                &o,
                &sample("req.count")
            ),
            format!("ecs.prod_eu.web_app.{}.nginx.req.count", "1".repeat(32))
        );
        o.family = None;
        assert_eq!(
            render_path(
                "{family}.{revision}.{container_id}.{path}",
                "",
                &o,
                &sample("x")
            ),
            "unknown.unknown.aaaaaaaaaaaa.x"
        );
        let u = Origin::unattributed();
        assert_eq!(
            render_path(&t.template, &t.unattributed_template, &u, &sample("x.y")),
            "unattributed.x.y"
        );
    }

    #[test]
    fn lines_are_the_template_per_sample_and_values_as_display_writes_them() {
        let mut o = Origin::unattributed();
        o.container_id = ContainerId::parse(&"a".repeat(64));
        o.task_id = TaskId::parse(&"1".repeat(32));
        o.family = Some("web".into());
        let values = [
            0.0,
            -0.0,
            5.0,
            -5.0,
            1.5,
            -2.25,
            1e-7,
            123_456_789.0,
            999_999_999_999_999.0,
            1e15,
            1e16,
            -1e300,
            f64::MAX,
            f64::MIN_POSITIVE,
        ];
        let samples: Vec<Sample> = values
            .iter()
            .enumerate()
            .map(|(i, v)| Sample {
                path: format!("p{i}.x"),
                value: *v,
                timestamp: 1_790_000_000 + i as i64,
            })
            .collect();
        for (template, origin) in [
            (CarbonConfig::default().template, o.clone()),
            ("{path}.{path}.{family}".to_owned(), o.clone()),
            ("a\0{path}".to_owned(), o.clone()),
            (CarbonConfig::default().template, Origin::unattributed()),
        ] {
            let config = CarbonConfig {
                template,
                ..CarbonConfig::default()
            };
            let chunk = Arc::new(Chunk {
                origin: Arc::new(origin),
                samples: samples.clone(),
                rejected: 0,
                rate_limited: 0,
            });
            let mut out = String::new();
            assert_eq!(format(&config, std::slice::from_ref(&chunk), &mut out), 14);
            let want: String = samples
                .iter()
                .map(|s| {
                    let path = render_path(
                        &config.template,
                        &config.unattributed_template,
                        &chunk.origin,
                        s,
                    );
                    format!("{path} {} {}\n", s.value, s.timestamp)
                })
                .collect();
            assert_eq!(out, want, "{}", config.template);
        }
    }

    #[tokio::test]
    async fn reconnects_and_delivers_what_was_queued_while_the_server_was_away() {
        use tokio::io::AsyncBufReadExt;
        // A port nobody listens on yet.
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let config = CarbonConfig {
            enabled: true,
            address: addr.to_string(),
            max_backoff: Duration::from_millis(200),
            ..CarbonConfig::default()
        };
        let (tx, rx) = mpsc::channel(16);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(config, rx, stop.clone()));
        let chunk = Arc::new(Chunk {
            origin: Arc::new(Origin::unattributed()),
            samples: vec![sample("a"), sample("b")],
            rejected: 0,
            rate_limited: 0,
        });
        tx.send(chunk).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let server = tokio::net::TcpListener::bind(addr).await.unwrap();
        let (s, _) = tokio::time::timeout(Duration::from_secs(5), server.accept())
            .await
            .unwrap()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(s).lines();
        let mut got = Vec::new();
        while got.len() < 2 {
            got.push(lines.next_line().await.unwrap().unwrap());
        }
        assert_eq!(
            got,
            [
                "unattributed.a 1.5 1790000000",
                "unattributed.b 1.5 1790000000"
            ]
        );
        stop.cancel();
        task.await.unwrap();
    }
}
