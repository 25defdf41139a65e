//! One shared clock for the polls of quiet files.
//!
//! Each tailer sleeping on its own timer costs the runtime more than the poll itself: every
//! new timer entry can wake the worker parked in the I/O driver (an `eventfd` write), and the
//! two workers then take the timer wheel's lock in turn. With a hundred quiet files that was
//! ~3,000 syscalls a second for ~120 `fstat`s (`strace -c -f` on the idle bench). Quiet
//! tailers instead wait on one [`Notify`] that a single task fires every
//! `quiet_poll_interval`: one timer for all of them.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;

/// A handle on the shared tick; the ticking task ends when the last handle is dropped.
#[derive(Clone, Debug)]
pub struct QuietTick {
    notify: Arc<Notify>,
    interval: Duration,
}

impl QuietTick {
    /// Starts the ticking task on the current runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn start(interval: Duration) -> Self {
        let notify = Arc::new(Notify::new());
        let weak: Weak<Notify> = Arc::downgrade(&notify);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(notify) = weak.upgrade() else { return };
                notify.notify_waiters();
            }
        });
        Self { notify, interval }
    }

    /// The tick's period.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Waits for the next tick: at most one period (a tick that fires while the caller is
    /// not yet waiting is missed, so at most two).
    pub async fn wait(&self) {
        self.notify.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_waiter_wakes_on_one_tick() {
        let tick = QuietTick::start(Duration::from_millis(20));
        let waiters: Vec<_> = (0..10)
            .map(|_| {
                let t = tick.clone();
                tokio::spawn(async move { t.wait().await })
            })
            .collect();
        for w in waiters {
            tokio::time::timeout(Duration::from_secs(2), w)
                .await
                .expect("woken by a tick")
                .unwrap();
        }
    }

    #[tokio::test]
    async fn the_task_ends_with_the_last_handle() {
        let tick = QuietTick::start(Duration::from_millis(5));
        let weak = Arc::downgrade(&tick.notify);
        drop(tick);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(weak.upgrade().is_none());
    }
}
