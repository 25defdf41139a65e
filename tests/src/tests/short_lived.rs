//! Scenario d: containers that start and exit within 100 ms.

use std::time::Duration;

use anyhow::{Result, ensure};

use super::DELIVERY_TIMEOUT;
use crate::{
    CollectorProcess, Expect, FakeEcsAgent, TestContainer, TestTask, messages, numbered,
    numbered_lines_script,
};

/// Lines each job prints on stdout.
const LINES: usize = 5;

/// d. Three jobs of one task `echo` a few lines and exit at once: all lines arrive, under
/// the task and each job's container name, although the containers are gone before the
/// collector can look at their processes.
#[test]
fn lines_of_containers_that_exit_at_once_arrive() -> Result<()> {
    let agent = FakeEcsAgent::start()?;
    let mut collector = CollectorProcess::builder().ecs_agent(&agent).start()?;
    let task = TestTask::new("batchjob");
    let mut jobs = Vec::new();
    for k in 1..=3 {
        let name = format!("job-{k}");
        let container = TestContainer::builder()
            .ecs(&task, &name)
            .shell(format!(
                "{}; echo \"{name} err\" >&2",
                numbered_lines_script(&format!("{name} line"), LINES, "")
            ))
            .create()?;
        agent.add_container(&task, &name, &container);
        container.start()?;
        jobs.push((name, container));
    }
    for (name, container) in &jobs {
        ensure!(
            container.wait_exit(Duration::from_secs(10))? == 0,
            "{name} failed"
        );
        let ran = container.run_time()?;
        ensure!(
            ran < Duration::from_millis(100),
            "premise: {name} ran {ran:?}, not under 100 ms"
        );
    }

    let sink = collector.sink();
    let id = &task.task_id;
    let mut expectations = Vec::new();
    for (name, _) in &jobs {
        expectations.push(Expect::new(
            format!("stdout of {name} in task {id}"),
            numbered(&format!("{name} line"), LINES),
            || Ok(messages(&sink.lines(id, name, "stdout")?)),
        ));
        expectations.push(Expect::new(
            format!("stderr of {name} in task {id}"),
            vec![format!("{name} err")],
            || Ok(messages(&sink.lines(id, name, "stderr")?)),
        ));
    }
    collector.expect_exactly(DELIVERY_TIMEOUT, expectations)
}
