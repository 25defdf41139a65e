//! Docker `json-file` lines: a hand-written scanner for the shape moby writes, serde_json for any other.
//!
//! moby's json-file driver writes one JSON object per line, always in this field order
//! (`daemon/logger/jsonfilelog/jsonlog/jsonlogbytes.go`, `MarshalJSONBuf`):
//!
//! ```text
//! {"log":"<message>\n","stream":"stdout","time":"2024-05-01T12:34:56.123456789Z"}
//! {"log":"<message>\n","stream":"stderr","attrs":{"tag":"web"},"time":"..."}
//! ```
//!
//! `attrs` appears only with `--log-opt labels/env/tag`; we skip it. The message is escaped
//! like Go's `encoding/json` does it (`ffjsonWriteJSONBytesAsString`): `"` and `\` with a
//! backslash, `\n` and `\r` as such, every other byte below 0x20 and `<`, `>`, `&` as `\u00XX`
//! (so a tab is `\u0009`), U+2028 and U+2029 as `\u2028`/`\u2029`, and invalid UTF-8 as
//! `\ufffd`. The `log` string is therefore always valid UTF-8 once unescaped, and we do not
//! validate it again.
//!
//! A line longer than 16 KiB is written as several objects (moby `daemon/logger/copier.go`,
//! `bufSize`): every piece but the last has no trailing `\n` in `log`; the last piece ends
//! with `\n` (it may be just `"\n"`). All pieces carry the time of the first. The pieces of
//! stdout and stderr can interleave, so we join them per stream. The last output of a
//! container that ends without a newline stays a piece with no end: see
//! [`DockerJsonDecoder::flush_pending`].
//!
//! The common line (no escape but the final `\n`) is decoded without copying: the message and
//! time are slices of the frame. A line with escapes is unescaped into a scratch buffer shared
//! by many lines. Any other shape (fields reordered, whitespace, extra fields) goes through
//! `serde_json`.

use std::borrow::Cow;
use std::ops::Range;

use bytes::{Buf, Bytes, BytesMut};
use serde::Deserialize;

use super::{Joiner, reserve_scratch};
use crate::tail::framing::Frame;
use crate::tail::record::{LogRecord, StdStream};

/// The smallest frame limit for json-file: a 16 KiB piece of control bytes escaped as
/// `\u00XX` takes 96 KiB, and `attrs` (labels, env) can add many more.
pub const MIN_FRAME_BYTES: usize = 256 * 1024;

/// Unescaped messages share scratch allocations of at least this size.
const SCRATCH_CHUNK: usize = 64 * 1024;

/// What every line written by moby starts with.
const LOG_PREFIX: &[u8] = br#"{"log":""#;
/// What follows the `log` string.
const STREAM_KEY: &[u8] = br#","stream":""#;
/// What comes before the `time` string, which ends the line.
const TIME_KEY: &[u8] = br#","time":""#;
/// What starts the optional `attrs` object between `stream` and `time`.
const ATTRS_KEY: &[u8] = br#","attrs":{"#;

/// A json-file line could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DockerJsonError {
    /// The line is not a JSON object with the string fields `log`, `stream` and `time`.
    #[error("parse json-file line")]
    ParseLine {
        /// What serde_json found wrong (it names a missing field).
        #[source]
        source: serde_json::Error,
    },
    /// `stream` is neither `stdout` nor `stderr`.
    #[error("parse json-file line: stream {value:?} is neither \"stdout\" nor \"stderr\"")]
    ParseStream {
        /// The `stream` value found.
        value: String,
    },
    /// The line was longer than the frame limit, so it arrived in pieces that are not JSON
    /// on their own; every piece of it is rejected.
    #[error("parse json-file line: piece at offset {start_offset} of a line over the frame limit")]
    LineTooLong {
        /// File offset of the rejected piece.
        start_offset: u64,
    },
}

/// Decodes the json-file lines of one file, joining partial lines per stream.
#[derive(Debug)]
pub struct DockerJsonDecoder {
    /// Longest message emitted; longer lines come out split.
    max_line_bytes: usize,
    /// Partial line of stdout.
    stdout: Joiner,
    /// Partial line of stderr.
    stderr: Joiner,
    /// Where escaped messages are decoded. Empty between calls.
    scratch: BytesMut,
    /// True while the pieces of a line longer than the frame limit arrive.
    in_long_line: bool,
}

impl DockerJsonDecoder {
    /// A decoder whose messages are at most `max_line_bytes` (raised to at least 1).
    pub fn new(max_line_bytes: usize) -> Self {
        let max_line_bytes = max_line_bytes.max(1);
        Self {
            max_line_bytes,
            stdout: Joiner::new(Some(StdStream::Stdout), max_line_bytes),
            stderr: Joiner::new(Some(StdStream::Stderr), max_line_bytes),
            scratch: BytesMut::new(),
            in_long_line: false,
        }
    }

    /// Decodes one line, pushing 0..n records.
    ///
    /// # Errors
    /// The line is not a json-file line; nothing is pushed and held partial lines are kept.
    #[inline]
    pub fn decode(
        &mut self,
        frame: Frame,
        out: &mut Vec<LogRecord>,
    ) -> Result<(), DockerJsonError> {
        if frame.truncated || self.in_long_line {
            // The last piece of an over-long line is not truncated, and is rejected too.
            self.in_long_line = frame.truncated;
            return Err(DockerJsonError::LineTooLong {
                start_offset: frame.start_offset,
            });
        }
        let Some(scan) = scan(&frame.bytes) else {
            return self.decode_slow(frame, out);
        };
        let time = frame.bytes.slice(scan.time.clone());
        let message = if scan.escaped {
            let src = &frame.bytes[scan.content.clone()];
            // Unescaping never makes a string longer.
            reserve_scratch(&mut self.scratch, src.len(), SCRATCH_CHUNK);
            if unescape_into(src, &mut self.scratch).is_none() {
                // An escape Go never writes: let serde_json judge the line.
                self.scratch.clear();
                return self.decode_slow(frame, out);
            }
            self.scratch.split().freeze()
        } else {
            let mut message = frame.bytes;
            message.truncate(scan.content.end);
            message.advance(scan.content.start);
            message
        };
        self.emit(
            scan.stream,
            time,
            message,
            scan.last,
            frame.start_offset,
            out,
        );
        Ok(())
    }

    /// Decodes a line of any valid JSON shape with serde_json.
    #[cold]
    fn decode_slow(
        &mut self,
        frame: Frame,
        out: &mut Vec<LogRecord>,
    ) -> Result<(), DockerJsonError> {
        let line: JsonLine<'_> = serde_json::from_slice(&frame.bytes)
            .map_err(|source| DockerJsonError::ParseLine { source })?;
        let stream = match &*line.stream {
            "stdout" => StdStream::Stdout,
            "stderr" => StdStream::Stderr,
            other => {
                return Err(DockerJsonError::ParseStream {
                    value: other.to_owned(),
                });
            }
        };
        let (log, last) = match line.log.strip_suffix('\n') {
            Some(log) => (log, true),
            None => (&*line.log, false),
        };
        let time = slice_or_copy(&frame.bytes, line.time.as_bytes(), &mut self.scratch);
        let message = slice_or_copy(&frame.bytes, log.as_bytes(), &mut self.scratch);
        self.emit(stream, time, message, last, frame.start_offset, out);
        Ok(())
    }

    /// Emits a message directly when it is a whole line, or through its stream's joiner.
    #[inline]
    fn emit(
        &mut self,
        stream: StdStream,
        time: Bytes,
        message: Bytes,
        last: bool,
        frame_start: u64,
        out: &mut Vec<LogRecord>,
    ) {
        let joiner = match stream {
            StdStream::Stdout => &mut self.stdout,
            StdStream::Stderr => &mut self.stderr,
        };
        if last && !joiner.is_holding() && message.len() <= self.max_line_bytes {
            out.push(LogRecord {
                time,
                stream: Some(stream),
                message,
                split: false,
            });
        } else {
            joiner.push(&message, &time, frame_start, last, out);
        }
    }

    /// The file offset of the oldest partial line held; see
    /// [`Decoder::pending_start`](super::Decoder::pending_start).
    pub fn pending_start(&self) -> Option<u64> {
        match (self.stdout.start_offset(), self.stderr.start_offset()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Emits the partial lines held, oldest first.
    pub fn flush_pending(&mut self, out: &mut Vec<LogRecord>) {
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

/// A json-file line of any shape, for serde_json. Unknown fields (`attrs`) are ignored.
#[derive(Deserialize)]
struct JsonLine<'a> {
    /// The message, with its trailing `\n` unless it is a partial piece.
    #[serde(borrow)]
    log: Cow<'a, str>,
    /// `stdout` or `stderr`.
    #[serde(borrow)]
    stream: Cow<'a, str>,
    /// RFC 3339 with nanoseconds.
    #[serde(borrow)]
    time: Cow<'a, str>,
}

/// `value` as a slice of `frame` when it lies inside it (serde_json borrowed it), else as a
/// copy in `scratch` (it had escapes).
fn slice_or_copy(frame: &Bytes, value: &[u8], scratch: &mut BytesMut) -> Bytes {
    let base = frame.as_ptr() as usize;
    let start = value.as_ptr() as usize;
    if start >= base && start + value.len() <= base + frame.len() {
        return frame.slice(start - base..start - base + value.len());
    }
    reserve_scratch(scratch, value.len(), SCRATCH_CHUNK);
    scratch.extend_from_slice(value);
    scratch.split().freeze()
}

/// Where the parts of a line in moby's exact shape are.
struct Scan {
    /// The `log` string's content, without the final `\n` escape.
    content: Range<usize>,
    /// True when `content` holds escapes to decode.
    escaped: bool,
    /// True when `log` ended with `\n`: the line is complete.
    last: bool,
    /// The `stream` value.
    stream: StdStream,
    /// The `time` string's content.
    time: Range<usize>,
}

/// Finds the parts of a line written in moby's exact shape, or `None` for any other shape.
///
/// Walkthrough: after `{"log":"`, jump with `memchr2` from backslash to backslash until the
/// closing quote; a backslash starts a two-byte escape (`\uXXXX` continues with hex digits,
/// never a quote or backslash), and `\n` right before the closing quote is the line's end
/// rather than content. Then the `stream` value must be exactly `stdout` or `stderr`. The
/// `time` string ends the line and holds no quote, so it is found from the end; whatever lies
/// between `stream` and `time` must be the `attrs` object.
#[inline]
fn scan(b: &[u8]) -> Option<Scan> {
    if !b.starts_with(LOG_PREFIX) {
        return None;
    }
    let start = LOG_PREFIX.len();
    let mut i = start;
    let mut escaped = false;
    let (content_end, last, close) = loop {
        let j = i + memchr::memchr2(b'"', b'\\', &b[i..])?;
        if b[j] == b'"' {
            break (j, false, j);
        }
        let after = &b[j + 1..];
        if after.starts_with(b"n\"") {
            break (j, true, j + 2);
        }
        if after.is_empty() {
            return None;
        }
        escaped = true;
        i = j + 2;
    };
    let mut k = close + 1;
    if !b[k..].starts_with(STREAM_KEY) {
        return None;
    }
    k += STREAM_KEY.len();
    let stream = match b.get(k..k + 7)? {
        b"stdout\"" => StdStream::Stdout,
        b"stderr\"" => StdStream::Stderr,
        _ => return None,
    };
    k += 7;
    let end = b.len().checked_sub(2)?;
    if k > end || &b[end..] != b"\"}" {
        return None;
    }
    let open = k + memchr::memrchr(b'"', &b[k..end])?;
    if !b[k..=open].ends_with(TIME_KEY) || open + 1 == end {
        return None;
    }
    let time = open + 1..end;
    if memchr::memchr(b'\\', &b[time.clone()]).is_some() {
        return None;
    }
    let middle = &b[k..open + 1 - TIME_KEY.len()];
    if !middle.is_empty() && (!middle.starts_with(ATTRS_KEY) || !middle.ends_with(b"}")) {
        return None;
    }
    Some(Scan {
        content: start..content_end,
        escaped,
        last,
        stream,
        time,
    })
}

/// Decodes the JSON string escapes of `src` (the bytes between the quotes) onto `dst`.
///
/// Follows Go's `encoding/json`: a `\uXXXX` surrogate pair becomes one character, a lone
/// surrogate becomes U+FFFD. Returns `None` on an escape JSON does not have; `dst` then holds
/// a partial result the caller discards.
fn unescape_into(src: &[u8], dst: &mut BytesMut) -> Option<()> {
    let mut rest = src;
    while let Some(i) = memchr::memchr(b'\\', rest) {
        dst.extend_from_slice(&rest[..i]);
        let escape = *rest.get(i + 1)?;
        rest = &rest[i + 2..];
        let byte = match escape {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let unit = hex4(rest)?;
                rest = &rest[4..];
                let c = match unit {
                    0xd800..=0xdbff => {
                        let low = rest
                            .strip_prefix(b"\\u")
                            .and_then(hex4)
                            .filter(|low| (0xdc00..=0xdfff).contains(low));
                        match low {
                            Some(low) => {
                                rest = &rest[6..];
                                let c = 0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00);
                                char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER)
                            }
                            None => char::REPLACEMENT_CHARACTER,
                        }
                    }
                    _ => char::from_u32(unit).unwrap_or(char::REPLACEMENT_CHARACTER),
                };
                dst.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                continue;
            }
            _ => return None,
        };
        dst.extend_from_slice(&[byte]);
    }
    dst.extend_from_slice(rest);
    Some(())
}

/// The value of the 4 hex digits `src` starts with.
fn hex4(src: &[u8]) -> Option<u32> {
    let digits = src.get(..4)?;
    let mut value = 0;
    for &d in digits {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return None,
        };
        value = value << 4 | u32::from(v);
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const T: &str = "2026-11-22T00:41:42.98009025Z";

    fn frame_at(line: &[u8], start_offset: u64) -> Frame {
        Frame {
            bytes: Bytes::copy_from_slice(line),
            start_offset,
            end_offset: start_offset + line.len() as u64 + 1,
            truncated: false,
        }
    }

    fn decode_all(decoder: &mut DockerJsonDecoder, lines: &[&[u8]]) -> Vec<LogRecord> {
        let mut out = Vec::new();
        let mut offset = 0;
        for line in lines {
            decoder.decode(frame_at(line, offset), &mut out).unwrap();
            offset += line.len() as u64 + 1;
        }
        out
    }

    fn record(stream: StdStream, time: &str, message: &[u8], split: bool) -> LogRecord {
        LogRecord {
            time: Bytes::copy_from_slice(time.as_bytes()),
            stream: Some(stream),
            message: Bytes::copy_from_slice(message),
            split,
        }
    }

    /// A json-file line as moby writes it, with Go's escaping
    /// (`jsonlogbytes.go` `ffjsonWriteJSONBytesAsString`) of a valid UTF-8 `log`.
    fn go_line(log: &str, stream: &str, time: &str) -> Vec<u8> {
        let mut s = String::from(r#"{"log":""#);
        for c in log.chars() {
            match c {
                '"' => s.push_str("\\\""),
                '\\' => s.push_str("\\\\"),
                '\n' => s.push_str("\\n"),
                '\r' => s.push_str("\\r"),
                '<' | '>' | '&' => s.push_str(&format!("\\u{:04x}", c as u32)),
                c if (c as u32) < 0x20 => s.push_str(&format!("\\u{:04x}", c as u32)),
                '\u{2028}' | '\u{2029}' => s.push_str(&format!("\\u{:04x}", c as u32)),
                c => s.push(c),
            }
        }
        s.push_str(&format!(r#"","stream":"{stream}","time":"{time}"}}"#));
        s.into_bytes()
    }

    /// Lines copied from a json-file log written by this project's Docker engine
    /// (busybox `printf`), and what they decode to.
    #[test]
    fn decodes_real_docker_lines() {
        use StdStream::{Stderr, Stdout};
        let cases: &[(&str, LogRecord)] = &[
            (
                r#"{"log":"hello world\n","stream":"stdout","time":"2026-11-22T00:41:42.98009025Z"}"#,
                record(Stdout, T, b"hello world", false),
            ),
            (
                r#"{"log":"\n","stream":"stdout","time":"2026-11-22T00:41:42.980147466Z"}"#,
                record(Stdout, "2026-11-22T00:41:42.980147466Z", b"", false),
            ),
            (
                r#"{"log":"quote \" backslash \\ slash / tab \u0009 cr \r end\n","stream":"stdout","time":"2026-11-22T00:41:42.980151292Z"}"#,
                record(
                    Stdout,
                    "2026-11-22T00:41:42.980151292Z",
                    b"quote \" backslash \\ slash / tab \t cr \r end",
                    false,
                ),
            ),
            (
                r#"{"log":"html \u003ca href=\"x\"\u003e\u0026amp;\u003c/a\u003e\n","stream":"stdout","time":"2026-11-22T00:41:42.980154064Z"}"#,
                record(
                    Stdout,
                    "2026-11-22T00:41:42.980154064Z",
                    b"html <a href=\"x\">&amp;</a>",
                    false,
                ),
            ),
            (
                r#"{"log":"unicode: café € 😀 ls\u2028ps\u2029\n","stream":"stdout","time":"2026-11-22T00:41:42.980156347Z"}"#,
                record(
                    Stdout,
                    "2026-11-22T00:41:42.980156347Z",
                    "unicode: café € 😀 ls\u{2028}ps\u{2029}".as_bytes(),
                    false,
                ),
            ),
            (
                r#"{"log":"ctrl: \u0001\u0002\u001b[31mred\u001b[0m\n","stream":"stdout","time":"2026-11-22T00:41:42.980159331Z"}"#,
                record(
                    Stdout,
                    "2026-11-22T00:41:42.980159331Z",
                    b"ctrl: \x01\x02\x1b[31mred\x1b[0m",
                    false,
                ),
            ),
            (
                r#"{"log":"invalid utf8: \ufffd\ufffd end\n","stream":"stdout","time":"2026-11-22T00:41:42.980161324Z"}"#,
                record(
                    Stdout,
                    "2026-11-22T00:41:42.980161324Z",
                    "invalid utf8: \u{fffd}\u{fffd} end".as_bytes(),
                    false,
                ),
            ),
            (
                r#"{"log":"{\"json\":\"inside\",\"n\":1}\n","stream":"stdout","time":"2026-11-22T00:41:42.980163727Z"}"#,
                record(
                    Stdout,
                    "2026-11-22T00:41:42.980163727Z",
                    br#"{"json":"inside","n":1}"#,
                    false,
                ),
            ),
            (
                r#"{"log":"crlf line\r\n","stream":"stdout","time":"2026-11-22T00:41:42.980165866Z"}"#,
                record(
                    Stdout,
                    "2026-11-22T00:41:42.980165866Z",
                    b"crlf line\r",
                    false,
                ),
            ),
            (
                r#"{"log":"to stderr\n","stream":"stderr","time":"2026-11-22T00:41:42.980178301Z"}"#,
                record(
                    Stderr,
                    "2026-11-22T00:41:42.980178301Z",
                    b"to stderr",
                    false,
                ),
            ),
        ];
        for (line, want) in cases {
            let mut decoder = DockerJsonDecoder::new(1 << 20);
            let got = decode_all(&mut decoder, &[line.as_bytes()]);
            assert_eq!(got, vec![want.clone()], "{line}");
            // The same line in another shape goes through serde_json and agrees.
            let spaced = line.replacen('{', "{ ", 1);
            let got = decode_all(&mut decoder, &[spaced.as_bytes()]);
            assert_eq!(got, vec![want.clone()], "slow path: {line}");
            assert_eq!(decoder.pending_start(), None);
        }
    }

    /// Docker writes a 1 MiB line as 64 pieces of 16 KiB without `\n`, then `"\n"` alone
    /// (seen in this machine's json-file log for `head -c 1048576 /dev/zero | tr '\0' a`).
    #[test]
    fn joins_docker_16k_pieces() {
        let time = "2026-11-22T00:41:42.982389164Z";
        let piece = go_line(&"a".repeat(16384), "stdout", time);
        let last = go_line("\n", "stdout", time);
        let mut lines: Vec<&[u8]> = vec![&piece; 64];
        lines.push(&last);
        let expected = vec![b'a'; 1 << 20];

        for max in [1 << 20, 2 << 20, 100_000, 16384, 1000] {
            let mut decoder = DockerJsonDecoder::new(max);
            let mut out = Vec::new();
            let mut offset = 0;
            for (n, line) in lines.iter().enumerate() {
                decoder.decode(frame_at(line, offset), &mut out).unwrap();
                if n < 64 && out.is_empty() {
                    assert_eq!(decoder.pending_start(), Some(0), "max {max}");
                }
                offset += line.len() as u64 + 1;
            }
            assert_eq!(decoder.pending_start(), None, "max {max}");
            let joined: Vec<u8> = out.iter().flat_map(|r| r.message.to_vec()).collect();
            assert_eq!(joined.len(), expected.len(), "max {max}");
            assert_eq!(joined, expected, "max {max}");
            assert_eq!(out.len(), expected.len().div_ceil(max), "max {max}");
            for (i, r) in out.iter().enumerate() {
                assert!(r.message.len() <= max);
                assert_eq!(r.split, i + 1 < out.len(), "max {max} record {i}");
                assert_eq!(r.time, time.as_bytes());
                assert_eq!(r.stream, Some(StdStream::Stdout));
            }
        }
    }

    #[test]
    fn partial_lines_interleave_per_stream() {
        let lines = [
            go_line("out-a ", "stdout", "t1"),
            go_line("err-a ", "stderr", "t2"),
            go_line("out-b\n", "stdout", "t3"),
            go_line("whole\n", "stdout", "t4"),
            go_line("err-b\n", "stderr", "t5"),
        ];
        let mut decoder = DockerJsonDecoder::new(1000);
        let mut out = Vec::new();
        let mut offset = 0;
        let mut pending = Vec::new();
        for line in &lines {
            decoder.decode(frame_at(line, offset), &mut out).unwrap();
            pending.push(decoder.pending_start());
            offset += line.len() as u64 + 1;
        }
        let second = lines[0].len() as u64 + 1;
        assert_eq!(
            pending,
            [Some(0), Some(0), Some(second), Some(second), None],
            "pending starts"
        );
        assert_eq!(
            out,
            [
                record(StdStream::Stdout, "t1", b"out-a out-b", false),
                record(StdStream::Stdout, "t4", b"whole", false),
                record(StdStream::Stderr, "t2", b"err-a err-b", false),
            ]
        );
    }

    #[test]
    fn flush_pending_emits_unterminated_lines_oldest_first() {
        let mut decoder = DockerJsonDecoder::new(1000);
        let mut out = decode_all(
            &mut decoder,
            &[
                &go_line("err", "stderr", "t1"),
                &go_line("out", "stdout", "t2"),
            ],
        );
        assert!(out.is_empty());
        decoder.flush_pending(&mut out);
        assert_eq!(
            out,
            [
                record(StdStream::Stderr, "t1", b"err", false),
                record(StdStream::Stdout, "t2", b"out", false),
            ]
        );
        assert_eq!(decoder.pending_start(), None);
        decoder.flush_pending(&mut out);
        assert_eq!(out.len(), 2, "nothing left to flush");
    }

    #[test]
    fn decodes_other_shapes() {
        let cases: &[(&str, &[u8], StdStream, &str, bool)] = &[
            (
                r#"{"log":"a\n","stream":"stdout","attrs":{"tag":"web","x":"}\""},"time":"t"}"#,
                b"a",
                StdStream::Stdout,
                "t",
                true,
            ),
            (
                r#"{"stream":"stderr","time":"t","log":"b\n"}"#,
                b"b",
                StdStream::Stderr,
                "t",
                true,
            ),
            (
                r#" {"log" : "c\n", "stream": "stdout", "time": "t", "extra": [1, {"a": null}]} "#,
                b"c",
                StdStream::Stdout,
                "t",
                true,
            ),
            (
                r#"{"log":"d\/e\b\f\t\n","stream":"stdout","time":"\u0074"}"#,
                b"d/e\x08\x0c\t",
                StdStream::Stdout,
                "t",
                true,
            ),
            (
                r#"{"log":"piece","stream":"stdout","time":"t"}"#,
                b"piece",
                StdStream::Stdout,
                "t",
                false,
            ),
        ];
        for &(line, message, stream, time, last) in cases {
            let mut decoder = DockerJsonDecoder::new(1000);
            let mut out = decode_all(&mut decoder, &[line.as_bytes()]);
            if !last {
                assert!(out.is_empty(), "{line}");
                decoder.flush_pending(&mut out);
            }
            assert_eq!(out, [record(stream, time, message, false)], "{line}");
        }
    }

    #[test]
    fn rejects_corrupt_lines_and_keeps_state() {
        let cases: &[(&str, &str)] = &[
            ("not json", "ParseLine"),
            ("", "ParseLine"),
            (r#"{"log":"x\n","stream":"stdout""#, "ParseLine"),
            (r#"{"stream":"stdout","time":"t"}"#, "ParseLine"),
            (r#"{"log":"x\n","time":"t"}"#, "ParseLine"),
            (r#"{"log":"x\n","stream":"stdout"}"#, "ParseLine"),
            (
                r#"{"log":"x\n","stream":"stdin","time":"t"}"#,
                "ParseStream",
            ),
            (
                r#"{"log":"\x\n","stream":"stdout","time":"t"}"#,
                "ParseLine",
            ),
            (
                r#"{"log":"\u12\n","stream":"stdout","time":"t"}"#,
                "ParseLine",
            ),
            (
                r#"{"log":"x\n","stream":"stdout","time":"t"} x"#,
                "ParseLine",
            ),
            (r#"{"log":1,"stream":"stdout","time":"t"}"#, "ParseLine"),
        ];
        for &(line, variant) in cases {
            let mut decoder = DockerJsonDecoder::new(1000);
            let mut out = decode_all(&mut decoder, &[&go_line("held ", "stdout", "t0")]);
            let err = decoder
                .decode(frame_at(line.as_bytes(), 100), &mut out)
                .unwrap_err();
            assert!(format!("{err:?}").starts_with(variant), "{line}: {err:?}");
            assert!(out.is_empty());
            assert_eq!(decoder.pending_start(), Some(0), "{line}");
            decoder
                .decode(frame_at(&go_line("end\n", "stdout", "t1"), 200), &mut out)
                .unwrap();
            assert_eq!(out, [record(StdStream::Stdout, "t0", b"held end", false)]);
        }
    }

    #[test]
    fn rejects_every_piece_of_a_line_over_the_frame_limit() {
        let mut decoder = DockerJsonDecoder::new(1000);
        let mut out = Vec::new();
        for (truncated, start) in [(true, 0), (true, 10), (false, 20)] {
            let frame = Frame {
                bytes: Bytes::from_static(b"{\"log\":\"xx"),
                start_offset: start,
                end_offset: start + 10,
                truncated,
            };
            let err = decoder.decode(frame, &mut out).unwrap_err();
            assert!(
                matches!(err, DockerJsonError::LineTooLong { start_offset } if start_offset == start)
            );
        }
        let line = go_line("ok\n", "stdout", "t");
        decoder.decode(frame_at(&line, 30), &mut out).unwrap();
        assert_eq!(out, [record(StdStream::Stdout, "t", b"ok", false)]);
    }

    #[test]
    fn unescapes_like_go() {
        let cases: &[(&str, Option<&str>)] = &[
            ("plain", Some("plain")),
            (r#"\"\\\/\b\f\n\r\t"#, Some("\"\\/\u{8}\u{c}\n\r\t")),
            (r"\u0041\u00e9\u20ac", Some("Aé€")),
            (r"\ud83d\ude00", Some("😀")),
            (r"\uD83D\uDE00", Some("😀")),
            (r"x\ud83dy", Some("x\u{fffd}y")),
            (r"\ude00", Some("\u{fffd}")),
            (r"\ud83d\u0041", Some("\u{fffd}A")),
            (r"\ud83d\ud83d\ude00", Some("\u{fffd}😀")),
            (r"\ud83d", Some("\u{fffd}")),
            (r"\x", None),
            (r"\u12", None),
            (r"\u12g4", None),
            ("\\", None),
        ];
        for &(src, want) in cases {
            let mut dst = BytesMut::new();
            let got = unescape_into(src.as_bytes(), &mut dst).map(|()| dst);
            assert_eq!(
                got.as_deref(),
                want.map(str::as_bytes),
                "{src}: {:?}",
                got.as_deref().map(String::from_utf8_lossy)
            );
        }
    }

    #[test]
    fn scan_accepts_only_the_exact_shape() {
        let cases: &[(&str, bool)] = &[
            (r#"{"log":"a\n","stream":"stdout","time":"t"}"#, true),
            (
                r#"{"log":"a\n","stream":"stdout","attrs":{},"time":"t"}"#,
                true,
            ),
            (r#"{"log":"a\\n","stream":"stdout","time":"t"}"#, true),
            (r#"{"log":"a\n","stream":"stdout","time":""}"#, false),
            (r#"{"log":"a\n","stream":"stdout","time":"t"} "#, false),
            (
                r#"{"log":"a\n","stream":"stdout","junk":1,"time":"t"}"#,
                false,
            ),
            (r#"{"log":"a\n","stream":"stdout","attrs":{"#, false),
            (r#"{"log":"a\n","stream":"stdout"}"#, false),
            (r#"{"log":"a\n","stream":"stdout""#, false),
            (r#"{"log":"a\n","stream":"other","time":"t"}"#, false),
            (r#"{"log":"a\n""#, false),
            (r#"{"log":"a\"#, false),
            (r#"{"log":"a"#, false),
            (r#"{"log":"#, false),
        ];
        for &(line, fast) in cases {
            assert_eq!(scan(line.as_bytes()).is_some(), fast, "{line}");
        }
        let s = scan(br#"{"log":"a\\n","stream":"stdout","time":"t"}"#).unwrap();
        assert!(s.escaped && !s.last, "escaped backslash then n is content");
    }

    proptest! {
        /// Lines of any content, split into pieces as Docker does and interleaved between
        /// stdout and stderr, come out per stream as the original lines, each record at most
        /// `max` bytes, and the fast path agrees with serde_json.
        #[test]
        fn reassembles_interleaved_pieces(
            lines in proptest::collection::vec(
                (any::<bool>(), "[a-c\"\\\\<&\t\r\u{1}\u{2028}é😀 ]{0,40}", 1usize..20), 1..12),
            max in 1usize..60,
            order_seed in any::<u64>(),
        ) {
            // Pieces per stream, in order.
            let mut pieces: [Vec<(Vec<u8>, bool)>; 2] = Default::default();
            for (is_err, text, piece_chars) in &lines {
                let stream = if *is_err { "stderr" } else { "stdout" };
                let chars: Vec<char> = text.chars().collect();
                let mut chunks: Vec<String> =
                    chars.chunks(*piece_chars).map(|c| c.iter().collect()).collect();
                match chunks.last_mut() {
                    Some(last) => last.push('\n'),
                    None => chunks.push("\n".into()),
                }
                for chunk in chunks {
                    let line = go_line(&chunk, stream, "t");
                    let slow = {
                        let mut s = line.clone();
                        s.insert(1, b' ');
                        s
                    };
                    pieces[usize::from(*is_err)].push((line, false));
                    pieces[usize::from(*is_err)].push((slow, true));
                }
            }
            // Feed the fast and the slow forms to two decoders, interleaving the streams by
            // a seeded order that keeps each stream's own order.
            let mut decoders = [DockerJsonDecoder::new(max), DockerJsonDecoder::new(max)];
            let mut outs = [Vec::new(), Vec::new()];
            let mut next = [0, 0];
            let mut seed = order_seed;
            let mut offset = 0;
            while next[0] < pieces[0].len() || next[1] < pieces[1].len() {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                let mut s = usize::from(seed >> 63 == 1);
                if next[s] == pieces[s].len() {
                    s = 1 - s;
                }
                for _ in 0..2 {
                    let (line, slow) = &pieces[s][next[s]];
                    decoders[usize::from(*slow)]
                        .decode(frame_at(line, offset), &mut outs[usize::from(*slow)])
                        .unwrap();
                    next[s] += 1;
                }
                offset += 1;
            }
            prop_assert_eq!(&outs[0], &outs[1]);
            for decoder in &decoders {
                prop_assert_eq!(decoder.pending_start(), None);
            }
            for (i, stream) in [StdStream::Stdout, StdStream::Stderr].into_iter().enumerate() {
                let want: Vec<String> = lines
                    .iter()
                    .filter(|l| usize::from(l.0) == i)
                    .map(|l| l.1.clone())
                    .collect();
                let mut got = Vec::new();
                let mut line = Vec::new();
                for r in outs[0].iter().filter(|r| r.stream == Some(stream)) {
                    prop_assert!(r.message.len() <= max);
                    line.extend_from_slice(&r.message);
                    if !r.split {
                        got.push(String::from_utf8(std::mem::take(&mut line)).unwrap());
                    }
                }
                prop_assert!(line.is_empty());
                prop_assert_eq!(got, want);
            }
        }
    }
}
