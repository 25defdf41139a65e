//! The strict Graphite plaintext parser: `<path> <value> [<timestamp>]`, one sample per line.
//!
//! The protocol (<https://graphite.readthedocs.io/en/latest/feeding-carbon.html#the-plaintext-protocol>)
//! is three space-separated fields; carbon itself is lenient (it splits on any whitespace and
//! accepts `nan`). We are stricter, because every accepted sample is stored and forwarded
//! under its sender's task: a line is accepted whole or rejected with one [`Rejection`]
//! reason, which is counted (per reason in `/metrics`, per task in the state database), never
//! half-used.

use std::fmt;

/// Why a line was not accepted. The `as_str` names are the `reason` label of
/// `collector_metrics_rejected_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// The line is empty or only whitespace.
    EmptyLine,
    /// The path is empty, or has an empty component (`a..b`, `.a`, `a.`).
    EmptyPath,
    /// The path has a byte outside printable ASCII (`!`..`~`): binary, control characters,
    /// or non-ASCII text.
    InvalidPath,
    /// No value after the path.
    MissingValue,
    /// The value is not a decimal number.
    InvalidValue,
    /// The value is NaN or infinite (Graphite's whisper files cannot hold them usefully and
    /// carbon-c-relay rejects them).
    NonFiniteValue,
    /// The timestamp is not an integer (seconds since the epoch).
    InvalidTimestamp,
    /// The timestamp is outside the accepted window ([`ParseSettings`]): a clock at 1970, or
    /// in 2100.
    TimestampOutOfRange,
    /// More than three fields.
    TooManyFields,
    /// The line is longer than the configured maximum; the rest up to the next newline is
    /// discarded unread.
    LineTooLong,
    /// The connection closed in the middle of a line (no final newline).
    IncompleteLine,
}

impl Rejection {
    /// Every reason, in `/metrics` order.
    pub const ALL: [Rejection; 11] = [
        Rejection::EmptyLine,
        Rejection::EmptyPath,
        Rejection::InvalidPath,
        Rejection::MissingValue,
        Rejection::InvalidValue,
        Rejection::NonFiniteValue,
        Rejection::InvalidTimestamp,
        Rejection::TimestampOutOfRange,
        Rejection::TooManyFields,
        Rejection::LineTooLong,
        Rejection::IncompleteLine,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::EmptyLine => "empty_line",
            Rejection::EmptyPath => "empty_path",
            Rejection::InvalidPath => "invalid_path",
            Rejection::MissingValue => "missing_value",
            Rejection::InvalidValue => "invalid_value",
            Rejection::NonFiniteValue => "non_finite_value",
            Rejection::InvalidTimestamp => "invalid_timestamp",
            Rejection::TimestampOutOfRange => "timestamp_out_of_range",
            Rejection::TooManyFields => "too_many_fields",
            Rejection::LineTooLong => "line_too_long",
            Rejection::IncompleteLine => "incomplete_line",
        }
    }

    /// Index into [`Rejection::ALL`].
    pub fn index(self) -> usize {
        Rejection::ALL
            .iter()
            .position(|r| *r == self)
            .expect("every reason is in ALL")
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One accepted line.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedLine<'a> {
    /// The metric path, validated.
    pub path: &'a str,
    /// A finite value.
    pub value: f64,
    /// Seconds since the epoch: the sender's, or the receive time when it gave none.
    pub timestamp: i64,
}

/// The accepted timestamp window, relative to the receive time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseSettings {
    /// How far in the past a timestamp may be, in seconds.
    pub max_age_secs: i64,
    /// How far in the future a timestamp may be, in seconds (clock skew between hosts).
    pub max_future_secs: i64,
}

impl Default for ParseSettings {
    fn default() -> Self {
        Self {
            max_age_secs: 30 * 24 * 3600,
            max_future_secs: 600,
        }
    }
}

/// Parses one line (without its newline; a trailing `\r` is tolerated) received at `now`
/// (seconds since the epoch).
///
/// # Errors
/// The first [`Rejection`] that applies.
pub fn parse_line<'a>(
    line: &'a [u8],
    now: i64,
    settings: &ParseSettings,
) -> Result<ParsedLine<'a>, Rejection> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(|b| *b == b' ' || *b == b'\t') {
        return Err(Rejection::EmptyLine);
    }
    // A line that starts with a separator has an empty path: reading its value as the path
    // (as splitting on whitespace would) would store a number under a number.
    if line.starts_with(b" ") || line.starts_with(b"\t") {
        return Err(Rejection::EmptyPath);
    }
    // Fields are separated by single or repeated spaces (carbon splits on whitespace).
    let mut fields = line
        .split(|b| *b == b' ' || *b == b'\t')
        .filter(|f| !f.is_empty());
    let path = fields.next().ok_or(Rejection::EmptyLine)?;
    let path = validate_path(path)?;
    let value = fields.next().ok_or(Rejection::MissingValue)?;
    let value = std::str::from_utf8(value)
        .ok()
        .filter(|v| {
            v.bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
        })
        .and_then(|v| v.parse::<f64>().ok());
    let value = match value {
        // "nan"/"inf" are refused by the byte filter above; only an overflow (1e999) gets here.
        Some(v) if !v.is_finite() => return Err(Rejection::NonFiniteValue),
        Some(v) => v,
        None => {
            return Err(if is_non_finite_word(line) {
                Rejection::NonFiniteValue
            } else {
                Rejection::InvalidValue
            });
        }
    };
    let timestamp = match fields.next() {
        None => now,
        Some(ts) => {
            let ts = std::str::from_utf8(ts)
                .ok()
                .and_then(|t| t.parse::<i64>().ok())
                // carbon documents -1 as "now".
                .ok_or(Rejection::InvalidTimestamp)?;
            if ts == -1 {
                now
            } else if ts < now.saturating_sub(settings.max_age_secs)
                || ts > now.saturating_add(settings.max_future_secs)
            {
                return Err(Rejection::TimestampOutOfRange);
            } else {
                ts
            }
        }
    };
    if fields.next().is_some() {
        return Err(Rejection::TooManyFields);
    }
    Ok(ParsedLine {
        path,
        value,
        timestamp,
    })
}

/// Whether the value field (second field of `line`) spells NaN or infinity.
fn is_non_finite_word(line: &[u8]) -> bool {
    let value = line
        .split(|b| *b == b' ' || *b == b'\t')
        .filter(|f| !f.is_empty())
        .nth(1)
        .unwrap_or_default();
    let v = String::from_utf8_lossy(value).to_ascii_lowercase();
    let v = v.trim_start_matches(['+', '-']);
    matches!(v, "nan" | "inf" | "infinity")
}

/// A path is dot-separated non-empty components of printable ASCII (tags after `;` included).
fn validate_path(path: &[u8]) -> Result<&str, Rejection> {
    if !path.iter().all(|b| (b'!'..=b'~').contains(b)) {
        return Err(Rejection::InvalidPath);
    }
    if path.split(|b| *b == b'.').any(|c| c.is_empty()) {
        return Err(Rejection::EmptyPath);
    }
    std::str::from_utf8(path).map_err(|_| Rejection::InvalidPath)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_790_000_000;

    fn parse(line: &str) -> Result<(String, f64, i64), Rejection> {
        parse_line(line.as_bytes(), NOW, &ParseSettings::default())
            .map(|p| (p.path.to_owned(), p.value, p.timestamp))
    }

    #[test]
    fn accepted_lines() {
        let cases = [
            ("a.b.c 1 1790000000", ("a.b.c", 1.0, NOW)),
            ("a.b.c 1.5", ("a.b.c", 1.5, NOW)),
            ("a -2e3 1789999000\r", ("a", -2000.0, NOW - 1000)),
            ("a  3   1790000001", ("a", 3.0, NOW + 1)),
            ("a\t4\t-1", ("a", 4.0, NOW)),
            ("disk.used;host=x 7", ("disk.used;host=x", 7.0, NOW)),
        ];
        for (line, (path, value, ts)) in cases {
            assert_eq!(parse(line), Ok((path.to_owned(), value, ts)), "{line:?}");
        }
    }

    #[test]
    fn rejected_lines_name_their_reason() {
        let cases = [
            ("", Rejection::EmptyLine),
            ("   ", Rejection::EmptyLine),
            ("a", Rejection::MissingValue),
            (". 1", Rejection::EmptyPath),
            (" 1 1790000000", Rejection::EmptyPath),
            ("\t1", Rejection::EmptyPath),
            ("a..b 1", Rejection::EmptyPath),
            ("a. 1", Rejection::EmptyPath),
            (".a 1", Rejection::EmptyPath),
            ("a NaN", Rejection::NonFiniteValue),
            ("a nan 1790000000", Rejection::NonFiniteValue),
            ("a inf", Rejection::NonFiniteValue),
            ("a -Infinity", Rejection::NonFiniteValue),
            ("a 1e999", Rejection::NonFiniteValue),
            ("a one", Rejection::InvalidValue),
            ("a 0x10", Rejection::InvalidValue),
            ("a 1 12:00", Rejection::InvalidTimestamp),
            ("a 1 1.5", Rejection::InvalidTimestamp),
            ("a 1 0", Rejection::TimestampOutOfRange),
            ("a 1 86400", Rejection::TimestampOutOfRange),
            ("a 1 4102444800", Rejection::TimestampOutOfRange),
            ("a 1 1790000000 x", Rejection::TooManyFields),
            ("caf\u{e9} 1", Rejection::InvalidPath),
        ];
        for (line, reason) in cases {
            assert_eq!(parse(line), Err(reason), "{line:?}");
        }
    }

    #[test]
    fn binary_is_an_invalid_path_never_a_panic() {
        let cases: [&[u8]; 4] = [
            b"\x00\x01\x02 1",
            b"\xff\xfe\xfd",
            b"a\x7f 1",
            b"\x1b[31mred 1",
        ];
        for line in cases {
            assert_eq!(
                parse_line(line, NOW, &ParseSettings::default()),
                Err(Rejection::InvalidPath),
                "{line:?}"
            );
        }
    }

    #[test]
    fn reason_names_are_unique_label_values() {
        let mut seen = std::collections::HashSet::new();
        for (i, r) in Rejection::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            assert!(seen.insert(r.as_str()));
            assert!(
                r.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_')
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_parse_or_reject_without_panic(line in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            if let Ok(p) = parse_line(&line, NOW, &ParseSettings::default()) {
                proptest::prop_assert!(p.value.is_finite());
                proptest::prop_assert!(!p.path.is_empty());
            }
        }
    }
}
