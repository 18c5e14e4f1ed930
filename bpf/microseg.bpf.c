// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * microseg's entry programs, one per cgroup hook. Each is a thin adapter from its context to
 * the shared logic in lib/: find the workload, skip what is not managed, judge, count, decide.
 *
 * Who judges what:
 *   connect4/6    TCP connects and UDP connects, by destination.
 *   sendmsg4/6    unconnected UDP, per datagram destination; replies of admitted flows pass.
 *   skb egress    ICMP, raw sockets and every other protocol the socket hooks never see.
 *   skb ingress   new inbound TCP connections (SYN to a listener), UDP datagrams of flows not
 *                 yet admitted, ICMP and other protocols; replies of admitted flows pass.
 */
#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "lib/flow.bpf.h"
#include "lib/packet.bpf.h"
#include "lib/policy.bpf.h"

#define MSEG_SOCK_RAW 3
#define MSEG_VERDICT_PASS 1

char LICENSE[] SEC("license") = "Dual BSD/GPL";

static __always_inline __u32 current_uid(void)
{
	return (__u32)bpf_get_current_uid_gid();
}

/*
 * Judges an egress connection or datagram from a socket-address hook; 1 passes, 0 refuses.
 * LIMITATION: the workload is the calling task's (cgroup and uid), while packet hooks use the
 * socket's; they differ only for a socket handed to a process of another workload.
 */
static __always_inline int judge_sock_addr(struct bpf_sock_addr *ctx, const __u8 peer_addr[16],
					   struct mseg_judgement *judgement)
{
	struct mseg_workload workload;
	struct mseg_bank bank;

	if (active_bank(&bank)) {
		count_reason(MSEG_REASON_NO_POLICY);
		return MSEG_VERDICT_PASS;
	}
	if (find_workload(bank.workloads, ctx, MSEG_CGROUP_OF_TASK, current_uid(), &workload))
		return MSEG_VERDICT_PASS;
	if (!workload_managed(&workload, MSEG_DIR_EGRESS))
		return MSEG_VERDICT_PASS;

	judge(&bank, &workload, MSEG_DIR_EGRESS, peer_addr, (__u8)ctx->protocol,
	      (__be16)ctx->user_port, judgement);
	return enforce(judgement);
}

static __always_inline int connect_common(struct bpf_sock_addr *ctx, const __u8 peer_addr[16])
{
	struct mseg_judgement judgement = {};

	return judge_sock_addr(ctx, peer_addr, &judgement);
}

/*
 * Unconnected UDP: a datagram to a peer whose flow was admitted (in either direction) is part
 * of that flow; anything else is judged and, when it passes, admits its flow.
 */
static __always_inline int sendmsg_common(struct bpf_sock_addr *ctx, const __u8 peer_addr[16])
{
	struct mseg_judgement judgement = {};
	struct mseg_flow_key key;
	struct bpf_sock *sk = ctx->sk;
	int pass;

	if (!sk)
		return MSEG_VERDICT_PASS;
	flow_key_init(&key, peer_addr, bpf_htons((__u16)sk->src_port), (__be16)ctx->user_port,
		      (__u8)ctx->protocol);
	if (flow_seen(&key))
		return MSEG_VERDICT_PASS;

	pass = judge_sock_addr(ctx, peer_addr, &judgement);
	if (pass && judgement.verdict != MSEG_VERDICT_NONE)
		flow_admit(&key, &judgement, MSEG_DIR_EGRESS);
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

static __always_inline int judge_skb(struct __sk_buff *skb, const struct mseg_packet *pkt,
				     __u8 direction, struct mseg_flow_key *flow)
{
	const __u8 *peer_addr = direction == MSEG_DIR_EGRESS ? pkt->dst_addr : pkt->src_addr;
	struct mseg_judgement judgement = {};
	struct mseg_workload workload;
	struct mseg_bank bank;
	int pass;

	if (active_bank(&bank)) {
		count_reason(MSEG_REASON_NO_POLICY);
		return MSEG_VERDICT_PASS;
	}
	if (find_workload(bank.workloads, skb, MSEG_CGROUP_OF_SKB, bpf_get_socket_uid(skb),
			  &workload))
		return MSEG_VERDICT_PASS;
	if (!workload_managed(&workload, direction))
		return MSEG_VERDICT_PASS;

	judge(&bank, &workload, direction, peer_addr, pkt->protocol, judged_port(pkt),
	      &judgement);
	pass = enforce(&judgement);
	if (pass && flow)
		flow_admit(flow, &judgement, direction);
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
	struct mseg_flow_key flow;
	struct mseg_packet pkt;
	struct bpf_sock *sk;

	sk = skb->sk;
	if (!sk)
		return MSEG_VERDICT_PASS;
	sk = bpf_sk_fullsock(sk);
	if (!sk)
		return MSEG_VERDICT_PASS;
	/* TCP and UDP sockets were judged at connect() or sendmsg(); raw sockets never are. */
	if (sk->type != MSEG_SOCK_RAW &&
	    (sk->protocol == IPPROTO_TCP || sk->protocol == IPPROTO_UDP))
		return MSEG_VERDICT_PASS;
	if (parse_packet(skb, &pkt)) {
		count_reason(MSEG_REASON_SHORT_PACKET);
		return MSEG_VERDICT_PASS;
	}

	packet_flow(&pkt, MSEG_DIR_EGRESS, &flow);
	if (pkt.has_l4 && flow_seen(&flow))
		return MSEG_VERDICT_PASS;
	return judge_skb(skb, &pkt, MSEG_DIR_EGRESS, pkt.has_l4 ? &flow : NULL);
}

/* A TCP packet opens a connection only as a SYN (without ACK) to a listening socket. */
static __always_inline int tcp_opens_connection(const struct bpf_sock *sk,
						const struct mseg_packet *pkt)
{
	if (sk->state != BPF_TCP_LISTEN)
		return 0;
	return (pkt->tcp_flags & (MSEG_TCP_FLAG_SYN | MSEG_TCP_FLAG_ACK)) == MSEG_TCP_FLAG_SYN;
}

/*
 * LIMITATION: echo requests the kernel answers itself reach no socket, so no cgroup program
 * sees them; only a workload's own pings are judged (on egress).
 */
SEC("cgroup_skb/ingress")
int mseg_ingress(struct __sk_buff *skb)
{
	struct mseg_flow_key flow;
	struct mseg_packet pkt;
	struct bpf_sock *sk;

	sk = skb->sk;
	if (!sk)
		return MSEG_VERDICT_PASS;
	sk = bpf_sk_fullsock(sk);
	if (!sk)
		return MSEG_VERDICT_PASS;
	if (parse_packet(skb, &pkt)) {
		count_reason(MSEG_REASON_SHORT_PACKET);
		return MSEG_VERDICT_PASS;
	}

	if (pkt.protocol == IPPROTO_TCP && sk->type != MSEG_SOCK_RAW) {
		if (!pkt.has_l4 || !tcp_opens_connection(sk, &pkt))
			return MSEG_VERDICT_PASS;
		return judge_skb(skb, &pkt, MSEG_DIR_INGRESS, NULL);
	}
	/* A connected UDP socket only receives from the peer its connect() was judged for. */
	if (pkt.protocol == IPPROTO_UDP && sk->type != MSEG_SOCK_RAW &&
	    sk->state == BPF_TCP_ESTABLISHED)
		return MSEG_VERDICT_PASS;

	packet_flow(&pkt, MSEG_DIR_INGRESS, &flow);
	if (pkt.has_l4 && flow_seen(&flow)) {
		count_reason(MSEG_REASON_REPLY_ADMITTED);
		return MSEG_VERDICT_PASS;
	}
	return judge_skb(skb, &pkt, MSEG_DIR_INGRESS, pkt.has_l4 ? &flow : NULL);
}
