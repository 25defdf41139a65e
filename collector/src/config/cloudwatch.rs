//! `[sinks.cloudwatch]`: the CloudWatch Logs sink's configuration.
//!
//! The `///` comments are the reference (`docs/configuration.md` and `docs/sinks.md` mirror
//! them). Names are templates over the container's identity; see
//! [`crate::ship::naming`] for the placeholders.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::ship::naming::Template;

/// The retention values `PutRetentionPolicy` accepts
/// (<https://docs.aws.amazon.com/AmazonCloudWatchLogs/latest/APIReference/API_PutRetentionPolicy.html>).
pub const RETENTION_DAYS: &[u32] = &[
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

/// The CloudWatch Logs sink.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudWatchSinkConfig {
    /// Off by default. Credentials come from the SDK's default chain (environment, profile,
    /// the instance role through IMDSv2, the ECS task role).
    pub enabled: bool,
    /// The AWS region; without it, the SDK's chain decides (`AWS_REGION`, profile, IMDS).
    pub region: Option<String>,
    /// Another endpoint than AWS's (a VPC endpoint, or a local test server such as moto).
    pub endpoint_url: Option<String>,
    /// The log group of a container's lines: a template over its identity (placeholders
    /// `{cluster}`, `{family}`, `{revision}`, `{task_id}`, `{container_name}`,
    /// `{container_id}`, `{stream}`, `{file}`; an unknown value renders as `unknown`).
    pub log_group: String,
    /// The log stream, a template like `log_group`. The default is the awslogs driver's
    /// `prefix/container-name/task-id` with the prefix `ecs`.
    pub log_stream: String,
    /// Create a missing log group (with `retention_days`). Off: the group must exist, and the
    /// collector needs no `logs:CreateLogGroup` permission.
    pub create_group: bool,
    /// Retention set on groups the collector creates; none keeps the service default
    /// (never expire). One of the values CloudWatch accepts (1, 3, 5, 7, 14, 30, ...).
    pub retention_days: Option<u32>,
    /// How long one HTTP attempt may take before it is abandoned and retried.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Attempts per request by the SDK (throttling, 5xx, connection errors; exponential
    /// backoff with jitter) before the batch is handed back to the shipper, which retries
    /// it with its own backoff.
    pub max_attempts: u32,
    /// Largest message of one log event, in bytes; longer lines are cut into several events,
    /// each but the last ending with ` [continued]`. The service allows 1 MB since 2025;
    /// lower it for a partition that still has the old 256 KB limit.
    pub max_event_bytes: usize,
}

impl Default for CloudWatchSinkConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            region: None,
            endpoint_url: None,
            log_group: "/ecs/{family}".to_owned(),
            log_stream: "ecs/{container_name}/{task_id}".to_owned(),
            create_group: true,
            retention_days: None,
            request_timeout: Duration::from_secs(30),
            max_attempts: 3,
            max_event_bytes: crate::ship::cloudwatch_batch::MAX_EVENT_BYTES,
        }
    }
}

impl CloudWatchSinkConfig {
    /// Semantic checks.
    ///
    /// # Errors
    /// The first invalid value, with its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, message: String| {
            Err(ConfigError::Invalid {
                key: Some(format!("sinks.cloudwatch.{key}")),
                message,
            })
        };
        for (key, text) in [
            ("log_group", &self.log_group),
            ("log_stream", &self.log_stream),
        ] {
            if let Err(e) = Template::parse(text) {
                return bad(key, e.to_string());
            }
        }
        if let Some(days) = self.retention_days
            && !RETENTION_DAYS.contains(&days)
        {
            return bad(
                "retention_days",
                format!("must be one of {RETENTION_DAYS:?}"),
            );
        }
        if self.max_attempts == 0 {
            return bad("max_attempts", "must be at least 1".to_owned());
        }
        if self.request_timeout.is_zero() {
            return bad("request_timeout", "must be more than zero".to_owned());
        }
        let max = crate::ship::cloudwatch_batch::MAX_EVENT_BYTES;
        if self.max_event_bytes < 1024 || self.max_event_bytes > max {
            return bad("max_event_bytes", format!("must be between 1024 and {max}"));
        }
        if self.endpoint_url.as_ref().is_some_and(|u| u.is_empty()) {
            return bad("endpoint_url", "must not be empty".to_owned());
        }
        Ok(())
    }
}
