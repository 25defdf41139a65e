//! Docker `json-file` lines: the hand-written fast path against serde_json, and whole files
//! through the framer and decoder (see `collector_fuzz::check_log_file`).
//!
//! Beyond "does not panic": for every line serde_json reads as a json-file object, the
//! decoder must give exactly what serde_json gives (message without its final `\n`, time,
//! stream). The decoder may accept more than serde_json (raw control bytes, a lone surrogate
//! as U+FFFD), never less, and never something else.

#![no_main]

use collector::tail::StdStream;
use collector::tail::format::LogFormat;
use collector_fuzz::{check_log_file, decode_line};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;

/// The reference reading of a line.
#[derive(Deserialize)]
struct JsonLine {
    log: String,
    stream: String,
    time: String,
}

fuzz_target!(|data: &[u8]| {
    check_log_file(LogFormat::DockerJson, data);

    for line in data.split(|&b| b == b'\n') {
        let Ok(reference) = serde_json::from_slice::<JsonLine>(line) else {
            continue;
        };
        let stream = match reference.stream.as_str() {
            "stdout" => StdStream::Stdout,
            "stderr" => StdStream::Stderr,
            _ => {
                assert!(
                    decode_line(LogFormat::DockerJson, line).is_none(),
                    "accepted stream {:?}",
                    reference.stream
                );
                continue;
            }
        };
        let records = decode_line(LogFormat::DockerJson, line)
            .unwrap_or_else(|| panic!("rejected a line serde_json reads: {line:?}"));
        let message = reference.log.strip_suffix('\n').unwrap_or(&reference.log);
        assert_eq!(records.len(), 1, "{line:?} -> {records:?}");
        let r = &records[0];
        assert_eq!(r.message, message.as_bytes(), "message of {line:?}");
        assert_eq!(r.time, reference.time.as_bytes(), "time of {line:?}");
        assert_eq!(r.stream, Some(stream), "stream of {line:?}");
        assert!(!r.split);
    }
});
