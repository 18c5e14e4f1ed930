// OCSF 1.1.0 Network Activity rendering: exact content for a known record, and every kind of
// record checked against the schema files.
#include "mseg/format/ocsf.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <arpa/inet.h>

#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "flow_records.hpp"
#include "mseg/format/product.hpp"
#include "ocsf_fixture.hpp"

namespace mseg::format {
namespace {

using nlohmann::json;
using ::testing::IsEmpty;

class OcsfRenderTest : public testkit::OcsfSchemaFixture {
protected:
  // The rendered record, parsed, after checking that it is one line and a valid event.
  static json renderValid(const testkit::telemetry::FlowRecord& record) {
    std::string text = renderOcsf(record);
    EXPECT_EQ(text.find('\n'), std::string::npos) << text;
    EXPECT_THAT(validateNetworkActivity(text), IsEmpty()) << text;
    return json::parse(text, nullptr, false);
  }
};

TEST_F(OcsfRenderTest, RendersTheStartOfAnEgressFlowAttributeByAttribute) {
  json expected = json::parse(R"json({
    "activity_id": 1, "activity_name": "Open",
    "category_uid": 4, "category_name": "Network Activity",
    "class_uid": 4001, "class_name": "Network Activity",
    "type_uid": 400101, "type_name": "Network Activity: Open",
    "severity_id": 1, "severity": "Informational",
    "status_id": 1, "status": "Success",
    "action_id": 1, "action": "Allowed",
    "disposition_id": 1, "disposition": "Allowed",
    "time": 1700000000123, "timezone_offset": 0, "start_time": 1700000000123,
    "metadata": {
      "version": "1.1.0",
      "product": {"name": "microseg", "vendor_name": "microseg", "version": "@VERSION@"},
      "profiles": ["host", "security_control"],
      "uid": "agent-7f3a:42",
      "correlation_uid": "1:HmRP5GoGeDHTRsAXVAJfkYVIook="
    },
    "device": {"ip": "198.18.0.10", "name": "web-1.shop.example",
               "hostname": "web-1.shop.example", "type_id": 0, "type": "Unknown"},
    "actor": {"process": {"pid": 3170, "name": "gunicorn", "user": {"uid": "1000"}}},
    "src_endpoint": {"ip": "198.18.0.10", "port": 43512, "name": "web",
                     "hostname": "web-1.shop.example"},
    "dst_endpoint": {"ip": "198.18.0.20", "port": 5432, "name": "db-hosts"},
    "connection_info": {"protocol_num": 6, "protocol_name": "tcp", "protocol_ver_id": 4,
                        "protocol_ver": "Internet Protocol version 4 (IPv4)",
                        "direction_id": 2, "direction": "Outbound"},
    "firewall_rule": {"name": "shop/web-to-db", "uid": "shop/web-to-db", "version": "12"},
    "unmapped": {
      "verdict": "allow",
      "community_id": "1:HmRP5GoGeDHTRsAXVAJfkYVIook=",
      "agent_id": "agent-7f3a", "sequence": 42,
      "policy_version": 12, "policy_hash": "sha256:5d41402abc4b2a76",
      "workload": {"name": "web", "labels": {"app": "shop", "tier": "web"},
                   "cgroup": "shop.slice/web.service", "cgroup_id": 4242},
      "peer": {"name": "db-hosts", "labels": {"app": "shop", "tier": "db"}}
    }
  })json");
  expected["metadata"]["product"]["version"] = productVersion();
  expected["message"] =
      "flow started: egress tcp 198.18.0.10:43512 -> 198.18.0.20:5432, allowed by shop/web-to-db";

  json event = renderValid(testkit::makeEgressStart());

  EXPECT_EQ(event, expected) << event.dump(2);
}

TEST_F(OcsfRenderTest, RendersAttributesInOneFixedOrder) {
  std::string first = renderOcsf(testkit::makeEgressStart());
  std::string second = renderOcsf(testkit::makeEgressStart());

  EXPECT_EQ(first, second);
  EXPECT_EQ(first.rfind(R"({"activity_id":1,"activity_name":"Open","category_uid":4,)", 0), 0u);
  EXPECT_EQ(first.back(), '}');
}

TEST_F(OcsfRenderTest, ReportsTrafficOfAnEndedFlowFromTheOriginsSide) {
  json event = renderValid(testkit::makeEgressEnd());

  EXPECT_EQ(event["activity_id"], 2);
  EXPECT_EQ(event["type_uid"], 400102);
  EXPECT_EQ(event["end_time"], 1700000090623);
  EXPECT_EQ(event["duration"], 90500);
  EXPECT_EQ(event["traffic"], json::parse(R"({"bytes": 49200, "bytes_in": 48000,
      "bytes_out": 1200, "packets": 50, "packets_in": 40, "packets_out": 10})"));
}

TEST_F(OcsfRenderTest, PutsThePeerAtTheSourceOfAnIngressDenial) {
  json event = renderValid(testkit::makeIngressDenied());

  EXPECT_EQ(event["activity_id"], 5);
  EXPECT_EQ(event["activity_name"], "Refuse");
  EXPECT_EQ(event["status_id"], 2);
  EXPECT_EQ(event["action_id"], 2);
  EXPECT_EQ(event["disposition"], "Blocked");
  EXPECT_EQ(event["severity_id"], 3);
  EXPECT_EQ(event["count"], 3);
  EXPECT_EQ(event["start_time"], 1699999998123);
  EXPECT_EQ(event["src_endpoint"],
            json::parse(R"({"ip": "fd00::80", "port": 50122, "name": "office"})"));
  EXPECT_EQ(event["dst_endpoint"], json::parse(R"({"ip": "fd00::10", "port": 22, "name": "web",
      "hostname": "web-1.shop.example"})"));
  EXPECT_EQ(event["connection_info"]["direction_id"], 1);
  EXPECT_EQ(event["connection_info"]["protocol_ver_id"], 6);
  EXPECT_EQ(event["unmapped"]["peer"]["labels"], json::parse(R"({"zone": "office"})"));
  EXPECT_FALSE(event.contains("actor")) << "pid 0: no task to name";
  EXPECT_FALSE(event.contains("traffic"));
}

TEST_F(OcsfRenderTest, MarksAnAuditedFlowAllowedButDetected) {
  json event = renderValid(testkit::makeAuditedUdpStart());

  EXPECT_EQ(event["action_id"], 1);
  EXPECT_EQ(event["action"], "Allowed");
  EXPECT_EQ(event["disposition_id"], 15);
  EXPECT_EQ(event["disposition"], "Detected");
  EXPECT_EQ(event["severity_id"], 2);
  EXPECT_EQ(event["unmapped"]["verdict"], "audit");
  EXPECT_EQ(event["unmapped"]["would_deny"], true);
  EXPECT_EQ(event["connection_info"]["protocol_name"], "udp");
}

TEST_F(OcsfRenderTest, GivesIcmpTypeAndCodeInsteadOfPorts) {
  json echo = renderValid(testkit::makeIcmpEchoStart());
  json echo6 = renderValid(testkit::makeIcmpv6IngressDenied());

  EXPECT_FALSE(echo["src_endpoint"].contains("port"));
  EXPECT_FALSE(echo["dst_endpoint"].contains("port"));
  EXPECT_EQ(echo["unmapped"]["icmp"], json::parse(R"({"type": 8, "code": 0})"));
  EXPECT_EQ(echo["connection_info"]["protocol_name"], "icmp");
  EXPECT_EQ(echo6["unmapped"]["icmp"], json::parse(R"({"type": 128, "code": 0})"));
  EXPECT_EQ(echo6["connection_info"]["protocol_name"], "ipv6-icmp");
  EXPECT_EQ(echo6["src_endpoint"]["ip"], "fd00::80");
  EXPECT_EQ(echo6["metadata"]["correlation_uid"], "1:h4ci2YQqoRl4ra4utnfQLXnJG8Y=");
}

TEST_F(OcsfRenderTest, ClampsADurationBeyond32BitsAndKeepsItExactInUnmapped) {
  auto record = testkit::makeEgressEnd();
  record.set_duration_nano(30ull * 24 * 3600 * 1'000'000'000);

  json event = renderValid(record);

  EXPECT_EQ(event["duration"], 2147483647);
  EXPECT_EQ(event["unmapped"]["duration_ms"], 2592000000ull);
}

TEST_F(OcsfRenderTest, ReplacesInvalidUtf8InsteadOfFailing) {
  auto record = testkit::makeEgressStart();
  record.mutable_workload()->set_command("gu\xffnicorn");

  json event = renderValid(record);

  EXPECT_EQ(event["actor"]["process"]["name"], "gu\xef\xbf\xbdnicorn");
}

TEST_F(OcsfRenderTest, RendersARecordWithoutEventVerdictDirectionOrHost) {
  auto record = testkit::makeEgressStart();
  record.clear_event();
  record.clear_verdict();
  record.clear_direction();
  record.clear_host();
  record.clear_rule();

  json event = renderValid(record);

  EXPECT_EQ(event["activity_id"], 0);
  EXPECT_EQ(event["type_name"], "Network Activity: Unknown");
  EXPECT_EQ(event["action_id"], 0);
  EXPECT_EQ(event["connection_info"]["direction_id"], 0);
  EXPECT_EQ(event["src_endpoint"]["ip"], "198.18.0.10") << "no direction: the local side opened";
  EXPECT_FALSE(event.contains("device"));
  EXPECT_FALSE(event.contains("firewall_rule"));
}

TEST_F(OcsfRenderTest, LeavesOutAHostNameThatIsNotAHostname) {
  auto record = testkit::makeEgressStart();
  record.set_host("web_1");

  json event = renderValid(record);

  EXPECT_EQ(event["device"]["name"], "web_1");
  EXPECT_FALSE(event["device"].contains("hostname"));
  EXPECT_FALSE(event["src_endpoint"].contains("hostname"));
}

TEST_F(OcsfRenderTest, PrefersTheCommunityIdTheAgentSent) {
  auto record = testkit::makeEgressStart();
  record.set_community_id("1:fromtheagent=");

  json event = renderValid(record);

  EXPECT_EQ(event["metadata"]["correlation_uid"], "1:fromtheagent=");
  EXPECT_EQ(event["unmapped"]["community_id"], "1:fromtheagent=");
}

TEST_F(OcsfRenderTest, MarksALoopbackFlowLocalhost) {
  auto record = testkit::makeEgressStart();
  record.set_local_address(testkit::packAddress("127.0.0.1"));
  record.set_peer_address(testkit::packAddress("127.0.0.1"));

  json event = renderValid(record);

  EXPECT_EQ(event["connection_info"]["boundary_id"], 1);
  EXPECT_EQ(event["connection_info"]["boundary"], "Localhost");
}

TEST_F(OcsfRenderTest, LeavesOutAMalformedAddressButKeepsTheEndpointNamed) {
  auto record = testkit::makeEgressStart();
  record.set_peer_address("\x01\x02\x03");

  json event = renderValid(record);

  EXPECT_FALSE(event["dst_endpoint"].contains("ip"));
  EXPECT_EQ(event["dst_endpoint"]["name"], "db-hosts");
  EXPECT_FALSE(event["metadata"].contains("correlation_uid"));
}

TEST_F(OcsfRenderTest, ReplacesEachMaximalIllFormedUtf8SubpartWithOneReplacementCharacter) {
  // Unicode's "substitution of maximal subparts": a truncated sequence is one U+FFFD, a byte
  // that cannot start or continue one is one each (a surrogate's ED A0 80 is three).
  const std::string kReplacement = "\xef\xbf\xbd";
  struct Case {
    std::string bytes;
    std::string expected;
  };
  const Case cases[] = {
      {"a\xe2\x82", "a" + kReplacement},
      {"\xe2\x82x", kReplacement + "x"},
      {"\xc0\xaf", kReplacement + kReplacement},
      {"\xed\xa0\x80", kReplacement + kReplacement + kReplacement},
      {"\xf4\x90\x80\x80", kReplacement + kReplacement + kReplacement + kReplacement},
      {"\xf0\x9f\x98\x80 ok \xc3\xa9", "\xf0\x9f\x98\x80 ok \xc3\xa9"},
  };

  for (const Case& c : cases) {
    auto record = testkit::makeEgressStart();
    record.mutable_workload()->set_command(c.bytes);
    (*record.mutable_peer()->mutable_labels())[c.bytes] = c.bytes;

    json event = renderValid(record);

    EXPECT_EQ(event["actor"]["process"]["name"], c.expected);
    EXPECT_EQ(event["unmapped"]["peer"]["labels"][c.expected], c.expected);
  }
}

TEST_F(OcsfRenderTest, EscapesQuotesBackslashesAndControlCharacters) {
  std::string nasty = std::string("a\"b\\c\n\t\x01\x1f\x7f", 11) + std::string(1, '\0') + "]";
  auto record = testkit::makeEgressStart();
  record.set_rule(nasty);
  record.mutable_workload()->set_name(nasty);
  (*record.mutable_workload()->mutable_labels())[nasty] = nasty;

  json event = renderValid(record);

  EXPECT_EQ(event["firewall_rule"]["name"], nasty);
  EXPECT_EQ(event["src_endpoint"]["name"], nasty);
  EXPECT_EQ(event["unmapped"]["workload"]["labels"][nasty], nasty);
  EXPECT_THAT(event["message"].get<std::string>(), ::testing::EndsWith(", allowed by " + nasty));
}

TEST_F(OcsfRenderTest, WritesIpv6AddressesAsInetNtopDoes) {
  const char* addresses[] = {"fd00::10",       "::1",        "fe80::1:0:0:1",
                             "1:0:0:1::1",     "1::1:0:0:1", "2001:db8:0:1:1:1:1:1",
                             "fd00:0:0:1::",   "::1.2.3.4",  "fd00::ffff:102:304",
                             "1:2:3:4:5:6:7:8"};
  for (const char* text : addresses) {
    auto record = testkit::makeEgressStart();
    std::string bytes = testkit::packAddress(text);
    record.set_local_address(bytes);
    record.set_peer_address(testkit::packAddress("fd00::20"));
    char expected[INET6_ADDRSTRLEN];
    ASSERT_NE(inet_ntop(AF_INET6, bytes.data(), expected, sizeof(expected)), nullptr);

    json event = renderValid(record);

    EXPECT_EQ(event["src_endpoint"]["ip"], expected) << text;
  }
}

TEST_F(OcsfRenderTest, RendersEachRecordFromAFreshStart) {
  auto full = testkit::makeEgressEnd();
  (*full.mutable_workload()->mutable_labels())["extra"] = std::string(5000, 'x');
  auto bare = testkit::makeIngressDenied();
  bare.mutable_workload()->clear_labels();
  std::string alone = renderOcsf(bare);

  std::string first = renderOcsf(full);
  std::string between = renderOcsf(bare);
  std::string again = renderOcsf(full);

  EXPECT_EQ(between, alone);
  EXPECT_EQ(again, first);
}

TEST_F(OcsfRenderTest, RendersTheSameOnEveryThread) {
  const std::vector<testkit::telemetry::FlowRecord> records = {
      testkit::makeEgressStart(), testkit::makeEgressEnd(), testkit::makeIngressDenied(),
      testkit::makeAuditedUdpStart(), testkit::makeIcmpv6IngressDenied()};
  std::vector<std::string> expected;
  for (const auto& record : records) {
    expected.push_back(renderOcsf(record));
  }
  std::vector<std::vector<std::string>> rendered(4);

  std::vector<std::thread> threads;
  for (auto& out : rendered) {
    threads.emplace_back([&records, &out] {
      for (int round = 0; round < 200; ++round) {
        for (const auto& record : records) {
          out.push_back(renderOcsf(record));
        }
      }
    });
  }
  for (auto& thread : threads) {
    thread.join();
  }

  for (const auto& out : rendered) {
    ASSERT_EQ(out.size(), 200 * records.size());
    for (size_t i = 0; i < out.size(); ++i) {
      ASSERT_EQ(out[i], expected[i % records.size()]) << "record " << i % records.size();
    }
  }
}

}  // namespace
}  // namespace mseg::format
