//! Scenario e: a container starts while the collector cannot reach Docker's API.

use std::os::unix::fs::symlink;

use anyhow::{Context as _, Result, ensure};

use super::{DELIVERY_TIMEOUT, WAIT_FOR_GO, control_dir, go};
use crate::{
    CollectorProcess, Expect, FakeEcsAgent, TestContainer, TestTask, messages, numbered,
    numbered_lines_script,
};

/// Lines written before and after Docker becomes reachable.
const N: usize = 200;

/// e. The collector's `docker_socket` does not exist when an ECS container starts: its lines
/// still arrive under its task (identity from the cgroup path `/ecs/<task id>/<id>` and
/// Docker's files; the fake agent knows nothing). Once the socket appears (a symlink to the
/// real one) the identity is complete: what the container writes then is under its container
/// name, and every line of the task is there exactly once.
#[test]
fn lines_arrive_while_docker_is_unreachable() -> Result<()> {
    let agent = FakeEcsAgent::start()?;
    let sockets = tempfile::tempdir().context("create a socket directory")?;
    let socket = sockets.path().join("docker.sock");
    let mut collector = CollectorProcess::builder()
        .ecs_agent(&agent)
        .docker_socket(&socket)
        .start()?;
    let ctl = control_dir(&collector)?;
    let task = TestTask::new("nodocker");
    let _container = TestContainer::builder()
        .ecs(&task, "app")
        .bind(&ctl, "/ctl")
        .shell(format!(
            "{}; {WAIT_FOR_GO}; {}; exec sleep 600",
            numbered_lines_script("app before", N, ""),
            numbered_lines_script("app after", N, "")
        ))
        .start()?;

    let sink = collector.sink();
    let id = &task.task_id;
    // Every stdout line of the task, whatever container directory it is in, sorted.
    let task_stdout = || -> Result<Vec<String>> {
        let mut all: Vec<String> = sink
            .task_lines(id, "stdout")?
            .iter()
            .flat_map(|(_, lines)| messages(lines))
            .collect();
        all.sort();
        Ok(all)
    };
    let sorted = |mut lines: Vec<String>| {
        lines.sort();
        lines
    };
    collector.expect_exactly(
        DELIVERY_TIMEOUT,
        vec![Expect::new(
            format!("stdout of task {id} while Docker is unreachable"),
            sorted(numbered("app before", N)),
            task_stdout,
        )],
    )?;
    ensure!(!socket.exists(), "premise: the socket exists already");

    symlink("/var/run/docker.sock", &socket).context("link the Docker socket")?;
    go(&ctl)?;
    let mut everything = numbered("app before", N);
    everything.extend(numbered("app after", N));
    collector.expect_exactly(
        DELIVERY_TIMEOUT,
        vec![
            Expect::new(
                format!("lines written after Docker became reachable, under app in task {id}"),
                numbered("app after", N),
                || {
                    Ok(messages(&sink.lines(id, "app", "stdout")?)
                        .into_iter()
                        .filter(|m| m.starts_with("app after"))
                        .collect())
                },
            ),
            Expect::new(
                format!("stdout of task {id}"),
                sorted(everything),
                task_stdout,
            ),
        ],
    )
}
