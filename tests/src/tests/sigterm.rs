//! Scenario g: SIGTERM drains and exits 0; a restart sends nothing again.

use std::time::Duration;

use anyhow::{Result, ensure};

use super::DELIVERY_TIMEOUT;
use crate::{CollectorProcess, Expect, TestContainer, messages, numbered, numbered_lines_script};

/// How long the collector may take to drain and exit after SIGTERM.
const EXIT_BOUND: Duration = Duration::from_secs(10);

/// g. After SIGTERM the collector exits 0 within [`EXIT_BOUND`]; restarted on the same data
/// dir it collects a new container, and what it had delivered is not sent again.
#[test]
fn sigterm_exits_cleanly_and_a_restart_resends_nothing() -> Result<()> {
    let mut collector = CollectorProcess::start()?;
    let first = TestContainer::builder()
        .shell(format!(
            "{}; exec sleep 600",
            numbered_lines_script("first", 1000, "")
        ))
        .start()?;
    let sink = collector.sink();
    let read_first = || Ok(messages(&sink.container_lines(&first, "stdout")?));
    collector.expect_exactly(
        DELIVERY_TIMEOUT,
        vec![Expect::new(
            "stdout of the first container",
            numbered("first", 1000),
            read_first,
        )],
    )?;

    let status = collector.sigterm(EXIT_BOUND)?;
    ensure!(
        status.success(),
        "the collector exited with {status} after SIGTERM; {}",
        collector.stderr_tail()
    );

    collector.restart()?;
    // A container started after the restart proves the new process is at work.
    let second = TestContainer::builder()
        .shell(format!(
            "{}; exec sleep 600",
            numbered_lines_script("second", 100, "")
        ))
        .start()?;
    collector.expect_exactly(
        DELIVERY_TIMEOUT,
        vec![
            Expect::new(
                "stdout of the second container",
                numbered("second", 100),
                || Ok(messages(&sink.container_lines(&second, "stdout")?)),
            ),
            Expect::new(
                "stdout of the first container after the restart (nothing re-sent)",
                numbered("first", 1000),
                read_first,
            ),
        ],
    )
}
