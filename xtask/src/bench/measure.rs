//! Measuring a process from procfs, and the checks every run must pass.
//!
//! - CPU: `utime + stime` of `/proc/<pid>/stat` (every thread), read while the process is
//!   alive; for commands we wait for (`cat`), the change of our own `cutime + cstime`.
//! - Peak RSS: `VmHWM` of `/proc/<pid>/status`.
//! - Delivered lines: the collector's own count, `SELECT sum(lines) FROM sources` in its
//!   `state.db`, read with the `sqlite3` shell (the state is SQLite in WAL mode, readable
//!   while the collector writes). The collector counts a batch there only after every sink
//!   acknowledged it.

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::cmd;

/// How often completion is polled.
const POLL: Duration = Duration::from_millis(50);

/// A run that delivers nothing new for this long has stopped for good.
pub(crate) const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Installs the `sqlite3` shell with `apt-get` when it is missing.
///
/// # Errors
/// When it is missing and cannot be installed.
pub(crate) fn ensure_sqlite3() -> Result<()> {
    if cmd::succeeds(Command::new("sqlite3").arg("-version")) {
        return Ok(());
    }
    println!("xtask: bench: installing sqlite3 (apt-get install -y sqlite3)");
    cmd::run(
        Command::new("apt-get")
            .args(["-q", "install", "-y", "sqlite3"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .context("the sqlite3 shell is missing and could not be installed; install it as root")?;
    Ok(())
}

/// Clock ticks per second of `/proc/<pid>/stat` times.
fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        cmd::output(Command::new("getconf").arg("CLK_TCK"))
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(100.0)
    })
}

/// The fields of a `/proc/<pid>/stat` line after the command name (which may hold spaces
/// and parentheses, so everything up to the last `)` is skipped). Field 3 of `proc(5)` is
/// index 0 here.
fn stat_fields(stat: &str) -> Vec<&str> {
    let rest = stat.rsplit_once(')').map_or(stat, |(_, rest)| rest);
    rest.split_whitespace().collect()
}

/// CPU seconds (user + system, all threads) of a live process.
///
/// # Errors
/// When its `stat` cannot be read or parsed.
pub(crate) fn cpu_seconds(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    let fields = stat_fields(&stat);
    // utime and stime are fields 14 and 15 of proc(5).
    let ticks = |i: usize| -> Result<f64> {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .with_context(|| format!("parse field {} of {path}", i + 3))
    };
    Ok((ticks(11)? + ticks(12)?) / clock_ticks())
}

/// CPU seconds of the children we have waited for (`cutime + cstime` of ourselves).
///
/// # Errors
/// When our own `stat` cannot be read.
pub(crate) fn children_cpu_seconds() -> Result<f64> {
    let stat = fs::read_to_string("/proc/self/stat").context("read /proc/self/stat")?;
    let fields = stat_fields(&stat);
    let ticks = |i: usize| -> Result<f64> {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .context("parse /proc/self/stat")
    };
    // cutime and cstime are fields 16 and 17.
    Ok((ticks(13)? + ticks(14)?) / clock_ticks())
}

/// Peak resident set size of a live process, in bytes.
///
/// # Errors
/// When its `status` cannot be read or has no `VmHWM`.
pub(crate) fn peak_rss_bytes(pid: u32) -> Result<u64> {
    Ok(status_field(pid, "VmHWM")? * 1024)
}

/// Resident set size of a live process now (`VmRSS`), in bytes.
///
/// # Errors
/// When its `status` cannot be read or has no `VmRSS`.
pub(crate) fn rss_bytes(pid: u32) -> Result<u64> {
    Ok(status_field(pid, "VmRSS")? * 1024)
}

/// Threads of a live process (`Threads` of its `status`).
///
/// # Errors
/// When its `status` cannot be read or has no `Threads`.
pub(crate) fn threads(pid: u32) -> Result<u64> {
    status_field(pid, "Threads")
}

/// What each open file descriptor of a live process points to (the links of
/// `/proc/<pid>/fd`: a path, with ` (deleted)` after it for a removed file, or
/// `socket:[inode]`, `anon_inode:inotify`...). A descriptor closed while the directory is
/// read is left out.
///
/// # Errors
/// When the directory cannot be read (the process is gone, or is not ours).
pub(crate) fn fd_targets(pid: u32) -> Result<Vec<std::path::PathBuf>> {
    let path = format!("/proc/{pid}/fd");
    Ok(fs::read_dir(&path)
        .with_context(|| format!("read {path}"))?
        .flatten()
        .filter_map(|e| fs::read_link(e.path()).ok())
        .collect())
}

/// The number of a `Name: <number> [kB]` line of `/proc/<pid>/status` (kB for sizes).
fn status_field(pid: u32, name: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .with_context(|| format!("no {name} in {path}"))
}

/// Runs a SQL query that returns one integer against `db` with the `sqlite3` shell; 0 while
/// the database or its tables do not exist yet.
pub(crate) fn query_count(db: &Path, sql: &str) -> u64 {
    query(db, sql)
        .and_then(|out| out.trim().parse().ok())
        .unwrap_or(0)
}

/// Runs a read-only SQL query against `db` with the `sqlite3` shell and returns its output
/// (`|` between columns, a line per row); `None` while the database or its tables do not
/// exist yet.
pub(crate) fn query(db: &Path, sql: &str) -> Option<String> {
    if !db.exists() {
        return None;
    }
    Command::new("sqlite3")
        .arg("-readonly")
        .arg(db)
        .arg(sql)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Lines of container output (`<container id>/json` sources, not the collector's own
/// lifecycle records) the collector has delivered, acknowledged by every sink, from its state.
pub(crate) fn delivered_lines(db: &Path) -> u64 {
    query_count(
        db,
        "SELECT coalesce(sum(lines), 0) FROM sources WHERE source LIKE '%/json'",
    )
}

/// [`delivered_lines`] per container id (the 64-hex id Docker gave it).
pub(crate) fn delivered_lines_by_container(db: &Path) -> HashMap<String, u64> {
    query(
        db,
        "SELECT container_id, sum(lines) FROM sources WHERE source LIKE '%/json' \
         GROUP BY container_id",
    )
    .unwrap_or_default()
    .lines()
    .filter_map(|row| {
        let (id, lines) = row.split_once('|')?;
        Some((id.to_owned(), lines.trim().parse().ok()?))
    })
    .collect()
}

/// How a wait for completion ended.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Progress {
    /// The last count seen.
    pub(crate) count: u64,
    /// When it reached the target (or when waiting stopped).
    pub(crate) at: Instant,
    /// CPU seconds of the process at that moment.
    pub(crate) cpu: f64,
    /// Its peak RSS at that moment, in bytes.
    pub(crate) peak_rss: u64,
}

/// Polls `count` until it reaches `target`, the process exits, or nothing changes for
/// [`STALL_TIMEOUT`]; reads the process's CPU time and peak RSS right when it ends.
///
/// # Errors
/// When the process's procfs files cannot be read while it runs.
pub(crate) fn wait_for_count(
    child: &mut Child,
    target: u64,
    mut count: impl FnMut() -> u64,
) -> Result<Progress> {
    let pid = child.id();
    let mut last = 0;
    let mut last_change = Instant::now();
    loop {
        // Sample CPU and RSS before the count, so a count that reached the target is never
        // paired with CPU spent after it.
        let cpu = cpu_seconds(pid)?;
        let peak_rss = peak_rss_bytes(pid)?;
        let at = Instant::now();
        let n = count();
        if n >= target {
            // The count may have been reached just before `at`: take CPU again so none of
            // the work is missed (the process is near idle by now).
            return Ok(Progress {
                count: n,
                at,
                cpu: cpu_seconds(pid).unwrap_or(cpu),
                peak_rss: peak_rss_bytes(pid).unwrap_or(peak_rss),
            });
        }
        if n != last {
            last = n;
            last_change = Instant::now();
        }
        let exited = child.try_wait().context("wait for the process")?.is_some();
        if exited || last_change.elapsed() >= STALL_TIMEOUT {
            if exited {
                eprintln!("xtask: bench: process {pid} exited before delivering every line");
            }
            return Ok(Progress {
                count: n,
                at,
                cpu,
                peak_rss,
            });
        }
        thread::sleep(POLL);
    }
}

/// The check every run must pass: exactly the expected number of lines delivered. Fewer is
/// loss; more means lines were delivered twice, which a clean run must not do either.
///
/// # Errors
/// A message saying what is wrong.
pub(crate) fn check_delivered(what: &str, expected: u64, delivered: u64) -> Result<(), String> {
    match delivered.cmp(&expected) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Less => Err(format!(
            "{what}: {} of {expected} lines lost",
            expected - delivered
        )),
        std::cmp::Ordering::Greater => Err(format!(
            "{what}: {} lines more than the {expected} written",
            delivered - expected
        )),
    }
}

/// Total size of the regular files under `dir` (0 when it does not exist).
pub(crate) fn tree_bytes(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => tree_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// Starts `collector run --config <config>` with `RUST_LOG=warn`, its stdout and stderr in
/// `log`.
///
/// # Errors
/// When the log cannot be created or the process cannot start.
pub(crate) fn spawn_collector(collector: &Path, config: &Path, log: &Path) -> Result<Child> {
    let out = fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
    let err = out
        .try_clone()
        .with_context(|| format!("open {}", log.display()))?;
    Command::new(collector)
        .arg("run")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("start {}", collector.display()))
}

/// Waits until the collector has created its state database in `data`: it has opened its
/// state and is about to discover what runs.
///
/// # Errors
/// When it exits first or takes more than 30 s.
pub(crate) fn wait_for_state(data: &Path, child: &mut Child) -> Result<()> {
    let started = Instant::now();
    while !data.join("state.db").exists() {
        if let Ok(Some(status)) = child.try_wait() {
            bail!("the collector exited at start ({status})");
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("the collector did not create its state in 30 s");
        }
        thread::sleep(POLL);
    }
    Ok(())
}

/// Sends SIGTERM and waits up to `grace` for the process to exit, then SIGKILLs it.
pub(crate) fn stop(child: &mut Child, grace: Duration) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let started = Instant::now();
    while started.elapsed() < grace {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        thread::sleep(POLL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A fresh, empty directory.
///
/// # Errors
/// When it cannot be removed or created.
pub(crate) fn fresh_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("remove {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))
}

#[cfg(test)]
/// The collector binary the harness's own tests run: `COLLECTOR_BIN` (which `cargo xtask
/// test` sets), else this workspace's debug build, built if missing.
///
/// # Panics
/// When there is none and it cannot be built: the test cannot run without it.
pub(crate) fn collector_for_tests() -> std::path::PathBuf {
    use crate::workspace;
    if let Some(bin) = std::env::var_os("COLLECTOR_BIN") {
        return bin.into();
    }
    let bin = workspace::target_dir().join("debug").join("collector");
    if !bin.exists() {
        let status = workspace::cargo()
            .args(["build", "-p", "collector"])
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "no collector binary: set COLLECTOR_BIN or run `cargo build -p collector`"
        );
    }
    bin
}

/// Fails unless `path` is an executable file.
///
/// # Errors
/// When it is missing.
pub(crate) fn ensure_binary(path: &Path) -> Result<()> {
    if !path.is_file() {
        bail!("{} is not a file", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The delivered-count check fails on a short count and on a long one.
    #[test]
    fn check_delivered_fails_unless_exact() {
        assert_eq!(check_delivered("run", 10, 10), Ok(()));
        let short = check_delivered("run", 10, 9).unwrap_err();
        assert!(short.contains("1 of 10 lines lost"), "{short}");
        let long = check_delivered("run", 10, 12).unwrap_err();
        assert!(long.contains("2 lines more"), "{long}");
        assert!(check_delivered("run", 1, 0).is_err());
    }

    #[test]
    fn stat_fields_skip_odd_command_names() {
        let stat = "42 (a) b (c)) S 1 2 3 4 5 6 7 8 9 10 120 30 5 6 20 0 1 0";
        let f = stat_fields(stat);
        assert_eq!(f[0], "S");
        assert_eq!((f[11], f[12], f[13], f[14]), ("120", "30", "5", "6"));
    }

    #[test]
    fn procfs_readings_of_ourselves() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).unwrap() >= 0.0);
        assert!(peak_rss_bytes(pid).unwrap() > 0);
        assert!(rss_bytes(pid).unwrap() > 0);
        assert!(threads(pid).unwrap() >= 1);
        // stdin, stdout, stderr at least.
        assert!(fd_targets(pid).unwrap().len() >= 3);
        assert!(children_cpu_seconds().unwrap() >= 0.0);
    }

    /// A count that stops short of the target is reported as it is, not as success.
    #[test]
    fn wait_for_count_reports_a_short_count_when_the_process_exits() {
        let mut child = Command::new("sleep").arg("0.3").spawn().unwrap();
        let progress = wait_for_count(&mut child, 10, || 3);
        // The process may be gone before its procfs files are read.
        if let Ok(p) = progress {
            assert_eq!(p.count, 3);
            assert!(check_delivered("sleep", 10, p.count).is_err());
        }
        let _ = child.wait();
    }
}
