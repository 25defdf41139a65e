//! Graphite TCP ingest: samples per second and CPU per million samples of the collector
//! (parse, attribute, store in SQLite, forward with the identity in the path) beside
//! carbon-c-relay (parse and forward only), both forwarding to the same counting listener.
//!
//! One sender writes every line over one TCP connection to 127.0.0.1; a run is complete
//! when the listener counted every line (and, for the collector, its state database holds
//! every sample). CPU is the measured process's own (procfs), so per-core figures are
//! `samples / CPU seconds`.

use std::fs;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};

use super::Plan;
use super::measure;
use super::report::{Report, Row};

/// Distinct metric paths in the input.
const PATHS: u64 = 1000;

/// The input: `samples` Graphite lines over [`PATHS`] paths, `bench.app{0..99}.metric{0..9}`.
/// (The application is `(i / 10) % 100`: with `i % 100` it would be tied to the metric's
/// `i % 10` and only 100 paths would be sent.)
fn input(samples: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(samples as usize * 40);
    push_lines(&mut out, "bench", 0..samples, PATHS);
    out
}

/// Appends Graphite lines `<prefix>.app<a>.metric<m> <i> <now>` for each `i` of `numbers`,
/// over `paths` paths (10 metrics per application), stamped with the current second: the
/// load of the graphite bench and of `cargo xtask soak`.
pub(crate) fn push_lines(
    out: &mut Vec<u8>,
    prefix: &str,
    numbers: std::ops::Range<u64>,
    paths: u64,
) {
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for i in numbers {
        let _ = writeln!(
            out,
            "{prefix}.app{}.metric{} {i} {ts}",
            (i / 10) % (paths / 10).max(1),
            i % 10
        );
    }
}

/// A TCP listener on 127.0.0.1 counting the lines it receives, on every connection.
fn counting_listener() -> Result<(u16, Arc<AtomicU64>)> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind the counting listener")?;
    let port = listener.local_addr()?.port();
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let c = c.clone();
            thread::spawn(move || {
                let mut r = BufReader::with_capacity(1 << 20, conn);
                let mut line = Vec::new();
                while r.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                    c.fetch_add(1, Ordering::Relaxed);
                    line.clear();
                }
            });
        }
    });
    Ok((port, count))
}

/// A free TCP port on 127.0.0.1.
pub(crate) fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")
        .context("bind a port")?
        .local_addr()?
        .port())
}

/// Waits until `port` accepts connections.
pub(crate) fn wait_listening(port: u16, child: &mut Child) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(
            Instant::now() < deadline && child.try_wait()?.is_none(),
            "nothing listens on port {port}"
        );
        thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Writes `data` to `port` in one connection, from another thread.
fn send(port: u16, data: Arc<Vec<u8>>) -> thread::JoinHandle<Result<()>> {
    thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).context("connect the sender")?;
        s.write_all(&data).context("send the input")?;
        Ok(())
    })
}

/// The scenario: both runs, rows in `report`.
///
/// # Errors
/// When a process cannot be started or the input cannot be sent.
pub(crate) fn run(plan: &Plan, report: &mut Report) -> Result<()> {
    let data = Arc::new(input(plan.graphite_samples));
    let scenario = format!("graphite tcp, {} samples", plan.graphite_samples);
    println!("xtask: bench: {scenario}: collector");
    let ours = collector(plan, &scenario, data.clone())?;
    let mut per_core = vec![format!("collector {:.0}", per_cpu_second(&ours))];
    report.rows.push(ours);
    if which("carbon-c-relay") {
        println!("xtask: bench: {scenario}: carbon-c-relay");
        let theirs = relay(plan, &scenario, data)?;
        per_core.push(format!("carbon-c-relay {:.0}", per_cpu_second(&theirs)));
        report.rows.push(theirs);
        report.notes.push(format!(
            "Graphite TCP ingest, samples per CPU-second (one core): {}. The collector also attributes and stores every sample in SQLite; carbon-c-relay only forwards.",
            per_core.join(", ")
        ));
    } else {
        report
            .notes
            .push("carbon-c-relay is not installed: no Graphite comparison (apt-get install carbon-c-relay)".into());
    }
    Ok(())
}

fn per_cpu_second(r: &Row) -> f64 {
    r.lines as f64 / r.cpu_seconds.max(1e-9)
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// A measured run as a table row.
struct Measured<'a> {
    tool: &'a str,
    sink: &'a str,
    lines: u64,
    progress: measure::Progress,
    wall: Duration,
    check: Result<(), String>,
}

impl Measured<'_> {
    fn row(self, scenario: &str, data: &[u8]) -> Row {
        Row {
            scenario: scenario.to_owned(),
            tool: self.tool.to_owned(),
            sink: self.sink.to_owned(),
            wall: self.wall,
            cpu_seconds: self.progress.cpu,
            input_bytes: data.len() as u64,
            lines: self.lines,
            delivered: Some(self.progress.count),
            peak_rss: Some(self.progress.peak_rss),
            check: self.check,
        }
    }
}

/// The collector: Graphite TCP in, SQLite and carbon forwarding out.
fn collector(plan: &Plan, scenario: &str, data: Arc<Vec<u8>>) -> Result<Row> {
    measure::ensure_binary(&plan.collector)?;
    let dir = plan.work_dir.join("runs").join("graphite-collector");
    measure::fresh_dir(&dir)?;
    let empty = dir.join("empty");
    fs::create_dir_all(&empty).with_context(|| format!("create {}", empty.display()))?;
    let data_dir = dir.join("data");
    let (upstream, forwarded) = counting_listener()?;
    let port = free_port()?;
    let config = dir.join("collector.toml");
    fs::write(
        &config,
        format!(
            concat!(
                "data_dir = {data:?}\n\n",
                "[host]\nprocfs_root = {empty:?}\ncgroupfs_root = {empty:?}\n",
                "docker_root = {empty:?}\ndocker_socket = {socket:?}\n\n",
                "[discovery]\ndocker_events = false\ncgroup_inotify = false\nebpf = \"off\"\n\n",
                "[sinks.file]\nenabled = false\n\n[sinks.discard]\nenabled = true\n\n",
                "[metrics]\ntcp = \"127.0.0.1:{port}\"\nudp = \"\"\nstatsd = \"\"\n",
                "unix_enabled = false\nmax_samples_per_second = 4000000000\n\n",
                "[metrics.carbon]\nenabled = true\naddress = \"127.0.0.1:{upstream}\"\n"
            ),
            data = data_dir.display().to_string(),
            empty = empty.display().to_string(),
            socket = empty.join("no-docker.sock").display().to_string(),
            port = port,
            upstream = upstream,
        ),
    )
    .with_context(|| format!("write {}", config.display()))?;
    let mut child = measure::spawn_collector(&plan.collector, &config, &dir.join("collector.log"))?;
    let result = (|| {
        wait_listening(port, &mut child)?;
        let started = Instant::now();
        let sender = send(port, data.clone());
        let n = plan.graphite_samples;
        // Complete when every sample is both forwarded and stored, so the CPU counted
        // covers both.
        let db = data_dir.join("state.db");
        let progress = measure::wait_for_count(&mut child, n, || {
            let stored =
                measure::query_count(&db, "SELECT coalesce(sum(samples), 0) FROM metric_owners");
            stored.min(forwarded.load(Ordering::Relaxed))
        })?;
        let wall = progress.at - started;
        sender
            .join()
            .map_err(|_| anyhow::anyhow!("sender panicked"))??;
        let check =
            measure::check_delivered("graphite-collector forwarded and stored", n, progress.count);
        Ok(Measured {
            tool: "collector",
            sink: "sqlite + carbon",
            lines: n,
            progress,
            wall,
            check,
        }
        .row(scenario, &data))
    })();
    measure::stop(&mut child, Duration::from_secs(25));
    result
}

/// carbon-c-relay: Graphite TCP in, forwarded out.
fn relay(plan: &Plan, scenario: &str, data: Arc<Vec<u8>>) -> Result<Row> {
    let dir = plan.work_dir.join("runs").join("graphite-relay");
    measure::fresh_dir(&dir)?;
    let (upstream, forwarded) = counting_listener()?;
    let port = free_port()?;
    let conf = dir.join("relay.conf");
    fs::write(
        &conf,
        format!(
            "listen type linemode 127.0.0.1:{port} proto tcp ;\n\
             cluster upstream forward 127.0.0.1:{upstream} ;\n\
             match * send to upstream stop ;\n"
        ),
    )?;
    // One worker: the figure is per core, like the collector's.
    let mut child = Command::new("carbon-c-relay")
        .args(["-s", "-w", "1", "-q", "1000000", "-f"])
        .arg(&conf)
        .arg("-l")
        .arg(dir.join("relay.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start carbon-c-relay")?;
    let result = (|| {
        wait_listening(port, &mut child)?;
        let started = Instant::now();
        let sender = send(port, data.clone());
        let n = plan.graphite_samples;
        let progress =
            measure::wait_for_count(&mut child, n, || forwarded.load(Ordering::Relaxed))?;
        let wall = progress.at - started;
        sender
            .join()
            .map_err(|_| anyhow::anyhow!("sender panicked"))??;
        let check = measure::check_delivered("carbon-c-relay forwarded", n, progress.count);
        Ok(Measured {
            tool: "carbon-c-relay",
            sink: "carbon",
            lines: n,
            progress,
            wall,
            check,
        }
        .row(scenario, &data))
    })();
    measure::stop(&mut child, Duration::from_secs(5));
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::Scenario;

    /// The scenario end to end on a small input with whatever collector this workspace
    /// built: every sample forwarded and stored, and carbon-c-relay's run beside it.
    #[test]
    fn quick_graphite_run_delivers_every_sample() {
        let work = tempfile::tempdir().unwrap();
        let plan = Plan {
            big_bytes: 0,
            many_containers: 0,
            many_bytes_each: 0,
            idle_containers: 0,
            idle_seconds: 0,
            discovery_runs: 0,
            graphite_samples: 20_000,
            scenarios: vec![Scenario::Graphite],
            work_dir: work.path().to_owned(),
            collector: measure::collector_for_tests(),
        };
        measure::ensure_sqlite3().unwrap();
        let mut report = Report::default();
        run(&plan, &mut report).unwrap();
        report.print(&plan);
        assert!(report.all_delivered(), "{:#?}", report.rows);
        assert_eq!(report.rows[0].tool, "collector");
        assert_eq!(report.rows[0].delivered, Some(20_000));
    }

    #[test]
    fn the_input_has_every_path() {
        let data = input(PATHS * 3);
        let paths: std::collections::HashSet<&[u8]> = data
            .split(|b| *b == b'\n')
            .filter_map(|l| l.split(|b| *b == b' ').next())
            .filter(|p| !p.is_empty())
            .collect();
        assert_eq!(paths.len() as u64, PATHS);
    }
}
