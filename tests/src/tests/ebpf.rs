//! eBPF: instant discovery and death forensics.
//!
//! - A container is discovered through eBPF (cgroup mkdir), before it writes its first line,
//!   with the cgroup id equal to its cgroup v2 directory's inode, while every other live
//!   discovery source is off; its lines arrive.
//! - A container killed by its memory limit is recorded as OOM-killed with the victim's PID;
//!   one killed with SIGKILL is recorded with the signal. Both in SQLite (`containers`) and
//!   as the final record of the container in the sink (`lifecycle.log`).
//! - With `--ebpf off`, and as an unprivileged user (nobody, with only CAP_DAC_READ_SEARCH
//!   to read Docker's files), everything is still collected, and the collector says once why
//!   it runs without eBPF.
//!
//! Privileged: loading eBPF needs root (CAP_BPF + CAP_PERFMON); `cargo xtask test` runs these
//! as root. The eBPF cases start the collector with `--ebpf on`, so a collector that cannot
//! load its programs fails them instead of passing without eBPF.

use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rusqlite::{Connection, OpenFlags, OptionalExtension as _};

use super::{DELIVERY_TIMEOUT, WAIT_FOR_GO, control_dir, go};
use crate::sink::parse_lines;
use crate::{
    Check, CollectorBuilder, CollectorProcess, Expect, TestContainer, messages, numbered,
    numbered_lines_script,
};

/// How long the cases wait for the collector to record something.
const TIMEOUT: Duration = Duration::from_secs(30);

/// What `setpriv` does for the unprivileged collector: user and group nobody, no capability
/// but CAP_DAC_READ_SEARCH (Docker's container files are root's, mode 0600/0640).
const NOBODY: [&str; 5] = [
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
    "--inh-caps=-all,+dac_read_search",
    "--ambient-caps=+dac_read_search",
];

/// A container's row in the collector's `containers` table: the columns these cases check.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Row {
    cgroup_id: Option<i64>,
    cgroup_path: Option<String>,
    discovered_via: Option<String>,
    exit_code: Option<i64>,
    exit_signal: Option<i64>,
    oom_killed: Option<bool>,
    oom_victim_pid: Option<i64>,
    exit_pid: Option<i64>,
    death_source: Option<String>,
}

/// The row of `container_id` in the collector's state database, if it has one yet.
fn row(collector: &CollectorProcess, container_id: &str) -> Result<Option<Row>> {
    row_at(collector.data_dir(), container_id)
}

/// Waits until the container's row satisfies `done`, and returns it.
fn wait_for_row(
    collector: &mut CollectorProcess,
    container: &TestContainer,
    what: &str,
    done: impl Fn(&Row) -> bool,
) -> Result<Row> {
    let data = collector.data_dir().to_path_buf();
    let id = container.id().to_owned();
    collector.wait_until(TIMEOUT, what, || {
        Ok(match row_at(&data, &id)? {
            Some(r) if done(&r) => Check::Done(r),
            other => Check::Waiting(format!("{other:?}")),
        })
    })
}

/// [`row`] by data directory (a probe cannot borrow the collector it runs under).
fn row_at(data_dir: &Path, container_id: &str) -> Result<Option<Row>> {
    let path = data_dir.join("state.db");
    if !path.exists() {
        return Ok(None);
    }
    let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("open {}", path.display()))?;
    conn.busy_timeout(Duration::from_secs(5))?;
    query_row(&conn, container_id)
}

fn query_row(conn: &Connection, container_id: &str) -> Result<Option<Row>> {
    conn.query_row(
        "SELECT cgroup_id, cgroup_path, discovered_via, exit_code, exit_signal, oom_killed,
                oom_victim_pid, exit_pid, death_source
         FROM containers WHERE container_id = ?1",
        [container_id],
        |r| {
            Ok(Row {
                cgroup_id: r.get(0)?,
                cgroup_path: r.get(1)?,
                discovered_via: r.get(2)?,
                exit_code: r.get(3)?,
                exit_signal: r.get(4)?,
                oom_killed: r.get(5)?,
                oom_victim_pid: r.get(6)?,
                exit_pid: r.get(7)?,
                death_source: r.get(8)?,
            })
        },
    )
    .optional()
    .context("read the containers table")
}

/// The messages of the container's `lifecycle.log` in the collector's sink.
fn lifecycle(collector: &CollectorProcess, container: &TestContainer) -> Result<Vec<String>> {
    let path = collector
        .sink()
        .container_dir(container)
        .join("lifecycle.log");
    match fs::read(&path) {
        Ok(bytes) => Ok(messages(&parse_lines(&bytes, &path.display().to_string())?)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(err) => Err(err).with_context(|| format!("read {}", path.display())),
    }
}

/// Waits until the container's `lifecycle.log` holds exactly one record, and returns it.
fn wait_for_death_record(
    collector: &mut CollectorProcess,
    container: &TestContainer,
) -> Result<String> {
    let sink = collector.sink();
    let path = sink.container_dir(container).join("lifecycle.log");
    collector.wait_until(
        TIMEOUT,
        &format!("a death record in {}", path.display()),
        || {
            let lines = match fs::read(&path) {
                Ok(bytes) => messages(&parse_lines(&bytes, &path.display().to_string())?),
                Err(_) => Vec::new(),
            };
            Ok(match lines.as_slice() {
                [one] => Check::Done(one.clone()),
                _ => Check::Waiting(format!("{lines:?}")),
            })
        },
    )
}

/// Waits until the collector printed `text`.
fn wait_for_output(collector: &mut CollectorProcess, text: &str) -> Result<()> {
    let log = collector.log_path().to_path_buf();
    collector.wait_until(
        TIMEOUT,
        &format!("{text:?} in the collector's output"),
        || {
            let out = fs::read_to_string(&log).unwrap_or_default();
            Ok(if out.contains(text) {
                Check::Done(())
            } else {
                Check::Waiting("not yet".into())
            })
        },
    )
}

/// The directory of the cgroup v2 hierarchy: `/sys/fs/cgroup/unified` on hybrid hosts,
/// `/sys/fs/cgroup` on unified ones.
fn cgroup_v2_root() -> PathBuf {
    let hybrid = Path::new("/sys/fs/cgroup/unified");
    if hybrid.join("cgroup.controllers").exists() {
        hybrid.to_path_buf()
    } else {
        PathBuf::from("/sys/fs/cgroup")
    }
}

/// A collector whose only live discovery source is eBPF: no inotify on the Docker root or
/// cgroupfs, no Docker events, and one scan at start only.
fn ebpf_only() -> CollectorBuilder {
    CollectorProcess::builder()
        .args(["--ebpf", "on"])
        .env("COLLECTOR_DISCOVERY__DOCKER_ROOT_INOTIFY", "false")
        .env("COLLECTOR_DISCOVERY__CGROUP_INOTIFY", "false")
        .env("COLLECTOR_DISCOVERY__DOCKER_EVENTS", "false")
        .env("COLLECTOR_DISCOVERY__RESCAN_INTERVAL", "1h")
}

/// A collector with eBPF required.
fn with_ebpf() -> Result<CollectorProcess> {
    let mut collector = CollectorProcess::builder().args(["--ebpf", "on"]).start()?;
    wait_for_output(&mut collector, "eBPF programs attached.")?;
    Ok(collector)
}

/// A container started while the collector has only eBPF to see it is discovered through
/// eBPF while it waits to write its first line, with its cgroup v2 directory's inode as
/// cgroup id; its lines arrive; its exit is recorded by the kernel.
#[test]
fn containers_are_discovered_through_ebpf_before_their_first_line() -> Result<()> {
    let mut collector = ebpf_only().start()?;
    wait_for_output(&mut collector, "eBPF programs attached.")?;
    wait_for_output(&mut collector, "Collector running.")?;
    // The start-up scan (a few ms) must be over, or it might see the container first.
    std::thread::sleep(Duration::from_millis(500));
    let ctl = control_dir(&collector)?;
    let container = TestContainer::builder()
        .bind(&ctl, "/ctl")
        .shell(format!(
            "{WAIT_FOR_GO}; {}; exit 3",
            numbered_lines_script("ebpf line", 5, "")
        ))
        .start()?;

    let found = wait_for_row(
        &mut collector,
        &container,
        "the container discovered with its cgroup",
        |r| r.discovered_via.is_some() && r.cgroup_id.is_some() && r.cgroup_path.is_some(),
    )?;
    ensure!(
        found.discovered_via.as_deref() == Some("ebpf"),
        "discovered via {:?}, not ebpf",
        found.discovered_via
    );
    let cgroup_path = found.cgroup_path.clone().unwrap_or_default();
    let dir = cgroup_v2_root().join(cgroup_path.trim_start_matches('/'));
    let inode = fs::metadata(&dir)
        .with_context(|| format!("stat {}", dir.display()))?
        .ino();
    ensure!(
        found.cgroup_id == Some(inode as i64),
        "cgroup id {:?} is not the inode {inode} of {}",
        found.cgroup_id,
        dir.display()
    );
    let sink = collector.sink();
    let before = sink.container_lines(&container, "stdout")?;
    ensure!(
        before.is_empty(),
        "the container wrote before `go`: {before:?}"
    );

    go(&ctl)?;
    collector.expect_exactly(
        DELIVERY_TIMEOUT,
        vec![Expect::new("stdout", numbered("ebpf line", 5), || {
            Ok(messages(&sink.container_lines(&container, "stdout")?))
        })],
    )?;
    let record = wait_for_death_record(&mut collector, &container)?;
    ensure!(
        record
            .starts_with("[collector] container exited: code=3 signal=none oom_killed=false pid=")
            && record.ends_with(" via=ebpf"),
        "death record {record:?}"
    );
    Ok(())
}

/// A container killed by its memory limit is recorded as OOM-killed, with the PID of the
/// process the OOM killer chose (here its init, `exec dd` with a 64 MiB buffer under 8 MiB).
#[test]
fn an_oom_killed_container_is_recorded_with_the_victim_pid() -> Result<()> {
    let mut collector = with_ebpf()?;
    let ctl = control_dir(&collector)?;
    let container = TestContainer::builder()
        .options(["--memory", "8m"])
        .bind(&ctl, "/ctl")
        .shell(format!(
            "{WAIT_FOR_GO}; echo allocating; exec dd if=/dev/zero of=/dev/null bs=64M count=1"
        ))
        .start()?;
    let pid = i64::from(container.pid()?);
    go(&ctl)?;
    let code = container.wait_exit(TIMEOUT)?;
    ensure!(code == 137, "premise: exit code {code}, not 137 (OOM kill)");
    ensure!(
        container.inspect("{{.State.OOMKilled}}")? == "true",
        "premise: Docker says it was not OOM-killed"
    );

    let recorded = wait_for_row(
        &mut collector,
        &container,
        "the OOM kill in state.db",
        |r| {
            r.death_source.as_deref() == Some("ebpf")
                && r.oom_victim_pid.is_some()
                && r.oom_killed.is_some()
        },
    )?;
    ensure!(
        (
            recorded.oom_killed,
            recorded.oom_victim_pid,
            recorded.exit_signal,
            recorded.exit_code,
            recorded.exit_pid
        ) == (Some(true), Some(pid), Some(9), Some(137), Some(pid)),
        "recorded {recorded:?}; the victim was pid {pid}"
    );
    let record = wait_for_death_record(&mut collector, &container)?;
    let want = format!(
        "[collector] container exited: code=137 signal=SIGKILL oom_killed=true victim_pid={pid} pid={pid} via=ebpf"
    );
    ensure!(record == want, "death record {record:?}, not {want:?}");
    Ok(())
}

/// `kill -9` of a container's init is recorded with the signal, and not as an OOM kill.
#[test]
fn a_sigkilled_container_is_recorded_with_the_signal() -> Result<()> {
    let mut collector = with_ebpf()?;
    let container = TestContainer::builder()
        .shell("echo ready; exec sleep 600")
        .start()?;
    let sink = collector.sink();
    super::wait_for_line(&mut collector, "stdout", "ready", || {
        Ok(messages(&sink.container_lines(&container, "stdout")?))
    })?;
    let pid = container.pid()?;
    kill(Pid::from_raw(i32::try_from(pid)?), Signal::SIGKILL)
        .context("kill -9 the container's init")?;
    ensure!(
        container.wait_exit(TIMEOUT)? == 137,
        "premise: exit code is not 137"
    );

    let pid = i64::from(pid);
    let recorded = wait_for_row(&mut collector, &container, "the SIGKILL in state.db", |r| {
        r.death_source.as_deref() == Some("ebpf") && r.oom_killed.is_some()
    })?;
    ensure!(
        (
            recorded.exit_signal,
            recorded.exit_code,
            recorded.exit_pid,
            recorded.oom_killed,
            recorded.oom_victim_pid
        ) == (Some(9), Some(137), Some(pid), Some(false), None),
        "recorded {recorded:?} for pid {pid}"
    );
    let record = wait_for_death_record(&mut collector, &container)?;
    let want = format!(
        "[collector] container exited: code=137 signal=SIGKILL oom_killed=false pid={pid} via=ebpf"
    );
    ensure!(record == want, "death record {record:?}, not {want:?}");
    Ok(())
}

/// Without eBPF (`--ebpf off`, or as nobody, which may not load programs) every line is still
/// collected exactly once, the death comes from Docker's state, and each collector says once
/// why it runs without eBPF.
#[test]
fn without_ebpf_everything_is_still_collected() -> Result<()> {
    let mut off = CollectorProcess::builder()
        .args(["--ebpf", "off"])
        .start()?;
    let mut nobody = CollectorProcess::builder()
        .setpriv(NOBODY, (65534, 65534))
        .start()?;
    wait_for_output(&mut off, "Collector running.")?;
    wait_for_output(&mut nobody, "Collector running.")?;
    let ctl = control_dir(&off)?;
    let container = TestContainer::builder()
        .bind(&ctl, "/ctl")
        .shell(format!(
            "{WAIT_FOR_GO}; {}; echo \"no ebpf err\" >&2",
            numbered_lines_script("no ebpf line", 20, "")
        ))
        .start()?;
    // Both tail it before it writes.
    wait_for_output(&mut off, container.id())?;
    wait_for_output(&mut nobody, container.id())?;
    go(&ctl)?;
    for collector in [&mut off, &mut nobody] {
        let sink = collector.sink();
        collector.expect_exactly(
            DELIVERY_TIMEOUT,
            vec![
                Expect::new("stdout", numbered("no ebpf line", 20), || {
                    Ok(messages(&sink.container_lines(&container, "stdout")?))
                }),
                Expect::new("stderr", vec!["no ebpf err".to_owned()], || {
                    Ok(messages(&sink.container_lines(&container, "stderr")?))
                }),
            ],
        )?;
        let record = wait_for_death_record(collector, &container)?;
        ensure!(
            record == "[collector] container exited: code=0 oom_killed=false via=docker",
            "death record {record:?}"
        );
        ensure!(
            lifecycle(collector, &container)?.len() == 1,
            "one death record"
        );
    }
    let said = off.output();
    ensure!(
        said.matches("eBPF disabled by configuration").count() == 1,
        "`--ebpf off` not said once:\n{said}"
    );
    let said = nobody.output();
    let unavailable: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("eBPF unavailable"))
        .collect();
    ensure!(
        unavailable.len() == 1 && unavailable[0].contains("no CAP_BPF"),
        "nobody's collector must say once that it lacks CAP_BPF: {unavailable:?}"
    );
    ensure!(
        row(&nobody, container.id())?.is_some_and(|r| r.death_source.as_deref() == Some("docker")),
        "nobody's state.db"
    );
    Ok(())
}
