/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Flow telemetry: start, end and denied events into one ring buffer, denied attempts
 * aggregated per (workload, peer, port) so a port scan costs counter increments, not events.
 * Every event that cannot be written is counted (MSEG_REASON_EVENT_LOST), never lost silently.
 */
#ifndef MSEG_TELEMETRY_BPF_H
#define MSEG_TELEMETRY_BPF_H

#include "policy.bpf.h"

#define MSEG_EEXIST 17

/*
 * Waking the agent costs more than writing an event (an irq_work and a scheduler wakeup each),
 * so an event wakes it only once this much is waiting. The agent also drains the ring on its
 * one-second tick, so a trickle of events waits at most that long; 1/16 of the ring is about
 * 3,000 events, a wakeup every 20 ms at 150,000 events a second.
 */
#define MSEG_EVENT_WAKEUP_BYTES (MSEG_EVENT_RING_BYTES / 16)

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, MSEG_EVENT_RING_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mseg_events_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MSEG_MAX_DENIALS);
	__type(key, struct mseg_denial_key);
	__type(value, struct mseg_denial);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mseg_deny_v1 SEC(".maps");

/* What a TCP connection was admitted with, kept on its socket until the connection ends. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct mseg_flow_identity);
} mseg_sk_v1 SEC(".maps");

/*
 * Inbound connections between the SYN (judged on the listener) and the established child
 * socket (reported by sock_ops), keyed like the flow table from the server's side.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MSEG_MAX_PENDING_ACCEPTS);
	__type(key, struct mseg_flow_key);
	__type(value, struct mseg_flow_identity);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mseg_accept_v1 SEC(".maps");

/*
 * Whether flows are reported. With telemetry off the datapath still enforces and counts per
 * rule, but keeps no per-connection state for reporting and writes no events: no socket
 * storage, no pending accepts, no denial aggregation, nothing in the ring buffer.
 */
static __always_inline int telemetry_on(void)
{
	__u32 zero = 0;
	struct mseg_options *options = bpf_map_lookup_elem(&mseg_opts_v1, &zero);

	return !options || !(options->flags & MSEG_OPT_NO_TELEMETRY);
}

static __always_inline void identity_init(struct mseg_flow_identity *id,
					  const struct mseg_judgement *judgement, __u8 direction,
					  __u8 protocol, const __u8 peer_addr[16], __be16 peer_port)
{
	__builtin_memset(id, 0, sizeof(*id));
	__builtin_memcpy(id->peer_addr, peer_addr, 16);
	id->peer_port = peer_port;
	id->protocol = protocol;
	id->direction = direction;
	id->verdict = judgement->verdict;
	id->workload_id = judgement->workload_id;
	id->peer_id = judgement->peer_id;
	id->rule_id = judgement->rule_id;
	id->start_ns = bpf_ktime_get_boot_ns();
}

/* The calling task owns the connection: only valid in hooks that run in its context. */
static __always_inline void identity_set_task(struct mseg_flow_identity *id)
{
	__u64 uid_gid = bpf_get_current_uid_gid();

	id->pid = bpf_get_current_pid_tgid() >> 32;
	id->uid = (__u32)uid_gid;
	id->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(id->comm, sizeof(id->comm));
}

static __always_inline int emit_event(__u32 kind, __u64 cookie,
				      const struct mseg_flow_identity *id,
				      const struct mseg_flow *counters)
{
	struct mseg_event *event = bpf_ringbuf_reserve(&mseg_events_v1, sizeof(*event), 0);

	if (!event) {
		count_reason(MSEG_REASON_EVENT_LOST);
		return -1;
	}
	event->time_ns = bpf_ktime_get_boot_ns();
	event->cookie = cookie;
	event->kind = kind;
	event->pad = 0;
	event->flow = *id;
	if (counters) {
		event->bytes_out = counters->bytes_out;
		event->bytes_in = counters->bytes_in;
		event->packets_out = counters->packets_out;
		event->packets_in = counters->packets_in;
	} else {
		event->bytes_out = 0;
		event->bytes_in = 0;
		event->packets_out = 0;
		event->packets_in = 0;
	}
	bpf_ringbuf_submit(event, bpf_ringbuf_query(&mseg_events_v1, BPF_RB_AVAIL_DATA) >=
					  MSEG_EVENT_WAKEUP_BYTES ?
				  BPF_RB_FORCE_WAKEUP :
				  BPF_RB_NO_WAKEUP);
	return 0;
}

/*
 * Counts a refused attempt. The first of its (workload, peer, port, direction) becomes an
 * event; later ones only count, and the agent reports the totals periodically.
 */
static __always_inline void report_denied(const struct mseg_flow_identity *id, __be16 port)
{
	struct mseg_denial_key key = {};
	struct mseg_denial *known;
	struct mseg_denial fresh = {};
	__u64 now = bpf_ktime_get_boot_ns();
	long err;

	if (!telemetry_on())
		return;
	__builtin_memcpy(key.peer_addr, id->peer_addr, 16);
	key.workload_id = id->workload_id;
	key.port = port;
	key.protocol = id->protocol;
	key.direction = id->direction;

	known = bpf_map_lookup_elem(&mseg_deny_v1, &key);
	if (known) {
		__sync_fetch_and_add(&known->attempts, 1);
		known->last_ns = now;
		return;
	}
	fresh.first_ns = now;
	fresh.last_ns = now;
	fresh.attempts = 1;
	fresh.flow = *id;
	fresh.reported = emit_event(MSEG_EVENT_DENIED, 0, id, NULL) == 0 ? 1 : 0;
	err = bpf_map_update_elem(&mseg_deny_v1, &key, &fresh, BPF_NOEXIST);
	if (err == -MSEG_EEXIST) {
		/* Another CPU inserted the same key meanwhile: count on its entry. */
		known = bpf_map_lookup_elem(&mseg_deny_v1, &key);
		if (known)
			__sync_fetch_and_add(&known->attempts, 1);
	} else if (err) {
		count_reason(MSEG_REASON_DENIAL_TABLE_FULL);
	}
}

#endif /* MSEG_TELEMETRY_BPF_H */
