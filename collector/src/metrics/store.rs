//! The store writer: takes chunks off the ingest queue, coalesces them in memory per (owner,
//! path) ([`PendingMetrics`]: latest value, count, newest `history_per_path` samples) and
//! writes that to SQLite every `metrics.flush_interval`, when it reaches its bounds, at each
//! barrier and at shutdown; and forgets owners past the retention.
//!
//! Why coalesce: writing each sample cost SQLite one or more statements (latest value,
//! history row, trim), which made the store the whole ingest's bottleneck (~150,000 samples
//! per CPU-second over 1,000 paths). Coalesced, a write costs two statements per path that
//! received anything, however many samples it received, and memory stays bounded by the
//! buffer's limits whatever the input rate.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::events::{self, COUNTERS};
use super::{MetricsConfig, StoreItem};
use crate::state::{MetricLimits, PendingMetrics, Store, now_ms};

/// Queue items taken per receive at most.
const ITEMS_PER_RECEIVE: usize = 512;

/// How often owners past the retention are forgotten.
const EXPIRE_EVERY: Duration = Duration::from_secs(60);

/// What the writer needs from the configuration.
#[derive(Clone, Copy, Debug)]
pub struct StoreSettings {
    /// Bounds per path and owner.
    pub limits: MetricLimits,
    /// How long an owner is kept after its last sample.
    pub retention: Duration,
    /// How long samples may wait in memory before they are written.
    pub flush_interval: Duration,
}

impl StoreSettings {
    /// From `[metrics]`.
    pub fn from_config(c: &MetricsConfig) -> Self {
        Self {
            limits: MetricLimits {
                history_per_path: c.history_per_path,
                max_paths_per_owner: c.max_paths_per_task,
            },
            retention: c.retention,
            flush_interval: c.flush_interval,
        }
    }
}

/// Writes until `stop` (then drains what is queued and writes everything held) or until
/// every sender is gone.
pub async fn run(
    store: Store,
    mut rx: mpsc::Receiver<StoreItem>,
    settings: StoreSettings,
    stop: CancellationToken,
) {
    let mut expire = tokio::time::interval(EXPIRE_EVERY.min(settings.retention));
    expire.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut flush = tokio::time::interval(settings.flush_interval);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let retention_ms = i64::try_from(settings.retention.as_millis()).unwrap_or(i64::MAX);
    let mut pending = PendingMetrics::new(settings.limits);
    let mut batch = Vec::with_capacity(ITEMS_PER_RECEIVE);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut batch, ITEMS_PER_RECEIVE) => {
                if n == 0 {
                    write(&store, &mut pending).await;
                    return;
                }
                take(&store, &mut batch, &mut pending).await;
            }
            _ = flush.tick() => write(&store, &mut pending).await,
            _ = expire.tick() => {
                // What is held first: an owner active since its last write must not look
                // idle to the expiry.
                write(&store, &mut pending).await;
                let s = store.clone();
                match tokio::task::spawn_blocking(move || s.expire_metrics(retention_ms)).await {
                    Ok(Ok(0)) => {}
                    Ok(Ok(n)) => info!(owners = n, "Forgot metrics past the retention."),
                    Ok(Err(e)) => warn!(error = %crate::internal_events::chain(&e), "Metrics expiry failed; retrying later."),
                    Err(_) => warn!("Metrics expiry task panicked; this is a bug."),
                }
            }
            _ = stop.cancelled() => {
                rx.close();
                while rx.recv_many(&mut batch, ITEMS_PER_RECEIVE).await > 0 {
                    take(&store, &mut batch, &mut pending).await;
                }
                write(&store, &mut pending).await;
                return;
            }
        }
    }
}

/// Takes `items` in order: chunks into `pending` (written early when it is full), and each
/// barrier answered once everything before it is written.
async fn take(store: &Store, items: &mut Vec<StoreItem>, pending: &mut PendingMetrics) {
    let now = now_ms();
    for item in items.drain(..) {
        match item {
            StoreItem::Chunk(c) => {
                let mut from = 0;
                while let Some(at) = pending.add(&c, now, from) {
                    write(store, pending).await;
                    from = at;
                }
                if pending.is_full() {
                    write(store, pending).await;
                }
            }
            StoreItem::Barrier(b) => {
                write(store, pending).await;
                let _ = b.send(());
            }
        }
    }
}

/// Writes what `pending` holds and empties it.
async fn write(store: &Store, pending: &mut PendingMetrics) {
    if pending.is_empty() {
        return;
    }
    let held = pending.take();
    let n = held.samples();
    let s = store.clone();
    match tokio::task::spawn_blocking(move || s.write_metrics(held)).await {
        Ok(Ok(w)) => {
            events::add(&COUNTERS.stored, w.stored);
            events::add(&COUNTERS.path_limited, w.path_limited);
        }
        Ok(Err(e)) => {
            events::add(&COUNTERS.store_errors, 1);
            warn!(samples = n, error = %crate::internal_events::chain(&e), "Metrics store write failed; these samples are not stored.");
        }
        Err(_) => warn!("Metrics store task panicked; this is a bug."),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::oneshot;

    use super::*;
    use crate::metrics::{Chunk, Origin, Sample};

    fn settings(flush_interval: Duration) -> StoreSettings {
        StoreSettings {
            limits: MetricLimits {
                history_per_path: 3,
                max_paths_per_owner: 100,
            },
            retention: Duration::from_secs(3600),
            flush_interval,
        }
    }

    fn chunk(path: &str, values: std::ops::Range<u32>) -> StoreItem {
        StoreItem::Chunk(Arc::new(Chunk {
            origin: Arc::new(Origin::unattributed()),
            samples: values
                .map(|v| Sample {
                    path: path.to_owned(),
                    value: f64::from(v),
                    timestamp: 1_790_000_000 + i64::from(v),
                })
                .collect(),
            rejected: 0,
            rate_limited: 0,
        }))
    }

    /// A barrier is answered only once every chunk before it is in SQLite, however long the
    /// flush interval (the drain barrier relies on it).
    #[tokio::test]
    async fn a_barrier_answers_after_the_chunks_before_it_are_stored() {
        let store = Store::in_memory().unwrap();
        let (tx, rx) = mpsc::channel(16);
        let stop = CancellationToken::new();
        let writer = tokio::spawn(run(
            store.clone(),
            rx,
            settings(Duration::from_secs(3600)),
            stop.clone(),
        ));
        // The interval's first tick is immediate; let it pass before the chunks arrive.
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.send(chunk("a", 0..5)).await.unwrap();
        tx.send(chunk("b", 0..1)).await.unwrap();
        let (done, answered) = oneshot::channel();
        tx.send(StoreItem::Barrier(done)).await.unwrap();
        answered.await.unwrap();
        let paths = store
            .metric_paths(Some(crate::metrics::UNATTRIBUTED), None, true)
            .unwrap();
        assert_eq!(paths.len(), 2);
        assert_eq!((paths[0].path.as_str(), paths[0].samples), ("a", 5));
        let hist: Vec<f64> = paths[0].history.iter().map(|h| h.1).collect();
        assert_eq!(hist, [4.0, 3.0, 2.0]);
        // Held again after the barrier, and written at shutdown.
        tx.send(chunk("a", 5..6)).await.unwrap();
        stop.cancel();
        writer.await.unwrap();
        let paths = store
            .metric_paths(Some(crate::metrics::UNATTRIBUTED), None, true)
            .unwrap();
        assert_eq!((paths[0].value, paths[0].samples), (5.0, 6));
        let hist: Vec<f64> = paths[0].history.iter().map(|h| h.1).collect();
        assert_eq!(hist, [5.0, 4.0, 3.0]);
        let owner = store
            .metric_owner(crate::metrics::UNATTRIBUTED)
            .unwrap()
            .unwrap();
        assert_eq!(owner.samples, 7);
    }

    /// Without a barrier, what is held is written within the flush interval.
    #[tokio::test]
    async fn held_samples_are_written_every_flush_interval() {
        let store = Store::in_memory().unwrap();
        let (tx, rx) = mpsc::channel(16);
        let stop = CancellationToken::new();
        let writer = tokio::spawn(run(
            store.clone(),
            rx,
            settings(Duration::from_millis(50)),
            stop.clone(),
        ));
        tx.send(chunk("a", 0..2)).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let owner = store.metric_owner(crate::metrics::UNATTRIBUTED).unwrap();
            if owner.is_some_and(|o| o.samples == 2) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "never written");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.cancel();
        writer.await.unwrap();
    }
}
