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
    /// `{container_id}`, `{stream}`, `{file}`, and the host's `{instance_id}` and
    /// `{availability_zone}` from IMDSv2; an unknown value renders as `unknown`).
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
    /// The sink's disk buffer (`<data_dir>/buffer/cloudwatch/`), in bytes; 0: none. While
    /// CloudWatch Logs is down or throttles, the batches it has not taken go there once its
    /// queue backs up, so the other sinks and the checkpoints go on; they are sent, oldest
    /// first, when it is back (also after a restart). Past the bound, every sink waits and
    /// the log files are the buffer.
    pub buffer_max_bytes: u64,
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
            buffer_max_bytes: 1024 * 1024 * 1024,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Overrides};

    fn load(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        Config::load_from(
            Some(&path),
            &Overrides::default(),
            figment::providers::Env::prefixed("COLLECTOR_TEST_NONE_"),
        )
    }

    #[test]
    fn defaults_are_the_awslogs_names_and_off() {
        let c = load("").unwrap().sinks.cloudwatch;
        assert!(!c.enabled);
        assert_eq!(c.log_group, "/ecs/{family}");
        assert_eq!(c.log_stream, "ecs/{container_name}/{task_id}");
        let c = load("[sinks.cloudwatch]\nenabled = true\nregion = \"eu-west-1\"\nretention_days = 30\nrequest_timeout = \"5s\"")
            .unwrap()
            .sinks
            .cloudwatch;
        assert!(c.enabled);
        assert_eq!(c.retention_days, Some(30));
        assert_eq!(c.request_timeout, Duration::from_secs(5));
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (
                "[sinks.cloudwatch]\nlog_group = \"/ecs/{famly}\"",
                "sinks.cloudwatch.log_group",
            ),
            (
                "[sinks.cloudwatch]\nlog_stream = \"{task_id\"",
                "sinks.cloudwatch.log_stream",
            ),
            (
                "[sinks.cloudwatch]\nretention_days = 2",
                "sinks.cloudwatch.retention_days",
            ),
            (
                "[sinks.cloudwatch]\nmax_event_bytes = 2000000",
                "sinks.cloudwatch.max_event_bytes",
            ),
            (
                "[sinks.cloudwatch]\nmax_attempts = 0",
                "sinks.cloudwatch.max_attempts",
            ),
            ("[sinks.cloudwatch]\nregoin = \"x\"", "regoin"),
        ];
        for (text, key) in cases {
            let err = load(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text:?} -> {err}");
        }
        let err = load("[sinks.cloudwatch]\nretention_days = 2")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("COLLECTOR_SINKS__CLOUDWATCH__RETENTION_DAYS"),
            "{err}"
        );
    }

    #[test]
    fn cloudwatch_alone_is_enough() {
        let c = load("[sinks.file]\nenabled = false\n[sinks.cloudwatch]\nenabled = true").unwrap();
        assert!(c.sinks.cloudwatch.enabled && !c.sinks.file.enabled);
        let text = c.to_toml().unwrap();
        assert_eq!(load(&text).unwrap(), c);
    }
}
