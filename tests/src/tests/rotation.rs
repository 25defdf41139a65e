//! Scenario b: Docker rotates the json-file log under the collector at a high write rate.
//!
//! Two claims. While a rotated file lives longer than the collector needs to open it (the
//! rotation guard opens each file the instant it is created, at real-time priority), every
//! line arrives once and in order. When Docker deletes files faster than that, what is lost
//! is whole files, and every one of them is counted (`files_lost` in `inspect`, an error in
//! the log): never a silent gap.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;

use super::{WAIT_FOR_GO, control_dir, go, wait_for_line};
use crate::{Check, CollectorProcess, Expect, TestContainer, messages};

/// Lines `seq` writes: about 75 bytes each as json-file, some 15 MB in all.
const N: usize = 200_000;

/// A container that prints `start`, waits for the test, then `seq 1 N` and `end`, with its
/// json-file log rotated at `max_size`, three files kept.
fn start_writer(collector: &CollectorProcess, max_size: &str) -> Result<TestContainer> {
    let ctl = control_dir(collector)?;
    TestContainer::builder()
        .log_opt("max-size", max_size)
        .log_opt("max-file", "3")
        .bind(&ctl, "/ctl")
        .shell(format!("echo start; {WAIT_FOR_GO}; seq 1 {N}; echo end"))
        .start()
}

/// Starts the writing once the collector tails the container: the test is about rotation,
/// not about how fast a new container is found.
fn go_when_tailed(collector: &mut CollectorProcess, container: &TestContainer) -> Result<()> {
    let sink = collector.sink();
    wait_for_line(
        collector,
        "the rotating container's stdout",
        "start",
        || Ok(messages(&sink.container_lines(container, "stdout")?)),
    )?;
    go(&control_dir(collector)?)
}

/// The premise: Docker did rotate (and dropped all but two old files).
fn check_rotated(container: &TestContainer) -> Result<()> {
    let log = container.log_path()?;
    for suffix in [".1", ".2"] {
        let rotated = PathBuf::from(format!("{}{suffix}", log.display()));
        ensure!(
            rotated.is_file(),
            "Docker did not rotate: {} is missing",
            rotated.display()
        );
    }
    Ok(())
}

/// b. `--log-opt max-size=1m --log-opt max-file=3` and 200,000 lines as fast as busybox `seq`
/// writes them (about 15 rotations, a file deleted some 100 ms after its creation): every
/// line once, in order, although Docker keeps only 3 MB on disk.
#[test]
fn every_line_survives_rotation_at_a_high_rate() -> Result<()> {
    let mut collector = CollectorProcess::start()?;
    let container = start_writer(&collector, "1m")?;
    go_when_tailed(&mut collector, &container)?;
    let sink = collector.sink();
    let mut expected = vec!["start".to_owned()];
    expected.extend((1..=N).map(|i| i.to_string()));
    expected.push("end".to_owned());
    collector.expect_exactly(
        Duration::from_secs(60),
        vec![Expect::new(
            format!("stdout of the rotating container {}", container.name()),
            expected,
            || Ok(messages(&sink.container_lines(&container, "stdout")?)),
        )],
    )?;
    check_rotated(&container)
}

/// b'. `max-size=100k`: about 150 rotations, a file deleted a few milliseconds after its
/// creation, faster than any reader can be guaranteed to be scheduled on a busy host. Lines
/// arrive once and in order; a gap is only ever whole files, and only with `files_lost`
/// counting them.
#[test]
fn rotation_faster_than_files_can_be_opened_never_loses_silently() -> Result<()> {
    let mut collector = CollectorProcess::start()?;
    let container = start_writer(&collector, "100k")?;
    go_when_tailed(&mut collector, &container)?;
    let sink = collector.sink();
    collector.wait_until(
        Duration::from_secs(60),
        "the rotating container's last line",
        || {
            let seen = messages(&sink.container_lines(&container, "stdout")?);
            Ok(if seen.last().is_some_and(|m| m == "end") {
                Check::Done(())
            } else {
                Check::Waiting(format!("{} lines so far", seen.len()))
            })
        },
    )?;
    let seen = messages(&sink.container_lines(&container, "stdout")?);
    let numbers: Vec<usize> = seen[1..seen.len() - 1]
        .iter()
        .map(|m| m.parse::<usize>().with_context(|| format!("line {m:?}")))
        .collect::<Result<_>>()?;
    ensure!(
        seen.first().is_some_and(|m| m == "start"),
        "first line {:?}",
        seen.first()
    );
    // Once and in order: strictly increasing.
    if let Some(w) = numbers.windows(2).find(|w| w[1] <= w[0]) {
        anyhow::bail!(
            "line {} came after line {}: out of order or twice",
            w[1],
            w[0]
        );
    }
    let missing = N - numbers.len();
    let ran = collector
        .cli(["inspect", "--json", container.name()])
        .output()
        .context("run collector inspect")?;
    let v: Value = serde_json::from_slice(&ran.stdout).with_context(|| {
        format!(
            "inspect printed no JSON: {}",
            String::from_utf8_lossy(&ran.stdout)
        )
    })?;
    let files_lost = v
        .pointer("/containers/0/sources/0/files_lost")
        .and_then(Value::as_u64)
        .with_context(|| format!("no files_lost in {v}"))?;
    // A 100 kB file holds at most 100,000 / 70 lines of this writer.
    let per_file = 100_000 / 70;
    ensure!(
        (missing == 0) == (files_lost == 0) && missing <= files_lost as usize * per_file,
        "{missing} lines missing, but {files_lost} files counted lost"
    );
    if files_lost > 0 {
        ensure!(
            collector.output().contains("their lines are lost"),
            "the loss is not in the collector's log"
        );
    }
    eprintln!("{files_lost} files lost, {missing} lines missing");
    check_rotated(&container)
}
