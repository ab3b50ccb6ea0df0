// SPDX-License-Identifier: GPL-2.0
/*
 * Cgroup creation and removal, with the kernfs id (directory inode) and the path relative to
 * its hierarchy, so user space learns id -> path without walking cgroupfs.
 * cgroup_hierarchy_mask (set at load) keeps only the hierarchies the agent keys by (on v1
 * every controller mounts its own hierarchy and each fires its own mkdir).
 */
#include "shared.bpf.h"

char LICENSE[] SEC("license") = "GPL";

/* Bit n set: report hierarchy id n (0 is cgroup v2). Ids >= 64 are always reported. */
const volatile __u64 cgroup_hierarchy_mask = ~0ULL;

static __always_inline int emit_cgroup(struct cgroup *cgrp, const char *path, __u32 kind)
{
	__u32 hid = cgrp->root->hierarchy_id;
	struct cgroup_record *r;
	long n;

	if (hid < 64 && !(cgroup_hierarchy_mask & (1ULL << hid)))
		return 0;
	r = reserve_record(sizeof(*r), kind);
	if (!r)
		return 0;
	r->cgroup_id = cgroup_kn_id(cgrp);
	r->hierarchy_id = hid;
	r->level = cgrp->level;
	r->flags = 0;
	n = bpf_probe_read_kernel_str(r->path, sizeof(r->path), path);
	if (n <= 0) {
		r->path[0] = 0;
		r->path_len = 0;
	} else {
		r->path_len = n - 1;
		/* A full buffer means the string may have been cut. */
		if (n == sizeof(r->path))
			r->flags |= CGROUP_PATH_TRUNCATED;
	}
	submit_record(r);
	return 0;
}

SEC("tp_btf/cgroup_mkdir")
int BPF_PROG(on_cgroup_mkdir, struct cgroup *cgrp, const char *path)
{
	return emit_cgroup(cgrp, path, KIND_CGROUP_MKDIR);
}

SEC("tp_btf/cgroup_rmdir")
int BPF_PROG(on_cgroup_rmdir, struct cgroup *cgrp, const char *path)
{
	return emit_cgroup(cgrp, path, KIND_CGROUP_RMDIR);
}
