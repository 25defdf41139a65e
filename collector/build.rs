//! Compiles the eBPF programs (`collector-ebpf/bpf/collector.bpf.c`) into a CO-RE object that
//! the collector embeds, when the `ebpf` feature is on.
//!
//! Only Debian's `clang` is needed (`apt-get install clang`; `cargo xtask test` installs it):
//! the programs bring their own helper declarations and kernel structs, and the kernel's BTF
//! relocates field offsets at load time. Without a working clang the collector still builds:
//! eBPF is compiled out, cargo prints a warning, and the collector says so once at start.
//! `CLANG` names another clang binary.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Set when the object was built; `discover::ebpf` embeds it only then.
const CFG: &str = "collector_ebpf_object";

/// The object's file name in `OUT_DIR`.
const OBJECT: &str = "collector.bpf.o";

fn main() {
    println!("cargo::rustc-check-cfg=cfg({CFG})");
    if env::var_os("CARGO_FEATURE_EBPF").is_none() {
        return;
    }
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let bpf_dir = manifest_dir.join("../collector-ebpf/bpf");
    for file in ["collector.bpf.c", "abi.h", "kernel.h"] {
        println!("cargo::rerun-if-changed={}", bpf_dir.join(file).display());
    }
    println!("cargo::rerun-if-env-changed=CLANG");
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap()).join(OBJECT);
    let clang = env::var_os("CLANG").unwrap_or_else(|| "clang".into());
    let output = Command::new(&clang)
        // `-g` emits the BTF that CO-RE relocations and BTF-defined maps need; `-O2` is what
        // the verifier expects (unoptimised BPF code rarely verifies).
        .args(["-target", "bpf", "-O2", "-g", "-Wall", "-Werror", "-c"])
        .arg(bpf_dir.join("collector.bpf.c"))
        .arg("-o")
        .arg(&out)
        .output();
    let clang_name = Path::new(&clang).display();
    match output {
        Ok(o) if o.status.success() => {
            println!("cargo::rustc-cfg={CFG}");
            println!("cargo::rustc-env=COLLECTOR_EBPF_OBJECT={}", out.display());
        }
        Ok(o) => {
            let stderr = String::from_utf8_lossy(&o.stderr);
            let first = stderr.lines().take(5).collect::<Vec<_>>().join(" | ");
            println!(
                "cargo::warning=eBPF compiled out: `{clang_name}` failed to compile collector-ebpf/bpf/collector.bpf.c ({}): {first}",
                o.status
            );
        }
        Err(e) => {
            println!(
                "cargo::warning=eBPF compiled out: `{clang_name}` cannot run ({e}); install clang (`apt-get install clang`) and build again"
            );
            // Rerun on every build until clang runs: a path that never exists counts as
            // changed. (Watching `/usr/bin/clang` did not do: apt installs it with the
            // package's older mtime, which cargo took as unchanged, and eBPF stayed compiled
            // out after clang was installed.)
            println!(
                "cargo::rerun-if-changed={}",
                Path::new(&env::var_os("OUT_DIR").unwrap())
                    .join("rerun-until-clang-runs")
                    .display()
            );
        }
    }
}
