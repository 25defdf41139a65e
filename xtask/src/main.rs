//! `cargo xtask <command>`: the workflows cargo cannot express on its own.
//!
//! # Layout
//! - [`test`]: prepares a fresh Debian 12 root machine (Docker, the test image, the collector
//!   binary) and runs every test of the workspace.
//! - [`soak`]: the release collector under a steady mixed load for N minutes: RSS and open
//!   descriptors over time, a growth verdict, every line delivered.
//! - [`run`]: builds the collector in release mode and runs `collector run`.
//! - [`deny`]: `cargo deny check` of the dependency tree (licenses, bans, sources,
//!   advisories when their database can be fetched), cargo-deny installed once.
//! - [`fuzz`]: builds the fuzz targets of `fuzz/` (cargo-fuzz, nightly) and runs each for N
//!   seconds; `test` runs them briefly.
//! - [`image`]: builds the static `collector` and `collector-companion` images (`FROM
//!   scratch`, `docker import`) and prints their sizes.
//! - [`docker`]: the machine set-up steps `test` takes (packages, daemon, image, leftovers).
//! - [`cmd`]: running child processes with errors that say what failed.
//! - [`workspace`]: where the workspace and its target directory are, and the `cargo` to call.

mod bench;
mod cmd;
mod deny;
mod docker;
mod fuzz;
mod image;
mod moto;
mod run;
mod soak;
mod test;
mod tool;
mod workspace;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// `cargo xtask`: see the subcommands.
#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    about = "Workflows cargo cannot express: test, run, bench, soak, image, deny, fuzz"
)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// One variant and one module per command (aya-template's `xtask` shape). `bench` joins as
/// `Bench(bench::Options)` with its own `bench.rs`.
#[derive(Debug, Subcommand)]
enum Command {
    /// Set up this machine (Docker, test image, collector binary) and run every test.
    Test(test::Options),
    /// Build the collector in release mode and run `collector run ARGS`.
    Run(run::Options),
    /// Measure the release collector (throughput, memory, idle cost, discovery latency)
    /// beside `cat`, `wc -l` and, when installed, Fluent Bit and Vector.
    Bench(bench::Options),
    /// Run the release collector under a steady mixed load (containers with rotation,
    /// short-lived containers, Graphite) for N minutes and report RSS and open descriptors
    /// over time, with a growth verdict.
    Soak(soak::Options),
    /// Build the static `collector` and `collector-companion` images (FROM scratch, nothing
    /// pulled) and print their sizes.
    Image(image::Options),
    /// Check the dependency tree with cargo-deny (`deny.toml`): licenses, bans, sources, and
    /// advisories when their database can be fetched from github.com.
    Deny(deny::Options),
    /// Build the fuzz targets (cargo-fuzz, nightly; installed once) and run each for
    /// `--seconds` (60 by default); fails naming the target and the input that crashed it.
    Fuzz(fuzz::Options),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Test(options) => test::test(&options),
        Command::Run(options) => run::run(&options),
        Command::Bench(options) => bench::bench(&options),
        Command::Soak(options) => soak::soak(&options),
        Command::Image(options) => image::image(&options),
        Command::Deny(options) => deny::deny(&options),
        Command::Fuzz(options) => fuzz::fuzz(&options),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's spellings reach `cargo test` and `collector run` as typed.
    #[test]
    fn trailing_arguments_are_passed_on() {
        let cases: &[(&[&str], &[&str])] = &[
            (&["test"], &[]),
            (
                &["test", "rotation", "--nocapture"],
                &["rotation", "--nocapture"],
            ),
            (&["test", "--", "--nocapture"], &["--nocapture"]),
            (&["test", "--nocapture"], &["--nocapture"]),
        ];
        for (argv, passed) in cases {
            let cli = Cli::try_parse_from(std::iter::once("xtask").chain(argv.iter().copied()));
            match cli.map(|cli| cli.command) {
                Ok(Command::Test(options)) => assert_eq!(options.test_args, *passed, "{argv:?}"),
                other => panic!("{argv:?}: {other:?}"),
            }
        }
        let cli = Cli::try_parse_from(["xtask", "run", "--config", "/etc/c.toml"]).unwrap();
        match cli.command {
            Command::Run(options) => assert_eq!(options.args, ["--config", "/etc/c.toml"]),
            other => panic!("parsed as {other:?}"),
        }
        let cli =
            Cli::try_parse_from(["xtask", "image", "--only", "companion", "--tag", "dev"]).unwrap();
        match cli.command {
            Command::Image(options) => {
                assert_eq!(options.only, Some(image::Which::Companion));
                assert_eq!(options.tag, "dev");
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(Cli::try_parse_from(["xtask", "image", "--only", "both"]).is_err());
    }

    /// `cargo xtask fuzz [--seconds N] [TARGET...]`: every target by default, only known
    /// targets, and a positive duration.
    #[test]
    fn fuzz_arguments() {
        let cases: &[(&[&str], u64, &[&str])] = &[
            (&["fuzz"], 60, &[]),
            (&["fuzz", "--seconds", "300"], 300, &[]),
            (&["fuzz", "statsd", "cri"], 60, &["statsd", "cri"]),
            (&["fuzz", "--seconds", "5", "config"], 5, &["config"]),
            (&["fuzz", "config", "--seconds=7"], 7, &["config"]),
        ];
        for (argv, seconds, targets) in cases {
            let cli = Cli::try_parse_from(std::iter::once("xtask").chain(argv.iter().copied()));
            match cli.map(|cli| cli.command) {
                Ok(Command::Fuzz(options)) => {
                    assert_eq!(options.seconds, *seconds, "{argv:?}");
                    assert_eq!(options.targets, *targets, "{argv:?}");
                }
                other => panic!("{argv:?}: {other:?}"),
            }
        }
        for bad in [
            &["fuzz", "nosuchtarget"][..],
            &["fuzz", "--seconds", "0"],
            &["fuzz", "--seconds", "-1"],
            &["fuzz", "--seconds"],
        ] {
            assert!(
                Cli::try_parse_from(std::iter::once("xtask").chain(bad.iter().copied())).is_err(),
                "{bad:?}"
            );
        }
        for target in fuzz::TARGETS {
            let path = workspace::root()
                .join("fuzz")
                .join("fuzz_targets")
                .join(format!("{target}.rs"));
            assert!(path.is_file(), "{} is missing", path.display());
        }
    }
}
