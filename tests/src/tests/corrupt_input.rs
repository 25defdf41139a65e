//! Scenario h: a corrupt line in a json-file log is skipped; the lines after it arrive.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result, ensure};
use serde_json::json;

use super::DELIVERY_TIMEOUT;
use crate::time::format_rfc3339_nanos;
use crate::{CollectorProcess, Expect, TestContainer, messages, numbered, numbered_lines_script};

/// h. A stopped container's json-file log gets, by hand, a cut-off JSON line, a line that is
/// not JSON, and then five valid lines. A collector started afterwards delivers the ten valid
/// lines exactly once and skips the two corrupt ones.
#[test]
fn corrupt_lines_are_skipped_and_later_lines_arrive() -> Result<()> {
    let container = TestContainer::builder()
        .shell(numbered_lines_script("line", 5, ""))
        .start()?;
    ensure!(
        container.wait_exit(Duration::from_secs(10))? == 0,
        "the container failed"
    );

    let log = container.log_path()?;
    let mut appended = String::from("{\"log\":\"cut off in the mid\n");
    appended.push_str("this line is not JSON at all\n");
    let now = SystemTime::now();
    for i in 6..=10u64 {
        let time = now + Duration::from_millis(i);
        let line = json!({
            "log": format!("line {i}\n"),
            "stream": "stdout",
            "time": format_rfc3339_nanos(time),
        });
        appended.push_str(&format!("{line}\n"));
    }
    OpenOptions::new()
        .append(true)
        .open(&log)
        .and_then(|mut file| file.write_all(appended.as_bytes()))
        .with_context(|| format!("append to {}", log.display()))?;

    let mut collector = CollectorProcess::start()?;
    let sink = collector.sink();
    collector.expect_exactly(
        DELIVERY_TIMEOUT,
        vec![Expect::new(
            format!("stdout of {} around the corrupt lines", container.name()),
            numbered("line", 10),
            || Ok(messages(&sink.container_lines(&container, "stdout")?)),
        )],
    )
}
