//! Machine set-up for the tests: Debian packages, the Docker daemon, the test image, and
//! leftovers of earlier runs.
//!
//! Every step checks first and acts only when needed, so a prepared machine costs a few
//! `docker` calls. Nothing is pulled from a registry: the test image is `docker import`ed
//! from Debian's static busybox.

use std::env;
use std::fs::{self, File};
use std::io::Read as _;
use std::os::unix::fs::{PermissionsExt as _, symlink};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};

use crate::cmd;

/// The image every integration test runs (the harness in `tests/src/docker.rs` names it too).
pub(crate) const TEST_IMAGE: &str = "collector-test/busybox:latest";

/// The label the test harness puts on every container it starts.
const TEST_LABEL: &str = "collector-test";

/// Where Debian's `busybox-static` puts the binary the image is made of.
const BUSYBOX: &str = "/bin/busybox";

/// The applets the tests' shell scripts call, linked to busybox in the image's `/bin`.
const APPLETS: &[&str] = &[
    "sh", "echo", "seq", "sleep", "cat", "yes", "head", "mkdir", "ls", "printf", "dd", "tr",
    "true", "kill", "wc", "date", "touch", "mv", "rm", "tail",
];

/// The daemon's flags: this machine kind has no iptables and no bridge to manage.
const DOCKERD_ARGS: &[&str] = &["--iptables=false", "--bridge=none"];

/// How long a starting daemon gets to answer.
const DAEMON_START_TIMEOUT: Duration = Duration::from_secs(30);

/// Installs `docker.io` when `dockerd` is missing, `busybox-static` when there is no static
/// `/bin/busybox`, and `clang` when it is missing (the collector's `build.rs` compiles its
/// eBPF programs with it; without it eBPF is compiled out and the eBPF tests fail), with
/// `apt-get`.
///
/// # Errors
/// When a package must be installed and we are not root, or `apt-get` fails.
pub(crate) fn ensure_packages() -> Result<()> {
    let mut missing = Vec::new();
    match find_program("dockerd") {
        Some(path) => println!("xtask: dockerd: {}", path.display()),
        None => missing.push("docker.io"),
    }
    if is_static_elf(Path::new(BUSYBOX)) {
        println!("xtask: static busybox: {BUSYBOX}");
    } else {
        missing.push("busybox-static");
    }
    match find_program("clang") {
        Some(path) => println!("xtask: clang: {}", path.display()),
        None => missing.push("clang"),
    }
    // The upstream Graphite relay of the metrics tests.
    match find_program("carbon-c-relay") {
        Some(path) => println!("xtask: carbon-c-relay: {}", path.display()),
        None => missing.push("carbon-c-relay"),
    }
    if missing.is_empty() {
        return Ok(());
    }
    let packages = missing.join(" ");
    ensure_root(&format!("installing {packages}"))?;
    println!("xtask: installing {packages} (apt-get update; apt-get install -y {packages})");
    cmd::run(apt_get().args(["-q", "update"]))?;
    cmd::run(apt_get().args(["-q", "install", "-y"]).args(&missing))?;
    ensure!(
        find_program("dockerd").is_some(),
        "dockerd is still missing after installing docker.io"
    );
    ensure!(
        is_static_elf(Path::new(BUSYBOX)),
        "{BUSYBOX} is still missing or not static after installing busybox-static"
    );
    ensure!(
        find_program("clang").is_some(),
        "clang is still missing after installing clang"
    );
    Ok(())
}

/// Makes sure the Docker daemon answers: waits for one that is starting, or starts
/// `dockerd --iptables=false --bridge=none` detached (own process group, so a Ctrl-C of the
/// tests leaves it running), logging to `log`.
///
/// # Errors
/// When the daemon must be started and we are not root, or it does not answer in time.
pub(crate) fn ensure_daemon(log: &Path) -> Result<()> {
    let probe = match probe_daemon() {
        Ok(version) => {
            println!("xtask: docker daemon answers (server {version})");
            return Ok(());
        }
        Err(err) => err,
    };
    ensure_root(&format!(
        "the Docker daemon does not answer ({probe}); starting it"
    ))?;
    // A daemon that is still starting (an init script run by the package's postinst,
    // systemd, an earlier run) owns the pidfile; a second dockerd would only fail on it. If
    // that one dies instead of answering, we start our own.
    if let Some(pid) = running_dockerd() {
        println!("xtask: dockerd (pid {pid}) is running but not answering yet; waiting");
        let alive = || Path::new(&format!("/proc/{pid}")).exists();
        match wait_for_daemon(|| {
            alive()
                .then_some(())
                .ok_or_else(|| format!("dockerd (pid {pid}) exited"))
        }) {
            Ok(()) => return Ok(()),
            Err(err) if alive() => {
                return Err(err.context(format!("dockerd (pid {pid}) runs but does not answer")));
            }
            Err(err) => println!("xtask: {err:#}; starting dockerd ourselves"),
        }
    }
    let dockerd = find_program("dockerd").context("dockerd is not installed")?;
    if let Some(dir) = log.parent() {
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open {}", log.display()))?;
    let err = out
        .try_clone()
        .with_context(|| format!("open {}", log.display()))?;
    let mut child = Command::new(&dockerd)
        .args(DOCKERD_ARGS)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .with_context(|| format!("start {}", dockerd.display()))?;
    println!(
        "xtask: started dockerd {} (pid {}), log: {}",
        DOCKERD_ARGS.join(" "),
        child.id(),
        log.display()
    );
    let started = Instant::now();
    wait_for_daemon(|| match child.try_wait() {
        Ok(None) => Ok(()),
        Ok(Some(status)) => Err(format!("dockerd exited ({status})")),
        Err(err) => Err(format!("cannot wait for dockerd: {err}")),
    })
    .with_context(|| format!("dockerd log ({}):\n{}", log.display(), tail(log, 20)))?;
    println!(
        "xtask: docker daemon answers after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Builds `tag` from the static busybox unless Docker already has it.
///
/// # Errors
/// When the import fails.
pub(crate) fn ensure_image(tag: &str) -> Result<()> {
    if cmd::succeeds(Command::new("docker").args(["image", "inspect", tag])) {
        println!("xtask: image {tag} present");
        return Ok(());
    }
    println!("xtask: building image {tag} (docker import of {BUSYBOX} + applet links)");
    import_image(tag)
}

/// `docker import`s a root filesystem of `/bin/busybox`, a link per applet in [`APPLETS`] and
/// an empty `/tmp` as `tag`, then runs it once to prove the applets work.
///
/// # Errors
/// When the files cannot be written, `tar` or `docker import` fails, or the image does not run.
pub(crate) fn import_image(tag: &str) -> Result<()> {
    let scratch = tempfile::tempdir().context("create a temporary directory")?;
    let rootfs = scratch.path().join("rootfs");
    let bin = rootfs.join("bin");
    fs::create_dir_all(&bin).with_context(|| format!("create {}", bin.display()))?;
    let tmp = rootfs.join("tmp");
    fs::create_dir(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777))
        .with_context(|| format!("chmod {}", tmp.display()))?;
    let busybox = bin.join("busybox");
    fs::copy(BUSYBOX, &busybox).with_context(|| format!("copy {BUSYBOX}"))?;
    fs::set_permissions(&busybox, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", busybox.display()))?;
    for applet in APPLETS {
        let link = bin.join(applet);
        symlink("busybox", &link).with_context(|| format!("link {}", link.display()))?;
    }
    let tarball = scratch.path().join("rootfs.tar");
    cmd::run(
        Command::new("tar")
            .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tarball)
            .arg("."),
    )?;
    cmd::output(
        Command::new("docker")
            .args(["import", "--change", "ENV PATH=/bin", "--message"])
            .arg(format!("cargo xtask test: {BUSYBOX} and applet links"))
            .arg(&tarball)
            .arg(tag),
    )?;
    let smoke = cmd::output(Command::new("docker").args([
        "run",
        "--rm",
        "--label",
        TEST_LABEL,
        tag,
        "sh",
        "-c",
        "seq 3 | wc -l",
    ]))
    .with_context(|| format!("the new image {tag} does not run"))?;
    ensure!(
        smoke == "3",
        "the new image {tag} printed {smoke:?} for `seq 3 | wc -l`"
    );
    Ok(())
}

/// Removes the containers labelled `collector-test` that an earlier, interrupted run left.
///
/// # Errors
/// When `docker ps` or `docker rm` fails.
pub(crate) fn remove_leftover_containers() -> Result<()> {
    let removed = remove_labelled(TEST_LABEL)?;
    if removed > 0 {
        println!("xtask: removed {removed} leftover test container(s)");
    }
    Ok(())
}

/// Removes (`docker rm --force`) every container that has the label `label` (a key, or
/// `key=value`), running or not, and returns how many there were.
///
/// # Errors
/// When `docker ps` or `docker rm` fails.
pub(crate) fn remove_labelled(label: &str) -> Result<usize> {
    let ids = cmd::output(Command::new("docker").args([
        "ps",
        "--all",
        "--quiet",
        "--filter",
        &format!("label={label}"),
    ]))?;
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if !ids.is_empty() {
        cmd::output(Command::new("docker").args(["rm", "--force"]).args(&ids))?;
    }
    Ok(ids.len())
}

/// Docker's root directory (`docker info`'s `DockerRootDir`), where the json-file logs are.
///
/// # Errors
/// When the daemon does not answer.
pub(crate) fn root_dir() -> Result<String> {
    cmd::output(Command::new("docker").args(["info", "--format", "{{.DockerRootDir}}"]))
        .context("ask Docker for its root directory")
}

/// The daemon's version, or why it does not answer.
fn probe_daemon() -> std::result::Result<String, String> {
    let out = Command::new("docker")
        // `docker version` says why it cannot connect; `docker info --format` (20.10) only
        // reports a template error then.
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("cannot run `docker`: {err}"))?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() && !version.is_empty() {
        Ok(version)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// Polls the daemon until it answers, for at most [`DAEMON_START_TIMEOUT`]; `alive` says
/// whether waiting still makes sense.
fn wait_for_daemon(mut alive: impl FnMut() -> std::result::Result<(), String>) -> Result<()> {
    let deadline = Instant::now() + DAEMON_START_TIMEOUT;
    loop {
        let last = match probe_daemon() {
            Ok(_) => return Ok(()),
            Err(err) => err,
        };
        if let Err(why) = alive() {
            bail!("{why} before the daemon answered (last probe: {last})");
        }
        if Instant::now() >= deadline {
            bail!(
                "the daemon did not answer within {} s (last probe: {last})",
                DAEMON_START_TIMEOUT.as_secs()
            );
        }
        thread::sleep(Duration::from_millis(250));
    }
}

/// The pid of a live `dockerd` that owns Docker's pidfile.
fn running_dockerd() -> Option<u32> {
    let pid: u32 = fs::read_to_string("/var/run/docker.pid")
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (comm.trim() == "dockerd").then_some(pid)
}

/// Fails with a clear message unless we are root.
pub(crate) fn ensure_root(what: &str) -> Result<()> {
    ensure!(
        nix::unistd::geteuid().is_root(),
        "{what} needs root: run `cargo xtask test` as root on a Debian 12 machine"
    );
    Ok(())
}

/// `apt-get` that never asks questions.
pub(crate) fn apt_get() -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

/// Finds `name` in `PATH`, then in the sbin directories a non-login root shell may lack.
pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| {
            fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Whether `path` is a statically linked 64-bit little-endian ELF executable (no `PT_INTERP`
/// program header), i.e. runs in an image that has nothing else.
pub(crate) fn is_static_elf(path: &Path) -> bool {
    let mut head = Vec::new();
    let read = File::open(path).and_then(|f| f.take(64 * 1024).read_to_end(&mut head));
    read.is_ok() && elf_is_static(&head)
}

/// [`is_static_elf`] on the file's first bytes.
fn elf_is_static(head: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |at: usize| {
        head.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        head.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |at: usize| {
        head.get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    // e_ident: magic, ELFCLASS64 (2), ELFDATA2LSB (1).
    if head.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    let Ok(phoff) = usize::try_from(phoff) else {
        return false;
    };
    (0..usize::from(phnum)).all(|i| {
        u32_at(phoff + i * usize::from(phentsize)).is_some_and(|p_type| p_type != PT_INTERP)
    })
}

/// The last `lines` lines of a log file, for error messages.
fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busybox_and_dynamic_binaries_are_told_apart() {
        assert!(is_static_elf(Path::new(BUSYBOX)), "{BUSYBOX} is static");
        // The test binary itself links libc dynamically.
        let me = env::current_exe().unwrap();
        assert!(!is_static_elf(&me), "{} has an interpreter", me.display());
        assert!(!elf_is_static(b"#!/bin/sh\n"));
        assert!(!elf_is_static(b""));
    }

    /// The fresh-machine path: the image is built the way `cargo xtask test` builds it on a
    /// machine that lacks it, under a throwaway tag.
    #[test]
    fn imported_image_has_every_applet() {
        let tag = format!(
            "collector-test/busybox:xtask-selftest-{}",
            std::process::id()
        );
        let result = import_image(&tag).and_then(|()| {
            cmd::output(Command::new("docker").args([
                "run",
                "--rm",
                "--label",
                TEST_LABEL,
                &tag,
                "sh",
                "-c",
                &format!(
                    "for a in {}; do [ -x /bin/$a ] || echo missing $a; done; \
                     [ -d /tmp ] || echo missing /tmp; echo done",
                    APPLETS.join(" ")
                ),
            ]))
        });
        let removed = cmd::output(Command::new("docker").args(["rmi", &tag]));
        assert_eq!(result.unwrap(), "done");
        removed.unwrap();
    }
}
