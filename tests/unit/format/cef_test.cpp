// CEF rendering: exact lines for known records, and the escaping rules of header and extension.
#include "mseg/format/cef.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "flow_records.hpp"
#include "mseg/format/product.hpp"

namespace mseg::format {
namespace {

using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

class CefRenderTest : public ::testing::Test {
protected:
  static std::string header(std::string_view rest) {
    return "CEF:0|microseg|microseg|" + std::string(productVersion()) + "|" + std::string(rest);
  }
};

TEST_F(CefRenderTest, RendersTheStartOfAnEgressFlowExactly) {
  std::string line = renderCef(testkit::makeEgressStart());

  EXPECT_EQ(line,
            header("flow-start|flow started|1|") +
                "rt=1700000000123 start=1700000000123 act=allow deviceDirection=1 proto=TCP "
                "src=198.18.0.10 spt=43512 dst=198.18.0.20 dpt=5432 shost=web-1.shop.example "
                "spid=3170 sproc=gunicorn suid=1000 cs1=shop/web-to-db cs1Label=Rule cs2=12 "
                "cs2Label=Policy Version cs3=1:HmRP5GoGeDHTRsAXVAJfkYVIook\\= cs3Label=Community "
                "ID cs4=app\\=shop,tier\\=web cs4Label=Workload Labels cs5=app\\=shop,tier\\=db "
                "cs5Label=Peer Labels cs6=sha256:5d41402abc4b2a76 cs6Label=Policy Hash "
                "flexString1=web flexString1Label=Workload flexString2=db-hosts "
                "flexString2Label=Peer dvchost=web-1.shop.example deviceExternalId=agent-7f3a "
                "externalId=agent-7f3a:42");
}

TEST_F(CefRenderTest, RendersAnIpv6IngressDenialExactly) {
  std::string line = renderCef(testkit::makeIngressDenied());

  EXPECT_EQ(line,
            header("flow-denied|flow denied|5|") +
                "rt=1700000000123 start=1699999998123 end=1700000000123 act=deny "
                "deviceDirection=0 proto=TCP c6a2=fd00::80 c6a2Label=Source IPv6 Address "
                "spt=50122 c6a3=fd00::10 c6a3Label=Destination IPv6 Address dpt=22 "
                "dhost=web-1.shop.example cnt=3 cs1=(default deny) cs1Label=Rule cs2=12 "
                "cs2Label=Policy Version cs3=1:9h6blIytlSs3XW8Ege+dxgzH/O4\\= cs3Label=Community "
                "ID cs4=app\\=shop,tier\\=web cs4Label=Workload Labels cs5=zone\\=office "
                "cs5Label=Peer Labels cs6=sha256:5d41402abc4b2a76 cs6Label=Policy Hash "
                "flexString1=web flexString1Label=Workload flexString2=office "
                "flexString2Label=Peer dvchost=web-1.shop.example deviceExternalId=agent-7f3a "
                "externalId=agent-7f3a:44");
}

TEST_F(CefRenderTest, CountsBytesInFromSourceToDestinationAsCefDefinesThem) {
  auto ingress = testkit::makeEgressEnd();
  ingress.set_direction(testkit::telemetry::DIRECTION_INGRESS);

  std::string egress_line = renderCef(testkit::makeEgressEnd());
  std::string ingress_line = renderCef(ingress);

  EXPECT_THAT(egress_line, StartsWith(header("flow-end|flow ended|1|")));
  EXPECT_THAT(egress_line, HasSubstr(" end=1700000090623 "));
  EXPECT_THAT(egress_line, HasSubstr(" in=1200 out=48000 "));
  EXPECT_THAT(ingress_line, HasSubstr(" in=48000 out=1200 ")) << "the peer was the source";
  EXPECT_THAT(ingress_line, HasSubstr(" src=198.18.0.20 spt=5432 dst=198.18.0.10 dpt=43512 "));
}

TEST_F(CefRenderTest, SaysInTheNameThatAnAuditedFlowWouldBeDenied) {
  std::string line = renderCef(testkit::makeAuditedUdpStart());

  EXPECT_THAT(line, StartsWith(header("flow-start|flow started (audit, policy would deny)|3|")));
  EXPECT_THAT(line, HasSubstr(" act=audit "));
  EXPECT_THAT(line, HasSubstr(" proto=UDP "));
  EXPECT_THAT(line, Not(HasSubstr("cs5=")))
      << "a peer without labels leaves cs5 out rather than empty";
}

TEST_F(CefRenderTest, GivesIcmpTypeAndCodeAsLabelledNumbersInsteadOfPorts) {
  std::string v4 = renderCef(testkit::makeIcmpEchoStart());
  std::string v6 = renderCef(testkit::makeIcmpv6IngressDenied());

  EXPECT_THAT(v4, HasSubstr(" proto=ICMP src=198.18.0.10 dst=198.18.0.20 cn1=8 cn1Label=ICMP "
                            "Type cn2=0 cn2Label=ICMP Code "));
  EXPECT_THAT(v4, Not(HasSubstr("spt=")));
  EXPECT_THAT(v6, HasSubstr(" proto=IPv6-ICMP c6a2=fd00::80 "));
  EXPECT_THAT(v6, HasSubstr(" cn1=128 cn1Label=ICMP Type "));
}

TEST_F(CefRenderTest, EscapesBackslashAndPipeInAHeaderField) {
  EXPECT_EQ(escapeCefHeader("a|b\\c"), "a\\|b\\\\c");
  EXPECT_EQ(escapeCefHeader("two\r\nlines"), "two  lines");
  EXPECT_EQ(escapeCefHeader("a=b"), "a=b");
}

TEST_F(CefRenderTest, EscapesBackslashEqualsAndLineBreaksInAValue) {
  EXPECT_EQ(escapeCefValue("a=b\\c"), "a\\=b\\\\c");
  EXPECT_EQ(escapeCefValue("one\ntwo\rthree"), "one\\ntwo\\rthree");
  EXPECT_EQ(escapeCefValue("a|b"), "a|b");
}

TEST_F(CefRenderTest, EscapesWhatARecordCarriesIntoTheExtension) {
  auto record = testkit::makeEgressStart();
  record.set_rule("shop/a=b\\c");
  record.mutable_workload()->set_command("evil\nact=deny");

  std::string line = renderCef(record);

  EXPECT_THAT(line, HasSubstr(" cs1=shop/a\\=b\\\\c cs1Label=Rule "));
  EXPECT_THAT(line, HasSubstr(" sproc=evil\\nact\\=deny "));
  EXPECT_EQ(line.find('\n'), std::string::npos);
  EXPECT_THAT(line, EndsWith("externalId=agent-7f3a:42"));
}

TEST_F(CefRenderTest, LeavesOutTheProcessWhenTheFlowHasNoTask) {
  auto record = testkit::makeEgressStart();
  record.mutable_workload()->set_pid(0);

  std::string line = renderCef(record);

  EXPECT_THAT(line, Not(HasSubstr("spid=")));
  EXPECT_THAT(line, Not(HasSubstr("suid=")));
  EXPECT_THAT(line, HasSubstr(" shost=web-1.shop.example "));
}

}  // namespace
}  // namespace mseg::format
