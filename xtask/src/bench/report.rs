//! The results of a benchmark run and the table they print as (Markdown, so it pastes into
//! `docs/benchmarks.md`).

use std::fmt::Write as _;
use std::fs;
use std::time::Duration;

use super::Plan;
use super::generate::Workload;
use super::measure::Progress;
use super::scenarios::Sink;

/// One measured run.
#[derive(Clone, Debug)]
pub(crate) struct Row {
    /// What was read (`1 log, 2000 MB`).
    pub(crate) scenario: String,
    /// `collector`, `cat`, `wc -l`, `fluent-bit`, `vector`.
    pub(crate) tool: String,
    /// The sink or output (`discard`, `file`, `/dev/null`).
    pub(crate) sink: String,
    /// From start to the last line delivered.
    pub(crate) wall: Duration,
    /// User + system CPU seconds.
    pub(crate) cpu_seconds: f64,
    /// Bytes of input.
    pub(crate) input_bytes: u64,
    /// Lines (records) of input.
    pub(crate) lines: u64,
    /// Lines the tool delivered (or counted), when it says.
    pub(crate) delivered: Option<u64>,
    /// Peak RSS in bytes, when measured.
    pub(crate) peak_rss: Option<u64>,
    /// The delivered-count check: `Err` says what was lost.
    pub(crate) check: Result<(), String>,
}

impl Row {
    /// A run of our collector.
    pub(crate) fn collector(
        scenario: &str,
        sink: Sink,
        workload: &Workload,
        progress: &Progress,
        wall: Duration,
        check: Result<(), String>,
    ) -> Self {
        Self {
            scenario: scenario.to_owned(),
            tool: "collector".to_owned(),
            sink: sink.name().to_owned(),
            wall,
            cpu_seconds: progress.cpu,
            input_bytes: workload.expected.input_bytes,
            lines: workload.expected.records,
            delivered: Some(progress.count),
            peak_rss: Some(progress.peak_rss),
            check,
        }
    }

    /// CPU seconds per GB (10^9 bytes) of input.
    pub(crate) fn cpu_per_gb(&self) -> f64 {
        self.cpu_seconds / (self.input_bytes as f64 / 1e9)
    }
}

/// The idle scenario's result.
#[derive(Clone, Debug)]
pub(crate) struct IdleResult {
    /// Quiet containers tailed.
    pub(crate) containers: usize,
    /// Length of the measuring window.
    pub(crate) seconds: f64,
    /// CPU seconds spent in it.
    pub(crate) cpu_seconds: f64,
    /// Peak RSS at its end.
    pub(crate) peak_rss: u64,
    /// Whether their lines were all delivered first.
    pub(crate) check: Result<(), String>,
}

/// The discovery scenario's result.
#[derive(Clone, Debug)]
pub(crate) struct DiscoveryResult {
    /// The discovery sources used ([`super::discovery::MODES`]).
    pub(crate) mode: &'static str,
    /// Whether eBPF was one of them.
    pub(crate) ebpf: bool,
    /// Containers started.
    pub(crate) runs: usize,
    /// Milliseconds from the time Docker stamped on the container's line (when its output
    /// reached dockerd) to the line appearing in the local sink.
    pub(crate) from_line_ms: Vec<f64>,
    /// Milliseconds from `docker run -d` returning to the line appearing in the sink
    /// (negative when it was there before `docker run` returned).
    pub(crate) from_run_ms: Vec<f64>,
    /// Problems: containers whose line never arrived.
    pub(crate) check: Result<(), String>,
}

/// Everything one `cargo xtask bench` measured.
#[derive(Clone, Debug, Default)]
pub(crate) struct Report {
    /// The machine, for the record.
    pub(crate) machine: String,
    /// Throughput runs.
    pub(crate) rows: Vec<Row>,
    /// The idle scenario.
    pub(crate) idle: Option<IdleResult>,
    /// The discovery scenario, one result per mode.
    pub(crate) discovery: Vec<DiscoveryResult>,
    /// Things said about the run (tools not installed, ...).
    pub(crate) notes: Vec<String>,
}

/// A target of the issue, as measured.
struct Target {
    /// What it is.
    what: &'static str,
    /// The limit, as text.
    limit: &'static str,
    /// The measured value, as text.
    measured: String,
    /// Whether it holds.
    met: bool,
}

impl Report {
    /// True when every run delivered every line.
    pub(crate) fn all_delivered(&self) -> bool {
        self.rows.iter().all(|r| r.check.is_ok())
            && self.idle.as_ref().is_none_or(|i| i.check.is_ok())
            && self.discovery.iter().all(|d| d.check.is_ok())
    }

    /// Prints the report.
    pub(crate) fn print(&self, plan: &Plan) {
        println!("{}", self.render(plan));
    }

    /// The report as Markdown.
    pub(crate) fn render(&self, plan: &Plan) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "Machine: {}", self.machine);
        let _ = writeln!(s, "Collector: {}", plan.collector.display());
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "| scenario | tool | sink | wall s | CPU s | CPU-s/GB | × cat | MB/s | lines/s | peak RSS MB | delivered | check |"
        );
        let _ = writeln!(s, "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|");
        for r in &self.rows {
            let cat = self
                .rows
                .iter()
                .find(|c| c.scenario == r.scenario && c.tool == "cat")
                .map(Row::cpu_per_gb)
                .filter(|c| *c > 0.0);
            let wall = r.wall.as_secs_f64().max(1e-9);
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {} | {:.0} | {:.0} | {} | {} | {} |",
                r.scenario,
                r.tool,
                r.sink,
                wall,
                r.cpu_seconds,
                r.cpu_per_gb(),
                cat.map_or("-".to_owned(), |c| format!("{:.1}", r.cpu_per_gb() / c)),
                r.input_bytes as f64 / 1e6 / wall,
                r.lines as f64 / wall,
                r.peak_rss
                    .map_or("-".to_owned(), |b| format!("{:.1}", b as f64 / 1e6)),
                r.delivered.map_or("-".to_owned(), |d| d.to_string()),
                match &r.check {
                    Ok(()) => "ok".to_owned(),
                    Err(e) => format!("FAIL: {e}"),
                },
            );
        }
        if let Some(i) = &self.idle {
            let _ = writeln!(s);
            let _ = writeln!(
                s,
                "Idle: {} quiet containers, {:.1} CPU-ms over {:.0} s = {:.3}% of one core, peak RSS {:.1} MB ({})",
                i.containers,
                i.cpu_seconds * 1e3,
                i.seconds,
                idle_percent(i),
                i.peak_rss as f64 / 1e6,
                i.check
                    .as_ref()
                    .map_or_else(|e| format!("FAIL: {e}"), |()| "lines delivered".to_owned()),
            );
        }
        if !self.discovery.is_empty() {
            let _ = writeln!(s);
        }
        for d in &self.discovery {
            let _ = writeln!(
                s,
                "Discovery, {}: {} containers, container's line time -> line in the local sink: p50 {} ms, p99 {} ms, max {} ms; `docker run -d` returned -> line in sink: p50 {} ms, p99 {} ms ({})",
                d.mode,
                d.runs,
                fmt_ms(percentile(&d.from_line_ms, 50.0)),
                fmt_ms(percentile(&d.from_line_ms, 99.0)),
                fmt_ms(percentile(&d.from_line_ms, 100.0)),
                fmt_ms(percentile(&d.from_run_ms, 50.0)),
                fmt_ms(percentile(&d.from_run_ms, 99.0)),
                d.check.as_ref().map_or_else(
                    |e| format!("FAIL: {e}"),
                    |()| "every line arrived".to_owned()
                ),
            );
        }
        let targets = self.targets();
        if !targets.is_empty() {
            let _ = writeln!(s);
            let _ = writeln!(s, "| target | limit | measured | met |");
            let _ = writeln!(s, "|---|---|---|---|");
            for t in targets {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} |",
                    t.what,
                    t.limit,
                    t.measured,
                    if t.met { "yes" } else { "NO" }
                );
            }
        }
        for note in &self.notes {
            let _ = writeln!(s);
            let _ = writeln!(s, "Note: {note}");
        }
        s
    }

    /// The targets that this run measured.
    fn targets(&self) -> Vec<Target> {
        let mut targets = Vec::new();
        let ours = |scenario_prefix: &str, sink: &str| {
            self.rows.iter().find(|r| {
                r.tool == "collector" && r.sink == sink && r.scenario.starts_with(scenario_prefix)
            })
        };
        if let Some(r) = ours("1 log", "discard") {
            targets.push(Target {
                what: "large log to discard",
                limit: "≤ 1.0 CPU-s/GB",
                measured: format!("{:.2} CPU-s/GB", r.cpu_per_gb()),
                met: r.cpu_per_gb() <= 1.0,
            });
        }
        if let Some(r) = ours("1 log", "file") {
            targets.push(Target {
                what: "large log to the local sink",
                limit: "≤ 1.5 CPU-s/GB",
                measured: format!("{:.2} CPU-s/GB", r.cpu_per_gb()),
                met: r.cpu_per_gb() <= 1.5,
            });
        }
        let big_rss = self
            .rows
            .iter()
            .filter(|r| r.tool == "collector" && r.scenario.starts_with("1 log"))
            .filter_map(|r| r.peak_rss)
            .max();
        if let Some(rss) = big_rss {
            targets.push(Target {
                what: "peak RSS, large log",
                limit: "< 30 MB",
                measured: format!("{:.1} MB", rss as f64 / 1e6),
                met: rss < 30_000_000,
            });
        }
        let many = self
            .rows
            .iter()
            .filter(|r| r.tool == "collector" && r.scenario.contains("containers,"))
            .filter_map(|r| r.peak_rss.map(|rss| (rss, r.scenario.clone())))
            .max();
        if let Some((rss, scenario)) = many {
            targets.push(Target {
                what: "peak RSS, many containers",
                limit: "< 64 MB (1,000 containers)",
                measured: format!("{:.1} MB ({scenario})", rss as f64 / 1e6),
                met: rss < 64_000_000,
            });
        }
        // The default mode (every source but eBPF) and the eBPF mode have targets; the
        // single-source modes are for comparison.
        for (ebpf, what, limit, bound) in [
            (
                false,
                "discovery latency, p99, without eBPF",
                "< 250 ms",
                250.0,
            ),
            (true, "discovery latency, p99, with eBPF", "< 50 ms", 50.0),
        ] {
            if let Some(d) = self.discovery.iter().find(|d| d.ebpf == ebpf)
                && let Some(p99) = percentile(&d.from_line_ms, 99.0)
            {
                targets.push(Target {
                    what,
                    limit,
                    measured: format!("{p99:.0} ms ({})", d.mode),
                    met: p99 < bound,
                });
            }
        }
        if let Some(i) = &self.idle {
            targets.push(Target {
                what: "idle cost",
                limit: "< 1% of one core (100 containers)",
                measured: format!("{:.3}%", idle_percent(i)),
                met: idle_percent(i) < 1.0,
            });
        }
        targets
    }
}

/// CPU share of one core in the idle window, in percent.
fn idle_percent(i: &IdleResult) -> f64 {
    i.cpu_seconds / i.seconds.max(1e-9) * 100.0
}

/// The `p`-th percentile (nearest rank) of `values`.
pub(crate) fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Milliseconds for the report.
fn fmt_ms(v: Option<f64>) -> String {
    v.map_or("-".to_owned(), |v| format!("{v:.0}"))
}

/// The machine: OS, kernel, CPU, cores, memory.
pub(crate) fn machine() -> String {
    let os = fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| "unknown OS".to_owned());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_owned())
        .unwrap_or_default();
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let mem_gib = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    format!("{os}, Linux {kernel}, {cpu}, {cores} cores, {mem_gib:.0} GiB")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 50.0), Some(2.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn a_lost_line_fails_the_report() {
        let row = Row {
            scenario: "s".into(),
            tool: "collector".into(),
            sink: "discard".into(),
            wall: Duration::from_secs(1),
            cpu_seconds: 1.0,
            input_bytes: 1_000_000_000,
            lines: 10,
            delivered: Some(9),
            peak_rss: Some(1),
            check: super::super::measure::check_delivered("s", 10, 9),
        };
        let mut report = Report {
            rows: vec![row],
            ..Report::default()
        };
        assert!(!report.all_delivered());
        report.rows[0].check = Ok(());
        assert!(report.all_delivered());
        assert_eq!(report.rows[0].cpu_per_gb(), 1.0);
    }
}
