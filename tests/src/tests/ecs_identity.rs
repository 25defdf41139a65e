//! Scenario a: containers of an ECS task land under `tasks/<task id>/<container name>/`
//! (stdout, stderr and a declared file), a plain container under
//! `containers/<docker name>-<short id>/`; and the task identity also comes from the ECS
//! agent when a container has no labels.

use std::fs;

use anyhow::{Context as _, Result, ensure};

use super::DELIVERY_TIMEOUT;
use crate::{
    CollectorProcess, Expect, FakeEcsAgent, TestContainer, TestTask, messages, numbered,
    numbered_lines_script,
};

/// Lines per output stream and per declared file.
const N: usize = 500;

/// a. Two containers of one task (`com.amazonaws.ecs.*` labels, `--cgroup-parent
/// /ecs/<task id>`, a declared file on a bind mount) and a plain container: every line once,
/// in order, under the right task and container, with Docker's own timestamps.
#[test]
fn task_containers_and_a_plain_container_land_under_their_names() -> Result<()> {
    let agent = FakeEcsAgent::start()?;
    let mut collector = CollectorProcess::builder().ecs_agent(&agent).start()?;
    let task = TestTask::new("webapp");

    let mut members = Vec::new();
    for name in ["web", "worker"] {
        let app_dir = collector.dir().join(format!("app-{name}"));
        fs::create_dir(&app_dir).with_context(|| format!("create {}", app_dir.display()))?;
        let script = format!(
            "i=1; while [ $i -le {N} ]; do echo \"{name} out $i\"; echo \"{name} err $i\" >&2; \
             echo \"{name} file $i\" >> /var/log/app/app.log; i=$((i+1)); done; exec sleep 600"
        );
        let container = TestContainer::builder()
            .ecs(&task, name)
            .label("collector.logs", "/var/log/app/*.log")
            .bind(&app_dir, "/var/log/app")
            .shell(script)
            .create()?;
        agent.add_container(&task, name, &container);
        container.start()?;
        members.push((name, container));
    }
    let plain = TestContainer::builder()
        .shell(format!(
            "{}; {}; exec sleep 600",
            numbered_lines_script("plain out", N, ""),
            numbered_lines_script("plain err", N, ">&2")
        ))
        .start()?;

    let sink = collector.sink();
    let id = &task.task_id;
    let mut expectations = Vec::new();
    for (name, _) in &members {
        for (stream, kind) in [("stdout", "out"), ("stderr", "err")] {
            expectations.push(Expect::new(
                format!("{stream} of {name} in task {id}"),
                numbered(&format!("{name} {kind}"), N),
                || Ok(messages(&sink.lines(id, name, stream)?)),
            ));
        }
        expectations.push(Expect::new(
            format!("declared file /var/log/app/app.log of {name} in task {id}"),
            numbered(&format!("{name} file"), N),
            || {
                Ok(messages(&sink.file_lines(
                    id,
                    name,
                    "/var/log/app/app.log",
                )?))
            },
        ));
    }
    for (stream, kind) in [("stdout", "out"), ("stderr", "err")] {
        expectations.push(Expect::new(
            format!("{stream} of the plain container {}", plain.name()),
            numbered(&format!("plain {kind}"), N),
            || Ok(messages(&sink.container_lines(&plain, stream)?)),
        ));
    }
    collector.expect_exactly(DELIVERY_TIMEOUT, expectations)?;

    // Times are Docker's own: what `docker logs -t` shows, line by line.
    for (name, container) in &members {
        let (stdout, stderr) = container.docker_logs()?;
        ensure!(
            sink.lines(id, name, "stdout")? == stdout,
            "stdout times of {name} differ from docker logs -t"
        );
        ensure!(
            sink.lines(id, name, "stderr")? == stderr,
            "stderr times of {name} differ from docker logs -t"
        );
        let misfiled = sink.container_dir(container);
        ensure!(
            !misfiled.exists(),
            "task container {name} also written as a plain container at {}",
            misfiled.display()
        );
    }
    let (stdout, stderr) = plain.docker_logs()?;
    ensure!(
        sink.container_lines(&plain, "stdout")? == stdout,
        "stdout times of the plain container differ"
    );
    ensure!(
        sink.container_lines(&plain, "stderr")? == stderr,
        "stderr times of the plain container differ"
    );
    ensure!(
        sink.task_container_names(id)? == ["web", "worker"],
        "task {id} has container directories {:?}",
        sink.task_container_names(id)?
    );
    Ok(())
}

/// A container in a task's cgroup (`/ecs/<task id>/<id>`) without any ECS label: the ECS
/// agent's `/v1/tasks?dockerid=` names its container, and its lines land under that name.
#[test]
fn task_identity_comes_from_the_ecs_agent_without_labels() -> Result<()> {
    const LINES: usize = 100;
    let agent = FakeEcsAgent::start()?;
    let mut collector = CollectorProcess::builder().ecs_agent(&agent).start()?;
    let task = TestTask::new("agentonly");
    let container = TestContainer::builder()
        .cgroup_parent(task.cgroup_parent())
        .name(task.docker_name("sidecar"))
        .shell(format!(
            "{}; exec sleep 600",
            numbered_lines_script("sidecar out", LINES, "")
        ))
        .create()?;
    agent.add_container(&task, "sidecar", &container);
    container.start()?;

    let sink = collector.sink();
    collector.expect_exactly(
        DELIVERY_TIMEOUT,
        vec![Expect::new(
            format!(
                "stdout of sidecar in task {} (named by the agent)",
                task.task_id
            ),
            numbered("sidecar out", LINES),
            || Ok(messages(&sink.lines(&task.task_id, "sidecar", "stdout")?)),
        )],
    )?;
    let asked = agent.requests().iter().any(|target| {
        target
            .split_once("dockerid=")
            .map(|(_, id)| id.split('&').next().unwrap_or_default())
            .is_some_and(|id| !id.is_empty() && container.id().starts_with(id))
    });
    ensure!(
        asked,
        "the agent was never asked about {}: {:?}",
        container.id(),
        agent.requests()
    );
    Ok(())
}
