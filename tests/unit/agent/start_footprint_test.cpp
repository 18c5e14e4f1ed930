// A failed start removes what it created and nothing else: what was there before it began
// (a previous agent's pins, an operator's state directory) stays.
#include "start_footprint.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace mseg::agent {
namespace {

namespace fs = std::filesystem;

class StartFootprintTest : public ::testing::Test {
protected:
  void TearDown() override { fs::remove_all(root_); }

  static void touch(const fs::path& path) {
    fs::create_directories(path.parent_path());
    std::ofstream(path) << "x";
  }

  fs::path root_ = fs::temp_directory_path() / ("mseg-footprint-test-" + std::to_string(getpid()));
};

TEST_F(StartFootprintTest, RemovesCreatedPinsLinksFirstAndKeepsThoseThereBefore) {
  const fs::path pins = root_ / "pins";
  touch(pins / "mseg_cfg_v2");
  touch(pins / "link_mseg_connect4");
  const auto before = StartFootprint::take(pins, {});
  touch(pins / "mseg_flow_v2");
  touch(pins / "link_mseg_sockops");

  auto removed = before.removeCreatedPins();

  EXPECT_EQ(removed, (std::vector<std::string>{"link_mseg_sockops", "mseg_flow_v2"}));
  EXPECT_TRUE(fs::exists(pins / "mseg_cfg_v2"));
  EXPECT_TRUE(fs::exists(pins / "link_mseg_connect4"));
}

TEST_F(StartFootprintTest, RemovesAPinDirectoryAndTheParentsItCreated) {
  fs::create_directories(root_);
  const fs::path pins = root_ / "a" / "b" / "pins";
  const auto before = StartFootprint::take(pins, {});
  touch(pins / "mseg_cfg_v2");

  (void)before.removeCreatedPins();

  EXPECT_FALSE(fs::exists(root_ / "a"));
  EXPECT_TRUE(fs::exists(root_));
}

TEST_F(StartFootprintTest, RemovesCreatedFilesAndDirectoriesButNotOnesThatExisted) {
  const fs::path state = root_ / "state";
  touch(state / "status.json");
  const fs::path new_state = root_ / "new" / "state";
  const auto before = StartFootprint::take(
      root_ / "pins", {state / "flows.ocsf.jsonl", state / "spool", state, new_state});
  touch(state / "flows.ocsf.jsonl");
  touch(state / "spool" / "state");
  touch(new_state / "flows.ocsf.jsonl");

  (void)before.removeCreatedPaths();

  EXPECT_FALSE(fs::exists(state / "flows.ocsf.jsonl"));
  EXPECT_FALSE(fs::exists(state / "spool"));
  EXPECT_TRUE(fs::exists(state / "status.json"));
  EXPECT_FALSE(fs::exists(root_ / "new"));
}

}  // namespace
}  // namespace mseg::agent
