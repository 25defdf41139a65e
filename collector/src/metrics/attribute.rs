//! Who sent it: from the connection to the container and its task.
//!
//! - Unix socket: the kernel records the peer's credentials at `connect(2)` (`SO_PEERCRED`,
//!   `unix(7)`), with the PID translated into the collector's PID namespace (the host's).
//!   `/proc/<pid>/cgroup` then names the container ([`crate::identify::cgroup::container_of`]).
//!   The look-up is made as the connection is accepted, before anything is read, so a sender
//!   that exits right after writing is still found while its process exists; a peer gone
//!   before that is unattributed (counted).
//! - TCP and UDP: the peer address is matched against the addresses Docker gave running
//!   containers on its networks (`NetworkSettings.Networks`). The map is refreshed when an
//!   address is unknown (at most once per [`REFRESH_MIN_INTERVAL`]) and when the container a
//!   cached address names is no longer running, since Docker reuses addresses. A peer whose
//!   address is no container's may be in the collector's own network namespace (host
//!   network mode): the process holding its TCP socket, or the UDP socket it sends from, is
//!   found (`netns.rs`) and attributed by its cgroup, as above.
//!
//! The identity (task ARN, family, container name) comes from the inventory's view; for a
//! container the inventory has not identified yet, from its cgroup path or Docker labels.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::debug;

use super::Origin;
use crate::control::InventoryView;
use crate::discover::docker_api::DockerApi;
use crate::identify::cgroup::{container_of, parse_proc_cgroup};
use crate::identify::labels::ecs_from_labels;
use crate::identify::{ContainerId, ContainerIdentity, TaskId};
use crate::state::Lifecycle;

/// The address map is asked of Docker at most this often on misses.
pub const REFRESH_MIN_INTERVAL: Duration = Duration::from_secs(1);

/// A cached address is trusted this long without re-checking Docker.
const ADDRESS_TTL: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
struct AddressMap {
    /// Each running container's addresses, with its labels.
    by_ip: HashMap<IpAddr, (ContainerId, Arc<BTreeMap<String, String>>)>,
    /// Addresses of running containers' network namespaces that Docker does not know
    /// (awsvpc tasks: the ECS CNI plugins configure them), found in procfs.
    by_netns_ip: HashMap<IpAddr, ContainerId>,
    /// When Docker was last asked: bounds how often a miss asks again.
    refreshed: Option<Instant>,
    /// Addresses still unknown after a refresh that a sender waited for, and when: such a
    /// sender (another host, the host itself) does not wait again for [`UNKNOWN_TTL`].
    unknown: HashMap<IpAddr, Instant>,
}

/// How long an address found unknown after waiting for a refresh is not waited for again.
const UNKNOWN_TTL: Duration = Duration::from_secs(10);

/// The most addresses remembered as unknown (then forgotten at once).
const MAX_UNKNOWN: usize = 4096;

/// Finds the container (and task) behind a peer.
#[derive(Debug)]
pub struct Attributor {
    /// Where `/proc/<pid>/cgroup` and `/proc/net/tcp` are read (the host's procfs).
    procfs_root: PathBuf,
    /// The inventory's identities: the task behind a container.
    view: InventoryView,
    /// Container addresses and labels of containers the inventory does not know yet.
    docker: DockerApi,
    /// Container addresses, refreshed from Docker; async so a refresh does not block a thread.
    addresses: tokio::sync::Mutex<AddressMap>,
    /// Origins by container, so a UDP stream does not rebuild one per datagram.
    origins: Mutex<HashMap<ContainerId, (Arc<Origin>, Instant)>>,
    /// UDP senders of our own network namespace by address and port, found or not: the fd
    /// scan is not repeated per datagram.
    udp_peers: Mutex<HashMap<std::net::SocketAddr, (Arc<Origin>, Instant)>>,
    /// The second the UDP scans are counted in, and how many were started in it.
    udp_scans: Mutex<(Instant, u32)>,
}

/// fd scans for UDP senders started per second at most; past it, a new sender is
/// unattributed until a later datagram (a flood from many ports costs little).
const UDP_SCANS_PER_SECOND: u32 = 20;

/// UDP senders remembered at most.
const UDP_PEERS_MAX: usize = 4096;

impl Attributor {
    /// An attributor reading `procfs_root`, the inventory's `view` and Docker.
    pub fn new(procfs_root: PathBuf, view: InventoryView, docker: DockerApi) -> Self {
        Self {
            procfs_root,
            view,
            docker,
            addresses: tokio::sync::Mutex::new(AddressMap::default()),
            origins: Mutex::new(HashMap::new()),
            udp_peers: Mutex::new(HashMap::new()),
            udp_scans: Mutex::new((Instant::now(), 0)),
        }
    }

    /// The sender of a UDP datagram from this network namespace (host network mode, host
    /// processes): the process holding the socket it was sent from (`super::netns`), while
    /// that socket is open. Cached per sender address and port for [`ADDRESS_TTL`].
    pub async fn by_udp_peer(&self, peer: std::net::SocketAddr) -> Arc<Origin> {
        if let Some((o, at)) = self
            .udp_peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&peer)
            && at.elapsed() < ADDRESS_TTL
        {
            return o.clone();
        }
        {
            let mut scans = self.udp_scans.lock().unwrap_or_else(|p| p.into_inner());
            if scans.0.elapsed() >= Duration::from_secs(1) {
                *scans = (Instant::now(), 0);
            }
            if scans.1 >= UDP_SCANS_PER_SECOND {
                return Arc::new(Origin::unattributed());
            }
            scans.1 += 1;
        }
        let procfs = self.procfs_root.clone();
        let pid = tokio::task::spawn_blocking(move || super::netns::udp_peer_pid(&procfs, peer))
            .await
            .ok()
            .flatten();
        let origin = match pid {
            Some(pid) => self.complete(self.by_pid_via(pid, "peer_socket")).await,
            None => Arc::new(Origin::unattributed()),
        };
        let mut peers = self.udp_peers.lock().unwrap_or_else(|p| p.into_inner());
        if peers.len() >= UDP_PEERS_MAX {
            peers.retain(|_, (_, at)| at.elapsed() < ADDRESS_TTL);
            if peers.len() >= UDP_PEERS_MAX {
                peers.clear();
            }
        }
        peers.insert(peer, (origin.clone(), Instant::now()));
        origin
    }

    /// The sender behind a unix socket peer's PID.
    pub fn by_pid(&self, pid: i32) -> Arc<Origin> {
        self.by_pid_via(pid, "peer_credentials")
    }

    /// The sender of a TCP connection from this network namespace (host network mode, host
    /// processes): the process holding the peer's socket (`super::netns`).
    pub async fn by_tcp_peer(
        &self,
        peer: std::net::SocketAddr,
        local: std::net::SocketAddr,
    ) -> Arc<Origin> {
        let procfs = self.procfs_root.clone();
        let pid =
            tokio::task::spawn_blocking(move || super::netns::tcp_peer_pid(&procfs, peer, local))
                .await
                .ok()
                .flatten();
        match pid {
            Some(pid) => self.complete(self.by_pid_via(pid, "peer_socket")).await,
            None => Arc::new(Origin::unattributed()),
        }
    }

    /// Completes the origin of a container the inventory has not identified yet (one that
    /// sends in its first milliseconds) from Docker's labels, so it carries its task's family
    /// and cluster like the others. Anything else is returned as is.
    pub async fn complete(&self, origin: Arc<Origin>) -> Arc<Origin> {
        let Some(id) = origin.container_id.clone() else {
            return origin;
        };
        if origin.family.is_some() || self.view.container(&id).is_some() {
            return origin;
        }
        let info = match self.docker.inspect(&id).await {
            Ok(info) => info,
            Err(e) => {
                debug!(container_id = %id, error = %crate::internal_events::chain(&e), "Cannot inspect a metrics sender.");
                return origin;
            }
        };
        let mut identity = ContainerIdentity::new(id.clone());
        let mut ecs = ecs_from_labels(&info.labels);
        if let Some(t) = origin.task_id.clone() {
            ecs.get_or_insert_with(Default::default)
                .task_id
                .get_or_insert(t);
        }
        identity.ecs = ecs;
        identity.docker_name = Some(info.name);
        let complete = Arc::new(Origin::of_identity(&identity, origin.via));
        let mut origins = self.origins.lock().unwrap_or_else(|p| p.into_inner());
        if origins.len() > 4096 {
            origins.clear();
        }
        origins.insert(id, (complete.clone(), Instant::now()));
        complete
    }

    fn by_pid_via(&self, pid: i32, via: &'static str) -> Arc<Origin> {
        let path = self.procfs_root.join(pid.to_string()).join("cgroup");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                debug!(pid, error = %e, "Metrics peer's cgroup unreadable (exited?); unattributed.");
                return Arc::new(Origin::unattributed());
            }
        };
        match container_of(&parse_proc_cgroup(&text)) {
            Some((hint, _)) => self.origin_of(&hint.container_id, hint.task_id, None, via),
            None => Arc::new(Origin::unattributed()),
        }
    }

    /// As [`Self::by_address`], for a sender that can wait (a TCP connection is served by a
    /// task of its own; UDP datagrams of unknown senders go through a queue of their own,
    /// [`super::listen`]): when the address is unknown, waits for the next allowed refresh of
    /// the addresses (at most [`REFRESH_MIN_INTERVAL`]) and looks again. Otherwise a container
    /// that connects within a second of another lookup, before its address was listed, stays
    /// unattributed for the whole connection. Loopback peers (the host itself, or a container
    /// in the host's network namespace, found by socket instead) do not wait.
    pub async fn by_address_waiting(&self, ip: IpAddr) -> Arc<Origin> {
        let origin = self.by_address(ip).await;
        if !origin.is_unattributed() || ip.is_loopback() {
            return origin;
        }
        let wait = {
            let map = self.addresses.lock().await;
            if map
                .unknown
                .get(&ip)
                .is_some_and(|at| at.elapsed() < UNKNOWN_TTL)
            {
                return origin;
            }
            map.refreshed.map_or(Duration::ZERO, |at| {
                REFRESH_MIN_INTERVAL.saturating_sub(at.elapsed())
            })
        };
        tokio::time::sleep(wait).await;
        let origin = self.by_address(ip).await;
        if origin.is_unattributed() {
            let mut map = self.addresses.lock().await;
            if map.unknown.len() >= MAX_UNKNOWN {
                map.unknown.clear();
            }
            map.unknown.insert(ip, Instant::now());
        }
        origin
    }

    /// The sender behind a TCP or UDP peer address.
    pub async fn by_address(&self, ip: IpAddr) -> Arc<Origin> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let mut map = self.addresses.lock().await;
        let fresh = map.refreshed.is_some_and(|at| at.elapsed() < ADDRESS_TTL);
        let cached = map
            .by_ip
            .get(&ip)
            .map(|(id, _)| id.clone())
            .or_else(|| map.by_netns_ip.get(&ip).cloned());
        let still_running = cached.as_ref().is_some_and(|id| {
            self.view
                .container(id)
                .is_none_or(|c| c.lifecycle == Lifecycle::Running)
        });
        let refresh_allowed = map
            .refreshed
            .is_none_or(|at| at.elapsed() >= REFRESH_MIN_INTERVAL);
        if (cached.is_none() || !still_running || !fresh) && refresh_allowed {
            match self.docker.network_addresses().await {
                Ok(list) => {
                    map.by_ip.clear();
                    for (id, ips, labels) in list {
                        let labels = Arc::new(labels);
                        for ip in ips {
                            map.by_ip.insert(ip, (id.clone(), labels.clone()));
                        }
                    }
                }
                Err(e) => {
                    debug!(error = %crate::internal_events::chain(&e), "Cannot list container addresses.");
                }
            }
            let running: Vec<(ContainerId, i32, bool)> = self
                .view
                .containers()
                .into_iter()
                .filter(|c| c.lifecycle == Lifecycle::Running)
                .filter_map(|c| {
                    let preferred = !c.identity.is_companion()
                        && !c.identity.display_name().starts_with("~internal~");
                    Some((c.identity.container_id.clone(), c.pid?, preferred))
                })
                .collect();
            let procfs = self.procfs_root.clone();
            map.by_netns_ip =
                tokio::task::spawn_blocking(move || netns_addresses(&procfs, running))
                    .await
                    .unwrap_or_default();
            map.refreshed = Some(Instant::now());
            debug!(%ip, addresses = map.by_ip.len(), netns_addresses = map.by_netns_ip.len(), "Sender addresses refreshed.");
        }
        if let Some((id, labels)) = map.by_ip.get(&ip).cloned() {
            drop(map);
            return self.origin_of(&id, None, Some(&labels), "peer_address");
        }
        match map.by_netns_ip.get(&ip).cloned() {
            Some(id) => {
                drop(map);
                self.origin_of(&id, None, None, "peer_netns")
            }
            None => Arc::new(Origin::unattributed()),
        }
    }

    /// The origin of container `id`: from the inventory when it knows it, else from what the
    /// caller found (the task id in the cgroup path, Docker labels).
    fn origin_of(
        &self,
        id: &ContainerId,
        task_hint: Option<TaskId>,
        labels: Option<&BTreeMap<String, String>>,
        via: &'static str,
    ) -> Arc<Origin> {
        let mut origins = self.origins.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((o, at)) = origins.get(id)
            && at.elapsed() < ADDRESS_TTL
            && o.via == via
        {
            return o.clone();
        }
        let origin = match self.view.container(id) {
            Some(live) => Arc::new(Origin::of_identity(&live.identity, via)),
            None => {
                let mut identity = ContainerIdentity::new(id.clone());
                let mut ecs = labels.and_then(ecs_from_labels);
                if let Some(t) = task_hint {
                    ecs.get_or_insert_with(Default::default)
                        .task_id
                        .get_or_insert(t);
                }
                identity.ecs = ecs;
                // Not cached: the inventory will know more in a moment.
                return Arc::new(Origin::of_identity(&identity, via));
            }
        };
        if origins.len() > 4096 {
            origins.clear();
        }
        origins.insert(id.clone(), (origin.clone(), Instant::now()));
        origin
    }
}

/// The addresses of running containers' network namespaces, each namespace read once, the
/// collector's own (host network mode: [`super::netns`] finds those senders by socket) left
/// out. Containers sharing a namespace (an awsvpc task) are one sender: a `preferred` one
/// (not the companion, not the ECS agent's pause container) is named, the lowest id first.
fn netns_addresses(
    procfs_root: &std::path::Path,
    mut containers: Vec<(ContainerId, i32, bool)>,
) -> HashMap<IpAddr, ContainerId> {
    use std::os::unix::fs::MetadataExt as _;
    let own = std::fs::metadata(procfs_root.join("self/ns/net"))
        .ok()
        .map(|m| m.ino());
    containers.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
    let mut seen = std::collections::HashSet::new();
    let mut out = HashMap::new();
    for (id, pid, _) in containers {
        let Some((ns, ips)) = super::netns::local_addresses(procfs_root, pid) else {
            continue;
        };
        if Some(ns) == own || !seen.insert(ns) {
            continue;
        }
        for ip in ips {
            out.entry(ip).or_insert_with(|| id.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn procfs_with(pid: i32, cgroup: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(pid.to_string());
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("cgroup"), cgroup).unwrap();
        dir
    }

    #[tokio::test]
    async fn a_pid_in_an_ecs_cgroup_is_its_task_and_an_unknown_pid_is_unattributed() {
        let id = "a".repeat(64);
        let task = "0123456789abcdef0123456789abcdef";
        let procfs = procfs_with(42, &format!("0::/ecs/{task}/{id}\n"));
        let a = Attributor::new(
            procfs.path().to_owned(),
            InventoryView::new(),
            DockerApi::new("/nonexistent.sock"),
        );
        let o = a.by_pid(42);
        assert_eq!(o.owner, task);
        assert_eq!(
            o.container_id.as_ref().map(|c| c.as_str()),
            Some(id.as_str())
        );
        assert_eq!(o.via, "peer_credentials");
        assert!(a.by_pid(43).is_unattributed());
        let host = procfs_with(44, "0::/user.slice/session-1.scope\n");
        let a = Attributor::new(
            host.path().to_owned(),
            InventoryView::new(),
            DockerApi::new("/nonexistent.sock"),
        );
        assert!(a.by_pid(44).is_unattributed());
    }

    #[tokio::test]
    async fn an_address_docker_does_not_know_is_unattributed() {
        let a = Attributor::new(
            "/nonexistent".into(),
            InventoryView::new(),
            DockerApi::new("/nonexistent.sock"),
        );
        assert!(
            a.by_address("10.9.8.7".parse().unwrap())
                .await
                .is_unattributed()
        );
    }
}
