// Addresses and CIDRs in the IPv4-mapped IPv6 space.
#include "mseg/policy/address.hpp"

#include <gtest/gtest.h>

namespace mseg::policy {
namespace {

class AddressTest : public ::testing::Test {};

TEST_F(AddressTest, StoresIpv4IpV4Mapped) {
  auto address = parseAddress("198.18.0.10");

  ASSERT_TRUE(address.ok());
  Address expected = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 0, 10};
  EXPECT_EQ(*address, expected);
  EXPECT_TRUE(isIpv4Mapped(*address));
  EXPECT_EQ(formatAddress(*address), "198.18.0.10");
}

TEST_F(AddressTest, ParsesIpv6) {
  auto address = parseAddress("fd00:6d73::10");

  ASSERT_TRUE(address.ok());
  EXPECT_FALSE(isIpv4Mapped(*address));
  EXPECT_EQ((*address)[0], 0xfd);
  EXPECT_EQ((*address)[15], 0x10);
  EXPECT_EQ(formatAddress(*address), "fd00:6d73::10");
}

TEST_F(AddressTest, RejectsSomethingElse) {
  auto address = parseAddress("198.18.0");

  ASSERT_FALSE(address.ok());
  EXPECT_EQ(address.error().message(), "`198.18.0` is not an IP address");
}

TEST_F(AddressTest, ReadsABareAddressAsAHostPrefix) {
  auto v4 = parseCidr("198.18.0.10");
  auto v6 = parseCidr("fd00::1");

  ASSERT_TRUE(v4.ok());
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v4->prefix_len, 128);
  EXPECT_EQ(v6->prefix_len, 128);
  EXPECT_EQ(formatCidr(*v4), "198.18.0.10/32");
}

TEST_F(AddressTest, ShiftsIpv4PrefixesIntoTheMappedBlock) {
  auto cidr = parseCidr("198.18.0.128/25");

  ASSERT_TRUE(cidr.ok());
  EXPECT_EQ(cidr->prefix_len, 96 + 25);
  EXPECT_EQ(formatCidr(*cidr), "198.18.0.128/25");
  EXPECT_TRUE(cidrContains(*cidr, *parseAddress("198.18.0.255")));
  EXPECT_FALSE(cidrContains(*cidr, *parseAddress("198.18.0.127")));
}

TEST_F(AddressTest, NamesTheNetworkWhenHostBitsAreSet) {
  auto v4 = parseCidr("198.18.0.1/24");
  auto v6 = parseCidr("fd00:6d73::8001/113");

  ASSERT_FALSE(v4.ok());
  EXPECT_EQ(v4.error().message(),
            "CIDR `198.18.0.1/24` has host bits set; the network is 198.18.0.0/24");
  ASSERT_FALSE(v6.ok());
  EXPECT_EQ(v6.error().message(),
            "CIDR `fd00:6d73::8001/113` has host bits set; the network is fd00:6d73::8000/113");
}

TEST_F(AddressTest, RejectsPrefixLengthsOutOfRange) {
  EXPECT_FALSE(parseCidr("10.0.0.0/33").ok());
  EXPECT_FALSE(parseCidr("fd00::/129").ok());
  EXPECT_FALSE(parseCidr("10.0.0.0/").ok());
  EXPECT_FALSE(parseCidr("10.0.0.0/-1").ok());
  EXPECT_TRUE(parseCidr("0.0.0.0/0").ok());
  EXPECT_TRUE(parseCidr("::/0").ok());
}

}  // namespace
}  // namespace mseg::policy
