//! Scenario 4: discovery latency with the real Docker engine, from a container's start to
//! its first line in the local sink, for each way of finding containers ([`MODES`]).
//!
//! The collector runs against this host's real Docker root, procfs, cgroupfs and socket, with
//! the discovery sources of the mode. Containers of the test image are started one after
//! another with `docker run -d IMAGE echo <marker>`; for each we poll the local sink for the
//! marker every millisecond. Two latencies are taken:
//! - from the time Docker stamped on the line (its json-file `time`, which the local sink
//!   writes at the start of the line: when dockerd received the output, just after the
//!   container started) to the moment the line is seen in the sink: what the target is about;
//! - from `docker run -d` returning (which it does after the container started) to the same
//!   moment, for reference.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};

use super::Plan;
use super::measure;
use super::report::{DiscoveryResult, Report};
use crate::{cmd, docker, workspace};

/// The label on every container this scenario starts, so leftovers are easy to remove.
const LABEL: &str = "collector-bench";

/// How long one container's line may take before it counts as lost.
const LINE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the scenario (nothing when `plan.discovery_runs` is 0).
///
/// # Errors
/// When Docker cannot be prepared or the collector cannot start.
pub(crate) fn run(plan: &Plan, report: &mut Report) -> Result<()> {
    if plan.discovery_runs == 0 {
        return Ok(());
    }
    println!(
        "xtask: bench: discovery: {} containers with the Docker engine",
        plan.discovery_runs
    );
    docker::ensure_packages().context("installing Docker")?;
    docker::ensure_daemon(&workspace::target_dir().join("xtask").join("dockerd.log"))
        .context("starting the Docker daemon")?;
    docker::ensure_image(docker::TEST_IMAGE).context("building the test image")?;
    remove_bench_containers();
    let docker_root = docker::root_dir()?;

    measure::ensure_binary(&plan.collector)?;
    for mode in &MODES {
        println!("xtask: bench: discovery: {}", mode.name);
        match run_mode(plan, mode, &docker_root) {
            Ok(result) => report.discovery.push(result),
            Err(e) => report
                .notes
                .push(format!("Discovery with {} not measured: {e:#}", mode.name)),
        }
    }
    Ok(())
}

/// A set of discovery sources to measure.
pub(crate) struct Mode {
    /// What the report calls it.
    pub(crate) name: &'static str,
    /// The `[discovery]` section.
    toml: &'static str,
    /// Whether it uses eBPF (the stricter target).
    pub(crate) ebpf: bool,
}

/// The modes, the default first: every source but eBPF, then with eBPF, then inotify alone
/// (cgroupfs and the Docker root, no Docker socket), then Docker's events alone. The periodic
/// rescan stays at its default (10 s) in all of them.
pub(crate) const MODES: [Mode; 4] = [
    Mode {
        name: "every source but eBPF",
        toml: "ebpf = \"off\"\n",
        ebpf: false,
    },
    Mode {
        name: "eBPF and every source",
        toml: "ebpf = \"on\"\n",
        ebpf: true,
    },
    Mode {
        name: "inotify only (cgroupfs, Docker root)",
        toml: "ebpf = \"off\"\ndocker_events = false\n",
        ebpf: false,
    },
    Mode {
        name: "Docker events only",
        toml: "ebpf = \"off\"\ncgroup_inotify = false\ndocker_root_inotify = false\n",
        ebpf: false,
    },
];

/// One collector with `mode`'s sources, and `plan.discovery_runs` containers.
fn run_mode(plan: &Plan, mode: &Mode, docker_root: &str) -> Result<DiscoveryResult> {
    let dir = plan.work_dir.join("runs").join("discovery");
    measure::fresh_dir(&dir)?;
    let data = dir.join("data");
    let config = dir.join("collector.toml");
    fs::write(
        &config,
        format!(
            "data_dir = {:?}\n\n[host]\ndocker_root = {:?}\n\n[discovery]\n{}",
            data.display().to_string(),
            docker_root,
            mode.toml
        ),
    )
    .with_context(|| format!("write {}", config.display()))?;
    let log = dir.join("collector.log");
    let mut child = measure::spawn_collector(&plan.collector, &config, &log)?;
    let result = measure_runs(plan, &data, &mut child, mode);
    measure::stop(&mut child, Duration::from_secs(25));
    remove_bench_containers();
    result.with_context(|| format!("collector log: {}", log.display()))
}

/// Starts the containers one by one and times their lines.
fn measure_runs(
    plan: &Plan,
    data: &Path,
    child: &mut std::process::Child,
    mode: &Mode,
) -> Result<DiscoveryResult> {
    // Let the collector open its state and finish its first scans of what already runs.
    measure::wait_for_state(data, child)?;
    thread::sleep(Duration::from_secs(2));
    let sink_root = data.join("logs").join("containers");
    if let Ok(Some(status)) = child.try_wait() {
        bail!("the collector exited at start ({status})");
    }
    let mut result = DiscoveryResult {
        mode: mode.name,
        ebpf: mode.ebpf,
        runs: plan.discovery_runs,
        from_line_ms: Vec::new(),
        from_run_ms: Vec::new(),
        check: Ok(()),
    };
    let mut lost = Vec::new();
    for i in 0..plan.discovery_runs {
        let name = format!("collector-bench-{}-{i}", std::process::id());
        let marker = format!("bench-marker-{}-{i}", std::process::id());
        let id = cmd::output(
            Command::new("docker")
                .args(["run", "-d", "--label", LABEL, "--name", &name])
                .arg(docker::TEST_IMAGE)
                .args(["echo", &marker]),
        )?;
        let returned = SystemTime::now();
        let short: String = id.chars().take(12).collect();
        let path = sink_root.join(format!("{name}-{short}")).join("stdout.log");
        match wait_for_line(&path, &marker) {
            Some((seen, line_time)) => {
                result.from_line_ms.push(ms_between(line_time, seen));
                result.from_run_ms.push(ms_between(returned, seen));
            }
            None => lost.push(name),
        }
    }
    if !lost.is_empty() {
        result.check = Err(format!(
            "{} of {} containers' lines never arrived: {}",
            lost.len(),
            plan.discovery_runs,
            lost.join(", ")
        ));
    }
    Ok(result)
}

/// Polls `path` every millisecond for a line holding `marker`; returns when it was seen and
/// the time Docker stamped on it.
fn wait_for_line(path: &PathBuf, marker: &str) -> Option<(SystemTime, SystemTime)> {
    let started = Instant::now();
    while started.elapsed() < LINE_TIMEOUT {
        if let Ok(text) = fs::read_to_string(path)
            && let Some(line) = text.lines().find(|l| l.ends_with(marker))
        {
            let seen = SystemTime::now();
            let stamp = line.split_whitespace().next().and_then(parse_rfc3339)?;
            return Some((seen, stamp));
        }
        thread::sleep(Duration::from_millis(1));
    }
    None
}

/// Milliseconds from `from` to `to`, negative when `to` is earlier.
fn ms_between(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(d) => d.as_secs_f64() * 1e3,
        Err(e) => -e.duration().as_secs_f64() * 1e3,
    }
}

/// Parses the RFC 3339 UTC times Docker writes (`2026-11-22T00:41:42.98009025Z`).
fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (h, m, sec) = (t.next()??, t.next()??, t.next()??);
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().ok()?
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + h * 3600 + m * 60 + sec;
    Some(UNIX_EPOCH + Duration::new(u64::try_from(secs).ok()?, nanos))
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Removes every container this scenario started (now or in an earlier run).
fn remove_bench_containers() {
    if let Err(e) = docker::remove_labelled(LABEL) {
        eprintln!("xtask: bench: removing the discovery containers: {e:#}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_times() {
        let t = parse_rfc3339("2026-11-22T00:41:42.98009025Z").unwrap();
        let d = t.duration_since(UNIX_EPOCH).unwrap();
        assert_eq!(d.as_secs(), 1_795_308_102);
        assert_eq!(d.subsec_nanos(), 980_090_250);
        assert_eq!(
            parse_rfc3339("1970-01-01T00:00:01Z"),
            Some(UNIX_EPOCH + Duration::from_secs(1))
        );
        assert_eq!(parse_rfc3339("2026-11-22T00:41:42"), None);
        assert_eq!(parse_rfc3339("garbage"), None);
    }
}
