// SPDX-License-Identifier: GPL-2.0
/*
 * CPU accounting per cgroup from sched_switch, without reading a clock.
 *
 * At switch-in the CPU's slot remembers the incoming task, its cgroup key and two kernel
 * counters the scheduler keeps per task: se.sum_exec_runtime (what cpuacct/cpu.stat charge;
 * update_curr() has run for prev before the tracepoint) and sched_info.run_delay (total
 * run-queue wait; sched_info_arrive() adds the current wait right after the tracepoint, in
 * prepare_task_switch()). At switch-out the differences are the slice just run and the wait
 * that preceded it. No bpf_ktime_get_ns(): on this machine kind a helper call costs 30-60 ns
 * and the budget is 150 ns per switch. The slice still running is not in the map; user space
 * adds it from CPU_SLOTS and /proc/<tid>/schedstat.
 *
 * Totals stay in a per-CPU hash that user space batch-reads, plus the CPU slot's pending sums
 * of the last cgroup (see account()); nothing is streamed per switch (streaming made the
 * agent the top switcher: see shared/NOTES.md). User space creates the entries, for the
 * cgroups under the pods' root only; the program never inserts.
 */
#include "shared.bpf.h"

char LICENSE[] SEC("license") = "GPL";

/* CPU_KEY_V1_CPU: the v1 cpu controller's cgroup; CPU_KEY_DFL: the cgroup v2 cgroup. */
const volatile __u32 cpu_key_mode = CPU_KEY_V1_CPU;
/* The agent's own processes: their switches are not accounted. Set at load time. */
const volatile __u32 agent_tgids[MAX_AGENT_TGIDS] = {};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct cpu_acct);
} CPU_ACCT SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cpu_slot);
} CPU_SLOTS SEC(".maps");

static __always_inline __u64 cpu_key(struct task_struct *t)
{
	if (cpu_key_mode == CPU_KEY_DFL)
		return task_dfl_cgroup_id(t);
	return task_subsys_cgroup_id(t, bpf_core_enum_value(enum cgroup_subsys_id, cpu_cgrp_id));
}

static __always_inline int skipped_tgid(__u32 tgid)
{
	if (tgid == 0)
		return 1; /* the idle task */
#pragma unroll
	for (int i = 0; i < MAX_AGENT_TGIDS; i++)
		if (agent_tgids[i] && agent_tgids[i] == tgid)
			return 1;
	return 0;
}

/*
 * CFS bandwidth of the task's CPU group (its cpu cgroup): the kernel's own cumulative count
 * of throttled periods, copied at each switch-out. A throttled group's tasks are switched out
 * when throttled and run again every period, so the copy trails the kernel by one slice.
 * There is no throttling tracepoint, and reading the scheduler's counter beats inferring it.
 */
static __always_inline void copy_throttling(struct cpu_acct *a, struct task_struct *t)
{
	struct task_group *tg;

	if (!bpf_core_field_exists(t->sched_task_group) ||
	    !bpf_core_field_exists(struct task_group, cfs_bandwidth))
		return;
	tg = t->sched_task_group;
	if (!tg)
		return;
	a->nr_throttled = tg->cfs_bandwidth.nr_throttled;
	a->has_quota = tg->cfs_bandwidth.quota != ~0ULL; /* RUNTIME_INF: no limit */
}

static __always_inline void add_acct(struct cpu_acct *a, const struct cpu_acct *p)
{
	a->run_ns += p->run_ns;
	a->wait_ns += p->wait_ns;
	a->slices += p->slices;
	if (p->wait_max_ns > a->wait_max_ns)
		a->wait_max_ns = p->wait_max_ns;
	a->nr_throttled = p->nr_throttled;
	a->has_quota = p->has_quota;
}

/*
 * Adds a finished slice to the CPU's pending sums. Consecutive slices of one cgroup on a CPU
 * (a busy container, a ping-pong, a task and the idle loop) stay in the slot: no hash lookup.
 * Another cgroup's slice flushes them into CPU_ACCT first. Only cgroups user space
 * registered have an entry there: a miss at flush is the in-kernel filter, so host tasks
 * cost at most one lookup and user space never sweeps them. The slot is per-CPU and
 * sched_switch runs with interrupts off: plain adds are exact.
 */
static __always_inline void account(struct cpu_slot *s, __u64 key, __u64 run, __u64 wait,
				    __u64 slices, struct task_struct *t)
{
	struct cpu_acct *p = &s->pending;

	if (key != s->pending_key) {
		if (s->pending_key) {
			struct cpu_acct *a = bpf_map_lookup_elem(&CPU_ACCT, &s->pending_key);

			if (a) {
				add_acct(a, p);
				/* Lets user space skip a sweep when nothing registered moved. */
				count(CNT_CPU_FLUSHES);
			}
			s->flushes += 1;
		}
		s->pending_key = key;
		p->run_ns = 0;
		p->wait_ns = 0;
		p->slices = 0;
		p->wait_max_ns = 0;
	}
	p->run_ns += run;
	p->wait_ns += wait;
	p->slices += slices;
	if (wait > p->wait_max_ns)
		p->wait_max_ns = wait;
	copy_throttling(p, t);
}

/* SCHED_NORMAL, SCHED_BATCH, SCHED_IDLE: the fair class, which keeps prev_sum_exec_runtime. */
static __always_inline int fair_policy(__u32 policy)
{
	return policy == 0 || policy == 3 || policy == 5;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(on_sched_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	__u32 zero = 0;
	struct cpu_slot *s = bpf_map_lookup_elem(&CPU_SLOTS, &zero);
	__u32 tgid;

	if (!s)
		return 0;
	if (s->task == (__u64)prev) {
		if (s->cgroup_id)
			account(s, s->cgroup_id, prev->se.sum_exec_runtime - s->exec_base_ns,
				prev->sched_info.run_delay - s->delay_base_ns, 1, prev);
	} else if (s->task) {
		/*
		 * prev's switch-in was not traced (seen on this VM kind for its PID 1 agent's
		 * threads). The fair class saved the slice start itself at pick time
		 * (set_next_entity: prev_sum_exec_runtime), so the slice is still exact; the
		 * wait before it is unknown and left out.
		 */
		count(CNT_CPU_SLOT_MISMATCH);
		if (fair_policy(prev->policy) && !skipped_tgid(prev->tgid))
			account(s, cpu_key(prev),
				prev->se.sum_exec_runtime - prev->se.prev_sum_exec_runtime, 0, 1, prev);
	}

	tgid = next->tgid;
	s->task = (__u64)next;
	s->seq += 1;
	s->tid = next->pid;
	s->tgid = tgid;
	if (skipped_tgid(tgid)) {
		s->cgroup_id = 0;
		return 0;
	}
	s->cgroup_id = cpu_key(next);
	s->exec_base_ns = next->se.sum_exec_runtime;
	s->delay_base_ns = next->sched_info.run_delay;
	return 0;
}

/*
 * Run by user space on each CPU before it reads the slots (BPF_PROG_TEST_RUN with
 * BPF_F_TEST_RUN_ON_CPU, an IPI, so `current` is the task really on that CPU). Repairs a slot
 * whose switch-in was never traced (this VM kind emits no sched_switch when the outgoing task
 * is a thread of its PID-1 agent): without it a busy task's running slice stays invisible
 * until it switches out. Two runs a sweep: CO-RE reads, no budget to keep.
 */
SEC("raw_tp/sched_switch")
int on_cpu_probe(void *ctx)
{
	__u32 zero = 0;
	struct cpu_slot *s = bpf_map_lookup_elem(&CPU_SLOTS, &zero);
	struct task_struct *cur = bpf_get_current_task_btf();
	__u32 tgid;

	if (!s || !cur || s->task == (__u64)cur)
		return 0;
	tgid = BPF_CORE_READ(cur, tgid);
	s->task = (__u64)cur;
	s->seq += 1;
	s->tid = BPF_CORE_READ(cur, pid);
	s->tgid = tgid;
	/* Outside the fair class the slice start is unknown: leave it to the switch-out. */
	if (skipped_tgid(tgid) || !fair_policy(BPF_CORE_READ(cur, policy))) {
		s->cgroup_id = 0;
		return 0;
	}
	if (cpu_key_mode == CPU_KEY_DFL)
		s->cgroup_id = BPF_CORE_READ(cur, cgroups, dfl_cgrp, kn, id);
	else
		s->cgroup_id = BPF_CORE_READ(cur, cgroups,
					     subsys[bpf_core_enum_value(enum cgroup_subsys_id, cpu_cgrp_id)],
					     cgroup, kn, id);
	/* The fair class saved the slice start at pick time; the wait before it is unknown. */
	s->exec_base_ns = BPF_CORE_READ(cur, se.prev_sum_exec_runtime);
	s->delay_base_ns = BPF_CORE_READ(cur, sched_info.run_delay);
	return 0;
}
