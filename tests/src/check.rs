//! Polling with clear timeouts, and the delivery checks every scenario ends with.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// How often [`wait_until`] looks again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// One look of a [`wait_until`] probe.
#[derive(Debug)]
pub enum Check<T> {
    /// The condition holds; here is what it found.
    Done(T),
    /// Not yet; this is what was seen (it ends up in the timeout message).
    Waiting(String),
}

/// Calls `probe` every [`POLL_INTERVAL`] until it says [`Check::Done`].
///
/// # Errors
/// The probe's own error at once, or after `timeout` one that names `expected` and what the
/// last look saw.
pub fn wait_until<T>(
    timeout: Duration,
    expected: &str,
    mut probe: impl FnMut() -> Result<Check<T>>,
) -> Result<T> {
    let started = Instant::now();
    loop {
        match probe()? {
            Check::Done(found) => return Ok(found),
            Check::Waiting(seen) if started.elapsed() >= timeout => bail!(
                "timed out after {:.1} s waiting for {expected}; last seen: {seen}",
                started.elapsed().as_secs_f64()
            ),
            Check::Waiting(_) => thread::sleep(POLL_INTERVAL),
        }
    }
}

/// Checks that `seen` is exactly `expected`: every line once, in order.
///
/// # Errors
/// A summary of the difference: counts, missing, duplicated and unexpected lines, and the
/// first position where the two differ.
pub fn check_exactly_once(seen: &[String], expected: &[String]) -> Result<()> {
    if seen == expected {
        return Ok(());
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for line in seen {
        *counts.entry(line.as_str()).or_default() += 1;
    }
    let wanted: HashSet<&str> = expected.iter().map(String::as_str).collect();
    let missing: Vec<&String> = expected
        .iter()
        .filter(|line| !counts.contains_key(line.as_str()))
        .collect();
    let mut duplicated: Vec<&String> = Vec::new();
    let mut unexpected: Vec<&String> = Vec::new();
    let mut reported = HashSet::new();
    for line in seen {
        if !wanted.contains(line.as_str()) {
            unexpected.push(line);
        } else if counts[line.as_str()] > 1 && reported.insert(line.as_str()) {
            duplicated.push(line);
        }
    }
    let mut message = format!(
        "expected {} lines exactly once and in order, saw {}",
        expected.len(),
        seen.len()
    );
    list(&mut message, "missing", &missing);
    list(&mut message, "duplicated", &duplicated);
    list(&mut message, "unexpected", &unexpected);
    if let Some(at) = (0..seen.len().min(expected.len())).find(|&i| seen[i] != expected[i]) {
        let _ = write!(
            message,
            "; first difference at line {at}: saw {}, expected {}",
            preview(&seen[at]),
            preview(&expected[at])
        );
    }
    if missing.is_empty() && duplicated.is_empty() && unexpected.is_empty() {
        message.push_str(" (same lines, different order)");
    }
    bail!(message)
}

/// Checks at-least-once delivery across restarts: every expected line is in `seen`, in order,
/// and a line is seen again only as part of a replay that goes back at most `max_replay` lines
/// (a restart re-sending what was delivered but not yet checkpointed).
///
/// Formally `seen` is a concatenation of ascending runs of `expected`; the first starts at the
/// first line, each later run starts at most one past the furthest line seen so far (no gap)
/// and at most `max_replay` lines before it, and the furthest line seen at the end is the last.
///
/// # Errors
/// The first violation: an unexpected line, a gap, a replay that goes back too far, or lines
/// missing at the end.
pub fn check_at_least_once_in_order(
    seen: &[String],
    expected: &[String],
    max_replay: usize,
) -> Result<()> {
    let mut index = HashMap::with_capacity(expected.len());
    for (i, line) in expected.iter().enumerate() {
        if index.insert(line.as_str(), i).is_some() {
            bail!("bug in the test: {} is expected twice", preview(line));
        }
    }
    let mut next = 0; // one past the furthest expected line seen so far
    let mut previous: Option<usize> = None;
    let mut replayed = 0usize;
    for (at, line) in seen.iter().enumerate() {
        let Some(&i) = index.get(line.as_str()) else {
            bail!("line {at} is unexpected: {}", preview(line));
        };
        let continues_run = previous.map_or(i == 0, |p| i == p + 1);
        if !continues_run {
            if i > next {
                bail!(
                    "lines {next}..{i} are missing: line {at} is {} but the furthest line \
                     before it was {}",
                    preview(line),
                    if next == 0 {
                        "none".into()
                    } else {
                        preview(&expected[next - 1])
                    }
                );
            }
            if next - i > max_replay {
                bail!(
                    "line {at} ({}) goes back {} lines, more than the {max_replay} a replay \
                     of the last unacknowledged batch may",
                    preview(line),
                    next - i
                );
            }
        }
        if i < next {
            replayed += 1;
        } else {
            next = i + 1;
        }
        previous = Some(i);
    }
    if next != expected.len() {
        bail!(
            "{} of {} lines missing at the end, from {} ({} lines seen, {replayed} replayed)",
            expected.len() - next,
            expected.len(),
            preview(&expected[next]),
            seen.len()
        );
    }
    Ok(())
}

/// A short, printable form of a line for messages (long lines are cut, with their length).
pub fn preview(line: &str) -> String {
    const MAX: usize = 60;
    if line.len() <= MAX {
        return format!("{line:?}");
    }
    let mut cut = 40;
    while !line.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{:?}... ({} bytes)", &line[..cut], line.len())
}

/// "n lines, last: ..." for waiting messages.
pub fn describe(seen: &[String]) -> String {
    match seen.last() {
        None => "no lines".into(),
        Some(last) => format!("{} lines, last {}", seen.len(), preview(last)),
    }
}

/// Appends "; N <what>: a, b, c ..." when `lines` is not empty.
fn list(message: &mut String, what: &str, lines: &[&String]) {
    if lines.is_empty() {
        return;
    }
    let shown: Vec<String> = lines.iter().take(5).map(|line| preview(line)).collect();
    let more = if lines.len() > 5 { ", ..." } else { "" };
    let _ = write!(
        message,
        "; {} {what}: {}{more}",
        lines.len(),
        shown.join(", ")
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::numbered;

    fn lines(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn exactly_once_accepts_only_the_exact_sequence() {
        let expected = numbered("l", 5);
        check_exactly_once(&expected, &expected).unwrap();
        let cases: &[(&[&str], &str)] = &[
            (&["l 1", "l 2", "l 3", "l 4"], "1 missing: \"l 5\""),
            (
                &["l 1", "l 2", "l 2", "l 3", "l 4", "l 5"],
                "1 duplicated: \"l 2\"",
            ),
            (
                &["l 1", "l 2", "x", "l 3", "l 4", "l 5"],
                "1 unexpected: \"x\"",
            ),
            (&["l 2", "l 1", "l 3", "l 4", "l 5"], "different order"),
        ];
        for (seen, says) in cases {
            let err = check_exactly_once(&lines(seen), &expected)
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{seen:?}: {err}");
        }
    }

    #[test]
    fn at_least_once_allows_bounded_replays_only() {
        let expected = numbered("l", 6);
        let ok: &[&[&str]] = &[
            &["l 1", "l 2", "l 3", "l 4", "l 5", "l 6"],
            &["l 1", "l 2", "l 3", "l 2", "l 3", "l 4", "l 5", "l 6"],
            &[
                "l 1", "l 2", "l 3", "l 4", "l 3", "l 4", "l 5", "l 6", "l 5", "l 6",
            ],
        ];
        for seen in ok {
            check_at_least_once_in_order(&lines(seen), &expected, 2).unwrap();
        }
        let bad: &[(&[&str], &str)] = &[
            (&["l 1", "l 2", "l 4", "l 5", "l 6"], "missing"),
            (&["l 2", "l 3", "l 4", "l 5", "l 6"], "missing"),
            (
                &[
                    "l 1", "l 2", "l 3", "l 4", "l 1", "l 2", "l 3", "l 4", "l 5", "l 6",
                ],
                "goes back 4",
            ),
            (&["l 1", "l 2", "l 3", "l 4", "l 5"], "missing at the end"),
            (
                &["l 1", "l 2", "l 3", "nope", "l 4", "l 5", "l 6"],
                "unexpected",
            ),
            (&["l 1", "l 3", "l 2", "l 4", "l 5", "l 6"], "missing"),
        ];
        for (seen, says) in bad {
            let err = check_at_least_once_in_order(&lines(seen), &expected, 3)
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{seen:?}: {err}");
        }
    }

    #[test]
    fn wait_until_reports_what_it_saw() {
        let err = wait_until(Duration::from_millis(250), "the moon", || {
            Ok(Check::<()>::Waiting("only stars".into()))
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("the moon") && err.contains("only stars"),
            "{err}"
        );
        let mut calls = 0;
        let found = wait_until(Duration::from_secs(5), "three calls", || {
            calls += 1;
            Ok(if calls == 3 {
                Check::Done(calls)
            } else {
                Check::Waiting(calls.to_string())
            })
        })
        .unwrap();
        assert_eq!(found, 3);
    }
}
