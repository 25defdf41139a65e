//! The Docker Engine API through bollard: inspect, list, and the container events stream, reconnecting whenever the daemon goes away.
//!
//! The client connects lazily to a configurable unix socket and negotiates the API version
//! with the daemon (`GET /version`, then the lower of bollard's and the daemon's versions),
//! which is what the old companion's `server-docker-version.py` did by hand: bollard speaks
//! a newer API than the Docker 20.10 (API 1.41) found on ECS-optimised AMIs, and an old daemon
//! refuses a request whose version is above its own.
//!
//! The socket may be absent at start (the collector can start before dockerd) and the daemon
//! may restart at any time. Every call then fails with a clear [`DockerApiError`] and the next
//! call connects again; [`DockerApi::run_events`] never gives up, it reconnects with a capped
//! back-off and rescans after every reconnect, so events missed while disconnected are
//! repaired.
//!
//! ```no_run
//! # async fn demo() {
//! use collector::discover::docker_api::DockerApi;
//!
//! let api = DockerApi::new("/var/run/docker.sock");
//! let (tx, mut rx) = tokio::sync::mpsc::channel(256);
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let _events = tokio::spawn({
//!     let (api, shutdown) = (api.clone(), shutdown.clone());
//!     async move { api.run_events(tx, shutdown).await }
//! });
//! while let Some(event) = rx.recv().await {
//!     println!("{event:?}");
//! }
//! # }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::{EventMessage, EventMessageTypeEnum};
use bollard::query_parameters::{EventsOptionsBuilder, ListContainersOptionsBuilder};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{ContainerEvent, DiscoverySource, Sighting};
use crate::identify::docker_config::{self, DockerConfigError};
use crate::identify::{ContainerId, DockerContainerInfo};

/// dockerd's default socket.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// dockerd's default data root (`--data-root`).
pub const DEFAULT_DOCKER_ROOT: &str = "/var/lib/docker";
/// Inspect and list answer in milliseconds from memory; a daemon that takes longer is stuck
/// (e.g. on a hung storage driver), and discovery must not wait on it.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// First wait before reconnecting the events stream.
pub const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Cap of the reconnect wait: a daemon that comes back is noticed within this.
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How far back the events stream starts before the rescan that precedes it. dockerd replays
/// buffered events after `since` (its last 256, `daemon/events`), so events that happen
/// between the list and the subscription are not lost; the margin covers timestamp rounding.
const EVENTS_SINCE_MARGIN: Duration = Duration::from_secs(1);

/// Errors from the Docker API. All are per call; the caller counts them and retries later.
#[derive(Debug, thiserror::Error)]
pub enum DockerApiError {
    /// The socket cannot be used (absent: dockerd not started, or not mounted into our
    /// container).
    #[error("cannot connect to the Docker socket {}", socket.display())]
    Connect {
        /// The socket path.
        socket: PathBuf,
        /// The cause.
        #[source]
        source: BollardError,
    },
    /// The socket exists but `GET /version` failed (daemon down or restarting).
    #[error("cannot negotiate the API version with dockerd at {}", socket.display())]
    NegotiateVersion {
        /// The socket path.
        socket: PathBuf,
        /// The cause.
        #[source]
        source: BollardError,
    },
    /// `GET /containers/{id}/json` failed.
    #[error("cannot inspect container {id}")]
    InspectContainer {
        /// The container.
        id: ContainerId,
        /// The cause.
        #[source]
        source: BollardError,
    },
    /// dockerd does not know the container (404): it was removed.
    #[error("container {id} does not exist (removed?)")]
    ContainerNotFound {
        /// The container.
        id: ContainerId,
    },
    /// The inspect answer could not be mapped (no valid id).
    #[error("cannot read the inspect answer for container {id}")]
    ConvertInspect {
        /// The container.
        id: ContainerId,
        /// The cause.
        #[source]
        source: DockerConfigError,
    },
    /// `GET /containers/json?all=1` failed.
    #[error("cannot list containers")]
    ListContainers {
        /// The cause.
        #[source]
        source: BollardError,
    },
    /// dockerd did not answer within the timeout.
    #[error("dockerd did not answer {operation} within {timeout:?}")]
    RequestTimeout {
        /// What was asked (`version`, `inspect`, `list`).
        operation: &'static str,
        /// The timeout that expired.
        timeout: Duration,
    },
}

/// Where dockerd is and how long to wait for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DockerApiSettings {
    /// The unix socket (default [`DEFAULT_SOCKET`]); a host path mounted elsewhere when the
    /// collector runs in a container.
    pub socket_path: PathBuf,
    /// dockerd's data root as *we* see it (default [`DEFAULT_DOCKER_ROOT`]), to resolve
    /// volume paths inspect leaves empty.
    pub docker_root: PathBuf,
    /// Timeout per request (default [`DEFAULT_REQUEST_TIMEOUT`]); not applied to the events
    /// stream, which is idle for as long as nothing happens.
    pub request_timeout: Duration,
}

impl Default for DockerApiSettings {
    fn default() -> Self {
        Self {
            socket_path: PathBuf::from(DEFAULT_SOCKET),
            docker_root: PathBuf::from(DEFAULT_DOCKER_ROOT),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// A lazily connected Docker API client. Cheap to clone: clones share the connection.
#[derive(Clone, Debug)]
pub struct DockerApi {
    settings: Arc<DockerApiSettings>,
    /// The negotiated client, dropped after a connection-level failure so the next call
    /// connects (and negotiates) again: the daemon may have been upgraded or replaced.
    client: Arc<Mutex<Option<Docker>>>,
}

impl DockerApi {
    /// A client of the daemon at `socket_path`, other settings at their defaults. Does no
    /// I/O: the first call connects.
    pub fn new(socket_path: impl Into<PathBuf>) -> Self {
        Self::with_settings(DockerApiSettings {
            socket_path: socket_path.into(),
            ..DockerApiSettings::default()
        })
    }

    /// A client for `settings`. Does no I/O: the first call connects.
    pub fn with_settings(settings: DockerApiSettings) -> Self {
        Self {
            settings: Arc::new(settings),
            client: Arc::new(Mutex::new(None)),
        }
    }

    /// The settings the client was built with.
    pub fn settings(&self) -> &DockerApiSettings {
        self.settings.as_ref()
    }

    /// Inspects one container (`GET /containers/{id}/json`), mapped like its
    /// `config.v2.json` by [`docker_config::from_inspect`].
    ///
    /// # Errors
    /// [`DockerApiError::ContainerNotFound`] when dockerd does not know the id; connection,
    /// timeout and API errors otherwise.
    pub async fn inspect(&self, id: &ContainerId) -> Result<DockerContainerInfo, DockerApiError> {
        let docker = self.client().await?;
        let resp = self
            .bounded("inspect", docker.inspect_container(id.as_str(), None))
            .await?
            .map_err(|source| {
                self.note_failure(&source);
                match source {
                    BollardError::DockerResponseServerError {
                        status_code: 404, ..
                    } => DockerApiError::ContainerNotFound { id: id.clone() },
                    source => DockerApiError::InspectContainer {
                        id: id.clone(),
                        source,
                    },
                }
            })?;
        docker_config::from_inspect(&resp, &self.settings.docker_root).map_err(|source| {
            DockerApiError::ConvertInspect {
                id: id.clone(),
                source,
            }
        })
    }

    /// `GET /containers/json`, with stopped containers when `all`.
    async fn list_containers(
        &self,
        all: bool,
    ) -> Result<Vec<bollard::models::ContainerSummary>, DockerApiError> {
        let docker = self.client().await?;
        let options = ListContainersOptionsBuilder::new().all(all).build();
        self.bounded("list", docker.list_containers(Some(options)))
            .await?
            .map_err(|source| {
                self.note_failure(&source);
                DockerApiError::ListContainers { source }
            })
    }

    /// Ids of all containers, running or not (`GET /containers/json?all=1`). Ids that are not
    /// container ids are skipped with a log line.
    ///
    /// # Errors
    /// Connection, timeout and API errors.
    pub async fn list_ids(&self) -> Result<Vec<ContainerId>, DockerApiError> {
        let summaries = self.list_containers(true).await?;
        Ok(summaries
            .into_iter()
            .filter_map(|s| {
                let raw = s.id.unwrap_or_default();
                let id = ContainerId::parse(&raw);
                if id.is_none() {
                    tracing::warn!(id = %raw, "Docker listed a container with an invalid id; skipped.");
                }
                id
            })
            .collect())
    }

    /// The addresses of every running container on Docker networks
    /// (`GET /containers/json`, `NetworkSettings.Networks.*.IPAddress` and
    /// `GlobalIPv6Address`), with its labels: metrics ingest attributes a TCP or UDP peer to
    /// the container that holds its address. Containers sharing another's network namespace
    /// (`--network container:`, host mode) have no address of their own here.
    ///
    /// # Errors
    /// Connection, timeout and API errors.
    pub async fn network_addresses(
        &self,
    ) -> Result<Vec<(ContainerId, Vec<std::net::IpAddr>, BTreeMap<String, String>)>, DockerApiError>
    {
        let summaries = self.list_containers(false).await?;
        Ok(summaries
            .into_iter()
            .filter_map(|s| {
                let id = ContainerId::parse(s.id.as_deref().unwrap_or_default())?;
                let ips = s
                    .network_settings
                    .and_then(|n| n.networks)
                    .unwrap_or_default()
                    .into_values()
                    .flat_map(|e| [e.ip_address, e.global_ipv6_address])
                    .flatten()
                    .filter_map(|ip| ip.parse().ok())
                    .collect();
                let labels = s.labels.unwrap_or_default().into_iter().collect();
                Some((id, ips, labels))
            })
            .collect())
    }

    /// Follows dockerd's container events and sends them to `tx` until `shutdown` is
    /// cancelled (or `tx`'s receiver is dropped). Never fails: while dockerd is unreachable it
    /// retries with a back-off from [`RECONNECT_BACKOFF_MIN`] doubling to
    /// [`RECONNECT_BACKOFF_MAX`].
    ///
    /// Events: `create`/`start` -> [`ContainerEvent::Seen`] (with the PID after `start`, when
    /// the container still runs), `die` -> [`ContainerEvent::Exited`], `destroy` ->
    /// [`ContainerEvent::Removed`].
    pub async fn run_events(&self, tx: mpsc::Sender<ContainerEvent>, shutdown: CancellationToken) {
        // Walkthrough: each turn of the loop is one connection. Connect (negotiating the
        // version); note the time; list every container and send a Seen for each, then
        // ScanComplete, so whatever changed while we were away is repaired; then follow the
        // events stream from the noted time (dockerd replays what happened during the list)
        // until it ends or fails. Then wait, doubling the wait while connecting keeps failing,
        // and start over. Sends wait for room in the bounded channel, or for shutdown.
        let mut backoff = RECONNECT_BACKOFF_MIN;
        let mut first = true;
        // Some(true) connected, Some(false) down and reported, None not tried yet: each
        // transition is logged once, the retries in between only at debug level.
        let mut connected: Option<bool> = None;
        loop {
            if !first {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
            }
            first = false;
            if shutdown.is_cancelled() {
                return;
            }

            let since = SystemTime::now()
                .checked_sub(EVENTS_SINCE_MARGIN)
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .unwrap_or_default();
            let ids = tokio::select! {
                () = shutdown.cancelled() => return,
                ids = self.list_ids() => ids,
            };
            let ids = match ids {
                Ok(ids) => ids,
                Err(error) => {
                    if connected == Some(false) {
                        tracing::debug!(%error, retry_in = ?backoff, "Docker API still unreachable.");
                    } else {
                        tracing::warn!(%error, "Docker API unreachable; retrying in the background.");
                    }
                    connected = Some(false);
                    continue;
                }
            };
            if connected != Some(true) {
                tracing::info!(
                    socket = %self.settings.socket_path.display(),
                    containers = ids.len(),
                    "Connected to the Docker API.",
                );
            }
            connected = Some(true);
            backoff = RECONNECT_BACKOFF_MIN;
            for container_id in ids {
                let seen = ContainerEvent::Seen(sighting(container_id, None));
                if !send(&tx, seen, &shutdown).await {
                    return;
                }
            }
            let done = ContainerEvent::ScanComplete {
                source: DiscoverySource::DockerApi,
            };
            if !send(&tx, done, &shutdown).await {
                return;
            }

            let Ok(docker) = self.client().await else {
                continue;
            };
            let filters = HashMap::from([
                ("type", vec!["container"]),
                ("event", vec!["create", "start", "die", "destroy"]),
            ]);
            let since = format!("{}.{:09}", since.as_secs(), since.subsec_nanos());
            let options = EventsOptionsBuilder::new()
                .since(&since)
                .filters(&filters)
                .build();
            let mut events = docker.events(Some(options));
            loop {
                let next = tokio::select! {
                    () = shutdown.cancelled() => return,
                    next = events.next() => next,
                };
                match next {
                    None => {
                        tracing::info!("Docker events stream ended; reconnecting.");
                        break;
                    }
                    Some(Err(error)) => {
                        tracing::warn!(%error, "Docker events stream failed; reconnecting.");
                        self.reset();
                        break;
                    }
                    Some(Ok(message)) => {
                        // Mapping may inspect (bounded by the request timeout); shutdown
                        // must not wait for it.
                        let event = tokio::select! {
                            () = shutdown.cancelled() => return,
                            event = self.container_event(message) => event,
                        };
                        let Some(event) = event else {
                            continue;
                        };
                        if !send(&tx, event, &shutdown).await {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Maps one Docker event to ours; `None` for events we do not follow.
    async fn container_event(&self, message: EventMessage) -> Option<ContainerEvent> {
        if message.typ != Some(EventMessageTypeEnum::CONTAINER) {
            return None;
        }
        let raw = message.actor.and_then(|a| a.id).unwrap_or_default();
        let Some(container_id) = ContainerId::parse(&raw) else {
            tracing::debug!(id = %raw, "Docker event for an invalid container id; skipped.");
            return None;
        };
        let source = DiscoverySource::DockerApi;
        match message.action.as_deref() {
            Some("create") => Some(ContainerEvent::Seen(sighting(container_id, None))),
            Some("start") => {
                // The event carries no PID; inspect has it while the container runs. A
                // container that already exited (or an inspect that fails) just has none.
                let pid = match self.inspect(&container_id).await {
                    Ok(info) if info.state.running && info.state.pid > 0 => Some(info.state.pid),
                    Ok(_) => None,
                    Err(error) => {
                        tracing::debug!(%error, "Inspect after start failed; PID unknown.");
                        None
                    }
                };
                Some(ContainerEvent::Seen(sighting(container_id, pid)))
            }
            Some("die") => Some(ContainerEvent::Exited {
                container_id,
                source,
            }),
            Some("destroy") => Some(ContainerEvent::Removed {
                container_id,
                source,
            }),
            _ => None,
        }
    }

    /// The connected client, connecting and negotiating the version first if needed.
    async fn client(&self) -> Result<Docker, DockerApiError> {
        if let Some(docker) = self.lock().as_ref() {
            return Ok(docker.clone());
        }
        let socket = &self.settings.socket_path;
        // bollard's own timeout is whole seconds and covers only the wait for headers.
        let secs = self.settings.request_timeout.as_secs_f64().ceil().max(1.0) as u64;
        let docker = Docker::connect_with_unix(
            &socket.to_string_lossy(),
            secs,
            bollard::API_DEFAULT_VERSION,
        )
        .map_err(|source| DockerApiError::Connect {
            socket: socket.clone(),
            source,
        })?;
        let docker = self
            .bounded("version", docker.negotiate_version())
            .await?
            .map_err(|source| DockerApiError::NegotiateVersion {
                socket: socket.clone(),
                source,
            })?;
        let version = docker.client_version();
        tracing::debug!(
            socket = %socket.display(),
            api_version = %format!("{}.{}", version.major_version, version.minor_version),
            "Negotiated the Docker API version.",
        );
        *self.lock() = Some(docker.clone());
        Ok(docker)
    }

    /// Forgets the client after an error that may mean the daemon went away; answers from
    /// dockerd (a 404, a 500) and JSON errors do not.
    fn note_failure(&self, error: &BollardError) {
        if !matches!(
            error,
            BollardError::DockerResponseServerError { .. }
                | BollardError::JsonDataError { .. }
                | BollardError::JsonSerdeError { .. }
        ) {
            self.reset();
        }
    }

    fn reset(&self) {
        *self.lock() = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Docker>> {
        // Only an Option is swapped under the lock; a poisoned lock still holds a valid one.
        self.client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `fut` under the request timeout; a timeout also drops the client.
    async fn bounded<T>(
        &self,
        operation: &'static str,
        fut: impl Future<Output = T>,
    ) -> Result<T, DockerApiError> {
        let timeout = self.settings.request_timeout;
        tokio::time::timeout(timeout, fut).await.map_err(|_| {
            self.reset();
            DockerApiError::RequestTimeout { operation, timeout }
        })
    }
}

fn sighting(container_id: ContainerId, pid: Option<i32>) -> Sighting {
    Sighting {
        container_id,
        cgroup_path: None,
        cgroup_id: None,
        pid,
        source: DiscoverySource::DockerApi,
    }
}

/// Sends unless shutdown comes first; false when we should stop (shutdown, or nobody listens).
async fn send(
    tx: &mpsc::Sender<ContainerEvent>,
    event: ContainerEvent,
    shutdown: &CancellationToken,
) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        sent = tx.send(event) => sent.is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;
    use std::time::Instant;

    use super::*;

    use crate::test_support::{TEST_IMAGE, docker as docker_cli};

    /// Removes the named containers even when an assertion fails.
    struct Cleanup(Vec<String>);

    impl Drop for Cleanup {
        fn drop(&mut self) {
            for name in &self.0 {
                let _ = Command::new("docker").args(["rm", "-f", name]).output();
            }
        }
    }

    fn nonce(tag: &str) -> String {
        format!("collector-test-{tag}-{}", std::process::id())
    }

    #[tokio::test]
    async fn inspect_and_list_a_real_container() {
        let name = nonce("docker-api-inspect");
        let _cleanup = Cleanup(vec![name.clone()]);
        let id = docker_cli(&[
            "run",
            "-d",
            "--name",
            &name,
            "-l",
            "com.amazonaws.ecs.container-name=web",
            "-l",
            "team=logs",
            TEST_IMAGE,
            "sleep",
            "60",
        ]);
        let id = ContainerId::parse(id.trim()).unwrap();
        let api = DockerApi::new(DEFAULT_SOCKET);

        let info = api.inspect(&id).await.unwrap();
        assert_eq!(info.id, id);
        assert_eq!(info.name, name);
        assert_eq!(info.image, TEST_IMAGE);
        let want: std::collections::BTreeMap<String, String> = [
            ("com.amazonaws.ecs.container-name", "web"),
            ("team", "logs"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(info.labels, want);
        assert!(info.state.running && info.state.pid > 0, "{:?}", info.state);
        assert_eq!(info.log_driver.as_deref(), Some("json-file"));

        // The version was negotiated down to what this daemon speaks, not bollard's default.
        let negotiated = api.lock().as_ref().unwrap().client_version();
        let server = docker_cli(&["version", "--format", "{{.Server.APIVersion}}"]);
        assert_eq!(
            format!("{}.{}", negotiated.major_version, negotiated.minor_version),
            server.trim()
        );

        assert!(api.list_ids().await.unwrap().contains(&id));

        let unknown = ContainerId::parse(&"0".repeat(64)).unwrap();
        let err = api.inspect(&unknown).await.unwrap_err();
        assert!(
            matches!(err, DockerApiError::ContainerNotFound { .. }),
            "{err:?}"
        );
        // A 404 is an answer: the connection is kept.
        assert!(api.lock().is_some());
    }

    #[tokio::test]
    async fn missing_socket_is_an_error_and_events_keep_retrying() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        let api = DockerApi::new(&socket);
        let id = ContainerId::parse(&"a".repeat(64)).unwrap();
        let err = api.inspect(&id).await.unwrap_err();
        assert!(matches!(err, DockerApiError::Connect { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&*socket.to_string_lossy()),
            "{err}"
        );
        let err = api.list_ids().await.unwrap_err();
        assert!(matches!(err, DockerApiError::Connect { .. }), "{err:?}");

        // A socket file nobody listens on: connecting fails at the version request.
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        drop(listener);
        let err = api.list_ids().await.unwrap_err();
        assert!(
            matches!(err, DockerApiError::NegotiateVersion { .. }),
            "{err:?}"
        );

        let (tx, mut rx) = mpsc::channel(8);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let (api, shutdown) = (api.clone(), shutdown.clone());
            async move { api.run_events(tx, shutdown).await }
        });
        // Long enough for several attempts (0.5 s, 1 s back-off).
        tokio::time::sleep(Duration::from_millis(1700)).await;
        assert!(!task.is_finished(), "run_events gave up");
        let stopped = Instant::now();
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("run_events did not stop on shutdown")
            .expect("run_events panicked");
        assert!(stopped.elapsed() < Duration::from_millis(500));
        assert!(rx.try_recv().is_err(), "nothing can have been seen");
    }

    async fn next_event(rx: &mut mpsc::Receiver<ContainerEvent>) -> ContainerEvent {
        tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("no Docker event within 20 s")
            .expect("run_events stopped")
    }

    fn event_id(event: &ContainerEvent) -> Option<&ContainerId> {
        match event {
            ContainerEvent::Seen(s) => Some(&s.container_id),
            ContainerEvent::Exited { container_id, .. }
            | ContainerEvent::Removed { container_id, .. } => Some(container_id),
            ContainerEvent::ScanComplete { .. } => None,
            ContainerEvent::ProcessExited(p) => Some(&p.container_id),
        }
    }

    #[tokio::test]
    async fn events_of_a_short_lived_container() {
        // A container that exists before we connect must be in the initial scan.
        let existing = nonce("docker-api-existing");
        let running = nonce("docker-api-running");
        let _cleanup = Cleanup(vec![existing.clone(), running.clone()]);
        let existing_id = docker_cli(&["create", "--name", &existing, TEST_IMAGE, "sh"]);
        let existing_id = ContainerId::parse(existing_id.trim()).unwrap();

        let api = DockerApi::new(DEFAULT_SOCKET);
        let (tx, mut rx) = mpsc::channel(64);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let (api, shutdown) = (api.clone(), shutdown.clone());
            async move { api.run_events(tx, shutdown).await }
        });

        let mut scanned = Vec::new();
        loop {
            match next_event(&mut rx).await {
                ContainerEvent::ScanComplete { source } => {
                    assert_eq!(source, DiscoverySource::DockerApi);
                    break;
                }
                ContainerEvent::Seen(s) => {
                    assert_eq!(s.source, DiscoverySource::DockerApi);
                    scanned.push(s.container_id);
                }
                _ => {}
            }
        }
        assert!(
            scanned.contains(&existing_id),
            "initial scan missed {existing_id}"
        );

        let dir = tempfile::tempdir().unwrap();
        let cidfile = dir.path().join("cid");
        docker_cli(&[
            "run",
            "--rm",
            "--cidfile",
            &cidfile.to_string_lossy(),
            TEST_IMAGE,
            // The imported busybox has only a few applets; `true` is a shell builtin.
            "sh",
            "-c",
            "true",
        ]);
        let id = ContainerId::parse(std::fs::read_to_string(&cidfile).unwrap().trim()).unwrap();

        // Other tests may run containers meanwhile: keep only this one's events.
        let mut seen = Vec::new();
        loop {
            let event = next_event(&mut rx).await;
            if event_id(&event) != Some(&id) {
                continue;
            }
            let removed = matches!(event, ContainerEvent::Removed { .. });
            seen.push(event);
            if removed {
                break;
            }
        }
        let kinds: Vec<&str> = seen
            .iter()
            .map(|e| match e {
                ContainerEvent::Seen(_) => "seen",
                ContainerEvent::Exited { .. } => "exited",
                ContainerEvent::Removed { .. } => "removed",
                ContainerEvent::ScanComplete { .. } => "scan",
                ContainerEvent::ProcessExited(_) => "process exited",
            })
            .collect();
        // create and start give a Seen each; die; destroy.
        assert_eq!(kinds, ["seen", "seen", "exited", "removed"], "{seen:?}");

        // A container that keeps running: the Seen after `start` carries its PID.
        let id = docker_cli(&["run", "-d", "--name", &running, TEST_IMAGE, "sleep", "30"]);
        let id = ContainerId::parse(id.trim()).unwrap();
        let pid = loop {
            if let ContainerEvent::Seen(s) = next_event(&mut rx).await
                && s.container_id == id
                && let Some(pid) = s.pid
            {
                break pid;
            }
        };
        let want = docker_cli(&["inspect", "--format", "{{.State.Pid}}", &running]);
        assert_eq!(pid.to_string(), want.trim());

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("run_events did not stop on shutdown")
            .expect("run_events panicked");
    }
}
