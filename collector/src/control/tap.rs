//! Observers on the shipper's sink list: what the control API knows about reading and
//! delivery, without a hook in the hot path.
//!
//! The shipper hands each batch to its sinks in list order, retrying a sink until it takes
//! the batch before moving to the next one (`crate::ship`). So:
//! - a [`ReadTap`] first in the list sees each batch exactly once, when the shipper takes it
//!   from the tailers' channel: it counts lines and bytes *read*;
//! - every real sink is wrapped in a [`CountingSink`], which counts what that sink took and
//!   keeps its last error ([`SinkStats`]);
//! - a [`DeliveryTap`] last in the list sees a batch only once every real sink has taken it:
//!   it records the source's delivered position in the [`InventoryView`] and feeds
//!   `collector tail` through a broadcast channel.
//!
//! The taps never fail and never wait: a `collector tail` reader that falls behind loses
//! batches (it is told how many), delivery is never slowed. The unit test below runs the
//! real shipper, so a change in its calling order shows up here.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::sync::broadcast;

use super::view::InventoryView;
use crate::batch::{Batch, SourceInfo};
use crate::identify::ContainerIdentity;
use crate::internal_events;
use crate::ship::{Sink, SinkError, SinkRole};
use crate::tail::StdStream;

/// Batches a `collector tail` reader may fall behind before it loses some.
pub const TAIL_CHANNEL_BATCHES: usize = 256;

/// Counts what the shipper takes from the tailers; first in the sink list.
#[derive(Debug, Default)]
pub struct ReadTap;

impl Sink for ReadTap {
    fn name(&self) -> &'static str {
        "read_tap"
    }

    fn role(&self) -> SinkRole {
        SinkRole::ReadObserver
    }

    fn send_batch<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<(), SinkError>> {
        internal_events::BatchRead {
            records: batch.records.len() as u64,
            bytes: batch.ack.counters.bytes,
            lost_bytes: batch.ack.counters.lost_bytes,
        }
        .emit();
        Box::pin(std::future::ready(Ok(())))
    }

    fn sync(&mut self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// One line as `collector tail` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TailLine {
    /// The time the runtime recorded (RFC 3339).
    pub time: Bytes,
    /// stdout or stderr; `None` for declared files.
    pub stream: Option<StdStream>,
    /// The line.
    pub message: Bytes,
}

/// The lines of one delivered batch, for `collector tail` readers.
#[derive(Clone, Debug)]
pub struct TailBatch {
    /// Whose lines.
    pub identity: Arc<ContainerIdentity>,
    /// Which source.
    pub source: Arc<SourceInfo>,
    /// The lines, copied out of the batch (only when someone tails).
    pub lines: Vec<TailLine>,
    /// The source ended with this batch.
    pub last: bool,
}

/// Sender side of the `collector tail` feed.
pub type TailSender = broadcast::Sender<Arc<TailBatch>>;

/// Records delivered positions and feeds `collector tail`; last in the sink list.
#[derive(Debug)]
pub struct DeliveryTap {
    view: InventoryView,
    tail: TailSender,
}

impl DeliveryTap {
    /// A tap publishing into `view` and `tail`.
    pub fn new(view: InventoryView, tail: TailSender) -> Self {
        Self { view, tail }
    }
}

impl Sink for DeliveryTap {
    fn name(&self) -> &'static str {
        "delivery_tap"
    }

    fn role(&self) -> SinkRole {
        SinkRole::DeliveryObserver
    }

    fn send_batch<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<(), SinkError>> {
        self.view.record_delivery(batch);
        // Copy lines only for a reader: with none, the feed costs one atomic load per batch.
        if self.tail.receiver_count() > 0 {
            let lines = batch
                .records
                .iter()
                .map(|r| TailLine {
                    time: Bytes::copy_from_slice(r.time),
                    stream: r.stream,
                    message: Bytes::copy_from_slice(r.message),
                })
                .collect();
            let tail = TailBatch {
                identity: batch.identity.clone(),
                source: batch.source.clone(),
                lines,
                last: batch.last,
            };
            // An error only means every reader left meanwhile.
            let _ = self.tail.send(Arc::new(tail));
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn sync(&mut self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// A sink's last error, as `inspect` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastError {
    /// The error and its causes.
    pub message: String,
    /// When it happened.
    pub at: SystemTime,
}

/// What one real sink took, for `/metrics` and `inspect` (labelled by sink name only).
#[derive(Debug)]
pub struct SinkStats {
    /// The sink's name (`file`, `discard`).
    pub name: &'static str,
    /// Where it writes, for people (`/var/lib/collector/logs`).
    pub location: String,
    /// Records it took.
    pub records: AtomicU64,
    /// Message bytes it took.
    pub bytes: AtomicU64,
    /// Batches it took.
    pub batches: AtomicU64,
    /// Failed sends and syncs (each retried).
    pub errors: AtomicU64,
    last_error: Mutex<Option<LastError>>,
}

impl SinkStats {
    /// Stats of a sink named `name` writing to `location`.
    pub fn new(name: &'static str, location: String) -> Self {
        Self {
            name,
            location,
            records: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    /// The last error, if any.
    pub fn last_error(&self) -> Option<LastError> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn failed(&self, error: &SinkError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let e = LastError {
            message: internal_events::chain(error),
            at: SystemTime::now(),
        };
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
    }
}

/// A real sink with its [`SinkStats`].
pub struct CountingSink {
    inner: Box<dyn Sink>,
    stats: Arc<SinkStats>,
}

impl CountingSink {
    /// Wraps `inner`; `location` says where it writes.
    pub fn new(inner: Box<dyn Sink>, location: String) -> Self {
        let stats = Arc::new(SinkStats::new(inner.name(), location));
        Self { inner, stats }
    }

    /// The stats this wrapper fills.
    pub fn stats(&self) -> Arc<SinkStats> {
        self.stats.clone()
    }
}

impl Sink for CountingSink {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn buffer(&self) -> Option<crate::ship::BufferSettings> {
        self.inner.buffer()
    }

    fn send_batch<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<(), SinkError>> {
        let sent = self.inner.send_batch(batch);
        let stats = &self.stats;
        Box::pin(async move {
            let result = sent.await;
            match &result {
                Ok(()) => {
                    stats
                        .records
                        .fetch_add(batch.records.len() as u64, Ordering::Relaxed);
                    stats
                        .bytes
                        .fetch_add(batch.message_bytes() as u64, Ordering::Relaxed);
                    stats.batches.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => stats.failed(e),
            }
            result
        })
    }

    fn send_batches<'a>(
        &'a mut self,
        batches: &'a [Arc<Batch>],
    ) -> BoxFuture<'a, Result<usize, SinkError>> {
        let sent = self.inner.send_batches(batches);
        let stats = &self.stats;
        Box::pin(async move {
            let result = sent.await;
            match &result {
                Ok(n) => {
                    for batch in &batches[..(*n).min(batches.len())] {
                        stats
                            .records
                            .fetch_add(batch.records.len() as u64, Ordering::Relaxed);
                        stats
                            .bytes
                            .fetch_add(batch.message_bytes() as u64, Ordering::Relaxed);
                        stats.batches.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(e) => stats.failed(e),
            }
            result
        })
    }

    fn sync(&mut self) -> BoxFuture<'_, Result<(), SinkError>> {
        let synced = self.inner.sync();
        let stats = &self.stats;
        Box::pin(async move {
            let result = synced.await;
            if let Err(e) = &result {
                stats.failed(e);
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::control::testing::test_batch;
    use crate::ship::{Shipper, ShipperSettings};
    use crate::state::Store;

    /// Fails its first send, then records what it took and when, relative to the taps.
    struct Flaky {
        failed: bool,
        log: Arc<Mutex<Vec<String>>>,
    }

    impl Sink for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }
        fn send_batch<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<(), SinkError>> {
            let r = if self.failed {
                self.log
                    .lock()
                    .unwrap()
                    .push(format!("took {}", batch.records.len()));
                Ok(())
            } else {
                self.failed = true;
                Err(SinkError::WriteFile {
                    path: "/x".into(),
                    source: std::io::Error::other("disk full"),
                })
            };
            Box::pin(std::future::ready(r))
        }
        fn sync(&mut self) -> BoxFuture<'_, Result<(), SinkError>> {
            Box::pin(std::future::ready(Ok(())))
        }
    }

    #[tokio::test]
    async fn taps_see_reads_first_and_deliveries_last() {
        let view = InventoryView::new();
        let (tail_tx, mut tail_rx) = broadcast::channel(8);
        let log = Arc::new(Mutex::new(Vec::new()));
        let flaky = CountingSink::new(
            Box::new(Flaky {
                failed: false,
                log: log.clone(),
            }),
            "/x".into(),
        );
        let stats = flaky.stats();
        let read_before = internal_events::COUNTERS
            .records_read
            .load(Ordering::Relaxed);
        let sinks: Vec<Box<dyn Sink>> = vec![
            Box::new(ReadTap),
            Box::new(flaky),
            Box::new(DeliveryTap::new(view.clone(), tail_tx)),
        ];
        let shipper = Shipper::new(
            sinks,
            Store::in_memory().unwrap(),
            ShipperSettings {
                sync_interval: Duration::from_secs(60),
                max_batches_per_commit: 8,
            },
        );
        let (tx, rx) = mpsc::channel(4);
        let run = tokio::spawn(shipper.run(rx, CancellationToken::new()));
        let batch = test_batch(&["one", "two", "three"], 42);
        let key = batch.ack.source.clone();
        tx.send(batch).await.unwrap();

        let got = tokio::time::timeout(Duration::from_secs(10), tail_rx.recv())
            .await
            .unwrap()
            .unwrap();
        // The delivery tap ran only after the flaky sink took the batch on its retry.
        assert_eq!(*log.lock().unwrap(), vec!["took 3".to_owned()]);
        let messages: Vec<&[u8]> = got.lines.iter().map(|l| &l.message[..]).collect();
        assert_eq!(messages, vec![&b"one"[..], b"two", b"three"]);
        assert_eq!(view.delivered(&key).map(|d| d.offset), Some(42));
        assert_eq!(stats.records.load(Ordering::Relaxed), 3);
        assert_eq!(stats.errors.load(Ordering::Relaxed), 1);
        assert!(stats.last_error().unwrap().message.contains("disk full"));
        // Counted once although the batch was sent twice to the flaky sink. Other tests in
        // this process count too, hence at least.
        assert!(
            internal_events::COUNTERS
                .records_read
                .load(Ordering::Relaxed)
                >= read_before + 3
        );
        drop(tx);
        run.await.unwrap();
    }
}
