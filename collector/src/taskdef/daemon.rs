//! `collector taskdef daemon`: the collector's task definition and its `DAEMON` service.
//!
//! The container sees the host through read-only mounts under `/host` (the `[host]` settings
//! point there through their `COLLECTOR_HOST__*` variables) and keeps its state, local sink
//! and the tasks' sockets in the host's `/var/lib/collector`, mounted at the same path.
//!
//! Privileges: not privileged; every capability dropped, then only these added back
//! (capabilities(7)):
//! - `DAC_READ_SEARCH`: read any file and search any directory whatever its mode: files a
//!   container declares (`collector.logs`) owned by its non-root user.
//!   Root without `DAC_OVERRIDE`/`DAC_READ_SEARCH` is held to the permission bits.
//! - `SYS_PTRACE`: the ptrace access check guards `/proc/<pid>/root` (declared files are
//!   read through it), `/proc/<pid>/fd` (host-network Graphite senders are found by the
//!   socket they hold) and `/proc/<pid>/ns`, for processes of other users.
//! - with `--ebpf` only, `SYS_ADMIN`: eBPF needs `BPF` + `PERFMON` or `SYS_ADMIN`, and ECS
//!   accepts only the older names in `capabilities.add`
//!   (<https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_KernelCapabilities.html>:
//!   the valid values list neither `BPF` nor `PERFMON`). `SYS_ADMIN` is close to root, so it
//!   is opt-in; without it the collector runs with `--ebpf off` on inotify, procfs and
//!   Docker (`docs/ebpf.md`). With it, the host's tracefs is mounted read-only at
//!   `/sys/kernel/tracing` (where aya finds tracepoint ids; the container may not mount it
//!   itself), and the `memlock` limit is lifted for kernels before 5.11, which charge BPF
//!   maps to it.
//!
//! Each is needed, and they are enough: the image run with just these as user 65534 reads
//! Docker's logs and a task's declared files, without either it does not
//! (`tests/src/tests/security.rs`). The image's `/collector` holds them as file capabilities
//! (permitted only), so the same list serves a non-root `user` (`docs/deploy-ecs.md`).
//!
//! Not needed: `NET_BIND_SERVICE` (13290 and 8125 are above 1023); `SYS_RESOURCE` (the
//! collector raises only its soft open-files limit to the hard one; the hard one is set here
//! with `ulimits`); `CHOWN`/`FOWNER` (it owns what it makes under the data directory).
//!
//! No `healthCheck`: the image is `FROM scratch` and `collector` has no command that probes
//! a running daemon (its control API answers `GET /ready` on a root-only unix socket, with no
//! client for it in the image).

use serde_json::{Map, Value, json};

use super::{DEFAULT_DAEMON_IMAGE, HOST_DATA_DIR, HOST_TASK_SOCKET_DIR, STOP_TIMEOUT_SECS};

/// Which part to print.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// `{"taskDefinition": ..., "service": ...}`.
    #[default]
    All,
    /// The task definition alone, for `aws ecs register-task-definition --cli-input-json`.
    Task,
    /// The service alone, for `aws ecs create-service --cli-input-json`.
    Service,
}

/// Options of `collector taskdef daemon`.
#[derive(Clone, Debug)]
pub struct DaemonOptions {
    /// The collector image.
    pub image: String,
    /// The cluster the service runs in.
    pub cluster: String,
    /// Task definition family, also the service's name.
    pub family: String,
    /// Soft memory limit (MiB): what ECS reserves on each instance.
    pub memory_reservation: u64,
    /// Hard memory limit (MiB): the container is killed above it.
    pub memory: u64,
    /// CloudWatch Logs group of the collector's own messages (awslogs driver).
    pub log_group: String,
    /// Region of the log group and of the SDK sinks (`AWS_REGION`). `None`: the awslogs
    /// driver and the SDK take the instance's region from EC2 metadata.
    pub region: Option<String>,
    /// IAM role the collector's AWS calls use (CloudWatch Logs, S3 sinks).
    pub task_role_arn: Option<String>,
    /// IAM role ECS uses to pull from ECR and create the log group; without it the
    /// container instance's role does.
    pub execution_role_arn: Option<String>,
    /// Grant what eBPF needs (see the module docs).
    pub ebpf: bool,
    /// More `NAME=VALUE` variables (collector settings, e.g. `COLLECTOR_SINKS__S3__BUCKET`),
    /// after ours; one with the name of ours replaces it.
    pub env: Vec<(String, String)>,
}

/// The cluster when none is given (ECS's own default cluster name).
pub const DEFAULT_CLUSTER: &str = "default";
/// The task definition family and service name when none is given.
pub const DEFAULT_FAMILY: &str = "collector";
/// The memory reservation (MiB) when none is given: the daemon's resident size with
/// hundreds of containers, with room (`docs/benchmarks.md`).
pub const DEFAULT_MEMORY_RESERVATION_MIB: u64 = 128;
/// The hard memory limit (MiB) when none is given: bounded queues keep the collector well
/// under it; above it the kernel kills the container and ECS restarts it, losing nothing
/// (offsets are committed after delivery).
pub const DEFAULT_MEMORY_MIB: u64 = 512;
/// The log group of the collector's own messages when none is given.
pub const DEFAULT_LOG_GROUP: &str = "/ecs/collector";

impl Default for DaemonOptions {
    fn default() -> Self {
        Self {
            image: DEFAULT_DAEMON_IMAGE.to_owned(),
            cluster: DEFAULT_CLUSTER.to_owned(),
            family: DEFAULT_FAMILY.to_owned(),
            memory_reservation: DEFAULT_MEMORY_RESERVATION_MIB,
            memory: DEFAULT_MEMORY_MIB,
            log_group: DEFAULT_LOG_GROUP.to_owned(),
            region: None,
            task_role_arn: None,
            execution_role_arn: None,
            ebpf: false,
            env: Vec::new(),
        }
    }
}

/// Parses a `--env NAME=VALUE`.
///
/// # Errors
/// [`super::TaskdefError::BadEnv`] without a `=` or a name.
pub fn parse_env(arg: &str) -> Result<(String, String), super::TaskdefError> {
    match arg.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(super::TaskdefError::BadEnv {
            arg: arg.to_owned(),
        }),
    }
}

/// A host path mounted read-only at the same path under `/host`.
struct HostMount {
    /// Volume name.
    volume: &'static str,
    /// Path on the host.
    host: &'static str,
    /// Path in the container.
    container: &'static str,
    /// Read-only: the collector only reads the host, except its own data directory.
    read_only: bool,
}

/// What the container mounts. The data directory is at the same path inside, so the
/// defaults (`data_dir`, `<data_dir>/task/...`) stay true in both.
const MOUNTS: &[HostMount] = &[
    // Every process's cgroup, fds, namespaces and root (`pidMode: host` shows them all).
    HostMount {
        volume: "host-proc",
        host: "/proc",
        container: "/host/proc",
        read_only: true,
    },
    // Container cgroups: discovery (inotify), cgroup ids, resource stats.
    HostMount {
        volume: "host-cgroup",
        host: "/sys/fs/cgroup",
        container: "/host/sys/fs/cgroup",
        read_only: true,
    },
    // json-file logs and `config.v2.json` of each container.
    HostMount {
        volume: "host-docker",
        host: "/var/lib/docker",
        container: "/host/var/lib/docker",
        read_only: true,
    },
    // The Docker API (events, inspect). Read-only still lets it connect: a socket's mode,
    // not the mount's, governs connect(2). The socket is root-equivalent on the host.
    HostMount {
        volume: "docker-socket",
        host: "/var/run/docker.sock",
        container: "/host/var/run/docker.sock",
        read_only: true,
    },
    // State (SQLite), the local sink, the S3 spool, and the tasks' sockets under `task/`.
    HostMount {
        volume: "collector-data",
        host: HOST_DATA_DIR,
        container: HOST_DATA_DIR,
        read_only: false,
    },
];

/// tracefs, with `--ebpf`.
const TRACEFS_MOUNT: HostMount = HostMount {
    volume: "host-tracefs",
    host: "/sys/kernel/tracing",
    container: "/sys/kernel/tracing",
    read_only: true,
};

/// Open files allowed (soft = hard): a descriptor per live log file, per unread rotated file
/// and per rotation-guard file, so thousands for 1,000 containers. Set here rather than
/// relying on the AMI's Docker default, and without `SYS_RESOURCE`.
const NOFILE_LIMIT: u64 = 65_536;

/// The task definition and the service, as `{"taskDefinition": ..., "service": ...}` (or one
/// of them for `part`).
pub fn daemon(opts: &DaemonOptions, part: Part) -> Value {
    match part {
        Part::All => json!({
            "taskDefinition": task_definition(opts),
            "service": service(opts),
        }),
        Part::Task => task_definition(opts),
        Part::Service => service(opts),
    }
}

/// The register-task-definition input.
fn task_definition(opts: &DaemonOptions) -> Value {
    let mut mounts: Vec<&HostMount> = MOUNTS.iter().collect();
    if opts.ebpf {
        mounts.push(&TRACEFS_MOUNT);
    }
    let mut td = Map::new();
    td.insert("family".to_owned(), json!(opts.family));
    if let Some(arn) = &opts.task_role_arn {
        td.insert("taskRoleArn".to_owned(), json!(arn));
    }
    if let Some(arn) = &opts.execution_role_arn {
        td.insert("executionRoleArn".to_owned(), json!(arn));
    }
    // host: the listeners on 0.0.0.0:13290/8125 are reachable from every bridge and see the
    // senders' real addresses, which is how they are attributed.
    td.insert("networkMode".to_owned(), json!("host"));
    // host: `/proc` lists every process on the machine, to map PIDs to cgroups.
    td.insert("pidMode".to_owned(), json!("host"));
    // DAEMON services place a task on each EC2 (or EXTERNAL) instance; Fargate has none.
    td.insert("requiresCompatibilities".to_owned(), json!(["EC2"]));
    td.insert(
        "containerDefinitions".to_owned(),
        json!([container(opts, &mounts)]),
    );
    td.insert(
        "volumes".to_owned(),
        Value::Array(
            mounts
                .iter()
                .map(|m| json!({"name": m.volume, "host": {"sourcePath": m.host}}))
                .collect(),
        ),
    );
    Value::Object(td)
}

/// The one container.
fn container(opts: &DaemonOptions, mounts: &[&HostMount]) -> Value {
    let mut env: Vec<(String, String)> = [
        ("COLLECTOR_DATA_DIR", HOST_DATA_DIR.to_owned()),
        ("COLLECTOR_HOST__PROCFS_ROOT", "/host/proc".to_owned()),
        (
            "COLLECTOR_HOST__CGROUPFS_ROOT",
            "/host/sys/fs/cgroup".to_owned(),
        ),
        (
            "COLLECTOR_HOST__DOCKER_ROOT",
            "/host/var/lib/docker".to_owned(),
        ),
        (
            "COLLECTOR_HOST__DOCKER_SOCKET",
            "/host/var/run/docker.sock".to_owned(),
        ),
        // The Graphite socket in the directory tasks mount (its default is the data dir).
        (
            "COLLECTOR_METRICS__UNIX",
            format!("{HOST_TASK_SOCKET_DIR}/graphite.sock"),
        ),
        (
            "COLLECTOR_DISCOVERY__EBPF",
            if opts.ebpf { "auto" } else { "off" }.to_owned(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    if let Some(region) = &opts.region {
        env.push(("AWS_REGION".to_owned(), region.clone()));
    }
    for (name, value) in &opts.env {
        match env.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value.clone(),
            None => env.push((name.clone(), value.clone())),
        }
    }

    let mut add = vec!["DAC_READ_SEARCH", "SYS_PTRACE"];
    let mut ulimits =
        vec![json!({"name": "nofile", "softLimit": NOFILE_LIMIT, "hardLimit": NOFILE_LIMIT})];
    if opts.ebpf {
        add.push("SYS_ADMIN");
        ulimits.push(json!({"name": "memlock", "softLimit": -1, "hardLimit": -1}));
    }

    let mut log_options = Map::new();
    log_options.insert("awslogs-group".to_owned(), json!(opts.log_group));
    log_options.insert("awslogs-create-group".to_owned(), json!("true"));
    if let Some(region) = &opts.region {
        log_options.insert("awslogs-region".to_owned(), json!(region));
    }
    log_options.insert("awslogs-stream-prefix".to_owned(), json!("collector"));

    json!({
        "name": "collector",
        "image": opts.image,
        "essential": true,
        // Arguments to the image's `ENTRYPOINT ["/collector"]` (ECS `command` is Docker's
        // `CMD`): `["/collector", "run"]` would run `/collector /collector run`.
        "command": ["run"],
        "privileged": false,
        "readonlyRootFilesystem": true,
        "memoryReservation": opts.memory_reservation,
        "memory": opts.memory,
        // It drains its sinks at shutdown (every read line delivered and acknowledged).
        "stopTimeout": STOP_TIMEOUT_SECS,
        "environment": env
            .iter()
            .map(|(name, value)| json!({"name": name, "value": value}))
            .collect::<Vec<_>>(),
        "mountPoints": mounts
            .iter()
            .map(|m| json!({"sourceVolume": m.volume, "containerPath": m.container, "readOnly": m.read_only}))
            .collect::<Vec<_>>(),
        "linuxParameters": {"capabilities": {"add": add, "drop": ["ALL"]}},
        "ulimits": ulimits,
        "logConfiguration": {"logDriver": "awslogs", "options": log_options},
    })
}

/// The create-service input: one task per container instance.
fn service(opts: &DaemonOptions) -> Value {
    json!({
        "cluster": opts.cluster,
        "serviceName": opts.family,
        "taskDefinition": opts.family,
        // DAEMON services take a launch type, not a capacity provider strategy.
        "launchType": "EC2",
        "schedulingStrategy": "DAEMON",
        // A DAEMON service replaces its task on an instance by stopping the old one first:
        // maximumPercent must stay 100, and minimumHealthyPercent 0 lets it do so
        // (<https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_DeploymentConfiguration.html>).
        "deploymentConfiguration": {"maximumPercent": 100, "minimumHealthyPercent": 0},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ebpf_adds_sys_admin_tracefs_and_memlock() {
        let opts = DaemonOptions {
            ebpf: true,
            ..DaemonOptions::default()
        };
        let td = daemon(&opts, Part::Task);
        let c = &td["containerDefinitions"][0];
        assert_eq!(
            c["linuxParameters"]["capabilities"]["add"],
            json!(["DAC_READ_SEARCH", "SYS_PTRACE", "SYS_ADMIN"])
        );
        assert!(
            c["mountPoints"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["containerPath"] == "/sys/kernel/tracing")
        );
        assert_eq!(c["ulimits"][1]["name"], "memlock");
        let env = c["environment"].as_array().unwrap();
        assert!(env.contains(&json!({"name": "COLLECTOR_DISCOVERY__EBPF", "value": "auto"})));
    }

    #[test]
    fn extra_env_replaces_ours_and_appends_others() {
        let opts = DaemonOptions {
            env: vec![
                parse_env("COLLECTOR_DATA_DIR=/data").unwrap(),
                parse_env("COLLECTOR_SINKS__S3__ENABLED=true").unwrap(),
            ],
            ..DaemonOptions::default()
        };
        let td = daemon(&opts, Part::Task);
        let env = td["containerDefinitions"][0]["environment"]
            .as_array()
            .unwrap();
        assert_eq!(
            env[0],
            json!({"name": "COLLECTOR_DATA_DIR", "value": "/data"})
        );
        assert_eq!(
            env.last().unwrap(),
            &json!({"name": "COLLECTOR_SINKS__S3__ENABLED", "value": "true"})
        );
        assert!(parse_env("=x").is_err() && parse_env("novalue").is_err());
    }

    #[test]
    fn parts_are_the_halves_of_all() {
        let opts = DaemonOptions::default();
        let all = daemon(&opts, Part::All);
        assert_eq!(all["taskDefinition"], daemon(&opts, Part::Task));
        assert_eq!(all["service"], daemon(&opts, Part::Service));
    }
}
