//! What our collector is measured against: the ceiling (`cat` and `wc -l` over the same
//! files) and, when installed, Fluent Bit (`FLUENT_BIT_BIN`) and Vector (`VECTOR_BIN`) with
//! configurations equivalent to ours: tail every `*-json.log` under the Docker root from the
//! start, decode the json-file fields (message, stream, time), keep the file (and so the
//! container id), and write to a null output or to a local file.
//!
//! Neither is packaged for Debian 12 and this machine has no network beyond package
//! registries, so their code paths here have not been run against the real programs: the
//! configurations follow their documentation (Fluent Bit `tail` input with `Docker_Mode`,
//! `null` and `file` outputs; Vector `file` source, `remap` with `parse_json`, `blackhole`
//! and `file` sinks), and the run is marked as unverified in the table when the output can
//! not be counted.
//!
//! Completion: both keep read offsets (Fluent Bit in its SQLite `DB`, Vector in
//! `checkpoints.json`); a run is complete when the offsets cover every input byte and, for
//! file outputs, when the output holds every line and stops growing.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::Plan;
use super::generate::Workload;
use super::measure;
use super::report::{Report, Row};
use super::scenarios::Sink;

/// Reads every log once, so every measured run reads from the page cache.
///
/// # Errors
/// When `cat` cannot run.
pub(crate) fn warm_page_cache(workload: &Workload) -> Result<()> {
    let status = Command::new("cat")
        .args(&workload.logs)
        .stdout(Stdio::null())
        .status()
        .context("start cat")?;
    if !status.success() {
        bail!("cat of the input failed ({status})");
    }
    Ok(())
}

/// The ceiling: `cat FILES > /dev/null` and `wc -l FILES`, timed like our runs.
///
/// # Errors
/// When the commands cannot run.
pub(crate) fn ceiling(scenario: &str, workload: &Workload, report: &mut Report) -> Result<()> {
    let before = measure::children_cpu_seconds()?;
    let started = Instant::now();
    let status = Command::new("cat")
        .args(&workload.logs)
        .stdout(Stdio::null())
        .status()
        .context("start cat")?;
    let wall = started.elapsed();
    let cpu = measure::children_cpu_seconds()? - before;
    report.rows.push(Row {
        scenario: scenario.to_owned(),
        tool: "cat".to_owned(),
        sink: "/dev/null".to_owned(),
        wall,
        cpu_seconds: cpu,
        input_bytes: workload.expected.input_bytes,
        lines: workload.expected.records,
        delivered: None,
        peak_rss: None,
        check: if status.success() {
            Ok(())
        } else {
            Err(format!("cat failed ({status})"))
        },
    });

    let before = measure::children_cpu_seconds()?;
    let started = Instant::now();
    let out = Command::new("wc")
        .arg("-l")
        .args(&workload.logs)
        .stdin(Stdio::null())
        .output()
        .context("start wc")?;
    let wall = started.elapsed();
    let cpu = measure::children_cpu_seconds()? - before;
    // One line per file, then `total` when there are several: the last line's count.
    let counted = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok());
    report.rows.push(Row {
        scenario: scenario.to_owned(),
        tool: "wc -l".to_owned(),
        sink: "-".to_owned(),
        wall,
        cpu_seconds: cpu,
        input_bytes: workload.expected.input_bytes,
        lines: workload.expected.json_lines,
        delivered: counted,
        peak_rss: None,
        check: measure::check_delivered(
            "wc -l (json lines)",
            workload.expected.json_lines,
            counted.unwrap_or(0),
        ),
    });
    Ok(())
}

/// Fluent Bit on the same input, when `FLUENT_BIT_BIN` names its binary.
///
/// # Errors
/// When it is named but cannot run.
pub(crate) fn fluent_bit(
    plan: &Plan,
    scenario: &str,
    workload: &Workload,
    sink: Sink,
    report: &mut Report,
) -> Result<()> {
    let Some(bin) = std::env::var_os("FLUENT_BIT_BIN") else {
        note_once(
            report,
            "Fluent Bit not run: set FLUENT_BIT_BIN to its binary (not packaged for Debian 12; not installable on this machine).",
        );
        return Ok(());
    };
    println!("xtask: bench: {scenario}: fluent-bit to {}", sink.name());
    let dir = plan
        .work_dir
        .join("runs")
        .join(format!("fluent-bit-{}", sink.name()));
    measure::fresh_dir(&dir)?;
    let out_dir = dir.join("out");
    fs::create_dir_all(&out_dir).with_context(|| format!("create {}", out_dir.display()))?;
    let db = dir.join("fluent-bit.db");
    fs::write(dir.join("parsers.conf"), FLUENT_BIT_PARSERS).context("write parsers.conf")?;
    let conf = dir.join("fluent-bit.conf");
    fs::write(
        &conf,
        fluent_bit_config(&dir, &workload.docker_root, &db, &out_dir, sink),
    )
    .with_context(|| format!("write {}", conf.display()))?;
    let mut cmd = Command::new(&bin);
    cmd.arg("-c").arg(&conf);
    let out_file = (sink == Sink::File).then(|| out_dir.join("out.log"));
    let row = run_other(
        "fluent-bit",
        scenario,
        cmd,
        &dir,
        workload,
        sink,
        || measure::query_count(&db, "SELECT coalesce(sum(offset), 0) FROM in_tail_files"),
        out_file.as_deref(),
        workload.expected.records,
    )?;
    report.rows.push(row);
    Ok(())
}

/// Vector on the same input, when `VECTOR_BIN` names its binary.
///
/// # Errors
/// When it is named but cannot run.
pub(crate) fn vector(
    plan: &Plan,
    scenario: &str,
    workload: &Workload,
    sink: Sink,
    report: &mut Report,
) -> Result<()> {
    let Some(bin) = std::env::var_os("VECTOR_BIN") else {
        note_once(
            report,
            "Vector not run: set VECTOR_BIN to its binary (not packaged for Debian 12; not installable on this machine).",
        );
        return Ok(());
    };
    println!("xtask: bench: {scenario}: vector to {}", sink.name());
    let dir = plan
        .work_dir
        .join("runs")
        .join(format!("vector-{}", sink.name()));
    measure::fresh_dir(&dir)?;
    let data = dir.join("data");
    fs::create_dir_all(&data).with_context(|| format!("create {}", data.display()))?;
    let out_file = dir.join("out.log");
    let conf = dir.join("vector.toml");
    fs::write(
        &conf,
        vector_config(&data, &workload.docker_root, &out_file, sink),
    )
    .with_context(|| format!("write {}", conf.display()))?;
    let mut cmd = Command::new(&bin);
    cmd.arg("--config").arg(&conf);
    // Vector's file source does not join Docker's 16 KiB pieces (its `docker_logs` source
    // does, over the API), so its file output holds one line per json-file line.
    let row = run_other(
        "vector",
        scenario,
        cmd,
        &dir,
        workload,
        sink,
        || vector_positions(&data),
        (sink == Sink::File).then_some(out_file.as_path()),
        workload.expected.json_lines,
    )?;
    report.rows.push(row);
    Ok(())
}

/// Runs another collector until its read offsets cover the input (and its output file, if
/// any, holds `out_lines` lines and stops growing), and measures it.
#[allow(
    clippy::too_many_arguments,
    reason = "one call per tool; a struct would only restate them"
)]
fn run_other(
    tool: &str,
    scenario: &str,
    mut cmd: Command,
    dir: &Path,
    workload: &Workload,
    sink: Sink,
    mut bytes_read: impl FnMut() -> u64,
    out_file: Option<&Path>,
    out_lines: u64,
) -> Result<Row> {
    let log = dir.join(format!("{tool}.log"));
    let out = fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
    let err = out.try_clone().context("open the log")?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("start {tool}"))?;
    let started = Instant::now();
    let progress =
        measure::wait_for_count(&mut child, workload.expected.input_bytes, &mut bytes_read);
    let result = progress.and_then(|mut progress| {
        let mut delivered = None;
        let mut check = if progress.count >= workload.expected.input_bytes {
            Ok(())
        } else {
            Err(format!(
                "{tool}: read {} of {} bytes",
                progress.count, workload.expected.input_bytes
            ))
        };
        if let (Some(path), Ok(())) = (out_file, &check) {
            // Outputs flush on their own schedule: wait until the file stops growing.
            let mut last = 0;
            let deadline = Instant::now() + measure::STALL_TIMEOUT;
            loop {
                thread::sleep(Duration::from_millis(1500));
                let size = fs::metadata(path).map_or(0, |m| m.len());
                if (size == last && size > 0) || Instant::now() > deadline {
                    break;
                }
                last = size;
            }
            progress.at = Instant::now() - Duration::from_millis(1500);
            progress.cpu = measure::cpu_seconds(child.id())?;
            progress.peak_rss = measure::peak_rss_bytes(child.id())?;
            let lines = count_lines(path)?;
            delivered = Some(lines);
            check = measure::check_delivered(tool, out_lines, lines);
        }
        Ok(Row {
            scenario: scenario.to_owned(),
            tool: tool.to_owned(),
            sink: sink.name().to_owned(),
            wall: progress.at - started,
            cpu_seconds: progress.cpu,
            input_bytes: workload.expected.input_bytes,
            lines: workload.expected.records,
            delivered,
            peak_rss: Some(progress.peak_rss),
            check,
        })
    });
    measure::stop(&mut child, Duration::from_secs(10));
    result
}

/// Newlines in a file.
fn count_lines(path: &Path) -> Result<u64> {
    use std::io::Read as _;
    let mut file = fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut lines = 0;
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("read {}", path.display()))?;
        if n == 0 {
            return Ok(lines);
        }
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
    }
}

/// The sum of the `"position"` values in every `checkpoints.json` under Vector's data
/// directory: bytes read from the files it tails.
fn vector_positions(data: &Path) -> u64 {
    fn walk(dir: &Path, total: &mut u64) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(&path, total);
            } else if path.file_name().is_some_and(|n| n == "checkpoints.json")
                && let Ok(text) = fs::read_to_string(&path)
            {
                *total += text
                    .split("\"position\":")
                    .skip(1)
                    .filter_map(|rest| {
                        let digits: String = rest
                            .trim_start()
                            .chars()
                            .take_while(char::is_ascii_digit)
                            .collect();
                        digits.parse::<u64>().ok()
                    })
                    .sum::<u64>();
            }
        }
    }
    let mut total = 0;
    walk(data, &mut total);
    total
}

/// Adds `note` to the report unless it is there.
fn note_once(report: &mut Report, note: &str) {
    if !report.notes.iter().any(|n| n == note) {
        report.notes.push(note.to_owned());
    }
}

/// Fluent Bit's parser for json-file lines (its stock `docker` parser).
const FLUENT_BIT_PARSERS: &str = "[PARSER]
    Name        docker
    Format      json
    Time_Key    time
    Time_Format %Y-%m-%dT%H:%M:%S.%L%z
    Time_Keep   On
";

/// Fluent Bit's configuration: `tail` with the `docker` parser and `Docker_Mode` (joins
/// Docker's 16 KiB pieces), the file name kept as the container's identity, an offsets DB;
/// a `null` or `file` output.
fn fluent_bit_config(
    dir: &Path,
    docker_root: &Path,
    db: &Path,
    out_dir: &Path,
    sink: Sink,
) -> String {
    let output = match sink {
        Sink::Discard => "[OUTPUT]\n    Name   null\n    Match  *\n".to_owned(),
        Sink::File => format!(
            "[OUTPUT]\n    Name   file\n    Match  *\n    Path   {}\n    File   out.log\n    Format plain\n",
            out_dir.display()
        ),
    };
    format!(
        "[SERVICE]
    Flush        1
    Daemon       Off
    Log_Level    warn
    Parsers_File {parsers}

[INPUT]
    Name              tail
    Path              {root}/containers/*/*-json.log
    Path_Key          file
    Parser            docker
    Docker_Mode       On
    DB                {db}
    Read_from_Head    On
    Refresh_Interval  1
    Buffer_Chunk_Size 256k
    Buffer_Max_Size   2M
    Mem_Buf_Limit     64M

{output}",
        parsers = dir.join("parsers.conf").display(),
        root = docker_root.display(),
        db = db.display(),
    )
}

/// Vector's configuration: `file` source from the beginning, `remap` decoding the
/// json-file fields (the source keeps the file name as `.file`), a `blackhole` or `file`
/// sink writing `<time> <message>` like ours.
fn vector_config(data: &Path, docker_root: &Path, out_file: &Path, sink: Sink) -> String {
    let sink = match sink {
        Sink::Discard => "type = \"blackhole\"\nprint_interval_secs = 0\n".to_owned(),
        Sink::File => format!(
            "type = \"file\"\npath = \"{}\"\nencoding.codec = \"text\"\n",
            out_file.display()
        ),
    };
    format!(
        r#"data_dir = "{data}"

[sources.docker_files]
type = "file"
include = ["{root}/containers/*/*-json.log"]
read_from = "beginning"
max_line_bytes = 2097152

[transforms.decode]
type = "remap"
inputs = ["docker_files"]
source = '''
parsed = parse_json!(string!(.message))
.stream = parsed.stream
.timestamp = parsed.time
.message = join!([string!(parsed.time), replace(string!(parsed.log), r'\n$', "")], " ")
'''

[sinks.out]
inputs = ["decode"]
{sink}"#,
        data = data.display(),
        root = docker_root.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_positions_sum_every_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("docker_files");
        fs::create_dir_all(&sub).unwrap();
        fs::write(
            sub.join("checkpoints.json"),
            r#"{"version":"1","checkpoints":[{"fingerprint":{"dev_inode":[1,2]},"position":100,"modified":"x"},{"position": 23}]}"#,
        )
        .unwrap();
        assert_eq!(vector_positions(dir.path()), 123);
        assert_eq!(vector_positions(&dir.path().join("none")), 0);
    }

    #[test]
    fn configs_name_the_inputs() {
        let root = Path::new("/r");
        let fb = fluent_bit_config(
            Path::new("/d"),
            root,
            Path::new("/d/db"),
            Path::new("/o"),
            Sink::File,
        );
        assert!(
            fb.contains("Path              /r/containers/*/*-json.log"),
            "{fb}"
        );
        assert!(fb.contains("Name   file"), "{fb}");
        let v = vector_config(Path::new("/d"), root, Path::new("/o.log"), Sink::Discard);
        assert!(
            v.contains(r#"include = ["/r/containers/*/*-json.log"]"#),
            "{v}"
        );
        assert!(v.contains("blackhole"), "{v}");
    }
}
