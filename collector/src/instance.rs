//! This run of the daemon, as a token (`<pid>-<start time in ns>`).
//!
//! The daemon keeps Graphite samples in memory for up to `metrics.flush_interval` before it
//! writes them to the state database. A peer that hands it samples (the companion's relay)
//! learns the token of the run that acknowledged them, and the token of the run that answers
//! its drain; when they differ, the daemon restarted in between and may have lost what it
//! held in memory, so the peer sends those samples again. A PID alone is not enough: a
//! restarted daemon in a fresh PID namespace (a container) gets the same PID.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// The token of this process. The same for the whole life of the process, different in the
/// next one.
pub fn id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("{}-{nanos}", std::process::id())
    })
}

#[cfg(test)]
mod tests {
    /// The token is stable within a process and names it.
    #[test]
    fn the_token_is_stable_and_starts_with_the_pid() {
        assert_eq!(super::id(), super::id());
        assert!(super::id().starts_with(&format!("{}-", std::process::id())));
    }
}
