#include "gateway/admission/admission.h"

namespace sb::gateway {

std::string_view DimensionName(Dimension d) {
  switch (d) {
    case Dimension::kRequests:
      return "requests";
    case Dimension::kInputTokens:
      return "input tokens";
    case Dimension::kOutputTokens:
      return "output tokens";
    case Dimension::kConcurrency:
      return "concurrency";
  }
  return "?";
}

absl::Time FullAt(int64_t per_minute, int64_t remaining, absl::Time now) {
  if (per_minute <= 0 || remaining >= per_minute) return now;
  return now + absl::Seconds(60.0 * static_cast<double>(per_minute - remaining) /
                             static_cast<double>(per_minute));
}

RateLimitView TightestView(const std::vector<LimitState>& states) {
  RateLimitView view;
  LimitState* dims[3] = {&view.requests, &view.input_tokens, &view.output_tokens};
  for (size_t i = 0; i < states.size(); ++i) {
    const LimitState& s = states[i];
    if (!s.present) continue;
    LimitState& tightest = *dims[i % 3];
    if (!tightest.present || s.remaining < tightest.remaining) tightest = s;
  }
  return view;
}

}  // namespace sb::gateway
