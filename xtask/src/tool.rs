//! Cargo subcommands the tasks install for themselves (cargo-deny, cargo-fuzz): pinned to
//! one version, found on the `PATH` or under `<target>/xtask/<name>`, else installed there
//! once with `cargo install --locked`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::{cmd, workspace};

/// The binary `name` (`cargo-deny`) of `version`: on the `PATH`, in
/// `<target>/xtask/<name>/bin`, or installed there now.
pub(crate) fn ensure(target: &Path, name: &str, version: &str) -> Result<PathBuf> {
    let root = target.join("xtask").join(name);
    let local = root.join("bin").join(name);
    for candidate in [PathBuf::from(name), local.clone()] {
        if version_of(&candidate, name).as_deref() == Some(version) {
            println!("xtask: {name} {version}: {}", candidate.display());
            return Ok(candidate);
        }
    }
    println!(
        "xtask: cargo install --locked {name} --version {version} --root {} \
         (once; a few minutes)",
        root.display()
    );
    cmd::run(
        workspace::cargo()
            .args(["install", "--locked", name, "--version", version])
            .arg("--root")
            .arg(&root),
    )
    .with_context(|| format!("installing {name}"))?;
    match version_of(&local, name) {
        Some(v) if v == version => Ok(local),
        other => bail!(
            "{} reports version {other:?} after cargo install, not {version}",
            local.display()
        ),
    }
}

/// The version `<program> --version` prints (`cargo-deny 0.20.2`), if it runs.
fn version_of(program: &Path, name: &str) -> Option<String> {
    let out = cmd::output(Command::new(program).arg("--version")).ok()?;
    parse_version(name, &out)
}

/// `0.20.2` of `cargo-deny 0.20.2`, when the output is `name`'s.
fn parse_version(name: &str, output: &str) -> Option<String> {
    let rest = output.trim().strip_prefix(name)?.strip_prefix(' ')?;
    rest.split_whitespace().next().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_read_from_the_tools_output() {
        let cases = [
            ("cargo-deny", "cargo-deny 0.20.2\n", Some("0.20.2")),
            (
                "cargo-deny",
                "cargo-deny 0.18.3 (abc 2025-01-01)",
                Some("0.18.3"),
            ),
            ("cargo-deny", "cargo-audit 0.20.2", None),
            ("cargo-deny", "", None),
            ("cargo-fuzz", "cargo-fuzz 0.13.2\n", Some("0.13.2")),
            ("cargo-fuzz", "cargo-fuzz 0.12.0 (abc)", Some("0.12.0")),
            ("cargo-fuzz", "cargo-deny 0.13.2", None),
            ("cargo-fuzz", "", None),
            ("cargo-fuzz", "cargo-fuzzer 0.13.2", None),
        ];
        for (name, output, want) in cases {
            assert_eq!(parse_version(name, output).as_deref(), want, "{output:?}");
        }
    }
}
