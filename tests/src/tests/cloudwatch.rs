//! Scenarios of the CloudWatch Logs sink against a real moto server and real containers: what
//! a user would find in CloudWatch (groups, streams, every line once and in order), and what
//! `/metrics` says was sent.
//!
//! moto enforces few PutLogEvents limits (shared notes), so the request-size claims are
//! checked on the collector's own counters of what it sent: the most events and bytes in one
//! acknowledged request.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};

use super::{DELIVERY_TIMEOUT, WAIT_FOR_GO, control_dir, go};
use crate::check::{self, Check, check_at_least_once_in_order};
use crate::{CollectorProcess, Expect, Moto, TestContainer, TestTask, messages, numbered};

/// A stream template that keeps stdout, stderr, declared files and the collector's lifecycle
/// records apart, so each can be checked alone.
const STREAM_PER_OUTPUT: &str = "ecs/{container_name}/{task_id}/{stream}";

/// A collector whose CloudWatch sink points at `moto`, with `env` on top.
fn collector_for(moto: &Moto, env: &[(&str, &str)]) -> Result<CollectorProcess> {
    let mut builder = CollectorProcess::builder();
    for (k, v) in moto.collector_env() {
        builder = builder.env(k, v);
    }
    for (k, v) in env {
        builder = builder.env(*k, *v);
    }
    builder.start()
}

/// The collector's `/metrics`, as `name{labels}` -> value.
pub(super) fn metrics(collector: &CollectorProcess) -> Result<BTreeMap<String, f64>> {
    let socket = collector.data_dir().join("control.sock");
    let mut s =
        UnixStream::connect(&socket).with_context(|| format!("connect {}", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: collector\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .context("no body in the /metrics answer")?;
    Ok(body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect())
}

fn metric(m: &BTreeMap<String, f64>, name: &str) -> Result<f64> {
    m.get(name)
        .copied()
        .with_context(|| format!("no {name} in /metrics: {m:?}"))
}

/// Lines of one ECS task container arrive in CloudWatch once each and in order, stdout and
/// stderr in their own streams of the task family's group (templates), and in the local sink
/// too (two sinks, one checkpoint); the group gets the configured retention.
#[test]
fn lines_arrive_once_in_order_in_the_task_group_and_streams() -> Result<()> {
    const OUT: usize = 2000;
    const ERR: usize = 300;
    let moto = Moto::start()?;
    let mut collector = collector_for(
        &moto,
        &[
            ("COLLECTOR_SINKS__CLOUDWATCH__LOG_STREAM", STREAM_PER_OUTPUT),
            ("COLLECTOR_SINKS__CLOUDWATCH__RETENTION_DAYS", "7"),
        ],
    )?;
    let task = TestTask::new("cwlines");
    let _container = TestContainer::builder()
        .ecs(&task, "app")
        .shell(format!(
            "i=1; while [ $i -le {OUT} ]; do echo \"cw out $i\"; \
             if [ $i -le {ERR} ]; then echo \"cw err $i\" >&2; fi; i=$((i+1)); done; exec sleep 600"
        ))
        .start()?;
    let group = "/ecs/cwlines".to_owned();
    let stream = |s: &str| format!("ecs/app/{}/{s}", task.task_id);
    let sink = collector.sink();
    let (out_stream, err_stream) = (stream("stdout"), stream("stderr"));
    collector.expect_exactly(
        DELIVERY_TIMEOUT,
        vec![
            Expect::new(
                format!("CloudWatch {group} {out_stream}"),
                numbered("cw out", OUT),
                || moto.log_messages(&group, &out_stream),
            ),
            Expect::new(
                format!("CloudWatch {group} {err_stream}"),
                numbered("cw err", ERR),
                || moto.log_messages(&group, &err_stream),
            ),
            Expect::new("stdout in the local sink", numbered("cw out", OUT), || {
                Ok(messages(&sink.lines(&task.task_id, "app", "stdout")?))
            }),
        ],
    )?;
    let mut streams = moto.log_streams(&group)?;
    streams.sort();
    ensure!(
        streams == [err_stream.clone(), out_stream.clone()],
        "streams of {group}: {streams:?}"
    );
    ensure!(
        moto.retention_days(&group)? == Some(7),
        "retention of {group}: {:?}",
        moto.retention_days(&group)?
    );
    // Docker's timestamps, not the collector's: the events carry the time the line was
    // written, within the test's lifetime.
    let events = moto.log_events(&group, &out_stream)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    ensure!(
        events
            .iter()
            .all(|e| e.timestamp <= now && e.timestamp > now - 600_000),
        "timestamps outside the test's run: first {:?}",
        events.first()
    );
    Ok(())
}

/// 25,000 lines written in about a second are delivered once, in order, under the default
/// names (`/ecs/<family>`, `ecs/<container name>/<task id>`), in requests of at most 10,000
/// events and 1 MiB (the collector's counters of what it sent).
#[test]
fn a_burst_of_25000_lines_goes_in_requests_within_the_limits() -> Result<()> {
    const N: usize = 25_000;
    let moto = Moto::start()?;
    let mut collector = collector_for(&moto, &[])?;
    let ctl = control_dir(&collector)?;
    let task = TestTask::new("cwburst");
    let _container = TestContainer::builder()
        .ecs(&task, "burst")
        .bind(&ctl, "/ctl")
        .shell(format!(
            "echo start; {WAIT_FOR_GO}; seq 1 {N}; exec sleep 600"
        ))
        .start()?;
    let group = "/ecs/cwburst".to_owned();
    let stream = format!("ecs/burst/{}", task.task_id);
    super::wait_for_line(&mut collector, "CloudWatch", "start", || {
        moto.log_messages(&group, &stream)
    })?;
    go(&ctl)?;
    let mut expected = vec!["start".to_owned()];
    expected.extend((1..=N).map(|i| i.to_string()));
    collector.expect_exactly(
        Duration::from_secs(90),
        vec![Expect::new(
            format!("CloudWatch {group} {stream}"),
            expected,
            || moto.log_messages(&group, &stream),
        )],
    )?;
    let m = metrics(&collector)?;
    let requests = metric(&m, "collector_cloudwatch_requests_total")?;
    let most = metric(&m, "collector_cloudwatch_request_events_max")?;
    let bytes = metric(&m, "collector_cloudwatch_request_bytes_max")?;
    let events = metric(&m, "collector_cloudwatch_events_total")?;
    ensure!(
        most <= 10_000.0 && bytes <= 1_048_576.0,
        "a request held {most} events / {bytes} bytes"
    );
    ensure!(
        requests >= 3.0 && events >= (N + 1) as f64,
        "{requests} requests for {events} events"
    );
    eprintln!("burst: {requests} requests, at most {most} events and {bytes} bytes in one");
    Ok(())
}

/// A 2 MiB line becomes several events of at most 1 MiB, each but the last marked
/// ` [continued]`, which joined give the line back; a line that is not UTF-8 (a declared file:
/// Docker's json-file already replaces bad bytes) arrives with U+FFFD in their place; both
/// counted in `/metrics`.
#[test]
fn a_2_mib_line_is_split_and_marked_and_bad_utf8_is_replaced() -> Result<()> {
    const LINE: usize = 2 * 1024 * 1024;
    let moto = Moto::start()?;
    let mut collector = collector_for(
        &moto,
        &[("COLLECTOR_SINKS__CLOUDWATCH__LOG_STREAM", STREAM_PER_OUTPUT)],
    )?;
    let task = TestTask::new("cwedge");
    let app = collector.dir().join("app");
    std::fs::create_dir(&app)?;
    let _container = TestContainer::builder()
        .ecs(&task, "edge")
        .label("collector.logs", "/var/log/app/*.log")
        .bind(&app, "/var/log/app")
        .shell(format!(
            "echo before; head -c {LINE} /dev/zero | tr '\\0' x; echo; echo after; \
             printf 'bad \\377\\376 bytes\\nfine\\n' >> /var/log/app/app.log; exec sleep 600"
        ))
        .start()?;
    let group = "/ecs/cwedge".to_owned();
    let out = format!("ecs/edge/{}/stdout", task.task_id);
    let file = format!("ecs/edge/{}/file", task.task_id);
    let events = collector.wait_until(DELIVERY_TIMEOUT, "the long line and the file", || {
        let events = moto.log_events(&group, &out)?;
        let file_lines = moto.log_messages(&group, &file)?;
        let seen: Vec<String> = events.iter().map(|e| check::preview(&e.message)).collect();
        Ok(
            if events.last().is_some_and(|e| e.message == "after") && file_lines.len() >= 2 {
                Check::Done((events, file_lines))
            } else {
                Check::Waiting(format!("{seen:?}, file {file_lines:?}"))
            },
        )
    })?;
    let (events, file_lines) = events;
    let marker = " [continued]";
    ensure!(
        events.first().is_some_and(|e| e.message == "before"),
        "first event {:?}",
        events.first().map(|e| check::preview(&e.message))
    );
    let pieces = &events[1..events.len() - 1];
    ensure!(
        pieces.len() >= 2,
        "the long line came as {} events",
        pieces.len()
    );
    let mut joined = String::new();
    for (i, p) in pieces.iter().enumerate() {
        ensure!(
            p.message.len() <= 1_048_576 - 26,
            "piece {i} has {} bytes",
            p.message.len()
        );
        let last = i == pieces.len() - 1;
        match p.message.strip_suffix(marker) {
            Some(body) if !last => joined.push_str(body),
            None if last => joined.push_str(&p.message),
            _ => anyhow::bail!("piece {i} of {}: marker wrong", pieces.len()),
        }
    }
    ensure!(
        joined.len() == LINE && joined.bytes().all(|b| b == b'x'),
        "the pieces join to {} bytes",
        joined.len()
    );
    ensure!(
        file_lines == ["bad \u{fffd}\u{fffd} bytes", "fine"],
        "declared file lines: {file_lines:?}"
    );
    let m = metrics(&collector)?;
    ensure!(
        metric(
            &m,
            "collector_cloudwatch_records_adjusted_total{reason=\"invalid_utf8\"}"
        )? >= 1.0
            && metric(
                &m,
                "collector_cloudwatch_records_adjusted_total{reason=\"split\"}"
            )? >= 1.0,
        "adjustments not counted: {m:?}"
    );
    Ok(())
}

/// CloudWatch goes away for 30 s while a container writes, and comes back empty (moto keeps
/// nothing across a restart, like a deleted log group): the collector holds the lines, creates
/// the group and stream again, and delivers every line written during and after the outage,
/// in order; lines acknowledged before it are not sent again. The local sink keeps receiving
/// every line during the outage: past the shipper's in-memory lag (128 batches; each line here
/// is about one batch), CloudWatch's batches wait in its disk buffer.
#[test]
fn an_outage_of_30_s_loses_nothing() -> Result<()> {
    const BEFORE: usize = 300;
    const TOTAL: usize = 900;
    let mut moto = Moto::start()?;
    let mut collector = collector_for(
        &moto,
        &[
            ("COLLECTOR_SINKS__CLOUDWATCH__LOG_STREAM", STREAM_PER_OUTPUT),
            ("COLLECTOR_SINKS__CLOUDWATCH__MAX_ATTEMPTS", "2"),
            ("COLLECTOR_SINKS__CLOUDWATCH__REQUEST_TIMEOUT", "5s"),
        ],
    )?;
    let ctl = control_dir(&collector)?;
    let task = TestTask::new("cwoutage");
    let _container = TestContainer::builder()
        .ecs(&task, "app")
        .bind(&ctl, "/ctl")
        .shell(format!(
            "i=1; while [ $i -le {BEFORE} ]; do echo \"outage $i\"; i=$((i+1)); done; \
             while [ ! -e /ctl/phase2 ]; do sleep 0.05; done; \
             while [ $i -le {TOTAL} ]; do echo \"outage $i\"; i=$((i+1)); sleep 0.05; done; \
             echo end"
        ))
        .start()?;
    let group = "/ecs/cwoutage".to_owned();
    let stream = format!("ecs/app/{}/stdout", task.task_id);
    let all: Vec<String> = numbered("outage", TOTAL)
        .into_iter()
        .chain(["end".to_owned()])
        .collect();
    // Phase 1: the first lines are in CloudWatch, acknowledged.
    collector.expect_exactly(
        DELIVERY_TIMEOUT,
        vec![Expect::new(
            "lines before the outage",
            all[..BEFORE].to_vec(),
            || moto.log_messages(&group, &stream),
        )],
    )?;
    moto.stop()?;
    std::fs::write(ctl.join("phase2"), b"")?;
    std::thread::sleep(Duration::from_secs(30));
    // Meanwhile the local sink went on, past the in-memory lag: the outage of one sink does
    // not stop the other.
    let local = messages(&collector.sink().lines(&task.task_id, "app", "stdout")?);
    ensure!(
        local.len() >= BEFORE + 300 && local[..] == all[..local.len().min(all.len())],
        "the local sink during the outage: {}",
        check::describe(&local)
    );
    moto.restart()?;
    // Phase 2: everything written since, once the container is done.
    let after = &all[BEFORE..];
    let seen = collector.wait_until(
        Duration::from_secs(90),
        "every line after the outage",
        || {
            let seen = moto.log_messages(&group, &stream)?;
            Ok(if seen.last().is_some_and(|l| l == "end") {
                Check::Done(seen)
            } else {
                Check::Waiting(check::describe(&seen))
            })
        },
    )?;
    // Lines acknowledged before the outage are never sent again (any would be "unexpected");
    // a request whose answer was lost may be, so a replay within the lines not yet
    // acknowledged is allowed.
    check_at_least_once_in_order(&seen, after, after.len())
        .with_context(|| format!("after the outage: {}", check::describe(&seen)))?;
    let m = metrics(&collector)?;
    ensure!(
        metric(&m, "collector_cloudwatch_request_errors_total")? >= 1.0
            && metric(
                &m,
                "collector_cloudwatch_resources_created_total{kind=\"log_stream\"}"
            )? >= 2.0,
        "the outage left no trace in /metrics: {m:?}"
    );
    Ok(())
}

/// One read of a container's log holds lines 25 hours apart (appended to its json-file log
/// as Docker writes it, with older times than Docker could give): CloudWatch refuses a
/// request spanning more than 24 hours, so the batch goes in several requests, and every line
/// arrives once, in order, with its own time (none clamped: all are within 14 days).
#[test]
fn a_batch_spanning_25_hours_goes_in_several_requests_with_its_times() -> Result<()> {
    let moto = Moto::start()?;
    let mut collector = collector_for(&moto, &[])?;
    let task = TestTask::new("cwspan");
    let container = TestContainer::builder()
        .ecs(&task, "span")
        .shell("exec sleep 600")
        .start()?;
    let now = std::time::SystemTime::now();
    let hours = |h: u64| now - Duration::from_secs(h * 3600);
    let lines = [
        ("span 25h ago", hours(25)),
        ("span 13h ago", hours(13)),
        ("span 1h ago", hours(1)),
        ("span now", now),
    ];
    let mut text = String::new();
    for (message, time) in &lines {
        text.push_str(&format!(
            "{{\"log\":\"{message}\\n\",\"stream\":\"stdout\",\"time\":\"{}\"}}\n",
            crate::time::format_rfc3339_nanos(*time)
        ));
    }
    // One write: the collector reads the four lines in one pass, so in one batch.
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(container.log_path()?)?;
    log.write_all(text.as_bytes())?;
    drop(log);
    let group = "/ecs/cwspan".to_owned();
    let stream = format!("ecs/span/{}", task.task_id);
    let expected: Vec<String> = lines.iter().map(|(m, _)| (*m).to_owned()).collect();
    collector.expect_exactly(
        Duration::from_secs(60),
        vec![Expect::new(
            format!("CloudWatch {group} {stream}"),
            expected,
            || moto.log_messages(&group, &stream),
        )],
    )?;
    let events = moto.log_events(&group, &stream)?;
    for ((message, time), event) in lines.iter().zip(&events) {
        let want = time.duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
        ensure!(
            event.timestamp == want,
            "{message:?} arrived at {} instead of {want}",
            event.timestamp
        );
    }
    let m = metrics(&collector)?;
    let requests = metric(&m, "collector_cloudwatch_requests_total")?;
    ensure!(requests >= 2.0, "{requests} request(s) for a 25 h span");
    ensure!(
        m.get("collector_cloudwatch_events_rejected_total")
            .copied()
            .unwrap_or(0.0)
            == 0.0,
        "events rejected: {m:?}"
    );
    Ok(())
}

/// With `metrics.emf` on, what a task's container sends over the Graphite socket comes back
/// as CloudWatch Embedded Metric Format lines in that container's own log stream (the
/// default templates): the values of the interval per path, the task's dimensions.
#[test]
fn metrics_arrive_as_emf_lines_in_the_containers_stream() -> Result<()> {
    let moto = Moto::start()?;
    let mut collector = collector_for(
        &moto,
        &[
            ("COLLECTOR_METRICS__EMF__ENABLED", "true"),
            ("COLLECTOR_METRICS__EMF__INTERVAL", "1s"),
            ("COLLECTOR_METRICS__EMF__NAMESPACE", "Test/Emf"),
        ],
    )?;
    let sender = super::metrics::graphite_send()?;
    let sockets = collector.data_dir().join("task");
    collector.wait_until(DELIVERY_TIMEOUT, "the Graphite socket", || {
        Ok(if sockets.join("graphite.sock").exists() {
            Check::Done(())
        } else {
            Check::Waiting("absent".into())
        })
    })?;
    let task = TestTask::new("cwemf");
    let _container = TestContainer::builder()
        .ecs(&task, "app")
        .bind(&sockets, "/run/collector:ro")
        .bind(&sender, "/graphite-send")
        .shell(
            "echo hello; sleep 1; \
             printf 'app.requests 5\\napp.requests 7\\napp.latency 0.25\\n' \
               | /graphite-send unix /run/collector/graphite.sock; exec sleep 600",
        )
        .start()?;
    let group = "/ecs/cwemf".to_owned();
    let stream = format!("ecs/app/{}", task.task_id);
    let emf = collector.wait_until(DELIVERY_TIMEOUT, "an EMF line in CloudWatch", || {
        let lines = moto.log_messages(&group, &stream)?;
        Ok(match lines.iter().find(|l| l.starts_with("{\"_aws\"")) {
            Some(l) => Check::Done(serde_json::from_str::<serde_json::Value>(l)?),
            None => Check::Waiting(format!("{lines:?}")),
        })
    })?;
    let directive = &emf["_aws"]["CloudWatchMetrics"][0];
    ensure!(
        directive["Namespace"] == "Test/Emf"
            && directive["Metrics"]
                == serde_json::json!([{"Name": "app.latency"}, {"Name": "app.requests"}])
            && emf["app.requests"] == serde_json::json!([5.0, 7.0])
            && emf["app.latency"] == serde_json::json!(0.25)
            && emf["TaskDefinitionFamily"] == "cwemf"
            && emf["ContainerName"] == "app"
            && emf["TaskId"] == task.task_id.as_str(),
        "EMF line: {emf}"
    );
    let m = metrics(&collector)?;
    ensure!(
        metric(&m, "collector_metrics_emf_lines_total")? >= 1.0,
        "EMF counter: {m:?}"
    );
    Ok(())
}
