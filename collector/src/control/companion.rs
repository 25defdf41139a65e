//! The companion API: the few calls a task's companion shim makes, on a socket of its own.
//!
//! The socket (`control.companion_socket`, default `<data_dir>/task/companion.sock`, beside
//! the Graphite socket so a task mounts one directory) has mode 0666: processes in
//! containers, whatever their user, connect to it. No call names a task. The daemon reads the
//! caller's PID from the kernel (`SO_PEERCRED`, `unix(7)`) when the connection is accepted,
//! its container and task from `/proc/<pid>/cgroup` (the daemon shares the host's PID
//! namespace), and acts on that task only: one task cannot drain or read another.
//!
//! | request | answer |
//! |---|---|
//! | `GET /v1/self` | `{"task": {...} or null, "container": {"container_id", "name"}}`: who the daemon thinks the caller is. |
//! | `POST /v1/drain?phase=exited[&expect=a,b]` | JSON lines (`application/x-ndjson`): `{"task", "caller"}`, `{"waiting": {...}}` about every second, then `{"exited": {"containers": [...]}}` once every other container of the task has exited. |
//! | `POST /v1/drain[?expect=a,b]` | The same, then `{"drained": {"containers": [{"name", "container_id", "exit_code", "lines", "bytes", "lost_bytes", "lost_files", ...}], "s3": {...} or null, "elapsed_ms"}}` once everything of the task is delivered ([`crate::drain`]). |
//!
//! `expect` names the containers the caller expects (task definition names); present and
//! empty, it says there are none. A refused call answers 403 with one line
//! `{"error": {"kind": "not_in_container"|"not_in_task", "message"}}`; an unknown one 404.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use tokio::net::UnixListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::ControlError;
use super::server::{ChannelBody, ResponseBody, params, text};
use super::view::InventoryView;
use crate::drain::{DrainBarrier, DrainRequest, Phase, TaskRef};
use crate::identify::cgroup::{container_of, parse_proc_cgroup};
use crate::identify::{ContainerId, TaskId};

/// Drain progress lines buffered per call: a shim that stops reading makes the drain wait.
const DRAIN_CHANNEL: usize = 16;

/// How long a call waits for the inventory to identify a caller it has not seen yet (a
/// shim's first milliseconds).
const IDENTIFY_WAIT: Duration = Duration::from_secs(2);

/// Who is calling, from the kernel's peer credentials.
#[derive(Clone, Debug)]
struct Caller {
    pid: i32,
    container: Option<ContainerId>,
    task_hint: Option<TaskId>,
}

/// What the routes share.
#[derive(Debug)]
struct CompanionState {
    procfs_root: PathBuf,
    view: InventoryView,
    barrier: DrainBarrier,
}

/// The bound companion socket.
pub struct CompanionServer {
    listener: UnixListener,
    path: PathBuf,
    state: Arc<CompanionState>,
}

impl CompanionServer {
    /// Creates the socket at `path` ([`super::bind_shared`]: mode 0666, its directory too).
    ///
    /// # Errors
    /// [`ControlError::BindSocket`], also when another kind of file is at `path`.
    pub fn bind(
        path: &Path,
        procfs_root: PathBuf,
        view: InventoryView,
        barrier: DrainBarrier,
    ) -> Result<Self, ControlError> {
        let listener = super::bind_shared(path).map_err(|source| ControlError::BindSocket {
            path: path.to_owned(),
            source,
        })?;
        info!(socket = %path.display(), "Companion API listening.");
        Ok(Self {
            listener,
            path: path.to_owned(),
            state: Arc::new(CompanionState {
                procfs_root,
                view,
                barrier,
            }),
        })
    }

    /// Serves until `stop`; open drains end without an answer (the shim asks again after the
    /// restart).
    pub async fn run(self, stop: CancellationToken) {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        // At accept: the caller is connected, so its process exists.
                        let caller = stream
                            .peer_cred()
                            .ok()
                            .and_then(|c| c.pid())
                            .map(|pid| self.state.caller(pid));
                        let (state, stop) = (self.state.clone(), stop.clone());
                        connections.spawn(serve(stream, caller, state, stop));
                    }
                    Err(e) => {
                        warn!(error = %e, "Companion API cannot accept; retrying.");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        connections.shutdown().await;
        if let Err(e) = std::fs::remove_file(&self.path) {
            debug!(socket = %self.path.display(), error = %e, "Companion socket already gone.");
        }
        info!("Companion API stopped.");
    }
}

impl CompanionState {
    fn caller(&self, pid: i32) -> Caller {
        let path = self.procfs_root.join(pid.to_string()).join("cgroup");
        let hint = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| container_of(&parse_proc_cgroup(&t)).map(|(h, _)| h));
        Caller {
            pid,
            container: hint.as_ref().map(|h| h.container_id.clone()),
            task_hint: hint.and_then(|h| h.task_id),
        }
    }

    /// The caller's task (from the inventory, else the cgroup path) and display name; waits
    /// briefly for an inventory that has not identified the caller yet.
    async fn task_of(&self, caller: &Caller) -> Result<(TaskRef, String), (&'static str, String)> {
        let Some(id) = &caller.container else {
            return Err((
                "not_in_container",
                format!(
                    "the calling process (pid {}) is in no container",
                    caller.pid
                ),
            ));
        };
        let deadline = tokio::time::Instant::now() + IDENTIFY_WAIT;
        loop {
            let live = self.view.container(id);
            let ecs = live.as_ref().and_then(|c| c.identity.ecs.clone());
            let task_id = ecs
                .as_ref()
                .and_then(|e| e.task_id.clone())
                .or_else(|| caller.task_hint.clone());
            if let Some(task_id) = task_id
                && (live.is_some() || tokio::time::Instant::now() >= deadline)
            {
                let name = live
                    .as_ref()
                    .map(|c| c.identity.display_name().to_owned())
                    .unwrap_or_else(|| id.short().to_owned());
                let ecs = ecs.unwrap_or_default();
                return Ok((
                    TaskRef {
                        task_id: task_id.as_str().to_owned(),
                        task_arn: ecs.task_arn.map(|a| a.as_str().to_owned()),
                        cluster: ecs.cluster,
                        family: ecs.family,
                        revision: ecs.revision,
                    },
                    name,
                ));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err((
                    "not_in_task",
                    format!("the calling container {} is in no ECS task", id.short()),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn serve(
    stream: tokio::net::UnixStream,
    caller: Option<Caller>,
    state: Arc<CompanionState>,
    stop: CancellationToken,
) {
    let service = {
        let stop = stop.clone();
        service_fn(move |req| route(state.clone(), caller.clone(), stop.clone(), req))
    };
    super::socket::serve_http(stream, service, stop, "companion").await;
}

async fn route(
    state: Arc<CompanionState>,
    caller: Option<Caller>,
    stop: CancellationToken,
    req: http::Request<Incoming>,
) -> Result<Response<ResponseBody>, std::convert::Infallible> {
    let Some(caller) = caller else {
        return Ok(refused(
            "not_in_container",
            "the caller's credentials are unknown".into(),
        ));
    };
    let path = req.uri().path().to_owned();
    let query = params(req.uri().query());
    let param = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    match (req.method(), path.as_str()) {
        (&Method::GET, "/v1/self") => Ok(match state.task_of(&caller).await {
            Ok((task, name)) => json_line(
                StatusCode::OK,
                &serde_json::json!({
                    "task": task,
                    "container": {"container_id": caller.container.as_ref().map(|c| c.as_str()), "name": name},
                }),
            ),
            Err(("not_in_task", _)) => json_line(
                StatusCode::OK,
                &serde_json::json!({
                    "task": null,
                    "container": {"container_id": caller.container.as_ref().map(|c| c.as_str())},
                }),
            ),
            Err((kind, message)) => refused(kind, message),
        }),
        (&Method::POST, "/v1/drain") => {
            let phase = match param("phase").as_deref() {
                None | Some("drained") => Phase::Drained,
                Some("exited") => Phase::Exited,
                Some(other) => {
                    return Ok(json_line(
                        StatusCode::BAD_REQUEST,
                        &serde_json::json!({"error": {"kind": "usage", "message": format!("unknown phase {other:?}: exited or drained")}}),
                    ));
                }
            };
            let expect = param("expect").map(|v| {
                v.split(',')
                    .filter(|n| !n.is_empty())
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            });
            let (task, caller_name) = match state.task_of(&caller).await {
                Ok(t) => t,
                Err((kind, message)) => return Ok(refused(kind, message)),
            };
            let Some(caller_id) = caller.container.clone() else {
                return Ok(refused("not_in_container", "no container".into()));
            };
            let request = DrainRequest {
                task,
                caller: caller_id,
                caller_name,
                expect,
                phase,
            };
            let (tx, rx) = mpsc::channel(DRAIN_CHANNEL);
            let barrier = state.barrier.clone();
            tokio::spawn(async move { barrier.run(request, tx, stop).await });
            let mut r = Response::new(ChannelBody(rx).boxed());
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::header::HeaderValue::from_static("application/x-ndjson"),
            );
            Ok(r)
        }
        _ => Ok(json_line(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": {"kind": "unknown_endpoint", "message": format!("{} {path} is not a companion call", req.method())}}),
        )),
    }
}

fn refused(kind: &str, message: String) -> Response<ResponseBody> {
    json_line(
        StatusCode::FORBIDDEN,
        &serde_json::json!({"error": {"kind": kind, "message": message}}),
    )
}

fn json_line(status: StatusCode, v: &serde_json::Value) -> Response<ResponseBody> {
    let mut body = serde_json::to_vec(v).unwrap_or_default();
    body.push(b'\n');
    text(status, Bytes::from(body), "application/x-ndjson")
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const TASK_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    /// A procfs where this test process (the caller) is in `cgroup`.
    fn procfs(cgroup: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let me = dir.path().join(std::process::id().to_string());
        std::fs::create_dir_all(&me).unwrap();
        std::fs::write(me.join("cgroup"), cgroup).unwrap();
        dir
    }

    async fn call(socket: &Path, request: &str) -> (u16, String) {
        let mut s = tokio::net::UnixStream::connect(socket).await.unwrap();
        s.write_all(
            format!(
                "{request} HTTP/1.1\r\nHost: c\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
            .await
            .unwrap()
            .unwrap();
        let status = out[9..12].parse().unwrap();
        (status, out)
    }

    async fn serve(procfs: &Path) -> (tempfile::TempDir, PathBuf, CancellationToken) {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("task/companion.sock");
        let view = InventoryView::new();
        let barrier = DrainBarrier::new(view.clone(), None, None, None);
        let server = CompanionServer::bind(&socket, procfs.to_owned(), view, barrier).unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(server.run(stop.clone()));
        (dir, socket, stop)
    }

    /// The caller's task comes from its own cgroup, whatever the request says: a `task`
    /// parameter naming another task is ignored; a caller in no task, or in no container, is
    /// refused; only the shim's calls exist. The socket is open to every user.
    #[tokio::test]
    async fn every_call_acts_on_the_callers_own_task_only() {
        let in_task = procfs(&format!("0::/ecs/{TASK_A}/{}\n", "c".repeat(64)));
        let (_d, socket, stop) = serve(in_task.path()).await;
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o666);

        let (status, body) = call(&socket, "GET /v1/self").await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(TASK_A), "{body}");

        // Naming another task changes nothing: the answer is about the caller's.
        let other = "b".repeat(32);
        let (status, body) = call(
            &socket,
            &format!("POST /v1/drain?phase=exited&expect=&task={other}"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(TASK_A) && !body.contains(&other), "{body}");
        assert!(body.contains("\"exited\""), "{body}");

        let (status, body) = call(&socket, "GET /v1/metrics/tasks/x").await;
        assert_eq!(status, 404, "{body}");
        assert!(body.contains("unknown_endpoint"), "{body}");
        stop.cancel();

        let standalone = procfs(&format!("0::/docker/{}\n", "d".repeat(64)));
        let (_d, socket, stop) = serve(standalone.path()).await;
        let (status, body) = call(&socket, "POST /v1/drain").await;
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("not_in_task"), "{body}");
        stop.cancel();

        let host = procfs("0::/user.slice/session-1.scope\n");
        let (_d, socket, stop) = serve(host.path()).await;
        let (status, body) = call(&socket, "POST /v1/drain").await;
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("not_in_container"), "{body}");
        stop.cancel();
    }
}
