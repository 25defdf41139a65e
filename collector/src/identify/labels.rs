//! Container labels -> ECS task facts, grouping, and the log files a container declares.
//!
//! Labels cost nothing to read (they come with `config.v2.json` or inspect), so they are the
//! first ECS source after the cgroup path. The ECS agent sets the `com.amazonaws.ecs.*` labels
//! on every task container it creates, last, so they override user `dockerLabels` with the
//! same key (`agent/engine/docker_task_engine.go`, `labelPrefix = "com.amazonaws.ecs."`).

use std::collections::BTreeMap;
use std::path::{Component, Path};

use super::{CgroupHint, EcsTask, Group, TaskArn};

/// Full task ARN, set by the ECS agent on every task container.
pub const ECS_TASK_ARN: &str = "com.amazonaws.ecs.task-arn";
/// Container name from the task definition (not the Docker name).
pub const ECS_CONTAINER_NAME: &str = "com.amazonaws.ecs.container-name";
/// Task definition family.
pub const ECS_TASK_DEFINITION_FAMILY: &str = "com.amazonaws.ecs.task-definition-family";
/// Task definition revision, as a decimal *string* (`"24"`).
pub const ECS_TASK_DEFINITION_VERSION: &str = "com.amazonaws.ecs.task-definition-version";
/// The agent's `ECS_CLUSTER`: a short name on EC2 (`default`), a full cluster ARN on Fargate.
pub const ECS_CLUSTER: &str = "com.amazonaws.ecs.cluster";
/// Docker Compose project name.
pub const COMPOSE_PROJECT: &str = "com.docker.compose.project";
/// Docker Compose service name.
pub const COMPOSE_SERVICE: &str = "com.docker.compose.service";
/// Kubernetes pod name (set by dockershim / cri-dockerd on pod containers).
pub const KUBERNETES_POD_NAME: &str = "io.kubernetes.pod.name";
/// Kubernetes pod namespace.
pub const KUBERNETES_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
/// Kubernetes container name within the pod.
pub const KUBERNETES_CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// Our own label: comma-separated globs of absolute paths *inside* the container whose files
/// the collector tails in addition to the container's stdout/stderr log.
pub const COLLECTOR_LOGS: &str = "collector.logs";
/// Our own label: `companion` marks the task's companion shim (`collector taskdef inject`
/// sets it). The drain barrier does not wait for that container (it is the one asking), and
/// the S3 task archive leaves it out (it runs until after the archive is complete).
pub const COLLECTOR_ROLE: &str = "collector.role";
/// The value of [`COLLECTOR_ROLE`] on the companion shim.
pub const ROLE_COMPANION: &str = "companion";

/// Reads the `com.amazonaws.ecs.*` labels. Returns `None` when none of them is present (not an
/// ECS container).
///
/// Each field is filled only when its label is present and valid: a revision that is not a
/// decimal `u32` stays `None`, an ARN that does not parse leaves `task_arn` and `task_id`
/// `None`, and the rest is still returned.
pub fn ecs_from_labels(labels: &BTreeMap<String, String>) -> Option<EcsTask> {
    let get = |key: &str| labels.get(key).map(|v| v.trim()).filter(|v| !v.is_empty());
    let arn = get(ECS_TASK_ARN);
    let cluster = get(ECS_CLUSTER);
    let family = get(ECS_TASK_DEFINITION_FAMILY);
    let version = get(ECS_TASK_DEFINITION_VERSION);
    let container_name = get(ECS_CONTAINER_NAME);
    if [arn, cluster, family, version, container_name]
        .iter()
        .all(Option::is_none)
    {
        return None;
    }
    let task_arn = arn.and_then(TaskArn::parse);
    Some(EcsTask {
        task_id: task_arn.as_ref().map(|a| a.task_id().clone()),
        task_arn,
        cluster: cluster.map(str::to_owned),
        family: family.map(str::to_owned),
        revision: version.and_then(|v| v.parse::<u32>().ok()),
        container_name: container_name.map(str::to_owned),
    })
}

/// Decides how a container is grouped, strongest evidence first:
/// 1. an ECS task, when a task id is known from `ecs`, from the labels or from the cgroup path
///    (`/ecs/<task-id>/<id>`);
/// 2. a Compose project (`com.docker.compose.project`);
/// 3. a Kubernetes pod, from the pod labels or, failing those, the kubepods cgroup slice's UID;
/// 4. otherwise the container stands alone.
pub fn group_of(
    labels: &BTreeMap<String, String>,
    hint: Option<&CgroupHint>,
    ecs: Option<&EcsTask>,
) -> Group {
    let from_ecs = |e: &EcsTask| {
        e.task_id
            .clone()
            .or_else(|| e.task_arn.as_ref().map(|a| a.task_id().clone()))
    };
    let task_id = ecs
        .and_then(from_ecs)
        .or_else(|| ecs_from_labels(labels).as_ref().and_then(from_ecs))
        .or_else(|| hint.and_then(|h| h.task_id.clone()));
    if let Some(task_id) = task_id {
        return Group::EcsTask { task_id };
    }
    let non_empty = |key: &str| labels.get(key).filter(|v| !v.is_empty()).cloned();
    if let Some(project) = non_empty(COMPOSE_PROJECT) {
        return Group::Compose {
            project,
            service: non_empty(COMPOSE_SERVICE),
        };
    }
    if let Some(pod) = non_empty(KUBERNETES_POD_NAME) {
        return Group::Pod {
            namespace: non_empty(KUBERNETES_POD_NAMESPACE),
            pod,
        };
    }
    if let Some(uid) = hint.and_then(|h| h.pod_uid.clone()) {
        return Group::Pod {
            namespace: None,
            pod: uid,
        };
    }
    Group::Standalone
}

/// The result of reading the `collector.logs` label.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeclaredLogs {
    /// Accepted globs, absolute paths inside the container, in label order, without
    /// duplicates.
    pub globs: Vec<String>,
    /// Entries that were refused, with the reason, so the caller can report them to the
    /// container's owner instead of silently tailing nothing.
    pub rejected: Vec<(String, &'static str)>,
}

/// Why an entry of `collector.logs` was refused: an empty entry (`a,,b` or a trailing comma).
pub const REJECT_EMPTY: &str = "empty entry";
/// Why an entry was refused: a relative path has no meaning inside another mount namespace.
pub const REJECT_RELATIVE: &str = "not an absolute path";
/// Why an entry was refused: `..` could climb out of the mount the path resolves through and
/// reach host files the container does not own.
pub const REJECT_PARENT_DIR: &str = "contains a `..` component";

/// Parses the `collector.logs` label: comma-separated globs of absolute paths inside the
/// container, spaces around entries trimmed.
///
/// A missing or blank label declares nothing (and rejects nothing).
pub fn declared_log_globs(labels: &BTreeMap<String, String>) -> DeclaredLogs {
    let mut out = DeclaredLogs::default();
    let Some(value) = labels.get(COLLECTOR_LOGS) else {
        return out;
    };
    if value.trim().is_empty() {
        return out;
    }
    for entry in value.split(',').map(str::trim) {
        let why = if entry.is_empty() {
            Some(REJECT_EMPTY)
        } else if !entry.starts_with('/') {
            Some(REJECT_RELATIVE)
        } else if Path::new(entry)
            .components()
            .any(|c| matches!(c, Component::ParentDir))
        {
            Some(REJECT_PARENT_DIR)
        } else {
            None
        };
        match why {
            Some(why) => out.rejected.push((entry.to_owned(), why)),
            None if out.globs.iter().any(|g| g == entry) => {}
            None => out.globs.push(entry.to_owned()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identify::{ContainerId, Runtime, TaskId};

    fn fixture(name: &str) -> BTreeMap<String, String> {
        let path = format!("{}/testdata/ecs/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn hint(task_id: Option<&str>, pod_uid: Option<&str>) -> CgroupHint {
        CgroupHint {
            container_id: ContainerId::parse(&"a".repeat(64)).unwrap(),
            task_id: task_id.map(|t| TaskId::parse(t).unwrap()),
            pod_uid: pod_uid.map(str::to_owned),
            runtime: Runtime::Docker,
        }
    }

    #[test]
    fn ecs_labels_from_fixtures() {
        let cases = [
            (
                "docker-labels-ec2.json",
                "arn:aws:ecs:us-west-2:111122223333:task/default/8f03e41243824aea923aca126495f665",
                "8f03e41243824aea923aca126495f665",
                "default",
                24,
            ),
            (
                "docker-labels-fargate.json",
                "arn:aws:ecs:us-west-2:111122223333:task/default/cd189a933e5849daa93386466019ab50",
                "cd189a933e5849daa93386466019ab50",
                "arn:aws:ecs:us-west-2:111122223333:cluster/default",
                2,
            ),
        ];
        for (file, arn, task_id, cluster, revision) in cases {
            let ecs = ecs_from_labels(&fixture(file)).unwrap();
            assert_eq!(ecs.task_arn.as_ref().unwrap().as_str(), arn, "{file}");
            assert_eq!(ecs.task_id.as_ref().unwrap().as_str(), task_id, "{file}");
            assert_eq!(ecs.cluster.as_deref(), Some(cluster), "{file}");
            assert_eq!(ecs.family.as_deref(), Some("curltest"), "{file}");
            assert_eq!(ecs.revision, Some(revision), "{file}");
            assert_eq!(ecs.container_name.as_deref(), Some("curl"), "{file}");
        }
    }

    #[test]
    fn ecs_labels_partial_and_invalid() {
        let good_arn =
            "arn:aws:ecs:us-west-2:111122223333:task/default/8f03e41243824aea923aca126495f665";
        let cases: [(&str, BTreeMap<String, String>, Option<EcsTask>); 5] = [
            ("no ecs labels", labels(&[("foo", "bar")]), None),
            (
                "blank ecs labels only",
                labels(&[(ECS_TASK_ARN, " "), (ECS_CLUSTER, "")]),
                None,
            ),
            (
                "bad revision and bad arn keep the rest",
                labels(&[
                    (ECS_TASK_ARN, "arn:aws:ecs:us-west-2:1:service/x"),
                    (ECS_TASK_DEFINITION_VERSION, "latest"),
                    (ECS_TASK_DEFINITION_FAMILY, "web"),
                    (ECS_CONTAINER_NAME, "app"),
                ]),
                Some(EcsTask {
                    family: Some("web".into()),
                    container_name: Some("app".into()),
                    ..EcsTask::default()
                }),
            ),
            (
                "negative revision",
                labels(&[(ECS_TASK_DEFINITION_VERSION, "-1"), (ECS_CLUSTER, "c")]),
                Some(EcsTask {
                    cluster: Some("c".into()),
                    ..EcsTask::default()
                }),
            ),
            (
                "arn alone gives task id",
                labels(&[(ECS_TASK_ARN, good_arn)]),
                Some(EcsTask {
                    task_id: TaskId::parse("8f03e41243824aea923aca126495f665"),
                    task_arn: TaskArn::parse(good_arn),
                    ..EcsTask::default()
                }),
            ),
        ];
        for (name, labels, want) in cases {
            assert_eq!(ecs_from_labels(&labels), want, "{name}");
        }
    }

    #[test]
    fn grouping_prefers_ecs_then_compose_then_pod() {
        let task = "8f03e41243824aea923aca126495f665";
        let other_task = "cd189a933e5849daa93386466019ab50";
        let ecs_task = Group::EcsTask {
            task_id: TaskId::parse(task).unwrap(),
        };
        let compose = labels(&[(COMPOSE_PROJECT, "shop"), (COMPOSE_SERVICE, "db")]);
        let pod = labels(&[
            (KUBERNETES_POD_NAME, "web-0"),
            (KUBERNETES_POD_NAMESPACE, "prod"),
            (KUBERNETES_CONTAINER_NAME, "app"),
        ]);
        let mut ecs_and_compose = fixture("docker-labels-ec2.json");
        ecs_and_compose.extend(compose.clone());
        let explicit = EcsTask {
            task_id: TaskId::parse(other_task),
            ..EcsTask::default()
        };
        type Case<'a> = (
            &'a str,
            BTreeMap<String, String>,
            Option<CgroupHint>,
            Option<&'a EcsTask>,
            Group,
        );
        let cases: Vec<Case<'_>> = vec![
            (
                "ecs labels",
                fixture("docker-labels-ec2.json"),
                None,
                None,
                ecs_task.clone(),
            ),
            (
                "ecs labels beat compose",
                ecs_and_compose,
                None,
                None,
                ecs_task.clone(),
            ),
            (
                "cgroup hint task id",
                compose.clone(),
                Some(hint(Some(task), None)),
                None,
                ecs_task.clone(),
            ),
            (
                "explicit ecs beats labels",
                fixture("docker-labels-ec2.json"),
                None,
                Some(&explicit),
                Group::EcsTask {
                    task_id: TaskId::parse(other_task).unwrap(),
                },
            ),
            (
                "compose",
                compose.clone(),
                Some(hint(None, Some("uid-1"))),
                None,
                Group::Compose {
                    project: "shop".into(),
                    service: Some("db".into()),
                },
            ),
            (
                "compose without service",
                labels(&[(COMPOSE_PROJECT, "shop")]),
                None,
                None,
                Group::Compose {
                    project: "shop".into(),
                    service: None,
                },
            ),
            (
                "pod labels beat hint uid",
                pod,
                Some(hint(None, Some("uid-1"))),
                None,
                Group::Pod {
                    namespace: Some("prod".into()),
                    pod: "web-0".into(),
                },
            ),
            (
                "pod from cgroup hint",
                BTreeMap::new(),
                Some(hint(None, Some("uid-1"))),
                None,
                Group::Pod {
                    namespace: None,
                    pod: "uid-1".into(),
                },
            ),
            (
                "nothing",
                labels(&[("a", "b")]),
                Some(hint(None, None)),
                None,
                Group::Standalone,
            ),
            (
                "empty compose label",
                labels(&[(COMPOSE_PROJECT, "")]),
                None,
                None,
                Group::Standalone,
            ),
        ];
        for (name, labels, hint, ecs, want) in cases {
            assert_eq!(group_of(&labels, hint.as_ref(), ecs), want, "{name}");
        }
    }

    #[test]
    fn declared_logs() {
        type Case<'a> = (
            &'a str,
            Option<&'a str>,
            &'a [&'a str],
            &'a [(&'a str, &'a str)],
        );
        let cases: [Case<'_>; 7] = [
            ("absent", None, &[], &[]),
            ("blank", Some("  "), &[], &[]),
            (
                "trimmed list",
                Some(" /var/log/app/*.log , /data/out.log"),
                &["/var/log/app/*.log", "/data/out.log"],
                &[],
            ),
            (
                "relative",
                Some("logs/*.log,/ok"),
                &["/ok"],
                &[("logs/*.log", REJECT_RELATIVE)],
            ),
            (
                "parent dir",
                Some("/var/log/../../etc/shadow,/var/log/a..b"),
                &["/var/log/a..b"],
                &[("/var/log/../../etc/shadow", REJECT_PARENT_DIR)],
            ),
            (
                "empty entries",
                Some("/a,, ,/b,"),
                &["/a", "/b"],
                &[("", REJECT_EMPTY), ("", REJECT_EMPTY), ("", REJECT_EMPTY)],
            ),
            ("duplicates kept once", Some("/a,/a"), &["/a"], &[]),
        ];
        for (name, value, globs, rejected) in cases {
            let labels = match value {
                Some(v) => labels(&[(COLLECTOR_LOGS, v)]),
                None => BTreeMap::new(),
            };
            let got = declared_log_globs(&labels);
            assert_eq!(got.globs, globs, "{name}");
            let rejected: Vec<(String, &str)> = rejected
                .iter()
                .map(|(e, w)| ((*e).to_owned(), *w))
                .collect();
            assert_eq!(got.rejected, rejected, "{name}");
        }
    }
}
