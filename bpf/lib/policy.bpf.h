/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Identity resolution and verdicts. Everything here is a fixed number of hash and LPM-trie
 * lookups: the cost of a verdict depends on the cgroup depth, never on the number of rules.
 */
#ifndef MSEG_POLICY_BPF_H
#define MSEG_POLICY_BPF_H

#include "maps.bpf.h"
#include "stats.bpf.h"

/* The inner maps of the active bank, read once per verdict so that a verdict never mixes two
 * policy versions while the agent flips banks. */
struct mseg_bank {
	void *workloads;
	void *peers;
	void *verdicts;      /* trie: any protocol, any port, port ranges */
	void *port_verdicts; /* hash: one protocol and one port */
};

struct mseg_judgement {
	__u32 workload_id;
	__u32 peer_id;
	__u32 rule_id;
	__u8 verdict;
};

static __always_inline int active_bank(struct mseg_bank *bank)
{
	__u32 zero = 0;
	struct mseg_config *cfg = bpf_map_lookup_elem(&mseg_cfg_v2, &zero);
	__u32 index;

	if (!cfg)
		return -1;
	index = *(volatile __u32 *)&cfg->active_bank;
	if (index >= MSEG_BANKS)
		return -1;
	bank->workloads = bpf_map_lookup_elem(&mseg_wl_v2, &index);
	bank->peers = bpf_map_lookup_elem(&mseg_peer_v2, &index);
	bank->verdicts = bpf_map_lookup_elem(&mseg_vrd_v2, &index);
	bank->port_verdicts = bpf_map_lookup_elem(&mseg_pvrd_v2, &index);
	if (!bank->workloads || !bank->peers || !bank->verdicts || !bank->port_verdicts)
		return -1;
	return 0;
}

/* Which cgroup a decision uses: the socket's, from the packet, or the calling task's. */
enum mseg_cgroup_source {
	MSEG_CGROUP_OF_SKB,
	MSEG_CGROUP_OF_TASK,
};

static __always_inline __u64 ancestor_cgroup(void *ctx, enum mseg_cgroup_source source, int level)
{
	if (source == MSEG_CGROUP_OF_SKB)
		return bpf_skb_ancestor_cgroup_id(ctx, level);
	return bpf_get_current_ancestor_cgroup_id(level);
}

static __always_inline struct mseg_workload *lookup_workload_key(void *workloads, __u64 cgroup_id,
								 __u32 uid)
{
	struct mseg_workload_key key = { .cgroup_id = cgroup_id, .uid = uid };
	struct mseg_workload *hit = bpf_map_lookup_elem(workloads, &key);

	if (hit)
		return hit;
	key.uid = MSEG_UID_ANY;
	return bpf_map_lookup_elem(workloads, &key);
}

/*
 * The workload of a socket: the deepest selected cgroup among the socket's cgroup and its
 * ancestors wins, so a service's sub-cgroups belong to it without the agent knowing them.
 * Walking from the root down stops where the ancestor chain ends.
 *
 * LIMITATION: the executable is not part of the identity; reading it needs BPF LSM or fentry
 * programs, which the kernels we target refuse.
 */
static __always_inline int find_workload(void *workloads, void *ctx, enum mseg_cgroup_source source,
					 __u32 uid, struct mseg_workload *out)
{
	struct mseg_workload *found = NULL;
	struct mseg_workload *hit;
	int level;

	for (level = 0; level < MSEG_MAX_CGROUP_DEPTH; level++) {
		__u64 cgroup_id = ancestor_cgroup(ctx, source, level);

		if (!cgroup_id)
			break;
		hit = lookup_workload_key(workloads, cgroup_id, uid);
		if (hit)
			found = hit;
	}
	if (!found)
		found = lookup_workload_key(workloads, 0, uid);
	if (!found)
		return -1;
	*out = *found;
	return 0;
}

static __always_inline int workload_managed(const struct mseg_workload *workload, __u8 direction)
{
	__u32 flag = direction == MSEG_DIR_EGRESS ? MSEG_WL_EGRESS_MANAGED : MSEG_WL_INGRESS_MANAGED;

	return (workload->flags & flag) != 0;
}

/* LIMITATION: loopback is judged like any address: world unless the inventory lists it. */
static __always_inline __u32 peer_identity(void *peers, const __u8 addr[16])
{
	struct mseg_peer_key key = { .prefixlen = 128 };
	struct mseg_peer *peer;

	__builtin_memcpy(key.addr, addr, 16);
	peer = bpf_map_lookup_elem(peers, &key);
	return peer ? peer->id : MSEG_PEER_WORLD;
}

/*
 * The longest match for one peer identity: the port map holds the full-length matches, so the
 * trie is asked only when it has none.
 */
static __always_inline void raise_verdict(const struct mseg_bank *bank,
					  struct mseg_verdict_key *key,
					  struct mseg_judgement *best)
{
	struct mseg_port_verdict_key port_key = {
		.workload_id = key->workload_id,
		.peer_id = key->peer_id,
		.direction = key->direction,
		.protocol = key->protocol,
		.port = key->port,
	};
	struct mseg_verdict_value *value = bpf_map_lookup_elem(bank->port_verdicts, &port_key);

	if (!value)
		value = bpf_map_lookup_elem(bank->verdicts, key);

	if (value && value->verdict > best->verdict) {
		best->verdict = value->verdict;
		best->rule_id = value->rule_id;
	}
}

/*
 * Judges one connection attempt of a managed workload. The trie's longest match already
 * carries the highest verdict of the rules covering it (the compiler resolves precedence), so
 * only the exact peer and the "any peer" entries need combining. No match: default deny.
 */
static __always_inline void judge(const struct mseg_bank *bank,
				  const struct mseg_workload *workload, __u8 direction,
				  const __u8 peer_addr[16], __u8 protocol, __be16 port,
				  struct mseg_judgement *out)
{
	struct mseg_verdict_key key = {
		.prefixlen = MSEG_VERDICT_PREFIX_FULL,
		.workload_id = workload->id,
		.direction = direction,
		.protocol = protocol,
		.port = port,
	};
	__u32 audit_flag = direction == MSEG_DIR_EGRESS ? MSEG_WL_EGRESS_AUDIT : MSEG_WL_INGRESS_AUDIT;

	out->workload_id = workload->id;
	out->peer_id = peer_identity(bank->peers, peer_addr);
	out->verdict = MSEG_VERDICT_NONE;
	out->rule_id = MSEG_RULE_NONE;

	key.peer_id = out->peer_id;
	raise_verdict(bank, &key, out);
	key.peer_id = MSEG_PEER_ANY;
	raise_verdict(bank, &key, out);

	if (out->verdict != MSEG_VERDICT_NONE)
		return;
	if (workload->flags & audit_flag) {
		out->verdict = MSEG_VERDICT_AUDIT;
		out->rule_id = MSEG_RULE_DEFAULT_AUDIT;
	} else {
		out->verdict = MSEG_VERDICT_DENY;
		out->rule_id = MSEG_RULE_DEFAULT_DENY;
	}
}

/* Counts a verdict and says whether the traffic may pass (audit passes). */
static __always_inline int enforce(const struct mseg_judgement *judgement)
{
	count_rule(judgement->rule_id);
	if (judgement->verdict == MSEG_VERDICT_DENY) {
		count_reason(MSEG_REASON_POLICY_DENY);
		return 0;
	}
	if (judgement->verdict == MSEG_VERDICT_AUDIT)
		count_reason(MSEG_REASON_POLICY_AUDIT);
	return 1;
}

static __always_inline void ipv4_mapped(__be32 addr, __u8 out[16])
{
	__builtin_memset(out, 0, 10);
	out[10] = 0xff;
	out[11] = 0xff;
	__builtin_memcpy(out + 12, &addr, 4);
}

#endif /* MSEG_POLICY_BPF_H */
