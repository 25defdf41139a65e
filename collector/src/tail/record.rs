//! The unit of log data between tail and ship: [`LogRecord`]s, stored compactly in
//! [`LogRecords`].
//!
//! # Why records are ranges, not `Bytes`
//! A record used to hold its time and message as two [`Bytes`] slices of the read buffer.
//! Each slice costs an atomic reference-count increment when it is made and a decrement when
//! it is dropped: four atomic operations per line, about 40% of the decode path of a common
//! json-file line. [`LogRecords`] instead holds each buffer once (one reference per read of
//! 256 KiB) and each record as byte ranges into those buffers, so a line costs no atomic
//! operation and no allocation. Bytes that had to be rewritten (escapes decoded, partial lines
//! joined) go to arenas owned by the same [`LogRecords`]: plain buffers, taken from the
//! tailer's [`BufferPool`] when it has one and given back when the records are dropped, so
//! an escape-heavy file does not allocate, zero and page-fault fresh memory for every batch.
//!
//! ```
//! use collector::tail::{LogRecord, LogRecords, StdStream};
//!
//! let mut records = LogRecords::new();
//! records.push_copy(LogRecord {
//!     time: b"2024-05-01T12:34:56.123456789Z",
//!     stream: Some(StdStream::Stdout),
//!     message: b"hello",
//!     split: false,
//! });
//! for record in records.iter() {
//!     assert_eq!(record.message, b"hello");
//! }
//! ```

use std::sync::Arc;

use bytes::Bytes;

use super::budget::Share;
use super::framing::BufferPool;

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

/// One parsed log line, borrowed from the [`LogRecords`] that holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogRecord<'a> {
    /// RFC 3339 time with nanoseconds, as the runtime wrote it (or the read time for plain
    /// files, which carry none).
    pub time: &'a [u8],
    /// The output stream, for container logs; `None` for declared files.
    pub stream: Option<StdStream>,
    /// The line without its trailing newline.
    pub message: &'a [u8],
    /// True when this record is a piece of a line longer than `max_line_bytes`, cut there;
    /// the next record of the same stream continues it.
    pub split: bool,
}

/// The longest chunk (and so the longest record field) [`LogRecords`] addresses: ranges are
/// `u32` to keep a record at 28 bytes. The decoders and the framer clamp `max_line_bytes`
/// to this, far above any sensible setting.
pub const MAX_CHUNK_BYTES: usize = 1 << 30;

/// Arenas not from a pool are allocated in pieces of at least this size, so decoded lines
/// share allocations.
const ARENA_BYTES: usize = 64 * 1024;

/// The high bit of [`Span::chunk`] marks an arena index rather than a shared chunk index.
const ARENA_BIT: u32 = 1 << 31;

/// Where a field's bytes are: a range of one shared chunk or one arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    /// Index into `chunks`, or into `arenas` with [`ARENA_BIT`] set.
    chunk: u32,
    /// First byte.
    start: u32,
    /// Length.
    len: u32,
}

impl Span {
    /// The empty field.
    #[cfg(test)]
    pub(crate) const EMPTY: Span = Span {
        chunk: ARENA_BIT,
        start: 0,
        len: 0,
    };

    /// Its length in bytes.
    pub(crate) fn len(self) -> usize {
        self.len as usize
    }
}

/// One stored record: its fields as ranges.
#[derive(Clone, Copy, Debug)]
struct Entry {
    /// The time field.
    time: Span,
    /// The message.
    message: Span,
    /// See [`LogRecord::stream`].
    stream: Option<StdStream>,
    /// See [`LogRecord::split`].
    split: bool,
}

/// A buffer records' bytes are written to.
#[derive(Debug)]
struct Arena {
    /// Initialised in full (its length is its size), so writing needs no zeroing. Never
    /// grows: bytes written never move.
    buf: Vec<u8>,
    /// How much of it is written.
    used: usize,
    /// Whether it goes back to the pool.
    pooled: bool,
}

/// The records of one batch, in file order, and the buffers their bytes live in.
///
/// Build it with the decoders ([`Decoder::decode`](super::format::Decoder::decode)) or
/// [`push_copy`](Self::push_copy); read it with [`iter`](Self::iter).
#[derive(Debug, Default)]
pub struct LogRecords {
    /// The records.
    entries: Vec<Entry>,
    /// Read buffers (and other shared bytes) records point into; one reference each.
    chunks: Vec<Bytes>,
    /// Bytes written for these records: decoded escapes, joined partial lines.
    arenas: Vec<Arena>,
    /// Where arenas come from and go back to, if anywhere.
    pool: Option<Arc<BufferPool>>,
    /// The share of the sources' memory budget these bytes hold (`budget.rs`), given back
    /// with them.
    share: Option<Share>,
}

/// A copy whose arenas are its own (not pooled).
impl Clone for LogRecords {
    fn clone(&self) -> Self {
        Self {
            entries: self.entries.clone(),
            chunks: self.chunks.clone(),
            arenas: self
                .arenas
                .iter()
                .map(|a| Arena {
                    buf: a.buf.clone(),
                    used: a.used,
                    pooled: false,
                })
                .collect(),
            pool: None,
            share: None,
        }
    }
}

/// Gives pooled arenas back.
impl Drop for LogRecords {
    fn drop(&mut self) {
        self.release_arenas();
    }
}

/// Equal when they hold equal records, wherever the bytes are.
impl PartialEq for LogRecords {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for LogRecords {}

impl LogRecords {
    /// No records.
    pub fn new() -> Self {
        Self::default()
    }

    /// No records, with room for `records` of them before the index reallocates.
    pub fn with_capacity(records: usize) -> Self {
        Self {
            entries: Vec::with_capacity(records),
            chunks: Vec::new(),
            arenas: Vec::new(),
            pool: None,
            share: None,
        }
    }

    /// No records; arenas come from `pool` (when a write fits in one of its buffers).
    pub fn with_pool(records: usize, pool: Arc<BufferPool>) -> Self {
        Self {
            entries: Vec::with_capacity(records),
            chunks: Vec::new(),
            arenas: Vec::new(),
            pool: Some(pool),
            share: None,
        }
    }

    /// When empty, frees the room kept for the next batch (a quiet source needs none).
    pub fn release_idle_memory(&mut self) {
        if self.entries.is_empty() {
            self.entries = Vec::new();
            self.chunks = Vec::new();
            self.release_arenas();
            self.share = None;
        }
    }

    /// Bytes of buffers these records hold: the reads they point into and what was written
    /// into arenas (an arena's untouched tail costs no memory: it is mapped lazily).
    pub fn held_bytes(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum::<usize>()
            + self.arenas.iter().map(|a| a.used).sum::<usize>()
    }

    /// Keeps `share` until these records are cleared or dropped, cut down to what they
    /// hold.
    pub fn hold(&mut self, mut share: Share) {
        if let Some(held) = self.share.take() {
            share.merge(held);
        }
        share.shrink_to(self.held_bytes());
        self.share = Some(share);
    }

    /// Gives pooled arenas back and forgets every arena.
    fn release_arenas(&mut self) {
        for arena in self.arenas.drain(..) {
            if arena.pooled
                && let Some(pool) = &self.pool
            {
                pool.put(arena.buf);
            }
        }
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The `i`-th record.
    pub fn get(&self, i: usize) -> Option<LogRecord<'_>> {
        self.entries.get(i).map(|e| self.view(e))
    }

    /// The records in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = LogRecord<'_>> + '_ {
        self.entries.iter().map(|e| self.view(e))
    }

    /// Total bytes of message text.
    pub fn message_bytes(&self) -> usize {
        self.entries.iter().map(|e| e.message.len()).sum()
    }

    /// Removes every record and releases the buffers they held.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.chunks.clear();
        self.release_arenas();
        self.share = None;
    }

    /// Appends a copy of `record` (its bytes go to an arena).
    pub fn push_copy(&mut self, record: LogRecord<'_>) {
        let time = self.copy(record.time);
        let message = self.copy(record.message);
        self.push(time, message, record.stream, record.split);
    }

    /// Appends a record whose fields were placed with [`shared`](Self::shared),
    /// [`copy`](Self::copy) or [`write_with`](Self::write_with).
    #[inline]
    pub(crate) fn push(
        &mut self,
        time: Span,
        message: Span,
        stream: Option<StdStream>,
        split: bool,
    ) {
        self.entries.push(Entry {
            time,
            message,
            stream,
            split,
        });
    }

    /// The span of `part` inside `chunk`, keeping one reference to `chunk` for all the
    /// records that point into it. Falls back to a copy when `part` is not inside `chunk`.
    #[inline]
    pub(crate) fn shared(&mut self, chunk: &Bytes, part: &[u8]) -> Span {
        let base = chunk.as_ptr() as usize;
        let at = (part.as_ptr() as usize).wrapping_sub(base);
        if at > chunk.len() || part.len() > chunk.len() - at || chunk.len() > MAX_CHUNK_BYTES {
            return self.copy(part);
        }
        // Reads alternate between at most a few chunks per batch (the read buffer, the read
        // time of plain files): look from the newest.
        let found = self
            .chunks
            .iter()
            .rposition(|c| c.as_ptr() as usize == base && c.len() == chunk.len());
        let index = match found {
            Some(i) => i,
            None => {
                self.chunks.push(chunk.clone());
                self.chunks.len() - 1
            }
        };
        Span {
            chunk: u32::try_from(index).expect("a batch holds far fewer than 2^31 chunks"),
            start: at as u32,
            len: part.len() as u32,
        }
    }

    /// Copies `bytes` into an arena.
    pub(crate) fn copy(&mut self, bytes: &[u8]) -> Span {
        self.write_with(bytes.len(), |dst| {
            dst.copy_from_slice(bytes);
            Some(bytes.len())
        })
        .expect("the closure always succeeds")
    }

    /// Lets `write` fill up to `max` bytes of an arena (which holds whatever was there
    /// before: old bytes, not uninitialised memory) and keeps the length it returns, or
    /// nothing when it returns `None`.
    ///
    /// # Panics
    /// When `write` returns more than `max`: that is a bug.
    #[inline]
    pub(crate) fn write_with(
        &mut self,
        max: usize,
        write: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> Option<Span> {
        assert!(
            max <= MAX_CHUNK_BYTES,
            "a field of {max} bytes: the decoders bound fields far below; this is a bug"
        );
        let fits = self
            .arenas
            .last()
            .is_some_and(|a| a.buf.len() - a.used >= max);
        if !fits {
            let arena = match &self.pool {
                Some(pool) if max <= pool.buffer_size() => Arena {
                    buf: pool.take(),
                    used: 0,
                    pooled: true,
                },
                _ => Arena {
                    buf: vec![0; max.max(ARENA_BYTES)],
                    used: 0,
                    pooled: false,
                },
            };
            self.arenas.push(arena);
        }
        let index = self.arenas.len() - 1;
        let arena = &mut self.arenas[index];
        let start = arena.used;
        let len = write(&mut arena.buf[start..start + max])?;
        assert!(len <= max, "wrote {len} bytes into {max}: this is a bug");
        arena.used += len;
        Some(Span {
            chunk: ARENA_BIT | u32::try_from(index).expect("fewer than 2^31 arenas"),
            start: start as u32,
            len: len as u32,
        })
    }

    /// Takes back the bytes of `span`, which must be the last thing written to its arena
    /// (a decoded message that went to a joiner instead of a record).
    pub(crate) fn unwrite(&mut self, span: Span) {
        if span.chunk & ARENA_BIT == 0 {
            return;
        }
        if let Some(arena) = self.arenas.get_mut((span.chunk & !ARENA_BIT) as usize)
            && arena.used == span.start as usize + span.len as usize
        {
            arena.used = span.start as usize;
        }
    }

    /// The bytes of `span`.
    #[inline]
    pub(crate) fn bytes(&self, span: Span) -> &[u8] {
        let range = span.start as usize..span.start as usize + span.len as usize;
        if span.len == 0 {
            return &[];
        }
        if span.chunk & ARENA_BIT != 0 {
            &self.arenas[(span.chunk & !ARENA_BIT) as usize].buf[range]
        } else {
            &self.chunks[span.chunk as usize][range]
        }
    }

    #[inline]
    fn view(&self, e: &Entry) -> LogRecord<'_> {
        LogRecord {
            time: self.bytes(e.time),
            stream: e.stream,
            message: self.bytes(e.message),
            split: e.split,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_spans_keep_one_reference_per_chunk() {
        let chunk = Bytes::from_static(b"2024 one\n2024 two\n");
        let other = Bytes::from(b"now".to_vec());
        let mut records = LogRecords::new();
        for (t, m) in [(0..4, 5..8), (9..13, 14..17)] {
            let time = records.shared(&chunk, &chunk[t]);
            let message = records.shared(&chunk, &chunk[m]);
            records.push(time, message, Some(StdStream::Stdout), false);
            let time = records.shared(&other, &other);
            let message = records.shared(&chunk, &chunk[..0]);
            records.push(time, message, None, true);
        }
        assert_eq!(records.chunks.len(), 2);
        let got: Vec<_> = records.iter().map(|r| (r.time, r.message)).collect();
        let want: [(&[u8], &[u8]); 4] = [
            (b"2024", b"one"),
            (b"now", b""),
            (b"2024", b"two"),
            (b"now", b""),
        ];
        assert_eq!(got, want);
        assert_eq!(records.message_bytes(), 6);
    }

    #[test]
    fn parts_outside_the_chunk_are_copied() {
        let chunk = Bytes::from_static(b"abc");
        let mut records = LogRecords::new();
        let span = records.shared(&chunk, b"elsewhere");
        records.push(span, Span::EMPTY, None, false);
        assert!(records.chunks.is_empty());
        assert_eq!(records.get(0).unwrap().time, b"elsewhere");
        assert_eq!(records.get(0).unwrap().message, b"");
    }

    #[test]
    fn arenas_never_move_written_bytes() {
        let mut records = LogRecords::new();
        let big = vec![b'x'; ARENA_BYTES - 10];
        for i in 0..5u8 {
            records.push_copy(LogRecord {
                time: &[i],
                stream: None,
                message: &big[..big.len() - usize::from(i)],
                split: false,
            });
        }
        assert!(records.arenas.len() > 1);
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.time, [i as u8]);
            assert_eq!(r.message.len(), big.len() - i);
        }
        let failed = records.write_with(8, |_| None);
        assert_eq!(failed, None);
        assert_eq!(records.len(), 5);
        records.clear();
        assert!(records.is_empty() && records.chunks.is_empty() && records.arenas.is_empty());
    }

    #[test]
    fn pooled_arenas_go_back_when_records_are_dropped() {
        let pool = BufferPool::new(1024);
        let mut records = LogRecords::with_pool(4, pool.clone());
        for _ in 0..3 {
            records.push_copy(LogRecord {
                time: b"t",
                stream: None,
                message: &[b'm'; 400],
                split: false,
            });
        }
        // 3 x 401 bytes: two pooled arenas; a field larger than a pool buffer gets its own.
        records.push_copy(LogRecord {
            time: b"t",
            stream: None,
            message: &[b'x'; 2000],
            split: false,
        });
        assert_eq!(pool.outstanding(), 2);
        let copy = records.clone();
        assert_eq!(copy, records);
        records.clear();
        assert_eq!(pool.outstanding(), 0);
        records.push_copy(copy.get(0).unwrap());
        assert_eq!(pool.outstanding(), 1);
        drop(records);
        assert_eq!(pool.outstanding(), 0);
        assert_eq!(pool.free_buffers(), 2);
        assert_eq!(copy.get(3).unwrap().message, [b'x'; 2000]);
    }
}
