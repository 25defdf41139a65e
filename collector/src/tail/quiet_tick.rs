//! One shared clock for the polls of quiet files.
//!
//! A file quiet for 10 s is polled every `tail.quiet_poll_interval`. Rather than a timer per
//! tailer (each firing at its own moment, each waking a runtime worker), quiet tailers wait
//! on one [`Notify`] that a single task fires every interval: a hundred quiet files wake the
//! runtime once per interval, and run together.

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
        let metrics = tokio::runtime::Handle::current().metrics();
        let before = metrics.num_alive_tasks();
        let tick = QuietTick::start(Duration::from_millis(5));
        assert_eq!(metrics.num_alive_tasks(), before + 1);
        drop(tick);
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while metrics.num_alive_tasks() > before {
            assert!(
                std::time::Instant::now() < deadline,
                "the ticking task lives on"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
