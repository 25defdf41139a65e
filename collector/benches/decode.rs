//! Throughput of the hot paths: line framing, log format decoding into batches, the local
//! directory sink's formatting and writing, CloudWatch request building, Graphite parsing.
//!
//! The inputs are generated (deterministically) to look like real container logs: lines of
//! about 100 to 300 bytes, a mix of stdout and stderr, some messages with characters Docker
//! escapes (quotes of JSON-structured logs, tabs, `<`, `&`), and a few long lines that Docker
//! or the CRI runtime split into pieces.
//!
//! Time is the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), not wall time: the
//! machines this runs on are shared (compiles, other tests), and CPU time is what the
//! targets are about. The local sink benchmark includes the kernel's share of `write()`.
//!
//! Run: `cargo bench -p collector --bench decode -- --quick`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{Criterion, Throughput, criterion_main};

use collector::batch::{Batch, SourceInfo};
use collector::identify::{ContainerId, ContainerIdentity};
use collector::ship::Sink;
use collector::ship::file::FileSink;
use collector::state::{Checkpoint, CheckpointUpdate};
use collector::tail::LogRecords;
use collector::tail::fingerprint::Fingerprint;
use collector::tail::format::{Decoder, LogFormat};
use collector::tail::framing::{DEFAULT_READ_SIZE, Frame, LineFramer};

/// CPU time of the calling thread.
struct ThreadCpuTime;

/// Reads the calling thread's CPU clock.
fn thread_cpu_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec, and CLOCK_THREAD_CPUTIME_ID is a clock
    // every Linux kernel has; the call only writes `ts`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        thread_cpu_now()
    }

    fn end(&self, start: Duration) -> Duration {
        thread_cpu_now().saturating_sub(start)
    }

    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }

    fn zero(&self) -> Duration {
        Duration::ZERO
    }

    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuFormatter
    }
}

/// Formats nanoseconds of CPU time, and bytes per CPU second.
struct CpuFormatter;

impl ValueFormatter for CpuFormatter {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = if typical < 1e3 {
            (1.0, "ns")
        } else if typical < 1e6 {
            (1e-3, "µs")
        } else if typical < 1e9 {
            (1e-6, "ms")
        } else {
            (1e-9, "s")
        };
        values.iter_mut().for_each(|v| *v *= factor);
        unit
    }

    fn scale_throughputs(
        &self,
        _typical: f64,
        throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        let per_cpu_second = |n: f64, v: f64| n * 1e9 / v;
        match *throughput {
            Throughput::Bytes(n) | Throughput::BytesDecimal(n) => {
                values
                    .iter_mut()
                    .for_each(|v| *v = per_cpu_second(n as f64, *v) / (1u64 << 30) as f64);
                "GiB/CPU-s"
            }
            Throughput::Elements(n) => {
                values
                    .iter_mut()
                    .for_each(|v| *v = per_cpu_second(n as f64, *v));
                "elem/CPU-s"
            }
            Throughput::Bits(n) => {
                values
                    .iter_mut()
                    .for_each(|v| *v = per_cpu_second(n as f64, *v));
                "bit/CPU-s"
            }
        }
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

/// Size of each generated log.
const INPUT_BYTES: usize = 8 << 20;
/// Message bound given to the decoders.
const MAX_LINE_BYTES: usize = 1 << 20;

/// A small deterministic generator (64-bit LCG), so every run decodes the same bytes.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> usize {
        (self.next() % n) as usize
    }
}

const WORDS: &[&str] = &[
    "GET",
    "POST",
    "/api/v1/orders",
    "200",
    "404",
    "user_id=8812",
    "took",
    "12.5ms",
    "request",
    "completed",
    "INFO",
    "WARN",
    "cache",
    "miss",
    "for",
    "key",
    "session",
    "worker",
    "started",
    "connection",
    "reset",
    "by",
    "peer",
    "retrying",
    "in",
    "250ms",
    "batch",
    "of",
    "512",
];

/// One message of `len` bytes or a bit more; with `escaped`, Docker would escape some of it.
fn message(rng: &mut Lcg, len: usize, escaped: bool) -> String {
    let mut s = String::new();
    if escaped {
        s.push_str(r#"{"level":"info","msg":"#);
    }
    while s.len() < len {
        s.push_str(WORDS[rng.below(WORDS.len() as u64)]);
        s.push(if escaped && rng.below(8) == 0 {
            '\t'
        } else {
            ' '
        });
    }
    if escaped {
        s.push_str(r#"<done> & "ok"}"#);
    }
    s
}

/// Escapes `s` as moby's json-file driver does (Go `encoding/json` rules).
fn go_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '<' | '>' | '&' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// A json-file log; `escaped_percent` of the lines have escapes.
fn docker_json_log(seed: u64, escaped_percent: usize) -> Vec<u8> {
    let mut rng = Lcg(seed);
    let mut out = Vec::with_capacity(INPUT_BYTES + 4096);
    let mut nanos = 0u64;
    while out.len() < INPUT_BYTES {
        nanos += 1000 + rng.below(100_000) as u64;
        let time = format!(
            "2024-05-01T12:{:02}:{:02}.{:09}Z",
            nanos / 60_000_000_000 % 60,
            nanos / 1_000_000_000 % 60,
            nanos % 1_000_000_000
        );
        let stream = if rng.below(5) == 0 {
            "stderr"
        } else {
            "stdout"
        };
        let escaped = rng.below(100) < escaped_percent;
        // About 1 line in 2000 is a 40 KiB line, which Docker splits at 16 KiB.
        let len = if rng.below(2000) == 0 {
            40_000
        } else {
            20 + rng.below(200)
        };
        let text = message(&mut rng, len, escaped);
        let bytes = text.as_bytes();
        for (i, piece) in bytes.chunks(16 * 1024).enumerate() {
            let last = (i + 1) * 16 * 1024 >= bytes.len();
            let piece = std::str::from_utf8(piece).expect("messages are ASCII");
            out.extend_from_slice(
                format!(
                    r#"{{"log":"{}{}","stream":"{stream}","time":"{time}"}}"#,
                    go_escape(piece),
                    if last { "\\n" } else { "" }
                )
                .as_bytes(),
            );
            out.push(b'\n');
        }
    }
    out
}

/// A CRI log with the same kind of messages (no escaping in CRI).
fn cri_log(seed: u64) -> Vec<u8> {
    let mut rng = Lcg(seed);
    let mut out = Vec::with_capacity(INPUT_BYTES + 4096);
    while out.len() < INPUT_BYTES {
        let stream = if rng.below(5) == 0 {
            "stderr"
        } else {
            "stdout"
        };
        let len = if rng.below(2000) == 0 {
            40_000
        } else {
            20 + rng.below(200)
        };
        let escaped = rng.below(10) == 0;
        let text = message(&mut rng, len, escaped);
        let bytes = text.as_bytes();
        for (i, piece) in bytes.chunks(16 * 1024).enumerate() {
            let tag = if (i + 1) * 16 * 1024 >= bytes.len() {
                'F'
            } else {
                'P'
            };
            out.extend_from_slice(
                format!("2024-05-01T12:34:56.123456789Z {stream} {tag} ").as_bytes(),
            );
            out.extend_from_slice(piece);
            out.push(b'\n');
        }
    }
    out
}

/// The frames of an input, kept as ranges of the framer's chunks, so decoding them costs
/// what decoding straight from the framer costs, with framing excluded.
struct Framed {
    /// The framer's chunks, in order.
    chunks: Vec<Bytes>,
    /// (chunk index, byte range, start offset, end offset) per frame.
    frames: Vec<(usize, std::ops::Range<usize>, u64, u64)>,
}

/// Frames `input` with a framer reading from memory (as from the page cache).
fn frames_of(input: &[u8], max_frame_bytes: usize) -> Framed {
    let mut reader = input;
    let mut framer = LineFramer::new(0, DEFAULT_READ_SIZE, max_frame_bytes);
    let mut framed = Framed {
        chunks: Vec::new(),
        frames: Vec::new(),
    };
    while framer.read_from(&mut reader).expect("reading memory") > 0 {
        while let Some(frame) = framer.next_frame() {
            let same = framed
                .chunks
                .last()
                .is_some_and(|c| c.as_ptr() == frame.chunk.as_ptr());
            if !same {
                framed.chunks.push(frame.chunk.clone());
            }
            let base = frame.chunk.as_ptr() as usize;
            let start = frame.bytes.as_ptr() as usize - base;
            framed.frames.push((
                framed.chunks.len() - 1,
                start..start + frame.bytes.len(),
                frame.start_offset,
                frame.end_offset,
            ));
        }
    }
    framed
}

/// Frames `input`, dropping each frame at once; returns the number of message bytes.
fn count_frames(input: &[u8]) -> usize {
    let mut reader = input;
    let mut framer = LineFramer::new(0, DEFAULT_READ_SIZE, 1 << 20);
    let mut bytes = 0;
    while framer.read_from(&mut reader).expect("reading memory") > 0 {
        while let Some(frame) = framer.next_frame() {
            bytes += frame.bytes.len();
        }
    }
    bytes
}

/// Frames and decodes `input`, dropping the records per read like a discard sink; returns
/// the number of records.
fn frame_and_decode(input: &[u8], format: LogFormat) -> usize {
    let now = Bytes::from_static(b"2024-05-01T12:34:56.123456789Z");
    let mut reader = input;
    let mut framer = LineFramer::new(0, DEFAULT_READ_SIZE, format.max_frame_bytes(MAX_LINE_BYTES));
    let mut decoder = Decoder::new(format, MAX_LINE_BYTES);
    let mut records = LogRecords::with_capacity(4096);
    let mut count = 0;
    while framer.read_from(&mut reader).expect("reading memory") > 0 {
        while let Some(frame) = framer.next_frame() {
            decoder
                .decode(frame, &now, &mut records)
                .expect("generated lines are valid");
        }
        count += records.len();
        records.clear();
    }
    count
}

/// Decodes pre-framed lines (framing excluded from the time).
fn bench_decode(
    c: &mut Criterion<ThreadCpuTime>,
    group: &str,
    name: &str,
    input: &[u8],
    format: LogFormat,
) {
    let frames = frames_of(input, format.max_frame_bytes(MAX_LINE_BYTES));
    let now = Bytes::from_static(b"2024-05-01T12:34:56.123456789Z");
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Bytes(input.len() as u64));
    g.bench_function(name, |b| {
        b.iter(|| {
            let mut decoder = Decoder::new(format, MAX_LINE_BYTES);
            let mut records = LogRecords::with_capacity(4096);
            let mut count = 0;
            for (chunk, range, start, end) in &frames.frames {
                let chunk = &frames.chunks[*chunk];
                let frame = Frame {
                    chunk,
                    bytes: &chunk[range.clone()],
                    start_offset: *start,
                    end_offset: *end,
                    truncated: false,
                };
                decoder
                    .decode(frame, &now, &mut records)
                    .expect("generated lines are valid");
                if records.len() >= 4096 {
                    count += records.len();
                    records.clear();
                }
            }
            count + records.len()
        });
    });
    g.finish();
}

/// Decodes `input` into batches of one read each, like a tailer.
fn batches_of(input: &[u8]) -> Vec<LogRecords> {
    let now = Bytes::from_static(b"2024-05-01T12:34:56.123456789Z");
    let mut reader = input;
    let format = LogFormat::DockerJson;
    let mut framer = LineFramer::new(0, DEFAULT_READ_SIZE, format.max_frame_bytes(MAX_LINE_BYTES));
    let mut decoder = Decoder::new(format, MAX_LINE_BYTES);
    let mut batches = Vec::new();
    while framer.read_from(&mut reader).expect("reading memory") > 0 {
        let mut records = LogRecords::new();
        while let Some(frame) = framer.next_frame() {
            decoder
                .decode(frame, &now, &mut records)
                .expect("generated lines are valid");
        }
        batches.push(records);
    }
    batches
}

/// The local directory sink writing decoded batches into a temporary directory (the page
/// cache): formatting `<time> <message>\n` lines and `write()`. Fsync is left out: it is
/// periodic, and its cost is the disk's.
fn bench_file_sink(c: &mut Criterion<ThreadCpuTime>, input: &[u8]) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let id = ContainerId::parse(&"b".repeat(64)).expect("a valid container id");
    let info = Arc::new(SourceInfo::container_output(id.clone()));
    let identity = Arc::new(ContainerIdentity::new(id.clone()));
    let batches: Vec<Batch> = batches_of(input)
        .into_iter()
        .map(|records| Batch {
            source: info.clone(),
            identity: identity.clone(),
            records,
            ack: CheckpointUpdate {
                source: info.key.clone(),
                container_id: id.to_string(),
                checkpoint: Checkpoint {
                    fingerprint: Fingerprint::NOT_A_FILE,
                    path: String::new(),
                    offset: 0,
                },
                counters: Default::default(),
            },
            last: false,
        })
        .collect();
    let mut sink = FileSink::new(dir.path().to_owned());
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut g = c.benchmark_group("ship");
    g.throughput(Throughput::Bytes(input.len() as u64));
    g.bench_function("file/docker_json/mixed", |b| {
        b.iter(|| {
            for batch in &batches {
                let mut sent = sink.send_batch(batch);
                match sent.as_mut().poll(&mut cx) {
                    std::task::Poll::Ready(r) => r.expect("writing to a temporary directory"),
                    std::task::Poll::Pending => panic!("the file sink never waits"),
                }
            }
        });
    });
    g.finish();
}

/// Every benchmark of this file.
fn benches(c: &mut Criterion<ThreadCpuTime>) {
    let common = docker_json_log(1, 0);
    let mixed = docker_json_log(2, 10);
    let escaped = docker_json_log(3, 100);
    let cri = cri_log(4);

    let mut g = c.benchmark_group("framing");
    g.throughput(Throughput::Bytes(mixed.len() as u64));
    g.bench_function("json-file", |b| b.iter(|| count_frames(black_box(&mixed))));
    g.finish();

    bench_decode(c, "docker_json", "common", &common, LogFormat::DockerJson);
    bench_decode(c, "docker_json", "mixed", &mixed, LogFormat::DockerJson);
    bench_decode(c, "docker_json", "escaped", &escaped, LogFormat::DockerJson);
    bench_decode(c, "cri", "mixed", &cri, LogFormat::Cri);

    let mut g = c.benchmark_group("frame+decode");
    for (name, input, format) in [
        ("docker_json/common", &common, LogFormat::DockerJson),
        ("docker_json/mixed", &mixed, LogFormat::DockerJson),
        ("docker_json/escaped", &escaped, LogFormat::DockerJson),
        ("cri/mixed", &cri, LogFormat::Cri),
        ("plain/json-file", &mixed, LogFormat::Plain),
    ] {
        g.throughput(Throughput::Bytes(input.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| frame_and_decode(black_box(input), format))
        });
    }
    g.finish();

    bench_file_sink(c, &mixed);
    bench_cloudwatch(c, &mixed);
    bench_graphite_parse(c);
}

/// Records of decoded batches into PutLogEvents requests (UTF-8 check, time parse, window
/// clamp, sort, cut by every limit), per byte of log text: the target is 300 MB/s per core.
fn bench_cloudwatch(c: &mut Criterion<ThreadCpuTime>, input: &[u8]) {
    use collector::ship::cloudwatch_batch::{
        BuildStats, InputRecord, Limits, events_from_records, requests_from_events,
    };
    let batches = batches_of(input);
    let text: usize = batches.iter().map(LogRecords::message_bytes).sum();
    let limits = Limits::default();
    // "Now" just after the generated times, so nothing is clamped as too old.
    let now_ms = batches
        .iter()
        .flat_map(|b| b.iter())
        .filter_map(|r| collector::ship::cloudwatch_batch::parse_time_ms(r.time))
        .max()
        .unwrap_or(0)
        + 1000;
    let mut g = c.benchmark_group("cloudwatch");
    g.throughput(Throughput::Bytes(text as u64));
    g.bench_function("requests/docker_json/mixed", |b| {
        b.iter(|| {
            let mut stats = BuildStats::default();
            let mut events = Vec::new();
            for batch in &batches {
                events_from_records(
                    batch.iter().map(|r| InputRecord {
                        time: r.time,
                        message: r.message,
                        continued: r.split,
                    }),
                    now_ms,
                    &limits,
                    &mut stats,
                    &mut events,
                );
            }
            black_box(requests_from_events(events, &limits).len())
        });
    });
    g.finish();
}

/// Graphite plaintext lines parsed per CPU-second (the ingest target is a million samples per
/// second per core, of which parsing is one part).
fn bench_graphite_parse(c: &mut Criterion<ThreadCpuTime>) {
    use collector::metrics::parse::{ParseSettings, parse_line};
    let now = 1_790_000_000;
    let lines: Vec<String> = (0..10_000)
        .map(|i| {
            format!(
                "app.service{}.requests.latency_ms.p{} {}.{} {}",
                i % 17,
                i % 100,
                i * 7 % 1000,
                i % 10,
                now - i64::from(i % 60)
            )
        })
        .collect();
    let settings = ParseSettings::default();
    let mut g = c.benchmark_group("graphite");
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.bench_function("parse_line", |b| {
        b.iter(|| {
            lines
                .iter()
                .filter(|l| parse_line(black_box(l.as_bytes()), now, &settings).is_ok())
                .count()
        })
    });
    g.finish();
}

/// The benchmark group; written out rather than with `criterion_group!`, whose generated
/// `pub fn` has no doc comment.
fn decode() {
    let mut c = Criterion::default()
        .with_measurement(ThreadCpuTime)
        .configure_from_args();
    benches(&mut c);
}

criterion_main!(decode);
