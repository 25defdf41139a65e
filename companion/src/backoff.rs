//! Retry delays for the daemon's sockets: 200 ms doubling to 2 s.
//!
//! A restarting daemon is back within seconds; polling faster only burns the task's CPU, and
//! waiting longer than 2 s adds to every drain that meets a restart.

use std::time::Duration;

/// The first delay.
const FIRST: Duration = Duration::from_millis(200);
/// The longest delay.
const MAX: Duration = Duration::from_secs(2);

/// Doubling delays, one value per retry loop.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    /// Starts at 200 ms.
    pub(crate) fn new() -> Self {
        Self { next: FIRST }
    }

    /// The delay before the next retry.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(MAX);
        delay
    }

    /// Back to 200 ms, after a success.
    pub(crate) fn reset(&mut self) {
        self.next = FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_two_seconds() {
        let mut b = Backoff::new();
        let ms: Vec<u128> = (0..7).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(ms, [200, 400, 800, 1600, 2000, 2000, 2000]);
        b.reset();
        assert_eq!(b.next_delay(), FIRST);
    }
}
