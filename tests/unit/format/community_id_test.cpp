// Community ID v1: the specification's baseline vectors, and flow records hashed as originated.
#include "mseg/format/community_id.hpp"

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "flow_records.hpp"
#include "spec_files.hpp"

namespace mseg::format {
namespace {

using testkit::packAddress;

std::span<const uint8_t> asBytes(const std::string& bytes) {
  return {reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()};
}

class CommunityIdTest : public ::testing::Test {
protected:
  // Checks every vector of a baseline file; a file that is missing or empty fails the test.
  static void expectBaseline(const std::string& file, uint16_t seed, bool base64) {
    std::string relative = "community-id/" + file;
    auto text = testkit::readSpec(relative);
    ASSERT_TRUE(text.has_value()) << "cannot read " << testkit::specPath(relative);
    nlohmann::json vectors = nlohmann::json::parse(*text, nullptr, false);
    ASSERT_TRUE(vectors.is_array() && !vectors.empty()) << relative << " holds no vectors";

    for (const auto& entry : vectors) {
      std::string src = packAddress(entry["saddr"].get<std::string>());
      std::string dst = packAddress(entry["daddr"].get<std::string>());
      // Protocols without ports have null ones in the baseline.
      uint16_t sport = entry["sport"].is_null() ? 0 : entry["sport"].get<uint16_t>();
      uint16_t dport = entry["dport"].is_null() ? 0 : entry["dport"].get<uint16_t>();

      auto id = communityId(entry["proto"].get<uint8_t>(), asBytes(src), asBytes(dst), sport, dport,
                            seed, base64);

      ASSERT_TRUE(id.ok()) << entry.dump() << ": " << id.error().message();
      EXPECT_EQ(*id, entry["communityid"].get<std::string>()) << entry.dump();
    }
  }
};

TEST_F(CommunityIdTest, MatchesEveryDefaultBaselineVector) {
  expectBaseline("baseline_deflt.json", 0, true);
}

TEST_F(CommunityIdTest, MatchesEverySeededBaselineVector) {
  expectBaseline("baseline_seed1.json", 1, true);
}

TEST_F(CommunityIdTest, MatchesEveryHexBaselineVector) {
  expectBaseline("baseline_nob64.json", 0, false);
}

TEST_F(CommunityIdTest, HashesBothDirectionsOfAFlowAlike) {
  std::string client = packAddress("198.18.0.10");
  std::string server = packAddress("198.18.0.20");

  auto forward = communityId(6, asBytes(client), asBytes(server), 43512, 5432);
  auto reverse = communityId(6, asBytes(server), asBytes(client), 5432, 43512);

  ASSERT_TRUE(forward.ok());
  ASSERT_TRUE(reverse.ok());
  EXPECT_EQ(*forward, "1:HmRP5GoGeDHTRsAXVAJfkYVIook=");
  EXPECT_EQ(*reverse, *forward);
}

TEST_F(CommunityIdTest, IgnoresPortsOfProtocolsWithoutThem) {
  std::string a = packAddress("10.1.12.1");
  std::string b = packAddress("10.1.12.2");

  auto with_ports = communityId(46, asBytes(a), asBytes(b), 1234, 80);
  auto without = communityId(46, asBytes(a), asBytes(b), 0, 0);

  ASSERT_TRUE(with_ports.ok());
  EXPECT_EQ(*with_ports, "1:KHlLkgoJW7ifUTyTSgyVfkFHzKw=");
  EXPECT_EQ(*with_ports, *without);
}

TEST_F(CommunityIdTest, RejectsAddressesOfDifferentFamilies) {
  std::string v4 = packAddress("198.18.0.10");
  std::string v6 = packAddress("fd00::10");

  auto id = communityId(6, asBytes(v4), asBytes(v6), 1, 2);

  ASSERT_FALSE(id.ok());
  EXPECT_EQ(id.error().code(), EINVAL);
  EXPECT_EQ(id.error().message(), "source address has 4 bytes, destination 16");
}

TEST_F(CommunityIdTest, RejectsAnAddressOfAnotherLength) {
  std::string odd = "\x01\x02\x03";

  auto id = communityId(6, asBytes(odd), asBytes(odd), 1, 2);

  ASSERT_FALSE(id.ok());
  EXPECT_EQ(id.error().message(), "source address has 3 bytes");
}

TEST_F(CommunityIdTest, HashesAnEgressRecordFromLocalToPeer) {
  auto id = communityId(testkit::makeEgressStart());

  ASSERT_TRUE(id.ok()) << id.error().message();
  EXPECT_EQ(*id, "1:HmRP5GoGeDHTRsAXVAJfkYVIook=");
}

TEST_F(CommunityIdTest, HashesAnIngressRecordFromPeerToLocal) {
  auto record = testkit::makeIngressDenied();
  std::string peer = packAddress("fd00::80");
  std::string local = packAddress("fd00::10");

  auto id = communityId(record);
  auto hex = communityId(record, 0, false);

  ASSERT_TRUE(id.ok()) << id.error().message();
  EXPECT_EQ(*id, "1:9h6blIytlSs3XW8Ege+dxgzH/O4=");
  EXPECT_EQ(*id, *communityId(6, asBytes(peer), asBytes(local), 50122, 22));
  ASSERT_TRUE(hex.ok());
  EXPECT_EQ(*hex, "1:f61e9b948cad952b375d6f0481ef9dc60cc7fcee");
}

TEST_F(CommunityIdTest, HashesIcmpRecordsByTypeAndCode) {
  auto echo = communityId(testkit::makeIcmpEchoStart());
  auto echo6 = communityId(testkit::makeIcmpv6IngressDenied());

  ASSERT_TRUE(echo.ok()) << echo.error().message();
  ASSERT_TRUE(echo6.ok()) << echo6.error().message();
  EXPECT_EQ(*echo, "1:olWkyiuQNzc/y1TudhKs1gHnXR8=");
  EXPECT_EQ(*echo6, "1:h4ci2YQqoRl4ra4utnfQLXnJG8Y=");
}

TEST_F(CommunityIdTest, HashesAnIpv4MappedAddressAsIpv4) {
  auto record = testkit::makeEgressStart();
  record.set_local_address(packAddress("::ffff:198.18.0.10"));
  record.set_peer_address(packAddress("::ffff:198.18.0.20"));

  auto id = communityId(record);

  ASSERT_TRUE(id.ok()) << id.error().message();
  EXPECT_EQ(*id, "1:HmRP5GoGeDHTRsAXVAJfkYVIook=");
}

TEST_F(CommunityIdTest, RejectsARecordWithAMalformedAddress) {
  auto record = testkit::makeEgressStart();
  record.set_peer_address("\x01\x02\x03");

  auto id = communityId(record);

  ASSERT_FALSE(id.ok());
  EXPECT_EQ(id.error().code(), EINVAL);
  EXPECT_EQ(id.error().message(), "community id of record agent-7f3a:42: address of 4 and 3 bytes");
}

TEST_F(CommunityIdTest, RejectsARecordWithAPortOutOfRange) {
  auto record = testkit::makeEgressStart();
  record.set_peer_port(70000);

  auto id = communityId(record);

  ASSERT_FALSE(id.ok());
  EXPECT_EQ(id.error().message(),
            "community id of record agent-7f3a:42: port 43512 or 70000 out of range");
}

}  // namespace
}  // namespace mseg::format
