// RFC 5424 messages and RFC 6587 octet-counting frames: exact output and escaping.
#include "mseg/format/syslog.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "flow_records.hpp"
#include "mseg/format/cef.hpp"
#include "mseg/format/ocsf.hpp"

namespace mseg::format {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

class SyslogRenderTest : public ::testing::Test {};

TEST_F(SyslogRenderTest, RendersTheStartOfAnEgressFlowWithCefExactly) {
  auto record = testkit::makeEgressStart();

  std::string message = renderSyslog(record, Payload::kCef);

  EXPECT_EQ(message,
            "<134>1 2023-11-14T22:13:20.123456Z web-1.shop.example microseg - flow-start "
            "[microseg@32473 record_id=\"agent-7f3a:42\" agent_id=\"agent-7f3a\" "
            "sequence=\"42\" event=\"start\" verdict=\"allow\" direction=\"egress\" "
            "rule=\"shop/web-to-db\" policy_version=\"12\" "
            "community_id=\"1:HmRP5GoGeDHTRsAXVAJfkYVIook=\" workload=\"web\" "
            "peer=\"db-hosts\"] " +
                renderCef(record));
}

TEST_F(SyslogRenderTest, CarriesTheOcsfEventAsTheMessageOfAJsonPayload) {
  auto record = testkit::makeIngressDenied();
  SyslogOptions options;
  options.facility = SyslogFacility::kAuth;

  std::string message = renderSyslog(record, Payload::kJson, options);

  EXPECT_THAT(message, StartsWith("<36>1 2023-11-14T22:13:20.123456Z web-1.shop.example "
                                  "microseg - flow-denied [microseg@32473 "
                                  "record_id=\"agent-7f3a:44\" "));
  std::string ocsf = renderOcsf(record);
  ASSERT_GT(message.size(), ocsf.size());
  EXPECT_EQ(message.substr(message.size() - ocsf.size() - 2), "] " + ocsf);
}

TEST_F(SyslogRenderTest, TakesTheSeverityFromTheVerdict) {
  auto allowed = testkit::makeEgressStart();
  auto audited = testkit::makeAuditedUdpStart();
  auto denied = testkit::makeIngressDenied();
  SyslogOptions local4;
  local4.facility = SyslogFacility::kLocal4;

  EXPECT_THAT(renderSyslog(allowed, Payload::kCef), StartsWith("<134>1 "));
  EXPECT_THAT(renderSyslog(audited, Payload::kCef), StartsWith("<133>1 "));
  EXPECT_THAT(renderSyslog(denied, Payload::kCef), StartsWith("<132>1 "));
  EXPECT_THAT(renderSyslog(denied, Payload::kCef, local4), StartsWith("<164>1 "));
}

TEST_F(SyslogRenderTest, NamesEachEventInMsgId) {
  EXPECT_THAT(renderSyslog(testkit::makeEgressEnd(), Payload::kCef),
              HasSubstr(" microseg - flow-end [microseg@32473 "));
  EXPECT_THAT(renderSyslog(testkit::makeIngressDenied(), Payload::kCef),
              HasSubstr(" microseg - flow-denied [microseg@32473 "));
}

TEST_F(SyslogRenderTest, WritesNilValuesForAMissingHostTimeAndEvent) {
  auto record = testkit::makeEgressStart();
  record.clear_host();
  record.clear_time_unix_nano();
  record.clear_event();

  std::string message = renderSyslog(record, Payload::kCef);

  EXPECT_THAT(message, StartsWith("<134>1 - - microseg - - [microseg@32473 "));
}

TEST_F(SyslogRenderTest, PadsMicrosecondsAndDropsNanoseconds) {
  auto record = testkit::makeEgressStart();
  record.set_time_unix_nano(1'700'000'000'000'001'999);

  std::string message = renderSyslog(record, Payload::kCef);

  EXPECT_THAT(message, StartsWith("<134>1 2023-11-14T22:13:20.000001Z "));
}

TEST_F(SyslogRenderTest, ReplacesWhatAHostnameCannotHold) {
  auto record = testkit::makeEgressStart();
  record.set_host(
      "w\xc3\xa9"
      "b 1");

  std::string message = renderSyslog(record, Payload::kCef);

  EXPECT_THAT(message, StartsWith("<134>1 2023-11-14T22:13:20.123456Z w__b_1 microseg "));
}

TEST_F(SyslogRenderTest, EscapesQuoteBackslashAndBracketInParamValues) {
  auto record = testkit::makeEgressStart();
  record.set_rule("shop/\"odd\\rule]");

  std::string message = renderSyslog(record, Payload::kCef);

  EXPECT_EQ(escapeSdParamValue("a\"b\\c]d=e"), "a\\\"b\\\\c\\]d=e");
  EXPECT_THAT(message, HasSubstr(" rule=\"shop/\\\"odd\\\\rule\\]\" "));
}

TEST_F(SyslogRenderTest, LeavesOutEmptyParams) {
  auto record = testkit::makeEgressStart();
  record.clear_rule();
  record.clear_agent_id();

  std::string message = renderSyslog(record, Payload::kCef);

  EXPECT_THAT(message, HasSubstr("[microseg@32473 record_id=\"agent-7f3a:42\" sequence=\"42\" "));
  EXPECT_THAT(message, HasSubstr(" direction=\"egress\" policy_version=\"12\" "));
}

TEST_F(SyslogRenderTest, FramesByOctetsNotCharacters) {
  EXPECT_EQ(frameOctetCounted("h\xc3\xa9llo"), "6 h\xc3\xa9llo");
  EXPECT_EQ(frameOctetCounted("two\nlines"), "9 two\nlines");
  EXPECT_EQ(frameOctetCounted(""), "0 ");
}

TEST_F(SyslogRenderTest, FramesARenderedMessageWhole) {
  std::string message = renderSyslog(testkit::makeEgressStart(), Payload::kJson);

  std::string frame = frameOctetCounted(message);

  EXPECT_EQ(frame, std::to_string(message.size()) + " " + message);
}

TEST_F(SyslogRenderTest, ParsesFacilityNamesAsSyslogConfSpellsThem) {
  auto local4 = parseSyslogFacility("local4");
  auto authpriv = parseSyslogFacility("authpriv");
  auto upper = parseSyslogFacility("LOCAL4");

  ASSERT_TRUE(local4.ok());
  EXPECT_EQ(*local4, SyslogFacility::kLocal4);
  ASSERT_TRUE(authpriv.ok());
  EXPECT_EQ(static_cast<int>(*authpriv), 10);
  ASSERT_FALSE(upper.ok());
  EXPECT_EQ(upper.error().message(), "`LOCAL4` is not a syslog facility");
}

}  // namespace
}  // namespace mseg::format
