//! `docker` CLI helpers, the prerequisite check, and [`TestContainer`].

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::check::{Check, wait_until};
use crate::ecs_agent::TestTask;
use crate::sink::{SinkLine, parse_lines};
use crate::time::parse_rfc3339;

/// The image every test container runs; `cargo xtask test` imports it from Debian's static
/// busybox (see `xtask/src/docker.rs`, which names it too).
pub const TEST_IMAGE: &str = "collector-test/busybox:latest";

/// The label on every test container, so `cargo xtask test` can remove leftovers.
pub const TEST_LABEL: &str = "collector-test";

/// What to do when a prerequisite is missing.
const SETUP_HINT: &str =
    "run `cargo xtask test`, which installs and starts Docker and builds the test image";

/// Runs `docker ARGS` and returns its stdout, trimmed.
///
/// # Errors
/// When `docker` cannot start or exits non-zero; the message has the arguments and stderr.
pub fn docker<I, S>(args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = docker_output(args)?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Runs `docker ARGS` and returns its whole output (stdout and stderr apart).
///
/// # Errors
/// As [`docker`].
pub fn docker_output<I, S>(args: I) -> Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new("docker");
    cmd.args(args).stdin(Stdio::null());
    let shown = std::iter::once("docker".to_owned())
        .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    let out = cmd
        .output()
        .with_context(|| format!("cannot run `{shown}` ({SETUP_HINT})"))?;
    if !out.status.success() {
        bail!(
            "`{shown}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// What the tests need to know about the Docker host.
#[derive(Debug)]
pub struct DockerHost {
    /// The daemon's version (`docker version`), for messages.
    pub server_version: String,
    /// Docker's root directory (`/var/lib/docker` by default): the collector reads container
    /// configs and json-file logs there.
    pub root_dir: PathBuf,
}

/// Checks, once per test process, that we are root, the daemon answers and the test image
/// exists.
///
/// # Errors
/// When one of them is missing, with a message that says how to get it. The cases never skip.
pub fn docker_host() -> Result<&'static DockerHost> {
    static HOST: OnceLock<Result<DockerHost, String>> = OnceLock::new();
    HOST.get_or_init(|| probe_host().map_err(|err| format!("{err:#}")))
        .as_ref()
        .map_err(|err| anyhow!("{err}"))
}

/// [`docker_host`] uncached.
fn probe_host() -> Result<DockerHost> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "the integration tests need root (they read Docker's files and run containers): \
             run `cargo xtask test` as root"
        );
    }
    // `docker version` says why it cannot connect; `docker info --format` (20.10) only
    // reports a template error then.
    let server_version = docker(["version", "--format", "{{.Server.Version}}"])
        .with_context(|| format!("the Docker daemon does not answer: {SETUP_HINT}"))?;
    let root_dir = docker(["info", "--format", "{{.DockerRootDir}}"])?;
    docker(["image", "inspect", "--format", "{{.Id}}", TEST_IMAGE])
        .with_context(|| format!("the image {TEST_IMAGE} is missing: {SETUP_HINT}"))?;
    Ok(DockerHost {
        server_version,
        root_dir: PathBuf::from(root_dir),
    })
}

/// A container of a test. It always has the label `collector-test=1` and is removed
/// (`docker rm -f`) when dropped.
#[derive(Debug)]
pub struct TestContainer {
    /// Full 64-hex id.
    id: String,
    /// Docker name (without Docker's leading `/`).
    name: String,
}

impl TestContainer {
    /// Starts describing a container.
    pub fn builder() -> ContainerBuilder {
        ContainerBuilder::default()
    }

    /// The full container id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The 12-character short id.
    pub fn short_id(&self) -> &str {
        &self.id[..12]
    }

    /// The Docker name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Starts a container made with [`ContainerBuilder::create`].
    ///
    /// # Errors
    /// When `docker start` fails.
    pub fn start(&self) -> Result<()> {
        docker(["start", &self.id]).map(drop)
    }

    /// `docker inspect --format FORMAT` of this container.
    ///
    /// # Errors
    /// When `docker inspect` fails.
    pub fn inspect(&self, format: &str) -> Result<String> {
        docker(["inspect", "--format", format, &self.id])
    }

    /// The host path of the container's json-file log.
    ///
    /// # Errors
    /// When `docker inspect` fails or Docker reports no log path.
    pub fn log_path(&self) -> Result<PathBuf> {
        let path = self.inspect("{{.LogPath}}")?;
        if path.is_empty() {
            bail!("container {} has no log path", self.name);
        }
        Ok(PathBuf::from(path))
    }

    /// The host pid of the container's first process, while it runs.
    ///
    /// # Errors
    /// When the container does not run.
    pub fn pid(&self) -> Result<u32> {
        let pid: u32 = self.inspect("{{.State.Pid}}")?.parse()?;
        if pid == 0 {
            bail!("container {} does not run", self.name);
        }
        Ok(pid)
    }

    /// Waits until the container has exited and returns its exit code.
    ///
    /// # Errors
    /// When it still runs after `timeout`.
    pub fn wait_exit(&self, timeout: Duration) -> Result<i64> {
        wait_until(timeout, &format!("container {} to exit", self.name), || {
            let state = self.inspect("{{.State.Running}} {{.State.ExitCode}}")?;
            Ok(match state.split_once(' ') {
                Some(("false", code)) => Check::Done(code.parse()?),
                _ => Check::Waiting(format!("state {state:?}")),
            })
        })
    }

    /// How long the container ran (Docker's `FinishedAt - StartedAt`; zero when Docker's
    /// clocks put the end first).
    ///
    /// # Errors
    /// When the container has not run and exited, or its times do not parse.
    pub fn run_time(&self) -> Result<Duration> {
        let times = self.inspect("{{.State.StartedAt}} {{.State.FinishedAt}}")?;
        let parse = |text: &str| {
            parse_rfc3339(text)
                .filter(|t| *t > SystemTime::UNIX_EPOCH)
                .with_context(|| format!("container {} has no time {text:?}", self.name))
        };
        let (started, finished) = times
            .split_once(' ')
            .with_context(|| format!("unexpected times {times:?}"))?;
        Ok(parse(finished)?
            .duration_since(parse(started)?)
            .unwrap_or_default())
    }

    /// What `docker logs --timestamps` says, parsed: (stdout, stderr). The same shape as the
    /// sink's lines, so a case can compare times too.
    ///
    /// # Errors
    /// When `docker logs` fails or prints a line without a timestamp.
    pub fn docker_logs(&self) -> Result<(Vec<SinkLine>, Vec<SinkLine>)> {
        let out = docker_output(["logs", "--timestamps", &self.id])?;
        let what = format!("docker logs of {}", self.name);
        Ok((
            parse_lines(&out.stdout, &what)?,
            parse_lines(&out.stderr, &what)?,
        ))
    }
}

impl Drop for TestContainer {
    fn drop(&mut self) {
        if let Err(err) = docker(["rm", "--force", "--volumes", &self.id]) {
            eprintln!("cannot remove test container {}: {err:#}", self.name);
        }
    }
}

/// How to run a [`TestContainer`]: the `docker run` options the scenarios need.
#[derive(Debug, Default)]
pub struct ContainerBuilder {
    /// `--name`; a random `collector-test-<hex>` when unset.
    name: Option<String>,
    /// `--label k=v`, besides `collector-test=1`.
    labels: Vec<(String, String)>,
    /// `--cgroup-parent`, e.g. `/ecs/<task id>` (the ECS agent's layout with task limits).
    cgroup_parent: Option<String>,
    /// `--log-opt k=v` of the json-file driver.
    log_opts: Vec<(String, String)>,
    /// `--volume host:container` bind mounts.
    binds: Vec<(PathBuf, String)>,
    /// The command and its arguments.
    command: Vec<String>,
    /// More `docker run`/`docker create` options, e.g. `--memory 8m`.
    options: Vec<String>,
    /// The image; [`TEST_IMAGE`] when unset.
    image: Option<String>,
}

impl ContainerBuilder {
    /// Sets the Docker name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Adds a label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.push((key.into(), value.into()));
        self
    }

    /// Adds labels.
    pub fn labels(mut self, labels: impl IntoIterator<Item = (String, String)>) -> Self {
        self.labels.extend(labels);
        self
    }

    /// Runs `image` instead of [`TEST_IMAGE`] (with its own entrypoint).
    pub fn image(mut self, image: impl Into<String>) -> Self {
        self.image = Some(image.into());
        self
    }

    /// Sets `--cgroup-parent`.
    pub fn cgroup_parent(mut self, parent: impl Into<String>) -> Self {
        self.cgroup_parent = Some(parent.into());
        self
    }

    /// Makes the container a member of `task` the way the ECS agent does: the
    /// `com.amazonaws.ecs.*` labels, the cgroup parent `/ecs/<task id>` and an agent-style
    /// Docker name.
    pub fn ecs(self, task: &TestTask, container_name: &str) -> Self {
        self.labels(task.labels(container_name))
            .cgroup_parent(task.cgroup_parent())
            .name(task.docker_name(container_name))
    }

    /// Adds a json-file `--log-opt`, e.g. `("max-size", "100k")`.
    pub fn log_opt(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.log_opts.push((key.into(), value.into()));
        self
    }

    /// Bind-mounts the host directory `host` at `container`.
    pub fn bind(mut self, host: &Path, container: impl Into<String>) -> Self {
        self.binds.push((host.to_path_buf(), container.into()));
        self
    }

    /// Sets the command.
    pub fn command<I, S>(mut self, command: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.command = command.into_iter().map(Into::into).collect();
        self
    }

    /// Adds `docker run`/`docker create` options, e.g. `["--memory", "8m"]`.
    pub fn options<I, S>(mut self, options: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.options.extend(options.into_iter().map(Into::into));
        self
    }

    /// Sets the command to `sh -c SCRIPT`.
    pub fn shell(self, script: impl Into<String>) -> Self {
        self.command(["sh".to_owned(), "-c".to_owned(), script.into()])
    }

    /// `docker run --detach`: creates and starts the container.
    ///
    /// # Errors
    /// When a prerequisite is missing or Docker refuses.
    pub fn start(self) -> Result<TestContainer> {
        self.make("run")
    }

    /// `docker create`: the container exists (its id is known) but does not run until
    /// [`TestContainer::start`].
    ///
    /// # Errors
    /// As [`ContainerBuilder::start`].
    pub fn create(self) -> Result<TestContainer> {
        self.make("create")
    }

    /// Runs `docker run --detach` or `docker create` with every option.
    fn make(self, verb: &str) -> Result<TestContainer> {
        docker_host()?;
        let name = self
            .name
            .unwrap_or_else(|| format!("collector-test-{}", crate::random_hex(12)));
        let mut args: Vec<String> = vec![verb.into()];
        if verb == "run" {
            args.push("--detach".into());
        }
        args.extend(["--name".into(), name.clone()]);
        args.extend(["--label".into(), format!("{TEST_LABEL}=1")]);
        for (key, value) in &self.labels {
            args.extend(["--label".into(), format!("{key}={value}")]);
        }
        if let Some(parent) = &self.cgroup_parent {
            args.extend(["--cgroup-parent".into(), parent.clone()]);
        }
        args.extend(["--log-driver".into(), "json-file".into()]);
        for (key, value) in &self.log_opts {
            args.extend(["--log-opt".into(), format!("{key}={value}")]);
        }
        for (host, container) in &self.binds {
            args.extend(["--volume".into(), format!("{}:{container}", host.display())]);
        }
        args.extend(self.options);
        args.push(self.image.unwrap_or_else(|| TEST_IMAGE.into()));
        args.extend(self.command);
        match docker(&args) {
            Ok(out) => {
                let id = out.lines().last().unwrap_or_default().to_owned();
                if id.len() != 64 {
                    bail!("`docker {verb}` printed {out:?}, not a container id");
                }
                Ok(TestContainer { id, name })
            }
            Err(err) => {
                // `docker run` creates before it starts: do not leave a half-made container.
                let _ = docker(["rm", "--force", &name]);
                Err(err)
            }
        }
    }
}
