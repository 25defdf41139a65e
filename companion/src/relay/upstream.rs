//! The relay's side towards the daemon: a bounded queue of line chunks and the one persistent
//! connection to `graphite.sock` that writes them, reconnecting when the daemon restarts.
//!
//! The daemon keeps samples in memory for up to its `metrics.flush_interval` (1 s by
//! default) before they are stored, so lines it read are not safe until then: a daemon
//! killed in that second loses them. The writer therefore keeps the lines of the last
//! [`REPLAY_WINDOW`] (at most [`REPLAY_BYTES`]) and writes them again on the next connection
//! whenever it sees the daemon go: the connection closed by the daemon, a failed write, or a
//! flush that ends without the daemon's `ok <instance>` acknowledgement. A flush returns the
//! instance (the daemon run) that acknowledged; the drain compares it with the run that
//! answers step B and asks for [`QueueSender::resend`] when they differ. Samples may so
//! arrive twice (at least once); a sample without a timestamp is stamped again by the daemon.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use super::{RelayError, RelayStats};
use crate::backoff::Backoff;

/// How many chunks the queue holds at most (each chunk is one read's worth of lines); the
/// byte budget below is the limit that usually binds.
const QUEUE_CHUNKS: usize = 1024;

/// How long written lines are kept to be written again after the daemon goes: well past the
/// daemon's default `metrics.flush_interval` (1 s), after which a running daemon has stored
/// them.
pub(crate) const REPLAY_WINDOW: Duration = Duration::from_secs(10);

/// The most bytes of written lines kept for a replay (the queue's own budget again): the
/// companion's memory stays a few MB whatever the job sends.
pub(crate) const REPLAY_BYTES: usize = 1024 * 1024;

/// The longest acknowledgement read after a half-close (`ok <pid>-<nanos>\n` is ~40 bytes).
const MAX_ACK: usize = 256;

/// One message to the writer. Flush requests travel in the same FIFO as the lines, so a
/// flush completes only after every line queued before it is written.
#[derive(Debug)]
pub(crate) enum Message {
    /// Complete lines to write.
    Lines(Chunk),
    /// Write everything before this, half-close, wait for the daemon's acknowledgement and
    /// close, answer with the daemon run that acknowledged.
    Flush(oneshot::Sender<Result<String, RelayError>>),
    /// Like `Flush`, but first write the recent lines again on a new connection: the daemon
    /// that acknowledged them has restarted since.
    Resend(oneshot::Sender<Result<String, RelayError>>),
}

/// Complete lines, holding their share of the queue's byte budget until written.
#[derive(Debug)]
pub(crate) struct Chunk {
    bytes: Bytes,
    _permit: OwnedSemaphorePermit,
}

/// The sending side of the queue, cloned into every listener.
#[derive(Debug, Clone)]
pub(crate) struct QueueSender {
    tx: mpsc::Sender<Message>,
    budget: Arc<Semaphore>,
    stats: Arc<RelayStats>,
}

impl QueueSender {
    /// Queues `bytes` (complete lines), waiting for room: a TCP sender is backpressured.
    /// Returns false when the writer is gone (shutting down).
    pub(crate) async fn send(&self, bytes: Bytes) -> bool {
        let Ok(permit) = Arc::clone(&self.budget)
            .acquire_many_owned(permits(&bytes))
            .await
        else {
            return false;
        };
        let lines = count_lines(&bytes);
        let ok = self
            .tx
            .send(Message::Lines(Chunk {
                bytes,
                _permit: permit,
            }))
            .await
            .is_ok();
        if ok {
            self.stats.lines_queued.fetch_add(lines, Ordering::Relaxed);
        }
        ok
    }

    /// Queues `bytes` if there is room now; otherwise drops it and counts its lines (UDP has
    /// no backpressure).
    pub(crate) fn try_send(&self, bytes: Bytes) {
        let lines = count_lines(&bytes);
        let sent = Arc::clone(&self.budget)
            .try_acquire_many_owned(permits(&bytes))
            .ok()
            .and_then(|permit| {
                self.tx
                    .try_send(Message::Lines(Chunk {
                        bytes,
                        _permit: permit,
                    }))
                    .ok()
            });
        let counter = if sent.is_some() {
            &self.stats.lines_queued
        } else {
            &self.stats.dropped_queue_full
        };
        counter.fetch_add(lines, Ordering::Relaxed);
    }

    /// Asks the writer to flush (see [`Message::Flush`]); the daemon run that acknowledged.
    pub(crate) async fn flush(&self) -> Result<String, RelayError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Message::Flush(reply))
            .await
            .map_err(|_| RelayError::WriterGone)?;
        answer.await.map_err(|_| RelayError::WriterGone)?
    }

    /// Asks the writer to write the recent lines again and flush (see [`Message::Resend`]).
    pub(crate) async fn resend(&self) -> Result<String, RelayError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Message::Resend(reply))
            .await
            .map_err(|_| RelayError::WriterGone)?;
        answer.await.map_err(|_| RelayError::WriterGone)?
    }
}

/// Why the daemon's metrics socket cannot be reached, shared with the drain so it can say so
/// when its deadline passes while lines wait.
#[derive(Debug, Default)]
pub(crate) struct Reachability {
    inner: Mutex<Option<(Instant, String)>>,
}

impl Reachability {
    /// Since when connecting fails, and the last error; `None` when connected.
    pub(crate) fn unreachable(&self) -> Option<(Instant, String)> {
        self.lock().clone()
    }

    fn failed(&self, err: &std::io::Error) {
        let mut inner = self.lock();
        let since = inner
            .as_ref()
            .map_or_else(Instant::now, |(since, _)| *since);
        *inner = Some((since, err.to_string()));
    }

    fn connected(&self) {
        *self.lock() = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Instant, String)>> {
        // One assignment per update: a poisoned lock holds a whole value.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A queue with a byte budget of `queue_bytes`, and its writer (to spawn).
pub(crate) fn queue(
    path: PathBuf,
    queue_bytes: usize,
    stats: Arc<RelayStats>,
    reachability: Arc<Reachability>,
) -> (QueueSender, Writer) {
    let (tx, rx) = mpsc::channel(QUEUE_CHUNKS);
    let sender = QueueSender {
        tx,
        budget: Arc::new(Semaphore::new(queue_bytes)),
        stats: Arc::clone(&stats),
    };
    let writer = Writer {
        rx,
        path,
        conn: None,
        recent: Recent::default(),
        replay_needed: false,
        stats,
        reachability,
    };
    (sender, writer)
}

/// Lines written lately, oldest first, to write again after the daemon went.
#[derive(Debug, Default)]
struct Recent {
    chunks: VecDeque<(Instant, Bytes)>,
    bytes: usize,
    /// Set by the first flush (the drain): from then on nothing expires by age, since the
    /// drain's answer, not time, says when the daemon has stored the lines.
    held: bool,
}

impl Recent {
    fn push(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        self.bytes += bytes.len();
        self.chunks.push_back((Instant::now(), bytes));
        self.expire();
    }

    /// Drops chunks over the byte bound, and (unless held) those older than the window.
    fn expire(&mut self) {
        while let Some((at, front)) = self.chunks.front() {
            let too_old = !self.held && at.elapsed() > REPLAY_WINDOW;
            if !too_old && self.bytes <= REPLAY_BYTES {
                break;
            }
            self.bytes -= front.len();
            self.chunks.pop_front();
        }
    }

    /// The chunks to write again (cheap clones of shared buffers).
    fn replay(&mut self) -> Vec<Bytes> {
        self.expire();
        self.chunks.iter().map(|(_, b)| b.clone()).collect()
    }
}

/// Writes queued chunks to `graphite.sock` over one persistent connection.
#[derive(Debug)]
pub(crate) struct Writer {
    rx: mpsc::Receiver<Message>,
    path: PathBuf,
    /// The open connection; `None` before the first line and after a flush.
    conn: Option<UnixStream>,
    /// Lines written lately (see the module's documentation).
    recent: Recent,
    /// The daemon went since the recent lines were written: write them again first.
    replay_needed: bool,
    stats: Arc<RelayStats>,
    reachability: Arc<Reachability>,
}

impl Writer {
    /// Writes until every sender is gone. While idle it watches the connection: the daemon
    /// never writes on it before a half-close, so readable means it closed (a restart).
    pub(crate) async fn run(mut self) {
        /// What woke the writer.
        enum Wake {
            Message(Option<Message>),
            Readable(std::io::Result<()>),
        }
        loop {
            let wake = match &self.conn {
                Some(conn) => tokio::select! {
                    m = self.rx.recv() => Wake::Message(m),
                    r = conn.readable() => Wake::Readable(r),
                },
                None => Wake::Message(self.rx.recv().await),
            };
            let message = match wake {
                Wake::Message(Some(message)) => message,
                Wake::Message(None) => return,
                Wake::Readable(r) => {
                    if r.is_err() || self.daemon_went() {
                        self.lost_connection(
                            "The daemon closed the metrics connection (restart?).",
                        );
                        self.ready().await;
                    }
                    continue;
                }
            };
            match message {
                Message::Lines(chunk) => self.write(chunk.bytes).await,
                Message::Flush(reply) => {
                    let _ = reply.send(Ok(self.flush().await));
                }
                Message::Resend(reply) => {
                    self.lost_connection("The drain was answered by another daemon run than the one that acknowledged the relayed lines.");
                    let _ = reply.send(Ok(self.flush().await));
                }
            }
        }
    }

    /// After the connection became readable: true when the daemon closed it or it failed;
    /// false for a spurious wake-up (or bytes the daemon should not send, ignored).
    fn daemon_went(&mut self) -> bool {
        let Some(conn) = &self.conn else { return false };
        let mut buf = [0u8; MAX_ACK];
        match conn.try_read(&mut buf) {
            Ok(0) => true,
            Ok(_) => false,
            Err(err) => err.kind() != std::io::ErrorKind::WouldBlock,
        }
    }

    /// Drops the connection; the recent lines go again on the next one.
    fn lost_connection(&mut self, why: &str) {
        if !self.recent.chunks.is_empty() {
            tracing::warn!(
                socket = %self.path.display(),
                recent_bytes = self.recent.bytes,
                "{why} Writing the recent lines again."
            );
        }
        self.conn = None;
        self.replay_needed = true;
    }

    /// Writes `bytes` (complete lines), reconnecting as often as it takes. When a write fails
    /// (the daemon went away), the lines written whole count as sent and the chunk is sent
    /// again from the start of the line the failure cut, after the recent lines, so the new
    /// connection starts on a line boundary.
    async fn write(&mut self, mut pending: Bytes) {
        loop {
            self.ready().await;
            match self.write_lines(&pending).await {
                Ok(()) => {
                    self.count_relayed(&pending);
                    self.recent.push(pending);
                    return;
                }
                Err((line_start, err)) => {
                    let done = pending.split_to(line_start);
                    self.count_relayed(&done);
                    self.recent.push(done);
                    self.lost_connection(&format!(
                        "Writing to the daemon's metrics socket failed ({err})."
                    ));
                }
            }
        }
    }

    /// Writes all of `bytes`; on failure, how much of it was whole lines.
    async fn write_lines(&mut self, bytes: &[u8]) -> Result<(), (usize, std::io::Error)> {
        let Some(conn) = self.conn.as_mut() else {
            return Err((0, std::io::ErrorKind::NotConnected.into()));
        };
        let mut written = 0;
        while written < bytes.len() {
            match conn.write(&bytes[written..]).await {
                Ok(0) => {
                    return Err((
                        line_start(bytes, written),
                        std::io::ErrorKind::WriteZero.into(),
                    ));
                }
                Ok(n) => written += n,
                Err(err) => return Err((line_start(bytes, written), err)),
            }
        }
        Ok(())
    }

    fn count_relayed(&self, bytes: &[u8]) {
        self.stats
            .lines_relayed
            .fetch_add(count_lines(bytes), Ordering::Relaxed);
        self.stats
            .bytes_relayed
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
    }

    /// Connected, with the recent lines written again if the daemon went since: retries
    /// with backoff until the daemon answers.
    async fn ready(&mut self) {
        loop {
            self.connect().await;
            if !self.replay_needed {
                return;
            }
            let chunks = self.recent.replay();
            let mut failed = None;
            for chunk in &chunks {
                if let Err((_, err)) = self.write_lines(chunk).await {
                    failed = Some(err);
                    break;
                }
            }
            match failed {
                None => {
                    let lines: u64 = chunks.iter().map(|c| count_lines(c)).sum();
                    self.stats
                        .lines_replayed
                        .fetch_add(lines, Ordering::Relaxed);
                    if lines > 0 {
                        tracing::info!(lines, "Recent lines written again to the daemon.");
                    }
                    self.replay_needed = false;
                    return;
                }
                Some(err) => {
                    tracing::warn!(error = %err, "Writing the recent lines again failed; reconnecting.");
                    self.conn = None;
                    tokio::time::sleep(Backoff::new().next_delay()).await;
                }
            }
        }
    }

    /// Opens a connection if there is none: retries with backoff until the daemon answers.
    async fn connect(&mut self) {
        if self.conn.is_some() {
            return;
        }
        let mut backoff = Backoff::new();
        let stream = loop {
            match UnixStream::connect(&self.path).await {
                Ok(stream) => break stream,
                Err(err) => {
                    if self.reachability.unreachable().is_none() {
                        tracing::warn!(
                            socket = %self.path.display(),
                            error = %err,
                            "Cannot connect to the daemon's metrics socket; lines wait in the queue."
                        );
                    }
                    self.reachability.failed(&err);
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        };
        if self.reachability.unreachable().is_some() {
            tracing::info!(socket = %self.path.display(), "Connected to the daemon's metrics socket.");
        }
        self.reachability.connected();
        self.conn = Some(stream);
    }

    /// Half-closes the connection and reads the daemon's `ok <instance>` and its close, which
    /// the daemon sends after queueing every line it read for its store. A close without it
    /// (the daemon died) writes the recent lines again on a new connection and tries again,
    /// until the daemon acknowledges; the drain's deadline bounds this. Also when nothing was
    /// written: the answer names the daemon run the drain must be answered by.
    async fn flush(&mut self) -> String {
        let started = Instant::now();
        let mut backoff = Backoff::new();
        loop {
            self.ready().await;
            let Some(mut conn) = self.conn.take() else {
                continue;
            };
            match acknowledgement(&mut conn).await {
                Ok(instance) => {
                    self.recent.held = true;
                    tracing::debug!(
                        elapsed = ?started.elapsed(),
                        %instance,
                        "The daemon acknowledged every relayed line."
                    );
                    return instance;
                }
                Err(err) => {
                    self.lost_connection(&format!(
                        "The daemon did not acknowledge the relayed lines ({err})."
                    ));
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }
}

/// Half-closes `conn` and reads `ok <instance>\n` up to the daemon's close.
async fn acknowledgement(conn: &mut UnixStream) -> std::io::Result<String> {
    conn.shutdown().await?;
    let mut answer = Vec::new();
    let mut buf = [0u8; MAX_ACK];
    loop {
        let n = conn.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        if answer.len() + n > MAX_ACK {
            return Err(std::io::Error::other("the daemon's answer is too long"));
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&answer);
    match text.trim_end().strip_prefix("ok ") {
        Some(instance) if !instance.is_empty() => Ok(instance.to_owned()),
        _ if answer.is_empty() => Err(std::io::Error::other("closed without an acknowledgement")),
        _ => Err(std::io::Error::other(format!("unexpected answer {text:?}"))),
    }
}

/// Where the line holding byte `written` starts: what was written before it is whole lines.
fn line_start(bytes: &[u8], written: usize) -> usize {
    memchr::memrchr(b'\n', &bytes[..written]).map_or(0, |i| i + 1)
}

/// Semaphore permits for a chunk (its length; chunks are bounded far below `u32::MAX`).
fn permits(bytes: &Bytes) -> u32 {
    u32::try_from(bytes.len()).unwrap_or(u32::MAX)
}

/// Newlines in `bytes`: the lines of a chunk.
pub(crate) fn count_lines(bytes: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', bytes).count() as u64
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Lines queued while the daemon is down are written once it listens, and a flush
    /// returns only after the daemon has read them and closed.
    #[tokio::test]
    async fn lines_wait_for_the_daemon_and_flush_waits_for_its_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("graphite.sock");
        let stats = Arc::new(RelayStats::default());
        let reach = Arc::new(Reachability::default());
        let (sender, writer) = queue(path.clone(), 1024, Arc::clone(&stats), Arc::clone(&reach));
        tokio::spawn(writer.run());
        assert!(sender.send(Bytes::from_static(b"a 1\n")).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(reach.unreachable().is_some());
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let (mut conn, _) = listener.accept().await.unwrap();
        sender.try_send(Bytes::from_static(b"b 2\nc 3\n"));
        let flush = tokio::spawn({
            let sender = sender.clone();
            async move { sender.flush().await }
        });
        let mut got = Vec::new();
        conn.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"a 1\nb 2\nc 3\n");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!flush.is_finished(), "the daemon has not acknowledged yet");
        conn.write_all(b"ok run-1\n").await.unwrap();
        drop(conn);
        assert_eq!(flush.await.unwrap().unwrap(), "run-1");
        assert_eq!(stats.lines_relayed.load(Ordering::Relaxed), 3);
        assert_eq!(stats.lines_replayed.load(Ordering::Relaxed), 0);
        assert!(reach.unreachable().is_none());
    }

    /// A writer on a fresh socket path, with its counters.
    fn writer_at(dir: &tempfile::TempDir) -> (PathBuf, QueueSender, Arc<RelayStats>) {
        let path = dir.path().join("graphite.sock");
        let stats = Arc::new(RelayStats::default());
        let (sender, writer) = queue(path.clone(), 1024, Arc::clone(&stats), Arc::default());
        tokio::spawn(writer.run());
        (path, sender, stats)
    }

    /// The fake daemon's side of a flush: reads to the half-close, answers `ack` (or
    /// nothing, as a daemon killed there), closes. What it read.
    async fn serve_flush(listener: &tokio::net::UnixListener, ack: Option<&str>) -> Vec<u8> {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        conn.read_to_end(&mut got).await.unwrap();
        if let Some(ack) = ack {
            conn.write_all(format!("ok {ack}\n").as_bytes())
                .await
                .unwrap();
        }
        got
    }

    /// A daemon that closes at the flush without acknowledging (it died there) loses
    /// nothing: the lines go again to the next daemon run, whose answer the flush returns.
    #[tokio::test]
    async fn a_flush_without_acknowledgement_writes_the_lines_again() {
        let dir = tempfile::tempdir().unwrap();
        let (path, sender, stats) = writer_at(&dir);
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        assert!(sender.send(Bytes::from_static(b"a 1\n")).await);
        let flush = tokio::spawn({
            let sender = sender.clone();
            async move { sender.flush().await }
        });
        assert_eq!(serve_flush(&listener, None).await, b"a 1\n");
        assert_eq!(serve_flush(&listener, Some("run-2")).await, b"a 1\n");
        assert_eq!(flush.await.unwrap().unwrap(), "run-2");
        assert_eq!(stats.lines_replayed.load(Ordering::Relaxed), 1);
    }

    /// The daemon closing an idle connection (a restart) sends the recent lines again at
    /// once to the next run, before any later line.
    #[tokio::test]
    async fn a_daemon_gone_while_idle_gets_the_recent_lines_again() {
        let dir = tempfile::tempdir().unwrap();
        let (path, sender, stats) = writer_at(&dir);
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        assert!(sender.send(Bytes::from_static(b"a 1\nb 2\n")).await);
        let (mut first, _) = listener.accept().await.unwrap();
        let mut got = [0u8; 8];
        first.read_exact(&mut got).await.unwrap();
        drop(first);
        let (mut second, _) = listener.accept().await.unwrap();
        let mut again = [0u8; 8];
        tokio::time::timeout(Duration::from_secs(5), second.read_exact(&mut again))
            .await
            .expect("the recent lines are written again without waiting for a new line")
            .unwrap();
        assert_eq!(&again, b"a 1\nb 2\n");
        assert!(sender.send(Bytes::from_static(b"c 3\n")).await);
        let mut next = [0u8; 4];
        second.read_exact(&mut next).await.unwrap();
        assert_eq!(&next, b"c 3\n");
        assert_eq!(stats.lines_replayed.load(Ordering::Relaxed), 2);
        assert_eq!(stats.lines_relayed.load(Ordering::Relaxed), 3);
    }

    /// `resend` (the drain saw another daemon run) writes what the first run acknowledged
    /// to a new connection and returns the new run.
    #[tokio::test]
    async fn resend_writes_acknowledged_lines_to_the_new_run() {
        let dir = tempfile::tempdir().unwrap();
        let (path, sender, _stats) = writer_at(&dir);
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        assert!(sender.send(Bytes::from_static(b"a 1\n")).await);
        let flush = tokio::spawn({
            let sender = sender.clone();
            async move { sender.flush().await }
        });
        assert_eq!(serve_flush(&listener, Some("run-1")).await, b"a 1\n");
        assert_eq!(flush.await.unwrap().unwrap(), "run-1");
        let resend = tokio::spawn({
            let sender = sender.clone();
            async move { sender.resend().await }
        });
        assert_eq!(serve_flush(&listener, Some("run-2")).await, b"a 1\n");
        assert_eq!(resend.await.unwrap().unwrap(), "run-2");
    }

    /// The replay keeps at most `REPLAY_BYTES`, and (before a drain) nothing older than the
    /// window; once held, age no longer expires anything.
    #[test]
    fn recent_lines_are_bounded() {
        let mut recent = Recent::default();
        let chunk = Bytes::from(vec![b'x'; REPLAY_BYTES / 4]);
        for _ in 0..6 {
            recent.push(chunk.clone());
        }
        assert_eq!(recent.replay().len(), 4);
        assert!(recent.bytes <= REPLAY_BYTES);
        let old = Instant::now().checked_sub(REPLAY_WINDOW * 2).unwrap();
        recent.chunks.front_mut().unwrap().0 = old;
        recent.held = true;
        assert_eq!(recent.replay().len(), 4, "held: kept whatever its age");
        recent.held = false;
        assert_eq!(recent.replay().len(), 3, "older than the window");
    }

    /// Datagrams beyond the byte budget are dropped and counted, not queued.
    #[tokio::test]
    async fn full_queue_drops_udp_lines() {
        let stats = Arc::new(RelayStats::default());
        let (sender, _writer) = queue(
            PathBuf::from("/nonexistent"),
            10,
            Arc::clone(&stats),
            Arc::default(),
        );
        sender.try_send(Bytes::from_static(b"a 1\nb 2\n"));
        sender.try_send(Bytes::from_static(b"c 3\n"));
        assert_eq!(stats.lines_queued.load(Ordering::Relaxed), 2);
        assert_eq!(stats.dropped_queue_full.load(Ordering::Relaxed), 1);
    }
}
