/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The flow table admits replies of connectionless traffic. TCP needs none of this: the socket
 * state tells an admitted connection from a new one. A UDP server's unconnected socket and an
 * ICMP echo have no such state, so the first packet of a flow that policy admits is remembered
 * here, and packets of that flow in either direction are not judged again. The table also
 * counts what each flow carries; the agent ends flows that stay idle and reports them.
 *
 * TODO: a flow stays admitted until the agent ends it for idleness or the LRU evicts it, even
 * across policy changes; a policy change should end the flows it no longer allows.
 */
#ifndef MSEG_FLOW_BPF_H
#define MSEG_FLOW_BPF_H

#include "telemetry.bpf.h"

static __always_inline void flow_key_init(struct mseg_flow_key *key, const __u8 peer_addr[16],
					  __be16 local_port, __be16 peer_port, __u8 protocol)
{
	__builtin_memset(key, 0, sizeof(*key));
	__builtin_memcpy(key->peer_addr, peer_addr, 16);
	key->local_port = local_port;
	key->peer_port = peer_port;
	key->protocol = protocol;
}

/* The byte count of hooks that see no packet (sendmsg): nothing is counted. */
#define MSEG_NO_PACKET (-1)

/* Returns non-zero when the flow was admitted, after counting a packet of `bytes` on it. */
static __always_inline int flow_seen(const struct mseg_flow_key *key, __u8 direction, __s64 bytes)
{
	struct mseg_flow *flow = bpf_map_lookup_elem(&mseg_flow_v1, key);

	if (!flow)
		return 0;
	flow->last_seen_ns = bpf_ktime_get_boot_ns();
	if (bytes == MSEG_NO_PACKET)
		return 1;
	if (direction == MSEG_DIR_EGRESS) {
		__sync_fetch_and_add(&flow->bytes_out, bytes);
		__sync_fetch_and_add(&flow->packets_out, 1);
	} else {
		__sync_fetch_and_add(&flow->bytes_in, bytes);
		__sync_fetch_and_add(&flow->packets_in, 1);
	}
	return 1;
}

/*
 * Admits a flow and reports its start (with telemetry on); `bytes` of its first packet, or
 * MSEG_NO_PACKET.
 */
static __always_inline void flow_admit(const struct mseg_flow_key *key,
				       const struct mseg_flow_identity *identity, __s64 bytes)
{
	struct mseg_flow flow = {};

	flow.last_seen_ns = identity->start_ns;
	flow.identity = *identity;
	flow.identity.local_port = key->local_port;
	if (bytes != MSEG_NO_PACKET) {
		if (identity->direction == MSEG_DIR_EGRESS) {
			flow.bytes_out = bytes;
			flow.packets_out = 1;
		} else {
			flow.bytes_in = bytes;
			flow.packets_in = 1;
		}
	}
	if (bpf_map_update_elem(&mseg_flow_v1, key, &flow, BPF_ANY)) {
		count_reason(MSEG_REASON_FLOW_TABLE_FULL);
		return;
	}
	if (telemetry_on())
		emit_event(MSEG_EVENT_START, 0, &flow.identity, NULL);
}

#endif /* MSEG_FLOW_BPF_H */
