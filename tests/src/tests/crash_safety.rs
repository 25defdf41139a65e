//! Crash safety: SIGKILL of the collector at random points, fifty times and more, while
//! containers write and rotate their logs and send metrics.
//!
//! The claim is at-least-once: every written line is in the sink, in order of first
//! appearance, and a restart sends again at most what it had delivered but not yet
//! checkpointed (see [`MAX_REPLAY`]). A line may be missing only when the collector says so
//! (`files_lost` of its source in `collector inspect`: Docker deleted a rotated file while no
//! collector ran); a silent gap fails.
//!
//! The kill schedule comes from a seeded xorshift generator; the seed is printed, and
//! `COLLECTOR_TEST_SEED=<seed>` replays a failing schedule.

use std::collections::{HashMap, HashSet};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

use super::metrics::{get_json, graphite_send, latest};
use super::{WAIT_FOR_GO, control_dir, go, wait_for_line};
use crate::check::{self, preview};
use crate::{
    Check, CollectorProcess, TestContainer, TestTask, check_at_least_once_in_order, messages,
    numbered,
};

/// Kills at least this many.
const KILLS: usize = 55;
/// The shortest and longest time between two kills, in milliseconds.
const KILL_INTERVAL_MS: (u64, u64) = (100, 600);
/// Lines each steady writer prints: 400 a second (20 lines, then 50 ms asleep), some 30 s.
const STEADY_LINES: usize = 12_000;
/// Lines the rotated writer prints: 200 a second, some 30 s, about 80 bytes each in the
/// json-file log, so Docker rotates its 50 kB files every 3 s and keeps the last ~9 s of
/// lines (3 files): far more than the collector is ever down between two kills, so nothing
/// should be lost.
const ROTATED_LINES: usize = 6_000;
/// Graphite samples the metrics container sends, one every ~100 ms while the collector is
/// killed and restarted under it.
const SAMPLES: usize = 200;
/// `tail.read_bytes`, the collector's default: one read pass, and so one batch, covers at
/// most this many bytes of a log file.
const READ_BYTES: usize = 256 * 1024;
/// The fewest bytes one of these writers' lines takes in a json-file log
/// (`{"log":"w1 1\n","stream":"stdout","time":"<30 bytes>"}` and its newline).
const MIN_JSON_LINE_BYTES: usize = 64;
/// How far back a restart may go in one source: one unacknowledged batch.
///
/// A batch is one read pass of one file (`batch.rs`), at most [`READ_BYTES`] of it, so at
/// most `READ_BYTES / MIN_JSON_LINE_BYTES` lines. The file sink writes a batch, then the
/// shipper commits its checkpoint in the same turn (`ship/mod.rs`); a SIGKILL between the
/// two leaves that batch delivered but not checkpointed, and the restart sends it again.
/// (The shipper may hold several uncommitted batches of one source when the tailer outruns
/// the sink, but at these writers' rates a few seconds of lines are far below one read
/// pass, so the bound is generous and any replay from further back, say the start of a
/// file, fails it.)
const MAX_REPLAY: usize = READ_BYTES / MIN_JSON_LINE_BYTES;
/// How long the containers and the collector get to finish once the kills stop.
const CATCH_UP: Duration = Duration::from_secs(60);

/// A xorshift64 generator: a kill schedule that a seed replays.
struct XorShift(u64);

impl XorShift {
    /// Seeded from `COLLECTOR_TEST_SEED`, else from the clock (printed either way).
    fn from_env() -> Self {
        let seed = std::env::var("COLLECTOR_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            })
            .max(1);
        eprintln!("kill schedule seed: {seed} (replay with COLLECTOR_TEST_SEED={seed})");
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform enough in `low..=high`.
    fn between(&mut self, (low, high): (u64, u64)) -> u64 {
        low + self.next() % (high - low + 1)
    }
}

/// A busybox loop printing `"<prefix> 1"` to `"<prefix> <n>"`, sleeping `nap` after every
/// `burst` lines.
fn paced_script(prefix: &str, n: usize, burst: usize, nap: &str) -> String {
    format!(
        "echo \"{prefix} 1\"; {WAIT_FOR_GO}; i=2; while [ $i -le {n} ]; do echo \"{prefix} $i\"; \
         [ $((i % {burst})) -eq 0 ] && sleep {nap}; i=$((i+1)); done; exec sleep 600"
    )
}

/// What arrived of one source, compared with what was written.
#[derive(Debug, Default)]
struct Delivery {
    /// Lines written and never delivered.
    missing: usize,
    /// Deliveries beyond the first of a line.
    duplicates: usize,
}

/// Checks `seen` against `expected` allowing gaps (whole lost files): no unexpected line,
/// first appearances in order, each replay at most [`MAX_REPLAY`] lines back.
fn check_in_order_with_gaps(seen: &[String], expected: &[String]) -> Result<Delivery> {
    let index: HashMap<&str, usize> = expected
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    let mut first_seen = HashSet::new();
    let mut next = 0;
    let mut duplicates = 0;
    for (at, line) in seen.iter().enumerate() {
        let Some(&i) = index.get(line.as_str()) else {
            bail!("line {at} is unexpected: {}", preview(line));
        };
        if first_seen.insert(i) {
            ensure!(
                i >= next,
                "line {at} ({}) is new but comes after line {}",
                preview(line),
                preview(&expected[next - 1])
            );
            next = i + 1;
        } else {
            duplicates += 1;
            ensure!(
                next - i <= MAX_REPLAY,
                "line {at} ({}) goes back {} lines, more than one unacknowledged batch",
                preview(line),
                next - i
            );
        }
    }
    Ok(Delivery {
        missing: expected.len() - first_seen.len(),
        duplicates,
    })
}

/// `files_lost` and `bytes_lost` of a container's log source, as `collector inspect` says.
fn reported_losses(collector: &CollectorProcess, container: &TestContainer) -> Result<(u64, u64)> {
    let ran = collector
        .cli(["inspect", "--json", container.name()])
        .output()
        .context("run collector inspect")?;
    let v: Value = serde_json::from_slice(&ran.stdout).with_context(|| {
        format!(
            "inspect printed no JSON: {}{}",
            String::from_utf8_lossy(&ran.stdout),
            String::from_utf8_lossy(&ran.stderr)
        )
    })?;
    let field = |name: &str| {
        v.pointer(&format!("/containers/0/sources/0/{name}"))
            .and_then(Value::as_u64)
            .with_context(|| format!("no {name} in {v}"))
    };
    Ok((field("files_lost")?, field("bytes_lost")?))
}

/// Fifty-odd SIGKILLs at random points, 100 to 600 ms apart, each followed by a restart,
/// while two containers write steadily, one writes through Docker's rotation
/// (`max-size=50k`, `max-file=3`) and one sends Graphite samples over the unix socket.
///
/// Then every line of every writer is in the sink at least once, in order of first
/// appearance; each replay goes back at most one unacknowledged batch ([`MAX_REPLAY`]) and
/// the duplicates are printed. A line missing from the rotated writer passes only when
/// `collector inspect` counts lost files for it (lost and reported); a silent gap fails. The
/// metrics container's last samples are on its task.
#[test]
fn fifty_kills_lose_nothing() -> Result<()> {
    let started = Instant::now();
    let mut rng = XorShift::from_env();
    let sender = graphite_send()?;
    let mut collector = CollectorProcess::start()?;
    let ctl = control_dir(&collector)?;
    let socket = collector.data_dir().join("task/graphite.sock");
    collector.wait_until(super::DELIVERY_TIMEOUT, "the metrics socket", || {
        Ok(if socket.exists() {
            Check::Done(())
        } else {
            Check::Waiting("absent".into())
        })
    })?;

    let mut writers = Vec::new();
    for name in ["steady-a", "steady-b"] {
        let container = TestContainer::builder()
            .bind(&ctl, "/ctl")
            .shell(paced_script(name, STEADY_LINES, 20, "0.05"))
            .start()?;
        writers.push((container, numbered(name, STEADY_LINES)));
    }
    let rotated = TestContainer::builder()
        .log_opt("max-size", "50k")
        .log_opt("max-file", "3")
        .bind(&ctl, "/ctl")
        .shell(paced_script("rotated", ROTATED_LINES, 20, "0.1"))
        .start()?;
    // The socket is made anew by each start: the container mounts its directory.
    let task = TestTask::new("crash-metrics");
    let _metrics = TestContainer::builder()
        .ecs(&task, "app")
        .bind(&ctl, "/ctl")
        .bind(&sender, "/graphite-send")
        .bind(
            socket.parent().expect("the socket is in a directory"),
            "/run/task",
        )
        .shell(format!(
            "{WAIT_FOR_GO}; send() {{ until printf \"$1\\n\" | /graphite-send unix \
             /run/task/graphite.sock 0 2>/dev/null; do sleep 0.05; done; }}; \
             k=1; while [ $k -le {SAMPLES} ]; do send \"chaos.seq $k\"; k=$((k+1)); \
             sleep 0.1; done; \
             while true; do send \"chaos.seq {SAMPLES}\"; send \"chaos.done 1\"; sleep 0.5; done"
        ))
        .start()?;

    let sink = collector.sink();
    for (container, expected) in &writers {
        wait_for_line(&mut collector, container.name(), &expected[0], || {
            Ok(messages(&sink.container_lines(container, "stdout")?))
        })?;
    }
    wait_for_line(&mut collector, rotated.name(), "rotated 1", || {
        Ok(messages(&sink.container_lines(&rotated, "stdout")?))
    })?;
    go(&ctl)?;

    // The kills, while everything writes. A kill counts as mid-stream when the collector
    // it kills had delivered lines since it started: the premise that kills interrupt
    // delivery rather than start-up only.
    let delivered = || -> Result<usize> {
        let mut n = sink.container_lines(&rotated, "stdout")?.len();
        for (container, _) in &writers {
            n += sink.container_lines(container, "stdout")?.len();
        }
        Ok(n)
    };
    let (mut kills, mut mid_stream) = (0, 0);
    let mut at_start = delivered()?;
    let kill_started = Instant::now();
    while kills < KILLS {
        thread::sleep(Duration::from_millis(rng.between(KILL_INTERVAL_MS)));
        collector.check_running()?;
        collector.sigkill()?;
        let now = delivered()?;
        if now > at_start {
            mid_stream += 1;
        }
        at_start = now;
        collector.restart()?;
        kills += 1;
    }
    eprintln!(
        "{kills} kills in {:.1?}, {mid_stream} of them while lines were being delivered",
        kill_started.elapsed()
    );
    ensure!(
        mid_stream >= kills / 2,
        "premise: only {mid_stream} of {kills} kills came after the collector delivered lines"
    );

    // Every writer finishes, and the collector catches up.
    let rotated_expected = numbered("rotated", ROTATED_LINES);
    let all: Vec<(&TestContainer, &[String])> = writers
        .iter()
        .map(|(c, e)| (c, e.as_slice()))
        .chain([(&rotated, rotated_expected.as_slice())])
        .collect();
    collector.wait_until(CATCH_UP, "the last line of every writer", || {
        let mut waiting = Vec::new();
        for (container, expected) in &all {
            let seen = messages(&sink.container_lines(container, "stdout")?);
            let last = expected.last().expect("writers write");
            if !seen.contains(last) {
                waiting.push(format!("{}: {}", container.name(), check::describe(&seen)));
            }
        }
        Ok(if waiting.is_empty() {
            Check::Done(())
        } else {
            Check::Waiting(waiting.join("; "))
        })
    })?;
    thread::sleep(crate::collector::SETTLE);
    collector.check_running()?;

    let mut total_duplicates = 0;
    for (container, expected) in &writers {
        let seen = messages(&sink.container_lines(container, "stdout")?);
        check_at_least_once_in_order(&seen, expected, MAX_REPLAY)
            .with_context(|| format!("stdout of {}", container.name()))
            .map_err(|err| collector.explain(err))?;
        let duplicates = seen.len() - expected.len();
        eprintln!(
            "{}: {} lines, {duplicates} duplicates",
            container.name(),
            expected.len()
        );
        total_duplicates += duplicates;
    }
    let seen = messages(&sink.container_lines(&rotated, "stdout")?);
    let delivery = check_in_order_with_gaps(&seen, &rotated_expected)
        .with_context(|| format!("stdout of {}", rotated.name()))
        .map_err(|err| collector.explain(err))?;
    let (files_lost, bytes_lost) = reported_losses(&collector, &rotated)?;
    eprintln!(
        "{}: {} lines, {} duplicates, {} missing; collector reports {files_lost} files and \
         {bytes_lost} bytes lost",
        rotated.name(),
        rotated_expected.len(),
        delivery.duplicates,
        delivery.missing
    );
    total_duplicates += delivery.duplicates;
    // A 50 kB file holds at most 50,000 / 64 lines.
    let per_file = 50_000 / MIN_JSON_LINE_BYTES;
    ensure!(
        delivery.missing == 0
            || (files_lost > 0 && delivery.missing <= files_lost as usize * per_file),
        "{} lines of {} lost silently: the collector reports {files_lost} files lost",
        delivery.missing,
        rotated.name()
    );
    ensure!(
        total_duplicates <= kills * all.len() * MAX_REPLAY,
        "{total_duplicates} duplicates after {kills} kills: more than one batch per kill and source"
    );

    // The metrics container's last samples are on its task.
    let api = collector.data_dir().join("control.sock");
    let want = vec![
        ("chaos.done".to_owned(), 1.0),
        ("chaos.seq".to_owned(), SAMPLES as f64),
    ];
    collector.wait_until(
        super::DELIVERY_TIMEOUT,
        &format!("{want:?} on task {}", task.task_id),
        || {
            Ok(
                match get_json(&api, &format!("/v1/metrics/tasks/{}", task.task_id))? {
                    Some(a) if latest(&a) == want => Check::Done(()),
                    Some(a) => Check::Waiting(format!("{:?}", latest(&a))),
                    None => Check::Waiting("404".into()),
                },
            )
        },
    )?;
    eprintln!(
        "{kills} kills, {total_duplicates} duplicate lines in all, {:.1?} in all",
        started.elapsed()
    );
    Ok(())
}
