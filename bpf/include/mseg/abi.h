/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The contract between microseg's BPF programs and the agent: map keys, map values and
 * constants. Both sides include this one header; nothing is copied by hand.
 *
 * Rules for changing it: fixed-width types only, byte order spelled in the type, explicit
 * zeroed padding, no bitfields. A change to a pinned map's key or value bumps that map's
 * version suffix (mseg_<noun>_v<N>) so an old pinned map is never read with a new layout.
 */
#ifndef MSEG_ABI_H
#define MSEG_ABI_H

#ifdef __bpf__
#include "vmlinux.h"
#else
#include <linux/types.h>
#endif

/* Deepest cgroup level whose id the datapath checks when resolving a workload. */
#define MSEG_MAX_CGROUP_DEPTH 16

#define MSEG_UID_ANY 0xffffffffu

/* Reserved identities; the policy compiler numbers the rest. */
#define MSEG_PEER_ANY 0
#define MSEG_PEER_WORLD 1
#define MSEG_RULE_NONE 0
#define MSEG_RULE_DEFAULT_DENY 1  /* no rule matched a managed direction in enforce mode */
#define MSEG_RULE_DEFAULT_AUDIT 2 /* ... in audit mode */
#define MSEG_FIRST_RULE_ID 3
#define MSEG_RULE_NAME_LEN 120

/* Stable rule ids index the per-rule counter array. */
#define MSEG_MAX_RULES 262144

#define MSEG_MAX_WORKLOAD_KEYS 65536
#define MSEG_MAX_PEER_PREFIXES 262144
#define MSEG_MAX_VERDICT_ENTRIES 1048576
#define MSEG_MAX_PORT_VERDICTS 1048576
#define MSEG_MAX_FLOWS 65536
#define MSEG_MAX_DENIALS 65536
#define MSEG_MAX_PENDING_ACCEPTS 16384
/* 8 MiB: about 50,000 events, a second of bursts at the target rate. The agent maps it twice
 * (the kernel double-maps the data pages), so it counts 16 MiB towards the agent's RSS. */
#define MSEG_EVENT_RING_BYTES (8 * 1024 * 1024)
#define MSEG_COMM_LEN 16

/* Policy state is double-buffered in two banks; the config entry names the active one. */
#define MSEG_BANKS 2

enum mseg_direction {
	MSEG_DIR_EGRESS = 0,
	MSEG_DIR_INGRESS = 1,
};

/* Ordered by precedence: the highest verdict of all matching entries wins. */
enum mseg_verdict {
	MSEG_VERDICT_NONE = 0,  /* the workload is not managed in this direction */
	MSEG_VERDICT_ALLOW = 1,
	MSEG_VERDICT_AUDIT = 2, /* would deny; the traffic passes */
	MSEG_VERDICT_DENY = 3,
};

/* Why the datapath passed or dropped without a policy verdict, or lost something. */
enum mseg_reason {
	MSEG_REASON_POLICY_DENY = 0,   /* dropped by a deny verdict */
	MSEG_REASON_POLICY_AUDIT = 1,  /* passed, but policy would deny */
	MSEG_REASON_NO_POLICY = 2,     /* no active bank yet: passed unjudged */
	MSEG_REASON_SHORT_PACKET = 3,  /* headers could not be read: passed unjudged */
	MSEG_REASON_FLOW_TABLE_FULL = 4,
	MSEG_REASON_IPV6_EXT_HEADER = 5, /* upper-layer header not found: judged as protocol any */
	MSEG_REASON_REPLY_ADMITTED = 6,  /* ingress packet of a flow we admitted earlier */
	MSEG_REASON_EVENT_LOST = 7,      /* the event ring buffer was full: a flow event is lost */
	MSEG_REASON_DENIAL_TABLE_FULL = 8, /* a denied attempt could not be aggregated */
	MSEG_REASON_SOCKET_STORAGE = 9,  /* no socket storage: the flow's start and end go unreported */
	MSEG_REASON_MAX = 16,
};

/* Workload flags: which directions are managed (default deny) and which only audit. */
#define MSEG_WL_EGRESS_MANAGED (1u << 0)
#define MSEG_WL_INGRESS_MANAGED (1u << 1)
#define MSEG_WL_EGRESS_AUDIT (1u << 2)
#define MSEG_WL_INGRESS_AUDIT (1u << 3)

/*
 * Workload map key: a cgroup id (0: any cgroup) and a uid (MSEG_UID_ANY: any user). The
 * datapath tries the socket's cgroup and each ancestor, deepest first, with the exact uid and
 * then any uid, and finally cgroup 0, so the most specific definition wins.
 */
struct mseg_workload_key {
	__u64 cgroup_id;
	__u32 uid;
	__u32 pad;
};

struct mseg_workload {
	__u32 id;
	__u32 flags; /* MSEG_WL_* */
};

/* Inventory trie key: IPv4 is stored IPv4-mapped, so prefixlen of a v4 /n is 96 + n. */
struct mseg_peer_key {
	__u32 prefixlen;
	__u8 addr[16];
};

struct mseg_peer {
	__u32 id;
};

/*
 * Verdict trie key. Fields run from most to least significant because the trie matches a
 * prefix of the bytes after prefixlen: an entry for "any protocol" stops after direction, an
 * entry for "any port" after protocol, and a port range is a few entries that stop inside the
 * port. That is why the port is big-endian. For ICMP the port holds the message type.
 */
struct mseg_verdict_key {
	__u32 prefixlen;
	__u32 workload_id;
	__u32 peer_id;
	__u8 direction;
	__u8 protocol;
	__be16 port;
};

/*
 * Port verdict key: a verdict entry for one protocol and one port (or ICMP type), which is what
 * most rules compile to. These live in a hash map rather than the trie: a hash lookup and a
 * batched hash insert cost a fraction of their trie equivalents at 100,000 entries. Such an
 * entry is the longest possible match, so when it exists the trie need not be asked. The
 * fields are those of mseg_verdict_key after prefixlen, in the same order.
 */
struct mseg_port_verdict_key {
	__u32 workload_id;
	__u32 peer_id;
	__u8 direction;
	__u8 protocol;
	__be16 port;
};

/* Prefix lengths in bits over the data after prefixlen. */
#define MSEG_VERDICT_PREFIX_ANY_PROTO 72 /* workload, peer, direction */
#define MSEG_VERDICT_PREFIX_ANY_PORT 80  /* ... and protocol */
#define MSEG_VERDICT_PREFIX_FULL 96      /* ... and all 16 port bits */

struct mseg_verdict_value {
	__u32 rule_id;
	__u8 verdict; /* enum mseg_verdict */
	__u8 pad[3];
};

struct mseg_config {
	__u32 active_bank; /* 0 or 1; anything else: no policy yet */
	__u32 pad;
	__u64 policy_version;
};

/*
 * Datapath options (mseg_opts_v1), set by the agent. All zero is the default behaviour, so a
 * datapath whose options nobody wrote acts as before the option existed.
 */
#define MSEG_OPT_NO_TELEMETRY (1u << 0) /* enforce and count per rule, but report no flows */

struct mseg_options {
	__u32 flags; /* MSEG_OPT_* */
	__u32 pad;
};

struct mseg_rule_stats {
	__u64 hits;
};

/* Names of the rules behind rule ids, for tools reading the counters. Not used by programs. */
struct mseg_rule_name {
	char name[MSEG_RULE_NAME_LEN]; /* "segment/rule", NUL-terminated */
	__u8 verdict;                  /* enum mseg_verdict the rule gives */
	__u8 pad[7];
};

/*
 * Flow table key (the value, struct mseg_flow, is defined with the telemetry structs below).
 * The flow table remembers flows the datapath admitted for UDP, ICMP and other connectionless
 * protocols so replies pass the other direction without being judged again. Keyed from the
 * local workload's point of view; the local address is not part of the key because the
 * sendmsg hook may not know it yet.
 */
struct mseg_flow_key {
	__u8 peer_addr[16]; /* IPv4-mapped for IPv4 */
	__be16 local_port;  /* ICMP: echo identifier */
	__be16 peer_port;   /* ICMP: 0 */
	__u8 protocol;
	__u8 pad[3];
};


/*
 * Flow telemetry. The datapath reports through one ring buffer; every event is self-contained
 * (an end carries the identity and start time its connection was admitted with), so the agent
 * needs no state to turn events into records. Denied attempts are aggregated in mseg_deny_v1:
 * the first of a (workload, peer, port) is an event, the rest only count there.
 */
enum mseg_event_kind {
	MSEG_EVENT_START = 1,  /* an admitted flow began */
	MSEG_EVENT_END = 2,    /* it ended; counters and duration are final */
	MSEG_EVENT_DENIED = 3, /* the first refused attempt of its kind */
};

struct mseg_flow_identity {
	__u8 local_addr[16];  /* IPv4-mapped for IPv4; all zero when not known yet */
	__u8 peer_addr[16];
	__be16 local_port;    /* ICMP: 0 */
	__be16 peer_port;     /* ICMP: the type judged, as a big-endian number */
	__u8 protocol;
	__u8 direction;       /* enum mseg_direction */
	__u8 verdict;         /* enum mseg_verdict */
	__u8 pad;
	__u32 workload_id;
	__u32 peer_id;
	__u32 rule_id;
	__u32 pid;            /* the task that owns the connection; 0 when not known */
	__u32 uid;
	__u64 cgroup_id;
	__u64 start_ns;       /* CLOCK_BOOTTIME */
	char comm[MSEG_COMM_LEN];
};

/* A datagram flow in the flow table: what admitted it, and what it carried since. */
struct mseg_flow {
	__u64 last_seen_ns;   /* CLOCK_BOOTTIME; the agent ends flows idle for too long */
	__u64 bytes_out;
	__u64 bytes_in;
	__u64 packets_out;
	__u64 packets_in;
	struct mseg_flow_identity identity;
};

struct mseg_event {
	__u64 time_ns;        /* CLOCK_BOOTTIME */
	__u64 cookie;         /* socket cookie, joins a start with its end; 0 for datagram flows */
	__u32 kind;           /* enum mseg_event_kind */
	__u32 pad;
	struct mseg_flow_identity flow;
	__u64 bytes_out;
	__u64 bytes_in;
	__u64 packets_out;
	__u64 packets_in;
};

struct mseg_denial_key {
	__u8 peer_addr[16];
	__u32 workload_id;
	__be16 port;
	__u8 protocol;
	__u8 direction;
};

struct mseg_denial {
	__u64 first_ns;
	__u64 last_ns;
	__u64 attempts;
	__u64 reported;       /* attempts the agent has reported; written by the agent only */
	struct mseg_flow_identity flow; /* the first attempt */
};

#endif /* MSEG_ABI_H */
