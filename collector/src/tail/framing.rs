//! Newline framing of a log file's bytes into zero-copy line frames with exact file offsets.
//!
//! [`LineFramer`] owns one read buffer. Each [`LineFramer::read_from`] is a single `read()`
//! into its spare capacity; [`LineFramer::next_frame`] then hands out complete lines as
//! [`Bytes`] slices of that buffer: the region holding complete lines is frozen once and
//! sliced per line, so a line costs a `memchr` and a reference-count increment, never a copy
//! or an allocation.
//!
//! A line longer than `max_line_bytes` is never dropped: it comes out as pieces of
//! `max_line_bytes` marked [`Frame::truncated`], followed by the rest of the line. This keeps
//! the buffer bounded at about `max_line_bytes + read_size` whatever the file holds.
//!
//! ```no_run
//! use collector::tail::framing::LineFramer;
//!
//! # fn main() -> std::io::Result<()> {
//! let mut file = std::fs::File::open("/var/log/app.log")?;
//! let mut framer = LineFramer::new(0, 256 * 1024, 1024 * 1024);
//! while framer.read_from(&mut file)? > 0 {
//!     while let Some(frame) = framer.next_frame() {
//!         println!("{}..{}: {:?}", frame.start_offset, frame.end_offset, frame.bytes);
//!     }
//! }
//! # Ok(())
//! # }
//! ```

use std::io::Read;

use bytes::{Bytes, BytesMut};

/// The default size of one `read()`: large enough that the syscall cost per byte is noise
/// (about 2 000 lines of a typical container log), small enough to stay in L2 cache while
/// it is framed and decoded.
pub const DEFAULT_READ_SIZE: usize = 256 * 1024;

/// One line of a file (or a piece of a line longer than the limit), without its `'\n'`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The line's bytes without the trailing `'\n'`: a slice of the framer's read buffer.
    pub bytes: Bytes,
    /// File offset of the first byte of `bytes`.
    pub start_offset: u64,
    /// File offset just after this frame: after its `'\n'`, or after its last byte when the
    /// frame has no newline (a truncated piece or a final partial line). This is where reading
    /// resumes to get the next frame, so it is the offset a checkpoint may record once the
    /// frame is delivered.
    pub end_offset: u64,
    /// True when the line was longer than `max_line_bytes` and this is a piece of exactly
    /// `max_line_bytes` bytes that does not end the line: the next frame continues it.
    pub truncated: bool,
}

/// Splits the bytes of one file into [`Frame`]s, across reads of any size.
///
/// Call [`read_from`](Self::read_from), then [`next_frame`](Self::next_frame) until it returns
/// `None`, and repeat. Reading again without draining the frames first makes the buffer grow
/// by up to `read_size` per call.
#[derive(Debug)]
pub struct LineFramer {
    /// Bytes read but not yet frozen into `ready`. Invariant: every byte of this buffer's
    /// allocation, including its spare capacity, is initialised (we only ever use allocations
    /// made by `BytesMut::zeroed`, and never call `reserve`, which could allocate
    /// uninitialised memory), so `read_from` can lend the spare capacity to `Read::read`
    /// as a `&mut [u8]` without zeroing it on every read.
    buf: BytesMut,
    /// A frozen prefix of the buffer that ends with `'\n'`: complete lines not yet returned.
    /// Frames are sliced from it, which is what makes them zero-copy.
    ready: Bytes,
    /// File offset of `ready[0]`: the offset after the last frame returned.
    offset: u64,
    /// Length of the prefix of `buf` already searched for `'\n'` without success, so a long
    /// partial line is scanned once, not once per read.
    scanned: usize,
    /// Most bytes one `read_from` asks for.
    read_size: usize,
    /// Longest frame returned; longer lines come out in pieces of this size.
    max_line_bytes: usize,
}

impl LineFramer {
    /// A framer for a file whose next byte to read is at `start_offset`.
    ///
    /// `read_size` and `max_line_bytes` are raised to at least 1.
    pub fn new(start_offset: u64, read_size: usize, max_line_bytes: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            ready: Bytes::new(),
            offset: start_offset,
            scanned: 0,
            read_size: read_size.max(1),
            max_line_bytes: max_line_bytes.max(1),
        }
    }

    /// Reads once from `r` into the buffer, with a single `read()` call of at most
    /// `read_size` bytes.
    ///
    /// Returns the number of bytes read; 0 means end of file (for now: a tailed file may grow).
    ///
    /// # Errors
    /// Whatever `r.read()` returns, including `Interrupted`, which the caller may retry.
    pub fn read_from(&mut self, r: &mut impl Read) -> std::io::Result<usize> {
        self.make_room();
        let len = self.buf.len();
        let want = (self.buf.capacity() - len).min(self.read_size);
        let spare = &mut self.buf.spare_capacity_mut()[..want];
        // SAFETY: `MaybeUninit<u8>` has the layout of `u8`, and every byte of the allocation
        // behind `self.buf` is initialised (see the invariant on the field), so viewing the
        // spare capacity as `&mut [u8]` reads no uninitialised memory, whatever `r` does.
        let dst = unsafe { &mut *(spare as *mut [std::mem::MaybeUninit<u8>] as *mut [u8]) };
        let n = r.read(dst)?;
        // A `Read` impl that claims more than it was given is broken; trusting it would expose
        // stale bytes as file content.
        assert!(
            n <= want,
            "Read::read returned {n} for a buffer of {want} bytes"
        );
        // SAFETY: `n <= want <= capacity - len`, and those bytes are initialised (above).
        unsafe { self.buf.set_len(len + n) };
        Ok(n)
    }

    /// Ensures the buffer has spare capacity for a read, keeping the initialised-allocation
    /// invariant of `buf`.
    fn make_room(&mut self) {
        let spare = self.buf.capacity() - self.buf.len();
        if spare >= self.read_size {
            return;
        }
        // When every frame of the current allocation has been dropped, `try_reclaim` moves the
        // unframed tail to the front of the same (initialised) allocation without allocating.
        // Half a read is worth it when the tail is longer than when the allocation was made.
        let half = (self.read_size / 2).max(1);
        if self.buf.try_reclaim(self.read_size) || self.buf.try_reclaim(half) {
            return;
        }
        // Records still hold slices of this allocation: keep filling its tail while a read of
        // useful size fits (a tailer of a slowly growing file reads little at a time).
        if spare >= self.read_size / 4 && spare > 0 {
            return;
        }
        // `zeroed` gets its memory from `calloc`, which costs nothing extra for fresh pages.
        let mut fresh = BytesMut::zeroed(self.buf.len() + self.read_size);
        fresh.clear();
        fresh.extend_from_slice(&self.buf);
        self.buf = fresh;
    }

    /// The next complete line, or piece of an over-long line, if one is buffered.
    ///
    /// Returns `None` when the buffered bytes after the last frame hold neither a `'\n'` nor
    /// more than `max_line_bytes` bytes: read more, or call
    /// [`take_partial`](Self::take_partial) if the file is finished for good.
    #[inline]
    pub fn next_frame(&mut self) -> Option<Frame> {
        if self.ready.is_empty() && !self.freeze_complete_lines() {
            return self.cut_long_partial();
        }
        let start_offset = self.offset;
        let limit = self.ready.len().min(self.max_line_bytes + 1);
        match memchr::memchr(b'\n', &self.ready[..limit]) {
            Some(pos) => {
                let mut bytes = self.ready.split_to(pos + 1);
                bytes.truncate(pos);
                self.offset += pos as u64 + 1;
                Some(Frame {
                    bytes,
                    start_offset,
                    end_offset: self.offset,
                    truncated: false,
                })
            }
            None => {
                // `ready` ends with '\n', so this line goes on past `max_line_bytes`.
                let bytes = self.ready.split_to(self.max_line_bytes);
                self.offset += self.max_line_bytes as u64;
                Some(Frame {
                    bytes,
                    start_offset,
                    end_offset: self.offset,
                    truncated: true,
                })
            }
        }
    }

    /// Moves every complete line of `buf` into `ready`. Returns false when `buf` holds none.
    fn freeze_complete_lines(&mut self) -> bool {
        let Some(last) = memchr::memrchr(b'\n', &self.buf[self.scanned..]) else {
            self.scanned = self.buf.len();
            return false;
        };
        self.ready = self.buf.split_to(self.scanned + last + 1).freeze();
        // What is left follows the last '\n', so it has none.
        self.scanned = self.buf.len();
        true
    }

    /// Returns a `max_line_bytes` piece of the unterminated line in `buf` once it is known to
    /// be longer than that (`max_line_bytes + 1` bytes and no `'\n'`).
    fn cut_long_partial(&mut self) -> Option<Frame> {
        if self.buf.len() <= self.max_line_bytes {
            return None;
        }
        let bytes = self.buf.split_to(self.max_line_bytes).freeze();
        self.scanned -= self.max_line_bytes;
        let start_offset = self.offset;
        self.offset += self.max_line_bytes as u64;
        Some(Frame {
            bytes,
            start_offset,
            end_offset: self.offset,
            truncated: true,
        })
    }

    /// Like [`next_frame`](Self::next_frame), but once no complete line is left, returns the
    /// bytes after the last `'\n'` as a final frame without newline.
    ///
    /// Use it when the file is finished for good (its writer is gone and it was read to the
    /// end), so a last line without newline is delivered rather than held forever.
    /// `while let Some(frame) = framer.take_partial()` drains everything buffered.
    pub fn take_partial(&mut self) -> Option<Frame> {
        if let Some(frame) = self.next_frame() {
            return Some(frame);
        }
        if self.buf.is_empty() {
            return None;
        }
        // `next_frame` returned None, so `buf` holds at most `max_line_bytes` and no '\n'.
        let bytes = self.buf.split().freeze();
        self.scanned = 0;
        let start_offset = self.offset;
        self.offset += bytes.len() as u64;
        Some(Frame {
            bytes,
            start_offset,
            end_offset: self.offset,
            truncated: false,
        })
    }

    /// Bytes read but not yet returned in a frame. After `next_frame` returned `None`, these
    /// are the bytes after the last complete line.
    pub fn pending_bytes(&self) -> usize {
        self.ready.len() + self.buf.len()
    }

    /// File offset after the last frame returned: where reading would resume if everything
    /// buffered were thrown away.
    pub fn offset_committed(&self) -> u64 {
        self.offset
    }

    /// File offset after the last byte read: the offset of the next `read_from`.
    pub fn read_offset(&self) -> u64 {
        self.offset + self.pending_bytes() as u64
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use proptest::prelude::*;

    use super::*;

    /// A reader that returns its data in chunks of the given sizes (cycling), never more than
    /// the buffer it is given.
    struct ChunkedReader<'a> {
        data: &'a [u8],
        chunks: Vec<usize>,
        next: usize,
    }

    impl Read for ChunkedReader<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let chunk = self.chunks[self.next % self.chunks.len()].max(1);
            self.next += 1;
            let n = chunk.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// Reads `data` to the end through a framer and returns all frames, then the final
    /// partial frame(s) from `take_partial`.
    fn frame_all(
        data: &[u8],
        chunks: Vec<usize>,
        start: u64,
        read_size: usize,
        max: usize,
    ) -> Vec<Frame> {
        let mut reader = ChunkedReader {
            data,
            chunks,
            next: 0,
        };
        let mut framer = LineFramer::new(start, read_size, max);
        let mut frames = Vec::new();
        loop {
            let n = framer.read_from(&mut reader).unwrap();
            while let Some(f) = framer.next_frame() {
                frames.push(f);
            }
            assert!(
                framer.pending_bytes() <= max,
                "buffer holds {} bytes with max {max}",
                framer.pending_bytes()
            );
            assert_eq!(
                framer.read_offset(),
                start + (data.len() - reader.data.len()) as u64
            );
            if n == 0 {
                break;
            }
        }
        while let Some(f) = framer.take_partial() {
            frames.push(f);
        }
        assert_eq!(framer.pending_bytes(), 0);
        assert_eq!(framer.offset_committed(), start + data.len() as u64);
        frames
    }

    /// The frames a correct framer returns, computed the obvious way.
    fn model(data: &[u8], start: u64, max: usize) -> Vec<Frame> {
        let mut frames = Vec::new();
        let mut offset = start;
        let mut rest = data;
        while !rest.is_empty() {
            let (line, has_newline) = match rest.iter().position(|&b| b == b'\n') {
                Some(p) => (&rest[..p], true),
                None => (rest, false),
            };
            rest = &rest[line.len() + usize::from(has_newline)..];
            let mut line = line;
            while line.len() > max {
                frames.push(Frame {
                    bytes: Bytes::copy_from_slice(&line[..max]),
                    start_offset: offset,
                    end_offset: offset + max as u64,
                    truncated: true,
                });
                offset += max as u64;
                line = &line[max..];
            }
            let end = offset + line.len() as u64 + u64::from(has_newline);
            frames.push(Frame {
                bytes: Bytes::copy_from_slice(line),
                start_offset: offset,
                end_offset: end,
                truncated: false,
            });
            offset = end;
        }
        frames
    }

    #[test]
    fn frames_simple_inputs() {
        struct Case {
            name: &'static str,
            input: &'static [u8],
            max: usize,
            want: &'static [(&'static [u8], u64, u64, bool)],
        }
        let cases = [
            Case {
                name: "empty file",
                input: b"",
                max: 8,
                want: &[],
            },
            Case {
                name: "two lines",
                input: b"ab\ncd\n",
                max: 8,
                want: &[(b"ab", 0, 3, false), (b"cd", 3, 6, false)],
            },
            Case {
                name: "empty lines",
                input: b"\n\nx\n",
                max: 8,
                want: &[(b"", 0, 1, false), (b"", 1, 2, false), (b"x", 2, 4, false)],
            },
            Case {
                name: "last line without newline comes from take_partial",
                input: b"ab\ncd",
                max: 8,
                want: &[(b"ab", 0, 3, false), (b"cd", 3, 5, false)],
            },
            Case {
                name: "line of exactly max is whole",
                input: b"abcd\n",
                max: 4,
                want: &[(b"abcd", 0, 5, false)],
            },
            Case {
                name: "line of max + 1 is cut",
                input: b"abcde\n",
                max: 4,
                want: &[(b"abcd", 0, 4, true), (b"e", 4, 6, false)],
            },
            Case {
                name: "line of twice max",
                input: b"abcdefgh\nz\n",
                max: 4,
                want: &[
                    (b"abcd", 0, 4, true),
                    (b"efgh", 4, 9, false),
                    (b"z", 9, 11, false),
                ],
            },
            Case {
                name: "carriage return is content",
                input: b"a\r\n",
                max: 4,
                want: &[(b"a\r", 0, 3, false)],
            },
        ];
        for case in cases {
            let want: Vec<Frame> = case
                .want
                .iter()
                .map(|&(b, s, e, t)| Frame {
                    bytes: Bytes::from_static(b),
                    start_offset: s + 100,
                    end_offset: e + 100,
                    truncated: t,
                })
                .collect();
            for (chunk, read_size) in [(1, 1), (1, 7), (2, 7), (3, 2), (1000, 7), (1000, 1000)] {
                let got = frame_all(case.input, vec![chunk], 100, read_size, case.max);
                assert_eq!(got, want, "{} (chunk {chunk}, read {read_size})", case.name);
            }
        }
    }

    #[test]
    fn next_frame_waits_for_the_newline() {
        let mut framer = LineFramer::new(0, 16, 100);
        framer.read_from(&mut &b"abc"[..]).unwrap();
        assert_eq!(framer.next_frame(), None);
        assert_eq!(framer.pending_bytes(), 3);
        framer.read_from(&mut &b"d\nef"[..]).unwrap();
        let frame = framer.next_frame().unwrap();
        assert_eq!(&frame.bytes[..], b"abcd");
        assert_eq!((frame.start_offset, frame.end_offset), (0, 5));
        assert_eq!(framer.next_frame(), None);
        assert_eq!(framer.offset_committed(), 5);
        assert_eq!(framer.pending_bytes(), 2);
        assert_eq!(framer.read_offset(), 7);
    }

    #[test]
    fn buffer_is_reused_when_frames_are_dropped_and_not_when_held() {
        let line = b"0123456789abcde\n";
        let data = line.repeat(64);
        let mut reader = &data[..];
        let mut framer = LineFramer::new(0, 64, 100);
        framer.read_from(&mut reader).unwrap();
        let first = framer.next_frame().unwrap();
        let base = first.bytes.as_ptr();
        drop(first);
        while framer.next_frame().is_some() {}
        framer.read_from(&mut reader).unwrap();
        let second = framer.next_frame().unwrap();
        assert_eq!(second.bytes.as_ptr(), base, "allocation reclaimed");
        // While `second` is alive, the next reads must not overwrite it.
        while framer.next_frame().is_some() {}
        for _ in 0..4 {
            framer.read_from(&mut reader).unwrap();
            while framer.next_frame().is_some() {}
        }
        assert_eq!(&second.bytes[..], &line[..15]);
    }

    proptest! {
        #[test]
        fn frames_do_not_depend_on_read_sizes(
            data in proptest::collection::vec(
                prop_oneof![4 => Just(b'\n'), 10 => any::<u8>(), 10 => Just(b'x')], 0..600),
            chunks in proptest::collection::vec(1usize..80, 1..8),
            read_size in 1usize..64,
            max in 1usize..40,
            start in 0u64..1_000_000,
        ) {
            let got = frame_all(&data, chunks, start, read_size, max);
            prop_assert_eq!(&got, &model(&data, start, max));
            // Frames tile the input exactly: joining them with the newlines they consumed
            // gives back the file.
            let mut joined = Vec::new();
            for f in &got {
                joined.extend_from_slice(&f.bytes);
                if f.end_offset - f.start_offset > f.bytes.len() as u64 {
                    joined.push(b'\n');
                }
            }
            prop_assert_eq!(joined, data);
        }
    }
}
