#include "datapath.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <set>
#include <span>
#include <vector>

#include "capabilities.hpp"
#include "cgroup_owner.hpp"
#include "cgroups.hpp"
#include "logging.hpp"
#include "map_batch.hpp"
#include "microseg.skel.h"
#include "mounts.hpp"
#include "mseg/unique_fd.hpp"

namespace mseg::agent {
namespace {

constexpr const char* kLinkPrefix = "link_";
constexpr const char* kCapabilityHint =
    "the agent needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON, and a kernel with cgroup BPF "
    "(CONFIG_CGROUP_BPF), BPF links and BTF (5.8 or later)";

using OwnedFd = mseg::UniqueFd;

template <typename K, typename V>
Result<MapContent<K, V>> readMap(int fd) {
  MapContent<K, V> content;
  K key{};
  K next{};
  const K* previous = nullptr;
  while (bpf_map_get_next_key(fd, previous, &next) == 0) {
    V value{};
    if (bpf_map_lookup_elem(fd, &next, &value) == 0) {
      content.emplace(next, value);
    }
    key = next;
    previous = &key;
  }
  if (errno != ENOENT) {
    return Error::fromErrno(errno, "iterate map");
  }
  return content;
}

// Writes keys and values in one bpf() call: a 100,000-entry bank costs one system call
// instead of 100,000.
template <typename K, typename V>
Status updateBatch(int fd, std::span<const K> keys, std::span<const V> values) {
  if (keys.empty()) {
    return {};
  }
  LIBBPF_OPTS(bpf_map_batch_opts, opts, .elem_flags = BPF_ANY);
  auto count = static_cast<uint32_t>(keys.size());
  if (bpf_map_update_batch(fd, keys.data(), values.data(), &count, &opts) != 0) {
    return Error::fromErrno(errno, "write " + std::to_string(keys.size()) + " entries (" +
                                       std::to_string(count) + " written)");
  }
  return {};
}

// Deletes keys in as few bpf() calls as possible. A key already absent is no error: the
// content we diffed against may be stale after an earlier failed write.
template <typename K>
Status deleteBatch(int fd, std::span<const K> keys) {
  LIBBPF_OPTS(bpf_map_batch_opts, opts);
  size_t done = 0;
  while (done < keys.size()) {
    auto count = static_cast<uint32_t>(keys.size() - done);
    if (bpf_map_delete_batch(fd, keys.data() + done, &count, &opts) == 0) {
      return {};
    }
    if (errno != ENOENT) {
      return Error::fromErrno(errno, "delete " + std::to_string(keys.size()) + " entries");
    }
    done += count + 1;  // the batch stopped at the absent key: skip it
  }
  return {};
}

using Clock = std::chrono::steady_clock;

// Makes the map behind `fd` hold `desired`, given that it holds `current` now: deletes what
// is gone first (freeing room), then writes what is new or changed. Adds to `stats`.
template <typename K, typename V>
Status syncMap(int fd, const MapContent<K, V>& current, const MapContent<K, V>& desired,
               const char* what, ApplyStats& stats) {
  auto started = Clock::now();
  std::vector<K> stale;
  for (const auto& [key, value] : current) {
    if (desired.find(key) == desired.end()) {
      stale.push_back(key);
    }
  }
  std::vector<K> keys;
  std::vector<V> values;
  for (const auto& [key, value] : desired) {
    auto existing = current.find(key);
    if (existing != current.end() && std::memcmp(&existing->second, &value, sizeof(V)) == 0) {
      continue;
    }
    keys.push_back(key);
    values.push_back(value);
  }
  auto compared = Clock::now();
  stats.diff += compared - started;
  Status written = deleteBatch<K>(fd, stale);
  if (!written) {
    written = written.error().wrap(std::string("delete from ") + what);
  } else if (written = updateBatch<K, V>(fd, keys, values); !written) {
    written = written.error().wrap(std::string("update ") + what);
  }
  stats.write += Clock::now() - compared;
  stats.entries_deleted += stale.size();
  stats.entries_written += keys.size();
  return written;
}

Result<std::map<uint32_t, uint64_t>> sumPerCpu(int fd, uint32_t entries) {
  auto counts = sumPerCpuCounters(fd, entries - 1);
  if (!counts) {
    return counts.error();
  }
  std::map<uint32_t, uint64_t> totals;
  for (uint32_t key = 0; key < entries; key++) {
    if ((*counts)[key] != 0) {
      totals[key] = (*counts)[key];
    }
  }
  return totals;
}

// Every named rule's total, 0 included. Reads the counters up to the highest id in use in
// batches (map_batch.hpp): ids are handed out in order and never reused, so that is about as
// many entries as rules.
Result<std::map<uint32_t, uint64_t>> sumRuleHits(int stats_fd,
                                                 const std::map<uint32_t, RuleName>& names) {
  uint32_t last = MSEG_RULE_DEFAULT_AUDIT;
  if (!names.empty()) {
    last = std::max(last, names.rbegin()->first);
  }
  auto counts = sumPerCpuCounters(stats_fd, last);
  if (!counts) {
    return counts.error().wrap("read rule counters");
  }
  std::map<uint32_t, uint64_t> totals;
  totals[MSEG_RULE_DEFAULT_DENY] = (*counts)[MSEG_RULE_DEFAULT_DENY];
  totals[MSEG_RULE_DEFAULT_AUDIT] = (*counts)[MSEG_RULE_DEFAULT_AUDIT];
  for (const auto& [id, name] : names) {
    totals.emplace_hint(totals.end(), id, (*counts)[id]);  // ids ascend: no tree search
  }
  return totals;
}

Result<std::map<uint32_t, RuleName>> readRuleNames(int fd) {
  // The hash map hands entries out of order: sorted first, the map is built without searches.
  std::vector<std::pair<uint32_t, RuleName>> entries;
  auto read = lookupBatched<uint32_t>(
      fd, sizeof(mseg_rule_name), [&](const uint32_t& id, const uint8_t* value) {
        const auto* entry = reinterpret_cast<const mseg_rule_name*>(value);
        entries.emplace_back(
            id, RuleName{std::string(entry->name, strnlen(entry->name, sizeof(entry->name))),
                         entry->verdict});
        return true;
      });
  if (!read) {
    return read.error().wrap("read rule names");
  }
  std::sort(entries.begin(), entries.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  std::map<uint32_t, RuleName> names;
  for (auto& [id, name] : entries) {
    names.emplace_hint(names.end(), id, std::move(name));
  }
  return names;
}

Result<mseg_config> readConfig(int fd) {
  uint32_t zero = 0;
  mseg_config config{};
  if (bpf_map_lookup_elem(fd, &zero, &config) != 0) {
    return Error::fromErrno(errno, "read config map");
  }
  return config;
}

std::string bankPinPath(const std::string& pin_dir, const bpf_map* outer, uint32_t bank) {
  return pin_dir + "/" + bpf_map__name(outer) + "_b" + std::to_string(bank);
}

BankMapSpec bankMapSpec(const bpf_map* outer) {
  const bpf_map* inner = bpf_map__inner_map(const_cast<bpf_map*>(outer));
  return {bpf_map__type(inner), bpf_map__key_size(inner), bpf_map__value_size(inner),
          bpf_map__max_entries(inner), bpf_map__map_flags(inner)};
}

Result<int> openOrCreateBank(const std::string& path, const BankMapSpec& spec, const char* name) {
  int fd = bpf_obj_get(path.c_str());
  if (fd >= 0) {
    return fd;
  }
  if (errno != ENOENT) {
    return Error::fromErrno(errno, "open pinned bank " + path);
  }
  LIBBPF_OPTS(bpf_map_create_opts, create_opts, .map_flags = spec.flags);
  fd = bpf_map_create(static_cast<bpf_map_type>(spec.type), name, spec.key_size,
                      spec.value_size, spec.max_entries, &create_opts);
  if (fd < 0) {
    return Error::fromErrno(errno, std::string("create bank map ") + name);
  }
  if (bpf_obj_pin(fd, path.c_str()) != 0) {
    int err = errno;
    close(fd);
    return Error::fromErrno(err, "pin bank map at " + path);
  }
  return fd;
}

// Whether `pin_dir` holds a config map of any layout version: an older or newer agent's pins
// are microseg's too.
bool holdsConfigMap(const std::string& pin_dir) {
  std::error_code err;
  for (const auto& entry : std::filesystem::directory_iterator(pin_dir, err)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("mseg_cfg_v", 0) == 0) {
      return true;
    }
  }
  return false;
}

}  // namespace

Result<std::unique_ptr<Datapath>> Datapath::open(const DatapathOptions& options) {
  if (auto missing = missingCapabilities(); !missing.empty()) {
    std::string names;
    for (const auto& name : missing) {
      names += (names.empty() ? "" : ", ") + name;
    }
    return Error(EPERM, "missing capabilities: " + names +
                            " (run as root, or grant CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON)");
  }
  if (!options.cgroup_path.empty()) {
    if (auto alone = checkNoOtherAgentOnCgroup(options.cgroup_path, options.pin_dir); !alone) {
      return alone.error();
    }
  }
  if (auto mounted = ensureBpffs(options.pin_dir); !mounted) {
    return mounted.error();
  }
  std::unique_ptr<Datapath> datapath(new Datapath());
  datapath->options_ = options;
  if (auto lock = datapath->lockPinDir(); !lock) {
    return lock.error();
  }
  if (!options.cgroup_path.empty()) {
    if (auto links = datapath->verifyPinnedLinks(); !links) {
      return links.error();
    }
  }

  LIBBPF_OPTS(bpf_object_open_opts, open_opts, .pin_root_path = options.pin_dir.c_str());
  datapath->skeleton_ = mseg_skel__open_opts(&open_opts);
  if (datapath->skeleton_ == nullptr) {
    return Error::fromErrno(errno, "open BPF object");
  }
  for (size_t kind = 0; kind < kBankMaps; kind++) {
    datapath->bank_specs_[kind] = bankMapSpec(datapath->outerMap(kind));
  }
  if (auto versions = datapath->checkPolicyMapVersions(); !versions) {
    return versions.error();
  }
  if (int err = mseg_skel__load(datapath->skeleton_); err != 0) {
    return Error::fromErrno(err, std::string("load BPF programs (") + kCapabilityHint + ")");
  }
  if (auto prepared = datapath->prepareBanks(); !prepared) {
    return prepared.error();
  }
  if (auto adopted = datapath->readAdoptedState(); !adopted) {
    return adopted.error();
  }
  return datapath;
}

Datapath::~Datapath() {
  // Destroying a pinned link only drops our fd: the pin keeps the program attached.
  for (auto* link : links_) {
    bpf_link__destroy(link);
  }
  for (auto& bank : bank_fds_) {
    for (int fd : bank) {
      if (fd > 0) {
        close(fd);
      }
    }
  }
  mseg_skel__destroy(skeleton_);
  if (pin_lock_fd_ >= 0) {
    close(pin_lock_fd_);
  }
}

bpf_map* Datapath::outerMap(size_t kind) const {
  const std::array<bpf_map*, kBankMaps> outers = {
      skeleton_->maps.mseg_wl_v2, skeleton_->maps.mseg_peer_v2, skeleton_->maps.mseg_vrd_v2,
      skeleton_->maps.mseg_pvrd_v2};
  return outers[kind];
}

Status Datapath::prepareBanks() {
  const std::array<const char*, kBankMaps> names = {"mseg_wl_bank", "mseg_peer_bank",
                                                    "mseg_vrd_bank", "mseg_pvrd_bank"};
  for (uint32_t bank = 0; bank < MSEG_BANKS; bank++) {
    for (size_t kind = 0; kind < kBankMaps; kind++) {
      bpf_map* outer = outerMap(kind);
      auto fd = openOrCreateBank(bankPinPath(options_.pin_dir, outer, bank), bank_specs_[kind],
                                 names[kind]);
      if (!fd) {
        return fd.error();
      }
      bank_fds_[bank][kind] = *fd;
      // Idempotent: re-inserting the same inner map repairs a slot a crash left empty.
      if (bpf_map_update_elem(bpf_map__fd(outer), &bank, &*fd, BPF_ANY) != 0) {
        return Error::fromErrno(errno, std::string("install ") + names[kind]);
      }
    }
  }
  return {};
}

Status Datapath::readAdoptedState() {
  auto config = readConfig(bpf_map__fd(skeleton_->maps.mseg_cfg_v2));
  if (!config) {
    return config.error();
  }
  adopted_version_ = config->policy_version;
  active_bank_ = config->active_bank < MSEG_BANKS ? config->active_bank : 0;

  auto names = readRuleNames(bpf_map__fd(skeleton_->maps.mseg_rname_v1));
  if (!names) {
    return names.error();
  }
  rule_names_ = std::move(*names);

  for (uint32_t bank = 0; bank < MSEG_BANKS; bank++) {
    if (auto read = rereadBank(bank); !read) {
      return read;
    }
  }
  return {};
}

namespace {

// How many entries a map holds after `delta`.
template <typename K, typename V>
size_t sizeAfter(const MapContent<K, V>& content, const MapDelta<K, V>& delta) {
  size_t size = content.size();
  for (const K& key : delta.removals) {
    size -= content.count(key);
  }
  for (const K& key : delta.upsert_keys) {
    size += content.count(key) == 0 ? 1 : 0;
  }
  return size;
}

}  // namespace

Status Datapath::checkCapacity(const BankContent& desired) const {
  return checkCapacity({desired.workloads.size(), desired.peers.size(), desired.verdicts.size(),
                        desired.port_verdicts.size()});
}

Status Datapath::checkCapacity(const BankDelta& delta) const {
  const BankContent& current = *bank_content_[active_bank_];
  return checkCapacity({sizeAfter(current.workloads, delta.workloads), current.peers.size(),
                        sizeAfter(current.verdicts, delta.verdicts),
                        sizeAfter(current.port_verdicts, delta.port_verdicts)});
}

// `sizes`: entries per bank map, in the order of bank_fds_.
Status Datapath::checkCapacity(const std::array<size_t, kBankMaps>& sizes) const {
  const std::array<std::pair<size_t, const char*>, kBankMaps> needs = {{
      {sizes[0], "workload keys (cgroups x users)"},
      {sizes[1], "inventory prefixes"},
      {sizes[2], "verdict entries for port ranges and any port"},
      {sizes[3], "verdict entries for single ports"},
  }};
  for (size_t kind = 0; kind < kBankMaps; kind++) {
    if (needs[kind].first > bank_specs_[kind].max_entries) {
      return Error(ENOSPC, "the policy needs " + std::to_string(needs[kind].first) + " " +
                               needs[kind].second + ", the datapath holds " +
                               std::to_string(bank_specs_[kind].max_entries) +
                               "; nothing was changed. Narrow the rules' selectors or ports");
    }
  }
  return {};
}

Status Datapath::syncBank(uint32_t bank, const std::shared_ptr<BankContent>& desired,
                          ApplyStats& stats) {
  const BankContent& current = *bank_content_[bank];
  auto& fds = bank_fds_[bank];
  Status synced = syncMap(fds[0], current.workloads, desired->workloads, "workload map", stats);
  if (synced) {
    synced = syncMap(fds[1], current.peers, desired->peers, "inventory trie", stats);
  }
  if (synced) {
    synced = syncMap(fds[2], current.verdicts, desired->verdicts, "verdict trie", stats);
  }
  if (synced) {
    synced = syncMap(fds[3], current.port_verdicts, desired->port_verdicts, "port verdicts",
                     stats);
  }
  if (synced) {
    bank_content_[bank] = desired;
  }
  return synced;
}

Status Datapath::rereadBank(uint32_t bank) {
  auto content = std::make_shared<BankContent>();
  auto workloads = readMap<mseg_workload_key, mseg_workload>(bank_fds_[bank][0]);
  auto peers = readMap<mseg_peer_key, mseg_peer>(bank_fds_[bank][1]);
  auto verdicts = readMap<mseg_verdict_key, mseg_verdict_value>(bank_fds_[bank][2]);
  auto port_verdicts = readMap<mseg_port_verdict_key, mseg_verdict_value>(bank_fds_[bank][3]);
  if (!workloads || !peers || !verdicts || !port_verdicts) {
    return Error(EIO, "read pinned policy bank " + std::to_string(bank));
  }
  content->workloads = std::move(*workloads);
  content->peers = std::move(*peers);
  content->verdicts = std::move(*verdicts);
  content->port_verdicts = std::move(*port_verdicts);
  bank_content_[bank] = std::move(content);
  return {};
}

Status Datapath::lockPinDir() {
  // One agent per pin directory: a second would fight the first over the banks. The lock is
  // on the directory itself, so it holds whatever state directory each agent uses.
  pin_lock_fd_ = ::open(options_.pin_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (pin_lock_fd_ < 0) {
    return Error::fromErrno(errno, "open pin directory " + options_.pin_dir);
  }
  if (flock(pin_lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    return Error(EBUSY, "another microsegd already uses pin directory " + options_.pin_dir +
                            "; stop it first, or give this agent its own --pin-dir");
  }
  return {};
}

// Refuses, before anything is written, to adopt links that enforce on another cgroup.
Status Datapath::verifyPinnedLinks() const {
  auto cgroup_id = cgroupIdOf(options_.cgroup_path);
  if (!cgroup_id) {
    return cgroup_id.error();
  }
  DIR* dir = opendir(options_.pin_dir.c_str());
  if (dir == nullptr) {
    return Error::fromErrno(errno, "list pin directory " + options_.pin_dir);
  }
  Status verdict;
  while (struct dirent* entry = readdir(dir)) {
    if (std::strncmp(entry->d_name, kLinkPrefix, std::strlen(kLinkPrefix)) != 0) {
      continue;
    }
    const std::string path = options_.pin_dir + "/" + entry->d_name;
    OwnedFd link(bpf_obj_get(path.c_str()));
    bpf_link_info info{};
    uint32_t length = sizeof(info);
    if (link.get() < 0 || bpf_obj_get_info_by_fd(link.get(), &info, &length) != 0) {
      verdict = Error::fromErrno(errno, "inspect pinned link " + path);
      break;
    }
    if (info.type != BPF_LINK_TYPE_CGROUP || info.cgroup.cgroup_id != *cgroup_id) {
      verdict = Error(EEXIST, "pin directory " + options_.pin_dir +
                                  " enforces on another cgroup (id " +
                                  std::to_string(info.cgroup.cgroup_id) +
                                  "); nothing was changed. Use that --cgroup, another --pin-dir, "
                                  "or `microsegctl uninstall --pin-dir " + options_.pin_dir +
                                  "` first");
      break;
    }
  }
  closedir(dir);
  return verdict;
}

// A program reads the active bank from the config map and then the bank maps, so they are
// one versioned set: after a layout change (a new _v<N> name), the new agent fills a
// complete new set while the old programs keep reading the old one, and the links switch from
// one consistent set to the other. A set that is half new would let one program mix two
// policies, so such an object is refused before anything is written.
Status Datapath::checkPolicyMapVersions() const {
  const std::array<bpf_map*, kBankMaps + 1> policy_maps = {
      skeleton_->maps.mseg_cfg_v2, outerMap(0), outerMap(1), outerMap(2), outerMap(3)};
  std::string pinned;
  std::string fresh;
  for (bpf_map* map : policy_maps) {
    std::string& list = std::filesystem::exists(options_.pin_dir + "/" + bpf_map__name(map))
                            ? pinned
                            : fresh;
    list += (list.empty() ? "" : ", ") + std::string(bpf_map__name(map));
  }
  if (!pinned.empty() && !fresh.empty()) {
    return Error(EPROTO, "this agent's policy maps change version apart (pinned: " + pinned +
                             "; new: " + fresh + "); they must be versioned together. Nothing "
                             "was changed; the pinned datapath keeps enforcing");
  }
  return {};
}

// After an upgrade that changed a map's layout, the old map is pinned under its old name and
// no attached program reads it any more: the links now run this agent's programs.
// LIMITATION: what an old-layout map held is not carried over, since this agent cannot read
// that layout: a new config map restarts the policy version at 1, new counter maps restart the
// counters, and a new flow table makes UDP and ICMP flows admitted before be judged again at
// their next packet (docs/limitations.md).
void Datapath::unpinStaleMaps() const {
  std::set<std::string> current;
  bpf_map* map = nullptr;
  bpf_object__for_each_map(map, skeleton_->obj) {
    if (const char* path = bpf_map__pin_path(map)) {
      current.insert(std::filesystem::path(path).filename().string());
    }
  }
  for (size_t kind = 0; kind < kBankMaps; kind++) {
    for (uint32_t bank = 0; bank < MSEG_BANKS; bank++) {
      current.insert(std::filesystem::path(bankPinPath(options_.pin_dir, outerMap(kind), bank))
                         .filename()
                         .string());
    }
  }
  std::error_code err;
  for (const auto& entry : std::filesystem::directory_iterator(options_.pin_dir, err)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("mseg_", 0) != 0 || current.count(name) != 0) {
      continue;
    }
    std::error_code removed;
    std::filesystem::remove(entry.path(), removed);
    if (removed) {
      logger("bpf")->warn("cannot unpin map of another layout, remove it by hand path={} err={}",
                          entry.path().string(), removed.message());
    } else {
      logger("bpf")->info("unpinned map of another layout name={}", name);
    }
  }
}

Status Datapath::attach() {
  OwnedFd cgroup_fd(::open(options_.cgroup_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (cgroup_fd.get() < 0) {
    return Error::fromErrno(errno, "open cgroup " + options_.cgroup_path);
  }
  // Two agents started at once both pass the check in open(). The cgroup directory's lock,
  // held from the check to the attach (and released when cgroup_fd closes), makes the second
  // find the first's programs.
  if (flock(cgroup_fd.get(), LOCK_EX) != 0) {
    return Error::fromErrno(errno, "lock cgroup " + options_.cgroup_path);
  }
  if (auto alone = checkNoOtherAgentOnCgroup(options_.cgroup_path, options_.pin_dir); !alone) {
    return alone.error();
  }
  auto cgroup_id = cgroupIdOf(options_.cgroup_path);
  if (!cgroup_id) {
    return cgroup_id.error();
  }
  bpf_program* program = nullptr;
  bpf_object__for_each_program(program, skeleton_->obj) {
    if (auto attached = attachProgram(program, *cgroup_id, cgroup_fd.get()); !attached) {
      return attached.error();
    }
  }
  unpinStaleMaps();
  return {};
}

Status Datapath::attachProgram(bpf_program* program, uint64_t cgroup_id, int cgroup_fd) {
  auto log = logger("bpf");
  const std::string name = bpf_program__name(program);
  const std::string path = options_.pin_dir + "/" + kLinkPrefix + name;

  if (std::filesystem::exists(path)) {
    bpf_link* pinned = bpf_link__open(path.c_str());
    if (pinned == nullptr) {
      return Error::fromErrno(errno, "open pinned link " + path);
    }
    links_.push_back(pinned);
    bpf_link_info info{};
    uint32_t length = sizeof(info);
    if (bpf_obj_get_info_by_fd(bpf_link__fd(pinned), &info, &length) != 0) {
      return Error::fromErrno(errno, "inspect pinned link " + path);
    }
    if (info.type != BPF_LINK_TYPE_CGROUP || info.cgroup.cgroup_id != cgroup_id) {
      return Error(EEXIST, "pinned link " + path + " is attached to another cgroup (id " +
                               std::to_string(info.cgroup.cgroup_id) +
                               "); run `microsegctl uninstall --pin-dir " + options_.pin_dir +
                               "` first or use another --pin-dir");
    }
    if (int err = bpf_link__update_program(pinned, program); err != 0) {
      return Error::fromErrno(err, "replace program of pinned link " + path);
    }
    log->debug("adopted pinned link program={} cgroup_id={}", name, cgroup_id);
    return {};
  }

  bpf_link* link = bpf_program__attach_cgroup(program, cgroup_fd);
  if (link == nullptr) {
    return Error::fromErrno(errno, "attach " + name + " to cgroup " + options_.cgroup_path +
                                       " (" + kCapabilityHint + ")");
  }
  links_.push_back(link);
  if (int err = bpf_link__pin(link, path.c_str()); err != 0) {
    return Error::fromErrno(err, "pin link " + path);
  }
  log->debug("attached program={} cgroup_id={}", name, cgroup_id);
  return {};
}

Status Datapath::apply(BankContent desired, std::map<uint32_t, RuleName> rule_names,
                       uint64_t policy_version) {
  if (auto fits = checkCapacity(desired); !fits) {
    return fits;
  }
  if (auto settled = settleInactiveBank(); !settled) {
    return settled;
  }
  last_apply_ = {};
  auto content = std::make_shared<BankContent>(std::move(desired));
  const uint32_t target = 1 - active_bank_;
  if (auto synced = syncBank(target, content, last_apply_); !synced) {
    // The bank is half written: learn what it holds now, so the next apply diffs against the
    // truth. It is inactive, so nothing judges with it.
    (void)rereadBank(target);
    return synced;
  }
  if (auto named = writeRuleNames(rule_names); !named) {
    return named;
  }
  for (const auto& [id, rule] : rule_names_) {
    if (rule_names.find(id) == rule_names.end()) {
      stale_rule_ids_.push_back(id);
    }
  }
  rule_names_ = std::move(rule_names);
  return switchToBank(target, policy_version);
}

Status Datapath::applyDelta(const BankDelta& delta,
                            const std::map<uint32_t, RuleName>& added_rule_names,
                            const std::vector<uint32_t>& removed_rule_ids,
                            uint64_t policy_version) {
  if (auto settled = settleInactiveBank(); !settled) {
    return settled;
  }
  const uint32_t target = 1 - active_bank_;
  if (bank_content_[target] != bank_content_[active_bank_]) {
    return Error(EAGAIN, "the inactive policy bank differs from the active one");
  }
  if (auto fits = checkCapacity(delta); !fits) {
    return fits;
  }
  last_apply_ = {};
  if (auto written = writeDelta(target, delta, last_apply_); !written) {
    (void)rereadBank(target);  // it is inactive: learn what it holds, nothing judges with it
    return written;
  }
  // Only the added rules' names are written; the others stay as they are.
  if (auto named = writeRuleNames(added_rule_names); !named) {
    (void)rereadBank(target);  // it holds the change, not what was recorded
    return named;
  }
  for (uint32_t id : removed_rule_ids) {
    if (added_rule_names.count(id) == 0 && rule_names_.erase(id) > 0) {
      stale_rule_ids_.push_back(id);
    }
  }
  for (const auto& [id, name] : added_rule_names) {
    rule_names_[id] = name;
  }
  if (auto switched = switchToBank(target, policy_version); !switched) {
    (void)rereadBank(target);
    return switched;
  }
  // The content both banks shared now describes the active one; the other catches up later.
  delta.applyTo(*bank_content_[target]);
  inactive_bank_lacks_ = delta;
  return {};
}

Status Datapath::writeDelta(uint32_t bank, const BankDelta& delta, ApplyStats& stats) {
  auto started = Clock::now();
  const auto& fds = bank_fds_[bank];
  Status written = deleteBatch<mseg_workload_key>(fds[0], delta.workloads.removals);
  if (written) {
    written = deleteBatch<mseg_verdict_key>(fds[2], delta.verdicts.removals);
  }
  if (written) {
    written = deleteBatch<mseg_port_verdict_key>(fds[3], delta.port_verdicts.removals);
  }
  if (written) {
    written = updateBatch<mseg_workload_key, mseg_workload>(
        fds[0], delta.workloads.upsert_keys, delta.workloads.upsert_values);
  }
  if (written) {
    written = updateBatch<mseg_verdict_key, mseg_verdict_value>(
        fds[2], delta.verdicts.upsert_keys, delta.verdicts.upsert_values);
  }
  if (written) {
    written = updateBatch<mseg_port_verdict_key, mseg_verdict_value>(
        fds[3], delta.port_verdicts.upsert_keys, delta.port_verdicts.upsert_values);
  }
  stats.write += Clock::now() - started;
  stats.entries_written += delta.workloads.upsert_keys.size() +
                           delta.verdicts.upsert_keys.size() +
                           delta.port_verdicts.upsert_keys.size();
  stats.entries_deleted += delta.workloads.removals.size() + delta.verdicts.removals.size() +
                           delta.port_verdicts.removals.size();
  if (!written) {
    return written.error().wrap("write policy change into bank " + std::to_string(bank));
  }
  return {};
}

// The switch: one write of the config entry. Programs read the bank index once per verdict.
Status Datapath::switchToBank(uint32_t bank, uint64_t policy_version) {
  uint32_t zero = 0;
  mseg_config config{};
  config.active_bank = bank;
  config.policy_version = policy_version;
  auto flipping = Clock::now();
  if (bpf_map_update_elem(bpf_map__fd(skeleton_->maps.mseg_cfg_v2), &zero, &config, BPF_ANY)) {
    return Error::fromErrno(errno, "switch active policy bank");
  }
  last_apply_.write += Clock::now() - flipping;
  active_bank_ = bank;
  inactive_bank_may_be_read_ = true;
  return {};
}

// Waits out readers of the inactive bank and writes what an applyDelta left it lacking, so its
// recorded content is the truth again.
Status Datapath::settleInactiveBank() {
  if (auto waited = waitForReadersOfInactiveBank(); !waited) {
    return waited;
  }
  if (!inactive_bank_lacks_) {
    return {};
  }
  const uint32_t inactive = 1 - active_bank_;
  ApplyStats stats;
  Status written = writeDelta(inactive, *inactive_bank_lacks_, stats);
  inactive_bank_lacks_.reset();
  if (!written) {
    (void)rereadBank(inactive);
    return written.error().wrap("bring the inactive policy bank up to date");
  }
  return {};
}

// Programs run inside RCU read-side sections; a global membarrier waits for an RCU grace
// period, after which no program still reads the bank that was active before the last switch.
// Waited for only before that bank is written again, not while a new policy waits to enforce.
Status Datapath::waitForReadersOfInactiveBank() {
  if (!inactive_bank_may_be_read_) {
    return {};
  }
  if (syscall(__NR_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) != 0) {
    return Error::fromErrno(errno, "wait for readers of the old policy bank (membarrier)");
  }
  inactive_bank_may_be_read_ = false;
  removeStaleRuleNames();
  return {};
}

Status Datapath::catchUpInactiveBank() {
  if (auto settled = settleInactiveBank(); !settled) {
    return settled;
  }
  const uint32_t inactive = 1 - active_bank_;
  if (bank_content_[inactive] == bank_content_[active_bank_]) {
    return {};
  }
  ApplyStats stats;
  if (auto synced = syncBank(inactive, bank_content_[active_bank_], stats); !synced) {
    (void)rereadBank(inactive);
    return synced.error().wrap("bring the inactive policy bank up to date");
  }
  return {};
}

// Names are written before the switch and removed after it, once no program counts under the
// old ids: a counter reader may see a name without counts, never counts without a name.
Status Datapath::writeRuleNames(const std::map<uint32_t, RuleName>& rule_names) {
  auto started = Clock::now();
  std::vector<uint32_t> ids;
  std::vector<mseg_rule_name> entries;
  for (const auto& [id, rule] : rule_names) {
    auto existing = rule_names_.find(id);
    if (existing != rule_names_.end() && existing->second.name == rule.name &&
        existing->second.verdict == rule.verdict) {
      continue;
    }
    mseg_rule_name entry{};
    std::strncpy(entry.name, rule.name.c_str(), sizeof(entry.name) - 1);
    entry.verdict = rule.verdict;
    ids.push_back(id);
    entries.push_back(entry);
  }
  auto compared = Clock::now();
  last_apply_.diff += compared - started;
  const int names_fd = bpf_map__fd(skeleton_->maps.mseg_rname_v1);
  auto written = updateBatch<uint32_t, mseg_rule_name>(names_fd, ids, entries);
  last_apply_.write += Clock::now() - compared;
  last_apply_.entries_written += ids.size();
  if (!written) {
    return written.error().wrap("update rule names");
  }
  return {};
}

// The policy already enforces when this runs, so a failure only leaves names of deleted
// rules behind (shown by `microsegctl counters` with zero counts): a warning, not an error.
void Datapath::removeStaleRuleNames() {
  const int names_fd = bpf_map__fd(skeleton_->maps.mseg_rname_v1);
  if (auto deleted = deleteBatch<uint32_t>(names_fd, stale_rule_ids_); !deleted) {
    logger("bpf")->warn("names of deleted rules stay in the counters map err={}",
                        deleted.error().message());
  }
  stale_rule_ids_.clear();
}

Result<int> Datapath::programFd(const std::string& name) const {
  bpf_program* program = bpf_object__find_program_by_name(skeleton_->obj, name.c_str());
  if (program == nullptr) {
    return Error(ENOENT, "no BPF program named " + name);
  }
  return bpf_program__fd(program);
}

int Datapath::eventsFd() const { return bpf_map__fd(skeleton_->maps.mseg_events_v1); }

Status Datapath::endIdleFlows(uint64_t idle_before_ns,
                              const std::function<void(const mseg_flow&)>& ended) {
  const int fd = bpf_map__fd(skeleton_->maps.mseg_flow_v1);
  auto flows = readMap<mseg_flow_key, mseg_flow>(fd);
  if (!flows) {
    return flows.error().wrap("read flow table");
  }
  for (const auto& [key, flow] : *flows) {
    if (flow.last_seen_ns >= idle_before_ns) {
      continue;
    }
    // Read again right before deleting: a packet may have refreshed the flow meanwhile.
    mseg_flow latest{};
    if (bpf_map_lookup_elem(fd, &key, &latest) != 0 || latest.last_seen_ns >= idle_before_ns) {
      continue;
    }
    if (bpf_map_delete_elem(fd, &key) == 0) {
      ended(latest);
    }
  }
  return {};
}

Status Datapath::visitDenials(
    const std::function<void(const mseg_denial_key&, const mseg_denial&)>& visit) const {
  auto denials = readMap<mseg_denial_key, mseg_denial>(bpf_map__fd(skeleton_->maps.mseg_deny_v1));
  if (!denials) {
    return denials.error().wrap("read denial table");
  }
  for (const auto& [key, denial] : *denials) {
    visit(key, denial);
  }
  return {};
}

Result<std::map<uint32_t, uint64_t>> Datapath::ruleHits() const {
  return sumRuleHits(bpf_map__fd(skeleton_->maps.mseg_rstat_v1), rule_names_);
}

Result<std::array<uint64_t, MSEG_REASON_MAX>> Datapath::reasonCounts() const {
  auto totals = sumPerCpu(bpf_map__fd(skeleton_->maps.mseg_reason_v1), MSEG_REASON_MAX);
  if (!totals) {
    return totals.error();
  }
  std::array<uint64_t, MSEG_REASON_MAX> counts{};
  for (const auto& [reason, count] : *totals) {
    counts[reason] = count;
  }
  return counts;
}

Status uninstallDatapath(const std::string& pin_dir) {
  namespace fs = std::filesystem;
  std::error_code err;
  if (!fs::exists(pin_dir, err)) {
    return Error(ENOENT, "nothing is pinned at " + pin_dir);
  }
  if (access(pin_dir.c_str(), R_OK | W_OK | X_OK) != 0) {
    return Error::fromErrno(errno, "cannot open pin directory " + pin_dir +
                                       " (uninstalling needs root, or CAP_BPF with access to it)");
  }
  // Only a microseg pin directory, never a bpffs mount root or anything else.
  std::string trimmed = pin_dir;
  while (trimmed.size() > 1 && trimmed.back() == '/') {
    trimmed.pop_back();
  }
  const fs::path parent = fs::path(trimmed).parent_path();
  if (!onBpffs(pin_dir) || !onBpffs(parent.string()) || !holdsConfigMap(pin_dir)) {
    return Error(EINVAL, pin_dir + " is not a microseg pin directory (no mseg_cfg_v<N> on bpffs "
                                   "below a bpffs mount); nothing was removed");
  }
  OwnedFd lock(::open(pin_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (lock.get() < 0 || flock(lock.get(), LOCK_EX | LOCK_NB) != 0) {
    return Error(EBUSY, "a microsegd is running with pin directory " + pin_dir +
                            "; stop it first (its programs would stay attached)");
  }
  // Links first: unpinning the last reference to a link detaches its program.
  std::vector<fs::path> links;
  std::vector<fs::path> maps;
  for (auto it = fs::directory_iterator(pin_dir, err); !err && it != fs::directory_iterator();
       it.increment(err)) {
    const std::string name = it->path().filename().string();
    if (name.rfind(kLinkPrefix, 0) == 0) {
      links.push_back(it->path());
    } else if (name.rfind("mseg_", 0) == 0) {
      maps.push_back(it->path());
    }
  }
  for (const auto& path : links) {
    fs::remove(path, err);
  }
  for (const auto& path : maps) {
    fs::remove(path, err);
  }
  return removePinDirectory(pin_dir);
}

Result<PinnedCounters> readPinnedCounters(const std::string& pin_dir) {
  auto openPinned = [&](const char* name) { return bpf_obj_get((pin_dir + "/" + name).c_str()); };
  OwnedFd config_fd(openPinned("mseg_cfg_v2"));
  OwnedFd names_fd(openPinned("mseg_rname_v1"));
  OwnedFd stats_fd(openPinned("mseg_rstat_v1"));
  OwnedFd reasons_fd(openPinned("mseg_reason_v1"));
  if (config_fd.get() < 0 || names_fd.get() < 0 || stats_fd.get() < 0 || reasons_fd.get() < 0) {
    return Error::fromErrno(errno, "open pinned maps in " + pin_dir +
                                       " (is microsegd running with this --pin-dir?)");
  }

  PinnedCounters counters;
  auto config = readConfig(config_fd.get());
  auto names = readRuleNames(names_fd.get());
  if (!config || !names) {
    return Error(EIO, "read pinned policy state in " + pin_dir);
  }
  counters.policy_version = config->policy_version;
  counters.rule_names = std::move(*names);
  auto hits = sumRuleHits(stats_fd.get(), counters.rule_names);
  auto reasons = sumPerCpu(reasons_fd.get(), MSEG_REASON_MAX);
  if (!hits || !reasons) {
    return Error(EIO, "read pinned counters in " + pin_dir);
  }
  counters.rule_hits = std::move(*hits);
  for (const auto& [reason, count] : *reasons) {
    counters.reasons[reason] = count;
  }
  return counters;
}

}  // namespace mseg::agent
