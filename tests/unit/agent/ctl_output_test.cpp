// What microsegctl's tables show of text that a workload controls: its command name, its
// cgroup's name. None of it may reach the terminal as a control sequence.
#include "ctl_output.hpp"

#include <gtest/gtest.h>

#include <string>

#include "mseg/utf8.hpp"

namespace mseg::ctl {
namespace {

namespace tv1 = microseg::telemetry::v1;

// Whether `text` holds a byte a terminal would act on: C0 controls but the newline, DEL, and
// the UTF-8 form of C1 controls (U+0080 to U+009F).
bool holdsControl(const std::string& text) {
  for (size_t i = 0; i < text.size(); i++) {
    const auto c = static_cast<unsigned char>(text[i]);
    if ((c < 0x20 && c != '\n') || c == 0x7f) {
      return true;
    }
    if (c == 0xc2 && i + 1 < text.size() && static_cast<unsigned char>(text[i + 1]) <= 0x9f) {
      return true;
    }
  }
  return false;
}

TEST(PrintableTest, KeepsPlainAndUtf8TextAsItIs) {
  EXPECT_EQ(printable("system.slice/postgresql.service"), "system.slice/postgresql.service");
  EXPECT_EQ(printable("büro-straße 東京"), "büro-straße 東京");
  // systemd escapes unit names with a backslash; they must read as the unit's name.
  EXPECT_EQ(printable("system-systemd\\x2dfsck.slice"), "system-systemd\\x2dfsck.slice");
}

TEST(PrintableTest, EscapesEveryControlByte) {
  EXPECT_EQ(printable("\x1b[2J\x1b[31mX\r"), "\\x1b[2J\\x1b[31mX\\x0d");
  EXPECT_EQ(printable("a\nb\tc\x7f"), "a\\x0ab\\x09c\\x7f");
  EXPECT_EQ(printable(std::string("nul\0end", 7)), "nul\\x00end");
}

TEST(PrintableTest, KeepsNewlinesOnlyWhenAsked) {
  EXPECT_EQ(printable("line 1\nline\x1b 2\n", true), "line 1\nline\\x1b 2\n");
}

TEST(PrintableTest, EscapesC1ControlsInvalidUtf8AndInvisibleFormatting) {
  const std::string csi = "\xc2\x9b";  // CSI as one character, like ESC [
  const std::string lone_csi = "\x9b";
  const std::string zero_width_space = "\xe2\x80\x8b";

  EXPECT_EQ(printable(csi + "31m"), "\\xc2\\x9b31m");
  EXPECT_EQ(printable(lone_csi + "31m"), "\\x9b31m");
  EXPECT_EQ(printable("ab\xff\xc3"), "ab\\xff\\xc3");       // invalid and cut short
  EXPECT_EQ(printable("\xc0\xaf"), "\\xc0\\xaf");           // overlong '/'
  EXPECT_EQ(printable("\xed\xa0\x80"), "\\xed\\xa0\\x80");  // a surrogate
  EXPECT_EQ(printable("evil\xe2\x80\xaetxt.exe"), "evil\\xe2\\x80\\xaetxt.exe");  // RLO
  EXPECT_EQ(printable("a" + zero_width_space + "b"), "a\\xe2\\x80\\x8bb");
}

TEST(ValidUtf8Test, WritesBytesThatAreNotUtf8AsHexAndKeepsTheRest) {
  const std::string cut_short = "\xc3";

  EXPECT_EQ(validUtf8("büro\x1b[31m"), "büro\x1b[31m");
  EXPECT_EQ(validUtf8("a\xff" + std::string("b") + cut_short), "a\\xffb\\xc3");
  EXPECT_EQ(validUtf8("\xf4\x90\x80\x80"), "\\xf4\\x90\\x80\\x80");  // past U+10FFFF
  EXPECT_EQ(validUtf8("\xf0\x9f\x98\x80"), "\xf0\x9f\x98\x80");      // an emoji
}

TEST(PrintableTest, TableCellsAreEscapedAndCannotForgeALine) {
  Table table({"CGROUP", "WORKLOAD"});
  table.add({"user.slice/evil\x1b[31mRED\x1b[0m\rsystem.slice-fake.service", "-"});
  table.add({"user.slice/two\nsystem.slice/erp-db.service  erp-db", "-"});

  const std::string text = table.render();

  EXPECT_FALSE(holdsControl(text)) << text;
  EXPECT_NE(text.find("user.slice/evil\\x1b[31mRED\\x1b[0m\\x0dsystem.slice-fake.service"),
            std::string::npos)
      << text;
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 3) << text;
}

TEST(PrintableTest, FlowLineEscapesTheCommandName) {
  FlowRecord record;
  record.set_event(tv1::FLOW_EVENT_START);
  record.set_verdict(tv1::VERDICT_ALLOW);
  record.set_direction(tv1::DIRECTION_EGRESS);
  record.set_protocol(6);
  record.set_peer_address(std::string("\xc6\x12\x00\x0a", 4));
  record.set_peer_port(5432);
  record.mutable_workload()->set_name("erp-app");
  record.mutable_workload()->set_pid(18830);
  record.mutable_workload()->set_command("\x1b[2J\x1b[31mX\r");

  const std::string line = renderFlow(record);

  EXPECT_FALSE(holdsControl(line)) << line;
  EXPECT_NE(line.find("pid 18830 \\x1b[2J\\x1b[31mX\\x0d\n"), std::string::npos) << line;
}

TEST(PrintableTest, WorkloadsListEscapesCgroupNamesSelectedOrNot) {
  cv1::WorkloadList list;
  list.set_attach_cgroup("/sys/fs/cgroup/microseg-lab");
  auto* workload = list.add_workloads();
  workload->set_name("erp-app");
  workload->set_egress("enforce");
  workload->set_ingress("enforce");
  auto* selected = list.add_cgroups();
  selected->set_cgroup("system.slice/erp-app.service/\x1b]0;title\x07");
  selected->set_workload("erp-app");
  selected->set_inherited(true);
  list.add_cgroups()->set_cgroup("user.slice/evil\x1b[31mRED\r");

  const std::string text = renderWorkloads(list);

  EXPECT_FALSE(holdsControl(text)) << text;
  EXPECT_NE(text.find("system.slice/erp-app.service/\\x1b]0;title\\x07"), std::string::npos)
      << text;
  EXPECT_NE(text.find("\nuser.slice/evil\\x1b[31mRED\\x0d\n"), std::string::npos) << text;
}

TEST(PrintableTest, StatusTraceAndDiffEscapeWhatTheyQuote) {
  cv1::AgentStatus status;
  status.set_policy_file("/etc/microseg/\x1b[8mpolicy.yaml");
  status.set_last_error("cannot label changed cgroups: cgroup a\rb");
  cv1::Trace trace;
  trace.set_workload("erp-app");
  trace.set_direction("egress");
  trace.set_protocol("tcp");
  trace.add_workload_cgroups("system.slice/\x1b[1Merp-app.service");
  cv1::PolicyDiff diff;

  const std::string text =
      renderStatus(status) + renderTrace(trace) + renderDiff(diff, "next\x1b[2K.yaml");

  EXPECT_FALSE(holdsControl(text)) << text;
  EXPECT_NE(text.find("policy         /etc/microseg/\\x1b[8mpolicy.yaml\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("cgroups    system.slice/\\x1b[1Merp-app.service\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("-> next\\x1b[2K.yaml"), std::string::npos) << text;
}

}  // namespace
}  // namespace mseg::ctl
