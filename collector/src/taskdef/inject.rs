//! `collector taskdef inject`: adds the companion shim to a user's task definition.
//!
//! The input is edited as a [`serde_json::Value`] with its field order kept
//! (`preserve_order`), never through typed structs, so fields this tool does not know (new
//! ECS parameters included) come out where they went in. Every edit merges: running it on its
//! own output changes nothing.
//!
//! What it does, and why:
//! - adds the `collector-companion` container (or updates the one there): not essential, so
//!   its failure never stops the job; `stopTimeout` 120 s to drain; a health check the job
//!   waits for; the socket directory mounted read-only;
//! - adds the `collector-task-sockets` host volume (`/var/lib/collector/task`);
//! - makes every other container depend on the companion being `HEALTHY`: ECS starts them
//!   after it and, reversing the dependencies at stop, stops them before it, so the companion
//!   gets SIGTERM last and drains the task's lines within its own `stopTimeout`
//!   (<https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_ContainerDependency.html>:
//!   "When a dependency is defined for container startup, for container shutdown it is
//!   reversed");
//! - tells each job container where to send Graphite (`COLLECTOR_GRAPHITE_ADDR`), per network
//!   mode, and in `bridge` mode links it to the companion;
//! - sets the `collector.logs` label for `--logs CONTAINER=GLOB`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde_json::{Value, json};

use super::container::{self, Object, str_field};
use super::{
    COMPANION_NAME, COMPANION_SOCKET_DIR, DEFAULT_COMPANION_IMAGE, DEFAULT_DRAIN_TIMEOUT,
    GRAPHITE_ADDR_ENV, GRAPHITE_PORT, HOST_TASK_SOCKET_DIR, ROLE_COMPANION, ROLE_LABEL,
    SOCKET_VOLUME, STOP_TIMEOUT_SECS, TaskdefError,
};
use crate::identify::labels::COLLECTOR_LOGS;

/// Fields of describe-task-definition's `taskDefinition` that ECS sets and
/// register-task-definition rejects
/// (<https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_TaskDefinition.html>
/// against
/// <https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_RegisterTaskDefinition.html>).
pub const READ_ONLY_FIELDS: [&str; 8] = [
    "taskDefinitionArn",
    "revision",
    "status",
    "requiresAttributes",
    "compatibilities",
    "registeredAt",
    "registeredBy",
    "deregisteredAt",
];

/// The companion's health check: `/companion health` exits 0 once a Graphite listener on
/// 127.0.0.1:13290 accepts. The timings are ECS's minimums (interval 5-300 s, timeout
/// 2-60 s, retries 1-10, startPeriod 0-300 s:
/// <https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_HealthCheck.html>), so
/// the job waits as little as ECS allows: the shim listens within milliseconds of starting.
fn health_check() -> Value {
    json!({
        "command": ["CMD", "/companion", "health"],
        "interval": 5,
        "timeout": 2,
        "retries": 3,
        "startPeriod": 0
    })
}

/// The companion's memory reservation (MiB): a static relay needs a few MiB; 6 is ECS's
/// minimum for a container.
const COMPANION_MEMORY_RESERVATION_MIB: u64 = 16;

/// Options of `collector taskdef inject`.
#[derive(Clone, Debug)]
pub struct InjectOptions {
    /// The companion image. `None`: [`DEFAULT_COMPANION_IMAGE`] for a new companion, and the
    /// image already there for an existing one (a pinned ECR tag survives re-injection).
    pub companion_image: Option<String>,
    /// Log files to collect, per container (`--logs`).
    pub logs: Vec<LogsRequest>,
    /// How long the companion lets the daemon drain the task (`COLLECTOR_DRAIN_TIMEOUT`).
    /// Must be under the companion's `stopTimeout`, or ECS kills it before it can report.
    pub drain_timeout: Duration,
}

impl Default for InjectOptions {
    fn default() -> Self {
        Self {
            companion_image: None,
            logs: Vec::new(),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

/// `--logs CONTAINER=GLOB`: files inside `CONTAINER` the collector tails besides its output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogsRequest {
    /// The container's name in the task definition.
    pub container: String,
    /// An absolute path inside the container, with `*`, `?` or `[...]` globs.
    pub glob: String,
}

impl FromStr for LogsRequest {
    type Err = TaskdefError;

    fn from_str(arg: &str) -> Result<Self, Self::Err> {
        let bad = |reason| TaskdefError::BadLogs {
            arg: arg.to_owned(),
            reason,
        };
        let (container, glob) = arg
            .split_once('=')
            .ok_or_else(|| bad("expected CONTAINER=GLOB"))?;
        if container.is_empty() {
            return Err(bad("no container name before `=`"));
        }
        if !glob.starts_with('/') {
            return Err(bad(
                "the glob must be an absolute path inside the container",
            ));
        }
        if glob.contains(',') {
            // The label is a comma-separated list: give several globs as several --logs.
            return Err(bad(
                "one glob per --logs (the label separates globs with commas)",
            ));
        }
        Ok(Self {
            container: container.to_owned(),
            glob: glob.to_owned(),
        })
    }
}

/// Parses `--drain-timeout` (humantime: `110s`, `1m 30s`).
///
/// # Errors
/// [`TaskdefError::BadDrainTimeout`] when it is not a duration.
pub fn parse_drain_timeout(value: &str) -> Result<Duration, TaskdefError> {
    humantime::parse_duration(value).map_err(|source| TaskdefError::BadDrainTimeout {
        value: value.to_owned(),
        source,
    })
}

/// The task definition with the companion, ready for register-task-definition.
#[derive(Clone, Debug)]
pub struct Injected {
    /// The register-task-definition input.
    pub task_definition: Value,
    /// What was changed beyond the companion itself that the user should know (read-only
    /// fields removed), one sentence each, for stderr.
    pub notes: Vec<String>,
}

/// Reads a task definition from a file, or stdin for `-`.
///
/// # Errors
/// [`TaskdefError::ReadInput`] or [`TaskdefError::ParseInput`].
pub fn read_task_definition(path: &Path) -> Result<Value, TaskdefError> {
    let read_err = |source| TaskdefError::ReadInput {
        path: path.to_owned(),
        source,
    };
    let text = if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map_err(read_err)?;
        s
    } else {
        std::fs::read_to_string(path).map_err(read_err)?
    };
    parse_task_definition(&text, path)
}

/// Parses JSON text; `path` names it in errors.
///
/// # Errors
/// [`TaskdefError::ParseInput`] when it is not JSON.
pub fn parse_task_definition(text: &str, path: impl AsRef<Path>) -> Result<Value, TaskdefError> {
    serde_json::from_str(text).map_err(|source| TaskdefError::ParseInput {
        path: PathBuf::from(path.as_ref()),
        source,
    })
}

/// How job containers reach the companion, from the task's `networkMode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NetworkMode {
    /// One network namespace for the whole task: the companion's 127.0.0.1 is the job's.
    Awsvpc,
    /// A namespace per container: the job reaches the companion through a link.
    Bridge,
    /// The host's namespace: the daemon already listens on 13290 there, so the companion
    /// does not relay (it would collide), and jobs send to the daemon, which attributes them
    /// by the sending socket's owner.
    Host,
}

impl NetworkMode {
    /// The task's mode. Absent means `bridge`, ECS's default on EC2 Linux
    /// (<https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_RegisterTaskDefinition.html>,
    /// `networkMode`: "If no network mode is specified, the default is bridge").
    fn of(td: &Object) -> Result<Self, TaskdefError> {
        match td.get("networkMode") {
            None | Some(Value::Null) => Ok(Self::Bridge),
            Some(Value::String(m)) if m == "awsvpc" => Ok(Self::Awsvpc),
            Some(Value::String(m)) if m == "bridge" => Ok(Self::Bridge),
            Some(Value::String(m)) if m == "host" => Ok(Self::Host),
            Some(other) => Err(TaskdefError::UnsupportedNetworkMode {
                mode: other
                    .as_str()
                    .map_or_else(|| other.to_string(), str::to_owned),
            }),
        }
    }

    /// Where job containers send Graphite plaintext.
    fn graphite_addr(self) -> String {
        match self {
            Self::Awsvpc | Self::Host => format!("127.0.0.1:{GRAPHITE_PORT}"),
            Self::Bridge => format!("{COMPANION_NAME}:{GRAPHITE_PORT}"),
        }
    }

    /// The companion's `COLLECTOR_RELAY`.
    fn relay(self) -> &'static str {
        match self {
            Self::Awsvpc | Self::Bridge => "on",
            Self::Host => "off",
        }
    }
}

/// Adds the companion to a task definition (see the module docs for what and why).
///
/// `input` is register-task-definition's input, or describe-task-definition's output, whose
/// read-only fields are dropped (and named in [`Injected::notes`]) and whose `tags` are kept.
///
/// # Errors
/// - [`TaskdefError::NotATaskDefinition`], [`TaskdefError::ContainerWithoutName`]: not a
///   task definition;
/// - [`TaskdefError::Fargate`], [`TaskdefError::UnsupportedNetworkMode`]: no way to run the
///   companion;
/// - [`TaskdefError::SeveralCompanions`];
/// - [`TaskdefError::UnknownLogsContainer`];
/// - [`TaskdefError::DrainTimeout`]: zero, or not under the companion's stop timeout.
pub fn inject(input: Value, opts: &InjectOptions) -> Result<Injected, TaskdefError> {
    if opts.drain_timeout.is_zero() || opts.drain_timeout >= Duration::from_secs(STOP_TIMEOUT_SECS)
    {
        return Err(TaskdefError::DrainTimeout {
            timeout: opts.drain_timeout,
        });
    }
    let (mut td, notes) = register_form(input)?;
    refuse_fargate(&td)?;
    let mode = NetworkMode::of(&td)?;

    let Some(Value::Array(containers)) = td.get_mut("containerDefinitions") else {
        return Err(TaskdefError::NotATaskDefinition {
            found: "`containerDefinitions` is not an array".to_owned(),
        });
    };
    let mut names = Vec::with_capacity(containers.len());
    for (index, c) in containers.iter().enumerate() {
        match str_field(c, "name") {
            Some(n) if c.is_object() => names.push(n.to_owned()),
            _ => return Err(TaskdefError::ContainerWithoutName { index }),
        }
    }
    let companion_at: Vec<usize> = containers
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            str_field(c, "name") == Some(COMPANION_NAME)
                || c.get("dockerLabels")
                    .and_then(|l| str_field(l, ROLE_LABEL))
                    .is_some_and(|r| r == ROLE_COMPANION)
        })
        .map(|(i, _)| i)
        .collect();
    if companion_at.len() > 1 {
        return Err(TaskdefError::SeveralCompanions {
            names: companion_at.iter().map(|&i| names[i].clone()).collect(),
        });
    }
    let companion_at = companion_at.first().copied();
    let is_job = |i: usize| Some(i) != companion_at;
    let jobs: Vec<String> = (0..names.len())
        .filter(|&i| is_job(i))
        .map(|i| names[i].clone())
        .collect();
    if let Some(unknown) = opts.logs.iter().find(|l| !jobs.contains(&l.container)) {
        return Err(TaskdefError::UnknownLogsContainer {
            name: unknown.container.clone(),
            known: jobs,
        });
    }

    // The companion's messages go where the job's go: the first essential container's log
    // configuration (`essential` defaults to true).
    let log_configuration = containers
        .iter()
        .enumerate()
        .filter(|&(i, c)| is_job(i) && c.get("essential").and_then(Value::as_bool) != Some(false))
        .find_map(|(_, c)| c.get("logConfiguration").cloned());

    let mut companion = match companion_at {
        Some(i) => match containers[i].take() {
            Value::Object(o) => o,
            _ => unreachable!("every container was checked to be an object"),
        },
        None => {
            let mut o = Object::new();
            o.insert("name".to_owned(), json!(COMPANION_NAME));
            o
        }
    };
    let renamed_from = companion_at
        .map(|i| names[i].clone())
        .filter(|n| n != COMPANION_NAME);
    apply_companion(&mut companion, opts, mode, log_configuration);
    // A new companion goes after the user's containers.
    let companion_index = companion_at.unwrap_or(names.len());
    match companion_at {
        Some(i) => containers[i] = Value::Object(companion),
        None => containers.push(Value::Object(companion)),
    }

    for (i, c) in containers.iter_mut().enumerate() {
        if i == companion_index {
            continue;
        }
        let Value::Object(c) = c else { continue };
        if let Some(old) = &renamed_from {
            container::rename_references(c, old, COMPANION_NAME);
        }
        container::depend_on_healthy(c, COMPANION_NAME);
        if mode == NetworkMode::Bridge {
            container::ensure_link(c, COMPANION_NAME);
        }
        container::add_env_if_absent(c, GRAPHITE_ADDR_ENV, &mode.graphite_addr());
        let globs: Vec<String> = opts
            .logs
            .iter()
            .filter(|l| Some(l.container.as_str()) == names.get(i).map(String::as_str))
            .map(|l| l.glob.clone())
            .collect();
        if !globs.is_empty() {
            container::merge_list_label(c, COLLECTOR_LOGS, &globs);
        }
    }

    add_socket_volume(&mut td);
    Ok(Injected {
        task_definition: Value::Object(td),
        notes,
    })
}

/// Sets everything the companion needs, keeping the rest of an existing companion as it is.
fn apply_companion(
    c: &mut Object,
    opts: &InjectOptions,
    mode: NetworkMode,
    log_configuration: Option<Value>,
) {
    c.insert("name".to_owned(), json!(COMPANION_NAME));
    match &opts.companion_image {
        Some(image) => {
            c.insert("image".to_owned(), json!(image));
        }
        None => {
            c.entry("image")
                .or_insert_with(|| json!(DEFAULT_COMPANION_IMAGE));
        }
    }
    // Its failure must never stop the job: the task is held open for the drain by the stop
    // ordering (it stops last) and its stopTimeout, not by being essential.
    c.insert("essential".to_owned(), json!(false));
    c.entry("cpu").or_insert_with(|| json!(0));
    c.entry("memoryReservation")
        .or_insert_with(|| json!(COMPANION_MEMORY_RESERVATION_MIB));
    // It writes nothing, so its root is read-only. `user` stays unset: it only connects to
    // the sockets, which are mode 0666 (any user could), and a scratch image has no
    // /etc/passwd to name another user in; root needs no capability for that either.
    c.insert("readonlyRootFilesystem".to_owned(), json!(true));
    c.insert("stopTimeout".to_owned(), json!(STOP_TIMEOUT_SECS));
    container::set_env(c, "COLLECTOR_SOCKET_DIR", COMPANION_SOCKET_DIR);
    container::set_env(
        c,
        "COLLECTOR_DRAIN_TIMEOUT",
        &format_duration(opts.drain_timeout),
    );
    container::set_env(c, "COLLECTOR_RELAY", mode.relay());
    container::set_mount(c, SOCKET_VOLUME, COMPANION_SOCKET_DIR, true);
    container::set_label(c, ROLE_LABEL, ROLE_COMPANION);
    c.insert("healthCheck".to_owned(), health_check());
    if let Some(l) = log_configuration {
        c.entry("logConfiguration").or_insert(l);
    }
}

/// `110s`, or `1500ms` below whole seconds: what the companion parses (humantime).
fn format_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// The `collector-task-sockets` volume on `/var/lib/collector/task`: an entry of that name is
/// replaced where it is, else one is added last.
fn add_socket_volume(td: &mut Object) {
    let ours = json!({"name": SOCKET_VOLUME, "host": {"sourcePath": HOST_TASK_SOCKET_DIR}});
    let volumes = td
        .entry("volumes")
        .or_insert_with(|| Value::Array(Vec::new()));
    if !volumes.is_array() {
        *volumes = Value::Array(Vec::new());
    }
    let Value::Array(volumes) = volumes else {
        unreachable!("made an array just above")
    };
    match volumes
        .iter_mut()
        .find(|v| str_field(v, "name") == Some(SOCKET_VOLUME))
    {
        Some(v) => *v = ours,
        None => volumes.push(ours),
    }
}

/// Refuses task definitions that may run on Fargate: no daemon runs beside a Fargate task
/// and it has no host volumes (a Fargate-compatible definition with a `sourcePath` volume
/// does not register either).
fn refuse_fargate(td: &Object) -> Result<(), TaskdefError> {
    let requires: Vec<String> = td
        .get("requiresCompatibilities")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if requires.iter().any(|r| r == "FARGATE") {
        return Err(TaskdefError::Fargate { requires });
    }
    Ok(())
}

/// The register-task-definition form of the input: the object itself, or the unwrapped
/// `taskDefinition` of describe-task-definition's output without its read-only fields.
fn register_form(input: Value) -> Result<(Object, Vec<String>), TaskdefError> {
    let Value::Object(mut top) = input else {
        return Err(TaskdefError::NotATaskDefinition {
            found: format!("a JSON {}", kind(&input)),
        });
    };
    if top.contains_key("containerDefinitions") {
        return Ok((top, Vec::new()));
    }
    let Some(Value::Object(mut td)) = top.shift_remove("taskDefinition") else {
        let keys: Vec<&String> = top.keys().collect();
        return Err(TaskdefError::NotATaskDefinition {
            found: format!("an object with keys {keys:?}"),
        });
    };
    if !td.contains_key("containerDefinitions") {
        return Err(TaskdefError::NotATaskDefinition {
            found: "`taskDefinition` has no `containerDefinitions`".to_owned(),
        });
    }
    let removed: Vec<&str> = READ_ONLY_FIELDS
        .into_iter()
        .filter(|f| td.shift_remove(*f).is_some())
        .collect();
    let mut notes = vec![format!(
        "input is describe-task-definition output: printed its taskDefinition for \
         register-task-definition, without the read-only fields it rejects: {}",
        if removed.is_empty() {
            "(none present)".to_owned()
        } else {
            removed.join(", ")
        }
    )];
    // describe-task-definition --include TAGS puts the tags beside the definition;
    // register-task-definition takes them in the same shape.
    if let Some(tags) = top.shift_remove("tags")
        && tags.as_array().is_some_and(|t| !t.is_empty())
    {
        td.insert("tags".to_owned(), tags);
        notes.push("kept the describe output's tags".to_owned());
    }
    if !top.is_empty() {
        let keys: Vec<&String> = top.keys().collect();
        notes.push(format!(
            "ignored top-level keys beside taskDefinition: {keys:?}"
        ));
    }
    Ok((td, notes))
}

/// "object", "array", ... for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
#[path = "inject_tests.rs"]
mod tests;
