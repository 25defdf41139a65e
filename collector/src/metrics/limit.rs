//! Abuse bounds: samples per second per owner (a token bucket each), concurrent connections
//! per peer. Both maps are bounded: idle entries are forgotten.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Entries kept before idle ones are swept.
const SWEEP_AT: usize = 4096;

/// One token bucket per owner key: `rate` tokens per second, holding at most one second's.
#[derive(Debug)]
pub struct RateLimiter {
    /// Tokens per second, and the bucket's size (one second's worth: bursts up to it pass).
    rate: f64,
    /// Per owner key: tokens left and when they were counted.
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// `rate` samples per second per owner.
    pub fn new(rate: u32) -> Self {
        Self {
            rate: f64::from(rate),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes up to `n` tokens for `owner` at `now`; returns how many were granted.
    pub fn take(&self, owner: &str, n: usize, now: Instant) -> usize {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= SWEEP_AT && !buckets.contains_key(owner) {
            // A bucket idle for a second is full again: forgetting it changes nothing.
            buckets.retain(|_, (_, at)| now.duration_since(*at).as_secs_f64() < 1.0);
        }
        let (tokens, at) = buckets.entry(owner.to_owned()).or_insert((self.rate, now));
        let refill = now.saturating_duration_since(*at).as_secs_f64() * self.rate;
        *tokens = (*tokens + refill).min(self.rate);
        *at = now;
        let granted = (n as f64).min(tokens.floor()).max(0.0);
        *tokens -= granted;
        granted as usize
    }
}

/// Open connections per peer key (an IP address, or a container).
#[derive(Debug, Clone)]
pub struct ConnectionLimiter {
    /// Connections per peer.
    max: usize,
    /// Open connections by peer key; a key leaves the map at zero.
    open: Arc<Mutex<HashMap<String, usize>>>,
}

/// Holds one connection slot; gives it back when dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    /// The peer it counts for.
    key: String,
    /// The limiter's map, to give the slot back.
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

impl ConnectionLimiter {
    /// At most `max` connections per peer.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            open: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A slot for `key`, or `None` when it already has `max` connections open.
    pub fn acquire(&self, key: String) -> Option<ConnectionSlot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(key.clone()).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(ConnectionSlot {
            key,
            open: self.open.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rate_is_per_owner_and_refills() {
        let r = RateLimiter::new(100);
        let t0 = Instant::now();
        assert_eq!(r.take("a", 80, t0), 80);
        assert_eq!(r.take("a", 80, t0), 20);
        assert_eq!(r.take("b", 80, t0), 80, "another owner has its own bucket");
        assert_eq!(r.take("a", 80, t0 + Duration::from_millis(500)), 50);
        assert_eq!(r.take("a", 500, t0 + Duration::from_secs(10)), 100);
    }

    #[test]
    fn connections_are_bounded_per_peer_and_given_back() {
        let l = ConnectionLimiter::new(2);
        let a1 = l.acquire("a".into()).unwrap();
        let _a2 = l.acquire("a".into()).unwrap();
        assert!(l.acquire("a".into()).is_none());
        assert!(l.acquire("b".into()).is_some());
        drop(a1);
        assert!(l.acquire("a".into()).is_some());
    }
}
