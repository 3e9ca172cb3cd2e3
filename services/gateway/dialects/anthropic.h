// The Anthropic Messages API (https://docs.anthropic.com/en/api/messages):
// POST /v1/messages and /v1/messages/count_tokens bodies, the SSE event
// sequence (message_start, content_block_start, ping, content_block_delta…,
// content_block_stop, message_delta, message_stop; error), the whole
// message, model lists, and {"type":"error","error":{type,message}}.
#pragma once

#include "gateway/dialects/dialect.h"

namespace sb::gateway {

class AnthropicDialect final : public Dialect {
 public:
  std::string_view name() const override { return "anthropic"; }
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

// The Messages API events one at a time, for streams whose events carry
// their own ids (chat's resumable streams): each returns one SSE event.
namespace anthropic_events {
std::string MessageStart(std::string_view message_id, std::string_view model, int input_tokens,
                         std::string_view id = {});
std::string ContentBlockStart(std::string_view id = {});
std::string TextDelta(std::string_view text, std::string_view id = {});
std::string ContentBlockStop(std::string_view id = {});
std::string MessageDelta(const pipeline::FinishInfo& info, std::string_view id = {});
std::string MessageStop(std::string_view id = {});
std::string Ping();
// An `error` event with the error body of `status`.
std::string Error(const absl::Status& status, std::string_view id = {});
// The same, for an error whose Anthropic type is already known.
std::string ErrorOfType(std::string_view type, std::string_view message, std::string_view id = {});
}  // namespace anthropic_events

}  // namespace sb::gateway
