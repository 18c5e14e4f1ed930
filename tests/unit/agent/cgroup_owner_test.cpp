// The attach types an agent queries for another agent's programs on its cgroup must cover
// every program of the datapath: a program of a type not queried would attach unnoticed.
#include <bpf/libbpf.h>

#include <algorithm>

#include <gtest/gtest.h>

#include "cgroup_owner.hpp"
#include "microseg.skel.h"

namespace mseg::agent {
namespace {

TEST(CgroupOwnerTest, QueriesTheAttachTypeOfEveryDatapathProgram) {
  mseg_skel* skeleton = mseg_skel__open();
  ASSERT_NE(skeleton, nullptr);

  bpf_program* program = nullptr;
  size_t programs = 0;
  bpf_object__for_each_program(program, skeleton->obj) {
    const bpf_attach_type type = bpf_program__expected_attach_type(program);
    EXPECT_NE(std::find(kMicrosegAttachTypes.begin(), kMicrosegAttachTypes.end(), type),
              kMicrosegAttachTypes.end())
        << bpf_program__name(program) << " attaches with a type that is not queried";
    programs += 1;
  }
  mseg_skel__destroy(skeleton);

  EXPECT_EQ(programs, kMicrosegAttachTypes.size());
}

}  // namespace
}  // namespace mseg::agent
