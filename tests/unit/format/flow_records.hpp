// Flow records for the format tests: one estate (a shop's web and db tiers on 198.18.0.0/15 and
// fd00::/8), one record per kind of event the agent sends.
#pragma once

#include <arpa/inet.h>

#include <string>

#include "microseg/telemetry/v1/telemetry.pb.h"

namespace mseg::format::testkit {

namespace telemetry = microseg::telemetry::v1;

// 2023-11-14T22:13:20.123456789Z
inline constexpr uint64_t kEventTime = 1'700'000'000'123'456'789;

// Network-order bytes of an address in text form; empty when it is not one.
inline std::string packAddress(const std::string& text) {
  unsigned char bytes[16];
  if (inet_pton(AF_INET, text.c_str(), bytes) == 1) {
    return std::string(reinterpret_cast<char*>(bytes), 4);
  }
  if (inet_pton(AF_INET6, text.c_str(), bytes) == 1) {
    return std::string(reinterpret_cast<char*>(bytes), 16);
  }
  return {};
}

// Gives a record derived from another its own place in the agent's sequence.
inline void renumber(telemetry::FlowRecord& record, uint64_t sequence) {
  record.set_sequence(sequence);
  record.set_record_id("agent-7f3a:" + std::to_string(sequence));
}

// web (198.18.0.10:43512, pid 3170 gunicorn, uid 1000) opens a connection to the db hosts
// (198.18.0.20:5432), allowed by shop/web-to-db.
inline telemetry::FlowRecord makeEgressStart() {
  telemetry::FlowRecord record;
  record.set_agent_id("agent-7f3a");
  renumber(record, 42);
  record.set_host("web-1.shop.example");
  record.set_event(telemetry::FLOW_EVENT_START);
  record.set_time_unix_nano(kEventTime);
  record.set_start_unix_nano(kEventTime);
  record.set_direction(telemetry::DIRECTION_EGRESS);
  record.set_ip_version(4);
  record.set_protocol(6);
  record.set_local_address(packAddress("198.18.0.10"));
  record.set_local_port(43512);
  record.set_peer_address(packAddress("198.18.0.20"));
  record.set_peer_port(5432);

  telemetry::Workload* workload = record.mutable_workload();
  workload->set_name("web");
  (*workload->mutable_labels())["tier"] = "web";
  (*workload->mutable_labels())["app"] = "shop";
  workload->set_cgroup("shop.slice/web.service");
  workload->set_cgroup_id(4242);
  workload->set_pid(3170);
  workload->set_uid(1000);
  workload->set_command("gunicorn");
  record.mutable_peer()->set_name("db-hosts");
  (*record.mutable_peer()->mutable_labels())["app"] = "shop";
  (*record.mutable_peer()->mutable_labels())["tier"] = "db";

  record.set_verdict(telemetry::VERDICT_ALLOW);
  record.set_rule("shop/web-to-db");
  record.set_policy_version(12);
  record.set_policy_hash("sha256:5d41402abc4b2a76");
  return record;
}

// The same connection ending 90.5 s later after 1200 bytes out and 48000 in.
inline telemetry::FlowRecord makeEgressEnd() {
  telemetry::FlowRecord record = makeEgressStart();
  renumber(record, 43);
  record.set_event(telemetry::FLOW_EVENT_END);
  record.set_time_unix_nano(kEventTime + 90'500'000'000);
  record.set_bytes_out(1200);
  record.set_bytes_in(48000);
  record.set_packets_out(10);
  record.set_packets_in(40);
  record.set_duration_nano(90'500'000'000);
  return record;
}

// Three attempts from the office (fd00::80) to ssh on web ([fd00::10]:22), refused by the
// default deny; the first came 2 s before the record.
inline telemetry::FlowRecord makeIngressDenied() {
  telemetry::FlowRecord record = makeEgressStart();
  renumber(record, 44);
  record.set_event(telemetry::FLOW_EVENT_DENIED);
  record.set_start_unix_nano(kEventTime - 2'000'000'000);
  record.set_direction(telemetry::DIRECTION_INGRESS);
  record.set_ip_version(6);
  record.set_local_address(packAddress("fd00::10"));
  record.set_local_port(22);
  record.set_peer_address(packAddress("fd00::80"));
  record.set_peer_port(50122);
  record.mutable_workload()->set_pid(0);
  record.mutable_workload()->set_uid(0);
  record.mutable_workload()->clear_command();
  record.mutable_peer()->set_name("office");
  record.mutable_peer()->clear_labels();
  (*record.mutable_peer()->mutable_labels())["zone"] = "office";
  record.set_verdict(telemetry::VERDICT_DENY);
  record.set_rule("(default deny)");
  record.set_attempts(3);
  return record;
}

// web calls an API outside the policy over UDP; audit mode lets it through.
inline telemetry::FlowRecord makeAuditedUdpStart() {
  telemetry::FlowRecord record = makeEgressStart();
  renumber(record, 45);
  record.set_protocol(17);
  record.set_local_port(40000);
  record.set_peer_address(packAddress("198.19.5.5"));
  record.set_peer_port(8125);
  record.mutable_peer()->set_name("world");
  record.mutable_peer()->clear_labels();
  record.set_verdict(telemetry::VERDICT_AUDIT);
  record.set_rule("(default deny)");
  return record;
}

// web pings the db host: ICMP echo request, type 8 code 0.
inline telemetry::FlowRecord makeIcmpEchoStart() {
  telemetry::FlowRecord record = makeEgressStart();
  renumber(record, 46);
  record.set_protocol(1);
  record.set_local_port(8);
  record.set_peer_port(0);
  record.set_rule("shop/ping");
  return record;
}

// The office pings web over IPv6 (ICMPv6 echo request, type 128) and is refused.
inline telemetry::FlowRecord makeIcmpv6IngressDenied() {
  telemetry::FlowRecord record = makeIngressDenied();
  renumber(record, 47);
  record.set_protocol(58);
  record.set_local_port(128);
  record.set_peer_port(0);
  record.set_attempts(1);
  return record;
}

}  // namespace mseg::format::testkit
