//! `companion health`: the container health check (the image has no shell, so ECS runs
//! `["CMD", "/companion", "health"]`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use tokio::net::{TcpStream, UnixStream};

/// How long the probe waits: ECS's health check timeout is 5 s by default; an answer on the
/// loopback takes microseconds.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Whether the relay accepts a TCP connection at `listen` (a wildcard address is probed on
/// the loopback).
pub async fn relay_answers(listen: SocketAddr) -> bool {
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// Whether the collector's socket accepts a connection.
pub async fn socket_answers(path: &Path) -> bool {
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, UnixStream::connect(path)).await,
        Ok(Ok(_))
    )
}
