//! Scenario of the S3 archive sink against a real moto server: a task writes about 20 MB and
//! ends; its archive appears in S3 as rolling `tar.gz` chunks (the first large enough for a
//! multipart upload), a manifest and the completion marker, and the chunks hold exactly what
//! the local sink holds.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};

use super::cloudwatch::metrics as collector_metrics;
use crate::check::Check;
use crate::{CollectorProcess, Moto, TestContainer, TestTask};

/// Random bytes the container writes, as base64 lines (about 20 MB of text).
const RANDOM_BYTES: usize = 15_000_000;

/// Extracts `archive` into `dir` with the system's `tar`.
pub(super) fn untar(archive: &[u8], dir: &std::path::Path) -> Result<()> {
    let file = dir.join("a.tar.gz");
    std::fs::write(&file, archive)?;
    let out = Command::new("tar")
        .arg("-xzf")
        .arg(&file)
        .arg("-C")
        .arg(dir)
        .output()
        .context("run tar")?;
    ensure!(
        out.status.success(),
        "tar -xzf failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(&file)?;
    Ok(())
}

/// A task's lines, once it has ended, are in S3: chunks (rolled at 16 MiB of spool, the
/// first one uploaded in parts), `manifest.json` naming them and the task, `_COMPLETE`;
/// joined, the chunks' `stdout.log` equals the local sink's byte for byte.
#[test]
fn an_ended_task_is_archived_in_chunks_with_a_manifest_and_a_marker() -> Result<()> {
    let moto = Moto::start()?;
    let bucket = "collector-archive";
    moto.create_bucket(bucket)?;
    let mut builder = CollectorProcess::builder();
    for (k, v) in moto.collector_env_s3(bucket) {
        builder = builder.env(k, v);
    }
    let mut collector = builder
        .env("COLLECTOR_SINKS__S3__CHUNK_BYTES", "16777216")
        .env("COLLECTOR_SINKS__S3__TASK_SETTLE", "1s")
        .start()?;
    let task = TestTask::new("s3archive");
    let container = TestContainer::builder()
        .ecs(&task, "app")
        .shell(format!(
            "echo begin; head -c {RANDOM_BYTES} /dev/urandom | base64; echo end"
        ))
        .start()?;
    container.wait_exit(Duration::from_secs(60))?;
    let prefix = format!("collector/tasks/{}/", task.task_id);
    let objects = collector.wait_until(
        Duration::from_secs(120),
        "the task's _COMPLETE marker in S3",
        || {
            let objects = moto.list_objects(bucket, &prefix)?;
            Ok(if objects.iter().any(|(k, _)| k.ends_with("/_COMPLETE")) {
                Check::Done(objects)
            } else {
                Check::Waiting(format!("{objects:?}"))
            })
        },
    )?;
    let chunks: Vec<&(String, u64)> = objects
        .iter()
        .filter(|(k, _)| k.ends_with(".tar.gz"))
        .collect();
    ensure!(
        chunks.len() >= 2,
        "expected rolling chunks, found {objects:?}"
    );
    ensure!(
        chunks.iter().any(|(_, size)| *size > 5 * 1024 * 1024),
        "no chunk large enough for a multipart upload: {objects:?}"
    );
    ensure!(
        objects
            .iter()
            .any(|(k, _)| *k == format!("{prefix}manifest.json")),
        "no manifest: {objects:?}"
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&moto.get_object(bucket, &format!("{prefix}manifest.json"))?)?;
    let listed: Vec<&str> = manifest["chunks"]
        .as_array()
        .context("chunks in the manifest")?
        .iter()
        .filter_map(|c| c["key"].as_str())
        .collect();
    let found: Vec<&str> = chunks.iter().map(|(k, _)| k.as_str()).collect();
    ensure!(
        listed == found,
        "manifest lists {listed:?}, S3 has {found:?}"
    );
    ensure!(
        manifest["task"]["family"] == "s3archive"
            && manifest["task"]["task_id"] == task.task_id.as_str()
            && manifest["containers"] == serde_json::json!(["app"]),
        "manifest: {manifest}"
    );

    // The chunks, in order, hold exactly what the local sink holds.
    let mut archived = Vec::new();
    let mut lifecycle = false;
    for (key, _) in &chunks {
        let dir = tempfile::tempdir()?;
        untar(&moto.get_object(bucket, key)?, dir.path())?;
        if let Ok(bytes) = std::fs::read(dir.path().join("app/stdout.log")) {
            archived.extend_from_slice(&bytes);
        }
        lifecycle |= dir.path().join("app/lifecycle.log").is_file();
    }
    // Each sink has its own queue: give the local one a moment to catch up.
    let local_path = collector
        .sink()
        .task_container_dir(&task.task_id, "app")
        .join("stdout.log");
    let want = archived.len();
    let local = collector.wait_until(
        Duration::from_secs(30),
        "the local sink's stdout.log",
        || {
            let local = std::fs::read(&local_path).unwrap_or_default();
            Ok(if local.len() >= want {
                Check::Done(local)
            } else {
                Check::Waiting(format!("{} of {want} bytes", local.len()))
            })
        },
    )?;
    let lines = archived.iter().filter(|b| **b == b'\n').count();
    ensure!(
        archived == local && lines > RANDOM_BYTES * 4 / 3 / 80,
        "the archive's stdout.log ({} bytes, {lines} lines) differs from the local sink's ({} bytes)",
        archived.len(),
        local.len()
    );
    ensure!(lifecycle, "no lifecycle.log in the archive");
    let metrics = collector_metrics(&collector)?;
    ensure!(
        metrics.contains_key("collector_s3_multipart_parts_total")
            && metrics["collector_s3_multipart_parts_total"] >= 2.0
            && metrics["collector_s3_tasks_completed_total"] >= 1.0,
        "S3 counters: {metrics:?}"
    );
    Ok(())
}

/// S3 is down when a task ends: the archive waits in the spool, the uploads are retried, and
/// once S3 is back (empty, like a new bucket) the whole archive arrives.
#[test]
fn an_archive_waits_out_an_s3_outage() -> Result<()> {
    const N: usize = 2000;
    let mut moto = Moto::start()?;
    let bucket = "collector-outage";
    moto.create_bucket(bucket)?;
    let mut builder = CollectorProcess::builder();
    for (k, v) in moto.collector_env_s3(bucket) {
        builder = builder.env(k, v);
    }
    let mut collector = builder
        .env("COLLECTOR_SINKS__S3__TASK_SETTLE", "1s")
        .env("COLLECTOR_SINKS__S3__MAX_ATTEMPTS", "1")
        .start()?;
    moto.stop()?;
    let task = TestTask::new("s3outage");
    let container = TestContainer::builder()
        .ecs(&task, "app")
        .shell(crate::numbered_lines_script("s3 line", N, ""))
        .start()?;
    container.wait_exit(Duration::from_secs(60))?;
    // Past the settle time, the uploads fail for a while: S3 comes back only after the
    // collector has seen an upload fail (a fixed sleep raced the sealing on a loaded host).
    crate::check::wait_until(
        Duration::from_secs(90),
        "a failed upload during the outage",
        || {
            let metrics = collector_metrics(&collector)?;
            Ok(
                match metrics.get("collector_s3_upload_errors_total").copied() {
                    Some(n) if n >= 1.0 => Check::Done(()),
                    other => Check::Waiting(format!("upload errors: {other:?}")),
                },
            )
        },
    )
    .map_err(|e| collector.explain(e))?;
    std::thread::sleep(Duration::from_secs(3));
    moto.restart()?;
    moto.create_bucket(bucket)?;
    let prefix = format!("collector/tasks/{}/", task.task_id);
    let objects = collector.wait_until(
        Duration::from_secs(60),
        "the task's _COMPLETE marker in S3 after the outage",
        || {
            let objects = moto.list_objects(bucket, &prefix)?;
            Ok(if objects.iter().any(|(k, _)| k.ends_with("/_COMPLETE")) {
                Check::Done(objects)
            } else {
                Check::Waiting(format!("{objects:?}"))
            })
        },
    )?;
    let mut lines = Vec::new();
    for (key, _) in objects.iter().filter(|(k, _)| k.ends_with(".tar.gz")) {
        let dir = tempfile::tempdir()?;
        untar(&moto.get_object(bucket, key)?, dir.path())?;
        let text = std::fs::read_to_string(dir.path().join("app/stdout.log")).unwrap_or_default();
        lines.extend(
            text.lines()
                .filter_map(|l| l.split_once(' ').map(|(_, m)| m.to_owned())),
        );
    }
    crate::check::check_exactly_once(&lines, &crate::numbered("s3 line", N))?;
    let metrics = collector_metrics(&collector)?;
    ensure!(
        metrics
            .get("collector_s3_upload_errors_total")
            .is_some_and(|v| *v >= 1.0),
        "the outage left no failed upload in /metrics: {metrics:?}"
    );
    Ok(())
}

/// The collector is killed (SIGKILL) while a multipart upload of a task's archive is open.
/// After the restart the abandoned upload does not matter: the sealed chunk is uploaded again
/// from the spool, and the archive completes with every line of the local sink, once.
#[test]
fn an_archive_cut_by_a_kill_mid_multipart_upload_is_complete_after_restart() -> Result<()> {
    let moto = Moto::start()?;
    let bucket = "collector-killed";
    moto.create_bucket(bucket)?;
    let mut builder = CollectorProcess::builder();
    for (k, v) in moto.collector_env_s3(bucket) {
        builder = builder.env(k, v);
    }
    let mut collector = builder
        .env("COLLECTOR_SINKS__S3__TASK_SETTLE", "1s")
        .start()?;
    let task = TestTask::new("s3kill");
    let container = TestContainer::builder()
        .ecs(&task, "app")
        .shell(format!(
            "echo begin; head -c {} /dev/urandom | base64; echo end",
            2 * RANDOM_BYTES
        ))
        .start()?;
    container.wait_exit(Duration::from_secs(60))?;
    let open = collector.wait_until(
        Duration::from_secs(120),
        "a multipart upload of the archive",
        || {
            let uploads = moto.multipart_uploads(bucket)?;
            Ok(if uploads.is_empty() {
                Check::Waiting("none open".into())
            } else {
                Check::Done(uploads)
            })
        },
    )?;
    collector.sigkill()?;
    ensure!(
        !moto.multipart_uploads(bucket)?.is_empty(),
        "the upload {open:?} finished before the kill; the test proves nothing"
    );
    let prefix = format!("collector/tasks/{}/", task.task_id);
    ensure!(
        !moto
            .list_objects(bucket, &prefix)?
            .iter()
            .any(|(k, _)| k.ends_with("/_COMPLETE")),
        "complete before the kill"
    );
    collector.restart()?;
    let objects = collector.wait_until(
        Duration::from_secs(120),
        "the task's _COMPLETE marker in S3 after the restart",
        || {
            let objects = moto.list_objects(bucket, &prefix)?;
            Ok(if objects.iter().any(|(k, _)| k.ends_with("/_COMPLETE")) {
                Check::Done(objects)
            } else {
                Check::Waiting(format!("{objects:?}"))
            })
        },
    )?;
    let mut archived = Vec::new();
    for (key, _) in objects.iter().filter(|(k, _)| k.ends_with(".tar.gz")) {
        let dir = tempfile::tempdir()?;
        untar(&moto.get_object(bucket, key)?, dir.path())?;
        if let Ok(bytes) = std::fs::read(dir.path().join("app/stdout.log")) {
            archived.extend(
                crate::sink::parse_lines(&bytes, key)?
                    .into_iter()
                    .map(|l| l.message),
            );
        }
    }
    let local: Vec<String> = collector
        .sink()
        .lines(&task.task_id, "app", "stdout")?
        .into_iter()
        .map(|l| l.message)
        .collect();
    // At least once: a batch the killed collector had not committed may come twice, in both
    // sinks alike; the random lines never repeat otherwise.
    let dedup = |v: &[String]| {
        let mut seen = std::collections::HashSet::new();
        v.iter()
            .filter(|l| seen.insert(*l))
            .cloned()
            .collect::<Vec<_>>()
    };
    let (archived, local) = (dedup(&archived), dedup(&local));
    ensure!(
        archived.first().map(String::as_str) == Some("begin")
            && archived.last().map(String::as_str) == Some("end")
            && archived == local,
        "the archive ({} distinct lines) differs from the local sink ({} distinct lines)",
        archived.len(),
        local.len()
    );
    Ok(())
}
