//! Deliver batches to every sink, then move the checkpoint.
//!
//! The shipper is one task that takes batches from the tailers, plus one worker task per
//! sink, each with its own bounded queue. Every batch goes to every sink's queue; a worker
//! hands its sink the batches waiting for it ([`Sink::send_batches`]), retrying a failing
//! sink with capped backoff (a batch is never dropped while the collector runs). A batch's
//! checkpoint is persisted only when every sink has acknowledged it, in batch order, several
//! at a time in one transaction.
//!
//! A failing or slow sink does not stop the others at once: they go on until the oldest
//! batch it has not acknowledged is [`MAX_LAG_BATCHES`] (or [`MAX_LAG_BYTES`] of log files)
//! behind the newest, then the shipper
//! stops taking batches (and the tailers wait, the files on disk being the buffer) until it
//! catches up. So the lag, and the memory the batches in flight hold, are bounded; past the
//! bound one sink's outage does hold back the others.
//!
//! Observers (the control API's taps, [`SinkRole`]) are not sinks of their own: the read tap
//! sees each batch as the shipper takes it, the delivery tap once every sink has it.
//!
//! - `file.rs`: the local directory sink (the default).
//! - `discard.rs`: accepts and drops (benchmarks, dry runs).
//! - `cloudwatch.rs`: CloudWatch Logs; `cloudwatch_batch.rs` builds its requests (pure);
//!   `naming.rs` renders destination names from templates over identities.
//! - `s3.rs`: per-task `tar.gz` archives in S3, spooled locally, with a manifest.

pub mod cloudwatch;
pub mod cloudwatch_batch;
pub mod discard;
pub mod file;
pub mod layout;
pub mod naming;
pub mod s3;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::batch::Batch;
use crate::internal_events;
use crate::state::{CheckpointUpdate, Store};

/// Errors of sinks.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Writing a local file failed (disk full, permissions).
    #[error("cannot write {path}")]
    WriteFile {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Making written data durable failed.
    #[error("cannot sync {path}")]
    SyncFile {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// CloudWatch Logs did not take a request.
    #[error(transparent)]
    CloudWatch(#[from] cloudwatch::CloudWatchError),
    /// The S3 archive sink could not spool or upload.
    #[error(transparent)]
    S3(#[from] s3::S3Error),
}

/// A destination for batches.
///
/// Contract for implementers: `send_batch` returns `Ok` only when the sink holds the batch
/// as durably as its medium allows between syncs (written to the file, accepted by the
/// service); the shipper then moves the checkpoint. An `Err` means nothing of the batch may
/// be counted as delivered: the shipper sends the same batch again, so a sink must tolerate
/// a retry of a batch it partly took (at-least-once).
pub trait Sink: Send {
    /// A short stable name (`file`, `discard`), used in logs and metric labels.
    fn name(&self) -> &'static str;

    /// Takes a batch.
    fn send_batch<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<(), SinkError>>;

    /// Takes the first of `batches` (at least one when there is one) and says how many it
    /// took; same contract as [`Sink::send_batch`] for each of them, and an `Err` means none
    /// of this call's batches counts as delivered. The default takes one through
    /// `send_batch`; a sink that gains from larger requests takes several.
    fn send_batches<'a>(
        &'a mut self,
        batches: &'a [Arc<Batch>],
    ) -> BoxFuture<'a, Result<usize, SinkError>> {
        match batches.first() {
            Some(batch) => {
                let sent = self.send_batch(batch);
                Box::pin(async move { sent.await.map(|()| 1) })
            }
            None => Box::pin(std::future::ready(Ok(0))),
        }
    }

    /// Makes everything accepted so far durable (fsync); called periodically and at shutdown.
    fn sync(&mut self) -> BoxFuture<'_, Result<(), SinkError>>;

    /// What this sink is to the shipper; a destination unless it says otherwise.
    fn role(&self) -> SinkRole {
        SinkRole::Destination
    }
}

/// What a [`Sink`] in the shipper's list is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinkRole {
    /// A real destination: its own worker and queue; checkpoints wait for its acks.
    Destination,
    /// Sees each batch when the shipper takes it (inline, must be instant; errors ignored).
    ReadObserver,
    /// Sees each batch once every destination has it, before its checkpoint (inline).
    DeliveryObserver,
}

/// How far (in batches) the fastest sink may run ahead of the slowest, and so how many
/// batches are held in memory at most (besides the tailers' channel). A batch holds at most
/// one tailer read pass, so this and [`MAX_LAG_BYTES`] bound the memory the lag costs.
pub const MAX_LAG_BATCHES: usize = 128;

/// How many log file bytes the batches in flight may cover at most (see
/// [`MAX_LAG_BATCHES`]).
pub const MAX_LAG_BYTES: u64 = 64 * 1024 * 1024;

/// How the shipper paces itself.
#[derive(Clone, Debug)]
pub struct ShipperSettings {
    /// How often sinks are asked to sync.
    pub sync_interval: Duration,
    /// Batches offered to a sink in one call at most (and so per request group).
    pub max_batches_per_commit: usize,
}

/// The task that owns the sinks.
pub struct Shipper {
    sinks: Vec<Box<dyn Sink>>,
    store: Store,
    settings: ShipperSettings,
}

impl Shipper {
    /// A shipper over these sinks.
    pub fn new(sinks: Vec<Box<dyn Sink>>, store: Store, settings: ShipperSettings) -> Self {
        Self {
            sinks,
            store,
            settings,
        }
    }

    /// Runs until every sender of `rx` is gone (the tailers stopped) and every batch taken
    /// is delivered. `abort` stops retries of a failing sink (a hard deadline at shutdown);
    /// the batches not delivered then are not checkpointed and will be read again.
    pub async fn run(self, mut rx: mpsc::Receiver<Batch>, abort: CancellationToken) {
        let Self {
            sinks,
            store,
            settings,
        } = self;
        let mut read_observers = Vec::new();
        let mut delivery_observers = Vec::new();
        let mut queues = Vec::new();
        let mut workers = tokio::task::JoinSet::new();
        // Each worker reports how many batches its sink took; sized so a report never waits.
        let (done_tx, mut done_rx) =
            mpsc::channel::<(usize, u64)>(MAX_LAG_BATCHES * (sinks.len() + 1));
        for sink in sinks {
            match sink.role() {
                SinkRole::ReadObserver => read_observers.push(sink),
                SinkRole::DeliveryObserver => delivery_observers.push(sink),
                SinkRole::Destination => {
                    let (tx, queue) = mpsc::channel(MAX_LAG_BATCHES);
                    let worker = Worker {
                        index: queues.len(),
                        sink,
                        queue,
                        done: done_tx.clone(),
                        settings: settings.clone(),
                        abort: abort.clone(),
                    };
                    queues.push(tx);
                    workers.spawn(worker.run());
                }
            }
        }
        // The batches taken and not yet acknowledged by every sink, oldest first; `base` is
        // the number of the first, `acked[i]` how many sink i took since the start.
        let mut inflight: VecDeque<Arc<Batch>> = VecDeque::new();
        let mut inflight_bytes: u64 = 0;
        let mut base: u64 = 0;
        let mut acked: Vec<u64> = vec![0; queues.len()];
        let mut input_open = true;
        let mut acks: Vec<CheckpointUpdate> = Vec::new();
        loop {
            // Walkthrough: batches every sink has taken leave `inflight` in order, pass the
            // delivery observers and are checkpointed together; then wait for the next
            // report, or for a new batch while the lag allows one.
            let complete = acked
                .iter()
                .min()
                .copied()
                .unwrap_or(base + inflight.len() as u64);
            while base < complete {
                let Some(batch) = inflight.pop_front() else {
                    break;
                };
                base += 1;
                inflight_bytes -= batch_weight(&batch);
                for o in &mut delivery_observers {
                    let _ = o.send_batch(&batch).await;
                }
                internal_events::BatchDelivered {
                    records: batch.records.len() as u64,
                    bytes: batch.message_bytes() as u64,
                }
                .emit();
                acks.push(batch.ack.clone());
            }
            commit(&store, &mut acks, &abort).await;
            if !input_open && inflight.is_empty() {
                break;
            }
            tokio::select! {
                biased;
                _ = abort.cancelled() => break,
                Some((i, n)) = done_rx.recv() => {
                    acked[i] += n;
                    while let Ok((i, n)) = done_rx.try_recv() {
                        acked[i] += n;
                    }
                }
                b = rx.recv(), if input_open
                    && inflight.len() < MAX_LAG_BATCHES
                    && inflight_bytes < MAX_LAG_BYTES => match b {
                    Some(batch) => {
                        for o in &mut read_observers {
                            let _ = o.send_batch(&batch).await;
                        }
                        let batch = Arc::new(batch);
                        for q in &queues {
                            // Never waits: a queue holds at most the batches in flight. A
                            // worker that is gone was aborted.
                            let _ = q.send(batch.clone()).await;
                        }
                        inflight_bytes += batch_weight(&batch);
                        inflight.push_back(batch);
                    }
                    None => {
                        input_open = false;
                        // Workers deliver what they hold, sync, and end.
                        queues.clear();
                    }
                },
            }
        }
        drop(queues);
        drop(done_tx);
        while let Some(r) = workers.join_next().await {
            if r.is_err() {
                warn!("A sink worker panicked; this is a bug.");
            }
        }
        commit(&store, &mut acks, &abort).await;
        if inflight.is_empty() {
            info!("Shipper drained.");
        } else {
            warn!(
                batches = inflight.len(),
                "Shipper stopped with batches not delivered to every sink; they will be read again."
            );
        }
    }
}

/// What a batch counts for in [`MAX_LAG_BYTES`]: the log file bytes it covers, or its
/// message bytes when more.
fn batch_weight(batch: &Batch) -> u64 {
    batch.ack.counters.bytes.max(batch.message_bytes() as u64)
}

/// One sink's task: takes batches from its queue, hands them to the sink (several at a time)
/// until it takes them, reports, and syncs the sink periodically.
struct Worker {
    index: usize,
    sink: Box<dyn Sink>,
    queue: mpsc::Receiver<Arc<Batch>>,
    done: mpsc::Sender<(usize, u64)>,
    settings: ShipperSettings,
    abort: CancellationToken,
}

impl Worker {
    async fn run(mut self) {
        let mut last_sync = Instant::now();
        let mut pending: Vec<Arc<Batch>> = Vec::new();
        let max = self.settings.max_batches_per_commit.max(1);
        loop {
            let first = tokio::select! {
                b = self.queue.recv() => b,
                _ = tokio::time::sleep(self.settings.sync_interval) => {
                    self.sync().await;
                    last_sync = Instant::now();
                    continue;
                }
            };
            let Some(first) = first else { break };
            pending.push(first);
            while pending.len() < max {
                match self.queue.try_recv() {
                    Ok(b) => pending.push(b),
                    Err(_) => break,
                }
            }
            let mut done = 0;
            let mut backoff = Duration::from_millis(100);
            while done < pending.len() {
                match self.sink.send_batches(&pending[done..]).await {
                    // Taking none would never end: count it as one (a sink's bug, not data).
                    Ok(n) => {
                        done += n.clamp(1, pending.len() - done);
                        backoff = Duration::from_millis(100);
                    }
                    Err(e) => {
                        internal_events::SinkSendError {
                            sink: self.sink.name(),
                            error: &e,
                        }
                        .emit();
                        tokio::select! {
                            _ = self.abort.cancelled() => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                }
            }
            // One report per group, so the shipper commits once per group (a SQLite
            // transaction per batch would cost more than the batches).
            if self
                .done
                .send((self.index, pending.len() as u64))
                .await
                .is_err()
            {
                return;
            }
            pending.clear();
            if last_sync.elapsed() >= self.settings.sync_interval {
                self.sync().await;
                last_sync = Instant::now();
            }
        }
        self.sync().await;
    }

    async fn sync(&mut self) {
        if let Err(e) = self.sink.sync().await {
            internal_events::SinkSendError {
                sink: self.sink.name(),
                error: &e,
            }
            .emit();
        }
    }
}

/// Persists acknowledged checkpoints; on failure keeps them for the next try (they only
/// ever move forward, so a late commit is correct).
async fn commit(store: &Store, acks: &mut Vec<CheckpointUpdate>, abort: &CancellationToken) {
    if acks.is_empty() {
        return;
    }
    let mut backoff = Duration::from_millis(100);
    loop {
        match store.checkpoint(acks) {
            Ok(()) => {
                acks.clear();
                return;
            }
            Err(e) => {
                internal_events::CheckpointWriteError { error: &e }.emit();
                tokio::select! {
                    _ = abort.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;
    use crate::control::testing::test_batch;

    /// Counts batches taken; refuses them while `down`.
    struct Switchable {
        taken: Arc<AtomicUsize>,
        down: Arc<AtomicBool>,
    }

    impl Sink for Switchable {
        fn name(&self) -> &'static str {
            "switchable"
        }
        fn send_batch<'a>(&'a mut self, _: &'a Batch) -> BoxFuture<'a, Result<(), SinkError>> {
            let r = if self.down.load(Ordering::SeqCst) {
                Err(SinkError::WriteFile {
                    path: "/x".into(),
                    source: std::io::Error::other("down"),
                })
            } else {
                self.taken.fetch_add(1, Ordering::SeqCst);
                Ok(())
            };
            Box::pin(std::future::ready(r))
        }
        fn sync(&mut self) -> BoxFuture<'_, Result<(), SinkError>> {
            Box::pin(std::future::ready(Ok(())))
        }
    }

    async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A sink that is down holds back the checkpoint but not the other sink, until the other
    /// is MAX_LAG_BATCHES ahead; when it is back, everything is delivered and checkpointed.
    #[tokio::test]
    async fn a_failing_sink_holds_checkpoints_but_not_the_others_within_the_lag() {
        let store = Store::in_memory().unwrap();
        let (up_taken, down_taken) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (never, down) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(true)),
        );
        let sinks: Vec<Box<dyn Sink>> = vec![
            Box::new(Switchable {
                taken: up_taken.clone(),
                down: never,
            }),
            Box::new(Switchable {
                taken: down_taken.clone(),
                down: down.clone(),
            }),
        ];
        let shipper = Shipper::new(
            sinks,
            store.clone(),
            ShipperSettings {
                sync_interval: Duration::from_secs(60),
                max_batches_per_commit: 8,
            },
        );
        let (tx, rx) = mpsc::channel(4);
        let run = tokio::spawn(shipper.run(rx, CancellationToken::new()));
        let total = MAX_LAG_BATCHES + 20;
        let first = test_batch(&["x"], 1);
        let key = first.ack.source.clone();
        let sender = tokio::spawn(async move {
            for i in 0..total {
                tx.send(test_batch(&["x"], i as u64 + 1)).await.unwrap();
            }
        });
        wait_for("the healthy sink to run ahead", || {
            up_taken.load(Ordering::SeqCst) == MAX_LAG_BATCHES
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            up_taken.load(Ordering::SeqCst),
            MAX_LAG_BATCHES,
            "the lag is bounded"
        );
        assert_eq!(down_taken.load(Ordering::SeqCst), 0);
        assert!(
            store.checkpoints(&key).unwrap().is_empty(),
            "a checkpoint moved before every sink had the batch"
        );
        down.store(false, Ordering::SeqCst);
        let checkpoint = || store.checkpoints(&key).unwrap().first().map(|c| c.offset);
        wait_for("every batch checkpointed", || {
            checkpoint() == Some(total as u64)
        })
        .await;
        assert_eq!(up_taken.load(Ordering::SeqCst), total);
        assert_eq!(down_taken.load(Ordering::SeqCst), total);
        sender.await.unwrap();
        run.await.unwrap();
    }
}
