//! `cargo xtask image`: the `collector` and `collector-companion` images, `FROM scratch`.
//!
//! Each binary is built static for `x86_64-unknown-linux-musl` with the `release-small`
//! profile and `docker import`ed from a tar written here, so nothing is pulled and no base
//! image is needed. The collector's C parts (SQLite, aws-lc) are compiled with `musl-gcc`
//! (Debian's `musl-tools`, installed when missing). Its AWS client reads the system's CA
//! bundle (`rustls-native-certs`), so the image carries the host's
//! `/etc/ssl/certs/ca-certificates.crt`. Should a binary come out dynamic, the image gets the
//! libraries and the loader `ldd` lists instead, at their paths.
//!
//! `/collector` carries file capabilities (`security.capability`, written into the tar as a
//! PAX `SCHILY.xattr` record, which `docker import` applies): the permitted set
//! [`COLLECTOR_FILE_CAPS`], no effective bit. A collector started as a non-root user gets
//! those of them the container's bounding set allows (`--cap-add`, ECS
//! `linuxParameters.capabilities.add`) and makes them effective itself (`collector` `main.rs`,
//! `raise_permitted_capabilities`); as root they change nothing.
//!
//! Finally it runs `--version` in each image, measures the companion's resident memory while
//! it waits for a collector, and prints the sizes.
//!
//! `cargo xtask test` also imports [`TEST_COLLECTOR_IMAGE`] from the debug collector it
//! builds anyway (dynamic: with the libraries `ldd` lists), so the security tests run the
//! image's layout and file capabilities without a second, optimised build.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};

use crate::{cmd, docker, workspace};

/// The target of the image binaries: musl links statically without extra flags.
const TARGET: &str = "x86_64-unknown-linux-musl";

/// The cargo profile of the image binaries (root `Cargo.toml`).
const PROFILE: &str = "release-small";

/// The host's CA bundle (Debian's `ca-certificates`).
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The image `cargo xtask test` makes of the debug collector (the tests crate names it too).
pub(crate) const TEST_COLLECTOR_IMAGE: &str = "collector-test/collector:latest";

/// The capabilities `/collector` may hold (capability numbers, linux/capability.h): what
/// `collector taskdef daemon` adds, `DAC_READ_SEARCH` (2) and `SYS_PTRACE` (19), and what
/// eBPF needs where it is enabled, `SYS_ADMIN` (21), `PERFMON` (38), `BPF` (39).
const COLLECTOR_FILE_CAPS: [u32; 5] = [2, 19, 21, 38, 39];

/// Options of `cargo xtask image`.
#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// Build only this image.
    #[arg(long, value_enum)]
    pub(crate) only: Option<Which>,
    /// The tag both images get.
    #[arg(long, default_value = "latest")]
    pub(crate) tag: String,
    /// Make the image of this binary instead of building one (e.g. the debug collector, for
    /// a quick image to test with).
    #[arg(long, requires = "only")]
    pub(crate) binary: Option<PathBuf>,
}

/// One of the images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Which {
    /// `collector-companion`: `/companion`.
    Companion,
    /// `collector`: `/collector` and the CA bundle.
    Collector,
}

impl Which {
    /// The cargo package and binary name.
    fn package(self) -> &'static str {
        match self {
            Which::Companion => "companion",
            Which::Collector => "collector",
        }
    }

    /// The image repository.
    fn repository(self) -> &'static str {
        match self {
            Which::Companion => "collector-companion",
            Which::Collector => "collector",
        }
    }
}

/// What goes into an image.
#[derive(Debug, PartialEq, Eq)]
struct ImageSpec {
    /// `(path in the image, file on the host, mode)`.
    files: Vec<(String, PathBuf, u32)>,
    /// `docker import --change` instructions.
    changes: Vec<String>,
    /// `(path in the image, security.capability value)`: file capabilities.
    file_caps: Vec<(String, Vec<u8>)>,
}

/// The image of `which` around `binary`; `extra` are further host files (CA bundle, shared
/// libraries), each at its own path in the image.
fn image_spec(which: Which, binary: &Path, extra: &[PathBuf]) -> ImageSpec {
    let name = which.package();
    let mut files = vec![(name.to_owned(), binary.to_path_buf(), 0o755)];
    for path in extra {
        let inside = path.to_string_lossy().trim_start_matches('/').to_owned();
        files.push((inside, path.clone(), 0o644 | (mode_of(path) & 0o111)));
    }
    let mut changes = vec![format!(r#"ENTRYPOINT ["/{name}"]"#)];
    let mut file_caps = Vec::new();
    match which {
        Which::Companion => {
            changes.push("LABEL collector.role=companion".to_owned());
        }
        Which::Collector => {
            changes.push(r#"CMD ["run"]"#.to_owned());
            changes.push(format!("ENV SSL_CERT_FILE={CA_BUNDLE}"));
            file_caps.push((name.to_owned(), vfs_cap_data(&COLLECTOR_FILE_CAPS)));
        }
    }
    ImageSpec {
        files,
        changes,
        file_caps,
    }
}

/// The `security.capability` value granting `caps` as permitted, none inheritable, without
/// the effective bit: `struct vfs_cap_data`, revision 2 (linux/capability.h), little-endian.
fn vfs_cap_data(caps: &[u32]) -> Vec<u8> {
    /// `VFS_CAP_REVISION_2`.
    const REVISION_2: u32 = 0x0200_0000;
    let mut permitted = [0u32; 2];
    for &cap in caps {
        permitted[(cap / 32) as usize] |= 1 << (cap % 32);
    }
    let mut value = REVISION_2.to_le_bytes().to_vec();
    for half in permitted {
        value.extend(half.to_le_bytes()); // permitted
        value.extend(0u32.to_le_bytes()); // inheritable
    }
    value
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    fs::metadata(path).map_or(0, |m| m.permissions().mode())
}

/// The libraries and the loader in `ldd` output (`name => /path (0x..)`, `/path (0x..)`);
/// `linux-vdso` has no file and is left out.
fn parse_ldd(output: &str) -> Vec<PathBuf> {
    output
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// `1234567` as `1.18 MiB`.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    // Sizes here are far below 2^52, where f64 stops being exact.
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1024.0 && unit < UNITS.len() - 1 {
        size /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{size:.2} {}", UNITS[unit])
    }
}

/// One row of the report.
struct Row {
    image: String,
    binary: u64,
    image_size: u64,
    rss_kib: Option<u64>,
}

/// Builds the images and prints their sizes.
///
/// # Errors
/// When a build, the import or the smoke run fails.
pub(crate) fn image(options: &Options) -> Result<std::process::ExitCode> {
    let which: Vec<Which> = match options.only {
        Some(one) => vec![one],
        None => vec![Which::Companion, Which::Collector],
    };
    let target = workspace::target_dir();
    if let (Some(binary), [one]) = (&options.binary, which.as_slice()) {
        docker::ensure_daemon(&target.join("xtask").join("dockerd.log"))
            .context("starting the Docker daemon")?;
        import_binary(
            *one,
            binary,
            &format!("{}:{}", one.repository(), options.tag),
        )?;
        return Ok(std::process::ExitCode::SUCCESS);
    }
    ensure_musl_target()?;
    if which.contains(&Which::Collector) {
        ensure_musl_gcc()?;
    }
    docker::ensure_daemon(&target.join("xtask").join("dockerd.log"))
        .context("starting the Docker daemon")?;
    let mut rows = Vec::new();
    for one in which {
        let binary = build(one)?;
        let tag = format!("{}:{}", one.repository(), options.tag);
        import_binary(one, &binary, &tag)?;
        let rss_kib = match one {
            Which::Companion => Some(companion_rss(&tag)?),
            Which::Collector => None,
        };
        rows.push(Row {
            image: tag.clone(),
            binary: fs::metadata(&binary)
                .with_context(|| format!("stat {}", binary.display()))?
                .len(),
            image_size: cmd::output(Command::new("docker").args([
                "image",
                "inspect",
                "-f",
                "{{.Size}}",
                &tag,
            ]))?
            .parse()
            .context("docker image inspect printed no size")?,
            rss_kib,
        });
    }
    println!();
    println!(
        "{:<32} {:>12} {:>12} {:>14}",
        "image", "binary", "image", "RSS (waiting)"
    );
    for row in rows {
        println!(
            "{:<32} {:>12} {:>12} {:>14}",
            row.image,
            human_size(row.binary),
            human_size(row.image_size),
            row.rss_kib
                .map_or_else(|| "-".to_owned(), |kib| human_size(kib * 1024)),
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// Makes the image `tag` of `which` around `binary` (with the libraries `ldd` lists when it is
/// not static, and the CA bundle for the collector) and runs `--version` in it.
///
/// # Errors
/// When `ldd`, the import or the smoke run fails.
pub(crate) fn import_binary(which: Which, binary: &Path, tag: &str) -> Result<()> {
    let mut extra = Vec::new();
    if !docker::is_static_elf(binary) {
        println!(
            "xtask: {} is not static; adding the libraries ldd lists",
            binary.display()
        );
        extra.extend(parse_ldd(&cmd::output(Command::new("ldd").arg(binary))?));
    }
    if which == Which::Collector {
        if Path::new(CA_BUNDLE).exists() {
            extra.push(PathBuf::from(CA_BUNDLE));
        } else {
            println!("xtask: warning: no {CA_BUNDLE} on this host; HTTPS sinks will fail");
        }
    }
    let spec = image_spec(which, binary, &extra);
    import(&spec, tag)?;
    let version = cmd::output(Command::new("docker").args(["run", "--rm", tag, "--version"]))
        .with_context(|| format!("`docker run --rm {tag} --version` failed"))?;
    println!("xtask: {tag}: `--version` prints {version:?}");
    Ok(())
}

/// `cargo build --profile release-small --target x86_64-unknown-linux-musl -p NAME`; the
/// binary's path.
fn build(which: Which) -> Result<PathBuf> {
    let name = which.package();
    println!("xtask: cargo build --profile {PROFILE} --target {TARGET} -p {name}");
    cmd::run(workspace::cargo().args([
        "build",
        "--profile",
        PROFILE,
        "--target",
        TARGET,
        "-p",
        name,
    ]))?;
    let binary = workspace::target_dir()
        .join(TARGET)
        .join(PROFILE)
        .join(name);
    ensure!(binary.is_file(), "{} was not built", binary.display());
    Ok(binary)
}

/// Writes the image's files to a tar and `docker import`s it as `tag`.
fn import(spec: &ImageSpec, tag: &str) -> Result<()> {
    let scratch = tempfile::tempdir().context("create a temporary directory")?;
    let tarball = scratch.path().join("rootfs.tar");
    let file = File::create(&tarball).with_context(|| format!("create {}", tarball.display()))?;
    let mut tar = tar::Builder::new(file);
    let mut dirs = std::collections::BTreeSet::new();
    for (inside, host, mode) in &spec.files {
        // Parent directories first, once each (a scratch image has none).
        let mut parent = Path::new(inside).parent();
        let mut missing = Vec::new();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            if dirs.insert(dir.to_path_buf()) {
                missing.push(dir.to_path_buf());
            }
            parent = dir.parent();
        }
        for dir in missing.into_iter().rev() {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            tar.append_data(&mut header, &dir, std::io::empty())
                .with_context(|| format!("add {} to the tar", dir.display()))?;
        }
        let data = fs::read(host).with_context(|| format!("read {}", host.display()))?;
        if let Some((_, caps)) = spec.file_caps.iter().find(|(path, _)| path == inside) {
            tar.append_pax_extensions([("SCHILY.xattr.security.capability", caps.as_slice())])
                .with_context(|| format!("add the file capabilities of {inside} to the tar"))?;
        }
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(*mode);
        header.set_size(data.len() as u64);
        tar.append_data(&mut header, inside, data.as_slice())
            .with_context(|| format!("add {inside} to the tar"))?;
    }
    tar.into_inner()
        .context("finish the tar")?
        .sync_all()
        .context("write the tar")?;
    let mut import = Command::new("docker");
    import.arg("import");
    for change in &spec.changes {
        import.args(["--change", change]);
    }
    import
        .args(["--message", "cargo xtask image"])
        .arg(&tarball)
        .arg(tag);
    cmd::output(&mut import)?;
    println!("xtask: imported {tag}");
    Ok(())
}

/// Runs the companion image waiting for a collector that is not there
/// (`COLLECTOR_UNREACHABLE_TIMEOUT=0`) and reads its resident memory from `/proc`.
fn companion_rss(tag: &str) -> Result<u64> {
    let id = cmd::output(Command::new("docker").args([
        "run",
        "-d",
        "--rm",
        "-e",
        "COLLECTOR_UNREACHABLE_TIMEOUT=0",
        tag,
    ]))?;
    let result = (|| {
        thread::sleep(Duration::from_secs(2));
        let pid =
            cmd::output(Command::new("docker").args(["inspect", "-f", "{{.State.Pid}}", &id]))?;
        ensure!(pid != "0", "the companion exited (docker logs {id})");
        let status = fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("read /proc/{pid}/status"))?;
        vm_rss_kib(&status).context("no VmRSS in /proc/<pid>/status")
    })();
    cmd::output(Command::new("docker").args(["rm", "-f", &id]))?;
    let kib = result?;
    println!("xtask: {tag}: VmRSS {kib} KiB while waiting");
    Ok(kib)
}

/// `VmRSS:     1234 kB` in a `/proc/<pid>/status`.
fn vm_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Adds the musl target with rustup when it is missing.
fn ensure_musl_target() -> Result<()> {
    let installed = cmd::output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if installed.lines().any(|t| t.trim() == TARGET) {
        return Ok(());
    }
    println!("xtask: rustup target add {TARGET}");
    cmd::run(Command::new("rustup").args(["target", "add", TARGET]))
}

/// Installs Debian's `musl-tools` (`musl-gcc`) when missing: the collector's C dependencies
/// are compiled with it.
fn ensure_musl_gcc() -> Result<()> {
    if docker::find_program("musl-gcc").is_some() {
        return Ok(());
    }
    docker::ensure_root("installing musl-tools (musl-gcc, for the collector's C code)")?;
    println!("xtask: installing musl-tools");
    cmd::run(docker::apt_get().args(["-q", "update"]))?;
    cmd::run(docker::apt_get().args(["-q", "install", "-y", "musl-tools"]))?;
    if docker::find_program("musl-gcc").is_none() {
        bail!("musl-gcc is still missing after installing musl-tools");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        let spec = image_spec(Which::Companion, Path::new("/t/companion"), &[]);
        assert_eq!(
            spec.files,
            [("companion".to_owned(), PathBuf::from("/t/companion"), 0o755)]
        );
        assert_eq!(
            spec.changes,
            [
                r#"ENTRYPOINT ["/companion"]"#,
                "LABEL collector.role=companion"
            ]
        );
        let spec = image_spec(
            Which::Collector,
            Path::new("/t/collector"),
            &[PathBuf::from("/nonexistent/ca.crt")],
        );
        assert_eq!(spec.files[1].0, "nonexistent/ca.crt");
        assert_eq!(spec.files[1].2, 0o644);
        assert_eq!(
            spec.changes[..2],
            [r#"ENTRYPOINT ["/collector"]"#, r#"CMD ["run"]"#]
        );
        assert_eq!(
            spec.file_caps,
            [("collector".to_owned(), vfs_cap_data(&COLLECTOR_FILE_CAPS))]
        );
    }

    /// What `getcap` shows as `cap_dac_read_search,cap_sys_ptrace=p`: revision 2, no
    /// effective bit, bits 2 and 19 permitted; BPF (39) in the upper half.
    #[test]
    fn file_capabilities() {
        assert_eq!(
            vfs_cap_data(&[2, 19]),
            [
                0, 0, 0, 2, // magic_etc
                0x04, 0, 0x08, 0, 0, 0, 0, 0, // permitted, inheritable (0-31)
                0, 0, 0, 0, 0, 0, 0, 0, // (32-63)
            ]
        );
        assert_eq!(vfs_cap_data(&[39])[12..16], [0x80, 0, 0, 0]);
    }

    #[test]
    fn ldd_output() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(out),
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
        assert!(parse_ldd("\tstatically linked\n").is_empty());
    }

    #[test]
    fn sizes_and_rss() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1_415_200), "1.35 MiB");
        assert_eq!(
            vm_rss_kib("Name:\tcompanion\nVmRSS:\t    1880 kB\n"),
            Some(1880)
        );
        assert_eq!(vm_rss_kib("Name:\tx\n"), None);
    }
}
