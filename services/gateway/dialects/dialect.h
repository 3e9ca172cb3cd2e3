// An API dialect: how one public wire format (Anthropic Messages, OpenAI
// Chat Completions) maps onto the platform's one internal request and one
// internal stream of generation events.
//
// A dialect parses a request body into an ApiRequest (structured messages,
// sampling parameters, stop sequences, metadata) and encodes what the
// pipeline produces: a stream (StreamEncoder, SSE bytes per event) or a
// whole reply, models, and errors. Every error of a route in the dialect,
// from any layer, goes through its one Error() mapping. No I/O here.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gateway/admission/admission.h"
#include "http/http_server.h"
#include "pipeline/pipeline.h"

namespace sb::gateway {

struct ApiRequest {
  std::shared_ptr<pipeline::Request> generate;
  bool stream = false;
  bool include_usage = false;  // OpenAI stream_options.include_usage
};

// Parse for a generation, or only to count the input tokens (no
// max_tokens needed).
enum class ParseMode { kGenerate, kCountTokens };

// What identifies a reply on the wire.
struct ReplyIds {
  std::string id;            // "msg_…" or "chatcmpl-…"
  int64_t created_unix = 0;  // seconds
};

struct Completion {
  pipeline::StartInfo start;
  std::string text;
  pipeline::FinishInfo finish;
};

struct ModelEntry {
  std::string id;
  int64_t created_unix_ms = 0;
};

struct ErrorReply {
  int http_status = 500;
  std::string body;
  int retry_after_seconds = 0;  // 0: no retry-after header
};

class StreamEncoder {
 public:
  virtual ~StreamEncoder() = default;
  virtual std::string Start(const pipeline::StartInfo& info) = 0;
  virtual std::string Text(std::string_view text) = 0;
  virtual std::string Finish(const pipeline::FinishInfo& info) = 0;
  // An error after the stream started (its 200 is already sent).
  virtual std::string Error(const absl::Status& status) = 0;
  // What keeps an idle stream alive. Thread-safe: the idle timer calls it.
  virtual std::string Ping() const = 0;
};

class Dialect {
 public:
  virtual ~Dialect() = default;
  virtual std::string_view name() const = 0;

  // `status` must already be fit for the caller (core/public_status.h).
  // `http_status`, when non-zero, overrides the status the code maps to
  // (405 has no absl code).
  virtual ErrorReply Error(const absl::Status& status, int http_status = 0) const = 0;

  virtual std::string ReplyId(std::string_view ulid) const = 0;
  virtual absl::StatusOr<ApiRequest> Parse(const nlohmann::json& body, ParseMode mode) const = 0;
  virtual std::unique_ptr<StreamEncoder> NewStream(const ReplyIds& ids,
                                                   const ApiRequest& request) const = 0;
  virtual std::string Whole(const ReplyIds& ids, const Completion& c) const = 0;

  virtual std::string ModelList(const std::vector<ModelEntry>& page, bool has_more) const = 0;
  virtual std::string Model(const ModelEntry& m) const = 0;

  // The rate-limit headers for the tightest limits that applied (none for
  // a dimension without a limit).
  virtual http::Headers RateLimitHeaders(const RateLimitView& view, absl::Time now) const = 0;
};

}  // namespace sb::gateway
