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
//! time are ranges of the read buffer. A line with escapes is unescaped straight into the
//! records' arena (shared by many lines). Any other shape (fields reordered, whitespace, extra
//! fields) goes through `serde_json`.

use std::borrow::Cow;
use std::ops::Range;

use serde::Deserialize;

use super::{Joiner, clamp_max_line_bytes};
use crate::tail::framing::Frame;
use crate::tail::record::{LogRecords, Span, StdStream};

/// The smallest frame limit for json-file: a 16 KiB piece of control bytes escaped as
/// `\u00XX` takes 96 KiB, and `attrs` (labels, env) can add many more.
pub const MIN_FRAME_BYTES: usize = 256 * 1024;

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
    /// A decoded piece on its way to a joiner (rare: partial lines with escapes). Empty
    /// between calls.
    scratch: Vec<u8>,
    /// True while the pieces of a line longer than the frame limit arrive.
    in_long_line: bool,
}

impl DockerJsonDecoder {
    /// A decoder whose messages are at most `max_line_bytes` (raised to at least 1).
    pub fn new(max_line_bytes: usize) -> Self {
        let max_line_bytes = clamp_max_line_bytes(max_line_bytes);
        Self {
            max_line_bytes,
            stdout: Joiner::new(Some(StdStream::Stdout), max_line_bytes),
            stderr: Joiner::new(Some(StdStream::Stderr), max_line_bytes),
            scratch: Vec::new(),
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
        frame: Frame<'_>,
        out: &mut LogRecords,
    ) -> Result<(), DockerJsonError> {
        if frame.truncated || self.in_long_line {
            // The last piece of an over-long line is not truncated, and is rejected too.
            self.in_long_line = frame.truncated;
            return Err(DockerJsonError::LineTooLong {
                start_offset: frame.start_offset,
            });
        }
        let Some(scan) = scan(frame.bytes) else {
            return self.decode_slow(frame, out);
        };
        let content = &frame.bytes[scan.content];
        let time = &frame.bytes[scan.time];
        // One pass over the message finds whether anything but the final `\n` needs decoding.
        let (message, last) = match memchr::memchr2(b'"', b'\\', content) {
            None => (content, false),
            Some(at) if at + 2 == content.len() && content[at + 1] == b'n' => {
                (&content[..at], true)
            }
            Some(at) => {
                let mut last = false;
                let decoded = out.write_with(content.len(), |dst| {
                    let (len, ends_line) = unescape_message(content, at, dst)?;
                    last = ends_line;
                    Some(len)
                });
                let Some(message) = decoded else {
                    // Not what Go writes (a raw quote, an unknown escape): let serde_json
                    // judge the line.
                    return self.decode_slow(frame, out);
                };
                self.emit_decoded(scan.stream, frame, time, message, last, out);
                return Ok(());
            }
        };
        let max = self.max_line_bytes;
        let joiner = self.joiner(scan.stream);
        if last && !joiner.is_holding() && message.len() <= max {
            let time = out.shared(frame.chunk, time);
            let message = out.shared(frame.chunk, message);
            out.push(time, message, Some(scan.stream), false);
        } else {
            joiner.push(message, time, frame.start_offset, last, out);
        }
        Ok(())
    }

    /// The joiner of `stream`.
    #[inline]
    fn joiner(&mut self, stream: StdStream) -> &mut Joiner {
        match stream {
            StdStream::Stdout => &mut self.stdout,
            StdStream::Stderr => &mut self.stderr,
        }
    }

    /// Emits a message already decoded into `out`'s arena: as a record when it is a whole
    /// line, else moved to its stream's joiner.
    fn emit_decoded(
        &mut self,
        stream: StdStream,
        frame: Frame<'_>,
        time: &[u8],
        message: Span,
        last: bool,
        out: &mut LogRecords,
    ) {
        let max = self.max_line_bytes;
        let joiner = match stream {
            StdStream::Stdout => &mut self.stdout,
            StdStream::Stderr => &mut self.stderr,
        };
        if last && !joiner.is_holding() && message.len() <= max {
            let time = out.shared(frame.chunk, time);
            out.push(time, message, Some(stream), false);
            return;
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(out.bytes(message));
        out.unwrite(message);
        joiner.push(&self.scratch, time, frame.start_offset, last, out);
        self.scratch.clear();
    }

    /// Decodes a line of any valid JSON shape with serde_json.
    #[cold]
    fn decode_slow(
        &mut self,
        frame: Frame<'_>,
        out: &mut LogRecords,
    ) -> Result<(), DockerJsonError> {
        let line: JsonLine<'_> = serde_json::from_slice(frame.bytes)
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
        let max = self.max_line_bytes;
        let joiner = self.joiner(stream);
        if last && !joiner.is_holding() && log.len() <= max {
            // `shared` copies what serde_json had to unescape (it is not inside the chunk).
            let time = out.shared(frame.chunk, line.time.as_bytes());
            let message = out.shared(frame.chunk, log.as_bytes());
            out.push(time, message, Some(stream), false);
        } else {
            joiner.push(
                log.as_bytes(),
                line.time.as_bytes(),
                frame.start_offset,
                last,
                out,
            );
        }
        Ok(())
    }

    /// The file offset of the oldest partial line held; see
    /// [`Decoder::pending_start`](super::Decoder::pending_start).
    pub fn pending_start(&self) -> Option<u64> {
        match (self.stdout.start_offset(), self.stderr.start_offset()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Frees the joiners' idle buffers; see
    /// [`Decoder::release_idle_memory`](super::Decoder::release_idle_memory).
    pub fn release_idle_memory(&mut self) {
        self.stdout.release_idle_memory();
        self.stderr.release_idle_memory();
    }

    /// Emits the partial lines held, oldest first.
    pub fn flush_pending(&mut self, out: &mut LogRecords) {
        // The rest of an over-long line will not come either.
        self.in_long_line = false;
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
///
/// serde_json rejects a lone surrogate escape that the fast path turns into U+FFFD; moby
/// never writes one (Go strings hold no surrogates), so only hand-made lines differ.
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

/// Where the parts of a line in moby's exact shape are.
struct Scan {
    /// The `log` string's content, still escaped, with its final `\n` if any.
    content: Range<usize>,
    /// The `stream` value.
    stream: StdStream,
    /// The `time` string's content.
    time: Range<usize>,
}

/// Finds the parts of a line written in moby's exact shape, or `None` for any other shape.
///
/// Walkthrough: the line must start with `{"log":"`. It is then read from its end, where
/// everything has a known shape: `"}`, the `time` string (which holds no quote), `,"time":"`,
/// `stdout"` or `stderr"`, `,"stream":"`, and the quote closing `log`. So the message is
/// found without scanning it; the caller's single scan of it for quotes and backslashes then
/// proves the closing quote real (a raw quote or backslash sends the line to the unescaper,
/// which rejects what Go never writes). When `attrs` sits between `stream` and `time`, the
/// backward walk stops at its `}`, and [`scan_with_attrs`] reads the line forwards instead.
#[inline]
fn scan(b: &[u8]) -> Option<Scan> {
    if !b.starts_with(LOG_PREFIX) {
        return None;
    }
    let (time, time_key) = scan_time(b)?;
    let Some(stream_end) = time_key.checked_sub(STREAM_VALUE_LEN) else {
        return scan_with_attrs(b, time, time_key);
    };
    let stream = match &b[stream_end..time_key] {
        b"stdout\"" => StdStream::Stdout,
        b"stderr\"" => StdStream::Stderr,
        _ => return scan_with_attrs(b, time, time_key),
    };
    // `,"stream":"` follows the quote closing `log` (which is not the one opening it).
    let comma = stream_end.checked_sub(STREAM_KEY.len())?;
    if comma <= LOG_PREFIX.len() || &b[comma..stream_end] != STREAM_KEY || b[comma - 1] != b'"' {
        return scan_with_attrs(b, time, time_key);
    }
    Some(Scan {
        content: LOG_PREFIX.len()..comma - 1,
        stream,
        time,
    })
}

/// Length of `stdout"` and `stderr"`.
const STREAM_VALUE_LEN: usize = 7;

/// Finds the `time` string that ends a line: returns its content and where `,"time":"`
/// starts.
#[inline]
fn scan_time(b: &[u8]) -> Option<(Range<usize>, usize)> {
    let end = b.len().checked_sub(2)?;
    if &b[end..] != b"\"}" {
        return None;
    }
    // The time is about 30 bytes: four 8-byte words, searched from the end for its opening
    // quote, beat both a byte loop and a `memrchr` call.
    let mut open = end;
    loop {
        if let Some(word) = open.checked_sub(8).and_then(|at| b.get(at..open)) {
            let word = u64::from_le_bytes(word.try_into().expect("a slice of 8 bytes"));
            let mask = exact_quote_or_backslash(word);
            if mask == 0 {
                open -= 8;
                continue;
            }
            open -= 1 + (mask.leading_zeros() / 8) as usize;
        } else {
            open = open.checked_sub(1)?;
            if b[open] != b'"' && b[open] != b'\\' {
                continue;
            }
        }
        // An escaped time is not moby's.
        if b[open] != b'"' {
            return None;
        }
        break;
    }
    let time_key = (open + 1).checked_sub(TIME_KEY.len())?;
    if open + 1 == end || time_key < LOG_PREFIX.len() || &b[time_key..=open] != TIME_KEY {
        return None;
    }
    Some((open + 1..end, time_key))
}

/// Reads a line with `attrs` (`--log-opt labels/env/tag`) forwards: the `log` string, with
/// `memchr2` from backslash to backslash (an escape is two bytes; `\uXXXX` goes on with hex
/// digits), then `stream`, then the `attrs` object up to the already found `time`.
#[cold]
fn scan_with_attrs(b: &[u8], time: Range<usize>, time_key: usize) -> Option<Scan> {
    let start = LOG_PREFIX.len();
    let mut i = start;
    let close = loop {
        let j = i + memchr::memchr2(b'"', b'\\', b.get(i..time_key)?)?;
        if b[j] == b'"' {
            break j;
        }
        i = j + 2;
    };
    let mut k = close + 1;
    if !b[k..].starts_with(STREAM_KEY) {
        return None;
    }
    k += STREAM_KEY.len();
    let stream = match b.get(k..k + STREAM_VALUE_LEN)? {
        b"stdout\"" => StdStream::Stdout,
        b"stderr\"" => StdStream::Stderr,
        _ => return None,
    };
    k += STREAM_VALUE_LEN;
    let attrs = b.get(k..time_key)?;
    if !attrs.starts_with(ATTRS_KEY) || !attrs.ends_with(b"}") {
        return None;
    }
    Some(Scan {
        content: start..close,
        stream,
        time,
    })
}

/// Unescapes a `log` string's content (its first quote or backslash at `first`) into `dst`
/// (at least as long), leaving the message without its final newline. Returns its length and
/// whether there was one (the line is complete), or `None` if the content is not valid JSON
/// string content.
#[inline]
fn unescape_message(src: &[u8], first: usize, dst: &mut [u8]) -> Option<(usize, bool)> {
    dst[..first].copy_from_slice(&src[..first]);
    let len = first + unescape(&src[first..], &mut dst[first..])?;
    let last = len > 0 && dst[len - 1] == b'\n';
    Some((len - usize::from(last), last))
}

/// Decodes JSON string content `src` (the bytes between the quotes) into `dst`, which must
/// be at least as long, and returns the decoded length.
///
/// Every escape decodes to fewer bytes than it takes (`\n` 2 -> 1, `\uXXXX` 6 -> at most 3,
/// a surrogate pair 12 -> 4), so the output never overtakes the input. Follows Go's
/// `encoding/json`: a `\uXXXX` surrogate pair becomes one character, a lone surrogate
/// becomes U+FFFD. Returns `None` on a raw quote or an escape JSON does not have.
///
/// Runs without quote or backslash are copied sixteen bytes at a time (then eight, near the
/// end): JSON-structured application logs have an escaped quote every few words, too often
/// for a `memchr` call per run to pay off. Each block is copied whole even when the run is
/// shorter (`j <= i`, so it fits, and the bytes past the run are overwritten next): a
/// fixed-size copy is one store, a variable one a `memcpy` call. After an escape the search
/// resumes right behind it, so each byte is looked at once.
fn unescape(src: &[u8], dst: &mut [u8]) -> Option<usize> {
    let (mut i, mut j) = (0, 0);
    loop {
        // Copy up to the next quote or backslash: 16 bytes at a time, then 8, then 1.
        if let Some(block) = src.get(i..i + 16) {
            let block: &[u8; 16] = block.try_into().expect("a slice of 16 bytes");
            dst[j..j + 16].copy_from_slice(block);
            let mask = quotes_and_backslashes16(block);
            if mask == 0 {
                i += 16;
                j += 16;
                continue;
            }
            let run = mask.trailing_zeros() as usize;
            i += run;
            j += run;
        } else if let Some(chunk) = src.get(i..i + 8) {
            let word = u64::from_le_bytes(chunk.try_into().expect("a slice of 8 bytes"));
            dst[j..j + 8].copy_from_slice(chunk);
            let mask = quote_or_backslash(word);
            if mask == 0 {
                i += 8;
                j += 8;
                continue;
            }
            let run = (mask.trailing_zeros() / 8) as usize;
            i += run;
            j += run;
        } else {
            let Some(&c) = src.get(i) else {
                return Some(j);
            };
            if c != b'"' && c != b'\\' {
                dst[j] = c;
                i += 1;
                j += 1;
                continue;
            }
        }
        // `src[i]` is a quote or a backslash.
        if src[i] == b'"' {
            return None;
        }
        let escape = *src.get(i + 1)?;
        i += 2;
        dst[j] = match escape {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let unit = hex4(&src[i..])?;
                i += 4;
                let c = match unit {
                    0xd800..=0xdbff => {
                        let low = src[i..]
                            .strip_prefix(b"\\u")
                            .and_then(hex4)
                            .filter(|low| (0xdc00..=0xdfff).contains(low));
                        match low {
                            Some(low) => {
                                i += 6;
                                let c = 0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00);
                                char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER)
                            }
                            None => char::REPLACEMENT_CHARACTER,
                        }
                    }
                    // The escapes Go writes most (`\u003c`, `\u0009`): one byte, no
                    // general UTF-8 encoding.
                    0..0x80 => {
                        dst[j] = unit as u8;
                        j += 1;
                        continue;
                    }
                    _ => char::from_u32(unit).unwrap_or(char::REPLACEMENT_CHARACTER),
                };
                j += c.encode_utf8(&mut dst[j..]).len();
                continue;
            }
            _ => return None,
        };
        j += 1;
    }
}

/// A mask with bit `k` set when `block[k]` is a quote or a backslash.
#[cfg(target_arch = "x86_64")]
#[inline]
fn quotes_and_backslashes16(block: &[u8; 16]) -> u32 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    // SAFETY: these intrinsics need SSE2, which every x86_64 CPU has (it is in the target's
    // baseline features); the load reads 16 bytes from `block`, which has exactly 16, and
    // allows any alignment.
    unsafe {
        let v = _mm_loadu_si128(block.as_ptr().cast::<__m128i>());
        let quotes = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
        let backslashes = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
        _mm_movemask_epi8(_mm_or_si128(quotes, backslashes)) as u32
    }
}

/// A mask with bit `k` set when `block[k]` is a quote or a backslash.
#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn quotes_and_backslashes16(block: &[u8; 16]) -> u32 {
    block
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == b'"' || b == b'\\')
        .fold(0, |mask, (k, _)| mask | 1 << k)
}

/// A mask with the high bit set in exactly the bytes of `word` that are a quote or a
/// backslash (slower than [`quote_or_backslash`], but exact in every byte, which a search
/// from the end needs).
#[inline]
fn exact_quote_or_backslash(word: u64) -> u64 {
    const LOWS: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    // High bit set in each byte of `v` that is not zero, computed without carries between
    // bytes.
    let nonzero = |v: u64| ((v & LOWS) + LOWS) | v;
    let quote = nonzero(word ^ (0x0101_0101_0101_0101 * u64::from(b'"')));
    let backslash = nonzero(word ^ (0x0101_0101_0101_0101 * u64::from(b'\\')));
    !(quote & backslash) & !LOWS
}

/// A mask with the high bit set in (at least) the lowest byte of `word` that is a quote or
/// a backslash, and in no lower byte; zero if there is none.
///
/// The classic "has a zero byte" test applied to `word ^ pattern`: it can flag bytes above a
/// true match (a borrow), never below one, so `trailing_zeros() / 8` is the first match.
#[inline]
fn quote_or_backslash(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero_bytes = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    zero_bytes(word ^ (ONES * u64::from(b'"'))) | zero_bytes(word ^ (ONES * u64::from(b'\\')))
}

/// The value of the 4 hex digits `src` starts with.
#[inline]
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
    use crate::tail::LogRecord;
    use crate::tail::format::collect;
    use crate::tail::framing::OwnedFrame;

    const T: &str = "2026-11-22T00:41:42.98009025Z";

    fn frame_at(line: &[u8], start_offset: u64) -> OwnedFrame {
        OwnedFrame::new(line, start_offset, false)
    }

    fn decode_all(decoder: &mut DockerJsonDecoder, lines: &[&[u8]]) -> LogRecords {
        let mut out = LogRecords::new();
        let mut offset = 0;
        for line in lines {
            decoder
                .decode(frame_at(line, offset).frame(), &mut out)
                .unwrap();
            offset += line.len() as u64 + 1;
        }
        out
    }

    fn record<'a>(
        stream: StdStream,
        time: &'a str,
        message: &'a [u8],
        split: bool,
    ) -> LogRecord<'a> {
        LogRecord {
            time: time.as_bytes(),
            stream: Some(stream),
            message,
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
    /// (busybox `printf`; the last with `--log-opt labels=team,app --log-opt tag=...`), and
    /// what they decode to. All of them take the fast path.
    #[test]
    fn decodes_real_docker_lines() {
        use StdStream::{Stderr, Stdout};
        let cases: &[(&str, LogRecord<'_>)] = &[
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
            (
                r#"{"log":"err\n","stream":"stderr","attrs":{"app":"web","tag":"attrs-test","team":"core"},"time":"2026-11-22T00:58:57.270647303Z"}"#,
                record(Stderr, "2026-11-22T00:58:57.270647303Z", b"err", false),
            ),
        ];
        for (line, want) in cases {
            assert!(scan(line.as_bytes()).is_some(), "fast path: {line}");
            let mut decoder = DockerJsonDecoder::new(1 << 20);
            let got = decode_all(&mut decoder, &[line.as_bytes()]);
            assert_eq!(collect(&got), vec![*want], "{line}");
            // The same line in another shape goes through serde_json and agrees.
            let spaced = line.replacen('{', "{ ", 1);
            let got = decode_all(&mut decoder, &[spaced.as_bytes()]);
            assert_eq!(collect(&got), vec![*want], "slow path: {line}");
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
            let mut out = LogRecords::new();
            let mut offset = 0;
            for (n, line) in lines.iter().enumerate() {
                decoder
                    .decode(frame_at(line, offset).frame(), &mut out)
                    .unwrap();
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
        let mut out = LogRecords::new();
        let mut offset = 0;
        let mut pending = Vec::new();
        for line in &lines {
            decoder
                .decode(frame_at(line, offset).frame(), &mut out)
                .unwrap();
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
            collect(&out),
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
            collect(&out),
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
            assert_eq!(
                collect(&out),
                [record(stream, time, message, false)],
                "{line}"
            );
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
                .decode(frame_at(line.as_bytes(), 100).frame(), &mut out)
                .unwrap_err();
            assert!(format!("{err:?}").starts_with(variant), "{line}: {err:?}");
            assert!(out.is_empty());
            assert_eq!(decoder.pending_start(), Some(0), "{line}");
            decoder
                .decode(
                    frame_at(&go_line("end\n", "stdout", "t1"), 200).frame(),
                    &mut out,
                )
                .unwrap();
            assert_eq!(
                collect(&out),
                [record(StdStream::Stdout, "t0", b"held end", false)]
            );
        }
    }

    #[test]
    fn rejects_every_piece_of_a_line_over_the_frame_limit() {
        let mut decoder = DockerJsonDecoder::new(1000);
        let mut out = LogRecords::new();
        for (truncated, start) in [(true, 0), (true, 10), (false, 20)] {
            let frame = OwnedFrame {
                bytes: bytes::Bytes::from_static(b"{\"log\":\"xx"),
                start_offset: start,
                end_offset: start + 10,
                truncated,
            };
            let err = decoder.decode(frame.frame(), &mut out).unwrap_err();
            assert!(
                matches!(err, DockerJsonError::LineTooLong { start_offset } if start_offset == start)
            );
        }
        let line = go_line("ok\n", "stdout", "t");
        decoder
            .decode(frame_at(&line, 30).frame(), &mut out)
            .unwrap();
        assert_eq!(
            collect(&out),
            [record(StdStream::Stdout, "t", b"ok", false)]
        );
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
            ("raw \" quote", None),
            (r"0123456\\89abcdef\\", Some("0123456\\89abcdef\\")),
            (r"01234567\\9abcdef", Some("01234567\\9abcdef")),
            ("0123456789abcdefé\\u00e9", Some("0123456789abcdefé\u{e9}")),
            (r"\u12", None),
            (r"\u12g4", None),
            ("\\", None),
        ];
        for &(src, want) in cases {
            let mut dst = vec![0; src.len()];
            let got = unescape(src.as_bytes(), &mut dst).map(|n| &dst[..n]);
            assert_eq!(
                got,
                want.map(str::as_bytes),
                "{src}: {:?}",
                got.map(String::from_utf8_lossy)
            );
        }
    }

    #[test]
    fn scan_accepts_only_the_exact_shape() {
        use StdStream::{Stderr, Stdout};
        /// The content, stream and time the fast scanner finds.
        type Parts = (&'static str, StdStream, &'static str);
        let cases: &[(&str, Option<Parts>)] = &[
            (
                r#"{"log":"a\n","stream":"stdout","time":"t1"}"#,
                Some((r"a\n", Stdout, "t1")),
            ),
            (
                r#"{"log":"","stream":"stderr","time":"t"}"#,
                Some(("", Stderr, "t")),
            ),
            (
                r#"{"log":"a\n","stream":"stdout","attrs":{},"time":"t"}"#,
                Some((r"a\n", Stdout, "t")),
            ),
            (
                r#"{"log":"a\",\"stream\":\"x","stream":"stderr","attrs":{"k":"v"},"time":"t"}"#,
                Some((r#"a\",\"stream\":\"x"#, Stderr, "t")),
            ),
            (
                r#"{"log":"a\\n","stream":"stdout","time":"t"}"#,
                Some((r"a\\n", Stdout, "t")),
            ),
            (r#"{"log":"a\n","stream":"stdout","time":""}"#, None),
            (r#"{"log":"a\n","stream":"stdout","time":"\u0074"}"#, None),
            (r#"{"log":"a\n","stream":"stdout","time":"t"} "#, None),
            (
                r#"{"log":"a\n","stream":"stdout","junk":1,"time":"t"}"#,
                None,
            ),
            (
                r#"{"log":"a\n","stream":"stdout","attrs":{,"time":"t"}"#,
                None,
            ),
            (r#"{"log":"a\n","stream":"stdout","attrs":{"#, None),
            (r#"{"log":"a\n","stream":"stdout"}"#, None),
            (r#"{"log":"a\n","stream":"stdout""#, None),
            (r#"{"log":"a\n","stream":"other","time":"t"}"#, None),
            (r#"{"log":"a\n","time":"t"}"#, None),
            (r#"{"log":"","time":"t"}"#, None),
            (r#"{"log":"time":"t"}"#, None),
            (r#"{"log":"a\n""#, None),
            (r#"{"log":"a\"#, None),
            (r#"{"log":"#, None),
            (r#"{"log":"}"#, None),
            (r#""}"#, None),
        ];
        for &(line, want) in cases {
            let b = line.as_bytes();
            let got = scan(b).map(|s| {
                let content = std::str::from_utf8(&b[s.content]).unwrap();
                let time = std::str::from_utf8(&b[s.time]).unwrap();
                (content, s.stream, time)
            });
            assert_eq!(got, want, "{line}");
        }
    }

    #[test]
    fn scan_finds_times_of_any_length() {
        let digits = "2024-05-01T12:34:56.123456789+00:00";
        for len in 1..=digits.len() {
            let time = &digits[..len];
            for log in ["", "x", "0123456789"] {
                let line = format!(r#"{{"log":"{log}","stream":"stdout","time":"{time}"}}"#);
                let s = scan(line.as_bytes()).unwrap();
                assert_eq!(&line.as_bytes()[s.time], time.as_bytes(), "{line}");
                assert_eq!(&line.as_bytes()[s.content], log.as_bytes(), "{line}");
                for bad in ["\\", "\""] {
                    let mut t = time.to_owned();
                    t.insert_str(len / 2, bad);
                    let line = format!(r#"{{"log":"{log}","stream":"stdout","time":"{t}"}}"#);
                    assert!(scan(line.as_bytes()).is_none(), "{line}");
                }
            }
        }
    }

    /// Lines the scanner takes whose message is not what Go writes: the unescaper sends them
    /// to serde_json, which rejects them.
    #[test]
    fn rejects_bad_messages_in_the_exact_shape() {
        for line in [
            r#"{"log":"a"b\n","stream":"stdout","time":"t"}"#,
            r#"{"log":"a\","stream":"stdout","time":"t"}"#,
            r#"{"log":"\q\n","stream":"stdout","time":"t"}"#,
            r#"{"log":"\u00\n","stream":"stdout","time":"t"}"#,
        ] {
            let mut decoder = DockerJsonDecoder::new(100);
            let mut out = LogRecords::new();
            let err = decoder
                .decode(frame_at(line.as_bytes(), 0).frame(), &mut out)
                .unwrap_err();
            assert!(matches!(err, DockerJsonError::ParseLine { .. }), "{line}");
            assert!(out.is_empty());
        }
    }

    proptest! {
        /// The 16-byte search agrees with a byte loop.
        #[test]
        fn block_mask_finds_quotes_and_backslashes(
            bytes in proptest::array::uniform16(
                prop_oneof![Just(b'"'), Just(b'\\'), Just(0u8), Just(0xffu8), any::<u8>()]),
        ) {
            let want = (0..16)
                .filter(|&i| bytes[i] == b'"' || bytes[i] == b'\\')
                .fold(0u32, |m, i| m | 1 << i);
            prop_assert_eq!(quotes_and_backslashes16(&bytes), want);
        }
    }

    proptest! {
        /// The word-at-a-time searches agree with a byte loop.
        #[test]
        fn word_masks_find_quotes_and_backslashes(
            bytes in proptest::array::uniform8(
                prop_oneof![Just(b'"'), Just(b'\\'), Just(0u8), Just(0xffu8), any::<u8>()]),
        ) {
            let word = u64::from_le_bytes(bytes);
            let special: Vec<usize> =
                (0..8).filter(|&i| bytes[i] == b'"' || bytes[i] == b'\\').collect();
            let exact: Vec<usize> = (0..8)
                .filter(|&i| exact_quote_or_backslash(word) >> (8 * i) & 0x80 != 0)
                .collect();
            prop_assert_eq!(&exact, &special);
            prop_assert_eq!(exact_quote_or_backslash(word) & !0x8080_8080_8080_8080, 0);
            let first = quote_or_backslash(word);
            match special.first() {
                Some(&i) => prop_assert_eq!(first.trailing_zeros() as usize / 8, i),
                None => prop_assert_eq!(first, 0),
            }
        }
    }

    proptest! {
        /// Lines of any content, split into pieces as Docker does and interleaved between
        /// stdout and stderr, come out per stream as the original lines, each record at most
        /// `max` bytes, and the fast path agrees with serde_json.
        #[test]
        fn reassembles_interleaved_pieces(
            lines in proptest::collection::vec(
                (any::<bool>(), "[a-cn\"\\\\<&\t\r\u{1}\u{2028}é😀 ]{0,40}", 1usize..20), 1..12),
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
            let mut outs = [LogRecords::new(), LogRecords::new()];
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
                        .decode(frame_at(line, offset).frame(), &mut outs[usize::from(*slow)])
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
                    line.extend_from_slice(r.message);
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
