//! The drain barrier: wait for the task's other containers to exit, put the relayed metrics
//! into the daemon, then wait for the daemon to deliver everything.
//!
//! Order, and why:
//! 1. Step A, `POST /v1/drain?phase=exited`: held open by the daemon until every other
//!    container of the task has exited. No deadline (a job may run for days); only the
//!    unreachable timeout applies. SIGTERM/SIGINT ends it early.
//! 2. The deadline (`--drain-timeout`) starts: at `exited` or at the first signal.
//! 3. The relay is flushed, so every metric sample is in the daemon before step B asks it to
//!    store them. The daemon's acknowledgement names its run ([`crate::relay`]).
//! 4. Step B, `POST /v1/drain`: held open until everything is delivered. When the run that
//!    answers is not the one that acknowledged the flush, the daemon restarted in between
//!    and may have lost samples it held in memory: the relay writes its recent lines again
//!    to the new run, and step B is asked again.
//!
//! Both calls are idempotent: a connection error or an answer that ends without its final
//! line (a daemon restart) is retried with backoff.

pub mod client;
pub mod ndjson;

use std::path::PathBuf;
use std::time::Duration;

use http_body_util::{BodyExt as _, Limited};
use tokio::time::Instant;

use self::client::{ClientError, DrainClient, drain_target};
use self::ndjson::{Line, NdjsonReader};
use crate::backoff::Backoff;
use crate::outcome::{Outcome, Step};
use crate::relay::RelayHandle;
use crate::signals::Signals;

/// How long every relay sender must have been quiet before the flush: a job that exited has
/// closed its connections; one that is still up (late senders) gets this long.
const SENDER_IDLE: Duration = Duration::from_secs(1);

/// How often a `waiting` line is logged at info level (each one is logged at debug): enough
/// to see a stuck drain in the task's logs without a line a second.
const PROGRESS_LOG_EVERY: Duration = Duration::from_secs(30);

/// The largest error body read from a 4xx answer.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// What the drain needs.
#[derive(Debug, Clone)]
pub struct DrainSettings {
    /// The daemon's `companion.sock`.
    pub socket: PathBuf,
    /// The other containers' names, passed as `expect`.
    pub expect: Vec<String>,
    /// From `exited` (or the first signal) to the end of step B.
    pub drain_timeout: Duration,
    /// How long the socket may refuse connections in a row before step A gives up;
    /// `None` waits forever.
    pub unreachable_timeout: Option<Duration>,
}

/// Runs the drain to its outcome.
pub async fn run(
    settings: &DrainSettings,
    relay: Option<&RelayHandle>,
    signals: &mut Signals,
) -> Outcome {
    let client = DrainClient::new(&settings.socket);
    let mut state = CallState::default();

    // Step A.
    let target = drain_target(true, &settings.expect);
    tokio::select! {
        end = call(&client, &target, Phase::Exited, settings.unreachable_timeout, None, &mut state) => {
            match end {
                CallEnd::Final(Line::Exited(exited)) => {
                    tracing::info!(exited = %exited, "Every other container of the task has exited; draining.");
                }
                CallEnd::Final(Line::Error(e)) => {
                    return Outcome::Refused { kind: e.kind, message: e.message };
                }
                CallEnd::Final(other) => {
                    // `call` returns only the phase's final lines; anything else is a bug.
                    return Outcome::Failed(format!("this is a bug: step A ended with {other:?}"));
                }
                CallEnd::Refused { kind, message } => return Outcome::Refused { kind, message },
                CallEnd::Unreachable { waited, error } => {
                    return Outcome::Unreachable { socket: settings.socket.clone(), waited, error };
                }
                CallEnd::OtherRun(run) => {
                    // Step A compares no runs.
                    return Outcome::Failed(format!("this is a bug: step A saw daemon run {run}"));
                }
            }
        }
        () = signals.wait(1) => {
            tracing::info!("Termination signal: draining now.");
        }
    }

    let deadline = Instant::now() + settings.drain_timeout;
    let drain = async {
        let mut state = CallState::default();
        let mut acknowledged_by = match relay {
            Some(relay) => match flush_relay(relay, false, deadline, settings).await {
                Ok(run) => Some(run),
                Err(outcome) => return outcome,
            },
            None => None,
        };
        let target = drain_target(false, &settings.expect);
        loop {
            let end = tokio::time::timeout_at(
                deadline,
                call(
                    &client,
                    &target,
                    Phase::Drain,
                    None,
                    acknowledged_by.as_deref(),
                    &mut state,
                ),
            )
            .await;
            return match end {
                Ok(CallEnd::OtherRun(run)) => {
                    let Some(relay) = relay else {
                        return Outcome::Failed(format!(
                            "this is a bug: daemon run {run} compared without a relay"
                        ));
                    };
                    tracing::warn!(
                        acknowledged_by = acknowledged_by.as_deref().unwrap_or("?"),
                        answering = %run,
                        "The collector restarted after acknowledging the relayed metrics; sending them again."
                    );
                    match flush_relay(relay, true, deadline, settings).await {
                        Ok(run) => acknowledged_by = Some(run),
                        Err(outcome) => return outcome,
                    }
                    continue;
                }
                Ok(CallEnd::Final(Line::Drained(drained))) => Outcome::Drained(drained),
                Ok(CallEnd::Final(Line::Error(e))) => Outcome::Refused {
                    kind: e.kind,
                    message: e.message,
                },
                Ok(CallEnd::Final(other)) => {
                    Outcome::Failed(format!("this is a bug: step B ended with {other:?}"))
                }
                Ok(CallEnd::Refused { kind, message }) => Outcome::Refused { kind, message },
                Ok(CallEnd::Unreachable { waited, error }) => Outcome::Unreachable {
                    socket: settings.socket.clone(),
                    waited,
                    error,
                },
                Err(_) => match state.unreachable {
                    Some((since, error)) => Outcome::Unreachable {
                        socket: settings.socket.clone(),
                        waited: since.elapsed(),
                        error,
                    },
                    None => Outcome::DeadlinePassed {
                        step: Step::Drain,
                        timeout: settings.drain_timeout,
                        last_progress: state.last_progress,
                    },
                },
            };
        }
    };
    tokio::select! {
        outcome = drain => outcome,
        () = signals.wait(2) => Outcome::Interrupted,
    }
}

/// Flushes the relay (after writing its recent lines again when `resend`) within the
/// deadline; the daemon run that acknowledged, or the outcome when the deadline passed.
async fn flush_relay(
    relay: &RelayHandle,
    resend: bool,
    deadline: Instant,
    settings: &DrainSettings,
) -> Result<String, Outcome> {
    let flushed = if resend {
        tokio::time::timeout_at(deadline, relay.resend()).await
    } else {
        tokio::time::timeout_at(deadline, relay.flush(SENDER_IDLE)).await
    };
    match flushed {
        Ok(Ok(run)) => {
            tracing::info!(collector_run = %run, "Relayed metrics are in the daemon.");
            Ok(run)
        }
        Ok(Err(err)) => Err(Outcome::Failed(format!(
            "flushing relayed metrics: {}",
            crate::error_chain(&err)
        ))),
        Err(_) => Err(match relay.unreachable() {
            Some((since, error)) => Outcome::Unreachable {
                socket: relay.graphite_socket().to_path_buf(),
                waited: since.elapsed(),
                error,
            },
            None => Outcome::DeadlinePassed {
                step: Step::RelayFlush,
                timeout: settings.drain_timeout,
                last_progress: None,
            },
        }),
    }
}

/// Which call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Step A: ends with `exited`.
    Exited,
    /// Step B: ends with `drained`.
    Drain,
}

/// What a call saw, kept outside the call's future so a deadline can report it.
#[derive(Debug, Default)]
struct CallState {
    /// Since when connecting fails, and the last error; `None` while connected.
    unreachable: Option<(Instant, String)>,
    /// The last `waiting` line, compact JSON.
    last_progress: Option<String>,
}

/// How a call ended.
#[derive(Debug)]
enum CallEnd {
    /// The phase's final line (or an `error` line).
    Final(Line),
    /// A 4xx answer without an `error` line.
    Refused { kind: String, message: String },
    /// The socket refused connections for the unreachable timeout.
    Unreachable { waited: Duration, error: String },
    /// Step B was answered by another daemon run than the one that acknowledged the relay's
    /// flush (this one).
    OtherRun(String),
}

/// Sends the request until an answer ends with its final line. Retries connection failures,
/// 5xx answers and answers that break off, with backoff; gives up after `unreachable_timeout`
/// of connect failures in a row.
async fn call(
    client: &DrainClient,
    target: &str,
    phase: Phase,
    unreachable_timeout: Option<Duration>,
    acknowledged_by: Option<&str>,
    state: &mut CallState,
) -> CallEnd {
    let mut backoff = Backoff::new();
    loop {
        match client.post(target).await {
            Err(ClientError::Connect { source, .. }) => {
                let error = source.to_string();
                if state.unreachable.is_none() {
                    tracing::warn!(
                        socket = %client.path().display(),
                        error = %error,
                        "Cannot connect to the collector; retrying."
                    );
                }
                let since = state
                    .unreachable
                    .as_ref()
                    .map_or_else(Instant::now, |(s, _)| *s);
                state.unreachable = Some((since, error.clone()));
                if let Some(limit) = unreachable_timeout
                    && since.elapsed() >= limit
                {
                    return CallEnd::Unreachable {
                        waited: since.elapsed(),
                        error,
                    };
                }
            }
            Err(err @ ClientError::Request { .. }) => {
                state.unreachable = None;
                tracing::warn!(error = %crate::error_chain(&err), "The drain request failed; retrying.");
            }
            Ok(response) => {
                if state.unreachable.take().is_some() {
                    tracing::info!(socket = %client.path().display(), "Connected to the collector.");
                }
                let status = response.status();
                if status.is_client_error() {
                    let body = Limited::new(response.into_body(), MAX_ERROR_BODY)
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let line = body.split(|b| *b == b'\n').find_map(ndjson::parse_line);
                    return match line {
                        Some(Line::Error(e)) => CallEnd::Final(Line::Error(e)),
                        _ => CallEnd::Refused {
                            kind: format!("http_{}", status.as_u16()),
                            message: String::from_utf8_lossy(&body).trim().to_owned(),
                        },
                    };
                }
                if !status.is_success() {
                    tracing::warn!(%status, "The collector answered with an error status; retrying.");
                } else {
                    backoff.reset();
                    match read_answer(response.into_body(), phase, acknowledged_by, state).await {
                        Some(Answer::Final(line)) => return CallEnd::Final(line),
                        Some(Answer::OtherRun(run)) => return CallEnd::OtherRun(run),
                        None => tracing::warn!(
                            "The collector's answer ended without a final line (restart?); retrying."
                        ),
                    }
                }
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// How an answer ended, when it did not break off.
#[derive(Debug)]
enum Answer {
    /// The phase's final line (or an `error` line).
    Final(Line),
    /// Its first line names another daemon run than `acknowledged_by`.
    OtherRun(String),
}

/// Reads an answer to its final line; `None` when it ends or breaks off before one.
async fn read_answer(
    body: hyper::body::Incoming,
    phase: Phase,
    acknowledged_by: Option<&str>,
    state: &mut CallState,
) -> Option<Answer> {
    let mut reader = NdjsonReader::new(body);
    let mut last_logged: Option<Instant> = None;
    loop {
        let line = match reader.next().await {
            Ok(Some(line)) => line,
            Ok(None) => return None,
            Err(err) => {
                tracing::warn!(error = %err, "Reading the collector's answer failed.");
                return None;
            }
        };
        match line {
            Line::Hello {
                task,
                caller,
                instance,
            } => {
                tracing::info!(%task, %caller, ?phase, collector_run = instance.as_deref().unwrap_or("?"), "The collector took the drain request.");
                if let (Some(want), Some(got)) = (acknowledged_by, instance)
                    && want != got
                {
                    return Some(Answer::OtherRun(got));
                }
            }
            Line::Waiting(progress) => {
                let text = progress.to_string();
                if last_logged.is_none_or(|t| t.elapsed() >= PROGRESS_LOG_EVERY) {
                    tracing::info!(?phase, waiting = %text, "Waiting for the collector.");
                    last_logged = Some(Instant::now());
                } else {
                    tracing::debug!(?phase, waiting = %text, "Waiting for the collector.");
                }
                state.last_progress = Some(text);
            }
            Line::Error(_) => return Some(Answer::Final(line)),
            Line::Exited(_) if phase == Phase::Exited => return Some(Answer::Final(line)),
            Line::Drained(_) if phase == Phase::Drain => return Some(Answer::Final(line)),
            Line::Exited(_) | Line::Drained(_) | Line::Unknown(_) => {
                tracing::debug!(?line, ?phase, "Ignoring an answer line.");
            }
        }
    }
}
