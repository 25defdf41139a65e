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
//!
//! Also here: the addresses of a container's own network namespace ([`local_addresses`]),
//! for peers whose address Docker does not know: ECS `awsvpc` tasks, whose namespace (the
//! pause container's, shared by the task's containers) the ECS CNI plugins configure with the
//! task's ENI, outside Docker.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

/// The addresses of the network namespace process `pid` is in: IPv4 from
/// `/proc/<pid>/net/fib_trie` (the `/32 host LOCAL` entries of the local table) and IPv6 from
/// `/proc/<pid>/net/if_inet6`, loopback and link-local left out. With the namespace's inode
/// (`/proc/<pid>/ns/net`), so containers sharing one are read once.
pub fn local_addresses(procfs_root: &Path, pid: i32) -> Option<(u64, Vec<IpAddr>)> {
    use std::os::unix::fs::MetadataExt as _;
    let dir = procfs_root.join(pid.to_string());
    let ns = std::fs::metadata(dir.join("ns/net")).ok()?.ino();
    let mut out = Vec::new();
    if let Ok(text) = std::fs::read_to_string(dir.join("net/fib_trie")) {
        out.extend(fib_trie_locals(&text).into_iter().map(IpAddr::V4));
    }
    if let Ok(text) = std::fs::read_to_string(dir.join("net/if_inet6")) {
        out.extend(if_inet6_addresses(&text).into_iter().map(IpAddr::V6));
    }
    out.sort();
    out.dedup();
    Some((ns, out))
}

/// The local IPv4 addresses in a `fib_trie` dump: each `|-- a.b.c.d` leaf followed by a
/// `/32 host LOCAL` line (`fib_trie` lists a leaf, then its routes), without loopback.
pub fn fib_trie_locals(text: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut leaf: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(ip) = t.strip_prefix("|-- ") {
            leaf = ip.trim().parse().ok();
        } else if t.starts_with("/32 host LOCAL")
            && let Some(ip) = leaf
            && !ip.is_loopback()
            && !out.contains(&ip)
        {
            out.push(ip);
        }
    }
    out
}

/// The addresses in `if_inet6` (`<32 hex> <ifindex> <prefix> <scope> <flags> <name>`), without
/// loopback and link-local ones.
pub fn if_inet6_addresses(text: &str) -> Vec<Ipv6Addr> {
    text.lines()
        .filter_map(|l| {
            let hex = l.split_whitespace().next()?;
            let n = u128::from_str_radix(hex, 16).ok()?;
            let ip = Ipv6Addr::from(n);
            let link_local = (ip.segments()[0] & 0xffc0) == 0xfe80;
            (!ip.is_loopback() && !link_local).then_some(ip)
        })
        .collect()
}

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

    /// A `fib_trie` of a namespace with an ENI address (as in an awsvpc task) and loopback:
    /// only the ENI's local address; `if_inet6` keeps global addresses only.
    #[test]
    fn namespace_addresses_are_read_from_fib_trie_and_if_inet6() {
        let trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     +-- 10.0.1.0/24 2 0 2\n        |-- 10.0.1.0\n           /24 link UNICAST\n        |-- 10.0.1.57\n           /32 host LOCAL\n        |-- 10.0.1.255\n           /32 link BROADCAST\n     +-- 127.0.0.0/8 2 0 2\n        |-- 127.0.0.1\n           /32 host LOCAL\nLocal:\n  +-- 0.0.0.0/0 3 0 5\n        |-- 10.0.1.57\n           /32 host LOCAL\n";
        assert_eq!(fib_trie_locals(trie), [Ipv4Addr::new(10, 0, 1, 57)]);
        let inet6 = "00000000000000000000000000000001 01 80 10 80       lo\nfe800000000000000000000000000001 02 40 20 80     eth0\n20010db8000000000000000000000042 02 40 00 80     eth0\n";
        assert_eq!(
            if_inet6_addresses(inet6),
            ["2001:db8::42".parse::<Ipv6Addr>().unwrap()]
        );
    }

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
