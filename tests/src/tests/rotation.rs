//! Scenario b: Docker rotates the json-file log under the collector at a high write rate.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, ensure};

use super::{WAIT_FOR_GO, control_dir, go, wait_for_line};
use crate::{CollectorProcess, Expect, TestContainer, messages};

/// Lines `seq` writes: about 7 bytes each, some 14 MB of json-file, ~140 rotations of 100 kB.
const N: usize = 200_000;

/// b. `--log-opt max-size=100k --log-opt max-file=3` and 200,000 lines as fast as busybox
/// `seq` writes them: every line once, in order, although Docker keeps only 300 kB on disk.
#[test]
fn every_line_survives_rotation_at_a_high_rate() -> Result<()> {
    let mut collector = CollectorProcess::start()?;
    let ctl = control_dir(&collector)?;
    let container = TestContainer::builder()
        .log_opt("max-size", "100k")
        .log_opt("max-file", "3")
        .bind(&ctl, "/ctl")
        .shell(format!("echo start; {WAIT_FOR_GO}; seq 1 {N}; echo end"))
        .start()?;
    let sink = collector.sink();
    // Writing starts once the collector tails the container: the test is about rotation,
    // not about how fast a new container is found.
    wait_for_line(
        &mut collector,
        "the rotating container's stdout",
        "start",
        || Ok(messages(&sink.container_lines(&container, "stdout")?)),
    )?;
    go(&ctl)?;

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

    // The premise: Docker did rotate (and dropped all but two old files).
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
