// The OCSF validator itself: it must accept the renderer's events and catch each kind of
// departure from the schema, or the rendering tests prove nothing.
#include "ocsf_schema.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "flow_records.hpp"
#include "mseg/format/ocsf.hpp"
#include "ocsf_fixture.hpp"

namespace mseg::format::testkit {
namespace {

using nlohmann::json;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

class OcsfValidatorTest : public OcsfSchemaFixture {
protected:
  // A valid event to spoil: the renderer's ended egress flow.
  static json makeValidEvent() { return json::parse(renderOcsf(makeEgressEnd())); }

  static std::vector<std::string> validate(const json& event) {
    return schema().validate(event, "network_activity");
  }
};

TEST_F(OcsfValidatorTest, AcceptsTheRenderersEvent) {
  EXPECT_THAT(validate(makeValidEvent()), IsEmpty());
}

TEST_F(OcsfValidatorTest, ReportsAMissingRequiredAttributeOfTheClass) {
  json event = makeValidEvent();
  event.erase("time");

  EXPECT_THAT(validate(event), ElementsAre("time: required by network_activity but missing"));
}

TEST_F(OcsfValidatorTest, ReportsAMissingRequiredAttributeOfANestedObject) {
  json event = makeValidEvent();
  event["metadata"]["product"].erase("vendor_name");

  EXPECT_THAT(validate(event),
              ElementsAre("metadata.product.vendor_name: required by product but missing"));
}

TEST_F(OcsfValidatorTest, ReportsAnAttributeTheObjectDoesNotDefine) {
  json event = makeValidEvent();
  event["src_endpoint"]["labels"] = json::array({"tier=web"});

  EXPECT_THAT(validate(event),
              ElementsAre("src_endpoint.labels: not an attribute of network_endpoint"));
}

TEST_F(OcsfValidatorTest, ReportsAValueOfTheWrongType) {
  json event = makeValidEvent();
  event["time"] = "yesterday";

  EXPECT_THAT(validate(event), ElementsAre("time: expected a 64-bit integer (timestamp_t), found "
                                           "\"yesterday\""));
}

TEST_F(OcsfValidatorTest, ReportsAnIntegerBeyond32Bits) {
  json event = makeValidEvent();
  event["duration"] = 3'000'000'000ull;

  EXPECT_THAT(validate(event),
              ElementsAre("duration: expected a 32-bit integer (integer_t), found 3000000000"));
}

TEST_F(OcsfValidatorTest, ReportsAnUndefinedEnumValue) {
  json event = makeValidEvent();
  event["connection_info"]["direction_id"] = 7;

  EXPECT_THAT(validate(event), ElementsAre("connection_info.direction_id: 7 is not a value of "
                                           "the enum"));
}

TEST_F(OcsfValidatorTest, ReportsAnActivityOutsideTheClassAndTheTypeUidThatFollows) {
  json event = makeValidEvent();
  event["activity_id"] = 7;

  EXPECT_THAT(validate(event), ElementsAre("activity_id: 7 is not a value of the enum",
                                           "type_uid: 400102 where the schema computes 400107"));
}

TEST_F(OcsfValidatorTest, ReportsACaptionThatContradictsItsId) {
  json event = makeValidEvent();
  event["disposition"] = "Blocked";

  EXPECT_THAT(validate(event), ElementsAre("disposition: \"Blocked\" is not `Allowed`, the caption "
                                           "of disposition_id 1"));
}

TEST_F(OcsfValidatorTest, ReportsAPortOutOfRange) {
  json event = makeValidEvent();
  event["dst_endpoint"]["port"] = 70000;

  EXPECT_THAT(validate(event),
              ElementsAre("dst_endpoint.port: 70000 is outside [0,65535] (port_t)"));
}

TEST_F(OcsfValidatorTest, ReportsAnIpAddressThatIsNotOne) {
  json event = makeValidEvent();
  event["src_endpoint"]["ip"] = "198.18.0.300";

  EXPECT_THAT(validate(event), ElementsAre("src_endpoint.ip: `198.18.0.300` does not match the "
                                           "pattern of ip_t"));
}

TEST_F(OcsfValidatorTest, ReportsAnEndpointWithNothingToIdentifyIt) {
  json event = makeValidEvent();
  event["dst_endpoint"] = {{"port", 5432}};

  EXPECT_THAT(validate(event), Contains(HasSubstr("dst_endpoint: network_endpoint wants "
                                                  "at_least_one of")));
}

TEST_F(OcsfValidatorTest, ReportsProfileAttributesWhenTheProfileIsNotClaimed) {
  json event = makeValidEvent();
  event["metadata"]["profiles"] = json::array({"host"});

  EXPECT_THAT(validate(event), Contains("action_id: belongs to profile `security_control`, which "
                                        "metadata.profiles does not claim"));
}

TEST_F(OcsfValidatorTest, RequiresTheAttributesOfAClaimedProfile) {
  json event = makeValidEvent();
  event["metadata"]["profiles"] = json::array({"host", "security_control", "cloud"});

  EXPECT_THAT(validate(event), Contains("cloud: required by network_activity but missing"));
}

TEST_F(OcsfValidatorTest, ReportsAClassUidOfAnotherClass) {
  json event = makeValidEvent();
  event["class_uid"] = 4002;
  event["type_uid"] = 400202;

  EXPECT_THAT(validate(event), ElementsAre("class_uid: 4002 where the schema computes 4001",
                                           "type_uid: 400202 where the schema computes 400102"));
}

TEST_F(OcsfValidatorTest, ReportsAnotherSchemaVersion) {
  json event = makeValidEvent();
  event["metadata"]["version"] = "1.3.0";

  EXPECT_THAT(validate(event),
              ElementsAre("metadata.version: \"1.3.0\" in a check against schema 1.1.0"));
}

TEST_F(OcsfValidatorTest, FailsToLoadASchemaThatIsNotThere) {
  auto schema = OcsfSchema::load("/nonexistent/ocsf", "/nonexistent/includes");

  ASSERT_FALSE(schema.ok());
  EXPECT_EQ(schema.error().message(),
            "load ocsf schema: open /nonexistent/ocsf/version.json: No such file or directory");
}

}  // namespace
}  // namespace mseg::format::testkit
