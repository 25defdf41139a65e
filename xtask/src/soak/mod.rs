//! `cargo xtask soak --minutes N`: the release collector under a steady mixed load for N
//! minutes, its RSS and open descriptors sampled as it goes, then a growth verdict and a
//! check that every line of the soak's containers arrived.
//!
//! The collector runs against this host's Docker (root, socket, procfs, cgroupfs; eBPF off)
//! with the local directory sink and a Graphite TCP listener, in a temporary data directory
//! under `<target>/xtask/soak`. Exit code 1 when a line is missing or duplicated, when RSS or
//! open descriptors grew past the limits of [`verdict`], or when the run was interrupted.
//!
//! # Layout
//! - [`load`]: the containers (long-running with rotation, short-lived) and the Graphite
//!   sender.
//! - [`verdict`]: samples, their table, and the growth verdict.

mod load;
mod verdict;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use self::load::{Containers, GraphiteLoad, Role};
use self::verdict::Sample;
use crate::bench::{self, graphite, measure};
use crate::{docker, workspace};

/// Options of `cargo xtask soak`.
#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// How long the load runs, in minutes.
    #[arg(long, value_name = "N")]
    pub(crate) minutes: u64,
    /// Seconds between two samples of the collector.
    #[arg(long, value_name = "S", default_value_t = 10)]
    pub(crate) sample_seconds: u64,
    /// The collector binary; by default `cargo build --release -p collector` and its output.
    #[arg(long, value_name = "PATH")]
    pub(crate) collector: Option<PathBuf>,
}

/// Rows of the summary table (the live table has every sample).
const SUMMARY_ROWS: usize = 13;

/// How often exited containers are looked for (and short-lived ones removed).
const REAP_EVERY: Duration = Duration::from_secs(2);

/// Set by SIGINT or SIGTERM: the run stops at the next tick and cleans up.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: nix::libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Runs the soak and prints the table and the verdict.
///
/// # Errors
/// When a set-up step fails (build, Docker, the collector not starting) or Docker fails
/// during the run. Lost lines and growth are the exit code 1 instead, after the summary.
pub(crate) fn soak(options: &Options) -> Result<ExitCode> {
    if options.minutes == 0 || options.sample_seconds == 0 {
        bail!("--minutes and --sample-seconds must be at least 1");
    }
    let collector = bench::release_collector(options.collector.as_deref())?;
    measure::ensure_binary(&collector)?;
    measure::ensure_sqlite3().context("the sqlite3 shell reads the collector's state")?;
    docker::ensure_packages().context("installing Docker")?;
    docker::ensure_daemon(&workspace::target_dir().join("xtask").join("dockerd.log"))
        .context("starting the Docker daemon")?;
    docker::ensure_image(docker::TEST_IMAGE).context("building the test image")?;
    catch_signals()?;

    let parent = workspace::target_dir().join("xtask").join("soak");
    fs::create_dir_all(&parent).with_context(|| format!("create {}", parent.display()))?;
    let dir = tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in(&parent)
        .with_context(|| format!("create a directory under {}", parent.display()))?;
    let data = dir.path().join("data");
    let port = graphite::free_port()?;
    let config = dir.path().join("collector.toml");
    let docker_root = docker::root_dir()?;
    fs::write(&config, collector_config(&data, &docker_root, port))
        .with_context(|| format!("write {}", config.display()))?;
    let log = dir.path().join("collector.log");
    println!(
        "xtask: soak: {} for {} min, sampled every {} s; data dir {}",
        collector.display(),
        options.minutes,
        options.sample_seconds,
        data.display()
    );
    let mut child = measure::spawn_collector(&collector, &config, &log)?;
    let result = run(options, &mut child, &data, Path::new(&docker_root), port);
    measure::stop(&mut child, Duration::from_secs(25));
    let outcome = result.with_context(|| format!("collector log: {}", log.display()))?;
    let passed = outcome.print(options);
    if passed {
        drop(dir);
        Ok(ExitCode::SUCCESS)
    } else {
        // Keep the directory of a failed run for a look at the sink and the log.
        let kept = dir.keep();
        eprintln!(
            "xtask: soak: failed; data directory and collector log kept in {}",
            kept.display()
        );
        Ok(ExitCode::FAILURE)
    }
}

/// SIGINT and SIGTERM set [`INTERRUPTED`] once; a second one acts as usual (ends us).
fn catch_signals() -> Result<()> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESETHAND,
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(signal, &action) }.with_context(|| format!("catch {signal}"))?;
    }
    Ok(())
}

/// The collector's configuration: this host's Docker, eBPF off, the local directory sink,
/// Graphite over TCP on `port` only (no UDP, StatsD or unix socket, no forwarding).
fn collector_config(data: &Path, docker_root: &str, port: u16) -> String {
    format!(
        concat!(
            "data_dir = {data:?}\n\n",
            "[host]\ndocker_root = {docker:?}\n\n",
            "[discovery]\nebpf = \"off\"\n\n",
            "[sinks.file]\nenabled = true\n\n",
            "[metrics]\ntcp = \"127.0.0.1:{port}\"\nudp = \"\"\nstatsd = \"\"\n",
            "unix_enabled = false\n\n[metrics.carbon]\nenabled = false\n"
        ),
        data = data.display().to_string(),
        docker = docker_root,
        port = port,
    )
}

/// What a run found.
struct Outcome {
    /// Every sample, in order.
    samples: Vec<Sample>,
    /// Why the delivered counts are wrong; empty when every line arrived once.
    lost: Vec<String>,
    /// Lines the soak's containers wrote.
    lines: u64,
    /// Containers checked.
    containers: usize,
    /// Short-lived ones among them.
    shorts: usize,
    /// Graphite samples sent, connections opened, samples the collector stored.
    graphite: (u64, u64, u64),
    /// Stopped by a signal before the end.
    interrupted: bool,
}

impl Outcome {
    /// Prints the summary; says whether the run passed.
    fn print(&self, options: &Options) -> bool {
        let verdict = verdict::judge(&self.samples);
        println!(
            "\nxtask: soak: summary\n\n`cargo xtask soak --minutes {} --sample-seconds {}`\n",
            options.minutes, options.sample_seconds
        );
        println!(
            "Load: {} long-running containers writing {} lines/s each (json-file, max-size=1m, \
             max-file={}), a short-lived container every {} s ({} started and removed), {} Graphite \
             samples/s over TCP (a new connection every {} s).\n",
            load::LONG_CONTAINERS,
            load::LONG_LINES_PER_SECOND,
            verdict::MAX_FILE,
            load::SHORT_EVERY.as_secs(),
            self.shorts,
            load::GRAPHITE_PER_SECOND,
            load::GRAPHITE_RECONNECT.as_secs()
        );
        println!("{}\n", verdict::table(&self.samples, SUMMARY_ROWS));
        if self.lost.is_empty() {
            println!(
                "Delivered: all {} lines of the {} containers, each exactly once.",
                self.lines, self.containers
            );
        } else {
            println!(
                "Delivered: FAILED for {} of {} containers: {}",
                self.lost.len(),
                self.containers,
                self.lost.join("; ")
            );
        }
        let (sent, connections, stored) = self.graphite;
        println!(
            "Graphite: {sent} samples sent over {connections} connections, {stored} stored \
             (not checked: a sample may still be in the store's write interval)."
        );
        println!("{}", verdict.describe());
        if self.interrupted {
            println!("Interrupted before the end: the run does not count.");
        }
        self.lost.is_empty() && verdict.passed() && !self.interrupted
    }
}

/// The load, the sampling, and the delivered check, with the collector `child` started on
/// `data` and listening for Graphite on `port`.
fn run(
    options: &Options,
    child: &mut Child,
    data: &Path,
    docker_root: &Path,
    port: u16,
) -> Result<Outcome> {
    measure::wait_for_state(data, child)?;
    graphite::wait_listening(port, child)?;
    let db = data.join("state.db");
    let load_for = Duration::from_secs(options.minutes * 60);
    let sample_every = Duration::from_secs(options.sample_seconds);
    let mut containers = Containers::new()?;
    containers.start_long(load_for)?;
    let mut graphite = GraphiteLoad::spawn(port);
    let started = Instant::now();
    // The long-running containers stop on their own clock after `load_for`; give them a
    // minute more before calling it a failure.
    let deadline = started + load_for + Duration::from_secs(60);
    let (mut next_sample, mut next_short, mut next_reap) = (started, started, started);
    let mut samples = Vec::new();
    println!("{}", Sample::header());

    // One tick every 200 ms: sample when due, start a short-lived container when due (during
    // the load only), look for exited containers when due; stop once the load time is over
    // and every long-running container has exited, or on a signal.
    let mut interrupted = false;
    loop {
        if INTERRUPTED.load(Ordering::Relaxed) {
            println!("xtask: soak: interrupted; stopping the load and cleaning up");
            interrupted = true;
            break;
        }
        if let Some(status) = child.try_wait().context("wait for the collector")? {
            bail!("the collector exited during the soak ({status})");
        }
        let now = Instant::now();
        if now >= next_sample {
            let paths = Paths {
                data,
                db: &db,
                docker_root,
            };
            let sample = take_sample(child.id(), started, &paths, &containers, &graphite)?;
            println!("{}", sample.row());
            samples.push(sample);
            next_sample += sample_every;
        }
        let loading = now < started + load_for;
        if loading && now >= next_short {
            containers.start_short()?;
            next_short += load::SHORT_EVERY;
        }
        if now >= next_reap {
            containers.reap()?;
            next_reap += REAP_EVERY;
        }
        if !loading && !containers.any_running(Role::Long) {
            break;
        }
        if now >= deadline {
            bail!("the long-running containers were still running a minute after the load");
        }
        thread::sleep(Duration::from_millis(200));
    }
    graphite.stop()?;
    let graphite_sent = graphite.sent();

    // The last short-lived containers exit within seconds; then wait for their lines.
    let drain = Instant::now();
    while !interrupted
        && containers.any_running(Role::Short)
        && drain.elapsed() < Duration::from_secs(30)
    {
        thread::sleep(REAP_EVERY);
        containers.reap()?;
    }
    let expected: Vec<(&load::Started, u64)> = containers
        .started
        .iter()
        .filter_map(|c| Some((c, c.lines?)))
        .collect();
    let lines: u64 = expected.iter().map(|(_, n)| n).sum();
    if !interrupted {
        println!("xtask: soak: load over; waiting for the {lines} lines to be delivered");
        measure::wait_for_count(child, lines, || {
            let delivered = measure::delivered_lines_by_container(&db);
            expected
                .iter()
                .map(|(c, n)| delivered.get(&c.id).copied().unwrap_or(0).min(*n))
                .sum()
        })?;
    }
    let delivered = measure::delivered_lines_by_container(&db);
    let lost: Vec<String> = containers
        .started
        .iter()
        .filter_map(|c| match c.lines {
            Some(n) => {
                measure::check_delivered(&c.name, n, delivered.get(&c.id).copied().unwrap_or(0))
                    .err()
            }
            None if interrupted => None,
            None => Some(format!("{}: its line count is unknown", c.name)),
        })
        .collect();
    let stored = measure::query_count(&db, "SELECT coalesce(sum(samples), 0) FROM metric_owners");
    Ok(Outcome {
        samples,
        lost,
        lines,
        containers: expected.len(),
        shorts: containers.shorts(),
        graphite: (graphite_sent, graphite.connections(), stored),
        interrupted,
    })
}

/// Where a sample looks.
struct Paths<'a> {
    /// The collector's data directory.
    data: &'a Path,
    /// Its state database.
    db: &'a Path,
    /// Docker's root directory (the json-file logs are in `containers/<id>/`).
    docker_root: &'a Path,
}

/// One reading of the collector `pid` and of the load.
fn take_sample(
    pid: u32,
    started: Instant,
    paths: &Paths<'_>,
    containers: &Containers,
    graphite: &GraphiteLoad,
) -> Result<Sample> {
    let delivered = measure::delivered_lines_by_container(paths.db);
    let fds = measure::fd_targets(pid)?;
    let (log_fds, max_log_fds) = log_fds(&fds, paths.docker_root);
    Ok(Sample {
        at: started.elapsed(),
        rss: measure::rss_bytes(pid)?,
        fds: fds.len() as u64,
        log_fds,
        max_log_fds,
        threads: measure::threads(pid)?,
        containers: load::host_containers()?,
        data_bytes: measure::tree_bytes(paths.data),
        lines: containers
            .started
            .iter()
            .map(|c| delivered.get(&c.id).copied().unwrap_or(0))
            .sum(),
        graphite: graphite.sent(),
    })
}

/// Of the descriptors pointing to `targets`, how many are on a container's json-file log
/// (`<docker_root>/containers/<id>/<id>-json.log[.N][ (deleted)]`), and the most one
/// container has.
fn log_fds(targets: &[PathBuf], docker_root: &Path) -> (u64, u64) {
    let mut per_container: HashMap<&std::ffi::OsStr, u64> = HashMap::new();
    for target in targets {
        let Ok(rest) = target.strip_prefix(docker_root.join("containers")) else {
            continue;
        };
        let mut parts = rest.components();
        let (Some(id), Some(file)) = (parts.next(), parts.next()) else {
            continue;
        };
        if file.as_os_str().to_string_lossy().contains("-json.log") {
            *per_container.entry(id.as_os_str()).or_default() += 1;
        }
    }
    (
        per_container.values().sum(),
        per_container.values().copied().max().unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_on_docker_logs_are_counted_per_container() {
        let root = Path::new("/var/lib/docker");
        let targets: Vec<PathBuf> = [
            "/var/lib/docker/containers/aaa/aaa-json.log",
            "/var/lib/docker/containers/aaa/aaa-json.log.1",
            "/var/lib/docker/containers/aaa/aaa-json.log.2 (deleted)",
            "/var/lib/docker/containers/bbb/bbb-json.log",
            "/var/lib/docker/containers/bbb/config.v2.json",
            "/var/lib/collector/state.db",
            "socket:[345095]",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(log_fds(&targets, root), (4, 3));
        assert_eq!(log_fds(&targets[5..], root), (0, 0));
    }
}
