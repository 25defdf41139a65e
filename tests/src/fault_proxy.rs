//! [`FaultProxy`]: an HTTP/1.1 proxy in front of a [`crate::Moto`] server that a test turns,
//! while the collector runs, into a slow, throttling, failing or absent AWS endpoint.
//!
//! The collector's endpoint points at the proxy; the test reads back from moto directly, so
//! its own reads see no faults. Each request the proxy takes goes through [`Faults`], as they
//! are when it arrives:
//! - `down`: the listener is closed (connections are refused) and connections already open
//!   are cut without an answer, as when the service's address stops answering;
//! - `latency`: the request waits this long, then is handled as below (or cut, if the proxy
//!   went down meanwhile);
//! - `throttle_every` / `error_every`: the n-th request (counted over every request the proxy
//!   answers) is answered, without reaching moto, with the service's throttling error or an
//!   HTTP 500, in the protocol of its [`Flavor`];
//! - otherwise it is forwarded to moto on a new connection and moto's answer is relayed.
//!
//! Plain threads and blocking sockets (the harness has no async runtime): one thread accepts,
//! one per client connection. Requests are framed by `Content-Length` or chunked encoding;
//! answers are relayed with a `Content-Length` of their own, so client connections stay open.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail, ensure};

use crate::moto::dechunk;

/// How often the accept loop looks at its flags.
const ACCEPT_POLL: Duration = Duration::from_millis(10);
/// How long moto may take to answer one forwarded request.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);

/// Which service's error format the injected answers use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// CloudWatch Logs, JSON protocol (`awsJson1_1`): HTTP 400 with `x-amzn-ErrorType:
    /// ThrottlingException`, HTTP 500 `ServiceUnavailableException`.
    CloudWatchLogs,
    /// S3, REST-XML: HTTP 503 `SlowDown`, HTTP 500 `InternalError`.
    S3,
}

/// What the proxy does to the requests it takes from now on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Wait before answering each request.
    pub latency: Duration,
    /// Answer every n-th request with the throttling error.
    pub throttle_every: Option<u64>,
    /// Answer every n-th request (not throttled) with an HTTP 500.
    pub error_every: Option<u64>,
    /// Refuse connections and cut open ones.
    pub down: bool,
}

/// What happened to the requests of one action (`X-Amz-Target`'s operation, e.g.
/// `PutLogEvents`, else the HTTP method).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ActionCounts {
    /// Forwarded to moto, and its answer relayed.
    pub forwarded: u64,
    /// Answered with the throttling error.
    pub throttled: u64,
    /// Answered with an HTTP 500.
    pub errors: u64,
    /// Cut without an answer (the proxy was down).
    pub cut: u64,
    /// Forwarded to moto, but its answer could not be relayed (the proxy went down
    /// meanwhile): moto took the request, the client does not know.
    pub lost: u64,
}

/// State shared by the proxy's threads.
#[derive(Debug)]
struct Shared {
    faults: Mutex<Faults>,
    /// Requests answered (forwarded or faulted), for `*_every`.
    answered: AtomicU64,
    counts: Mutex<BTreeMap<String, ActionCounts>>,
    /// Open client connections (clones), to cut when going down or dropped.
    clients: Mutex<HashMap<u64, TcpStream>>,
    next_client: AtomicU64,
    stopped: AtomicBool,
}

/// Locks `m`; a thread that panicked holding it left plain data, still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    fn faults(&self) -> Faults {
        lock(&self.faults).clone()
    }

    fn count(&self, action: &str, f: impl FnOnce(&mut ActionCounts)) {
        f(lock(&self.counts).entry(action.to_owned()).or_default());
    }

    fn cut_clients(&self) {
        for (_, s) in lock(&self.clients).drain() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// A running proxy; stopped (listener closed, connections cut) when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    port: u16,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port in front of `127.0.0.1:<upstream_port>`,
    /// without faults.
    ///
    /// # Errors
    /// When no port can be bound.
    pub fn start(upstream_port: u16, flavor: Flavor) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("bind the fault proxy")?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared {
            faults: Mutex::new(Faults::default()),
            answered: AtomicU64::new(0),
            counts: Mutex::new(BTreeMap::new()),
            clients: Mutex::new(HashMap::new()),
            next_client: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
        });
        let s = shared.clone();
        thread::Builder::new()
            .name(format!("fault-proxy-{port}"))
            .spawn(move || accept_loop(listener, port, upstream_port, flavor, &s))
            .context("spawn the fault proxy")?;
        Ok(Self { port, shared })
    }

    /// `http://127.0.0.1:<port>`: the endpoint to give the collector.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Applies `faults` to the requests taken from now on (going down also cuts the open
    /// connections).
    pub fn set(&self, faults: Faults) {
        let down = faults.down;
        *lock(&self.shared.faults) = faults;
        if down {
            self.shared.cut_clients();
        }
    }

    /// What happened so far, per action.
    pub fn counts(&self) -> BTreeMap<String, ActionCounts> {
        lock(&self.shared.counts).clone()
    }

    /// What happened so far to one action's requests (zeros when none came).
    pub fn action(&self, action: &str) -> ActionCounts {
        self.counts().get(action).copied().unwrap_or_default()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.shared.cut_clients();
    }
}

/// Accepts connections while up; while down, holds no listener (so connecting is refused)
/// and binds the same port again when up.
fn accept_loop(
    listener: TcpListener,
    port: u16,
    upstream_port: u16,
    flavor: Flavor,
    shared: &Arc<Shared>,
) {
    let mut listener = Some(listener);
    while !shared.stopped.load(Ordering::SeqCst) {
        if shared.faults().down {
            listener = None;
            thread::sleep(ACCEPT_POLL);
            continue;
        }
        let Some(l) = listener.as_ref() else {
            // std sets SO_REUSEADDR, so the port is free again at once; a failure (someone
            // took it meanwhile) is retried, and shows as refused connections.
            listener = TcpListener::bind(("127.0.0.1", port))
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .ok();
            if listener.is_none() {
                thread::sleep(ACCEPT_POLL);
            }
            continue;
        };
        if l.set_nonblocking(true).is_err() {
            thread::sleep(ACCEPT_POLL);
            continue;
        }
        match l.accept() {
            Ok((stream, _)) => {
                let id = shared.next_client.fetch_add(1, Ordering::SeqCst);
                let registered = stream
                    .set_nonblocking(false)
                    .and_then(|()| stream.try_clone());
                let Ok(clone) = registered else { continue };
                lock(&shared.clients).insert(id, clone);
                let s = shared.clone();
                let _ = thread::Builder::new()
                    .name(format!("fault-proxy-{port}-{id}"))
                    .spawn(move || {
                        let _ = serve(stream, upstream_port, flavor, &s);
                        lock(&s.clients).remove(&id);
                    });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => thread::sleep(ACCEPT_POLL),
            Err(_) => thread::sleep(ACCEPT_POLL),
        }
    }
}

/// One HTTP request as read from a client.
#[derive(Debug)]
struct Request {
    method: String,
    target: String,
    /// Headers as sent, without the framing ones (`Content-Length`, `Transfer-Encoding`,
    /// `Connection`, `Expect`).
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The client sent `Connection: close`: it reads the answer to the end of the stream.
    close: bool,
}

impl Request {
    /// The operation: `X-Amz-Target`'s part after the dot, else the method.
    fn action(&self) -> String {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("x-amz-target"))
            .and_then(|(_, v)| v.rsplit('.').next())
            .map_or_else(|| self.method.clone(), str::to_owned)
    }
}

/// Serves one client connection until it closes, the proxy goes down or a write fails.
fn serve(client: TcpStream, upstream_port: u16, flavor: Flavor, shared: &Shared) -> Result<()> {
    let mut writer = client.try_clone()?;
    let mut reader = BufReader::new(client);
    loop {
        let Some(request) = read_request(&mut reader, &mut writer)? else {
            return Ok(());
        };
        let action = request.action();
        let faults = shared.faults();
        if !faults.latency.is_zero() && !faults.down {
            thread::sleep(faults.latency);
        }
        if faults.down || shared.faults().down || shared.stopped.load(Ordering::SeqCst) {
            shared.count(&action, |c| c.cut += 1);
            let _ = writer.shutdown(Shutdown::Both);
            return Ok(());
        }
        let n = shared.answered.fetch_add(1, Ordering::SeqCst) + 1;
        let every = |k: Option<u64>| k.is_some_and(|k| k > 0 && n.is_multiple_of(k));
        let (answer, forwarded) = if every(faults.throttle_every) {
            shared.count(&action, |c| c.throttled += 1);
            (throttling(flavor), false)
        } else if every(faults.error_every) {
            shared.count(&action, |c| c.errors += 1);
            (server_error(flavor), false)
        } else {
            match forward(upstream_port, &request) {
                Ok(answer) => (answer, true),
                Err(_) => {
                    // moto itself is gone: as good as down.
                    shared.count(&action, |c| c.cut += 1);
                    let _ = writer.shutdown(Shutdown::Both);
                    return Ok(());
                }
            }
        };
        let relayed = writer.write_all(&answer).and_then(|()| writer.flush());
        if forwarded {
            shared.count(&action, |c| match relayed {
                Ok(()) => c.forwarded += 1,
                Err(_) => c.lost += 1,
            });
        }
        relayed?;
        if request.close {
            let _ = writer.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
}

/// Reads one request; `None` when the client closed the connection between requests.
fn read_request(
    reader: &mut BufReader<TcpStream>,
    writer: &mut TcpStream,
) -> Result<Option<Request>> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line)? == 0 {
            if head.is_empty() {
                return Ok(None);
            }
            bail!("connection closed inside a request head");
        }
        if line == b"\r\n" || line == b"\n" {
            if head.is_empty() {
                continue;
            }
            break;
        }
        head.push(String::from_utf8_lossy(&line).trim_end().to_owned());
    }
    let mut first = head[0].split_whitespace();
    let (Some(method), Some(target)) = (first.next(), first.next()) else {
        bail!("bad request line {:?}", head[0]);
    };
    let (method, target) = (method.to_owned(), target.to_owned());
    let mut headers = Vec::new();
    let (mut length, mut chunked, mut expect, mut close) = (None, false, false, false);
    for line in &head[1..] {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        match k.to_ascii_lowercase().as_str() {
            "content-length" => length = Some(v.parse::<usize>().context("Content-Length")?),
            "transfer-encoding" => chunked = v.to_ascii_lowercase().contains("chunked"),
            "expect" => expect = v.eq_ignore_ascii_case("100-continue"),
            "connection" => close = v.eq_ignore_ascii_case("close"),
            _ => headers.push((k.to_owned(), v.to_owned())),
        }
    }
    if expect {
        writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let body = if chunked {
        read_chunked(reader)?
    } else {
        let mut body = vec![0; length.unwrap_or(0)];
        reader.read_exact(&mut body)?;
        body
    };
    Ok(Some(Request {
        method,
        target,
        headers,
        body,
        close,
    }))
}

/// Reads a chunked body (and its trailers).
fn read_chunked(reader: &mut BufReader<TcpStream>) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        ensure!(
            reader.read_line(&mut line)? > 0,
            "connection closed in a chunk"
        );
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("chunk size {line:?}"))?;
        if size == 0 {
            loop {
                let mut trailer = String::new();
                if reader.read_line(&mut trailer)? == 0 || trailer.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let at = body.len();
        body.resize(at + size, 0);
        reader.read_exact(&mut body[at..])?;
        let mut crlf = [0; 2];
        reader.read_exact(&mut crlf)?;
    }
}

/// Sends `request` to moto on a new connection and returns the answer to relay, framed by
/// `Content-Length`.
fn forward(upstream_port: u16, request: &Request) -> Result<Vec<u8>> {
    let mut up = TcpStream::connect(("127.0.0.1", upstream_port)).context("connect to moto")?;
    up.set_read_timeout(Some(UPSTREAM_TIMEOUT))?;
    let mut out = format!("{} {} HTTP/1.1\r\n", request.method, request.target);
    for (k, v) in &request.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        request.body.len()
    ));
    up.write_all(out.as_bytes())?;
    up.write_all(&request.body)?;
    let mut raw = Vec::new();
    up.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("no end of headers in moto's answer"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("HTTP/1.1 502 Bad Gateway");
    let mut body = raw[split + 4..].to_vec();
    let mut answer = format!("{status}\r\n");
    let mut length_header = None;
    let mut chunked = false;
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        match k.trim().to_ascii_lowercase().as_str() {
            "transfer-encoding" => chunked = v.to_ascii_lowercase().contains("chunked"),
            "content-length" => length_header = Some(v.trim().to_owned()),
            "connection" => {}
            _ => answer.push_str(&format!("{line}\r\n")),
        }
    }
    if chunked {
        body = dechunk(&body)?;
    }
    // A HEAD answer says how long the body would be, and has none.
    let length = match (request.method.as_str(), length_header) {
        ("HEAD", Some(l)) => l,
        _ => body.len().to_string(),
    };
    if request.method == "HEAD" {
        body.clear();
    }
    answer.push_str(&format!("Content-Length: {length}\r\n\r\n"));
    let mut bytes = answer.into_bytes();
    bytes.extend_from_slice(&body);
    Ok(bytes)
}

/// An answer with `status`, `headers` and `body`.
fn answer(status: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    out.into_bytes()
}

/// The service's throttling error, as it sends it.
fn throttling(flavor: Flavor) -> Vec<u8> {
    match flavor {
        // https://docs.aws.amazon.com/AmazonCloudWatchLogs/latest/APIReference/CommonErrors.html
        Flavor::CloudWatchLogs => answer(
            "400 Bad Request",
            &[
                ("Content-Type", "application/x-amz-json-1.1"),
                ("x-amzn-RequestId", "fault-proxy"),
                ("x-amzn-ErrorType", "ThrottlingException"),
            ],
            r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#,
        ),
        // https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html
        Flavor::S3 => answer(
            "503 Slow Down",
            &[("Content-Type", "application/xml")],
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
             <Message>Please reduce your request rate.</Message>\
             <RequestId>fault-proxy</RequestId></Error>",
        ),
    }
}

/// An HTTP 500 in the service's format.
fn server_error(flavor: Flavor) -> Vec<u8> {
    match flavor {
        Flavor::CloudWatchLogs => answer(
            "500 Internal Server Error",
            &[
                ("Content-Type", "application/x-amz-json-1.1"),
                ("x-amzn-RequestId", "fault-proxy"),
                ("x-amzn-ErrorType", "ServiceUnavailableException"),
            ],
            r#"{"__type":"ServiceUnavailableException","message":"injected by the test"}"#,
        ),
        Flavor::S3 => answer(
            "500 Internal Server Error",
            &[("Content-Type", "application/xml")],
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code>\
             <Message>We encountered an internal error. Please try again.</Message>\
             <RequestId>fault-proxy</RequestId></Error>",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Moto;

    /// The proxy forwards to moto, injects each fault the test sets, and refuses connections
    /// while down (and takes them again when up).
    #[test]
    fn forwards_injects_and_goes_down() -> Result<()> {
        let moto = Moto::start()?;
        let proxy = FaultProxy::start(moto.port(), Flavor::CloudWatchLogs)?;
        let port: u16 = proxy.endpoint().rsplit(':').next().unwrap().parse()?;
        let call = || {
            crate::moto::http(
                port,
                "POST",
                "/",
                &[
                    ("Content-Type", "application/x-amz-json-1.1"),
                    ("X-Amz-Target", "Logs_20140328.DescribeLogGroups"),
                    (
                        "Authorization",
                        "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/logs/aws4_request, SignedHeaders=host, Signature=0",
                    ),
                ],
                b"{}",
            )
        };
        let (status, body) = call()?;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        proxy.set(Faults {
            throttle_every: Some(2),
            error_every: Some(3),
            ..Faults::default()
        });
        // Requests 2..=4: throttled, 500, throttled.
        let statuses: Vec<u16> = (0..3).map(|_| call().map(|r| r.0)).collect::<Result<_>>()?;
        assert_eq!(statuses, [400, 500, 400]);
        proxy.set(Faults {
            latency: Duration::from_millis(300),
            ..Faults::default()
        });
        let started = std::time::Instant::now();
        assert_eq!(call()?.0, 200);
        assert!(started.elapsed() >= Duration::from_millis(300));
        proxy.set(Faults {
            down: true,
            ..Faults::default()
        });
        thread::sleep(Duration::from_millis(100));
        let err = TcpStream::connect(("127.0.0.1", port))
            .map(|_| ())
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
        proxy.set(Faults::default());
        let (status, _) = crate::check::wait_until(Duration::from_secs(5), "the proxy up", || {
            Ok(match call() {
                Ok(r) => crate::Check::Done(r),
                Err(e) => crate::Check::Waiting(format!("{e:#}")),
            })
        })?;
        assert_eq!(status, 200);
        let c = proxy.action("DescribeLogGroups");
        assert_eq!((c.throttled, c.errors), (2, 1), "{c:?}");
        Ok(())
    }
}
