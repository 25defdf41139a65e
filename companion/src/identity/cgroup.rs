//! The companion's own task and container, from `/proc/self/cgroup` (ECS layouts in
//! `testdata/proc-pid-cgroup-samples.txt`).
//!
//! Layouts recognised (the last matching line wins nothing: the first line that yields an id
//! is used, they all name the same cgroup):
//! - `/ecs/<task-id>/<container-id>` (EC2 cgroup v1, and v2 `0::/ecs/...`), also with a
//!   cluster segment before the task id;
//! - `/ecs/<32-hex task id>-<digits>` (Fargate 1.4: the whole segment is the container id);
//! - `/ecstasks.slice/ecstasks-<task-id>.slice/docker-<container-id>.scope` (EC2 cgroup v2);
//! - `/docker/<id>`, `/system.slice/docker-<id>.scope` (task limits off: no task id);
//! - `0::/` (private cgroup namespace): nothing.

/// What the cgroup path says about us.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupIdentity {
    /// The ECS task id (32 hex, or a UUID in old ARNs).
    pub task_id: Option<String>,
    /// The container id (64 hex; `<task id>-<digits>` on Fargate).
    pub container_id: Option<String>,
}

/// Parses the contents of `/proc/self/cgroup`.
pub fn parse(contents: &str) -> CgroupIdentity {
    contents
        .lines()
        .filter_map(|line| line.splitn(3, ':').nth(2))
        .map(parse_path)
        .find(|id| id.container_id.is_some() || id.task_id.is_some())
        .unwrap_or_default()
}

/// Parses one cgroup path.
fn parse_path(path: &str) -> CgroupIdentity {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut id = CgroupIdentity::default();
    if let Some(pos) = segments.iter().position(|s| *s == "ecs") {
        let rest = &segments[pos + 1..];
        match rest {
            [.., task, container] if is_task_id(task) && is_container_id(container) => {
                id.task_id = Some((*task).to_owned());
                id.container_id = Some((*container).to_owned());
            }
            [single] => {
                if let Some((task, digits)) = single.split_once('-')
                    && is_hex(task, 32)
                    && !digits.is_empty()
                    && digits.bytes().all(|b| b.is_ascii_digit())
                {
                    id.task_id = Some(task.to_owned());
                    id.container_id = Some((*single).to_owned());
                }
            }
            _ => {}
        }
        return id;
    }
    for segment in &segments {
        if let Some(task) = segment
            .strip_prefix("ecstasks-")
            .and_then(|s| s.strip_suffix(".slice"))
            && is_task_id(task)
        {
            id.task_id = Some(task.to_owned());
        }
        if let Some(container) = segment
            .strip_prefix("docker-")
            .and_then(|s| s.strip_suffix(".scope"))
            && is_container_id(container)
        {
            id.container_id = Some(container.to_owned());
        }
    }
    if let ["docker", container] = segments.as_slice()
        && is_container_id(container)
    {
        id.container_id = Some((*container).to_owned());
    }
    id
}

/// A task id: 32 hex characters, or the UUID of older task ARNs.
fn is_task_id(s: &str) -> bool {
    is_hex(s, 32) || is_uuid(s)
}

fn is_container_id(s: &str) -> bool {
    is_hex(s, 64)
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, len)| is_hex(p, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixture's blocks, keyed by scenario name.
    fn samples() -> Vec<(String, String)> {
        let text = include_str!("../../testdata/proc-pid-cgroup-samples.txt");
        let mut blocks: Vec<(String, String)> = Vec::new();
        for line in text.lines() {
            if let Some(header) = line.strip_prefix("## ") {
                let name = header.split_whitespace().next().unwrap().to_owned();
                blocks.push((name, String::new()));
            } else if !line.starts_with('#') && !line.is_empty() {
                let block = blocks.last_mut().unwrap();
                block.1.push_str(line);
                block.1.push('\n');
            }
        }
        blocks
    }

    #[test]
    fn fixture_samples() {
        let cases: &[(&str, Option<&str>, Option<&str>)] = &[
            (
                "ec2-cgroupv1-task-limits",
                Some("a52246f2-daa7-47b4-9e84-0043331e1da0"),
                Some("38dcd24c1a7ac4b0401a1ed29ef79b0c030631df33322db9b092687c0bfd0a38"),
            ),
            (
                "ec2-cgroupv1-no-task-limits",
                None,
                Some("81509de4623e2fb6ac9a799df48d03c7a0787796cfd92fd984b80e027c4bb221"),
            ),
            (
                "ec2-cgroupv1-cluster-in-path",
                Some("5a0d5ceddf6c44c1928d367a815d890f"),
                Some("38fac3e99302b3622be089dd41e7ccf38aff368a86cc339972075136ee2710ce"),
            ),
            (
                "fargate-1.3-cgroupv1",
                Some("55091c13-b8cf-4801-b527-f4601742204d"),
                Some("432624d2150b349fe35ba397284dea788c2bf66b885d14dfc1569b01890ca7da"),
            ),
            (
                "fargate-1.4-cgroupv1",
                Some("34dc0b5e626f2c5c4c5170e34b10e765"),
                Some("34dc0b5e626f2c5c4c5170e34b10e765-1234567890"),
            ),
            (
                "ec2-cgroupv2-systemd-task-limits",
                Some("158d1c8083dd49d6b527399fd6414f5c"),
                Some("ee08638adaaf009d78c248913f629e38299471d45fe7dc944d1039077e3424ca"),
            ),
            (
                "ec2-cgroupv2-systemd-no-task-limits",
                None,
                Some("ee08638adaaf009d78c248913f629e38299471d45fe7dc944d1039077e3424ca"),
            ),
            ("ec2-cgroupv2-inside-container", None, None),
        ];
        let samples = samples();
        assert_eq!(samples.len(), cases.len(), "every fixture block has a case");
        for (name, task, container) in cases {
            let (_, contents) = samples
                .iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("no fixture block {name}"));
            let id = parse(contents);
            assert_eq!(id.task_id.as_deref(), *task, "{name}");
            assert_eq!(id.container_id.as_deref(), *container, "{name}");
        }
    }

    #[test]
    fn cgroup_v2_ecs_path() {
        let task = "0123456789abcdef0123456789abcdef";
        let container = "ab".repeat(32);
        let id = parse(&format!("0::/ecs/{task}/{container}\n"));
        assert_eq!(id.task_id.as_deref(), Some(task));
        assert_eq!(id.container_id.as_deref(), Some(container.as_str()));
        assert_eq!(parse("garbage"), CgroupIdentity::default());
        assert_eq!(parse("0::/ecs/not-a-task/xyz\n"), CgroupIdentity::default());
    }
}
