//! Graphite plaintext: the line framer of a connection and the strict line parser.
//!
//! Beyond "does not panic": framing does not depend on how the stream was cut into reads and
//! never hands out a line over its bound; an accepted sample has a finite value, a valid path
//! and a timestamp in the window; and the line the carbon forwarder writes for it parses back
//! to the same path, the same value bit for bit, and the same timestamp.

#![no_main]

use collector::fuzzing::graphite_line;
use collector::metrics::framing::LineFramer;
use collector::metrics::parse::{ParseSettings, Rejection, parse_line};
use libfuzzer_sys::fuzz_target;

/// The receive time (2026-09-21).
const NOW: i64 = 1_790_000_000;

fn frame(data: &[u8], max: usize, read: usize) -> Vec<Result<Vec<u8>, Rejection>> {
    let mut framer = LineFramer::new(max);
    let mut lines = Vec::new();
    for chunk in data.chunks(read) {
        framer.feed(chunk, |line| lines.push(line.map(<[u8]>::to_vec)));
    }
    if let Some(rejection) = framer.finish() {
        lines.push(Err(rejection));
    }
    lines
}

fn check_line(line: &[u8], settings: &ParseSettings) {
    let Ok(parsed) = parse_line(line, NOW, settings) else {
        return;
    };
    assert!(parsed.value.is_finite(), "{line:?}");
    assert!(
        !parsed.path.is_empty()
            && parsed.path.bytes().all(|b| (b'!'..=b'~').contains(&b))
            && !parsed.path.split('.').any(str::is_empty),
        "path {:?} of {line:?}",
        parsed.path
    );
    assert!(
        parsed.timestamp == NOW
            || (NOW - settings.max_age_secs..=NOW + settings.max_future_secs)
                .contains(&parsed.timestamp),
        "timestamp {} of {line:?}",
        parsed.timestamp
    );
    let forwarded = graphite_line(parsed.path, parsed.value, parsed.timestamp);
    let again = parse_line(forwarded.as_bytes(), NOW, settings)
        .unwrap_or_else(|r| panic!("forwarded {forwarded:?} of {line:?} is rejected: {r}"));
    assert_eq!(again.path, parsed.path, "{forwarded:?}");
    assert_eq!(
        again.value.to_bits(),
        parsed.value.to_bits(),
        "{forwarded:?}"
    );
    assert_eq!(again.timestamp, parsed.timestamp, "{forwarded:?}");
}

fuzz_target!(|data: &[u8]| {
    let Some((&[max, read], stream)) = data.split_first_chunk::<2>() else {
        return;
    };
    let max = usize::from(max) + 1;
    let whole = frame(stream, max, stream.len().max(1));
    let chopped = frame(stream, max, usize::from(read % 13) + 1);
    assert_eq!(
        whole, chopped,
        "the lines depend on how the stream was read"
    );

    let settings = ParseSettings::default();
    for line in whole.iter().flatten() {
        assert!(line.len() <= max && !line.contains(&b'\n'), "{line:?}");
        check_line(line, &settings);
    }
    // The parser alone, on lines of any length.
    for line in stream.split(|&b| b == b'\n') {
        check_line(line, &settings);
    }
});
