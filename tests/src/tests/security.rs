//! Security, as a user would check it (`docs/reliability.md`, "Security"):
//!
//! - No secret is logged or shown: containers of a task (and one outside any task) hold
//!   secret-looking environment variables, the collector holds AWS credentials in its own
//!   environment and logs at debug level. After lines reached the local sink and CloudWatch
//!   (moto), and after CloudWatch went away (the collector logs the AWS errors), none of the
//!   secret values is in any byte the collector wrote or answered: its log, every file under
//!   its data directory, `collector inspect` (live, JSON, offline), `run --print-config`, and
//!   every control API endpoint.
//! - One task cannot act on another through the companion socket: from inside task A,
//!   `GET /v1/self` and drains naming task B answer about A only, and B is not drained; a
//!   process on the host, in no container, is refused.
//! - The collector image runs as nobody (65534) with every capability dropped but those
//!   `collector taskdef daemon` lists, `--pid host`, `--network none`, read-only host mounts
//!   as the task definition has them, and still delivers a task's lines (stdout and a file it
//!   declares, read through `/proc/<pid>/root`) under the right task and container names.

use std::fs;
use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;

use super::metrics::graphite_send;
use super::{DELIVERY_TIMEOUT, control_dir};
use crate::check::Check;
use crate::docker::{docker, docker_host};
use crate::{
    CollectorProcess, Expect, Moto, TestContainer, TestTask, messages, numbered, random_hex,
};

/// Lines per phase of the secrets case.
const N: usize = 50;

/// A request as the `call` helper sends it: HTTP/1.1, the connection closed after the answer.
fn request(method: &str, target: &str) -> String {
    format!("{method} {target} HTTP/1.1\r\nHost: collector\r\nConnection: close\r\n\r\n")
}

/// Sends `request` to the unix socket `socket` and returns what arrives until the server
/// closes the connection or `timeout` passes (a drain or a tail streams).
fn call(socket: &Path, request: &str, timeout: Duration) -> Result<String> {
    let mut s =
        UnixStream::connect(socket).with_context(|| format!("connect {}", socket.display()))?;
    s.write_all(request.as_bytes())
        .with_context(|| format!("write to {}", socket.display()))?;
    let deadline = Instant::now() + timeout;
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        s.set_read_timeout(Some(left))?;
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break;
            }
            Err(e) => return Err(e).with_context(|| format!("read {}", socket.display())),
        }
    }
    Ok(String::from_utf8_lossy(&raw).into_owned())
}

/// The status code of a raw HTTP answer.
fn status_of(answer: &str) -> Result<u16> {
    answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP answer: {answer:?}"))
}

/// Every place a secret could show, by name: bytes the collector wrote or answered.
#[derive(Default)]
struct Exposure {
    places: Vec<(String, Vec<u8>)>,
}

impl Exposure {
    fn add(&mut self, place: impl Into<String>, bytes: impl Into<Vec<u8>>) {
        self.places.push((place.into(), bytes.into()));
    }

    /// A CLI run: its stdout and stderr; it must exit 0.
    fn add_cli(&mut self, collector: &CollectorProcess, args: &[&str]) -> Result<()> {
        let out = collector
            .cli(args)
            .output()
            .with_context(|| format!("run collector {args:?}"))?;
        ensure!(
            out.status.success(),
            "collector {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        ensure!(!out.stdout.is_empty(), "collector {args:?} printed nothing");
        self.add(format!("stdout of collector {args:?}"), out.stdout);
        self.add(format!("stderr of collector {args:?}"), out.stderr);
        Ok(())
    }

    /// Every regular file under `dir` (the state database and its WAL, the sink, buffers,
    /// the collector's log and config).
    fn add_tree(&mut self, dir: &Path) -> Result<()> {
        for entry in fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))? {
            let path = entry?.path();
            let meta =
                fs::symlink_metadata(&path).with_context(|| format!("stat {}", path.display()))?;
            if meta.is_dir() {
                self.add_tree(&path)?;
            } else if meta.is_file() {
                let bytes = fs::read(&path).with_context(|| format!("read {}", path.display()))?;
                self.add(path.display().to_string(), bytes);
            }
        }
        Ok(())
    }

    /// The places that hold `needle`.
    fn holding(&self, needle: &str) -> Vec<&str> {
        let needle = needle.as_bytes();
        self.places
            .iter()
            .filter(|(_, bytes)| bytes.windows(needle.len()).any(|w| w == needle))
            .map(|(place, _)| place.as_str())
            .collect()
    }

    fn total_bytes(&self) -> usize {
        self.places.iter().map(|(_, b)| b.len()).sum()
    }
}

/// A secret-looking value nothing else contains.
fn secret(what: &str) -> String {
    format!("{what}-{}", random_hex(40))
}

/// Containers with secrets in their environment and a collector with AWS credentials in its
/// own, at debug level: the secrets reach no log, file, CLI output or API answer, also when
/// CloudWatch fails and the collector logs the AWS errors.
#[test]
fn no_secret_is_logged_stored_or_shown() -> Result<()> {
    let mut moto = Moto::start()?;
    let aws_secret = secret("aws-secret-key");
    let aws_token = secret("aws-session-token");
    let mut builder = CollectorProcess::builder()
        .env("RUST_LOG", "debug")
        .env("AWS_SESSION_TOKEN", &aws_token)
        .env("COLLECTOR_SINKS__CLOUDWATCH__MAX_ATTEMPTS", "2")
        .env("COLLECTOR_SINKS__CLOUDWATCH__REQUEST_TIMEOUT", "5s");
    for (key, value) in moto.collector_env() {
        let value = if key == "AWS_SECRET_ACCESS_KEY" {
            aws_secret.clone()
        } else {
            value
        };
        builder = builder.env(key, value);
    }
    let mut collector = builder.start()?;

    let task = TestTask::new("secrets");
    let task_secrets = [
        ("AWS_SECRET_ACCESS_KEY", secret("task-aws-secret")),
        ("DB_PASSWORD", secret("db-password")),
        ("API_TOKEN", secret("api-token")),
    ];
    let plain_secret = ("GITHUB_TOKEN", secret("plain-token"));
    let env_options = |secrets: &[(&str, String)]| {
        secrets
            .iter()
            .flat_map(|(k, v)| ["--env".to_owned(), format!("{k}={v}")])
            .collect::<Vec<_>>()
    };
    let ctl = control_dir(&collector)?;
    let script = |prefix: &str| {
        format!(
            "i=1; while [ $i -le {N} ]; do echo \"{prefix} $i\"; i=$((i+1)); done; \
             while [ ! -e /ctl/phase2 ]; do sleep 0.05; done; \
             while [ $i -le {} ]; do echo \"{prefix} $i\"; i=$((i+1)); done; \
             while [ ! -e /ctl/phase3 ]; do sleep 0.05; done; \
             while [ $i -le {} ]; do echo \"{prefix} $i\"; i=$((i+1)); done; exec sleep 600",
            2 * N,
            3 * N
        )
    };
    let app = TestContainer::builder()
        .ecs(&task, "app")
        .options(env_options(&task_secrets))
        .bind(&ctl, "/ctl")
        .shell(script("secrets app"))
        .start()?;
    let plain = TestContainer::builder()
        .options(env_options(std::slice::from_ref(&plain_secret)))
        .bind(&ctl, "/ctl")
        .shell(script("secrets plain"))
        .start()?;

    // The secrets are on the host, where the collector reads containers' files from.
    let root = &docker_host()?.root_dir;
    for (container, secrets) in [
        (&app, &task_secrets[..]),
        (&plain, std::slice::from_ref(&plain_secret)),
    ] {
        let config = root
            .join("containers")
            .join(container.id())
            .join("config.v2.json");
        let text =
            fs::read_to_string(&config).with_context(|| format!("read {}", config.display()))?;
        for (name, value) in secrets {
            ensure!(
                text.contains(value.as_str()),
                "{name} is not in {}: the case would prove nothing",
                config.display()
            );
        }
    }

    // Phase 1: every line in the local sink and in CloudWatch (signed with the secret key).
    let sink = collector.sink();
    let group = format!("/ecs/{}", task.family);
    let stream = format!("ecs/app/{}", task.task_id);
    collector.expect_exactly(
        DELIVERY_TIMEOUT,
        vec![
            Expect::new("app's stdout", numbered("secrets app", N), || {
                Ok(messages(&sink.lines(&task.task_id, "app", "stdout")?))
            }),
            Expect::new(
                "the plain container's stdout",
                numbered("secrets plain", N),
                || Ok(messages(&sink.container_lines(&plain, "stdout")?)),
            ),
            Expect::new("app in CloudWatch", numbered("secrets app", N), || {
                moto.log_messages(&group, &stream)
            }),
        ],
    )?;

    let mut seen = Exposure::default();
    // The CLI: live, JSON, offline (state database and Docker's files), the effective config.
    for args in [
        vec!["inspect"],
        vec!["inspect", "--all"],
        vec!["inspect", &task.task_id],
        vec!["inspect", "--json", &task.task_id],
        vec!["inspect", app.id()],
        vec!["inspect", "--json", app.id()],
        vec!["inspect", plain.id()],
        vec!["inspect", "--json", plain.id()],
        vec!["inspect", "--offline", &task.task_id],
        vec!["inspect", "--offline", "--json", app.id()],
        vec!["inspect", "--offline", "--json", plain.id()],
        vec!["run", "--print-config"],
    ] {
        seen.add_cli(&collector, &args)?;
    }
    // Every control API endpoint (`control::server`).
    let api = collector.data_dir().join("control.sock");
    let pid = app.pid()?.to_string();
    let mut targets = vec![
        "/live".to_owned(),
        "/ready".to_owned(),
        "/metrics".to_owned(),
        "/v1/overview?all=1".to_owned(),
        "/v1/sinks".to_owned(),
        "/v1/metrics/unattributed?history=1".to_owned(),
        format!("/v1/inspect?q={pid}&kind=pid"),
        format!("/v1/tasks/{}", task.task_id),
        format!("/v1/metrics/tasks/{}?history=1", task.task_id),
    ];
    for c in [&app, &plain] {
        targets.push(format!("/v1/inspect?q={}", c.id()));
        targets.push(format!("/v1/containers/{}", c.id()));
        targets.push(format!("/v1/metrics/containers/{}?history=1", c.id()));
    }
    for target in &targets {
        let answer = call(&api, &request("GET", target), Duration::from_secs(10))?;
        status_of(&answer).with_context(|| format!("GET {target}"))?;
        seen.add(format!("GET {target}"), answer);
    }
    // Phase 2: a live tail (`/v1/tail`) while more lines are delivered everywhere.
    let tail_api = api.clone();
    let tail_target = format!("/v1/tail?q={}", task.task_id);
    let tail = std::thread::spawn(move || {
        call(
            &tail_api,
            &request("GET", &tail_target),
            Duration::from_secs(5),
        )
    });
    std::thread::sleep(Duration::from_millis(500));
    fs::write(ctl.join("phase2"), b"").context("write /ctl/phase2")?;
    collector.expect_exactly(
        DELIVERY_TIMEOUT,
        vec![Expect::new(
            "app in CloudWatch",
            numbered("secrets app", 2 * N),
            || moto.log_messages(&group, &stream),
        )],
    )?;
    let tailed = tail
        .join()
        .map_err(|_| anyhow::anyhow!("the tail thread panicked"))??;
    ensure!(
        tailed.contains(&format!("secrets app {}", 2 * N)),
        "the tail did not follow the lines: {tailed}"
    );
    seen.add("GET /v1/tail", tailed);

    // Phase 3: CloudWatch is gone; the collector logs the AWS errors (at debug level, with
    // the SDK's own records) and keeps delivering locally.
    moto.stop()?;
    fs::write(ctl.join("phase3"), b"").context("write /ctl/phase3")?;
    collector.expect_exactly(
        DELIVERY_TIMEOUT,
        vec![
            Expect::new("app's stdout", numbered("secrets app", 3 * N), || {
                Ok(messages(&sink.lines(&task.task_id, "app", "stdout")?))
            }),
            Expect::new(
                "the plain container's stdout",
                numbered("secrets plain", 3 * N),
                || Ok(messages(&sink.container_lines(&plain, "stdout")?)),
            ),
        ],
    )?;
    let log = collector.log_path().to_path_buf();
    collector.wait_until(
        DELIVERY_TIMEOUT,
        "the CloudWatch sink's failure in the log",
        || {
            let out = fs::read_to_string(&log).unwrap_or_default();
            Ok(
                if out
                    .lines()
                    .any(|l| l.contains("Sink failed to take a batch") && l.contains("cloudwatch"))
                {
                    Check::Done(())
                } else {
                    Check::Waiting("no such line yet".to_owned())
                },
            )
        },
    )?;
    let answer = call(&api, &request("GET", "/v1/sinks"), Duration::from_secs(10))?;
    ensure!(
        answer.contains("\"last_error\":\"") || answer.contains("\"last_error\": \""),
        "/v1/sinks shows no sink error after CloudWatch went away: {answer}"
    );
    seen.add("GET /v1/sinks (CloudWatch down)", answer);

    // Everything the collector wrote: its log, config, state database, sink, buffers.
    collector.check_running()?;
    seen.add_tree(collector.dir())?;

    // The search looks where the lines and the task are (else it proves nothing)...
    for known in [
        task.task_id.as_str(),
        app.id(),
        plain.id(),
        "secrets app 150",
        "Sink failed to take a batch",
    ] {
        ensure!(
            !seen.holding(known).is_empty(),
            "{known:?} is nowhere in what was searched: the search is broken"
        );
    }
    // ...and finds none of the secrets.
    let mut found = Vec::new();
    for (name, value) in task_secrets
        .iter()
        .chain([&plain_secret])
        .map(|(k, v)| (*k, v.as_str()))
        .chain([
            ("the collector's AWS_SECRET_ACCESS_KEY", aws_secret.as_str()),
            ("the collector's AWS_SESSION_TOKEN", aws_token.as_str()),
        ])
    {
        let places = seen.holding(value);
        if !places.is_empty() {
            found.push(format!("{name} ({value}) in: {}", places.join(", ")));
        }
    }
    ensure!(
        found.is_empty(),
        "secrets exposed (searched {} places, {} bytes):\n{}",
        seen.places.len(),
        seen.total_bytes(),
        found.join("\n")
    );
    Ok(())
}

/// `docker exec CONTAINER sh -c "printf REQUEST | /call call SOCKET"`: the companion API
/// called from inside a container, as the companion shim would.
fn call_from(container: &TestContainer, request: &str, timeout: Duration) -> Result<String> {
    let escaped = request.replace('\r', "\\r").replace('\n', "\\n");
    docker([
        "exec",
        container.id(),
        "sh",
        "-c",
        &format!(
            "printf '{escaped}' | /call call /run/collector/companion.sock {}",
            timeout.as_millis()
        ),
    ])
}

/// Every value of `key` anywhere in `value`.
fn values_of<'a>(value: &'a Value, key: &str, out: &mut Vec<&'a Value>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == key {
                    out.push(v);
                }
                values_of(v, key, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| values_of(v, key, out)),
        _ => {}
    }
}

/// Whether `collector inspect --json TASK` shows a drain of the task.
fn drained(collector: &CollectorProcess, task: &TestTask) -> Result<bool> {
    let out = collector
        .cli(["inspect", "--json", &task.task_id])
        .output()
        .context("run collector inspect")?;
    ensure!(out.status.success(), "collector inspect {}", task.task_id);
    let json: Value = serde_json::from_slice(&out.stdout).context("inspect --json")?;
    let mut drains = Vec::new();
    values_of(&json, "drain", &mut drains);
    ensure!(!drains.is_empty(), "no `drain` in inspect --json: {json}");
    Ok(drains.iter().any(|d| !d.is_null()))
}

/// Two tasks, each with a container that calls the companion API; A names B in every way the
/// API could take it, and every answer is about A. B stays undrained. The host is refused.
#[test]
fn one_task_cannot_act_on_another_through_the_companion_socket() -> Result<()> {
    let mut collector = CollectorProcess::start()?;
    let sockets = collector.data_dir().join("task");
    let socket = sockets.join("companion.sock");
    collector.wait_until(DELIVERY_TIMEOUT, "the companion socket", || {
        Ok(if socket.exists() {
            Check::Done(())
        } else {
            Check::Waiting(format!("no {}", socket.display()))
        })
    })?;
    let helper = graphite_send()?;
    let (task_a, task_b) = (TestTask::new("companiona"), TestTask::new("companionb"));
    let start = |task: &TestTask| {
        TestContainer::builder()
            .ecs(task, "app")
            .bind(&helper, "/call")
            .bind(&sockets, "/run/collector:ro")
            .shell(format!("echo ready {}; exec sleep 600", task.task_id))
            .start()
    };
    let (a, b) = (start(&task_a)?, start(&task_b)?);
    // Each task's other container: A's has finished, B's still runs (a drain of B could not
    // finish, and would show on B).
    let job_a = TestContainer::builder()
        .ecs(&task_a, "job")
        .shell(format!("echo done {}", task_a.task_id))
        .start()?;
    let job_b = TestContainer::builder()
        .ecs(&task_b, "job")
        .shell(format!("echo ready {}; exec sleep 600", task_b.task_id))
        .start()?;
    ensure!(job_a.wait_exit(DELIVERY_TIMEOUT)? == 0, "A's job failed");
    let sink = collector.sink();
    for (task, name, line) in [
        (&task_a, "app", "ready"),
        (&task_b, "app", "ready"),
        (&task_a, "job", "done"),
        (&task_b, "job", "ready"),
    ] {
        super::wait_for_line(
            &mut collector,
            &format!("{name}'s stdout"),
            &format!("{line} {}", task.task_id),
            || Ok(messages(&sink.lines(&task.task_id, name, "stdout")?)),
        )?;
    }
    let (id_a, id_b) = (task_a.task_id.as_str(), task_b.task_id.as_str());
    let mut answers = Vec::new();

    // Who am I: each task gets itself.
    let answer = call_from(&a, &request("GET", "/v1/self"), Duration::from_secs(10))?;
    ensure!(status_of(&answer)? == 200, "A's /v1/self: {answer}");
    ensure!(
        answer.contains(id_a) && answer.contains(a.id()),
        "A's /v1/self: {answer}"
    );
    answers.push(("GET /v1/self", answer));
    let answer = call_from(&b, &request("GET", "/v1/self"), Duration::from_secs(10))?;
    ensure!(
        status_of(&answer)? == 200 && answer.contains(id_b) && !answer.contains(id_a),
        "B's /v1/self: {answer}"
    );

    // Drains naming B: the exited phase, then the whole drain. Both are A's.
    for (target, done) in [
        (
            format!("/v1/drain?phase=exited&task={id_b}"),
            "{\"exited\":",
        ),
        (format!("/v1/drain?task={id_b}"), "{\"drained\":"),
        (format!("/v1/drain?task={}", task_b.arn), "{\"drained\":"),
    ] {
        let answer = call_from(&a, &request("POST", &target), Duration::from_secs(30))?;
        ensure!(
            status_of(&answer)? == 200 && answer.lines().any(|l| l.starts_with(done)),
            "A's POST {target} did not finish with {done}: {answer}"
        );
        ensure!(
            answer.contains(id_a) && answer.contains(job_a.id()),
            "A's POST {target} is not about A and its job: {answer}"
        );
        answers.push(("POST /v1/drain naming B", answer));
    }
    // Other routes are not companion calls, whatever they name.
    for target in [
        format!("/v1/tasks/{id_b}"),
        format!("/v1/metrics/tasks/{id_b}"),
        format!("/v1/containers/{}", b.id()),
        "/v1/overview".to_owned(),
    ] {
        let answer = call_from(&a, &request("GET", &target), Duration::from_secs(10))?;
        ensure!(
            status_of(&answer)? == 404 && answer.contains("unknown_endpoint"),
            "A's GET {target}: {answer}"
        );
        // The refusal quotes the path A sent; nothing of B's beyond it.
        let body = answer.replace(&target, "");
        answers.push(("GET of another route", body));
    }
    for (what, answer) in &answers {
        ensure!(
            [id_b, b.id(), b.name(), job_b.id(), job_b.name()]
                .iter()
                .all(|x| !answer.contains(x)),
            "{what} from task A names task B: {answer}"
        );
    }
    ensure!(
        drained(&collector, &task_a)?,
        "inspect shows no drain of task A"
    );
    ensure!(
        !drained(&collector, &task_b)?,
        "task B was drained by task A's calls"
    );

    // The host, in no container: refused, for every call.
    for (method, target) in [
        ("GET", "/v1/self".to_owned()),
        ("POST", format!("/v1/drain?task={id_a}")),
        ("POST", format!("/v1/drain?phase=exited&task={id_b}")),
    ] {
        let answer = call(&socket, &request(method, &target), Duration::from_secs(10))?;
        ensure!(
            status_of(&answer)? == 403 && answer.contains("not_in_container"),
            "the host's {method} {target}: {answer}"
        );
    }
    collector.check_running()
}

/// The image the non-root case runs: `COLLECTOR_TEST_IMAGE` (e.g. `collector:latest`, from
/// `cargo xtask image`), else the one `cargo xtask test` imports from the debug collector
/// (`xtask/src/image.rs`: the same layout and file capabilities).
fn collector_image() -> Result<String> {
    let image = std::env::var("COLLECTOR_TEST_IMAGE")
        .unwrap_or_else(|_| "collector-test/collector:latest".to_owned());
    ensure!(
        docker(["image", "inspect", "-f", "{{.Id}}", &image]).is_ok(),
        "no image {image}: run `cargo xtask test` (it makes it of the debug collector) or \
         `cargo xtask image` and set COLLECTOR_TEST_IMAGE=collector:latest"
    );
    Ok(image)
}

/// `collector taskdef daemon --part task`: the daemon's documented privileges and mounts.
fn daemon_taskdef(image: &str) -> Result<Value> {
    let out = std::process::Command::new(crate::collector_bin()?)
        .args(["taskdef", "daemon", "--image", image, "--cluster", "test"])
        .args(["--part", "task"])
        .output()
        .context("run collector taskdef daemon")?;
    ensure!(
        out.status.success(),
        "collector taskdef daemon: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).context("collector taskdef daemon printed no JSON")
}

/// Capability numbers (linux/capability.h) of the names ECS takes in `capabilities.add`
/// that the daemon's task definition may list.
fn capability_number(name: &str) -> Result<u32> {
    Ok(match name {
        "DAC_READ_SEARCH" => 2,
        "SYS_PTRACE" => 19,
        "SYS_ADMIN" => 21,
        other => anyhow::bail!("capability {other} is not known to this test"),
    })
}

/// A collector in its image, as a container (removed when dropped, with its data).
struct DaemonContainer {
    id: String,
    data: tempfile::TempDir,
}

impl DaemonContainer {
    /// Runs `image` the way `taskdef` (the daemon's task definition) says: its capabilities
    /// (`add`, less `without`), mounts, environment, PID mode, limits and command, as `user`,
    /// with a fresh data directory owned by that user, and no network (the task definition
    /// has the host's; none keeps parallel cases off each other's ports).
    fn start(image: &str, taskdef: &Value, user: (u32, u32), without: &[&str]) -> Result<Self> {
        let c = &taskdef["containerDefinitions"][0];
        let data = tempfile::Builder::new()
            .prefix("collector-image-test-")
            .tempdir()
            .context("create the data directory")?;
        nix::unistd::chown(data.path(), Some(user.0.into()), Some(user.1.into()))
            .context("chown the data directory")?;
        let mut args: Vec<String> = vec![
            "run".into(),
            "--detach".into(),
            "--name".into(),
            format!("collector-test-image-{}", random_hex(12)),
            "--label".into(),
            "collector-test=1".into(),
            "--user".into(),
            format!("{}:{}", user.0, user.1),
            "--network".into(),
            "none".into(),
        ];
        let caps = &c["linuxParameters"]["capabilities"];
        for cap in caps["drop"].as_array().context("no capabilities.drop")? {
            args.extend(["--cap-drop".into(), cap.as_str().context("cap")?.to_owned()]);
        }
        for cap in caps["add"].as_array().context("no capabilities.add")? {
            let cap = cap.as_str().context("cap")?;
            if !without.contains(&cap) {
                args.extend(["--cap-add".into(), cap.to_owned()]);
            }
        }
        ensure!(
            c["privileged"] == Value::Bool(false),
            "the task definition is privileged: {c}"
        );
        if let Some(pid) = taskdef["pidMode"].as_str() {
            args.extend(["--pid".into(), pid.to_owned()]);
        }
        if c["readonlyRootFilesystem"] == Value::Bool(true) {
            args.push("--read-only".into());
        }
        for limit in c["ulimits"].as_array().into_iter().flatten() {
            let name = limit["name"].as_str().context("ulimit name")?;
            let (mut soft, mut hard) = (
                limit["softLimit"].as_i64().context("softLimit")?,
                limit["hardLimit"].as_i64().context("hardLimit")?,
            );
            if name == "nofile" {
                // No higher than this machine's own hard limit (test machines may have less
                // than an ECS instance), which the container may not raise.
                let (_, ours) =
                    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)?;
                let ours = i64::try_from(ours).unwrap_or(i64::MAX);
                (soft, hard) = (soft.min(ours), hard.min(ours));
            }
            args.extend(["--ulimit".into(), format!("{name}={soft}:{hard}")]);
        }
        let volumes = taskdef["volumes"].as_array().context("no volumes")?;
        let data_dir = c["environment"]
            .as_array()
            .context("no environment")?
            .iter()
            .find(|e| e["name"] == "COLLECTOR_DATA_DIR")
            .and_then(|e| e["value"].as_str())
            .context("no COLLECTOR_DATA_DIR")?;
        for m in c["mountPoints"].as_array().context("no mountPoints")? {
            let inside = m["containerPath"].as_str().context("containerPath")?;
            let source = if inside == data_dir {
                data.path().display().to_string()
            } else {
                volumes
                    .iter()
                    .find(|v| v["name"] == m["sourceVolume"])
                    .and_then(|v| v["host"]["sourcePath"].as_str())
                    .with_context(|| format!("no host volume for {m}"))?
                    .to_owned()
            };
            let ro = if m["readOnly"] == Value::Bool(true) {
                ":ro"
            } else {
                ""
            };
            args.extend(["--volume".into(), format!("{source}:{inside}{ro}")]);
        }
        for e in c["environment"].as_array().context("no environment")? {
            let (name, value) = (e["name"].as_str(), e["value"].as_str());
            args.extend([
                "--env".into(),
                format!(
                    "{}={}",
                    name.context("env name")?,
                    value.context("env value")?
                ),
            ]);
        }
        args.push(image.to_owned());
        for word in c["command"].as_array().into_iter().flatten() {
            args.push(word.as_str().context("command")?.to_owned());
        }
        let id = docker(&args)?.lines().last().unwrap_or_default().to_owned();
        ensure!(id.len() == 64, "docker run printed {id:?}");
        Ok(Self { id, data })
    }

    /// The local sink of this collector.
    fn sink(&self) -> crate::Sink {
        crate::Sink::new(self.data.path().join("logs"))
    }

    /// What the collector printed.
    fn logs(&self) -> String {
        match crate::docker::docker_output(["logs", &self.id]) {
            Ok(out) => format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => format!("(docker logs failed: {e:#})"),
        }
    }

    /// The collector's `/proc/<pid>/status` on the host, while it runs.
    fn status(&self) -> Result<String> {
        let state = docker([
            "inspect",
            "-f",
            "{{.State.Running}} {{.State.Pid}}",
            &self.id,
        ])?;
        let pid = match state.split_once(' ') {
            Some(("true", pid)) => pid.to_owned(),
            _ => anyhow::bail!(
                "the collector container is not running ({state}):\n{}",
                self.logs()
            ),
        };
        fs::read_to_string(format!("/proc/{pid}/status")).context("read the collector's status")
    }

    /// Waits until the collector says it runs.
    fn wait_running(&self) -> Result<()> {
        crate::wait_until(
            DELIVERY_TIMEOUT,
            "the collector in its image to run",
            || {
                self.status()?;
                let logs = self.logs();
                Ok(if logs.contains("Collector running.") {
                    Check::Done(())
                } else {
                    Check::Waiting(logs)
                })
            },
        )
    }
}

impl Drop for DaemonContainer {
    fn drop(&mut self) {
        if let Err(e) = docker(["rm", "--force", &self.id]) {
            eprintln!("cannot remove collector container {}: {e:#}", self.id);
        }
        // Its files belong to nobody; the temporary directory goes as root.
    }
}

/// `Name:\tvalue` of a `/proc/<pid>/status`.
fn status_field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// The collector image, run as nobody with all capabilities dropped but those the daemon's
/// task definition adds, and its mounts: it holds just those capabilities, and delivers a
/// task's stdout (Docker's root-only json-file log) and a root-only file the task declares
/// inside its own filesystem (read through `/proc/<pid>/root`). Without `SYS_PTRACE` the
/// declared file cannot be read, and without `DAC_READ_SEARCH` not even Docker's log: each
/// capability of the list is needed.
#[test]
fn the_image_runs_as_nobody_with_only_the_documented_capabilities() -> Result<()> {
    const NOBODY: (u32, u32) = (65534, 65534);
    let image = collector_image()?;
    let taskdef = daemon_taskdef(&image)?;
    let added: Vec<&str> =
        taskdef["containerDefinitions"][0]["linuxParameters"]["capabilities"]["add"]
            .as_array()
            .context("no capabilities.add")?
            .iter()
            .filter_map(Value::as_str)
            .collect();
    ensure!(
        added == ["DAC_READ_SEARCH", "SYS_PTRACE"],
        "the documented capabilities changed: {added:?} (update this case)"
    );
    let full = DaemonContainer::start(&image, &taskdef, NOBODY, &[])?;
    let no_ptrace = DaemonContainer::start(&image, &taskdef, NOBODY, &["SYS_PTRACE"])?;
    let no_dac = DaemonContainer::start(&image, &taskdef, NOBODY, &["DAC_READ_SEARCH"])?;
    for daemon in [&full, &no_ptrace, &no_dac] {
        daemon.wait_running()?;
    }

    // Exactly nobody, with exactly the added capabilities, effective.
    let status = full.status()?;
    let want: u64 = added
        .iter()
        .map(|c| capability_number(c).map(|n| 1u64 << n))
        .sum::<Result<u64>>()?;
    for (field, value) in [
        ("Uid", "65534\t65534\t65534\t65534".to_owned()),
        ("Gid", "65534\t65534\t65534\t65534".to_owned()),
        ("CapEff", format!("{want:016x}")),
        ("CapPrm", format!("{want:016x}")),
        ("CapBnd", format!("{want:016x}")),
        ("CapAmb", format!("{:016x}", 0)),
    ] {
        ensure!(
            status_field(&status, field) == Some(value.as_str()),
            "{field} of the collector is {:?}, not {value:?}:\n{status}",
            status_field(&status, field)
        );
    }

    // A task whose files are root's alone: the json-file log (Docker's, 0640 under a 0710
    // directory) and a declared file made with umask 077 in the container's own filesystem.
    let task = TestTask::new("nonroot");
    let _app = TestContainer::builder()
        .ecs(&task, "app")
        .label("collector.logs", "/var/log/app/*.log")
        .shell(format!(
            "umask 077; mkdir -p /var/log/app; i=1; while [ $i -le {N} ]; do \
             echo \"nonroot out $i\"; echo \"nonroot file $i\" >> /var/log/app/app.log; \
             i=$((i+1)); done; exec sleep 600"
        ))
        .start()?;
    let sink = full.sink();
    let stdout =
        || -> Result<Vec<String>> { Ok(messages(&sink.lines(&task.task_id, "app", "stdout")?)) };
    let file = || -> Result<Vec<String>> {
        Ok(messages(&sink.file_lines(
            &task.task_id,
            "app",
            "/var/log/app/app.log",
        )?))
    };
    let want_out = numbered("nonroot out", N);
    let want_file = numbered("nonroot file", N);
    crate::wait_until(
        DELIVERY_TIMEOUT,
        "the task's lines from the nobody collector",
        || {
            let (o, f) = (stdout()?, file()?);
            Ok(if o.len() >= N && f.len() >= N {
                Check::Done(())
            } else {
                Check::Waiting(format!(
                    "stdout: {}; file: {}",
                    crate::check::describe(&o),
                    crate::check::describe(&f)
                ))
            })
        },
    )
    .with_context(|| format!("collector output:\n{}", full.logs()))?;
    crate::check_exactly_once(&stdout()?, &want_out).context("stdout")?;
    crate::check_exactly_once(&file()?, &want_file).context("the declared file")?;

    // Without SYS_PTRACE: stdout, but not the file inside the container; without
    // DAC_READ_SEARCH: nothing. Given the time the full one took, and more.
    std::thread::sleep(Duration::from_secs(5));
    let s = no_ptrace.sink();
    crate::check_exactly_once(
        &messages(&s.lines(&task.task_id, "app", "stdout")?),
        &want_out,
    )
    .with_context(|| format!("stdout without SYS_PTRACE; output:\n{}", no_ptrace.logs()))?;
    let got = messages(&s.file_lines(&task.task_id, "app", "/var/log/app/app.log")?);
    ensure!(
        got.is_empty(),
        "without SYS_PTRACE the declared file was read ({} lines): SYS_PTRACE is not needed",
        got.len()
    );
    let s = no_dac.sink();
    let got = messages(&s.lines(&task.task_id, "app", "stdout")?);
    ensure!(
        got.is_empty(),
        "without DAC_READ_SEARCH Docker's log was read ({} lines): DAC_READ_SEARCH is not needed",
        got.len()
    );
    for daemon in [&full, &no_ptrace, &no_dac] {
        daemon.status().context("a collector stopped")?;
    }
    Ok(())
}
