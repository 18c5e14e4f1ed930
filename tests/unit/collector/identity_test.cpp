// Matching the host a record claims against the names of the sender's certificate.
#include "mseg/collector/identity.hpp"

#include <gtest/gtest.h>

namespace mseg::collector {
namespace {

class PeerIdentityTest : public ::testing::Test {
protected:
  static PeerIdentity certificateFor(std::string common_name,
                                     std::vector<std::string> dns_names = {}) {
    PeerIdentity peer;
    peer.address = "ipv4:127.0.0.1:40000";
    peer.common_name = std::move(common_name);
    peer.dns_names = std::move(dns_names);
    return peer;
  }
};

TEST_F(PeerIdentityTest, NamesTheHostOfItsCommonName) {
  auto peer = certificateFor("host-a");

  EXPECT_TRUE(peer.names("host-a"));
  EXPECT_FALSE(peer.names("host-b"));
}

TEST_F(PeerIdentityTest, NamesEveryHostOfItsDnsSubjectAlternativeNames) {
  auto peer = certificateFor("", {"host-a", "host-a.example.net"});

  EXPECT_TRUE(peer.names("host-a"));
  EXPECT_TRUE(peer.names("host-a.example.net"));
  EXPECT_FALSE(peer.names("example.net"));
}

TEST_F(PeerIdentityTest, ComparesNamesAsDnsDoes) {
  auto peer = certificateFor("Host-A.Example.NET.");

  EXPECT_TRUE(peer.names("host-a.example.net"));
  EXPECT_TRUE(peer.names("HOST-A.example.net."));
}

TEST_F(PeerIdentityTest, NeverMatchesAnEmptyOrPartialName) {
  auto peer = certificateFor("host-a", {"host-a.example.net"});

  EXPECT_FALSE(peer.names(""));
  EXPECT_FALSE(peer.names("."));
  EXPECT_FALSE(peer.names("host"));
  EXPECT_FALSE(peer.names("host-a.example"));
  EXPECT_FALSE(certificateFor("").names(""));
}

TEST_F(PeerIdentityTest, FilesAPeerUnderItsCommonNameFirst) {
  EXPECT_EQ(certificateFor("host-a", {"alias"}).primaryName(), "host-a");
  EXPECT_EQ(certificateFor("", {"alias", "other"}).primaryName(), "alias");
  EXPECT_EQ(certificateFor("").primaryName(), "");
}

TEST_F(PeerIdentityTest, DescribesItsNamesForLogLines) {
  EXPECT_EQ(certificateFor("host-a", {"host-a", "host-a.example"}).describe(),
            "cn=host-a dns=host-a,host-a.example");
  EXPECT_EQ(certificateFor("host-a").describe(), "cn=host-a dns=-");
}

TEST_F(PeerIdentityTest, CanonicalNamesAreLowerCaseWithoutTheRootDot) {
  EXPECT_EQ(canonicalHostName("Host-A.Example."), "host-a.example");
}

}  // namespace
}  // namespace mseg::collector
