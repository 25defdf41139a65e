//! The ECS payloads: the agent's introspection API (`/v1/metadata`, `/v1/tasks`,
//! `/v1/tasks?dockerid=`), task metadata v4 (task and container), as the collector reads them,
//! and the companion's reading of task metadata.
//!
//! Beyond "does not panic": a payload that parses serialises and parses back to the same
//! value (the collector stores these), and the identity built from a task keeps the task id
//! of its ARN and the name of the container asked for.

#![no_main]

use std::fmt::Debug;

use collector::identify::ContainerId;
use collector::identify::ecs_agent::{
    AgentMetadata, AgentTask, AgentTasks, TmdsContainer, TmdsTask,
};
use collector::identify::{EcsTask, TaskArn};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn round_trip<T: DeserializeOwned + Serialize + PartialEq + Debug>(data: &[u8]) -> Option<T> {
    let value: T = serde_json::from_slice(data).ok()?;
    let text = serde_json::to_vec(&value).expect("a parsed payload serialises");
    let again: T = serde_json::from_slice(&text).unwrap_or_else(|e| {
        panic!(
            "{} does not parse back: {e}",
            String::from_utf8_lossy(&text)
        )
    });
    assert_eq!(again, value);
    Some(value)
}

fn check_identity(task: &EcsTask, arn: &str, container_name: Option<&str>) {
    let parsed = TaskArn::parse(arn);
    assert_eq!(task.task_arn, parsed, "{arn:?}");
    assert_eq!(task.task_id.as_ref(), parsed.as_ref().map(TaskArn::task_id));
    let name = container_name.filter(|n| !n.is_empty());
    assert_eq!(task.container_name.as_deref(), name);
    if let Some(family) = &task.family {
        assert!(!family.is_empty());
    }
}

fn check_agent_task(task: &AgentTask) {
    for c in &task.containers {
        if let Some(id) = ContainerId::parse(&c.docker_id) {
            let first = task.containers.iter().find(|o| o.docker_id == c.docker_id);
            let name = first.and_then(|o| o.name.as_deref());
            check_identity(&task.ecs_task(&id, None), &task.arn, name);
            let with_cluster = task.ecs_task(&id, Some("c"));
            assert_eq!(with_cluster.cluster.as_deref(), Some("c"));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<AgentMetadata>(data);
    if let Some(tasks) = round_trip::<AgentTasks>(data) {
        tasks.tasks.iter().for_each(check_agent_task);
    }
    if let Some(task) = round_trip::<AgentTask>(data) {
        check_agent_task(&task);
    }
    if let Some(task) = round_trip::<TmdsTask>(data) {
        for c in &task.containers {
            if let Some(id) = ContainerId::parse(&c.docker_id) {
                let first = task.containers.iter().find(|o| o.docker_id == c.docker_id);
                let name = first.and_then(|o| o.name.as_deref());
                check_identity(&task.ecs_task(&id), &task.task_arn, name);
            }
        }
    }
    round_trip::<TmdsContainer>(data);
    let _ = companion::identity::tmds::parse_task(data);
    let _ = companion::identity::tmds::parse_container(data);
});
