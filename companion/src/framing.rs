//! Newline framing: cut a byte stream into complete lines, bounded in length.
//!
//! The relay does not parse Graphite (the daemon validates every line and counts the bad ones);
//! it only makes sure it forwards whole lines, so one sender's half line never glues onto
//! another sender's line on the shared daemon connection. The drain client uses the same framer
//! for the daemon's NDJSON answers.

use bytes::{Bytes, BytesMut};

/// Cuts a byte stream into lines of at most `max_line` bytes (newline excluded).
///
/// Memory stays bounded: the framer holds at most one partial line of `max_line` bytes. A
/// longer line is dropped whole (its start and, once it comes, its end) and counted, never
/// split into two lines the daemon would take for two samples.
#[derive(Debug)]
pub struct LineFramer {
    /// The bytes after the last newline seen: the start of the next line.
    partial: BytesMut,
    /// The longest line forwarded, newline excluded.
    max_line: usize,
    /// Whether the current line already exceeded `max_line` and is being skipped up to its
    /// newline.
    discarding: bool,
    /// Lines dropped for their length, since the framer was made.
    dropped_long: u64,
}

impl LineFramer {
    /// A framer that forwards lines of at most `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        Self {
            partial: BytesMut::new(),
            max_line,
            discarding: false,
            dropped_long: 0,
        }
    }

    /// Lines dropped because they were longer than `max_line`.
    pub fn dropped_long(&self) -> u64 {
        self.dropped_long
    }

    /// Whether a partial line is held (bytes after the last newline).
    pub fn has_partial(&self) -> bool {
        !self.partial.is_empty()
    }

    /// Takes `data`, the next bytes of the stream, and appends to `out` the complete lines
    /// they finish, each with its newline. Lines come out in chunks: one `Bytes` may hold many
    /// lines, which is what the relay wants (one queue slot and one write for a read's worth).
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<Bytes>) {
        while !data.is_empty() {
            if self.discarding {
                match memchr::memchr(b'\n', data) {
                    Some(nl) => {
                        self.discarding = false;
                        data = &data[nl + 1..];
                        continue;
                    }
                    None => return,
                }
            }
            let Some(last_nl) = memchr::memrchr(b'\n', data) else {
                self.keep_partial(data);
                return;
            };
            // `data[..=last_nl]` completes the held partial line and holds whole lines after
            // it; `data[last_nl + 1..]` starts the next partial line.
            self.partial.extend_from_slice(&data[..=last_nl]);
            let complete = self.partial.split().freeze();
            self.emit_checked(complete, out);
            data = &data[last_nl + 1..];
            self.keep_partial(data);
            return;
        }
    }

    /// Ends the stream: a held partial line is forwarded with a newline appended (the sender
    /// closed without one; the daemon decides whether it is a valid sample).
    pub fn finish(&mut self, out: &mut Vec<Bytes>) {
        if self.discarding {
            self.discarding = false;
            return;
        }
        if !self.partial.is_empty() {
            self.partial.extend_from_slice(b"\n");
            out.push(self.partial.split().freeze());
        }
    }

    /// Appends `data` (no newline in it) to the held partial line, or starts discarding when
    /// that makes the line too long.
    fn keep_partial(&mut self, data: &[u8]) {
        if self.partial.len() + data.len() > self.max_line {
            self.partial.clear();
            self.discarding = true;
            self.dropped_long += 1;
        } else {
            self.partial.extend_from_slice(data);
        }
    }

    /// Emits `complete` (whole lines, newline-terminated), leaving out the lines longer than
    /// `max_line`. The common case, no long line, emits `complete` as it is, without a copy.
    fn emit_checked(&mut self, complete: Bytes, out: &mut Vec<Bytes>) {
        let mut start = 0;
        let mut kept_from = 0;
        for nl in memchr::memchr_iter(b'\n', &complete) {
            if nl - start > self.max_line {
                self.dropped_long += 1;
                if start > kept_from {
                    out.push(complete.slice(kept_from..start));
                }
                kept_from = nl + 1;
            }
            start = nl + 1;
        }
        if complete.len() > kept_from {
            out.push(complete.slice(kept_from..));
        }
    }
}

/// Frames one UDP datagram: every line it holds, the last one completed with a newline when it
/// has none (a datagram is never continued by the next). Returns the lines dropped for length.
pub fn frame_datagram(datagram: &[u8], max_line: usize, out: &mut Vec<Bytes>) -> u64 {
    let mut framer = LineFramer::new(max_line);
    framer.push(datagram, out);
    framer.finish(out);
    framer.dropped_long()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(out: &[Bytes]) -> Vec<u8> {
        out.iter().flat_map(|b| b.iter().copied()).collect()
    }

    #[test]
    fn complete_lines_pass_and_partial_lines_wait() {
        let mut framer = LineFramer::new(64);
        let mut out = Vec::new();
        framer.push(b"a.b 1 10\nc.d", &mut out);
        assert_eq!(lines(&out), b"a.b 1 10\n");
        assert!(framer.has_partial());
        framer.push(b" 2 20\ne", &mut out);
        assert_eq!(lines(&out), b"a.b 1 10\nc.d 2 20\n");
        framer.finish(&mut out);
        assert_eq!(lines(&out), b"a.b 1 10\nc.d 2 20\ne\n");
        assert_eq!(framer.dropped_long(), 0);
    }

    /// However the stream is cut into reads, the same lines come out.
    #[test]
    fn framing_does_not_depend_on_read_boundaries() {
        let stream: &[u8] = b"x 1\nlong-line-that-is-too-long 2\n\nyy 3\nzzz";
        let expected: &[u8] = b"x 1\n\nyy 3\nzzz\n";
        for cut in 1..stream.len() {
            let mut framer = LineFramer::new(10);
            let mut out = Vec::new();
            for piece in stream.chunks(cut) {
                framer.push(piece, &mut out);
            }
            framer.finish(&mut out);
            assert_eq!(lines(&out), expected, "reads of {cut} bytes");
            assert_eq!(framer.dropped_long(), 1, "reads of {cut} bytes");
        }
    }

    #[test]
    fn over_long_lines_are_dropped_and_counted() {
        let cases: &[(&[u8], usize, &[u8], u64)] = &[
            (b"12345\n123456\n1\n", 5, b"12345\n1\n", 1),
            (b"123456\n", 5, b"", 1),
            (b"123456", 5, b"", 1),
            (b"123456\n123456\nok\n", 5, b"ok\n", 2),
            (b"ok\n1234567890", 5, b"ok\n", 1),
        ];
        for &(input, max, expected, dropped) in cases {
            let mut framer = LineFramer::new(max);
            let mut out = Vec::new();
            framer.push(input, &mut out);
            framer.finish(&mut out);
            assert_eq!(lines(&out), expected, "{input:?}");
            assert_eq!(framer.dropped_long(), dropped, "{input:?}");
        }
    }

    /// A partial line that grows past the limit across reads is dropped up to its newline,
    /// and the held bytes never exceed the limit.
    #[test]
    fn growing_partial_line_is_bounded() {
        let mut framer = LineFramer::new(8);
        let mut out = Vec::new();
        for _ in 0..1000 {
            framer.push(b"aaaa", &mut out);
            assert!(framer.partial.len() <= 8);
        }
        framer.push(b"aa\nb 1\n", &mut out);
        assert_eq!(lines(&out), b"b 1\n");
        assert_eq!(framer.dropped_long(), 1);
    }

    #[test]
    fn datagrams_hold_several_lines() {
        let cases: &[(&[u8], &[u8], u64)] = &[
            (b"a 1\nb 2\n", b"a 1\nb 2\n", 0),
            (b"a 1\nb 2", b"a 1\nb 2\n", 0),
            (b"a 1", b"a 1\n", 0),
            (b"", b"", 0),
            (b"a 1\nthis-is-far-too-long 2\nc 3", b"a 1\nc 3\n", 1),
        ];
        for &(datagram, expected, dropped) in cases {
            let mut out = Vec::new();
            assert_eq!(frame_datagram(datagram, 10, &mut out), dropped);
            assert_eq!(lines(&out), expected, "{datagram:?}");
        }
    }
}
