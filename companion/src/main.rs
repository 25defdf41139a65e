//! `companion`: argv and environment, logging, one runtime, one call into the library.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use companion::cli::{Cli, Command, Switch};
use companion::outcome::{EXIT_FAILED, EXIT_USAGE};
use companion::signals::Signals;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // `--help` and `--version` print to stdout and succeed; real usage errors exit
            // 64 (not clap's 2, which is our "deadline passed").
            let _ = err.print();
            return ExitCode::from(if err.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    init_logging(&cli.options);
    match run(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            tracing::error!("failed: {err:#}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<u8> {
    // One thread: the companion moves a few lines a second and waits; a second thread would
    // only cost memory in every task.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("cannot start the async runtime")?;
    let options = &cli.options;
    runtime.block_on(async {
        match cli.command.unwrap_or(Command::Run) {
            Command::Health => {
                let ok = match options.relay {
                    Switch::On => companion::health::relay_answers(options.listen).await,
                    Switch::Off => {
                        companion::health::socket_answers(&options.companion_socket()).await
                    }
                };
                Ok(u8::from(!ok))
            }
            Command::Run => {
                tracing::info!(version = env!("CARGO_PKG_VERSION"), "companion starting.");
                let signals = Signals::listen().context("cannot install signal handlers")?;
                let outcome = companion::run(options, signals).await;
                outcome.report();
                Ok(outcome.exit_code())
            }
        }
    })
}

/// Plain text (or JSON) lines on stderr, no colours: they end up in the task's log stream.
fn init_logging(options: &companion::cli::Options) {
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_max_level(options.log_level)
        .with_target(false);
    if options.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
}
