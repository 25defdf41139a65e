//! The Graphite relay: `127.0.0.1:13290` (TCP and UDP) in the task's network namespace to the
//! daemon's `graphite.sock`.
//!
//! Lines are framed ([`crate::framing`]), never parsed, and go through one bounded queue to
//! one persistent unix connection ([`upstream`]). The daemon attributes what arrives on that
//! connection to this task by the kernel's peer credentials of the companion, so the relay is
//! what gives a job's metrics their task identity without any configuration in the job.

mod activity;
mod listen;
mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, UdpSocket};

use self::activity::Activity;
use self::upstream::{QueueSender, Reachability};

/// The queue's byte budget when `--max-line` is small: lines waiting for a restarting
/// daemon. 1 MiB is several seconds of a busy job's metrics and keeps the companion's memory
/// at a few MB.
const QUEUE_BYTES: usize = 1024 * 1024;

/// Errors of the relay.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The listen address cannot be bound (taken, or not an address of this namespace).
    #[error("cannot listen on {proto} {addr}")]
    Bind {
        /// `tcp` or `udp`.
        proto: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The writer task ended (only at shutdown).
    #[error("the relay's writer has stopped")]
    WriterGone,
}

/// What the relay needs to start.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Where to listen (TCP and UDP).
    pub listen: SocketAddr,
    /// The daemon's Graphite unix socket.
    pub graphite_socket: PathBuf,
    /// The longest line relayed, newline excluded.
    pub max_line: usize,
}

/// The relay's counters, logged at exit.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Lines accepted into the queue.
    pub lines_queued: AtomicU64,
    /// Lines written to the daemon.
    pub lines_relayed: AtomicU64,
    /// Bytes written to the daemon.
    pub bytes_relayed: AtomicU64,
    /// Lines written again after the daemon went (see [`upstream`]).
    pub lines_replayed: AtomicU64,
    /// Lines dropped for being longer than `--max-line`.
    pub dropped_long: AtomicU64,
    /// UDP lines dropped because the queue was full.
    pub dropped_queue_full: AtomicU64,
    /// TCP connections accepted.
    pub tcp_connections: AtomicU64,
    /// UDP datagrams received.
    pub udp_datagrams: AtomicU64,
}

impl RelayStats {
    /// Logs the counters (at exit).
    pub fn log(&self) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let queued = get(&self.lines_queued);
        let relayed = get(&self.lines_relayed);
        tracing::info!(
            lines_relayed = relayed,
            bytes_relayed = get(&self.bytes_relayed),
            lines_replayed = get(&self.lines_replayed),
            dropped_too_long = get(&self.dropped_long),
            dropped_queue_full = get(&self.dropped_queue_full),
            dropped_unsent = queued.saturating_sub(relayed),
            tcp_connections = get(&self.tcp_connections),
            udp_datagrams = get(&self.udp_datagrams),
            "Relay counts."
        );
    }
}

/// A running relay.
#[derive(Debug, Clone)]
pub struct RelayHandle {
    queue: QueueSender,
    activity: Arc<Activity>,
    stats: Arc<RelayStats>,
    reachability: Arc<Reachability>,
    local_addr: SocketAddr,
    graphite_socket: PathBuf,
}

impl RelayHandle {
    /// Binds the listeners and spawns the relay's tasks on the current runtime.
    ///
    /// # Errors
    /// [`RelayError::Bind`] when the TCP or UDP address cannot be bound.
    pub async fn spawn(settings: RelaySettings) -> Result<Self, RelayError> {
        let tcp = TcpListener::bind(settings.listen)
            .await
            .map_err(|source| RelayError::Bind {
                proto: "tcp",
                addr: settings.listen,
                source,
            })?;
        let local_addr = tcp.local_addr().map_err(|source| RelayError::Bind {
            proto: "tcp",
            addr: settings.listen,
            source,
        })?;
        // The same port for UDP, also when `--listen` asked for port 0.
        let udp = UdpSocket::bind(local_addr)
            .await
            .map_err(|source| RelayError::Bind {
                proto: "udp",
                addr: local_addr,
                source,
            })?;
        let stats = Arc::new(RelayStats::default());
        let reachability = Arc::new(Reachability::default());
        // A chunk is at most a read plus a partial line: the budget must hold the largest.
        let queue_bytes = QUEUE_BYTES.max(settings.max_line + listen::READ_BUF + 1);
        let (queue, writer) = upstream::queue(
            settings.graphite_socket.clone(),
            queue_bytes,
            Arc::clone(&stats),
            Arc::clone(&reachability),
        );
        let activity = Arc::new(Activity::default());
        let shared = listen::Shared {
            queue: queue.clone(),
            activity: Arc::clone(&activity),
            stats: Arc::clone(&stats),
            max_line: settings.max_line,
        };
        tokio::spawn(writer.run());
        tokio::spawn(listen::accept_tcp(tcp, shared.clone()));
        tokio::spawn(listen::receive_udp(udp, shared));
        tracing::info!(
            listen = %local_addr,
            socket = %settings.graphite_socket.display(),
            "Relaying Graphite lines (TCP and UDP)."
        );
        Ok(Self {
            queue,
            activity,
            stats,
            reachability,
            local_addr,
            graphite_socket: settings.graphite_socket,
        })
    }

    /// The bound address (TCP and UDP).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The counters.
    pub fn stats(&self) -> &RelayStats {
        &self.stats
    }

    /// The metrics socket's path.
    pub fn graphite_socket(&self) -> &std::path::Path {
        &self.graphite_socket
    }

    /// Since when the metrics socket cannot be connected, and the last error.
    pub fn unreachable(&self) -> Option<(Instant, String)> {
        self.reachability.unreachable()
    }

    /// Puts every line the job sent into the daemon: waits until every sender has closed or
    /// been idle for `idle`, then writes the queue out, half-closes the connection and waits
    /// for the daemon's acknowledgement (it sends it once every line it read is queued for
    /// its store). Returns the daemon run that acknowledged. The listeners stay open; later
    /// lines go over a new connection.
    ///
    /// # Errors
    /// [`RelayError::WriterGone`] at shutdown.
    pub async fn flush(&self, idle: Duration) -> Result<String, RelayError> {
        while let Some(wait) = self.activity.quiet(idle) {
            tracing::debug!(
                open_connections = self.activity.open_connections(),
                "Waiting for relay senders to finish."
            );
            tokio::time::sleep(wait).await;
        }
        self.queue.flush().await
    }

    /// Writes the recent lines (see [`upstream`]) again on a new connection and flushes: the
    /// daemon run that acknowledged them is not the one answering the drain, so it may
    /// have died before storing them.
    ///
    /// # Errors
    /// [`RelayError::WriterGone`] at shutdown.
    pub async fn resend(&self) -> Result<String, RelayError> {
        self.queue.resend().await
    }
}
