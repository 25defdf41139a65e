//! The S3 archive sink: each task's lines as `tar.gz` chunks, a JSON manifest and a
//! completion marker once the task has ended.
//!
//! ```text
//! <key_prefix>tasks/<task id>/chunk-<ms>.tar.gz    <container name>/stdout.log, stderr.log, files/..., lifecycle.log
//! <key_prefix>tasks/<task id>/chunk-<ms>.tar.gz    (a long task: one chunk per `chunk_bytes` spooled;
//!                                                 named by the time it was sealed, in ms)
//! <key_prefix>tasks/<task id>/manifest.json        task identity, containers, chunks with sizes
//! <key_prefix>tasks/<task id>/_COMPLETE            written last: the archive is whole
//! ```
//! (Containers outside ECS: `containers/<name>-<short id>/`, one archive per container.)
//!
//! How: a batch is acknowledged once its lines are in a local spool
//! (`<data_dir>/s3/live/`, the local directory sink's layout and line format), synced like
//! the local sink; so S3 being down never holds back checkpoints, and the spool is the
//! buffer. At each sync (and at once when a spool is full) the sink seals what is ready,
//! moving it to `<data_dir>/s3/sealed/`:
//! a task whose every log source has ended (and stayed so for `task_settle`), or whose spool
//! reached `chunk_bytes`. An uploader task of its own (so S3 never holds up batches) then
//! uploads sealed chunks, oldest first: a `tar.gz` built on
//! disk, sent with PutObject when small and otherwise as a multipart upload whose parts grow
//! (5 MiB, the minimum for a non-final part, doubling every 16 parts up to 64 MiB, so memory
//! stays bounded and 10,000 parts reach far beyond any archive). A chunk is deleted locally
//! only after S3 has it; a failed upload is retried with backoff, and sealed chunks left by a
//! previous run are uploaded after a restart.
//!
//! The drain barrier (`crate::drain`) talks to the sink through an [`ArchiveHandle`]: it asks
//! for a task's archive to be finished now ([`ArchiveHandle::request_end`]: the task's
//! containers have exited and every line of theirs is spooled, so no settle time is needed),
//! and learns when its `_COMPLETE` marker is in S3 (a small record under
//! `<data_dir>/s3/completed/`, kept across restarts). A task's companion shim
//! (`collector.role=companion`) is left out of the archive: it runs until the archive is
//! complete.
//!
//! The spool is bounded (`max_spool_bytes`, measured on disk at each sync): when full, what is
//! live is sealed for upload and batches are refused (the shipper retries them; the log files
//! are the buffer) until uploads make room.
//!
//! Limits of this version: what a previous run spooled and did not seal is sealed and
//! uploaded at start, but whether its task has ended is not known then, so its manifest and
//! marker come when its companion drains it or a source of the task sends again.

use std::collections::{BTreeSet, HashMap};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_smithy_types::error::display::DisplayErrorContext;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tracing::{info, warn};

use super::file::FileSink;
use super::layout::container_dir;
use super::{Sink, SinkError};
use crate::batch::Batch;
use crate::config::S3SinkConfig;
use crate::identify::ContainerIdentity;
use crate::internal_events::s3 as events;

/// The smallest part of a multipart upload but the last
/// (<https://docs.aws.amazon.com/AmazonS3/latest/userguide/qfacts.html>).
pub const MIN_PART_BYTES: usize = 5 * 1024 * 1024;
/// The largest part we send: bounds the memory of an upload.
pub const MAX_PART_BYTES: usize = 64 * 1024 * 1024;
/// Parts per doubling of the part size.
const PARTS_PER_STEP: u32 = 16;

/// Errors of the S3 sink.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// A local spool file or directory could not be used.
    #[error("S3 spool: cannot {operation} {path}")]
    Spool {
        /// What was done.
        operation: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The spool holds `max_spool_bytes`: no batch is taken until uploads make room.
    #[error(
        "the S3 spool holds {bytes} bytes, its bound is {max} (sinks.s3.max_spool_bytes); waiting for uploads"
    )]
    SpoolFull {
        /// Bytes spooled.
        bytes: u64,
        /// The bound.
        max: u64,
    },
    /// An S3 request failed.
    #[error("S3 {operation} s3://{bucket}/{key} failed: {detail}")]
    Request {
        /// The API call.
        operation: &'static str,
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// The SDK's error with its causes ([`DisplayErrorContext`]).
        detail: String,
    },
}

/// The size of part `n` (1-based): 5 MiB doubling every 16 parts, at most 64 MiB.
pub fn part_size(n: u32) -> usize {
    let steps = ((n.saturating_sub(1)) / PARTS_PER_STEP).min(16);
    (MIN_PART_BYTES << steps).min(MAX_PART_BYTES)
}

/// What the sink knows of a unit (a task, or a container outside tasks) being spooled.
#[derive(Debug)]
struct LiveUnit {
    /// Source key -> has ended.
    sources: HashMap<String, bool>,
    /// When every source was last seen ended (reset by a new source or batch).
    all_ended_since: Option<Instant>,
    /// Spooled bytes since the last seal (message bytes plus the time and separators).
    bytes: u64,
    /// The identity of a container of the unit, for the manifest.
    identity: Arc<ContainerIdentity>,
    /// Container names seen.
    containers: BTreeSet<String>,
}

/// A uploaded chunk, in the manifest.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct ChunkRecord {
    key: String,
    bytes: u64,
}

/// `sealed/<unit>/meta.json`, written by the sink only (the uploader only reads it): what
/// the manifest says of the unit, and whether its last chunk is sealed.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct UnitMeta {
    ended: bool,
    task: Option<serde_json::Value>,
    containers: BTreeSet<String>,
}

/// `sealed/<unit>/uploaded.json`, written by the uploader only: the chunks S3 has.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Uploaded {
    chunks: Vec<ChunkRecord>,
}

/// `completed/<unit>.json`, written by the uploader once the unit's marker is in S3.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Completed {
    /// The manifest's key.
    pub manifest: String,
    /// Chunks in the manifest.
    pub chunks: usize,
    /// When the marker was written (RFC 3339).
    pub completed_at: String,
}

/// How long completion records are kept (they answer drains repeated after a restart).
const COMPLETED_KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

/// Shared between the sink, its uploader and the drain barrier.
#[derive(Debug)]
struct ArchiveShared {
    /// Units whose end was asked for, with an identity of theirs for the manifest.
    end_requests: Mutex<HashMap<PathBuf, Arc<ContainerIdentity>>>,
    /// Where completion records are kept.
    completed_root: PathBuf,
    /// Bumped at each completion.
    completions: tokio::sync::watch::Sender<u64>,
    /// `s3://bucket/prefix`, for answers.
    location: String,
}

/// The drain barrier's handle on the S3 archive; cheap to clone.
#[derive(Clone, Debug)]
pub struct ArchiveHandle {
    shared: Arc<ArchiveShared>,
}

impl ArchiveHandle {
    /// Asks for the archive of the task `identity` belongs to be finished at the sink's next
    /// sync: its spool sealed as the last chunk, then its manifest and `_COMPLETE` uploaded
    /// (even when nothing was spooled: every drained task gets its marker).
    pub fn request_end(&self, identity: Arc<ContainerIdentity>) {
        let (unit, _) = unit_of(&identity);
        self.shared
            .end_requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(unit, identity);
    }

    /// The completion record of `identity`'s task, once its marker is in S3.
    pub fn completed(&self, identity: &ContainerIdentity) -> Option<Completed> {
        let (unit, _) = unit_of(identity);
        read_completed(&self.shared.completed_root, &unit)
    }

    /// Changes at each completion: wait on it between two [`completed`](Self::completed).
    pub fn completions(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.completions.subscribe()
    }

    /// `s3://bucket/prefix`.
    pub fn location(&self) -> &str {
        &self.shared.location
    }

    /// The S3 key prefix of `identity`'s task archive.
    pub fn unit_prefix(&self, identity: &ContainerIdentity) -> String {
        let (unit, _) = unit_of(identity);
        format!("{}/{}", self.shared.location, unit.to_string_lossy())
    }
}

fn completed_path(root: &Path, unit: &Path) -> PathBuf {
    let mut p = root.join(unit);
    p.set_extension("json");
    p
}

fn read_completed(root: &Path, unit: &Path) -> Option<Completed> {
    let bytes = std::fs::read(completed_path(root, unit)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Forgets completion records older than [`COMPLETED_KEEP`]; best effort.
fn prune_completed(root: &Path) {
    let Ok(kinds) = std::fs::read_dir(root) else {
        return;
    };
    for kind in kinds.flatten() {
        let Ok(entries) = std::fs::read_dir(kind.path()) else {
            continue;
        };
        for e in entries.flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > COMPLETED_KEEP);
            if old {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// The sink's and the uploader's files.
const META: &str = "meta.json";
/// See [`META`].
const UPLOADED: &str = "uploaded.json";

/// The S3 archive sink.
pub struct S3Sink {
    bucket: String,
    key_prefix: String,
    chunk_bytes: u64,
    task_settle: Duration,
    live_root: PathBuf,
    sealed_root: PathBuf,
    spool: FileSink,
    units: HashMap<PathBuf, LiveUnit>,
    /// Wakes the uploader when a chunk is sealed.
    wake: Arc<Notify>,
    /// Shared with the uploader and the drain barrier.
    archive: ArchiveHandle,
    /// The spool's bound, and its size: measured on disk at each sync, plus what was spooled
    /// since.
    max_spool_bytes: u64,
    spooled: u64,
    spool_root: PathBuf,
}

/// Uploads sealed chunks in its own task, so a slow or failing S3 never holds up the sink's
/// batches (they only need the spool).
struct Uploader {
    client: Client,
    bucket: String,
    key_prefix: String,
    sealed_root: PathBuf,
    archive: ArchiveHandle,
}

/// Longest wait between two passes of the uploader (retries, chunks left by a previous run).
const UPLOAD_RESCAN: Duration = Duration::from_secs(30);

impl std::fmt::Debug for S3Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Sink")
            .field("bucket", &self.bucket)
            .field("key_prefix", &self.key_prefix)
            .finish_non_exhaustive()
    }
}

fn spool_err(operation: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> S3Error {
    let path = path.to_owned();
    move |source| S3Error::Spool {
        operation,
        path,
        source,
    }
}

/// The unit (first two components of the container's directory: `tasks/<task id>`).
fn unit_of(identity: &ContainerIdentity) -> (PathBuf, String) {
    let dir = container_dir(identity);
    let mut parts = dir.components();
    let unit: PathBuf = parts.by_ref().take(2).collect();
    let name: PathBuf = parts.collect();
    (unit, name.to_string_lossy().into_owned())
}

impl S3Sink {
    /// A sink from the configuration, spooling under `spool_dir`.
    pub async fn build(config: &S3SinkConfig, spool_dir: PathBuf) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::standard().with_max_attempts(config.max_attempts));
        if let Some(region) = &config.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(url) = &config.endpoint_url {
            loader = loader.endpoint_url(url.clone());
        }
        let sdk = loader.load().await;
        let s3 = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(config.force_path_style)
            .build();
        info!(bucket = %config.bucket, prefix = %config.key_prefix, spool = %spool_dir.display(), "S3 archive sink enabled.");
        Self::with_client(Client::from_conf(s3), config, spool_dir)
    }

    /// A sink over a ready client; starts its uploader task (which first uploads what a
    /// previous run left sealed).
    pub fn with_client(client: Client, config: &S3SinkConfig, spool_dir: PathBuf) -> Self {
        let live_root = spool_dir.join("live");
        let sealed_root = spool_dir.join("sealed");
        let completed_root = spool_dir.join("completed");
        seal_leftovers(&live_root, &sealed_root);
        prune_completed(&completed_root);
        let wake = Arc::new(Notify::new());
        let archive = ArchiveHandle {
            shared: Arc::new(ArchiveShared {
                end_requests: Mutex::new(HashMap::new()),
                completed_root,
                completions: tokio::sync::watch::Sender::new(0),
                location: format!("s3://{}/{}", config.bucket, config.key_prefix)
                    .trim_end_matches('/')
                    .to_owned(),
            }),
        };
        let uploader = Uploader {
            client,
            bucket: config.bucket.clone(),
            key_prefix: config.key_prefix.clone(),
            sealed_root: sealed_root.clone(),
            archive: archive.clone(),
        };
        tokio::spawn(uploader.run(wake.clone()));
        Self {
            max_spool_bytes: config.max_spool_bytes,
            spooled: dir_bytes(&spool_dir),
            spool_root: spool_dir.clone(),
            bucket: config.bucket.clone(),
            key_prefix: config.key_prefix.clone(),
            chunk_bytes: config.chunk_bytes,
            task_settle: config.task_settle,
            spool: FileSink::new(live_root.clone()),
            live_root,
            sealed_root,
            units: HashMap::new(),
            wake,
            archive,
        }
    }

    /// The drain barrier's handle on this archive.
    pub fn handle(&self) -> ArchiveHandle {
        self.archive.clone()
    }

    fn note_batch(&mut self, batch: &Batch) {
        let (unit, name) = unit_of(&batch.identity);
        let u = self.units.entry(unit).or_insert_with(|| LiveUnit {
            sources: HashMap::new(),
            all_ended_since: None,
            bytes: 0,
            identity: batch.identity.clone(),
            containers: BTreeSet::new(),
        });
        u.containers.insert(name);
        // The latest batch of a source says whether it has ended (a restarted container's
        // source goes on).
        u.sources.insert(batch.source.key.clone(), batch.last);
        u.bytes += batch.message_bytes() as u64 + 32 * batch.records.len() as u64;
        u.all_ended_since = if u.sources.values().all(|e| *e) {
            Some(Instant::now())
        } else {
            None
        };
    }

    /// Moves the spool of every unit that is ready to `sealed/` as its next chunk.
    async fn seal_ready(&mut self) -> Result<(), S3Error> {
        let requested: HashMap<PathBuf, Arc<ContainerIdentity>> = std::mem::take(
            &mut *self
                .archive
                .shared
                .end_requests
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        let mut forced = BTreeSet::new();
        for (unit, identity) in requested {
            if read_completed(&self.archive.shared.completed_root, &unit).is_some()
                && !self.units.contains_key(&unit)
            {
                continue;
            }
            // A unit with nothing spooled in this run (a restart, or a task that wrote
            // nothing) still gets its manifest and marker.
            self.units.entry(unit.clone()).or_insert_with(|| LiveUnit {
                sources: HashMap::new(),
                all_ended_since: None,
                bytes: 0,
                identity,
                containers: BTreeSet::new(),
            });
            forced.insert(unit);
        }
        // A full spool seals everything, so the uploader can make room.
        let full = self.spooled >= self.max_spool_bytes;
        let ready: Vec<(PathBuf, bool)> = self
            .units
            .iter()
            .filter_map(|(unit, u)| {
                let ended = forced.contains(unit)
                    || u.all_ended_since
                        .is_some_and(|t| t.elapsed() >= self.task_settle);
                (ended || u.bytes >= self.chunk_bytes || (full && u.bytes > 0))
                    .then(|| (unit.clone(), ended))
            })
            .collect();
        if ready.is_empty() {
            return Ok(());
        }
        // Close every spool file first (the local sink keeps them open), so no write can
        // land in a sealed chunk.
        self.spool = FileSink::new(self.live_root.clone());
        for (unit, ended) in ready {
            let Some(live) = self.units.get_mut(&unit) else {
                continue;
            };
            let dir = self.sealed_root.join(&unit);
            std::fs::create_dir_all(&dir).map_err(spool_err("create", &dir))?;
            let mut record: UnitMeta = load_json(&dir, META)?;
            record.ended = ended;
            record.containers.extend(live.containers.iter().cloned());
            record.task = Some(task_json(&live.identity));
            let from = self.live_root.join(&unit);
            if from.exists() {
                // Named by the time of sealing: sortable, and never the name of a chunk
                // uploaded before (even for a unit that completes twice).
                let ms = SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis();
                let mut to = dir.join(format!("chunk-{ms:013}"));
                while to.exists() {
                    to = dir.join(format!("{}x", to.display()));
                }
                std::fs::rename(&from, &to).map_err(spool_err("move", &from))?;
                events::S3ChunkSealed {
                    unit: &unit.to_string_lossy(),
                    last: ended,
                }
                .emit();
            }
            // After the chunk is in place: an uploader that reads `ended` finds the last chunk.
            save_json(&dir, META, &record)?;
            self.wake.notify_one();
            live.bytes = 0;
            if ended {
                self.units.remove(&unit);
            }
        }
        Ok(())
    }
}

impl Uploader {
    /// Uploads whenever woken, and every [`UPLOAD_RESCAN`]; after a failure, again with a
    /// backoff (1 s doubling to 30 s). Runs until the process ends: an upload cut short then
    /// is done again at the next start (the chunk stays sealed until S3 has it).
    async fn run(self, wake: Arc<Notify>) {
        let mut backoff = Duration::from_secs(1);
        loop {
            match self.upload_sealed().await {
                Ok(()) => {
                    backoff = Duration::from_secs(1);
                    tokio::select! {
                        _ = wake.notified() => {}
                        _ = tokio::time::sleep(UPLOAD_RESCAN) => {}
                    }
                }
                Err(e) => {
                    events::S3UploadFailed { error: &e }.emit();
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(UPLOAD_RESCAN);
                }
            }
        }
    }

    /// Uploads every sealed chunk, and the manifest and marker of ended units.
    async fn upload_sealed(&self) -> Result<(), S3Error> {
        for dir in sealed_units(&self.sealed_root)? {
            let unit = dir
                .strip_prefix(&self.sealed_root)
                .unwrap_or(&dir)
                .to_string_lossy()
                .into_owned();
            let prefix = format!("{}{unit}", self.key_prefix);
            let mut uploaded: Uploaded = load_json(&dir, UPLOADED)?;
            for chunk in chunk_dirs(&dir)? {
                let name = chunk
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let archive = dir.join(format!("{name}.tar.gz"));
                // Built once (a sealed chunk never changes); a retried upload reuses it.
                if !archive.is_file() {
                    let (c, a) = (chunk.clone(), archive.clone());
                    tokio::task::spawn_blocking(move || build_archive(&c, &a))
                        .await
                        .map_err(|_| S3Error::Spool {
                            operation: "archive (task panicked)",
                            path: chunk.clone(),
                            source: std::io::Error::other("join"),
                        })??;
                }
                let key = format!("{prefix}/{name}.tar.gz");
                let bytes = self.upload_file(&archive, &key).await?;
                // A restart between the upload and the removal below uploads it again.
                if !uploaded.chunks.iter().any(|c| c.key == key) {
                    uploaded.chunks.push(ChunkRecord { key, bytes });
                }
                save_json(&dir, UPLOADED, &uploaded)?;
                std::fs::remove_dir_all(&chunk).map_err(spool_err("remove", &chunk))?;
                std::fs::remove_file(&archive).map_err(spool_err("remove", &archive))?;
            }
            // Read after the uploads: the sink writes `ended` once the last chunk is in place,
            // so a unit is complete when it says so and no chunk is left (a chunk sealed
            // meanwhile waits for the next pass, which the sink's wake-up starts).
            let meta: UnitMeta = load_json(&dir, META)?;
            if meta.ended && chunk_dirs(&dir)?.is_empty() {
                let manifest = serde_json::json!({
                    "unit": unit,
                    "task": meta.task,
                    "containers": meta.containers,
                    "chunks": uploaded.chunks,
                    "completed_at": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
                    "collector_version": env!("CARGO_PKG_VERSION"),
                });
                let body = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
                self.put(&format!("{prefix}/manifest.json"), body).await?;
                self.put(&format!("{prefix}/_COMPLETE"), Vec::new()).await?;
                info!(unit = %unit, chunks = uploaded.chunks.len(), "Task archive complete in S3.");
                events::S3TaskCompleted.emit();
                let record = Completed {
                    manifest: format!("{prefix}/manifest.json"),
                    chunks: uploaded.chunks.len(),
                    completed_at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
                };
                let path = completed_path(&self.archive.shared.completed_root, Path::new(&unit));
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(spool_err("create", parent))?;
                    save_json(
                        parent,
                        &path.file_name().unwrap_or_default().to_string_lossy(),
                        &record,
                    )?;
                }
                self.archive.shared.completions.send_modify(|n| *n += 1);
                // Only what this pass knows: a chunk the sink sealed meanwhile (a late line of
                // the unit) stays, with the directory, for the next pass.
                for name in [UPLOADED, META] {
                    let path = dir.join(name);
                    if let Err(e) = std::fs::remove_file(&path)
                        && e.kind() != std::io::ErrorKind::NotFound
                    {
                        return Err(spool_err("remove", &path)(e));
                    }
                }
                let _ = std::fs::remove_dir(&dir);
            }
        }
        Ok(())
    }

    fn request_err(&self, operation: &'static str, key: &str, detail: String) -> S3Error {
        S3Error::Request {
            operation,
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            detail,
        }
    }

    async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), S3Error> {
        let bytes = body.len() as u64;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.request_err("PutObject", key, DisplayErrorContext(&e).to_string()))?;
        events::S3ObjectUploaded {
            key,
            bytes,
            parts: 0,
        }
        .emit();
        Ok(())
    }

    /// Uploads a file: PutObject when it fits the first part, else multipart with growing
    /// parts. Returns its size.
    async fn upload_file(&self, path: &Path, key: &str) -> Result<u64, S3Error> {
        let mut file = std::fs::File::open(path).map_err(spool_err("open", path))?;
        let size = file.metadata().map_err(spool_err("stat", path))?.len();
        if size <= part_size(1) as u64 {
            let mut body = Vec::with_capacity(size as usize);
            file.read_to_end(&mut body)
                .map_err(spool_err("read", path))?;
            self.put(key, body).await?;
            return Ok(size);
        }
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| {
                self.request_err(
                    "CreateMultipartUpload",
                    key,
                    DisplayErrorContext(&e).to_string(),
                )
            })?;
        let upload_id = created.upload_id().unwrap_or_default().to_owned();
        let result = self.upload_parts(&mut file, path, key, &upload_id).await;
        if let Ok(parts) = result {
            events::S3ObjectUploaded {
                key,
                bytes: size,
                parts,
            }
            .emit();
        }
        if result.is_err() {
            // Best effort: parts of an abandoned upload cost storage until aborted.
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result.map(|_| size)
    }

    async fn upload_parts(
        &self,
        file: &mut std::fs::File,
        path: &Path,
        key: &str,
        upload_id: &str,
    ) -> Result<u64, S3Error> {
        let mut parts = Vec::new();
        let mut n: u32 = 1;
        loop {
            let want = part_size(n);
            let mut buf = Vec::with_capacity(want);
            file.by_ref()
                .take(want as u64)
                .read_to_end(&mut buf)
                .map_err(spool_err("read", path))?;
            if buf.is_empty() {
                break;
            }
            let last = buf.len() < want;
            let out = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(n as i32)
                .body(ByteStream::from(buf))
                .send()
                .await
                .map_err(|e| {
                    self.request_err("UploadPart", key, DisplayErrorContext(&e).to_string())
                })?;
            parts.push(
                CompletedPart::builder()
                    .set_e_tag(out.e_tag().map(str::to_owned))
                    .part_number(n as i32)
                    .build(),
            );
            if last {
                break;
            }
            n += 1;
        }
        let count = parts.len() as u64;
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| {
                self.request_err(
                    "CompleteMultipartUpload",
                    key,
                    DisplayErrorContext(&e).to_string(),
                )
            })?;
        Ok(count)
    }
}

/// Seals, as chunks that are not the last, what a previous run spooled and did not seal, so it
/// is uploaded rather than left on disk. (Whether those tasks have ended is not known here;
/// their manifest follows when a source of theirs sends again.) Best effort: failures are
/// logged, the spool stays for the next start.
fn seal_leftovers(live_root: &Path, sealed_root: &Path) {
    let Ok(kinds) = std::fs::read_dir(live_root) else {
        return;
    };
    for kind in kinds.flatten() {
        let Ok(units) = std::fs::read_dir(kind.path()) else {
            continue;
        };
        for unit in units.flatten() {
            let from = unit.path();
            let Ok(rel) = from.strip_prefix(live_root) else {
                continue;
            };
            let dir = sealed_root.join(rel);
            let ms = SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis();
            let to = dir.join(format!("chunk-{ms:013}"));
            let moved = std::fs::create_dir_all(&dir).and_then(|()| std::fs::rename(&from, &to));
            match moved {
                Ok(()) => {
                    info!(unit = %rel.display(), "S3 spool left by a previous run sealed for upload.")
                }
                Err(e) => {
                    warn!(path = %from.display(), error = %e, "Cannot seal an S3 spool left by a previous run.")
                }
            }
        }
    }
}

fn task_json(identity: &ContainerIdentity) -> serde_json::Value {
    let ecs = identity.ecs.as_ref();
    serde_json::json!({
        "task_id": ecs.and_then(|e| e.task_id.as_ref()).map(|t| t.as_str().to_owned()),
        "task_arn": ecs.and_then(|e| e.task_arn.as_ref()).map(|t| t.as_str().to_owned()),
        "family": ecs.and_then(|e| e.family.clone()),
        "revision": ecs.and_then(|e| e.revision),
        "cluster": ecs.and_then(|e| e.cluster.clone()),
    })
}

fn load_json<T: Default + serde::de::DeserializeOwned>(
    dir: &Path,
    name: &str,
) -> Result<T, S3Error> {
    let path = dir.join(name);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            warn!(path = %path.display(), error = %e, "Unreadable S3 unit state; starting it again.");
            T::default()
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(spool_err("read", &path)(e)),
    }
}

/// Writes through a temporary file and a rename, so a reader sees the old or the new state.
fn save_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<(), S3Error> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let body = serde_json::to_vec(value).unwrap_or_default();
    std::fs::write(&tmp, body).map_err(spool_err("write", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(spool_err("rename", &tmp))
}

/// Bytes of the files under `dir` (the spool; a few files per unit, so cheap at each sync).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

/// `sealed/<kind>/<name>` directories (units with sealed chunks or state).
fn sealed_units(root: &Path) -> Result<Vec<PathBuf>, S3Error> {
    let mut out = Vec::new();
    let Ok(kinds) = std::fs::read_dir(root) else {
        return Ok(out);
    };
    for kind in kinds.flatten() {
        let kind = kind.path();
        let entries = std::fs::read_dir(&kind).map_err(spool_err("list", &kind))?;
        for e in entries.flatten() {
            if e.path().is_dir() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The `chunk-NNNN` directories of a unit, oldest first.
fn chunk_dirs(dir: &Path) -> Result<Vec<PathBuf>, S3Error> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(spool_err("list", dir))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("chunk-"))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Writes `chunk` as a gzip'd tar to `archive`, through a temporary file renamed at the end,
/// so an `archive` that exists is whole (a crash leaves only the temporary file, rebuilt).
fn build_archive(chunk: &Path, archive: &Path) -> Result<(), S3Error> {
    let tmp = archive.with_extension("gz.tmp");
    let file = std::fs::File::create(&tmp).map_err(spool_err("create", &tmp))?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    tar.append_dir_all(".", chunk)
        .map_err(spool_err("archive", chunk))?;
    let gz = tar.into_inner().map_err(spool_err("archive", archive))?;
    let file = gz.finish().map_err(spool_err("compress", archive))?;
    file.sync_all().map_err(spool_err("sync", archive))?;
    std::fs::rename(&tmp, archive).map_err(spool_err("rename", &tmp))
}

impl Sink for S3Sink {
    fn name(&self) -> &'static str {
        "s3"
    }

    fn send_batch<'a>(&'a mut self, batch: &'a Batch) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            // The companion shim outlives the archive it waits for (module docs).
            if batch.identity.is_companion() {
                return Ok(());
            }
            if self.spooled >= self.max_spool_bytes {
                // Measure again (uploads may have made room), and seal what is live so the
                // uploader can.
                self.spooled = dir_bytes(&self.spool_root);
                if self.spooled >= self.max_spool_bytes {
                    if let Err(e) = self.spool.sync().await {
                        warn!(error = %crate::internal_events::chain(&e), "S3 spool sync failed.");
                    } else if let Err(e) = self.seal_ready().await {
                        warn!(error = %crate::internal_events::chain(&e), "Sealing the full S3 spool failed.");
                    }
                    return Err(S3Error::SpoolFull {
                        bytes: self.spooled,
                        max: self.max_spool_bytes,
                    }
                    .into());
                }
            }
            self.spool.send_batch(batch).await?;
            self.spooled += batch.message_bytes() as u64 + 32 * batch.records.len() as u64;
            self.note_batch(batch);
            // A chunk is cut as soon as it is full, not at the next sync, so chunks stay
            // near `chunk_bytes` however fast lines come.
            // The batch is in the spool whatever happens next: a failed seal is retried at the
            // next sync rather than failing the batch (which would spool it twice).
            if self.units.values().any(|u| u.bytes >= self.chunk_bytes) {
                let sealed = match self.spool.sync().await {
                    Ok(()) => self.seal_ready().await.map_err(SinkError::from),
                    Err(e) => Err(e),
                };
                if let Err(e) = sealed {
                    warn!(error = %crate::internal_events::chain(&e), "Sealing an S3 chunk failed; retrying at the next sync.");
                }
            }
            Ok(())
        })
    }

    fn sync(&mut self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            self.spool.sync().await?;
            self.spooled = dir_bytes(&self.spool_root);
            self.seal_ready().await?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A spool left by a previous run is sealed at start (and so uploaded), not left behind.
    #[tokio::test]
    async fn leftovers_of_a_previous_run_are_sealed_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live/tasks/abc/app");
        std::fs::create_dir_all(&live).unwrap();
        std::fs::write(live.join("stdout.log"), b"t x\n").unwrap();
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .build();
        let _sink = S3Sink::with_client(
            Client::from_conf(conf),
            &S3SinkConfig::default(),
            dir.path().to_owned(),
        );
        assert!(!dir.path().join("live/tasks/abc").exists());
        let chunks = chunk_dirs(&dir.path().join("sealed/tasks/abc")).unwrap();
        assert_eq!(chunks.len(), 1);
        assert!(chunks[0].join("app/stdout.log").is_file());
    }

    /// Past `max_spool_bytes` the sink takes no batch (the shipper retries it, the tailers
    /// wait) and seals what it spooled so the uploader can make room; a chunk sent to S3 makes
    /// room again. A companion's batches are taken without being spooled.
    #[tokio::test]
    async fn a_full_spool_refuses_batches_and_seals_for_upload() {
        use crate::control::testing::test_batch;
        let dir = tempfile::tempdir().unwrap();
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:9")
            .build();
        let config = S3SinkConfig {
            max_spool_bytes: 4096,
            max_attempts: 1,
            ..S3SinkConfig::default()
        };
        let mut sink = S3Sink::with_client(Client::from_conf(conf), &config, dir.path().to_owned());
        let line = "x".repeat(1000);
        let mut taken = 0;
        let refused = loop {
            match sink
                .send_batch(&test_batch(&[&line], 1000 * (taken + 1)))
                .await
            {
                Ok(()) => taken += 1,
                Err(e) => break e,
            }
            assert!(taken < 100, "the bound never held");
        };
        assert!(
            matches!(refused, SinkError::S3(S3Error::SpoolFull { max: 4096, .. })),
            "{refused}"
        );
        assert!(
            (4..=6).contains(&taken),
            "{taken} batches of 1000 bytes taken"
        );
        // What was live is sealed for upload.
        let sealed = sealed_units(&dir.path().join("sealed")).unwrap();
        assert_eq!(sealed.len(), 1);
        assert!(!chunk_dirs(&sealed[0]).unwrap().is_empty());
        // Still full: refused again.
        assert!(sink.send_batch(&test_batch(&["y"], 1)).await.is_err());
        // The uploader (here: the test) removes the chunk: room again.
        for c in chunk_dirs(&sealed[0]).unwrap() {
            std::fs::remove_dir_all(c).unwrap();
        }
        sink.send_batch(&test_batch(&["z"], 2)).await.unwrap();
        // A companion's lines are never spooled.
        let mut companion = test_batch(&[&line], 3);
        let mut identity = (*companion.identity).clone();
        identity
            .labels
            .insert("collector.role".into(), "companion".into());
        companion.identity = Arc::new(identity);
        let before = dir_bytes(dir.path());
        sink.send_batch(&companion).await.unwrap();
        assert_eq!(dir_bytes(dir.path()), before);
    }

    #[test]
    fn parts_grow_within_the_limits() {
        assert_eq!(part_size(1), MIN_PART_BYTES);
        assert_eq!(part_size(16), MIN_PART_BYTES);
        assert_eq!(part_size(17), 2 * MIN_PART_BYTES);
        assert_eq!(part_size(10_000), MAX_PART_BYTES);
        // 10,000 parts hold far more than any archive we make.
        let total: u64 = (1..=10_000).map(|n| part_size(n) as u64).sum();
        assert!(total > 500 * 1024 * 1024 * 1024);
    }

    #[test]
    fn archives_hold_the_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let chunk = dir.path().join("chunk-0001");
        std::fs::create_dir_all(chunk.join("app")).unwrap();
        std::fs::write(chunk.join("app/stdout.log"), b"t one\nt two\n").unwrap();
        let archive = dir.path().join("chunk-0001.tar.gz");
        build_archive(&chunk, &archive).unwrap();
        let gz = flate2::read::GzDecoder::new(std::fs::File::open(&archive).unwrap());
        let mut tar = tar::Archive::new(gz);
        let mut found = Vec::new();
        for e in tar.entries().unwrap() {
            let mut e = e.unwrap();
            let mut s = String::new();
            if e.header().entry_type().is_file() {
                e.read_to_string(&mut s).unwrap();
                found.push((e.path().unwrap().display().to_string(), s));
            }
        }
        assert_eq!(
            found,
            [("app/stdout.log".to_owned(), "t one\nt two\n".to_owned())]
        );
    }
}
