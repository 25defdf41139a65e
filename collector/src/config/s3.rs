//! `[sinks.s3]`: the S3 archive sink's configuration (`docs/sinks.md` explains the objects).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// The S3 archive sink.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3SinkConfig {
    /// Off by default. Credentials come from the SDK's default chain.
    pub enabled: bool,
    /// The bucket (must exist).
    pub bucket: String,
    /// The AWS region; without it, the SDK's chain decides.
    pub region: Option<String>,
    /// Another endpoint than AWS's (a VPC endpoint, or a local test server).
    pub endpoint_url: Option<String>,
    /// Path-style addressing (`<endpoint>/<bucket>/<key>`), needed by most S3-compatible
    /// servers and by `localhost` endpoints.
    pub force_path_style: bool,
    /// Prepended to every key; each task's objects go under
    /// `<key_prefix>tasks/<task id>/` (other containers: `containers/<name>-<short id>/`).
    pub key_prefix: String,
    /// A task's lines are sealed into a chunk (`chunk-NNNN.tar.gz`) once this many bytes are
    /// spooled for it, so a long task uploads as it goes; the last chunk is sealed when the
    /// task ends.
    pub chunk_bytes: u64,
    /// A task is taken as ended this long after every log source seen for it has ended, so
    /// a container that starts late is not cut off.
    #[serde(with = "humantime_serde")]
    pub task_settle: Duration,
    /// Attempts per S3 request by the SDK before the upload is tried again at the next sync.
    pub max_attempts: u32,
    /// The most the local spool (`<data_dir>/s3/`: lines not yet in S3) may hold. Past it
    /// (S3 down or slow for long), what is spooled is sealed for upload and the sink takes
    /// no more batches until uploads make room: the tailers wait and the log files are the
    /// buffer, so the disk never fills with the spool.
    pub max_spool_bytes: u64,
}

impl Default for S3SinkConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            bucket: String::new(),
            region: None,
            endpoint_url: None,
            force_path_style: false,
            key_prefix: "collector/".to_owned(),
            chunk_bytes: 256 * 1024 * 1024,
            task_settle: Duration::from_secs(10),
            max_attempts: 3,
            max_spool_bytes: 2 * 1024 * 1024 * 1024,
        }
    }
}

impl S3SinkConfig {
    /// Semantic checks.
    ///
    /// # Errors
    /// The first invalid value, with its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, message: &str| {
            Err(ConfigError::Invalid {
                key: Some(format!("sinks.s3.{key}")),
                message: message.to_owned(),
            })
        };
        if self.enabled && self.bucket.is_empty() {
            return bad("bucket", "must be set when the S3 sink is enabled");
        }
        if self.chunk_bytes < 1024 * 1024 {
            return bad("chunk_bytes", "must be at least 1048576");
        }
        if self.max_spool_bytes < self.chunk_bytes {
            return bad("max_spool_bytes", "must be at least chunk_bytes");
        }
        if self.max_attempts == 0 {
            return bad("max_attempts", "must be at least 1");
        }
        if self.key_prefix.starts_with('/') {
            return bad("key_prefix", "must not start with `/`");
        }
        Ok(())
    }
}
