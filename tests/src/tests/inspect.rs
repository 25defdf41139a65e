//! Scenario: `collector inspect`, `collector tail` and the control API's `/metrics`, as a user
//! runs them against the real Docker engine.
//!
//! - Every kind of argument (PID, cgroup id and path, full and short container id, Docker
//!   name, task definition container name, task ARN, task id in both forms) resolves an
//!   ECS-labelled container and a plain one: live, with the daemon stopped, after the
//!   containers exit, after `docker rm`, and after `docker rm` with the daemon stopped. The
//!   JSON is checked field by field against what Docker and the kernel say.
//! - The text is aligned and uncoloured when not a terminal; exit codes are 0, 1, 2.
//! - `collector tail <task>` prints both containers' lines with their names and ends when
//!   the task has.
//! - `/metrics` parses as the Prometheus text format, and its counters equal the lines
//!   written (on a collector that sees only the case's container).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _, symlink};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use serde_json::{Value, json};

use super::{DELIVERY_TIMEOUT, WAIT_FOR_GO, control_dir, go};
use crate::{
    CollectorProcess, Expect, TEST_IMAGE, TestContainer, TestTask, messages, numbered, random_hex,
};

/// Lines per output stream.
const N: usize = 20;

/// Waits on `/ctl/stop`, then exits with `code`.
fn stop_then_exit(code: i32) -> String {
    format!("while [ ! -e /ctl/stop ]; do sleep 0.05; done; exit {code}")
}

/// What a `collector` command printed.
#[derive(Debug)]
struct Ran {
    /// Exit code.
    code: i32,
    /// Standard output.
    stdout: String,
    /// Standard error.
    stderr: String,
}

/// Runs `collector ARGS` against the case's collector.
fn run(collector: &CollectorProcess, args: &[&str]) -> Result<Ran> {
    let out = collector
        .cli(args)
        .output()
        .with_context(|| format!("run collector {args:?}"))?;
    Ok(Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// `collector inspect --json ARGS`, which must find something.
fn inspect_json(collector: &CollectorProcess, args: &[&str]) -> Result<Value> {
    let mut all = vec!["inspect", "--json"];
    all.extend_from_slice(args);
    let ran = run(collector, &all)?;
    ensure!(
        ran.code == 0,
        "collector {all:?} exited {}: {}{}",
        ran.code,
        ran.stdout,
        ran.stderr
    );
    serde_json::from_str(&ran.stdout)
        .with_context(|| format!("collector {all:?} printed no JSON: {}", ran.stdout))
}

/// Checks `v` field by field: each JSON pointer must hold the expected value.
fn expect_fields(v: &Value, what: &str, fields: &[(&str, Value)]) -> Result<()> {
    let mut wrong = Vec::new();
    for (pointer, want) in fields {
        let got = v.pointer(pointer).unwrap_or(&Value::Null);
        if got != want {
            wrong.push(format!("{pointer}: expected {want}, got {got}"));
        }
    }
    ensure!(
        wrong.is_empty(),
        "{what}:\n  {}\nwhole answer: {v:#}",
        wrong.join("\n  ")
    );
    Ok(())
}

/// What Docker and the kernel say about a container, read while it runs or just after.
#[derive(Debug, Clone)]
struct Facts {
    id: String,
    name: String,
    pid: u32,
    cgroup_path: String,
    cgroup_id: u64,
    /// The cgroup v2 directory (under `/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on
    /// hybrid hosts).
    cgroup_dir: PathBuf,
    log_path: PathBuf,
    started_at: String,
    /// Docker's `FinishedAt`, read once it exited (before `docker rm` takes it).
    finished_at: Option<String>,
}

impl Facts {
    fn of(c: &TestContainer) -> Result<Self> {
        let pid = c.pid()?;
        let text = fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .context("read the container's /proc/<pid>/cgroup")?;
        let cgroup_path = text
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .context("no cgroup v2 line: these cases need a cgroup v2 host")?
            .to_owned();
        let cgroup_dir = cgroup_v2_root()?.join(cgroup_path.trim_start_matches('/'));
        let cgroup_id = fs::metadata(&cgroup_dir)
            .with_context(|| format!("stat {}", cgroup_dir.display()))?
            .ino();
        Ok(Self {
            id: c.id().to_owned(),
            name: c.name().to_owned(),
            pid,
            cgroup_path,
            cgroup_id,
            cgroup_dir,
            log_path: c.log_path()?,
            started_at: c.inspect("{{.State.StartedAt}}")?,
            finished_at: None,
        })
    }

    fn short(&self) -> &str {
        &self.id[..12]
    }
}

/// The cgroup v2 hierarchy: `/sys/fs/cgroup` on unified hosts, `/sys/fs/cgroup/unified` on
/// hybrid ones.
fn cgroup_v2_root() -> Result<PathBuf> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.controllers").is_file())
        .context("no cgroup v2 hierarchy: cgroup ids need one")
}

/// Where a case is in the containers' life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Live,
    Exited,
    Removed,
}

/// The arguments that name `f`'s container, with the kind each must be recognised as.
/// `--kind cgroup-id` goes with the cgroup id: a number is a PID first, and any process may
/// have that PID (without it, auto-recognition is checked in `cgroup_ids_are_recognised`).
fn container_args(f: &Facts) -> Vec<(Vec<String>, &'static str)> {
    vec![
        (vec![f.pid.to_string()], "pid"),
        (
            vec!["--kind".into(), "cgroup-id".into(), f.cgroup_id.to_string()],
            "cgroup_id",
        ),
        (vec![f.cgroup_path.clone()], "cgroup_path"),
        (
            vec![f.cgroup_dir.to_string_lossy().into_owned()],
            "cgroup_path",
        ),
        (vec![f.id.clone()], "container_id"),
        (vec![f.short().to_owned()], "short_container_id"),
        (vec![f.name.clone()], "container_name"),
        (vec![format!("/{}", f.name)], "container_name"),
    ]
}

/// Checks that every argument naming the ECS container, the plain one and the legacy (UUID)
/// task resolves to them, then the ECS and plain containers' JSON field by field.
#[allow(
    clippy::too_many_arguments,
    reason = "one call per phase, every fact named"
)]
fn check_all(
    collector: &CollectorProcess,
    phase: Phase,
    daemon: bool,
    task: &TestTask,
    ecs_name: &str,
    web: &Facts,
    plain: &Facts,
    legacy: (&TestTask, &Facts),
) -> Result<()> {
    let when = format!(
        "{phase:?}, {}",
        if daemon {
            "daemon running"
        } else {
            "daemon stopped"
        }
    );
    let mut web_args = container_args(web);
    web_args.push((vec![ecs_name.to_owned()], "container_name"));
    web_args.push((vec![task.arn.clone()], "task_arn"));
    web_args.push((vec![task.task_id.clone()], "task_id"));
    let (legacy_task, legacy_facts) = legacy;
    let legacy_args = vec![
        (vec![legacy_task.task_id.clone()], "task_id"),
        (vec![legacy_task.task_id.replace('-', "")], "task_id"),
        (vec![legacy_task.arn.clone()], "task_arn"),
    ];
    for (facts, args) in [
        (web, web_args),
        (plain, container_args(plain)),
        (legacy_facts, legacy_args),
    ] {
        for (arg, kind) in args {
            let argv: Vec<&str> = arg.iter().map(String::as_str).collect();
            let v = inspect_json(collector, &argv)
                .with_context(|| format!("{when}: inspect {argv:?}"))?;
            expect_fields(
                &v,
                &format!("{when}: inspect {argv:?}"),
                &[
                    ("/recognised/kind", json!(kind)),
                    (
                        "/answered_by",
                        json!(if daemon { "daemon" } else { "offline" }),
                    ),
                    ("/containers/0/container_id", json!(facts.id)),
                    ("/containers/1", Value::Null),
                ],
            )?;
        }
    }
    let v = inspect_json(collector, &[&web.short()[..8]])?;
    check_web(&v, phase, daemon, task, ecs_name, web).with_context(|| when.clone())?;
    let v = inspect_json(collector, &[&plain.name])?;
    check_plain(&v, phase, daemon, collector, plain).with_context(|| when.clone())?;
    Ok(())
}

/// The fields every phase shares, then the phase's own.
fn lifecycle_fields(
    phase: Phase,
    daemon: bool,
    f: &Facts,
    exit_code: i64,
) -> Result<Vec<(&'static str, Value)>> {
    let finished_at = f.finished_at.as_deref();
    let size = fs::metadata(&f.log_path).map(|m| m.len()).ok();
    let mut fields = vec![
        ("/containers/0/container_id", json!(f.id)),
        ("/containers/0/short_id", json!(f.short())),
        ("/containers/0/docker_name", json!(f.name)),
        ("/containers/0/image", json!(TEST_IMAGE)),
        ("/containers/0/started_at", json!(f.started_at)),
        ("/containers/0/last_pid", json!(f.pid)),
        ("/containers/0/cgroup/path", json!(f.cgroup_path)),
        ("/containers/0/cgroup/id", json!(f.cgroup_id)),
        ("/containers/0/sources/0/kind", json!("container_output")),
        ("/containers/0/sources/0/path", json!(f.log_path)),
        ("/containers/0/sources/0/lines_delivered", json!(2 * N)),
        ("/containers/0/sources/0/lines_skipped", json!(0)),
        ("/containers/0/sources/0/rotations", json!(0)),
        ("/containers/0/sources/0/truncations", json!(0)),
        ("/containers/0/sources/0/bytes_lost", json!(0)),
        ("/containers/0/destinations/0/sink", json!("file")),
        ("/containers/0/destinations/0/lines_delivered", json!(2 * N)),
        ("/containers/0/destinations/0/last_error", Value::Null),
        ("/containers/0/metrics/received", json!(false)),
        (
            "/answered_by",
            json!(if daemon { "daemon" } else { "offline" }),
        ),
    ];
    match phase {
        Phase::Live => fields.extend([
            ("/containers/0/state", json!("running")),
            // Its shell forks `sleep`s: the init process comes first (PIDs wrap, so not by number).
            ("/containers/0/pids/0", json!(f.pid)),
            ("/containers/0/exit_code", Value::Null),
            ("/containers/0/finished_at", Value::Null),
            ("/containers/0/sources/0/size", json!(size)),
            ("/containers/0/sources/0/offset", json!(size)),
            ("/containers/0/sources/0/bytes_behind", json!(0)),
            (
                "/containers/0/sources/0/active",
                if daemon { json!(true) } else { Value::Null },
            ),
            ("/containers/0/sources/1", Value::Null),
        ]),
        Phase::Exited => fields.extend([
            ("/containers/0/state", json!("exited")),
            ("/containers/0/pids", json!([])),
            ("/containers/0/exit_code", json!(exit_code)),
            ("/containers/0/oom_killed", json!(false)),
            ("/containers/0/finished_at", json!(finished_at)),
            ("/containers/0/sources/0/offset", json!(size)),
            ("/containers/0/sources/0/bytes_behind", json!(0)),
            (
                "/containers/0/sources/0/active",
                if daemon { json!(false) } else { Value::Null },
            ),
        ]),
        Phase::Removed => fields.extend([
            ("/containers/0/state", json!("removed")),
            ("/containers/0/pids", json!([])),
            ("/containers/0/exit_code", json!(exit_code)),
            ("/containers/0/oom_killed", json!(false)),
            ("/containers/0/sources/0/size", Value::Null),
            ("/containers/0/sources/0/bytes_behind", Value::Null),
        ]),
    }
    if phase != Phase::Live {
        // The collector's own record of how the run ended, delivered like a line.
        fields.extend([
            ("/containers/0/sources/1/kind", json!("lifecycle")),
            ("/containers/0/sources/1/lines_delivered", json!(1)),
            ("/containers/0/sources/1/bytes_behind", Value::Null),
            ("/containers/0/sources/2", Value::Null),
            ("/containers/0/destinations/1/lines_delivered", json!(1)),
        ]);
    }
    Ok(fields)
}

/// After `docker rm`, the finish time is Docker's `FinishedAt` if the daemon read it before
/// the removal, else the time the kernel reported the exit (eBPF, to the millisecond): the
/// same moment either way.
fn check_finished(v: &Value, phase: Phase, f: &Facts) -> Result<()> {
    if phase != Phase::Removed {
        return Ok(());
    }
    let got = v
        .pointer("/containers/0/finished_at")
        .and_then(Value::as_str);
    let want = f
        .finished_at
        .as_deref()
        .and_then(crate::time::parse_rfc3339)
        .context("Docker's FinishedAt")?;
    let close = got.and_then(crate::time::parse_rfc3339).is_some_and(|t| {
        t.duration_since(want)
            .or_else(|e| Ok::<_, ()>(e.duration()))
            .is_ok_and(|d| d < Duration::from_millis(100))
    });
    ensure!(
        close,
        "finished_at {got:?} is not Docker's FinishedAt {:?}",
        f.finished_at
    );
    Ok(())
}

/// The ECS container's answer, field by field.
fn check_web(
    v: &Value,
    phase: Phase,
    daemon: bool,
    task: &TestTask,
    ecs_name: &str,
    f: &Facts,
) -> Result<()> {
    let mut fields = lifecycle_fields(phase, daemon, f, 3)?;
    fields.extend([
        ("/recognised/kind", json!("short_container_id")),
        ("/containers/0/container_name", json!(ecs_name)),
        ("/containers/0/task_id", json!(task.task_id)),
        (
            "/containers/0/group",
            json!(format!("ecs task {}", task.task_id)),
        ),
        ("/task/task_id", json!(task.task_id)),
        ("/task/task_arn", json!(task.arn)),
        ("/task/cluster", json!(task.cluster)),
        ("/task/family", json!(task.family)),
        ("/task/revision", json!(task.revision)),
        ("/task/containers/0/container_id", json!(f.id)),
        ("/task/containers/0/name", json!(ecs_name)),
        ("/task/containers/1", Value::Null),
    ]);
    expect_fields(v, "the ECS container", &fields)?;
    check_finished(v, phase, f)?;
    let dir = v
        .pointer("/containers/0/destinations/0/locations")
        .cloned()
        .unwrap_or_default();
    let want_dir = format!("/logs/tasks/{}/{ecs_name}/", task.task_id);
    ensure!(
        dir.as_array().is_some_and(|l| l.len() == 2
            && l[0]
                .as_str()
                .is_some_and(|p| p.ends_with(&format!("{want_dir}stdout.log")))
            && l[1]
                .as_str()
                .is_some_and(|p| p.ends_with(&format!("{want_dir}stderr.log")))),
        "the ECS container's destination files: {dir}"
    );
    if phase != Phase::Live {
        let lifecycle = v.pointer("/containers/0/destinations/1/locations/0");
        ensure!(
            lifecycle
                .and_then(Value::as_str)
                .is_some_and(|p| p.ends_with(&format!("{want_dir}lifecycle.log"))),
            "the ECS container's lifecycle record file: {lifecycle:?}"
        );
    }
    if phase == Phase::Removed {
        ensure!(
            v.pointer("/containers/0/removed_seen")
                .is_some_and(Value::is_string),
            "no removal time: {v:#}"
        );
    }
    Ok(())
}

/// The plain container's answer, field by field.
fn check_plain(
    v: &Value,
    phase: Phase,
    daemon: bool,
    collector: &CollectorProcess,
    f: &Facts,
) -> Result<()> {
    let mut fields = lifecycle_fields(phase, daemon, f, 5)?;
    let dir = collector
        .sink()
        .root()
        .join("containers")
        .join(format!("{}-{}", f.name, f.short()));
    fields.extend([
        ("/recognised/kind", json!("container_name")),
        ("/containers/0/container_name", Value::Null),
        ("/containers/0/task_id", Value::Null),
        ("/containers/0/group", json!("standalone")),
        ("/task", Value::Null),
        (
            "/containers/0/destinations/0/locations",
            json!([dir.join("stdout.log"), dir.join("stderr.log")]),
        ),
    ]);
    expect_fields(v, "the plain container", &fields)?;
    check_finished(v, phase, f)
}

/// The core claim: every kind of argument, through the containers' whole life, with and
/// without the daemon.
#[test]
fn inspect_resolves_every_kind_through_a_containers_life() -> Result<()> {
    let mut collector = CollectorProcess::start()?;
    let ctl = control_dir(&collector)?;
    let task = TestTask::new("inspect");
    let ecs_name = format!("web-{}", random_hex(6));
    let uuid = fs::read_to_string("/proc/sys/kernel/random/uuid")
        .context("read a UUID")?
        .trim()
        .to_owned();
    let legacy_task = TestTask {
        arn: format!("arn:aws:ecs:us-west-2:012345678910:task/{uuid}"),
        task_id: uuid,
        ..TestTask::new("legacy")
    };
    let lines = |who: &str| {
        format!(
            "i=1; while [ $i -le {N} ]; do echo \"{who} out $i\"; echo \"{who} err $i\" >&2; i=$((i+1)); done"
        )
    };
    let web = TestContainer::builder()
        .ecs(&task, &ecs_name)
        .bind(&ctl, "/ctl")
        .shell(format!("{}; {}", lines("web"), stop_then_exit(3)))
        .start()?;
    let plain = TestContainer::builder()
        .bind(&ctl, "/ctl")
        .shell(format!("{}; {}", lines("plain"), stop_then_exit(5)))
        .start()?;
    let legacy = TestContainer::builder()
        .ecs(&legacy_task, "old")
        .bind(&ctl, "/ctl")
        .shell(stop_then_exit(0))
        .start()?;

    let sink = collector.sink();
    collector.expect_exactly(
        DELIVERY_TIMEOUT,
        vec![
            Expect::new("stdout of web", numbered("web out", N), || {
                Ok(messages(&sink.lines(&task.task_id, &ecs_name, "stdout")?))
            }),
            Expect::new("stderr of web", numbered("web err", N), || {
                Ok(messages(&sink.lines(&task.task_id, &ecs_name, "stderr")?))
            }),
            Expect::new("stdout of plain", numbered("plain out", N), || {
                Ok(messages(&sink.container_lines(&plain, "stdout")?))
            }),
            Expect::new("stderr of plain", numbered("plain err", N), || {
                Ok(messages(&sink.container_lines(&plain, "stderr")?))
            }),
        ],
    )?;
    let (mut web_f, mut plain_f, legacy_f) =
        (Facts::of(&web)?, Facts::of(&plain)?, Facts::of(&legacy)?);
    // The counts are committed just after delivery: wait for them, as a user would.
    wait_for(
        &mut collector,
        "2N lines delivered in inspect's answers",
        |c| {
            let w = inspect_json(c, &[&web_f.id])?;
            let p = inspect_json(c, &[&plain_f.id])?;
            let n = |v: &Value| {
                v.pointer("/containers/0/sources/0/lines_delivered")
                    .cloned()
            };
            Ok((n(&w) == Some(json!(2 * N)) && n(&p) == Some(json!(2 * N))).then_some(()))
        },
    )?;

    // Live, with the daemon, then without it.
    check_all(
        &collector,
        Phase::Live,
        true,
        &task,
        &ecs_name,
        &web_f,
        &plain_f,
        (&legacy_task, &legacy_f),
    )?;
    check_overview_and_text(&collector, &task, &ecs_name, &web_f, &plain_f)?;
    cgroup_ids_are_recognised(&collector, &web_f)?;
    check_exit_codes(&collector)?;
    collector.sigterm(Duration::from_secs(20))?;
    check_all(
        &collector,
        Phase::Live,
        false,
        &task,
        &ecs_name,
        &web_f,
        &plain_f,
        (&legacy_task, &legacy_f),
    )?;
    collector.restart()?;
    wait_for(&mut collector, "the restarted daemon to answer", |c| {
        Ok(
            (inspect_json(c, &[&web_f.id])?.pointer("/answered_by") == Some(&json!("daemon")))
                .then_some(()),
        )
    })?;

    // After the exit.
    go_stop(&ctl)?;
    for (c, code, facts) in [
        (&web, 3, Some(&mut web_f)),
        (&plain, 5, Some(&mut plain_f)),
        (&legacy, 0, None),
    ] {
        ensure!(
            c.wait_exit(DELIVERY_TIMEOUT)? == code,
            "{} exit code",
            c.name()
        );
        if let Some(f) = facts {
            f.finished_at = Some(c.inspect("{{.State.FinishedAt}}")?);
        }
    }
    let exited_at = Instant::now();
    wait_for(
        &mut collector,
        "the sources to be read to their end after the exit",
        |c| {
            let done = [&web_f.id, &plain_f.id]
                .iter()
                .map(|id| inspect_json(c, &[id.as_str()]))
                .collect::<Result<Vec<_>>>()?
                .iter()
                .all(|v| {
                    v.pointer("/containers/0/sources/0/active") == Some(&json!(false))
                        && v.pointer("/containers/0/sources/1/lines_delivered") == Some(&json!(1))
                });
            Ok(done.then_some(()))
        },
    )?;
    check_all(
        &collector,
        Phase::Exited,
        true,
        &task,
        &ecs_name,
        &web_f,
        &plain_f,
        (&legacy_task, &legacy_f),
    )?;

    // After `docker rm`. The daemon notices an exit (cgroup gone, Docker's `die`) before
    // Docker writes the exit code, and re-reads it at its next rescan (1 s here): a user who
    // removes a container at once loses only the exit code, which is what is waited for.
    std::thread::sleep(Duration::from_millis(2500).saturating_sub(exited_at.elapsed()));
    for c in [&web, &plain, &legacy] {
        crate::docker(["rm", c.id()])?;
    }
    wait_for(&mut collector, "the containers to be seen removed", |c| {
        let removed = [&web_f.id, &plain_f.id, &legacy_f.id]
            .iter()
            .map(|id| inspect_json(c, &[id.as_str()]))
            .collect::<Result<Vec<_>>>()?
            .iter()
            .all(|v| {
                v.pointer("/containers/0/removed_seen")
                    .is_some_and(Value::is_string)
            });
        Ok(removed.then_some(()))
    })?;
    check_all(
        &collector,
        Phase::Removed,
        true,
        &task,
        &ecs_name,
        &web_f,
        &plain_f,
        (&legacy_task, &legacy_f),
    )?;
    let overview = inspect_json(&collector, &[])?;
    ensure!(
        row(&overview, &web_f.id).is_none(),
        "a removed container is listed without --all: {overview:#}"
    );
    let all = inspect_json(&collector, &["--all"])?;
    ensure!(
        row(&all, &web_f.id).and_then(|r| r.get("state")) == Some(&json!("removed")),
        "--all: {all:#}"
    );

    // After `docker rm`, with the daemon stopped: the history alone.
    collector.sigterm(Duration::from_secs(20))?;
    check_all(
        &collector,
        Phase::Removed,
        false,
        &task,
        &ecs_name,
        &web_f,
        &plain_f,
        (&legacy_task, &legacy_f),
    )?;
    let v = inspect_json(&collector, &[&task.task_id])?;
    let notes = v.get("notes").map(Value::to_string).unwrap_or_default();
    ensure!(
        notes.contains("No collector daemon answers") && notes.contains("unknown"),
        "offline notes: {notes}"
    );
    Ok(())
}

/// Creates `/ctl/stop` for the containers waiting in [`stop_then_exit`].
fn go_stop(ctl: &Path) -> Result<()> {
    fs::write(ctl.join("stop"), b"").with_context(|| format!("write {}/stop", ctl.display()))
}

/// Polls `probe` until it returns `Some`, failing with the collector's stderr after
/// [`DELIVERY_TIMEOUT`]. (The daemon may be stopped: `probe` may answer offline.)
fn wait_for<T>(
    collector: &mut CollectorProcess,
    what: &str,
    mut probe: impl FnMut(&CollectorProcess) -> Result<Option<T>>,
) -> Result<T> {
    let started = Instant::now();
    loop {
        let last = match probe(collector) {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => "not yet".to_owned(),
            Err(e) => format!("{e:#}"),
        };
        if started.elapsed() > DELIVERY_TIMEOUT {
            return Err(collector.explain(anyhow!("timed out waiting for {what}; last: {last}")));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The overview row of a container.
fn row<'a>(overview: &'a Value, id: &str) -> Option<&'a Value> {
    overview
        .get("containers")?
        .as_array()?
        .iter()
        .find(|r| r.get("container_id") == Some(&json!(id)))
}

/// `inspect` without an argument lists the task and both containers with how far behind
/// they are; the text is aligned, uncoloured unless asked.
fn check_overview_and_text(
    collector: &CollectorProcess,
    task: &TestTask,
    ecs_name: &str,
    web: &Facts,
    plain: &Facts,
) -> Result<()> {
    let o = inspect_json(collector, &[])?;
    let t = o
        .get("tasks")
        .and_then(Value::as_array)
        .and_then(|ts| {
            ts.iter()
                .find(|t| t.get("task_id") == Some(&json!(task.task_id)))
        })
        .with_context(|| format!("task {} missing from the overview: {o:#}", task.task_id))?;
    expect_fields(
        t,
        "the task's row",
        &[
            ("/task_arn", json!(task.arn)),
            (
                "/definition",
                json!(format!("{}:{}", task.family, task.revision)),
            ),
            ("/state", json!("running")),
            ("/containers", json!(1)),
            ("/bytes_behind", json!(0)),
        ],
    )?;
    for (f, name, task_id) in [
        (web, ecs_name, json!(task.task_id)),
        (plain, plain.name.as_str(), Value::Null),
    ] {
        let r = row(&o, &f.id)
            .with_context(|| format!("{} missing from the overview: {o:#}", f.name))?;
        expect_fields(
            r,
            "a container's row",
            &[
                ("/name", json!(name)),
                ("/task_id", task_id),
                ("/state", json!("running")),
                ("/image", json!(TEST_IMAGE)),
                ("/lines_delivered", json!(2 * N)),
                ("/bytes_behind", json!(0)),
            ],
        )?;
    }
    // The same overview as text: one aligned line per container.
    let text = run(collector, &["inspect"])?;
    ensure!(text.code == 0, "inspect: {text:?}");
    let header = text
        .stdout
        .lines()
        .find(|l| l.starts_with("CONTAINER"))
        .context("no container table")?;
    let line = text
        .stdout
        .lines()
        .find(|l| l.starts_with(web.short()))
        .context("no line for the ECS container")?;
    for col in ["STATE", "BEHIND"] {
        let at = header
            .find(col)
            .with_context(|| format!("no {col} column"))?;
        ensure!(
            line.get(at..).is_some_and(|rest| !rest.starts_with(' ')),
            "column {col} not aligned:\n{header}\n{line}"
        );
    }
    // A task as text, for people: sections with aligned keys, no colour on a pipe.
    let text = run(collector, &["inspect", &task.task_id])?;
    ensure!(text.code == 0, "inspect task: {text:?}");
    for want in [
        format!("\"{}\" is a task id.", task.task_id),
        "Answered by the running collector.".to_owned(),
        format!("Task {}", task.task_id),
        format!("Container {}  {ecs_name}", web.short()),
        format!("  PIDs         {}", web.pid),
        format!("  cgroup       {}  (id {})", web.cgroup_path, web.cgroup_id),
        "Log sources".into(),
        "Destinations".into(),
        "  received  none received (Graphite on metrics.tcp/udp/unix, StatsD on metrics.statsd)"
            .into(),
    ] {
        ensure!(
            text.stdout.contains(&want),
            "{want:?} missing from:\n{}",
            text.stdout
        );
    }
    ensure!(
        !text.stdout.contains('\x1b'),
        "colour on a pipe:\n{}",
        text.stdout
    );
    let coloured = run(collector, &["inspect", "--color", "always", &task.task_id])?;
    ensure!(
        coloured.stdout.contains("\x1b[32mrunning\x1b[0m"),
        "no colour with --color always:\n{}",
        coloured.stdout
    );
    Ok(())
}

/// A cgroup id without `--kind` is recognised as one when no process has that number.
fn cgroup_ids_are_recognised(collector: &CollectorProcess, web: &Facts) -> Result<()> {
    if Path::new(&format!("/proc/{}", web.cgroup_id)).exists() {
        return Ok(());
    }
    let v = inspect_json(collector, &[&web.cgroup_id.to_string()])?;
    expect_fields(
        &v,
        "a bare cgroup id",
        &[
            ("/recognised/kind", json!("cgroup_id")),
            ("/containers/0/container_id", json!(web.id)),
        ],
    )
}

/// 1 for nothing found, 2 for a bad argument; the JSON error for scripts.
fn check_exit_codes(collector: &CollectorProcess) -> Result<()> {
    let unknown = random_hex(64);
    let ran = run(collector, &["inspect", &unknown])?;
    ensure!(
        ran.code == 1 && ran.stderr.contains("nothing matches"),
        "unknown id: {ran:?}"
    );
    let ran = run(collector, &["inspect", "--json", &unknown])?;
    let v: Value = serde_json::from_str(&ran.stdout).context("JSON error")?;
    ensure!(
        ran.code == 1 && v.get("error") == Some(&json!("not_found")),
        "unknown id, --json: {ran:?}"
    );
    for bad in [
        &["inspect", "not a thing!"][..],
        &["inspect", "--kind", "pid", "web"],
        &["inspect", "a", "b"],
    ] {
        let ran = run(collector, bad)?;
        ensure!(ran.code == 2, "{bad:?} should be a usage error: {ran:?}");
    }
    Ok(())
}

/// `collector tail <task>`: both containers' lines, each with its name, stdout to stdout and
/// stderr to stderr; it ends by itself once the task has ended.
#[test]
fn tail_follows_a_whole_task_until_it_ends() -> Result<()> {
    let mut collector = CollectorProcess::start()?;
    let ctl = control_dir(&collector)?;
    let task = TestTask::new("tailed");
    let mut containers = Vec::new();
    for name in ["web", "worker"] {
        let script = format!(
            "{WAIT_FOR_GO}; i=1; while [ $i -le {N} ]; do echo \"{name} out $i\"; echo \"{name} err $i\" >&2; \
             sleep 0.02; i=$((i+1)); done"
        );
        containers.push(
            TestContainer::builder()
                .ecs(&task, name)
                .bind(&ctl, "/ctl")
                .shell(script)
                .start()?,
        );
    }
    // `tail` names the containers the daemon knows when it starts; the CLI's inspect may
    // answer offline (from Docker's files) before the daemon has identified both.
    wait_for(
        &mut collector,
        "the daemon to know both containers of the task",
        |c| {
            let v = inspect_json(c, &[&task.task_id])?;
            let mut names: Vec<&str> = v["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["container_name"].as_str())
                .collect();
            names.sort_unstable();
            Ok((v["answered_by"] == "daemon" && names == ["web", "worker"]).then_some(()))
        },
    )?;
    let (out_path, err_path) = (
        collector.dir().join("tail.out"),
        collector.dir().join("tail.err"),
    );
    let mut tail = collector
        .cli(["tail", task.task_id.as_str()])
        .stdout(Stdio::from(fs::File::create(&out_path)?))
        .stderr(Stdio::from(fs::File::create(&err_path)?))
        .spawn()
        .context("start collector tail")?;
    // Follow only once tail announced itself: no line is written before it listens.
    wait_for(&mut collector, "tail to start following", |_| {
        Ok(fs::read_to_string(&err_path)?
            .contains("Following task")
            .then_some(()))
    })?;
    go(&ctl)?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = tail.try_wait()? {
            break status;
        }
        if started.elapsed() > DELIVERY_TIMEOUT {
            let _ = tail.kill();
            bail!(
                "collector tail did not end with the task; it printed:\n{}",
                fs::read_to_string(&out_path)?
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (
        fs::read_to_string(&out_path)?,
        fs::read_to_string(&err_path)?,
    );
    ensure!(
        status.success(),
        "collector tail exited {status}; stderr:\n{err}"
    );
    for (text, stream, kind) in [(&out, "stdout", "out"), (&err, "stderr", "err")] {
        for name in ["web", "worker"] {
            // The name column is as wide as the longest name known so far.
            let got: Vec<&str> = text
                .lines()
                .filter_map(|l| l.split_once(" | "))
                .filter(|(n, _)| n.trim_end() == name)
                .map(|(_, m)| m)
                // The collector's own "container exited" record may come too (on stderr).
                .filter(|m| !m.starts_with("[collector]"))
                .collect();
            let want = numbered(&format!("{name} {kind}"), N);
            ensure!(
                got == want,
                "{stream} of {name} in collector tail: got {got:?}\nwhole {stream}:\n{text}"
            );
        }
    }
    ensure!(
        out.lines()
            .all(|l| l.starts_with("web    | ") || l.starts_with("worker | ")),
        "stray stdout lines, or a name column not as wide as the names in the header:\n{out}"
    );
    ensure!(
        err.contains(&format!("Following task {}: web, worker", task.task_id)),
        "no header:\n{err}"
    );
    ensure!(
        err.contains("End: every container exited"),
        "no end line:\n{err}"
    );
    Ok(())
}

/// One scraped sample.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A strict parser of the Prometheus text exposition format 0.0.4: every line must be a
/// `# HELP`, a `# TYPE` or a sample; names and label names must be valid; label values must
/// be escaped; a family's `TYPE` comes once, before its samples, and its samples are
/// together; no series appears twice; counters are non-negative.
fn parse_exposition(text: &str) -> Result<Vec<Sample>> {
    ensure!(
        text.ends_with('\n'),
        "the exposition must end with a newline"
    );
    let valid_name = |n: &str, colon: bool| {
        let mut b = n.bytes();
        b.next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_' || (colon && c == b':'))
            && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || (colon && c == b':'))
    };
    let mut types: HashMap<String, String> = HashMap::new();
    let mut finished: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    let mut samples: Vec<Sample> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let at = || format!("line {}: {line:?}", i + 1);
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (word, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            if word == "TYPE" {
                let kind = parts.next().unwrap_or("");
                ensure!(valid_name(name, true), "bad name, {}", at());
                ensure!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "bad type, {}",
                    at()
                );
                ensure!(
                    types.insert(name.to_owned(), kind.to_owned()).is_none(),
                    "TYPE twice, {}",
                    at()
                );
                ensure!(
                    !samples.iter().any(|s| s.name == name),
                    "TYPE after samples, {}",
                    at()
                );
            } else if word == "HELP" {
                ensure!(valid_name(name, true), "bad name, {}", at());
            }
            continue;
        }
        ensure!(
            !line.starts_with('#') && !line.is_empty(),
            "not a sample, {}",
            at()
        );
        let name_end = line.find(['{', ' ']).with_context(at)?;
        let name = &line[..name_end];
        ensure!(valid_name(name, true), "bad metric name, {}", at());
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(r) = rest.strip_prefix('{') {
            let mut r = r;
            loop {
                if let Some(after) = r.strip_prefix('}') {
                    r = after;
                    break;
                }
                let eq = r.find('=').with_context(at)?;
                let label = &r[..eq];
                ensure!(
                    valid_name(label, false) && !label.starts_with("__"),
                    "bad label name, {}",
                    at()
                );
                r = r[eq + 1..]
                    .strip_prefix('"')
                    .with_context(|| format!("unquoted label value, {}", at()))?;
                let mut value = String::new();
                let mut chars = r.char_indices();
                let end = loop {
                    match chars
                        .next()
                        .with_context(|| format!("unterminated label value, {}", at()))?
                    {
                        (_, '\\') => match chars.next().map(|(_, c)| c) {
                            Some('\\') => value.push('\\'),
                            Some('"') => value.push('"'),
                            Some('n') => value.push('\n'),
                            _ => bail!("bad escape, {}", at()),
                        },
                        (j, '"') => break j,
                        (_, c) => value.push(c),
                    }
                };
                ensure!(
                    labels.insert(label.to_owned(), value).is_none(),
                    "label twice, {}",
                    at()
                );
                r = &r[end + 1..];
                r = r.strip_prefix(',').unwrap_or(r);
            }
            rest = r;
        }
        let fields: Vec<&str> = rest
            .strip_prefix(' ')
            .with_context(|| format!("no space before the value, {}", at()))?
            .split(' ')
            .collect();
        ensure!(
            matches!(fields.len(), 1 | 2),
            "value [timestamp] expected, {}",
            at()
        );
        let value: f64 = match fields[0] {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().with_context(|| format!("bad value, {}", at()))?,
        };
        let kind = types
            .get(name)
            .with_context(|| format!("sample without a TYPE, {}", at()))?;
        if kind == "counter" {
            ensure!(value >= 0.0, "negative counter, {}", at());
        }
        if current.as_deref() != Some(name) {
            ensure!(
                !finished.iter().any(|f| f == name),
                "samples of a family not together, {}",
                at()
            );
            if let Some(c) = current.take() {
                finished.push(c);
            }
            current = Some(name.to_owned());
        }
        let sample = Sample {
            name: name.to_owned(),
            labels,
            value,
        };
        ensure!(
            !samples
                .iter()
                .any(|s| s.name == sample.name && s.labels == sample.labels),
            "series twice, {}",
            at()
        );
        samples.push(sample);
    }
    Ok(samples)
}

/// `GET target` over the control socket, as any HTTP/1.1 client sends it.
fn http_get(socket: &Path, target: &str) -> Result<(u16, String, String)> {
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
    let headers = head.to_ascii_lowercase();
    let body = if headers.contains("transfer-encoding: chunked") {
        let mut out = String::new();
        let mut rest = body;
        loop {
            let (size, after) = rest.split_once("\r\n").context("bad chunk")?;
            let size = usize::from_str_radix(size.trim(), 16)?;
            if size == 0 {
                break out;
            }
            out.push_str(after.get(..size).context("short chunk")?);
            rest = &after[size + 2..];
        }
    } else {
        body.to_owned()
    };
    let content_type = headers
        .lines()
        .find_map(|l| l.strip_prefix("content-type: "))
        .unwrap_or("")
        .to_owned();
    Ok((status, content_type, body))
}

/// `/metrics` parses strictly, names only low-cardinality labels, and counts exactly the
/// lines the case wrote. The collector sees only the case's container: its Docker root is a
/// directory holding that container's files alone (links to Docker's), its procfs and
/// cgroupfs are empty, and it has no Docker socket; its history keeps removed containers
/// 2 s, so the case also sees the history expire. (With no procfs, it learns that a
/// container runs from Docker's files alone: the container is started before it looks.)
#[test]
fn metrics_parse_and_count_the_lines_written() -> Result<()> {
    const OUT: usize = 300;
    const ERR: usize = 200;
    let host = tempfile::Builder::new()
        .prefix("collector-metrics-host-")
        .tempdir()?;
    let (proc_root, cgroup_root, docker_root) = (
        host.path().join("proc"),
        host.path().join("cgroup"),
        host.path().join("docker"),
    );
    for d in [&proc_root, &cgroup_root, &docker_root.join("containers")] {
        fs::create_dir_all(d)?;
    }
    let ctl = host.path().join("ctl");
    fs::create_dir(&ctl)?;
    let container = TestContainer::builder()
        .bind(&ctl, "/ctl")
        .shell(format!(
            "{WAIT_FOR_GO}; i=1; while [ $i -le {OUT} ]; do echo \"metrics out $i\"; i=$((i+1)); done; \
             i=1; while [ $i -le {ERR} ]; do echo \"metrics err $i\" >&2; i=$((i+1)); done; exec sleep 600"
        ))
        .start()?;
    let real = crate::docker_host()?
        .root_dir
        .join("containers")
        .join(container.id());
    let mine = docker_root.join("containers").join(container.id());
    fs::create_dir(&mine)?;
    for f in [
        "config.v2.json".to_owned(),
        "hostconfig.json".to_owned(),
        format!("{}-json.log", container.id()),
    ] {
        symlink(real.join(&f), mine.join(&f))?;
    }
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let mut collector = CollectorProcess::builder()
        .env("COLLECTOR_HOST__PROCFS_ROOT", path(&proc_root))
        .env("COLLECTOR_HOST__CGROUPFS_ROOT", path(&cgroup_root))
        .env("COLLECTOR_HOST__DOCKER_ROOT", path(&docker_root))
        .env(
            "COLLECTOR_HOST__DOCKER_SOCKET",
            path(&host.path().join("no-docker.sock")),
        )
        .env("COLLECTOR_DISCOVERY__DOCKER_EVENTS", "false")
        // eBPF sees every container cgroup on the host, whatever the roots say.
        .env("COLLECTOR_DISCOVERY__EBPF", "off")
        .env("COLLECTOR_DISCOVERY__HISTORY_RETENTION", "2s")
        .start()?;
    fs::write(ctl.join("go"), b"")?;
    let sink = collector.sink();
    collector.expect_exactly(
        DELIVERY_TIMEOUT,
        vec![
            Expect::new("stdout", numbered("metrics out", OUT), || {
                Ok(messages(&sink.container_lines(&container, "stdout")?))
            }),
            Expect::new("stderr", numbered("metrics err", ERR), || {
                Ok(messages(&sink.container_lines(&container, "stderr")?))
            }),
        ],
    )?;

    let socket = collector.data_dir().join("control.sock");
    let meta = fs::metadata(&socket).context("the control socket")?;
    ensure!(
        meta.permissions().mode() & 0o777 == 0o600 && meta.uid() == 0,
        "socket mode {:o} uid {}",
        meta.permissions().mode(),
        meta.uid()
    );
    let (status, content_type, body) = http_get(&socket, "/metrics")?;
    ensure!(
        status == 200 && content_type.starts_with("text/plain; version=0.0.4"),
        "GET /metrics: {status} {content_type}"
    );
    let samples =
        parse_exposition(&body).with_context(|| format!("/metrics does not parse:\n{body}"))?;
    for s in &samples {
        for label in s.labels.keys() {
            ensure!(
                [
                    "sink",
                    "event",
                    "source",
                    "state",
                    "version",
                    "transport",
                    "reason"
                ]
                .contains(&label.as_str()),
                "high-cardinality label {label} in {s:?}"
            );
        }
    }
    let value = |name: &str, labels: &[(&str, &str)]| -> Result<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
            .with_context(|| format!("no {name}{labels:?} in:\n{body}"))
    };
    let lines = (OUT + ERR) as f64;
    let message_bytes: usize = numbered("metrics out", OUT)
        .iter()
        .chain(&numbered("metrics err", ERR))
        .map(String::len)
        .sum();
    let file_bytes = fs::metadata(container.log_path()?)?.len() as f64;
    for (name, labels, want) in [
        ("collector_read_records_total", &[][..], lines),
        ("collector_records_delivered_total", &[], lines),
        (
            "collector_sink_sent_records_total",
            &[("sink", "file")],
            lines,
        ),
        ("collector_delivered_bytes_total", &[], message_bytes as f64),
        (
            "collector_sink_sent_bytes_total",
            &[("sink", "file")],
            message_bytes as f64,
        ),
        ("collector_read_bytes_total", &[], file_bytes),
        ("collector_sink_errors_total", &[("sink", "file")], 0.0),
        ("collector_lost_bytes_total", &[], 0.0),
        ("collector_log_lines_skipped_total", &[], 0.0),
        ("collector_containers_discovered_total", &[], 1.0),
        ("collector_containers", &[("state", "running")], 1.0),
        ("collector_log_sources", &[("state", "active")], 1.0),
        ("collector_log_behind_bytes", &[], 0.0),
    ] {
        let got = value(name, labels)?;
        ensure!(
            got == want,
            "{name}{labels:?} = {got}, expected {want}\n{body}"
        );
    }
    ensure!(
        value(
            "collector_discovery_events_total",
            &[("event", "seen"), ("source", "docker_root")]
        )? >= 1.0,
        "no discovery event counted"
    );

    // The rest of the API answers too.
    for (target, want_status, want) in [
        ("/live", 200, "live"),
        ("/ready", 200, "ready"),
        ("/v1/sinks", 200, "\"records\": 500"),
    ] {
        let (status, _, body) = http_get(&socket, target)?;
        ensure!(
            status == want_status && body.contains(want),
            "GET {target}: {status} {body}"
        );
    }

    // Removed, remembered, then forgotten once the retention has passed.
    crate::docker(["rm", "--force", container.id()])?;
    fs::remove_dir_all(&mine)?;
    wait_for(&mut collector, "the container to be seen removed", |c| {
        Ok(
            (inspect_json(c, &[container.id()])?.pointer("/containers/0/state")
                == Some(&json!("removed")))
            .then_some(()),
        )
    })?;
    wait_for(&mut collector, "the history to forget the container", |c| {
        let ran = run(c, &["inspect", container.id()])?;
        Ok((ran.code == 1).then_some(()))
    })?;
    Ok(())
}

#[test]
fn the_exposition_parser_is_strict() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{sink=\"f\\\"x\"} 3\n# TYPE g gauge\ng 1.5\n";
    let parsed = parse_exposition(good).unwrap();
    assert_eq!(parsed[0].labels["sink"], "f\"x");
    for bad in [
        "a_total 1\n",                                              // no TYPE
        "# TYPE a counter\na -1\n",                                 // negative counter
        "# TYPE a gauge\na{b=c} 1\n",                               // unquoted
        "# TYPE a gauge\na{b=\"c\"} 1",                             // no final newline
        "# TYPE a gauge\n# TYPE b gauge\na 1\nb 1\na{x=\"1\"} 2\n", // family split
        "# TYPE a gauge\na 1\na 2\n",                               // series twice
        "# TYPE 1a gauge\n1a 1\n",                                  // bad name
    ] {
        assert!(parse_exposition(bad).is_err(), "{bad:?} accepted");
    }
}
