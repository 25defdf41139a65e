//! `collector tail <task or container>`: the live lines of a whole task, every container
//! interleaved and prefixed with its name, as `docker logs -f` shows one container. stdout
//! lines go to stdout, stderr lines to stderr. It ends when every container has exited and
//! its logs were read to the end, or on Ctrl-C.
//!
//! Lines come from the daemon's control API (`GET /v1/tail`) as they are delivered to the
//! sinks; a reader that cannot keep up is told how many batches it missed, and delivery is
//! never slowed for it.

use std::collections::HashMap;
use std::io::Write;

use http::StatusCode;
use http_body_util::BodyExt;
use serde_json::Value;

use super::{ColorChoice, KindFilter, Outcome};
use crate::config::Config;
use crate::control::{ControlClient, percent_encode};

/// Colours given to container names in turn (ANSI: cyan, yellow, green, magenta, blue, red).
const NAME_COLOURS: [&str; 6] = ["36", "33", "32", "35", "34", "31"];

/// `collector tail`'s arguments.
#[derive(Clone, Debug)]
pub struct TailArgs {
    /// The loaded configuration (the socket).
    pub config: Config,
    /// The task or container.
    pub thing: String,
    /// `--kind`.
    pub kind: Option<KindFilter>,
    /// `--timestamps`: show the time the runtime recorded.
    pub timestamps: bool,
    /// `--color`.
    pub color: ColorChoice,
}

/// Prefixes lines with aligned, coloured names.
struct Printer {
    color: bool,
    timestamps: bool,
    width: usize,
    colours: HashMap<String, &'static str>,
}

impl Printer {
    fn prefix(&mut self, name: &str) -> String {
        self.width = self.width.max(name.chars().count());
        let n = self.colours.len();
        let code = *self
            .colours
            .entry(name.to_owned())
            .or_insert(NAME_COLOURS[n % NAME_COLOURS.len()]);
        let padded = format!("{name:<w$}", w = self.width);
        if self.color {
            format!("\x1b[{code}m{padded} |\x1b[0m")
        } else {
            format!("{padded} |")
        }
    }

    fn line(&mut self, v: &Value, out: &mut dyn Write, err: &mut dyn Write) {
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("");
        let mut name = s("name").to_owned();
        if let Some(file) = v.get("file").and_then(Value::as_str) {
            name = format!("{name}:{file}");
        }
        let prefix = self.prefix(&name);
        let time = if self.timestamps {
            format!("{} ", s("time"))
        } else {
            String::new()
        };
        // The collector's own records (how a run ended) are not the container's output.
        let to: &mut dyn Write = if matches!(s("stream"), "stderr" | "lifecycle") {
            err
        } else {
            out
        };
        let _ = writeln!(to, "{prefix} {time}{}", s("message"));
    }
}

/// Runs `collector tail`.
pub fn tail_command(args: TailArgs, out: &mut dyn Write, err: &mut dyn Write) -> Outcome {
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
    runtime.block_on(follow(args, out, err))
}

async fn follow(args: TailArgs, out: &mut dyn Write, err: &mut dyn Write) -> Outcome {
    let socket = args.config.control_socket();
    let client = ControlClient::new(&socket);
    let kind = args
        .kind
        .map(|k| format!("&kind={}", k.as_str()))
        .unwrap_or_default();
    let target = format!("/v1/tail?q={}{kind}", percent_encode(&args.thing));
    let (status, mut body) = match client.send(&target).await {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(
                err,
                "collector: tail needs the running daemon, which reads the lines: {} (`collector inspect` works without it)",
                crate::internal_events::chain(&e),
            );
            return Outcome::NotFound;
        }
    };
    if status != StatusCode::OK {
        let bytes = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let message = v
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("the daemon refused");
        let _ = writeln!(err, "collector: {message}");
        for c in v
            .get("candidates")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let _ = writeln!(err, "  {}", c.as_str().unwrap_or_default());
        }
        return if status == StatusCode::BAD_REQUEST {
            Outcome::Usage
        } else {
            Outcome::NotFound
        };
    }
    let mut printer = Printer {
        color: args.color.enabled(),
        timestamps: args.timestamps,
        width: 0,
        colours: HashMap::new(),
    };
    let mut pending: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            let _ = writeln!(err, "collector: the daemon closed the stream");
            return Outcome::NotFound;
        };
        let Some(data) = frame.data_ref() else {
            continue;
        };
        pending.extend_from_slice(data);
        while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=nl).collect();
            let Ok(v) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            if let Some(f) = v.get("following") {
                let names: Vec<String> = f
                    .get("containers")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_owned))
                    .collect();
                for n in &names {
                    printer.prefix(n);
                }
                let what = match f.get("task_id").and_then(Value::as_str) {
                    Some(t) => format!("task {t}"),
                    None => "container".to_owned(),
                };
                let _ = writeln!(
                    err,
                    "Following {what}: {} (Ctrl-C to stop).",
                    names.join(", ")
                );
            } else if let Some(n) = v.get("dropped") {
                let _ = writeln!(
                    err,
                    "collector: {n} batches skipped: this reader fell behind (the sinks got them)"
                );
            } else if let Some(why) = v.get("end").and_then(Value::as_str) {
                let _ = out.flush();
                let _ = writeln!(err, "End: {why}.");
                return Outcome::Found;
            } else {
                printer.line(&v, out, err);
            }
        }
        if out.flush().is_err() {
            // stdout closed (`| head`): stop quietly.
            return Outcome::Found;
        }
    }
    Outcome::Found
}
