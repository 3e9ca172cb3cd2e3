// The OpenAI Chat Completions API (https://platform.openai.com/docs/api-reference/chat):
// POST /v1/chat/completions bodies, `data:` chunks ending in `data: [DONE]`
// (with a usage chunk first when stream_options.include_usage is set), the
// whole chat.completion, model lists, and
// {"error":{"message","type","param","code"}} with the status codes that
// make the official SDKs raise their typed errors.
#pragma once

#include "gateway/dialects/dialect.h"

namespace sb::gateway {

// max_tokens when the request sets neither max_tokens nor
// max_completion_tokens (the model's own limit is not known here).
inline constexpr int kOpenAiDefaultMaxTokens = 4096;

class OpenAiDialect final : public Dialect {
 public:
  std::string_view name() const override { return "openai"; }
  ErrorReply Error(const absl::Status& status, int http_status = 0) const override;
  std::string ReplyId(std::string_view ulid) const override;
  absl::StatusOr<ApiRequest> Parse(const nlohmann::json& body, ParseMode mode) const override;
  std::unique_ptr<StreamEncoder> NewStream(const ReplyIds& ids,
                                           const ApiRequest& request) const override;
  std::string Whole(const ReplyIds& ids, const Completion& c) const override;
  std::string ModelList(const std::vector<ModelEntry>& page, bool has_more) const override;
  std::string Model(const ModelEntry& m) const override;
  http::Headers RateLimitHeaders(const RateLimitView& view, absl::Time now) const override;
};

// A duration as OpenAI's reset headers write it: "20ms", "1.5s", "6m0s".
std::string OpenAiDuration(absl::Duration d);

}  // namespace sb::gateway
