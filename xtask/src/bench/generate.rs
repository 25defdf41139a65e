//! Benchmark inputs: a fake Docker root (`containers/<id>/config.v2.json` and
//! `<id>-json.log`) of json-file logs with realistic lines, and what a collector must deliver
//! from it.
//!
//! The lines mix what container logs hold (shares of lines):
//! - 40% plain application lines (`2026-11-22 00:41:42.123 INFO [worker-3] ...`), no escapes;
//! - 20% access-log lines, whose quotes json-file escapes;
//! - 25% JSON-structured lines (`{"level":"info",...}`), an escaped quote every few words,
//!   some non-ASCII text;
//! - 10% stderr lines: Java stack frames (a tab, escaped as `\u0009`), Go panics;
//! - 5% long lines of 1 to 4 KB (payload dumps), and 1 line in 2000 of 40 KB, which Docker
//!   writes as 16 KiB pieces that a collector joins back into one record.
//!
//! Escaping follows moby's json-file driver (Go `encoding/json`): `"` and `\` with a
//! backslash, `\n`, `\r`, other control bytes and `<`, `>`, `&` as `\u00XX`.
//!
//! Inputs are deterministic (a seeded generator) and kept between runs: a directory is
//! reused when its `expected` file, written last, exists.

use std::fs::{self, File};
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

/// Bump when the generator changes, so old inputs are not reused.
const GENERATOR_VERSION: u32 = 1;

/// Docker's json-file piece size (moby `daemon/logger/copier.go`, `bufSize`).
const DOCKER_PIECE: usize = 16 * 1024;

/// Distinct message bodies generated per input; lines pick from them. Enough that branch
/// predictors and caches see variety, few enough that generating 2 GB stays quick in a debug
/// build.
const BODIES: usize = 8192;

/// What to generate.
#[derive(Clone, Debug)]
pub(crate) struct Spec {
    /// Directory name prefix of the input (`big`, `many`, `idle`).
    pub(crate) name: &'static str,
    /// Containers.
    pub(crate) containers: usize,
    /// Bytes of each container's log, about (at least one line).
    pub(crate) bytes_each: u64,
    /// Lines per container instead, when set (the idle scenario's short logs).
    pub(crate) lines_each: Option<u64>,
}

/// What a collector must deliver from an input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Expected {
    /// Records: lines as written by the application (Docker's 16 KiB pieces joined).
    pub(crate) records: u64,
    /// Physical lines of the json-file logs (`wc -l`).
    pub(crate) json_lines: u64,
    /// Bytes of the json-file logs.
    pub(crate) input_bytes: u64,
    /// Bytes the local directory sink writes: `<time> <message>\n` per record.
    pub(crate) sink_bytes: u64,
}

/// A generated input.
#[derive(Clone, Debug)]
pub(crate) struct Workload {
    /// The fake Docker root.
    pub(crate) docker_root: PathBuf,
    /// Every json-file log.
    pub(crate) logs: Vec<PathBuf>,
    /// What must be delivered.
    pub(crate) expected: Expected,
}

/// The input of `spec` under `work_dir/inputs`, generated unless already there.
///
/// # Errors
/// When the files cannot be written.
pub(crate) fn ensure(work_dir: &Path, spec: &Spec) -> Result<Workload> {
    let dir = work_dir.join("inputs").join(format!(
        "{}-{}x{}-{}-v{GENERATOR_VERSION}",
        spec.name,
        spec.containers,
        spec.bytes_each,
        spec.lines_each.unwrap_or(0)
    ));
    let docker_root = dir.join("docker");
    let ids: Vec<String> = (0..spec.containers).map(container_id).collect();
    let logs: Vec<PathBuf> = ids
        .iter()
        .map(|id| {
            docker_root
                .join("containers")
                .join(id)
                .join(format!("{id}-json.log"))
        })
        .collect();
    let marker = dir.join("expected");
    if let Ok(text) = fs::read_to_string(&marker)
        && let Some(expected) = parse_expected(&text)
    {
        println!("xtask: bench: reusing input {}", dir.display());
        return Ok(Workload {
            docker_root,
            logs,
            expected,
        });
    }
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
    }
    println!(
        "xtask: bench: generating {} container log(s) of {} under {}",
        spec.containers,
        match spec.lines_each {
            Some(n) => format!("{n} lines"),
            None => format!("{} MB", spec.bytes_each as f64 / 1e6),
        },
        dir.display()
    );
    let bodies = Bodies::new(0x5eed ^ spec.containers as u64);
    let mut expected = Expected::default();
    for (i, (id, log)) in ids.iter().zip(&logs).enumerate() {
        let container_dir = log.parent().expect("a log path has a container directory");
        fs::create_dir_all(container_dir)
            .with_context(|| format!("create {}", container_dir.display()))?;
        let config = container_dir.join("config.v2.json");
        fs::write(&config, config_v2(id, &format!("bench-{i}"), log))
            .with_context(|| format!("write {}", config.display()))?;
        let mut rng = Lcg(0x9e37_79b9_7f4a_7c15 ^ (i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
        let limit = match spec.lines_each {
            Some(lines) => Limit::Lines(lines),
            None => Limit::Bytes(spec.bytes_each),
        };
        let got = write_log(log, &bodies, &mut rng, limit)
            .with_context(|| format!("write {}", log.display()))?;
        expected.records += got.records;
        expected.json_lines += got.json_lines;
        expected.input_bytes += got.input_bytes;
        expected.sink_bytes += got.sink_bytes;
    }
    fs::write(&marker, format_expected(&expected))
        .with_context(|| format!("write {}", marker.display()))?;
    Ok(Workload {
        docker_root,
        logs,
        expected,
    })
}

/// A deterministic 64-hex container id.
fn container_id(i: usize) -> String {
    let mut rng = Lcg(0xc0ff_ee00 + i as u64);
    (0..4).map(|_| format!("{:016x}", rng.next_u64())).collect()
}

/// A minimal `config.v2.json` as dockerd writes it for a running container: the collector
/// reads the name, state and labels.
fn config_v2(id: &str, name: &str, log: &Path) -> String {
    format!(
        concat!(
            r#"{{"ID":"{id}","Name":"/{name}","Created":"2026-11-22T00:00:00.000000000Z","#,
            r#""Config":{{"Image":"bench","Labels":{{}}}},"#,
            r#""State":{{"Running":true,"Paused":false,"Restarting":false,"OOMKilled":false,"#,
            r#""Dead":false,"Pid":0,"ExitCode":0,"StartedAt":"2026-11-22T00:00:00.000000000Z","#,
            r#""FinishedAt":"0001-01-01T00:00:00Z"}},"LogPath":"{log}"}}"#
        ),
        id = id,
        name = name,
        log = log.display()
    )
}

/// Where a log ends.
#[derive(Clone, Copy)]
enum Limit {
    /// At about this many bytes.
    Bytes(u64),
    /// After this many records.
    Lines(u64),
}

/// Writes one json-file log and returns what it holds.
fn write_log(path: &Path, bodies: &Bodies, rng: &mut Lcg, limit: Limit) -> Result<Expected> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut expected = Expected::default();
    let mut nanos: u64 = 0;
    let mut line = Vec::with_capacity(64 * 1024);
    let mut time = [0u8; TIME_LEN];
    loop {
        let done = match limit {
            Limit::Bytes(bytes) => expected.input_bytes >= bytes,
            Limit::Lines(lines) => expected.records >= lines,
        };
        if done {
            break;
        }
        nanos += 1_000 + rng.below(20_000);
        format_time(nanos, &mut time);
        let body = &bodies.list[rng.below(bodies.list.len() as u64) as usize];
        let stream: &[u8] = if body.stderr || rng.below(20) == 0 {
            b"stderr"
        } else {
            b"stdout"
        };
        let pieces = body.pieces.len();
        for (i, piece) in body.pieces.iter().enumerate() {
            line.clear();
            line.extend_from_slice(br#"{"log":""#);
            line.extend_from_slice(piece);
            if i + 1 == pieces {
                line.extend_from_slice(br"\n");
            }
            line.extend_from_slice(br#"",""#);
            line.extend_from_slice(b"stream\":\"");
            line.extend_from_slice(stream);
            line.extend_from_slice(br#"","time":""#);
            line.extend_from_slice(&time);
            line.extend_from_slice(b"\"}\n");
            out.write_all(&line)?;
            expected.input_bytes += line.len() as u64;
            expected.json_lines += 1;
        }
        expected.records += 1;
        expected.sink_bytes += (TIME_LEN + 1 + body.raw_len + 1) as u64;
    }
    out.flush()?;
    Ok(expected)
}

/// Length of `2026-11-22T00:00:00.000000000Z`.
const TIME_LEN: usize = 30;

/// Writes the time `nanos` after 2026-11-22T00:00:00Z as RFC 3339 with nanoseconds.
fn format_time(nanos: u64, out: &mut [u8; TIME_LEN]) {
    out.copy_from_slice(b"2026-11-22T00:00:00.000000000Z");
    let secs = nanos / 1_000_000_000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let digits = |out: &mut [u8], mut v: u64| {
        for d in out.iter_mut().rev() {
            *d = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    digits(&mut out[11..13], h);
    digits(&mut out[14..16], m);
    digits(&mut out[17..19], s);
    digits(&mut out[20..29], nanos % 1_000_000_000);
}

/// One message, ready to write.
struct Body {
    /// The message escaped as json-file does it, cut into Docker's 16 KiB pieces (one piece
    /// for all but the longest lines).
    pieces: Vec<Vec<u8>>,
    /// Length of the message unescaped: what a sink writes.
    raw_len: usize,
    /// Written to stderr.
    stderr: bool,
}

/// The messages lines are drawn from.
struct Bodies {
    /// The messages.
    list: Vec<Body>,
}

impl Bodies {
    /// [`BODIES`] messages in the mix the module describes.
    fn new(seed: u64) -> Self {
        let mut rng = Lcg(seed);
        let list = (0..BODIES)
            .map(|_| {
                let (text, stderr) = message(&mut rng);
                let pieces = text
                    .as_bytes()
                    .chunks(DOCKER_PIECE)
                    .map(|piece| {
                        // Pieces are cut at byte 16384 of the message, which may fall inside
                        // a UTF-8 character: Docker cuts bytes too, and the collector joins
                        // bytes back, so escape the bytes as they are.
                        go_escape(piece)
                    })
                    .collect();
                Body {
                    pieces,
                    raw_len: text.len(),
                    stderr,
                }
            })
            .collect();
        Self { list }
    }
}

/// A message and whether it goes to stderr.
fn message(rng: &mut Lcg) -> (String, bool) {
    const LEVELS: &[&str] = &["INFO", "INFO", "INFO", "DEBUG", "WARN"];
    const LOGGERS: &[&str] = &[
        "order.Service",
        "http.Handler",
        "db.Pool",
        "cache.Client",
        "auth.Filter",
    ];
    const WORDS: &[&str] = &[
        "processed",
        "request",
        "completed",
        "cache",
        "miss",
        "for",
        "key",
        "session",
        "refreshed",
        "connection",
        "reused",
        "retrying",
        "in",
        "batch",
        "of",
        "items",
        "user",
        "tenant",
        "shard",
        "replica",
    ];
    const NAMES: &[&str] = &["alice", "bob", "zoë", "müller", "chen", "ola"];
    const PATHS: &[&str] = &[
        "/api/v1/orders",
        "/api/v1/users",
        "/healthz",
        "/static/app.js",
    ];
    let n = rng.below(10_000);
    let id = rng.below(100_000);
    let ms = rng.below(2_000);
    match n {
        // 1 line in 2000: 40 KB, split by Docker into three pieces.
        0..=4 => (payload(rng, 40_000), false),
        // 5%: 1 to 4 KB.
        5..=504 => {
            let len = 1000 + rng.below(3000) as usize;
            (payload(rng, len), false)
        }
        // 10%: stderr, with a tab or a Go panic.
        505..=1504 => {
            let text = if rng.below(2) == 0 {
                format!(
                    "\tat com.example.orders.{}.process({}.java:{})",
                    LOGGERS[rng.below(5) as usize].replace('.', "_"),
                    "Service",
                    rng.below(400)
                )
            } else {
                format!(
                    "panic: runtime error: index out of range [{}] with length {} (goroutine {} [running])",
                    rng.below(10),
                    rng.below(10),
                    rng.below(500)
                )
            };
            (text, true)
        }
        // 20%: access logs.
        1505..=3504 => (
            format!(
                "10.0.{}.{} - - [22/Nov/2026:00:41:{:02} +0000] \"GET {}/{id}?page={} HTTP/1.1\" {} {} \"-\" \"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)\"",
                rng.below(256),
                rng.below(256),
                rng.below(60),
                PATHS[rng.below(PATHS.len() as u64) as usize],
                rng.below(20),
                [200, 200, 200, 304, 404, 500][rng.below(6) as usize],
                rng.below(50_000),
            ),
            false,
        ),
        // 25%: JSON-structured.
        3505..=6004 => (
            format!(
                r#"{{"level":"{}","ts":"2026-11-22T00:41:42.{:03}Z","caller":"orders/service.go:{}","msg":"order {}","order_id":{id},"user":"{}","items":{},"latency_ms":{ms}.{},"trace_id":"{:016x}{:016x}"}}"#,
                LEVELS[rng.below(5) as usize].to_lowercase(),
                rng.below(1000),
                rng.below(400),
                WORDS[rng.below(WORDS.len() as u64) as usize],
                NAMES[rng.below(NAMES.len() as u64) as usize],
                rng.below(20),
                rng.below(10),
                rng.next_u64(),
                rng.next_u64(),
            ),
            false,
        ),
        // 40%: plain application lines of 60 to 250 bytes.
        _ => {
            let mut text = format!(
                "2026-11-22 00:41:{:02}.{:03} {} [worker-{}] {} - order id={id} took={ms}ms",
                rng.below(60),
                rng.below(1000),
                LEVELS[rng.below(5) as usize],
                rng.below(16),
                LOGGERS[rng.below(5) as usize],
            );
            let len = 60 + rng.below(190) as usize;
            while text.len() < len {
                text.push(' ');
                text.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
            }
            (text, false)
        }
    }
}

/// `len` bytes of base64-like text (a payload dump): no escapes.
fn payload(rng: &mut Lcg, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut text = String::from("payload=");
    while text.len() < len {
        text.push(ALPHABET[rng.below(64) as usize] as char);
    }
    text
}

/// Escapes `bytes` as moby's json-file driver does.
fn go_escape(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 16);
    for &b in bytes {
        match b {
            b'"' => out.extend_from_slice(br#"\""#),
            b'\\' => out.extend_from_slice(br"\\"),
            b'\n' => out.extend_from_slice(br"\n"),
            b'\r' => out.extend_from_slice(br"\r"),
            b'<' | b'>' | b'&' | 0..0x20 => {
                out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
            }
            _ => out.push(b),
        }
    }
    out
}

/// `key=value` lines of `expected`.
fn format_expected(e: &Expected) -> String {
    format!(
        "records={}\njson_lines={}\ninput_bytes={}\nsink_bytes={}\n",
        e.records, e.json_lines, e.input_bytes, e.sink_bytes
    )
}

/// Reads what [`format_expected`] wrote; `None` if anything is missing.
fn parse_expected(text: &str) -> Option<Expected> {
    let mut e = Expected::default();
    let mut seen = 0;
    for line in text.lines() {
        let (key, value) = line.split_once('=')?;
        let value: u64 = value.parse().ok()?;
        match key {
            "records" => e.records = value,
            "json_lines" => e.json_lines = value,
            "input_bytes" => e.input_bytes = value,
            "sink_bytes" => e.sink_bytes = value,
            _ => return None,
        }
        seen += 1;
    }
    (seen == 4).then_some(e)
}

/// A small deterministic generator (64-bit LCG, high bits out).
pub(crate) struct Lcg(pub(crate) u64);

impl Lcg {
    /// The next 64 random bits (two steps).
    pub(crate) fn next_u64(&mut self) -> u64 {
        (self.step() << 32) ^ self.step()
    }

    /// Uniform-enough in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.step() % n.max(1)
    }

    fn step(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

/// Checks a generated input against its `expected`: every file's size and line count.
///
/// # Errors
/// When a log is missing or does not match.
pub(crate) fn verify(workload: &Workload) -> Result<()> {
    let mut bytes = 0;
    for log in &workload.logs {
        bytes += fs::metadata(log)
            .with_context(|| format!("stat {}", log.display()))?
            .len();
    }
    if bytes != workload.expected.input_bytes {
        bail!(
            "input under {} holds {bytes} bytes, {} expected: remove it to regenerate",
            workload.docker_root.display(),
            workload.expected.input_bytes
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_moby() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"plain", b"plain"),
            (b"a\"b\\c", br#"a\"b\\c"#),
            (b"\t<&>\n\r\x01", br"\u0009\u003c\u0026\u003e\n\r\u0001"),
            ("zoë".as_bytes(), "zoë".as_bytes()),
        ];
        for (raw, want) in cases {
            assert_eq!(go_escape(raw), *want, "{raw:?}");
        }
    }

    #[test]
    fn times_are_rfc3339_nanos() {
        let mut t = [0; TIME_LEN];
        format_time(3_723_000_000_007, &mut t);
        assert_eq!(&t, b"2026-11-22T01:02:03.000000007Z");
    }

    #[test]
    fn expected_round_trips_and_counts_what_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let spec = Spec {
            name: "t",
            containers: 2,
            bytes_each: 300_000,
            lines_each: None,
        };
        let w = ensure(dir.path(), &spec).unwrap();
        verify(&w).unwrap();
        let mut json_lines = 0;
        for log in &w.logs {
            let text = fs::read_to_string(log).unwrap();
            json_lines += text.lines().count() as u64;
            assert!(
                text.lines()
                    .all(|l| l.starts_with(r#"{"log":""#) && l.ends_with("Z\"}"))
            );
        }
        assert_eq!(json_lines, w.expected.json_lines);
        assert!(w.expected.records <= json_lines && w.expected.records > 1000);
        assert!(w.expected.sink_bytes < w.expected.input_bytes);
        let again = ensure(dir.path(), &spec).unwrap();
        assert_eq!(again.expected, w.expected, "reused from the marker");
        assert_eq!(
            parse_expected(&format_expected(&w.expected)),
            Some(w.expected)
        );
        assert_eq!(parse_expected("records=1\n"), None);
    }
}
