//! StatsD over UDP (<https://github.com/statsd/statsd/blob/master/docs/metric_types.md>):
//! counters (`c`, with an optional `@rate`), gauges (`g`, `+n`/`-n` adjust), timers (`ms`,
//! `h` and `d` are taken as timers). Attributed like Graphite UDP (peer address), aggregated
//! per sender and name over each flush interval, then stored and forwarded as Graphite
//! samples: a counter as `<name>` (the sum per interval), a gauge as `<name>`, a timer as
//! `<name>.count`, `.sum`, `.mean`, `.min`, `.max`.
//!
//! Bounded: at most [`MAX_KEYS`] names per interval (others dropped and counted) and each
//! timer keeps count/sum/min/max only, never its values.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::events::{self, COUNTERS};
use super::listen::{Ingest, Transport, bind_retrying, unix_now};
use super::{Chunk, MetricsError, Origin, Sample};

/// Distinct (sender, name) pairs aggregated per interval.
pub const MAX_KEYS: usize = 100_000;

/// A parsed StatsD line.
#[derive(Clone, Debug, PartialEq)]
pub enum StatsdValue {
    /// A counter increment, already divided by its sample rate.
    Counter(f64),
    /// A gauge: absolute, or a delta (`+n`, `-n`).
    Gauge {
        /// The value.
        value: f64,
        /// Whether it adjusts the last value.
        delta: bool,
    },
    /// A timing in milliseconds.
    Timer(f64),
}

/// Parses `name:value|type[|@rate]`.
pub fn parse_statsd(line: &[u8]) -> Option<(&str, StatsdValue)> {
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let (name, rest) = line.split_once(':')?;
    if name.is_empty()
        || !name.bytes().all(|b| (b'!'..=b'~').contains(&b))
        || name.split('.').any(str::is_empty)
    {
        return None;
    }
    let mut parts = rest.split('|');
    let raw = parts.next()?;
    let kind = parts.next()?;
    let rate = match parts.next() {
        Some(r) => r
            .strip_prefix('@')?
            .parse::<f64>()
            .ok()
            .filter(|r| *r > 0.0 && *r <= 1.0)?,
        None => 1.0,
    };
    if parts.next().is_some() {
        return None;
    }
    let value: f64 = raw.parse().ok().filter(|v: &f64| v.is_finite())?;
    if raw.eq_ignore_ascii_case("nan") || raw.to_ascii_lowercase().contains("inf") {
        return None;
    }
    let v = match kind {
        // A tiny rate can take a finite count to infinity (`1e300|c|@1e-10`); a sample is
        // always finite (carbon-c-relay and the store refuse the rest).
        "c" => StatsdValue::Counter(Some(value / rate).filter(|v| v.is_finite())?),
        "g" => StatsdValue::Gauge {
            value,
            delta: raw.starts_with(['+', '-']),
        },
        "ms" | "h" | "d" => StatsdValue::Timer(value),
        _ => return None,
    };
    Some((name, v))
}

#[derive(Clone, Debug, PartialEq)]
enum Aggregate {
    Counter(f64),
    Gauge(f64),
    Timer {
        count: u64,
        sum: f64,
        min: f64,
        max: f64,
    },
}

/// A sender: its owner key and container.
type SenderKey = (String, Option<String>);

/// Aggregates of one interval.
#[derive(Debug, Default)]
pub struct Aggregator {
    /// By owner key and container: the origin and its names.
    by_origin: HashMap<SenderKey, (Arc<Origin>, HashMap<String, Aggregate>)>,
    /// Names aggregated this interval, over every sender (bounded by [`MAX_KEYS`]).
    keys: usize,
    /// Gauges keep their value across intervals (StatsD semantics for deltas).
    gauges: HashMap<(String, String), f64>,
}

impl Aggregator {
    /// Adds one value; false when over [`MAX_KEYS`] (dropped), or when the value would take
    /// its name's aggregate to infinity (refused, like a line that does not parse: the
    /// aggregate keeps its finite value, since every sample must be finite).
    pub fn add(&mut self, origin: &Arc<Origin>, name: &str, value: StatsdValue) -> bool {
        let key = (
            origin.owner.clone(),
            origin.container_id.as_ref().map(|c| c.to_string()),
        );
        let full = self.keys >= MAX_KEYS;
        let entry = self
            .by_origin
            .entry(key)
            .or_insert_with(|| (origin.clone(), HashMap::new()));
        let gauge_key = (origin.owner.clone(), name.to_owned());
        // Sums and gauge deltas of finite values can overflow (two `1e308|c`): found by the
        // `statsd` fuzz target.
        let stays_finite = match (&value, entry.1.get(name)) {
            (StatsdValue::Counter(v), Some(Aggregate::Counter(c))) => (c + v).is_finite(),
            (StatsdValue::Timer(v), Some(Aggregate::Timer { sum, .. })) => (sum + v).is_finite(),
            (StatsdValue::Gauge { value, delta: true }, _) => {
                let last = self.gauges.get(&gauge_key).copied().unwrap_or(0.0);
                (last + value).is_finite()
            }
            _ => true,
        };
        if !stays_finite {
            return false;
        }
        if !entry.1.contains_key(name) {
            if full {
                return false;
            }
            self.keys += 1;
        }
        let agg = entry.1.entry(name.to_owned());
        match value {
            StatsdValue::Counter(v) => {
                if let Aggregate::Counter(c) = agg.or_insert(Aggregate::Counter(0.0)) {
                    *c += v;
                }
            }
            StatsdValue::Gauge { value, delta } => {
                let last = self.gauges.get(&gauge_key).copied().unwrap_or(0.0);
                let v = if delta { last + value } else { value };
                if self.gauges.len() < MAX_KEYS || self.gauges.contains_key(&gauge_key) {
                    self.gauges.insert(gauge_key, v);
                }
                agg.insert_entry(Aggregate::Gauge(v));
            }
            StatsdValue::Timer(v) => {
                let t = agg.or_insert(Aggregate::Timer {
                    count: 0,
                    sum: 0.0,
                    min: f64::INFINITY,
                    max: f64::NEG_INFINITY,
                });
                if let Aggregate::Timer {
                    count,
                    sum,
                    min,
                    max,
                } = t
                {
                    *count += 1;
                    *sum += v;
                    *min = min.min(v);
                    *max = max.max(v);
                }
            }
        }
        true
    }

    /// The interval's samples, one chunk per sender, and a fresh interval.
    pub fn flush(&mut self, timestamp: i64) -> Vec<Chunk> {
        self.keys = 0;
        let mut out = Vec::new();
        for (_, (origin, names)) in self.by_origin.drain() {
            let mut samples = Vec::new();
            let mut push = |path: String, value: f64| {
                samples.push(Sample {
                    path,
                    value,
                    timestamp,
                })
            };
            for (name, agg) in names {
                match agg {
                    Aggregate::Counter(v) | Aggregate::Gauge(v) => push(name, v),
                    Aggregate::Timer {
                        count,
                        sum,
                        min,
                        max,
                    } => {
                        push(format!("{name}.count"), count as f64);
                        push(format!("{name}.sum"), sum);
                        push(format!("{name}.mean"), sum / count.max(1) as f64);
                        push(format!("{name}.min"), min);
                        push(format!("{name}.max"), max);
                    }
                }
            }
            samples.sort_by(|a, b| a.path.cmp(&b.path));
            out.push(Chunk {
                origin,
                samples,
                rejected: 0,
                rate_limited: 0,
            });
        }
        out
    }
}

/// Serves StatsD on `address`, flushing every `interval`, until `stop` (then flushes once).
pub async fn run(
    ingest: Arc<Ingest>,
    address: SocketAddr,
    interval: Duration,
    stop: CancellationToken,
) {
    let bound = bind_retrying(&stop, || async move {
        UdpSocket::bind(address)
            .await
            .map_err(|source| MetricsError::Bind {
                transport: "statsd",
                address,
                source,
            })
    })
    .await;
    let Some(socket) = bound else { return };
    info!(%address, "StatsD listener up.");
    let mut agg = Aggregator::default();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut buf = vec![0u8; 65_536];
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                flush(&ingest, &mut agg).await;
                return;
            }
            _ = tick.tick() => flush(&ingest, &mut agg).await,
            r = socket.recv_from(&mut buf) => {
                let (n, peer) = match r {
                    Ok(r) => r,
                    Err(e) => {
                        debug!(error = %e, "StatsD receive failed.");
                        continue;
                    }
                };
                let mut origin = ingest.attributor.by_address(peer.ip()).await;
                if origin.is_unattributed() {
                    origin = ingest.attributor.by_udp_peer(peer).await;
                }
                let lines: Vec<&[u8]> = buf[..n].split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
                let granted = ingest.rate.take(&origin.owner, lines.len(), std::time::Instant::now());
                events::add(&COUNTERS.rate_limited, (lines.len() - granted) as u64);
                for line in &lines[..granted] {
                    let ok = parse_statsd(line).is_some_and(|(name, v)| agg.add(&origin, name, v));
                    if !ok {
                        events::add(&COUNTERS.statsd_rejected, 1);
                    }
                }
            }
        }
    }
}

async fn flush(ingest: &Ingest, agg: &mut Aggregator) {
    for chunk in agg.flush(unix_now()) {
        events::add(
            &COUNTERS.accepted[Transport::Statsd as usize],
            chunk.samples.len() as u64,
        );
        ingest.outputs.send(chunk).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statsd_lines() {
        let cases: [(&str, Option<(&str, StatsdValue)>); 10] = [
            ("req:1|c", Some(("req", StatsdValue::Counter(1.0)))),
            ("req:2|c|@0.5", Some(("req", StatsdValue::Counter(4.0)))),
            (
                "mem:42|g",
                Some((
                    "mem",
                    StatsdValue::Gauge {
                        value: 42.0,
                        delta: false,
                    },
                )),
            ),
            (
                "mem:-2|g",
                Some((
                    "mem",
                    StatsdValue::Gauge {
                        value: -2.0,
                        delta: true,
                    },
                )),
            ),
            ("lat:12.5|ms", Some(("lat", StatsdValue::Timer(12.5)))),
            ("lat:NaN|ms", None),
            ("lat:1|x", None),
            (":1|c", None),
            ("a..b:1|c", None),
            ("req:1|c|@2", None),
        ];
        for (line, want) in cases {
            assert_eq!(parse_statsd(line.as_bytes()), want, "{line}");
        }
    }

    #[test]
    fn aggregates_per_sender_per_interval() {
        let mut agg = Aggregator::default();
        let a = Arc::new(Origin::unattributed());
        let mut b = Origin::unattributed();
        b.owner = "other".into();
        let b = Arc::new(b);
        for line in [
            "req:1|c",
            "req:2|c",
            "lat:10|ms",
            "lat:30|ms",
            "mem:5|g",
            "mem:+1|g",
        ] {
            let (n, v) = parse_statsd(line.as_bytes()).unwrap();
            assert!(agg.add(&a, n, v));
        }
        let (n, v) = parse_statsd(b"req:7|c").unwrap();
        agg.add(&b, n, v);
        let mut chunks = agg.flush(100);
        chunks.sort_by(|x, y| x.origin.owner.cmp(&y.origin.owner));
        let got: Vec<(String, f64)> = chunks[1]
            .samples
            .iter()
            .map(|s| (s.path.clone(), s.value))
            .collect();
        assert_eq!(chunks[1].origin.owner, "unattributed");
        assert_eq!(
            got,
            [
                ("lat.count".to_owned(), 2.0),
                ("lat.max".to_owned(), 30.0),
                ("lat.mean".to_owned(), 20.0),
                ("lat.min".to_owned(), 10.0),
                ("lat.sum".to_owned(), 40.0),
                ("mem".to_owned(), 6.0),
                ("req".to_owned(), 3.0),
            ]
        );
        assert_eq!(chunks[0].samples[0].value, 7.0);
        assert!(agg.flush(200).is_empty(), "a new interval starts empty");
    }

    /// Regression (the `statsd` fuzz target): finite values whose sum, delta or rate-scaled
    /// count overflows were aggregated to an infinite sample, which the forwarder sent as
    /// `inf`. Such a value is now refused and the aggregate keeps its last finite value.
    #[test]
    fn overflowing_values_are_refused_and_samples_stay_finite() {
        assert_eq!(parse_statsd(b"big:1e308|c|@0.1"), None);
        assert_eq!(
            parse_statsd(b"tiny:1e300|c|@0.5"),
            Some(("tiny", StatsdValue::Counter(2e300)))
        );
        let mut agg = Aggregator::default();
        let origin = Arc::new(Origin::unattributed());
        let mut accepted = Vec::new();
        // The crash input's lines, then the same overflow for timers and gauge deltas.
        for line in [
            "big:1e308|c",
            "big:1e308|c",
            "tiny:1e300|c|@0.5",
            "t:1e308|ms",
            "t:1e308|ms",
            "g:1e308|g",
            "g:+1e308|g",
            "g:-1e308|g",
        ] {
            let (name, value) = parse_statsd(line.as_bytes()).unwrap();
            accepted.push(agg.add(&origin, name, value));
        }
        assert_eq!(
            accepted,
            [true, false, true, true, false, true, false, true]
        );
        let chunks = agg.flush(100);
        let got: Vec<(&str, f64)> = chunks[0]
            .samples
            .iter()
            .map(|s| (s.path.as_str(), s.value))
            .collect();
        assert_eq!(
            got,
            [
                ("big", 1e308),
                ("g", 0.0),
                ("t.count", 1.0),
                ("t.max", 1e308),
                ("t.mean", 1e308),
                ("t.min", 1e308),
                ("t.sum", 1e308),
                ("tiny", 2e300),
            ]
        );
    }
}
