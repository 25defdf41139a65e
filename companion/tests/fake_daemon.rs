//! The built `companion` binary against a fake daemon: a tempdir with `graphite.sock`
//! (collecting bytes) and `companion.sock` (answering the drain steps with canned NDJSON).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpStream, UdpSocket, UnixListener, UnixStream};
use tokio::process::{Child, Command};
use tokio::sync::Notify;

/// One step of a canned answer.
#[derive(Debug, Clone)]
enum Act {
    /// Send this line (a newline is added).
    Line(&'static str),
    /// Wait for the test's go.
    WaitGo,
    /// Send this `waiting` line every 200 ms until the companion hangs up.
    WaitingForever(&'static str),
    /// Close without ending the chunked body (a daemon that died mid-answer).
    Abort,
    /// Become a new daemon run (`fake-2`) that lost every metric line it held.
    Restart,
}

/// A request the fake daemon took.
#[derive(Debug, Clone)]
struct Taken {
    target: String,
    /// What `graphite.sock` had received when the request came.
    graphite: Vec<u8>,
}

struct FakeDaemon {
    dir: tempfile::TempDir,
    graphite: Arc<Mutex<Vec<u8>>>,
    taken: Arc<Mutex<Vec<Taken>>>,
    request_came: Arc<Notify>,
    go: Arc<Notify>,
}

impl FakeDaemon {
    /// Starts both sockets; `script(step_a, attempt)` gives the answer to the `attempt`-th
    /// (0-based) request of that step.
    fn start(script: fn(bool, usize) -> Vec<Act>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let graphite = Arc::new(Mutex::new(Vec::new()));
        let taken = Arc::new(Mutex::new(Vec::new()));
        let request_came = Arc::new(Notify::new());
        let go = Arc::new(Notify::new());
        // The daemon run the metrics socket acknowledges with (`fake-1`, then `fake-2`
        // after [`Act::Restart`]).
        let run: Arc<Mutex<&'static str>> = Arc::new(Mutex::new("fake-1"));
        let metrics = UnixListener::bind(dir.path().join("graphite.sock")).unwrap();
        tokio::spawn({
            let (graphite, run) = (Arc::clone(&graphite), Arc::clone(&run));
            async move {
                loop {
                    let (mut conn, _) = metrics.accept().await.unwrap();
                    let (graphite, run) = (Arc::clone(&graphite), Arc::clone(&run));
                    tokio::spawn(async move {
                        let mut buf = [0u8; 4096];
                        loop {
                            match conn.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => graphite.lock().unwrap().extend_from_slice(&buf[..n]),
                            }
                        }
                        // The acknowledgement tells the companion every line is processed.
                        let ack = format!("ok {}\n", *run.lock().unwrap());
                        let _ = conn.write_all(ack.as_bytes()).await;
                    });
                }
            }
        });
        let api = UnixListener::bind(dir.path().join("companion.sock")).unwrap();
        tokio::spawn({
            let (graphite, taken, request_came, go, run) = (
                Arc::clone(&graphite),
                Arc::clone(&taken),
                Arc::clone(&request_came),
                Arc::clone(&go),
                Arc::clone(&run),
            );
            async move {
                let attempts = Arc::new(Mutex::new((0usize, 0usize)));
                loop {
                    let (conn, _) = api.accept().await.unwrap();
                    let (graphite, taken, request_came, go, attempts, run) = (
                        Arc::clone(&graphite),
                        Arc::clone(&taken),
                        Arc::clone(&request_came),
                        Arc::clone(&go),
                        Arc::clone(&attempts),
                        Arc::clone(&run),
                    );
                    tokio::spawn(async move {
                        let Some(target) = read_request(&conn).await else {
                            return;
                        };
                        let step_a = target.contains("phase=exited");
                        let attempt = {
                            let mut a = attempts.lock().unwrap();
                            let n = if step_a { &mut a.0 } else { &mut a.1 };
                            *n += 1;
                            *n - 1
                        };
                        let snapshot = graphite.lock().unwrap().clone();
                        taken.lock().unwrap().push(Taken {
                            target,
                            graphite: snapshot,
                        });
                        request_came.notify_one();
                        answer(conn, script(step_a, attempt), &go, &graphite, &run).await;
                    });
                }
            }
        });
        Self {
            dir,
            graphite,
            taken,
            request_came,
            go,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    async fn wait_requests(&self, n: usize) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while self.taken.lock().unwrap().len() < n {
                self.request_came.notified().await;
            }
        })
        .await
        .expect("the companion did not call in time");
    }
}

/// Reads the request head; its target.
async fn read_request(conn: &UnixStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        conn.readable().await.ok()?;
        match conn.try_read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return None,
        }
    }
    let text = String::from_utf8_lossy(&head);
    let line = text.lines().next()?;
    assert!(line.starts_with("POST "), "{line}");
    Some(line.split_whitespace().nth(1)?.to_owned())
}

async fn answer(
    mut conn: UnixStream,
    acts: Vec<Act>,
    go: &Notify,
    graphite: &Mutex<Vec<u8>>,
    run: &Mutex<&'static str>,
) {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n\
                Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    if conn.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let chunk = |line: &str| format!("{:x}\r\n{line}\n\r\n", line.len() + 1);
    for act in acts {
        match act {
            Act::Line(line) => {
                if conn.write_all(chunk(line).as_bytes()).await.is_err() {
                    return;
                }
            }
            Act::WaitGo => go.notified().await,
            Act::WaitingForever(line) => loop {
                if conn.write_all(chunk(line).as_bytes()).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            },
            Act::Abort => return,
            Act::Restart => {
                *run.lock().unwrap() = "fake-2";
                graphite.lock().unwrap().clear();
            }
        }
    }
    let _ = conn.write_all(b"0\r\n\r\n").await;
    let _ = conn.shutdown().await;
}

const HELLO: &str = r#"{"task":{"task_arn":"arn:aws:ecs:us-east-1:1:task/c/0123456789abcdef0123456789abcdef"},"caller":{"pid":42},"collector":{"instance":"fake-1"}}"#;
const HELLO_RUN_2: &str = r#"{"task":{"task_arn":"arn:aws:ecs:us-east-1:1:task/c/0123456789abcdef0123456789abcdef"},"caller":{"pid":42},"collector":{"instance":"fake-2"}}"#;
const WAITING: &str = r#"{"waiting":{"running":["app"]}}"#;
const EXITED: &str = r#"{"exited":{"containers":["app"]}}"#;
const DRAINED: &str = r#"{"drained":{"containers":[{"name":"app","container_id":"c1","exit_code":0,"lines":3,"bytes":30,"lost_bytes":0,"lost_files":0}],"s3":null,"elapsed_ms":5}}"#;
const DRAINED_LOSSY: &str = r#"{"drained":{"containers":[{"name":"app","container_id":"c1","exit_code":0,"lines":3,"bytes":30,"lost_bytes":10,"lost_files":0}],"s3":null,"elapsed_ms":5}}"#;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn companion(dir: &Path, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_companion"))
        .arg("--socket-dir")
        .arg(dir)
        .args(["--cgroup-file", "/nonexistent"])
        .args(extra)
        .env_remove("ECS_CONTAINER_METADATA_URI_V4")
        .env("COLLECTOR_LOG_LEVEL", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Waits for the companion's exit; its code and stderr.
async fn finish(child: Child, within: Duration) -> (i32, String, Duration) {
    let started = Instant::now();
    let out = tokio::time::timeout(within, child.wait_with_output())
        .await
        .expect("the companion did not exit in time")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), stderr, started.elapsed())
}

fn sigterm(child: &Child) {
    let pid = i32::try_from(child.id().unwrap()).unwrap();
    kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
}

async fn connect_retrying(port: u16) -> TcpStream {
    for _ in 0..100 {
        if let Ok(stream) = TcpStream::connect(("127.0.0.1", port)).await {
            return stream;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the relay does not listen on {port}");
}

fn line_set(bytes: &[u8]) -> BTreeSet<String> {
    String::from_utf8_lossy(bytes)
        .split_inclusive('\n')
        .map(str::to_owned)
        .collect()
}

/// Lines over TCP (a partial last line, an over-long line, a connection left open) and UDP
/// are in the daemon before step B; a step A answer that breaks off is retried; `drained`
/// exits 0.
#[tokio::test]
async fn relays_then_drains() {
    let daemon = FakeDaemon::start(|step_a, attempt| match (step_a, attempt) {
        (true, 0) => vec![Act::Line(HELLO), Act::Abort],
        (true, _) => vec![
            Act::Line(HELLO),
            Act::Line(WAITING),
            Act::WaitGo,
            Act::Line(EXITED),
        ],
        (false, _) => vec![Act::Line(WAITING), Act::Line(DRAINED)],
    });
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let child = companion(
        daemon.path(),
        &[
            "--listen",
            &listen,
            "--max-line",
            "100",
            "--drain-timeout",
            "20s",
        ],
    );
    let mut first = connect_retrying(port).await;
    first.write_all(b"a.b 1 100\nc.d 2").await.unwrap();
    drop(first);
    let mut open = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let long = format!("{}\nok.line 5 100\n", "x".repeat(200));
    open.write_all(long.as_bytes()).await.unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    udp.send_to(b"e.f 3\ng.h 4", ("127.0.0.1", port))
        .await
        .unwrap();
    daemon.wait_requests(2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    daemon.go.notify_one();
    let (code, stderr, _) = finish(child, Duration::from_secs(20)).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("drained: 1 container(s), 3 lines, 30 bytes"),
        "{stderr}"
    );
    assert!(stderr.contains("dropped_too_long=1"), "{stderr}");
    let taken = daemon.taken.lock().unwrap().clone();
    let targets: Vec<&str> = taken.iter().map(|t| t.target.as_str()).collect();
    assert_eq!(
        targets,
        [
            "/v1/drain?phase=exited",
            "/v1/drain?phase=exited",
            "/v1/drain"
        ]
    );
    let expected: BTreeSet<String> = [
        "a.b 1 100\n",
        "c.d 2\n",
        "ok.line 5 100\n",
        "e.f 3\n",
        "g.h 4\n",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(
        line_set(&taken[2].graphite),
        expected,
        "in the daemon before step B"
    );
    assert_eq!(line_set(&daemon.graphite.lock().unwrap()), expected);
    drop(open);
}

/// The daemon restarts between acknowledging the relay's flush and answering step B, and
/// lost the lines it held: the companion sees another run in step B's first line, writes
/// its recent lines again to the new run, and asks again; they are in the new run before
/// its answer.
#[tokio::test]
async fn a_daemon_restarted_after_the_flush_gets_the_metrics_again() {
    let daemon = FakeDaemon::start(|step_a, attempt| match (step_a, attempt) {
        (true, _) => vec![Act::Line(HELLO), Act::WaitGo, Act::Line(EXITED)],
        (false, 0) => vec![
            Act::Restart,
            Act::Line(HELLO_RUN_2),
            Act::WaitingForever(WAITING),
        ],
        (false, _) => vec![Act::Line(HELLO_RUN_2), Act::Line(DRAINED)],
    });
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let child = companion(
        daemon.path(),
        &["--listen", &listen, "--drain-timeout", "20s"],
    );
    let mut sender = connect_retrying(port).await;
    sender.write_all(b"a.b 1 100\nc.d 2 100\n").await.unwrap();
    drop(sender);
    daemon.wait_requests(1).await;
    daemon.go.notify_one();
    let (code, stderr, _) = finish(child, Duration::from_secs(20)).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("restarted"), "{stderr}");
    let taken = daemon.taken.lock().unwrap().clone();
    assert_eq!(taken.len(), 3, "{taken:?}");
    let expected: BTreeSet<String> = ["a.b 1 100\n", "c.d 2 100\n"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        line_set(&taken[2].graphite),
        expected,
        "in the new run before step B is asked again"
    );
}

/// No socket at all: exit 3 after the unreachable timeout, naming the socket.
#[tokio::test]
async fn unreachable_collector_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let child = companion(
        dir.path(),
        &["--unreachable-timeout", "1s", "--relay", "off"],
    );
    let (code, stderr, took) = finish(child, Duration::from_secs(10)).await;
    assert_eq!(code, 3, "{stderr}");
    let socket: PathBuf = dir.path().join("companion.sock");
    assert!(
        stderr.contains(&format!("cannot connect to {}", socket.display())),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(6), "took {took:?}");
}

/// SIGTERM while the task runs, a daemon that never finishes: exit 2 at the deadline, naming
/// the step and the last progress.
#[tokio::test]
async fn deadline_after_sigterm_exits_2() {
    let daemon = FakeDaemon::start(|step_a, _| {
        if step_a {
            vec![Act::Line(HELLO), Act::WaitingForever(WAITING)]
        } else {
            vec![Act::WaitingForever(r#"{"waiting":{"reading":["app"]}}"#)]
        }
    });
    let listen = format!("127.0.0.1:{}", free_port());
    let child = companion(
        daemon.path(),
        &["--listen", &listen, "--drain-timeout", "1500ms"],
    );
    daemon.wait_requests(1).await;
    sigterm(&child);
    let (code, stderr, took) = finish(child, Duration::from_secs(10)).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("drain deadline (1s 500ms) passed while waiting for the drain"),
        "{stderr}"
    );
    assert!(stderr.contains(r#"{"reading":["app"]}"#), "{stderr}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

/// A second SIGTERM ends the drain at once with 2.
#[tokio::test]
async fn second_sigterm_exits_2_at_once() {
    let daemon = FakeDaemon::start(|_, _| vec![Act::WaitingForever(WAITING)]);
    let child = companion(daemon.path(), &["--relay", "off", "--drain-timeout", "60s"]);
    daemon.wait_requests(1).await;
    sigterm(&child);
    daemon.wait_requests(2).await;
    sigterm(&child);
    let (code, stderr, took) = finish(child, Duration::from_secs(10)).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("second termination signal"), "{stderr}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

/// `drained` with lost bytes exits 4, never 0.
#[tokio::test]
async fn drained_with_loss_exits_4() {
    let daemon = FakeDaemon::start(|step_a, _| {
        if step_a {
            vec![Act::Line(HELLO), Act::Line(EXITED)]
        } else {
            vec![Act::Line(DRAINED_LOSSY)]
        }
    });
    let child = companion(daemon.path(), &["--relay", "off"]);
    let (code, stderr, _) = finish(child, Duration::from_secs(10)).await;
    assert_eq!(code, 4, "{stderr}");
    assert!(stderr.contains("drained with loss: 10 bytes"), "{stderr}");
}

/// An `error` line is final: exit 5 with the daemon's message.
#[tokio::test]
async fn refusal_exits_5() {
    let daemon = FakeDaemon::start(|_, _| {
        vec![Act::Line(
            r#"{"error":{"kind":"not_in_task","message":"pid 42 is in no ECS task"}}"#,
        )]
    });
    let child = companion(daemon.path(), &["--relay", "off"]);
    let (code, stderr, _) = finish(child, Duration::from_secs(10)).await;
    assert_eq!(code, 5, "{stderr}");
    assert!(
        stderr.contains("refused by the collector (not_in_task): pid 42 is in no ECS task"),
        "{stderr}"
    );
}

/// Usage errors exit 64; `health` follows the relay.
#[tokio::test]
async fn usage_and_health() {
    let out = Command::new(env!("CARGO_BIN_EXE_companion"))
        .args(["--drain-timeout", "soon"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let out = Command::new(env!("CARGO_BIN_EXE_companion"))
        .arg("--version")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("companion "));
    let port = free_port();
    let health = |listen: String| async move {
        Command::new(env!("CARGO_BIN_EXE_companion"))
            .args(["health", "--listen", &listen])
            .output()
            .await
            .unwrap()
            .status
            .code()
    };
    assert_eq!(health(format!("127.0.0.1:{port}")).await, Some(1));
    let _listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    assert_eq!(health(format!("127.0.0.1:{port}")).await, Some(0));
}
