//! `cargo xtask run [ARGS...]`: build the collector in release mode and run `collector run ARGS`.

use std::os::unix::process::CommandExt as _;
use std::process::{Command, ExitCode};

use anyhow::{Context as _, Result};

use crate::{cmd, workspace};

/// Options of `cargo xtask run`.
#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// Passed to `collector run`, e.g. `--config /etc/collector/config.toml`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub(crate) args: Vec<String>,
}

/// Builds the release binary, then becomes `collector run ARGS` (signals reach it directly).
///
/// # Errors
/// When the build fails or the binary cannot be executed.
pub(crate) fn run(options: &Options) -> Result<ExitCode> {
    cmd::run(workspace::cargo().args(["build", "--release", "-p", "collector"]))?;
    let bin = workspace::target_dir().join("release").join("collector");
    let err = Command::new(&bin).arg("run").args(&options.args).exec();
    Err(err).with_context(|| format!("cannot execute {}", bin.display()))
}
