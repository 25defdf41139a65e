//! Newline framing of a log file's bytes into zero-copy line frames with exact file offsets.
//!
//! [`LineFramer`] reads into a buffer, freezes it into a [`Bytes`] chunk, and hands out each
//! complete line as a [`Frame`]: a borrowed slice of that chunk. A line costs a `memchr`, no
//! copy, no allocation and no reference-count operation; the records made from it keep one
//! reference to the whole chunk ([`LogRecords`](super::record::LogRecords)).
//!
//! Buffers come from a [`BufferPool`]: a chunk's buffer goes back to its pool when the last
//! batch pointing into it is dropped, so a busy file reuses a few warm buffers instead of
//! allocating and zeroing 256 KiB per read (page faults and `memset` were about 8% of the
//! decode path). A read much smaller than the pool's buffers (a quiet file) gets a buffer of
//! its own size instead, so a thousand quiet files hold a thousand small buffers, not a
//! thousand large ones. The pool also counts the buffers out, which lets the tailer bound the
//! memory a fast file holds in flight ([`BufferPool::wait_below`]).
//!
//! The bytes after the last `'\n'` of a read (a line not yet complete) are copied to the front
//! of the next read's buffer: about half a line per read.
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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::Notify;

use super::record::MAX_CHUNK_BYTES;

/// The default size of one `read()`: large enough that the syscall cost per byte is noise
/// (about 2 000 lines of a typical container log), small enough to stay in L2 cache while
/// it is framed and decoded.
pub const DEFAULT_READ_SIZE: usize = 256 * 1024;

/// The smallest read: asking for less saves nothing.
const MIN_READ: usize = 4096;

/// One line of a file (or a piece of a line longer than the limit), without its `'\n'`,
/// borrowed from the framer's current chunk.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    /// The buffer the line lies in. Decoders keep a reference to it (one per buffer, not
    /// per line) instead of copying the line.
    pub chunk: &'a Bytes,
    /// The line's bytes without the trailing `'\n'`: a slice of `chunk`.
    pub bytes: &'a [u8],
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

impl<'a> Frame<'a> {
    /// A frame of the whole of `chunk`.
    pub fn whole(chunk: &'a Bytes, start_offset: u64, end_offset: u64, truncated: bool) -> Self {
        Self {
            chunk,
            bytes: chunk,
            start_offset,
            end_offset,
            truncated,
        }
    }
}

/// Read buffers of one size, reused once every chunk made from them is dropped.
///
/// It keeps every returned buffer until [`shrink`](Self::shrink), and counts the buffers out
/// (in chunks still referenced by batches in flight, or being filled).
#[derive(Debug)]
pub struct BufferPool {
    /// Size of every buffer.
    size: usize,
    /// Buffers returned and not yet reused, all of `size` bytes, initialised.
    free: Mutex<Vec<Vec<u8>>>,
    /// Buffers taken and not yet returned.
    out: AtomicUsize,
    /// Whether returned buffers are kept for reuse: false once the source went quiet, so a
    /// buffer that comes back after that (its batch was still on the way to the sinks) is
    /// freed. Otherwise every quiet source kept one read buffer for good: 1,000 containers
    /// that had each written 100 kB held 100 MB (`cargo xtask bench --scenarios many`).
    keep: std::sync::atomic::AtomicBool,
    /// Signalled when a buffer comes back.
    returned: Notify,
}

impl BufferPool {
    /// An empty pool of buffers of `size` bytes (at least 1).
    pub fn new(size: usize) -> Arc<Self> {
        Arc::new(Self {
            size: size.max(1),
            free: Mutex::new(Vec::new()),
            out: AtomicUsize::new(0),
            keep: std::sync::atomic::AtomicBool::new(true),
            returned: Notify::new(),
        })
    }

    /// Size of the buffers.
    pub fn buffer_size(&self) -> usize {
        self.size
    }

    /// Buffers out: held by chunks that are still referenced, or being filled.
    pub fn outstanding(&self) -> usize {
        self.out.load(Ordering::Acquire)
    }

    /// Waits until fewer than `limit` buffers are out. The caller must not hold chunks it
    /// waits for: only buffers held elsewhere (batches on their way to the sinks) come back.
    pub async fn wait_below(&self, limit: usize) {
        loop {
            let returned = self.returned.notified();
            if self.outstanding() < limit {
                return;
            }
            returned.await;
        }
    }

    /// Frees the buffers kept for reuse (a quiet file needs none).
    pub fn shrink(&self) {
        self.keep.store(false, Ordering::Release);
        self.lock_free().clear();
    }

    /// Buffers kept for reuse.
    pub fn free_buffers(&self) -> usize {
        self.lock_free().len()
    }

    /// A buffer of `size` initialised bytes: a returned one, or a new zeroed one (`calloc`,
    /// whose fresh pages cost nothing until written).
    pub(crate) fn take(&self) -> Vec<u8> {
        self.out.fetch_add(1, Ordering::AcqRel);
        self.keep.store(true, Ordering::Release);
        self.lock_free().pop().unwrap_or_else(|| vec![0; self.size])
    }

    /// Takes back a buffer from [`take`](Self::take).
    pub(crate) fn put(&self, buf: Vec<u8>) {
        if buf.len() == self.size && self.keep.load(Ordering::Acquire) {
            self.lock_free().push(buf);
        }
        self.out.fetch_sub(1, Ordering::AcqRel);
        self.returned.notify_one();
    }

    fn lock_free(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        // A panic while holding this lock leaves a plain Vec of buffers: still valid.
        self.free
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The owner of a pooled buffer inside a [`Bytes`]: gives the buffer back on drop.
struct Pooled {
    /// The whole buffer.
    buf: Vec<u8>,
    /// How much of it the chunk shows.
    len: usize,
    /// Where it goes back.
    pool: Arc<BufferPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.put(std::mem::take(&mut self.buf));
    }
}

/// A buffer being filled: from the pool or of its own size.
struct Fill {
    buf: Vec<u8>,
    pooled: bool,
}

/// Splits the bytes of one file into [`Frame`]s, across reads of any size.
///
/// Call [`read_from`](Self::read_from), then [`next_frame`](Self::next_frame) until it returns
/// `None`, and repeat. Reading again without draining the frames first copies the frames not
/// yet returned into the next buffer.
#[derive(Debug)]
pub struct LineFramer {
    /// The last buffer read, frozen: `chunk[pos..lines_end]` are complete lines not yet
    /// returned, `chunk[lines_end..]` the start of a line whose `'\n'` is not read yet.
    chunk: Bytes,
    /// Start of the next frame in `chunk`.
    pos: usize,
    /// End of the complete lines in `chunk`: just after its last `'\n'` (or `pos`).
    lines_end: usize,
    /// File offset of `chunk[pos]`: the offset after the last frame returned.
    offset: u64,
    /// Most bytes one read asks for.
    read_size: usize,
    /// Longest frame returned; longer lines come out in pieces of this size.
    max_line_bytes: usize,
    /// Where full-size read buffers come from.
    pool: Arc<BufferPool>,
}

impl LineFramer {
    /// A framer for a file whose next byte to read is at `start_offset`, with a pool of its
    /// own.
    ///
    /// `read_size` is raised to at least 1 and `max_line_bytes` kept between 1 and
    /// [`MAX_CHUNK_BYTES`] minus `read_size`.
    pub fn new(start_offset: u64, read_size: usize, max_line_bytes: usize) -> Self {
        Self::with_pool(start_offset, BufferPool::new(read_size), max_line_bytes)
    }

    /// Like [`new`](Self::new), reading `pool.buffer_size()` bytes at most per read, with
    /// buffers from `pool` (shared by the framers of one source, so a rotation keeps the warm
    /// buffers).
    pub fn with_pool(start_offset: u64, pool: Arc<BufferPool>, max_line_bytes: usize) -> Self {
        let read_size = pool.buffer_size().min(MAX_CHUNK_BYTES / 2);
        Self {
            chunk: Bytes::new(),
            pos: 0,
            lines_end: 0,
            offset: start_offset,
            read_size,
            max_line_bytes: max_line_bytes.clamp(1, MAX_CHUNK_BYTES - read_size),
            pool,
        }
    }

    /// Reads once from `r`, with a single `read()` call of at most `read_size` bytes.
    ///
    /// Returns the number of bytes read; 0 means end of file (for now: a tailed file may grow).
    ///
    /// # Errors
    /// Whatever `r.read()` returns, including `Interrupted`, which the caller may retry.
    pub fn read_from(&mut self, r: &mut impl Read) -> std::io::Result<usize> {
        self.read_at_most(r, usize::MAX)
    }

    /// Like [`read_from`](Self::read_from), but sizes the buffer for `expected` bytes (what
    /// `fstat` says is left to read), so a quiet file does not take a full-size buffer for a
    /// few lines. More may arrive meanwhile; the next read gets it.
    ///
    /// # Errors
    /// Whatever `r.read()` returns.
    pub fn read_at_most(&mut self, r: &mut impl Read, expected: usize) -> std::io::Result<usize> {
        let carried = self.chunk.len() - self.pos;
        if carried == 0 {
            // Nothing to carry over: let go of the old buffer before taking a new one.
            self.chunk = Bytes::new();
            self.pos = 0;
            self.lines_end = 0;
        }
        let mut want = expected.clamp(MIN_READ.min(self.read_size), self.read_size);
        // A read of about a full buffer takes a pooled one (the carried bytes are usually
        // half a line, so the read shrinks by that much); a small read or a long carried
        // line gets a buffer of its own size.
        let size = self.pool.buffer_size();
        let mut fill = if want * 2 >= self.read_size && carried * 2 <= size {
            want = want.min(size - carried);
            Fill {
                buf: self.pool.take(),
                pooled: true,
            }
        } else {
            Fill {
                buf: vec![0; carried + want],
                pooled: false,
            }
        };
        let result = r.read(&mut fill.buf[carried..carried + want]);
        let n = match result {
            Ok(n) if n > 0 => n,
            other => {
                self.give_back(fill);
                return other;
            }
        };
        // A `Read` impl that claims more than it was given is broken; trusting it would expose
        // stale bytes as file content.
        assert!(
            n <= want,
            "Read::read returned {n} for a buffer of {want} bytes"
        );
        fill.buf[..carried].copy_from_slice(&self.chunk[self.pos..]);
        let filled = carried + n;
        // What was carried holds no '\n' after the old `lines_end`, so only the new bytes are
        // searched.
        let lines_end = match memchr::memrchr(b'\n', &fill.buf[carried..filled]) {
            Some(at) => carried + at + 1,
            None => self.lines_end - self.pos,
        };
        self.chunk = self.freeze(fill, filled);
        self.pos = 0;
        self.lines_end = lines_end;
        Ok(n)
    }

    /// Returns an unused buffer to where it came from.
    fn give_back(&self, fill: Fill) {
        if fill.pooled {
            self.pool.put(fill.buf);
        }
    }

    /// Makes a chunk of `fill.buf[..len]`; a pooled buffer goes back to the pool when the
    /// chunk and every slice of it are dropped.
    fn freeze(&self, fill: Fill, len: usize) -> Bytes {
        if fill.pooled {
            Bytes::from_owner(Pooled {
                buf: fill.buf,
                len,
                pool: self.pool.clone(),
            })
        } else {
            let mut buf = fill.buf;
            buf.truncate(len);
            Bytes::from(buf)
        }
    }

    /// The next complete line, or piece of an over-long line, if one is buffered.
    ///
    /// Returns `None` when the buffered bytes after the last frame hold neither a `'\n'` nor
    /// more than `max_line_bytes` bytes: read more, or call
    /// [`take_partial`](Self::take_partial) if the file is finished for good.
    #[inline]
    pub fn next_frame(&mut self) -> Option<Frame<'_>> {
        let start = self.pos;
        let lines = self.lines_end - start;
        if lines == 0 {
            // No complete line: only a line already longer than the limit comes out (a piece).
            if self.chunk.len() - start <= self.max_line_bytes {
                return None;
            }
            return Some(self.cut(self.max_line_bytes, 0, true));
        }
        let limit = lines.min(self.max_line_bytes + 1);
        match memchr::memchr(b'\n', &self.chunk[start..start + limit]) {
            Some(len) => Some(self.cut(len, 1, false)),
            // `chunk[..lines_end]` ends with '\n', so this line goes on past `max_line_bytes`.
            None => Some(self.cut(self.max_line_bytes, 0, true)),
        }
    }

    /// Returns the next `len` bytes as a frame and skips `skip` more (the newline).
    #[inline]
    fn cut(&mut self, len: usize, skip: usize, truncated: bool) -> Frame<'_> {
        let start = self.pos;
        let start_offset = self.offset;
        self.pos += len + skip;
        self.lines_end = self.lines_end.max(self.pos);
        self.offset += (len + skip) as u64;
        Frame {
            chunk: &self.chunk,
            bytes: &self.chunk[start..start + len],
            start_offset,
            end_offset: self.offset,
            truncated,
        }
    }

    /// Like [`next_frame`](Self::next_frame), but once no complete line is left, returns the
    /// bytes after the last `'\n'` as a final frame without newline.
    ///
    /// Use it when the file is finished for good (its writer is gone and it was read to the
    /// end), so a last line without newline is delivered rather than held forever.
    /// `while let Some(frame) = framer.take_partial()` drains everything buffered.
    pub fn take_partial(&mut self) -> Option<Frame<'_>> {
        let rest = self.chunk.len() - self.pos;
        if self.lines_end > self.pos || rest > self.max_line_bytes {
            return self.next_frame();
        }
        if rest == 0 {
            return None;
        }
        // `next_frame` would return None: at most `max_line_bytes` and no '\n' are left.
        Some(self.cut(rest, 0, false))
    }

    /// Lets go of what a quiet file does not need: the pool's spare buffers, and a large
    /// buffer held only for the few bytes of an unfinished line (they are copied to a buffer
    /// of their own size).
    pub fn release_idle_memory(&mut self) {
        let rest = self.chunk.len() - self.pos;
        if rest == 0 {
            self.chunk = Bytes::new();
            self.pos = 0;
            self.lines_end = 0;
        } else if rest * 4 < self.chunk.len() {
            let lines = self.lines_end - self.pos;
            self.chunk = Bytes::copy_from_slice(&self.chunk[self.pos..]);
            self.pos = 0;
            self.lines_end = lines;
        }
        // After the chunk: its buffer may just have come back.
        self.pool.shrink();
    }

    /// Bytes read but not yet returned in a frame. After `next_frame` returned `None`, these
    /// are the bytes after the last complete line.
    pub fn pending_bytes(&self) -> usize {
        self.chunk.len() - self.pos
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

/// A frame that owns its bytes, for tests of the decoders.
#[cfg(test)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OwnedFrame {
    /// The frame's bytes.
    pub(crate) bytes: Bytes,
    /// See [`Frame::start_offset`].
    pub(crate) start_offset: u64,
    /// See [`Frame::end_offset`].
    pub(crate) end_offset: u64,
    /// See [`Frame::truncated`].
    pub(crate) truncated: bool,
}

#[cfg(test)]
impl OwnedFrame {
    /// A copy of `line`, a whole line (with newline) unless `truncated`.
    pub(crate) fn new(line: &[u8], start_offset: u64, truncated: bool) -> Self {
        Self {
            bytes: Bytes::copy_from_slice(line),
            start_offset,
            end_offset: start_offset + line.len() as u64 + u64::from(!truncated),
            truncated,
        }
    }

    /// A copy of `frame`.
    pub(crate) fn of(frame: &Frame<'_>) -> Self {
        Self {
            bytes: Bytes::copy_from_slice(frame.bytes),
            start_offset: frame.start_offset,
            end_offset: frame.end_offset,
            truncated: frame.truncated,
        }
    }

    /// The frame, borrowed.
    pub(crate) fn frame(&self) -> Frame<'_> {
        Frame::whole(
            &self.bytes,
            self.start_offset,
            self.end_offset,
            self.truncated,
        )
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
    ) -> Vec<OwnedFrame> {
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
                frames.push(OwnedFrame::of(&f));
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
            frames.push(OwnedFrame::of(&f));
        }
        assert_eq!(framer.pending_bytes(), 0);
        assert_eq!(framer.offset_committed(), start + data.len() as u64);
        frames
    }

    /// The frames a correct framer returns, computed the obvious way.
    fn model(data: &[u8], start: u64, max: usize) -> Vec<OwnedFrame> {
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
                frames.push(OwnedFrame {
                    bytes: Bytes::copy_from_slice(&line[..max]),
                    start_offset: offset,
                    end_offset: offset + max as u64,
                    truncated: true,
                });
                offset += max as u64;
                line = &line[max..];
            }
            let end = offset + line.len() as u64 + u64::from(has_newline);
            frames.push(OwnedFrame {
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
            let want: Vec<OwnedFrame> = case
                .want
                .iter()
                .map(|&(b, s, e, t)| OwnedFrame {
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
        assert!(framer.next_frame().is_none());
        assert_eq!(framer.pending_bytes(), 3);
        framer.read_from(&mut &b"d\nef"[..]).unwrap();
        let frame = framer.next_frame().unwrap();
        assert_eq!(frame.bytes, b"abcd");
        assert_eq!((frame.start_offset, frame.end_offset), (0, 5));
        assert!(framer.next_frame().is_none());
        assert_eq!(framer.offset_committed(), 5);
        assert_eq!(framer.pending_bytes(), 2);
        assert_eq!(framer.read_offset(), 7);
    }

    #[test]
    fn pooled_buffers_come_back_when_chunks_are_dropped() {
        let line = b"0123456789abcde\n";
        let data = line.repeat(64);
        let mut reader = &data[..];
        let pool = BufferPool::new(64);
        let mut framer = LineFramer::with_pool(0, pool.clone(), 100);
        framer.read_from(&mut reader).unwrap();
        let held = framer.next_frame().unwrap().chunk.clone();
        while framer.next_frame().is_some() {}
        assert_eq!(pool.outstanding(), 1);
        // While `held` is alive, later reads must not overwrite it.
        for _ in 0..4 {
            framer.read_from(&mut reader).unwrap();
            while framer.next_frame().is_some() {}
        }
        assert_eq!(&held[..16], line);
        assert_eq!(
            pool.outstanding(),
            2,
            "the held chunk and the framer's current one"
        );
        drop(held);
        assert_eq!(pool.outstanding(), 1);
        let free = pool.free_buffers();
        assert!(free >= 1);
        // The framer lets go of its drained chunk before it takes a buffer: the same one.
        framer.read_from(&mut reader).unwrap();
        assert_eq!(pool.outstanding(), 1);
        assert_eq!(pool.free_buffers(), free, "a returned buffer is reused");
        framer.release_idle_memory();
        assert_eq!(pool.free_buffers(), 0);
    }

    #[test]
    fn a_buffer_returned_after_the_source_went_quiet_is_freed() {
        let pool = BufferPool::new(64);
        let in_flight = pool.take();
        // The source goes quiet while a batch still holds `in_flight`...
        pool.shrink();
        // ...which comes back once the sinks are done with it: not kept.
        pool.put(in_flight);
        assert_eq!((pool.free_buffers(), pool.outstanding()), (0, 0));
        // Reading again makes the pool keep what comes back.
        let b = pool.take();
        pool.put(b);
        assert_eq!(pool.free_buffers(), 1);
    }

    #[test]
    fn small_reads_do_not_take_pooled_buffers() {
        let pool = BufferPool::new(1 << 20);
        let mut framer = LineFramer::with_pool(0, pool.clone(), 100);
        let n = framer.read_at_most(&mut &b"a\nb"[..], 3).unwrap();
        assert_eq!(n, 3);
        assert_eq!(pool.outstanding(), 0);
        assert_eq!(framer.next_frame().unwrap().bytes, b"a");
        assert!(framer.next_frame().is_none());
        framer.release_idle_memory();
        assert_eq!(framer.take_partial().unwrap().bytes, b"b");
        assert_eq!(framer.read_offset(), 3);
    }

    #[tokio::test]
    async fn wait_below_returns_when_buffers_come_back() {
        let pool = BufferPool::new(16);
        let mut framer = LineFramer::with_pool(0, pool.clone(), 100);
        framer.read_from(&mut &b"x\n"[..]).unwrap();
        let held = framer.next_frame().unwrap().chunk.clone();
        framer.release_idle_memory();
        assert_eq!(pool.outstanding(), 1);
        let waiter = tokio::spawn({
            let pool = pool.clone();
            async move { pool.wait_below(1).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(held);
        waiter.await.unwrap();
        pool.wait_below(1).await;
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
