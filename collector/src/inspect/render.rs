//! `inspect` output: aligned text for people (colour only when asked or on a terminal), and
//! the JSON of [`Inspection`] / [`Overview`] for scripts.

use std::fmt::Write as _;
use std::time::SystemTime;

use super::{AnsweredBy, ContainerView, Inspection, Overview, SourceView, TaskView};

/// ANSI styles, or nothing.
#[derive(Clone, Copy, Debug)]
struct Style {
    color: bool,
}

impl Style {
    fn paint(self, code: &str, text: &str) -> String {
        if self.color && !text.is_empty() {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
    fn bold(self, t: &str) -> String {
        self.paint("1", t)
    }
    fn dim(self, t: &str) -> String {
        self.paint("2", t)
    }
    fn green(self, t: &str) -> String {
        self.paint("32", t)
    }
    fn yellow(self, t: &str) -> String {
        self.paint("33", t)
    }
    fn red(self, t: &str) -> String {
        self.paint("31", t)
    }
    /// A state word in its colour: running green, a failed exit red, removed dim.
    fn state(self, state: &str, failed: bool) -> String {
        match state {
            "running" => self.green(state),
            "removed" => self.dim(state),
            _ if failed => self.red(state),
            "exited" => self.yellow(state),
            _ => state.to_owned(),
        }
    }
}

/// Key/value lines with the keys padded to one width, per section.
struct Section {
    title: String,
    rows: Vec<(String, String)>,
}

impl Section {
    fn new(title: String) -> Self {
        Self {
            title,
            rows: Vec::new(),
        }
    }
    fn row(&mut self, key: &str, value: impl Into<String>) {
        self.rows.push((key.to_owned(), value.into()));
    }
    fn opt(&mut self, key: &str, value: Option<impl Into<String>>) {
        if let Some(v) = value {
            self.row(key, v);
        }
    }
    fn write(&self, out: &mut String) {
        let width = self
            .rows
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        let _ = writeln!(out, "{}", self.title);
        for (k, v) in &self.rows {
            let mut lines = v.lines();
            let first = lines.next().unwrap_or("");
            let _ = writeln!(out, "  {k:<width$}  {first}");
            for more in lines {
                let _ = writeln!(out, "  {:<width$}  {more}", "");
            }
        }
    }
}

/// The text of an [`Inspection`].
pub fn render_inspection(i: &Inspection, color: bool) -> String {
    let s = Style { color };
    let mut out = String::new();
    let by = match i.answered_by {
        AnsweredBy::Daemon => "the running collector",
        AnsweredBy::Offline => "files on this host (no collector daemon answered)",
    };
    let _ = writeln!(
        out,
        "{} is {}.",
        s.bold(&format!("{:?}", i.query)),
        i.recognised.description
    );
    let _ = writeln!(out, "{}", s.dim(&format!("Answered by {by}.")));
    if let Some(t) = &i.task
        && i.containers.len() != 1
    {
        out.push('\n');
        task_section(t, None, s).write(&mut out);
    }
    for c in &i.containers {
        out.push('\n');
        container_sections(
            c,
            i.task.as_ref().filter(|_| i.containers.len() == 1),
            i.answered_by,
            s,
            &mut out,
        );
    }
    if !i.notes.is_empty() {
        out.push('\n');
        let _ = writeln!(out, "{}", s.bold("Notes"));
        for n in &i.notes {
            let _ = writeln!(out, "  - {n}");
        }
    }
    out
}

fn task_section(t: &TaskView, this: Option<&str>, s: Style) -> Section {
    let def = t.family.as_ref().map(|f| match t.revision {
        Some(r) => format!("{f}:{r}"),
        None => f.clone(),
    });
    let mut sec = Section::new(format!("{} {}", s.bold("Task"), t.task_id));
    sec.opt("ARN", t.task_arn.clone());
    sec.opt("cluster", t.cluster.clone());
    sec.opt("definition", def);
    let width = t
        .containers
        .iter()
        .map(|m| m.name.chars().count())
        .max()
        .unwrap_or(0);
    let members: Vec<String> = t
        .containers
        .iter()
        .map(|m| {
            let mine = if this == Some(m.container_id.as_str()) {
                "  (this one)"
            } else {
                ""
            };
            format!(
                "{:<width$}  {}  {}{mine}",
                m.name,
                &m.container_id[..12.min(m.container_id.len())],
                s.state(&m.state, false)
            )
        })
        .collect();
    sec.row("containers", members.join("\n"));
    if let Some(d) = &t.drain {
        let waiting: Vec<String> = d
            .containers
            .iter()
            .filter(|m| m.state != crate::drain::MemberState::Done)
            .map(|m| {
                format!(
                    "{} {}",
                    m.name,
                    serde_json::to_value(m.state)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                )
            })
            .collect();
        let phase = match d.phase {
            crate::drain::Phase::Exited => "exited",
            crate::drain::Phase::Drained => "drained",
        };
        let mut line = format!(
            "{} (phase {phase}, asked by {} at {})",
            d.state,
            &d.caller[..12.min(d.caller.len())],
            d.requested_at
        );
        if let Some(at) = &d.finished_at {
            line.push_str(&format!(", finished {at}"));
        }
        if !waiting.is_empty() {
            line.push_str(&format!("; waiting for {}", waiting.join(", ")));
        }
        if let Some(s3) = &d.s3 {
            line.push_str(&format!("; S3 {s3}"));
        }
        sec.row("drain", line);
    }
    sec
}

fn container_sections(
    c: &ContainerView,
    task: Option<&TaskView>,
    by: AnsweredBy,
    s: Style,
    out: &mut String,
) {
    let name = c
        .container_name
        .clone()
        .or(c.docker_name.clone())
        .unwrap_or_default();
    let mut sec = Section::new(format!("{} {}  {}", s.bold("Container"), c.short_id, name));
    let pids = if c.pids.is_empty() {
        match c.last_pid {
            Some(p) => format!("none running (last seen: {p})"),
            None => "none running".to_owned(),
        }
    } else {
        c.pids
            .iter()
            .map(i32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    sec.row("PIDs", pids);
    if let Some(cg) = &c.cgroup {
        let id = cg.id.map(|i| format!("  (id {i})")).unwrap_or_default();
        sec.row(
            "cgroup",
            format!("{}{id}", cg.path.as_deref().unwrap_or("?")),
        );
    } else {
        sec.row("cgroup", s.dim("unknown"));
    }
    sec.row("id", c.container_id.clone());
    sec.opt("docker name", c.docker_name.clone());
    sec.opt("task name", c.container_name.clone());
    sec.opt("image", c.image.clone());
    let failed = c.exit_code.is_some_and(|e| e != 0) || c.oom_killed == Some(true);
    let mut state = s.state(&c.state, failed);
    match c.state.as_str() {
        "running" => {
            if let Some(t) = &c.started_at {
                let _ = write!(state, " since {t}{}", ago(t));
            }
        }
        _ => {
            if let Some(code) = c.exit_code {
                let _ = write!(state, ", exit code {code}");
            }
            if let Some(sig) = c.exit_signal {
                let _ = write!(state, " (signal {sig})");
            }
            if c.oom_killed == Some(true) {
                let _ = write!(state, ", {}", s.red("OOM-killed"));
            }
            if let Some(v) = c.oom_victim_pid {
                let _ = write!(state, " (victim PID {v})");
            }
            if let Some(by) = &c.death_reported_by {
                let _ = write!(
                    state,
                    "; reported by {}",
                    if by == "ebpf" { "the kernel" } else { "Docker" }
                );
            }
        }
    }
    sec.row("state", state);
    if c.state != "running" {
        sec.opt("started", c.started_at.clone());
        sec.opt(
            "finished",
            c.finished_at.as_ref().map(|t| format!("{t}{}", ago(t))),
        );
    }
    sec.opt(
        "first seen",
        c.first_seen.as_ref().map(|t| match &c.discovered_via {
            Some(via) => format!("{t} (via {via})"),
            None => t.clone(),
        }),
    );
    sec.opt("removed", c.removed_seen.clone());
    sec.row("group", c.group.clone());
    sec.row("known from", c.known_from.join(", "));
    sec.write(out);

    if let Some(t) = task {
        out.push('\n');
        task_section(t, Some(&c.container_id), s).write(out);
    }

    out.push('\n');
    let mut src = Section::new(s.bold("Log sources"));
    if c.sources.is_empty() {
        src.row(
            "none",
            s.dim("no log file known (log driver not json-file, or nothing written yet)"),
        );
    }
    for so in &c.sources {
        src.row(&source_label(so), source_text(so, s));
    }
    src.write(out);

    out.push('\n');
    let mut dst = Section::new(s.bold("Destinations"));
    if c.destinations.is_empty() {
        dst.row("none", s.dim("no source delivered yet"));
    }
    for d in &c.destinations {
        let mut v = d.locations.join("\n");
        let _ = write!(v, "\n{} lines delivered", d.lines_delivered);
        match (&d.last_error, &d.last_error_at) {
            (Some(e), at) => {
                let _ = write!(
                    v,
                    "; last error {}: {}",
                    at.as_deref().unwrap_or(""),
                    s.red(e)
                );
            }
            (None, _) if by == AnsweredBy::Daemon => {
                v.push_str("; no error since the daemon started")
            }
            (None, _) => v.push_str("; errors unknown without the daemon"),
        }
        dst.row(&d.sink, v);
    }
    dst.write(out);

    out.push('\n');
    let mut m = Section::new(s.bold("Metrics"));
    m.row("received", c.metrics.note.clone());
    for l in &c.metrics.latest {
        m.row("latest", l.clone());
    }
    if let Some(lost) = &c.metrics.lost {
        m.row("lost", lost.clone());
    }
    m.write(out);
}

fn source_label(so: &SourceView) -> String {
    match (&so.container_path, so.kind.as_str()) {
        (Some(p), _) => format!("file {p}"),
        (None, "lifecycle") => "lifecycle".to_owned(),
        (None, _) => "stdout/stderr".to_owned(),
    }
}

fn source_text(so: &SourceView, s: Style) -> String {
    if so.kind == "lifecycle" {
        return format!(
            "the collector's record of how each run ended: {} delivered",
            so.lines_delivered
        );
    }
    let mut v = so.path.clone();
    let behind = match so.bytes_behind {
        Some(0) => s.green("0 B behind"),
        Some(b) => s.yellow(&format!("{} behind", human_bytes(b))),
        None => s.dim("file gone"),
    };
    let offset = match (so.offset, so.size) {
        (Some(o), Some(sz)) => format!("offset {} of {}", human_bytes(o), human_bytes(sz)),
        (Some(o), None) => format!("offset {}", human_bytes(o)),
        (None, Some(sz)) => format!("not read yet, {}", human_bytes(sz)),
        (None, None) => "not read".to_owned(),
    };
    let _ = write!(v, "\n{offset}, {behind}");
    if let Some(p) = &so.offset_path {
        let _ = write!(v, " (offset in rotated {p})");
    }
    let reading = match so.active {
        Some(true) => "reading now",
        Some(false) => "finished",
        None => "reading: unknown without the daemon",
    };
    let last = so
        .last_read
        .as_ref()
        .map(|t| format!("last read {t}{}", ago(t)))
        .unwrap_or_else(|| "never read".to_owned());
    let _ = write!(v, "\n{last}; {reading}");
    let lost = match (so.bytes_lost, so.files_lost) {
        (0, 0) => human_bytes(0),
        (bytes, 0) => s.red(&human_bytes(bytes)),
        (bytes, files) => s.red(&format!(
            "{} and {files} whole rotated file{}",
            human_bytes(bytes),
            if files == 1 { "" } else { "s" }
        )),
    };
    let _ = write!(
        v,
        "\n{} lines delivered ({}), {} skipped, {} rotations, {} truncations, {lost} lost",
        so.lines_delivered,
        human_bytes(so.bytes_delivered),
        so.lines_skipped,
        so.rotations,
        so.truncations
    );
    v
}

/// The text of an [`Overview`]: a table of tasks, then of containers.
pub fn render_overview(o: &Overview, color: bool) -> String {
    let s = Style { color };
    let mut out = String::new();
    let by = match o.answered_by {
        AnsweredBy::Daemon => "the running collector",
        AnsweredBy::Offline => "files on this host (no collector daemon answered)",
    };
    let _ = writeln!(out, "{}", s.dim(&format!("Answered by {by}.")));
    if !o.tasks.is_empty() {
        out.push('\n');
        let rows: Vec<Vec<(String, Option<&str>)>> = o
            .tasks
            .iter()
            .map(|t| {
                vec![
                    (t.task_id.clone(), None),
                    (t.definition.clone().unwrap_or_else(|| "-".into()), None),
                    (t.state.clone(), Some(t.state.as_str())),
                    (t.containers.to_string(), None),
                    (
                        t.bytes_behind
                            .map(human_bytes)
                            .unwrap_or_else(|| "-".into()),
                        None,
                    ),
                    (
                        t.last_read
                            .as_deref()
                            .map(ago_short)
                            .unwrap_or_else(|| "-".into()),
                        None,
                    ),
                ]
            })
            .collect();
        table(
            &mut out,
            &[
                "TASK",
                "DEFINITION",
                "STATE",
                "CONTAINERS",
                "BEHIND",
                "LAST READ",
            ],
            &rows,
            s,
        );
    }
    out.push('\n');
    let rows: Vec<Vec<(String, Option<&str>)>> = o
        .containers
        .iter()
        .map(|c| {
            vec![
                (
                    c.container_id[..12.min(c.container_id.len())].to_owned(),
                    None,
                ),
                (c.name.clone(), None),
                (
                    c.task_id
                        .as_deref()
                        .map(|t| t[..12.min(t.len())].to_owned())
                        .unwrap_or_else(|| "-".into()),
                    None,
                ),
                (c.state.clone(), Some(c.state.as_str())),
                (c.image.clone().unwrap_or_else(|| "-".into()), None),
                (c.lines_delivered.to_string(), None),
                (
                    c.bytes_behind
                        .map(human_bytes)
                        .unwrap_or_else(|| "-".into()),
                    None,
                ),
                (
                    c.last_read
                        .as_deref()
                        .map(ago_short)
                        .unwrap_or_else(|| "-".into()),
                    None,
                ),
            ]
        })
        .collect();
    table(
        &mut out,
        &[
            "CONTAINER",
            "NAME",
            "TASK",
            "STATE",
            "IMAGE",
            "LINES",
            "BEHIND",
            "LAST READ",
        ],
        &rows,
        s,
    );
    if o.hidden_removed > 0 {
        let _ = writeln!(
            out,
            "{}",
            s.dim(&format!(
                "({} removed containers not shown: --all shows them)",
                o.hidden_removed
            ))
        );
    }
    if !o.notes.is_empty() {
        out.push('\n');
        for n in &o.notes {
            let _ = writeln!(out, "{}", s.dim(&format!("Note: {n}")));
        }
    }
    out
}

/// A table: columns padded to their widest cell; a cell with a state is coloured after
/// padding, so escapes never disturb alignment.
fn table(out: &mut String, head: &[&str], rows: &[Vec<(String, Option<&str>)>], s: Style) {
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, (cell, _)) in r.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line: Vec<String> = head
        .iter()
        .enumerate()
        .map(|(i, h)| format!("{h:<w$}", w = widths[i]))
        .collect();
    let _ = writeln!(out, "{}", s.bold(line.join("  ").trim_end()));
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, (cell, state))| {
                let padded = if i + 1 == r.len() {
                    cell.clone()
                } else {
                    format!("{cell:<w$}", w = widths[i])
                };
                match state {
                    Some(st) => padded.replacen(cell.as_str(), &s.state(st, false), 1),
                    None => padded,
                }
            })
            .collect();
        let _ = writeln!(out, "{}", cells.join("  "));
    }
}

/// `1.5 KiB`.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// ` (3m ago)` for an RFC 3339 time, or nothing when it does not parse.
fn ago(rfc3339: &str) -> String {
    match since(rfc3339) {
        Some(d) => format!(" ({d} ago)"),
        None => String::new(),
    }
}

/// `3m ago` for tables, or the time itself when it does not parse.
fn ago_short(rfc3339: &str) -> String {
    match since(rfc3339) {
        Some(d) => format!("{d} ago"),
        None => rfc3339.to_owned(),
    }
}

fn since(rfc3339: &str) -> Option<String> {
    let t = humantime::parse_rfc3339_weak(rfc3339.trim_end_matches('Z').split('.').next()?).ok()?;
    let secs = SystemTime::now().duration_since(t).ok()?.as_secs();
    Some(match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_people_write_them() {
        let cases = [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (1536, "1.5 KiB"),
            (5 << 30, "5.0 GiB"),
        ];
        for (n, want) in cases {
            assert_eq!(human_bytes(n), want);
        }
    }

    #[test]
    fn tables_align_and_colour_only_on_request() {
        let rows = vec![
            vec![
                ("a".to_owned(), None),
                ("running".to_owned(), Some("running")),
            ],
            vec![
                ("long-name".to_owned(), None),
                ("exited".to_owned(), Some("exited")),
            ],
        ];
        let mut plain = String::new();
        table(
            &mut plain,
            &["NAME", "STATE"],
            &rows,
            Style { color: false },
        );
        assert_eq!(
            plain,
            "NAME       STATE\na          running\nlong-name  exited\n"
        );
        let mut coloured = String::new();
        table(
            &mut coloured,
            &["NAME", "STATE"],
            &rows,
            Style { color: true },
        );
        assert!(coloured.contains("\x1b[32mrunning\x1b[0m"));
        assert!(!plain.contains('\x1b'));
    }
}
