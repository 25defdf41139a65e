//! `[metrics]`: the Graphite and StatsD listeners, their abuse bounds, the per-task store and
//! the carbon forwarder. The `///` comments are the reference (`docs/configuration.md` and
//! `docs/metrics.md` mirror them).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Metrics ingest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Receive metrics at all. Off: no listener, no socket.
    pub enabled: bool,
    /// Graphite plaintext over TCP (`path value [timestamp]\n`). Empty to disable.
    /// `0.0.0.0` reaches containers on Docker bridge networks (they send to their gateway);
    /// a sample from an address that is no container's is kept as "unattributed".
    pub tcp: String,
    /// Graphite plaintext over UDP, one or more lines per datagram. Empty to disable.
    pub udp: String,
    /// Graphite plaintext over a unix stream socket, attributed by the peer's credentials
    /// (the surest way: no address to spoof). Defaults to `<data_dir>/task/graphite.sock`; mode
    /// 0666 so non-root processes in containers can write to it once it is bind-mounted.
    /// Give it a directory of its own and bind-mount the directory: the socket is made anew
    /// at each start, and a bind-mounted socket file would stay the old one.
    pub unix: Option<PathBuf>,
    /// Serve the unix socket.
    pub unix_enabled: bool,
    /// StatsD over UDP (`name:value|c|g|ms[|@rate]`), aggregated per `statsd_flush_interval`
    /// and stored and forwarded as Graphite samples. Empty to disable.
    pub statsd: String,
    /// How often StatsD aggregates are emitted.
    #[serde(with = "humantime_serde")]
    pub statsd_flush_interval: Duration,
    /// Longest accepted line in bytes; longer lines are discarded (up to their newline,
    /// without buffering them) and counted as `line_too_long`.
    pub max_line_bytes: usize,
    /// Samples per second accepted from one task (or one container outside a task, or all
    /// unattributed senders together); the excess is dropped and counted for that task.
    pub max_samples_per_second: u32,
    /// Concurrent TCP or unix connections from one peer (IP address, or container); further
    /// connections are closed at once and counted.
    pub max_connections_per_peer: usize,
    /// Concurrent TCP and unix connections in all; further connections are closed at once
    /// and counted.
    pub max_connections: usize,
    /// A connection that sends nothing for this long is closed (its slot is freed).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Accepted timestamps are at most this old...
    #[serde(with = "humantime_serde")]
    pub max_sample_age: Duration,
    /// ...and at most this far in the future (clock skew).
    #[serde(with = "humantime_serde")]
    pub max_sample_future: Duration,
    /// How long a task's metrics are kept after its last sample.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Samples kept per metric path and task (the latest value is always kept besides).
    pub history_per_path: usize,
    /// Distinct metric paths kept per task; samples of further paths are dropped and counted.
    pub max_paths_per_task: usize,
    /// How long received samples may be held in memory before they are written to the state
    /// database. The store coalesces them per path meanwhile (latest value, count, newest
    /// `history_per_path` samples), so a write costs the same however many samples a path
    /// got: a longer interval means fewer writes, and the control API and `inspect` lagging
    /// by up to this much. A drain barrier and shutdown write at once; the buffer is also
    /// written early when it holds 20,000 paths or 250,000 history samples, so memory stays
    /// bounded whatever the input rate.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Chunks (the samples of one read or one datagram) buffered between the listeners and
    /// the store. Bounded: when full, UDP samples are dropped and counted and TCP/unix
    /// senders wait (their socket buffers fill, so they slow down).
    pub channel_chunks: usize,
    /// Forwarding to a Graphite server.
    pub carbon: CarbonConfig,
    /// CloudWatch Embedded Metric Format lines in each sending container's log stream.
    pub emf: EmfConfig,
}

/// The EMF output: each interval, the samples of each sending container become JSON lines
/// in the CloudWatch Embedded Metric Format
/// (<https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>),
/// delivered like the container's own lines (source `metrics`: `{stream}` is `metrics` in
/// the sinks' templates), so CloudWatch Logs turns them into metrics of the task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmfConfig {
    /// Off by default.
    pub enabled: bool,
    /// The CloudWatch metric namespace.
    pub namespace: String,
    /// How often each container's samples are written (one value array per path).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Chunks buffered for the EMF writer; beyond, samples are dropped (counted).
    pub queue_chunks: usize,
}

impl Default for EmfConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            namespace: "ECS/Tasks".to_owned(),
            interval: Duration::from_secs(60),
            queue_chunks: 4096,
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            tcp: format!("0.0.0.0:{DEFAULT_PORT}"),
            udp: format!("0.0.0.0:{DEFAULT_PORT}"),
            unix: None,
            unix_enabled: true,
            statsd: "0.0.0.0:8125".to_owned(),
            statsd_flush_interval: Duration::from_secs(10),
            max_line_bytes: 4096,
            max_samples_per_second: 10_000,
            max_connections_per_peer: 64,
            max_connections: 4096,
            idle_timeout: Duration::from_secs(600),
            max_sample_age: Duration::from_secs(30 * 24 * 3600),
            max_sample_future: Duration::from_secs(600),
            retention: Duration::from_secs(7 * 24 * 3600),
            history_per_path: 100,
            max_paths_per_task: 10_000,
            flush_interval: Duration::from_secs(1),
            channel_chunks: 1024,
            carbon: CarbonConfig::default(),
            emf: EmfConfig::default(),
        }
    }
}

/// The Graphite port (carbon's plaintext default is 2003; 13290 is the companion's, so a
/// task's sender needs no change whether it talks to the shim or the host).
pub const DEFAULT_PORT: u16 = 13290;

/// The `carbon` forwarder: relays every accepted sample to a Graphite server over TCP
/// plaintext, with the sender's identity in the path.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CarbonConfig {
    /// Forward at all.
    pub enabled: bool,
    /// The Graphite server's plaintext port (`host:port`).
    pub address: String,
    /// The forwarded path. Placeholders: `{cluster}`, `{family}`, `{revision}`, `{task_id}`,
    /// `{container_name}`, `{container_id}` (12 characters), `{path}` (the sender's path).
    /// Unknown values become `unknown`; dots and spaces in values become `_`, so a value never
    /// adds a path level.
    pub template: String,
    /// The forwarded path of samples no task or container could be found for.
    pub unattributed_template: String,
    /// Chunks (the samples of one read or datagram) buffered for the server; when it is
    /// down longer than this lasts, the excess is dropped and counted.
    pub queue_chunks: usize,
    /// Longest wait between reconnection attempts (the wait doubles from 100 ms).
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl Default for CarbonConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            address: "127.0.0.1:2003".to_owned(),
            template: "ecs.{cluster}.{family}.{task_id}.{container_name}.{path}".to_owned(),
            unattributed_template: "unattributed.{path}".to_owned(),
            queue_chunks: 4096,
            max_backoff: Duration::from_secs(10),
        }
    }
}

impl MetricsConfig {
    /// A listen address: `None` when empty (disabled).
    ///
    /// # Errors
    /// `(key, message)` when it is not `ip:port`.
    pub fn address(
        value: &str,
        key: &'static str,
    ) -> Result<Option<SocketAddr>, (&'static str, &'static str)> {
        if value.is_empty() {
            return Ok(None);
        }
        value
            .parse()
            .map(Some)
            .map_err(|_| (key, "must be ip:port, or empty to disable"))
    }

    /// Semantic checks.
    ///
    /// # Errors
    /// `(key, message)` of the first bad value.
    pub fn check(&self) -> Result<(), (&'static str, &'static str)> {
        Self::address(&self.tcp, "metrics.tcp")?;
        Self::address(&self.udp, "metrics.udp")?;
        Self::address(&self.statsd, "metrics.statsd")?;
        if self.max_line_bytes < 64 || self.max_line_bytes > 1024 * 1024 {
            return Err(("metrics.max_line_bytes", "must be between 64 and 1048576"));
        }
        if self.max_samples_per_second == 0 {
            return Err(("metrics.max_samples_per_second", "must be at least 1"));
        }
        if self.max_connections == 0 || self.idle_timeout.is_zero() {
            return Err((
                "metrics.max_connections",
                "max_connections and idle_timeout must be more than zero",
            ));
        }
        if self.max_connections_per_peer == 0 {
            return Err(("metrics.max_connections_per_peer", "must be at least 1"));
        }
        if self.history_per_path == 0 {
            return Err(("metrics.history_per_path", "must be at least 1"));
        }
        if self.max_paths_per_task == 0 {
            return Err(("metrics.max_paths_per_task", "must be at least 1"));
        }
        if self.channel_chunks == 0 || self.carbon.queue_chunks == 0 {
            return Err((
                "metrics.channel_chunks",
                "queues must hold at least 1 sample",
            ));
        }
        if self.flush_interval < Duration::from_millis(10)
            || self.flush_interval > Duration::from_secs(600)
        {
            return Err(("metrics.flush_interval", "must be between 10ms and 10min"));
        }
        if self.retention.is_zero() {
            return Err(("metrics.retention", "must be more than zero"));
        }
        if self.statsd_flush_interval < Duration::from_millis(100) {
            return Err(("metrics.statsd_flush_interval", "must be at least 100ms"));
        }
        if self.emf.interval < Duration::from_secs(1) || self.emf.queue_chunks == 0 {
            return Err((
                "metrics.emf.interval",
                "interval must be at least 1s and queue_chunks at least 1",
            ));
        }
        if self.emf.namespace.is_empty() || self.emf.namespace.len() > 255 {
            return Err(("metrics.emf.namespace", "must be 1 to 255 characters"));
        }
        if !self.carbon.template.contains("{path}")
            || !self.carbon.unattributed_template.contains("{path}")
        {
            return Err(("metrics.carbon.template", "must contain {path}"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_name_their_key_and_empty_disables() {
        assert_eq!(MetricsConfig::default().check(), Ok(()));
        let cases = [
            (
                MetricsConfig {
                    tcp: "localhost".into(),
                    ..MetricsConfig::default()
                },
                "metrics.tcp",
            ),
            (
                MetricsConfig {
                    max_line_bytes: 10,
                    ..MetricsConfig::default()
                },
                "metrics.max_line_bytes",
            ),
            (
                MetricsConfig {
                    carbon: CarbonConfig {
                        template: "ecs.{task_id}".into(),
                        ..CarbonConfig::default()
                    },
                    ..MetricsConfig::default()
                },
                "metrics.carbon.template",
            ),
        ];
        for (config, key) in cases {
            assert_eq!(config.check().map_err(|e| e.0), Err(key));
        }
        assert_eq!(MetricsConfig::address("", "metrics.udp"), Ok(None));
        assert_eq!(
            MetricsConfig::address("0.0.0.0:13290", "metrics.udp"),
            Ok(Some(SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT))))
        );
    }
}
