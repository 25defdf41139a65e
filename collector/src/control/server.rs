//! The control API's listener and routes (the endpoint list is in the module docs).

use std::collections::HashSet;
use std::convert::Infallible;
use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Response, StatusCode, header};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use serde_json::json;
use tokio::net::UnixListener;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::client::percent_decode;
use super::tap::{SinkStats, TailBatch, TailSender};
use super::view::InventoryView;
use super::{ControlError, render_metrics};
use crate::config::Config;
use crate::identify::cgroup::CgroupLayout;
use crate::inspect::{self, InspectError, KindFilter, World};
use crate::internal_events;
use crate::state::{Lifecycle, Store};

/// How long open connections (a `collector tail` stream) get to finish at shutdown.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// How often a `tail` stream checks whether its containers have all ended.
const TAIL_END_CHECK: Duration = Duration::from_millis(250);

pub(super) type ResponseBody = BoxBody<Bytes, Infallible>;

/// What the routes read.
pub struct ControlState {
    config: Config,
    layout: Option<CgroupLayout>,
    view: InventoryView,
    sinks: Vec<Arc<SinkStats>>,
    tail: TailSender,
    started: Instant,
    /// A read-only connection of its own: questions never wait on the shipper's commits.
    store: Option<Store>,
}

impl ControlState {
    /// The state of a daemon: its config and cgroup layout, its live view, its sinks' stats
    /// and the `tail` feed.
    pub fn new(
        config: Config,
        layout: Option<CgroupLayout>,
        view: InventoryView,
        sinks: Vec<Arc<SinkStats>>,
        tail: TailSender,
    ) -> Self {
        let store = match Store::open_read_only(&config.state_path()) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!(error = %internal_events::chain(&e), "Control API without history: the state database cannot be read.");
                None
            }
        };
        Self {
            config,
            layout,
            view,
            sinks,
            tail,
            started: Instant::now(),
            store,
        }
    }

    fn world(&self) -> World {
        World::daemon(
            self.config.clone(),
            self.layout.clone(),
            self.store.clone(),
            self.view.clone(),
            self.sinks.clone(),
        )
    }
}

/// The bound control socket.
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    state: Arc<ControlState>,
}

impl ControlServer {
    /// Creates the socket at `path` with mode 0600. A stale socket (nothing answers) is
    /// replaced; one that answers belongs to another daemon and is an error. The socket is
    /// made under a temporary name, restricted, then renamed into place, so it is never
    /// reachable with looser permissions. Must be called within the tokio runtime.
    ///
    /// # Errors
    /// [`ControlError::SocketInUse`], [`ControlError::NotASocket`], or
    /// [`ControlError::BindSocket`] when the socket cannot be created.
    pub fn bind(path: &Path, state: ControlState) -> Result<Self, ControlError> {
        let bind_err = |source| ControlError::BindSocket {
            path: path.to_owned(),
            source,
        };
        match fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => {
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    return Err(ControlError::SocketInUse {
                        path: path.to_owned(),
                    });
                }
                fs::remove_file(path).map_err(bind_err)?;
            }
            Ok(_) => {
                return Err(ControlError::NotASocket {
                    path: path.to_owned(),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(bind_err(e)),
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = path.with_file_name(format!(".{name}.{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        let listener = UnixListener::bind(&tmp).map_err(bind_err)?;
        let placed = fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))
            .and_then(|()| fs::rename(&tmp, path));
        if let Err(e) = placed {
            let _ = fs::remove_file(&tmp);
            return Err(bind_err(e));
        }
        info!(socket = %path.display(), "Control API listening.");
        Ok(Self {
            listener,
            path: path.to_owned(),
            state: Arc::new(state),
        })
    }

    /// Serves until `stop`, then closes open connections (tail streams get an end line) and
    /// removes the socket.
    pub async fn run(self, stop: CancellationToken) {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let (state, stop) = (self.state.clone(), stop.clone());
                        connections.spawn(serve_connection(stream, state, stop));
                    }
                    Err(e) => {
                        // EMFILE and friends: wait rather than spin.
                        warn!(error = %e, "Control API cannot accept; retrying.");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        let drained = tokio::time::timeout(CLOSE_GRACE, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            connections.abort_all();
        }
        if let Err(e) = fs::remove_file(&self.path) {
            debug!(socket = %self.path.display(), error = %e, "Control socket already gone.");
        }
        info!("Control API stopped.");
    }
}

async fn serve_connection(
    stream: tokio::net::UnixStream,
    state: Arc<ControlState>,
    stop: CancellationToken,
) {
    let service = {
        let stop = stop.clone();
        service_fn(move |req| route(state.clone(), stop.clone(), req))
    };
    super::socket::serve_http(stream, service, stop, "control").await;
}

/// A query string's parameters, decoded.
pub(super) fn params(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

async fn route(
    state: Arc<ControlState>,
    stop: CancellationToken,
    req: hyper::Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    if req.method() != Method::GET {
        return Ok(error(
            StatusCode::METHOD_NOT_ALLOWED,
            "usage",
            "only GET is served".into(),
            None,
            Vec::new(),
        ));
    }
    let path = req.uri().path().to_owned();
    let params = params(req.uri().query());
    let param = |k: &str| {
        params
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let kind = match param("kind")
        .as_deref()
        .map(|k| KindFilter::parse(k).ok_or(k.to_owned()))
    {
        None => None,
        Some(Ok(k)) => Some(k),
        Some(Err(bad)) => {
            let message = format!(
                "unknown kind {bad:?}: one of {}",
                KindFilter::VALUES.join(", ")
            );
            return Ok(error(
                StatusCode::BAD_REQUEST,
                "usage",
                message,
                None,
                Vec::new(),
            ));
        }
    };
    let response = match path.as_str() {
        "/live" => text(StatusCode::OK, "live\n", "text/plain; charset=utf-8"),
        "/ready" if state.view.is_ready() => {
            text(StatusCode::OK, "ready\n", "text/plain; charset=utf-8")
        }
        "/ready" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: discovery has not finished a first scan\n",
            "text/plain; charset=utf-8",
        ),
        "/metrics" => {
            let st = state.clone();
            match tokio::task::spawn_blocking(move || {
                render_metrics(&st.view, &st.sinks, st.started.elapsed())
            })
            .await
            {
                Ok(body) => text(
                    StatusCode::OK,
                    body,
                    "text/plain; version=0.0.4; charset=utf-8",
                ),
                Err(_) => internal(),
            }
        }
        "/v1/overview" => {
            let all = param("all").is_some_and(|v| v != "0" && v != "false");
            answer(state, move |world| inspect::overview(world, all)).await
        }
        "/v1/inspect" => match param("q") {
            Some(q) => answer(state, move |world| inspect::inspect(world, &q, kind)).await,
            None => error(
                StatusCode::BAD_REQUEST,
                "usage",
                "missing ?q=THING".into(),
                None,
                Vec::new(),
            ),
        },
        "/v1/sinks" => {
            let sinks: Vec<_> = state
                .sinks
                .iter()
                .map(|s| {
                    let last = s.last_error();
                    json!({
                        "sink": s.name,
                        "location": s.location,
                        "records": s.records.load(std::sync::atomic::Ordering::Relaxed),
                        "bytes": s.bytes.load(std::sync::atomic::Ordering::Relaxed),
                        "batches": s.batches.load(std::sync::atomic::Ordering::Relaxed),
                        "errors": s.errors.load(std::sync::atomic::Ordering::Relaxed),
                        "last_error": last.as_ref().map(|e| e.message.clone()),
                        "last_error_at": last.map(|e| humantime::format_rfc3339_millis(e.at).to_string()),
                    })
                })
                .collect();
            json_response(StatusCode::OK, &sinks)
        }
        "/v1/tail" => match param("q") {
            Some(q) => tail(state, stop, q, kind).await,
            None => error(
                StatusCode::BAD_REQUEST,
                "usage",
                "missing ?q=THING".into(),
                None,
                Vec::new(),
            ),
        },
        p if p.starts_with("/v1/metrics/") => {
            let history = param("history").is_some_and(|v| v != "0" && v != "false");
            metrics_answer(state, p, history).await
        }
        p => {
            let by = |prefix: &str, k: KindFilter| {
                p.strip_prefix(prefix)
                    .and_then(percent_decode)
                    .map(|q| (q, k))
            };
            match by("/v1/containers/", KindFilter::Container)
                .or_else(|| by("/v1/tasks/", KindFilter::Task))
            {
                Some((q, k)) if !q.is_empty() => {
                    answer(state, move |world| inspect::inspect(world, &q, Some(k))).await
                }
                _ => error(
                    StatusCode::NOT_FOUND,
                    "unknown_endpoint",
                    format!("no endpoint {p}"),
                    None,
                    Vec::new(),
                ),
            }
        }
    };
    Ok(response)
}

/// `GET /v1/metrics/...`: one owner's metrics ([`crate::metrics::api`]).
async fn metrics_answer(
    state: Arc<ControlState>,
    path: &str,
    history: bool,
) -> Response<ResponseBody> {
    let Some(owner) = crate::metrics::api::owner_of_path(path) else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no endpoint {path}: /v1/metrics/tasks/{{task id or ARN}}, /v1/metrics/containers/{{container id}} or /v1/metrics/unattributed"
            ),
            None,
            Vec::new(),
        );
    };
    let Some(store) = state.store.clone() else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the state database cannot be read".into(),
            None,
            Vec::new(),
        );
    };
    let o = owner.clone();
    match tokio::task::spawn_blocking(move || {
        crate::metrics::api::owner_metrics(&store, &o, history)
    })
    .await
    {
        Ok(Ok(Some(m))) => json_response(StatusCode::OK, &m),
        Ok(Ok(None)) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no metrics received from {owner}"),
            Some(&owner),
            Vec::new(),
        ),
        Ok(Err(e)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            internal_events::chain(&e),
            None,
            Vec::new(),
        ),
        Err(_) => internal(),
    }
}

/// Runs an `inspect` question off the async threads (it reads files and SQLite).
async fn answer<T, F>(state: Arc<ControlState>, f: F) -> Response<ResponseBody>
where
    T: serde::Serialize + Send + 'static,
    F: FnOnce(&World) -> Result<T, InspectError> + Send + 'static,
{
    match tokio::task::spawn_blocking(move || f(&state.world())).await {
        Ok(Ok(v)) => json_response(StatusCode::OK, &v),
        Ok(Err(e)) => inspect_error(&e),
        Err(_) => internal(),
    }
}

/// The response for an `inspect` failure.
fn inspect_error(e: &InspectError) -> Response<ResponseBody> {
    match e {
        InspectError::Usage { message } => error(
            StatusCode::BAD_REQUEST,
            "usage",
            message.clone(),
            None,
            Vec::new(),
        ),
        InspectError::Ambiguous {
            query, candidates, ..
        } => error(
            StatusCode::BAD_REQUEST,
            "ambiguous",
            e.to_string(),
            Some(query),
            candidates.clone(),
        ),
        InspectError::NotFound { query, .. } => error(
            StatusCode::NOT_FOUND,
            "not_found",
            e.to_string(),
            Some(query),
            Vec::new(),
        ),
        InspectError::State(_) => {
            warn!(error = %internal_events::chain(e), "Control API question failed.");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                internal_events::chain(e),
                None,
                Vec::new(),
            )
        }
    }
}

fn internal() -> Response<ResponseBody> {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the request's task failed; this is a bug".into(),
        None,
        Vec::new(),
    )
}

fn error(
    status: StatusCode,
    code: &str,
    message: String,
    query: Option<&str>,
    candidates: Vec<String>,
) -> Response<ResponseBody> {
    json_response(
        status,
        &json!({ "error": code, "message": message, "query": query, "candidates": candidates }),
    )
}

fn json_response<T: serde::Serialize>(status: StatusCode, v: &T) -> Response<ResponseBody> {
    match serde_json::to_vec_pretty(v) {
        Ok(mut body) => {
            body.push(b'\n');
            text(status, body, "application/json")
        }
        Err(_) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the answer; this is a bug\n",
            "text/plain",
        ),
    }
}

pub(super) fn text(
    status: StatusCode,
    body: impl Into<Bytes>,
    content_type: &'static str,
) -> Response<ResponseBody> {
    let body = http_body_util::Full::new(body.into()).boxed();
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

/// A response body fed by a channel: one chunk per message.
pub(super) struct ChannelBody(pub(super) mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|m| m.map(|b| Ok(Frame::data(b))))
    }
}

/// `GET /v1/tail`: the lines of a container or a whole task as they are delivered.
async fn tail(
    state: Arc<ControlState>,
    stop: CancellationToken,
    q: String,
    kind: Option<KindFilter>,
) -> Response<ResponseBody> {
    // Subscribe before resolving: nothing delivered in between is missed.
    let mut feed = state.tail.subscribe();
    let resolved = {
        let st = state.clone();
        tokio::task::spawn_blocking(move || inspect::inspect(&st.world(), &q, kind)).await
    };
    let found = match resolved {
        Ok(Ok(i)) => i,
        Ok(Err(e)) => return inspect_error(&e),
        Err(_) => return internal(),
    };
    let ids: HashSet<String> = found
        .containers
        .iter()
        .map(|c| c.container_id.clone())
        .collect();
    let task_id = found.task.as_ref().map(|t| t.task_id.clone());
    let ended_at_start = found
        .containers
        .iter()
        .all(|c| matches!(c.state.as_str(), "exited" | "removed"));
    let header = json!({ "following": {
        "recognised": found.recognised,
        "task_id": task_id,
        "containers": found.containers.iter().map(|c| json!({
            "container_id": c.container_id,
            "name": c.container_name.clone().or(c.docker_name.clone()).unwrap_or_else(|| c.short_id.clone()),
            "state": c.state,
        })).collect::<Vec<_>>(),
    }});
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let view = state.view.clone();
    tokio::spawn(async move {
        let member = |b: &TailBatch| {
            ids.contains(b.identity.container_id.as_str())
                || task_id.is_some()
                    && b.identity
                        .ecs
                        .as_ref()
                        .and_then(|e| e.task_id.as_ref())
                        .map(|t| t.as_str())
                        == task_id.as_deref()
        };
        if tx.send(ndjson(&header)).await.is_err() {
            return;
        }
        let mut check = tokio::time::interval(TAIL_END_CHECK);
        let end = loop {
            tokio::select! {
                _ = stop.cancelled() => break "the collector is stopping",
                got = feed.recv() => match got {
                    Ok(batch) if member(&batch) => {
                        if tx.send(tail_lines(&batch)).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        internal_events::TailBatchesDropped { batches: n }.emit();
                        if tx.send(ndjson(&json!({ "dropped": n }))).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => break "the collector is stopping",
                },
                _ = check.tick() => {
                    if tx.is_closed() {
                        return;
                    }
                    if all_ended(&view, &ids, task_id.as_deref(), ended_at_start) {
                        break "every container exited and its logs were read to the end";
                    }
                }
            }
        };
        let _ = tx.send(ndjson(&json!({ "end": end }))).await;
    });
    let mut r = Response::new(ChannelBody(rx).boxed());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/x-ndjson"),
    );
    r
}

/// Whether every followed container has exited and had its last batch delivered.
fn all_ended(
    view: &InventoryView,
    ids: &HashSet<String>,
    task_id: Option<&str>,
    ended_at_start: bool,
) -> bool {
    let members: Vec<_> = view
        .containers()
        .into_iter()
        .filter(|c| {
            ids.contains(c.identity.container_id.as_str())
                || task_id.is_some()
                    && c.identity
                        .ecs
                        .as_ref()
                        .and_then(|e| e.task_id.as_ref())
                        .map(|t| t.as_str())
                        == task_id
        })
        .collect();
    if members.is_empty() {
        // Not live here: only a container that had already ended will never write again.
        return ended_at_start;
    }
    members.iter().all(|c| {
        c.lifecycle != Lifecycle::Running
            && c.sources
                .iter()
                .all(|(key, s)| !s.active && view.delivered(key).is_none_or(|d| d.last))
    })
}

fn ndjson(v: &serde_json::Value) -> Bytes {
    let mut b = serde_json::to_vec(v).unwrap_or_default();
    b.push(b'\n');
    Bytes::from(b)
}

/// A batch as JSON lines, one chunk.
fn tail_lines(b: &TailBatch) -> Bytes {
    let name = b.identity.display_name();
    let (file, lifecycle) = match &b.source.kind {
        crate::batch::SourceKind::DeclaredFile { container_path } => {
            (Some(container_path.to_string_lossy().into_owned()), false)
        }
        crate::batch::SourceKind::ContainerOutput => (None, false),
        crate::batch::SourceKind::Lifecycle => (None, true),
        crate::batch::SourceKind::Metrics => (Some("(metrics)".to_owned()), false),
    };
    let mut out = Vec::new();
    for l in &b.lines {
        let v = json!({
            "container_id": b.identity.container_id.as_str(),
            "name": name,
            "file": file,
            "stream": if lifecycle { Some("lifecycle") } else { l.stream.map(|s| s.as_str()) },
            "time": String::from_utf8_lossy(&l.time),
            "message": String::from_utf8_lossy(&l.message),
        });
        if serde_json::to_writer(&mut out, &v).is_ok() {
            out.push(b'\n');
        }
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::ControlClient;

    fn state(dir: &Path) -> ControlState {
        let config = Config {
            data_dir: dir.to_owned(),
            ..Config::default()
        };
        let (tail, _) = broadcast::channel(4);
        ControlState::new(
            config,
            None,
            InventoryView::new(),
            vec![Arc::new(SinkStats::new("file", "/x".into()))],
            tail,
        )
    }

    #[tokio::test]
    async fn socket_is_private_and_answers_every_route() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let server = ControlServer::bind(&path, state(dir.path())).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let stop = CancellationToken::new();
        let run = tokio::spawn(server.run(stop.clone()));
        let client = ControlClient::new(&path);
        let cases = [
            ("/live", StatusCode::OK, "live"),
            ("/ready", StatusCode::SERVICE_UNAVAILABLE, "not ready"),
            (
                "/metrics",
                StatusCode::OK,
                "# TYPE collector_read_records_total counter",
            ),
            ("/v1/sinks", StatusCode::OK, "\"sink\": \"file\""),
            (
                "/v1/overview",
                StatusCode::OK,
                "\"answered_by\": \"daemon\"",
            ),
            ("/v1/inspect", StatusCode::BAD_REQUEST, "missing ?q="),
            (
                "/v1/inspect?q=has%20space",
                StatusCode::BAD_REQUEST,
                "\"error\": \"usage\"",
            ),
            (
                "/v1/inspect?q=web&kind=nope",
                StatusCode::BAD_REQUEST,
                "unknown kind",
            ),
            (
                "/v1/inspect?q=nosuchthing",
                StatusCode::NOT_FOUND,
                "\"error\": \"not_found\"",
            ),
            (
                "/v1/containers/nosuchthing",
                StatusCode::NOT_FOUND,
                "container name",
            ),
            ("/v1/nope", StatusCode::NOT_FOUND, "unknown_endpoint"),
        ];
        for (target, status, contains) in cases {
            let (got, body) = client.get(target).await.unwrap();
            let body = String::from_utf8_lossy(&body);
            assert_eq!(got, status, "{target}: {body}");
            assert!(body.contains(contains), "{target}: {body}");
        }
        // A second daemon on the same socket is refused.
        assert!(matches!(
            ControlServer::bind(&path, state(dir.path())),
            Err(ControlError::SocketInUse { .. })
        ));
        stop.cancel();
        run.await.unwrap();
        assert!(!path.exists(), "socket left behind");
        // A stale socket (nobody answers) is replaced.
        let stale = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(stale);
        let again = ControlServer::bind(&path, state(dir.path())).unwrap();
        drop(again);
    }
}
