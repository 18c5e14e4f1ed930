#include "ctl_output.hpp"

#include <arpa/inet.h>
#include <time.h>

#include <algorithm>
#include <map>
#include <optional>
#include <vector>

#include <fmt/format.h>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/reflection.h>

#include "mseg/utf8.hpp"

namespace mseg::ctl {
namespace {

namespace pb = google::protobuf;
namespace tv1 = microseg::telemetry::v1;

// Flows print one line at a time as they come, so their columns have fixed widths.
const std::vector<size_t> kFlowColumnWidths = {12, 6, 7, 16, 9, 34, 12, 32};
// `policy trace` prints "verdict    deny": labels in a column this wide.
constexpr size_t kTraceLabelWidth = 9;

// Status shows every rule up to this many; past it, the busiest ones (`counters` lists all).
constexpr int kStatusRulesShown = 30;

// One line of text that is no table, made printable like a table's cells.
std::string line(const std::string& text) {
  Table one;
  one.add({text});
  return one.render();
}

std::string localTime(uint64_t unix_nano, const char* format) {
  if (unix_nano == 0) {
    return "-";
  }
  const time_t seconds = static_cast<time_t>(unix_nano / 1000000000ull);
  tm local{};
  localtime_r(&seconds, &local);
  char text[64] = {};
  strftime(text, sizeof(text), format, &local);
  return text;
}

std::string dateTime(uint64_t unix_nano) { return localTime(unix_nano, "%Y-%m-%d %H:%M:%S %Z"); }

std::string shortHash(const std::string& hash) { return hash.substr(0, 12); }

std::string labelsText(const google::protobuf::Map<std::string, std::string>& labels) {
  std::map<std::string, std::string> sorted(labels.begin(), labels.end());
  std::vector<std::string> pairs;
  for (const auto& [key, value] : sorted) {
    pairs.push_back(key + "=" + value);
  }
  return pairs.empty() ? "-" : fmt::format("{}", fmt::join(pairs, ","));
}

// The value of an enum in the words tables use: VERDICT_ALLOW is "allow", FLOW_EVENT_END "end".
std::string enumWord(const pb::EnumValueDescriptor* value) {
  if (value == nullptr) {
    return "unknown";
  }
  const pb::EnumDescriptor* type = value->type();
  std::string prefix;
  if (const auto* unspecified = type->FindValueByNumber(0)) {
    const std::string& name = unspecified->name();
    if (name.size() > 11 && name.compare(name.size() - 11, 11, "UNSPECIFIED") == 0) {
      prefix = name.substr(0, name.size() - 11);
    }
  }
  std::string word = value->name();
  if (!prefix.empty() && word.rfind(prefix, 0) == 0) {
    word = word.substr(prefix.size());
  }
  std::transform(word.begin(), word.end(), word.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return word;
}

nlohmann::ordered_json fieldValue(const pb::Message& message, const pb::FieldDescriptor* field,
                          int index) {
  const pb::Reflection* reflection = message.GetReflection();
  const bool repeated = field->is_repeated();
  switch (field->cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_INT32:
      return repeated ? reflection->GetRepeatedInt32(message, field, index)
                      : reflection->GetInt32(message, field);
    case pb::FieldDescriptor::CPPTYPE_INT64:
      return repeated ? reflection->GetRepeatedInt64(message, field, index)
                      : reflection->GetInt64(message, field);
    case pb::FieldDescriptor::CPPTYPE_UINT32:
      return repeated ? reflection->GetRepeatedUInt32(message, field, index)
                      : reflection->GetUInt32(message, field);
    case pb::FieldDescriptor::CPPTYPE_UINT64:
      return repeated ? reflection->GetRepeatedUInt64(message, field, index)
                      : reflection->GetUInt64(message, field);
    case pb::FieldDescriptor::CPPTYPE_DOUBLE:
      return repeated ? reflection->GetRepeatedDouble(message, field, index)
                      : reflection->GetDouble(message, field);
    case pb::FieldDescriptor::CPPTYPE_FLOAT:
      return repeated ? reflection->GetRepeatedFloat(message, field, index)
                      : reflection->GetFloat(message, field);
    case pb::FieldDescriptor::CPPTYPE_BOOL:
      return repeated ? reflection->GetRepeatedBool(message, field, index)
                      : reflection->GetBool(message, field);
    case pb::FieldDescriptor::CPPTYPE_ENUM: {
      int number = repeated ? reflection->GetRepeatedEnumValue(message, field, index)
                            : reflection->GetEnumValue(message, field);
      const auto* value = field->enum_type()->FindValueByNumber(number);
      return value != nullptr ? nlohmann::ordered_json(enumWord(value))
                              : nlohmann::ordered_json(number);
    }
    case pb::FieldDescriptor::CPPTYPE_STRING: {
      std::string text = repeated ? reflection->GetRepeatedString(message, field, index)
                                  : reflection->GetString(message, field);
      // The only bytes fields are addresses.
      if (field->type() == pb::FieldDescriptor::TYPE_BYTES) {
        return text.empty() ? "" : addressText(text);
      }
      return text;
    }
    case pb::FieldDescriptor::CPPTYPE_MESSAGE:
      return toJson(repeated ? reflection->GetRepeatedMessage(message, field, index)
                             : reflection->GetMessage(message, field));
  }
  return nullptr;
}

// A map field is a repeated message of (key, value) entries.
nlohmann::ordered_json mapValue(const pb::Message& message, const pb::FieldDescriptor* field) {
  nlohmann::ordered_json object = nlohmann::ordered_json::object();
  const pb::Reflection* reflection = message.GetReflection();
  for (int i = 0; i < reflection->FieldSize(message, field); i++) {
    const pb::Message& entry = reflection->GetRepeatedMessage(message, field, i);
    const pb::Descriptor* type = entry.GetDescriptor();
    object[fieldValue(entry, type->FindFieldByName("key"), 0).get<std::string>()] =
        fieldValue(entry, type->FindFieldByName("value"), 0);
  }
  return object;
}

std::string protocolName(uint32_t protocol) {
  switch (protocol) {
    case 6: return "tcp";
    case 17: return "udp";
    case 1: return "icmp";
    case 58: return "icmpv6";
    default: return fmt::format("proto {}", protocol);
  }
}

std::string portRange(const cv1::PathChange& path) {
  const std::string& protocol = path.protocol();
  if (protocol == "any" || protocol == "other") {
    return protocol == "any" ? "any traffic" : "other protocols";
  }
  const bool icmp = protocol == "icmp" || protocol == "icmpv6";
  const uint32_t last_possible = icmp ? 255 : 65535;
  if (path.first_port() == 0 && path.last_port() == last_possible) {
    return protocol + (icmp ? " any type" : " any port");
  }
  std::string range = path.first_port() == path.last_port()
                          ? std::to_string(path.first_port())
                          : fmt::format("{}-{}", path.first_port(), path.last_port());
  return icmp ? protocol + " type " + range : protocol + "/" + range;
}

uint32_t lastPortOf(const std::string& protocol) {
  if (protocol == "tcp" || protocol == "udp") {
    return 65535;
  }
  return protocol == "icmp" || protocol == "icmpv6" ? 255 : 0;
}

bool sameChangeOfOnePeer(const cv1::PathChange& a, const cv1::PathChange& b) {
  return a.change() == b.change() && a.workload() == b.workload() &&
         a.direction() == b.direction() && a.peer() == b.peer() &&
         a.old_verdict() == b.old_verdict() && a.new_verdict() == b.new_verdict() &&
         a.old_rule() == b.old_rule() && a.new_rule() == b.new_rule();
}

// A run of changes to one peer with the same verdicts that covers everything but a few holes
// (a workload switched to enforce keeps the ports it allows) reads best as "any traffic except
// tcp/5432"; nullopt when the run is better listed piece by piece.
std::optional<std::string> allExcept(const std::vector<const cv1::PathChange*>& run) {
  constexpr size_t kMostHoles = 3;
  if (run.size() < 3) {
    return std::nullopt;
  }
  std::vector<std::string> holes;
  for (const char* protocol : {"tcp", "udp", "icmp", "icmpv6", "other"}) {
    std::vector<std::pair<uint32_t, uint32_t>> covered;
    for (const auto* change : run) {
      if (change->protocol() == protocol) {
        covered.emplace_back(change->first_port(), change->last_port());
      }
    }
    std::sort(covered.begin(), covered.end());
    cv1::PathChange hole;
    hole.set_protocol(protocol);
    uint32_t next = 0;
    auto addHole = [&](uint32_t first, uint32_t last) {
      hole.set_first_port(first);
      hole.set_last_port(last);
      holes.push_back(portRange(hole));
    };
    for (const auto& [first, last] : covered) {
      if (first > next) {
        addHole(next, first - 1);
      }
      next = std::max(next, last + 1);
    }
    if (next <= lastPortOf(protocol)) {
      addHole(next, lastPortOf(protocol));
    }
  }
  if (holes.empty() || holes.size() > kMostHoles) {
    return std::nullopt;
  }
  return fmt::format("any traffic except {}", fmt::join(holes, ", "));
}

std::string workloadOrUnmanaged(const std::string& workload) {
  return workload.empty() ? "(unmanaged)" : workload;
}

std::string cgroupAndBelow(const cv1::CgroupChange& change) {
  std::string cgroup = change.cgroup().empty() ? "(attach cgroup)" : change.cgroup();
  if (change.cgroups_below() > 0) {
    cgroup += fmt::format(" (and {} below)", change.cgroups_below());
  }
  return cgroup;
}

// "cgroups a, b become workload x; cgroup c becomes unmanaged" for a removed workload.
std::string fateOfCgroups(const cv1::PolicyDiff& diff, const std::string& workload) {
  constexpr size_t kMostNamed = 5;
  std::map<std::string, std::vector<std::string>> cgroups_by_new;
  for (const auto& change : diff.cgroups()) {
    if (change.old_workload() == workload) {
      cgroups_by_new[change.new_workload()].push_back(cgroupAndBelow(change));
    }
  }
  if (cgroups_by_new.empty()) {
    return "no cgroup of this host belongs to it";
  }
  std::vector<std::string> parts;
  for (auto& [new_workload, cgroups] : cgroups_by_new) {
    const size_t count = cgroups.size();
    if (count > kMostNamed) {
      cgroups.resize(kMostNamed);
      cgroups.push_back(fmt::format("{} more", count - kMostNamed));
    }
    parts.push_back(fmt::format("{} {} {} {}", count == 1 ? "cgroup" : "cgroups",
                                fmt::join(cgroups, ", "), count == 1 ? "becomes" : "become",
                                new_workload.empty() ? "unmanaged" : "workload " + new_workload));
  }
  return fmt::format("{}", fmt::join(parts, "; "));
}

// Which cgroups change hands comes first: it is what a restructured policy does to the host,
// and it explains the path changes below it.
void appendCgroupChanges(const cv1::PolicyDiff& diff, std::string& text) {
  if (diff.cgroups_size() > 0) {
    Table cgroups({"CGROUP", "WORKLOAD BEFORE", "AFTER"});
    for (const auto& change : diff.cgroups()) {
      cgroups.add({cgroupAndBelow(change), workloadOrUnmanaged(change.old_workload()),
                   workloadOrUnmanaged(change.new_workload())});
    }
    text += "\n" + cgroups.render();
    if (diff.cgroups_truncated()) {
      text += fmt::format("(only the first {} cgroups are shown)\n", diff.cgroups_size());
    }
  }
  if (diff.removed_workloads_size() > 0) {
    text += "\n";
    for (const auto& workload : diff.removed_workloads()) {
      text +=
          line(fmt::format("workload removed: {}: {}", workload, fateOfCgroups(diff, workload)));
    }
  }
}

std::string verdictByRule(const std::string& verdict, const std::string& rule) {
  if (rule.empty()) {
    return verdict;
  }
  return rule.front() == '(' ? verdict + " " + rule : verdict + " (" + rule + ")";
}

void appendRuleCounters(const cv1::AgentStatus& status, std::string& text) {
  std::map<std::string, uint64_t> totals = {{"allow", 0}, {"deny", 0}, {"audit", 0}};
  for (const auto& rule : status.rules()) {
    totals[rule.verdict()] += rule.hits();
  }
  text += fmt::format("\nverdicts       allow {}, deny {}, audit (would deny) {}\n",
                      totals["allow"], totals["deny"], totals["audit"]);

  std::vector<const cv1::RuleCounter*> rules;
  for (const auto& rule : status.rules()) {
    rules.push_back(&rule);
  }
  const bool all = rules.size() <= kStatusRulesShown;
  if (!all) {
    std::stable_sort(rules.begin(), rules.end(), [](const auto* a, const auto* b) {
      return a->hits() > b->hits();
    });
    rules.resize(kStatusRulesShown);
  }
  Table table({"RULE", "VERDICT", "HITS"});
  for (const auto* rule : rules) {
    table.add({rule->rule(), rule->verdict(), std::to_string(rule->hits())});
  }
  text += "\n" + table.render();
  if (!all) {
    text += fmt::format("({} busiest of {} rules; `microsegctl counters` lists all)\n",
                        kStatusRulesShown, status.rules_size());
  }
}

void appendDrops(const cv1::AgentStatus& status, std::string& text) {
  Table table({"DATAPATH OUTCOMES AND DROPS", "COUNT"});
  for (const auto& reason : status.reasons()) {
    table.add({reason.reason(), std::to_string(reason.count())});
  }
  const auto& exporter = status.exporter();
  table.add({"flow_log_write_failed", std::to_string(exporter.records_dropped())});
  if (!exporter.collector().empty()) {
    table.add({"spool_dropped", std::to_string(exporter.spool_dropped())});
  }
  text += "\n" + table.render();
}

std::string exporterText(const cv1::ExporterState& exporter) {
  if (exporter.telemetry_off()) {
    return "telemetry off: enforcing and counting per rule, no flow records";
  }
  std::vector<std::string> lines;
  if (!exporter.flow_log().empty()) {
    lines.push_back("flow log " + exporter.flow_log());
  }
  if (!exporter.collector().empty()) {
    lines.push_back(fmt::format("collector {} {}, {} records spooled", exporter.collector(),
                                exporter.collector_connected() ? "connected" : "NOT connected",
                                exporter.spool_records()));
  }
  lines.push_back(fmt::format("{} records exported", exporter.records_exported()));
  return fmt::format("{}", fmt::join(lines, "; "));
}

}  // namespace

std::string printable(std::string_view text, bool keep_newlines) {
  std::string out;
  out.reserve(text.size());
  for (size_t at = 0; at < text.size();) {
    char32_t c = 0;
    size_t length = decodeUtf8(text, at, c);
    const bool control = length == 1 && (c < 0x20 || c == 0x7f) && !(c == '\n' && keep_newlines);
    if (length == 0) {
      length = 1;  // not UTF-8: escape this byte and look at the next
      appendHexEscaped(out, text.substr(at, 1));
    } else if (control || isInvisibleCharacter(c)) {
      appendHexEscaped(out, text.substr(at, length));
    } else {
      out += text.substr(at, length);
    }
    at += length;
  }
  return out;
}

void Table::add(std::vector<std::string> row) {
  for (auto& cell : row) {
    cell = printable(cell);
  }
  rows_.push_back(std::move(row));
}

std::string Table::render(const std::vector<size_t>& min_widths) const {
  std::vector<size_t> widths = min_widths;
  for (const auto& row : rows_) {
    widths.resize(std::max(widths.size(), row.size()), 0);
    for (size_t i = 0; i < row.size(); i++) {
      widths[i] = std::max(widths[i], row[i].size());
    }
  }
  std::string text;
  for (const auto& row : rows_) {
    std::string cells;
    for (size_t i = 0; i < row.size(); i++) {
      cells += i + 1 < row.size() ? fmt::format("{:<{}}  ", row[i], widths[i]) : row[i];
    }
    while (!cells.empty() && cells.back() == ' ') {
      cells.pop_back();
    }
    text += cells + "\n";
  }
  return text;
}

nlohmann::ordered_json toJson(const pb::Message& message) {
  nlohmann::ordered_json object = nlohmann::ordered_json::object();
  const pb::Descriptor* type = message.GetDescriptor();
  const pb::Reflection* reflection = message.GetReflection();
  for (int i = 0; i < type->field_count(); i++) {
    const pb::FieldDescriptor* field = type->field(i);
    if (field->is_map()) {
      object[field->name()] = mapValue(message, field);
    } else if (field->is_repeated()) {
      nlohmann::ordered_json array = nlohmann::ordered_json::array();
      for (int j = 0; j < reflection->FieldSize(message, field); j++) {
        array.push_back(fieldValue(message, field, j));
      }
      object[field->name()] = array;
    } else if (field->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE &&
               !reflection->HasField(message, field)) {
      object[field->name()] = nullptr;
    } else {
      object[field->name()] = fieldValue(message, field, 0);
    }
  }
  return object;
}

std::string addressText(const std::string& bytes) {
  char text[INET6_ADDRSTRLEN] = {};
  if (bytes.size() == 4 && inet_ntop(AF_INET, bytes.data(), text, sizeof(text)) != nullptr) {
    return text;
  }
  if (bytes.size() == 16 && inet_ntop(AF_INET6, bytes.data(), text, sizeof(text)) != nullptr) {
    return text;
  }
  std::string hex;
  for (unsigned char c : bytes) {
    hex += fmt::format("{:02x}", c);
  }
  return hex;
}

std::string renderStatus(const cv1::AgentStatus& status) {
  // The labels' column is padded like every table's.
  Table about;
  about.add({"agent", fmt::format("microsegd {} (pid {}, started {})", status.agent_version(),
                                  status.pid(), dateTime(status.started_unix_nano()))});
  about.add({"attach cgroup", status.attach_cgroup()});
  about.add({"pin dir", status.pin_dir()});
  about.add({"policy", status.policy_file()});
  about.add({"", fmt::format("version {}, sha256 {}, {} rules, {} workload cgroups",
                             status.policy_version(), shortHash(status.policy_hash()),
                             status.rule_count(), status.workload_cgroups())});
  if (status.has_last_reload()) {
    const auto& reload = status.last_reload();
    std::string outcome =
        fmt::format("{} at {}", reload.result(), dateTime(reload.time_unix_nano()));
    if (reload.result() != "applied") {
      outcome += fmt::format(": version {} keeps enforcing", status.policy_version());
    }
    about.add({"last reload", outcome});
  }
  about.add({"last error", status.last_error().empty() ? "none"
                                                       : dateTime(status.last_error_unix_nano()) +
                                                             ": " + status.last_error()});
  about.add({"exporter", exporterText(status.exporter())});
  std::string text = about.render();

  Table segments({"SEGMENT", "MODE", "RULES"});
  for (const auto& segment : status.segments()) {
    segments.add({segment.name(), segment.mode(), std::to_string(segment.rules())});
  }
  text += "\n" + segments.render();
  if (!status.counters_error().empty()) {
    text += "\n" + line("counters unavailable: " + status.counters_error());
    return text;
  }
  appendRuleCounters(status, text);
  appendDrops(status, text);
  return text;
}

std::string renderDiff(const cv1::PolicyDiff& diff, const std::string& file) {
  std::string text = line(fmt::format("running policy version {} (sha256 {}) -> {} (sha256 {})",
                                      diff.running_version(), shortHash(diff.running_hash()),
                                      file, shortHash(diff.new_hash())));
  if (diff.rules_size() == 0 && diff.paths_size() == 0 && diff.cgroups_size() == 0 &&
      diff.removed_workloads_size() == 0) {
    return text + "no changes: both enforce the same verdicts\n";
  }
  appendCgroupChanges(diff, text);
  if (diff.rules_size() > 0) {
    Table rules({"RULE", "CHANGE", "VERDICT", "WHERE", "DETAIL"});
    for (const auto& rule : diff.rules()) {
      std::string verdict = rule.change() == "added"     ? rule.new_verdict()
                            : rule.change() == "removed" ? rule.old_verdict()
                            : rule.old_verdict() == rule.new_verdict()
                                ? rule.new_verdict()
                                : rule.old_verdict() + " -> " + rule.new_verdict();
      rules.add({rule.rule(), rule.change(), verdict, rule.location(), rule.detail()});
    }
    text += "\n" + rules.render();
  }
  if (diff.paths_size() > 0) {
    Table paths({"PATH", "WORKLOAD", "DIRECTION", "PEER", "TRAFFIC", "BEFORE", "AFTER"});
    bool any_peer = false;
    for (int begin = 0; begin < diff.paths_size();) {
      std::vector<const cv1::PathChange*> run = {&diff.paths(begin)};
      while (begin + static_cast<int>(run.size()) < diff.paths_size() &&
             sameChangeOfOnePeer(*run.front(), diff.paths(begin + static_cast<int>(run.size())))) {
        run.push_back(&diff.paths(begin + static_cast<int>(run.size())));
      }
      begin += static_cast<int>(run.size());
      const auto except = allExcept(run);
      for (const auto* path : run) {
        paths.add({path->change(), path->workload(), path->direction(), path->peer(),
                   except ? *except : portRange(*path),
                   verdictByRule(path->old_verdict(), path->old_rule()),
                   verdictByRule(path->new_verdict(), path->new_rule())});
        any_peer = any_peer || path->peer() == "any";
        if (except) {
          break;
        }
      }
    }
    text += "\n" + paths.render();
    if (any_peer) {
      text += "(peer `any`: every peer that no rule of that workload names by itself)\n";
    }
    if (diff.paths_truncated()) {
      text += fmt::format("(only the first {} path changes are shown)\n", diff.paths_size());
    }
  }
  return text;
}

std::string renderTrace(const cv1::Trace& trace) {
  Table text;
  text.add({"verdict", trace.verdict()});
  if (!trace.rule().empty()) {
    text.add({"rule", trace.rule() + (trace.rule_location().empty()
                                          ? ""
                                          : " (" + trace.rule_location() + ")")});
  }
  text.add({"why", trace.explanation()});
  const bool egress = trace.direction() == "egress";
  const std::string workload = trace.workload();
  const std::string peer = trace.address() + " (" + trace.peer() + ")";
  const std::string traffic = trace.protocol() == "tcp" || trace.protocol() == "udp"
                                  ? fmt::format("{}/{}", trace.protocol(), trace.port())
                                  : fmt::format("{} type {}", trace.protocol(), trace.port());
  text.add({"path", fmt::format("{} -> {}, {} {}", egress ? workload : peer,
                                egress ? peer : workload, trace.direction(), traffic)});
  text.add({"cgroups", trace.workload_cgroups_size() == 0
                           ? "none on this host"
                           : fmt::format("{}", fmt::join(trace.workload_cgroups(), ", "))});
  text.add({"policy", fmt::format("version {}", trace.policy_version())});
  return text.render({kTraceLabelWidth});
}

std::string renderWorkloads(const cv1::WorkloadList& list) {
  std::map<std::string, const cv1::WorkloadInfo*> workloads;
  for (const auto& workload : list.workloads()) {
    workloads[workload.name()] = &workload;
  }
  auto users = [](const cv1::WorkloadInfo& workload) {
    std::vector<std::string> names;
    for (uint32_t uid : workload.uids()) {
      names.push_back(std::to_string(uid));
    }
    for (const auto& user : workload.unresolved_users()) {
      names.push_back(user + " (unknown here)");
    }
    return names.empty() ? std::string("any") : fmt::format("{}", fmt::join(names, ","));
  };

  Table selected({"CGROUP", "WORKLOAD", "USERS", "LABELS", "EGRESS", "INGRESS"});
  std::vector<std::string> unselected;
  std::map<std::string, bool> runs_here;
  bool inherited = false;
  for (const auto& cgroup : list.cgroups()) {
    const std::string path = cgroup.cgroup().empty() ? "(attach cgroup)" : cgroup.cgroup();
    auto found = workloads.find(cgroup.workload());
    if (cgroup.workload().empty() || found == workloads.end()) {
      unselected.push_back(path);
      continue;
    }
    const cv1::WorkloadInfo& workload = *found->second;
    runs_here[workload.name()] = true;
    inherited = inherited || cgroup.inherited();
    selected.add({path, workload.name() + (cgroup.inherited() ? " *" : ""), users(workload),
                  labelsText(workload.labels()), workload.egress(), workload.ingress()});
  }

  std::string text = line("attach cgroup " + list.attach_cgroup()) + "\n" + selected.render();
  if (inherited) {
    text += "* from a parent cgroup: the kernel gives a cgroup its nearest selected ancestor's "
            "workload\n";
  }
  Table elsewhere({"WORKLOAD WITHOUT A CGROUP HERE", "SELECTS", "USERS"});
  for (const auto& [name, workload] : workloads) {
    if (!runs_here.count(name)) {
      elsewhere.add({name,
                     workload->cgroup_patterns_size() == 0
                         ? "any cgroup, by user"
                         : fmt::format("{}", fmt::join(workload->cgroup_patterns(), ", ")),
                     users(*workload)});
    }
  }
  if (elsewhere.rows() > 1) {
    text += "\n" + elsewhere.render();
  }
  Table nothing_selects({"CGROUPS NO WORKLOAD SELECTS (their traffic is not judged)"});
  for (const auto& path : unselected) {
    nothing_selects.add({path});
  }
  if (unselected.empty()) {
    nothing_selects.add({"(none)"});
  }
  return text + "\n" + nothing_selects.render();
}

std::string flowHeader() {
  Table header({"TIME", "EVENT", "VERDICT", "WORKLOAD", "DIRECTION", "PEER", "TRAFFIC", "RULE",
                "DETAIL"});
  return header.render(kFlowColumnWidths);
}

std::string renderFlow(const FlowRecord& record) {
  const bool egress = record.direction() == tv1::DIRECTION_EGRESS;
  const std::string protocol = protocolName(record.protocol());
  std::string traffic;
  if (record.protocol() == 1 || record.protocol() == 58) {
    // ICMP types travel in the originator's port field.
    traffic = fmt::format("{}/{}", protocol, egress ? record.local_port() : record.peer_port());
  } else {
    traffic = fmt::format("{}/{}", protocol, egress ? record.peer_port() : record.local_port());
  }
  std::string peer = addressText(record.peer_address());
  if (!record.peer().name().empty()) {
    peer += " " + record.peer().name();
  }
  std::string detail;
  switch (record.event()) {
    case tv1::FLOW_EVENT_END:
      detail = fmt::format("out {} B, in {} B, {} ms", record.bytes_out(), record.bytes_in(),
                           record.duration_nano() / 1000000);
      break;
    case tv1::FLOW_EVENT_DENIED:
      detail = fmt::format("{} attempt{}", record.attempts(), record.attempts() == 1 ? "" : "s");
      break;
    default:
      // Inbound TCP records carry the listener's workload, not the accepting task.
      if (record.workload().pid() != 0) {
        detail = fmt::format("pid {} {}", record.workload().pid(), record.workload().command());
      }
      break;
  }
  const std::string time = localTime(record.time_unix_nano(), "%H:%M:%S") +
                           fmt::format(".{:03}", record.time_unix_nano() / 1000000 % 1000);
  const std::string workload =
      record.workload().name().empty() ? "(unmanaged)" : record.workload().name();
  Table row;
  row.add({time, enumWord(tv1::FlowEvent_descriptor()->FindValueByNumber(record.event())),
           enumWord(tv1::Verdict_descriptor()->FindValueByNumber(record.verdict())), workload,
           egress ? "egress" : "ingress", peer, traffic, record.rule(), detail});
  return row.render(kFlowColumnWidths);
}

}  // namespace mseg::ctl
