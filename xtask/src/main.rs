//! `cargo xtask <command>`: the workflows cargo cannot express on its own.
//!
//! # Layout
//! - [`test`]: prepares a fresh Debian 12 root machine (Docker, the test image, the collector
//!   binary) and runs every test of the workspace.
//! - [`run`]: builds the collector in release mode and runs `collector run`.
//! - [`docker`]: the machine set-up steps `test` takes (packages, daemon, image, leftovers).
//! - [`cmd`]: running child processes with errors that say what failed.
//! - [`workspace`]: where the workspace and its target directory are, and the `cargo` to call.

mod bench;
mod cmd;
mod docker;
mod moto;
mod run;
mod test;
mod workspace;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// `cargo xtask`: see the subcommands.
#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    about = "Workflows cargo cannot express: test, run"
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Test(options) => test::test(&options),
        Command::Run(options) => run::run(&options),
        Command::Bench(options) => bench::bench(&options),
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
    }
}
