//! Read log files safely across rotation and truncation, and turn bytes into records.

pub mod budget;
pub mod chain;
pub mod fingerprint;
pub mod format;
pub mod framing;
pub mod quiet_tick;
pub mod record;
pub mod rotation_guard;
pub mod tailer;

pub use record::{LogRecord, LogRecords, StdStream};

#[cfg(test)]
mod tailer_tests;
