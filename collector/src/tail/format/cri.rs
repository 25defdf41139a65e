//! Kubernetes CRI log lines (`<time> <stream> <P|F>[:tags] <message>`), joining `P` pieces.
//!
//! containerd and CRI-O write one line per piece of container output:
//!
//! ```text
//! 2016-10-06T00:17:09.669794202Z stdout P log content 1
//! 2016-10-06T00:17:09.669794203Z stderr F log content 2
//! ```
//!
//! The first tag is `P` for a partial piece (the runtime split a long line) or `F` for the
//! piece that ends a line; kubelet (`pkg/kubelet/kuberuntime/logs/logs.go`, `parseCRILog`)
//! treats every tag but `P` as full and ignores tags after `:` for forward compatibility, and
//! so do we. The message is raw bytes after the single space following the tags. Unlike
//! kubelet we accept a line that ends right after its tags (an empty message).
//!
//! A physical line longer than the frame limit arrives as several truncated frames; only the
//! first carries the header, so we remember it and append the following frames as message
//! bytes.

use super::Joiner;
use crate::tail::framing::Frame;
use crate::tail::record::{LogRecords, StdStream};

/// Room for the header before the message: an RFC 3339 time with nanoseconds and offset is
/// 35 bytes, ` stdout ` 8, the tags a few.
pub const MAX_HEADER_BYTES: usize = 64;

/// A CRI line could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// The line ends before one of its space-separated header fields.
    #[error("parse CRI line: no {field} field")]
    ParseLine {
        /// The missing field: `time`, `stream` or `tag`.
        field: &'static str,
    },
    /// The stream field is neither `stdout` nor `stderr`.
    #[error("parse CRI line: stream {value:?} is neither \"stdout\" nor \"stderr\"")]
    ParseStream {
        /// The stream field found (lossy UTF-8).
        value: String,
    },
}

/// The header of a physical line that arrives in several truncated frames.
#[derive(Debug)]
struct LongLine {
    /// Stream of the line.
    stream: StdStream,
    /// Time of the line.
    time: Vec<u8>,
    /// True when its tag was `P`: the line goes on in the next physical line.
    partial: bool,
    /// File offset of the first frame: the continuation frames have no header, so a reader
    /// resuming between them could not decode them.
    start_offset: u64,
}

/// Decodes the CRI lines of one file, joining partial lines per stream.
#[derive(Debug)]
pub struct CriDecoder {
    /// Longest message emitted; longer lines come out split.
    max_line_bytes: usize,
    /// Partial line of stdout.
    stdout: Joiner,
    /// Partial line of stderr.
    stderr: Joiner,
    /// Set while the truncated frames of one physical line arrive.
    long_line: Option<LongLine>,
}

impl CriDecoder {
    /// A decoder whose messages are at most `max_line_bytes` (raised to at least 1).
    pub fn new(max_line_bytes: usize) -> Self {
        let max_line_bytes = max_line_bytes.max(1);
        Self {
            max_line_bytes,
            stdout: Joiner::new(Some(StdStream::Stdout), max_line_bytes),
            stderr: Joiner::new(Some(StdStream::Stderr), max_line_bytes),
            long_line: None,
        }
    }

    /// Decodes one line, pushing 0..n records.
    ///
    /// # Errors
    /// The line has no valid header; nothing is pushed and held partial lines are kept.
    pub fn decode(&mut self, frame: Frame<'_>, out: &mut LogRecords) -> Result<(), CriError> {
        if let Some(long) = &self.long_line {
            let last_frame = !frame.truncated;
            let joiner = match long.stream {
                StdStream::Stdout => &mut self.stdout,
                StdStream::Stderr => &mut self.stderr,
            };
            let ends_line = last_frame && !long.partial;
            joiner.push(frame.bytes, &long.time, frame.start_offset, ends_line, out);
            if last_frame {
                self.long_line = None;
            }
            return Ok(());
        }
        let header = parse_header(frame.bytes)?;
        let time = &frame.bytes[header.time];
        let message = &frame.bytes[header.message_start..];
        let joiner = match header.stream {
            StdStream::Stdout => &mut self.stdout,
            StdStream::Stderr => &mut self.stderr,
        };
        if frame.truncated {
            joiner.push(message, time, frame.start_offset, false, out);
            self.long_line = Some(LongLine {
                stream: header.stream,
                time: time.to_vec(),
                partial: header.partial,
                start_offset: frame.start_offset,
            });
        } else if !header.partial && !joiner.is_holding() && message.len() <= self.max_line_bytes {
            let time = out.shared(frame.chunk, time);
            let message = out.shared(frame.chunk, message);
            out.push(time, message, Some(header.stream), false);
        } else {
            joiner.push(message, time, frame.start_offset, !header.partial, out);
        }
        Ok(())
    }

    /// The file offset of the oldest partial line held; see
    /// [`Decoder::pending_start`](super::Decoder::pending_start).
    pub fn pending_start(&self) -> Option<u64> {
        [
            self.stdout.start_offset(),
            self.stderr.start_offset(),
            self.long_line.as_ref().map(|l| l.start_offset),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Frees the joiners' idle buffers; see
    /// [`Decoder::release_idle_memory`](super::Decoder::release_idle_memory).
    pub fn release_idle_memory(&mut self) {
        self.stdout.release_idle_memory();
        self.stderr.release_idle_memory();
    }

    /// Emits the partial lines held, oldest first.
    pub fn flush_pending(&mut self, out: &mut LogRecords) {
        self.long_line = None;
        let stderr_first = match (self.stdout.start_offset(), self.stderr.start_offset()) {
            (Some(a), Some(b)) => b < a,
            _ => false,
        };
        if stderr_first {
            self.stderr.emit(out);
        }
        self.stdout.emit(out);
        self.stderr.emit(out);
    }
}

/// Where the parts of a CRI header are.
struct Header {
    /// The time field.
    time: std::ops::Range<usize>,
    /// The stream field.
    stream: StdStream,
    /// True when the first tag is `P`.
    partial: bool,
    /// Where the message starts (the line's length when it has none).
    message_start: usize,
}

/// Splits the header off a CRI line.
#[inline]
fn parse_header(b: &[u8]) -> Result<Header, CriError> {
    let time_end = memchr::memchr(b' ', b)
        .filter(|&n| n > 0)
        .ok_or(CriError::ParseLine { field: "time" })?;
    let rest = &b[time_end + 1..];
    let stream = if rest.starts_with(b"stdout ") {
        StdStream::Stdout
    } else if rest.starts_with(b"stderr ") {
        StdStream::Stderr
    } else {
        return Err(match memchr::memchr(b' ', rest) {
            Some(n) => CriError::ParseStream {
                value: String::from_utf8_lossy(&rest[..n]).into_owned(),
            },
            None => CriError::ParseLine { field: "stream" },
        });
    };
    let tags_start = time_end + 1 + b"stdout ".len();
    let tags = &b[tags_start..];
    let tags_len = memchr::memchr(b' ', tags).unwrap_or(tags.len());
    if tags_len == 0 {
        return Err(CriError::ParseLine { field: "tag" });
    }
    let first_tag = tags[..tags_len].split(|&c| c == b':').next();
    Ok(Header {
        time: 0..time_end,
        stream,
        partial: first_tag == Some(b"P"),
        message_start: (tags_start + tags_len + 1).min(b.len()),
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::tail::LogRecord;
    use crate::tail::format::collect;
    use crate::tail::framing::OwnedFrame;

    fn frame(line: &str, start_offset: u64, truncated: bool) -> OwnedFrame {
        OwnedFrame::new(line.as_bytes(), start_offset, truncated)
    }

    fn record<'a>(
        stream: StdStream,
        time: &'a str,
        message: &'a str,
        split: bool,
    ) -> LogRecord<'a> {
        LogRecord {
            time: time.as_bytes(),
            stream: Some(stream),
            message: message.as_bytes(),
            split,
        }
    }

    #[test]
    fn decodes_lines() {
        use StdStream::{Stderr, Stdout};
        struct Case {
            name: &'static str,
            lines: &'static [&'static str],
            max: usize,
            want: Vec<LogRecord<'static>>,
            pending: Option<u64>,
        }
        let t = "2016-10-06T00:17:09.669794202Z";
        let cases = [
            Case {
                name: "full line",
                lines: &["2016-10-06T00:17:09.669794202Z stdout F log content 1"],
                max: 100,
                want: vec![record(Stdout, t, "log content 1", false)],
                pending: None,
            },
            Case {
                name: "spaces in the message are kept",
                lines: &["t stderr F  two  spaces "],
                max: 100,
                want: vec![record(Stderr, "t", " two  spaces ", false)],
                pending: None,
            },
            Case {
                name: "empty message, with and without the space",
                lines: &["t stdout F ", "t stdout F"],
                max: 100,
                want: vec![
                    record(Stdout, "t", "", false),
                    record(Stdout, "t", "", false),
                ],
                pending: None,
            },
            Case {
                name: "extra tags are ignored",
                lines: &["t stdout P:x a", "t stdout F:y:z b"],
                max: 100,
                want: vec![record(Stdout, "t", "ab", false)],
                pending: None,
            },
            Case {
                name: "partial pieces join per stream",
                lines: &[
                    "t1 stdout P a",
                    "t2 stderr P b",
                    "t3 stdout F c",
                    "t4 stderr P d",
                ],
                max: 100,
                want: vec![record(Stdout, "t1", "ac", false)],
                pending: Some(14),
            },
            Case {
                name: "joined line over max is split",
                lines: &["t stdout P abc", "t stdout F def"],
                max: 4,
                want: vec![
                    record(Stdout, "t", "abcd", true),
                    record(Stdout, "t", "ef", false),
                ],
                pending: None,
            },
            Case {
                name: "single line over max is split",
                lines: &["t stdout F abcdefghi"],
                max: 4,
                want: vec![
                    record(Stdout, "t", "abcd", true),
                    record(Stdout, "t", "efgh", true),
                    record(Stdout, "t", "i", false),
                ],
                pending: None,
            },
            Case {
                name: "unknown tag is full, as in kubelet",
                lines: &["t stdout X m"],
                max: 100,
                want: vec![record(Stdout, "t", "m", false)],
                pending: None,
            },
        ];
        for case in cases {
            let mut decoder = CriDecoder::new(case.max);
            let mut out = LogRecords::new();
            let mut offset = 0;
            for line in case.lines {
                decoder
                    .decode(frame(line, offset, false).frame(), &mut out)
                    .unwrap();
                offset += line.len() as u64 + 1;
            }
            assert_eq!(collect(&out), case.want, "{}", case.name);
            assert_eq!(decoder.pending_start(), case.pending, "{}", case.name);
        }
    }

    #[test]
    fn rejects_bad_headers_and_keeps_state() {
        let cases: &[(&str, &str)] = &[
            ("", "ParseLine { field: \"time\" }"),
            ("no-spaces", "ParseLine { field: \"time\" }"),
            (" stdout F x", "ParseLine { field: \"time\" }"),
            ("t stdout", "ParseLine { field: \"stream\" }"),
            ("t stdin F x", "ParseStream { value: \"stdin\" }"),
            ("t stdout  x", "ParseLine { field: \"tag\" }"),
            ("t stdout ", "ParseLine { field: \"tag\" }"),
        ];
        for &(line, want) in cases {
            let mut decoder = CriDecoder::new(100);
            let mut out = LogRecords::new();
            decoder
                .decode(frame("t0 stdout P held ", 0, false).frame(), &mut out)
                .unwrap();
            let err = decoder
                .decode(frame(line, 20, false).frame(), &mut out)
                .unwrap_err();
            assert_eq!(format!("{err:?}"), want, "{line:?}");
            assert_eq!(decoder.pending_start(), Some(0));
            decoder
                .decode(frame("t1 stdout F end", 40, false).frame(), &mut out)
                .unwrap();
            assert_eq!(
                collect(&out),
                [record(StdStream::Stdout, "t0", "held end", false)]
            );
        }
    }

    #[test]
    fn continues_lines_over_the_frame_limit() {
        let mut decoder = CriDecoder::new(100);
        let mut out = LogRecords::new();
        let frames = [
            frame("t stderr P abc", 0, true),
            frame("def", 14, true),
            frame("gh", 17, false),
            frame("t2 stderr F  end", 20, false),
        ];
        let mut pending = Vec::new();
        for f in frames {
            decoder.decode(f.frame(), &mut out).unwrap();
            pending.push(decoder.pending_start());
        }
        assert_eq!(pending, [Some(0), Some(0), Some(0), None]);
        assert_eq!(
            collect(&out),
            [record(StdStream::Stderr, "t", "abcdefgh end", false)]
        );

        // A full line over the limit ends with its last frame; the header is not re-read.
        let frames = [frame("t stdout F ab", 0, true), frame("c", 13, false)];
        for f in frames {
            decoder.decode(f.frame(), &mut out).unwrap();
        }
        assert_eq!(
            out.get(1).unwrap(),
            record(StdStream::Stdout, "t", "abc", false)
        );
        assert_eq!(decoder.pending_start(), None);
    }

    #[test]
    fn flush_pending_emits_oldest_first() {
        let mut decoder = CriDecoder::new(100);
        let mut out = LogRecords::new();
        decoder
            .decode(frame("t1 stderr P a", 0, false).frame(), &mut out)
            .unwrap();
        decoder
            .decode(frame("t2 stdout P b", 14, false).frame(), &mut out)
            .unwrap();
        decoder
            .decode(frame("t3 stdout F c", 28, true).frame(), &mut out)
            .unwrap();
        assert_eq!(decoder.pending_start(), Some(0));
        decoder.flush_pending(&mut out);
        assert_eq!(
            collect(&out),
            [
                record(StdStream::Stderr, "t1", "a", false),
                record(StdStream::Stdout, "t2", "bc", false),
            ]
        );
        assert_eq!(decoder.pending_start(), None);
        decoder
            .decode(frame("t4 stdout F d", 42, false).frame(), &mut out)
            .unwrap();
        assert_eq!(
            out.get(2).unwrap(),
            record(StdStream::Stdout, "t4", "d", false)
        );
    }

    proptest! {
        /// Lines split into `P` pieces come out whole (or in `max`-sized split records).
        #[test]
        fn reassembles_partial_pieces(
            lines in proptest::collection::vec(("[a-c :]{0,30}", 1usize..10), 1..10),
            max in 1usize..40,
        ) {
            let mut decoder = CriDecoder::new(max);
            let mut out = LogRecords::new();
            let mut offset = 0;
            for (text, piece) in &lines {
                let chunks: Vec<&[u8]> = text.as_bytes().chunks(*piece).collect();
                let n = chunks.len().max(1);
                for i in 0..n {
                    let tag = if i + 1 == n { "F" } else { "P" };
                    let chunk = chunks.get(i).copied().unwrap_or(b"");
                    let line = format!("t stdout {tag} {}", std::str::from_utf8(chunk).unwrap());
                    decoder.decode(frame(&line, offset, false).frame(), &mut out).unwrap();
                    offset += line.len() as u64 + 1;
                }
            }
            prop_assert_eq!(decoder.pending_start(), None);
            let mut got = Vec::new();
            let mut line = Vec::new();
            for r in out.iter() {
                prop_assert!(r.message.len() <= max);
                line.extend_from_slice(r.message);
                if !r.split {
                    got.push(String::from_utf8(std::mem::take(&mut line)).unwrap());
                }
            }
            let want: Vec<String> = lines.into_iter().map(|l| l.0).collect();
            prop_assert_eq!(got, want);
        }
    }
}
