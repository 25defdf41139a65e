//! `cargo xtask bench`: throughput, memory, idle cost and discovery latency of the release
//! collector, beside the ceiling (`cat`, `wc -l`) and, when installed, Fluent Bit and Vector.
//!
//! Every run checks that every line arrived: a fast run that lost lines is a failure (exit
//! code 1). Timings are reported, never asserted.
//!
//! # Layout
//! - [`generate`]: the inputs: a fake Docker root of json-file logs with realistic lines.
//! - [`measure`]: running a process and reading its CPU time and peak RSS from procfs; the
//!   delivered-count check.
//! - [`scenarios`]: the collector runs (one large log, many containers, idle containers).
//! - [`others`]: the ceiling commands and the Fluent Bit / Vector runs with equivalent
//!   configurations.
//! - [`discovery`]: container start to first line delivered, with the real Docker engine.
//! - [`graphite`]: Graphite TCP ingest, samples per second per core, beside carbon-c-relay.
//! - [`report`]: the table.

mod discovery;
mod generate;
pub(crate) mod graphite;
pub(crate) mod measure;
mod others;
mod report;
mod scenarios;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};

use crate::{cmd, workspace};

/// Options of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// Small inputs and short waits (about a minute in all): checks the harness, not the
    /// collector's speed.
    #[arg(long)]
    pub(crate) quick: bool,
    /// Size of the single large json-file log, in MB (10^6 bytes).
    #[arg(long, value_name = "MB")]
    pub(crate) size_mb: Option<u64>,
    /// Containers tailed at once in the `many` scenario.
    #[arg(long, value_name = "N")]
    pub(crate) containers: Option<usize>,
    /// Seconds over which the `idle` scenario measures CPU.
    #[arg(long, value_name = "SECONDS")]
    pub(crate) idle_seconds: Option<u64>,
    /// Containers started in the `discovery` scenario.
    #[arg(long, value_name = "N")]
    pub(crate) discovery_runs: Option<usize>,
    /// Graphite samples sent in the `graphite` scenario.
    #[arg(long, value_name = "N")]
    pub(crate) graphite_samples: Option<u64>,
    /// Scenarios to run, comma-separated: `big`, `many`, `idle`, `discovery`, `graphite`.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "big,many,idle,discovery,graphite"
    )]
    pub(crate) scenarios: Vec<Scenario>,
    /// The collector binary to measure; by default `cargo build --release -p collector` and
    /// its output.
    #[arg(long, value_name = "PATH")]
    pub(crate) collector: Option<PathBuf>,
    /// Where inputs (kept between runs) and run directories go; default
    /// `<target>/xtask/bench`.
    #[arg(long, value_name = "DIR")]
    pub(crate) work_dir: Option<PathBuf>,
}

/// A benchmark scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Scenario {
    /// One large json-file log, to the discard sink and to the local directory sink.
    Big,
    /// Many containers with small logs, tailed at once (peak RSS).
    Many,
    /// Quiet containers: CPU the collector spends doing nothing.
    Idle,
    /// Container start to first line delivered, with the real Docker engine.
    Discovery,
    /// Graphite TCP ingest (samples/s per core) beside carbon-c-relay.
    Graphite,
}

/// The sizes of one benchmark run, from the options.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    /// Bytes of the large log (about).
    pub(crate) big_bytes: u64,
    /// Containers of the `many` scenario.
    pub(crate) many_containers: usize,
    /// Bytes of each of their logs (about).
    pub(crate) many_bytes_each: u64,
    /// Containers of the `idle` scenario.
    pub(crate) idle_containers: usize,
    /// Measuring window of the `idle` scenario.
    pub(crate) idle_seconds: u64,
    /// Containers started in the `discovery` scenario.
    pub(crate) discovery_runs: usize,
    /// Samples sent in the `graphite` scenario.
    pub(crate) graphite_samples: u64,
    /// The scenarios to run.
    pub(crate) scenarios: Vec<Scenario>,
    /// Inputs and run directories.
    pub(crate) work_dir: PathBuf,
    /// The collector binary.
    pub(crate) collector: PathBuf,
}

impl Plan {
    /// The sizes `options` ask for, with defaults for a full or a `--quick` run.
    fn from_options(options: &Options, collector: PathBuf) -> Self {
        let quick = options.quick;
        Self {
            big_bytes: options.size_mb.unwrap_or(if quick { 32 } else { 2000 }) * 1_000_000,
            many_containers: options.containers.unwrap_or(if quick { 50 } else { 1000 }),
            many_bytes_each: if quick { 20_000 } else { 100_000 },
            idle_containers: 100,
            idle_seconds: options.idle_seconds.unwrap_or(if quick { 3 } else { 30 }),
            discovery_runs: options.discovery_runs.unwrap_or(if quick { 5 } else { 50 }),
            graphite_samples: options.graphite_samples.unwrap_or(if quick {
                100_000
            } else {
                2_000_000
            }),
            scenarios: options.scenarios.clone(),
            work_dir: options
                .work_dir
                .clone()
                .unwrap_or_else(|| workspace::target_dir().join("xtask").join("bench")),
            collector,
        }
    }
}

/// Runs the benchmarks and prints the table.
///
/// # Errors
/// When a set-up step fails (build, input generation, a tool missing). Lost lines are the
/// exit code 1 instead, after the table.
pub(crate) fn bench(options: &Options) -> Result<ExitCode> {
    let collector = release_collector(options.collector.as_deref())?;
    let plan = Plan::from_options(options, collector);
    measure::ensure_sqlite3().context("the sqlite3 shell reads the collector's state")?;
    let report = run_plan(&plan)?;
    report.print(&plan);
    Ok(if report.all_delivered() {
        ExitCode::SUCCESS
    } else {
        eprintln!("xtask: bench: some run did not deliver every line (see the table)");
        ExitCode::FAILURE
    })
}

/// The collector binary to measure: `given`, else `cargo build --release -p collector` and
/// its output.
///
/// # Errors
/// When the build fails.
pub(crate) fn release_collector(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = given {
        return Ok(path.to_owned());
    }
    println!("xtask: cargo build --release -p collector");
    cmd::run(workspace::cargo().args(["build", "--release", "-p", "collector"]))?;
    Ok(workspace::target_dir().join("release").join("collector"))
}

/// Runs every scenario of `plan` and collects the results.
///
/// # Errors
/// When a set-up step fails.
pub(crate) fn run_plan(plan: &Plan) -> Result<report::Report> {
    let mut report = report::Report::default();
    report.machine = report::machine();
    for scenario in &plan.scenarios {
        match scenario {
            Scenario::Big => scenarios::big(plan, &mut report)?,
            Scenario::Many => scenarios::many(plan, &mut report)?,
            Scenario::Idle => scenarios::idle(plan, &mut report)?,
            Scenario::Discovery => discovery::run(plan, &mut report)?,
            Scenario::Graphite => graphite::run(plan, &mut report)?,
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The harness end to end on small inputs, with whatever collector binary this
    /// workspace built: every line must arrive, and the report must say so. (Timings are
    /// printed, never checked.)
    #[test]
    fn quick_run_delivers_every_line() {
        let collector = measure::collector_for_tests();
        let work = tempfile::tempdir().unwrap();
        let plan = Plan {
            big_bytes: 2_000_000,
            many_containers: 20,
            many_bytes_each: 5_000,
            idle_containers: 5,
            idle_seconds: 1,
            discovery_runs: 0,
            graphite_samples: 0,
            scenarios: vec![Scenario::Big, Scenario::Many, Scenario::Idle],
            work_dir: work.path().to_owned(),
            collector,
        };
        measure::ensure_sqlite3().unwrap();
        let report = run_plan(&plan).unwrap();
        report.print(&plan);
        assert!(report.all_delivered(), "{:#?}", report.rows);
        // Two sinks for the large log, two for the many containers, and the idle run.
        let ours = report.rows.iter().filter(|r| r.tool == "collector").count();
        assert_eq!(ours, 5, "{:#?}", report.rows);
    }
}
