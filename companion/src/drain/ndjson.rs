//! The daemon's drain answers: NDJSON, one object per line, streamed, with one final line.

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::Body;
use serde::Deserialize;
use serde_json::Value;

use crate::framing::LineFramer;

/// The longest answer line accepted. A `drained` line lists every container of the task
/// (a few hundred bytes each); 1 MiB is far beyond any task and still bounds memory.
const MAX_LINE: usize = 1024 * 1024;

/// Errors reading an answer.
#[derive(Debug, thiserror::Error)]
pub enum NdjsonError {
    /// The body broke off (the daemon restarted, or the connection failed).
    #[error("the answer broke off: {reason}")]
    Body {
        /// The transport's error.
        reason: String,
    },
    /// A line was longer than 1 MiB.
    #[error("an answer line is longer than {MAX_LINE} bytes")]
    LineTooLong,
}

/// One line of an answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// The first line: the task the daemon attributes the caller to, and the caller itself.
    Hello {
        /// The task, as the daemon knows it.
        task: Value,
        /// The caller (pid, container) as the daemon sees it.
        caller: Value,
        /// The daemon run answering (`collector.instance`); compared with the run that
        /// acknowledged the relay's flush.
        instance: Option<String>,
    },
    /// Progress: what the daemon still waits for.
    Waiting(Value),
    /// Step A's final line: every other container of the task has exited.
    Exited(Value),
    /// Step B's final line: everything is delivered.
    Drained(Drained),
    /// A final line: the daemon refuses or failed.
    Error(DaemonError),
    /// A line with none of the known keys (a newer daemon): ignored.
    Unknown(Value),
}

impl Line {
    /// Whether this line ends the answer.
    pub fn is_final(&self) -> bool {
        matches!(self, Line::Exited(_) | Line::Drained(_) | Line::Error(_))
    }
}

/// The `drained` object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Drained {
    /// Every container of the task but the companion.
    #[serde(default)]
    pub containers: Vec<ContainerReport>,
    /// The S3 archive, when the S3 sink is on.
    #[serde(default)]
    pub s3: Option<Value>,
    /// How long the daemon's drain took.
    #[serde(default)]
    pub elapsed_ms: u64,
}

impl Drained {
    /// Bytes and files lost over every container.
    pub fn loss(&self) -> (u64, u64) {
        self.containers
            .iter()
            .fold((0, 0), |(b, f), c| (b + c.lost_bytes, f + c.lost_files))
    }
}

/// One container's delivery counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ContainerReport {
    /// The container name.
    pub name: String,
    /// The container id.
    pub container_id: String,
    /// Its exit code, when known.
    pub exit_code: Option<i64>,
    /// Log lines delivered.
    pub lines: u64,
    /// Log bytes delivered.
    pub bytes: u64,
    /// Bytes that could not be read (rotated away before being read, for instance).
    pub lost_bytes: u64,
    /// Log files that could not be read at all.
    pub lost_files: u64,
}

/// The `error` object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct DaemonError {
    /// A machine-readable kind, e.g. `not_in_task`, `forbidden`.
    pub kind: String,
    /// What to tell the operator.
    pub message: String,
}

/// The keys we know; unknown keys are ignored.
#[derive(Debug, Default, Deserialize)]
struct Frame {
    task: Option<Value>,
    caller: Option<Value>,
    collector: Option<Value>,
    waiting: Option<Value>,
    exited: Option<Value>,
    drained: Option<Drained>,
    error: Option<DaemonError>,
}

/// Parses one line; `None` for an empty line. A line that is not a JSON object becomes
/// [`Line::Unknown`] holding the text.
pub fn parse_line(line: &[u8]) -> Option<Line> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let frame: Frame = match serde_json::from_slice(line) {
        Ok(frame) => frame,
        Err(_) => {
            return Some(Line::Unknown(Value::String(
                String::from_utf8_lossy(line).into_owned(),
            )));
        }
    };
    Some(if let Some(error) = frame.error {
        Line::Error(error)
    } else if let Some(drained) = frame.drained {
        Line::Drained(drained)
    } else if let Some(exited) = frame.exited {
        Line::Exited(exited)
    } else if let Some(waiting) = frame.waiting {
        Line::Waiting(waiting)
    } else if frame.task.is_some() || frame.caller.is_some() {
        Line::Hello {
            task: frame.task.unwrap_or(Value::Null),
            caller: frame.caller.unwrap_or(Value::Null),
            instance: frame
                .collector
                .as_ref()
                .and_then(|c| c.get("instance"))
                .and_then(Value::as_str)
                .map(str::to_owned),
        }
    } else {
        Line::Unknown(serde_json::from_slice(line).unwrap_or(Value::Null))
    })
}

/// Reads an answer body line by line.
#[derive(Debug)]
pub struct NdjsonReader<B> {
    body: B,
    framer: LineFramer,
    /// Complete lines framed but not yet returned.
    pending: std::collections::VecDeque<Bytes>,
    scratch: Vec<Bytes>,
    ended: bool,
}

impl<B> NdjsonReader<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    /// A reader of `body`.
    pub fn new(body: B) -> Self {
        Self {
            body,
            framer: LineFramer::new(MAX_LINE),
            pending: std::collections::VecDeque::new(),
            scratch: Vec::new(),
            ended: false,
        }
    }

    /// The next line; `Ok(None)` at the end of the body.
    ///
    /// # Errors
    /// [`NdjsonError::Body`] when the body breaks off, [`NdjsonError::LineTooLong`].
    pub async fn next(&mut self) -> Result<Option<Line>, NdjsonError> {
        loop {
            while let Some(raw) = self.pending.pop_front() {
                // A chunk may hold several lines.
                let mut rest = raw;
                while !rest.is_empty() {
                    let end = memchr::memchr(b'\n', &rest).map_or(rest.len(), |i| i + 1);
                    let line = rest.split_to(end);
                    if let Some(parsed) = parse_line(&line) {
                        if !rest.is_empty() {
                            self.pending.push_front(rest);
                        }
                        return Ok(Some(parsed));
                    }
                }
            }
            if self.ended {
                return Ok(None);
            }
            let dropped = self.framer.dropped_long();
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.framer.push(&data, &mut self.scratch);
                    }
                }
                Some(Err(err)) => {
                    return Err(NdjsonError::Body {
                        reason: err.to_string(),
                    });
                }
                None => {
                    self.ended = true;
                    self.framer.finish(&mut self.scratch);
                }
            }
            if self.framer.dropped_long() > dropped {
                return Err(NdjsonError::LineTooLong);
            }
            self.pending.extend(self.scratch.drain(..));
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::StreamBody;
    use hyper::body::Frame as BodyFrame;

    use super::*;

    /// A test body: its frames, or transport errors.
    type TestBody = StreamBody<futures_util::stream::Iter<std::vec::IntoIter<TestFrame>>>;
    type TestFrame = Result<BodyFrame<Bytes>, String>;

    fn body(pieces: Vec<Result<&'static [u8], &'static str>>) -> TestBody {
        let frames: Vec<TestFrame> = pieces
            .into_iter()
            .map(|p| {
                p.map(|b| BodyFrame::data(Bytes::from_static(b)))
                    .map_err(str::to_owned)
            })
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    async fn read_all<B>(mut reader: NdjsonReader<B>) -> (Vec<Line>, Result<(), NdjsonError>)
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let mut lines = Vec::new();
        loop {
            match reader.next().await {
                Ok(Some(line)) => lines.push(line),
                Ok(None) => return (lines, Ok(())),
                Err(err) => return (lines, Err(err)),
            }
        }
    }

    #[tokio::test]
    async fn final_line_after_progress() {
        let reader = NdjsonReader::new(body(vec![
            Ok(b"{\"task\":{\"arn\":\"a\"},\"caller\":{\"pid\":1},\"collector\":{\"instance\":\"7-1\"}}\n{\"wait"),
            Ok(b"ing\":{\"running\":[\"app\"]}}\n\n{\"drained\":{\"containers\":[{\"name\":\"app\",\"container_id\":\"c\",\"exit_code\":0,\"lines\":3,\"bytes\":30,\"lost_bytes\":0,\"lost_files\":0}],\"s3\":null,\"elapsed_ms\":12}}\n"),
        ]));
        let (lines, end) = read_all(reader).await;
        end.unwrap();
        assert_eq!(lines.len(), 3);
        let Line::Hello { instance, .. } = &lines[0] else {
            panic!("{:?}", lines[0]);
        };
        assert_eq!(instance.as_deref(), Some("7-1"));
        assert_eq!(
            lines[1],
            Line::Waiting(serde_json::json!({"running": ["app"]}))
        );
        let Line::Drained(drained) = &lines[2] else {
            panic!("{:?}", lines[2]);
        };
        assert_eq!(drained.containers[0].bytes, 30);
        assert_eq!(drained.elapsed_ms, 12);
        assert_eq!(drained.loss(), (0, 0));
        assert!(lines[2].is_final());
    }

    #[tokio::test]
    async fn error_line_and_unknown_lines() {
        let reader = NdjsonReader::new(body(vec![Ok(
            b"{\"future\":1}\nnot json\n{\"error\":{\"kind\":\"not_in_task\",\"message\":\"pid 7 is in no task\"}}",
        )]));
        let (lines, end) = read_all(reader).await;
        end.unwrap();
        assert!(matches!(lines[0], Line::Unknown(_)));
        assert!(matches!(lines[1], Line::Unknown(_)));
        assert_eq!(
            lines[2],
            Line::Error(DaemonError {
                kind: "not_in_task".into(),
                message: "pid 7 is in no task".into()
            })
        );
    }

    /// EOF without a final line (the daemon restarted): the reader ends cleanly and the
    /// caller sees no final line; a transport error is an error.
    #[tokio::test]
    async fn eof_without_final_and_broken_body() {
        let (lines, end) = read_all(NdjsonReader::new(body(vec![Ok(b"{\"waiting\":{}}\n")]))).await;
        end.unwrap();
        assert!(!lines.iter().any(Line::is_final));
        let (lines, end) = read_all(NdjsonReader::new(body(vec![
            Ok(b"{\"waiting\":{}}\n"),
            Err("connection reset"),
        ])))
        .await;
        assert_eq!(lines.len(), 1);
        assert!(matches!(end, Err(NdjsonError::Body { .. })));
    }

    #[test]
    fn exited_and_loss() {
        assert!(matches!(
            parse_line(b"{\"exited\":{\"containers\":[]}}\n"),
            Some(Line::Exited(_))
        ));
        let Some(Line::Drained(d)) = parse_line(
            br#"{"drained":{"containers":[{"name":"a","lost_bytes":5},{"name":"b","lost_files":1}],"s3":{"key":"k"},"elapsed_ms":1}}"#,
        ) else {
            panic!()
        };
        assert_eq!(d.loss(), (5, 1));
        assert_eq!(parse_line(b"\n"), None);
    }
}
