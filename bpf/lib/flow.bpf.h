/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The flow table admits replies of connectionless traffic. TCP needs none of this: the socket
 * state tells an admitted connection from a new one. A UDP server's unconnected socket and an
 * ICMP echo have no such state, so the first packet of a flow that policy admits is remembered
 * here, and packets of that flow in either direction are not judged again.
 *
 * TODO: flows stay admitted until the LRU evicts them, even across policy changes; the agent
 * should expire idle flows (UDP idle timeout) so a changed policy applies to them too.
 */
#ifndef MSEG_FLOW_BPF_H
#define MSEG_FLOW_BPF_H

#include "policy.bpf.h"

static __always_inline void flow_key_init(struct mseg_flow_key *key, const __u8 peer_addr[16],
					  __be16 local_port, __be16 peer_port, __u8 protocol)
{
	__builtin_memset(key, 0, sizeof(*key));
	__builtin_memcpy(key->peer_addr, peer_addr, 16);
	key->local_port = local_port;
	key->peer_port = peer_port;
	key->protocol = protocol;
}

/* Returns non-zero, and refreshes the flow's last-seen time, when the flow was admitted. */
static __always_inline int flow_seen(const struct mseg_flow_key *key)
{
	struct mseg_flow *flow = bpf_map_lookup_elem(&mseg_flow_v1, key);

	if (!flow)
		return 0;
	flow->last_seen_ns = bpf_ktime_get_ns();
	return 1;
}

static __always_inline void flow_admit(const struct mseg_flow_key *key,
				       const struct mseg_judgement *judgement, __u8 direction)
{
	__u64 now = bpf_ktime_get_ns();
	struct mseg_flow flow = {
		.first_seen_ns = now,
		.last_seen_ns = now,
		.workload_id = judgement->workload_id,
		.peer_id = judgement->peer_id,
		.rule_id = judgement->rule_id,
		.verdict = judgement->verdict,
		.direction = direction,
	};

	if (bpf_map_update_elem(&mseg_flow_v1, key, &flow, BPF_ANY))
		count_reason(MSEG_REASON_FLOW_TABLE_FULL);
}

#endif /* MSEG_FLOW_BPF_H */
