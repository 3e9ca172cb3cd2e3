// Billing end to end (issue 13): prices set with sbadmin are what the
// cluster's requests cost in the ledger.
#include <string>
#include <vector>

#include "e2e/e2e_helpers.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "support/process.h"

namespace sb::testing {
namespace {

using json = nlohmann::json;

// Runs sbadmin against the cluster's database; its exit code and output.
int Sbadmin(const std::vector<std::string>& args, std::string* out) {
  std::vector<std::string> argv = {Infra::BuildDir() + "/tools/sbadmin",
                                   "--pg=" + g_cluster->infra().pg_uri()};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv, out);
}

TEST(PricingE2eTest, ARequestCostsWhatItsModelsPriceSaysInTheLedger) {
  std::string out;
  ASSERT_EQ(Sbadmin({"price", "set", "sim-small", "--input=3.00", "--output=15.00",
                     "--cache_read=0.30", "--cache_write=3.75"},
                    &out),
            0)
      << out;
  EXPECT_NE(out.find("input $3.000000, output $15.000000"), std::string::npos) << out;

  const std::string org = "priced-e2e";
  const std::string key = KeyOfNewOrg(org);
  auto r = Post("/v1/messages", MessagesBody("what does this cost", false, 40), key);
  ASSERT_EQ(r.status, 200) << r.body;
  const json reply = json::parse(r.body);
  const auto usage = UsageFor(org, r.headers["request-id"]);
  ASSERT_EQ(usage.records_size(), 1);
  const auto& rec = usage.records(0);
  EXPECT_EQ(rec.input_tokens(), reply["usage"]["input_tokens"].get<int>());
  EXPECT_EQ(rec.output_tokens(), reply["usage"]["output_tokens"].get<int>());
  // In integer micro-dollars: $3 and $15 per million tokens.
  const int64_t expected =
      (rec.input_tokens() * 3'000'000LL + rec.output_tokens() * 15'000'000LL + 500'000) / 1'000'000;
  EXPECT_GT(expected, 0);
  EXPECT_EQ(rec.cost_micros(), expected);
  EXPECT_EQ(usage.total_cost_micros(), expected);

  ASSERT_EQ(Sbadmin({"price", "list", "sim-small"}, &out), 0) << out;
  EXPECT_NE(out.find("15.000000"), std::string::npos) << out;
}

TEST(PricingE2eTest, SbadminRefusesPricesItCannotKeepExactly) {
  std::string out;
  for (const std::vector<std::string>& bad :
       {std::vector<std::string>{"price", "set", "sim-x", "--input=3.0000001", "--output=1"},
        {"price", "set", "sim-x", "--input=-1", "--output=1"},
        {"price", "set", "sim-x", "--input=1", "--output=1e3"},
        {"price", "set", "sim-x", "--input=1", "--output=1", "--from=2020-01-01"},
        {"price", "set", "sim-x", "--input=1", "--output=1", "--from=tomorrow"}}) {
    EXPECT_EQ(Sbadmin(bad, &out), 1) << bad[3] << " " << bad[4];
    EXPECT_NE(out.find("INVALID_ARGUMENT"), std::string::npos) << out;
  }
  EXPECT_EQ(Sbadmin({"price", "set"}, &out), 2) << out;
  ASSERT_EQ(Sbadmin({"price", "list", "sim-x"}, &out), 0) << out;
  EXPECT_EQ(out.find("sim-x"), std::string::npos) << "nothing stored: " << out;
}

}  // namespace
}  // namespace sb::testing
