//! PutLogEvents requests from log records, with every documented limit enforced here.
//!
//! The limits are those of
//! <https://docs.aws.amazon.com/AmazonCloudWatchLogs/latest/APIReference/API_PutLogEvents.html>
//! (read 2026-11): a request holds at most 10,000 events and 1,048,576 bytes counted as the
//! UTF-8 message bytes plus 26 per event; events are in chronological order; one request
//! spans at most 24 hours; an event is at most 1 MB (since 2025; 256 KB before); events more
//! than 14 days old (or older than the group's retention) or more than 2 hours in the future
//! are rejected. The moto server used in tests enforces only the order and the time window,
//! so this module is the one place that keeps us within the rest, and it is pure so the
//! property tests below can check it for any input.
//!
//! What we do with records the service would refuse (each counted in [`BuildStats`] and so in
//! `/metrics`):
//! - a message that is not valid UTF-8 is converted lossily (invalid bytes become U+FFFD);
//! - a message longer than the event limit is cut at character boundaries into several
//!   events, each but the last ending with [`CONTINUED_MARKER`]; a record the tailer already
//!   cut (a line over `tail.max_line_bytes`) gets the marker too;
//! - an empty message is not sent (the service requires at least one character);
//! - a time outside the accepted window is clamped to the window's edge (less a margin):
//!   the line is kept, its timestamp is moved. Dropping would lose the line, and the bounds
//!   move with the clock, so a clamp keeps order (clamping is monotonic);
//! - a time that does not parse becomes the time of the build.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Most bytes in one request: messages plus [`EVENT_OVERHEAD_BYTES`] per event.
pub const MAX_REQUEST_BYTES: usize = 1_048_576;
/// What each event adds to a request's size (the JSON around it).
pub const EVENT_OVERHEAD_BYTES: usize = 26;
/// Most events in one request.
pub const MAX_REQUEST_EVENTS: usize = 10_000;
/// Largest message of one event. The API allows 1 MB per event since 2025
/// (<https://docs.aws.amazon.com/AmazonCloudWatchLogs/latest/APIReference/API_InputLogEvent.html>);
/// an event must also fit a request with its overhead, so the message is at most
/// 1,048,576 - 26 bytes.
pub const MAX_EVENT_BYTES: usize = MAX_REQUEST_BYTES - EVENT_OVERHEAD_BYTES;
/// Longest time between the first and last event of one request.
pub const MAX_SPAN_MS: i64 = 24 * 3600 * 1000;
/// Oldest event the service accepts, before now.
pub const MAX_AGE_MS: i64 = 14 * 24 * 3600 * 1000;
/// Furthest event in the future the service accepts.
pub const MAX_FUTURE_MS: i64 = 2 * 3600 * 1000;
/// Kept between a clamped time and the window's edge, so a request sent (or retried) a few
/// minutes after it was built is still inside the window.
pub const CLAMP_MARGIN_MS: i64 = 10 * 60 * 1000;
/// Ends every piece of a line that continues in the next event.
pub const CONTINUED_MARKER: &str = " [continued]";

/// The limits a build keeps to (the service's, or smaller ones in tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// See [`MAX_REQUEST_BYTES`].
    pub max_request_bytes: usize,
    /// See [`MAX_REQUEST_EVENTS`].
    pub max_request_events: usize,
    /// See [`MAX_EVENT_BYTES`]; at most `max_request_bytes - EVENT_OVERHEAD_BYTES`.
    pub max_event_bytes: usize,
    /// See [`MAX_SPAN_MS`].
    pub max_span_ms: i64,
    /// The group's retention when it is shorter than [`MAX_AGE_MS`]: older events are
    /// refused too.
    pub max_age_ms: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_bytes: MAX_REQUEST_BYTES,
            max_request_events: MAX_REQUEST_EVENTS,
            max_event_bytes: MAX_EVENT_BYTES,
            max_span_ms: MAX_SPAN_MS,
            max_age_ms: MAX_AGE_MS,
        }
    }
}

impl Limits {
    /// The service's limits with a message cap of `max_event_bytes` and the age bounded by a
    /// retention of `retention_days`.
    pub fn with(max_event_bytes: usize, retention_days: Option<u32>) -> Self {
        let mut l = Self {
            max_event_bytes: max_event_bytes.min(MAX_EVENT_BYTES),
            ..Self::default()
        };
        if let Some(days) = retention_days {
            l.max_age_ms = l.max_age_ms.min(i64::from(days) * 24 * 3600 * 1000);
        }
        l
    }

    /// The accepted window `[oldest, newest]` at `now_ms`, less the margin.
    pub fn window(&self, now_ms: i64) -> (i64, i64) {
        let margin = CLAMP_MARGIN_MS.min(self.max_age_ms / 4);
        (
            now_ms - self.max_age_ms + margin,
            now_ms + MAX_FUTURE_MS - CLAMP_MARGIN_MS,
        )
    }
}

/// One record as the builder takes it.
#[derive(Clone, Copy, Debug)]
pub struct InputRecord<'a> {
    /// RFC 3339 time.
    pub time: &'a [u8],
    /// The raw message.
    pub message: &'a [u8],
    /// The line continues in the next record (the tailer cut it).
    pub continued: bool,
}

/// One log event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    /// Valid UTF-8, 1 to `max_event_bytes` bytes.
    pub message: String,
}

/// One PutLogEvents request's events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// In chronological order.
    pub events: Vec<Event>,
    /// Size as the service counts it (messages + 26 per event).
    pub bytes: usize,
}

/// What a build changed, for the counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BuildStats {
    /// Records whose message was not valid UTF-8.
    pub invalid_utf8: u64,
    /// Records cut into several events here.
    pub split_records: u64,
    /// Events that carry [`CONTINUED_MARKER`].
    pub continued_events: u64,
    /// Empty records not sent.
    pub empty_skipped: u64,
    /// Events older than the window, moved to its start.
    pub clamped_old: u64,
    /// Events past the window, moved to its end.
    pub clamped_future: u64,
    /// Records whose time did not parse (sent with the build time).
    pub bad_time: u64,
}

impl BuildStats {
    /// Adds `other`.
    pub fn add(&mut self, other: &BuildStats) {
        self.invalid_utf8 += other.invalid_utf8;
        self.split_records += other.split_records;
        self.continued_events += other.continued_events;
        self.empty_skipped += other.empty_skipped;
        self.clamped_old += other.clamped_old;
        self.clamped_future += other.clamped_future;
        self.bad_time += other.bad_time;
    }
}

/// Milliseconds since the epoch now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as i64
}

/// Milliseconds since the epoch of an RFC 3339 time (`Z` only, as Docker, CRI and the tailer
/// write it).
pub fn parse_time_ms(time: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(time).ok()?;
    let t = humantime::parse_rfc3339_weak(s.trim_end_matches('Z')).ok()?;
    let ms = t.duration_since(UNIX_EPOCH).ok()?.as_millis();
    i64::try_from(ms).ok()
}

/// Turns records into events: UTF-8, split, clamped; not yet sorted.
pub fn events_from_records<'a>(
    records: impl IntoIterator<Item = InputRecord<'a>>,
    now_ms: i64,
    limits: &Limits,
    stats: &mut BuildStats,
    out: &mut Vec<Event>,
) {
    let (oldest, newest) = limits.window(now_ms);
    let piece_max = limits
        .max_event_bytes
        .min(limits.max_request_bytes - EVENT_OVERHEAD_BYTES);
    for r in records {
        if r.message.is_empty() {
            stats.empty_skipped += 1;
            continue;
        }
        let mut ts = match parse_time_ms(r.time) {
            Some(t) => t,
            None => {
                stats.bad_time += 1;
                now_ms
            }
        };
        if ts < oldest {
            stats.clamped_old += 1;
            ts = oldest;
        } else if ts > newest {
            stats.clamped_future += 1;
            ts = newest;
        }
        let message = match std::str::from_utf8(r.message) {
            Ok(s) => std::borrow::Cow::Borrowed(s),
            Err(_) => {
                stats.invalid_utf8 += 1;
                String::from_utf8_lossy(r.message)
            }
        };
        let whole = message.len()
            + if r.continued {
                CONTINUED_MARKER.len()
            } else {
                0
            };
        if whole <= piece_max {
            let mut m = message.into_owned();
            if r.continued {
                m.push_str(CONTINUED_MARKER);
                stats.continued_events += 1;
            }
            out.push(Event {
                timestamp: ts,
                message: m,
            });
            continue;
        }
        // Longer than one event: cut at character boundaries; every piece but the last ends
        // with the marker (the last too when the tailer said the line goes on).
        stats.split_records += 1;
        let cut_max = piece_max - CONTINUED_MARKER.len();
        let mut rest: &str = &message;
        while !rest.is_empty() {
            let last_fits = rest.len()
                + if r.continued {
                    CONTINUED_MARKER.len()
                } else {
                    0
                }
                <= piece_max;
            if last_fits {
                let mut m = rest.to_owned();
                if r.continued {
                    m.push_str(CONTINUED_MARKER);
                    stats.continued_events += 1;
                }
                out.push(Event {
                    timestamp: ts,
                    message: m,
                });
                break;
            }
            let mut end = cut_max.min(rest.len());
            while !rest.is_char_boundary(end) {
                end -= 1;
            }
            let mut m = String::with_capacity(end + CONTINUED_MARKER.len());
            m.push_str(&rest[..end]);
            m.push_str(CONTINUED_MARKER);
            stats.continued_events += 1;
            out.push(Event {
                timestamp: ts,
                message: m,
            });
            rest = &rest[end..];
        }
    }
}

/// Sorts `events` by time (stable: equal times keep their order) and cuts them into requests
/// within `limits`.
pub fn requests_from_events(mut events: Vec<Event>, limits: &Limits) -> Vec<Request> {
    events.sort_by_key(|e| e.timestamp);
    let mut requests = Vec::new();
    let mut cur = Request::default();
    let mut first_ts = 0;
    for e in events {
        let size = e.message.len() + EVENT_OVERHEAD_BYTES;
        if !cur.events.is_empty()
            && (cur.events.len() >= limits.max_request_events
                || cur.bytes + size > limits.max_request_bytes
                || e.timestamp - first_ts > limits.max_span_ms)
        {
            requests.push(std::mem::take(&mut cur));
        }
        if cur.events.is_empty() {
            first_ts = e.timestamp;
        }
        cur.bytes += size;
        cur.events.push(e);
    }
    if !cur.events.is_empty() {
        requests.push(cur);
    }
    requests
}

/// Moves events that fell out of the window since the request was built (a long outage) back
/// to its edge, counting them in `stats`. Keeps the order and only shrinks the span.
pub fn reclamp(request: &mut Request, now_ms: i64, limits: &Limits, stats: &mut BuildStats) {
    let (oldest, newest) = limits.window(now_ms);
    for e in &mut request.events {
        if e.timestamp < oldest {
            e.timestamp = oldest;
            stats.clamped_old += 1;
        } else if e.timestamp > newest {
            e.timestamp = newest;
            stats.clamped_future += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const NOW: i64 = 1_780_000_000_000;

    fn rfc3339(ms: i64) -> String {
        humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms as u64)).to_string()
    }

    fn build(records: &[(String, Vec<u8>, bool)], limits: &Limits) -> (Vec<Request>, BuildStats) {
        let mut stats = BuildStats::default();
        let mut events = Vec::new();
        events_from_records(
            records.iter().map(|(t, m, c)| InputRecord {
                time: t.as_bytes(),
                message: m,
                continued: *c,
            }),
            NOW,
            limits,
            &mut stats,
            &mut events,
        );
        (requests_from_events(events, limits), stats)
    }

    fn check_limits(requests: &[Request], limits: &Limits) {
        let (oldest, newest) = limits.window(NOW);
        for r in requests {
            assert!(!r.events.is_empty());
            assert!(r.events.len() <= limits.max_request_events);
            let bytes: usize = r
                .events
                .iter()
                .map(|e| e.message.len() + EVENT_OVERHEAD_BYTES)
                .sum();
            assert_eq!(bytes, r.bytes);
            assert!(bytes <= limits.max_request_bytes, "{bytes}");
            for e in &r.events {
                assert!(!e.message.is_empty());
                assert!(e.message.len() <= limits.max_event_bytes);
                assert!(e.timestamp >= oldest && e.timestamp <= newest);
            }
            assert!(
                r.events
                    .windows(2)
                    .all(|w| w[0].timestamp <= w[1].timestamp)
            );
            let span = r.events.last().unwrap().timestamp - r.events[0].timestamp;
            assert!(span <= limits.max_span_ms);
        }
        assert!(
            requests
                .windows(2)
                .all(|w| w[0].events.last().unwrap().timestamp <= w[1].events[0].timestamp)
        );
    }

    /// Rejoins the pieces of split lines.
    fn lines(requests: &[Request]) -> Vec<String> {
        let mut out = Vec::new();
        let mut pending = String::new();
        for e in requests.iter().flat_map(|r| &r.events) {
            match e.message.strip_suffix(CONTINUED_MARKER) {
                Some(piece) => pending.push_str(piece),
                None => {
                    pending.push_str(&e.message);
                    out.push(std::mem::take(&mut pending));
                }
            }
        }
        assert!(pending.is_empty(), "a piece without its end");
        out
    }

    #[test]
    fn many_small_lines_split_at_ten_thousand_events() {
        let records: Vec<_> = (0..25_000)
            .map(|i| (rfc3339(NOW - 1000), format!("line {i}").into_bytes(), false))
            .collect();
        let (requests, _) = build(&records, &Limits::default());
        let sizes: Vec<usize> = requests.iter().map(|r| r.events.len()).collect();
        assert_eq!(sizes, [10_000, 10_000, 5_000]);
        let want: Vec<String> = (0..25_000).map(|i| format!("line {i}")).collect();
        assert_eq!(lines(&requests), want);
    }

    #[test]
    fn a_long_line_is_split_at_character_boundaries_and_marked() {
        // 2 MiB + some, with 3-byte characters so cuts can fall mid-character.
        let line = "€".repeat(700_000) + "end";
        let records = vec![(rfc3339(NOW), line.clone().into_bytes(), false)];
        let (requests, stats) = build(&records, &Limits::default());
        check_limits(&requests, &Limits::default());
        let events: Vec<&Event> = requests.iter().flat_map(|r| &r.events).collect();
        assert_eq!(events.len(), 3);
        assert!(events[0].message.ends_with(CONTINUED_MARKER));
        assert!(events[1].message.ends_with(CONTINUED_MARKER));
        assert!(events[2].message.ends_with("end"));
        assert_eq!(stats.split_records, 1);
        assert_eq!(stats.continued_events, 2);
        assert_eq!(lines(&requests), vec![line]);
    }

    #[test]
    fn invalid_utf8_empty_and_bad_times_are_handled_and_counted() {
        let records = vec![
            (rfc3339(NOW), b"ok \xff\xfe bytes".to_vec(), false),
            (rfc3339(NOW), Vec::new(), false),
            ("not a time".to_owned(), b"when?".to_vec(), false),
            (rfc3339(NOW - 30 * 24 * 3600 * 1000), b"old".to_vec(), false),
            (rfc3339(NOW + 5 * 3600 * 1000), b"future".to_vec(), false),
        ];
        let (requests, stats) = build(&records, &Limits::default());
        check_limits(&requests, &Limits::default());
        assert_eq!(stats.invalid_utf8, 1);
        assert_eq!(stats.empty_skipped, 1);
        assert_eq!(stats.bad_time, 1);
        assert_eq!(stats.clamped_old, 1);
        assert_eq!(stats.clamped_future, 1);
        let all = lines(&requests);
        assert_eq!(all, ["old", "ok \u{fffd}\u{fffd} bytes", "when?", "future"]);
    }

    #[test]
    fn a_short_retention_narrows_the_window() {
        let limits = Limits::with(MAX_EVENT_BYTES, Some(1));
        let records = vec![(rfc3339(NOW - 3 * 24 * 3600 * 1000), b"x".to_vec(), false)];
        let (requests, stats) = build(&records, &limits);
        assert_eq!(stats.clamped_old, 1);
        assert!(requests[0].events[0].timestamp > NOW - 24 * 3600 * 1000);
    }

    #[test]
    fn docker_times_parse() {
        assert_eq!(
            parse_time_ms(b"2024-05-01T12:34:56.123456789Z"),
            Some(1_714_566_896_123)
        );
        assert_eq!(
            parse_time_ms(b"2024-05-01T12:34:56Z"),
            Some(1_714_566_896_000)
        );
        assert_eq!(parse_time_ms(b"yesterday"), None);
    }

    #[test]
    fn reclamp_keeps_the_window_after_a_long_wait() {
        let limits = Limits::default();
        let records = vec![(rfc3339(NOW - MAX_AGE_MS + 3_600_000), b"x".to_vec(), false)];
        let (mut requests, _) = build(&records, &limits);
        let mut stats = BuildStats::default();
        reclamp(&mut requests[0], NOW + 2 * 3_600_000, &limits, &mut stats);
        assert_eq!(stats.clamped_old, 1);
        assert_eq!(
            requests[0].events[0].timestamp,
            limits.window(NOW + 2 * 3_600_000).0
        );
    }

    fn small_limits() -> Limits {
        Limits {
            max_request_bytes: 600,
            max_request_events: 7,
            max_event_bytes: 100,
            max_span_ms: 50_000,
            max_age_ms: MAX_AGE_MS,
        }
    }

    fn record_strategy() -> impl Strategy<Value = (i64, Vec<u8>, bool)> {
        (
            prop_oneof![
                8 => -200_000i64..200_000,
                1 => -40 * 24 * 3_600_000i64..-10 * 24 * 3_600_000,
                1 => 3_600_000i64..5 * 3_600_000,
            ],
            prop_oneof![
                4 => "[a-z€ ]{0,40}".prop_map(String::into_bytes),
                1 => "[a-zé€😀]{80,400}".prop_map(String::into_bytes),
                1 => proptest::collection::vec(any::<u8>(), 0..150),
            ],
            proptest::bool::weighted(0.1),
        )
    }

    proptest! {
        #[test]
        fn no_request_breaks_a_limit_and_order_is_kept(
            input in proptest::collection::vec(record_strategy(), 0..120),
            sorted in any::<bool>(),
        ) {
            let limits = small_limits();
            let mut input = input;
            if sorted {
                input.sort_by_key(|(t, _, _)| *t);
            }
            let records: Vec<(String, Vec<u8>, bool)> = input
                .iter()
                .map(|(t, m, c)| (rfc3339(NOW + t), m.clone(), *c))
                .collect();
            let (requests, stats) = build(&records, &limits);
            check_limits(&requests, &limits);
            // Every non-empty record comes out, whole once its pieces are joined, in order of
            // (clamped) time and, for equal times, in input order.
            let (oldest, newest) = limits.window(NOW);
            let mut want: Vec<(i64, String)> = input
                .iter()
                .filter(|(_, m, _)| !m.is_empty())
                .map(|(t, m, c)| {
                    let ts = (NOW + t).clamp(oldest, newest);
                    let mut s = String::from_utf8_lossy(m).into_owned();
                    if *c { s.push_str(CONTINUED_MARKER); }
                    (ts, s)
                })
                .collect();
            want.sort_by_key(|(t, _)| *t);
            let mut got: Vec<String> = Vec::new();
            let mut pending = String::new();
            for e in requests.iter().flat_map(|r| &r.events) {
                pending.push_str(&e.message);
                // A piece cut here ends with the marker and the next piece follows at once.
                if !e.message.ends_with(CONTINUED_MARKER) || want.get(got.len()).is_some_and(|(_, w)| *w == pending) {
                    got.push(std::mem::take(&mut pending));
                } else {
                    pending.truncate(pending.len() - CONTINUED_MARKER.len());
                }
            }
            let want: Vec<String> = want.into_iter().map(|(_, s)| s).collect();
            prop_assert_eq!(got, want);
            prop_assert_eq!(stats.empty_skipped as usize, input.iter().filter(|(_, m, _)| m.is_empty()).count());
        }
    }
}
