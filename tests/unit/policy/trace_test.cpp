// tracePath(): the verdict and deciding rule for one connection, as `policy trace` reports it.
#include <gtest/gtest.h>

#include <string>

#include "mseg/policy/compiler.hpp"
#include "mseg/policy/trace.hpp"

namespace mseg::policy {
namespace {

class TraceTest : public ::testing::Test {
protected:
  void SetUp() override {
    Diagnostics out;
    auto compiled = loadPolicyFile(std::string(MSEG_EXAMPLES_DIR) + "/erp-crm.yaml", out);
    ASSERT_TRUE(compiled.ok()) << out.format();
    example_ = std::move(compiled).value();
  }

  Result<TraceResult> trace(std::string from, std::string to, Protocol protocol,
                            std::optional<uint16_t> port) const {
    return tracePath(example_, {std::move(from), std::move(to), protocol, port});
  }

  CompiledPolicy example_;
};

TEST_F(TraceTest, FromAWorkloadToAnAddressIsItsEgress) {
  auto traced = trace("erp-app", "198.18.0.10", Protocol::Tcp, 5432);

  ASSERT_TRUE(traced.ok()) << traced.error().message();
  EXPECT_EQ(traced->direction, Direction::Egress);
  EXPECT_EQ(traced->peer, "erp-db-hosts");
  EXPECT_EQ(traced->decision.verdict, Verdict::Allow);
  EXPECT_EQ(traced->rule, "erp-core/app-to-db");
  EXPECT_NE(traced->rule_location.find("erp-crm.yaml:"), std::string::npos);
}

TEST_F(TraceTest, FromAnAddressToAWorkloadIsItsIngress) {
  auto traced = trace("fd00:6d73::30", "erp-db", Protocol::Tcp, 5432);

  ASSERT_TRUE(traced.ok()) << traced.error().message();
  EXPECT_EQ(traced->direction, Direction::Ingress);
  EXPECT_EQ(traced->peer, "crm-web-hosts");
  EXPECT_EQ(traced->decision.verdict, Verdict::Deny);
  EXPECT_EQ(traced->rule, "erp-core/no-web-to-db");
}

TEST_F(TraceTest, UnlistedPortIsTheDefaultDeny) {
  auto traced = trace("erp-app", "198.18.0.10", Protocol::Tcp, 5433);

  ASSERT_TRUE(traced.ok());
  EXPECT_EQ(traced->decision.verdict, Verdict::Deny);
  EXPECT_EQ(traced->rule, "(default deny)");
}

TEST_F(TraceTest, IcmpToAnIpv6AddressTracesAnIcmpv6EchoRequest) {
  auto traced = trace("fd00:6d73::50", "crm-web", Protocol::Icmp, std::nullopt);

  ASSERT_TRUE(traced.ok()) << traced.error().message();
  EXPECT_EQ(traced->protocol, Protocol::Icmpv6);
  EXPECT_EQ(traced->port, 128);
  EXPECT_EQ(traced->rule, "management/mgmt-ping6");
}

TEST_F(TraceTest, UnmanagedDirectionHasNoRule) {
  auto traced = trace("erp-db", "192.0.2.1", Protocol::Tcp, 443);

  ASSERT_TRUE(traced.ok());
  EXPECT_EQ(traced->decision.verdict, Verdict::None);
  EXPECT_EQ(traced->peer, "world");
  EXPECT_TRUE(traced->rule.empty());
}

TEST_F(TraceTest, UnknownWorkloadListsTheKnownOnes) {
  auto traced = trace("erp-ap", "198.18.0.10", Protocol::Tcp, 5432);

  ASSERT_FALSE(traced.ok());
  EXPECT_EQ(traced.error().code(), ENOENT);
  EXPECT_EQ(traced.error().message(),
            "unknown workload `erp-ap`: the running policy defines erp-db, erp-app, crm-web, "
            "erp-sync; or give an IP address");
}

TEST_F(TraceTest, TwoWorkloadsAskForAnAddressAndSuggestOne) {
  auto traced = trace("erp-app", "erp-db", Protocol::Tcp, 5432);

  ASSERT_FALSE(traced.ok());
  EXPECT_NE(traced.error().message().find("give one end as an address"), std::string::npos);
  EXPECT_NE(traced.error().message().find("`erp-db-hosts`"), std::string::npos);
  EXPECT_NE(traced.error().message().find("198.18.0.10/32"), std::string::npos);
}

TEST_F(TraceTest, TwoAddressesNameNoWorkload) {
  auto traced = trace("198.18.0.20", "198.18.0.10", Protocol::Tcp, 5432);

  ASSERT_FALSE(traced.ok());
  EXPECT_NE(traced.error().message().find("neither"), std::string::npos);
}

TEST_F(TraceTest, TcpWithoutAPortIsRefused) {
  auto traced = trace("erp-app", "198.18.0.10", Protocol::Tcp, std::nullopt);

  ASSERT_FALSE(traced.ok());
  EXPECT_EQ(traced.error().message(), "--port is required for tcp and udp");
}

}  // namespace
}  // namespace mseg::policy
