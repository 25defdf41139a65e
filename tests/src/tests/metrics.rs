//! Scenario: Graphite and StatsD metrics, attributed to the task that sent them.
//!
//! - Two containers of two ECS tasks on the real Docker engine send the same metric paths
//!   over the unix socket (bind-mounted), TCP and UDP (a user-defined bridge network; they
//!   send to its gateway) and StatsD; each value lands on its own task in the control API,
//!   `collector inspect` shows it, and carbon-c-relay (Debian's, as the upstream Graphite
//!   relay) receives every sample with the task's identity in its path.
//! - A malformed-input corpus (NaN, inf, an empty path, binary, timestamps in 1970 and 2100,
//!   a 10 MB line without a newline, half a line then a disconnect) is rejected per reason in
//!   `/metrics`, the listener stays up, and the good samples around it are kept.
//!
//! The senders in the containers are `tests/sender/graphite_send.rs`, compiled static here:
//! busybox's `nc` speaks neither unix sockets nor UDP.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use serde_json::Value;

use crate::{Check, CollectorProcess, TestContainer, TestTask, docker, random_hex};

/// How long a case waits for samples to show up.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The static sender, compiled once per test run.
pub(super) fn graphite_send() -> Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = crate::workspace_root();
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| root.join("target"), PathBuf::from);
            let out = target.join("graphite-send-static");
            let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
            let status = Command::new(rustc)
                .args(["--edition", "2021", "-O", "-C", "target-feature=+crt-static", "-o"])
                .arg(&out)
                .arg(root.join("tests/sender/graphite_send.rs"))
                .status()
                .map_err(|e| format!("run rustc: {e}"))?;
            if !status.success() {
                return Err(format!(
                    "rustc tests/sender/graphite_send.rs failed ({status}); a static glibc (libc6-dev) is needed"
                ));
            }
            Ok(out)
        })
        .clone()
        .map_err(|e| anyhow!("{e}"))
}

/// A port free for both TCP and UDP on all addresses.
fn free_port() -> Result<u16> {
    for _ in 0..50 {
        let tcp = TcpListener::bind("0.0.0.0:0").context("bind a TCP port")?;
        let port = tcp.local_addr()?.port();
        if UdpSocket::bind(("0.0.0.0", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no port free for both TCP and UDP")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `GET target` over the control socket.
pub(super) fn http_get(socket: &Path, target: &str) -> Result<(u16, String)> {
    let mut s =
        UnixStream::connect(socket).with_context(|| format!("connect {}", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: collector\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let raw = String::from_utf8(raw).context("a UTF-8 response")?;
    let (head, body) = raw.split_once("\r\n\r\n").context("no header end")?;
    let status: u16 = head.split(' ').nth(1).context("no status")?.parse()?;
    Ok((status, body.to_owned()))
}

pub(super) fn get_json(socket: &Path, target: &str) -> Result<Option<Value>> {
    let (status, body) = http_get(socket, target)?;
    match status {
        200 => Ok(Some(
            serde_json::from_str(&body).with_context(|| format!("{target}: {body}"))?,
        )),
        404 => Ok(None),
        s => bail!("GET {target}: {s} {body}"),
    }
}

/// `path -> latest value` of an owner's answer.
pub(super) fn latest(answer: &Value) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = answer["metrics"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| Some((m["path"].as_str()?.to_owned(), m["value"].as_f64()?)))
                .collect()
        })
        .unwrap_or_default();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// One counter sample of `/metrics`.
fn counter(socket: &Path, name_and_labels: &str) -> Result<u64> {
    let (status, body) = http_get(socket, "/metrics")?;
    ensure!(status == 200, "GET /metrics: {status}");
    body.lines()
        .find_map(|l| {
            l.strip_prefix(name_and_labels)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.parse().ok())
        })
        .with_context(|| format!("{name_and_labels} missing from /metrics:\n{body}"))
}

/// carbon-c-relay forwarding to a TCP listener owned by the test, which keeps every line.
struct Relay {
    child: Child,
    conf: PathBuf,
    port: u16,
    received: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Relay {
    fn start() -> Result<Self> {
        let upstream = TcpListener::bind("127.0.0.1:0").context("bind the upstream")?;
        let up_port = upstream.local_addr()?.port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        thread::spawn(move || {
            for conn in upstream.incoming().flatten() {
                let sink = sink.clone();
                thread::spawn(move || {
                    for line in BufReader::new(conn).lines().map_while(Result::ok) {
                        sink.lock().unwrap().push(line);
                    }
                });
            }
        });
        let port = free_port()?;
        let dir = tempfile::tempdir()?;
        let conf = dir.path().join("relay.conf");
        std::fs::write(
            &conf,
            format!(
                "listen type linemode 127.0.0.1:{port} proto tcp ;\n\
                 cluster upstream forward 127.0.0.1:{up_port} ;\n\
                 match * send to upstream stop ;\n"
            ),
        )?;
        let mut relay = Relay {
            child: spawn_relay(&conf)?,
            conf,
            port,
            received,
            _dir: dir,
        };
        relay.wait_listening()?;
        Ok(relay)
    }

    /// Kills carbon-c-relay (SIGKILL: its connections are closed by the kernel).
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port.
    fn restart(&mut self) -> Result<()> {
        self.kill();
        self.child = spawn_relay(&self.conf)?;
        self.wait_listening()
    }

    fn wait_listening(&mut self) -> Result<()> {
        let port = self.port;
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            ensure!(
                Instant::now() < deadline,
                "carbon-c-relay does not listen on {port}"
            );
            thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn lines(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }
}

/// carbon-c-relay on `conf`, logging next to it.
fn spawn_relay(conf: &Path) -> Result<Child> {
    Command::new("carbon-c-relay")
        .args(["-s", "-w", "1", "-f"])
        .arg(conf)
        .arg("-l")
        .arg(conf.with_extension("log"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context(
            "start carbon-c-relay (`apt-get install carbon-c-relay`; `cargo xtask test` installs it)",
        )
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A user-defined bridge network, removed when dropped.
struct Network {
    name: String,
    gateway: String,
}

impl Network {
    fn create() -> Result<Self> {
        let name = format!("collector-test-{}", random_hex(8));
        docker(["network", "create", "--driver", "bridge", &name])?;
        let mut net = Network {
            gateway: String::new(),
            name,
        };
        net.gateway = docker([
            "network",
            "inspect",
            "--format",
            "{{(index .IPAM.Config 0).Gateway}}",
            &net.name,
        ])?;
        ensure!(
            !net.gateway.is_empty(),
            "network {} has no gateway",
            net.name
        );
        Ok(net)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = docker(["network", "rm", &self.name]);
    }
}

/// Waits until the collector's control API knows `task` (its containers are identified).
fn wait_for_task(collector: &mut CollectorProcess, task: &TestTask) -> Result<()> {
    let api = collector.data_dir().join("control.sock");
    collector.wait_until(TIMEOUT, &format!("task {} known", task.task_id), || {
        Ok(
            match get_json(&api, &format!("/v1/tasks/{}", task.task_id))? {
                Some(_) => Check::Done(()),
                None => Check::Waiting("404".into()),
            },
        )
    })
}

/// Waits until the collector's Graphite TCP listener on `127.0.0.1:port` accepts. The probe
/// connection is itself a sender the collector looks up.
fn wait_for_tcp_listener(collector: &mut CollectorProcess, port: u16) -> Result<()> {
    collector.wait_until(TIMEOUT, "the TCP listener", || {
        Ok(match TcpStream::connect(("127.0.0.1", port)) {
            Ok(_) => Check::Done(()),
            Err(e) => Check::Waiting(e.to_string()),
        })
    })
}

/// Two tasks send the same paths over every transport: each value lands on its own task,
/// in the API, in `inspect`, and in what carbon-c-relay forwards.
#[test]
fn same_path_from_two_tasks_lands_on_each_task_over_every_transport() -> Result<()> {
    let sender = graphite_send()?;
    let relay = Relay::start()?;
    let net = Network::create()?;
    let (port, statsd) = (free_port()?, free_port()?);
    let mut collector = CollectorProcess::builder()
        .env("COLLECTOR_METRICS__TCP", format!("0.0.0.0:{port}"))
        .env("COLLECTOR_METRICS__UDP", format!("0.0.0.0:{port}"))
        .env("COLLECTOR_METRICS__STATSD", format!("0.0.0.0:{statsd}"))
        .env("COLLECTOR_METRICS__STATSD_FLUSH_INTERVAL", "500ms")
        .env("COLLECTOR_METRICS__CARBON__ENABLED", "true")
        .env(
            "COLLECTOR_METRICS__CARBON__ADDRESS",
            format!("127.0.0.1:{}", relay.port),
        )
        .start()?;
    let socket = collector.data_dir().join("task/graphite.sock");
    let api = collector.data_dir().join("control.sock");
    collector.wait_until(TIMEOUT, "the metrics socket", || {
        Ok(if socket.exists() {
            Check::Done(())
        } else {
            Check::Waiting("absent".into())
        })
    })?;
    let ctl = super::control_dir(&collector)?;

    // Task a sends 1, 11, 21 and three StatsD hits; task b 2, 12, 22 and five hits. Task a
    // also claims task b's id in a path: that lands on task a, as a path like any other.
    let tasks = [TestTask::new("metrics-a"), TestTask::new("metrics-b")];
    let spoof = format!("ecs.{}.app.requests", tasks[1].task_id);
    let mut containers: Vec<TestContainer> = Vec::new();
    for (i, task) in tasks.iter().enumerate() {
        let n = i + 1;
        let hits = 3 + 2 * i;
        let gw = &net.gateway;
        let claim = if i == 0 {
            format!("{spoof} 99\\n")
        } else {
            String::new()
        };
        let script = format!(
            "{go}; \
             printf 'app.requests {n}\\n{claim}' | /graphite-send unix /run/graphite.sock && \
             printf 'app.tcp 1{n}\\n' | /graphite-send tcp {gw}:{port} && \
             printf 'app.udp 2{n}\\n' | /graphite-send udp {gw}:{port} && \
             {{ i=0; while [ $i -lt {hits} ]; do printf 'app.hits:1|c\\n'; i=$((i+1)); done; \
                printf 'app.mem:{n}00|g\\napp.mem:+5|g\\napp.lat:{n}0|ms\\napp.lat:{n}4|ms\\n'; }} \
               | /graphite-send udp-one {gw}:{statsd} && echo sent; exec sleep 600",
            go = super::WAIT_FOR_GO,
        );
        containers.push(
            TestContainer::builder()
                .ecs(task, "app")
                .bind(&socket, "/run/graphite.sock")
                .bind(&sender, "/graphite-send")
                .bind(&ctl, "/ctl")
                .options(["--network", net.name.as_str()])
                .shell(script)
                .start()?,
        );
    }
    // Both containers identified by the collector before they send, so the forwarded paths
    // carry the whole identity.
    for task in &tasks {
        wait_for_task(&mut collector, task)?;
    }
    super::go(&ctl)?;

    for (i, task) in tasks.iter().enumerate() {
        let n = (i + 1) as f64;
        let hits = (3 + 2 * i) as f64;
        // StatsD, aggregated over one interval (one datagram): counter, gauge with a delta,
        // timer.
        let mut want = vec![
            ("app.hits".to_owned(), hits),
            ("app.lat.count".to_owned(), 2.0),
            ("app.lat.max".to_owned(), 10.0 * n + 4.0),
            ("app.lat.mean".to_owned(), 10.0 * n + 2.0),
            ("app.lat.min".to_owned(), 10.0 * n),
            ("app.lat.sum".to_owned(), 20.0 * n + 4.0),
            ("app.mem".to_owned(), 100.0 * n + 5.0),
            ("app.requests".to_owned(), n),
            ("app.tcp".to_owned(), 10.0 + n),
            ("app.udp".to_owned(), 20.0 + n),
        ];
        if i == 0 {
            want.push((spoof.clone(), 99.0));
            want.sort_by(|a, b| a.0.cmp(&b.0));
        }
        // By task id for one, by ARN for the other.
        let query = if i == 0 {
            task.task_id.clone()
        } else {
            task.arn.replace('/', "%2F").replace(':', "%3A")
        };
        let answer = collector.wait_until(
            TIMEOUT,
            &format!("{want:?} on task {}", task.task_id),
            || {
                let got = get_json(&api, &format!("/v1/metrics/tasks/{query}"))?;
                Ok(match got {
                    Some(a) if latest(&a) == want => Check::Done(a),
                    Some(a) => Check::Waiting(format!("{:?}", latest(&a))),
                    None => Check::Waiting("404".into()),
                })
            },
        )?;
        ensure!(
            answer["task_arn"] == task.arn.as_str() && answer["family"] == task.family.as_str(),
            "identity of task {}: {answer}",
            task.task_id
        );
        for m in answer["metrics"].as_array().into_iter().flatten() {
            ensure!(
                m["container_id"] == containers[i].id() && m["container_name"] == "app",
                "sender of {m} is not {}",
                containers[i].id()
            );
        }
    }

    // The host itself is no container: its sample is unattributed, on no task.
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.write_all(b"host.only 7\n")?;
    drop(s);
    collector.wait_until(TIMEOUT, "host.only unattributed", || {
        Ok(match get_json(&api, "/v1/metrics/unattributed")? {
            Some(a) if latest(&a).contains(&("host.only".to_owned(), 7.0)) => Check::Done(()),
            other => Check::Waiting(format!("{other:?}")),
        })
    })?;
    for task in &tasks {
        let a = get_json(&api, &format!("/v1/metrics/tasks/{}", task.task_id))?
            .context("task metrics gone")?;
        ensure!(
            !latest(&a).iter().any(|(p, _)| p == "host.only"),
            "the host's sample landed on task {}",
            task.task_id
        );
    }

    // inspect shows what each container sent.
    let inspect =
        get_json(&api, &format!("/v1/tasks/{}", tasks[0].task_id))?.context("inspect task")?;
    let text = inspect.to_string();
    ensure!(
        text.contains("app.requests = 1 @") && text.contains("\"received\":true"),
        "inspect of task a shows no metrics: {inspect:#}"
    );

    // And `collector inspect`, as people read it.
    let out = collector
        .cli(["inspect", tasks[0].task_id.as_str()])
        .output()
        .context("run collector inspect")?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success()
            && text.contains("  latest    app.requests = 1 @")
            && text.contains("  latest    app.udp = 21 @"),
        "inspect's Metrics section:\n{text}"
    );
    eprintln!("{}", &text[text.find("Metrics").unwrap_or(0)..]);

    // carbon-c-relay got every sample, the identity in the path.
    let want: Vec<String> = tasks
        .iter()
        .enumerate()
        .flat_map(|(i, t)| {
            let n = i + 1;
            let prefix = format!("ecs.{}.{}.{}.app", t.cluster, t.family, t.task_id);
            [
                format!("{prefix}.app.requests {n} "),
                format!("{prefix}.app.tcp 1{n} "),
                format!("{prefix}.app.udp 2{n} "),
                format!("{prefix}.app.hits {} ", 3 + 2 * i),
            ]
        })
        .chain(["unattributed.host.only 7 ".to_owned()])
        .collect();
    collector.wait_until(TIMEOUT, "every sample at carbon-c-relay's upstream", || {
        let lines = relay.lines();
        let missing: Vec<&String> = want
            .iter()
            .filter(|w| !lines.iter().any(|l| l.starts_with(w.as_str())))
            .collect();
        Ok(if missing.is_empty() {
            Check::Done(())
        } else {
            Check::Waiting(format!("missing {missing:?}; got {lines:?}"))
        })
    })?;
    ensure!(
        counter(&api, "collector_metrics_forward_dropped_samples_total")? == 0,
        "the forwarder dropped samples"
    );
    // The tasks end (their containers are removed): their metrics stay for the retention.
    drop(containers);
    collector.wait_until(TIMEOUT, "the containers seen removed", || {
        let a = get_json(&api, &format!("/v1/tasks/{}", tasks[0].task_id))?.unwrap_or_default();
        Ok(if a.to_string().contains("\"state\":\"removed\"") {
            Check::Done(())
        } else {
            Check::Waiting(a.to_string())
        })
    })?;
    let after = get_json(&api, &format!("/v1/metrics/tasks/{}", tasks[1].task_id))?
        .context("task b's metrics gone after the task ended")?;
    ensure!(
        latest(&after).contains(&("app.requests".to_owned(), 2.0)),
        "task b's metrics after it ended: {after}"
    );
    Ok(())
}

/// The malformed corpus: every bad line counted under its reason, the good ones kept, the
/// listener up all along; and a burst over the rate bound is dropped, counted, and over.
#[test]
fn malformed_input_is_rejected_per_reason_and_good_samples_are_unaffected() -> Result<()> {
    let port = free_port()?;
    let mut collector = CollectorProcess::builder()
        .env("COLLECTOR_METRICS__TCP", format!("127.0.0.1:{port}"))
        .env("COLLECTOR_METRICS__UDP", format!("127.0.0.1:{port}"))
        .env("COLLECTOR_METRICS__STATSD", "")
        .env("COLLECTOR_METRICS__MAX_SAMPLES_PER_SECOND", "200")
        .start()?;
    let api = collector.data_dir().join("control.sock");
    let addr = ("127.0.0.1", port);
    wait_for_tcp_listener(&mut collector, port)?;
    let t = now();
    let send = |bytes: &[u8]| -> Result<()> {
        let mut s = TcpStream::connect(addr)?;
        s.write_all(bytes)?;
        Ok(())
    };
    send(
        format!(
            "good.a 1 {t}\nnan.x NaN {t}\ninf.x inf\n. 1\na..b 1\n 7 {t}\n\x00\x01\x02\x03 5\n\
             old 1 0\nfuture 1 4102444800\ntoo.many 1 {t} x\ngood.b 2\n"
        )
        .as_bytes(),
    )?;
    // 10 MB without a newline, then the connection closes.
    send(&vec![b'x'; 10 * 1024 * 1024])?;
    // Half a line, then a disconnect.
    send(b"half.line 1")?;
    // Binary over UDP.
    UdpSocket::bind("127.0.0.1:0")?.send_to(b"\xff\xfe\xfd\x00 1\n", addr)?;
    // The listener is still up: a later good sample is kept.
    send(b"good.c 3\n")?;

    let expected = [
        ("non_finite_value", 2),
        ("empty_path", 3),
        ("invalid_path", 2),
        ("timestamp_out_of_range", 2),
        ("too_many_fields", 1),
        ("line_too_long", 1),
        ("incomplete_line", 1),
    ];
    collector.wait_until(TIMEOUT, "rejections per reason", || {
        let mut got = Vec::new();
        for (reason, _) in expected {
            got.push((
                reason,
                counter(
                    &api,
                    &format!("collector_metrics_rejected_lines_total{{reason=\"{reason}\"}}"),
                )?,
            ));
        }
        Ok(if got == expected {
            Check::Done(())
        } else {
            Check::Waiting(format!("{got:?}"))
        })
    })?;
    let want = vec![
        ("good.a".to_owned(), 1.0),
        ("good.b".to_owned(), 2.0),
        ("good.c".to_owned(), 3.0),
    ];
    let answer = collector.wait_until(TIMEOUT, "the good samples", || {
        Ok(match get_json(&api, "/v1/metrics/unattributed")? {
            Some(a) if latest(&a) == want => Check::Done(a),
            other => Check::Waiting(format!("{:?}", other.as_ref().map(latest))),
        })
    })?;
    ensure!(
        answer["rejected"] == 12,
        "rejected lines of the sender: {}",
        answer["rejected"]
    );

    // A burst over the bound (200/s): the excess is dropped and counted, the rest kept.
    let burst: String = (0..2000).map(|i| format!("burst {i}\n")).collect();
    send(burst.as_bytes())?;
    collector.wait_until(TIMEOUT, "the burst counted", || {
        let dropped = counter(
            &api,
            "collector_metrics_dropped_samples_total{reason=\"rate_limit\"}",
        )?;
        let accepted = counter(
            &api,
            "collector_metrics_accepted_samples_total{transport=\"tcp\"}",
        )?;
        // good.a, good.b, good.c + what the bucket allowed of the burst.
        Ok(if dropped > 0 && dropped + accepted == 2003 {
            Check::Done(())
        } else {
            Check::Waiting(format!("dropped {dropped}, accepted {accepted}"))
        })
    })?;
    thread::sleep(Duration::from_millis(1100));
    send(b"good.d 4\n")?;
    collector.wait_until(TIMEOUT, "good.d after the burst", || {
        Ok(match get_json(&api, "/v1/metrics/unattributed")? {
            Some(a) if latest(&a).contains(&("good.d".to_owned(), 4.0)) => Check::Done(a),
            other => Check::Waiting(format!("{:?}", other.as_ref().map(latest))),
        })
    })?;
    let a = get_json(&api, "/v1/metrics/unattributed")?.context("unattributed")?;
    ensure!(
        a["rate_limited"].as_u64().unwrap_or(0) > 0,
        "the sender's rate_limited count: {a}"
    );
    collector.check_running()?;
    Ok(())
}

/// A container in the host's network namespace (ECS `host` mode) sends from an address that
/// is not its own: its TCP samples are attributed through the socket it holds, while the
/// host's own process sending the same way stays unattributed.
#[test]
fn a_host_network_container_is_attributed_through_its_socket() -> Result<()> {
    let sender = graphite_send()?;
    let port = free_port()?;
    let mut collector = CollectorProcess::builder()
        .env("COLLECTOR_METRICS__TCP", format!("127.0.0.1:{port}"))
        .env("COLLECTOR_METRICS__UDP", format!("127.0.0.1:{port}"))
        .env("COLLECTOR_METRICS__STATSD", "")
        .start()?;
    let api = collector.data_dir().join("control.sock");
    wait_for_tcp_listener(&mut collector, port)?;
    let task = TestTask::new("metrics-host");
    let _container = TestContainer::builder()
        .ecs(&task, "daemon")
        .bind(&sender, "/graphite-send")
        .options(["--network", "host"])
        .shell(format!(
            "printf 'host.mode 5\\n' | /graphite-send tcp 127.0.0.1:{port} && \
             printf 'host.udp 7\\n' | /graphite-send udp 127.0.0.1:{port} 2000 && exec sleep 600"
        ))
        .start()?;
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.write_all(b"host.process 6\n")?;
    drop(s);
    // The test process is on the host too, and keeps its UDP socket open.
    let udp = UdpSocket::bind("127.0.0.1:0")?;
    udp.send_to(b"host.process.udp 8\n", ("127.0.0.1", port))?;
    // It sends as it starts, before the inventory may know it: Docker's labels complete its
    // identity.
    let answer = collector.wait_until(TIMEOUT, "host.mode on its task", || {
        Ok(
            match get_json(&api, &format!("/v1/metrics/tasks/{}", task.task_id))? {
                Some(a)
                    if latest(&a)
                        == [("host.mode".to_owned(), 5.0), ("host.udp".to_owned(), 7.0)] =>
                {
                    Check::Done(a)
                }
                other => Check::Waiting(format!("{:?}", other.as_ref().map(latest))),
            },
        )
    })?;
    ensure!(
        answer["family"] == task.family.as_str() && answer["task_arn"] == task.arn.as_str(),
        "identity of the host-mode task: {answer}"
    );
    collector.wait_until(TIMEOUT, "host.process unattributed", || {
        Ok(match get_json(&api, "/v1/metrics/unattributed")? {
            Some(a)
                if latest(&a)
                    == [
                        ("host.process".to_owned(), 6.0),
                        ("host.process.udp".to_owned(), 8.0),
                    ] =>
            {
                Check::Done(())
            }
            other => Check::Waiting(format!("{:?}", other.as_ref().map(latest))),
        })
    })?;
    Ok(())
}

/// carbon-c-relay killed and started again: the forwarder notices, reconnects with its
/// back-off, and what was sent meanwhile arrives (it waited in the queue).
#[test]
fn the_forwarder_reconnects_when_carbon_c_relay_restarts() -> Result<()> {
    let mut relay = Relay::start()?;
    let port = free_port()?;
    let mut collector = CollectorProcess::builder()
        .env("COLLECTOR_METRICS__TCP", format!("127.0.0.1:{port}"))
        .env("COLLECTOR_METRICS__UDP", "")
        .env("COLLECTOR_METRICS__STATSD", "")
        .env("COLLECTOR_METRICS__CARBON__ENABLED", "true")
        .env("COLLECTOR_METRICS__CARBON__MAX_BACKOFF", "500ms")
        .env(
            "COLLECTOR_METRICS__CARBON__ADDRESS",
            format!("127.0.0.1:{}", relay.port),
        )
        .start()?;
    let api = collector.data_dir().join("control.sock");
    wait_for_tcp_listener(&mut collector, port)?;
    let send = |line: &str| -> Result<()> {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.write_all(line.as_bytes())?;
        Ok(())
    };
    let arrived = |relay: &Relay, want: &[&str]| {
        let lines = relay.lines();
        let missing: Vec<&str> = want
            .iter()
            .copied()
            .filter(|w| !lines.iter().any(|l| l.starts_with(w)))
            .collect();
        if missing.is_empty() {
            Check::Done(())
        } else {
            Check::Waiting(format!("missing {missing:?}; got {lines:?}"))
        }
    };
    send("fw.one 1\n")?;
    collector.wait_until(TIMEOUT, "fw.one forwarded", || {
        Ok(arrived(&relay, &["unattributed.fw.one 1 "]))
    })?;
    relay.kill();
    thread::sleep(Duration::from_millis(300));
    send("fw.two 2\n")?;
    thread::sleep(Duration::from_secs(1));
    relay.restart()?;
    send("fw.three 3\n")?;
    collector.wait_until(
        TIMEOUT,
        "fw.two and fw.three forwarded after the restart",
        || {
            Ok(arrived(
                &relay,
                &["unattributed.fw.two 2 ", "unattributed.fw.three 3 "],
            ))
        },
    )?;
    ensure!(
        counter(&api, "collector_metrics_forward_errors_total")? > 0,
        "the outage was not counted"
    );
    ensure!(
        counter(&api, "collector_metrics_forward_dropped_samples_total")? == 0,
        "samples dropped though the queue had room"
    );
    Ok(())
}

/// Connections over the per-peer bound are closed at once and counted; the ones within it
/// and the listener carry on.
#[test]
fn connections_over_the_per_peer_bound_are_closed_and_counted() -> Result<()> {
    let port = free_port()?;
    let mut collector = CollectorProcess::builder()
        .env("COLLECTOR_METRICS__TCP", format!("127.0.0.1:{port}"))
        .env("COLLECTOR_METRICS__UDP", "")
        .env("COLLECTOR_METRICS__STATSD", "")
        .env("COLLECTOR_METRICS__MAX_CONNECTIONS_PER_PEER", "2")
        .start()?;
    let api = collector.data_dir().join("control.sock");
    wait_for_tcp_listener(&mut collector, port)?;
    // The probes above closed: wait until the collector freed their slots.
    let idle = |s: &TcpStream| -> Result<bool> {
        s.set_read_timeout(Some(Duration::from_millis(500)))?;
        let mut b = [0u8; 1];
        Ok(match (&*s).read(&mut b) {
            Ok(0) => false,
            Ok(_) => bail!("the collector wrote to a Graphite client"),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                true
            }
            Err(_) => false,
        })
    };
    let deadline = Instant::now() + TIMEOUT;
    let (first, second) = loop {
        let a = TcpStream::connect(("127.0.0.1", port))?;
        let b = TcpStream::connect(("127.0.0.1", port))?;
        if idle(&a)? && idle(&b)? {
            break (a, b);
        }
        ensure!(
            Instant::now() < deadline,
            "two connections are never held open"
        );
    };
    let refused_before = counter(&api, "collector_metrics_connections_refused_total")?;
    let third = TcpStream::connect(("127.0.0.1", port))?;
    ensure!(
        !idle(&third)?,
        "a third connection from the same peer was kept open"
    );
    ensure!(
        counter(&api, "collector_metrics_connections_refused_total")? == refused_before + 1,
        "the refused connection was not counted"
    );
    // The two within the bound still work, and once one closes a new one is taken.
    (&first).write_all(b"held.one 1\n")?;
    drop(first);
    drop(third);
    collector.wait_until(TIMEOUT, "a new connection after one closed", || {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        Ok(if idle(&s)? {
            (&s).write_all(b"after.close 2\n")?;
            Check::Done(())
        } else {
            Check::Waiting("refused".into())
        })
    })?;
    (&second).write_all(b"held.two 3\n")?;
    drop(second);
    let want = vec![
        ("after.close".to_owned(), 2.0),
        ("held.one".to_owned(), 1.0),
        ("held.two".to_owned(), 3.0),
    ];
    collector.wait_until(TIMEOUT, "the samples of the kept connections", || {
        Ok(match get_json(&api, "/v1/metrics/unattributed")? {
            Some(a) if latest(&a) == want => Check::Done(()),
            other => Check::Waiting(format!("{:?}", other.as_ref().map(latest))),
        })
    })?;
    Ok(())
}

/// Runs `cmd args`, failing with its stderr.
fn run(cmd: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("run {cmd}"))?;
    ensure!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A veth pair whose host end is removed when dropped.
struct Veth(String);

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

/// An `awsvpc`-style task: its containers share a network namespace that Docker did not set
/// up (`--network none`, then an interface moved in from outside, as the ECS CNI plugins do
/// with the task's ENI), so Docker knows no address for it. A sample it sends over TCP from
/// that address is attributed by the namespace's addresses, read in procfs.
#[test]
fn a_sender_in_a_namespace_docker_did_not_configure_is_attributed_by_its_addresses() -> Result<()> {
    let sender = graphite_send()?;
    let port = free_port()?;
    let mut collector = CollectorProcess::builder()
        .env("COLLECTOR_METRICS__TCP", format!("0.0.0.0:{port}"))
        .start()?;
    let api = collector.data_dir().join("control.sock");
    let task = TestTask::new("awsvpc");
    let container = TestContainer::builder()
        .ecs(&task, "app")
        .options(["--network", "none"])
        .bind(&sender, "/graphite-send")
        .shell("exec sleep 600")
        .start()?;
    let pid = container.pid()?.to_string();
    // A /30 of its own per run: 10.213.<n>.0/30.
    let n = u8::from_str_radix(&random_hex(2), 16)?;
    let (host_ip, task_ip) = (format!("10.213.{n}.1"), format!("10.213.{n}.2"));
    let suffix = random_hex(4);
    let (host_end, task_end) = (format!("vh{suffix}"), format!("vt{suffix}"));
    run(
        "ip",
        &[
            "link", "add", &host_end, "type", "veth", "peer", "name", &task_end,
        ],
    )?;
    let _veth = Veth(host_end.clone());
    run("ip", &["link", "set", &task_end, "netns", &pid])?;
    run(
        "ip",
        &["addr", "add", &format!("{host_ip}/30"), "dev", &host_end],
    )?;
    run("ip", &["link", "set", &host_end, "up"])?;
    let ns = format!("--net=/proc/{pid}/ns/net");
    run(
        "nsenter",
        &[
            &ns,
            "ip",
            "addr",
            "add",
            &format!("{task_ip}/30"),
            "dev",
            &task_end,
        ],
    )?;
    run("nsenter", &[&ns, "ip", "link", "set", &task_end, "up"])?;
    let script = format!("printf 'awsvpc.requests 42\\n' | /graphite-send tcp {host_ip}:{port}");
    docker(["exec", container.id(), "sh", "-c", &script])?;
    let answer = collector.wait_until(TIMEOUT, "the sample on its task", || {
        Ok(
            match get_json(&api, &format!("/v1/metrics/tasks/{}", task.task_id))? {
                Some(a) if latest(&a).contains(&("awsvpc.requests".to_owned(), 42.0)) => {
                    Check::Done(a)
                }
                other => Check::Waiting(format!("{other:?}")),
            },
        )
    })?;
    // Docker knows no address for the container (`--network none`): only its namespace's
    // addresses can name it.
    let sent_by = answer["metrics"][0]["container_id"].as_str();
    ensure!(
        sent_by == Some(container.id()) && answer["family"] == "awsvpc",
        "attributed to the wrong sender: {answer}"
    );
    Ok(())
}

/// A real client library as the sender: PyPI's `graphyte` (installed by `cargo xtask test`
/// beside moto), run by a task's container on a bridge network (the host's root mounted
/// read-only and entered with `chroot`, so the process is the container's). Right after
/// another sender was looked up (the test's own probe), it sends to the gateway over TCP and
/// UDP, a socket per UDP sample closed at once; both samples land on its task, by its
/// address, with the values and the timestamp it sent.
#[test]
fn samples_from_the_graphyte_library_land_on_their_task() -> Result<()> {
    let python = crate::moto::moto_server_bin()?.with_file_name("python");
    ensure!(
        python.exists(),
        "no {}: run `cargo xtask test` (it installs graphyte beside moto)",
        python.display()
    );
    let net = Network::create()?;
    let port = free_port()?;
    let mut collector = CollectorProcess::builder()
        .env("COLLECTOR_METRICS__TCP", format!("0.0.0.0:{port}"))
        .env("COLLECTOR_METRICS__UDP", format!("0.0.0.0:{port}"))
        .env("COLLECTOR_METRICS__STATSD", "")
        .start()?;
    let api = collector.data_dir().join("control.sock");
    let ctl = super::control_dir(&collector)?;
    let go = ctl.join("go");
    // A timestamp of its own for the TCP sample; the UDP one is stamped by graphyte. The
    // script waits for the test's go (the host's /tmp is its /tmp).
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() - 30;
    let gw = &net.gateway;
    let script = format!(
        "import os, time\n\
         while not os.path.exists('{go}'): time.sleep(0.05)\n\
         import graphyte\n\
         tcp = graphyte.Sender('{gw}', port={port}, prefix='gy', raise_send_errors=True)\n\
         tcp.send('tcp.metric', 42, timestamp={stamp})\n\
         udp = graphyte.Sender('{gw}', port={port}, prefix='gy', protocol='udp', raise_send_errors=True)\n\
         udp.send('udp.metric', 43.5)\n\
         time.sleep(600)\n",
        go = go.display()
    );
    // The test's probe is a lookup too: the container starts and sends within a second of
    // it, before the addresses may be listed again.
    wait_for_tcp_listener(&mut collector, port)?;
    let task = TestTask::new("metrics-graphyte");
    let container = TestContainer::builder()
        .ecs(&task, "app")
        .bind(Path::new("/"), "/host:ro")
        .options(["--network", net.name.as_str()])
        .command([
            "busybox".to_owned(),
            "chroot".to_owned(),
            "/host".to_owned(),
            python.display().to_string(),
            "-c".to_owned(),
            script,
        ])
        .start()?;
    wait_for_task(&mut collector, &task)?;
    super::go(&ctl)?;
    let answer = collector.wait_until(TIMEOUT, "graphyte's samples on its task", || {
        Ok(
            match get_json(&api, &format!("/v1/metrics/tasks/{}", task.task_id))? {
                Some(a)
                    if latest(&a)
                        == [
                            ("gy.tcp.metric".to_owned(), 42.0),
                            ("gy.udp.metric".to_owned(), 43.5),
                        ] =>
                {
                    Check::Done(a)
                }
                other => Check::Waiting(format!("{:?}", other.as_ref().map(latest))),
            },
        )
    });
    let answer = answer.map_err(|e| {
        let output = container
            .docker_logs()
            .map(|(out, err)| {
                out.into_iter()
                    .chain(err)
                    .map(|l| l.message)
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default();
        e.context(format!("graphyte's output: {output}"))
    })?;
    let text = answer.to_string();
    ensure!(
        text.contains(&stamp.to_string()),
        "the TCP sample's own timestamp {stamp} is not kept: {text}"
    );
    collector.check_running()
}
