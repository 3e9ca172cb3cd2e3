#include "core/config.h"

#include <cstdlib>

#include "absl/flags/flag.h"
#include "gtest/gtest.h"

ABSL_FLAG(int, sb_test_port, 1, "test flag");
ABSL_FLAG(std::string, sb_test_name, "default", "test flag");

namespace sb {
namespace {

TEST(ConfigTest, EnvironmentSetsFlagsAndCommandLineWins) {
  EXPECT_EQ(EnvNameForFlag("sb_test_port"), "SWITCHBOARD_SB_TEST_PORT");
  setenv("SWITCHBOARD_SB_TEST_PORT", "7000", 1);
  setenv("SWITCHBOARD_SB_TEST_NAME", "from-env", 1);
  std::string a0 = "prog", a1 = "--sb_test_name=from-flag", a2 = "positional";
  char* argv[] = {a0.data(), a1.data(), a2.data()};
  const auto rest = ParseConfig(3, argv);
  EXPECT_EQ(absl::GetFlag(FLAGS_sb_test_port), 7000);
  EXPECT_EQ(absl::GetFlag(FLAGS_sb_test_name), "from-flag");
  ASSERT_EQ(rest.size(), 2u);  // argv[0] and the positional argument
  EXPECT_EQ(rest[1], "positional");
}

}  // namespace
}  // namespace sb
