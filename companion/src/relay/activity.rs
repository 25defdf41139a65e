//! Which relay senders are still sending: the drain waits for them to close or go quiet
//! before it flushes, so a job's last samples are not cut off by the drain.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How often a quiet-wait looks again while a sender is busy (its lines waiting for room in
/// the queue): short enough not to add to the drain, long enough to cost nothing.
const BUSY_RECHECK: Duration = Duration::from_millis(100);

/// The senders' activity, shared by the listeners (writers) and the drain (reader).
#[derive(Debug, Default)]
pub(crate) struct Activity {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Id of the next TCP connection.
    next_id: u64,
    /// The open TCP connections.
    connections: HashMap<u64, Connection>,
    /// When the last UDP datagram came: UDP has no connections, so it counts as one sender
    /// that is always open and only ever goes idle.
    udp_last: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Connection {
    /// When its last bytes were read.
    last: Instant,
    /// Whether lines it sent are still on their way into the queue (backpressure).
    busy: bool,
}

impl Activity {
    /// Registers a new TCP connection, removed again when the guard drops.
    pub(crate) fn open(self: &Arc<Self>) -> ConnectionGuard {
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        inner.connections.insert(
            id,
            Connection {
                last: Instant::now(),
                busy: false,
            },
        );
        ConnectionGuard {
            activity: Arc::clone(self),
            id,
        }
    }

    /// Records a UDP datagram.
    pub(crate) fn udp_seen(&self) {
        self.lock().udp_last = Some(Instant::now());
    }

    /// `None` when every sender has been idle for `idle` (or closed); otherwise how long to
    /// wait before asking again.
    pub(crate) fn quiet(&self, idle: Duration) -> Option<Duration> {
        let inner = self.lock();
        let now = Instant::now();
        let mut wait: Option<Duration> = None;
        let mut consider = |last: Instant, busy: bool| {
            let remaining = if busy {
                BUSY_RECHECK
            } else {
                idle.saturating_sub(now.saturating_duration_since(last))
            };
            if !remaining.is_zero() {
                wait = Some(wait.map_or(remaining, |w| w.max(remaining)));
            }
        };
        for c in inner.connections.values() {
            consider(c.last, c.busy);
        }
        if let Some(last) = inner.udp_last {
            consider(last, false);
        }
        wait
    }

    /// How many TCP connections are open.
    pub(crate) fn open_connections(&self) -> usize {
        self.lock().connections.len()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the map half-updated (each update is
        // one insert/remove/assignment), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One open TCP connection's entry in [`Activity`].
#[derive(Debug)]
pub(crate) struct ConnectionGuard {
    activity: Arc<Activity>,
    id: u64,
}

impl ConnectionGuard {
    /// Bytes were read: the connection is busy until [`ConnectionGuard::done`].
    pub(crate) fn busy(&self) {
        self.set(true);
    }

    /// Everything read so far is in the queue.
    pub(crate) fn done(&self) {
        self.set(false);
    }

    fn set(&self, busy: bool) {
        if let Some(c) = self.activity.lock().connections.get_mut(&self.id) {
            c.last = Instant::now();
            c.busy = busy;
        }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.activity.lock().connections.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_once_every_sender_is_closed_or_idle() {
        let activity = Arc::new(Activity::default());
        let idle = Duration::from_millis(50);
        assert_eq!(activity.quiet(idle), None, "no senders");
        let conn = activity.open();
        assert!(activity.quiet(idle).is_some(), "just opened");
        conn.busy();
        std::thread::sleep(idle * 2);
        assert_eq!(activity.quiet(idle), Some(BUSY_RECHECK), "busy never idles");
        conn.done();
        assert!(activity.quiet(idle).is_some());
        std::thread::sleep(idle * 2);
        assert_eq!(activity.quiet(idle), None, "idle");
        activity.udp_seen();
        assert!(activity.quiet(idle).is_some(), "a datagram just came");
        drop(conn);
        assert_eq!(activity.open_connections(), 0);
    }
}
