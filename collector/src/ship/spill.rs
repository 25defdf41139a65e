//! A sink's disk buffer: where the batches of a sink that is down (or slow) go once its
//! in-memory queue backs up, so the other sinks go on and memory stays bounded.
//!
//! A spilled batch counts as taken by that sink (the shipper may move the checkpoint once
//! every other sink has it too), so the spill is synced before it says so, and a restart
//! replays it: the batches are sent, oldest first, from the read cursor, which moves only
//! after the sink took them (at least once). The spill is bounded by `max_bytes`; when full,
//! nothing more is spilled and the sink's queue backs up again, which stops the shipper:
//! past that bound the log files are the buffer, as without a spill.
//!
//! Layout under the sink's directory: `seg-<n>` files of length-prefixed batches (a new one
//! every [`SEGMENT_BYTES`]), and `cursor` (`<segment> <offset>`), replaced atomically. A
//! segment the cursor has passed is deleted. A batch cut short at the end of the last
//! segment (a crash mid-write, before the sync that acknowledged it) is ignored and cut off.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::batch::{Batch, SourceInfo, SourceKind};
use crate::identify::{ContainerId, ContainerIdentity};
use crate::state::{Checkpoint, CheckpointUpdate, SourceCounters};
use crate::tail::fingerprint::Fingerprint;
use crate::tail::{LogRecord, LogRecords, StdStream};

/// A new segment past this size.
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// Errors of the disk buffer.
#[derive(Debug, thiserror::Error)]
pub enum SpillError {
    /// A file of the buffer could not be used.
    #[error("sink buffer: cannot {operation} {path}")]
    Io {
        /// What was done.
        operation: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A stored batch does not decode (the file was damaged).
    #[error("sink buffer: a batch in {path} does not decode: {detail}")]
    Corrupt {
        /// The segment.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

fn io_err(operation: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SpillError {
    let path = path.to_owned();
    move |source| SpillError::Io {
        operation,
        path,
        source,
    }
}

/// What a batch carries besides its records.
#[derive(Serialize, Deserialize)]
struct Header {
    key: String,
    container_id: String,
    /// `json`, `lifecycle`, `metrics`, or the declared file's path.
    kind: String,
    identity: ContainerIdentity,
    ack_path: String,
    dev: u64,
    ino: u64,
    head_len: u32,
    head_hash: u64,
    offset: u64,
    counters: [u64; 7],
    last: bool,
    records: u32,
}

/// Encodes a batch: `u32` header length, the header (JSON), then per record a flags byte
/// (stream 0/1/2, split 4), `u16` time length, time, `u32` message length, message.
fn encode(batch: &Batch, out: &mut Vec<u8>) {
    let kind = match &batch.source.kind {
        SourceKind::ContainerOutput => "json".to_owned(),
        SourceKind::Lifecycle => "lifecycle".to_owned(),
        SourceKind::Metrics => "metrics".to_owned(),
        SourceKind::DeclaredFile { container_path } => {
            format!("file:{}", container_path.display())
        }
    };
    let cp = &batch.ack.checkpoint;
    let c = &batch.ack.counters;
    let header = Header {
        key: batch.source.key.clone(),
        container_id: batch.source.container_id.to_string(),
        kind,
        identity: (*batch.identity).clone(),
        ack_path: cp.path.clone(),
        dev: cp.fingerprint.dev,
        ino: cp.fingerprint.ino,
        head_len: cp.fingerprint.head_len,
        head_hash: cp.fingerprint.head_hash,
        offset: cp.offset,
        counters: [
            c.lines,
            c.bytes,
            c.skipped,
            c.rotations,
            c.truncations,
            c.lost_bytes,
            c.lost_files,
        ],
        last: batch.last,
        records: batch.records.len() as u32,
    };
    let h = serde_json::to_vec(&header).unwrap_or_default();
    out.extend_from_slice(&(h.len() as u32).to_le_bytes());
    out.extend_from_slice(&h);
    for r in batch.records.iter() {
        let stream = match r.stream {
            None => 0u8,
            Some(StdStream::Stdout) => 1,
            Some(StdStream::Stderr) => 2,
        };
        out.push(stream | if r.split { 4 } else { 0 });
        let time = &r.time[..r.time.len().min(u16::MAX as usize)];
        out.extend_from_slice(&(time.len() as u16).to_le_bytes());
        out.extend_from_slice(time);
        out.extend_from_slice(&(r.message.len() as u32).to_le_bytes());
        out.extend_from_slice(r.message);
    }
}

/// Reads one batch; `Ok(None)` at a clean end or a batch cut short (a crash mid-write).
fn decode(r: &mut impl Read, path: &Path) -> Result<Option<(Batch, u64)>, SpillError> {
    let corrupt = |detail: String| SpillError::Corrupt {
        path: path.to_owned(),
        detail,
    };
    let mut read = 0u64;
    let mut take = |r: &mut dyn Read, n: usize| -> Option<Vec<u8>> {
        let mut buf = vec![0; n];
        r.read_exact(&mut buf).ok()?;
        read += n as u64;
        Some(buf)
    };
    let Some(len) = take(r, 4) else {
        return Ok(None);
    };
    let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
    let Some(h) = take(r, len) else {
        return Ok(None);
    };
    let h: Header = serde_json::from_slice(&h).map_err(|e| corrupt(e.to_string()))?;
    let mut records = LogRecords::with_capacity(h.records as usize);
    for _ in 0..h.records {
        let Some(flags) = take(r, 1) else {
            return Ok(None);
        };
        let Some(tl) = take(r, 2) else {
            return Ok(None);
        };
        let Some(time) = take(r, u16::from_le_bytes([tl[0], tl[1]]) as usize) else {
            return Ok(None);
        };
        let Some(ml) = take(r, 4) else {
            return Ok(None);
        };
        let Some(message) = take(r, u32::from_le_bytes([ml[0], ml[1], ml[2], ml[3]]) as usize)
        else {
            return Ok(None);
        };
        records.push_copy(LogRecord {
            time: &time,
            stream: match flags[0] & 3 {
                1 => Some(StdStream::Stdout),
                2 => Some(StdStream::Stderr),
                _ => None,
            },
            message: &message,
            split: flags[0] & 4 != 0,
        });
    }
    let container_id =
        ContainerId::parse(&h.container_id).ok_or_else(|| corrupt("container id".into()))?;
    let kind = match h.kind.as_str() {
        "json" => SourceKind::ContainerOutput,
        "lifecycle" => SourceKind::Lifecycle,
        "metrics" => SourceKind::Metrics,
        other => match other.strip_prefix("file:") {
            Some(p) => SourceKind::DeclaredFile {
                container_path: PathBuf::from(p),
            },
            None => return Err(corrupt(format!("source kind {other:?}"))),
        },
    };
    let c = h.counters;
    let batch = Batch {
        source: Arc::new(SourceInfo {
            key: h.key.clone(),
            container_id,
            kind,
        }),
        identity: Arc::new(h.identity),
        records,
        ack: CheckpointUpdate {
            source: h.key,
            container_id: h.container_id,
            checkpoint: Checkpoint {
                fingerprint: Fingerprint {
                    dev: h.dev,
                    ino: h.ino,
                    head_len: h.head_len,
                    head_hash: h.head_hash,
                },
                path: h.ack_path,
                offset: h.offset,
            },
            counters: SourceCounters {
                lines: c[0],
                bytes: c[1],
                skipped: c[2],
                rotations: c[3],
                truncations: c[4],
                lost_bytes: c[5],
                lost_files: c[6],
            },
        },
        last: h.last,
    };
    Ok(Some((batch, read)))
}

/// One sink's disk buffer (module docs).
#[derive(Debug)]
pub struct Spill {
    dir: PathBuf,
    max_bytes: u64,
    /// Segment numbers on disk, oldest first.
    segments: VecDeque<u64>,
    /// Where the next batch to send starts.
    cursor: (u64, u64),
    /// Bytes on disk not yet sent (from the cursor to the end).
    pending_bytes: u64,
    /// Batches not yet sent.
    pending: u64,
    /// Shared with the drain barrier and `/metrics`: batches waiting here.
    gauge: Arc<AtomicU64>,
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("seg-{n:010}"))
}

impl Spill {
    /// Opens (or creates) the buffer in `dir`, replaying what a previous run left: the
    /// batches after the cursor are pending.
    ///
    /// # Errors
    /// When the directory or a segment cannot be read.
    pub fn open(dir: PathBuf, max_bytes: u64, gauge: Arc<AtomicU64>) -> Result<Self, SpillError> {
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        let mut segments: Vec<u64> = fs::read_dir(&dir)
            .map_err(io_err("list", &dir))?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_prefix("seg-")?.parse().ok())
            .collect();
        segments.sort_unstable();
        let cursor = fs::read_to_string(dir.join("cursor"))
            .ok()
            .and_then(|t| {
                let (a, b) = t.trim().split_once(' ')?;
                Some((a.parse().ok()?, b.parse().ok()?))
            })
            .unwrap_or((segments.first().copied().unwrap_or(0), 0));
        let mut spill = Self {
            dir,
            max_bytes,
            segments: segments.into_iter().filter(|s| *s >= cursor.0).collect(),
            cursor,
            pending_bytes: 0,
            pending: 0,
            gauge,
        };
        // Count what is pending, and cut a torn batch off the last segment.
        let segs: Vec<u64> = spill.segments.iter().copied().collect();
        for (i, s) in segs.iter().enumerate() {
            let path = segment_path(&spill.dir, *s);
            let file = File::open(&path).map_err(io_err("open", &path))?;
            let mut r = BufReader::new(file);
            let start = if *s == spill.cursor.0 {
                spill.cursor.1
            } else {
                0
            };
            r.seek(SeekFrom::Start(start))
                .map_err(io_err("seek", &path))?;
            let mut at = start;
            while let Some((_, n)) = decode(&mut r, &path)? {
                at += n;
                spill.pending += 1;
                spill.pending_bytes += n;
            }
            if i + 1 == segs.len() {
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err("open", &path))?;
                f.set_len(at).map_err(io_err("truncate", &path))?;
            }
        }
        spill.gauge.store(spill.pending, Ordering::Relaxed);
        Ok(spill)
    }

    /// Nothing waits here.
    pub fn is_empty(&self) -> bool {
        self.pending == 0
    }

    /// Batches waiting here.
    pub fn len(&self) -> u64 {
        self.pending
    }

    /// Appends `batches` and syncs them, or appends nothing when they would pass the bound.
    /// `Ok(false)`: no room.
    ///
    /// # Errors
    /// When the segment cannot be written or synced (the disk is full): nothing counts as
    /// spilled then.
    pub fn push(&mut self, batches: &[Arc<Batch>]) -> Result<bool, SpillError> {
        let mut buf = Vec::new();
        for b in batches {
            encode(b, &mut buf);
        }
        if self.pending_bytes + buf.len() as u64 > self.max_bytes {
            return Ok(false);
        }
        let last = self.segments.back().copied();
        let seg = match last {
            Some(s) => {
                let len = fs::metadata(segment_path(&self.dir, s))
                    .map(|m| m.len())
                    .unwrap_or(0);
                if len >= SEGMENT_BYTES { s + 1 } else { s }
            }
            None => self.cursor.0.max(1),
        };
        if self.segments.back() != Some(&seg) {
            self.segments.push_back(seg);
        }
        let path = segment_path(&self.dir, seg);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        let before = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut w = BufWriter::new(&file);
        let written = w.write_all(&buf).and_then(|()| w.flush());
        drop(w);
        if let Err(e) = written.and_then(|()| file.sync_data()) {
            // Leave no half batch behind.
            let _ = file.set_len(before);
            return Err(io_err("write", &path)(e));
        }
        if self.pending == 0 && self.cursor.0 < seg {
            self.cursor = (seg, before);
        }
        self.pending += batches.len() as u64;
        self.pending_bytes += buf.len() as u64;
        self.gauge.store(self.pending, Ordering::Relaxed);
        Ok(true)
    }

    /// The next (at most `max`) batches from the cursor, without moving it.
    ///
    /// # Errors
    /// When a segment cannot be read or a batch does not decode.
    pub fn peek(&self, max: usize) -> Result<Vec<Arc<Batch>>, SpillError> {
        let mut out = Vec::new();
        let (first, start) = self.cursor;
        for s in self.segments.iter().copied().filter(|s| *s >= first) {
            let offset = if s == first { start } else { 0 };
            let path = segment_path(&self.dir, s);
            let mut file = File::open(&path).map_err(io_err("open", &path))?;
            file.seek(SeekFrom::Start(offset))
                .map_err(io_err("seek", &path))?;
            let mut r = BufReader::new(file);
            while out.len() < max {
                match decode(&mut r, &path)? {
                    Some((b, _)) => out.push(Arc::new(b)),
                    None => break,
                }
            }
            if out.len() >= max {
                break;
            }
        }
        Ok(out)
    }

    /// Moves the cursor past `n` batches the sink took; deletes segments left behind.
    ///
    /// # Errors
    /// When the cursor cannot be saved.
    pub fn advance(&mut self, n: usize) -> Result<(), SpillError> {
        let mut left = n;
        while left > 0 {
            let Some(&s) = self.segments.iter().find(|s| **s >= self.cursor.0) else {
                break;
            };
            if s != self.cursor.0 {
                self.cursor = (s, 0);
            }
            let path = segment_path(&self.dir, s);
            let mut file = File::open(&path).map_err(io_err("open", &path))?;
            file.seek(SeekFrom::Start(self.cursor.1))
                .map_err(io_err("seek", &path))?;
            let mut r = BufReader::new(file);
            let mut moved = false;
            while left > 0 {
                match decode(&mut r, &path)? {
                    Some((_, bytes)) => {
                        self.cursor.1 += bytes;
                        self.pending = self.pending.saturating_sub(1);
                        self.pending_bytes = self.pending_bytes.saturating_sub(bytes);
                        left -= 1;
                        moved = true;
                    }
                    None => break,
                }
            }
            if left > 0 || !moved {
                // This segment is done: on to the next, if any.
                let next = self.segments.iter().copied().find(|x| *x > s);
                match next {
                    Some(x) => self.cursor = (x, 0),
                    None => break,
                }
            }
        }
        // Segments wholly before the cursor are gone.
        while let Some(&s) = self.segments.front() {
            if s < self.cursor.0 {
                let _ = fs::remove_file(segment_path(&self.dir, s));
                self.segments.pop_front();
            } else {
                break;
            }
        }
        if self.pending == 0 {
            // Empty: start the next spill in a fresh segment.
            for s in self.segments.drain(..) {
                let _ = fs::remove_file(segment_path(&self.dir, s));
            }
            self.cursor = (self.cursor.0 + 1, 0);
        }
        let tmp = self.dir.join("cursor.tmp");
        let dest = self.dir.join("cursor");
        fs::write(&tmp, format!("{} {}\n", self.cursor.0, self.cursor.1))
            .and_then(|()| fs::rename(&tmp, &dest))
            .map_err(io_err("save", &dest))?;
        self.gauge.store(self.pending, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::testing::test_batch;

    fn lines(b: &Batch) -> Vec<String> {
        b.records
            .iter()
            .map(|r| String::from_utf8(r.message.to_vec()).unwrap())
            .collect()
    }

    /// Batches come back whole and in order, across segments and a reopen (a restart);
    /// the cursor moves only when told; a torn tail is cut off; the bound holds.
    #[test]
    fn batches_survive_a_restart_in_order_and_the_bound_holds() {
        let dir = tempfile::tempdir().unwrap();
        let gauge = Arc::new(AtomicU64::new(0));
        let mut s = Spill::open(dir.path().to_owned(), 1 << 20, gauge.clone()).unwrap();
        assert!(s.is_empty());
        let batches: Vec<Arc<Batch>> = (0..10)
            .map(|i| Arc::new(test_batch(&[&format!("a{i}"), &format!("b{i}")], i + 1)))
            .collect();
        assert!(s.push(&batches[..4]).unwrap());
        assert!(s.push(&batches[4..]).unwrap());
        assert_eq!((s.len(), gauge.load(Ordering::Relaxed)), (10, 10));
        let first = s.peek(3).unwrap();
        assert_eq!(lines(&first[0]), ["a0", "b0"]);
        assert_eq!(first[2].ack.checkpoint.offset, 3);
        assert_eq!(
            first[1].identity.container_id,
            batches[1].identity.container_id
        );
        s.advance(3).unwrap();
        // A restart, with half a batch at the end (a crash mid-write).
        drop(s);
        let seg = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with("seg-"))
            .unwrap()
            .path();
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[200, 0, 0, 0, b'{']).unwrap();
        drop(f);
        let mut s = Spill::open(dir.path().to_owned(), 1 << 20, gauge.clone()).unwrap();
        assert_eq!(s.len(), 7);
        let rest = s.peek(100).unwrap();
        let got: Vec<String> = rest.iter().flat_map(|b| lines(b)).collect();
        assert_eq!(got.first().map(String::as_str), Some("a3"));
        assert_eq!(got.last().map(String::as_str), Some("b9"));
        assert_eq!(got.len(), 14);
        s.advance(7).unwrap();
        assert!(s.is_empty() && gauge.load(Ordering::Relaxed) == 0);
        assert!(s.peek(10).unwrap().is_empty());
        // Spilling again after it emptied.
        assert!(s.push(&batches[..1]).unwrap());
        assert_eq!(lines(&s.peek(10).unwrap()[0]), ["a0", "b0"]);
        // The bound.
        let mut one = Vec::new();
        encode(&batches[0], &mut one);
        let bound = one.len() as u64 * 3 / 2;
        let mut small = Spill::open(dir.path().join("small"), bound, gauge).unwrap();
        assert!(small.push(&batches[..1]).unwrap());
        assert!(!small.push(&batches[1..2]).unwrap(), "over the bound");
        assert_eq!(small.len(), 1);
    }
}
