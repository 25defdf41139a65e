//! Who the companion is: its task and container, and the task's other containers.
//!
//! Informative only: the daemon authorises drain calls by the kernel's peer credentials of
//! the companion, not by what it claims. The names of the other containers go to the drain
//! calls as `expect`, so the daemon also waits for a container it has not discovered yet.

pub mod cgroup;
pub mod tmds;

use std::path::Path;

/// Prefix of the containers ECS adds to a task itself (the awsvpc pause container): not the
/// job's, never waited for.
const ECS_INTERNAL_PREFIX: &str = "~internal~";

/// What the companion learnt about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The task id, from the cgroup path or the ARN.
    pub task_id: Option<String>,
    /// The task ARN, from the metadata endpoint.
    pub task_arn: Option<String>,
    /// The companion's container id.
    pub container_id: Option<String>,
    /// The companion's container name.
    pub container_name: String,
    /// The task's other containers (by name), from the metadata endpoint; empty when unknown.
    pub others: Vec<String>,
}

/// Learns the identity from `cgroup_file` (normally `/proc/self/cgroup`) and, when given, the
/// metadata endpoint at `tmds_uri`. Every failure is a warning: the result holds what was
/// learnt.
pub async fn resolve(cgroup_file: &Path, tmds_uri: Option<&str>, own_name: &str) -> Identity {
    let mut identity = Identity {
        container_name: own_name.to_owned(),
        ..Identity::default()
    };
    match std::fs::read_to_string(cgroup_file) {
        Ok(contents) => {
            let id = cgroup::parse(&contents);
            identity.task_id = id.task_id;
            identity.container_id = id.container_id;
        }
        Err(err) => tracing::warn!(
            path = %cgroup_file.display(),
            error = %err,
            "Cannot read the cgroup file."
        ),
    }
    let Some(uri) = tmds_uri else {
        return identity;
    };
    let uri = uri.trim_end_matches('/');
    match tmds::get(uri)
        .await
        .map(|body| tmds::parse_container(&body))
    {
        Ok(Ok(own)) => {
            identity.container_name = own.name;
            if own.container_id.is_some() {
                identity.container_id = own.container_id;
            }
        }
        Ok(Err(err)) => warn_tmds(uri, &err),
        Err(err) => warn_tmds(uri, &err),
    }
    let task_uri = format!("{uri}/task");
    match tmds::get(&task_uri)
        .await
        .map(|body| tmds::parse_task(&body))
    {
        Ok(Ok(task)) => apply_task(&mut identity, task),
        Ok(Err(err)) => warn_tmds(&task_uri, &err),
        Err(err) => warn_tmds(&task_uri, &err),
    }
    identity
}

fn warn_tmds(uri: &str, err: &dyn std::error::Error) {
    tracing::warn!(uri, error = %crate::error_chain(err), "Task metadata unavailable.");
}

/// Takes the ARN and the other containers' names from the task's metadata.
fn apply_task(identity: &mut Identity, task: tmds::TaskMetadata) {
    if identity.task_id.is_none() {
        identity.task_id = task.task_arn.rsplit('/').next().map(str::to_owned);
    }
    identity.task_arn = Some(task.task_arn);
    identity.others = task
        .containers
        .into_iter()
        .filter(|c| {
            let own_id = identity.container_id.is_some() && c.container_id == identity.container_id;
            !own_id && c.name != identity.container_name && !c.name.starts_with(ECS_INTERNAL_PREFIX)
        })
        .map(|c| c.name)
        .collect();
}

impl Identity {
    /// Logs what is known, once at start.
    pub fn log(&self) {
        if self.task_id.is_none() && self.task_arn.is_none() {
            tracing::warn!(
                container_name = %self.container_name,
                "Own task unknown (no ECS cgroup path, no task metadata); the daemon identifies the task by peer credentials."
            );
        } else {
            tracing::info!(
                task_id = self.task_id.as_deref().unwrap_or("?"),
                task_arn = self.task_arn.as_deref().unwrap_or("?"),
                container_id = self.container_id.as_deref().unwrap_or("?"),
                container_name = %self.container_name,
                expect = %self.others.join(","),
                "Identity."
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_containers_exclude_self_and_ecs_internals() {
        let mut task = tmds::parse_task(include_bytes!(
            "../../testdata/tmds-v4-task-ec2-awsvpc.json"
        ))
        .unwrap();
        task.containers.push(tmds::ContainerMetadata {
            name: "collector-companion".into(),
            container_id: Some("c".repeat(64)),
        });
        task.containers.push(tmds::ContainerMetadata {
            name: "renamed-self".into(),
            container_id: Some("d".repeat(64)),
        });
        let mut identity = Identity {
            container_id: Some("d".repeat(64)),
            container_name: "collector-companion".into(),
            ..Identity::default()
        };
        apply_task(&mut identity, task);
        assert_eq!(identity.others, ["curl"]);
        assert_eq!(
            identity.task_id.as_deref(),
            Some("158d1c8083dd49d6b527399fd6414f5c")
        );
    }
}
