//! The store writer: takes chunks off the ingest queue and writes them to SQLite in
//! transactions of many chunks (one fsync-free WAL commit each), and forgets owners past the
//! retention.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::events::{self, COUNTERS};
use super::{Chunk, MetricsConfig};
use crate::state::{MetricLimits, Store};

/// Chunks written per transaction at most.
const CHUNKS_PER_WRITE: usize = 512;

/// How often owners past the retention are forgotten.
const EXPIRE_EVERY: Duration = Duration::from_secs(60);

/// What the writer needs from the configuration.
#[derive(Clone, Copy, Debug)]
pub struct StoreSettings {
    /// Bounds per path and owner.
    pub limits: MetricLimits,
    /// How long an owner is kept after its last sample.
    pub retention: Duration,
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
        }
    }
}

/// Writes until `stop` (then drains what is queued) or until every sender is gone.
pub async fn run(
    store: Store,
    mut rx: mpsc::Receiver<Arc<Chunk>>,
    settings: StoreSettings,
    stop: CancellationToken,
) {
    let mut expire = tokio::time::interval(EXPIRE_EVERY.min(settings.retention));
    expire.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let retention_ms = i64::try_from(settings.retention.as_millis()).unwrap_or(i64::MAX);
    let mut batch = Vec::with_capacity(CHUNKS_PER_WRITE);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut batch, CHUNKS_PER_WRITE) => if n == 0 { return },
            _ = expire.tick() => {
                let s = store.clone();
                match tokio::task::spawn_blocking(move || s.expire_metrics(retention_ms)).await {
                    Ok(Ok(0)) => {}
                    Ok(Ok(n)) => info!(owners = n, "Forgot metrics past the retention."),
                    Ok(Err(e)) => warn!(error = %crate::internal_events::chain(&e), "Metrics expiry failed; retrying later."),
                    Err(_) => warn!("Metrics expiry task panicked; this is a bug."),
                }
                continue;
            }
            _ = stop.cancelled() => {
                rx.close();
                while rx.recv_many(&mut batch, CHUNKS_PER_WRITE).await > 0 {
                    write(&store, std::mem::take(&mut batch), settings.limits).await;
                }
                return;
            }
        }
        write(&store, std::mem::take(&mut batch), settings.limits).await;
    }
}

/// Samples per transaction at most: the state database has one connection, shared with the
/// shipper's checkpoint commits, which must not wait behind a long metrics write.
const SAMPLES_PER_TRANSACTION: usize = 5_000;

/// Writes `chunks` in transactions of about [`SAMPLES_PER_TRANSACTION`] samples.
async fn write(store: &Store, chunks: Vec<Arc<Chunk>>, limits: MetricLimits) {
    let mut group = Vec::new();
    let mut samples = 0;
    for c in chunks {
        samples += c.samples.len();
        group.push(c);
        if samples >= SAMPLES_PER_TRANSACTION {
            write_one(store, std::mem::take(&mut group), limits).await;
            samples = 0;
        }
    }
    if !group.is_empty() {
        write_one(store, group, limits).await;
    }
}

async fn write_one(store: &Store, chunks: Vec<Arc<Chunk>>, limits: MetricLimits) {
    let s = store.clone();
    let n: u64 = chunks.iter().map(|c| c.samples.len() as u64).sum();
    match tokio::task::spawn_blocking(move || s.record_metrics(&chunks, limits)).await {
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
