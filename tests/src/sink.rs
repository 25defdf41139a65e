//! Reads what the collector's local directory sink wrote under `<data_dir>/logs/`.
//!
//! Layout (the collector's documented interface):
//! - ECS task containers: `tasks/<task id>/<container name>/{stdout,stderr}.log`, and a
//!   declared file at `.../files/<path inside the container without the leading />`;
//! - other containers: `containers/<docker name>-<short id>/{stdout,stderr}.log`.
//!
//! Each line is `<RFC 3339 time as Docker wrote it> <message>\n`, like `docker logs -t`.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context as _, Result, bail};

use crate::docker::TestContainer;
use crate::time::parse_rfc3339;

/// One line of a sink file (or of `docker logs -t`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkLine {
    /// The timestamp, parsed.
    pub time: SystemTime,
    /// The message without the trailing newline.
    pub message: String,
}

/// The messages of `lines`, for comparisons.
pub fn messages(lines: &[SinkLine]) -> Vec<String> {
    lines.iter().map(|line| line.message.clone()).collect()
}

/// Parses `<time> <message>` lines. A last line without its newline is still being written
/// and is left out.
///
/// # Errors
/// When a line does not start with an RFC 3339 time and a space; `what` names the source.
pub fn parse_lines(bytes: &[u8], what: &str) -> Result<Vec<SinkLine>> {
    let complete = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(end) => &bytes[..end],
        None => return Ok(Vec::new()),
    };
    complete
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(number, line)| {
            let line = String::from_utf8_lossy(line);
            parse_line(&line).with_context(|| format!("{what}, line {}", number + 1))
        })
        .collect()
}

/// Parses one `<time> <message>` line.
fn parse_line(line: &str) -> Result<SinkLine> {
    let Some((time, message)) = line.split_once(' ') else {
        bail!(
            "no `<time> <message>` shape: {}",
            crate::check::preview(line)
        );
    };
    let Some(time) = parse_rfc3339(time) else {
        bail!("not an RFC 3339 time: {}", crate::check::preview(line));
    };
    Ok(SinkLine {
        time,
        message: message.to_owned(),
    })
}

/// The local directory sink of one collector: `<data_dir>/logs`.
#[derive(Clone, Debug)]
pub struct Sink {
    /// `<data_dir>/logs`.
    root: PathBuf,
}

impl Sink {
    /// The sink rooted at `root` (`<data_dir>/logs`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// `<data_dir>/logs`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `tasks/<task id>/<container name>`.
    pub fn task_container_dir(&self, task_id: &str, container_name: &str) -> PathBuf {
        self.root.join("tasks").join(task_id).join(container_name)
    }

    /// `containers/<docker name>-<short id>`, where a container outside any task goes.
    pub fn container_dir(&self, container: &TestContainer) -> PathBuf {
        self.root
            .join("containers")
            .join(format!("{}-{}", container.name(), container.short_id()))
    }

    /// Lines of `stream` (`"stdout"` or `"stderr"`) of an ECS task's container; none while
    /// the file does not exist.
    ///
    /// # Errors
    /// When the file cannot be read or a line does not parse.
    pub fn lines(
        &self,
        task_id: &str,
        container_name: &str,
        stream: &str,
    ) -> Result<Vec<SinkLine>> {
        read_lines(
            &self
                .task_container_dir(task_id, container_name)
                .join(format!("{stream}.log")),
        )
    }

    /// Lines of a file the container declared (label `collector.logs`), by its path inside
    /// the container.
    ///
    /// # Errors
    /// As [`Sink::lines`].
    pub fn file_lines(
        &self,
        task_id: &str,
        container_name: &str,
        path_in_container: &str,
    ) -> Result<Vec<SinkLine>> {
        read_lines(
            &self
                .task_container_dir(task_id, container_name)
                .join("files")
                .join(path_in_container.trim_start_matches('/')),
        )
    }

    /// Lines of `stream` of a container outside any task.
    ///
    /// # Errors
    /// As [`Sink::lines`].
    pub fn container_lines(
        &self,
        container: &TestContainer,
        stream: &str,
    ) -> Result<Vec<SinkLine>> {
        read_lines(&self.container_dir(container).join(format!("{stream}.log")))
    }

    /// The container directories under `tasks/<task id>/`, sorted.
    ///
    /// # Errors
    /// When the directory exists but cannot be listed.
    pub fn task_container_names(&self, task_id: &str) -> Result<Vec<String>> {
        let dir = self.root.join("tasks").join(task_id);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(err).with_context(|| format!("list {}", dir.display())),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("list {}", dir.display()))?;
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Lines of `stream` of every container directory of a task, directory by directory
    /// (for cases where the container's name may not be known yet).
    ///
    /// # Errors
    /// As [`Sink::lines`].
    pub fn task_lines(&self, task_id: &str, stream: &str) -> Result<Vec<(String, Vec<SinkLine>)>> {
        self.task_container_names(task_id)?
            .into_iter()
            .map(|name| {
                let lines = self.lines(task_id, &name, stream)?;
                Ok((name, lines))
            })
            .collect()
    }
}

/// Reads and parses a sink file; a file that does not exist yet has no lines.
///
/// # Errors
/// When it cannot be read or a line does not parse.
pub fn read_lines(path: &Path) -> Result<Vec<SinkLine>> {
    match fs::read(path) {
        Ok(bytes) => parse_lines(&bytes, &path.display().to_string()),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(Vec::new()),
        Err(err) => Err(err).with_context(|| format!("read {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn sink_lines_parse_and_partial_tails_wait() {
        let bytes = b"2026-11-22T00:41:39.18697872Z hello world\n\
                      2026-11-22T00:41:40Z \n\
                      2026-11-22T00:41:41Z half a li";
        let lines = parse_lines(bytes, "test").unwrap();
        assert_eq!(
            lines,
            vec![
                SinkLine {
                    time: UNIX_EPOCH + Duration::new(1_795_308_099, 186_978_720),
                    message: "hello world".into(),
                },
                SinkLine {
                    time: UNIX_EPOCH + Duration::from_secs(1_795_308_100),
                    message: String::new(),
                },
            ]
        );
        assert!(parse_lines(b"", "test").unwrap().is_empty());
    }

    #[test]
    fn lines_without_a_time_are_errors() {
        for bad in [
            &b"hello world\n"[..],
            b"no-space-at-all\n",
            b"2026-11-22 00:41:39 x\n",
        ] {
            let err = parse_lines(bad, "sink file").unwrap_err();
            assert!(format!("{err:#}").contains("sink file, line 1"), "{err:#}");
        }
    }
}
