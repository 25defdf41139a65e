//! End-to-end tests of the `collector` binary against the real Docker engine.
//!
//! Every case needs root, a running Docker daemon and the image `collector-test/busybox:latest`;
//! `cargo xtask test` provides all three on a fresh Debian 12 machine. Without them a case
//! fails and says so; nothing is skipped.
//!
//! Each case starts its own collector with its own data directory and config. The collector
//! sees every container on the host, so a case reads only the sink paths of its own tasks and
//! containers, and cases may run in parallel.
//!
//! # Layout
//! - [`docker`]: `docker` CLI helpers, the prerequisite check, [`TestContainer`] and its
//!   builder.
//! - [`ecs_agent`]: [`TestTask`] (an ECS task's identity) and [`FakeEcsAgent`], a real HTTP
//!   server standing in for the ECS agent's introspection API.
//! - [`collector`]: [`CollectorProcess`], the binary under test with its config, data dir
//!   and captured stderr.
//! - [`moto`]: [`Moto`], a moto server per test standing in for CloudWatch Logs, and reading
//!   back what reached it.
//! - [`fault_proxy`]: [`FaultProxy`], put between the collector and moto to make the service
//!   slow, throttling, failing or absent at the test's command.
//! - [`sink`]: reads what the local directory sink wrote.
//! - [`check`]: polling with clear timeouts, and the exactly-once and at-least-once checks.
//! - [`time`]: RFC 3339 timestamps as Docker writes them.
//! - `tests` (`cfg(test)`): the harness's self-tests and the scenarios.

pub mod check;
pub mod collector;
pub mod docker;
pub mod ecs_agent;
pub mod fault_proxy;
pub mod moto;
pub mod sink;
pub mod time;

#[cfg(test)]
mod tests;

use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};

pub use check::{Check, check_at_least_once_in_order, check_exactly_once, wait_until};
pub use collector::{CollectorBuilder, CollectorProcess, Expect, collector_bin};
pub use docker::{ContainerBuilder, TEST_IMAGE, TestContainer, docker, docker_host};
pub use ecs_agent::{FakeEcsAgent, TestTask};
pub use fault_proxy::{FaultProxy, Faults, Flavor};
pub use moto::{LogEvent, Moto};
pub use sink::{Sink, SinkLine, messages};

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits one directory below the workspace root")
        .to_path_buf()
}

/// `len` random lowercase hex characters, from `/dev/urandom`.
///
/// # Panics
/// When `/dev/urandom` cannot be read, which no Linux test machine allows.
pub fn random_hex(len: usize) -> String {
    let mut bytes = vec![0u8; len.div_ceil(2)];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("/dev/urandom is readable");
    let mut hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    hex.truncate(len);
    hex
}

/// The lines `"<prefix> 1"` to `"<prefix> <n>"`: what the scenarios' shell loops print (see
/// [`numbered_lines_script`]).
pub fn numbered(prefix: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{prefix} {i}")).collect()
}

/// A busybox `sh` loop that prints [`numbered`]`(prefix, n)`, one `echo` per line, with
/// `redirect` appended to each `echo` (e.g. `">&2"` or `">> /var/log/app/app.log"`).
pub fn numbered_lines_script(prefix: &str, n: usize, redirect: &str) -> String {
    format!("i=1; while [ $i -le {n} ]; do echo \"{prefix} $i\" {redirect}; i=$((i+1)); done")
}
