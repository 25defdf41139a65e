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
//! catches up. So the lag, and the memory the batches in flight hold, are bounded. A sink
//! with a disk buffer ([`Sink::buffer`], `spill.rs`: CloudWatch Logs) never gets there: once
//! its queue backs up, because it fails or because its calls are slow, its worker moves its
//! batches to the buffer (synced, they count as taken) and sends from there, oldest first,
//! moving what arrives meanwhile behind them, so the others go on; only a full buffer holds
//! them back. A failed call is retried with the same batches, so the sink can resume it.
//!
//! Observers (the control API's taps, [`SinkRole`]) are not sinks of their own: the read tap
//! sees each batch as the shipper takes it, the delivery tap once every sink has it.
//!
//! - `file.rs`: the local directory sink (the default).
//! - `discard.rs`: accepts and drops (benchmarks, dry runs).
//! - `cloudwatch.rs`: CloudWatch Logs; `cloudwatch_batch.rs` builds its requests (pure);
//!   `naming.rs` renders destination names from templates over identities.
//! - `s3.rs`: per-task `tar.gz` archives in S3, spooled locally, with a manifest.
//! - `spill.rs`: a sink's disk buffer.

pub mod cloudwatch;
pub mod cloudwatch_batch;
pub mod discard;
pub mod file;
pub mod layout;
pub mod naming;
pub mod s3;
pub mod spill;

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

    /// Its disk buffer ([`spill`]), when it has one: where its batches go once it is down
    /// or slow long enough for its queue to back up, so the other sinks go on.
    fn buffer(&self) -> Option<BufferSettings> {
        None
    }
}

/// A sink's disk buffer: its directory and bound, and the gauge of batches waiting there.
#[derive(Clone, Debug)]
pub struct BufferSettings {
    /// `<data_dir>/buffer/<sink>/`.
    pub dir: std::path::PathBuf,
    /// Bytes at most.
    pub max_bytes: u64,
    /// Batches waiting in it (the drain barrier waits for zero).
    pub gauge: Arc<std::sync::atomic::AtomicU64>,
}

/// Batches queued for a failing sink before its worker spills them to its disk buffer.
const SPILL_WHEN_QUEUED: usize = MAX_LAG_BATCHES / 4;

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
                    let spill = sink.buffer().and_then(|b| {
                        match spill::Spill::open(b.dir.clone(), b.max_bytes, b.gauge) {
                            Ok(s) => {
                                if !s.is_empty() {
                                    info!(sink = sink.name(), batches = s.len(), "Sending what the sink's disk buffer kept from the last run.");
                                }
                                Some(s)
                            }
                            Err(e) => {
                                warn!(sink = sink.name(), error = %internal_events::chain(&e), "The sink's disk buffer cannot be used; it has none.");
                                None
                            }
                        }
                    });
                    let worker = Worker {
                        index: queues.len(),
                        sink,
                        queue,
                        done: done_tx.clone(),
                        settings: settings.clone(),
                        abort: abort.clone(),
                        spill,
                        held: Vec::new(),
                        retry_group: None,
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

/// How often a worker sending from its disk buffer moves newly queued batches into it.
const DRAIN_TICK: Duration = Duration::from_millis(50);

/// A worker's queue and disk buffer, borrowed apart from its sink (so the sink can be busy
/// meanwhile): moves the batches queued behind a sink that sends from its buffer into the
/// buffer, where they count as taken and the shipper goes on.
///
/// Only while the buffer holds batches: they all come after the ones the buffer holds, so
/// reporting them taken keeps the shipper's per-sink count in order. A call on batches
/// straight from the queue holds the later ones back until it ends (or the checkpoint could
/// pass batches this sink does not hold), unless its own batches move to the buffer first
/// ([`Drain::during_queue_call`]).
struct Drain<'a> {
    index: usize,
    sink: &'static str,
    queue: &'a mut mpsc::Receiver<Arc<Batch>>,
    spill: Option<&'a mut spill::Spill>,
    held: &'a mut Vec<Arc<Batch>>,
    done: &'a mpsc::Sender<(usize, u64)>,
}

/// A [`Drain`] over a worker's fields, leaving its sink free.
macro_rules! drain {
    ($worker:expr) => {
        Drain {
            index: $worker.index,
            sink: $worker.sink.name(),
            queue: &mut $worker.queue,
            spill: $worker.spill.as_mut(),
            held: &mut $worker.held,
            done: &$worker.done,
        }
    };
}

impl Drain<'_> {
    /// Moves everything queued into the buffer and reports it taken; a full (or failing)
    /// buffer leaves the batches in `held`, sent after the buffer. `false`: the shipper is
    /// gone.
    async fn move_queue(&mut self) -> bool {
        let Some(spill) = self.spill.as_mut() else {
            return true;
        };
        if !self.held.is_empty() {
            return true;
        }
        let mut group = Vec::new();
        while let Ok(b) = self.queue.try_recv() {
            group.push(b);
        }
        if group.is_empty() {
            return true;
        }
        match spill.push(&group) {
            Ok(true) => self
                .done
                .send((self.index, group.len() as u64))
                .await
                .is_ok(),
            Ok(false) => {
                *self.held = group;
                true
            }
            Err(e) => {
                warn!(sink = self.sink, error = %internal_events::chain(&e), "Cannot write the sink's disk buffer.");
                *self.held = group;
                true
            }
        }
    }

    /// Awaits `call`, the sink sending `rest` straight from the queue while the buffer is
    /// empty, or the backoff after such a call failed (the first `before` batches of the
    /// group were taken by earlier calls, not yet reported). A single call can be slow for
    /// long (CloudWatch: one request per stream, each late), a backoff lasts up to 10 s, and
    /// the queue fills meanwhile; once it holds [`SPILL_WHEN_QUEUED`]
    /// batches, `rest` and the queue move into the buffer (synced, so they count as taken,
    /// the whole group reported) and every later tick moves the queue there too, so the
    /// shipper never stops for this call. `true` with the output: the batches moved, and the
    /// caller advances the buffer past what the call took instead of reporting.
    async fn during_queue_call<F: std::future::Future>(
        mut self,
        call: F,
        before: usize,
        rest: &[Arc<Batch>],
    ) -> (F::Output, bool) {
        if self.spill.is_none() {
            return (call.await, false);
        }
        tokio::pin!(call);
        let mut spilled = false;
        loop {
            tokio::select! {
                out = &mut call => return (out, spilled),
                _ = tokio::time::sleep(DRAIN_TICK) => {
                    if spilled {
                        let _ = self.move_queue().await;
                    } else if self.held.is_empty() && self.queue.len() >= SPILL_WHEN_QUEUED {
                        spilled = self.spill_call(before, rest).await;
                    }
                }
            }
        }
    }

    /// Moves `rest` (a call's batches not yet taken, oldest first) and then the queue into
    /// the empty buffer, and reports `before` plus all of them taken; `false`: the buffer
    /// had no room (the queue's batches wait in `held`) or there is none.
    async fn spill_call(&mut self, before: usize, rest: &[Arc<Batch>]) -> bool {
        let Some(spill) = self.spill.as_mut() else {
            return false;
        };
        let mut group = rest.to_vec();
        let from_queue = group.len();
        while let Ok(b) = self.queue.try_recv() {
            group.push(b);
        }
        let pushed = match spill.push(&group) {
            Ok(pushed) => pushed,
            Err(e) => {
                warn!(sink = self.sink, error = %internal_events::chain(&e), "Cannot write the sink's disk buffer.");
                false
            }
        };
        if !pushed {
            *self.held = group.split_off(from_queue);
            return false;
        }
        warn!(
            sink = self.sink,
            batches = group.len(),
            "Sink slow or failing with batches queued: buffering them on disk."
        );
        // A gone shipper ends the worker at its next step.
        let _ = self
            .done
            .send((self.index, (before + group.len()) as u64))
            .await;
        true
    }

    /// Awaits `call` (the sink sending from the buffer), moving the queue into the buffer
    /// every [`DRAIN_TICK`] meanwhile, so a slow call never backs the queue up.
    async fn during<F: std::future::Future>(mut self, call: F) -> F::Output {
        tokio::pin!(call);
        loop {
            tokio::select! {
                out = &mut call => return out,
                _ = tokio::time::sleep(DRAIN_TICK) => {
                    // A gone shipper ends the worker at its next step.
                    let _ = self.move_queue().await;
                }
            }
        }
    }
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
    /// The sink's disk buffer, if it has one.
    spill: Option<spill::Spill>,
    /// Batches taken from the queue that a full buffer could not hold: sent after the
    /// buffer, before the queue (order per source is kept).
    held: Vec<Arc<Batch>>,
    /// How many batches the last failed call from the buffer offered: the retry offers the
    /// same ones, not more that arrived meanwhile, so the sink sees the same batches and
    /// resumes where it stopped (CloudWatch: at the first request not acknowledged) instead
    /// of starting over and sending what it had delivered again.
    retry_group: Option<usize>,
}

/// What [`Worker::send_from_spill`] did.
enum SpillStep {
    /// Go on.
    Continue,
    /// Stop: aborted, or the shipper is gone.
    Stop,
}

impl Worker {
    async fn run(mut self) {
        let mut last_sync = Instant::now();
        let mut pending: Vec<Arc<Batch>> = Vec::new();
        let max = self.settings.max_batches_per_commit.max(1);
        let mut backoff = Duration::from_millis(100);
        loop {
            // Buffered batches go first; a queue backed up behind a slow sink (whose calls
            // succeed, late) goes to the buffer too, so the other sinks go on.
            if self.spill.as_ref().is_some_and(|s| !s.is_empty())
                || (self.spill.is_some()
                    && self.held.is_empty()
                    && self.queue.len() >= SPILL_WHEN_QUEUED)
            {
                match self.send_from_spill(max, &mut backoff).await {
                    SpillStep::Continue => {}
                    SpillStep::Stop => return,
                }
                if last_sync.elapsed() >= self.settings.sync_interval {
                    self.sync().await;
                    last_sync = Instant::now();
                }
                continue;
            }
            if self.held.is_empty() {
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
            } else {
                pending.append(&mut self.held);
            }
            let mut done = 0;
            let mut reported = false;
            backoff = Duration::from_millis(100);
            while done < pending.len() {
                let (sent, spilled) = drain!(self)
                    .during_queue_call(
                        self.sink.send_batches(&pending[done..]),
                        done,
                        &pending[done..],
                    )
                    .await;
                if spilled {
                    // The rest of the group is at the head of the buffer, reported taken:
                    // move past what this call took; the buffer sends the others.
                    let step = self
                        .after_call_from_spill(sent, pending.len() - done, &mut backoff)
                        .await;
                    if let SpillStep::Stop = step {
                        return;
                    }
                    reported = true;
                    break;
                }
                match sent {
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
                        // The backoff, during which a queue backing up moves to the disk
                        // buffer behind the rest of the group, exactly as during a slow
                        // call; the buffer then retries the same batches.
                        let abort = self.abort.clone();
                        let wait = async move {
                            tokio::select! {
                                _ = abort.cancelled() => true,
                                _ = tokio::time::sleep(backoff) => false,
                            }
                        };
                        let (aborted, spilled) = drain!(self)
                            .during_queue_call(wait, done, &pending[done..])
                            .await;
                        if aborted {
                            return;
                        }
                        if spilled {
                            self.retry_group = Some(pending.len() - done);
                            reported = true;
                            break;
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                }
            }

            if reported {
                // Moved to the buffer during its call, and reported then.
                pending.clear();
                continue;
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

    /// One step while the disk buffer holds batches: moves what the queue holds behind them
    /// (so order is kept and the queue never backs up while there is room), then offers the
    /// oldest to the sink; on failure, waits a little (the queue is looked at again soon).
    async fn send_from_spill(&mut self, max: usize, backoff: &mut Duration) -> SpillStep {
        if !drain!(self).move_queue().await {
            return SpillStep::Stop;
        }
        let Some(spill) = self.spill.as_mut() else {
            return SpillStep::Continue;
        };
        let group = match spill.peek(self.retry_group.unwrap_or(max)) {
            Ok(g) => g,
            Err(e) => {
                // A damaged buffer cannot be sent: say so loudly, and skip what does not
                // decode rather than stop this sink for good.
                warn!(sink = self.sink.name(), error = %internal_events::chain(&e), "The sink's disk buffer is damaged; the rest of it is dropped.");
                let n = spill.len() as usize;
                let _ = spill.advance(n);
                self.retry_group = None;
                return SpillStep::Continue;
            }
        };
        if group.is_empty() {
            return SpillStep::Continue;
        }
        // Batches arriving meanwhile go behind the group in the buffer at once, so a slow
        // call never lets the queue back up.
        let sent = drain!(self).during(self.sink.send_batches(&group)).await;
        self.after_call_from_spill(sent, group.len(), backoff).await
    }

    /// After a call on the first `offered` batches of the buffer (sent from it, or moved
    /// there while the call ran): the buffer moves past what the sink took; a failure is
    /// retried with the same batches (see `retry_group`) after a short nap, so the queue is
    /// moved to the buffer before it backs up.
    async fn after_call_from_spill(
        &mut self,
        sent: Result<usize, SinkError>,
        offered: usize,
        backoff: &mut Duration,
    ) -> SpillStep {
        let Some(spill) = self.spill.as_mut() else {
            return SpillStep::Continue;
        };
        self.retry_group = sent.is_err().then_some(offered);
        match sent {
            Ok(n) => {
                if let Err(e) = spill.advance(n.clamp(1, offered)) {
                    warn!(sink = self.sink.name(), error = %internal_events::chain(&e), "Cannot move the disk buffer's cursor; batches may be sent again.");
                }
                *backoff = Duration::from_millis(100);
                if spill.is_empty() {
                    info!(
                        sink = self.sink.name(),
                        "The sink caught up with its disk buffer."
                    );
                }
                SpillStep::Continue
            }
            Err(e) => {
                internal_events::SinkSendError {
                    sink: self.sink.name(),
                    error: &e,
                }
                .emit();
                let nap = (*backoff).min(Duration::from_millis(250));
                tokio::select! {
                    _ = self.abort.cancelled() => return SpillStep::Stop,
                    _ = tokio::time::sleep(nap) => {}
                }
                *backoff = (*backoff * 2).min(Duration::from_secs(10));
                SpillStep::Continue
            }
        }
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

    /// How a [`Buffered`] sink misbehaves while switched on.
    #[derive(Clone, Copy, PartialEq)]
    enum Fault {
        /// Every call fails.
        Down,
        /// Every call succeeds, 200 ms late.
        Slow,
        /// A call waits until the fault is switched off, then succeeds (a call of many
        /// slow requests).
        Stuck,
    }

    /// A sink with a disk buffer, recording the offsets it took in order; `fault` while `on`.
    struct Buffered {
        offsets: Arc<std::sync::Mutex<Vec<u64>>>,
        on: Arc<AtomicBool>,
        fault: Fault,
        buffer: BufferSettings,
    }

    impl Sink for Buffered {
        fn name(&self) -> &'static str {
            "buffered"
        }
        fn send_batch<'a>(&'a mut self, b: &'a Batch) -> BoxFuture<'a, Result<(), SinkError>> {
            Box::pin(async move {
                if self.on.load(Ordering::SeqCst) {
                    match self.fault {
                        Fault::Down => {
                            return Err(SinkError::WriteFile {
                                path: "/x".into(),
                                source: std::io::Error::other("down"),
                            });
                        }
                        Fault::Slow => tokio::time::sleep(Duration::from_millis(200)).await,
                        Fault::Stuck => {
                            while self.on.load(Ordering::SeqCst) {
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                        }
                    }
                }
                self.offsets.lock().unwrap().push(b.ack.checkpoint.offset);
                Ok(())
            })
        }
        fn sync(&mut self) -> BoxFuture<'_, Result<(), SinkError>> {
            Box::pin(std::future::ready(Ok(())))
        }
        fn buffer(&self) -> Option<BufferSettings> {
            Some(self.buffer.clone())
        }
    }

    /// A healthy sink and a [`Buffered`] one with `fault`: while the fault is on, the
    /// healthy sink and the checkpoints get every batch, past the lag bound, and the other's
    /// wait in its buffer (a sink that is down delivers none meanwhile); the fault off, it
    /// gets every batch once, in order.
    async fn held_back_by_no_one(fault: Fault) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::in_memory().unwrap();
        let up_taken = Arc::new(AtomicUsize::new(0));
        let offsets = Arc::new(std::sync::Mutex::new(Vec::new()));
        let switch = Arc::new(AtomicBool::new(true));
        let gauge = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let sinks: Vec<Box<dyn Sink>> = vec![
            Box::new(Switchable {
                taken: up_taken.clone(),
                down: Arc::new(AtomicBool::new(false)),
            }),
            Box::new(Buffered {
                offsets: offsets.clone(),
                on: switch.clone(),
                fault,
                buffer: BufferSettings {
                    dir: dir.path().join("buffer"),
                    max_bytes: 64 * 1024 * 1024,
                    gauge: gauge.clone(),
                },
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
        let total = 3 * MAX_LAG_BATCHES;
        let key = test_batch(&["x"], 1).ack.source.clone();
        let sender = tokio::spawn(async move {
            for i in 0..total {
                tx.send(test_batch(&["x"], i as u64 + 1)).await.unwrap();
            }
        });
        let checkpoint = || store.checkpoints(&key).unwrap().first().map(|c| c.offset);
        // A slow sink at 200 ms a batch would take 77 s for them all; held back by it, the
        // other would not get them within wait_for's 20 s.
        wait_for(
            "the healthy sink and the checkpoint past the lag bound",
            || up_taken.load(Ordering::SeqCst) == total && checkpoint() == Some(total as u64),
        )
        .await;
        let meanwhile = offsets.lock().unwrap().len();
        if fault != Fault::Slow {
            assert_eq!(meanwhile, 0, "a sink that is down or stuck took batches");
        }
        assert!(meanwhile < total, "the sink was not held up");
        assert!(gauge.load(Ordering::SeqCst) > 0, "nothing in the buffer");
        switch.store(false, Ordering::SeqCst);
        wait_for("the buffered sink to catch up", || {
            offsets.lock().unwrap().len() >= total
        })
        .await;
        let got = offsets.lock().unwrap().clone();
        assert_eq!(
            got,
            (1..=total as u64).collect::<Vec<_>>(),
            "once each, in order"
        );
        assert_eq!(gauge.load(Ordering::SeqCst), 0);
        sender.await.unwrap();
        run.await.unwrap();
    }

    /// With a disk buffer, a sink that is down does not hold back the other sink or the
    /// checkpoints past the lag bound: its batches go to the buffer, and when it is back it
    /// gets every batch once, in order.
    #[tokio::test]
    async fn a_failing_sink_with_a_buffer_holds_back_no_one() {
        held_back_by_no_one(Fault::Down).await;
    }

    /// A sink with a disk buffer that is slow (every call succeeds, late) holds back neither
    /// the other sink nor the checkpoints past the lag bound: what backs up behind it goes to
    /// its buffer; it still gets every batch once, in order.
    #[tokio::test]
    async fn a_slow_sink_with_a_buffer_holds_back_no_one() {
        held_back_by_no_one(Fault::Slow).await;
    }

    /// A sink with a disk buffer whose one call never ends while the others go on (CloudWatch
    /// slow on each of a call's requests) holds back neither the other sink nor the
    /// checkpoints: the call's batches and the queue behind them move to its buffer while
    /// the call runs; when it ends, the buffer moves past what it took, and the sink gets
    /// every batch once, in order.
    #[tokio::test]
    async fn a_sink_stuck_in_one_call_holds_back_no_one() {
        held_back_by_no_one(Fault::Stuck).await;
    }

    /// Every call's batches (end offsets), and whether it failed.
    type Calls = Arc<std::sync::Mutex<Vec<(Vec<u64>, bool)>>>;

    /// Records the batches of every call, and whether it failed (while `down`).
    struct Recorder {
        calls: Calls,
        down: Arc<AtomicBool>,
        buffer: BufferSettings,
    }

    impl Sink for Recorder {
        fn name(&self) -> &'static str {
            "recorder"
        }
        fn send_batch<'a>(&'a mut self, _: &'a Batch) -> BoxFuture<'a, Result<(), SinkError>> {
            unreachable!("send_batches is overridden")
        }
        fn send_batches<'a>(
            &'a mut self,
            batches: &'a [Arc<Batch>],
        ) -> BoxFuture<'a, Result<usize, SinkError>> {
            let down = self.down.load(Ordering::SeqCst);
            let offsets = batches.iter().map(|b| b.ack.checkpoint.offset).collect();
            self.calls.lock().unwrap().push((offsets, down));
            Box::pin(std::future::ready(if down {
                Err(SinkError::WriteFile {
                    path: "/x".into(),
                    source: std::io::Error::other("down"),
                })
            } else {
                Ok(batches.len())
            }))
        }
        fn sync(&mut self) -> BoxFuture<'_, Result<(), SinkError>> {
            Box::pin(std::future::ready(Ok(())))
        }
        fn buffer(&self) -> Option<BufferSettings> {
            Some(self.buffer.clone())
        }
    }

    /// After a failed call the worker offers the same batches again, also once they moved to
    /// the disk buffer and more arrived behind them: a sink that took part of a call (some of
    /// its requests) resumes it rather than starting over and sending that part twice.
    #[tokio::test]
    async fn a_failed_call_is_retried_with_the_same_batches() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::in_memory().unwrap();
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let down = Arc::new(AtomicBool::new(true));
        let sinks: Vec<Box<dyn Sink>> = vec![Box::new(Recorder {
            calls: calls.clone(),
            down: down.clone(),
            buffer: BufferSettings {
                dir: dir.path().join("buffer"),
                max_bytes: 64 * 1024 * 1024,
                gauge: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            },
        })];
        let shipper = Shipper::new(
            sinks,
            store.clone(),
            ShipperSettings {
                sync_interval: Duration::from_secs(60),
                max_batches_per_commit: 64,
            },
        );
        let (tx, rx) = mpsc::channel(4);
        let run = tokio::spawn(shipper.run(rx, CancellationToken::new()));
        tx.send(test_batch(&["x"], 1)).await.unwrap();
        wait_for("a first failed call", || !calls.lock().unwrap().is_empty()).await;
        let total = 1 + 2 * SPILL_WHEN_QUEUED;
        for i in 1..total {
            tx.send(test_batch(&["x"], i as u64 + 1)).await.unwrap();
        }
        let key = test_batch(&["x"], 1).ack.source.clone();
        wait_for("every batch in the buffer", || {
            store.checkpoints(&key).unwrap().first().map(|c| c.offset) == Some(total as u64)
        })
        .await;
        down.store(false, Ordering::SeqCst);
        drop(tx);
        run.await.unwrap();
        let calls = calls.lock().unwrap().clone();
        for pair in calls.windows(2) {
            if pair[0].1 {
                assert_eq!(
                    pair[1].0, pair[0].0,
                    "a retry offered other batches: {calls:?}"
                );
            }
        }
        let delivered: Vec<u64> = calls
            .iter()
            .filter(|c| !c.1)
            .flat_map(|c| c.0.clone())
            .collect();
        assert_eq!(delivered, (1..=total as u64).collect::<Vec<_>>());
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
