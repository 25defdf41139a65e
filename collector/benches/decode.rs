//! Throughput of the tail hot path: line framing and log format decoding.
//!
//! The inputs are generated (deterministically) to look like real container logs: lines of
//! about 100 to 300 bytes, a mix of stdout and stderr, some messages with characters Docker
//! escapes (quotes of JSON-structured logs, tabs, `<`, `&`), and a few long lines that Docker
//! or the CRI runtime split into pieces.
//!
//! Run: `cargo bench -p collector --bench decode -- --quick`.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_main};

use collector::tail::format::{Decoder, LogFormat};
use collector::tail::framing::{DEFAULT_READ_SIZE, Frame, LineFramer};

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

/// Frames `input` with a framer reading from memory (as from the page cache).
fn frames_of(input: &[u8], max_frame_bytes: usize) -> Vec<Frame> {
    let mut reader = input;
    let mut framer = LineFramer::new(0, DEFAULT_READ_SIZE, max_frame_bytes);
    let mut frames = Vec::new();
    while framer.read_from(&mut reader).expect("reading memory") > 0 {
        while let Some(frame) = framer.next_frame() {
            frames.push(frame);
        }
    }
    frames
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
    let mut records = Vec::with_capacity(4096);
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
fn bench_decode(c: &mut Criterion, group: &str, name: &str, input: &[u8], format: LogFormat) {
    let frames = frames_of(input, format.max_frame_bytes(MAX_LINE_BYTES));
    let now = Bytes::from_static(b"2024-05-01T12:34:56.123456789Z");
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Bytes(input.len() as u64));
    g.bench_function(name, |b| {
        b.iter_batched(
            || frames.clone(),
            |frames| {
                let mut decoder = Decoder::new(format, MAX_LINE_BYTES);
                let mut records = Vec::with_capacity(4096);
                let mut count = 0;
                for frame in frames {
                    decoder
                        .decode(frame, &now, &mut records)
                        .expect("generated lines are valid");
                    if records.len() >= 4096 {
                        count += records.len();
                        records.clear();
                    }
                }
                count + records.len()
            },
            BatchSize::LargeInput,
        );
    });
    g.finish();
}

/// Every benchmark of this file.
fn benches(c: &mut Criterion) {
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
}

/// The benchmark group; written out rather than with `criterion_group!`, whose generated
/// `pub fn` has no doc comment.
fn decode() {
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
}

criterion_main!(decode);
