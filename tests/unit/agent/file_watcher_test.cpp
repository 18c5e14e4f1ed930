// The policy watcher: which changes of a policy file, a policy directory and symlinks to them
// reload the policy, and which do not. inotify queues an event within the system call that
// causes it, so each check reads what is pending right after the change, without waiting.
#include "file_watcher.hpp"

#include <gtest/gtest.h>
#include <poll.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace mseg::agent {
namespace {

namespace fs = std::filesystem;

class FileWatcherTest : public ::testing::Test {
protected:
  void SetUp() override {
    char pattern[] = "/tmp/mseg-watch-test.XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    root_ = pattern;
    fs::create_directories(root_ + "/etc/policy.d");
    fs::create_directories(root_ + "/srv/git");
  }

  void TearDown() override { fs::remove_all(root_); }

  std::string at(const std::string& relative) const { return root_ + "/" + relative; }

  // Written in place: open, write, close (a close after writing).
  void write(const std::string& relative, const std::string& text = "version: 1\n") {
    std::ofstream(at(relative)) << text;
  }

  // Written beside and renamed over, as configuration management and git do.
  void replace(const std::string& relative) {
    write(relative + ".tmp");
    fs::rename(at(relative + ".tmp"), at(relative));
  }

  // Whether the events pending now make the watcher report a change.
  static bool changedNow(FileWatcher& watcher) {
    pollfd pending{watcher.fd(), POLLIN, 0};
    return poll(&pending, 1, 0) == 1 && watcher.changed();
  }

  std::string root_;
};

TEST_F(FileWatcherTest, SeesAPolicyFileWrittenOrRenamedOverButNotItsNeighbours) {
  write("etc/policy.yaml");
  FileWatcher watcher;
  ASSERT_TRUE(watcher.start(at("etc/policy.yaml")).ok());

  write("etc/other.yaml");
  EXPECT_FALSE(changedNow(watcher));
  write("etc/policy.yaml");
  EXPECT_TRUE(changedNow(watcher));
  replace("etc/policy.yaml");
  EXPECT_TRUE(changedNow(watcher));
  fs::remove(at("etc/policy.yaml"));
  EXPECT_FALSE(changedNow(watcher));  // the last version keeps enforcing
}

TEST_F(FileWatcherTest, NoticesADeletedPolicyFileWithoutReloadingUntilItComesBack) {
  write("etc/policy.yaml");
  FileWatcher watcher;
  ASSERT_TRUE(watcher.start(at("etc/policy.yaml")).ok());

  fs::remove(at("etc/policy.yaml"));
  EXPECT_FALSE(changedNow(watcher));
  EXPECT_TRUE(watcher.policyGone());
  write("etc/policy.yaml");

  EXPECT_TRUE(changedNow(watcher));
  EXPECT_FALSE(watcher.policyGone());
}

TEST_F(FileWatcherTest, EditorsSaveOfASinglePolicyFileIsNotAFileGone) {
  write("etc/policy.yaml");
  FileWatcher watcher;
  ASSERT_TRUE(watcher.start(at("etc/policy.yaml")).ok());

  fs::rename(at("etc/policy.yaml"), at("etc/policy.yaml~"));
  write("etc/policy.yaml");

  EXPECT_TRUE(changedNow(watcher));
  EXPECT_FALSE(watcher.policyGone());
}

TEST_F(FileWatcherTest, SeesTheTargetOfASymlinkedPolicyFileChange) {
  write("srv/git/prod.yaml");
  fs::create_symlink(at("srv/git/prod.yaml"), at("etc/policy.yaml"));
  FileWatcher watcher;
  ASSERT_TRUE(watcher.start(at("etc/policy.yaml")).ok());

  write("srv/git/staging.yaml");
  EXPECT_FALSE(changedNow(watcher));
  write("srv/git/prod.yaml");
  EXPECT_TRUE(changedNow(watcher));
  replace("srv/git/prod.yaml");
  EXPECT_TRUE(changedNow(watcher));
}

TEST_F(FileWatcherTest, FollowsASymlinkPointedElsewhere) {
  write("srv/git/prod.yaml");
  write("srv/git/next.yaml");
  fs::create_symlink(at("srv/git/prod.yaml"), at("etc/policy.yaml"));
  FileWatcher watcher;
  ASSERT_TRUE(watcher.start(at("etc/policy.yaml")).ok());

  fs::create_symlink(at("srv/git/next.yaml"), at("etc/policy.yaml.new"));
  fs::rename(at("etc/policy.yaml.new"), at("etc/policy.yaml"));
  EXPECT_TRUE(changedNow(watcher));
  fs::remove(at("etc/policy.yaml"));
  fs::create_symlink(at("srv/git/prod.yaml"), at("etc/policy.yaml"));  // as `ln -sf` does
  EXPECT_TRUE(changedNow(watcher));
  write("srv/git/next.yaml");
  EXPECT_FALSE(changedNow(watcher));
  write("srv/git/prod.yaml");
  EXPECT_TRUE(changedNow(watcher));
}

TEST_F(FileWatcherTest, SeesPolicyFilesOfADirectoryComeChangeAndGo) {
  write("etc/policy.d/10-erp.yaml");
  FileWatcher watcher;
  ASSERT_TRUE(watcher.start(at("etc/policy.d")).ok());

  write("etc/policy.d/20-crm.yml");
  EXPECT_TRUE(changedNow(watcher));
  replace("etc/policy.d/10-erp.yaml");
  EXPECT_TRUE(changedNow(watcher));
  fs::rename(at("etc/policy.d/20-crm.yml"), at("srv/git/20-crm.yml"));
  EXPECT_TRUE(changedNow(watcher));
  fs::rename(at("srv/git/20-crm.yml"), at("etc/policy.d/20-crm.yml"));
  EXPECT_TRUE(changedNow(watcher));
  fs::remove(at("etc/policy.d/20-crm.yml"));
  EXPECT_TRUE(changedNow(watcher));
}

TEST_F(FileWatcherTest, IgnoresWhatIsNotAPolicyFileInTheDirectory) {
  write("etc/policy.d/10-erp.yaml");
  FileWatcher watcher;
  ASSERT_TRUE(watcher.start(at("etc/policy.d")).ok());

  write("etc/policy.d/10-erp.yaml~");
  write("etc/policy.d/.10-erp.yaml.swp");
  write("etc/policy.d/README");
  fs::remove(at("etc/policy.d/README"));
  std::ofstream being_written(at("etc/policy.d/30-new.yaml"));
  being_written << "version: 1\n" << std::flush;

  EXPECT_FALSE(changedNow(watcher));
}

TEST_F(FileWatcherTest, TakesAnEditorsSaveForOneChange) {
  write("etc/policy.d/10-erp.yaml");
  FileWatcher watcher;
  ASSERT_TRUE(watcher.start(at("etc/policy.d")).ok());

  // vim without backupcopy: the old file becomes the backup, then the new one is written.
  fs::rename(at("etc/policy.d/10-erp.yaml"), at("etc/policy.d/10-erp.yaml~"));
  write("etc/policy.d/10-erp.yaml");

  EXPECT_TRUE(changedNow(watcher));
  EXPECT_FALSE(changedNow(watcher));
}

TEST_F(FileWatcherTest, SeesTheTargetOfASymlinkInTheDirectoryChange) {
  write("etc/policy.d/10-erp.yaml");
  write("srv/git/20-crm.yaml");
  fs::create_symlink(at("srv/git/20-crm.yaml"), at("etc/policy.d/20-crm.yaml"));
  FileWatcher watcher;
  ASSERT_TRUE(watcher.start(at("etc/policy.d")).ok());

  write("srv/git/20-crm.yaml");

  EXPECT_TRUE(changedNow(watcher));
}

TEST_F(FileWatcherTest, FollowsADirectorySymlinkSwappedToAnotherRelease) {
  fs::create_directories(at("srv/release-1"));
  fs::create_directories(at("srv/release-2"));
  write("srv/release-1/10-erp.yaml");
  write("srv/release-2/10-erp.yaml");
  fs::create_symlink(at("srv/release-1"), at("etc/current"));
  FileWatcher watcher;
  ASSERT_TRUE(watcher.start(at("etc/current")).ok());

  fs::create_symlink(at("srv/release-2"), at("etc/current.new"));
  fs::rename(at("etc/current.new"), at("etc/current"));
  EXPECT_TRUE(changedNow(watcher));
  write("srv/release-1/10-erp.yaml");
  EXPECT_FALSE(changedNow(watcher));
  write("srv/release-2/10-erp.yaml");
  EXPECT_TRUE(changedNow(watcher));
}

}  // namespace
}  // namespace mseg::agent
