// A POST /v1/messages (or /v1/messages/count_tokens) body, as a client
// sends it: bounded JSON parser -> AnthropicDialect::Parse.
#include "dialect_fuzz.h"
#include "gateway/dialects/anthropic.h"

namespace {

void CheckAnthropic(const sb::gateway::ApiRequest& r, sb::gateway::ParseMode mode) {
  sb::fuzz::CheckAccepted(r, sb::gateway::kMaxStopSequences);
  const auto& g = *r.generate;
  SB_FUZZ_CHECK(g.messages(0).role() == "user");
  for (const auto& m : g.messages()) SB_FUZZ_CHECK(m.role() != "system");
  if (mode == sb::gateway::ParseMode::kGenerate) {
    SB_FUZZ_CHECK(g.max_tokens() >= 1 && g.max_tokens() <= sb::gateway::kMaxOutputTokens);
  }
  if (g.has_temperature()) SB_FUZZ_CHECK(g.temperature() >= 0 && g.temperature() <= 1);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const sb::gateway::AnthropicDialect dialect;
  for (auto mode : {sb::gateway::ParseMode::kGenerate, sb::gateway::ParseMode::kCountTokens}) {
    sb::fuzz::FuzzBody(dialect, mode, data, size,
                       [mode](const sb::gateway::ApiRequest& r) { CheckAnthropic(r, mode); });
  }
  return 0;
}
