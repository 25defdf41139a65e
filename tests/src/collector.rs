//! [`CollectorProcess`]: the `collector` binary under test, with its own config, data
//! directory and captured stderr.

use std::env;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::check::{self, Check, check_exactly_once};
use crate::docker::docker_host;
use crate::ecs_agent::FakeEcsAgent;
use crate::sink::Sink;

/// How long a case lets the collector stay quiet after the expected lines arrived before it
/// compares, so that late duplicates show up.
pub const SETTLE: Duration = Duration::from_secs(1);

/// [`CollectorProcess::expect_exactly`] gives up early when no new line arrived for this
/// long, so a collector that lost lines fails in seconds rather than at the case's timeout.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(20);

/// Lines of the collector's stderr that failure messages quote.
const STDERR_TAIL_LINES: usize = 40;

/// The collector binary: `$COLLECTOR_BIN` (set by `cargo xtask test`), else
/// `<target>/debug/collector`, built with `cargo build -p collector` when it is absent.
///
/// # Errors
/// When `$COLLECTOR_BIN` is not a file, or the build fails.
pub fn collector_bin() -> Result<PathBuf> {
    if let Some(bin) = env::var_os("COLLECTOR_BIN") {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            bail!("COLLECTOR_BIN={} is not a file", bin.display());
        }
        return Ok(bin);
    }
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| find_or_build().map_err(|err| format!("{err:#}")))
        .clone()
        .map_err(|err| anyhow!("{err}"))
}

/// `<target>/debug/collector`, built first when absent.
fn find_or_build() -> Result<PathBuf> {
    let root = crate::workspace_root();
    let target = env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let bin = target.join("debug").join("collector");
    if bin.is_file() {
        return Ok(bin);
    }
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(&cargo)
        .args(["build", "-p", "collector"])
        .current_dir(&root)
        .status()
        .context("run `cargo build -p collector`")?;
    if !status.success() || !bin.is_file() {
        bail!(
            "`cargo build -p collector` failed ({status}); {} is missing",
            bin.display()
        );
    }
    Ok(bin)
}

/// How to start a [`CollectorProcess`].
#[derive(Debug, Default)]
pub struct CollectorBuilder {
    /// `host.docker_socket`; the real socket when unset.
    docker_socket: Option<PathBuf>,
    /// `ecs.agent_uri`; a closed local port when unset.
    ecs_agent_uri: Option<String>,
    /// No config file at all: `collector run --data-dir DIR` on the embedded defaults.
    without_config: bool,
    /// More `collector run` arguments, after the harness's own.
    extra_args: Vec<OsString>,
    /// Environment variables for the collector: the layer above the config file.
    env: Vec<(OsString, OsString)>,
    /// `setpriv` arguments to start the collector with (fewer privileges), and the
    /// `(uid, gid)` that then owns the data directory.
    setpriv: Option<(Vec<OsString>, (u32, u32))>,
}

impl CollectorBuilder {
    /// Points `ecs.agent_uri` at `agent`.
    pub fn ecs_agent(mut self, agent: &FakeEcsAgent) -> Self {
        self.ecs_agent_uri = Some(agent.uri());
        self
    }

    /// Sets `host.docker_socket` (e.g. a path that does not exist yet).
    pub fn docker_socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.docker_socket = Some(path.into());
        self
    }

    /// Writes no config: runs `collector run --data-dir <tmp>/data` on the embedded defaults
    /// (the real host paths, the default ECS agent address, the default rescan interval).
    pub fn without_config(mut self) -> Self {
        self.without_config = true;
        self
    }

    /// Adds `collector run` arguments (e.g. `--ebpf off`).
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable of the collector, e.g.
    /// `COLLECTOR_DISCOVERY__DOCKER_EVENTS=false` (environment beats the config file).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Starts the collector as `setpriv ARGS -- collector ...` (e.g. as another user with fewer
    /// capabilities), with its data directory owned by `owner` (uid, gid).
    pub fn setpriv<I, S>(mut self, args: I, owner: (u32, u32)) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.setpriv = Some((args.into_iter().map(Into::into).collect(), owner));
        self
    }

    /// Writes the config into a new temporary directory and starts the collector.
    ///
    /// # Errors
    /// When a prerequisite is missing, the binary cannot be found or built, or it does not
    /// start.
    pub fn start(self) -> Result<CollectorProcess> {
        let host = docker_host()?;
        let bin = collector_bin()?;
        let dir = tempfile::Builder::new()
            .prefix("collector-test-")
            .tempdir()
            .context("create the collector's temporary directory")?;
        let data_dir = dir.path().join("data");
        let args: Vec<OsString> = if self.without_config {
            vec!["run".into(), "--data-dir".into(), data_dir.clone().into()]
        } else {
            let agent_uri = match self.ecs_agent_uri {
                Some(uri) => uri,
                None => format!("http://{}", closed_port()?),
            };
            let socket = self
                .docker_socket
                .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"));
            let config = format!(
                "# Written by the integration-test harness.\n\
                 data_dir = {data_dir}\n\
                 \n\
                 [host]\n\
                 procfs_root = \"/proc\"\n\
                 cgroupfs_root = \"/sys/fs/cgroup\"\n\
                 docker_root = {docker_root}\n\
                 docker_socket = {socket}\n\
                 \n\
                 [ecs]\n\
                 agent_uri = {agent_uri}\n\
                 \n\
                 [discovery]\n\
                 rescan_interval = \"1s\"\n\
                 \n\
                 [sinks.file]\n\
                 enabled = true\n",
                data_dir = toml_string(&data_dir.to_string_lossy()),
                docker_root = toml_string(&host.root_dir.to_string_lossy()),
                socket = toml_string(&socket.to_string_lossy()),
                agent_uri = toml_string(&agent_uri),
            );
            let path = dir.path().join("collector.toml");
            fs::write(&path, config).with_context(|| format!("write {}", path.display()))?;
            vec!["run".into(), "--config".into(), path.into()]
        };
        let mut args = args;
        args.extend(self.extra_args);
        let mut wrapper = Vec::new();
        if let Some((setpriv, (uid, gid))) = self.setpriv {
            fs::create_dir_all(&data_dir)
                .with_context(|| format!("create {}", data_dir.display()))?;
            nix::unistd::chown(&data_dir, Some(uid.into()), Some(gid.into()))
                .with_context(|| format!("chown {} to {uid}:{gid}", data_dir.display()))?;
            wrapper.push("setpriv".into());
            wrapper.extend(setpriv);
            wrapper.push("--".into());
        }
        let mut process = CollectorProcess {
            log: dir.path().join("collector.log"),
            dir,
            data_dir,
            bin,
            args,
            wrapper,
            env: self.env,
            child: None,
            starts: 0,
        };
        process.spawn()?;
        Ok(process)
    }
}

/// Lines a case expects in the sink: what they are, and how to read them.
pub struct Expect<'a> {
    /// Names the lines in messages, e.g. "stdout of web in task <id>".
    what: String,
    /// Every line, in order.
    expected: Vec<String>,
    /// Reads the messages that arrived so far.
    read: Box<dyn FnMut() -> Result<Vec<String>> + 'a>,
}

impl<'a> Expect<'a> {
    /// Expects `expected` from `read`.
    pub fn new(
        what: impl Into<String>,
        expected: Vec<String>,
        read: impl FnMut() -> Result<Vec<String>> + 'a,
    ) -> Self {
        Self {
            what: what.into(),
            expected,
            read: Box::new(read),
        }
    }
}

impl std::fmt::Debug for Expect<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Expect")
            .field("what", &self.what)
            .field("expected", &self.expected.len())
            .finish_non_exhaustive()
    }
}

/// A running `collector run`. Killed (SIGKILL) when dropped; its temporary directory goes
/// with it.
#[derive(Debug)]
pub struct CollectorProcess {
    /// Holds the config, the data dir and the captured output.
    dir: TempDir,
    /// `data_dir` of the config (`<dir>/data`).
    data_dir: PathBuf,
    /// stdout and stderr of every start, appended.
    log: PathBuf,
    /// The binary.
    bin: PathBuf,
    /// `run --config FILE` or `run --data-dir DIR`, and the builder's extra arguments.
    args: Vec<OsString>,
    /// A command (and its arguments) the binary is started through: `setpriv ... --`.
    wrapper: Vec<OsString>,
    /// The builder's environment variables.
    env: Vec<(OsString, OsString)>,
    /// The current process; `None` after it was reaped.
    child: Option<Child>,
    /// How many times it was started, for the log's separators.
    starts: u32,
}

impl CollectorProcess {
    /// Starts describing a collector.
    pub fn builder() -> CollectorBuilder {
        CollectorBuilder::default()
    }

    /// Starts a collector with the default test config (real Docker, no ECS agent).
    ///
    /// # Errors
    /// As [`CollectorBuilder::start`].
    pub fn start() -> Result<Self> {
        Self::builder().start()
    }

    /// The temporary directory (config, data dir, log); cases may put their files here.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The collector's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The local directory sink (`<data_dir>/logs`).
    pub fn sink(&self) -> Sink {
        Sink::new(self.data_dir.join("logs"))
    }

    /// A `collector ARGS` command (e.g. `inspect`, `tail`) for this collector: its config file
    /// or data dir, the case's environment variables, plain text (`NO_COLOR`).
    pub fn cli<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args).stdin(Stdio::null()).env("NO_COLOR", "1");
        // `--config FILE` or `--data-dir DIR` of `run`, without `run`'s own options.
        if let Some(at) = self
            .args
            .iter()
            .position(|a| a == "--config" || a == "--data-dir")
        {
            cmd.args(&self.args[at..(at + 2).min(self.args.len())]);
        }
        for (key, _) in env::vars_os() {
            if key.to_string_lossy().starts_with("COLLECTOR_") {
                cmd.env_remove(key);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// The pid, while the process has not been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the collector with SIGKILL and reaps it.
    ///
    /// # Errors
    /// When it is not running or the signal fails.
    pub fn sigkill(&mut self) -> Result<()> {
        let mut child = self.child.take().context("the collector is not running")?;
        child.kill().context("SIGKILL the collector")?;
        child.wait().context("reap the collector")?;
        Ok(())
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit; returns its status.
    ///
    /// # Errors
    /// When it is not running, or does not exit in time (it is then killed).
    pub fn sigterm(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let child = self
            .child
            .as_mut()
            .context("the collector is not running")?;
        let pid = Pid::from_raw(i32::try_from(child.id()).context("pid out of range")?);
        kill(pid, Signal::SIGTERM).context("SIGTERM the collector")?;
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().context("wait for the collector")? {
                self.child = None;
                return Ok(status);
            }
            if started.elapsed() >= timeout {
                let _ = self.sigkill();
                bail!(
                    "the collector did not exit within {timeout:?} of SIGTERM (killed it); {}",
                    self.stderr_tail()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the collector again with the same config and data dir (killing it first if it
    /// still runs).
    ///
    /// # Errors
    /// When it does not start.
    pub fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            self.sigkill()?;
        }
        self.spawn()
    }

    /// Fails, quoting its stderr, if the process has exited.
    ///
    /// # Errors
    /// When it has exited or was stopped by the test.
    pub fn check_running(&mut self) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            bail!("the collector is not running (stopped by the test)");
        };
        if let Some(status) = child.try_wait().context("wait for the collector")? {
            self.child = None;
            bail!("the collector exited ({status}); {}", self.stderr_tail());
        }
        Ok(())
    }

    /// The file that holds the collector's stdout and stderr (of every start).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the collector printed so far (stdout and stderr of every start).
    pub fn output(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of the collector's stdout and stderr, for failure messages.
    pub fn stderr_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let mut tail = format!("collector stderr ({}):", self.log.display());
        for line in &lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..] {
            let _ = write!(tail, "\n  {line}");
        }
        tail
    }

    /// [`check::wait_until`] that also fails as soon as the collector exits, and quotes its
    /// stderr on failure.
    ///
    /// # Errors
    /// As [`check::wait_until`], or when the collector exits.
    pub fn wait_until<T>(
        &mut self,
        timeout: Duration,
        expected: &str,
        mut probe: impl FnMut() -> Result<Check<T>>,
    ) -> Result<T> {
        let result = check::wait_until(timeout, expected, || {
            self.check_running()?;
            probe()
        });
        result.map_err(|err| self.explain(err))
    }

    /// `err` with the collector's stderr as its innermost cause (unless it quotes it already),
    /// so a failure message ends with what the collector said.
    pub fn explain(&self, err: anyhow::Error) -> anyhow::Error {
        if format!("{err:#}").contains("collector stderr (") {
            err
        } else {
            anyhow!("{}", self.stderr_tail()).context(format!("{err:#}"))
        }
    }

    /// Waits until every expectation's `read` returns at least as many lines as it expects,
    /// lets the collector run [`SETTLE`] longer (so late duplicates show), then checks that
    /// each returns exactly its lines: every line once, in order.
    ///
    /// # Errors
    /// On timeout (or [`STALL_TIMEOUT`] without a new line) or a difference, with a summary
    /// per expectation and the collector's stderr.
    pub fn expect_exactly(
        &mut self,
        timeout: Duration,
        mut expectations: Vec<Expect<'_>>,
    ) -> Result<()> {
        let goal = expectations
            .iter()
            .map(|e| format!("{} lines of {}", e.expected.len(), e.what))
            .collect::<Vec<_>>()
            .join("; ");
        let (mut total, mut progress) = (0, Instant::now());
        let waited = self.wait_until(timeout, &goal, || {
            let mut waiting = Vec::new();
            let mut seen_total = 0;
            for e in &mut expectations {
                let seen = (e.read)()?;
                seen_total += seen.len();
                if seen.len() < e.expected.len() {
                    waiting.push(format!("{}: {}", e.what, check::describe(&seen)));
                }
            }
            if waiting.is_empty() {
                return Ok(Check::Done(()));
            }
            if seen_total != total {
                (total, progress) = (seen_total, Instant::now());
            } else if progress.elapsed() >= STALL_TIMEOUT {
                bail!(
                    "no new line for {} s while waiting for {goal}; last seen: {}",
                    STALL_TIMEOUT.as_secs(),
                    waiting.join("; ")
                );
            }
            Ok(Check::Waiting(waiting.join("; ")))
        });
        if waited.is_ok() {
            thread::sleep(SETTLE);
            self.check_running()?;
        }
        let mut failures = Vec::new();
        for e in &mut expectations {
            if let Err(err) = (e.read)().and_then(|seen| check_exactly_once(&seen, &e.expected)) {
                failures.push(format!("{}: {err:#}", e.what));
            }
        }
        match waited {
            Err(err) => Err(err.context(failures.join("\n"))),
            Ok(()) if failures.is_empty() => Ok(()),
            Ok(()) => Err(self.explain(anyhow!("{}", failures.join("\n")))),
        }
    }

    /// Starts the process and points `child` at it.
    fn spawn(&mut self) -> Result<()> {
        self.starts += 1;
        let mut log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("open {}", self.log.display()))?;
        {
            use std::io::Write as _;
            writeln!(log, "--- harness: start #{} ---", self.starts)
                .with_context(|| format!("write {}", self.log.display()))?;
        }
        let mut cmd = match self.wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut cmd = Command::new(program);
                cmd.args(wrapper_args).arg(&self.bin);
                cmd
            }
            None => Command::new(&self.bin),
        };
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("dup the log file")?)
            .stderr(log)
            .env("RUST_BACKTRACE", "1")
            // Plain text in failure messages (tracing-subscriber honours NO_COLOR).
            .env("NO_COLOR", "1");
        // `COLLECTOR_*` variables configure the collector (and `COLLECTOR_BIN` is ours): the
        // config under test is the file alone.
        for (key, _) in env::vars_os() {
            if key.to_string_lossy().starts_with("COLLECTOR_") {
                cmd.env_remove(key);
            }
        }
        // ...except those the case sets on purpose.
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let child = cmd
            .spawn()
            .with_context(|| format!("start {}", self.bin.display()))?;
        self.child = Some(child);
        Ok(())
    }
}

impl Drop for CollectorProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // `COLLECTOR_TEST_KEEP=1` keeps the data directory and the collector's log to look at.
        if env::var_os("COLLECTOR_TEST_KEEP").is_some()
            && let Ok(empty) = TempDir::new()
        {
            let dir = std::mem::replace(&mut self.dir, empty);
            eprintln!("kept {}", dir.keep().display());
        }
    }
}

/// A local address nothing listens on: for the ECS agent of collectors that need none.
fn closed_port() -> Result<std::net::SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind a local port")?;
    listener.local_addr().context("local port")
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
