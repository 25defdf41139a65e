//! Deliver batches to every sink, then move the checkpoint.
//!
//! The shipper is one task that owns the sinks. For each batch it calls every sink's
//! [`Sink::send_batch`] in turn, retrying a failing sink with capped backoff (a batch is
//! never dropped while the collector runs), and only when all of them have acknowledged
//! persists the batch's checkpoint. Several batches that are already waiting are handled
//! together and their checkpoints committed in one transaction.
//!
//! - `file.rs`: the local directory sink (the default).
//! - `discard.rs`: accepts and drops (benchmarks, dry runs).
//! - `cloudwatch.rs`: CloudWatch Logs; `cloudwatch_batch.rs` builds its requests (pure);
//!   `naming.rs` renders destination names from templates over identities.
//!
//! A sink may take several waiting batches in one call ([`Sink::send_batches`]), so a remote
//! sink can fill its requests (CloudWatch: up to 10,000 events) instead of sending one per
//! tailer read.

pub mod cloudwatch;
pub mod cloudwatch_batch;
pub mod discard;
pub mod file;
pub mod layout;
pub mod naming;

use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::info;

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
        batches: &'a [Batch],
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
}

/// How the shipper paces itself.
#[derive(Clone, Debug)]
pub struct ShipperSettings {
    /// How often sinks are asked to sync.
    pub sync_interval: Duration,
    /// Batches handled per checkpoint transaction at most.
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

    /// Runs until every sender of `rx` is gone (the tailers stopped) and the channel is
    /// drained. `abort` stops retries of a failing sink (a hard deadline at shutdown); the
    /// batches not delivered then are not checkpointed and will be read again.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Batch>, abort: CancellationToken) {
        let mut last_sync = Instant::now();
        let mut acks: Vec<CheckpointUpdate> = Vec::new();
        let mut pending: Vec<Batch> = Vec::new();
        loop {
            let first = tokio::select! {
                b = rx.recv() => b,
                _ = tokio::time::sleep(self.settings.sync_interval) => {
                    self.sync_all(&abort).await;
                    last_sync = Instant::now();
                    continue;
                }
            };
            let Some(first) = first else { break };
            pending.push(first);
            while pending.len() < self.settings.max_batches_per_commit {
                match rx.try_recv() {
                    Ok(b) => pending.push(b),
                    Err(_) => break,
                }
            }
            if !self.deliver(&pending, &abort).await {
                return;
            }
            for batch in pending.drain(..) {
                internal_events::BatchDelivered {
                    records: batch.records.len() as u64,
                    bytes: batch.message_bytes() as u64,
                }
                .emit();
                acks.push(batch.ack);
            }
            if last_sync.elapsed() >= self.settings.sync_interval {
                self.sync_all(&abort).await;
                last_sync = Instant::now();
            }
            self.commit(&mut acks, &abort).await;
        }
        self.sync_all(&abort).await;
        self.commit(&mut acks, &abort).await;
        info!("Shipper drained.");
    }

    /// Sends to every sink in turn, retrying each until it has taken every batch (a sink
    /// takes one or more per call). False when aborted.
    async fn deliver(&mut self, batches: &[Batch], abort: &CancellationToken) -> bool {
        for sink in &mut self.sinks {
            let mut backoff = Duration::from_millis(100);
            let mut done = 0;
            while done < batches.len() {
                match sink.send_batches(&batches[done..]).await {
                    // Taking none would never end: count it as one (a sink's bug, not data).
                    Ok(n) => {
                        done += n.clamp(1, batches.len() - done);
                        backoff = Duration::from_millis(100);
                    }
                    Err(e) => {
                        internal_events::SinkSendError {
                            sink: sink.name(),
                            error: &e,
                        }
                        .emit();
                        tokio::select! {
                            _ = abort.cancelled() => return false,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                }
            }
        }
        true
    }

    async fn sync_all(&mut self, abort: &CancellationToken) {
        for sink in &mut self.sinks {
            if let Err(e) = sink.sync().await {
                internal_events::SinkSendError {
                    sink: sink.name(),
                    error: &e,
                }
                .emit();
                if abort.is_cancelled() {
                    return;
                }
            }
        }
    }

    /// Persists acknowledged checkpoints; on failure keeps them for the next try (they only
    /// ever move forward, so a late commit is correct).
    async fn commit(&mut self, acks: &mut Vec<CheckpointUpdate>, abort: &CancellationToken) {
        if acks.is_empty() {
            return;
        }
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.store.checkpoint(acks) {
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
}
