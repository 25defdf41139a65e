//! `cargo xtask fuzz [--seconds N] [TARGET...]`: builds the fuzz targets of `fuzz/` and runs
//! each for N seconds; `cargo xtask test` runs them all for [`TEST_SECONDS`] each.
//!
//! cargo-fuzz is installed once with `cargo install --locked`, pinned to
//! [`CARGO_FUZZ_VERSION`], into `<target>/xtask/cargo-fuzz` (unless that version is on the
//! `PATH` already). libFuzzer's instrumentation needs the nightly toolchain, so the build runs
//! with `RUSTUP_TOOLCHAIN=nightly` and nightly's `cargo` first on the `PATH`.
//!
//! The build flags ([`BUILD_FLAGS`]) keep a cold build short (the fuzz crate compiles the whole
//! collector library and its dependencies): no sanitizer, since the code under test is safe
//! Rust (a memory error would be a bug in an `unsafe` block, and the few there are have their
//! own tests; AddressSanitizer would double the build and slow each run), and 16 codegen units
//! rather than cargo-fuzz's 1. `fuzz/Cargo.toml` compiles the dependencies the targets never
//! run unoptimised. Debug assertions and overflow checks stay on.
//!
//! All targets are built by one cargo invocation into `<target>/fuzz`, then each binary runs
//! directly: new inputs go to a scratch corpus `<target>/fuzz/corpus/<target>` (the seeds in
//! `fuzz/corpus/<target>` are read, never written), a crashing input to
//! `fuzz/artifacts/<target>/`, libFuzzer's output to `<target>/fuzz/logs/<target>.log`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};

use crate::{cmd, tool, workspace};

/// The pinned cargo-fuzz: 0.13.2 builds with our Rust 1.95 and drives the installed nightly.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Every fuzz target (`fuzz/fuzz_targets/<name>.rs`), in the order they run.
pub(crate) const TARGETS: [&str; 8] = [
    "docker_json",
    "cri",
    "cgroup",
    "graphite",
    "statsd",
    "ecs_payloads",
    "config",
    "docker_config",
];

/// How long each target runs in `cargo xtask fuzz` by default.
const DEFAULT_SECONDS: u64 = 60;

/// How long each target runs in `cargo xtask test`: long enough to replay the seeds and find
/// what is shallow, short enough that the eight targets add two minutes to the suite.
pub(crate) const TEST_SECONDS: u64 = 15;

/// The longest one input may take before libFuzzer reports it as a hang (seconds).
const INPUT_TIMEOUT_SECS: u64 = 10;

/// `cargo fuzz build` flags; see the module docs.
const BUILD_FLAGS: [&str; 6] = [
    "--release",
    "--debug-assertions",
    "--sanitizer",
    "none",
    "--codegen-units",
    "16",
];

/// Options of `cargo xtask fuzz`.
#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// Seconds each target runs.
    #[arg(long, default_value_t = DEFAULT_SECONDS, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) seconds: u64,
    /// The targets to run (all when none).
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    pub(crate) targets: Vec<String>,
}

/// What one target's run gave.
#[derive(Debug, PartialEq)]
struct RunReport {
    /// Inputs run.
    runs: Option<u64>,
    /// Inputs per second, on average.
    execs_per_sec: Option<u64>,
    /// Where libFuzzer wrote the input that failed, if one did.
    artifact: Option<String>,
}

/// Builds every target, then runs each one asked for; the exit code is 0 only when none
/// found a failure.
///
/// # Errors
/// When cargo-fuzz or nightly cannot be installed, or the build fails.
pub(crate) fn fuzz(options: &Options) -> Result<ExitCode> {
    let targets: Vec<&str> = if options.targets.is_empty() {
        TARGETS.to_vec()
    } else {
        options.targets.iter().map(String::as_str).collect()
    };
    let target_dir = workspace::target_dir();
    let fuzz_target_dir = target_dir.join("fuzz");
    let cargo_fuzz = tool::ensure(&target_dir, "cargo-fuzz", CARGO_FUZZ_VERSION)?;
    let nightly_bin = nightly_bin_dir()?;

    let started = Instant::now();
    println!(
        "xtask: cargo fuzz build {} (all targets, nightly)",
        BUILD_FLAGS.join(" ")
    );
    cmd::run(
        fuzz_command(&cargo_fuzz, &nightly_bin)
            .args(["build", "--fuzz-dir", "fuzz", "--target", &triple()])
            .args(BUILD_FLAGS)
            .arg("--target-dir")
            .arg(&fuzz_target_dir),
    )
    .context("building the fuzz targets")?;
    println!("xtask: fuzz targets built in {:.0?}", started.elapsed());

    let bin_dir = fuzz_target_dir.join(triple()).join("release");
    let mut failed = Vec::new();
    for target in &targets {
        let report = run_target(&bin_dir, &fuzz_target_dir, target, options.seconds)?;
        let stats = format!(
            "{} runs, {} execs/s",
            report.runs.map_or("?".to_owned(), |n| n.to_string()),
            report
                .execs_per_sec
                .map_or("?".to_owned(), |n| n.to_string()),
        );
        match &report.artifact {
            None => println!("xtask: fuzz {target}: ok in {}s ({stats})", options.seconds),
            Some(artifact) => {
                println!(
                    "xtask: fuzz {target}: FAILED ({stats}); the input is {artifact}\n  \
                     reproduce: cargo +nightly fuzz run {target} {artifact} \
                     --target-dir {} {}",
                    fuzz_target_dir.display(),
                    BUILD_FLAGS.join(" ")
                );
                failed.push(*target);
            }
        }
    }
    if failed.is_empty() {
        println!(
            "xtask: fuzz passed: {} target(s), {}s each, {:.0?} in all",
            targets.len(),
            options.seconds,
            started.elapsed()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!("xtask: fuzz FAILED: {}", failed.join(", "));
        Ok(ExitCode::FAILURE)
    }
}

/// Runs one built target for `seconds` over its seeds and scratch corpus, its output in a
/// log file; prints the log's end when it failed.
fn run_target(
    bin_dir: &Path,
    fuzz_target_dir: &Path,
    target: &str,
    seconds: u64,
) -> Result<RunReport> {
    let root = workspace::root();
    let scratch = fuzz_target_dir.join("corpus").join(target);
    let seeds = root.join("fuzz").join("corpus").join(target);
    let artifacts = root.join("fuzz").join("artifacts").join(target);
    let logs = fuzz_target_dir.join("logs");
    for dir in [&scratch, &artifacts, &logs] {
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let log_path = logs.join(format!("{target}.log"));
    let log =
        fs::File::create(&log_path).with_context(|| format!("create {}", log_path.display()))?;
    println!(
        "xtask: fuzz {target} for {seconds}s (log: {})",
        log_path.display()
    );
    let binary = bin_dir.join(target);
    let status = Command::new(&binary)
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_SECS}"))
        .arg("-print_final_stats=1")
        // The trailing slash makes it a directory prefix, as cargo-fuzz passes it.
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg(&scratch)
        .arg(&seeds)
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("duplicate the log file")?)
        .stderr(log)
        .status()
        .with_context(|| format!("failed to start {}", binary.display()))?;
    let output = fs::read_to_string(&log_path).unwrap_or_default();
    let mut report = parse_libfuzzer_output(&output);
    if !status.success() {
        let tail: Vec<&str> = output.lines().rev().take(40).collect();
        for line in tail.iter().rev() {
            println!("  | {line}");
        }
        if report.artifact.is_none() {
            // A failure without an input written (libFuzzer itself could not start).
            report.artifact = Some(format!(
                "(none written; {status}, see {})",
                log_path.display()
            ));
        }
    }
    Ok(report)
}

/// Reads the figures and the crash artifact out of libFuzzer's output.
fn parse_libfuzzer_output(output: &str) -> RunReport {
    let stat = |name: &str| {
        output.lines().find_map(|line| {
            line.trim()
                .strip_prefix(name)?
                .trim_start_matches(':')
                .trim()
                .parse()
                .ok()
        })
    };
    let artifact = output.lines().find_map(|line| {
        let (_, path) = line.split_once("Test unit written to ")?;
        Some(path.trim().to_owned())
    });
    RunReport {
        runs: stat("stat::number_of_executed_units"),
        execs_per_sec: stat("stat::average_exec_per_sec"),
        artifact,
    }
}

/// The host's target triple: what cargo-fuzz builds for and where the binaries land. The
/// collector is Linux-only.
fn triple() -> String {
    format!("{}-unknown-linux-gnu", std::env::consts::ARCH)
}

/// `cargo-fuzz fuzz ...` in the workspace root, with nightly's cargo and rustc: the outer
/// cargo's variables (`CARGO`, `RUSTUP_TOOLCHAIN`, ...) would pick the stable toolchain.
fn fuzz_command(cargo_fuzz: &Path, nightly_bin: &Path) -> Command {
    let mut path = std::ffi::OsString::from(nightly_bin);
    if let Some(rest) = std::env::var_os("PATH") {
        path.push(":");
        path.push(rest);
    }
    let mut cmd = Command::new(cargo_fuzz);
    cmd.current_dir(workspace::root())
        .arg("fuzz")
        .env("PATH", path)
        .env("RUSTUP_TOOLCHAIN", "nightly")
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTDOC")
        // The targets build into their own directory, never the workspace's.
        .env_remove("CARGO_TARGET_DIR");
    cmd
}

/// The directory of nightly's `cargo`, installing nightly (minimal profile) when missing.
fn nightly_bin_dir() -> Result<PathBuf> {
    let which =
        || cmd::output(Command::new("rustup").args(["which", "--toolchain", "nightly", "cargo"]));
    let cargo = match which() {
        Ok(path) => path,
        Err(_) => {
            println!("xtask: rustup toolchain install nightly --profile minimal (once)");
            cmd::run(Command::new("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
            ]))
            .context("cargo-fuzz needs the nightly toolchain, which could not be installed")?;
            which()?
        }
    };
    match Path::new(&cargo).parent() {
        Some(dir) => Ok(dir.to_path_buf()),
        None => bail!("`rustup which cargo` printed {cargo:?}, not a path"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libfuzzer_output_gives_figures_and_the_artifact() {
        let passed = "#1024\tpulse  cov: 10 ft: 12 corp: 3/40b exec/s: 512 rss: 40Mb\n\
                      Done 15342 runs in 16 second(s)\n\
                      stat::number_of_executed_units: 15342\n\
                      stat::average_exec_per_sec:     958\n\
                      stat::new_units_added:          12\n";
        assert_eq!(
            parse_libfuzzer_output(passed),
            RunReport {
                runs: Some(15342),
                execs_per_sec: Some(958),
                artifact: None,
            }
        );
        let crashed = "thread '<unnamed>' panicked at fuzz_targets/statsd.rs:30:9:\n\
                       ==1234== ERROR: libFuzzer: deadly signal\n\
                       artifact_prefix='/w/fuzz/artifacts/statsd/'; Test unit written to \
                       /w/fuzz/artifacts/statsd/crash-0a1b\n\
                       stat::number_of_executed_units: 77\n";
        assert_eq!(
            parse_libfuzzer_output(crashed),
            RunReport {
                runs: Some(77),
                execs_per_sec: None,
                artifact: Some("/w/fuzz/artifacts/statsd/crash-0a1b".to_owned()),
            }
        );
        assert_eq!(
            parse_libfuzzer_output(""),
            RunReport {
                runs: None,
                execs_per_sec: None,
                artifact: None,
            }
        );
    }
}
