//! The unit of log data between tail and ship.

use bytes::Bytes;

/// A container output stream. Never called "stream": that word is CloudWatch's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StdStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl StdStream {
    /// `"stdout"` / `"stderr"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// One parsed log line.
///
/// `message` and `time` are slices of the tailer's read buffer (or of a small scratch buffer
/// when the line had escapes to decode, or partial pieces to join): no per-line allocation on
/// the common path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// RFC 3339 time with nanoseconds, as the runtime wrote it (or the read time for plain
    /// files, which carry none).
    pub time: Bytes,
    /// The output stream, for container logs; `None` for declared files.
    pub stream: Option<StdStream>,
    /// The line without its trailing newline.
    pub message: Bytes,
    /// True when this record is a piece of a line longer than `max_line_bytes`, cut there;
    /// the next record of the same stream continues it.
    pub split: bool,
}
