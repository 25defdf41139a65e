//! Scenario c: SIGKILL of the collector mid-stream, then a restart from its checkpoints.

use std::thread;
use std::time::Duration;

use anyhow::{Result, ensure};

use super::{WAIT_FOR_GO, control_dir, go, wait_for_line};
use crate::{
    Check, CollectorProcess, TestContainer, check, check_at_least_once_in_order, messages,
};

/// Batches of `seq` the container writes, [`PER_BATCH`] lines each, 20 ms apart (~10 s).
const BATCHES: usize = 400;
/// Lines per batch.
const PER_BATCH: usize = 50;
/// The kill comes once this many lines have arrived.
const KILL_AFTER: usize = 8_000;
/// The most lines a restart may send again: the last batch window (lines delivered but not
/// yet checkpointed). Re-sending from the start would exceed it, since the kill comes after
/// [`KILL_AFTER`] lines.
const MAX_REPLAY: usize = 5_000;

/// c. Kill -9 while lines stream in, restart: no line missing, in order, and duplicates only
/// within the last batch window.
#[test]
fn no_line_is_lost_across_a_kill_and_restart() -> Result<()> {
    let mut collector = CollectorProcess::start()?;
    let ctl = control_dir(&collector)?;
    let container = TestContainer::builder()
        .bind(&ctl, "/ctl")
        .shell(format!(
            "echo start; {WAIT_FOR_GO}; i=0; while [ $i -lt {BATCHES} ]; do \
             seq $((i*{PER_BATCH}+1)) $((i*{PER_BATCH}+{PER_BATCH})); i=$((i+1)); sleep 0.02; \
             done; echo end; exec sleep 600"
        ))
        .start()?;
    let sink = collector.sink();
    let read =
        || -> Result<Vec<String>> { Ok(messages(&sink.container_lines(&container, "stdout")?)) };
    wait_for_line(&mut collector, "the container's stdout", "start", read)?;
    go(&ctl)?;

    let seen = collector.wait_until(
        super::DELIVERY_TIMEOUT,
        &format!("{KILL_AFTER} lines before the kill"),
        || {
            let seen = read()?;
            Ok(if seen.len() >= KILL_AFTER {
                Check::Done(seen)
            } else {
                Check::Waiting(check::describe(&seen))
            })
        },
    )?;
    collector.sigkill()?;
    ensure!(
        !seen.iter().any(|m| m == "end"),
        "premise: the kill came after every line was delivered ({})",
        check::describe(&seen)
    );
    // The container writes on while no collector runs.
    thread::sleep(Duration::from_millis(500));
    collector.restart()?;

    let mut expected = vec!["start".to_owned()];
    expected.extend((1..=BATCHES * PER_BATCH).map(|i| i.to_string()));
    expected.push("end".to_owned());
    wait_for_line(
        &mut collector,
        "the container's stdout after the restart",
        "end",
        read,
    )?;
    thread::sleep(crate::collector::SETTLE);
    collector.check_running()?;
    check_at_least_once_in_order(&read()?, &expected, MAX_REPLAY)
        .map_err(|err| collector.explain(err))
}
