//! Batches: records grouped for the sinks, carrying the checkpoint they complete.
//!
//! A tailer cuts one batch per read pass over one file (bounded by the read size and a record
//! count), so a batch's records are contiguous in that file and its acknowledgement is a
//! single offset. Sinks that need other groupings (CloudWatch streams, S3 objects) regroup
//! downstream while keeping the acks.

use std::path::PathBuf;
use std::sync::Arc;

use crate::identify::{ContainerId, ContainerIdentity};
use crate::state::CheckpointUpdate;
use crate::tail::LogRecords;

/// What kind of log source a batch comes from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// The container's stdout/stderr (Docker json-file log).
    ContainerOutput,
    /// A file the container declared (label `collector.logs`).
    DeclaredFile {
        /// Its path inside the container.
        container_path: PathBuf,
    },
    /// The collector's own records about the container: how each run ended (`death.rs`).
    Lifecycle,
    /// The metrics the container sent, as CloudWatch Embedded Metric Format lines
    /// (`metrics/emf.rs`).
    Metrics,
}

/// A log source: one logical file chain (the live file and its rotated predecessors).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SourceInfo {
    /// Stable key: `<container id>/json` or `<container id>/file:<path in container>`.
    pub key: String,
    /// The container it belongs to.
    pub container_id: ContainerId,
    /// What it is.
    pub kind: SourceKind,
}

impl SourceInfo {
    /// The container output source of a container.
    pub fn container_output(container_id: ContainerId) -> Self {
        Self {
            key: format!("{container_id}/json"),
            container_id,
            kind: SourceKind::ContainerOutput,
        }
    }

    /// A declared file of a container.
    pub fn declared_file(container_id: ContainerId, container_path: PathBuf) -> Self {
        Self {
            key: format!("{container_id}/file:{}", container_path.display()),
            container_id,
            kind: SourceKind::DeclaredFile { container_path },
        }
    }
}

/// Records of one source, in file order, with the checkpoint that delivering them completes.
///
/// Its records point into the read buffers of the tailer (one reference per buffer, see
/// [`LogRecords`]); dropping the batch once delivered gives the buffers back for reuse.
#[derive(Clone, Debug)]
pub struct Batch {
    /// Where the records come from.
    pub source: Arc<SourceInfo>,
    /// The container's identity when the batch was cut.
    pub identity: Arc<ContainerIdentity>,
    /// The records (may be empty when only the checkpoint moves, e.g. past skipped lines).
    pub records: LogRecords,
    /// Persisted once every sink has acknowledged the batch.
    pub ack: CheckpointUpdate,
    /// The source has ended (its container exited and every file was read): sinks may close
    /// what they hold open for it.
    pub last: bool,
}

impl Batch {
    /// Bytes of message text in the batch.
    pub fn message_bytes(&self) -> usize {
        self.records.message_bytes()
    }
}
