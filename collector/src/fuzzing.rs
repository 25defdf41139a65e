//! What the fuzz targets (`fuzz/fuzz_targets/`) need that the library keeps private.
//!
//! Not an API: hidden from the docs, and it may change with any commit. Everything else the
//! targets call (the decoders, the cgroup, Graphite, StatsD, ECS and Docker parsers,
//! [`Config::from_toml_str`](crate::config::Config::from_toml_str)) is public already.

/// A Graphite plaintext line (`<path> <value> <timestamp>`, no newline) with the value
/// written exactly as the carbon forwarder writes it, so a target can check that what is
/// forwarded parses back to the sample that was accepted.
pub fn graphite_line(path: &str, value: f64, timestamp: i64) -> String {
    let mut line = String::with_capacity(path.len() + 32);
    line.push_str(path);
    line.push(' ');
    crate::metrics::carbon::push_value(&mut line, value);
    line.push(' ');
    line.push_str(&timestamp.to_string());
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graphite_lines_as_the_forwarder_writes_them() {
        let cases = [
            ("a.b", 1.0, 7, "a.b 1 7"),
            ("a", -0.0, 7, "a -0 7"),
            ("a", 0.5, -1, "a 0.5 -1"),
            ("a", 1e300, 0, &format!("a {} 0", 1e300)),
        ];
        for (path, value, ts, want) in cases {
            assert_eq!(graphite_line(path, value, ts), want, "{value}");
        }
    }
}
