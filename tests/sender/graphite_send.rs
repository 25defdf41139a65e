//! `graphite-send MODE TARGET [LINGER_MS]`: copies stdin to a unix stream socket (`unix
//! PATH`), a TCP peer (`tcp IP:PORT`) or a UDP peer (`udp IP:PORT`, one datagram per line;
//! `udp-one IP:PORT`, all of stdin in one datagram), then keeps the connection (or the UDP
//! socket) open `LINGER_MS` (default 300) before closing it. `call PATH [TIMEOUT_MS]` is a
//! client instead: it writes stdin (an HTTP request) to the unix socket `PATH`, then copies
//! the answer to stdout until the server closes the connection or `TIMEOUT_MS` (default
//! 10,000) passes; the security tests call the companion API with it from inside a task.
//!
//! The metrics tests run it inside busybox containers (whose `nc` has neither `-U` nor
//! `-u`): the harness compiles this one file with `rustc -C target-feature=+crt-static`,
//! so the binary needs nothing from the image. Std only, no dependencies.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: graphite-send unix|tcp|udp|udp-one|call TARGET [LINGER_MS]");
        return ExitCode::from(64);
    }
    let linger = args
        .get(3)
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_millis(300), Duration::from_millis);
    let mut data = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut data) {
        eprintln!("graphite-send: stdin: {e}");
        return ExitCode::from(1);
    }
    if args[1] == "call" {
        let timeout = args
            .get(3)
            .and_then(|s| s.parse().ok())
            .map_or(Duration::from_secs(10), Duration::from_millis);
        return match call(&args[2], &data, timeout) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("graphite-send: call {}: {e}", args[2]);
                ExitCode::from(1)
            }
        };
    }
    let result = match args[1].as_str() {
        "unix" => UnixStream::connect(&args[2]).and_then(|mut s| {
            s.write_all(&data)?;
            std::thread::sleep(linger);
            Ok(())
        }),
        "tcp" => TcpStream::connect(&args[2]).and_then(|mut s| {
            s.write_all(&data)?;
            std::thread::sleep(linger);
            Ok(())
        }),
        "udp" => UdpSocket::bind("0.0.0.0:0").and_then(|s| {
            for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                s.send_to(line, &args[2])?;
            }
            std::thread::sleep(linger);
            Ok(())
        }),
        "udp-one" => UdpSocket::bind("0.0.0.0:0").and_then(|s| {
            s.send_to(&data, &args[2])?;
            std::thread::sleep(linger);
            Ok(())
        }),
        other => {
            eprintln!("graphite-send: unknown mode {other}");
            return ExitCode::from(64);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("graphite-send: {} {}: {e}", args[1], args[2]);
            ExitCode::from(1)
        }
    }
}

/// Writes `request` to the unix socket `path` and copies the answer to stdout until EOF or
/// `timeout` (what arrived by then is printed; a timeout is not an error: a drain answer
/// streams).
fn call(path: &str, request: &[u8], timeout: Duration) -> std::io::Result<()> {
    let mut s = UnixStream::connect(path)?;
    s.write_all(request)?;
    let deadline = std::time::Instant::now() + timeout;
    let mut out = std::io::stdout();
    let mut buf = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        s.set_read_timeout(Some(left))?;
        match s.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                out.write_all(&buf[..n])?;
                out.flush()?;
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
}
