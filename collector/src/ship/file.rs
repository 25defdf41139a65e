//! The local directory sink: one directory per task (or per container outside ECS), one file
//! per container output stream and per declared file, each line `<time> <message>` as
//! `docker logs -t` prints it, so `grep` and `tail -f` work as expected.
//!
//! Records are written with vectored writes straight from the batch's `Bytes` (no copy into
//! a staging buffer). Files are opened in append mode and kept open (bounded); a batch that
//! is retried after a partial failure may repeat lines (at-least-once).

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{IoSlice, Write};
use std::path::{Path, PathBuf};

use futures_util::future::BoxFuture;

use super::layout::{container_dir, file_in_container_dir};
use super::{Sink, SinkError};
use crate::batch::Batch;

/// Open files kept at most; past this, all are closed (after a sync) and reopened on demand.
const MAX_OPEN_FILES: usize = 512;

/// `IOV_MAX` on Linux: slices per `writev` call.
const IOV_MAX: usize = 1024;

/// The local directory sink.
#[derive(Debug)]
pub struct FileSink {
    root: PathBuf,
    open: HashMap<PathBuf, File>,
    dirty: HashSet<PathBuf>,
}

impl FileSink {
    /// A sink writing under `root` (created on demand).
    pub fn new(root: PathBuf) -> Self {
        Self { root, open: HashMap::new(), dirty: HashSet::new() }
    }

    fn file(&mut self, path: &Path) -> Result<&mut File, SinkError> {
        if !self.open.contains_key(path) {
            if self.open.len() >= MAX_OPEN_FILES {
                self.sync_now()?;
                self.open.clear();
            }
            let err = |source| SinkError::WriteFile { path: path.to_owned(), source };
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(err)?;
            }
            let f = OpenOptions::new().create(true).append(true).open(path).map_err(err)?;
            self.open.insert(path.to_owned(), f);
        }
        Ok(self.open.get_mut(path).expect("inserted above"))
    }

    fn write_batch(&mut self, batch: &Batch) -> Result<(), SinkError> {
        let dir = self.root.join(container_dir(&batch.identity));
        // Records of one source go to at most two files (stdout, stderr); write each run of
        // same-file records with as few writev calls as possible.
        let mut start = 0;
        while start < batch.records.len() {
            let stream = batch.records[start].stream;
            let mut end = start + 1;
            while end < batch.records.len() && batch.records[end].stream == stream {
                end += 1;
            }
            let path = dir.join(file_in_container_dir(&batch.source.kind, stream));
            let file = self.file(&path)?;
            write_records(file, &batch.records[start..end])
                .map_err(|source| SinkError::WriteFile { path: path.clone(), source })?;
            self.dirty.insert(path);
            start = end;
        }
        if batch.last {
            for stream in [None, Some(crate::tail::StdStream::Stdout), Some(crate::tail::StdStream::Stderr)] {
                let path = dir.join(file_in_container_dir(&batch.source.kind, stream));
                if let Some(f) = self.open.remove(&path)
                    && self.dirty.remove(&path)
                {
                    f.sync_data().map_err(|source| SinkError::SyncFile { path, source })?;
                }
            }
        }
        Ok(())
    }

    fn sync_now(&mut self) -> Result<(), SinkError> {
        for path in self.dirty.drain().collect::<Vec<_>>() {
            if let Some(f) = self.open.get(&path) {
                f.sync_data().map_err(|source| SinkError::SyncFile { path: path.clone(), source })?;
            }
        }
        Ok(())
    }
}

fn write_records(file: &mut File, records: &[crate::tail::LogRecord]) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(IOV_MAX.min(records.len() * 4));
    for chunk in records.chunks(IOV_MAX / 4) {
        slices.clear();
        for r in chunk {
            slices.push(IoSlice::new(&r.time));
            slices.push(IoSlice::new(b" "));
            slices.push(IoSlice::new(&r.message));
            slices.push(IoSlice::new(b"\n"));
        }
        write_all_vectored(file, &mut slices)?;
    }
    Ok(())
}

fn write_all_vectored(file: &mut File, mut slices: &mut [IoSlice<'_>]) -> std::io::Result<()> {
    while !slices.is_empty() {
        match file.write_vectored(slices) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
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

    use bytes::Bytes;

    use super::*;
    use crate::batch::SourceInfo;
    use crate::identify::{ContainerId, ContainerIdentity};
    use crate::state::{Checkpoint, CheckpointUpdate};
    use crate::tail::fingerprint::Fingerprint;
    use crate::tail::{LogRecord, StdStream};

    fn batch(records: Vec<LogRecord>) -> Batch {
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
                checkpoint: Checkpoint { fingerprint: Fingerprint { dev: 0, ino: 0, head_len: 0, head_hash: 0 }, path: String::new(), offset: 0 },
                counters: Default::default(),
            },
            last: false,
        }
    }

    fn rec(stream: StdStream, msg: &str) -> LogRecord {
        LogRecord { time: Bytes::from_static(b"2026-01-01T00:00:00.000000001Z"), stream: Some(stream), message: Bytes::copy_from_slice(msg.as_bytes()), split: false }
    }

    #[test]
    fn lines_land_per_stream_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = FileSink::new(dir.path().to_owned());
        let n = 3000; // more than one writev worth
        let mut records = Vec::new();
        for i in 0..n {
            records.push(rec(if i % 3 == 0 { StdStream::Stderr } else { StdStream::Stdout }, &format!("line {i}")));
        }
        sink.write_batch(&batch(records)).unwrap();
        sink.sync_now().unwrap();
        let base = dir.path().join(format!("containers/web-{}", "a".repeat(12)));
        let out = std::fs::read_to_string(base.join("stdout.log")).unwrap();
        let err = std::fs::read_to_string(base.join("stderr.log")).unwrap();
        let want_out: Vec<String> = (0..n).filter(|i| i % 3 != 0).map(|i| format!("2026-01-01T00:00:00.000000001Z line {i}")).collect();
        let want_err: Vec<String> = (0..n).filter(|i| i % 3 == 0).map(|i| format!("2026-01-01T00:00:00.000000001Z line {i}")).collect();
        assert_eq!(out.lines().collect::<Vec<_>>(), want_out);
        assert_eq!(err.lines().collect::<Vec<_>>(), want_err);
    }

    #[test]
    fn unwritable_root_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"x").unwrap();
        let mut sink = FileSink::new(blocker);
        let e = sink.write_batch(&batch(vec![rec(StdStream::Stdout, "x")])).unwrap_err();
        assert!(matches!(e, SinkError::WriteFile { .. }));
    }
}
