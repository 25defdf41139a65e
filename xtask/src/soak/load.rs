//! The soak's steady load: long-running containers with Docker's rotation on, short-lived
//! containers started and removed all along, and Graphite samples over TCP.
//!
//! Every container runs the test image (`docker import`ed busybox, nothing pulled) with the
//! json-file driver, `max-size=1m` and `max-file=3`, and carries the label
//! `collector-soak=<our pid>`: [`Containers`] removes them all when dropped, on success,
//! error or Ctrl-C alike.

use std::io::Write as _;
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::verdict::MAX_FILE;
use crate::{cmd, docker};

/// The label key on every container a soak starts (the value is the run's pid).
pub(crate) const LABEL: &str = "collector-soak";

/// Long-running containers, started at once and running for the whole load.
pub(crate) const LONG_CONTAINERS: usize = 4;

/// Lines each long-running container writes per second (in one burst, then `sleep 1`).
/// About 8.5 KB/s of json-file log each, so a 1 MB file rotates about every two minutes.
pub(crate) const LONG_LINES_PER_SECOND: u64 = 50;

/// A short-lived container is started this often...
pub(crate) const SHORT_EVERY: Duration = Duration::from_secs(4);

/// ...writes `seq 1 N` with N from this range, lives two more seconds, and is removed once
/// it has been seen exited twice (about 2 to 4 s after it exits).
const SHORT_LINES: std::ops::Range<u64> = 50..250;

/// Graphite samples sent per second, in ten writes.
pub(crate) const GRAPHITE_PER_SECOND: u64 = 200;

/// Distinct Graphite paths.
const GRAPHITE_PATHS: u64 = 50;

/// Each Graphite connection is closed and a new one opened after this long.
pub(crate) const GRAPHITE_RECONNECT: Duration = Duration::from_secs(60);

/// The line the long-running containers repeat (about 100 bytes).
const LONG_LINE: &str =
    "soak: a steady application line, padded to about one hundred bytes with words and 0123456789";

/// What a container of the soak is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Runs for the whole load; its log rotates.
    Long,
    /// Writes a few lines and exits; removed soon after.
    Short,
}

/// A container the soak started.
#[derive(Clone, Debug)]
pub(crate) struct Started {
    /// Docker's 64-hex id.
    pub(crate) id: String,
    /// Its name, for messages.
    pub(crate) name: String,
    /// Long or short.
    pub(crate) role: Role,
    /// Lines it wrote, once known: at start for short-lived containers, from its last line
    /// once a long-running one exited.
    pub(crate) lines: Option<u64>,
    /// Seen exited by [`Containers::reap`].
    pub(crate) exited: bool,
    /// Removed (`docker rm`).
    pub(crate) removed: bool,
}

/// The containers of one soak run; removes them all when dropped.
pub(crate) struct Containers {
    /// `collector-soak=<pid>`.
    label: String,
    /// Every container started, in order.
    pub(crate) started: Vec<Started>,
}

impl Containers {
    /// Removes the containers earlier soak runs left (an interrupted run whose clean-up did
    /// not finish), and starts tracking this run's.
    ///
    /// # Errors
    /// When Docker does not answer.
    pub(crate) fn new() -> Result<Self> {
        let leftovers = docker::remove_labelled(LABEL)?;
        if leftovers > 0 {
            println!("xtask: soak: removed {leftovers} container(s) of an earlier run");
        }
        Ok(Self {
            label: format!("{LABEL}={}", std::process::id()),
            started: Vec::new(),
        })
    }

    /// Starts the [`LONG_CONTAINERS`], each writing [`LONG_LINES_PER_SECOND`] for `load`,
    /// then its line count (`soak-long-lines N`) as its last line.
    ///
    /// # Errors
    /// When `docker run` fails.
    pub(crate) fn start_long(&mut self, load: Duration) -> Result<()> {
        let script = format!(
            "end=$(( $(date +%s) + {secs} )); n=0; \
             while [ $(date +%s) -lt $end ]; do \
               yes '{LONG_LINE}' | head -n {LONG_LINES_PER_SECOND}; \
               n=$((n + {LONG_LINES_PER_SECOND})); sleep 1; \
             done; echo soak-long-lines $n",
            secs = load.as_secs()
        );
        for i in 0..LONG_CONTAINERS {
            self.run(&format!("long-{i}"), Role::Long, None, &script)?;
        }
        Ok(())
    }

    /// Starts one short-lived container.
    ///
    /// # Errors
    /// When `docker run` fails.
    pub(crate) fn start_short(&mut self) -> Result<()> {
        let n = self.started.len() as u64;
        // Spread over the range without a generator: 37 and 200 are coprime.
        let lines = SHORT_LINES.start + (n * 37) % (SHORT_LINES.end - SHORT_LINES.start);
        self.run(
            &format!("short-{n}"),
            Role::Short,
            Some(lines),
            &format!("seq 1 {lines}; sleep 2"),
        )
    }

    fn run(&mut self, name: &str, role: Role, lines: Option<u64>, script: &str) -> Result<()> {
        let name = format!("collector-soak-{}-{name}", std::process::id());
        let id = cmd::output(
            Command::new("docker")
                .args(["run", "--detach", "--label", &self.label, "--name", &name])
                .args(["--log-driver", "json-file", "--log-opt", "max-size=1m"])
                .args(["--log-opt", &format!("max-file={MAX_FILE}")])
                .args([docker::TEST_IMAGE, "sh", "-c", script]),
        )?;
        self.started.push(Started {
            id,
            name,
            role,
            lines,
            exited: false,
            removed: false,
        });
        Ok(())
    }

    /// Notes which containers exited, removes the short-lived ones that were already seen
    /// exited before (so the collector had a few seconds with the exited container), and
    /// reads the line count of long-running ones that exited.
    ///
    /// # Errors
    /// When `docker ps`, `docker rm` or `docker logs` fails.
    pub(crate) fn reap(&mut self) -> Result<()> {
        let exited = cmd::output(Command::new("docker").args([
            "ps",
            "--all",
            "--quiet",
            "--no-trunc",
            "--filter",
            &format!("label={}", self.label),
            "--filter",
            "status=exited",
        ]))?;
        let exited: Vec<&str> = exited.split_whitespace().collect();
        let mut remove = Vec::new();
        for c in &mut self.started {
            if c.removed || !exited.contains(&c.id.as_str()) {
                continue;
            }
            match (c.role, c.exited) {
                (Role::Short, true) => remove.push(c.id.clone()),
                (Role::Long, false) => c.lines = Some(long_lines(&c.id)?),
                _ => {}
            }
            c.exited = true;
        }
        if !remove.is_empty() {
            cmd::output(Command::new("docker").arg("rm").args(&remove))?;
            for c in &mut self.started {
                c.removed |= remove.contains(&c.id);
            }
        }
        Ok(())
    }

    /// Whether a container of `role` has not been seen exited yet.
    pub(crate) fn any_running(&self, role: Role) -> bool {
        self.started.iter().any(|c| c.role == role && !c.exited)
    }

    /// Short-lived containers started.
    pub(crate) fn shorts(&self) -> usize {
        self.started
            .iter()
            .filter(|c| c.role == Role::Short)
            .count()
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        match docker::remove_labelled(&self.label) {
            Ok(n) => println!("xtask: soak: removed the run's {n} remaining container(s)"),
            Err(e) => eprintln!(
                "xtask: soak: could not remove the containers labelled {}: {e:#}",
                self.label
            ),
        }
    }
}

/// Lines a long-running container wrote: the count on its last line, plus that line.
fn long_lines(id: &str) -> Result<u64> {
    let last = cmd::output(Command::new("docker").args(["logs", "--tail", "1", id]))?;
    match last.strip_prefix("soak-long-lines ").map(str::parse::<u64>) {
        Some(Ok(n)) => Ok(n + 1),
        _ => bail!("container {id} ended with {last:?}, not its line count"),
    }
}

/// All containers on the host, running or not (whatever started them).
///
/// # Errors
/// When `docker ps` fails.
pub(crate) fn host_containers() -> Result<u64> {
    let ids = cmd::output(Command::new("docker").args(["ps", "--all", "--quiet"]))?;
    Ok(ids.split_whitespace().count() as u64)
}

/// The Graphite sender thread: [`GRAPHITE_PER_SECOND`] samples over TCP, a new connection
/// every [`GRAPHITE_RECONNECT`].
pub(crate) struct GraphiteLoad {
    /// Set to stop the thread.
    stop: Arc<AtomicBool>,
    /// Samples written so far.
    sent: Arc<AtomicU64>,
    /// Connections opened so far.
    connections: Arc<AtomicU64>,
    /// The thread.
    handle: Option<thread::JoinHandle<Result<()>>>,
}

impl GraphiteLoad {
    /// Starts sending to `127.0.0.1:port`.
    pub(crate) fn spawn(port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let (s, n, c) = (stop.clone(), sent.clone(), connections.clone());
        let handle = thread::spawn(move || send_loop(port, &s, &n, &c));
        Self {
            stop,
            sent,
            connections,
            handle: Some(handle),
        }
    }

    /// Samples written so far.
    pub(crate) fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Connections opened so far.
    pub(crate) fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Stops the thread and returns how it ended.
    ///
    /// # Errors
    /// When a connection or a write failed.
    pub(crate) fn stop(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.take() {
            Some(handle) => handle
                .join()
                .map_err(|_| anyhow::anyhow!("the Graphite sender panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for GraphiteLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Writes a tenth of a second's samples every 100 ms until `stop`, reconnecting every
/// [`GRAPHITE_RECONNECT`].
fn send_loop(
    port: u16,
    stop: &AtomicBool,
    sent: &AtomicU64,
    connections: &AtomicU64,
) -> Result<()> {
    let per_write = GRAPHITE_PER_SECOND / 10;
    let mut i: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let mut conn = TcpStream::connect(("127.0.0.1", port))
            .with_context(|| format!("connect to the collector's Graphite port {port}"))?;
        connections.fetch_add(1, Ordering::Relaxed);
        let opened = Instant::now();
        let mut next = opened;
        while opened.elapsed() < GRAPHITE_RECONNECT && !stop.load(Ordering::Relaxed) {
            let mut chunk = Vec::with_capacity(per_write as usize * 40);
            crate::bench::graphite::push_lines(
                &mut chunk,
                "soak",
                i..i + per_write,
                GRAPHITE_PATHS,
            );
            i += per_write;
            conn.write_all(&chunk)
                .context("send Graphite samples to the collector")?;
            sent.fetch_add(per_write, Ordering::Relaxed);
            next += Duration::from_millis(100);
            thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    }
    Ok(())
}
