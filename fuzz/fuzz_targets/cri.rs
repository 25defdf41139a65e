//! Kubernetes CRI lines (`<time> <stream> <P|F>[:tags] <message>`): whole files through the
//! framer and decoder (see `collector_fuzz::check_log_file`), and each line alone.
//!
//! Beyond "does not panic": a line decoded alone gives one record whose time is the line's
//! first field and whose message is the line's tail after the header, byte for byte.

#![no_main]

use collector::tail::format::LogFormat;
use collector_fuzz::{check_log_file, decode_line};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check_log_file(LogFormat::Cri, data);

    for line in data.split(|&b| b == b'\n') {
        let Some(records) = decode_line(LogFormat::Cri, line) else {
            continue;
        };
        assert_eq!(records.len(), 1, "{line:?} -> {records:?}");
        let r = &records[0];
        assert!(
            !r.time.is_empty() && line.starts_with(&r.time),
            "time of {line:?}"
        );
        assert_eq!(line.get(r.time.len()), Some(&b' '), "time of {line:?}");
        assert!(line.ends_with(&r.message), "message of {line:?}");
        // time, ' ', stream, ' ', at least one tag byte: the message starts after them.
        assert!(
            r.time.len() + 9 + r.message.len() <= line.len(),
            "message overlaps the header of {line:?}"
        );
        let stream = &line[r.time.len() + 1..r.time.len() + 7];
        assert_eq!(
            stream,
            r.stream
                .expect("CRI records have a stream")
                .as_str()
                .as_bytes()
        );
    }
});
