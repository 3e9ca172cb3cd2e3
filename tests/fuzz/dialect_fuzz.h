// Shared by the anthropic_request and openai_request targets: a request
// body, as a client sends it, through the bounded JSON parser and one
// dialect's Parse, with the checks both dialects must pass.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.h"
#include "gateway/dialects/dialect.h"
#include "gateway/dialects/fields.h"
#include "json/bounded_json.h"

namespace sb::fuzz {

// Text the pipeline receives: UTF-8, no NUL, within `max_bytes`.
inline void CheckCleanText(std::string_view s, size_t max_bytes) {
  SB_FUZZ_CHECK(s.size() <= max_bytes);
  SB_FUZZ_CHECK(s.find('\0') == std::string_view::npos);
  SB_FUZZ_CHECK(gateway::IsValidUtf8(s));
}

// What holds for any accepted request, in either dialect.
inline void CheckAccepted(const gateway::ApiRequest& r, size_t max_stops) {
  SB_FUZZ_CHECK(r.generate != nullptr);
  const auto& g = *r.generate;
  SB_FUZZ_CHECK(!g.model().empty());
  CheckCleanText(g.model(), gateway::kMaxModelIdBytes);
  SB_FUZZ_CHECK(g.messages_size() >= 1);
  SB_FUZZ_CHECK(static_cast<size_t>(g.messages_size()) <= gateway::kMaxMessages);
  for (const auto& m : g.messages()) {
    SB_FUZZ_CHECK(m.role() == "user" || m.role() == "assistant" || m.role() == "system");
    SB_FUZZ_CHECK(static_cast<size_t>(m.content_size()) <= gateway::kMaxBlocksPerMessage);
    for (const auto& b : m.content()) {
      SB_FUZZ_CHECK(b.type() == "text");
      CheckCleanText(b.text(), std::string::npos);
    }
  }
  for (const auto& b : g.system()) {
    SB_FUZZ_CHECK(b.type() == "text");
    CheckCleanText(b.text(), std::string::npos);
  }
  SB_FUZZ_CHECK(static_cast<size_t>(g.stop_sequences_size()) <= max_stops);
  for (const auto& s : g.stop_sequences()) {
    SB_FUZZ_CHECK(!s.empty());
    CheckCleanText(s, gateway::kMaxStopSequenceBytes);
  }
  CheckCleanText(g.end_user_id(), gateway::kMaxUserIdBytes);
  if (g.has_top_p()) SB_FUZZ_CHECK(g.top_p() >= 0 && g.top_p() <= 1);
  if (g.has_top_k()) SB_FUZZ_CHECK(g.top_k() >= 1);
  if (r.include_usage) SB_FUZZ_CHECK(r.stream);
}

// A refused request: a client error, whose error body is JSON.
inline void CheckRefused(const gateway::Dialect& dialect, const absl::Status& status) {
  SB_FUZZ_CHECK(status.code() == absl::StatusCode::kInvalidArgument);
  const gateway::ErrorReply reply = dialect.Error(status);
  SB_FUZZ_CHECK(reply.http_status == 400);
  SB_FUZZ_CHECK(json::ParseObject(reply.body).ok());
}

// Parses `data` as a body, then parses the JSON the bounded parser built,
// serialized again: both must come to the same result (the parser depends
// on the document, not on how it was spelled).
template <typename Checker>
void FuzzBody(const gateway::Dialect& dialect, gateway::ParseMode mode, const uint8_t* data,
              size_t size, Checker check_accepted) {
  auto body = json::ParseObject(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!body.ok()) {
    SB_FUZZ_CHECK(body.status().code() == absl::StatusCode::kInvalidArgument);
    return;
  }
  auto parsed = dialect.Parse(*body, mode);
  if (parsed.ok()) {
    check_accepted(*parsed);
  } else {
    CheckRefused(dialect, parsed.status());
  }
  auto again_body = json::ParseObject(json::Dump(*body));
  SB_FUZZ_CHECK(again_body.ok());
  auto again = dialect.Parse(*again_body, mode);
  SB_FUZZ_CHECK(again.ok() == parsed.ok());
  if (parsed.ok()) {
    SB_FUZZ_CHECK(again->generate->SerializeAsString() == parsed->generate->SerializeAsString());
    SB_FUZZ_CHECK(again->stream == parsed->stream && again->include_usage == parsed->include_usage);
  } else {
    SB_FUZZ_CHECK(again.status() == parsed.status());
  }
}

}  // namespace sb::fuzz
