/* SPDX-License-Identifier: (Apache-2.0 OR GPL-2.0) */
/*
 * Maps and helpers used by more than one program. The .bpf.c files are compiled apart and
 * linked into one object by `bpftool gen object`; the linker folds the __weak map
 * definitions below into one map each, so every program shares EVENTS and COUNTERS.
 */
#ifndef NODELET_SHARED_BPF_H
#define NODELET_SHARED_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "common.h"

/* Rare records only (OOM, marks, cgroup mkdir/rmdir); the loader sets the size. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} EVENTS SEC(".maps") __weak;

/* Kernel-side drop/miss counters. Per-CPU, so an increment is a plain add. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CNT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} COUNTERS SEC(".maps") __weak;

static __always_inline void count(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&COUNTERS, &idx);

	if (c)
		*c += 1;
}

/* Reserve a ring-buffer record and fill its header; counts a full ring buffer. */
static __always_inline void *reserve_record(__u64 size, __u32 kind)
{
	struct record_header *h = bpf_ringbuf_reserve(&EVENTS, size, 0);

	if (!h) {
		count(CNT_RINGBUF_FULL);
		return NULL;
	}
	h->kind = kind;
	h->cpu = bpf_get_smp_processor_id();
	h->ts_ns = bpf_ktime_get_ns();
	return h;
}

static __always_inline void submit_record(void *r)
{
	count(CNT_RECORDS);
	bpf_ringbuf_submit(r, 0);
}

/*
 * kernfs id of a cgroup: equals the inode number of its directory in cgroupfs, which is how
 * user space maps ids to paths. Direct BTF loads (CO-RE relocated) instead of
 * BPF_CORE_READ: tp_btf allows them and they skip a helper call per hop.
 */
static __always_inline __u64 cgroup_kn_id(struct cgroup *cgrp)
{
	return cgrp->kn->id;
}

static __always_inline __u64 task_subsys_cgroup_id(struct task_struct *t, int subsys)
{
	return cgroup_kn_id(t->cgroups->subsys[subsys]->cgroup);
}

static __always_inline __u64 task_dfl_cgroup_id(struct task_struct *t)
{
	return cgroup_kn_id(t->cgroups->dfl_cgrp);
}

#endif
