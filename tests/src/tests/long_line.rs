//! Scenario f: a 1 MiB line, which Docker's json-file driver splits into 16 KiB pieces.

use std::fs;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};

use super::DELIVERY_TIMEOUT;
use crate::{CollectorProcess, Expect, TestContainer, messages};

/// The long line's length.
const LEN: usize = 1 << 20;
/// Its repeating text: 17 bytes, so no two 16 KiB pieces are alike and a misordered
/// reassembly shows.
const PATTERN: &str = "0123456789abcdefg";

/// f. A 1 MiB line between two short ones arrives as one line, byte for byte.
#[test]
fn a_one_mebibyte_line_arrives_whole() -> Result<()> {
    let mut collector = CollectorProcess::start()?;
    let container = TestContainer::builder()
        .shell(format!(
            "echo before; yes {PATTERN} | tr -d '\\n' | head -c {LEN}; echo; echo after"
        ))
        .start()?;
    let long: String = PATTERN.chars().cycle().take(LEN).collect();

    let sink = collector.sink();
    collector.expect_exactly(
        DELIVERY_TIMEOUT,
        vec![Expect::new(
            format!("stdout of {}", container.name()),
            vec!["before".to_owned(), long, "after".to_owned()],
            || Ok(messages(&sink.container_lines(&container, "stdout")?)),
        )],
    )?;

    // The premise: Docker wrote the line in pieces (64 of 16 KiB, plus the two short lines).
    container.wait_exit(Duration::from_secs(10))?;
    let log = container.log_path()?;
    let pieces = fs::read_to_string(&log)
        .with_context(|| format!("read {}", log.display()))?
        .lines()
        .count();
    ensure!(
        pieces >= 66,
        "premise: Docker wrote {pieces} json lines, not the 16 KiB pieces"
    );
    Ok(())
}
