//! The collector's eBPF side: the programs, and the record layout they share with userspace.
//!
//! The programs are C (`bpf/collector.bpf.c`), compiled with clang by the collector's
//! `build.rs` into a CO-RE object that the collector embeds and loads with aya. C because
//! Debian's clang is the only thing that build needs (a Rust eBPF program needs a nightly
//! toolchain and a `bpf-linker` built against that nightly's LLVM); see `docs/ebpf.md`.
//!
//! # Layout
//! - `bpf/kernel.h`: helper ids and the kernel structs the programs read, with CO-RE
//!   relocations instead of a generated `vmlinux.h`.
//! - `bpf/abi.h` and [`abi`]: the ring buffer record, its kinds and flags, the counter
//!   indexes; each side asserts the same sizes and offsets.
//! - `bpf/collector.bpf.c`: the programs (cgroup mkdir/rmdir, exec and exit of container
//!   init processes, OOM kills).
//! - [`OBJECT_SOURCES`]: the files the object is built from, for `build.rs`.

#![cfg_attr(not(test), no_std)]

pub mod abi;

/// The C sources of the object, relative to this crate's directory; `build.rs` compiles the
/// first and reruns when any of them changes.
pub const OBJECT_SOURCES: [&str; 3] = ["bpf/collector.bpf.c", "bpf/abi.h", "bpf/kernel.h"];

/// The programs in the object: (name in the object, tracepoint category, tracepoint name).
/// The loader attaches each one; names are the C function names.
pub const PROGRAMS: [(&str, &str, &str); 5] = [
    ("cgroup_mkdir", "cgroup", "cgroup_mkdir"),
    ("cgroup_rmdir", "cgroup", "cgroup_rmdir"),
    ("sched_process_exec", "sched", "sched_process_exec"),
    ("sched_process_exit", "sched", "sched_process_exit"),
    ("mark_victim", "oom", "mark_victim"),
];

/// The ring buffer map.
pub const EVENTS_MAP: &str = "EVENTS";

/// The per-CPU counters map (indexes in [`abi::Counter`]).
pub const COUNTERS_MAP: &str = "COUNTERS";
