// SPDX-License-Identifier: GPL-2.0
/*
 * OOM kills: mark_victim fires when the OOM killer (global or memcg) has chosen a task,
 * before the SIGKILL is delivered, with the victim as a BTF pointer. One record per kill
 * (count_memcg_events does not report OOM_KILL during a v1 memcg OOM here, see NOTES).
 */
#include "shared.bpf.h"

char LICENSE[] SEC("license") = "GPL";

extern const volatile __u32 cpu_key_mode;

/* Whether the process is the init of its own PID namespace (its pid there is 1). Not
 * SIGNAL_UNKILLABLE: the OOM killer sends SIGKILL before mark_victim, and the fatal signal
 * overwrites signal->flags with SIGNAL_GROUP_EXIT (seen here: the flag was always clear). */
static __always_inline __u32 is_ns_init(struct task_struct *task)
{
	struct pid *pid = BPF_CORE_READ(task, group_leader, thread_pid);
	unsigned int level = BPF_CORE_READ(pid, level);
	struct upid up = {};

	if (level == 0 || level > 32)
		return 0;
	bpf_probe_read_kernel(&up, sizeof(up), &pid->numbers[level]);
	return up.nr == 1;
}

SEC("tp_btf/mark_victim")
int BPF_PROG(on_mark_victim, struct task_struct *task, uid_t uid)
{
	struct oom_record *r = reserve_record(sizeof(*r), KIND_OOM);
	struct cgroup_subsys_state *mcss;
	struct mem_cgroup *memcg;

	if (!r)
		return 0;
	r->pid = task->pid;
	r->tgid = task->tgid;
	r->uid = uid;
	r->oom_score_adj = task->signal->oom_score_adj;
	bpf_probe_read_kernel(r->comm, sizeof(r->comm), task->comm);
	/* A namespace init's death ends the namespace: user space may call the container
	 * terminated from this record instead of waiting for the runtime to see the exit. */
	r->flags = is_ns_init(task) ? OOM_FLAG_NS_INIT : 0;
	r->reserved = 0;

	mcss = task->cgroups->subsys[bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id)];
	r->memcg_id = cgroup_kn_id(mcss->cgroup);
	r->dfl_cgroup_id = task_dfl_cgroup_id(task);
	if (cpu_key_mode == CPU_KEY_DFL)
		r->cpu_cgroup_id = r->dfl_cgroup_id;
	else
		r->cpu_cgroup_id = task_subsys_cgroup_id(task,
			bpf_core_enum_value(enum cgroup_subsys_id, cpu_cgrp_id));

	/* container_of(css, struct mem_cgroup, css), offset relocated; read with probe reads. */
	memcg = (void *)mcss - bpf_core_field_offset(struct mem_cgroup, css);
	r->memcg_usage_pages = BPF_CORE_READ(memcg, memory.usage.counter);
	r->memcg_limit_pages = BPF_CORE_READ(memcg, memory.max);
	submit_record(r);
	return 0;
}
