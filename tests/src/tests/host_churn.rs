//! Host churn: what a busy or broken host does around the collector. Two hundred containers
//! in a minute, Docker's API going away and coming back, an inotify queue overflowing, and
//! the data directory's disk filling up. Each time the collector keeps going (or reports
//! clearly why it cannot), and every line arrives once the host is well again.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use super::metrics::http_get;
use super::{DELIVERY_TIMEOUT, WAIT_FOR_GO, control_dir, go, wait_for_line};
use crate::check::{self, check_exactly_once};
use crate::sink::read_lines;
use crate::{
    Check, CollectorProcess, Expect, Sink, TestContainer, check_at_least_once_in_order, messages,
    numbered, numbered_lines_script,
};

/// Lines of a container whose sink directory may change name while it runs (its Docker
/// name is learnt late): every `containers/*-<short id>` and `containers/<short id>`
/// directory's stdout, sorted.
fn lines_by_short_id(sink: &Sink, container: &TestContainer) -> Result<Vec<String>> {
    let dir = sink.root().join("containers");
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err).with_context(|| format!("list {}", dir.display())),
    };
    let mut all = Vec::new();
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name == container.short_id() || name.ends_with(&format!("-{}", container.short_id())) {
            all.extend(messages(&read_lines(&dir.join(name).join("stdout.log"))?));
        }
    }
    all.sort();
    Ok(all)
}

/// The sum of every sample of the counter `name` (all label sets) in `/metrics`.
fn metric_total(api: &Path, name: &str) -> Result<f64> {
    let (status, body) = http_get(api, "/metrics")?;
    ensure!(status == 200, "GET /metrics: {status}");
    Ok(body
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// Runs `jobs` on `threads` threads, each taking the next job until none is left; the first
/// error wins.
fn in_parallel<T: Send>(
    threads: usize,
    jobs: Vec<T>,
    run: impl Fn(T) -> Result<()> + Sync,
) -> Result<()> {
    let queue = Mutex::new(jobs.into_iter());
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let job = queue.lock().expect("no job panics").next();
                    let Some(job) = job else { return };
                    if let Err(err) = run(job) {
                        first_error
                            .lock()
                            .expect("no job panics")
                            .get_or_insert(err);
                    }
                }
            });
        }
    });
    match first_error.into_inner().expect("no job panics") {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

/// Containers of the churn test.
const CHURN_CONTAINERS: usize = 200;
/// Lines each of them prints.
const CHURN_LINES: usize = 5;
/// `docker run`s at a time.
const CHURN_PARALLELISM: usize = 4;

/// 200 containers are started (4 at a time) and exit at once after a few lines, within
/// about a minute: every line of every one of them arrives exactly once, and the collector
/// is still running and counts at least 200 containers discovered and no sink error.
#[test]
fn two_hundred_containers_in_a_minute() -> Result<()> {
    let mut collector = CollectorProcess::start()?;
    let started = Instant::now();
    let made: Mutex<Vec<(usize, TestContainer)>> = Mutex::new(Vec::new());
    in_parallel(CHURN_PARALLELISM, (1..=CHURN_CONTAINERS).collect(), |k| {
        let container = TestContainer::builder()
            .shell(numbered_lines_script(
                &format!("churn {k}"),
                CHURN_LINES,
                "",
            ))
            .start()?;
        made.lock().expect("no job panics").push((k, container));
        Ok(())
    })?;
    let containers = made.into_inner().expect("no job panics");
    let ran = started.elapsed();
    eprintln!("{} containers started in {ran:.1?}", containers.len());
    ensure!(
        containers.len() == CHURN_CONTAINERS,
        "premise: only {} containers started",
        containers.len()
    );

    let sink = collector.sink();
    let expectations = containers
        .iter()
        .map(|(k, container)| {
            Expect::new(
                format!("stdout of churn container {k}"),
                numbered(&format!("churn {k}"), CHURN_LINES),
                || Ok(messages(&sink.container_lines(container, "stdout")?)),
            )
        })
        .collect();
    collector.expect_exactly(Duration::from_secs(60), expectations)?;
    eprintln!(
        "every line of {CHURN_CONTAINERS} containers delivered {:.1?} after the first start",
        started.elapsed()
    );

    let api = collector.data_dir().join("control.sock");
    let discovered = metric_total(&api, "collector_containers_discovered_total")?;
    let sink_errors = metric_total(&api, "collector_sink_errors_total")?;
    eprintln!("/metrics: {discovered} containers discovered, {sink_errors} sink errors");
    ensure!(
        discovered >= CHURN_CONTAINERS as f64,
        "/metrics counts {discovered} containers discovered, fewer than {CHURN_CONTAINERS}"
    );
    ensure!(
        sink_errors == 0.0,
        "/metrics counts {sink_errors} sink errors"
    );
    collector.check_running()?;
    // Removed 4 at a time rather than one by one as they drop.
    in_parallel(CHURN_PARALLELISM, containers, |(_, c)| {
        drop(c);
        Ok(())
    })
}

/// A unix-socket proxy in front of Docker's API socket: stopping it is, as the collector
/// sees it, Docker's daemon going away (connections cut, the socket gone); starting it again
/// is the daemon coming back.
struct DockerProxy {
    /// The socket the collector uses.
    path: PathBuf,
    /// The accepting thread, while running.
    running: Option<ProxyRun>,
}

/// A running [`DockerProxy`].
struct ProxyRun {
    stop: Arc<AtomicBool>,
    /// Both ends of every connection, to cut them.
    conns: Arc<Mutex<Vec<UnixStream>>>,
    acceptor: JoinHandle<()>,
}

impl DockerProxy {
    const DOCKER: &str = "/var/run/docker.sock";

    fn new(path: PathBuf) -> Self {
        Self {
            path,
            running: None,
        }
    }

    /// Binds the socket and forwards every connection to Docker's.
    fn start(&mut self) -> Result<()> {
        let _ = fs::remove_file(&self.path);
        let listener = UnixListener::bind(&self.path)
            .with_context(|| format!("bind {}", self.path.display()))?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<UnixStream>>> = Arc::default();
        let acceptor = {
            let (stop, conns) = (stop.clone(), conns.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            let _ = client.set_nonblocking(false);
                            if let Ok(docker) = UnixStream::connect(Self::DOCKER) {
                                forward(client, docker, &conns);
                            }
                        }
                        Err(err) if err.kind() == ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(10));
                        }
                        Err(_) => return,
                    }
                }
            })
        };
        self.running = Some(ProxyRun {
            stop,
            conns,
            acceptor,
        });
        Ok(())
    }

    /// Closes the socket and cuts every connection.
    fn stop(&mut self) {
        if let Some(run) = self.running.take() {
            run.stop.store(true, Ordering::SeqCst);
            let _ = run.acceptor.join();
            for conn in run.conns.lock().expect("no copier panics").drain(..) {
                let _ = conn.shutdown(std::net::Shutdown::Both);
            }
        }
        let _ = fs::remove_file(&self.path);
    }
}

impl Drop for DockerProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Copies both ways between `client` and `docker` on two threads; keeps clones in `conns`.
fn forward(client: UnixStream, docker: UnixStream, conns: &Arc<Mutex<Vec<UnixStream>>>) {
    let (Ok(c2), Ok(d2), Ok(c3), Ok(d3)) = (
        client.try_clone(),
        docker.try_clone(),
        client.try_clone(),
        docker.try_clone(),
    ) else {
        return;
    };
    conns.lock().expect("no copier panics").extend([c3, d3]);
    let pipe = |mut from: UnixStream, mut to: UnixStream| {
        thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Write);
        });
    };
    pipe(client, docker);
    pipe(d2, c2);
}

/// Lines of each writer in the Docker-restart test.
const OUTAGE_LINES: usize = 3_000;

/// Docker's daemon restarts while containers write, and a container starts while it is
/// down: no line is lost or doubled, the collector says it lost the API and that it is
/// connected again.
///
/// Not the real daemon: `cargo test` runs the cases of this binary in parallel threads, and
/// other worktrees' suites may share the machine's one dockerd; restarting it would fail
/// every case that runs a container meanwhile (their `docker` calls, and containers without
/// live-restore). The collector instead talks to Docker through a unix-socket proxy
/// ([`DockerProxy`]) that the test stops (socket removed, connections cut, events stream
/// ended) and starts again: to the collector, that is a daemon restart. Containers keep
/// running and writing their json-file logs meanwhile, as with `live-restore`.
#[test]
fn a_docker_daemon_restart_loses_nothing() -> Result<()> {
    let sockets = tempfile::tempdir().context("create a socket directory")?;
    let mut proxy = DockerProxy::new(sockets.path().join("docker.sock"));
    proxy.start()?;
    let mut collector = CollectorProcess::builder()
        .docker_socket(&proxy.path)
        .start()?;
    let log = collector.log_path().to_owned();
    collector.wait_until(DELIVERY_TIMEOUT, "the Docker API connected", || {
        Ok(
            if collector_said(&log, "Connected to the Docker API.") >= 1 {
                Check::Done(())
            } else {
                Check::Waiting("not yet".into())
            },
        )
    })?;
    let ctl = control_dir(&collector)?;
    // 3,000 lines 10 ms apart every 10: some 3 s, around the outage.
    let paced = |prefix: &str| {
        format!(
            "echo \"{prefix} 1\"; {WAIT_FOR_GO}; i=2; while [ $i -le {OUTAGE_LINES} ]; do \
             echo \"{prefix} $i\"; [ $((i % 10)) -eq 0 ] && sleep 0.01; i=$((i+1)); done; \
             exec sleep 600"
        )
    };
    let before: Vec<TestContainer> = ["before-a", "before-b"]
        .into_iter()
        .map(|p| {
            TestContainer::builder()
                .bind(&ctl, "/ctl")
                .shell(paced(p))
                .start()
        })
        .collect::<Result<_>>()?;
    let sink = collector.sink();
    for (c, p) in before.iter().zip(["before-a", "before-b"]) {
        wait_for_line(&mut collector, c.name(), &format!("{p} 1"), || {
            Ok(messages(&sink.container_lines(c, "stdout")?))
        })?;
    }
    go(&ctl)?;
    thread::sleep(Duration::from_millis(500));

    proxy.stop();
    let during = TestContainer::builder()
        .shell(numbered_lines_script("during", OUTAGE_LINES, "") + "; exec sleep 600")
        .start()?;
    collector.wait_until(DELIVERY_TIMEOUT, "the collector to notice", || {
        let out = fs::read_to_string(&log).unwrap_or_default();
        Ok(
            if out.contains("Docker events stream") || out.contains("Docker API unreachable") {
                Check::Done(())
            } else {
                Check::Waiting("no word of it".into())
            },
        )
    })?;
    thread::sleep(Duration::from_secs(2));
    proxy.start()?;
    collector.wait_until(DELIVERY_TIMEOUT, "the Docker API connected again", || {
        Ok(
            if collector_said(&log, "Connected to the Docker API.") >= 2 {
                Check::Done(())
            } else {
                Check::Waiting("not yet".into())
            },
        )
    })?;

    let mut sorted_during = numbered("during", OUTAGE_LINES);
    sorted_during.sort();
    let mut expectations: Vec<Expect<'_>> = before
        .iter()
        .zip(["before-a", "before-b"])
        .map(|(c, p)| {
            Expect::new(
                format!("stdout of {}", c.name()),
                numbered(p, OUTAGE_LINES),
                || Ok(messages(&sink.container_lines(c, "stdout")?)),
            )
        })
        .collect();
    expectations.push(Expect::new(
        format!("stdout of {}, started while Docker was down", during.name()),
        sorted_during,
        || lines_by_short_id(&sink, &during),
    ));
    collector.expect_exactly(DELIVERY_TIMEOUT, expectations)?;
    let out = collector.output();
    let said: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("Docker events stream") || l.contains("Docker API unreachable"))
        .collect();
    eprintln!("the collector said: {said:#?}");
    Ok(())
}

/// How many lines of the collector's output (its log file `log`) contain `text`.
fn collector_said(log: &Path, text: &str) -> usize {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(text))
        .count()
}

/// `fs.inotify.max_queued_events`, set for as long as the guard lives.
struct MaxQueuedEvents {
    /// The value to restore.
    before: String,
}

impl MaxQueuedEvents {
    const PATH: &str = "/proc/sys/fs/inotify/max_queued_events";

    fn set(value: u32) -> Result<Self> {
        let before = fs::read_to_string(Self::PATH)
            .with_context(|| format!("read {}", Self::PATH))?
            .trim()
            .to_owned();
        fs::write(Self::PATH, value.to_string())
            .with_context(|| format!("write {} (root needed)", Self::PATH))?;
        Ok(Self { before })
    }
}

impl Drop for MaxQueuedEvents {
    fn drop(&mut self) {
        if let Err(err) = fs::write(Self::PATH, &self.before) {
            eprintln!("cannot restore {} to {}: {err}", Self::PATH, self.before);
        }
    }
}

/// Sends SIGCONT to a stopped process when dropped.
struct Stopped(Pid);

impl Stopped {
    fn stop(pid: u32) -> Result<Self> {
        let pid = Pid::from_raw(i32::try_from(pid).context("pid out of range")?);
        kill(pid, Signal::SIGSTOP).context("SIGSTOP the collector")?;
        Ok(Self(pid))
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGCONT);
    }
}

/// Containers started at once in the overflow test.
const BURST: usize = 40;

/// The collector's inotify queues (cgroupfs, Docker's containers folder, the rotation
/// guard) hold 16 events (`fs.inotify.max_queued_events`), and 40 containers start while the
/// collector is stopped (SIGSTOP: a host so busy it is not scheduled), so the kernel drops
/// events and queues `IN_Q_OVERFLOW`. The collector runs with Docker events, eBPF and the
/// periodic rescan off, so the overflow's own rescan is what finds the containers: all
/// their lines arrive, and the overflow is in its log.
///
/// The sysctl is global but read only when an inotify instance is created
/// (`inotify_init1` copies it into the new queue), so it stays low only from just before
/// this collector starts until it is ready (about a second), and a guard restores it even
/// when the case fails. Other collectors that start in that window (the suite runs cases in
/// parallel) get small queues too and survive them the same way, by rescanning; so the case
/// needs no lock against the others.
#[test]
fn inotify_overflow_is_survived() -> Result<()> {
    let mut collector = {
        let _tiny = MaxQueuedEvents::set(16)?;
        let mut collector = CollectorProcess::builder()
            .env("COLLECTOR_DISCOVERY__DOCKER_EVENTS", "false")
            .env("COLLECTOR_DISCOVERY__RESCAN_INTERVAL", "1h")
            .args(["--ebpf", "off"])
            .start()?;
        wait_ready(&mut collector)?;
        collector
    };

    let stopped = Stopped::stop(collector.pid().context("the collector runs")?)?;
    let made: Mutex<Vec<(usize, TestContainer)>> = Mutex::new(Vec::new());
    in_parallel(8, (1..=BURST).collect(), |k| {
        let container = TestContainer::builder()
            .shell(numbered_lines_script(&format!("burst {k}"), 20, "") + "; exec sleep 600")
            .start()?;
        made.lock().expect("no job panics").push((k, container));
        Ok(())
    })?;
    drop(stopped);
    let containers = made.into_inner().expect("no job panics");

    let sink = collector.sink();
    let expectations = containers
        .iter()
        .map(|(k, container)| {
            Expect::new(
                format!("stdout of burst container {k}"),
                numbered(&format!("burst {k}"), 20),
                || Ok(messages(&sink.container_lines(container, "stdout")?)),
            )
        })
        .collect();
    collector.expect_exactly(DELIVERY_TIMEOUT, expectations)?;
    let overflows = collector_said(collector.log_path(), "inotify queue overflowed");
    ensure!(
        overflows > 0,
        "no overflow in the collector's log: the premise failed; {}",
        collector.stderr_tail()
    );
    eprintln!("the collector logged {overflows} inotify queue overflows");
    Ok(())
}

/// Waits until `/ready` of the collector's control API says ready.
fn wait_ready(collector: &mut CollectorProcess) -> Result<()> {
    let api = collector.data_dir().join("control.sock");
    wait_ready_at(collector, &api)
}

/// Waits until `/ready` at `api` says ready.
fn wait_ready_at(collector: &mut CollectorProcess, api: &Path) -> Result<()> {
    collector.wait_until(DELIVERY_TIMEOUT, "the collector ready", || {
        if !api.exists() {
            return Ok(Check::Waiting("no control socket".into()));
        }
        Ok(match http_get(api, "/ready") {
            Ok((200, _)) => Check::Done(()),
            Ok((status, body)) => Check::Waiting(format!("{status} {body}")),
            Err(err) => Check::Waiting(format!("{err:#}")),
        })
    })
}

/// A tmpfs mounted for as long as the guard lives.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        run(
            "mount",
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"],
            dir,
        )?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// Grows (or shrinks) it in place, as an operator who makes room would.
    fn resize(&self, size: &str) -> Result<()> {
        run("mount", &["-o", &format!("remount,size={size}")], &self.dir)
    }

    /// KiB in use (`df`).
    fn used_kib(&self) -> Result<u64> {
        let out = Command::new("df")
            .args(["-k", "--output=used"])
            .arg(&self.dir)
            .output()
            .context("run df")?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .with_context(|| format!("df output: {text}"))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: the collector (killed after this guard when declared after it) may still
        // hold files open.
        if let Err(err) = run("umount", &["-l"], &self.dir) {
            eprintln!("{err:#}");
        }
    }
}

/// Runs `cmd ARGS PATH`.
fn run(cmd: &str, args: &[&str], path: &Path) -> Result<()> {
    let out = Command::new(cmd)
        .args(args)
        .arg(path)
        .output()
        .with_context(|| format!("run {cmd}"))?;
    if !out.status.success() {
        bail!(
            "`{cmd} {} {}` failed: {}",
            args.join(" "),
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Lines the disk-full writer prints, some 130 bytes each in the sink: 2.6 MB, more than
/// the 512 KiB of room the disk is left with.
const DISK_LINES: usize = 20_000;

/// The collector's data directory (its state database and local sink) is a tmpfs with room
/// for about 512 KiB more once the container's first line is in, and the container then
/// writes 2.6 MB. (A fixed 2 MB disk was sometimes filled by the other tests' containers,
/// which this collector collects too, before the first line.) The collector does not crash: its sink reports "No
/// space left on device" (log and `/v1/sinks`), the checkpoints wait, and the tailer waits
/// (the container's log on Docker's disk is the buffer). Once the operator grows the disk,
/// every line arrives, in order, none torn, and duplicated at most within one batch.
#[test]
fn a_full_data_disk_stops_cleanly_and_resumes() -> Result<()> {
    let disk_dir = tempfile::Builder::new()
        .prefix("collector-disk-")
        .tempdir()
        .context("create a mount point")?;
    let data_dir = disk_dir.path().join("data");
    let disk = Tmpfs::mount(&data_dir, "64m")?;
    let mut collector = CollectorProcess::builder()
        .env("COLLECTOR_DATA_DIR", &data_dir)
        .start()?;
    let api = data_dir.join("control.sock");
    wait_ready_at(&mut collector, &api)?;
    let sink = Sink::new(data_dir.join("logs"));
    let ctl = control_dir(&collector)?;
    let pad = "x".repeat(80);
    let expected: Vec<String> = (1..=DISK_LINES)
        .map(|i| format!("disk {i} {pad}"))
        .collect();
    let container = TestContainer::builder()
        .bind(&ctl, "/ctl")
        .shell(format!(
            "echo \"{first}\"; {WAIT_FOR_GO}; i=2; while [ $i -le {DISK_LINES} ]; do \
             echo \"disk $i {pad}\"; i=$((i+1)); done; exec sleep 600",
            first = expected[0]
        ))
        .start()?;
    let read =
        || -> Result<Vec<String>> { Ok(messages(&sink.container_lines(&container, "stdout")?)) };
    wait_for_line(&mut collector, container.name(), &expected[0], read)?;
    disk.resize(&format!("{}k", disk.used_kib()? + 512))?;
    go(&ctl)?;

    // The disk fills up; the sink says so.
    let last_error = collector.wait_until(DELIVERY_TIMEOUT, "a sink error about space", || {
        let Some(sinks) = super::metrics::get_json(&api, "/v1/sinks")? else {
            return Ok(Check::Waiting("no /v1/sinks".into()));
        };
        let file = sinks
            .as_array()
            .and_then(|a| a.iter().find(|s| s["sink"] == "file"))
            .cloned()
            .unwrap_or(Value::Null);
        Ok(match file["last_error"].as_str() {
            Some(e) if e.contains("No space left on device") => Check::Done(e.to_owned()),
            other => Check::Waiting(format!("last_error {other:?}")),
        })
    })?;
    eprintln!("/v1/sinks: {last_error}");
    ensure!(
        collector.output().contains("No space left on device"),
        "the collector's log does not say the disk is full"
    );
    // It stays up while the disk is full, and nothing more arrives.
    thread::sleep(Duration::from_secs(3));
    collector.check_running()?;
    let before = read()?;
    ensure!(
        before.len() < DISK_LINES,
        "premise: every line fit on the small disk ({})",
        check::describe(&before)
    );

    // The operator makes room.
    disk.resize("64m")?;
    let started = Instant::now();
    collector.wait_until(
        Duration::from_secs(60),
        "the last line after making room",
        || {
            let seen = read()?;
            Ok(if seen.last() == expected.last() {
                Check::Done(())
            } else {
                Check::Waiting(check::describe(&seen))
            })
        },
    )?;
    eprintln!(
        "{} lines before making room, the rest {:.1?} after",
        before.len(),
        started.elapsed()
    );
    thread::sleep(crate::collector::SETTLE);
    collector.check_running()?;
    eprintln!(
        "/metrics: {} sink errors, {} checkpoint (SQLite) errors, all retried",
        metric_total(&api, "collector_sink_errors_total")?,
        metric_total(&api, "collector_checkpoint_errors_total")?
    );
    let seen = read()?;
    if let Err(err) = check_exactly_once(&seen, &expected) {
        eprintln!("not exactly once: {err:#}");
        // At least once, and a retried batch is at most one read pass (256 KiB) of lines.
        check_at_least_once_in_order(&seen, &expected, 256 * 1024 / 100)
            .map_err(|err| collector.explain(err))?;
    }
    drop(collector);
    drop(disk);
    Ok(())
}
