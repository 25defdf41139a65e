/* SPDX-License-Identifier: Apache-2.0 OR GPL-2.0-only */
/*
 * The little of the kernel's world that collector.bpf.c needs, written by hand so the build
 * needs nothing but clang: no kernel headers, no libbpf-dev, no bpftool-generated vmlinux.h.
 *
 * - Helper declarations: the numbers are the stable UAPI ids of `enum bpf_func_id`
 *   (include/uapi/linux/bpf.h); they are what libbpf's bpf_helper_defs.h declares too.
 * - Kernel structs carry only the fields the programs read, with
 *   `__attribute__((preserve_access_index))`: clang records every field access as a CO-RE
 *   relocation, and the loader (aya) rewrites the offsets against the running kernel's BTF
 *   (/sys/kernel/btf/vmlinux). So the field order and padding below do not matter, only the
 *   type and field names do (https://docs.kernel.org/bpf/libbpf/libbpf_overview.html#bpf-co-re-compile-once-run-everywhere).
 */
#ifndef COLLECTOR_KERNEL_H
#define COLLECTOR_KERNEL_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef int __s32;
typedef unsigned long long __u64;
typedef long long __s64;
typedef int pid_t;

#define SEC(name) __attribute__((section(name), used))
#define __always_inline inline __attribute__((always_inline))

/* BTF-defined maps, as libbpf's bpf_helpers.h spells them. */
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

/* enum bpf_map_type */
#define BPF_MAP_TYPE_PERCPU_ARRAY 6
#define BPF_MAP_TYPE_LRU_HASH 9
#define BPF_MAP_TYPE_RINGBUF 27

/* map update flags */
#define BPF_ANY 0

/* Helpers (enum bpf_func_id). */
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value, __u64 flags) = (void *)2;
static long (*bpf_map_delete_elem)(void *map, const void *key) = (void *)3;
static __u64 (*bpf_get_current_pid_tgid)(void) = (void *)14;
static long (*bpf_get_current_comm)(void *buf, __u32 size_of_buf) = (void *)16;
static __u64 (*bpf_get_current_task)(void) = (void *)35;
static __u64 (*bpf_get_current_cgroup_id)(void) = (void *)80;
static long (*bpf_probe_read_kernel)(void *dst, __u32 size, const void *unsafe_ptr) = (void *)113;
static long (*bpf_probe_read_kernel_str)(void *dst, __u32 size, const void *unsafe_ptr) = (void *)115;
static __u64 (*bpf_ktime_get_boot_ns)(void) = (void *)125;
static void *(*bpf_ringbuf_reserve)(void *ringbuf, __u64 size, __u64 flags) = (void *)131;
static void (*bpf_ringbuf_submit)(void *data, __u64 flags) = (void *)132;

/*
 * Reads `src` (an lvalue reached through preserve_access_index structs) into `dst`, with the
 * field offset relocated: libbpf's BPF_CORE_READ_INTO for one level.
 */
#define CORE_READ_INTO(dst, src) \
	bpf_probe_read_kernel(&(dst), sizeof(dst), __builtin_preserve_access_index(&(src)))

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

/* include/linux/types.h */
typedef struct {
	int counter;
} atomic_t;

/* include/linux/pid.h: a pid as seen from one namespace level. */
struct upid {
	int nr;
	void *ns;
};

/* include/linux/pid.h: numbers[0] is the initial namespace, numbers[level] the task's own. */
struct pid {
	unsigned int level;
	struct upid numbers[1];
};

/* include/linux/sched/signal.h: `live` counts the threads of the group not yet exiting. */
struct signal_struct {
	atomic_t live;
};

/* include/linux/sched.h */
struct task_struct {
	pid_t pid;
	pid_t tgid;
	int exit_code;
	struct task_struct *group_leader;
	struct pid *thread_pid;
	struct signal_struct *signal;
};

/* include/linux/trace_events.h: the header of every tracepoint record. */
struct trace_entry {
	unsigned short type;
	unsigned char flags;
	unsigned char preempt_count;
	int pid;
};

/* include/trace/events/cgroup.h: DECLARE_EVENT_CLASS(cgroup, ...) for cgroup_mkdir/rmdir. */
struct trace_event_raw_cgroup {
	struct trace_entry ent;
	int root;
	int level;
	__u64 id;
	__u32 __data_loc_path;
};

/* include/trace/events/sched.h: TRACE_EVENT(sched_process_exec, ...). */
struct trace_event_raw_sched_process_exec {
	struct trace_entry ent;
	__u32 __data_loc_filename;
	pid_t pid;
	pid_t old_pid;
};

/* include/trace/events/oom.h: TRACE_EVENT(mark_victim, ...); `pid` is its first field on
 * every kernel that has the event (4.8+). */
struct trace_event_raw_mark_victim {
	struct trace_entry ent;
	int pid;
};

#pragma clang attribute pop

#endif
