//! Log file formats: turn line frames into [`LogRecord`]s, joining partial lines.
//!
//! [`Decoder`] dispatches over the formats with an enum (no boxing on the hot path). The
//! tailer feeds it every [`Frame`] of a file in order and collects the records:
//!
//! ```no_run
//! use bytes::Bytes;
//! use collector::tail::LogRecords;
//! use collector::tail::format::{Decoder, LogFormat};
//! use collector::tail::framing::LineFramer;
//!
//! # fn main() -> std::io::Result<()> {
//! let max_line_bytes = 1024 * 1024;
//! let format = LogFormat::DockerJson;
//! let mut file = std::fs::File::open("/var/lib/docker/containers/abc/abc-json.log")?;
//! let mut framer = LineFramer::new(0, 256 * 1024, format.max_frame_bytes(max_line_bytes));
//! let mut decoder = Decoder::new(format, max_line_bytes);
//! let now = Bytes::from_static(b"2024-01-01T00:00:00Z");
//! let mut records = LogRecords::new();
//! while framer.read_from(&mut file)? > 0 {
//!     let mut safe_offset = framer.offset_committed();
//!     while let Some(frame) = framer.next_frame() {
//!         let end = frame.end_offset;
//!         if let Err(error) = decoder.decode(frame, &now, &mut records) {
//!             eprintln!("skipped a line: {error}");
//!         }
//!         // Never commit past a partial line the decoder still holds.
//!         safe_offset = decoder.pending_start().map_or(end, |held| held.min(end));
//!     }
//!     records.clear(); // ... send them, then checkpoint `safe_offset` once acked.
//! }
//! # Ok(())
//! # }
//! ```

pub mod cri;
pub mod docker_json;
pub mod plain;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use self::cri::{CriDecoder, CriError};
pub use self::docker_json::{DockerJsonDecoder, DockerJsonError};
pub use self::plain::PlainDecoder;
use super::framing::Frame;
use super::record::{LogRecords, MAX_CHUNK_BYTES, StdStream};

/// How the lines of a log file are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Docker's `json-file` driver: `{"log":"...\n","stream":"stdout","time":"..."}`.
    DockerJson,
    /// The Kubernetes CRI format (containerd, CRI-O): `<time> <stream> <P|F> <message>`.
    Cri,
    /// Plain text lines, e.g. a file an application writes itself.
    Plain,
}

impl LogFormat {
    /// The `max_line_bytes` to give the [`LineFramer`](super::framing::LineFramer) of a file
    /// in this format, when decoded messages are bounded by `max_line_bytes`.
    ///
    /// Docker's json-file lines carry at most 16 KiB of message (longer lines are split into
    /// partial pieces, moby `daemon/logger/copier.go` `bufSize`), but escaping can grow that up
    /// to 6 times (`\u0001`), plus `attrs`. A frame cut there would be unreadable JSON, so the
    /// frame bound for Docker never goes below [`docker_json::MIN_FRAME_BYTES`]. CRI lines
    /// have a short header before the message; plain lines have none.
    ///
    /// `max_line_bytes` is first bounded as the decoders bound it ([`clamp_max_line_bytes`]).
    pub fn max_frame_bytes(self, max_line_bytes: usize) -> usize {
        let max_line_bytes = clamp_max_line_bytes(max_line_bytes);
        match self {
            Self::DockerJson => max_line_bytes.max(docker_json::MIN_FRAME_BYTES),
            Self::Cri => max_line_bytes.saturating_add(cri::MAX_HEADER_BYTES),
            Self::Plain => max_line_bytes,
        }
    }
}

/// The longest message the decoders emit whole, whatever is configured: records address
/// their bytes with 32-bit ranges ([`MAX_CHUNK_BYTES`]), and a frame needs room for a header
/// and a read beside the message. A quarter of the addressable size is far above any
/// sensible line.
pub fn clamp_max_line_bytes(max_line_bytes: usize) -> usize {
    max_line_bytes.clamp(1, MAX_CHUNK_BYTES / 4)
}

/// The records of `out` as a `Vec`, for comparisons in tests.
#[cfg(test)]
pub(crate) fn collect(out: &LogRecords) -> Vec<super::LogRecord<'_>> {
    out.iter().collect()
}

/// A line could not be decoded. The caller counts it and skips it; the decoder stays usable.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// A Docker json-file line was not valid.
    #[error(transparent)]
    DockerJson(#[from] DockerJsonError),
    /// A CRI line was not valid.
    #[error(transparent)]
    Cri(#[from] CriError),
}

/// A decoder for one log file, holding the partial lines it has not finished joining.
#[derive(Debug)]
pub enum Decoder {
    /// Docker json-file.
    DockerJson(DockerJsonDecoder),
    /// Kubernetes CRI.
    Cri(CriDecoder),
    /// Plain lines.
    Plain(PlainDecoder),
}

impl Decoder {
    /// A decoder for `format` whose messages are at most `max_line_bytes` (longer lines come
    /// out in several records, all but the last with `split = true`).
    pub fn new(format: LogFormat, max_line_bytes: usize) -> Self {
        match format {
            LogFormat::DockerJson => Self::DockerJson(DockerJsonDecoder::new(max_line_bytes)),
            LogFormat::Cri => Self::Cri(CriDecoder::new(max_line_bytes)),
            LogFormat::Plain => Self::Plain(PlainDecoder::new()),
        }
    }

    /// Decodes one frame, pushing 0 or more records onto `out`: none while a partial line is
    /// held, several when a joined line exceeded `max_line_bytes`.
    ///
    /// `now` is the read time as RFC 3339 text; only plain files, whose lines carry no time,
    /// use it.
    ///
    /// # Errors
    /// The frame was not a valid line of this format. Nothing was pushed, the partial lines
    /// held are kept, and the next frame can be decoded.
    #[inline]
    pub fn decode(
        &mut self,
        frame: Frame<'_>,
        now: &Bytes,
        out: &mut LogRecords,
    ) -> Result<(), DecodeError> {
        match self {
            Self::DockerJson(d) => Ok(d.decode(frame, out)?),
            Self::Cri(d) => Ok(d.decode(frame, out)?),
            Self::Plain(d) => {
                d.decode(frame, now, out);
                Ok(())
            }
        }
    }

    /// The file offset where the oldest partial line held in memory starts, if any.
    ///
    /// The caller must never checkpoint an offset past it: the pieces held here were read
    /// but not yet turned into records, so after a crash they exist only in the file, and
    /// reading must resume at this offset to get them back.
    pub fn pending_start(&self) -> Option<u64> {
        match self {
            Self::DockerJson(d) => d.pending_start(),
            Self::Cri(d) => d.pending_start(),
            Self::Plain(_) => None,
        }
    }

    /// Frees the joiners' buffers that hold no partial line: a quiet file keeps none (1,000
    /// quiet sources that once joined a long line kept up to 64 KiB per stream each).
    pub fn release_idle_memory(&mut self) {
        match self {
            Self::DockerJson(d) => d.release_idle_memory(),
            Self::Cri(d) => d.release_idle_memory(),
            Self::Plain(_) => {}
        }
    }

    /// Emits every partial line held, as is, oldest first. Call it when the file is finished
    /// for good (its container is gone and the file was read to the end): Docker writes the
    /// last output of a container without `'\n'` as a partial piece that no piece will end.
    pub fn flush_pending(&mut self, out: &mut LogRecords) {
        match self {
            Self::DockerJson(d) => d.flush_pending(out),
            Self::Cri(d) => d.flush_pending(out),
            Self::Plain(_) => {}
        }
    }
}

/// Below this, a joiner keeps the capacity of its buffer between lines; above it, the buffer
/// is released once a line is emitted, so one huge line does not pin memory per stream.
const JOINER_KEEP_BYTES: usize = 64 * 1024;

/// Joins the partial pieces of one output stream into records of at most `max_line_bytes`.
///
/// Docker and CRI split long lines into pieces (Docker at 16 KiB, pieces without trailing
/// `\n`; CRI with tag `P`), and the pieces of stdout and stderr can interleave, so each stream
/// has its own joiner. The pieces are copied: they come from different reads, and a line may
/// span batches.
#[derive(Debug)]
pub(crate) struct Joiner {
    /// The stream of every record this joiner emits.
    stream: Option<StdStream>,
    /// Longest message emitted.
    max: usize,
    /// The message joined so far.
    buf: Vec<u8>,
    /// Time of the first piece: Docker stamps every piece of a line with the same time.
    time: Vec<u8>,
    /// File offset of the first frame whose bytes are (partly) held; `None` when idle.
    start_offset: Option<u64>,
}

impl Joiner {
    /// An idle joiner for the pieces of `stream`, emitting messages of at most `max` bytes
    /// (raised to at least 1).
    pub(crate) fn new(stream: Option<StdStream>, max: usize) -> Self {
        Self {
            stream,
            max: max.max(1),
            buf: Vec::new(),
            time: Vec::new(),
            start_offset: None,
        }
    }

    /// The file offset of the oldest frame held, if any.
    pub(crate) fn start_offset(&self) -> Option<u64> {
        self.start_offset
    }

    /// True while a partial line is held.
    pub(crate) fn is_holding(&self) -> bool {
        self.start_offset.is_some()
    }

    /// Adds `piece` (from the frame starting at `frame_start`) to the line. When the line
    /// would exceed `max` bytes, emits `max` bytes with `split = true` and keeps the rest.
    /// `last` ends the line and emits what is held. `time` is kept from the first piece.
    pub(crate) fn push(
        &mut self,
        mut piece: &[u8],
        time: &[u8],
        frame_start: u64,
        last: bool,
        out: &mut LogRecords,
    ) {
        if self.start_offset.is_none() {
            self.start_offset = Some(frame_start);
            self.time.clear();
            self.time.extend_from_slice(time);
        }
        loop {
            let room = self.max - self.buf.len();
            if piece.len() <= room {
                self.buf.extend_from_slice(piece);
                break;
            }
            self.buf.extend_from_slice(&piece[..room]);
            piece = &piece[room..];
            self.push_held(true, out);
            // What is still held comes from this frame.
            self.start_offset = Some(frame_start);
        }
        if last {
            self.emit(out);
        }
    }

    /// Frees the buffers unless a partial line is held.
    pub(crate) fn release_idle_memory(&mut self) {
        if !self.is_holding() {
            self.buf = Vec::new();
            self.time = Vec::new();
        }
    }

    /// Emits what is held as a record that ends its line, if anything is held.
    pub(crate) fn emit(&mut self, out: &mut LogRecords) {
        if self.start_offset.take().is_none() {
            return;
        }
        self.push_held(false, out);
        if self.buf.capacity() > JOINER_KEEP_BYTES {
            self.buf = Vec::new();
        }
    }

    /// Copies the held message out as a record and empties the buffer.
    fn push_held(&mut self, split: bool, out: &mut LogRecords) {
        let time = out.copy(&self.time);
        let message = out.copy(&self.buf);
        out.push(time, message, self.stream, split);
        self.buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tail::LogRecord;

    fn record(message: &str, split: bool) -> LogRecord<'_> {
        LogRecord {
            time: b"T",
            stream: Some(StdStream::Stdout),
            message: message.as_bytes(),
            split,
        }
    }

    #[test]
    fn joiner_bounds_and_offsets() {
        struct Case {
            name: &'static str,
            /// (piece, frame start, last)
            pieces: &'static [(&'static str, u64, bool)],
            max: usize,
            want: &'static [(&'static str, bool)],
            /// pending start after all pieces
            pending: Option<u64>,
        }
        let cases = [
            Case {
                name: "two pieces join",
                pieces: &[("ab", 0, false), ("cd", 10, true)],
                max: 10,
                want: &[("abcd", false)],
                pending: None,
            },
            Case {
                name: "held pieces keep the first offset",
                pieces: &[("ab", 0, false), ("cd", 10, false)],
                max: 10,
                want: &[],
                pending: Some(0),
            },
            Case {
                name: "exactly max is not split",
                pieces: &[("abc", 0, false), ("d", 10, false), ("", 20, true)],
                max: 4,
                want: &[("abcd", false)],
                pending: None,
            },
            Case {
                name: "over max is cut at max and the rest held",
                pieces: &[("abc", 0, false), ("def", 10, false)],
                max: 4,
                want: &[("abcd", true)],
                pending: Some(10),
            },
            Case {
                name: "one piece over several maxes",
                pieces: &[("abcdefghij", 0, true)],
                max: 4,
                want: &[("abcd", true), ("efgh", true), ("ij", false)],
                pending: None,
            },
        ];
        for case in cases {
            let mut joiner = Joiner::new(Some(StdStream::Stdout), case.max);
            let mut out = LogRecords::new();
            for &(piece, start, last) in case.pieces {
                joiner.push(piece.as_bytes(), b"T", start, last, &mut out);
            }
            let want: Vec<_> = case.want.iter().map(|&(m, s)| record(m, s)).collect();
            assert_eq!(collect(&out), want, "{}", case.name);
            assert_eq!(joiner.start_offset(), case.pending, "{}", case.name);
        }
    }

    #[test]
    fn max_frame_bytes_leaves_room_for_docker_escapes() {
        assert_eq!(LogFormat::Plain.max_frame_bytes(100), 100);
        assert!(LogFormat::DockerJson.max_frame_bytes(100) >= 6 * 16 * 1024);
        assert!(LogFormat::Cri.max_frame_bytes(100) > 100);
    }
}
