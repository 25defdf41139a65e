//! The local directory sink: one directory per task (or per container outside ECS), one file
//! per container output stream and per declared file, each line `<time> <message>` as
//! `docker logs -t` prints it, so `grep` and `tail -f` work as expected.
//!
//! Each batch is formatted into one reusable buffer per output file and written with one
//! `write()` per file. That copy costs about 0.1 CPU-s/GB; what it replaces cost far more:
//! vectored writes straight from the records took four `iovec`s per line (time, space,
//! message, newline), and the kernel's per-segment copy loop over 1- and 30-byte segments
//! cost over a second of system time per GB, besides a path join and two map lookups per run
//! of same-stream records. Measured with `cargo xtask bench` (docs/benchmarks.md).
//!
//! Files are opened in append mode and kept open (bounded); a batch that is retried after a
//! partial failure may repeat lines (at-least-once).

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use futures_util::future::BoxFuture;

use super::layout::{container_dir, file_in_container_dir};
use super::{Sink, SinkError};
use crate::batch::{Batch, SourceKind};
use crate::tail::{LogRecord, StdStream};

/// Open files kept at most; past this, all are closed and reopened on demand. Files closed
/// before their periodic sync are opened again to be synced, so closing costs no fsync (with
/// a thousand containers there are two thousand files; syncing each time the table fills
/// took seconds).
const MAX_OPEN_FILES: usize = 512;

/// A formatting buffer larger than this after a batch (a batch of very long lines) is
/// released rather than kept for the next batch.
const KEEP_BUFFER_BYTES: usize = 4 << 20;

/// The local directory sink.
#[derive(Debug)]
pub struct FileSink {
    root: PathBuf,
    open: HashMap<PathBuf, File>,
    dirty: HashSet<PathBuf>,
    /// The lines of the batch being written that go to its first file (stdout, or the
    /// declared file), formatted; reused from batch to batch.
    first: Vec<u8>,
    /// The same for stderr.
    stderr: Vec<u8>,
}

impl FileSink {
    /// A sink writing under `root` (created on demand).
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            open: HashMap::new(),
            dirty: HashSet::new(),
            first: Vec::new(),
            stderr: Vec::new(),
        }
    }

    fn file(&mut self, path: &Path) -> Result<&mut File, SinkError> {
        if !self.open.contains_key(path) {
            if self.open.len() >= MAX_OPEN_FILES {
                self.open.clear();
            }
            let err = |source| SinkError::WriteFile {
                path: path.to_owned(),
                source,
            };
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(err)?;
            }
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(err)?;
            self.open.insert(path.to_owned(), f);
        }
        Ok(self.open.get_mut(path).expect("inserted above"))
    }

    fn write_batch(&mut self, batch: &Batch) -> Result<(), SinkError> {
        let dir = self.root.join(container_dir(&batch.identity));
        // A container's output goes to one file per stream; a declared file to one file.
        let by_stream = batch.source.kind == SourceKind::ContainerOutput;
        let mut first = std::mem::take(&mut self.first);
        let mut stderr = std::mem::take(&mut self.stderr);
        first.clear();
        stderr.clear();
        for r in batch.records.iter() {
            let buf = if by_stream && r.stream == Some(StdStream::Stderr) {
                &mut stderr
            } else {
                &mut first
            };
            push_line(buf, r);
        }
        let mut result = Ok(());
        for (stream, buf) in [
            (Some(StdStream::Stdout), &first),
            (Some(StdStream::Stderr), &stderr),
        ] {
            if buf.is_empty() {
                continue;
            }
            let path = dir.join(file_in_container_dir(&batch.source.kind, stream));
            result = self.write_file(&path, buf);
            if result.is_err() {
                break;
            }
            self.dirty.insert(path);
        }
        for (slot, mut buf) in [(&mut self.first, first), (&mut self.stderr, stderr)] {
            if buf.capacity() > KEEP_BUFFER_BYTES {
                buf = Vec::new();
            }
            *slot = buf;
        }
        result?;
        if batch.last {
            for stream in [
                None,
                Some(crate::tail::StdStream::Stdout),
                Some(crate::tail::StdStream::Stderr),
            ] {
                let path = dir.join(file_in_container_dir(&batch.source.kind, stream));
                if let Some(f) = self.open.remove(&path)
                    && self.dirty.remove(&path)
                {
                    f.sync_data()
                        .map_err(|source| SinkError::SyncFile { path, source })?;
                }
            }
        }
        Ok(())
    }

    /// Appends `bytes` to the file at `path`, all or nothing (see [`append_or_undo`]).
    fn write_file(&mut self, path: &Path, bytes: &[u8]) -> Result<(), SinkError> {
        let file = self.file(path)?;
        // Append mode: what this call wrote is the file's last `written` bytes.
        let result = append_or_undo(file, bytes, |f, written| {
            let len = f.metadata()?.len();
            f.set_len(len.saturating_sub(written))
        });
        match result {
            Ok(()) => Ok(()),
            Err(Append { source, undone }) => {
                if !undone {
                    // Could not cut it back: reopen on the next try rather than trust it.
                    self.open.remove(path);
                }
                Err(SinkError::WriteFile {
                    path: path.to_owned(),
                    source,
                })
            }
        }
    }

    fn sync_now(&mut self) -> Result<(), SinkError> {
        // A path stays dirty until its sync succeeds, so a failed sync is tried again.
        for path in self.dirty.iter().cloned().collect::<Vec<_>>() {
            let err = |source| SinkError::SyncFile {
                path: path.clone(),
                source,
            };
            match self.open.get(&path) {
                Some(f) => f.sync_data().map_err(err)?,
                // Closed to make room since it was written: fsync through a new descriptor
                // (it flushes the file, whichever descriptor wrote).
                None => OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .and_then(|f| f.sync_data())
                    .map_err(err)?,
            }
            self.dirty.remove(&path);
        }
        Ok(())
    }
}

/// Appends `<time> <message>\n`, as `docker logs -t` prints a line.
#[inline]
fn push_line(buf: &mut Vec<u8>, r: LogRecord<'_>) {
    buf.reserve(r.time.len() + r.message.len() + 2);
    buf.extend_from_slice(r.time);
    buf.push(b' ');
    buf.extend_from_slice(r.message);
    buf.push(b'\n');
}

/// A failed [`append_or_undo`].
struct Append {
    /// Why the write failed.
    source: std::io::Error,
    /// Whether the file is as it was before (nothing written, or the part cut off again).
    undone: bool,
}

/// Writes all of `bytes` to `w`, or nothing: a write that fails part-way (a full disk takes
/// what fits, then says `ENOSPC`) is undone with `undo(w, bytes_written)`, which cuts the
/// file back (cutting frees space, so it works on a full disk too). Without it, the retry of
/// the batch would glue half a line to the start of its first line.
fn append_or_undo<W: Write>(
    w: &mut W,
    bytes: &[u8],
    undo: impl FnOnce(&mut W, u64) -> std::io::Result<()>,
) -> Result<(), Append> {
    let mut written = 0;
    let source = loop {
        if written == bytes.len() {
            return Ok(());
        }
        match w.write(&bytes[written..]) {
            Ok(0) => break std::io::Error::from(std::io::ErrorKind::WriteZero),
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break e,
        }
    };
    let undone = written == 0 || undo(w, written as u64).is_ok();
    Err(Append { source, undone })
}

impl Sink for FileSink {
    fn name(&self) -> &'static str {
        "file"
    }

    fn send_batch<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<(), SinkError>> {
        let r = self.write_batch(batch);
        Box::pin(async move { r })
    }

    fn sync(&mut self) -> BoxFuture<'_, Result<(), SinkError>> {
        let r = self.sync_now();
        Box::pin(async move { r })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::batch::SourceInfo;
    use crate::identify::{ContainerId, ContainerIdentity};
    use crate::state::{Checkpoint, CheckpointUpdate};
    use crate::tail::LogRecords;
    use crate::tail::fingerprint::Fingerprint;

    fn batch(list: Vec<(StdStream, String)>) -> Batch {
        let mut records = LogRecords::new();
        for (stream, message) in &list {
            records.push_copy(LogRecord {
                time: b"2026-01-01T00:00:00.000000001Z",
                stream: Some(*stream),
                message: message.as_bytes(),
                split: false,
            });
        }
        let id = ContainerId::parse(&"a".repeat(64)).unwrap();
        let mut identity = ContainerIdentity::new(id.clone());
        identity.docker_name = Some("web".into());
        Batch {
            source: Arc::new(SourceInfo::container_output(id.clone())),
            identity: Arc::new(identity),
            records,
            ack: CheckpointUpdate {
                source: "s".into(),
                container_id: id.to_string(),
                checkpoint: Checkpoint {
                    fingerprint: Fingerprint::NOT_A_FILE,
                    path: String::new(),
                    offset: 0,
                },
                counters: Default::default(),
            },
            last: false,
        }
    }

    fn rec(stream: StdStream, msg: &str) -> (StdStream, String) {
        (stream, msg.to_owned())
    }

    #[test]
    fn lines_land_per_stream_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = FileSink::new(dir.path().to_owned());
        let n = 3000; // more than one writev worth
        let mut records = Vec::new();
        for i in 0..n {
            records.push(rec(
                if i % 3 == 0 {
                    StdStream::Stderr
                } else {
                    StdStream::Stdout
                },
                &format!("line {i}"),
            ));
        }
        sink.write_batch(&batch(records)).unwrap();
        sink.sync_now().unwrap();
        let base = dir
            .path()
            .join(format!("containers/web-{}", "a".repeat(12)));
        let out = std::fs::read_to_string(base.join("stdout.log")).unwrap();
        let err = std::fs::read_to_string(base.join("stderr.log")).unwrap();
        let want_out: Vec<String> = (0..n)
            .filter(|i| i % 3 != 0)
            .map(|i| format!("2026-01-01T00:00:00.000000001Z line {i}"))
            .collect();
        let want_err: Vec<String> = (0..n)
            .filter(|i| i % 3 == 0)
            .map(|i| format!("2026-01-01T00:00:00.000000001Z line {i}"))
            .collect();
        assert_eq!(out.lines().collect::<Vec<_>>(), want_out);
        assert_eq!(err.lines().collect::<Vec<_>>(), want_err);
    }

    #[test]
    fn files_closed_for_room_are_still_synced_and_appended() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = FileSink::new(dir.path().to_owned());
        let n = MAX_OPEN_FILES + 10;
        let mut batches = Vec::new();
        for i in 0..n {
            let mut b = batch(vec![rec(StdStream::Stdout, &format!("line {i}"))]);
            let id = ContainerId::parse(&format!("{i:012x}{}", "a".repeat(52))).unwrap();
            b.source = Arc::new(SourceInfo::container_output(id.clone()));
            b.identity = Arc::new(ContainerIdentity::new(id));
            batches.push(b);
        }
        for b in batches.iter().chain(&batches) {
            sink.write_batch(b).unwrap();
        }
        assert!(sink.open.len() < MAX_OPEN_FILES);
        assert_eq!(sink.dirty.len(), n);
        sink.sync_now().unwrap();
        assert!(sink.dirty.is_empty());
        let first = dir.path().join(format!("containers/{:012x}/stdout.log", 0));
        let text = std::fs::read_to_string(first).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
    }

    #[test]
    fn unwritable_root_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"x").unwrap();
        let mut sink = FileSink::new(blocker);
        let e = sink
            .write_batch(&batch(vec![rec(StdStream::Stdout, "x")]))
            .unwrap_err();
        assert!(matches!(e, SinkError::WriteFile { .. }));
    }

    /// Takes `room` bytes, then says the disk is full.
    struct FullDisk {
        data: Vec<u8>,
        room: usize,
    }

    impl Write for FullDisk {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.room - self.data.len()).min(7);
            if n == 0 {
                return Err(std::io::Error::from_raw_os_error(28));
            }
            self.data.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A write cut short by a full disk leaves the file as it was, so the retried batch
    /// starts on a line boundary: no torn line, whatever room was left.
    #[test]
    fn a_write_cut_short_by_a_full_disk_is_undone() {
        let before = b"2026 line 0\n".to_vec();
        let batch = b"2026 line 1\n2026 line 2\n".to_vec();
        let undo = |w: &mut FullDisk, n: u64| {
            let len = w.data.len() - n as usize;
            w.data.truncate(len);
            Ok(())
        };
        for room in [before.len(), before.len() + 1, before.len() + 15] {
            let mut disk = FullDisk {
                data: before.clone(),
                room,
            };
            let err = append_or_undo(&mut disk, &batch, undo).err().unwrap();
            assert_eq!(err.source.raw_os_error(), Some(28), "room {room}");
            assert!(err.undone);
            assert_eq!(disk.data, before, "room {room}");
            // Room again: the retry appends whole lines.
            disk.room = usize::MAX;
            assert!(append_or_undo(&mut disk, &batch, undo).is_ok());
            assert_eq!(disk.data, [&before[..], &batch[..]].concat());
        }
        let mut disk = FullDisk {
            data: before.clone(),
            room: before.len() + 3,
        };
        let err = append_or_undo(&mut disk, &batch, |_, _| Err(std::io::Error::other("no")))
            .err()
            .unwrap();
        assert!(!err.undone, "an undo that fails is reported");
    }

    /// The same through a real file: after an undone write its length is what it was.
    #[test]
    fn an_undone_append_restores_the_file_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"kept\n").unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        // A writer over the file that fails after part of the bytes.
        struct Partial<'a>(&'a mut File, bool);
        impl Write for Partial<'_> {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                if self.1 {
                    return Err(std::io::Error::from_raw_os_error(28));
                }
                self.1 = true;
                self.0.write(&buf[..3])
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut w = Partial(&mut f, false);
        let err = append_or_undo(&mut w, b"torn line\n", |w, n| {
            let len = w.0.metadata()?.len();
            w.0.set_len(len - n)
        })
        .err()
        .unwrap();
        assert!(err.undone);
        assert_eq!(std::fs::read(&path).unwrap(), b"kept\n");
        f.write_all(b"whole\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"kept\nwhole\n");
    }
}
