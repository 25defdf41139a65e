//! `cargo xtask test`: the one command that prepares a fresh Debian 12 root machine and runs
//! every test.
//!
//! Steps, each skipped when already done: install `docker.io`, `busybox-static`, `clang`
//! (the collector's eBPF programs are compiled with it) and `carbon-c-relay` (the metrics
//! tests' upstream); start the Docker daemon; build the test image; remove containers earlier
//! runs left; install the moto server in a virtualenv (`moto.rs`, for the AWS sink tests);
//! build the collector; then
//! `cargo test --workspace --all-targets --no-fail-fast`; then, for a whole run (no test
//! filter), `cargo xtask deny` (`deny.rs`) and every fuzz target for a few seconds
//! (`fuzz.rs`). The exit status is the tests', else deny's, else the fuzz run's.

use std::fs;
use std::path::Path;
use std::process::{Command, ExitCode};

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
    // The companion end-to-end tests run the real image (static, FROM scratch).
    crate::image::image(&crate::image::Options {
        only: Some(crate::image::Which::Companion),
        tag: "latest".to_owned(),
        binary: None,
    })
    .context("building the companion image")?;

    println!("xtask: cargo build -p collector");
    cmd::run(workspace::cargo().args(["build", "-p", "collector"]))?;
    let collector = target.join("debug").join("collector");
    // The security tests run the collector image as nobody: made of this binary, so no
    // second (optimised, static) build.
    ensure_test_collector_image(&collector, &target)
        .context("building the test collector image")?;

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
    let tests = cmd::exit_code(status);

    // The dependency check and the fuzz targets run once per whole run: a filtered run is
    // someone iterating on a few tests, and neither changes with the filter.
    if !options.test_args.is_empty() {
        println!(
            "xtask: cargo deny and the fuzz targets not run (a test filter was given; \
             `cargo xtask deny` and `cargo xtask fuzz` run them)"
        );
        return Ok(ExitCode::from(tests));
    }
    let deny = crate::deny::deny(&crate::deny::Options {
        no_advisories: false,
    })
    .context("checking the dependencies with cargo deny")?;
    let fuzz = crate::fuzz::fuzz(&crate::fuzz::Options {
        seconds: crate::fuzz::TEST_SECONDS,
        targets: Vec::new(),
    })
    .context("running the fuzz targets")?;
    Ok(if tests != 0 {
        ExitCode::from(tests)
    } else if deny != ExitCode::SUCCESS {
        deny
    } else {
        fuzz
    })
}

/// Imports [`crate::image::TEST_COLLECTOR_IMAGE`] from the debug `collector`, unless the image
/// was made of this very binary (its size and modification time, kept in a stamp file next
/// to the daemon's log).
fn ensure_test_collector_image(collector: &Path, target: &Path) -> Result<()> {
    use crate::image::{TEST_COLLECTOR_IMAGE, Which, import_binary};
    let meta = fs::metadata(collector).with_context(|| format!("stat {}", collector.display()))?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let stamp_value = format!("{} {} {modified}", collector.display(), meta.len());
    let stamp = target.join("xtask").join("test-collector-image.stamp");
    let present =
        cmd::succeeds(Command::new("docker").args(["image", "inspect", TEST_COLLECTOR_IMAGE]));
    if present && fs::read_to_string(&stamp).is_ok_and(|s| s == stamp_value) {
        println!("xtask: {TEST_COLLECTOR_IMAGE}: up to date");
        return Ok(());
    }
    println!(
        "xtask: importing {TEST_COLLECTOR_IMAGE} from {}",
        collector.display()
    );
    import_binary(Which::Collector, collector, TEST_COLLECTOR_IMAGE)?;
    if let Some(dir) = stamp.parent() {
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    fs::write(&stamp, stamp_value).with_context(|| format!("write {}", stamp.display()))
}
