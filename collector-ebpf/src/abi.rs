//! The ring buffer record and the counter indexes, as `bpf/abi.h` defines them.
//!
//! Sizes and offsets are pinned by const assertions here and `_Static_assert`s there, to
//! the same numbers.

use core::mem::{offset_of, size_of};

/// Length of `comm` (the kernel's `TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;

/// Length of `path`: cgroup paths of containers are about 100 bytes
/// (`/ecs/<32 hex>/<64 hex>`); longer ones are cut (NUL-terminated).
pub const PATH_LEN: usize = 256;

/// What a record reports ([`Event::kind`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum EventKind {
    /// A cgroup v2 directory was created (`cgroup:cgroup_mkdir`).
    CgroupMkdir = 1,
    /// A cgroup v2 directory was removed (`cgroup:cgroup_rmdir`).
    CgroupRmdir = 2,
    /// A container's init process executed a program (`sched:sched_process_exec`).
    Exec = 3,
    /// A container's init process, or an OOM-killed process, died (`sched:sched_process_exit`).
    Exit = 4,
}

impl EventKind {
    /// The kind of a raw `kind` value; `None` for a value this build does not know.
    pub fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            1 => Some(Self::CgroupMkdir),
            2 => Some(Self::CgroupRmdir),
            3 => Some(Self::Exec),
            4 => Some(Self::Exit),
            _ => None,
        }
    }
}

/// [`Event::flags`]: the process is pid 1 of a child pid namespace (a container's init).
pub const FLAG_PID_NS_INIT: u32 = 1;
/// [`Event::flags`]: the OOM killer chose this process (`oom:mark_victim`).
pub const FLAG_OOM_VICTIM: u32 = 2;
/// [`Event::flags`]: the process dumped core.
pub const FLAG_CORE_DUMPED: u32 = 4;

/// Indexes of the per-CPU `COUNTERS` array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Counter {
    /// Records written to the ring buffer.
    Sent = 0,
    /// Records lost because the ring buffer was full.
    Dropped = 1,
}

/// One ring buffer record (`struct collector_event`).
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct Event {
    /// `bpf_ktime_get_boot_ns()`: nanoseconds of `CLOCK_BOOTTIME`.
    pub time_ns: u64,
    /// mkdir/rmdir: that cgroup's id; exec/exit: the task's cgroup v2 id. Equals the inode
    /// of the cgroup v2 directory.
    pub cgroup_id: u64,
    /// An [`EventKind`] value.
    pub kind: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// exec/exit: the process id in the initial pid namespace (the host's).
    pub pid: u32,
    /// exit: the status the process exited with (0-255), when `signal` is 0.
    pub exit_code: i32,
    /// exit: the signal that ended the process, 0 when it exited.
    pub signal: u32,
    /// mkdir/rmdir: depth of the cgroup below the hierarchy root.
    pub cgroup_level: i32,
    /// The task's command name, NUL-padded.
    pub comm: [u8; COMM_LEN],
    /// mkdir/rmdir: the cgroup path from the v2 root (`/docker/<id>`); exec: the file
    /// executed. NUL-terminated.
    pub path: [u8; PATH_LEN],
}

/// Size of [`Event`] in bytes.
pub const EVENT_SIZE: usize = 312;

const _: () = {
    assert!(size_of::<Event>() == EVENT_SIZE);
    assert!(offset_of!(Event, cgroup_id) == 8);
    assert!(offset_of!(Event, kind) == 16);
    assert!(offset_of!(Event, flags) == 20);
    assert!(offset_of!(Event, pid) == 24);
    assert!(offset_of!(Event, exit_code) == 28);
    assert!(offset_of!(Event, signal) == 32);
    assert!(offset_of!(Event, cgroup_level) == 36);
    assert!(offset_of!(Event, comm) == 40);
    assert!(offset_of!(Event, path) == 56);
};

impl Event {
    /// Reads a record from ring buffer bytes; `None` when there are too few.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < EVENT_SIZE {
            return None;
        }
        // SAFETY: `Event` is `repr(C)` plain data (integers and byte arrays): every bit pattern
        // is a valid value; the length was checked and `read_unaligned` allows any alignment.
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<Event>()) })
    }

    /// `comm` up to its first NUL.
    pub fn comm(&self) -> &[u8] {
        until_nul(&self.comm)
    }

    /// `path` up to its first NUL.
    pub fn path(&self) -> &[u8] {
        until_nul(&self.path)
    }
}

fn until_nul(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

#[cfg(feature = "user")]
// SAFETY: `Event` is `repr(C)`, `Copy`, has no padding (asserted layout: every field is
// naturally aligned and the size is the sum) and every bit pattern is valid.
unsafe impl aya::Pod for Event {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_decode_with_their_strings() {
        let mut bytes = [0u8; EVENT_SIZE];
        bytes[16..20].copy_from_slice(&4u32.to_ne_bytes());
        bytes[24..28].copy_from_slice(&1234u32.to_ne_bytes());
        bytes[32..36].copy_from_slice(&9u32.to_ne_bytes());
        bytes[40..42].copy_from_slice(b"dd");
        bytes[56..63].copy_from_slice(b"/docker");
        let ev = Event::from_bytes(&bytes).unwrap();
        assert_eq!(EventKind::from_raw(ev.kind), Some(EventKind::Exit));
        assert_eq!((ev.pid, ev.signal), (1234, 9));
        assert_eq!(ev.comm(), b"dd");
        assert_eq!(ev.path(), b"/docker");
        assert!(Event::from_bytes(&bytes[..EVENT_SIZE - 1]).is_none());
        assert_eq!(EventKind::from_raw(99), None);
    }
}
