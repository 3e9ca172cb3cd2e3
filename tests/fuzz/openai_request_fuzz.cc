// A POST /v1/chat/completions body, as a client sends it: bounded JSON
// parser -> OpenAiDialect::Parse.
#include "dialect_fuzz.h"
#include "gateway/dialects/openai.h"

namespace {

// OpenAI's own limit on stop sequences (openai.cc).
constexpr size_t kOpenAiMaxStops = 4;

void CheckOpenAi(const sb::gateway::ApiRequest& r) {
  sb::fuzz::CheckAccepted(r, kOpenAiMaxStops);
  const auto& g = *r.generate;
  SB_FUZZ_CHECK(g.max_tokens() >= 1 && g.max_tokens() <= sb::gateway::kMaxOutputTokens);
  if (g.has_temperature()) SB_FUZZ_CHECK(g.temperature() >= 0 && g.temperature() <= 2);
  // Leading system/developer messages become the system prompt: the first
  // message in place is never one of them.
  SB_FUZZ_CHECK(g.messages(0).role() != "system");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const sb::gateway::OpenAiDialect dialect;
  sb::fuzz::FuzzBody(dialect, sb::gateway::ParseMode::kGenerate, data, size, CheckOpenAi);
  return 0;
}
