//! Helpers the fuzz targets share: the log file harness (framing + decoding, read in two
//! different ways) and the properties every decoded file must have.

use std::io::Read;

use bytes::Bytes;
use collector::tail::format::{Decoder, LogFormat, clamp_max_line_bytes};
use collector::tail::framing::{Frame, LineFramer};
use collector::tail::{LogRecords, StdStream};

/// One decoded record, owned, for comparisons.
#[derive(Debug, PartialEq, Eq)]
pub struct Record {
    /// The time field.
    pub time: Vec<u8>,
    /// The output stream.
    pub stream: Option<StdStream>,
    /// The message.
    pub message: Vec<u8>,
    /// A piece of a line cut at `max_line_bytes`.
    pub split: bool,
}

/// What decoding a whole file gave: the records, and the start offsets of the frames the
/// decoder rejected.
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded {
    /// Every record, in order, the held partial lines flushed at the end.
    pub records: Vec<Record>,
    /// Start offsets of the rejected frames.
    pub rejected: Vec<u64>,
}

/// A reader over `data` that returns at most `sizes[i % len]` bytes on its i-th call, so the
/// framer sees reads end anywhere.
struct ChoppedReader<'a> {
    data: &'a [u8],
    sizes: Vec<usize>,
    call: usize,
}

impl Read for ChoppedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let size = self.sizes[self.call % self.sizes.len()];
        self.call += 1;
        let n = size.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Frames and decodes `file` as the tailer does (read, frames, and at the end of a finished
/// file the last partial line and the held pieces), with reads of `sizes` bytes. Checks on the
/// way that the decoder never holds an offset past the frame it was given.
fn decode_with(
    format: LogFormat,
    file: &[u8],
    max_line_bytes: usize,
    sizes: Vec<usize>,
) -> Decoded {
    let read_size = sizes.iter().copied().max().unwrap_or(1).max(1);
    let mut reader = ChoppedReader {
        data: file,
        sizes,
        call: 0,
    };
    let mut framer = LineFramer::new(0, read_size, format.max_frame_bytes(max_line_bytes));
    let mut decoder = Decoder::new(format, max_line_bytes);
    let now = Bytes::from_static(b"2024-01-01T00:00:00Z");
    let mut out = LogRecords::new();
    let mut rejected = Vec::new();
    let mut decode = |decoder: &mut Decoder, frame: Frame<'_>, out: &mut LogRecords| {
        let (start, end) = (frame.start_offset, frame.end_offset);
        assert!(
            start <= end && end <= file.len() as u64,
            "frame {start}..{end}"
        );
        if decoder.decode(frame, &now, out).is_err() {
            rejected.push(start);
        }
        if let Some(held) = decoder.pending_start() {
            assert!(
                held < end,
                "pending start {held} past the frame's end {end}"
            );
        }
    };
    loop {
        let n = framer
            .read_from(&mut reader)
            .expect("reading a slice does not fail");
        if n == 0 {
            break;
        }
        while let Some(frame) = framer.next_frame() {
            decode(&mut decoder, frame, &mut out);
        }
    }
    while let Some(frame) = framer.take_partial() {
        decode(&mut decoder, frame, &mut out);
    }
    decoder.flush_pending(&mut out);
    assert_eq!(
        decoder.pending_start(),
        None,
        "flush_pending left a line held"
    );
    let records = out
        .iter()
        .map(|r| Record {
            time: r.time.to_vec(),
            stream: r.stream,
            message: r.message.to_vec(),
            split: r.split,
        })
        .collect();
    Decoded { records, rejected }
}

/// Decodes a fuzz input as a log file of `format` and checks the properties every decoding
/// must have. `data[0]` picks `max_line_bytes` (small, so lines get split), `data[1..3]` the
/// read sizes, the rest is the file.
///
/// - Reading the file in one read or in small reads of any size gives the same records and
///   rejects the same frames.
/// - No message is longer than `max_line_bytes`; a split piece is exactly that long.
/// - The messages hold no more bytes than the file (decoding never invents bytes: unescaping
///   shrinks, joining copies).
/// - Container log records always carry their stream.
pub fn check_log_file(format: LogFormat, data: &[u8]) -> Decoded {
    let Some((&[max, a, b], file)) = data.split_first_chunk::<3>() else {
        return Decoded {
            records: Vec::new(),
            rejected: Vec::new(),
        };
    };
    let max_line_bytes = usize::from(max) + 1;
    let whole = decode_with(format, file, max_line_bytes, vec![file.len().max(1)]);
    let chopped = decode_with(
        format,
        file,
        max_line_bytes,
        vec![usize::from(a % 17) + 1, usize::from(b % 61) + 1],
    );
    assert_eq!(
        whole, chopped,
        "the records depend on how the file was read"
    );

    let max = clamp_max_line_bytes(max_line_bytes);
    let mut total = 0;
    for r in &whole.records {
        assert!(
            r.message.len() <= max,
            "a message over max_line_bytes {max}: {r:?}"
        );
        if r.split {
            assert_eq!(
                r.message.len(),
                max,
                "a split piece shorter than max_line_bytes"
            );
        }
        assert!(r.stream.is_some(), "a container record without its stream");
        total += r.message.len();
    }
    assert!(
        total <= file.len(),
        "{total} message bytes out of a {} byte file",
        file.len()
    );
    whole
}

/// Decodes `line` alone, as one complete frame, with a fresh decoder and no line limit to
/// speak of, then flushes what it holds. `None` when the decoder rejected it.
pub fn decode_line(format: LogFormat, line: &[u8]) -> Option<Vec<Record>> {
    let chunk = Bytes::copy_from_slice(line);
    let frame = Frame::whole(&chunk, 0, line.len() as u64 + 1, false);
    let mut decoder = Decoder::new(format, 1 << 20);
    let mut out = LogRecords::new();
    let now = Bytes::from_static(b"now");
    decoder.decode(frame, &now, &mut out).ok()?;
    decoder.flush_pending(&mut out);
    Some(
        out.iter()
            .map(|r| Record {
                time: r.time.to_vec(),
                stream: r.stream,
                message: r.message.to_vec(),
                split: r.split,
            })
            .collect(),
    )
}
