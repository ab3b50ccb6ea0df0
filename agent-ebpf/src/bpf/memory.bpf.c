// SPDX-License-Identifier: GPL-2.0
/*
 * Memory per memcg from the memcg stat tracepoints (memcontrol.c calls them on every stat
 * update, with the memcg whose counter changes, in pages for the items tracked here).
 *
 * Per memcg the deltas are summed into MEM_ACCT. User space creates the entries, for the
 * memcgs under the pods' root only (a lookup miss is the in-kernel filter: host page churn
 * costs one lookup, or none when it repeats the CPU's last miss), and reads a baseline from
 * the cgroup's files once, then adds the deltas.
 * Events are not hierarchical: a parent's total is the sum of its subtree (user space).
 *
 * charged_pages follows what the memcg's page counter charges (LRU pages + kernel memory),
 * so usage = baseline + charged delta. When it crosses a mark set by user space in MEM_MARKS,
 * or the node-wide working set crosses NODE_MEM's mark, a record goes to the ring buffer:
 * eviction reacts to a push, not a timer. Marks are looked up only when a counter crosses a
 * granule boundary (1 << mark_granule_shift pages), so most events cost one hash
 * lookup and two atomic adds. The node working set is summed over every memcg.
 *
 * Item numbers differ between kernels: they come from vmlinux BTF (bpf_core_enum_value) and
 * an item this kernel lacks is compiled out by the verifier (bpf_core_enum_value_exists).
 */
#include "shared.bpf.h"

char LICENSE[] SEC("license") = "GPL";

/* Marks are checked when a counter crosses a multiple of 1 << shift pages (the loader sets
 * it; 4: 64 KiB). */
const volatile __u32 mark_granule_shift = 4;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct mem_acct);
} MEM_ACCT SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct mem_mark);
} MEM_MARKS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct node_mem);
} NODE_MEM SEC(".maps");

#define ITEM(E, N) (bpf_core_enum_value_exists(enum E, N) ? (int)bpf_core_enum_value(enum E, N) : -1)

/* Bumped by user space after it creates MEM_ACCT entries: forgets every remembered miss. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} MEM_GEN SEC(".maps");

struct mem_miss {
	__u64 memcg;
	__u64 gen;
};

/* The last memcg that missed on this CPU, valid while MEM_GEN stays at `gen`. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mem_miss);
} MEM_MISS SEC(".maps");

/*
 * Registered memcgs only (user space creates the entries): a miss is the filter. Host page
 * churn comes in runs of one memcg (a reclaim pass, a file read), so the CPU remembers its
 * last miss: a repeat costs two array loads, not the walk to the kernfs id and a hash lookup.
 * User space bumps MEM_GEN after inserting, so a memcg registered since is looked up again;
 * a program that read the old generation may skip events from before the insert, which the
 * baseline user space reads afterwards already holds.
 */
static __always_inline struct mem_acct *mem_entry(struct mem_cgroup *memcg, __u64 *id)
{
	__u32 zero = 0;
	struct mem_miss *miss = bpf_map_lookup_elem(&MEM_MISS, &zero);
	__u64 *gen = bpf_map_lookup_elem(&MEM_GEN, &zero);
	struct mem_acct *m;
	__u64 g;

	if (!miss || !gen)
		return NULL;
	g = *gen;
	if (miss->memcg == (__u64)memcg && miss->gen == g)
		return NULL;
	*id = cgroup_kn_id(memcg->css.cgroup);
	m = bpf_map_lookup_elem(&MEM_ACCT, id);
	if (!m) {
		miss->memcg = (__u64)memcg;
		miss->gen = g;
	}
	return m;
}

static __always_inline void emit_mark(__u64 id, __s64 value, __s64 mark, __u32 scope, __u32 rising)
{
	struct mem_mark_record *r = reserve_record(sizeof(*r), KIND_MEM_MARK);

	if (!r)
		return;
	r->cgroup_id = id;
	r->value_pages = value;
	r->mark_pages = mark;
	r->scope = scope;
	r->rising = rising;
	submit_record(r);
}

/* `above` makes each crossing report once; low < high gives hysteresis. */
static __always_inline void check_mark(struct mem_mark *mk, __u64 id, __s64 old, __s64 new, __u32 scope)
{
	__s64 high = mk->high, low = mk->low;

	if (new > old) {
		if (old < high && new >= high && __sync_val_compare_and_swap(&mk->above, 0, 1) == 0)
			emit_mark(id, new, high, scope, 1);
	} else {
		if (old >= low && new < low && __sync_val_compare_and_swap(&mk->above, 1, 0) == 1)
			emit_mark(id, new, low, scope, 0);
	}
}

static __always_inline int crossed_granule(__s64 old, __s64 new)
{
	return (old >> mark_granule_shift) != (new >> mark_granule_shift);
}

static __always_inline void add_charged(struct mem_acct *m, __u64 id, __s64 delta)
{
	__s64 old = __sync_fetch_and_add(&m->charged_pages, delta);

	if (crossed_granule(old, old + delta)) {
		struct mem_mark *mk = bpf_map_lookup_elem(&MEM_MARKS, &id);

		if (mk)
			check_mark(mk, id, old, old + delta, MARK_SCOPE_CGROUP);
	}
}

static __always_inline void add_node_ws(__s64 delta)
{
	__u32 zero = 0;
	struct node_mem *n = bpf_map_lookup_elem(&NODE_MEM, &zero);
	__s64 old;

	if (!n)
		return;
	old = __sync_fetch_and_add(&n->ws_pages, delta);
	if (crossed_granule(old, old + delta))
		check_mark(&n->mark, 0, old, old + delta, MARK_SCOPE_NODE);
}

/*
 * Fold one delta into the memcg's entry. `charged`: counted by the page counter (usage);
 * `ws`: part of the working set (usage minus inactive file).
 */
static __always_inline void fold(struct mem_cgroup *memcg, int slot, __s64 delta, int charged, int ws)
{
	__u64 id = 0;
	struct mem_acct *m;

	if (!memcg || !delta || slot < 0 || slot >= MEM_ITEM_COUNT)
		return;
	/* The node working set counts every memcg, registered or not. */
	if (ws)
		add_node_ws(delta);
	m = mem_entry(memcg, &id);
	if (!m)
		return;
	__sync_fetch_and_add(&m->pages[slot], delta);
	m->events += 1; /* statistics only: not atomic on purpose */
	count(CNT_MEM_CHANGES); /* lets user space skip a sweep when nothing registered moved */
	if (charged)
		add_charged(m, id, delta);
}

SEC("tp_btf/mod_memcg_lruvec_state")
int BPF_PROG(on_mod_memcg_lruvec_state, struct mem_cgroup *memcg, int item, int val)
{
	int slot, charged = 1, ws = 1;

	/* Pick the slot first and fold once: one inlined copy of fold() keeps the program small. */
	/* LRU lists: charged; all but inactive file count toward the working set. */
	if (item == ITEM(node_stat_item, NR_INACTIVE_ANON))
		slot = MEM_INACTIVE_ANON;
	else if (item == ITEM(node_stat_item, NR_ACTIVE_ANON))
		slot = MEM_ACTIVE_ANON;
	else if (item == ITEM(node_stat_item, NR_INACTIVE_FILE)) {
		slot = MEM_INACTIVE_FILE;
		ws = 0;
	} else if (item == ITEM(node_stat_item, NR_ACTIVE_FILE))
		slot = MEM_ACTIVE_FILE;
	else if (item == ITEM(node_stat_item, NR_UNEVICTABLE))
		slot = MEM_UNEVICTABLE;
	else {
		/* Page-state views of the same pages: reported, not charged again. */
		charged = 0;
		ws = 0;
		if (item == ITEM(node_stat_item, NR_ANON_MAPPED))
			slot = MEM_ANON_MAPPED;
		else if (item == ITEM(node_stat_item, NR_FILE_PAGES))
			slot = MEM_FILE_PAGES;
		else if (item == ITEM(node_stat_item, NR_FILE_MAPPED))
			slot = MEM_FILE_MAPPED;
		else if (item == ITEM(node_stat_item, NR_SHMEM))
			slot = MEM_SHMEM;
		else
			return 0;
	}
	fold(memcg, slot, val, charged, ws);
	return 0;
}

SEC("tp_btf/mod_memcg_state")
int BPF_PROG(on_mod_memcg_state, struct mem_cgroup *memcg, int item, int val)
{
	if (item == ITEM(memcg_stat_item, MEMCG_KMEM))
		fold(memcg, MEM_KMEM, val, 1, 1);
	else if (item == ITEM(memcg_stat_item, MEMCG_SWAP))
		fold(memcg, MEM_SWAP, val, 0, 0);
	return 0;
}

SEC("tp_btf/count_memcg_events")
int BPF_PROG(on_count_memcg_events, struct mem_cgroup *memcg, int item, unsigned long n)
{
	struct mem_acct *m;
	__u64 id = 0;
	int major;

	if (item == ITEM(vm_event_item, PGFAULT))
		major = 0;
	else if (item == ITEM(vm_event_item, PGMAJFAULT))
		major = 1;
	else
		return 0;
	if (!memcg)
		return 0;
	m = mem_entry(memcg, &id);
	if (!m)
		return 0;
	count(CNT_MEM_CHANGES);
	if (major)
		__sync_fetch_and_add(&m->pgmajfault, n);
	else
		__sync_fetch_and_add(&m->pgfault, n);
	return 0;
}
