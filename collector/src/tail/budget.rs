//! The memory all sources' batches may hold on their way to the sinks, together.
//!
//! The sinks' channel and the shipper's lag bound batches by count, and a batch holds what
//! its read pass read: up to a few MiB for a busy file, a few hundred kB for a small one.
//! With a thousand containers each read once, 64 queued plus 128 lagging batches of small
//! files held over 30 MB (`cargo xtask bench --scenarios many`). A read pass therefore takes
//! a share of one budget, in bytes, before it reads; it keeps what its batch holds (the read
//! buffers and the decoded text) and the share is given back when the sinks are done with
//! the batch and it is dropped. A pass waits while the budget is spent: the files on disk
//! are the buffer, as everywhere else.
//!
//! It cannot deadlock: shares are held only by batches that are queued for or held by the
//! sinks, which give them back without waiting for any reader, and no pass asks for more
//! than the whole budget.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Shares are counted in KiB, so a budget of any sensible size fits the semaphore's `u32`
/// requests.
const UNIT: usize = 1024;

/// `bytes` in units, rounded up, at least one (a `u32` is far below the semaphore's
/// maximum).
fn units(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(UNIT))
        .unwrap_or(u32::MAX)
        .max(1)
}

/// The budget, shared by every tailer.
#[derive(Debug)]
pub struct MemoryBudget {
    permits: Arc<Semaphore>,
    /// The whole budget, in units.
    units: u32,
}

/// A share of the budget, given back when dropped.
#[derive(Debug)]
pub struct Share {
    permit: OwnedSemaphorePermit,
}

impl MemoryBudget {
    /// A budget of `bytes` (at least one unit).
    pub fn new(bytes: usize) -> Arc<Self> {
        let units = units(bytes);
        Arc::new(Self {
            permits: Arc::new(Semaphore::new(units as usize)),
            units,
        })
    }

    /// Waits for a share of `bytes` (capped at the whole budget, so a pass larger than the
    /// budget still runs, alone).
    pub async fn reserve(&self, bytes: usize) -> Share {
        let units = self.units_for(bytes);
        let permit = self
            .permits
            .clone()
            .acquire_many_owned(units)
            .await
            .expect("the budget's semaphore is never closed");
        Share { permit }
    }

    /// A share of `bytes` (capped as in [`reserve`](Self::reserve)) if the budget has it
    /// now.
    pub fn try_reserve(&self, bytes: usize) -> Option<Share> {
        let units = self.units_for(bytes);
        let permit = self.permits.clone().try_acquire_many_owned(units).ok()?;
        Some(Share { permit })
    }

    /// Bytes not held by any share.
    #[cfg(test)]
    pub(crate) fn available(&self) -> usize {
        self.permits.available_permits() * UNIT
    }

    fn units_for(&self, bytes: usize) -> u32 {
        units(bytes).min(self.units)
    }
}

impl Share {
    /// Gives back what is above `bytes` (the share keeps at least one unit).
    pub fn shrink_to(&mut self, bytes: usize) {
        let keep = bytes.div_ceil(UNIT).max(1);
        let held = self.permit.num_permits();
        if held > keep {
            drop(self.permit.split(held - keep));
        }
    }

    /// Adds `other` to this share.
    pub fn merge(&mut self, other: Share) {
        self.permit.merge(other.permit);
    }

    /// Bytes held.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.permit.num_permits() * UNIT
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_pass_waits_until_a_batch_gives_its_share_back() {
        let budget = MemoryBudget::new(1 << 20);
        let mut first = budget.reserve(700 * 1024).await;
        assert_eq!(budget.available(), 324 * 1024);
        // Larger than what is left: waits.
        let waiting = tokio::time::timeout(Duration::from_millis(50), budget.reserve(400 * 1024));
        assert!(
            waiting.await.is_err(),
            "a share beyond the budget was granted"
        );
        // The pass read less than it asked for: the rest goes back at once.
        first.shrink_to(100 * 1024 + 1);
        assert_eq!(first.bytes(), 101 * 1024);
        let second = budget.reserve(400 * 1024).await;
        drop(first);
        assert_eq!(budget.available(), (1024 - 400) * 1024);
        drop(second);
        assert_eq!(budget.available(), 1 << 20);
    }

    #[tokio::test]
    async fn a_pass_larger_than_the_budget_runs_alone() {
        let budget = MemoryBudget::new(64 * 1024);
        let all = budget.reserve(10 << 20).await;
        assert_eq!((all.bytes(), budget.available()), (64 * 1024, 0));
        let mut empty = std::pin::pin!(budget.reserve(0));
        // Even an empty pass waits for the one unit it holds.
        assert!(
            tokio::time::timeout(Duration::from_millis(20), &mut empty)
                .await
                .is_err()
        );
        drop(all);
        assert_eq!(empty.await.bytes(), 1024);
    }
}
