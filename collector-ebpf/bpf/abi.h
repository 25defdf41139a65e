/* SPDX-License-Identifier: Apache-2.0 OR GPL-2.0-only */
/*
 * The ring buffer record and map layouts shared with userspace. The Rust side is
 * collector-ebpf/src/abi.rs; both pin the same sizes and offsets (the _Static_asserts below
 * and the const asserts there), so a change to one that is not made to the other fails the
 * build.
 */
#ifndef COLLECTOR_ABI_H
#define COLLECTOR_ABI_H

#include "kernel.h"

/* event kinds */
#define EVENT_CGROUP_MKDIR 1
#define EVENT_CGROUP_RMDIR 2
#define EVENT_EXEC 3
#define EVENT_EXIT 4

/* event flags */
#define FLAG_PID_NS_INIT 1   /* the process is pid 1 of a child pid namespace (a container's init) */
#define FLAG_OOM_VICTIM 2    /* the OOM killer chose this process (oom:mark_victim) */
#define FLAG_CORE_DUMPED 4   /* the process dumped core */

/* COUNTERS indexes */
#define COUNTER_SENT 0
#define COUNTER_DROPPED 1
#define COUNTER_COUNT 2

#define COMM_LEN 16
#define PATH_LEN 256

struct collector_event {
	__u64 time_ns;      /* bpf_ktime_get_boot_ns(): CLOCK_BOOTTIME */
	__u64 cgroup_id;    /* mkdir/rmdir: that cgroup; exec/exit: the task's cgroup v2 */
	__u32 kind;         /* EVENT_* */
	__u32 flags;        /* FLAG_* */
	__u32 pid;          /* exec/exit: the process (thread group) id in the initial pid namespace */
	__s32 exit_code;    /* exit: the status the process exited with (0-255), when signal == 0 */
	__u32 signal;       /* exit: the signal that ended it, 0 if it exited */
	__s32 cgroup_level; /* mkdir/rmdir: depth below the hierarchy root */
	char comm[COMM_LEN];
	char path[PATH_LEN]; /* mkdir/rmdir: cgroup path from the v2 root; exec: the file executed */
};

_Static_assert(sizeof(struct collector_event) == 312, "abi.rs EVENT_SIZE");
_Static_assert(__builtin_offsetof(struct collector_event, cgroup_id) == 8, "abi.rs");
_Static_assert(__builtin_offsetof(struct collector_event, kind) == 16, "abi.rs");
_Static_assert(__builtin_offsetof(struct collector_event, flags) == 20, "abi.rs");
_Static_assert(__builtin_offsetof(struct collector_event, pid) == 24, "abi.rs");
_Static_assert(__builtin_offsetof(struct collector_event, exit_code) == 28, "abi.rs");
_Static_assert(__builtin_offsetof(struct collector_event, signal) == 32, "abi.rs");
_Static_assert(__builtin_offsetof(struct collector_event, cgroup_level) == 36, "abi.rs");
_Static_assert(__builtin_offsetof(struct collector_event, comm) == 40, "abi.rs");
_Static_assert(__builtin_offsetof(struct collector_event, path) == 56, "abi.rs");

#endif
