//! Destination names from templates over a container's identity (`/ecs/{family}`,
//! `ecs/{container_name}/{task_id}`), shared by the remote sinks.
//!
//! Placeholders: `{cluster}` (short name, also when the agent reports an ARN), `{family}`,
//! `{revision}`, `{task_id}`, `{container_name}` (task definition name, else Docker name,
//! else short id), `{container_id}` (full), `{stream}` (`stdout`, `stderr`, `file` for a
//! declared file, `lifecycle` for the collector's own records), `{file}` (a declared file's
//! path inside the container, `-` otherwise), `{instance_id}` and `{availability_zone}` (the
//! EC2 host's, from IMDSv2 at start; see [`HostFacts`]). A value that is not known (a
//! container outside ECS has no family; a host off EC2 has no instance id) renders as
//! `unknown`: never guessed, and never an empty name.

use crate::batch::SourceKind;
use crate::identify::{ContainerIdentity, Group};
use crate::tail::StdStream;

/// What a value renders as when the identity does not have it.
pub const UNKNOWN: &str = "unknown";

/// Errors of template parsing.
#[derive(Debug, thiserror::Error)]
pub enum NamingError {
    /// A `{name}` that is not a placeholder.
    #[error("unknown placeholder {{{name}}} (known: {known})", known = PLACEHOLDERS.join(", "))]
    UnknownPlaceholder {
        /// The name between the braces.
        name: String,
    },
    /// A `{` without its `}`.
    #[error("unclosed `{{` at byte {at}")]
    Unclosed {
        /// Where.
        at: usize,
    },
    /// The template is empty.
    #[error("must not be empty")]
    Empty,
}

/// The placeholder names.
pub const PLACEHOLDERS: &[&str] = &[
    "cluster",
    "family",
    "revision",
    "task_id",
    "container_name",
    "container_id",
    "stream",
    "file",
    "instance_id",
    "availability_zone",
];

/// Facts about the host, the same for every container: read once at start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// The EC2 instance id (`i-...`).
    pub instance_id: Option<String>,
    /// The EC2 availability zone (`eu-west-1a`).
    pub availability_zone: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Var {
    Cluster,
    Family,
    Revision,
    TaskId,
    ContainerName,
    ContainerId,
    Stream,
    File,
    InstanceId,
    AvailabilityZone,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(Var),
}

/// A parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// Which records a name is rendered for, besides the container: the source kind and, for
/// container output, the output stream.
#[derive(Clone, Copy, Debug)]
pub struct NameContext<'a> {
    /// The container.
    pub identity: &'a ContainerIdentity,
    /// The source.
    pub kind: &'a SourceKind,
    /// stdout or stderr, for container output.
    pub stream: Option<StdStream>,
    /// The host's facts.
    pub host: &'a HostFacts,
}

impl Template {
    /// Parses `text`.
    ///
    /// # Errors
    /// An unknown placeholder, an unclosed brace, or an empty template.
    pub fn parse(text: &str) -> Result<Self, NamingError> {
        if text.is_empty() {
            return Err(NamingError::Empty);
        }
        let mut parts = Vec::new();
        let mut rest = text;
        let mut offset = 0;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let Some(close) = rest[open..].find('}') else {
                return Err(NamingError::Unclosed { at: offset + open });
            };
            let name = &rest[open + 1..open + close];
            let var = match name {
                "cluster" => Var::Cluster,
                "family" => Var::Family,
                "revision" => Var::Revision,
                "task_id" => Var::TaskId,
                "container_name" => Var::ContainerName,
                "container_id" => Var::ContainerId,
                "stream" => Var::Stream,
                "file" => Var::File,
                "instance_id" => Var::InstanceId,
                "availability_zone" => Var::AvailabilityZone,
                _ => {
                    return Err(NamingError::UnknownPlaceholder {
                        name: name.to_owned(),
                    });
                }
            };
            parts.push(Part::Var(var));
            offset += open + close + 1;
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    /// True when the name depends on the output stream (so stdout and stderr may differ).
    pub fn uses_stream(&self) -> bool {
        self.parts.contains(&Part::Var(Var::Stream))
    }

    /// True when the name uses a fact of the host (so IMDS must be asked at start).
    pub fn uses_host(&self) -> bool {
        self.parts.iter().any(|p| {
            matches!(
                p,
                Part::Var(Var::InstanceId) | Part::Var(Var::AvailabilityZone)
            )
        })
    }

    /// The name for `cx`, unsanitised.
    pub fn render(&self, cx: &NameContext<'_>) -> String {
        let mut out = String::new();
        let ecs = cx.identity.ecs.as_ref();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Var(v) => {
                    let value: Option<String> = match v {
                        Var::Cluster => ecs.and_then(|e| e.cluster.as_deref()).map(|c| {
                            // Fargate reports the cluster ARN: `...:cluster/<name>`.
                            c.rsplit('/').next().unwrap_or(c).to_owned()
                        }),
                        Var::Family => ecs.and_then(|e| e.family.clone()),
                        Var::Revision => ecs.and_then(|e| e.revision).map(|r| r.to_string()),
                        Var::TaskId => ecs
                            .and_then(|e| e.task_id.as_ref())
                            .map(|t| t.as_str().to_owned())
                            .or_else(|| match &cx.identity.group {
                                Group::EcsTask { task_id } => Some(task_id.as_str().to_owned()),
                                _ => None,
                            }),
                        Var::ContainerName => Some(cx.identity.display_name().to_owned()),
                        Var::ContainerId => Some(cx.identity.container_id.as_str().to_owned()),
                        Var::Stream => Some(
                            match (cx.kind, cx.stream) {
                                (SourceKind::ContainerOutput, Some(s)) => s.as_str(),
                                (SourceKind::ContainerOutput, None) => "stdout",
                                (SourceKind::DeclaredFile { .. }, _) => "file",
                                (SourceKind::Lifecycle, _) => "lifecycle",
                                (SourceKind::Metrics, _) => "metrics",
                            }
                            .to_owned(),
                        ),
                        Var::File => Some(match cx.kind {
                            SourceKind::DeclaredFile { container_path } => container_path
                                .to_string_lossy()
                                .trim_start_matches('/')
                                .to_owned(),
                            _ => "-".to_owned(),
                        }),
                        Var::InstanceId => cx.host.instance_id.clone(),
                        Var::AvailabilityZone => cx.host.availability_zone.clone(),
                    };
                    match value {
                        Some(v) if !v.is_empty() => out.push_str(&v),
                        _ => out.push_str(UNKNOWN),
                    }
                }
            }
        }
        out
    }
}

/// Longest log group or log stream name
/// (<https://docs.aws.amazon.com/AmazonCloudWatchLogs/latest/APIReference/API_CreateLogGroup.html>,
/// <https://docs.aws.amazon.com/AmazonCloudWatchLogs/latest/APIReference/API_CreateLogStream.html>).
pub const MAX_NAME_BYTES: usize = 512;

/// A valid log group name: `[\.\-_/#A-Za-z0-9]+`, at most 512 bytes; anything else becomes `_`.
pub fn sanitize_log_group(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/' | '#') {
                c
            } else {
                '_'
            }
        })
        .collect();
    truncate(s)
}

/// A valid log stream name: no `:` or `*`, no control characters, at most 512 bytes.
pub fn sanitize_log_stream(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c == ':' || c == '*' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    truncate(s)
}

fn truncate(mut s: String) -> String {
    if s.is_empty() {
        return UNKNOWN.to_owned();
    }
    if s.len() > MAX_NAME_BYTES {
        let mut end = MAX_NAME_BYTES;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::identify::{ContainerId, EcsTask, TaskId};

    fn ecs_identity() -> ContainerIdentity {
        let mut id = ContainerIdentity::new(ContainerId::parse(&"a".repeat(64)).unwrap());
        let task_id = TaskId::parse(&"b".repeat(32)).unwrap();
        id.group = Group::EcsTask {
            task_id: task_id.clone(),
        };
        id.ecs = Some(EcsTask {
            task_id: Some(task_id),
            cluster: Some("arn:aws:ecs:eu-west-1:123456789012:cluster/prod".to_owned()),
            family: Some("web".to_owned()),
            revision: Some(7),
            container_name: Some("app".to_owned()),
            ..EcsTask::default()
        });
        id
    }

    #[test]
    fn templates_render_identity() {
        let ecs = ecs_identity();
        let bare = ContainerIdentity::new(ContainerId::parse(&"c".repeat(64)).unwrap());
        let out = SourceKind::ContainerOutput;
        let file = SourceKind::DeclaredFile {
            container_path: PathBuf::from("/var/log/app.log"),
        };
        let b32 = "b".repeat(32);
        let cases: Vec<(
            &str,
            &ContainerIdentity,
            &SourceKind,
            Option<StdStream>,
            String,
        )> = vec![
            (
                "/ecs/{family}",
                &ecs,
                &out,
                Some(StdStream::Stdout),
                "/ecs/web".to_owned(),
            ),
            (
                "ecs/{container_name}/{task_id}",
                &ecs,
                &out,
                None,
                format!("ecs/app/{b32}"),
            ),
            (
                "{cluster}/{family}:{revision}/{stream}",
                &ecs,
                &out,
                Some(StdStream::Stderr),
                "prod/web:7/stderr".to_owned(),
            ),
            (
                "{container_name}/{stream}/{file}",
                &ecs,
                &file,
                None,
                "app/file/var/log/app.log".to_owned(),
            ),
            (
                "/ecs/{family}/{task_id}/{container_name}",
                &bare,
                &out,
                None,
                "/ecs/unknown/unknown/cccccccccccc".to_owned(),
            ),
        ];
        for (text, identity, kind, stream, want) in cases {
            let t = Template::parse(text).unwrap();
            let got = t.render(&NameContext {
                identity,
                kind,
                stream,
                host: &HostFacts::default(),
            });
            assert_eq!(got, want, "{text}");
        }
    }

    #[test]
    fn host_facts_render_when_known() {
        let id = ecs_identity();
        let t = Template::parse("{availability_zone}/{instance_id}/{family}").unwrap();
        assert!(t.uses_host());
        let host = HostFacts {
            instance_id: Some("i-0abc".to_owned()),
            availability_zone: Some("eu-west-1a".to_owned()),
        };
        let cx = |host| NameContext {
            identity: &id,
            kind: &SourceKind::ContainerOutput,
            stream: None,
            host,
        };
        assert_eq!(t.render(&cx(&host)), "eu-west-1a/i-0abc/web");
        assert_eq!(t.render(&cx(&HostFacts::default())), "unknown/unknown/web");
    }

    #[test]
    fn bad_templates_are_refused() {
        assert!(matches!(
            Template::parse("/ecs/{familly}"),
            Err(NamingError::UnknownPlaceholder { .. })
        ));
        assert!(matches!(
            Template::parse("/ecs/{family"),
            Err(NamingError::Unclosed { .. })
        ));
        assert!(matches!(Template::parse(""), Err(NamingError::Empty)));
        assert!(Template::parse("{stream}").unwrap().uses_stream());
        assert!(!Template::parse("x").unwrap().uses_stream());
    }

    #[test]
    fn names_are_made_valid() {
        assert_eq!(sanitize_log_group("/ecs/my app:1"), "/ecs/my_app_1");
        assert_eq!(sanitize_log_stream("a:b*c/d e"), "a_b_c/d e");
        assert_eq!(sanitize_log_group(""), "unknown");
        let long = "é".repeat(400);
        let s = sanitize_log_stream(&long);
        assert!(s.len() <= MAX_NAME_BYTES && s.is_char_boundary(s.len()));
    }
}
