//! TCP and UDP peers in the collector's own network namespace: containers in host network
//! mode (ECS `host` mode) and host processes, whose address names no container.
//!
//! Both ends of a loopback or host-address connection are sockets of this namespace, so the
//! sender's end is in `/proc/net/tcp` (`tcp6`) with the peer's address as its local address
//! and ours as its remote one (`proc(5)`, "/proc/net/tcp"); its `inode` column is the socket's
//! inode, and the process holding it has a `/proc/<pid>/fd/N -> socket:[inode]` link. From
//! that PID, `/proc/<pid>/cgroup` names the container as for the unix socket.
//!
//! The search reads every process's fd table: milliseconds on a busy host. It runs once per
//! TCP connection, and for UDP once per sender address and port (cached, and bounded per
//! second), only for peers no container address matched, off the async threads.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

/// The PID holding the TCP socket whose local end is `peer` and remote end is `local` (our
/// listening side), in the network namespace of `procfs_root/net`.
pub fn tcp_peer_pid(procfs_root: &Path, peer: SocketAddr, local: SocketAddr) -> Option<i32> {
    let inode = ["net/tcp", "net/tcp6"].iter().find_map(|table| {
        let text = std::fs::read_to_string(procfs_root.join(table)).ok()?;
        socket_inode(&text, peer, local)
    })?;
    pid_holding(procfs_root, inode)
}

/// The PID holding the UDP socket a datagram from `peer` was sent from, in the network
/// namespace of `procfs_root/net`. An unconnected socket bound to the wildcard address shows
/// `0.0.0.0:<port>` (or `[::]:<port>`) as its local end: that matches any address with its
/// port. The socket must still be open: a sender that sent and exited is not found.
pub fn udp_peer_pid(procfs_root: &Path, peer: SocketAddr) -> Option<i32> {
    let inode = ["net/udp", "net/udp6"].iter().find_map(|table| {
        let text = std::fs::read_to_string(procfs_root.join(table)).ok()?;
        udp_socket_inode(&text, peer)
    })?;
    pid_holding(procfs_root, inode)
}

/// The inode of the UDP socket whose local end is `peer` (or the wildcard with its port).
pub fn udp_socket_inode(table: &str, peer: SocketAddr) -> Option<u64> {
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 {
            return None;
        }
        let l = parse_endpoint(f[1])?;
        let matches = l.port() == peer.port() && (l.ip().is_unspecified() || same(l, peer));
        matches
            .then(|| f[9].parse().ok())
            .flatten()
            .filter(|i| *i != 0)
    })
}

/// The inode of the socket with `local` and `remote` ends in a `/proc/net/tcp{,6}` table.
pub fn socket_inode(table: &str, local: SocketAddr, remote: SocketAddr) -> Option<u64> {
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 {
            return None;
        }
        let (l, r) = (parse_endpoint(f[1])?, parse_endpoint(f[2])?);
        (same(l, local) && same(r, remote))
            .then(|| f[9].parse().ok())
            .flatten()
            .filter(|i| *i != 0)
    })
}

/// Equal addresses, an IPv4 address and its IPv6-mapped form being the same.
fn same(a: SocketAddr, b: SocketAddr) -> bool {
    let canon = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    a.port() == b.port() && canon(a.ip()) == canon(b.ip())
}

/// `0100007F:1F90` (IPv4) or 32 hex digits `:PORT` (IPv6). The kernel prints each 32-bit word
/// of the address as a host-order integer (`%08X`), the port in plain hex.
fn parse_endpoint(s: &str) -> Option<SocketAddr> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |h: &str| u32::from_str_radix(h, 16).ok().map(u32::to_ne_bytes);
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(addr)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(&addr[i * 8..i * 8 + 8])?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The first process with an fd on `socket:[inode]`.
fn pid_holding(procfs_root: &Path, inode: u64) -> Option<i32> {
    let want = format!("socket:[{inode}]");
    std::fs::read_dir(procfs_root)
        .ok()?
        .flatten()
        .find_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let fds = std::fs::read_dir(e.path().join("fd")).ok()?;
            fds.flatten()
                .any(|fd| {
                    std::fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str() == want.as_str())
                })
                .then_some(pid)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:33EA 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1519 1 0 100 0 0 10 0
   1: 0100007F:A1B2 0100007F:33EA 01 00000000:00000000 00:00000000 00000000     0        0 777381 1 0 20 4 30 10 -1
   2: 0100007F:33EA 0100007F:A1B2 01 00000000:00000000 00:00000000 00000000     0        0 777382 1 0 20 4 30 10 -1
";

    #[test]
    fn the_peer_end_of_a_loopback_connection_is_found() {
        let peer: SocketAddr = "127.0.0.1:41394".parse().unwrap();
        let us: SocketAddr = "127.0.0.1:13290".parse().unwrap();
        assert_eq!(socket_inode(TCP, peer, us), Some(777381));
        assert_eq!(socket_inode(TCP, us, peer), Some(777382));
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:13290".parse().unwrap();
        assert_eq!(socket_inode(TCP, peer, mapped), Some(777381));
        let other: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(socket_inode(TCP, other, us), None);
        assert_eq!(
            parse_endpoint("00000000000000000000000001000000:0050"),
            Some("[::1]:80".parse().unwrap())
        );
    }

    #[test]
    fn a_udp_sender_is_found_by_its_port_on_its_address_or_the_wildcard() {
        let udp = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  100: 00000000:B0C1 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 5551 2 0 0
  101: 0100007F:B0C2 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 5552 2 0 0
";
        let at = |p: &str| udp_socket_inode(udp, p.parse().unwrap());
        assert_eq!(at("127.0.0.1:45249"), Some(5551), "wildcard bind");
        assert_eq!(
            at("10.0.0.5:45249"),
            Some(5551),
            "wildcard bind, another address"
        );
        assert_eq!(at("127.0.0.1:45250"), Some(5552));
        assert_eq!(at("10.0.0.5:45250"), None, "bound to another address");
        assert_eq!(at("127.0.0.1:1"), None);
    }

    #[test]
    fn the_process_holding_the_socket_is_found_in_a_fake_procfs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("net")).unwrap();
        std::fs::write(root.join("net/tcp"), TCP).unwrap();
        for (pid, target) in [(7, "socket:[1519]"), (42, "socket:[777381]")] {
            let fd = root.join(format!("{pid}/fd"));
            std::fs::create_dir_all(&fd).unwrap();
            std::os::unix::fs::symlink("/dev/null", fd.join("0")).unwrap();
            std::os::unix::fs::symlink(target, fd.join("3")).unwrap();
        }
        let peer = "127.0.0.1:41394".parse().unwrap();
        let us = "127.0.0.1:13290".parse().unwrap();
        assert_eq!(tcp_peer_pid(root, peer, us), Some(42));
        assert_eq!(tcp_peer_pid(root, us, "127.0.0.1:9".parse().unwrap()), None);
    }
}
