//! Where a source's lines go in the local directory tree.
//!
//! ```text
//! tasks/<task id>/<container name>/{stdout,stderr}.log      ECS task containers
//! compose/<project>/<service>-<short id>/...                Docker Compose
//! pods/<namespace>_<pod>/<container>/...                    Kubernetes pods
//! containers/<docker name>-<short id>/...                   anything else
//! .../files/<path inside the container>                     declared files
//! .../lifecycle.log                                          how each run ended (collector)
//! ```
//! One directory per task, so `grep -r` over a task is one path; names are sanitised so a
//! label cannot climb out of the tree.

use std::path::{Component, Path, PathBuf};

use crate::batch::SourceKind;
use crate::identify::{ContainerIdentity, Group};
use crate::tail::StdStream;

/// The directory (relative to the sink root) of a container.
pub fn container_dir(identity: &ContainerIdentity) -> PathBuf {
    let short = identity.container_id.short();
    let docker_name = identity.docker_name.as_deref().map(sanitize);
    let with_short = |name: Option<String>| match name {
        Some(n) => format!("{n}-{short}"),
        None => short.to_owned(),
    };
    match &identity.group {
        Group::EcsTask { task_id } => {
            let name = identity
                .ecs
                .as_ref()
                .and_then(|e| e.container_name.as_deref())
                .map(sanitize);
            let name = name.unwrap_or_else(|| with_short(docker_name));
            Path::new("tasks")
                .join(sanitize(task_id.as_str()))
                .join(name)
        }
        Group::Compose { project, service } => {
            let name = service.as_deref().map(sanitize).or(docker_name);
            Path::new("compose")
                .join(sanitize(project))
                .join(with_short(name))
        }
        Group::Pod { namespace, pod } => {
            let pod_dir = match namespace {
                Some(ns) => format!("{}_{}", sanitize(ns), sanitize(pod)),
                None => sanitize(pod),
            };
            let name = identity
                .labels
                .get("io.kubernetes.container.name")
                .map(|s| sanitize(s));
            Path::new("pods")
                .join(pod_dir)
                .join(name.unwrap_or_else(|| with_short(docker_name)))
        }
        Group::Standalone => Path::new("containers").join(with_short(docker_name)),
    }
}

/// The file (relative to the container's directory) that holds a record's line.
pub fn file_in_container_dir(kind: &SourceKind, stream: Option<StdStream>) -> PathBuf {
    match kind {
        SourceKind::ContainerOutput => match stream {
            Some(StdStream::Stderr) => PathBuf::from("stderr.log"),
            _ => PathBuf::from("stdout.log"),
        },
        SourceKind::DeclaredFile { container_path } => {
            let mut p = PathBuf::from("files");
            for c in container_path.components() {
                if let Component::Normal(part) = c {
                    p.push(sanitize(&part.to_string_lossy()));
                }
            }
            p
        }
        SourceKind::Lifecycle => PathBuf::from("lifecycle.log"),
        SourceKind::Metrics => PathBuf::from("metrics.log"),
    }
}

/// A path component safe to create: no separators, no `.`/`..`, no control characters.
fn sanitize(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    match cleaned.as_str() {
        "" => "_".to_owned(),
        "." | ".." => cleaned.replace('.', "_"),
        _ => cleaned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identify::{ContainerId, EcsTask, TaskId};

    fn identity(group: Group, ecs_name: Option<&str>, docker: Option<&str>) -> ContainerIdentity {
        let mut id = ContainerIdentity::new(
            ContainerId::parse(&format!("abcdef012345{}", "0".repeat(52))).unwrap(),
        );
        id.group = group;
        id.docker_name = docker.map(str::to_owned);
        id.ecs = ecs_name.map(|n| EcsTask {
            container_name: Some(n.to_owned()),
            ..Default::default()
        });
        id
    }

    #[test]
    fn directories_per_group() {
        let task = TaskId::parse(&"f".repeat(32)).unwrap();
        let cases = [
            (
                identity(
                    Group::EcsTask {
                        task_id: task.clone(),
                    },
                    Some("web"),
                    Some("ecs-x"),
                ),
                format!("tasks/{}/web", "f".repeat(32)),
            ),
            (
                identity(Group::EcsTask { task_id: task }, None, None),
                format!("tasks/{}/abcdef012345", "f".repeat(32)),
            ),
            (
                identity(
                    Group::Compose {
                        project: "shop".into(),
                        service: Some("db".into()),
                    },
                    None,
                    Some("shop-db-1"),
                ),
                "compose/shop/db-abcdef012345".into(),
            ),
            (
                identity(
                    Group::Pod {
                        namespace: Some("ns".into()),
                        pod: "p".into(),
                    },
                    None,
                    Some("k8s_x"),
                ),
                "pods/ns_p/k8s_x-abcdef012345".into(),
            ),
            (
                identity(Group::Standalone, None, Some("nginx")),
                "containers/nginx-abcdef012345".into(),
            ),
            (
                identity(Group::Standalone, None, Some("../../etc")),
                "containers/.._.._etc-abcdef012345".into(),
            ),
        ];
        for (id, want) in cases {
            assert_eq!(container_dir(&id), PathBuf::from(&want));
        }
    }

    #[test]
    fn declared_files_stay_inside_the_tree() {
        let k = |p: &str| SourceKind::DeclaredFile {
            container_path: PathBuf::from(p),
        };
        assert_eq!(
            file_in_container_dir(&k("/var/log/app/a.log"), None),
            PathBuf::from("files/var/log/app/a.log")
        );
        assert_eq!(
            file_in_container_dir(&k("/var/../../etc/passwd"), None),
            PathBuf::from("files/var/etc/passwd")
        );
        assert_eq!(
            file_in_container_dir(&SourceKind::ContainerOutput, Some(StdStream::Stderr)),
            PathBuf::from("stderr.log")
        );
    }
}
