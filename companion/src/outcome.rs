//! How a run ends: one final log line and a distinct exit code per outcome.

use std::path::PathBuf;
use std::time::Duration;

use crate::drain::ndjson::Drained;

/// Exit code: drained, nothing lost.
pub const EXIT_DRAINED: u8 = 0;
/// Exit code: a runtime failure outside the drain (the relay address cannot be bound).
pub const EXIT_FAILED: u8 = 1;
/// Exit code: the drain deadline passed, or a second SIGTERM/SIGINT.
pub const EXIT_DEADLINE: u8 = 2;
/// Exit code: the daemon's socket could not be connected.
pub const EXIT_UNREACHABLE: u8 = 3;
/// Exit code: drained, but the daemon reports lost bytes or files.
pub const EXIT_DRAINED_WITH_LOSS: u8 = 4;
/// Exit code: the daemon refused the drain (an `error` line).
pub const EXIT_REFUSED: u8 = 5;
/// Exit code: bad usage (options, environment).
pub const EXIT_USAGE: u8 = 64;

/// The exit codes as `--help` shows them.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0   drained: every log line of the task's other containers is delivered
  1   runtime failure (e.g. the relay address cannot be bound)
  2   the drain deadline passed (--drain-timeout), or a second SIGTERM/SIGINT
  3   the collector is unreachable (--unreachable-timeout, or the deadline once draining)
  4   drained with loss: the collector reports lost bytes or files
  5   refused by the collector (an error answer, e.g. not_in_task)
  64  usage error";

/// Which step a deadline cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Writing the relay's queued lines into the daemon.
    RelayFlush,
    /// `POST /v1/drain`.
    Drain,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::RelayFlush => "flushing relayed metrics",
            Step::Drain => "waiting for the drain (POST /v1/drain)",
        })
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The daemon answered `drained`.
    Drained(Drained),
    /// The drain deadline passed.
    DeadlinePassed {
        /// The step it cut.
        step: Step,
        /// The deadline.
        timeout: Duration,
        /// The daemon's last `waiting` line, compact JSON.
        last_progress: Option<String>,
    },
    /// A second SIGTERM/SIGINT while draining.
    Interrupted,
    /// The socket could not be connected.
    Unreachable {
        /// The socket.
        socket: PathBuf,
        /// For how long connecting failed.
        waited: Duration,
        /// The last connect error.
        error: String,
    },
    /// The daemon answered an `error` line (or a 4xx status).
    Refused {
        /// The error kind.
        kind: String,
        /// The daemon's message.
        message: String,
    },
    /// A failure before the drain could start.
    Failed(String),
}

impl Outcome {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Drained(d) if d.loss() == (0, 0) => EXIT_DRAINED,
            Outcome::Drained(_) => EXIT_DRAINED_WITH_LOSS,
            Outcome::DeadlinePassed { .. } | Outcome::Interrupted => EXIT_DEADLINE,
            Outcome::Unreachable { .. } => EXIT_UNREACHABLE,
            Outcome::Refused { .. } => EXIT_REFUSED,
            Outcome::Failed(_) => EXIT_FAILED,
        }
    }

    /// Logs the outcome: per-container lines for a drain, then the one final line.
    pub fn report(&self) {
        let code = self.exit_code();
        match self {
            Outcome::Drained(drained) => {
                for c in &drained.containers {
                    tracing::info!(
                        container = %c.name,
                        container_id = %short(&c.container_id),
                        exit_code = ?c.exit_code,
                        lines = c.lines,
                        bytes = c.bytes,
                        lost_bytes = c.lost_bytes,
                        lost_files = c.lost_files,
                        "Container delivered."
                    );
                }
                if let Some(s3) = &drained.s3 {
                    tracing::info!(s3 = %s3, "S3 archive uploaded.");
                }
                let lines: u64 = drained.containers.iter().map(|c| c.lines).sum();
                let bytes: u64 = drained.containers.iter().map(|c| c.bytes).sum();
                let (lost_bytes, lost_files) = drained.loss();
                if code == EXIT_DRAINED {
                    tracing::info!(
                        exit_code = code,
                        "drained: {} container(s), {lines} lines, {bytes} bytes delivered in {} ms",
                        drained.containers.len(),
                        drained.elapsed_ms
                    );
                } else {
                    tracing::error!(
                        exit_code = code,
                        "drained with loss: {lost_bytes} bytes and {lost_files} file(s) lost; \
                         {lines} lines, {bytes} bytes delivered"
                    );
                }
            }
            Outcome::DeadlinePassed {
                step,
                timeout,
                last_progress,
            } => tracing::error!(
                exit_code = code,
                "drain deadline ({}) passed while {step}; last progress: {}",
                humantime::format_duration(*timeout),
                last_progress.as_deref().unwrap_or("none")
            ),
            Outcome::Interrupted => tracing::error!(
                exit_code = code,
                "second termination signal: exiting at once, the drain is not complete"
            ),
            Outcome::Unreachable {
                socket,
                waited,
                error,
            } => tracing::error!(
                exit_code = code,
                "collector unreachable: cannot connect to {} for {} (last error: {error})",
                socket.display(),
                humantime::format_duration(round_ms(*waited))
            ),
            Outcome::Refused { kind, message } => tracing::error!(
                exit_code = code,
                "refused by the collector ({kind}): {message}"
            ),
            Outcome::Failed(message) => tracing::error!(exit_code = code, "failed: {message}"),
        }
    }
}

/// The 12-character short form of a 64-hex container id (others as they are).
fn short(id: &str) -> &str {
    if id.len() == 64 { &id[..12] } else { id }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drain::ndjson::ContainerReport;

    #[test]
    fn exit_codes() {
        let clean = Drained {
            containers: vec![ContainerReport {
                lines: 1,
                bytes: 2,
                ..ContainerReport::default()
            }],
            ..Drained::default()
        };
        let mut lossy = clean.clone();
        lossy.containers[0].lost_files = 1;
        let cases = [
            (Outcome::Drained(clean), 0),
            (Outcome::Drained(lossy), 4),
            (
                Outcome::DeadlinePassed {
                    step: Step::Drain,
                    timeout: Duration::from_secs(1),
                    last_progress: None,
                },
                2,
            ),
            (Outcome::Interrupted, 2),
            (
                Outcome::Unreachable {
                    socket: "/run/collector/companion.sock".into(),
                    waited: Duration::from_secs(60),
                    error: "No such file or directory".into(),
                },
                3,
            ),
            (
                Outcome::Refused {
                    kind: "not_in_task".into(),
                    message: "m".into(),
                },
                5,
            ),
            (Outcome::Failed("bind".into()), 1),
        ];
        for (outcome, code) in cases {
            assert_eq!(outcome.exit_code(), code, "{outcome:?}");
            outcome.report();
        }
        assert_eq!(short(&"a".repeat(64)), "aaaaaaaaaaaa");
    }
}
