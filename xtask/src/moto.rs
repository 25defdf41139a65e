//! The moto server (a local stand-in for CloudWatch Logs and S3) for the AWS sink tests.
//!
//! Installed into a virtualenv under the target directory, pinned to 5.2.5 (5.2.1 answers
//! CompleteMultipartUpload with an XML root that aws-sdk-s3 rejects). A run with the right
//! version already installed only checks it (well under a second).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, ensure};

use crate::cmd;

/// The pinned version.
const MOTO_VERSION: &str = "5.2.5";

/// Makes sure `<target>/xtask/moto-venv` holds moto `MOTO_VERSION` with its server, and
/// returns the path of `moto_server` (the tests read it from `COLLECTOR_TEST_MOTO`).
pub(crate) fn ensure_moto(target: &Path) -> Result<PathBuf> {
    let venv = target.join("xtask").join("moto-venv");
    let server = venv.join("bin").join("moto_server");
    let python = venv.join("bin").join("python");
    if server.is_file() && installed_version(&python).as_deref() == Some(MOTO_VERSION) {
        println!("xtask: moto {MOTO_VERSION}: {}", server.display());
        return Ok(server);
    }
    if !python.is_file() {
        println!("xtask: python3 -m venv {}", venv.display());
        if !cmd::succeeds(Command::new("python3").arg("-m").arg("venv").arg(&venv)) {
            // Debian's python3 comes without venv (and a minimal image without python3).
            println!(
                "xtask: installing python3-venv (apt-get update; apt-get install -y python3 python3-venv)"
            );
            let apt = || {
                let mut c = Command::new("apt-get");
                c.env("DEBIAN_FRONTEND", "noninteractive");
                c
            };
            cmd::run(apt().args(["-q", "update"]))?;
            cmd::run(apt().args(["-q", "install", "-y", "python3", "python3-venv"]))?;
            let _ = std::fs::remove_dir_all(&venv);
            cmd::run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
        }
    }
    println!("xtask: pip install 'moto[server]=={MOTO_VERSION}'");
    cmd::run(
        Command::new(&python)
            .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
            .arg(format!("moto[server]=={MOTO_VERSION}")),
    )
    .context("installing moto")?;
    ensure!(
        server.is_file() && installed_version(&python).as_deref() == Some(MOTO_VERSION),
        "moto {MOTO_VERSION} is still missing from {} after pip install",
        venv.display()
    );
    Ok(server)
}

/// The moto version installed for `python`, if any.
fn installed_version(python: &Path) -> Option<String> {
    cmd::output(Command::new(python).args([
        "-c",
        "import importlib.metadata as m; print(m.version('moto'))",
    ]))
    .ok()
}
