// Reading whole BPF maps in batches (BPF_MAP_LOOKUP_BATCH, kernel 5.6 and later): counters and
// names of a 100,000-rule policy in a few dozen system calls instead of one or two per rule.
// Works for hash and array maps, per-CPU ones included; LPM tries do not support it.
#pragma once

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>

#include "mseg/result.hpp"

namespace mseg::agent {

// Entries per BPF_MAP_LOOKUP_BATCH call. A hash map refuses a batch smaller than one of its
// buckets (ENOSPC); this is far above any bucket's length.
inline constexpr uint32_t kLookupBatchEntries = 4096;

// The bytes one entry's value takes in a batch: per-CPU maps give every possible CPU's value,
// each rounded up to 8 bytes.
inline Result<size_t> batchValueBytes(size_t value_size, bool per_cpu) {
  if (!per_cpu) {
    return value_size;
  }
  int cpus = libbpf_num_possible_cpus();
  if (cpus <= 0) {
    return Error::fromErrno(-cpus, "count possible CPUs");
  }
  return ((value_size + 7) / 8 * 8) * static_cast<size_t>(cpus);
}

// Hands every entry of the map behind `fd` to `visit` (its key and `value_bytes` of value, as
// batchValueBytes gives them), in the map's own order (an array's: by index), until `visit`
// returns false. Not atomic: entries changed meanwhile may be seen old or new.
template <typename K>
Status lookupBatched(int fd, size_t value_bytes,
                     const std::function<bool(const K&, const uint8_t*)>& visit) {
  // The position to continue from: an array's key, a hash map's bucket index (4 bytes).
  using Token = std::array<uint8_t, std::max<size_t>(sizeof(K), 8)>;
  alignas(8) Token in_token{};
  alignas(8) Token out_token{};
  std::vector<K> keys(kLookupBatchEntries);
  std::vector<uint8_t> values(kLookupBatchEntries * value_bytes);
  LIBBPF_OPTS(bpf_map_batch_opts, opts);
  bool first = true;
  for (;;) {
    uint32_t count = kLookupBatchEntries;
    int result = bpf_map_lookup_batch(fd, first ? nullptr : in_token.data(), out_token.data(),
                                      keys.data(), values.data(), &count, &opts);
    const int err = errno;
    if (result != 0 && err != ENOENT) {
      return Error::fromErrno(err, "read map in batches");
    }
    for (uint32_t i = 0; i < count; i++) {
      if (!visit(keys[i], values.data() + i * value_bytes)) {
        return {};
      }
    }
    if (result != 0) {
      return {};  // ENOENT: that was the last batch
    }
    in_token = out_token;
    first = false;
  }
}

// The sum over all CPUs of the 64-bit counter at each index from 0 to `last` of a per-CPU
// array, indexed by key.
inline Result<std::vector<uint64_t>> sumPerCpuCounters(int fd, uint32_t last) {
  auto value_bytes = batchValueBytes(sizeof(uint64_t), true);
  if (!value_bytes) {
    return value_bytes.error();
  }
  std::vector<uint64_t> totals(static_cast<size_t>(last) + 1);
  const size_t cpus = *value_bytes / sizeof(uint64_t);
  auto read =
      lookupBatched<uint32_t>(fd, *value_bytes, [&](const uint32_t& key, const uint8_t* value) {
        if (key > last) {
          return false;
        }
        uint64_t sum = 0;
        for (size_t cpu = 0; cpu < cpus; cpu++) {
          uint64_t count = 0;
          std::memcpy(&count, value + cpu * sizeof(uint64_t), sizeof(count));
          sum += count;
        }
        totals[key] = sum;
        return true;
      });
  if (!read) {
    return read.error().wrap("read per-CPU counters");
  }
  return totals;
}

}  // namespace mseg::agent
