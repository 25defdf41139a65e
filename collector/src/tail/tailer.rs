//! One tailer per log source: follows a file chain across rotation and truncation, and sends
//! batches whose acknowledgement moves the checkpoint.
//!
//! # How a pass works
//! Each pass of the loop:
//! 1. looks for files newer than the ones held (a rename-rotation leaves the old file as
//!    `path.1` and creates a new `path`; Docker's `max-file` shifts `.1` to `.2` and so on) and
//!    opens them at once: an open descriptor keeps a rotated file readable even after it is
//!    deleted, so a slow sink does not turn rotation into loss;
//! 2. reads the current file in large chunks and frames and decodes them, cutting a batch per
//!    pass (bounded bytes and records), and waits for the sinks' channel (backpressure: the
//!    file on disk is the buffer);
//! 3. at end of file: if a newer file was already held before the read began, the current one
//!    is finished (nothing more can arrive in it) and the next one starts; if the file shrank
//!    below our offset it was truncated (copytruncate) and reading restarts at 0, counted; if
//!    the container has exited and the file stayed quiet for `exit_settle`, the source ends.
//!
//! The checkpoint sent with a batch never passes the start of a partial line held in the
//! decoder, so a crash re-reads rather than loses it.
//!
//! # Memory
//! A tailer reserves its place in the sinks' channel *before* a read pass, so a tailer that
//! waits for the sinks holds no records: with a thousand sources, only the batches that fit
//! in the channel exist at once. The read buffers of one source (and the arenas its records
//! decode escapes into) come from its own [`BufferPool`], and a pass starts only while fewer
//! than [`MAX_BUFFERS_IN_FLIGHT`] of them are out in batches, which bounds what one fast file holds in memory when the sinks are
//! slower than reading. A file that goes quiet gives back its spare buffers.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, ErrorKind};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::budget::{MemoryBudget, Share};
use super::chain::{list_chain, open_chain};
use super::fingerprint::Fingerprint;
use super::format::{Decoder, LogFormat};
use super::framing::{BufferPool, LineFramer};
use super::quiet_tick::QuietTick;
use super::record::LogRecords;
use super::rotation_guard::GuardEvent;
use crate::batch::{Batch, SourceInfo};
use crate::config::{ReadFrom, TailConfig};
use crate::identify::ContainerIdentity;
use crate::internal_events;
use crate::state::{Checkpoint, CheckpointUpdate, SourceCounters, Store};

/// Reads of `read_bytes` one pass makes at most (fewer at end of file).
const PASS_READS: usize = 4;

/// Records per batch at most: bounds the memory of one batch independently of line size.
const MAX_BATCH_RECORDS: usize = 8192;

/// Read buffers of one source out in batches at most before the next pass waits: 4 MiB at
/// the default read size, about four batches, which keeps reading and delivering overlapped
/// while bounding what one fast file holds when the sinks are slower.
pub const MAX_BUFFERS_IN_FLIGHT: usize = 16;

/// How often a source with a rotation guard still scans rotated names.
/// The guard sends every new file once and rescans every chain itself after an inotify queue
/// overflow, so this only repairs a tailer so far behind that the guard's channel was full.
const NAME_SCAN_WITH_GUARD: Duration = Duration::from_secs(5);

/// A file quiet this long is polled every `quiet_poll_interval` instead of `poll_interval`.
const QUIET_AFTER: Duration = Duration::from_secs(10);

/// Finished files remembered so a rescan of siblings does not read them again.
const COMPLETED_MEMORY: usize = 64;

/// What a tailer needs to know about its source.
#[derive(Debug)]
pub struct SourceSpec {
    /// The source.
    pub info: Arc<SourceInfo>,
    /// Host path of the live file.
    pub path: PathBuf,
    /// How its lines are encoded.
    pub format: LogFormat,
    /// The container's identity; updates (enrichment) apply to the next batch.
    pub identity: watch::Receiver<Arc<ContainerIdentity>>,
    /// True while the container runs. Once false, the source ends when its files are read
    /// to the end and quiet.
    pub running: watch::Receiver<bool>,
    /// Files created at `path`, opened the instant they appeared (see `rotation_guard`).
    /// `None` when the guard is unavailable: rotation is then found by name scans only.
    pub new_files: Option<mpsc::Receiver<GuardEvent>>,
    /// The shared clock quiet files are polled by (`None`: each polls on its own timer).
    pub quiet_tick: Option<QuietTick>,
    /// Where this source's tailers leave off: each batch sent records its checkpoint here,
    /// and a tailer started again in the same process (the container restarted, or was seen
    /// running again while its tailer finished) resumes from it rather than from the last
    /// *committed* checkpoint, which lags by the batches in flight: reading those again
    /// would deliver them twice. `None`: committed checkpoints only.
    pub left_at: Option<Arc<std::sync::Mutex<Option<Checkpoint>>>>,
    /// The memory budget of all sources' batches in flight (`budget.rs`); `None`: only the
    /// per-source bound ([`MAX_BUFFERS_IN_FLIGHT`]) and the channel's apply.
    pub budget: Option<Arc<MemoryBudget>>,
}

/// Why a tailer returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TailOutcome {
    /// Every file was read to its end after the container exited.
    Finished,
    /// The collector is shutting down.
    Cancelled,
    /// The sinks' channel closed.
    SinkClosed,
}

struct OpenFile {
    file: File,
    path: PathBuf,
    fp: Fingerprint,
    framer: LineFramer,
    /// Size and change times when the head was last found unchanged: while they stay the
    /// same, nothing was written and the head is not read again (a quiet file costs one
    /// `fstat` per pass, not a read and a hash).
    head_checked: Option<(u64, i64, i64, i64, i64)>,
}

/// The size and modification and change times of a file, to tell whether it was written.
fn stamp(meta: &std::fs::Metadata) -> (u64, i64, i64, i64, i64) {
    (
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec(),
    )
}

/// The tailer's state for one source.
pub struct Tailer {
    spec: SourceSpec,
    settings: TailConfig,
    tx: mpsc::Sender<Batch>,
    /// Read buffers of every file of the source.
    pool: Arc<BufferPool>,
    current: Option<OpenFile>,
    queue: VecDeque<OpenFile>,
    /// Files finished, by fingerprint: a rotated file still on disk must not be read again,
    /// but its inode number may be reused at once by a new file (Docker deletes the oldest
    /// file and creates the new one within microseconds), so the head hash decides.
    completed: VecDeque<Fingerprint>,
    decoder: Decoder,
    counters: SourceCounters,
    /// The position last sent: tells whether a pass moved the checkpoint.
    last_sent_offset: Option<(Fingerprint, u64)>,
    /// When rotated names were last scanned.
    last_name_scan: Instant,
    /// A file just finished whose final position the next batch acknowledges.
    finished_file: Option<(Fingerprint, PathBuf, u64)>,
}

impl Tailer {
    /// Prepares a tailer: opens the source's files and places each at its checkpoint.
    ///
    /// # Errors
    /// Reading the checkpoints failed (the state database is unusable).
    pub fn new(
        spec: SourceSpec,
        settings: TailConfig,
        store: Store,
        tx: mpsc::Sender<Batch>,
    ) -> Result<Self, crate::state::StateError> {
        let mut checkpoints = store.checkpoints(&spec.info.key)?;
        let left = spec
            .left_at
            .as_ref()
            .and_then(|slot| slot.lock().unwrap_or_else(|p| p.into_inner()).clone());
        if let Some(left) = left {
            merge_resume(&mut checkpoints, left);
        }
        let decoder = Decoder::new(spec.format, settings.max_line_bytes);
        let pool = BufferPool::new(settings.read_bytes);
        let mut t = Self {
            spec,
            settings,
            tx,
            pool,
            current: None,
            queue: VecDeque::new(),
            completed: VecDeque::new(),
            decoder,
            counters: SourceCounters::default(),
            last_sent_offset: None,
            finished_file: None,
            last_name_scan: Instant::now(),
        };
        t.open_initial(&checkpoints);
        t.current = t.queue.pop_front();
        // Bytes before the starting offset were counted by an earlier run.
        t.last_sent_offset = t
            .current
            .as_ref()
            .map(|c| (c.fp, c.framer.offset_committed()));
        Ok(t)
    }

    /// Places the chain's files at their checkpoints: files older than the newest checkpointed
    /// one were read already (acks arrive in file order); the checkpointed one resumes at its
    /// offset; newer ones start at 0.
    fn open_initial(&mut self, checkpoints: &[Checkpoint]) {
        let chain = open_chain(&self.spec.path);
        if checkpoints.is_empty() {
            if self.settings.read_from == ReadFrom::End {
                if let Some((file, path)) = chain.into_iter().last() {
                    let end = file.metadata().map(|m| m.len()).unwrap_or(0);
                    self.push_file(file, path, end);
                }
            } else {
                for (file, path) in chain {
                    self.push_file(file, path, 0);
                }
            }
            return;
        }
        let matched = chain.iter().enumerate().rev().find_map(|(i, (file, _))| {
            checkpoints
                .iter()
                .find(|cp| cp.fingerprint.matches(file))
                .map(|cp| (i, cp.offset))
        });
        let (start, offset) = match matched {
            Some(m) => m,
            None => {
                if !chain.is_empty() {
                    warn!(source = %self.spec.info.key, "No file of the source matches its checkpoints; reading every file from the start.");
                }
                (0, 0)
            }
        };
        for (i, (file, path)) in chain.into_iter().enumerate() {
            if i < start {
                if let Ok(fp) = Fingerprint::of(&file, u64::MAX) {
                    self.remember_completed(fp);
                }
                continue;
            }
            let mut at = if i == start { offset } else { 0 };
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            if at > len {
                // Truncated while the collector was not running: what was there is gone.
                self.counters.truncations += 1;
                at = 0;
            }
            self.push_file(file, path, at);
        }
    }

    fn push_file(&mut self, file: File, path: PathBuf, offset: u64) {
        match Fingerprint::of(&file, u64::MAX) {
            Ok(fp) => {
                debug!(source = %self.spec.info.key, ino = fp.ino, head_len = fp.head_len, offset, "Log file queued for reading.");
                let mut file = file;
                if offset > 0
                    && let Err(e) = io::Seek::seek(&mut file, io::SeekFrom::Start(offset))
                {
                    warn!(path = %path.display(), error = %e, "Cannot seek to checkpoint; skipping file.");
                    return;
                }
                let framer = LineFramer::with_pool(
                    offset,
                    self.pool.clone(),
                    self.spec
                        .format
                        .max_frame_bytes(self.settings.max_line_bytes),
                );
                self.queue.push_back(OpenFile {
                    file,
                    path,
                    fp,
                    framer,
                    head_checked: None,
                });
            }
            Err(e) => {
                debug!(path = %path.display(), error = %e, "File vanished before it could be read.")
            }
        }
    }

    fn remember_completed(&mut self, fp: Fingerprint) {
        if self.completed.len() == COMPLETED_MEMORY {
            self.completed.pop_front();
        }
        self.completed.push_back(fp);
    }

    /// Whether the file is open here. An open descriptor pins its inode, so the number alone
    /// is enough.
    fn is_open(&self, dev: u64, ino: u64) -> bool {
        self.current
            .iter()
            .chain(self.queue.iter())
            .any(|f| f.fp.same_inode(dev, ino))
    }

    /// Whether `file` is one already read to its end.
    fn is_completed(&self, file: &File) -> bool {
        // An empty file proves nothing by its head; reading it again costs nothing.
        self.completed
            .iter()
            .any(|fp| fp.head_len > 0 && fp.matches(file))
    }

    /// Opens files of the chain that are newer than every file held, in age order.
    fn pick_up_new_files(&mut self) {
        // First the files the rotation guard opened at creation, in creation order.
        while let Some(event) = self
            .spec
            .new_files
            .as_mut()
            .and_then(|rx| rx.try_recv().ok())
        {
            let file = match event {
                GuardEvent::File(file) => file,
                GuardEvent::Lost(files) => {
                    self.counters.lost_files += files;
                    internal_events::LogFilesLost {
                        source: &self.spec.info.key,
                        path: &self.spec.path,
                        files,
                    }
                    .emit();
                    continue;
                }
            };
            let Ok(meta) = file.metadata() else { continue };
            if self.is_open(meta.dev(), meta.ino()) {
                continue;
            }
            if self.is_completed(&file) {
                tracing::trace!(ino = meta.ino(), "Guard's file already read.");
                continue;
            }
            if self.current.is_some() {
                self.counters.rotations += 1;
                internal_events::LogFileRotated {
                    source: &self.spec.info.key,
                    path: &self.spec.path,
                }
                .emit();
            }
            self.push_file(file, self.spec.path.clone(), 0);
        }
        // With the guard, its deliveries are the order of creation; a name scan racing it
        // could queue a newer file before an older one the guard still holds. The scan is
        // the fallback for sources without a guard.
        // A scan every second still repairs what the guard missed (its queue overflowed).
        if self.spec.new_files.is_some()
            && self.current.is_some()
            && self.last_name_scan.elapsed() < NAME_SCAN_WITH_GUARD
        {
            return;
        }
        self.last_name_scan = Instant::now();
        let chain = list_chain(&self.spec.path);
        let newest_held = chain.iter().rposition(|&(_, dev, ino)| {
            self.current
                .iter()
                .chain(self.queue.iter())
                .any(|f| f.fp.same_inode(dev, ino))
        });
        let from = newest_held.map_or(0, |i| i + 1);
        for (path, dev, ino) in chain.into_iter().skip(from) {
            if self.is_open(dev, ino) {
                continue;
            }
            // A file that moved on since the listing ends this scan: queueing a newer one
            // without it would read them out of order (the guard or the next scan brings
            // both, in order).
            match File::open(&path) {
                Ok(file)
                    if file
                        .metadata()
                        .is_ok_and(|m| m.dev() == dev && m.ino() == ino) =>
                {
                    if self.is_completed(&file) {
                        continue;
                    }
                    if self.current.is_some() {
                        self.counters.rotations += 1;
                        internal_events::LogFileRotated {
                            source: &self.spec.info.key,
                            path: &path,
                        }
                        .emit();
                    }
                    self.push_file(file, path, 0);
                }
                Ok(_) => break,
                Err(e) if e.kind() == ErrorKind::NotFound => break,
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "Cannot open log file.");
                    break;
                }
            }
        }
        if self.current.is_none() {
            self.current = self.queue.pop_front();
        }
    }

    /// Runs until the source ends, the collector shuts down or the sinks go away.
    pub async fn run(mut self, shutdown: CancellationToken) -> TailOutcome {
        let mut idle = Duration::from_millis(5);
        let mut quiet_since: Option<Instant> = None;
        // Whether the spare memory was given back since the file last had data.
        let mut released = false;
        let mut records = LogRecords::with_pool(0, self.pool.clone());
        loop {
            if shutdown.is_cancelled() {
                return TailOutcome::Cancelled;
            }
            // Look for rotated files on every pass: a handful of stat calls per read of up to
            // 1 MiB. Docker with `max-file=3` under a fast writer deletes a rotated file two
            // rotations later (tens of milliseconds); only an open descriptor keeps it.
            self.pick_up_new_files();
            if self.current.is_none() {
                if !*self.spec.running.borrow()
                    && quiet_since.is_some_and(|t| t.elapsed() >= self.settings.exit_settle)
                {
                    return TailOutcome::Finished;
                }
                quiet_since.get_or_insert_with(Instant::now);
                if self.sleep(&shutdown, self.settings.poll_interval).await {
                    return TailOutcome::Cancelled;
                }
                continue;
            }
            let permit = match self.make_room(&shutdown).await {
                Ok(permit) => permit,
                Err(outcome) => return outcome,
            };
            // Whether a newer file exists is known before the size of this one is taken: the
            // writer's last write to this file came before it created the next one, so the
            // size read below covers everything this file will ever hold.
            let newer_file_waiting = !self.queue.is_empty();
            // Before each pass: a file truncated (and maybe rewritten) since the last pass
            // is read again from 0, even when a rotation is also waiting. Its `fstat` also
            // sizes the pass (one `fstat` per pass of a quiet file).
            let size = self.check_truncation();
            let share = match self.budget_share(size, &shutdown).await {
                Ok(share) => share,
                Err(outcome) => return outcome,
            };
            let Some(cur) = self.current.as_mut() else {
                continue;
            };
            let read = read_pass(
                cur,
                size,
                &mut self.decoder,
                &mut records,
                &mut self.counters,
                &self.settings,
                &self.spec.info.key,
            );
            if let Some(share) = share
                && !records.is_empty()
            {
                records.hold(share);
            }
            let at_eof = read.eof;
            if read.bytes > 0 {
                released = false;
            }
            if !records.is_empty() || self.offset_moved() {
                if let Some(outcome) = self
                    .send(&mut records, false, Some(permit), &shutdown)
                    .await
                {
                    return outcome;
                }
            } else {
                // Not holding a place in the channel while sleeping: with more quiet files
                // than places, the rest would wait in `reserve` (found on the idle bench:
                // 100 files, 64 places, 36 tailers spinning on the rescan timer).
                drop(permit);
            }
            if at_eof && !released {
                // Read to the end: a file that gets a line now and then needs no spare
                // buffers, and those of the batch just sent are freed, not kept, when the
                // sinks are done with it. Kept, 1,000 small files read once each held their
                // buffers until their next pass, which waits for room in the channel: the
                // memory budget does not see a buffer back in its pool.
                if let Some(cur) = self.current.as_mut() {
                    cur.framer.release_idle_memory();
                }
                records.release_idle_memory();
                self.decoder.release_idle_memory();
                released = true;
            }
            if !at_eof {
                idle = Duration::from_millis(5);
                quiet_since = None;
                tokio::task::yield_now().await;
                continue;
            }
            if read.bytes > 0 {
                quiet_since = None;
            }
            if newer_file_waiting {
                self.finish_current_file(&mut records);
                if let Some(outcome) = self.send(&mut records, false, None, &shutdown).await {
                    return outcome;
                }
                continue;
            }
            let quiet = *quiet_since.get_or_insert_with(Instant::now);
            if !*self.spec.running.borrow() && quiet.elapsed() >= self.settings.exit_settle {
                // One last look: a file created after the last scan would be missed otherwise.
                self.pick_up_new_files();
                if self.queue.is_empty() {
                    self.finish_current_file(&mut records);
                    return match self.send(&mut records, true, None, &shutdown).await {
                        Some(outcome) => outcome,
                        None => TailOutcome::Finished,
                    };
                }
                continue;
            }
            // A file quiet for a while is looked at less often (`quiet_poll_interval`).
            let longest = if quiet.elapsed() >= QUIET_AFTER {
                self.settings.quiet_poll_interval
            } else {
                self.settings.poll_interval
            };
            if self.sleep(&shutdown, idle.min(longest)).await {
                return TailOutcome::Cancelled;
            }
            idle = (idle * 2).min(longest);
        }
    }

    /// Waits until this source may read a pass: fewer than [`MAX_BUFFERS_IN_FLIGHT`] of its
    /// buffers out, and a place in the sinks' channel for the batch the pass will cut.
    async fn make_room(
        &mut self,
        shutdown: &CancellationToken,
    ) -> Result<mpsc::OwnedPermit<Batch>, TailOutcome> {
        if self.pool.outstanding() >= MAX_BUFFERS_IN_FLIGHT {
            let pool = self.pool.clone();
            self.wait_rescanning(pool.wait_below(MAX_BUFFERS_IN_FLIGHT), shutdown)
                .await?;
        }
        self.reserve(shutdown).await
    }

    /// Awaits `ready`, or shutdown. While it waits (the sinks or the budget hold this source
    /// back), keeps opening rotated files so they cannot be deleted from under us.
    async fn wait_rescanning<T>(
        &mut self,
        ready: impl std::future::Future<Output = T>,
        shutdown: &CancellationToken,
    ) -> Result<T, TailOutcome> {
        tokio::pin!(ready);
        let mut rescan = rescan_interval().await;
        loop {
            tokio::select! {
                biased;
                out = &mut ready => return Ok(out),
                _ = shutdown.cancelled() => return Err(TailOutcome::Cancelled),
                _ = rescan.tick() => self.pick_up_new_files(),
            }
        }
    }

    /// The share of the memory budget the next pass may fill: twice what it can read (the
    /// read buffers, and the arenas escapes are decoded into), none when there is nothing
    /// to read. `size` is the current file's, when just taken.
    async fn budget_share(
        &mut self,
        size: Option<u64>,
        shutdown: &CancellationToken,
    ) -> Result<Option<Share>, TailOutcome> {
        let (Some(budget), Some(cur)) = (self.spec.budget.clone(), self.current.as_ref()) else {
            return Ok(None);
        };
        let left = size.map_or(u64::MAX, |s| s.saturating_sub(cur.framer.read_offset()));
        if left == 0 {
            return Ok(None);
        }
        let pass = usize::try_from(left)
            .unwrap_or(usize::MAX)
            .min(self.settings.read_bytes.saturating_mul(PASS_READS));
        let bytes = pass.saturating_mul(2);
        // Most of the time the budget has room: no timer, no wait.
        if let Some(share) = budget.try_reserve(bytes) {
            return Ok(Some(share));
        }
        self.wait_rescanning(budget.reserve(bytes), shutdown)
            .await
            .map(Some)
    }

    /// A place in the sinks' channel. While the sinks hold us back, keeps opening rotated
    /// files so they cannot be deleted from under us.
    async fn reserve(
        &mut self,
        shutdown: &CancellationToken,
    ) -> Result<mpsc::OwnedPermit<Batch>, TailOutcome> {
        // Most of the time there is room: no timer, no wait.
        if let Ok(permit) = self.tx.clone().try_reserve_owned() {
            return Ok(permit);
        }
        // One wait, kept across rescans: the channel's queue of waiting tailers is fair only
        // to a waiter that keeps its place.
        self.wait_rescanning(self.tx.clone().reserve_owned(), shutdown)
            .await?
            .map_err(|_| TailOutcome::SinkClosed)
    }

    /// Sleeps, or returns true when shutdown is requested; a container exit also wakes it.
    async fn sleep(&mut self, shutdown: &CancellationToken, d: Duration) -> bool {
        if let Some(tick) = self.spec.quiet_tick.as_ref().filter(|t| d >= t.interval()) {
            return tokio::select! {
                _ = shutdown.cancelled() => true,
                () = tick.wait() => false,
                _ = self.spec.running.changed() => false,
            };
        }
        tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = tokio::time::sleep(d) => false,
            _ = self.spec.running.changed() => false,
        }
    }

    /// The current file will grow no more: emit what the decoder and framer hold and move on.
    fn finish_current_file(&mut self, records: &mut LogRecords) {
        let Some(mut cur) = self.current.take() else {
            return;
        };
        debug!(source = %self.spec.info.key, ino = cur.fp.ino, offset = cur.framer.read_offset(), "Log file read to its end.");
        let now = now_rfc3339();
        while let Some(frame) = cur.framer.take_partial() {
            if let Err(e) = self.decoder.decode(frame, &now, records) {
                self.counters.skipped += 1;
                internal_events::LogLineSkipped {
                    source: &self.spec.info.key,
                    error: &e,
                }
                .emit();
            }
        }
        self.decoder.flush_pending(records);
        let fp = cur.fp;
        let offset = cur.framer.offset_committed();
        self.remember_completed(refresh_fp(&cur.file, fp, offset));
        // The records just flushed belong to the finished file: the next ack is its end.
        self.finished_file = Some((refresh_fp(&cur.file, fp, offset), cur.path.clone(), offset));
        self.current = self.queue.pop_front();
    }

    /// Returns the file's size, when `fstat` answered.
    fn check_truncation(&mut self) -> Option<u64> {
        let cur = self.current.as_mut()?;
        let meta = cur.file.metadata().ok()?;
        let offset = cur.framer.read_offset();
        let unchanged = cur.head_checked == Some(stamp(&meta));
        // Shrunk below what we read: truncated. Same size or larger but a different head:
        // truncated and already written again before we looked (copytruncate under load).
        let truncated = meta.len() < offset
            || (cur.fp.head_len > 0 && !unchanged && !cur.fp.matches(&cur.file));
        if !truncated {
            cur.head_checked = Some(stamp(&meta));
        }
        if truncated {
            cur.head_checked = None;
            self.counters.truncations += 1;
            internal_events::LogFileTruncated {
                source: &self.spec.info.key,
                path: &cur.path,
                size: meta.len(),
                offset,
            }
            .emit();
            // The descriptor still names the same inode, wherever it was renamed to since.
            if io::Seek::seek(&mut cur.file, io::SeekFrom::Start(0)).is_err() {
                return Some(meta.len());
            }
            cur.framer = LineFramer::with_pool(
                0,
                self.pool.clone(),
                self.spec
                    .format
                    .max_frame_bytes(self.settings.max_line_bytes),
            );
            self.decoder = Decoder::new(self.spec.format, self.settings.max_line_bytes);
            if let Ok(fp) = Fingerprint::of(&cur.file, u64::MAX) {
                cur.fp = fp;
            }
        }
        Some(meta.len())
    }

    fn ack_position(&self) -> Option<(Fingerprint, PathBuf, u64)> {
        if let Some(done) = &self.finished_file {
            return Some(done.clone());
        }
        let cur = self.current.as_ref()?;
        let mut offset = cur.framer.offset_committed();
        if let Some(p) = self.decoder.pending_start() {
            offset = offset.min(p);
        }
        Some((
            refresh_fp(&cur.file, cur.fp, offset),
            cur.path.clone(),
            offset,
        ))
    }

    fn offset_moved(&self) -> bool {
        match (self.ack_position(), &self.last_sent_offset) {
            (Some((fp, _, off)), Some((lfp, loff))) => {
                !(fp.same_inode(lfp.dev, lfp.ino) && off == *loff)
            }
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// Sends the records with the checkpoint they complete, into the place `permit` reserved
    /// if there is one. `None` to go on.
    async fn send(
        &mut self,
        records: &mut LogRecords,
        last: bool,
        permit: Option<mpsc::OwnedPermit<Batch>>,
        shutdown: &CancellationToken,
    ) -> Option<TailOutcome> {
        let Some((fp, path, offset)) = self.ack_position() else {
            records.clear();
            return None;
        };
        if let Some(cur) = self.current.as_mut()
            && cur.fp.same_inode(fp.dev, fp.ino)
        {
            cur.fp = fp;
        }
        self.finished_file = None;
        let bytes = match &self.last_sent_offset {
            Some((lfp, loff)) if lfp.same_inode(fp.dev, fp.ino) => offset.saturating_sub(*loff),
            _ => offset,
        };
        let mut counters = std::mem::take(&mut self.counters);
        counters.lines = records.len() as u64;
        counters.bytes = bytes;
        let batch = Batch {
            source: self.spec.info.clone(),
            identity: self.spec.identity.borrow().clone(),
            // The next batch is likely the size of this one: a busy file's batches do not
            // reallocate as they fill, a quiet file's (a thousand of them) hold no spare room.
            records: std::mem::replace(
                records,
                LogRecords::with_pool(records.len(), self.pool.clone()),
            ),
            ack: CheckpointUpdate {
                source: self.spec.info.key.clone(),
                container_id: self.spec.info.container_id.to_string(),
                checkpoint: Checkpoint {
                    fingerprint: fp,
                    path: path.to_string_lossy().into_owned(),
                    offset,
                },
                counters,
            },
            last,
        };
        self.last_sent_offset = Some((fp, offset));
        let permit = match permit {
            Some(permit) => permit,
            None => match self.reserve(shutdown).await {
                Ok(permit) => permit,
                Err(outcome) => return Some(outcome),
            },
        };
        let sent = self
            .spec
            .left_at
            .as_ref()
            .map(|slot| (slot, batch.ack.checkpoint.clone()));
        permit.send(batch);
        if let Some((slot, checkpoint)) = sent {
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(checkpoint);
        }
        None
    }
}

struct ReadPass {
    bytes: usize,
    eof: bool,
}

/// Reads until end of file or until one batch worth of data, decoding as it goes. `size` is
/// the file's size when the caller has just taken it.
fn read_pass(
    cur: &mut OpenFile,
    size: Option<u64>,
    decoder: &mut Decoder,
    records: &mut LogRecords,
    counters: &mut SourceCounters,
    settings: &TailConfig,
    key: &str,
) -> ReadPass {
    let now = now_rfc3339();
    let budget = settings.read_bytes * PASS_READS;
    let mut total = 0;
    // What fstat says is left sizes the reads: a quiet file gets small buffers.
    let size = size
        .or_else(|| cur.file.metadata().ok().map(|m| m.len()))
        .unwrap_or(u64::MAX);
    if size <= cur.framer.read_offset() {
        // Nothing new: end of file without a read. Sound for rotation too: a writer's last
        // write to a file comes before it creates the next one, which we saw before this.
        return ReadPass {
            bytes: 0,
            eof: true,
        };
    }
    loop {
        let expected =
            usize::try_from(size.saturating_sub(cur.framer.read_offset())).unwrap_or(usize::MAX);
        let n = match cur.framer.read_at_most(&mut cur.file, expected) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                warn!(path = %cur.path.display(), error = %e, "Read failed; retrying later.");
                0
            }
        };
        total += n;
        while let Some(frame) = cur.framer.next_frame() {
            if let Err(e) = decoder.decode(frame, &now, records) {
                counters.skipped += 1;
                internal_events::LogLineSkipped {
                    source: key,
                    error: &e,
                }
                .emit();
            }
        }
        if n == 0 {
            return ReadPass {
                bytes: total,
                eof: true,
            };
        }
        if total >= budget || records.len() >= MAX_BATCH_RECORDS {
            return ReadPass {
                bytes: total,
                eof: false,
            };
        }
    }
}

/// The timer that paces name scans for rotated files while a tailer waits for the sinks;
/// its first tick is taken, so the first scan comes after a period.
async fn rescan_interval() -> tokio::time::Interval {
    let mut rescan = tokio::time::interval(Duration::from_millis(20));
    rescan.tick().await;
    rescan
}

/// Re-hashes the head while the file was shorter than [`HEAD_BYTES`] when first seen, so a
/// checkpoint carries the strongest identity the read bytes allow.
fn refresh_fp(file: &File, fp: Fingerprint, offset: u64) -> Fingerprint {
    if fp.head_len < super::fingerprint::HEAD_BYTES && offset > u64::from(fp.head_len) {
        Fingerprint::of(file, offset).unwrap_or(fp)
    } else {
        fp
    }
}

/// The read time, for formats whose lines carry none.
fn now_rfc3339() -> Bytes {
    Bytes::from(humantime::format_rfc3339_nanos(SystemTime::now()).to_string())
}

/// Adds where an earlier tailer of this process left off to the committed checkpoints: for
/// the same file the further offset wins; another file is a newer one (sent batches follow
/// the chain), so it is added.
fn merge_resume(checkpoints: &mut Vec<Checkpoint>, left: Checkpoint) {
    match checkpoints.iter_mut().find(|cp| {
        cp.fingerprint
            .same_inode(left.fingerprint.dev, left.fingerprint.ino)
    }) {
        Some(cp) => {
            if left.offset > cp.offset {
                *cp = left;
            }
        }
        None => checkpoints.push(left),
    }
}

/// Runs a tailer and logs how it ended.
pub async fn spawn_run(tailer: Tailer, shutdown: CancellationToken) -> TailOutcome {
    let key = tailer.spec.info.key.clone();
    let outcome = tailer.run(shutdown).await;
    match outcome {
        TailOutcome::Finished => info!(source = %key, "Log source read to its end."),
        TailOutcome::Cancelled | TailOutcome::SinkClosed => {
            debug!(source = %key, ?outcome, "Tailer stopped.")
        }
    }
    outcome
}
