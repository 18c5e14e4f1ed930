/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Header parsing for cgroup_skb programs. skb data starts at the network header there. Reads
 * go through bpf_skb_load_bytes so non-linear packets parse the same as linear ones.
 */
#ifndef MSEG_PACKET_BPF_H
#define MSEG_PACKET_BPF_H

#include "policy.bpf.h"
#include <bpf/bpf_endian.h>

#define MSEG_ETH_P_IP 0x0800
#define MSEG_ETH_P_IPV6 0x86DD
#define MSEG_IPV6_MAX_EXT_HEADERS 4
#define MSEG_IP_OFFSET_MASK 0x1fff
#define MSEG_IPPROTO_ICMPV6 58
#define MSEG_IPV6_HOPOPTS 0
#define MSEG_IPV6_ROUTING 43
#define MSEG_IPV6_FRAGMENT 44
#define MSEG_IPV6_DSTOPTS 60

#define MSEG_TCP_FLAG_SYN 0x02
#define MSEG_TCP_FLAG_ACK 0x10

#define MSEG_ICMP_ECHO_REPLY 0
#define MSEG_ICMP_ECHO_REQUEST 8
#define MSEG_ICMPV6_ECHO_REQUEST 128
#define MSEG_ICMPV6_ECHO_REPLY 129

struct mseg_packet {
	__u8 src_addr[16]; /* IPv4-mapped for IPv4 */
	__u8 dst_addr[16];
	__u8 protocol;
	__u8 has_l4;      /* ports or ICMP fields were read */
	__u8 tcp_flags;
	__u8 icmp_type;
	__be16 src_port;  /* ICMP echo: the identifier, in both port fields */
	__be16 dst_port;
	__u32 payload_len; /* bytes after the UDP header, or the whole ICMP message; else 0 */
};

static __always_inline int is_icmp(__u8 protocol)
{
	return protocol == IPPROTO_ICMP || protocol == MSEG_IPPROTO_ICMPV6;
}

static __always_inline int is_echo(__u8 protocol, __u8 type)
{
	if (protocol == IPPROTO_ICMP)
		return type == MSEG_ICMP_ECHO_REQUEST || type == MSEG_ICMP_ECHO_REPLY;
	return type == MSEG_ICMPV6_ECHO_REQUEST || type == MSEG_ICMPV6_ECHO_REPLY;
}

static __always_inline int parse_l4(struct __sk_buff *skb, __u32 offset, struct mseg_packet *pkt)
{
	__u8 header[14];

	if (pkt->protocol == IPPROTO_TCP) {
		if (bpf_skb_load_bytes(skb, offset, header, 14))
			return -1;
		pkt->tcp_flags = header[13];
	} else if (pkt->protocol == IPPROTO_UDP || is_icmp(pkt->protocol)) {
		if (bpf_skb_load_bytes(skb, offset, header, 8))
			return -1;
	} else {
		return 0;
	}

	if (pkt->protocol == IPPROTO_UDP && skb->len >= offset + 8)
		pkt->payload_len = skb->len - offset - 8;
	else if (is_icmp(pkt->protocol) && skb->len >= offset)
		pkt->payload_len = skb->len - offset;

	if (is_icmp(pkt->protocol)) {
		pkt->icmp_type = header[0];
		if (is_echo(pkt->protocol, header[0])) {
			__builtin_memcpy(&pkt->src_port, header + 4, 2);
			pkt->dst_port = pkt->src_port;
		}
	} else {
		__builtin_memcpy(&pkt->src_port, header, 2);
		__builtin_memcpy(&pkt->dst_port, header + 2, 2);
	}
	pkt->has_l4 = 1;
	return 0;
}

static __always_inline int parse_ipv4(struct __sk_buff *skb, struct mseg_packet *pkt)
{
	struct iphdr ip;

	if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)))
		return -1;
	ipv4_mapped(ip.saddr, pkt->src_addr);
	ipv4_mapped(ip.daddr, pkt->dst_addr);
	pkt->protocol = ip.protocol;
	/* A later fragment has no transport header; it belongs to a datagram already judged. */
	if (bpf_ntohs(ip.frag_off) & MSEG_IP_OFFSET_MASK)
		return 0;
	return parse_l4(skb, ip.ihl * 4, pkt);
}

static __always_inline int ipv6_is_extension(__u8 next)
{
	return next == MSEG_IPV6_HOPOPTS || next == MSEG_IPV6_ROUTING || next == MSEG_IPV6_DSTOPTS ||
	       next == MSEG_IPV6_FRAGMENT;
}

static __always_inline int parse_ipv6(struct __sk_buff *skb, struct mseg_packet *pkt)
{
	struct ipv6hdr ip;
	__u32 offset = sizeof(ip);
	__u8 next;
	int i;

	if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)))
		return -1;
	__builtin_memcpy(pkt->src_addr, &ip.saddr, 16);
	__builtin_memcpy(pkt->dst_addr, &ip.daddr, 16);
	next = ip.nexthdr;

	for (i = 0; i < MSEG_IPV6_MAX_EXT_HEADERS && ipv6_is_extension(next); i++) {
		__u8 ext[8];

		if (bpf_skb_load_bytes(skb, offset, ext, sizeof(ext)))
			return -1;
		if (next == MSEG_IPV6_FRAGMENT) {
			__be16 frag_off;

			__builtin_memcpy(&frag_off, ext + 2, 2);
			if (bpf_ntohs(frag_off) & 0xfff8) {
				pkt->protocol = ext[0];
				return 0;
			}
			offset += 8;
		} else {
			offset += (ext[1] + 1) * 8;
		}
		next = ext[0];
	}
	/* LIMITATION: longer chains are judged by the last header type seen. */
	if (ipv6_is_extension(next)) {
		count_reason(MSEG_REASON_IPV6_EXT_HEADER);
		pkt->protocol = next;
		return 0;
	}
	pkt->protocol = next;
	return parse_l4(skb, offset, pkt);
}

static __always_inline int parse_packet(struct __sk_buff *skb, struct mseg_packet *pkt)
{
	__builtin_memset(pkt, 0, sizeof(*pkt));
	if (skb->protocol == bpf_htons(MSEG_ETH_P_IP))
		return parse_ipv4(skb, pkt);
	if (skb->protocol == bpf_htons(MSEG_ETH_P_IPV6))
		return parse_ipv6(skb, pkt);
	return -1;
}

#endif /* MSEG_PACKET_BPF_H */
