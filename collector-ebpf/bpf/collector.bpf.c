// SPDX-License-Identifier: Apache-2.0 OR GPL-2.0-only
//
// Container lifecycle from the kernel, for the collector's discovery and death forensics.
//
// Programs (classic tracepoints, attached by aya from the collector's `discover::ebpf`):
// - cgroup:cgroup_mkdir / cgroup:cgroup_rmdir: a cgroup v2 directory appears or goes (the
//   runtime creates a container's cgroup just before its first process starts, and removes it
//   once the last one exited). Only the v2 hierarchy (hierarchy id 0) is reported: on hybrid
//   hosts each v1 hierarchy fires these too, with its own ids.
// - sched:sched_process_exec: a container's init (pid 1 of a child pid namespace) executed a
//   program: gives its host pid while it starts.
// - sched:sched_process_exit: a container's init, or a process the OOM killer chose, died
//   (its last thread exited): exit status or signal, in the dying task's own cgroup.
// - oom:mark_victim: the OOM killer chose a process; remembered in OOM_VICTIMS until the
//   victim's exit, which is reported from the victim's own context (so the cgroup is the
//   victim's, also for a host-wide OOM that runs in some other task's context).
//
// Records go to one ring buffer (EVENTS); COUNTERS counts per CPU what was sent and what was
// dropped because the buffer was full (userspace logs drops; its periodic rescan repairs
// discovery, and Docker's state fills exit codes).

#include "abi.h"

// The kernel lends GPL-only helpers (bpf_probe_read_kernel) to GPL-compatible programs only;
// this file is offered under GPL-2.0 for that purpose (see the SPDX line).
char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} EVENTS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTER_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} COUNTERS SEC(".maps");

// pid (as oom:mark_victim reports it) -> 1, until that process's group dies. LRU: an entry
// whose exit was never seen (cannot happen for a SIGKILLed process, but a map must not fill
// up for good) is evicted.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u8);
} OOM_VICTIMS SEC(".maps");

static __always_inline void count(__u32 index)
{
	__u64 *value = bpf_map_lookup_elem(&COUNTERS, &index);
	if (value)
		*value += 1; // per-CPU slot: no other CPU writes it
}

static __always_inline struct collector_event *reserve(__u32 kind)
{
	struct collector_event *ev = bpf_ringbuf_reserve(&EVENTS, sizeof(*ev), 0);
	if (!ev) {
		count(COUNTER_DROPPED);
		return 0;
	}
	ev->time_ns = bpf_ktime_get_boot_ns();
	ev->cgroup_id = 0;
	ev->kind = kind;
	ev->flags = 0;
	ev->pid = 0;
	ev->exit_code = 0;
	ev->signal = 0;
	ev->cgroup_level = 0;
	ev->comm[0] = 0;
	ev->path[0] = 0;
	return ev;
}

static __always_inline void submit(struct collector_event *ev)
{
	bpf_ringbuf_submit(ev, 0);
	count(COUNTER_SENT);
}

// True when the thread group of `task` is pid 1 of a pid namespace other than the initial
// one: the init process of a container (Docker, containerd and ECS give each container its
// own pid namespace unless `--pid=host`).
static __always_inline int is_pid_ns_init(struct task_struct *task)
{
	struct task_struct *leader = 0;
	struct pid *pid = 0;
	unsigned int level = 0;
	struct upid upid = {};

	CORE_READ_INTO(leader, task->group_leader);
	if (!leader)
		return 0;
	CORE_READ_INTO(pid, leader->thread_pid);
	if (!pid)
		return 0;
	CORE_READ_INTO(level, pid->level);
	if (level == 0 || level > 32) // MAX_PID_NS_LEVEL is 32
		return 0;
	struct upid *numbers = __builtin_preserve_access_index(&pid->numbers[0]);
	bpf_probe_read_kernel(&upid, sizeof(upid), numbers + level);
	return upid.nr == 1;
}

static __always_inline int cgroup_event(struct trace_event_raw_cgroup *ctx, __u32 kind)
{
	// Hierarchy id 0 is the cgroup v2 hierarchy; its ids are what bpf_get_current_cgroup_id()
	// returns and what `stat -c %i` shows for the directory.
	if (ctx->root != 0 || ctx->level < 1)
		return 0;
	struct collector_event *ev = reserve(kind);
	if (!ev)
		return 0;
	ev->cgroup_id = ctx->id;
	ev->cgroup_level = ctx->level;
	__u32 loc = ctx->__data_loc_path;
	bpf_probe_read_kernel_str(ev->path, sizeof(ev->path), (char *)ctx + (loc & 0xffff));
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	submit(ev);
	return 0;
}

SEC("tracepoint/cgroup/cgroup_mkdir")
int cgroup_mkdir(struct trace_event_raw_cgroup *ctx)
{
	return cgroup_event(ctx, EVENT_CGROUP_MKDIR);
}

SEC("tracepoint/cgroup/cgroup_rmdir")
int cgroup_rmdir(struct trace_event_raw_cgroup *ctx)
{
	return cgroup_event(ctx, EVENT_CGROUP_RMDIR);
}

SEC("tracepoint/sched/sched_process_exec")
int sched_process_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	if (!is_pid_ns_init(task))
		return 0;
	struct collector_event *ev = reserve(EVENT_EXEC);
	if (!ev)
		return 0;
	ev->cgroup_id = bpf_get_current_cgroup_id();
	ev->flags = FLAG_PID_NS_INIT;
	ev->pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	__u32 loc = ctx->__data_loc_filename;
	bpf_probe_read_kernel_str(ev->path, sizeof(ev->path), (char *)ctx + (loc & 0xffff));
	submit(ev);
	return 0;
}

SEC("tracepoint/sched/sched_process_exit")
int sched_process_exit(void *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	__u32 tid = (__u32)pid_tgid;
	struct signal_struct *signal = 0;
	int live = 1;

	CORE_READ_INTO(signal, task->signal);
	if (signal)
		CORE_READ_INTO(live, signal->live.counter);
	// do_exit() decrements `live` before this tracepoint: 0 means the whole group is dead.
	int group_dead = live == 0;

	__u32 flags = 0;
	if (bpf_map_lookup_elem(&OOM_VICTIMS, &tid)) {
		bpf_map_delete_elem(&OOM_VICTIMS, &tid);
		if (group_dead) {
			flags |= FLAG_OOM_VICTIM;
		} else {
			// The marked thread went first: wait for its group's last thread.
			__u8 one = 1;
			bpf_map_update_elem(&OOM_VICTIMS, &tgid, &one, BPF_ANY);
		}
	}
	if (!group_dead)
		return 0;
	if (tid != tgid && bpf_map_lookup_elem(&OOM_VICTIMS, &tgid)) {
		bpf_map_delete_elem(&OOM_VICTIMS, &tgid);
		flags |= FLAG_OOM_VICTIM;
	}
	if (is_pid_ns_init(task))
		flags |= FLAG_PID_NS_INIT;
	if (!flags)
		return 0;

	struct collector_event *ev = reserve(EVENT_EXIT);
	if (!ev)
		return 0;
	int code = 0;
	CORE_READ_INTO(code, task->exit_code);
	ev->cgroup_id = bpf_get_current_cgroup_id();
	ev->pid = tgid;
	// The wait status: low 7 bits the signal, bit 7 a core dump, bits 8-15 the exit status.
	ev->signal = code & 0x7f;
	ev->exit_code = (code >> 8) & 0xff;
	if (code & 0x80)
		flags |= FLAG_CORE_DUMPED;
	ev->flags = flags;
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	submit(ev);
	return 0;
}

SEC("tracepoint/oom/mark_victim")
int mark_victim(struct trace_event_raw_mark_victim *ctx)
{
	__u32 pid = ctx->pid;
	__u8 one = 1;
	bpf_map_update_elem(&OOM_VICTIMS, &pid, &one, BPF_ANY);
	return 0;
}
