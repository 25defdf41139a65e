//! The moto server (a local stand-in for CloudWatch Logs and S3) for the AWS sink tests, and
//! PyPI's `graphyte` (a Graphite client library) as a real-world sender for the metrics tests.
//!
//! Installed into a virtualenv under the target directory, moto pinned to 5.2.5 (5.2.1
//! answers CompleteMultipartUpload with an XML root that aws-sdk-s3 rejects). A run with the
//! right versions already installed only checks them (well under a second).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, ensure};

use crate::cmd;

/// The pinned version.
const MOTO_VERSION: &str = "5.2.5";

/// The pinned graphyte (the tests run `<venv>/bin/python -c 'import graphyte ...'`).
const GRAPHYTE_VERSION: &str = "1.7.1";

/// Makes sure `<target>/xtask/moto-venv` holds moto `MOTO_VERSION` with its server, and
/// returns the path of `moto_server` (the tests read it from `COLLECTOR_TEST_MOTO`).
pub(crate) fn ensure_moto(target: &Path) -> Result<PathBuf> {
    let venv = target.join("xtask").join("moto-venv");
    let server = venv.join("bin").join("moto_server");
    let python = venv.join("bin").join("python");
    let complete = |python: &Path| {
        server.is_file()
            && installed_version(python, "moto").as_deref() == Some(MOTO_VERSION)
            && installed_version(python, "graphyte").as_deref() == Some(GRAPHYTE_VERSION)
    };
    if complete(&python) {
        println!(
            "xtask: moto {MOTO_VERSION}, graphyte {GRAPHYTE_VERSION}: {}",
            server.display()
        );
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
    println!("xtask: pip install 'moto[server]=={MOTO_VERSION}' 'graphyte=={GRAPHYTE_VERSION}'");
    cmd::run(
        Command::new(&python)
            .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
            .arg(format!("moto[server]=={MOTO_VERSION}"))
            .arg(format!("graphyte=={GRAPHYTE_VERSION}")),
    )
    .context("installing moto and graphyte")?;
    ensure!(
        complete(&python),
        "moto {MOTO_VERSION} or graphyte {GRAPHYTE_VERSION} is still missing from {} after pip install",
        venv.display()
    );
    Ok(server)
}

/// The version of `package` installed for `python`, if any.
fn installed_version(python: &Path, package: &str) -> Option<String> {
    cmd::output(Command::new(python).args([
        "-c",
        &format!("import importlib.metadata as m; print(m.version('{package}'))"),
    ]))
    .ok()
}
