//! Scenario i: no configuration at all.

use anyhow::{Result, ensure};

use super::DELIVERY_TIMEOUT;
use crate::{CollectorProcess, Expect, TestContainer, messages, numbered, numbered_lines_script};

/// i. `collector run --data-dir <tmp>` without a config file starts on its embedded defaults
/// and collects a container's lines into the default local sink, `<data dir>/logs`, keeping
/// its state in `<data dir>/state.db`.
#[test]
fn embedded_defaults_collect_into_the_local_sink() -> Result<()> {
    let mut collector = CollectorProcess::builder().without_config().start()?;
    let container = TestContainer::builder()
        .shell(format!(
            "{}; exec sleep 600",
            numbered_lines_script("default", 100, "")
        ))
        .start()?;
    let sink = collector.sink();
    collector.expect_exactly(
        DELIVERY_TIMEOUT,
        vec![Expect::new(
            format!(
                "stdout of {} in {}",
                container.name(),
                sink.root().display()
            ),
            numbered("default", 100),
            || Ok(messages(&sink.container_lines(&container, "stdout")?)),
        )],
    )?;
    let state = collector.data_dir().join("state.db");
    ensure!(state.is_file(), "no state database at {}", state.display());
    Ok(())
}
