//! `cargo xtask test`: the one command that prepares a fresh Debian 12 root machine and runs
//! every test.
//!
//! Steps, each skipped when already done: install `docker.io`, `busybox-static`, `clang`
//! (the collector's eBPF programs are compiled with it) and `carbon-c-relay` (the metrics
//! tests' upstream); start the Docker daemon; build the test image; remove containers earlier
//! runs left; install the moto server in a virtualenv (`moto.rs`, for the AWS sink tests);
//! build the collector; then
//! `cargo test --workspace --all-targets --no-fail-fast`, whose exit status is ours.

use std::process::ExitCode;

use anyhow::{Context as _, Result};

use crate::{cmd, docker, moto, workspace};

/// Options of `cargo xtask test`.
#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// Passed to the test binaries after `--`: a name filter, `--nocapture`, ...
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub(crate) test_args: Vec<String>,
}

/// Runs the set-up steps, then every test.
///
/// # Errors
/// When a set-up step fails; test failures are the returned exit code instead.
pub(crate) fn test(options: &Options) -> Result<ExitCode> {
    let target = workspace::target_dir();
    docker::ensure_packages().context("installing packages")?;
    docker::ensure_daemon(&target.join("xtask").join("dockerd.log"))
        .context("starting the Docker daemon")?;
    docker::ensure_image(docker::TEST_IMAGE).context("building the test image")?;
    docker::remove_leftover_containers().context("removing leftover test containers")?;
    let moto_server = moto::ensure_moto(&target).context("installing moto")?;

    println!("xtask: cargo build -p collector");
    cmd::run(workspace::cargo().args(["build", "-p", "collector"]))?;
    let collector = target.join("debug").join("collector");

    println!("xtask: cargo test --workspace --all-targets --no-fail-fast");
    let mut cargo_test = workspace::cargo();
    cargo_test
        // Every test binary runs, so one report shows every failure.
        .args(["test", "--workspace", "--all-targets", "--no-fail-fast"])
        // Nothing in a test may wait for the EC2 instance metadata service.
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("COLLECTOR_BIN", &collector)
        // The AWS sink tests start one moto server each (CloudWatch Logs and S3 stand-in).
        .env("COLLECTOR_TEST_MOTO", &moto_server);
    if !options.test_args.is_empty() {
        cargo_test.arg("--").args(&options.test_args);
    }
    let status = cargo_test
        .status()
        .context("failed to start `cargo test`")?;
    Ok(ExitCode::from(cmd::exit_code(status)))
}
