//! The companion shim and the drain barrier, on the real Docker engine, modelling one ECS task
//! the way the agent runs it: the companion image (`cargo xtask image`, FROM scratch) and a
//! job container sharing its network namespace (`--network container:`, as in `awsvpc`), ECS
//! labels and `--cgroup-parent /ecs/<task id>`, the daemon's task socket directory mounted
//! read-only at `/run/collector`. The daemon ships to the local directory, CloudWatch Logs
//! and S3 (moto) at once.
//!
//! The job writes 100,000 lines and Graphite samples to `127.0.0.1:13290` (the companion's
//! relay) and exits at once. The companion's exit 0 must mean: every line is in the local
//! sink, in CloudWatch and in the S3 archive (with its `_COMPLETE` marker), and every sample
//! is in the task's metadata. Nothing is waited for after the exit: it is checked at once.
//! Variants: the daemon killed and restarted during the drain; no daemon at all (the
//! companion says so and exits non-zero within its deadline); SIGTERM to the companion while
//! the job still runs (as ECS stops a task).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};

use super::metrics::{get_json, graphite_send, latest};
use super::s3::untar;
use crate::check::{Check, wait_until};
use crate::docker::docker;
use crate::sink::parse_lines;
use crate::{CollectorProcess, Moto, TestContainer, TestTask};

/// The image `cargo xtask image` builds (and `cargo xtask test` before the tests).
const COMPANION_IMAGE: &str = "collector-companion:latest";
/// The job's lines.
const LINES: usize = 100_000;
/// The bucket of the S3 archive.
const BUCKET: &str = "companion-archive";
/// How long a companion may take to drain a finished task here.
const DRAIN: Duration = Duration::from_secs(90);

/// The daemon with the three sinks. `task_settle` is long, so an archive completes quickly
/// only because the drain finishes it.
fn collector(moto: &Moto) -> Result<CollectorProcess> {
    let mut builder = CollectorProcess::builder();
    for (k, v) in moto
        .collector_env()
        .into_iter()
        .chain(moto.collector_env_s3(BUCKET))
    {
        builder = builder.env(k, v);
    }
    builder
        .env("COLLECTOR_SINKS__S3__TASK_SETTLE", "10m")
        .start()
}

/// The companion of `task`, with the daemon's task sockets (none when `sockets` is `None`).
fn companion(
    task: &TestTask,
    sockets: Option<&Path>,
    env: &[(&str, &str)],
) -> Result<TestContainer> {
    ensure!(
        docker(["image", "inspect", "-f", "{{.Id}}", COMPANION_IMAGE]).is_ok(),
        "no image {COMPANION_IMAGE}: run `cargo xtask test` (it builds it) or `cargo xtask image`"
    );
    let mut b = TestContainer::builder()
        .image(COMPANION_IMAGE)
        .ecs(task, "collector-companion")
        .label("collector.role", "companion");
    if let Some(dir) = sockets {
        b = b.bind(dir, "/run/collector:ro");
    }
    for (k, v) in env {
        b = b.options(["--env".to_owned(), format!("{k}={v}")]);
    }
    b.command(Vec::<String>::new()).start()
}

/// Waits until the companion's relay accepts (its health check, as ECS runs it).
fn wait_healthy(companion: &TestContainer) -> Result<()> {
    wait_until(
        Duration::from_secs(30),
        "the companion's health check",
        || {
            Ok(
                match docker(["exec", companion.id(), "/companion", "health"]) {
                    Ok(_) => Check::Done(()),
                    Err(e) => Check::Waiting(format!("{e:#}")),
                },
            )
        },
    )
}

/// The job: in the companion's network namespace, writes `LINES` lines, sends samples over
/// TCP and UDP to the relay, then `then` (e.g. `exit 0`).
fn job(task: &TestTask, companion: &TestContainer, then: &str) -> Result<TestContainer> {
    let sender = graphite_send()?;
    TestContainer::builder()
        .ecs(task, "job")
        .options([
            "--network".to_owned(),
            format!("container:{}", companion.id()),
        ])
        .bind(&sender, "/graphite-send")
        .shell(format!(
            "awk 'BEGIN {{ for (i = 1; i <= {LINES}; i++) print \"job line \" i }}' && \
             printf 'job.lines {LINES}\\njob.done 1\\n' | /graphite-send tcp 127.0.0.1:13290 && \
             printf 'job.udp 3\\n' | /graphite-send udp 127.0.0.1:13290 && {then}"
        ))
        .start()
}

/// Waits for the companion to exit; returns its exit code and its output.
fn companion_exit(companion: &TestContainer, timeout: Duration) -> Result<(i64, String)> {
    let code = companion.wait_exit(timeout)?;
    let out = crate::docker::docker_output(["logs", companion.id()])?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((code, text))
}

/// `job line 1` .. `job line LINES`, each at least once and in first-seen order; the number
/// of duplicates.
fn check_lines(what: &str, messages: &[String], duplicates_allowed: usize) -> Result<()> {
    // The collector's own record of how the job ended shares the stream (default templates).
    let messages: Vec<&String> = messages
        .iter()
        .filter(|m| !m.starts_with("[collector] "))
        .collect();
    let mut seen = BTreeSet::new();
    let mut next = 1;
    for m in &messages {
        let n: usize = m
            .strip_prefix("job line ")
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("{what}: unexpected line {m:?}"))?;
        if seen.insert(n) {
            ensure!(n == next, "{what}: line {n} came before line {next}");
            next += 1;
        }
    }
    ensure!(
        seen.len() == LINES,
        "{what}: {} of {LINES} lines (first missing: {})",
        seen.len(),
        next
    );
    let dup = messages.len() - LINES;
    ensure!(
        dup <= duplicates_allowed,
        "{what}: {dup} duplicated lines (at most {duplicates_allowed} allowed)"
    );
    Ok(())
}

/// Everything of the task is delivered, checked without waiting.
fn check_delivered(
    collector: &CollectorProcess,
    moto: &Moto,
    task: &TestTask,
    duplicates_allowed: usize,
) -> Result<()> {
    let local = collector.sink().lines(&task.task_id, "job", "stdout")?;
    let local: Vec<String> = local.into_iter().map(|l| l.message).collect();
    check_lines("local sink", &local, duplicates_allowed)?;

    let group = format!("/ecs/{}", task.family);
    let stream = format!("ecs/job/{}", task.task_id);
    let cw = moto.log_messages(&group, &stream)?;
    check_lines("CloudWatch", &cw, duplicates_allowed)?;

    let prefix = format!("collector/tasks/{}/", task.task_id);
    let objects = moto.list_objects(BUCKET, &prefix)?;
    ensure!(
        objects.iter().any(|(k, _)| k.ends_with("/_COMPLETE")),
        "no _COMPLETE in S3: {objects:?}"
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&moto.get_object(BUCKET, &format!("{prefix}manifest.json"))?)?;
    ensure!(
        manifest["containers"] == serde_json::json!(["job"]),
        "the archive holds the job only (not the companion): {manifest}"
    );
    let mut archived = Vec::new();
    for (key, _) in objects.iter().filter(|(k, _)| k.ends_with(".tar.gz")) {
        let dir = tempfile::tempdir()?;
        untar(&moto.get_object(BUCKET, key)?, dir.path())?;
        if let Ok(bytes) = std::fs::read(dir.path().join("job/stdout.log")) {
            archived.extend(parse_lines(&bytes, key)?.into_iter().map(|l| l.message));
        }
    }
    check_lines("S3 archive", &archived, duplicates_allowed)?;

    let api = collector.data_dir().join("control.sock");
    let metrics = get_json(&api, &format!("/v1/metrics/tasks/{}", task.task_id))?
        .context("no metrics for the task")?;
    let got = latest(&metrics);
    for want in [
        ("job.done".to_owned(), 1.0),
        ("job.lines".to_owned(), LINES as f64),
        ("job.udp".to_owned(), 3.0),
    ] {
        ensure!(
            got.contains(&want),
            "{want:?} not in the task's metrics: {got:?}"
        );
    }
    Ok(())
}

/// The job exits at once after writing; the companion exits 0, and by then everything is
/// delivered. Its answer counts the job's lines; `inspect` shows the drain.
#[test]
fn the_companion_exits_only_after_every_line_and_sample_is_delivered() -> Result<()> {
    let moto = Moto::start()?;
    moto.create_bucket(BUCKET)?;
    let mut collector = collector(&moto)?;
    let task = TestTask::new("drain");
    let sockets = collector.data_dir().join("task");
    let companion = companion(&task, Some(&sockets), &[("COLLECTOR_DRAIN_TIMEOUT", "80s")])?;
    wait_healthy(&companion)?;
    let job = job(&task, &companion, "exit 0")?;
    ensure!(job.wait_exit(DRAIN)? == 0, "the job failed");
    let (code, out) = companion_exit(&companion, DRAIN)?;
    ensure!(code == 0, "the companion exited {code}:\n{out}");
    check_delivered(&collector, &moto, &task, 0).map_err(|e| collector.explain(e))?;
    ensure!(
        out.contains(&LINES.to_string()),
        "the companion's report does not count {LINES} lines:\n{out}"
    );
    let inspect = collector
        .cli(["inspect", &task.task_id])
        .output()
        .context("run collector inspect")?;
    let text = String::from_utf8_lossy(&inspect.stdout);
    ensure!(
        text.contains("drain") && text.contains("drained"),
        "inspect: {text}"
    );
    collector.check_running()
}

/// The daemon is killed (SIGKILL) and started again while the companion drains: the
/// companion asks again, and still exits 0 only with everything delivered (at least once).
#[test]
fn a_daemon_restarted_during_the_drain_still_delivers_everything() -> Result<()> {
    let moto = Moto::start()?;
    moto.create_bucket(BUCKET)?;
    let mut collector = collector(&moto)?;
    let task = TestTask::new("drainrestart");
    let sockets = collector.data_dir().join("task");
    let companion = companion(&task, Some(&sockets), &[("COLLECTOR_DRAIN_TIMEOUT", "80s")])?;
    wait_healthy(&companion)?;
    let job = job(&task, &companion, "exit 0")?;
    job.wait_exit(DRAIN)?;
    collector.restart()?;
    let (code, out) = companion_exit(&companion, DRAIN)?;
    ensure!(code == 0, "the companion exited {code}:\n{out}");
    // At least once: what the killed daemon had not committed is read again.
    check_delivered(&collector, &moto, &task, LINES).map_err(|e| collector.explain(e))?;
    collector.check_running()
}

/// No daemon on the host: the companion says the collector is unreachable and exits
/// non-zero within its unreachable timeout, rather than hold the task forever.
#[test]
fn without_a_daemon_the_companion_exits_non_zero_in_time() -> Result<()> {
    let task = TestTask::new("nodaemon");
    let empty = tempfile::tempdir()?;
    let started = Instant::now();
    let companion = companion(
        &task,
        Some(empty.path()),
        &[("COLLECTOR_UNREACHABLE_TIMEOUT", "3s")],
    )?;
    let (code, out) = companion_exit(&companion, Duration::from_secs(30))?;
    let took = started.elapsed();
    ensure!(code == 3, "exit code {code} (want 3, unreachable):\n{out}");
    ensure!(
        out.to_lowercase().contains("unreachable"),
        "the message does not say the collector is unreachable:\n{out}"
    );
    if took > Duration::from_secs(20) {
        bail!("took {took:?} to give up with a 3 s unreachable timeout");
    }
    Ok(())
}

/// ECS stops a task: SIGTERM to the companion while the job still runs, then the job is
/// stopped. The companion drains within its deadline and exits 0 with every line delivered.
#[test]
fn sigterm_mid_run_drains_within_the_deadline() -> Result<()> {
    let moto = Moto::start()?;
    moto.create_bucket(BUCKET)?;
    let mut collector = collector(&moto)?;
    let task = TestTask::new("drainterm");
    let sockets = collector.data_dir().join("task");
    let companion = companion(&task, Some(&sockets), &[("COLLECTOR_DRAIN_TIMEOUT", "60s")])?;
    wait_healthy(&companion)?;
    let job = job(&task, &companion, "exec sleep 600")?;
    // The job has written everything once its samples are stored.
    let api = collector.data_dir().join("control.sock");
    collector.wait_until(DRAIN, "the job's samples", || {
        Ok(
            match get_json(&api, &format!("/v1/metrics/tasks/{}", task.task_id))? {
                Some(a) if latest(&a).iter().any(|(p, _)| p == "job.udp") => Check::Done(()),
                other => Check::Waiting(format!("{other:?}")),
            },
        )
    })?;
    docker(["kill", "--signal", "TERM", companion.id()])?;
    std::thread::sleep(Duration::from_millis(500));
    docker(["stop", "--time", "1", job.id()])?;
    let (code, out) = companion_exit(&companion, DRAIN)?;
    ensure!(code == 0, "the companion exited {code}:\n{out}");
    check_delivered(&collector, &moto, &task, 0).map_err(|e| collector.explain(e))?;
    collector.check_running()
}
