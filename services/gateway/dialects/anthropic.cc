#include "gateway/dialects/anthropic.h"

#include <cmath>

#include "absl/time/time.h"
#include "core/status.h"
#include "gateway/dialects/fields.h"
#include "gateway/sse.h"
#include "json/bounded_json.h"

namespace sb::gateway {

using nlohmann::json;
namespace inf = switchboard::inference::v1;

namespace {

struct Mapping {
  int http_status;
  const char* type;
  int retry_after;
};

Mapping MapCode(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition:
      return {400, "invalid_request_error", 0};
    case absl::StatusCode::kUnauthenticated:
      return {401, "authentication_error", 0};
    case absl::StatusCode::kPermissionDenied:
      return {403, "permission_error", 0};
    case absl::StatusCode::kNotFound:
      return {404, "not_found_error", 0};
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted:
      return {409, "invalid_request_error", 0};
    case absl::StatusCode::kResourceExhausted:
      return {429, "rate_limit_error", 1};
    case absl::StatusCode::kUnavailable:
      return {529, "overloaded_error", 1};
    case absl::StatusCode::kDeadlineExceeded:
      return {504, "timeout_error", 0};
    case absl::StatusCode::kCancelled:
      return {499, "api_error", 0};  // the client left; nobody reads this
    default:
      return {500, "api_error", 0};
  }
}

const char* TypeForHttp(int status) {
  if (status >= 500) return "api_error";
  switch (status) {
    case 404:
      return "not_found_error";
    case 413:
      return "request_too_large";
    default:
      return "invalid_request_error";
  }
}

std::string ErrorBody(std::string_view type, std::string_view message) {
  return sb::json::Dump(
      json({{"type", "error"}, {"error", {{"type", type}, {"message", message}}}}));
}

json NullableString(const std::string& s) { return s.empty() ? json(nullptr) : json(s); }

json UsageJson(int input_tokens, int output_tokens) {
  return {{"input_tokens", input_tokens}, {"output_tokens", output_tokens}};
}

// Anthropic's split: input_tokens counts only the prompt tokens neither read
// from nor written to the cache. Every write is reported as a 5-minute one.
json UsageJson(const pipeline::FinishInfo& f) {
  return {
      {"input_tokens", f.input_tokens - f.cache_read_tokens - f.cache_creation_tokens},
      {"cache_creation_input_tokens", f.cache_creation_tokens},
      {"cache_read_input_tokens", f.cache_read_tokens},
      {"cache_creation",
       {{"ephemeral_5m_input_tokens", f.cache_creation_tokens}, {"ephemeral_1h_input_tokens", 0}}},
      {"output_tokens", f.output_tokens}};
}

// What Anthropic's streaming classifiers put beside stop_reason "refusal".
json StopDetails(const pipeline::Refusal& r) {
  return {{"type", "refusal"}, {"category", r.category}, {"explanation", r.explanation}};
}

// {"type": "ephemeral", "ttl": "5m" | "1h"}: the prompt through its block is
// to be cached (the ttl is accepted; engines keep no lifetime per entry).
absl::Status ParseCacheControl(const json& cc, const std::string& field) {
  if (!cc.is_object()) return FieldError(field, "Input should be an object");
  auto type = cc.find("type");
  if (type == cc.end()) return FieldError(field + ".type", "Field required");
  if (*type != "ephemeral") return FieldError(field + ".type", "Input should be 'ephemeral'");
  if (auto ttl = cc.find("ttl");
      ttl != cc.end() && !ttl->is_null() && *ttl != "5m" && *ttl != "1h") {
    return FieldError(field + ".ttl", "Input should be '5m' or '1h'");
  }
  return absl::OkStatus();
}

// Text blocks of a `content` or `system` value (a string, or a list of
// {"type":"text","text":…} blocks). Other block types are refused by name
// rather than dropped.
absl::Status ParseBlocks(const json& value, const std::string& field,
                         google::protobuf::RepeatedPtrField<inf::ContentBlock>* out) {
  if (value.is_string()) {
    const std::string& s = value.get_ref<const std::string&>();
    SB_RETURN_IF_ERROR(CheckText(s, field, std::string::npos));
    auto* b = out->Add();
    b->set_type("text");
    b->set_text(s);
    return absl::OkStatus();
  }
  if (!value.is_array()) return FieldError(field, "Input should be a valid string or list");
  if (value.size() > kMaxBlocksPerMessage) {
    return FieldError(field, "at most " + std::to_string(kMaxBlocksPerMessage) + " blocks");
  }
  for (size_t i = 0; i < value.size(); ++i) {
    const json& block = value[i];
    const std::string at = field + "." + std::to_string(i);
    if (!block.is_object()) return FieldError(at, "Input should be an object");
    auto type = block.find("type");
    if (type == block.end() || !type->is_string())
      return FieldError(at + ".type", "Field required");
    const std::string& t = type->get_ref<const std::string&>();
    if (t == "image" || t == "document") {
      return FieldError(at + ".type", t + " content is not supported yet; send text");
    }
    if (t != "text") {
      return FieldError(at + ".type",
                        "content blocks of type '" + t + "' are not supported; use 'text'");
    }
    auto text = block.find("text");
    if (text == block.end() || !text->is_string())
      return FieldError(at + ".text", "Field required");
    SB_RETURN_IF_ERROR(
        CheckText(text->get_ref<const std::string&>(), at + ".text", std::string::npos));
    auto* b = out->Add();
    b->set_type("text");
    b->set_text(text->get<std::string>());
    if (auto cc = block.find("cache_control"); cc != block.end() && !cc->is_null()) {
      SB_RETURN_IF_ERROR(ParseCacheControl(*cc, at + ".cache_control"));
      b->set_cache_control(true);
    }
  }
  return absl::OkStatus();
}

// Blocks with cache_control, over system and every message.
int CacheBreakpoints(const inf::GenerateRequest& g) {
  int n = 0;
  for (const auto& b : g.system()) n += b.cache_control();
  for (const auto& m : g.messages()) {
    for (const auto& b : m.content()) n += b.cache_control();
  }
  return n;
}

class AnthropicStream final : public StreamEncoder {
 public:
  explicit AnthropicStream(ReplyIds ids) : ids_(std::move(ids)) {}

  std::string Start(const pipeline::StartInfo& info) override {
    // A ping early in every stream, as Anthropic's own streams have.
    return anthropic_events::MessageStart(ids_.id, info.model, info.input_tokens) +
           anthropic_events::ContentBlockStart() + anthropic_events::Ping();
  }
  std::string Text(std::string_view text) override { return anthropic_events::TextDelta(text); }
  std::string Finish(const pipeline::FinishInfo& info) override {
    return anthropic_events::ContentBlockStop() + anthropic_events::MessageDelta(info) +
           anthropic_events::MessageStop();
  }
  std::string Error(const absl::Status& status) override { return anthropic_events::Error(status); }
  std::string Ping() const override { return anthropic_events::Ping(); }

 private:
  ReplyIds ids_;
};

}  // namespace

namespace anthropic_events {

std::string MessageStart(std::string_view message_id, std::string_view model, int input_tokens,
                         std::string_view id) {
  json j = {{"type", "message_start"},
            {"message",
             {{"id", message_id},
              {"type", "message"},
              {"role", "assistant"},
              {"content", json::array()},
              {"model", model},
              {"stop_reason", nullptr},
              {"stop_sequence", nullptr},
              {"usage", UsageJson(input_tokens, 1)}}}};
  return sse::Event("message_start", sb::json::Dump(j), id);
}

std::string ContentBlockStart(std::string_view id) {
  static const std::string kData = json({{"type", "content_block_start"},
                                         {"index", 0},
                                         {"content_block", {{"type", "text"}, {"text", ""}}}})
                                       .dump();  // ASCII only
  return sse::Event("content_block_start", kData, id);
}

std::string TextDelta(std::string_view text, std::string_view id) {
  // Built by hand around the one escaped string: this runs once per token.
  std::string data =
      R"({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":)";
  data += sb::json::Dump(json(text));
  data += "}}";
  return sse::Event("content_block_delta", data, id);
}

std::string ContentBlockStop(std::string_view id) {
  return sse::Event("content_block_stop", R"({"type":"content_block_stop","index":0})", id);
}

std::string MessageDelta(const pipeline::FinishInfo& info, std::string_view id) {
  json j = {
      {"type", "message_delta"},
      {"delta",
       {{"stop_reason", info.stop_reason}, {"stop_sequence", NullableString(info.stop_sequence)}}},
      {"usage", UsageJson(info)}};
  if (info.refusal) j["delta"]["stop_details"] = StopDetails(*info.refusal);
  return sse::Event("message_delta", sb::json::Dump(j), id);
}

std::string MessageStop(std::string_view id) {
  return sse::Event("message_stop", R"({"type":"message_stop"})", id);
}

std::string Ping() { return sse::Event("ping", R"({"type":"ping"})"); }

std::string Error(const absl::Status& status, std::string_view id) {
  return ErrorOfType(MapCode(status.code()).type, std::string(status.message()), id);
}

std::string ErrorOfType(std::string_view type, std::string_view message, std::string_view id) {
  return sse::Event("error", ErrorBody(type, message), id);
}

}  // namespace anthropic_events

ErrorReply AnthropicDialect::Error(const absl::Status& status, int http_status) const {
  const Mapping m =
      IsBillingError(status) ? Mapping{402, "billing_error", 0} : MapCode(status.code());
  ErrorReply r;
  r.http_status = http_status != 0 ? http_status : m.http_status;
  r.retry_after_seconds = RetryAfterSeconds(status) > 0 ? RetryAfterSeconds(status) : m.retry_after;
  const std::string message =
      status.message().empty() ? "internal error" : std::string(status.message());
  r.body = ErrorBody(http_status != 0 ? TypeForHttp(http_status) : m.type, message);
  return r;
}

std::string AnthropicDialect::ReplyId(std::string_view ulid) const {
  return "msg_" + std::string(ulid);
}

absl::StatusOr<ApiRequest> AnthropicDialect::Parse(const json& j, ParseMode mode) const {
  ApiRequest out;
  out.generate = std::make_shared<pipeline::Request>();
  auto& g = *out.generate;

  SB_ASSIGN_OR_RETURN(std::string model, RequiredString(j, "model", "model", kMaxModelIdBytes));
  g.set_model(std::move(model));

  if (mode == ParseMode::kGenerate) {
    if (!j.contains("max_tokens") || j["max_tokens"].is_null()) {
      return FieldError("max_tokens", "Field required");
    }
    SB_ASSIGN_OR_RETURN(auto max_tokens, OptionalInteger(j, "max_tokens", 1, kMaxOutputTokens));
    g.set_max_tokens(static_cast<int>(*max_tokens));
  }

  auto messages = j.find("messages");
  if (messages == j.end() || messages->is_null()) return FieldError("messages", "Field required");
  if (!messages->is_array()) return FieldError("messages", "Input should be a valid list");
  if (messages->empty()) return FieldError("messages", "at least one message is required");
  if (messages->size() > kMaxMessages) {
    return FieldError("messages", "at most " + std::to_string(kMaxMessages) + " messages");
  }
  for (size_t i = 0; i < messages->size(); ++i) {
    const json& m = (*messages)[i];
    const std::string at = "messages." + std::to_string(i);
    if (!m.is_object()) return FieldError(at, "Input should be an object");
    auto role = m.find("role");
    if (role == m.end()) return FieldError(at + ".role", "Field required");
    if (!role->is_string() || (*role != "user" && *role != "assistant")) {
      return FieldError(at + ".role", "Input should be 'user' or 'assistant'");
    }
    auto content = m.find("content");
    if (content == m.end()) return FieldError(at + ".content", "Field required");
    auto* pm = g.add_messages();
    pm->set_role(role->get<std::string>());
    SB_RETURN_IF_ERROR(ParseBlocks(*content, at + ".content", pm->mutable_content()));
  }
  if (g.messages(0).role() != "user") {
    return FieldError("messages", "the first message must use the 'user' role");
  }

  if (auto system = j.find("system"); system != j.end() && !system->is_null()) {
    SB_RETURN_IF_ERROR(ParseBlocks(*system, "system", g.mutable_system()));
  }
  if (const int n = CacheBreakpoints(g); n > kMaxCacheBreakpoints) {
    return absl::InvalidArgumentError("A maximum of " + std::to_string(kMaxCacheBreakpoints) +
                                      " blocks with cache_control may be provided. Found " +
                                      std::to_string(n) + ".");
  }
  if (auto tools = j.find("tools");
      tools != j.end() && !(tools->is_null() || (tools->is_array() && tools->empty()))) {
    return FieldError("tools", "tool use is not supported yet");
  }
  if (auto choice = j.find("tool_choice"); choice != j.end() && !choice->is_null()) {
    return FieldError("tool_choice", "tool use is not supported yet");
  }
  if (auto thinking = j.find("thinking"); thinking != j.end() && thinking->is_object() &&
                                          thinking->find("type") != thinking->end() &&
                                          *thinking->find("type") == "enabled") {
    return FieldError("thinking", "extended thinking is not supported yet");
  }

  SB_ASSIGN_OR_RETURN(out.stream, OptionalBool(j, "stream", false));
  if (auto stops = j.find("stop_sequences"); stops != j.end() && !stops->is_null()) {
    if (!stops->is_array()) return FieldError("stop_sequences", "Input should be a valid list");
    if (stops->size() > kMaxStopSequences) {
      return FieldError("stop_sequences",
                        "at most " + std::to_string(kMaxStopSequences) + " items");
    }
    for (size_t i = 0; i < stops->size(); ++i) {
      const std::string at = "stop_sequences." + std::to_string(i);
      const json& s = (*stops)[i];
      if (!s.is_string() || s.get_ref<const std::string&>().empty()) {
        return FieldError(at, "Input should be a non-empty string");
      }
      SB_RETURN_IF_ERROR(CheckText(s.get_ref<const std::string&>(), at, kMaxStopSequenceBytes));
      g.add_stop_sequences(s.get<std::string>());
    }
  }
  SB_ASSIGN_OR_RETURN(auto temperature, OptionalNumber(j, "temperature", 0, 1));
  if (temperature) g.set_temperature(*temperature);
  SB_ASSIGN_OR_RETURN(auto top_p, OptionalNumber(j, "top_p", 0, 1));
  if (top_p) g.set_top_p(*top_p);
  SB_ASSIGN_OR_RETURN(auto top_k, OptionalInteger(j, "top_k", 1, 1 << 20));
  if (top_k) g.set_top_k(static_cast<int32_t>(*top_k));
  if (auto metadata = j.find("metadata"); metadata != j.end() && !metadata->is_null()) {
    if (!metadata->is_object()) return FieldError("metadata", "Input should be an object");
    if (auto user = metadata->find("user_id"); user != metadata->end() && !user->is_null()) {
      if (!user->is_string())
        return FieldError("metadata.user_id", "Input should be a valid string");
      SB_RETURN_IF_ERROR(
          CheckText(user->get_ref<const std::string&>(), "metadata.user_id", kMaxUserIdBytes));
      g.set_end_user_id(user->get<std::string>());
    }
    if (auto p = metadata->find("priority"); p != metadata->end() && !p->is_null()) {
      if (!p->is_string() || (*p != "interactive" && *p != "batch")) {
        return FieldError("metadata.priority", "Input should be 'interactive' or 'batch'");
      }
      g.set_priority(p->get<std::string>());
    }
  }
  return out;
}

std::unique_ptr<StreamEncoder> AnthropicDialect::NewStream(const ReplyIds& ids,
                                                           const ApiRequest&) const {
  return std::make_unique<AnthropicStream>(ids);
}

std::string AnthropicDialect::Whole(const ReplyIds& ids, const Completion& c) const {
  json j = {{"id", ids.id},
            {"type", "message"},
            {"role", "assistant"},
            {"model", c.start.model},
            {"content", json::array({{{"type", "text"}, {"text", c.text}}})},
            {"stop_reason", c.finish.stop_reason},
            {"stop_sequence", NullableString(c.finish.stop_sequence)},
            {"usage", UsageJson(c.finish)}};
  if (c.finish.refusal) j["stop_details"] = StopDetails(*c.finish.refusal);
  return sb::json::Dump(j);
}

namespace {

json ModelJson(const ModelEntry& m) {
  return {
      {"type", "model"},
      {"id", m.id},
      {"display_name", m.id},
      {"created_at", absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixMillis(m.created_unix_ms),
                                      absl::UTCTimeZone())}};
}

}  // namespace

std::string AnthropicDialect::ModelList(const std::vector<ModelEntry>& page, bool has_more) const {
  json data = json::array();
  for (const auto& m : page) data.push_back(ModelJson(m));
  json j = {{"data", data},
            {"has_more", has_more},
            {"first_id", page.empty() ? json(nullptr) : json(page.front().id)},
            {"last_id", page.empty() ? json(nullptr) : json(page.back().id)}};
  return sb::json::Dump(j);
}

http::Headers AnthropicDialect::RateLimitHeaders(const RateLimitView& view, absl::Time now) const {
  http::Headers out;
  auto add = [&](const char* name, const LimitState& s) {
    if (!s.present) return;
    const std::string base = std::string("anthropic-ratelimit-") + name;
    out.emplace_back(base + "-limit", std::to_string(s.limit));
    out.emplace_back(base + "-remaining", std::to_string(std::max<int64_t>(0, s.remaining)));
    // RFC 3339, rounded up to the second: the bucket is full by then.
    const absl::Time reset = absl::FromUnixSeconds(static_cast<int64_t>(
        std::ceil(absl::ToDoubleSeconds(std::max(s.reset, now) - absl::UnixEpoch()))));
    out.emplace_back(base + "-reset",
                     absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", reset, absl::UTCTimeZone()));
  };
  add("requests", view.requests);
  add("input-tokens", view.input_tokens);
  add("output-tokens", view.output_tokens);
  return out;
}

std::string AnthropicDialect::Model(const ModelEntry& m) const {
  return sb::json::Dump(ModelJson(m));
}

}  // namespace sb::gateway
