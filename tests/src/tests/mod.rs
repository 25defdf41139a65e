//! The harness's self-tests and the end-to-end scenarios: the acceptance list of the
//! collector's first issue, one claim per file.
//!
//! A scenario writes numbered lines from busybox containers and checks that every line
//! arrives exactly once and in order (at least once where the collector is killed with
//! SIGKILL), in the sink directory of the right task and container. Each scenario has its own
//! collector and reads only its own containers' paths, so they run in parallel.

mod harness;

mod cloudwatch;
mod companion;
mod corrupt_input;
mod crash_safety;
mod docker_unreachable;
mod ebpf;
mod ecs_identity;
mod host_churn;
mod inspect;
mod kill_restart;
mod long_line;
mod metrics;
mod no_config;
mod rotation;
mod s3;
mod security;
mod short_lived;
mod sigterm;
mod sink_faults;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::{Check, CollectorProcess, check};

/// How long a scenario waits for its lines, once they are written.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// A container script step: wait until the test creates `/ctl/go` (see [`go`]), so a
/// container starts writing only once the collector demonstrably tails it.
const WAIT_FOR_GO: &str = "while [ ! -e /ctl/go ]; do sleep 0.05; done";

/// A directory `ctl` in the collector's temporary directory, to bind-mount at `/ctl`.
fn control_dir(collector: &CollectorProcess) -> Result<PathBuf> {
    let dir = collector.dir().join("ctl");
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

/// Lets the containers waiting in [`WAIT_FOR_GO`] on `ctl` go on.
fn go(ctl: &Path) -> Result<()> {
    fs::write(ctl.join("go"), b"").with_context(|| format!("write {}/go", ctl.display()))
}

/// Waits until the messages `read` returns include `line`.
fn wait_for_line(
    collector: &mut CollectorProcess,
    what: &str,
    line: &str,
    mut read: impl FnMut() -> Result<Vec<String>>,
) -> Result<()> {
    collector.wait_until(DELIVERY_TIMEOUT, &format!("{line:?} in {what}"), || {
        let seen = read()?;
        Ok(if seen.iter().any(|m| m == line) {
            Check::Done(())
        } else {
            Check::Waiting(check::describe(&seen))
        })
    })
}
