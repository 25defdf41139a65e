//! The `collector inspect` command: ask the daemon, or answer from the host's files when no
//! daemon runs, and print for people or scripts.

use std::io::{IsTerminal, Write};

use http::StatusCode;
use serde::Deserialize;

use super::{
    InspectError, Inspection, KindFilter, Overview, World, inspect, overview, render_inspection,
    render_overview,
};
use crate::config::Config;
use crate::control::{ControlClient, ControlError, percent_encode};

/// `--color`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColorChoice {
    /// When stdout is a terminal and `NO_COLOR` is not set.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

impl ColorChoice {
    /// Whether to colour what goes to stdout.
    pub fn enabled(self) -> bool {
        match self {
            Self::Always => true,
            Self::Never => false,
            Self::Auto => {
                std::io::stdout().is_terminal()
                    && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                    && std::env::var("TERM").map_or(true, |t| t != "dumb")
            }
        }
    }
}

/// What the command found; `main` turns it into the exit code (0, 1, 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The thing was found (exit 0).
    Found,
    /// Nothing matches, or the question could not be answered (exit 1).
    NotFound,
    /// The argument is wrong or ambiguous (exit 2).
    Usage,
}

/// `collector inspect`'s arguments.
#[derive(Clone, Debug)]
pub struct InspectArgs {
    /// The loaded configuration (data dir, host paths, socket).
    pub config: Config,
    /// The thing; `None` for the overview.
    pub thing: Option<String>,
    /// `--kind`.
    pub kind: Option<KindFilter>,
    /// `--json`.
    pub json: bool,
    /// `--all`: removed containers in the overview too.
    pub all: bool,
    /// `--offline`: do not ask the daemon.
    pub offline: bool,
    /// `--color`.
    pub color: ColorChoice,
}

/// An error answer of the control API.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: String,
    message: String,
    #[serde(default)]
    candidates: Vec<String>,
}

/// What either side answered.
enum Answer {
    Inspection(Box<Inspection>),
    Overview(Overview),
    Error {
        outcome: Outcome,
        code: String,
        message: String,
        candidates: Vec<String>,
    },
}

/// Runs `collector inspect`, writing the answer to `out` and diagnostics to `err`.
pub fn inspect_command(args: InspectArgs, out: &mut dyn Write, err: &mut dyn Write) -> Outcome {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(err, "collector: cannot start the async runtime: {e}");
            return Outcome::NotFound;
        }
    };
    let socket = args.config.control_socket();
    let mut why_offline = None;
    let mut answer = None;
    if args.offline {
        why_offline = Some("--offline: the daemon was not asked.".to_owned());
    } else if !args.config.control.enabled {
        why_offline = Some("The control API is disabled (control.enabled = false).".to_owned());
    } else {
        let client = ControlClient::new(&socket);
        let target = match &args.thing {
            Some(t) => {
                let kind = args
                    .kind
                    .map(|k| format!("&kind={}", k.as_str()))
                    .unwrap_or_default();
                format!("/v1/inspect?q={}{kind}", percent_encode(t))
            }
            None => format!("/v1/overview{}", if args.all { "?all=1" } else { "" }),
        };
        match runtime.block_on(client.get(&target)) {
            Ok((status, body)) => answer = Some(decode(status, &body, args.thing.is_some())),
            Err(ControlError::Connect { source, .. }) => {
                let why = match source.kind() {
                    std::io::ErrorKind::NotFound => "no socket there".to_owned(),
                    std::io::ErrorKind::ConnectionRefused => "nothing listens".to_owned(),
                    std::io::ErrorKind::PermissionDenied => {
                        "permission denied: the socket is root's".to_owned()
                    }
                    _ => source.to_string(),
                };
                why_offline = Some(format!(
                    "No collector daemon answers on {} ({why}).",
                    socket.display()
                ));
            }
            Err(e) => {
                why_offline = Some(format!(
                    "The daemon's control API failed: {}.",
                    crate::internal_events::chain(&e)
                ))
            }
        }
    }
    let answer = match answer {
        Some(a) => a,
        None => {
            let mut world = World::offline(args.config.clone());
            world.notes.insert(0, why_offline.unwrap_or_default());
            let result = match &args.thing {
                Some(t) => inspect(&world, t, args.kind).map(|i| Answer::Inspection(Box::new(i))),
                None => overview(&world, args.all).map(Answer::Overview),
            };
            result.unwrap_or_else(|e| from_error(&e))
        }
    };
    print(answer, &args, out, err)
}

/// The daemon's answer, by status.
fn decode(status: StatusCode, body: &[u8], thing: bool) -> Answer {
    let bad = |e: serde_json::Error| Answer::Error {
        outcome: Outcome::NotFound,
        code: "internal".into(),
        message: format!("cannot decode the daemon's answer ({e}); is it another version?"),
        candidates: Vec::new(),
    };
    if status == StatusCode::OK {
        return if thing {
            serde_json::from_slice(body)
                .map(|i| Answer::Inspection(Box::new(i)))
                .unwrap_or_else(bad)
        } else {
            serde_json::from_slice(body)
                .map(Answer::Overview)
                .unwrap_or_else(bad)
        };
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => Answer::Error {
            outcome: if status == StatusCode::BAD_REQUEST {
                Outcome::Usage
            } else {
                Outcome::NotFound
            },
            code: e.error,
            message: e.message,
            candidates: e.candidates,
        },
        Err(e) => bad(e),
    }
}

fn from_error(e: &InspectError) -> Answer {
    let (outcome, code, candidates) = match e {
        InspectError::Usage { .. } => (Outcome::Usage, "usage", Vec::new()),
        InspectError::Ambiguous { candidates, .. } => {
            (Outcome::Usage, "ambiguous", candidates.clone())
        }
        InspectError::NotFound { .. } => (Outcome::NotFound, "not_found", Vec::new()),
        InspectError::State(_) => (Outcome::NotFound, "internal", Vec::new()),
    };
    Answer::Error {
        outcome,
        code: code.to_owned(),
        message: crate::internal_events::chain(e),
        candidates,
    }
}

fn print(answer: Answer, args: &InspectArgs, out: &mut dyn Write, err: &mut dyn Write) -> Outcome {
    let color = args.color.enabled();
    let pretty = |v: &dyn erased::Json| v.pretty();
    let (text, outcome) = match answer {
        Answer::Inspection(i) if args.json => (pretty(&*i), Outcome::Found),
        Answer::Inspection(i) => (render_inspection(&i, color), Outcome::Found),
        Answer::Overview(o) if args.json => (pretty(&o), Outcome::Found),
        Answer::Overview(o) => (render_overview(&o, color), Outcome::Found),
        Answer::Error {
            outcome,
            code,
            message,
            candidates,
        } => {
            if args.json {
                let v = serde_json::json!({ "error": code, "message": message, "query": args.thing, "candidates": candidates });
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&v).unwrap_or_default()
                );
            }
            let _ = writeln!(err, "collector: {message}");
            for c in &candidates {
                let _ = writeln!(err, "  {c}");
            }
            return outcome;
        }
    };
    if out
        .write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        // stdout closed (a pipe to `head`): nothing more to say.
        return outcome;
    }
    outcome
}

/// Pretty JSON of either answer type, without a generic `print`.
mod erased {
    /// A serialisable answer.
    pub(super) trait Json {
        /// Pretty JSON with a final newline.
        fn pretty(&self) -> String;
    }
    impl<T: serde::Serialize> Json for T {
        fn pretty(&self) -> String {
            let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
            s.push('\n');
            s
        }
    }
}
