// The per-agent sequence store: durable marks, one file per agent, never outside its directory.
#include "mseg/collector/sequence_store.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>

#include "collector_testing.hpp"

namespace mseg::collector {
namespace {

using ::testing::HasSubstr;
using testing::TempDir;

class SequenceStoreTest : public ::testing::Test {
protected:
  void SetUp() override { ASSERT_FALSE(dir_.path().empty()); }

  SequenceStore open() {
    auto store = SequenceStore::open(dir_ / "state");
    EXPECT_TRUE(store.ok()) << store.error().message();
    return std::move(store).value();
  }

  TempDir dir_;
};

TEST_F(SequenceStoreTest, ReturnsAZeroMarkForAnAgentNeverStored) {
  auto store = open();

  auto mark = store.load("host-a");

  ASSERT_TRUE(mark.ok()) << mark.error().message();
  EXPECT_EQ(*mark, AgentMark{});
}

TEST_F(SequenceStoreTest, KeepsTheMarkForTheNextCollectorInstance) {
  ASSERT_TRUE(open().save("host-a", {42, 7}).ok());

  auto mark = open().load("host-a");

  ASSERT_TRUE(mark.ok()) << mark.error().message();
  EXPECT_EQ(*mark, (AgentMark{42, 7}));
}

TEST_F(SequenceStoreTest, ReplacesTheMarkWithoutLeavingATemporaryFile) {
  auto store = open();
  ASSERT_TRUE(store.save("host-a", {1, 0}).ok());

  ASSERT_TRUE(store.save("host-a", {9, 0}).ok());

  EXPECT_EQ(store.load("host-a")->sequence, 9u);
  size_t files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(store.dir())) {
    EXPECT_EQ(entry.path().extension(), ".state") << entry.path();
    ++files;
  }
  EXPECT_EQ(files, 1u);
}

TEST_F(SequenceStoreTest, FilesAgentIdsAsHostNamesCompare) {
  auto store = open();
  ASSERT_TRUE(store.save("Host-A.", {5, 0}).ok());

  auto mark = store.load("host-a");

  ASSERT_TRUE(mark.ok());
  EXPECT_EQ(mark->sequence, 5u);
  EXPECT_EQ(store.pathFor("HOST-A"), store.dir() / "agent-host-a.state");
}

TEST_F(SequenceStoreTest, KeepsEveryAgentIdInsideTheStateDirectory) {
  auto store = open();

  auto path = store.pathFor("../../etc/passwd");

  EXPECT_EQ(path.parent_path(), store.dir());
  EXPECT_EQ(path.filename(), "agent-..%2F..%2Fetc%2Fpasswd.state");
  ASSERT_TRUE(store.save("../../etc/passwd", {3, 0}).ok());
  EXPECT_EQ(store.load("../../etc/passwd")->sequence, 3u);
}

TEST_F(SequenceStoreTest, RefusesAMalformedStateFileNamingIt) {
  auto store = open();
  std::ofstream(store.pathFor("host-a")) << "# microseg-collector agent state v1\nsequence x12\n";

  auto mark = store.load("host-a");

  ASSERT_FALSE(mark.ok());
  EXPECT_EQ(mark.error().code(), EBADMSG);
  EXPECT_THAT(mark.error().message(), HasSubstr("agent-host-a.state:2: malformed `sequence`"));
}

TEST_F(SequenceStoreTest, RefusesAStateFileWithoutASequence) {
  auto store = open();
  std::ofstream(store.pathFor("host-a")) << "dropped_total 3\n";

  auto mark = store.load("host-a");

  ASSERT_FALSE(mark.ok());
  EXPECT_THAT(mark.error().message(), HasSubstr("no `sequence` line"));
}

TEST_F(SequenceStoreTest, CreatesItsDirectoryForTheOwnerOnly) {
  auto store = open();

  struct stat info {};
  ASSERT_EQ(stat(store.dir().c_str(), &info), 0);

  EXPECT_EQ(info.st_mode & 0777, 0700u);
}

}  // namespace
}  // namespace mseg::collector
