//! [`TestTask`], an ECS task's identity for a test, and [`FakeEcsAgent`], a real HTTP server
//! that stands in for the ECS agent's introspection API (the real agent cannot run here).
//!
//! Bodies are the fixture payloads in `collector/testdata/ecs/` (copied from the AWS docs)
//! with the test's own ARN, family, revision, container names and ids put in. Behaviour
//! follows the agent's `ecs-agent/introspection/v1/handlers` (see the fixtures' README):
//! - `GET /v1/metadata`;
//! - `GET /v1/tasks`: `{"Tasks":[...]}`;
//! - `GET /v1/tasks?dockerid=ID`: exact match for a full id, prefix match for 12 characters
//!   or fewer; `?taskarn=ARN`; one task object; unknown: 404 with the zero-value task body;
//!   both parameters: 400.

use std::collections::HashMap;
use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use crate::docker::TestContainer;
use crate::random_hex;

/// The cluster every test task runs in.
pub const TEST_CLUSTER: &str = "collector-test";

/// The zero value of the agent's task response: its 404 body (Go's encoding of an empty
/// `TaskResponse`).
pub const ZERO_TASK_BODY: &str =
    r#"{"Arn":"","KnownStatus":"","Family":"","Version":"","Containers":null}"#;

/// An ECS task's identity, made up for a test: a fresh 32-hex task id and its ARN.
#[derive(Clone, Debug)]
pub struct TestTask {
    /// The task id (last ARN segment, 32 hex).
    pub task_id: String,
    /// `arn:aws:ecs:us-west-2:012345678910:task/collector-test/<task id>`.
    pub arn: String,
    /// The cluster's short name, as the agent labels it on EC2.
    pub cluster: String,
    /// The task definition family.
    pub family: String,
    /// The task definition revision.
    pub revision: u32,
}

impl TestTask {
    /// A new task of `family`, revision 1, with a random id.
    pub fn new(family: &str) -> Self {
        let task_id = random_hex(32);
        Self {
            arn: format!("arn:aws:ecs:us-west-2:012345678910:task/{TEST_CLUSTER}/{task_id}"),
            task_id,
            cluster: TEST_CLUSTER.to_owned(),
            family: family.to_owned(),
            revision: 1,
        }
    }

    /// `/ecs/<task id>`: the agent's cgroup parent when task resource limits are on.
    pub fn cgroup_parent(&self) -> String {
        format!("/ecs/{}", self.task_id)
    }

    /// The labels the agent puts on each of the task's containers.
    pub fn labels(&self, container_name: &str) -> Vec<(String, String)> {
        [
            ("com.amazonaws.ecs.task-arn", self.arn.clone()),
            (
                "com.amazonaws.ecs.container-name",
                container_name.to_owned(),
            ),
            (
                "com.amazonaws.ecs.task-definition-family",
                self.family.clone(),
            ),
            (
                "com.amazonaws.ecs.task-definition-version",
                self.revision.to_string(),
            ),
            ("com.amazonaws.ecs.cluster", self.cluster.clone()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect()
    }

    /// A Docker name like the agent's: `ecs-<family>-<revision>-<name>-<20 hex>`.
    pub fn docker_name(&self, container_name: &str) -> String {
        let name: String = container_name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        format!(
            "ecs-{}-{}-{name}-{}",
            self.family,
            self.revision,
            random_hex(20)
        )
    }
}

/// A container the fake agent knows.
#[derive(Clone, Debug)]
struct KnownContainer {
    /// The task it belongs to.
    task: TestTask,
    /// Full container id (`DockerId`).
    docker_id: String,
    /// Docker name (`DockerName`).
    docker_name: String,
    /// Name in the task definition (`Name`).
    name: String,
}

/// What the server thread shares with the test.
#[derive(Debug, Default)]
struct Shared {
    /// Set on drop; the accept loop stops.
    stop: AtomicBool,
    /// Containers registered by the test.
    containers: Mutex<Vec<KnownContainer>>,
    /// Request targets (`/v1/tasks?dockerid=...`), in arrival order.
    requests: Mutex<Vec<String>>,
}

/// The fixture payloads the bodies are made from.
#[derive(Debug)]
struct Templates {
    /// `introspection-v1-metadata.json`.
    metadata: Value,
    /// `introspection-v1-tasks-dockerid.json`: one task object.
    task: Value,
}

/// A fake ECS agent introspection API on `127.0.0.1:<random port>`, serving until dropped.
#[derive(Debug)]
pub struct FakeEcsAgent {
    /// Where it listens.
    addr: SocketAddr,
    /// Registered containers and the request log.
    shared: Arc<Shared>,
    /// The accept loop.
    thread: Option<JoinHandle<()>>,
}

impl FakeEcsAgent {
    /// Loads the fixtures and starts serving.
    ///
    /// # Errors
    /// When a fixture cannot be read or no port can be bound.
    pub fn start() -> Result<Self> {
        let fixtures = crate::workspace_root().join("collector/testdata/ecs");
        let templates = Arc::new(Templates {
            metadata: read_json(&fixtures.join("introspection-v1-metadata.json"))?,
            task: read_json(&fixtures.join("introspection-v1-tasks-dockerid.json"))?,
        });
        let listener = TcpListener::bind("127.0.0.1:0").context("bind the fake ECS agent")?;
        let addr = listener.local_addr().context("fake ECS agent address")?;
        let shared = Arc::new(Shared::default());
        let thread = thread::Builder::new()
            .name("fake-ecs-agent".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || serve(&listener, &shared, &templates)
            })
            .context("start the fake ECS agent thread")?;
        Ok(Self {
            addr,
            shared,
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:<port>`: the collector's `ecs.agent_uri`.
    pub fn uri(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Makes `container` known as `container_name` of `task`.
    pub fn add_container(&self, task: &TestTask, container_name: &str, container: &TestContainer) {
        self.add_container_id(task, container_name, container.id(), container.name());
    }

    /// Makes a container known by its ids (for containers the test did not start).
    pub fn add_container_id(
        &self,
        task: &TestTask,
        container_name: &str,
        docker_id: &str,
        docker_name: &str,
    ) {
        lock(&self.shared.containers).push(KnownContainer {
            task: task.clone(),
            docker_id: docker_id.to_owned(),
            docker_name: docker_name.to_owned(),
            name: container_name.to_owned(),
        });
    }

    /// Every request target so far (path and query), in arrival order.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.shared.requests).clone()
    }

    /// How many requests arrived.
    pub fn request_count(&self) -> usize {
        lock(&self.shared.requests).len()
    }
}

impl Drop for FakeEcsAgent {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads a JSON fixture.
fn read_json(path: &Path) -> Result<Value> {
    let text = fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
}

/// Locks, ignoring poisoning: a panicking test thread must not hide the agent's state.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The accept loop: one thread per connection, one request per connection.
fn serve(listener: &TcpListener, shared: &Arc<Shared>, templates: &Arc<Templates>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let (shared, templates) = (Arc::clone(shared), Arc::clone(templates));
        let _ = thread::Builder::new()
            .name("fake-ecs-agent-conn".into())
            .spawn(move || handle(stream, &shared, &templates));
    }
}

/// Reads one request, answers it and closes the connection.
fn handle(mut stream: TcpStream, shared: &Shared, templates: &Templates) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 64 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let request = String::from_utf8_lossy(&request);
    let mut words = request.lines().next().unwrap_or_default().split(' ');
    let (method, target) = (
        words.next().unwrap_or_default(),
        words.next().unwrap_or_default(),
    );
    if target.is_empty() {
        return;
    }
    lock(&shared.requests).push(target.to_owned());
    let (status, body) = if method == "GET" {
        respond(target, &lock(&shared.containers), templates)
    } else {
        (405, r#"{"error":"method not allowed"}"#.to_owned())
    };
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        _ => "Method Not Allowed",
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.flush();
}

/// The agent's answer to `GET target`: status and JSON body.
fn respond(target: &str, containers: &[KnownContainer], templates: &Templates) -> (u16, String) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let params: HashMap<String, String> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect();
    match path {
        "/v1/metadata" => {
            let mut body = templates.metadata.clone();
            body["Cluster"] = json!(TEST_CLUSTER);
            body["ContainerInstanceArn"] = json!(format!(
                "arn:aws:ecs:us-west-2:012345678910:container-instance/{TEST_CLUSTER}/{}",
                "0123456789abcdef0123456789abcdef"
            ));
            (200, body.to_string())
        }
        "/v1/tasks" => {
            let found = match (params.get("dockerid"), params.get("taskarn")) {
                (Some(_), Some(_)) => {
                    return (400, ZERO_TASK_BODY.to_owned());
                }
                (Some(id), None) => containers.iter().find(|c| {
                    if id.len() > 12 {
                        c.docker_id == *id
                    } else {
                        !id.is_empty() && c.docker_id.starts_with(id.as_str())
                    }
                }),
                (None, Some(arn)) => containers.iter().find(|c| c.task.arn == *arn),
                (None, None) => {
                    let mut arns: Vec<&str> = Vec::new();
                    for container in containers {
                        if !arns.contains(&container.task.arn.as_str()) {
                            arns.push(&container.task.arn);
                        }
                    }
                    let tasks: Vec<Value> = arns
                        .iter()
                        .map(|arn| task_body(arn, containers, templates))
                        .collect();
                    return (200, json!({ "Tasks": tasks }).to_string());
                }
            };
            match found {
                Some(container) => (
                    200,
                    task_body(&container.task.arn, containers, templates).to_string(),
                ),
                None => (404, ZERO_TASK_BODY.to_owned()),
            }
        }
        _ => (404, r#"{"error":"not found"}"#.to_owned()),
    }
}

/// The task object for `arn`, with every container of that task, from the fixture's shape.
fn task_body(arn: &str, containers: &[KnownContainer], templates: &Templates) -> Value {
    let members: Vec<&KnownContainer> = containers.iter().filter(|c| c.task.arn == arn).collect();
    let mut body = templates.task.clone();
    if let Some(task) = members.first().map(|c| &c.task) {
        body["Arn"] = json!(task.arn);
        body["Family"] = json!(task.family);
        body["Version"] = json!(task.revision.to_string());
    }
    body["DesiredStatus"] = json!("RUNNING");
    body["KnownStatus"] = json!("RUNNING");
    let template = templates.task["Containers"][0].clone();
    body["Containers"] = Value::Array(
        members
            .iter()
            .map(|c| {
                let mut entry = template.clone();
                entry["DockerId"] = json!(c.docker_id);
                entry["DockerName"] = json!(c.docker_name);
                entry["Name"] = json!(c.name);
                entry
            })
            .collect(),
    );
    body
}

/// Decodes `%XX` escapes and `+` in a query component.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push(u8::try_from(high * 16 + low).unwrap_or(b'?'));
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
