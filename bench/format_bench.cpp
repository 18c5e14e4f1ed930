// format_bench: renders a mix of agent-shaped flow records in every SIEM format, one thread, and
// prints records per second and nanoseconds per record for each renderer and for the Community
// ID hash. It is not a test: figures depend on the machine, so nothing here passes or fails.
//
// usage: format_bench [--seconds S | --records N] [CASE...]
//   --seconds S  run each case for about S seconds (default 2)
//   --records N  run each case for exactly N records after the warm-up pass
//   CASE         renderOcsf, renderCef, renderSyslog/cef, renderSyslog/json, communityId (all
//                when none is named)
//
// --records gives instruction counts that repeat under callgrind, whatever else the machine does:
// `valgrind --tool=callgrind format_bench --records 10000 renderOcsf`, then the inclusive count
// of renderOcsf divided by 11024 (10000 and the 1024 of the warm-up) is the cost of one record.
//
// The mix is what the agent sends under connection churn: 40% flow starts, 40% ends with
// counters, 20% denials; 70% IPv4 and 30% IPv6; labels on the workload and on the peer; the
// Community ID already set, as the agent's flow recorder sets it.
#include <arpa/inet.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "microseg/telemetry/v1/telemetry.pb.h"
#include "mseg/format/cef.hpp"
#include "mseg/format/community_id.hpp"
#include "mseg/format/ocsf.hpp"
#include "mseg/format/syslog.hpp"

namespace {

namespace telemetry = microseg::telemetry::v1;
using Clock = std::chrono::steady_clock;

constexpr size_t kRecordCount = 1024;
// 2023-11-14T22:13:20Z
constexpr uint64_t kBaseTime = 1'700'000'000'000'000'000;

std::string packIpv4(uint32_t host_order) {
  uint32_t network = htonl(host_order);
  return std::string(reinterpret_cast<const char*>(&network), 4);
}

// fd00::/8 with the low 32 bits set from `suffix`.
std::string packIpv6(uint32_t suffix) {
  std::string bytes(16, '\0');
  bytes[0] = static_cast<char>(0xfd);
  for (int i = 0; i < 4; ++i) {
    bytes[15 - i] = static_cast<char>((suffix >> (8 * i)) & 0xff);
  }
  return bytes;
}

// Record `i` of the mix; deterministic, so runs compare.
telemetry::FlowRecord makeRecord(uint32_t i) {
  static constexpr const char* kTiers[] = {"web", "api", "db", "cache", "worker"};
  static constexpr const char* kCommands[] = {"gunicorn", "nginx", "postgres", "redis-server"};
  telemetry::FlowRecord record;
  uint64_t sequence = 1'000'000 + i;
  record.set_agent_id("agent-7f3a");
  record.set_sequence(sequence);
  record.set_record_id("agent-7f3a:" + std::to_string(sequence));
  record.set_host("web-1.shop.example");

  uint32_t kind = i % 5;
  bool ipv6 = i % 10 >= 7;
  bool ingress = kind == 4 || i % 3 == 0;
  record.set_direction(ingress ? telemetry::DIRECTION_INGRESS : telemetry::DIRECTION_EGRESS);
  record.set_ip_version(ipv6 ? 6 : 4);
  record.set_protocol(i % 8 == 0 ? 17 : 6);
  record.set_local_address(ipv6 ? packIpv6(0x10 + i % 7) : packIpv4(0xc612000a + i % 7));
  record.set_peer_address(ipv6 ? packIpv6(0x8000 + i) : packIpv4(0xc6130000 + i));
  record.set_local_port(ingress ? 443 : 32768 + i % 28000);
  record.set_peer_port(ingress ? 40000 + i % 20000 : 5432);

  uint64_t time = kBaseTime + uint64_t{i} * 1'234'567;
  record.set_time_unix_nano(time);
  record.set_start_unix_nano(time - (kind == 0 ? 0 : 2'500'000'000));
  if (kind <= 1) {
    record.set_event(telemetry::FLOW_EVENT_START);
  } else if (kind <= 3) {
    record.set_event(telemetry::FLOW_EVENT_END);
    record.set_duration_nano(2'500'000'000);
    record.set_bytes_out(1200 + i * 17);
    record.set_bytes_in(48000 + i * 131);
    record.set_packets_out(10 + i % 50);
    record.set_packets_in(40 + i % 90);
  } else {
    record.set_event(telemetry::FLOW_EVENT_DENIED);
    record.set_attempts(1 + i % 4);
  }

  telemetry::Workload* workload = record.mutable_workload();
  workload->set_name(kTiers[i % 5]);
  (*workload->mutable_labels())["app"] = "shop";
  (*workload->mutable_labels())["tier"] = kTiers[i % 5];
  (*workload->mutable_labels())["env"] = "prod";
  workload->set_cgroup(std::string("shop.slice/") + kTiers[i % 5] + ".service");
  workload->set_cgroup_id(4242 + i % 5);
  if (!ingress) {
    workload->set_pid(3170 + i % 64);
    workload->set_uid(1000);
    workload->set_command(kCommands[i % 4]);
  }
  record.mutable_peer()->set_name(ingress ? "office" : "db-hosts");
  (*record.mutable_peer()->mutable_labels())["zone"] = ingress ? "office" : "dc1";
  (*record.mutable_peer()->mutable_labels())["tier"] = "db";

  bool denied = kind == 4;
  record.set_verdict(denied ? telemetry::VERDICT_DENY : telemetry::VERDICT_ALLOW);
  record.set_rule(denied ? "(default deny)" : "shop/web-to-db");
  record.set_policy_version(12);
  record.set_policy_hash("sha256:5d41402abc4b2a76");

  if (auto id = mseg::format::communityId(record)) {
    record.set_community_id(*id);
  }
  return record;
}

struct Figures {
  double records_per_second;
  double ns_per_record;
  double bytes_per_record;
};

// How long each case runs: about `seconds`, or exactly `records` records when that is set.
struct Budget {
  double seconds = 2.0;
  uint64_t records = 0;
};

// Runs `render` over the records, cycling, within `budget` after a warm-up pass.
Figures measure(const std::vector<telemetry::FlowRecord>& records, const Budget& budget,
                const std::function<size_t(const telemetry::FlowRecord&)>& render) {
  for (const auto& record : records) {
    render(record);
  }

  uint64_t count = 0;
  uint64_t bytes = 0;
  auto started = Clock::now();
  if (budget.records > 0) {
    for (; count < budget.records; ++count) {
      bytes += render(records[count % records.size()]);
    }
  } else {
    auto until = started + std::chrono::duration<double>(budget.seconds);
    while (Clock::now() < until) {
      for (const auto& record : records) {
        bytes += render(record);
      }
      count += records.size();
    }
  }
  auto now = Clock::now();

  double elapsed_ns = std::chrono::duration<double, std::nano>(now - started).count();
  return {count * 1e9 / elapsed_ns, elapsed_ns / count, static_cast<double>(bytes) / count};
}

struct Options {
  Budget budget;
  std::vector<std::string_view> cases;  // empty: all
};

std::optional<Options> parseOptions(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--seconds" && i + 1 < argc) {
      options.budget.seconds = std::atof(argv[++i]);
    } else if (arg == "--records" && i + 1 < argc) {
      options.budget.records = std::strtoull(argv[++i], nullptr, 10);
      if (options.budget.records == 0) {
        return std::nullopt;
      }
    } else if (arg.starts_with("-")) {
      return std::nullopt;
    } else {
      options.cases.push_back(arg);
    }
  }
  if (options.budget.seconds <= 0) {
    return std::nullopt;
  }
  return options;
}

}  // namespace

int main(int argc, char** argv) {
  std::optional<Options> options = parseOptions(argc, argv);
  if (!options) {
    std::fprintf(stderr, "usage: format_bench [--seconds S | --records N] [CASE...]\n");
    return 2;
  }
  const Budget& budget = options->budget;

  std::vector<telemetry::FlowRecord> records;
  records.reserve(kRecordCount);
  for (uint32_t i = 0; i < kRecordCount; ++i) {
    records.push_back(makeRecord(i));
  }

  using mseg::format::Payload;
  struct Case {
    std::string_view name;
    std::function<size_t(const telemetry::FlowRecord&)> render;
  };
  const Case cases[] = {
      {"renderOcsf", [](const auto& r) { return mseg::format::renderOcsf(r).size(); }},
      {"renderCef", [](const auto& r) { return mseg::format::renderCef(r).size(); }},
      {"renderSyslog/cef",
       [](const auto& r) { return mseg::format::renderSyslog(r, Payload::kCef).size(); }},
      {"renderSyslog/json",
       [](const auto& r) { return mseg::format::renderSyslog(r, Payload::kJson).size(); }},
      {"communityId", [](const auto& r) { return mseg::format::communityId(r)->size(); }},
  };

  for (std::string_view name : options->cases) {
    bool known = std::any_of(std::begin(cases), std::end(cases),
                             [name](const Case& c) { return c.name == name; });
    if (!known) {
      std::fprintf(stderr, "format_bench: no case %.*s\n", static_cast<int>(name.size()),
                   name.data());
      return 2;
    }
  }

  std::printf("%zu records (40%% start, 40%% end, 20%% denied; 30%% ipv6), ", records.size());
  if (budget.records > 0) {
    std::printf("%llu records per case\n", static_cast<unsigned long long>(budget.records));
  } else {
    std::printf("%.1f s per case\n", budget.seconds);
  }
  std::printf("%-20s %14s %12s %12s\n", "case", "records/s", "ns/record", "bytes/record");
  auto wanted = [&options](std::string_view name) {
    const auto& named = options->cases;
    return named.empty() || std::find(named.begin(), named.end(), name) != named.end();
  };
  for (const Case& c : cases) {
    if (!wanted(c.name)) {
      continue;
    }
    Figures figures = measure(records, budget, c.render);
    std::printf("%-20.*s %14.0f %12.0f %12.0f\n", static_cast<int>(c.name.size()), c.name.data(),
                figures.records_per_second, figures.ns_per_record, figures.bytes_per_record);
  }
  return 0;
}
