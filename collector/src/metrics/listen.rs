//! The Graphite listeners: TCP, UDP and a unix stream socket. Each connection (or datagram)
//! is attributed once, framed into lines, parsed, rate-limited and sent on as one [`Chunk`]
//! per read.
//!
//! A listener that cannot bind (a busy port) logs, counts and retries every
//! [`BIND_RETRY`]: the collector's logs never stop for a metrics port.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket, UnixListener};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::attribute::Attributor;
use super::events::{self, COUNTERS};
use super::framing::LineFramer;
use super::limit::{ConnectionLimiter, ConnectionSlot, RateLimiter};
use super::parse::{ParseSettings, Rejection, parse_line};
use super::{Chunk, MetricsConfig, MetricsError, Origin, Outputs, Sample};

/// How long a listener waits before binding again after a failure.
pub const BIND_RETRY: Duration = Duration::from_secs(5);

/// Bytes read per `read` on a stream.
const READ_BYTES: usize = 64 * 1024;

/// Index of each transport in [`events::TRANSPORTS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Graphite over TCP.
    Tcp = 0,
    /// Graphite over UDP.
    Udp = 1,
    /// Graphite over the unix socket.
    Unix = 2,
    /// StatsD (aggregated).
    Statsd = 3,
}

/// What every listener shares.
#[derive(Debug)]
pub struct Ingest {
    /// The accepted timestamp window.
    parse: ParseSettings,
    /// Longest line; bounds the memory one connection holds.
    max_line_bytes: usize,
    /// Who sent it.
    pub attributor: Arc<Attributor>,
    /// Samples per second per owner.
    pub rate: RateLimiter,
    /// Connections per peer: one container or address cannot take every slot.
    connections: ConnectionLimiter,
    /// Connections in all (TCP and unix): many peers together cannot exhaust our fds.
    total: Arc<tokio::sync::Semaphore>,
    /// A silent connection is closed after this, freeing its slots.
    idle_timeout: Duration,
    /// Where chunks go.
    pub outputs: Outputs,
}

impl Ingest {
    /// The shared state of the listeners of `config`.
    pub fn new(config: &MetricsConfig, attributor: Arc<Attributor>, outputs: Outputs) -> Self {
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        Self {
            parse: ParseSettings {
                max_age_secs: secs(config.max_sample_age),
                max_future_secs: secs(config.max_sample_future),
            },
            max_line_bytes: config.max_line_bytes,
            attributor,
            rate: RateLimiter::new(config.max_samples_per_second),
            connections: ConnectionLimiter::new(config.max_connections_per_peer),
            total: Arc::new(tokio::sync::Semaphore::new(config.max_connections)),
            idle_timeout: config.idle_timeout,
            outputs,
        }
    }

    /// A connection slot for peer `key`, or `None` (counted) over either bound.
    fn admit_connection(&self, key: String) -> Option<(ConnectionSlot, OwnedSemaphorePermit)> {
        let slot = self
            .total
            .clone()
            .try_acquire_owned()
            .ok()
            .and_then(|permit| Some((self.connections.acquire(key)?, permit)));
        if slot.is_none() {
            events::add(&COUNTERS.connections_refused, 1);
        }
        slot
    }

    /// A chunk builder for `origin`.
    fn chunk(&self, origin: &Arc<Origin>) -> Chunk {
        Chunk {
            origin: origin.clone(),
            samples: Vec::new(),
            rejected: 0,
            rate_limited: 0,
        }
    }

    /// Parses one line into `chunk`, counting a rejection.
    fn line(&self, chunk: &mut Chunk, line: Result<&[u8], Rejection>, now: i64) {
        match line.and_then(|l| parse_line(l, now, &self.parse)) {
            Ok(p) => chunk.samples.push(Sample {
                path: p.path.to_owned(),
                value: p.value,
                timestamp: p.timestamp,
            }),
            Err(r) => self.reject(chunk, r),
        }
    }

    fn reject(&self, chunk: &mut Chunk, r: Rejection) {
        chunk.rejected += 1;
        events::add(&COUNTERS.rejected[r.index()], 1);
    }

    /// Applies the owner's rate bound and counts what is accepted; returns the chunk when it
    /// carries anything worth sending.
    pub fn admit(&self, mut chunk: Chunk, transport: Transport) -> Option<Chunk> {
        if !chunk.samples.is_empty() {
            let granted = self
                .rate
                .take(&chunk.origin.owner, chunk.samples.len(), Instant::now());
            let over = chunk.samples.len() - granted;
            if over > 0 {
                chunk.samples.truncate(granted);
                chunk.rate_limited += over as u64;
                events::add(&COUNTERS.rate_limited, over as u64);
            }
        }
        let n = chunk.samples.len() as u64;
        events::add(&COUNTERS.accepted[transport as usize], n);
        if chunk.origin.is_unattributed() {
            events::add(&COUNTERS.unattributed, n);
        }
        (n > 0 || chunk.rejected > 0 || chunk.rate_limited > 0).then_some(chunk)
    }

    /// Reads a stream to its end (or `stop`), sending one chunk per read. True when the peer
    /// ended it (end of file) and every line read is in the store's queue, behind which a
    /// drain's store barrier waits.
    async fn serve_stream<S>(
        &self,
        stream: &mut S,
        origin: Arc<Origin>,
        transport: Transport,
        stop: CancellationToken,
    ) -> bool
    where
        S: tokio::io::AsyncRead + Unpin,
    {
        let mut framer = LineFramer::new(self.max_line_bytes);
        let mut buf = vec![0u8; READ_BYTES];
        loop {
            let mut peer_ended = false;
            let n = tokio::select! {
                _ = stop.cancelled() => return false,
                r = tokio::time::timeout(self.idle_timeout, stream.read(&mut buf)) => match r {
                    Ok(Ok(n)) => {
                        peer_ended = n == 0;
                        n
                    }
                    Ok(Err(e)) => {
                        debug!(error = %e, "Metrics connection read failed.");
                        0
                    }
                    Err(_) => {
                        debug!("Metrics connection idle; closed.");
                        0
                    }
                },
            };
            let now = unix_now();
            let mut chunk = self.chunk(&origin);
            if n == 0 {
                if let Some(r) = framer.finish() {
                    self.reject(&mut chunk, r);
                }
            } else {
                framer.feed(&buf[..n], |line| self.line(&mut chunk, line, now));
            }
            if let Some(c) = self.admit(chunk, transport) {
                self.outputs.send(c).await;
            }
            if n == 0 {
                return peer_ended;
            }
        }
    }

    /// Parses one datagram: lines split on newlines, the last one complete without its
    /// newline (the datagram's end is the line's end).
    pub fn datagram(&self, data: &[u8], origin: &Arc<Origin>) -> Chunk {
        let now = unix_now();
        let mut chunk = self.chunk(origin);
        let data = data.strip_suffix(b"\n").unwrap_or(data);
        for line in data.split(|b| *b == b'\n') {
            let line = if line.len() > self.max_line_bytes {
                Err(Rejection::LineTooLong)
            } else {
                Ok(line)
            };
            self.line(&mut chunk, line, now);
        }
        chunk
    }
}

/// Seconds since the epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Binds with `bind` until it succeeds, logging and counting each failure and waiting
/// [`BIND_RETRY`] between tries (a port taken by another process must not stop the
/// collector); `None` when `stop` comes first.
pub(super) async fn bind_retrying<T, F, Fut>(stop: &CancellationToken, mut bind: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, MetricsError>>,
{
    loop {
        match bind().await {
            Ok(bound) => return Some(bound),
            Err(e) => {
                events::add(&COUNTERS.listener_errors, 1);
                warn!(error = %crate::internal_events::chain(&e), retry_in = ?BIND_RETRY, "Metrics listener cannot bind; retrying.");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(BIND_RETRY) => {}
        }
    }
}

/// Serves Graphite over TCP on `address` until `stop`.
pub async fn run_tcp(ingest: Arc<Ingest>, address: SocketAddr, stop: CancellationToken) {
    let bound = bind_retrying(&stop, || async move {
        TcpListener::bind(address)
            .await
            .map_err(|source| MetricsError::Bind {
                transport: "tcp",
                address,
                source,
            })
    })
    .await;
    let Some(listener) = bound else { return };
    info!(%address, "Graphite TCP listener up.");
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            a = listener.accept() => a,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (mut stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: wait rather than spin.
                events::add(&COUNTERS.listener_errors, 1);
                warn!(error = %e, "Graphite TCP accept failed; retrying.");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(slot) = ingest.admit_connection(format!("ip:{}", peer.ip())) else {
            continue;
        };
        let (ingest, stop) = (ingest.clone(), stop.clone());
        connections.spawn(async move {
            let _slot = slot;
            let mut origin = ingest.attributor.by_address_waiting(peer.ip()).await;
            if origin.is_unattributed()
                && let Ok(local) = stream.local_addr()
            {
                origin = ingest.attributor.by_tcp_peer(peer, local).await;
            }
            ingest
                .serve_stream(&mut stream, origin, Transport::Tcp, stop)
                .await;
        });
    }
    connections.shutdown().await;
}

/// Serves Graphite over UDP on `address` until `stop`.
pub async fn run_udp(ingest: Arc<Ingest>, address: SocketAddr, stop: CancellationToken) {
    let bound = bind_retrying(&stop, || async move {
        UdpSocket::bind(address)
            .await
            .map_err(|source| MetricsError::Bind {
                transport: "udp",
                address,
                source,
            })
    })
    .await;
    let Some(socket) = bound else { return };
    info!(%address, "Graphite UDP listener up.");
    let (late, late_rx) = mpsc::channel(LATE_DATAGRAMS);
    tokio::spawn(attribute_late(ingest.clone(), late_rx));
    // The largest UDP payload: a datagram is never cut short.
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    debug!(error = %e, "Graphite UDP receive failed.");
                    continue;
                }
            },
        };
        let mut origin = ingest.attributor.by_address(peer.ip()).await;
        if origin.is_unattributed() {
            origin = ingest.attributor.by_udp_peer(peer).await;
        }
        let chunk = ingest.datagram(&buf[..n], &origin);
        let chunk = if origin.is_unattributed() && !peer.ip().is_loopback() {
            // Parsed (and stamped) now; attributed once the addresses may be listed again.
            match late.try_send((peer.ip(), chunk)) {
                Ok(()) => continue,
                Err(
                    mpsc::error::TrySendError::Full((_, chunk))
                    | mpsc::error::TrySendError::Closed((_, chunk)),
                ) => chunk,
            }
        } else {
            chunk
        };
        if let Some(c) = ingest.admit(chunk, Transport::Udp) {
            ingest.outputs.try_send(c);
        }
    }
}

/// How many datagrams of unknown senders wait for a refresh of the container addresses; over
/// that they are stored unattributed at once (counted as such).
const LATE_DATAGRAMS: usize = 1024;

/// Datagrams whose sender's address was unknown, attributed in order after waiting (at most
/// [`super::attribute::REFRESH_MIN_INTERVAL`]) for the next listing of container addresses: a
/// container that sends as it starts, within a second of another lookup, is otherwise
/// unattributed. The receive loop never waits.
async fn attribute_late(ingest: Arc<Ingest>, mut late: mpsc::Receiver<(IpAddr, Chunk)>) {
    while let Some((ip, mut chunk)) = late.recv().await {
        chunk.origin = ingest.attributor.by_address_waiting(ip).await;
        if let Some(c) = ingest.admit(chunk, Transport::Udp) {
            ingest.outputs.try_send(c);
        }
    }
}

/// Serves Graphite on the unix socket `path` until `stop`, then removes it.
pub async fn run_unix(ingest: Arc<Ingest>, path: PathBuf, stop: CancellationToken) {
    let Some(listener) = bind_retrying(&stop, || std::future::ready(bind_unix(&path))).await else {
        return;
    };
    info!(socket = %path.display(), "Graphite unix socket listener up.");
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            a = listener.accept() => a,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let mut stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                events::add(&COUNTERS.listener_errors, 1);
                warn!(error = %e, "Graphite unix accept failed; retrying.");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // At accept, before reading: the peer's process must still exist to be found.
        let pid = stream.peer_cred().ok().and_then(|c| c.pid());
        let origin = match pid {
            Some(pid) => ingest.attributor.by_pid(pid),
            None => Arc::new(Origin::unattributed()),
        };
        let key = match &origin.container_id {
            Some(id) => format!("container:{id}"),
            None => format!("pid:{}", pid.unwrap_or(0)),
        };
        let Some(slot) = ingest.admit_connection(key) else {
            continue;
        };
        let (ingest, stop) = (ingest.clone(), stop.clone());
        connections.spawn(async move {
            let _slot = slot;
            let origin = ingest.attributor.complete(origin).await;
            if ingest
                .serve_stream(&mut stream, origin, Transport::Unix, stop)
                .await
            {
                acknowledge(&mut stream).await;
            }
        });
    }
    connections.shutdown().await;
    if let Err(e) = std::fs::remove_file(&path) {
        debug!(socket = %path.display(), error = %e, "Metrics socket already gone.");
    }
}

/// Answers a unix peer that half-closed its connection: `ok <instance>\n` says every line
/// it sent is queued for the store (a later drain's barrier covers them) and which run of
/// the daemon holds them ([`crate::instance`]). The companion's relay flushes this way and
/// sends its recent lines again when the answer is missing or the run changed. Peers that
/// closed both ways never read it (the write fails with `EPIPE`, ignored).
async fn acknowledge(stream: &mut tokio::net::UnixStream) {
    let ack = format!("ok {}\n", crate::instance::id());
    if let Err(e) = stream.write_all(ack.as_bytes()).await {
        debug!(error = %e, "Metrics peer gone before the acknowledgement.");
    }
}

/// Binds the unix socket ([`crate::control::bind_shared`]: mode 0666, any process that can
/// reach the path may send, since the kernel tells who it is).
fn bind_unix(path: &std::path::Path) -> Result<UnixListener, MetricsError> {
    crate::control::bind_shared(path).map_err(|source| MetricsError::BindUnix {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::InventoryView;
    use crate::discover::docker_api::DockerApi;
    use crate::metrics::StoreItem;

    fn ingest(config: &MetricsConfig) -> (Arc<Ingest>, mpsc::Receiver<StoreItem>) {
        let (tx, rx) = mpsc::channel(64);
        let attributor = Arc::new(Attributor::new(
            "/nonexistent".into(),
            InventoryView::new(),
            DockerApi::new("/nonexistent.sock"),
        ));
        let outputs = Outputs {
            store: tx,
            carbon: None,
            emf: None,
        };
        (Arc::new(Ingest::new(config, attributor, outputs)), rx)
    }

    /// `run_unix` on a socket in a temporary directory, once the socket exists.
    async fn unix_listener() -> (
        tempfile::TempDir,
        PathBuf,
        mpsc::Receiver<StoreItem>,
        CancellationToken,
        tokio::task::JoinHandle<()>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.sock");
        let (ingest, rx) = ingest(&MetricsConfig::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(run_unix(ingest, path.clone(), stop.clone()));
        while !path.exists() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (dir, path, rx, stop, task)
    }

    #[tokio::test]
    async fn a_unix_stream_with_bad_lines_keeps_the_good_ones_and_counts_the_rest() {
        let (_dir, path, mut rx, stop, task) = unix_listener().await;
        let mut s = tokio::net::UnixStream::connect(&path).await.unwrap();
        let now = unix_now();
        s.write_all(format!("good.one 1 {now}\nbad NaN\n\x00\x01\ngood.two 2\nhalf").as_bytes())
            .await
            .unwrap();
        drop(s);
        let (mut samples, mut rejected) = (Vec::new(), 0);
        while rejected < 3 || samples.len() < 2 {
            let item = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap()
                .unwrap();
            let StoreItem::Chunk(c) = item else {
                panic!("only chunks are sent here");
            };
            samples.extend(c.samples.iter().map(|s| s.path.clone()));
            rejected += c.rejected;
            // The test process is no container.
            assert!(c.origin.is_unattributed());
        }
        assert_eq!(samples, ["good.one", "good.two"]);
        assert_eq!(rejected, 3);
        stop.cancel();
        task.await.unwrap();
        assert!(!path.exists(), "socket left behind");
    }

    /// A peer that half-closes gets `ok <instance>` once its lines are queued for the
    /// store, and not before: the companion's flush relies on this order.
    #[tokio::test]
    async fn a_half_closed_unix_stream_is_acknowledged_after_its_lines_are_queued() {
        let (_dir, path, mut rx, stop, task) = unix_listener().await;
        let mut s = tokio::net::UnixStream::connect(&path).await.unwrap();
        s.write_all(b"a.b 1\nc.d 2\n").await.unwrap();
        s.shutdown().await.unwrap();
        let mut ack = String::new();
        s.read_to_string(&mut ack).await.unwrap();
        assert_eq!(ack, format!("ok {}\n", crate::instance::id()));
        let mut paths = Vec::new();
        while let Ok(StoreItem::Chunk(c)) = rx.try_recv() {
            paths.extend(c.samples.iter().map(|s| s.path.clone()));
        }
        assert_eq!(paths, ["a.b", "c.d"], "queued before the acknowledgement");
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn connections_are_bounded_per_peer_and_in_all() {
        let config = MetricsConfig {
            max_connections_per_peer: 1,
            max_connections: 2,
            ..MetricsConfig::default()
        };
        let (ingest, _rx) = ingest(&config);
        let a = ingest.admit_connection("ip:10.0.0.1".into());
        assert!(a.is_some());
        assert!(ingest.admit_connection("ip:10.0.0.1".into()).is_none());
        let b = ingest.admit_connection("ip:10.0.0.2".into());
        assert!(b.is_some());
        assert!(
            ingest.admit_connection("ip:10.0.0.3".into()).is_none(),
            "over the total"
        );
        drop(a);
        assert!(ingest.admit_connection("ip:10.0.0.3".into()).is_some());
    }

    #[tokio::test]
    async fn over_the_rate_samples_are_dropped_and_counted() {
        let config = MetricsConfig {
            max_samples_per_second: 5,
            ..MetricsConfig::default()
        };
        let (ingest, _rx) = ingest(&config);
        let origin = Arc::new(Origin::unattributed());
        let lines: String = (0..8).map(|i| format!("m {i}\n")).collect();
        let chunk = ingest.datagram(lines.as_bytes(), &origin);
        let c = ingest.admit(chunk, Transport::Udp).unwrap();
        assert_eq!((c.samples.len(), c.rate_limited), (5, 3));
    }
}
