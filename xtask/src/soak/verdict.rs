//! The samples of a soak run, their table, and the growth verdict.
//!
//! The verdict compares the median of the last quarter of the samples with the median of the
//! second quarter (the first quarter is warm-up: allocator arenas, SQLite's page cache and
//! the first rotations settle there). Medians, so one sample taken during a burst does not
//! decide.
//!
//! Open descriptors are compared without those of Docker's json-file logs: the collector's
//! rotation guard keeps up to `max-file` descriptors of each watched file chain open, so
//! their count follows the number of live containers (ours and whatever else runs on the
//! machine's Docker) rather than time. Those are judged per container instead: the median,
//! over the last quarter, of the most any one container had open must not pass
//! [`MAX_LOG_FDS`].

use std::fmt::Write as _;
use std::time::Duration;

/// The `max-file` of the soak's containers (`--log-opt max-file=3`): descriptors the
/// rotation guard may hold per container.
pub(crate) const MAX_FILE: u64 = 3;

/// Descriptors one container's json-file logs may hold: the rotation guard's `max-file`
/// (the live file and the rotated ones Docker keeps, `-json.log`, `.1`, `.2`) plus the
/// tailer's own on the live file. Seen in the first soak runs: 4 per rotating container.
pub(crate) const MAX_LOG_FDS: u64 = MAX_FILE + 1;

/// RSS growth that fails the run when both limits are passed: more than this fraction of the
/// second quarter's median...
pub(crate) const RSS_GROWTH_RATIO: f64 = 0.20;

/// ...and more than this many bytes (a small process's noise is not a leak).
pub(crate) const RSS_GROWTH_BYTES: u64 = 8 << 20;

/// Growth of the open descriptors other than Docker's logs that fails the run.
pub(crate) const FD_GROWTH: i64 = 16;

/// One reading of the collector, taken every `--sample-seconds`.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Sample {
    /// Since the load started.
    pub(crate) at: Duration,
    /// `VmRSS`, in bytes.
    pub(crate) rss: u64,
    /// Entries of `/proc/<pid>/fd`.
    pub(crate) fds: u64,
    /// Those open on a container's json-file log (current, rotated or deleted).
    pub(crate) log_fds: u64,
    /// The most of them any one container had.
    pub(crate) max_log_fds: u64,
    /// `Threads`.
    pub(crate) threads: u64,
    /// Containers on the host, running or exited (`docker ps -a`), whatever started them:
    /// the collector watches them all.
    pub(crate) containers: u64,
    /// Bytes under the data directory (state database and local sink).
    pub(crate) data_bytes: u64,
    /// Lines of the soak's containers delivered so far.
    pub(crate) lines: u64,
    /// Graphite samples sent so far.
    pub(crate) graphite: u64,
}

impl Sample {
    /// Open descriptors other than Docker's logs.
    pub(crate) fn other_fds(&self) -> u64 {
        self.fds.saturating_sub(self.log_fds)
    }

    /// The table header, in Markdown.
    pub(crate) fn header() -> &'static str {
        "| time | RSS MiB | fds | on Docker logs (most per container) | other fds | threads | containers | data dir MiB | lines delivered | Graphite sent |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    }

    /// This sample as a table row.
    pub(crate) fn row(&self) -> String {
        let secs = self.at.as_secs();
        format!(
            "| {}:{:02} | {:.1} | {} | {} ({}) | {} | {} | {} | {:.1} | {} | {} |",
            secs / 60,
            secs % 60,
            mib(self.rss),
            self.fds,
            self.log_fds,
            self.max_log_fds,
            self.other_fds(),
            self.threads,
            self.containers,
            mib(self.data_bytes),
            self.lines,
            self.graphite
        )
    }
}

/// The table of `samples`, at most about `rows` rows evenly spaced (the first and the last
/// always in), for the summary.
pub(crate) fn table(samples: &[Sample], rows: usize) -> String {
    let mut out = String::from(Sample::header());
    let step = samples.len().div_ceil(rows.max(1)).max(1);
    for (i, s) in samples.iter().enumerate() {
        if i % step == 0 || i + 1 == samples.len() {
            let _ = write!(out, "\n{}", s.row());
        }
    }
    out
}

/// A quantity at the second quarter and at the last quarter of the run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Growth {
    /// Median of the second quarter.
    pub(crate) before: f64,
    /// Median of the last quarter.
    pub(crate) after: f64,
}

/// What the samples say.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Verdict {
    /// RSS in bytes (`None` with too few samples).
    pub(crate) rss: Option<Growth>,
    /// Open descriptors other than Docker's logs.
    pub(crate) fds: Option<Growth>,
    /// The most descriptors one container's logs had, last quarter's median.
    pub(crate) max_log_fds: Option<f64>,
    /// Why the run fails; empty when it passes.
    pub(crate) failures: Vec<String>,
}

impl Verdict {
    /// Whether nothing grew past its limit.
    pub(crate) fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The verdict in a few lines, for the terminal and the docs.
    pub(crate) fn describe(&self) -> String {
        let mut out = String::new();
        if let Some(g) = self.rss {
            let _ = writeln!(
                out,
                "RSS: median {:.1} MiB in the second quarter, {:.1} MiB in the last ({:+.1} MiB, {:+.1}%; fails above +{:.0}% and +{} MiB)",
                g.before / MIB,
                g.after / MIB,
                (g.after - g.before) / MIB,
                percent(g),
                RSS_GROWTH_RATIO * 100.0,
                RSS_GROWTH_BYTES >> 20
            );
        }
        if let Some(g) = self.fds {
            let _ = writeln!(
                out,
                "fds other than Docker logs: median {:.1} in the second quarter, {:.1} in the last ({:+.1}; fails above +{FD_GROWTH})",
                g.before,
                g.after,
                g.after - g.before
            );
        }
        if let Some(m) = self.max_log_fds {
            let _ = writeln!(
                out,
                "fds on one container's Docker logs: at most {m:.1} (last quarter's median; fails above max-file + 1 = {MAX_LOG_FDS})"
            );
        }
        if self.passed() {
            out.push_str("verdict: no growth");
        } else {
            let _ = write!(out, "verdict: FAILED: {}", self.failures.join("; "));
        }
        out
    }
}

/// Judges `samples` (in time order) against the limits above.
pub(crate) fn judge(samples: &[Sample]) -> Verdict {
    let n = samples.len();
    if n < 4 {
        return Verdict {
            rss: None,
            fds: None,
            max_log_fds: None,
            failures: vec![format!(
                "{n} samples are too few to compare quarters (4 at least): run longer or sample more often"
            )],
        };
    }
    let second = &samples[n / 4..n / 2];
    let last = &samples[n - n / 4..];
    let growth = |f: fn(&Sample) -> f64| Growth {
        before: median(second.iter().map(f)),
        after: median(last.iter().map(f)),
    };
    let rss = growth(|s| s.rss as f64);
    let fds = growth(|s| s.other_fds() as f64);
    let max_log_fds = median(last.iter().map(|s| s.max_log_fds as f64));
    let mut failures = Vec::new();
    let rss_grew = rss.after - rss.before;
    if rss_grew > rss.before * RSS_GROWTH_RATIO && rss_grew > RSS_GROWTH_BYTES as f64 {
        failures.push(format!(
            "RSS grew by {:.1} MiB ({:+.1}%), more than {:.0}% and {} MiB",
            rss_grew / MIB,
            percent(rss),
            RSS_GROWTH_RATIO * 100.0,
            RSS_GROWTH_BYTES >> 20
        ));
    }
    if fds.after - fds.before > FD_GROWTH as f64 {
        failures.push(format!(
            "open descriptors other than Docker logs grew by {:.1}, more than {FD_GROWTH}",
            fds.after - fds.before
        ));
    }
    if max_log_fds > MAX_LOG_FDS as f64 {
        failures.push(format!(
            "one container's Docker logs held {max_log_fds:.1} descriptors (median), more than max-file + 1 = {MAX_LOG_FDS}"
        ));
    }
    Verdict {
        rss: Some(rss),
        fds: Some(fds),
        max_log_fds: Some(max_log_fds),
        failures,
    }
}

/// Bytes in a MiB.
const MIB: f64 = 1_048_576.0;

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB
}

fn percent(g: Growth) -> f64 {
    (g.after - g.before) / g.before.max(1.0) * 100.0
}

/// The median of `values` (the mean of the middle two for an even count); 0 for none.
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 40 samples, 10 s apart, whose RSS (MiB), fds and containers come from `f(i)`; each
    /// container has two descriptors on its Docker logs.
    fn series(f: impl Fn(u64) -> (u64, u64, u64)) -> Vec<Sample> {
        (0..40)
            .map(|i| {
                let (rss_mib, fds, containers) = f(i);
                Sample {
                    at: Duration::from_secs(i * 10),
                    rss: rss_mib << 20,
                    fds,
                    log_fds: 2 * containers,
                    max_log_fds: 2,
                    threads: 8,
                    containers,
                    ..Sample::default()
                }
            })
            .collect()
    }

    #[test]
    fn growth_is_detected_only_past_the_limits() {
        let cases: Vec<(&str, Vec<Sample>, &[&str])> = vec![
            (
                "flat after warm-up",
                series(|i| (if i < 5 { 10 + 4 * i } else { 30 }, 40, 5)),
                &[],
            ),
            (
                "noisy but flat",
                series(|i| (30 + (i * 7) % 5, 40 + (i * 3) % 7, 5)),
                &[],
            ),
            // +10 MiB on 100 MiB is 10%: under the ratio.
            (
                "small relative growth",
                series(|i| (100 + i / 4, 40, 5)),
                &[],
            ),
            // +8 MiB on 12 MiB is more than 20%, but within the absolute allowance.
            (
                "small absolute growth",
                series(|i| (12 + i / 5, 40, 5)),
                &[],
            ),
            ("RSS leak", series(|i| (30 + i, 40, 5)), &["RSS grew"]),
            (
                "descriptors follow the containers",
                series(|i| (30, 10 + 2 * (i / 4), i / 4)),
                &[],
            ),
            (
                "containers go away",
                series(|i| (30, 10 + 2 * (40 - i), 40 - i)),
                &[],
            ),
            (
                "descriptor leak",
                series(|i| (30, 40 + i, 5)),
                &["descriptors"],
            ),
            (
                "both leak",
                series(|i| (30 + 2 * i, 40 + 2 * i, 5)),
                &["RSS grew", "descriptors"],
            ),
            (
                "the rotation guard holds too many",
                series(|_| (30, 40, 5))
                    .into_iter()
                    .enumerate()
                    .map(|(i, s)| Sample {
                        max_log_fds: if i < 20 { 4 } else { 5 },
                        ..s
                    })
                    .collect(),
                &["max-file + 1"],
            ),
            (
                "too few samples",
                series(|_| (30, 40, 5))[..3].to_vec(),
                &["too few"],
            ),
        ];
        for (name, samples, expected) in cases {
            let verdict = judge(&samples);
            assert_eq!(
                verdict.failures.len(),
                expected.len(),
                "{name}: {:?}",
                verdict.failures
            );
            for (failure, want) in verdict.failures.iter().zip(expected) {
                assert!(failure.contains(want), "{name}: {failure:?} lacks {want:?}");
            }
            assert_eq!(verdict.passed(), expected.is_empty(), "{name}");
            assert!(verdict.describe().contains("verdict:"), "{name}");
        }
    }

    #[test]
    fn quarters_are_compared_by_median() {
        // A single spike in the last quarter does not move its median.
        let mut samples = series(|_| (30, 40, 5));
        samples[35].rss = 500 << 20;
        let verdict = judge(&samples);
        assert!(verdict.passed(), "{:?}", verdict.failures);
        let rss = verdict.rss.unwrap();
        assert_eq!((rss.before, rss.after), (30.0 * MIB, 30.0 * MIB));
        assert_eq!(median([3.0, 1.0, 2.0, 10.0].into_iter()), 2.5);
        assert_eq!(median(std::iter::empty()), 0.0);
    }

    #[test]
    fn the_summary_table_keeps_the_first_and_last_rows() {
        let samples = series(|i| (30, 40 + i, 5));
        let text = table(&samples, 12);
        let rows = text.lines().count() - 2;
        assert!((10..=14).contains(&rows), "{text}");
        assert!(
            text.contains("| 0:00 | 30.0 | 40 | 10 (2) | 30 |"),
            "{text}"
        );
        assert!(
            text.ends_with("| 6:30 | 30.0 | 79 | 10 (2) | 69 | 8 | 5 | 0.0 | 0 | 0 |"),
            "{text}"
        );
    }
}
