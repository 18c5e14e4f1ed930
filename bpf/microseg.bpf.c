// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * microseg's entry programs, one per cgroup hook. Each is a thin adapter from its context to
 * the shared logic in lib/: find the workload, skip what is not managed, judge, count, report.
 *
 * Who judges what:
 *   connect4/6    TCP connects, by destination, and ping sockets' connects (refused when
 *                 their echo requests would be). A UDP connect() sends nothing (ping and
 *                 getaddrinfo connect UDP sockets only to learn a source address), so
 *                 connected UDP sockets are judged at their first datagram instead.
 *   sendmsg4/6    unconnected UDP, per datagram destination; replies of admitted flows pass.
 *   skb egress    ICMP, raw sockets, connected UDP sockets and every other protocol the
 *                 socket hooks never see; counts the bytes of datagram flows.
 *   skb ingress   new inbound TCP connections (SYN to a listener), UDP datagrams of flows not
 *                 yet admitted, ICMP and other protocols; replies of admitted flows pass.
 *   sockops       reports when admitted TCP connections start and end, with their counters.
 */
#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "lib/flow.bpf.h"
#include "lib/packet.bpf.h"
#include "lib/policy.bpf.h"
#include "lib/telemetry.bpf.h"

#define MSEG_SOCK_DGRAM 2
#define MSEG_SOCK_RAW 3
#define MSEG_VERDICT_PASS 1

char LICENSE[] SEC("license") = "Dual BSD/GPL";

static __always_inline __u32 current_uid(void)
{
	return (__u32)bpf_get_current_uid_gid();
}

/*
 * Finds the verdict for egress from a socket-address hook to `peer_addr` on `port` (the
 * destination port, or the ICMP type) without counting it. `judgement->verdict` stays NONE for
 * workloads not managed on egress.
 * LIMITATION: the workload is the calling task's (cgroup and uid), while packet hooks use the
 * socket's; they differ only for a socket handed to a process of another workload.
 */
static __always_inline void judge_sock_addr_verdict(struct bpf_sock_addr *ctx,
						    const __u8 peer_addr[16], __be16 port,
						    struct mseg_judgement *judgement)
{
	struct mseg_workload workload;
	struct mseg_bank bank;

	if (active_bank(&bank)) {
		count_reason(MSEG_REASON_NO_POLICY);
		return;
	}
	if (find_workload(bank.workloads, ctx, MSEG_CGROUP_OF_TASK, current_uid(), &workload))
		return;
	if (!workload_managed(&workload, MSEG_DIR_EGRESS))
		return;
	judge(&bank, &workload, MSEG_DIR_EGRESS, peer_addr, (__u8)ctx->protocol, port, judgement);
}

/* Judges and counts an egress connection or datagram. Returns 1 to pass, 0 to refuse. */
static __always_inline int judge_sock_addr(struct bpf_sock_addr *ctx, const __u8 peer_addr[16],
					   struct mseg_judgement *judgement)
{
	judge_sock_addr_verdict(ctx, peer_addr, (__be16)ctx->user_port, judgement);
	if (judgement->verdict == MSEG_VERDICT_NONE)
		return MSEG_VERDICT_PASS;
	return enforce(judgement);
}

/*
 * A ping socket (datagram ICMP) sends nothing but echo requests, so its connect() says what it
 * will send, and connect() is where an ICMPv6 one can be refused with EPERM: the kernel's
 * ICMPv6 ping send path (icmpv6_push_pending_frames) drops the error of the egress program, so
 * send() reports success for an echo that was dropped. Only a deny acts here; an allowed or
 * audited echo is judged, counted and reported with its first packet at egress, as for an
 * unconnected socket, so nothing is counted twice.
 * LIMITATION: sendto() on an unconnected ICMPv6 ping socket passes no hook that can refuse
 * it: a denied echo is dropped, counted and reported at egress, but sendto() returns success.
 */
static __always_inline int connect_ping(struct bpf_sock_addr *ctx, const __u8 peer_addr[16])
{
	__be16 echo = bpf_htons(ctx->protocol == MSEG_IPPROTO_ICMPV6 ? MSEG_ICMPV6_ECHO_REQUEST :
								     MSEG_ICMP_ECHO_REQUEST);
	struct mseg_judgement judgement = {};
	struct mseg_flow_identity identity;

	judge_sock_addr_verdict(ctx, peer_addr, echo, &judgement);
	if (judgement.verdict != MSEG_VERDICT_DENY)
		return MSEG_VERDICT_PASS;
	enforce(&judgement);
	identity_init(&identity, &judgement, MSEG_DIR_EGRESS, (__u8)ctx->protocol, peer_addr, echo);
	identity_set_task(&identity);
	report_denied(&identity, echo);
	return 0;
}

/*
 * A judged TCP connect() keeps its identity on the socket: sockops reports the connection
 * when it is established and when it ends.
 */
static __always_inline int connect_common(struct bpf_sock_addr *ctx, const __u8 peer_addr[16])
{
	struct mseg_judgement judgement = {};
	struct mseg_flow_identity identity;
	struct mseg_flow_identity *stored;
	int pass;

	if (ctx->type == MSEG_SOCK_DGRAM && is_icmp((__u8)ctx->protocol))
		return connect_ping(ctx, peer_addr);
	if (ctx->protocol != IPPROTO_TCP)
		return MSEG_VERDICT_PASS;
	pass = judge_sock_addr(ctx, peer_addr, &judgement);
	if (judgement.verdict == MSEG_VERDICT_NONE || !telemetry_on())
		return pass;

	identity_init(&identity, &judgement, MSEG_DIR_EGRESS, (__u8)ctx->protocol, peer_addr,
		      (__be16)ctx->user_port);
	identity_set_task(&identity);
	if (!pass) {
		report_denied(&identity, identity.peer_port);
		return pass;
	}
	stored = bpf_sk_storage_get(&mseg_sk_v1, ctx->sk, &identity,
				    BPF_SK_STORAGE_GET_F_CREATE);
	if (!stored)
		count_reason(MSEG_REASON_SOCKET_STORAGE);
	else
		*stored = identity;
	return pass;
}

/*
 * Unconnected UDP: a datagram to a peer whose flow was admitted (in either direction) is part
 * of that flow; anything else is judged and, when it passes, admits its flow.
 */
static __always_inline int sendmsg_common(struct bpf_sock_addr *ctx, const __u8 peer_addr[16])
{
	struct mseg_judgement judgement = {};
	struct mseg_flow_identity identity;
	struct mseg_flow_key key;
	struct bpf_sock *sk = ctx->sk;
	int pass;

	if (!sk)
		return MSEG_VERDICT_PASS;
	flow_key_init(&key, peer_addr, bpf_htons((__u16)sk->src_port), (__be16)ctx->user_port,
		      (__u8)ctx->protocol);
	if (flow_seen(&key, MSEG_DIR_EGRESS, MSEG_NO_PACKET))
		return MSEG_VERDICT_PASS;

	pass = judge_sock_addr(ctx, peer_addr, &judgement);
	if (judgement.verdict == MSEG_VERDICT_NONE)
		return pass;
	identity_init(&identity, &judgement, MSEG_DIR_EGRESS, (__u8)ctx->protocol, peer_addr,
		      (__be16)ctx->user_port);
	identity_set_task(&identity);
	if (pass)
		flow_admit(&key, &identity, MSEG_NO_PACKET);
	else
		report_denied(&identity, identity.peer_port);
	return pass;
}

static __always_inline void sock_addr_peer4(struct bpf_sock_addr *ctx, __u8 out[16])
{
	ipv4_mapped(ctx->user_ip4, out);
}

/* An IPv4-mapped IPv6 destination lands in the IPv4 part of the inventory trie by itself,
 * since the trie stores IPv4 prefixes IPv4-mapped. */
static __always_inline void sock_addr_peer6(struct bpf_sock_addr *ctx, __u8 out[16])
{
	__u32 words[4];

	words[0] = ctx->user_ip6[0];
	words[1] = ctx->user_ip6[1];
	words[2] = ctx->user_ip6[2];
	words[3] = ctx->user_ip6[3];
	__builtin_memcpy(out, words, 16);
}

SEC("cgroup/connect4")
int mseg_connect4(struct bpf_sock_addr *ctx)
{
	__u8 peer[16];

	sock_addr_peer4(ctx, peer);
	return connect_common(ctx, peer);
}

SEC("cgroup/connect6")
int mseg_connect6(struct bpf_sock_addr *ctx)
{
	__u8 peer[16];

	sock_addr_peer6(ctx, peer);
	return connect_common(ctx, peer);
}

SEC("cgroup/sendmsg4")
int mseg_sendmsg4(struct bpf_sock_addr *ctx)
{
	__u8 peer[16];

	sock_addr_peer4(ctx, peer);
	return sendmsg_common(ctx, peer);
}

SEC("cgroup/sendmsg6")
int mseg_sendmsg6(struct bpf_sock_addr *ctx)
{
	__u8 peer[16];

	sock_addr_peer6(ctx, peer);
	return sendmsg_common(ctx, peer);
}

/* The port a packet is judged on: the destination port, or the ICMP type. */
static __always_inline __be16 judged_port(const struct mseg_packet *pkt)
{
	if (is_icmp(pkt->protocol))
		return bpf_htons(pkt->icmp_type);
	return pkt->dst_port;
}

/*
 * Judges a packet. A pass admits `flow` when given; a deny is reported. Egress packets of
 * datagram and raw sockets are sent in the sending task's context, so its pid is recorded;
 * ingress packets arrive in softirq context, where no task owns them.
 */
static __always_inline int judge_skb(struct __sk_buff *skb, const struct mseg_packet *pkt,
				     __u8 direction, struct mseg_flow_key *flow,
				     struct mseg_flow_identity *identity)
{
	const __u8 *peer_addr = direction == MSEG_DIR_EGRESS ? pkt->dst_addr : pkt->src_addr;
	__be16 peer_port = direction == MSEG_DIR_EGRESS ? pkt->dst_port : pkt->src_port;
	struct mseg_judgement judgement = {};
	struct mseg_workload workload;
	struct mseg_bank bank;
	__u32 uid = bpf_get_socket_uid(skb);
	int pass;

	if (active_bank(&bank)) {
		count_reason(MSEG_REASON_NO_POLICY);
		return MSEG_VERDICT_PASS;
	}
	if (find_workload(bank.workloads, skb, MSEG_CGROUP_OF_SKB, uid, &workload))
		return MSEG_VERDICT_PASS;
	if (!workload_managed(&workload, direction))
		return MSEG_VERDICT_PASS;

	judge(&bank, &workload, direction, peer_addr, pkt->protocol, judged_port(pkt), &judgement);
	pass = enforce(&judgement);

	if (is_icmp(pkt->protocol))
		peer_port = bpf_htons(pkt->icmp_type);
	identity_init(identity, &judgement, direction, pkt->protocol, peer_addr, peer_port);
	__builtin_memcpy(identity->local_addr,
			 direction == MSEG_DIR_EGRESS ? pkt->src_addr : pkt->dst_addr, 16);
	identity->local_port = direction == MSEG_DIR_EGRESS ? pkt->src_port : pkt->dst_port;
	if (direction == MSEG_DIR_EGRESS) {
		identity_set_task(identity);
	} else {
		identity->uid = uid;
		identity->cgroup_id = bpf_skb_cgroup_id(skb);
	}
	if (!pass)
		report_denied(identity, judged_port(pkt));
	else if (flow)
		flow_admit(flow, identity, pkt->payload_len);
	return pass;
}

/* The flow a connectionless packet belongs to, seen from the local socket. */
static __always_inline void packet_flow(const struct mseg_packet *pkt, __u8 direction,
					struct mseg_flow_key *key)
{
	if (direction == MSEG_DIR_EGRESS)
		flow_key_init(key, pkt->dst_addr, pkt->src_port, pkt->dst_port, pkt->protocol);
	else
		flow_key_init(key, pkt->src_addr, pkt->dst_port, pkt->src_port, pkt->protocol);
	if (is_icmp(key->protocol)) {
		/* Echo request and reply share the identifier; the type is not part of the flow. */
		key->peer_port = 0;
	}
}

SEC("cgroup_skb/egress")
int mseg_egress(struct __sk_buff *skb)
{
	struct mseg_flow_identity identity;
	struct mseg_flow_key flow;
	struct mseg_packet pkt;
	struct bpf_sock *sk;

	sk = skb->sk;
	if (!sk)
		return MSEG_VERDICT_PASS;
	sk = bpf_sk_fullsock(sk);
	if (!sk)
		return MSEG_VERDICT_PASS;
	/* TCP sockets were judged at connect() and sockops reports them. */
	if (sk->type != MSEG_SOCK_RAW && sk->protocol == IPPROTO_TCP)
		return MSEG_VERDICT_PASS;
	if (parse_packet(skb, &pkt)) {
		count_reason(MSEG_REASON_SHORT_PACKET);
		return MSEG_VERDICT_PASS;
	}

	packet_flow(&pkt, MSEG_DIR_EGRESS, &flow);
	if (pkt.has_l4 && flow_seen(&flow, MSEG_DIR_EGRESS, pkt.payload_len))
		return MSEG_VERDICT_PASS;
	/* Unconnected UDP was judged in sendmsg, which admitted its flow or refused it. */
	if (sk->type != MSEG_SOCK_RAW && sk->protocol == IPPROTO_UDP &&
	    sk->state != BPF_TCP_ESTABLISHED)
		return MSEG_VERDICT_PASS;
	return judge_skb(skb, &pkt, MSEG_DIR_EGRESS, pkt.has_l4 ? &flow : NULL, &identity);
}

/* A TCP packet opens a connection only as a SYN (without ACK) to a listening socket. */
static __always_inline int tcp_opens_connection(const struct bpf_sock *sk,
						const struct mseg_packet *pkt)
{
	if (sk->state != BPF_TCP_LISTEN)
		return 0;
	return (pkt->tcp_flags & (MSEG_TCP_FLAG_SYN | MSEG_TCP_FLAG_ACK)) == MSEG_TCP_FLAG_SYN;
}

/* Judges an inbound SYN; an admitted one waits in mseg_accept_v1 for sockops to report it. */
static __always_inline int judge_syn(struct __sk_buff *skb, const struct mseg_packet *pkt)
{
	struct mseg_flow_identity identity;
	struct mseg_flow_key key;
	int pass;

	identity.verdict = MSEG_VERDICT_NONE;
	pass = judge_skb(skb, pkt, MSEG_DIR_INGRESS, NULL, &identity);
	if (!pass || identity.verdict == MSEG_VERDICT_NONE || !telemetry_on())
		return pass;
	packet_flow(pkt, MSEG_DIR_INGRESS, &key);
	bpf_map_update_elem(&mseg_accept_v1, &key, &identity, BPF_ANY);
	return pass;
}

/*
 * LIMITATION: echo requests the kernel answers itself reach no socket, so no cgroup program
 * sees them; only a workload's own pings are judged (on egress).
 */
SEC("cgroup_skb/ingress")
int mseg_ingress(struct __sk_buff *skb)
{
	struct mseg_flow_identity identity;
	struct mseg_flow_key flow;
	struct mseg_packet pkt;
	struct bpf_sock *sk;

	sk = skb->sk;
	if (!sk)
		return MSEG_VERDICT_PASS;
	sk = bpf_sk_fullsock(sk);
	if (!sk)
		return MSEG_VERDICT_PASS;
	/*
	 * A TCP socket that is not listening carries an admitted connection. Deciding that before
	 * parsing the packet keeps the per-packet cost of bulk transfers at a few field reads.
	 */
	if (sk->type != MSEG_SOCK_RAW && sk->protocol == IPPROTO_TCP && sk->state != BPF_TCP_LISTEN)
		return MSEG_VERDICT_PASS;
	if (parse_packet(skb, &pkt)) {
		count_reason(MSEG_REASON_SHORT_PACKET);
		return MSEG_VERDICT_PASS;
	}

	if (pkt.protocol == IPPROTO_TCP && sk->type != MSEG_SOCK_RAW) {
		if (!pkt.has_l4 || !tcp_opens_connection(sk, &pkt))
			return MSEG_VERDICT_PASS;
		return judge_syn(skb, &pkt);
	}

	packet_flow(&pkt, MSEG_DIR_INGRESS, &flow);
	if (pkt.has_l4 && flow_seen(&flow, MSEG_DIR_INGRESS, pkt.payload_len)) {
		count_reason(MSEG_REASON_REPLY_ADMITTED);
		return MSEG_VERDICT_PASS;
	}
	return judge_skb(skb, &pkt, MSEG_DIR_INGRESS, pkt.has_l4 ? &flow : NULL, &identity);
}

/*
 * Reads a 32-bit context field at its fixed offset. The verifier only accepts context reads as
 * "register = *(ctx + constant)"; when clang shares an address computation between the IPv4
 * and IPv6 branches it emits "ctx + offset" first and the load later, which is refused.
 */
#define MSEG_CTX_U32(ctx, field)                                                     \
	({                                                                           \
		__u32 mseg_value;                                                    \
		asm volatile("%0 = *(u32 *)(%1 + %2)"                                \
			     : "=r"(mseg_value)                                      \
			     : "r"(ctx), "i"(__builtin_offsetof(typeof(*(ctx)), field))); \
		mseg_value;                                                          \
	})

/* The local or the remote address of a sock_ops socket, IPv4-mapped for IPv4. */
static __always_inline void sockops_address(struct bpf_sock_ops *skops, int remote, __u8 out[16])
{
	__u32 words[4];

	if (MSEG_CTX_U32(skops, family) == 2 /* AF_INET */) {
		ipv4_mapped(remote ? MSEG_CTX_U32(skops, remote_ip4) : MSEG_CTX_U32(skops, local_ip4),
			    out);
		return;
	}
	if (remote) {
		words[0] = MSEG_CTX_U32(skops, remote_ip6[0]);
		words[1] = MSEG_CTX_U32(skops, remote_ip6[1]);
		words[2] = MSEG_CTX_U32(skops, remote_ip6[2]);
		words[3] = MSEG_CTX_U32(skops, remote_ip6[3]);
	} else {
		words[0] = MSEG_CTX_U32(skops, local_ip6[0]);
		words[1] = MSEG_CTX_U32(skops, local_ip6[1]);
		words[2] = MSEG_CTX_U32(skops, local_ip6[2]);
		words[3] = MSEG_CTX_U32(skops, local_ip6[3]);
	}
	__builtin_memcpy(out, words, 16);
}

/* sock_ops gives the remote port big-endian in the upper half of a 32-bit field. */
static __always_inline __be16 sockops_remote_port(struct bpf_sock_ops *skops)
{
	return bpf_htons((__u16)bpf_ntohl(MSEG_CTX_U32(skops, remote_port)));
}

/* Reports an established connection and asks for its state changes, to report its end. */
static __always_inline void connection_started(struct bpf_sock_ops *skops,
					       struct mseg_flow_identity *identity)
{
	sockops_address(skops, 0, identity->local_addr);
	identity->local_port = bpf_htons((__u16)MSEG_CTX_U32(skops, local_port));
	identity->start_ns = bpf_ktime_get_boot_ns();
	emit_event(MSEG_EVENT_START, bpf_get_socket_cookie(skops), identity, NULL);
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
}

static __always_inline void active_established(struct bpf_sock_ops *skops)
{
	struct mseg_flow_identity *identity;
	struct bpf_sock *sk = skops->sk;

	if (!sk)
		return;
	identity = bpf_sk_storage_get(&mseg_sk_v1, sk, 0, 0);
	if (identity)
		connection_started(skops, identity);
}

static __always_inline void passive_established(struct bpf_sock_ops *skops)
{
	struct mseg_flow_identity *pending;
	struct mseg_flow_identity *identity;
	struct bpf_sock *sk = skops->sk;
	struct mseg_flow_key key;
	__u8 peer[16];

	if (!sk)
		return;
	sockops_address(skops, 1, peer);
	flow_key_init(&key, peer, bpf_htons((__u16)MSEG_CTX_U32(skops, local_port)),
		      sockops_remote_port(skops), IPPROTO_TCP);
	pending = bpf_map_lookup_elem(&mseg_accept_v1, &key);
	if (!pending)
		return;
	identity = bpf_sk_storage_get(&mseg_sk_v1, sk, pending, BPF_SK_STORAGE_GET_F_CREATE);
	bpf_map_delete_elem(&mseg_accept_v1, &key);
	if (!identity) {
		count_reason(MSEG_REASON_SOCKET_STORAGE);
		return;
	}
	connection_started(skops, identity);
}

#define MSEG_RCV_SHUTDOWN 1

/*
 * Payload bytes each way, as the applications sent them. sock_ops' bytes_acked and
 * bytes_received count sequence space, which includes the SYN and FIN; the tcp_sock's
 * bytes_sent counts payload only (minus retransmissions for unique bytes), and a received FIN
 * (RCV_SHUTDOWN) is taken off bytes_received.
 */
static __always_inline void tcp_payload_bytes(struct bpf_sock_ops *skops, struct bpf_sock *sk,
					      struct mseg_flow *counters)
{
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	__u64 received;

	if (!tp) {
		counters->bytes_out = skops->bytes_acked;
		counters->bytes_in = skops->bytes_received;
		return;
	}
	counters->bytes_out = tp->bytes_sent - tp->bytes_retrans;
	received = tp->bytes_received;
	if ((tp->inet_conn.icsk_inet.sk.sk_shutdown & MSEG_RCV_SHUTDOWN) && received > 0)
		received -= 1;
	counters->bytes_in = received;
}

static __always_inline void connection_closed(struct bpf_sock_ops *skops)
{
	struct mseg_flow_identity *identity;
	struct bpf_sock *sk = skops->sk;
	struct mseg_flow counters = {};

	if (!sk)
		return;
	identity = bpf_sk_storage_get(&mseg_sk_v1, sk, 0, 0);
	if (!identity)
		return;
	tcp_payload_bytes(skops, sk, &counters);
	counters.packets_out = skops->segs_out;
	counters.packets_in = skops->segs_in;
	emit_event(MSEG_EVENT_END, bpf_get_socket_cookie(skops), identity, &counters);
	bpf_sk_storage_delete(&mseg_sk_v1, sk);
}

SEC("sockops")
int mseg_sockops(struct bpf_sock_ops *skops)
{
	/* Connections that were open when telemetry was turned off end unreported. */
	if (!telemetry_on())
		return 1;
	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		active_established(skops);
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		passive_established(skops);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] == BPF_TCP_CLOSE)
			connection_closed(skops);
		break;
	}
	return 1;
}
