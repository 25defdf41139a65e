//! A sink that is slow, throttling, failing or gone for minutes (issue 9, "Sink outages"):
//! the collector is pointed at a [`FaultProxy`] in front of moto, and the test changes what
//! the proxy does while containers write. What a user would notice is checked: the local
//! sink keeps up at its own pace, the collector's memory stays bounded, every line arrives in
//! CloudWatch (once, in order, where the design promises it), and `/metrics` shows the
//! faults.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result, ensure};

use super::cloudwatch::metrics;
use super::{WAIT_FOR_GO, control_dir, go};
use crate::check::{self, Check, check_at_least_once_in_order};
use crate::{
    CollectorProcess, Expect, FaultProxy, Faults, Flavor, Moto, SinkLine, TestContainer, TestTask,
    messages, numbered,
};

/// The most the collector's resident memory (VmHWM, a debug build) may reach in these cases.
/// Measured: 56 to 59 MiB, 73 MiB with two CPU hogs and other suites' containers on the host
/// (the collector ships every container it sees; docs/reliability.md). The in-memory lag is
/// bounded by 128 batches (64 MiB of log files at most) and these writers' batches are
/// small, so coming near this bound means batches pile up in memory.
const RSS_BOUND_KIB: u64 = 150 * 1024;

/// How long a line Docker has written may wait for the local sink while CloudWatch is slow
/// or down: it is read every 200 ms, synced every second. Measured from the line's Docker
/// time, so a writer the host starves of CPU does not count against the collector.
const LOCAL_LAG_BOUND: Duration = Duration::from_secs(5);

/// The most lines a replay may go back in these cases: the lines of one call (at most 64
/// batches of one read pass each, a few lines per pass at these writers' rates).
const MAX_REPLAY_LINES: usize = 200;

/// A collector whose CloudWatch sink goes through `proxy` (in front of `moto`), with `env`
/// on top.
fn collector_via(
    proxy: &FaultProxy,
    moto: &Moto,
    env: &[(&str, &str)],
) -> Result<CollectorProcess> {
    let mut builder = CollectorProcess::builder();
    for (k, v) in moto.collector_env() {
        if k != "COLLECTOR_SINKS__CLOUDWATCH__ENDPOINT_URL" {
            builder = builder.env(k, v);
        }
    }
    builder = builder.env(
        "COLLECTOR_SINKS__CLOUDWATCH__ENDPOINT_URL",
        proxy.endpoint(),
    );
    for (k, v) in env {
        builder = builder.env(*k, *v);
    }
    builder.start()
}

/// `(VmRSS, VmHWM)` of `pid` in KiB.
fn memory_kib(pid: u32) -> Result<(u64, u64)> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {name} in {path}"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// A busybox loop printing `"<prefix> 1"`..`"<prefix> <n>"`, `burst` lines at a time with a
/// `pause` between bursts, once `/ctl/go` exists; then it sleeps.
fn steady_writer(prefix: &str, n: usize, burst: usize, pause: &str) -> String {
    format!(
        "{WAIT_FOR_GO}; i=1; while [ $i -le {n} ]; do echo \"{prefix} $i\"; \
         if [ $((i % {burst})) -eq 0 ]; then sleep {pause}; fi; i=$((i+1)); done; exec sleep 600"
    )
}

/// One writing container: where its lines go, and how many it writes.
#[derive(Debug)]
struct Writer {
    /// Its task's id.
    task_id: String,
    /// Its container name; its lines are `"<name> <i>"`.
    name: String,
    /// Its CloudWatch log group (`/ecs/<family>`).
    group: String,
    /// Its CloudWatch log stream (`ecs/<name>/<task id>`).
    stream: String,
    /// How many lines it writes.
    lines: usize,
    /// Its json-file log: what Docker has written.
    log_path: std::path::PathBuf,
}

impl Writer {
    /// Every line it writes, in order.
    fn expected(&self) -> Vec<String> {
        numbered(&self.name, self.lines)
    }

    /// Its stdout in the local sink.
    fn local(&self, sink: &crate::Sink) -> Result<Vec<SinkLine>> {
        sink.lines(&self.task_id, &self.name, "stdout")
    }

    /// How long the oldest line Docker wrote that the local sink does not have (it holds
    /// the first `local` lines) has waited, by its Docker time; zero when none waits. A
    /// last line Docker is still writing does not count.
    fn waiting(&self, local: usize) -> Result<Duration> {
        let text = std::fs::read_to_string(&self.log_path)
            .with_context(|| format!("read {}", self.log_path.display()))?;
        let oldest_missing = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["time"].as_str().and_then(crate::time::parse_rfc3339))
            .nth(local);
        Ok(oldest_missing
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or_default())
    }

    /// Its messages in CloudWatch.
    fn cloudwatch(&self, moto: &Moto) -> Result<Vec<String>> {
        moto.log_messages(&self.group, &self.stream)
    }
}

/// What [`watch_while_writing`] saw.
#[derive(Debug, Default)]
struct Watch {
    /// The longest a line Docker had written was seen missing from the local sink.
    local_lag: Duration,
    /// The most lines CloudWatch was behind the local sink, summed over the containers.
    cloudwatch_behind: usize,
    /// The largest VmRSS sampled, KiB.
    rss_max_kib: u64,
    /// How long the writers took.
    took: Duration,
}

/// Samples, until every container's last line is in the local sink: how long lines wait
/// for the local sink (the oldest line Docker wrote that the sink does not have yet, its
/// Docker time against now; failing as soon as it is more than [`LOCAL_LAG_BOUND`]), how
/// far CloudWatch is behind, and the collector's memory.
fn watch_while_writing(
    collector: &mut CollectorProcess,
    moto: &Moto,
    writers: &[Writer],
    timeout: Duration,
) -> Result<Watch> {
    let started = Instant::now();
    let sink = collector.sink();
    let pid = collector.pid().context("the collector is not running")?;
    let mut watch = Watch::default();
    collector.wait_until(timeout, "every line in the local sink", || {
        let mut done = 0;
        let mut behind = 0;
        let mut seen_total = Vec::new();
        for w in writers {
            let name = &w.name;
            let local: Vec<SinkLine> = w.local(&sink)?;
            seen_total.push(format!("{name}: {}", local.len()));
            if local.len() >= w.lines {
                done += 1;
                continue;
            }
            let lag = w.waiting(local.len())?;
            watch.local_lag = watch.local_lag.max(lag);
            ensure!(
                lag <= LOCAL_LAG_BOUND,
                "line {} of {name}, written by Docker, has waited {lag:?} for the local sink: \
                 held back by the CloudWatch sink",
                local.len() + 1,
            );
            if !local.is_empty() {
                behind += local.len().saturating_sub(w.cloudwatch(moto)?.len());
            }
        }
        watch.cloudwatch_behind = watch.cloudwatch_behind.max(behind);
        watch.rss_max_kib = watch.rss_max_kib.max(memory_kib(pid)?.0);
        Ok(if done == writers.len() {
            Check::Done(())
        } else {
            Check::Waiting(seen_total.join(", "))
        })
    })?;
    watch.took = started.elapsed();
    Ok(watch)
}

/// Containers of one task writing steadily: the [`Writer`]s, and the containers.
fn start_writers(
    collector: &CollectorProcess,
    task: &TestTask,
    containers: usize,
    lines: usize,
    burst: usize,
    pause: &str,
) -> Result<(Vec<Writer>, Vec<TestContainer>)> {
    let ctl = control_dir(collector)?;
    let mut writers = Vec::new();
    let mut running = Vec::new();
    for c in 0..containers {
        let name = format!("w{c}");
        let container = TestContainer::builder()
            .ecs(task, &name)
            .bind(&ctl, "/ctl")
            .shell(steady_writer(&name, lines, burst, pause))
            .start()?;
        writers.push(Writer {
            log_path: container.log_path()?,
            group: format!("/ecs/{}", task.family),
            stream: format!("ecs/{name}/{}", task.task_id),
            task_id: task.task_id.clone(),
            name,
            lines,
        });
        running.push(container);
    }
    Ok((writers, running))
}

/// Waits until every writer has a line in CloudWatch (its stream exists, requests flow).
fn wait_for_first_lines(
    collector: &mut CollectorProcess,
    moto: &Moto,
    writers: &[Writer],
) -> Result<()> {
    collector.wait_until(
        Duration::from_secs(30),
        "a first line of each writer in CloudWatch",
        || {
            let mut empty = Vec::new();
            for w in writers {
                if w.cloudwatch(moto)?.is_empty() {
                    empty.push(w.name.as_str());
                }
            }
            Ok(if empty.is_empty() {
                Check::Done(())
            } else {
                Check::Waiting(format!("none yet from {empty:?}"))
            })
        },
    )
}

/// Every line of every writer once, in order, in CloudWatch and in the local sink.
fn expect_all_once(
    collector: &mut CollectorProcess,
    moto: &Moto,
    writers: &[Writer],
    timeout: Duration,
) -> Result<()> {
    let sink = collector.sink();
    let mut expectations = Vec::new();
    for w in writers {
        let sink = sink.clone();
        expectations.push(Expect::new(
            format!("CloudWatch {} {}", w.group, w.stream),
            w.expected(),
            move || w.cloudwatch(moto),
        ));
        expectations.push(Expect::new(
            format!("local sink {}", w.name),
            w.expected(),
            move || Ok(messages(&w.local(&sink)?)),
        ));
    }
    collector.expect_exactly(timeout, expectations)
}

/// CloudWatch turns slow, answering every request 1.5 s late, while four containers write
/// 20 lines/s each for 30 s (so each call, one request per container, takes 6 s while 120
/// batches arrive, more with other containers on the host: about what the shipper's
/// in-memory lag of 128 holds): the local sink keeps up all along (no line Docker wrote
/// waits more than 5 s for it), though CloudWatch falls behind; the collector's memory stays under [`RSS_BOUND_KIB`]; once
/// the latency is gone, every line is in CloudWatch once, in order.
#[test]
fn a_slow_cloudwatch_holds_back_neither_the_local_sink_nor_memory() -> Result<()> {
    const LINES: usize = 600;
    let moto = Moto::start()?;
    let proxy = FaultProxy::start(moto.port(), Flavor::CloudWatchLogs)?;
    let mut collector = collector_via(&proxy, &moto, &[])?;
    let task = TestTask::new("sfslow");
    let (writers, _running) = start_writers(&collector, &task, 4, LINES, 4, "0.2")?;
    go(&control_dir(&collector)?)?;
    // CloudWatch turns slow once the group and streams exist and lines flow.
    wait_for_first_lines(&mut collector, &moto, &writers)?;
    proxy.set(Faults {
        latency: Duration::from_millis(1500),
        ..Faults::default()
    });
    let watch = watch_while_writing(&mut collector, &moto, &writers, Duration::from_secs(120))?;
    let slow_puts = proxy.action("PutLogEvents").forwarded;
    proxy.set(Faults::default());
    expect_all_once(&mut collector, &moto, &writers, Duration::from_secs(60))?;
    let pid = collector.pid().context("the collector is not running")?;
    let (_, hwm) = memory_kib(pid)?;
    eprintln!(
        "slow CloudWatch: writers took {:.1} s; local sink at most {:.1} s behind; CloudWatch \
         at most {} lines behind; {slow_puts} slow PutLogEvents; VmRSS max {} KiB, VmHWM {hwm} KiB",
        watch.took.as_secs_f64(),
        watch.local_lag.as_secs_f64(),
        watch.cloudwatch_behind,
        watch.rss_max_kib,
    );
    ensure!(
        watch.cloudwatch_behind >= 40 && slow_puts >= 3,
        "the latency did not slow CloudWatch down ({} lines behind at most, {slow_puts} slow \
         requests): the case proves nothing",
        watch.cloudwatch_behind
    );
    ensure!(
        hwm <= RSS_BOUND_KIB,
        "VmHWM {hwm} KiB is over the {RSS_BOUND_KIB} KiB bound"
    );
    Ok(())
}

/// Every 3rd request CloudWatch sees is throttled (HTTP 400 `ThrottlingException`) and every
/// 5th other one fails with an HTTP 500, with `max_attempts = 1` so each fault reaches the
/// collector's own retry: every line arrives once, in order (a refused request never reached
/// the service, and a retry resumes at the first request not acknowledged, so nothing is
/// sent twice), and `/metrics` counts a failed request for each fault injected.
#[test]
fn throttling_and_500s_lose_and_duplicate_nothing() -> Result<()> {
    const LINES: usize = 1500;
    let moto = Moto::start()?;
    let proxy = FaultProxy::start(moto.port(), Flavor::CloudWatchLogs)?;
    proxy.set(Faults {
        throttle_every: Some(3),
        error_every: Some(5),
        ..Faults::default()
    });
    let mut collector = collector_via(
        &proxy,
        &moto,
        &[("COLLECTOR_SINKS__CLOUDWATCH__MAX_ATTEMPTS", "1")],
    )?;
    let task = TestTask::new("sfthrottle");
    let (writers, _running) = start_writers(&collector, &task, 2, LINES, 50, "0.2")?;
    go(&control_dir(&collector)?)?;
    expect_all_once(&mut collector, &moto, &writers, Duration::from_secs(90))?;
    let counts = proxy.counts();
    let puts = proxy.action("PutLogEvents");
    let faults: u64 = counts.values().map(|c| c.throttled + c.errors).sum();
    let m = metrics(&collector)?;
    let errors = m
        .get("collector_cloudwatch_request_errors_total")
        .copied()
        .unwrap_or(0.0) as u64;
    eprintln!("throttling and 500s: proxy {counts:?}; request errors counted {errors}");
    ensure!(
        puts.throttled >= 5 && puts.errors >= 3,
        "too few faults on PutLogEvents to prove anything: {puts:?}"
    );
    // Each fault fails its call once (no SDK retry), so each is counted.
    ensure!(
        errors >= faults,
        "/metrics counts {errors} failed requests for {faults} injected faults: {counts:?}"
    );
    Ok(())
}

/// CloudWatch refuses connections for 2 minutes while three containers write 10 lines/s
/// each: the local sink keeps up all along, CloudWatch's batches go past the in-memory lag
/// (128 batches) into its disk buffer, memory stays under [`RSS_BOUND_KIB`], and once it is
/// back every line arrives, in order; a line is sent twice only within a batch whose answer
/// was lost (none here: a refused connection carries no request), so at most the last
/// unacknowledged request's lines.
#[test]
fn an_outage_of_2_minutes_fills_the_disk_buffer_and_loses_nothing() -> Result<()> {
    const LINES: usize = 1300;
    const OUTAGE: Duration = Duration::from_secs(120);
    let moto = Moto::start()?;
    let proxy = FaultProxy::start(moto.port(), Flavor::CloudWatchLogs)?;
    let mut collector = collector_via(
        &proxy,
        &moto,
        &[
            ("COLLECTOR_SINKS__CLOUDWATCH__MAX_ATTEMPTS", "2"),
            ("COLLECTOR_SINKS__CLOUDWATCH__REQUEST_TIMEOUT", "5s"),
        ],
    )?;
    let task = TestTask::new("sfoutage");
    let (writers, _running) = start_writers(&collector, &task, 3, LINES, 2, "0.2")?;
    go(&control_dir(&collector)?)?;
    // The first lines are in CloudWatch: the group and streams exist, requests go through.
    wait_for_first_lines(&mut collector, &moto, &writers)?;
    proxy.set(Faults {
        down: true,
        ..Faults::default()
    });
    let outage_started = Instant::now();
    let pid = collector.pid().context("the collector is not running")?;
    let sink = collector.sink();
    let buffer = collector.data_dir().join("buffer/cloudwatch");
    let (mut local_lag, mut rss_max, mut buffer_max) = (Duration::ZERO, 0u64, 0u64);
    // During the outage: the local sink keeps up, the buffer fills, memory stays put.
    collector.wait_until(
        OUTAGE + Duration::from_secs(10),
        "the end of the outage",
        || {
            for w in &writers {
                let name = &w.name;
                let local = w.local(&sink)?;
                let lag = w.waiting(local.len())?;
                local_lag = local_lag.max(lag);
                ensure!(
                    lag <= LOCAL_LAG_BOUND,
                    "line {} of {name}, written by Docker, has waited {lag:?} for the local \
                     sink during the outage",
                    local.len() + 1,
                );
            }
            rss_max = rss_max.max(memory_kib(pid)?.0);
            buffer_max = buffer_max.max(dir_bytes(&buffer));
            Ok(if outage_started.elapsed() >= OUTAGE {
                Check::Done(())
            } else {
                Check::Waiting(format!("{:?} into the outage", outage_started.elapsed()))
            })
        },
    )?;
    let refused = proxy.counts();
    proxy.set(Faults::default());
    let back = Instant::now();
    let all_local = writers
        .iter()
        .map(|w| w.local(&sink).map(|l| l.len()))
        .collect::<Result<Vec<_>>>()?;
    ensure!(
        buffer_max > 0,
        "CloudWatch's disk buffer ({}) stayed empty during a 2 min outage",
        buffer.display()
    );
    // Everything, in CloudWatch (at least once, in order) and in the local sink (once).
    let mut seen_by_stream = BTreeMap::new();
    for w in &writers {
        let (name, stream) = (&w.name, &w.stream);
        let expected = w.expected();
        let seen = collector.wait_until(
            Duration::from_secs(120),
            "every line after the outage",
            || {
                let seen = w.cloudwatch(&moto)?;
                Ok(
                    if seen.last() == expected.last() && seen.len() >= expected.len() {
                        Check::Done(seen)
                    } else {
                        Check::Waiting(check::describe(&seen))
                    },
                )
            },
        )?;
        check_at_least_once_in_order(&seen, &expected, MAX_REPLAY_LINES)
            .with_context(|| format!("CloudWatch {stream}: {}", check::describe(&seen)))?;
        seen_by_stream.insert(stream.clone(), seen.len() - expected.len());
        let local = messages(&w.local(&sink)?);
        crate::check_exactly_once(&local, &expected)
            .with_context(|| format!("local sink {name}"))?;
    }
    let caught_up = back.elapsed();
    let (_, hwm) = memory_kib(pid)?;
    eprintln!(
        "outage: local sink at most {:.1} s behind; buffer up to {buffer_max} bytes; local \
         lines at the end of the outage {all_local:?}; caught up {:.1} s after; duplicates \
         {seen_by_stream:?}; VmRSS max {rss_max} KiB, VmHWM {hwm} KiB; proxy {refused:?}",
        local_lag.as_secs_f64(),
        caught_up.as_secs_f64()
    );
    ensure!(
        hwm <= RSS_BOUND_KIB,
        "VmHWM {hwm} KiB is over the {RSS_BOUND_KIB} KiB bound"
    );
    // A request moto took just as the outage cut its connection has no answer: the
    // collector sends it again (at least once). Without such a lost answer, nothing twice.
    let lost = proxy.action("PutLogEvents").lost;
    ensure!(
        lost > 0 || seen_by_stream.values().all(|&d| d == 0),
        "lines sent twice although no answer was lost: {seen_by_stream:?}"
    );
    Ok(())
}

/// Bytes of the files directly in `dir` (0 when it does not exist).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
