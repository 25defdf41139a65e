//! The collector's runs against generated inputs: one large log (to each sink), many
//! containers at once, and idle containers.
//!
//! Each run gets a fresh data directory and a configuration that points the collector at
//! the generated Docker root, with empty procfs and cgroupfs roots, no Docker socket, no
//! Docker events and no eBPF (which would watch this real host's processes): discovery is the
//! Docker root's own scan and inotify watch. Completion is
//! the collector's delivered count in its `state.db` reaching the number of lines written.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use super::Plan;
use super::generate::{self, Spec, Workload};
use super::measure;
use super::others;
use super::report::{IdleResult, Report, Row};

/// Which sink a run enables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sink {
    /// Accept and drop.
    Discard,
    /// The local directory sink.
    File,
}

impl Sink {
    /// The name in the table.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Discard => "discard",
            Self::File => "file",
        }
    }
}

/// Scenario 1: one large json-file log, read from the page cache, to each sink; with the
/// ceiling and the other collectors beside it.
///
/// # Errors
/// When the input cannot be generated or a process cannot be started.
pub(crate) fn big(plan: &Plan, report: &mut Report) -> Result<()> {
    let workload = generate::ensure(
        &plan.work_dir,
        &Spec {
            name: "big",
            containers: 1,
            bytes_each: plan.big_bytes,
            lines_each: None,
        },
    )?;
    generate::verify(&workload)?;
    let scenario = format!(
        "1 log, {:.0} MB",
        workload.expected.input_bytes as f64 / 1e6
    );
    others::warm_page_cache(&workload)?;
    others::ceiling(&scenario, &workload, report)?;
    for sink in [Sink::Discard, Sink::File] {
        let row = run_collector(
            plan,
            &scenario,
            &format!("big-{}", sink.name()),
            &workload,
            sink,
        )?;
        report.rows.push(row);
        others::fluent_bit(plan, &scenario, &workload, sink, report)?;
        others::vector(plan, &scenario, &workload, sink, report)?;
    }
    Ok(())
}

/// Scenario 2: many containers with small logs, all tailed at once: peak RSS.
///
/// # Errors
/// As [`big`].
pub(crate) fn many(plan: &Plan, report: &mut Report) -> Result<()> {
    let workload = generate::ensure(
        &plan.work_dir,
        &Spec {
            name: "many",
            containers: plan.many_containers,
            bytes_each: plan.many_bytes_each,
            lines_each: None,
        },
    )?;
    generate::verify(&workload)?;
    let scenario = format!(
        "{} containers, {:.0} MB",
        plan.many_containers,
        workload.expected.input_bytes as f64 / 1e6
    );
    others::warm_page_cache(&workload)?;
    for sink in [Sink::Discard, Sink::File] {
        let row = run_collector(
            plan,
            &scenario,
            &format!("many-{}", sink.name()),
            &workload,
            sink,
        )?;
        report.rows.push(row);
    }
    Ok(())
}

/// Scenario 3: quiet containers. After their few lines are delivered, the CPU the collector
/// spends over `plan.idle_seconds` while nothing happens.
///
/// # Errors
/// As [`big`].
pub(crate) fn idle(plan: &Plan, report: &mut Report) -> Result<()> {
    let workload = generate::ensure(
        &plan.work_dir,
        &Spec {
            name: "idle",
            containers: plan.idle_containers,
            bytes_each: 0,
            lines_each: Some(10),
        },
    )?;
    let scenario = format!("{} quiet containers", plan.idle_containers);
    let run = start_collector(plan, "idle", &workload, Sink::File)?;
    let mut child = run.child;
    let started = Instant::now();
    let progress = measure::wait_for_count(&mut child, workload.expected.records, || {
        measure::delivered_lines(&run.db)
    });
    let result = progress.and_then(|progress| {
        let check = measure::check_delivered("idle", workload.expected.records, progress.count);
        report.rows.push(Row::collector(
            &scenario,
            Sink::File,
            &workload,
            &progress,
            progress.at - started,
            check.clone(),
        ));
        // Let start-up work (the first rescan, identity) settle, then measure a quiet window.
        thread::sleep(Duration::from_secs(1));
        let pid = child.id();
        let cpu_before = measure::cpu_seconds(pid)?;
        let window = Instant::now();
        thread::sleep(Duration::from_secs(plan.idle_seconds));
        let cpu = measure::cpu_seconds(pid)? - cpu_before;
        let seconds = window.elapsed().as_secs_f64();
        report.idle = Some(IdleResult {
            containers: plan.idle_containers,
            seconds,
            cpu_seconds: cpu,
            peak_rss: measure::peak_rss_bytes(pid)?,
            check,
        });
        Ok(())
    });
    measure::stop(&mut child, Duration::from_secs(25));
    result
}

/// A collector started on a workload.
pub(crate) struct Started {
    /// The process.
    pub(crate) child: Child,
    /// Its state database.
    pub(crate) db: PathBuf,
    /// Its local sink's root.
    pub(crate) sink_dir: PathBuf,
}

/// Starts the collector on `workload` with `sink`, in a fresh `<work>/runs/<name>`.
///
/// # Errors
/// When the directory cannot be prepared or the process cannot start.
pub(crate) fn start_collector(
    plan: &Plan,
    name: &str,
    workload: &Workload,
    sink: Sink,
) -> Result<Started> {
    measure::ensure_binary(&plan.collector)?;
    let dir = plan.work_dir.join("runs").join(name);
    measure::fresh_dir(&dir)?;
    let empty = dir.join("empty");
    fs::create_dir_all(&empty).with_context(|| format!("create {}", empty.display()))?;
    let data = dir.join("data");
    let config = dir.join("collector.toml");
    fs::write(
        &config,
        collector_config(&data, &empty, &workload.docker_root, sink),
    )
    .with_context(|| format!("write {}", config.display()))?;
    let child = measure::spawn_collector(&plan.collector, &config, &dir.join("collector.log"))?;
    Ok(Started {
        child,
        db: data.join("state.db"),
        sink_dir: data.join("logs"),
    })
}

/// Runs the collector on `workload` until every line is delivered (or it stalls), and
/// measures it.
///
/// # Errors
/// When it cannot start or its procfs files cannot be read.
pub(crate) fn run_collector(
    plan: &Plan,
    scenario: &str,
    name: &str,
    workload: &Workload,
    sink: Sink,
) -> Result<Row> {
    println!("xtask: bench: {scenario}: collector to {}", sink.name());
    let run = start_collector(plan, name, workload, sink)?;
    let mut child = run.child;
    let started = Instant::now();
    let progress = measure::wait_for_count(&mut child, workload.expected.records, || {
        measure::delivered_lines(&run.db)
    });
    measure::stop(&mut child, Duration::from_secs(25));
    let progress = progress?;
    let mut check = measure::check_delivered(name, workload.expected.records, progress.count);
    if check.is_ok() && sink == Sink::File {
        let written = measure::tree_bytes(&run.sink_dir);
        if written != workload.expected.sink_bytes {
            check = Err(format!(
                "{name}: the local sink holds {written} bytes, {} expected",
                workload.expected.sink_bytes
            ));
        }
    }
    Ok(Row::collector(
        scenario,
        sink,
        workload,
        &progress,
        progress.at - started,
        check,
    ))
}

/// The configuration of a benchmark run: the generated Docker root, empty procfs and
/// cgroupfs, no Docker socket or events, one sink.
fn collector_config(data: &Path, empty: &Path, docker_root: &Path, sink: Sink) -> String {
    let sinks = match sink {
        Sink::Discard => "[sinks.file]\nenabled = false\n\n[sinks.discard]\nenabled = true\n",
        Sink::File => "[sinks.file]\nenabled = true\n",
    };
    format!(
        concat!(
            "data_dir = {data:?}\n\n",
            "[host]\nprocfs_root = {empty:?}\ncgroupfs_root = {empty:?}\n",
            "docker_root = {docker:?}\ndocker_socket = {socket:?}\n\n",
            "[discovery]\ndocker_events = false\ncgroup_inotify = false\nebpf = \"off\"\n\n",
            "{sinks}"
        ),
        data = data.display().to_string(),
        empty = empty.display().to_string(),
        docker = docker_root.display().to_string(),
        socket = empty.join("no-docker.sock").display().to_string(),
        sinks = sinks,
    )
}
