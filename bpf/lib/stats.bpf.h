/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Per-CPU counters: per rule, and per reason for everything that is not a plain verdict. */
#ifndef MSEG_STATS_BPF_H
#define MSEG_STATS_BPF_H

#include "maps.bpf.h"

static __always_inline void count_reason(__u32 reason)
{
	__u64 *count = bpf_map_lookup_elem(&mseg_reason_v1, &reason);

	if (count)
		*count += 1;
}

static __always_inline void count_rule(__u32 rule_id)
{
	struct mseg_rule_stats *stats = bpf_map_lookup_elem(&mseg_rstat_v1, &rule_id);

	if (stats)
		stats->hits += 1;
}

#endif /* MSEG_STATS_BPF_H */
