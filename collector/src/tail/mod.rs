//! Read log files safely across rotation and truncation, and turn bytes into records.

pub mod format;
pub mod framing;
pub mod record;

pub use record::{LogRecord, StdStream};
