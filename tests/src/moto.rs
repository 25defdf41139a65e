//! [`Moto`]: a real moto server (the local stand-in for CloudWatch Logs and S3) per test, and
//! what a test reads back from it (log events; S3 objects).
//!
//! `moto_server` comes from `$COLLECTOR_TEST_MOTO` (set by `cargo xtask test`, which installs
//! moto 5.2.5 into a virtualenv), else from that virtualenv under the target directory. Each
//! [`Moto`] listens on its own free port on 127.0.0.1 and is killed when dropped; it can be
//! stopped and started again on the same port to stage an outage (its data is in memory, so
//! a restarted server starts empty, as a deleted log group would).
//!
//! Requests are plain HTTP with the CloudWatch Logs JSON protocol. moto checks no signature,
//! but it picks the service from the `Authorization` header's credential scope, so requests
//! carry a dummy one.

use std::env;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

/// How long a starting server may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stopping server gets after SIGTERM before SIGKILL (moto takes seconds).
const STOP_GRACE: Duration = Duration::from_millis(500);
/// The region the tests use (the collector is configured with it too).
pub const MOTO_REGION: &str = "us-east-1";

/// `moto_server`: `$COLLECTOR_TEST_MOTO`, else `<target>/xtask/moto-venv/bin/moto_server`.
///
/// # Errors
/// When neither exists: the message says how to install it.
pub fn moto_server_bin() -> Result<PathBuf> {
    if let Some(bin) = env::var_os("COLLECTOR_TEST_MOTO") {
        let bin = PathBuf::from(bin);
        ensure!(
            bin.is_file(),
            "COLLECTOR_TEST_MOTO={} is not a file",
            bin.display()
        );
        return Ok(bin);
    }
    let target = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target"));
    let bin = target.join("xtask/moto-venv/bin/moto_server");
    ensure!(
        bin.is_file(),
        "moto_server not found: set COLLECTOR_TEST_MOTO or run `cargo xtask test`, which \
         installs moto 5.2.5 into {}",
        target.join("xtask/moto-venv").display()
    );
    Ok(bin)
}

/// One log event as GetLogEvents returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEvent {
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    /// The message.
    pub message: String,
}

/// A running (or stopped) moto server.
pub struct Moto {
    bin: PathBuf,
    port: u16,
    child: Option<Child>,
    /// The server's output (appended across restarts).
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Moto {
    /// Starts a server on a free port and waits until it answers.
    ///
    /// # Errors
    /// When `moto_server` is missing or does not answer within 30 s.
    pub fn start() -> Result<Self> {
        let bin = moto_server_bin()?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("find a free port")?
            .port();
        let dir = tempfile::Builder::new()
            .prefix("collector-moto-")
            .tempdir()
            .context("create moto's temporary directory")?;
        let mut moto = Self {
            bin,
            port,
            child: None,
            log: dir.path().join("moto.log"),
            _dir: dir,
        };
        moto.spawn()?;
        Ok(moto)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The environment a collector needs to use this server as CloudWatch Logs: the sink on,
    /// its endpoint and region, and dummy static credentials (nothing probes EC2 metadata).
    pub fn collector_env(&self) -> Vec<(String, String)> {
        [
            ("COLLECTOR_SINKS__CLOUDWATCH__ENABLED", "true".to_owned()),
            ("COLLECTOR_SINKS__CLOUDWATCH__ENDPOINT_URL", self.endpoint()),
            (
                "COLLECTOR_SINKS__CLOUDWATCH__REGION",
                MOTO_REGION.to_owned(),
            ),
            ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    fn spawn(&mut self) -> Result<()> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("open {}", self.log.display()))?;
        let err = out.try_clone()?;
        let child = Command::new(&self.bin)
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("start {}", self.bin.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok((200, _)) = http(self.port, "GET", "/moto-api/data.json", &[], b"") {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                bail!("moto_server exited at start ({status}): {}", self.output());
            }
            if Instant::now() > deadline {
                bail!(
                    "moto_server did not answer on port {} within {START_TIMEOUT:?}: {}",
                    self.port,
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server: SIGTERM, then SIGKILL after a short grace. Its data is gone.
    ///
    /// # Errors
    /// When it cannot be signalled or waited for.
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = Pid::from_raw(i32::try_from(child.id()).context("pid")?);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = kill(pid, Signal::SIGKILL);
        child.wait().context("wait for moto_server")?;
        Ok(())
    }

    /// Starts a stopped server again on the same port (empty).
    ///
    /// # Errors
    /// As [`Moto::start`].
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.spawn()
    }

    /// The server's output so far (last 4 kB).
    pub fn output(&self) -> String {
        let text = std::fs::read(&self.log).unwrap_or_default();
        let from = text.len().saturating_sub(4096);
        String::from_utf8_lossy(&text[from..]).into_owned()
    }

    /// One CloudWatch Logs call (`action` as in `Logs_20140328.<action>`).
    ///
    /// # Errors
    /// When the server cannot be reached or answers other than 200.
    pub fn logs_call(&self, action: &str, body: &Value) -> Result<Value> {
        let target = format!("Logs_20140328.{action}");
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential=testing/20260101/{MOTO_REGION}/logs/aws4_request, \
             SignedHeaders=host, Signature=0"
        );
        let headers = [
            ("Content-Type", "application/x-amz-json-1.1"),
            ("X-Amz-Target", target.as_str()),
            ("Authorization", auth.as_str()),
        ];
        let (status, body) = http(
            self.port,
            "POST",
            "/",
            &headers,
            body.to_string().as_bytes(),
        )
        .with_context(|| format!("{action} on moto port {}", self.port))?;
        let text = String::from_utf8_lossy(&body);
        ensure!(status == 200, "{action}: HTTP {status}: {text}");
        serde_json::from_slice(&body).with_context(|| format!("{action}: not JSON: {text}"))
    }

    /// The names of all log groups.
    ///
    /// # Errors
    /// As [`Moto::logs_call`].
    pub fn log_groups(&self) -> Result<Vec<String>> {
        self.paged_names("DescribeLogGroups", json!({}), "logGroups", "logGroupName")
    }

    /// A log group's retention, when it has one.
    ///
    /// # Errors
    /// As [`Moto::logs_call`], or when the group does not exist.
    pub fn retention_days(&self, group: &str) -> Result<Option<i64>> {
        let out = self.logs_call("DescribeLogGroups", &json!({"logGroupNamePrefix": group}))?;
        let g = out["logGroups"]
            .as_array()
            .and_then(|a| a.iter().find(|g| g["logGroupName"] == group))
            .ok_or_else(|| anyhow!("no log group {group}: {out}"))?;
        Ok(g["retentionInDays"].as_i64())
    }

    /// The names of the log streams of `group`.
    ///
    /// # Errors
    /// As [`Moto::logs_call`].
    pub fn log_streams(&self, group: &str) -> Result<Vec<String>> {
        self.paged_names(
            "DescribeLogStreams",
            json!({"logGroupName": group}),
            "logStreams",
            "logStreamName",
        )
    }

    fn paged_names(&self, action: &str, base: Value, list: &str, key: &str) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut req = base.clone();
            if let Some(t) = &token {
                req["nextToken"] = json!(t);
            }
            let out = self.logs_call(action, &req)?;
            for item in out[list].as_array().into_iter().flatten() {
                if let Some(n) = item[key].as_str() {
                    names.push(n.to_owned());
                }
            }
            match out["nextToken"].as_str() {
                Some(t) if Some(t) != token.as_deref() => token = Some(t.to_owned()),
                _ => return Ok(names),
            }
        }
    }

    /// The messages of a stream, oldest first (see [`Moto::log_events`]).
    ///
    /// # Errors
    /// As [`Moto::log_events`].
    pub fn log_messages(&self, group: &str, stream: &str) -> Result<Vec<String>> {
        Ok(self
            .log_events(group, stream)?
            .into_iter()
            .map(|e| e.message)
            .collect())
    }

    /// Every event of a stream, oldest first (GetLogEvents from the head; the end is where
    /// `nextForwardToken` repeats the token sent). Empty when the group or stream does not
    /// exist (yet).
    ///
    /// # Errors
    /// As [`Moto::logs_call`], except a missing group or stream.
    pub fn log_events(&self, group: &str, stream: &str) -> Result<Vec<LogEvent>> {
        let mut events = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut req = json!({
                "logGroupName": group,
                "logStreamName": stream,
                "startFromHead": true,
            });
            if let Some(t) = &token {
                req["nextToken"] = json!(t);
            }
            let out = match self.logs_call("GetLogEvents", &req) {
                Ok(out) => out,
                Err(e) if format!("{e:#}").contains("ResourceNotFoundException") => {
                    return Ok(Vec::new());
                }
                Err(e) => return Err(e),
            };
            let page = out["events"].as_array().cloned().unwrap_or_default();
            for e in &page {
                events.push(LogEvent {
                    timestamp: e["timestamp"].as_i64().unwrap_or_default(),
                    message: e["message"].as_str().unwrap_or_default().to_owned(),
                });
            }
            let next = out["nextForwardToken"].as_str().map(str::to_owned);
            if next.is_none() || next == token || page.is_empty() {
                return Ok(events);
            }
            token = next;
        }
    }
}

impl Moto {
    /// The environment a collector needs to archive into `bucket` on this server (path-style
    /// addressing, dummy credentials).
    pub fn collector_env_s3(&self, bucket: &str) -> Vec<(String, String)> {
        [
            ("COLLECTOR_SINKS__S3__ENABLED", "true".to_owned()),
            ("COLLECTOR_SINKS__S3__BUCKET", bucket.to_owned()),
            ("COLLECTOR_SINKS__S3__ENDPOINT_URL", self.endpoint()),
            ("COLLECTOR_SINKS__S3__REGION", MOTO_REGION.to_owned()),
            ("COLLECTOR_SINKS__S3__FORCE_PATH_STYLE", "true".to_owned()),
            ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    fn s3_request(&self, method: &str, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>)> {
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential=testing/20260101/{MOTO_REGION}/s3/aws4_request, \
             SignedHeaders=host, Signature=0"
        );
        http(
            self.port,
            method,
            path,
            &[
                ("Authorization", auth.as_str()),
                ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
            ],
            body,
        )
        .with_context(|| format!("S3 {method} {path} on moto port {}", self.port))
    }

    /// Creates a bucket.
    ///
    /// # Errors
    /// When the server cannot be reached or refuses.
    pub fn create_bucket(&self, bucket: &str) -> Result<()> {
        let (status, body) = self.s3_request("PUT", &format!("/{bucket}"), b"")?;
        ensure!(
            status == 200,
            "CreateBucket {bucket}: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        );
        Ok(())
    }

    /// Keys and sizes of the objects under `prefix` (at most 1000), sorted by key.
    ///
    /// # Errors
    /// When the server cannot be reached or refuses.
    pub fn list_objects(&self, bucket: &str, prefix: &str) -> Result<Vec<(String, u64)>> {
        let (status, body) = self.s3_request(
            "GET",
            &format!("/{bucket}?list-type=2&prefix={prefix}"),
            b"",
        )?;
        let text = String::from_utf8_lossy(&body).into_owned();
        ensure!(
            status == 200,
            "ListObjectsV2 {bucket}: HTTP {status}: {text}"
        );
        let mut out = Vec::new();
        for item in text.split("<Contents>").skip(1) {
            let field = |name: &str| {
                item.split(&format!("<{name}>"))
                    .nth(1)
                    .and_then(|r| r.split(&format!("</{name}>")).next())
                    .map(str::to_owned)
            };
            let key = field("Key").ok_or_else(|| anyhow!("no Key in {item}"))?;
            let size = field("Size").and_then(|s| s.parse().ok()).unwrap_or(0);
            out.push((key, size));
        }
        out.sort();
        Ok(out)
    }

    /// Keys of the multipart uploads open in `bucket` (ListMultipartUploads).
    ///
    /// # Errors
    /// When the server cannot be reached or refuses.
    pub fn multipart_uploads(&self, bucket: &str) -> Result<Vec<String>> {
        let (status, body) = self.s3_request("GET", &format!("/{bucket}?uploads"), b"")?;
        let text = String::from_utf8_lossy(&body).into_owned();
        ensure!(
            status == 200,
            "ListMultipartUploads {bucket}: HTTP {status}: {text}"
        );
        Ok(text
            .split("<Upload>")
            .skip(1)
            .filter_map(|u| u.split("<Key>").nth(1)?.split("</Key>").next())
            .map(str::to_owned)
            .collect())
    }

    /// An object's bytes.
    ///
    /// # Errors
    /// When the server cannot be reached or the object does not exist.
    pub fn get_object(&self, bucket: &str, key: &str) -> Result<Vec<u8>> {
        let (status, body) = self.s3_request("GET", &format!("/{bucket}/{key}"), b"")?;
        ensure!(
            status == 200,
            "GetObject {bucket}/{key}: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        );
        Ok(body)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// One HTTP/1.1 request with `Connection: close`; returns the status and the body.
pub(crate) fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("no end of headers in the answer"))?;
    let head = String::from_utf8_lossy(&resp[..split]).into_owned();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line: {head}"))?;
    let mut body = resp[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body)?;
    }
    Ok((status, body))
}

/// Decodes a chunked body held in memory.
pub(crate) fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("bad chunk"))?;
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .context("chunk size")?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        ensure!(data.len() >= size, "truncated chunk");
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or_default();
    }
}
