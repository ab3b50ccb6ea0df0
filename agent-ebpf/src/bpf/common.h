/* SPDX-License-Identifier: (Apache-2.0 OR GPL-2.0) */
/*
 * C mirror of agent-common/src/lib.rs: record and map-value layouts shared with the agent.
 * Change both files together; the sizes are asserted on both sides. No implicit padding:
 * every struct is laid out with explicit _pad fields so both compilers agree byte for byte.
 */
#ifndef NODELET_COMMON_H
#define NODELET_COMMON_H

#define TASK_COMM_LEN_ 16
#define CGROUP_PATH_LEN 256
#define MAX_AGENT_TGIDS 4

#define CPU_KEY_V1_CPU 0
#define CPU_KEY_DFL 1

enum counter_idx {
	CNT_CPU_SLOT_MISMATCH = 0,
	CNT_CPU_MAP_FULL = 1,
	CNT_MEM_MAP_FULL = 2,
	CNT_RINGBUF_FULL = 3,
	CNT_RECORDS = 4,
	CNT_CPU_FLUSHES = 5,
	CNT_MEM_CHANGES = 6,
	CNT_COUNT = 7,
};

enum record_kind {
	KIND_OOM = 1,
	KIND_MEM_MARK = 2,
	KIND_CGROUP_MKDIR = 3,
	KIND_CGROUP_RMDIR = 4,
};

enum mem_item {
	MEM_INACTIVE_ANON = 0,
	MEM_ACTIVE_ANON = 1,
	MEM_INACTIVE_FILE = 2,
	MEM_ACTIVE_FILE = 3,
	MEM_UNEVICTABLE = 4,
	MEM_ANON_MAPPED = 5,
	MEM_FILE_PAGES = 6,
	MEM_FILE_MAPPED = 7,
	MEM_SHMEM = 8,
	MEM_KMEM = 9,
	MEM_SWAP = 10,
	MEM_ITEM_COUNT = 12,
};

/* oom_record.flags: the victim is its PID namespace's init. */
#define OOM_FLAG_NS_INIT 1

#define MARK_SCOPE_CGROUP 0
#define MARK_SCOPE_NODE 1
#define CGROUP_PATH_TRUNCATED 1

struct record_header {
	__u32 kind;
	__u32 cpu;
	__u64 ts_ns;
};

struct oom_record {
	struct record_header hdr;
	__u32 pid;
	__u32 tgid;
	__u64 memcg_id;
	__u64 cpu_cgroup_id;
	__u64 dfl_cgroup_id;
	__u64 memcg_usage_pages;
	__u64 memcg_limit_pages;
	__u32 uid;
	__s32 oom_score_adj;
	char comm[TASK_COMM_LEN_];
	__u32 flags;
	__u32 reserved;
};

struct mem_mark_record {
	struct record_header hdr;
	__u64 cgroup_id;
	__s64 value_pages;
	__s64 mark_pages;
	__u32 scope;
	__u32 rising;
};

struct cgroup_record {
	struct record_header hdr;
	__u64 cgroup_id;
	__u32 hierarchy_id;
	__u32 level;
	__u32 path_len;
	__u32 flags;
	char path[CGROUP_PATH_LEN];
};

struct cpu_acct {
	__u64 run_ns;
	__u64 wait_ns;
	__u64 slices;
	__u64 wait_max_ns;
	__u32 nr_throttled;
	__u32 has_quota;
};

struct cpu_slot {
	__u64 task;
	__u64 cgroup_id;
	__u64 exec_base_ns;
	__u64 delay_base_ns;
	__u64 seq;
	__u32 tid;
	__u32 tgid;
	__u64 pending_key;
	struct cpu_acct pending;
	__u64 flushes;
};

struct mem_acct {
	__s64 pages[MEM_ITEM_COUNT];
	__s64 charged_pages;
	__u64 pgfault;
	__u64 pgmajfault;
	__u64 events;
};

struct mem_mark {
	__s64 high;
	__s64 low;
	__u32 above;
	__u32 _pad;
};

struct node_mem {
	__s64 ws_pages;
	struct mem_mark mark;
};

_Static_assert(sizeof(struct record_header) == 16, "record_header");
_Static_assert(sizeof(struct oom_record) == 96, "oom_record");
_Static_assert(__builtin_offsetof(struct oom_record, comm) == 72, "oom_record.comm");
_Static_assert(sizeof(struct mem_mark_record) == 48, "mem_mark_record");
_Static_assert(sizeof(struct cgroup_record) == 296, "cgroup_record");
_Static_assert(__builtin_offsetof(struct cgroup_record, path) == 40, "cgroup_record.path");
_Static_assert(sizeof(struct cpu_acct) == 40, "cpu_acct");
_Static_assert(sizeof(struct cpu_slot) == 104, "cpu_slot");
_Static_assert(__builtin_offsetof(struct cpu_slot, pending) == 56, "cpu_slot.pending");
_Static_assert(sizeof(struct mem_acct) == 8 * (MEM_ITEM_COUNT + 4), "mem_acct");
_Static_assert(__builtin_offsetof(struct mem_acct, charged_pages) == 8 * MEM_ITEM_COUNT, "mem_acct.charged");
_Static_assert(sizeof(struct mem_mark) == 24, "mem_mark");
_Static_assert(sizeof(struct node_mem) == 32, "node_mem");

#endif
