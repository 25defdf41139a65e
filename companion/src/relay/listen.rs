//! The relay's listeners in the task's network namespace: Graphite plaintext over TCP and UDP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tokio::io::AsyncReadExt as _;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;

use super::RelayStats;
use super::activity::Activity;
use super::upstream::QueueSender;
use crate::framing::{LineFramer, frame_datagram};

/// Bytes read from a TCP connection at a time: one chunk of the queue at most this plus a
/// partial line.
pub(crate) const READ_BUF: usize = 16 * 1024;

/// The largest UDP payload (65 535 - 8 byte UDP header - 20 byte IPv4 header).
const MAX_DATAGRAM: usize = 65_507;

/// TCP connections served at once. Each holds a read buffer and up to a line, so this bounds
/// the relay's memory; a job opens one or a few, and more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 64;

/// What every listener shares.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    pub(crate) queue: QueueSender,
    pub(crate) activity: Arc<Activity>,
    pub(crate) stats: Arc<RelayStats>,
    pub(crate) max_line: usize,
}

/// Accepts TCP connections forever, each served by its own task.
pub(crate) async fn accept_tcp(listener: TcpListener, shared: Shared) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, peer)) => {
                shared.stats.tcp_connections.fetch_add(1, Ordering::Relaxed);
                let shared = shared.clone();
                tokio::spawn(async move {
                    serve_tcp(stream, peer, shared).await;
                    drop(slot);
                });
            }
            Err(err) => {
                // EMFILE and the like: wait a little instead of spinning.
                tracing::warn!(error = %err, "Accepting a relay connection failed.");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Relays one TCP connection's lines until the sender closes it. Reading stops while the
/// queue is full, which backpressures the sender through TCP.
async fn serve_tcp(mut stream: TcpStream, peer: SocketAddr, shared: Shared) {
    let guard = shared.activity.open();
    let mut framer = LineFramer::new(shared.max_line);
    let mut buf = vec![0u8; READ_BUF];
    let mut out = Vec::new();
    let mut dropped_reported = 0;
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) => {
                tracing::debug!(%peer, error = %err, "A relay connection failed.");
                break;
            }
        };
        guard.busy();
        framer.push(&buf[..n], &mut out);
        count_dropped(&framer, &mut dropped_reported, &shared.stats);
        for chunk in out.drain(..) {
            if !shared.queue.send(chunk).await {
                return;
            }
        }
        guard.done();
    }
    guard.busy();
    framer.finish(&mut out);
    for chunk in out.drain(..) {
        shared.queue.send(chunk).await;
    }
    count_dropped(&framer, &mut dropped_reported, &shared.stats);
}

/// Adds the framer's new over-long lines to the counters as they happen (the counters are
/// logged at exit, which may come while a connection is still open).
fn count_dropped(framer: &LineFramer, reported: &mut u64, stats: &RelayStats) {
    let now = framer.dropped_long();
    stats
        .dropped_long
        .fetch_add(now - *reported, Ordering::Relaxed);
    *reported = now;
}

/// Relays UDP datagrams forever. A datagram that does not fit in the queue is dropped and
/// counted: UDP senders cannot be slowed down.
pub(crate) async fn receive_udp(socket: UdpSocket, shared: Shared) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut out: Vec<Bytes> = Vec::new();
    loop {
        let n = match socket.recv(&mut buf).await {
            Ok(n) => n,
            Err(err) => {
                tracing::debug!(error = %err, "Receiving a relay datagram failed.");
                continue;
            }
        };
        shared.activity.udp_seen();
        shared.stats.udp_datagrams.fetch_add(1, Ordering::Relaxed);
        let dropped = frame_datagram(&buf[..n], shared.max_line, &mut out);
        shared
            .stats
            .dropped_long
            .fetch_add(dropped, Ordering::Relaxed);
        // One datagram's lines go in as one chunk (one copy out of the receive buffer).
        let total: usize = out.iter().map(Bytes::len).sum();
        if total == 0 {
            out.clear();
            continue;
        }
        let mut chunk = Vec::with_capacity(total);
        for piece in out.drain(..) {
            chunk.extend_from_slice(&piece);
        }
        shared.queue.try_send(Bytes::from(chunk));
    }
}
