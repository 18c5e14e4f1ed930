/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Every map of the datapath. Maps are pinned by name so enforcement survives the agent and a
 * restarted agent adopts them. Policy maps are double-buffered: each outer array holds one
 * inner map per bank, and mseg_cfg_v2 names the active bank, so a verdict reads one consistent
 * policy version while the agent fills the other bank.
 *
 * Inner maps give key and value sizes rather than BTF types: clang 14 emits their structs only
 * as forward declarations there, which libbpf cannot size.
 */
#ifndef MSEG_MAPS_BPF_H
#define MSEG_MAPS_BPF_H

#include "mseg/abi.h"
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mseg_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mseg_cfg_v2 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mseg_options);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mseg_opts_v1 SEC(".maps");

struct mseg_workload_bank {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MSEG_MAX_WORKLOAD_KEYS);
	__uint(key_size, sizeof(struct mseg_workload_key));
	__uint(value_size, sizeof(struct mseg_workload));
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, MSEG_BANKS);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct mseg_workload_bank);
} mseg_wl_v2 SEC(".maps");

struct mseg_peer_bank {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MSEG_MAX_PEER_PREFIXES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(key_size, sizeof(struct mseg_peer_key));
	__uint(value_size, sizeof(struct mseg_peer));
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, MSEG_BANKS);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct mseg_peer_bank);
} mseg_peer_v2 SEC(".maps");

struct mseg_verdict_bank {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MSEG_MAX_VERDICT_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(key_size, sizeof(struct mseg_verdict_key));
	__uint(value_size, sizeof(struct mseg_verdict_value));
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, MSEG_BANKS);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct mseg_verdict_bank);
} mseg_vrd_v2 SEC(".maps");

/* Not preallocated: kernel memory follows the policy's size rather than the maximum. */
struct mseg_port_verdict_bank {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MSEG_MAX_PORT_VERDICTS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(key_size, sizeof(struct mseg_port_verdict_key));
	__uint(value_size, sizeof(struct mseg_verdict_value));
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, MSEG_BANKS);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct mseg_port_verdict_bank);
} mseg_pvrd_v2 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MSEG_MAX_RULES);
	__type(key, __u32);
	__type(value, struct mseg_rule_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mseg_rstat_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MSEG_REASON_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mseg_reason_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MSEG_MAX_RULES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct mseg_rule_name);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mseg_rname_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MSEG_MAX_FLOWS);
	__type(key, struct mseg_flow_key);
	__type(value, struct mseg_flow);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mseg_flow_v1 SEC(".maps");

#endif /* MSEG_MAPS_BPF_H */
