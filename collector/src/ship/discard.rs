//! The discard sink: accepts every batch and keeps nothing. A real sink behind the same
//! trait, for benchmarks and dry runs; delivery counters still count what it took.

use futures_util::future::BoxFuture;

use super::{Sink, SinkError};
use crate::batch::Batch;

/// Accepts and drops.
#[derive(Debug, Default)]
pub struct DiscardSink {
    records: u64,
}

impl DiscardSink {
    /// Records taken so far.
    pub fn records(&self) -> u64 {
        self.records
    }
}

impl Sink for DiscardSink {
    fn name(&self) -> &'static str {
        "discard"
    }

    fn send_batch<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<(), SinkError>> {
        self.records += batch.records.len() as u64;
        Box::pin(async { Ok(()) })
    }

    fn sync(&mut self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async { Ok(()) })
    }
}
