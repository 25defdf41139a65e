//! StatsD lines and their aggregation into Graphite samples.
//!
//! Beyond "does not panic": an accepted line's name is the line's own prefix and its value is
//! finite; every sample an interval's aggregation flushes has a finite value (what the
//! samples promise the store and the carbon forwarder), and the line the forwarder writes for
//! it is one the Graphite parser accepts.

#![no_main]

use std::sync::Arc;

use collector::fuzzing::graphite_line;
use collector::metrics::Origin;
use collector::metrics::parse::{ParseSettings, parse_line};
use collector::metrics::statsd::{Aggregator, StatsdValue, parse_statsd};
use libfuzzer_sys::fuzz_target;

/// The flush time.
const NOW: i64 = 1_790_000_000;

fuzz_target!(|data: &[u8]| {
    let origin = Arc::new(Origin::unattributed());
    let mut aggregator = Aggregator::default();
    for line in data.split(|&b| b == b'\n') {
        let Some((name, value)) = parse_statsd(line) else {
            continue;
        };
        assert!(
            line.starts_with(name.as_bytes()),
            "name {name:?} of {line:?}"
        );
        assert_eq!(
            line.get(name.len()),
            Some(&b':'),
            "name {name:?} of {line:?}"
        );
        let v = match value {
            StatsdValue::Counter(v) | StatsdValue::Timer(v) => v,
            StatsdValue::Gauge { value, .. } => value,
        };
        assert!(v.is_finite(), "{line:?} -> {value:?}");
        aggregator.add(&origin, name, value);
    }
    let settings = ParseSettings::default();
    for chunk in aggregator.flush(NOW) {
        for sample in &chunk.samples {
            assert!(sample.value.is_finite(), "{sample:?}");
            let forwarded = graphite_line(&sample.path, sample.value, sample.timestamp);
            if let Err(r) = parse_line(forwarded.as_bytes(), NOW, &settings) {
                panic!("forwarded {forwarded:?} is rejected: {r}");
            }
        }
    }
});
