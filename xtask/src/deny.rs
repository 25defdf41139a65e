//! `cargo xtask deny`: `cargo deny check` of the dependency tree against `deny.toml`
//! (licenses, bans, sources, advisories).
//!
//! cargo-deny is installed once with `cargo install --locked`, pinned to
//! [`CARGO_DENY_VERSION`], into `<target>/xtask/cargo-deny` (unless that version is on the
//! `PATH` already). The advisories need the RustSec database, cloned from github.com: when it
//! cannot be fetched the advisories are skipped, and the output says so in a line of its own,
//! while licenses, bans and sources are still checked (they need crates.io only).

use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::{tool, workspace};

/// The pinned cargo-deny: 0.20.2 builds with our Rust 1.95 (its `rust-version` is 1.88).
const CARGO_DENY_VERSION: &str = "0.20.2";

/// How long fetching the advisory database may take before it counts as unreachable (a
/// network that drops packets would otherwise hold the test command).
const FETCH_TIMEOUT: Duration = Duration::from_secs(120);

/// The checks that need no database.
const OFFLINE_CHECKS: [&str; 3] = ["licenses", "bans", "sources"];

/// Options of `cargo xtask deny`.
#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// Skip the advisories (no attempt to fetch their database).
    #[arg(long)]
    pub(crate) no_advisories: bool,
}

/// Installs cargo-deny when needed and runs the checks; the exit code is 0 only when every
/// check that ran passed.
///
/// # Errors
/// When cargo-deny cannot be installed or started.
pub(crate) fn deny(options: &Options) -> Result<ExitCode> {
    let started = Instant::now();
    let cargo_deny = tool::ensure(&workspace::target_dir(), "cargo-deny", CARGO_DENY_VERSION)?;
    println!("xtask: cargo deny check {}", OFFLINE_CHECKS.join(" "));
    let status = deny_command(&cargo_deny)
        .args(["check", "--hide-inclusion-graph"])
        .args(OFFLINE_CHECKS)
        .status()
        .with_context(|| format!("failed to start {}", cargo_deny.display()))?;
    let mut passed = status.success();

    if options.no_advisories {
        println!("xtask: cargo deny: advisories SKIPPED (--no-advisories)");
    } else {
        match fetch_advisory_db(&cargo_deny) {
            Ok(()) => {
                println!("xtask: cargo deny check advisories");
                // `--offline`: the database just fetched, and the crates the first check
                // resolved.
                let status = deny_command(&cargo_deny)
                    .args(["--offline", "check", "--hide-inclusion-graph", "advisories"])
                    .status()
                    .with_context(|| format!("failed to start {}", cargo_deny.display()))?;
                passed &= status.success();
            }
            Err(err) => println!(
                "xtask: cargo deny: advisories SKIPPED: the advisory database could not be \
                 fetched ({err:#}); licenses, bans and sources were checked"
            ),
        }
    }
    println!(
        "xtask: cargo deny {} in {:.0?}",
        if passed { "passed" } else { "FAILED" },
        started.elapsed()
    );
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `cargo-deny deny --locked` in the workspace root: the lock file as committed, never
/// updated by the check.
fn deny_command(cargo_deny: &Path) -> Command {
    let mut cmd = Command::new(cargo_deny);
    cmd.current_dir(workspace::root())
        .args(["deny", "--locked"]);
    cmd
}

/// `cargo deny fetch db`, given [`FETCH_TIMEOUT`]; its output is kept for the error.
fn fetch_advisory_db(cargo_deny: &Path) -> Result<()> {
    println!("xtask: cargo deny fetch db (the RustSec advisory database, from github.com)");
    let log = tempfile::NamedTempFile::new().context("create a temporary file")?;
    let mut child = deny_command(cargo_deny)
        .args(["fetch", "db"])
        .stdin(Stdio::null())
        .stdout(log.reopen().context("reopen the temporary file")?)
        .stderr(log.reopen().context("reopen the temporary file")?)
        .spawn()
        .with_context(|| format!("failed to start {}", cargo_deny.display()))?;
    let deadline = Instant::now() + FETCH_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().context("wait for cargo deny fetch")? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("no answer within {FETCH_TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(200));
    };
    if status.success() {
        return Ok(());
    }
    let said = std::fs::read_to_string(log.path()).unwrap_or_default();
    // The last line is the error itself; the lines before it are progress.
    let last = said
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    bail!("`cargo deny fetch db` failed ({status}): {}", last.trim())
}
