#include "gateway/dialects/openai.h"

#include "absl/strings/match.h"
#include "core/status.h"
#include "gateway/dialects/fields.h"
#include "gateway/sse.h"
#include "json/bounded_json.h"

namespace sb::gateway {

using nlohmann::json;
namespace inf = switchboard::inference::v1;

namespace {

constexpr size_t kMaxStops = 4;  // OpenAI's own limit

struct Mapping {
  int http_status;
  const char* type;
  const char* code;  // nullptr: JSON null
  int retry_after;
};

Mapping MapCode(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition:
      return {400, "invalid_request_error", nullptr, 0};
    case absl::StatusCode::kUnauthenticated:
      return {401, "invalid_request_error", "invalid_api_key", 0};
    case absl::StatusCode::kPermissionDenied:
      return {403, "invalid_request_error", "permission_denied", 0};
    case absl::StatusCode::kNotFound:
      return {404, "invalid_request_error", "not_found", 0};
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted:
      return {409, "invalid_request_error", "conflict", 0};
    case absl::StatusCode::kResourceExhausted:
      return {429, "requests", "rate_limit_exceeded", 1};
    case absl::StatusCode::kUnavailable:
      return {503, "server_error", "overloaded", 1};
    case absl::StatusCode::kDeadlineExceeded:
      return {504, "server_error", "timeout", 0};
    case absl::StatusCode::kCancelled:
      return {499, "server_error", nullptr, 0};
    default:
      return {500, "server_error", nullptr, 0};
  }
}

json ErrorJson(const absl::Status& status, const Mapping& m) {
  const std::string field = ErrorField(status);
  const std::string message =
      status.message().empty() ? "internal error" : std::string(status.message());
  const char* code = m.code;
  if (status.code() == absl::StatusCode::kNotFound && absl::StartsWith(message, "model")) {
    code = "model_not_found";
  }
  return {{"error",
           {{"message", message},
            {"type", m.type},
            {"param", field.empty() ? json(nullptr) : json(field)},
            {"code", code == nullptr ? json(nullptr) : json(code)}}}};
}

std::string FinishReason(const std::string& stop_reason) {
  if (stop_reason == "max_tokens") return "length";
  if (stop_reason == "refusal") return "content_filter";
  return "stop";  // end_turn, stop_sequence, cancelled
}

json UsageJson(const pipeline::FinishInfo& f) {
  return {{"prompt_tokens", f.input_tokens},
          {"completion_tokens", f.output_tokens},
          {"total_tokens", f.input_tokens + f.output_tokens},
          {"prompt_tokens_details", {{"cached_tokens", f.cache_read_tokens}}}};
}

// A message's content: a string, or a list of parts of which only text
// parts are understood; images, audio and files are refused by name.
absl::Status ParseContent(const json& value, const std::string& field,
                          google::protobuf::RepeatedPtrField<inf::ContentBlock>* out) {
  if (value.is_string()) {
    SB_RETURN_IF_ERROR(CheckText(value.get_ref<const std::string&>(), field, std::string::npos));
    auto* b = out->Add();
    b->set_type("text");
    b->set_text(value.get<std::string>());
    return absl::OkStatus();
  }
  if (!value.is_array()) return FieldError(field, "Input should be a valid string or list");
  if (value.size() > kMaxBlocksPerMessage) {
    return FieldError(field, "at most " + std::to_string(kMaxBlocksPerMessage) + " parts");
  }
  for (size_t i = 0; i < value.size(); ++i) {
    const json& part = value[i];
    const std::string at = field + "[" + std::to_string(i) + "]";
    if (!part.is_object()) return FieldError(at, "Input should be an object");
    auto type_it = part.find("type");
    const std::string type =
        type_it != part.end() && type_it->is_string() ? type_it->get<std::string>() : "";
    if (type == "image_url" || type == "input_audio" || type == "file") {
      return FieldError(at, type + " content parts are not supported yet; send text");
    }
    if (type != "text") return FieldError(at + ".type", "Input should be 'text'");
    auto text = part.find("text");
    if (text == part.end() || !text->is_string()) return FieldError(at + ".text", "Field required");
    SB_RETURN_IF_ERROR(
        CheckText(text->get_ref<const std::string&>(), at + ".text", std::string::npos));
    auto* b = out->Add();
    b->set_type("text");
    b->set_text(text->get<std::string>());
  }
  return absl::OkStatus();
}

// Fields with no support yet: answered with a 400 that names them, never
// silently ignored. Accepted and passed over: seed (the simulated engine is
// deterministic anyway), parallel_tool_calls (no tools), store, metadata,
// service_tier, prediction — none changes the text the model would write.
absl::Status RefuseUnsupported(const json& j) {
  if (auto n = j.find("n"); n != j.end() && !n->is_null() && !(n->is_number_integer() && *n == 1)) {
    return FieldError("n", "only n=1 is supported");
  }
  for (const char* key : {"tools", "functions"}) {
    if (auto t = j.find(key); t != j.end() && !(t->is_null() || (t->is_array() && t->empty()))) {
      return FieldError(key, "tool calling is not supported yet");
    }
  }
  for (const char* key : {"tool_choice", "function_call", "audio"}) {
    if (auto t = j.find(key); t != j.end() && !t->is_null()) {
      return FieldError(key, "is not supported yet");
    }
  }
  if (auto lp = j.find("logprobs"); lp != j.end() && lp->is_boolean() && lp->get<bool>()) {
    return FieldError("logprobs", "log probabilities are not supported yet");
  }
  if (auto tl = j.find("top_logprobs"); tl != j.end() && !tl->is_null()) {
    return FieldError("top_logprobs", "log probabilities are not supported yet");
  }
  if (auto bias = j.find("logit_bias");
      bias != j.end() && !(bias->is_null() || (bias->is_object() && bias->empty()))) {
    return FieldError("logit_bias", "is not supported yet");
  }
  if (auto rf = j.find("response_format"); rf != j.end() && !rf->is_null()) {
    auto type = rf->is_object() ? rf->find("type") : rf->end();
    if (!rf->is_object() || type == rf->end() || *type != "text") {
      return FieldError("response_format",
                        "structured output is not supported yet (only type text)");
    }
  }
  if (auto m = j.find("modalities"); m != j.end() && m->is_array()) {
    for (const auto& v : *m) {
      if (v != "text") return FieldError("modalities", "only text output is supported");
    }
  }
  return absl::OkStatus();
}

class OpenAiStream final : public StreamEncoder {
 public:
  OpenAiStream(ReplyIds ids, bool include_usage)
      : ids_(std::move(ids)), include_usage_(include_usage) {}

  std::string Start(const pipeline::StartInfo& info) override {
    model_ = info.model;
    // A text chunk is the same bytes around its escaped text every time:
    // cut them once from a chunk carrying a marker, so that a token costs
    // one string escape instead of building and dumping a JSON object.
    const std::string marked = sb::json::Dump(Chunk(json({{"content", kMarker}}), nullptr));
    const std::string quoted_marker = sb::json::Dump(json(kMarker));
    const size_t at = marked.find(quoted_marker);
    text_prefix_ = "data: " + marked.substr(0, at);
    text_suffix_ = marked.substr(at + quoted_marker.size()) + "\n\n";
    return sse::Data(sb::json::Dump(Chunk(json({{"role", "assistant"}, {"content", ""}}), nullptr)));
  }
  std::string Text(std::string_view text) override {
    std::string out = text_prefix_;
    out += sb::json::Dump(json(text));
    out += text_suffix_;
    return out;
  }
  std::string Finish(const pipeline::FinishInfo& info) override {
    std::string out =
        sse::Data(sb::json::Dump(Chunk(json::object(), FinishReason(info.stop_reason).c_str())));
    if (include_usage_) {
      json usage = Base();
      usage["choices"] = json::array();
      usage["usage"] = UsageJson(info);
      out += sse::Data(sb::json::Dump(usage));
    }
    return out + sse::Data("[DONE]");
  }
  std::string Error(const absl::Status& status) override {
    return sse::Data(sb::json::Dump(ErrorJson(status, MapCode(status.code()))));
  }
  std::string Ping() const override { return sse::Comment("ping"); }

 private:
  json Base() const {
    return {{"id", ids_.id},
            {"object", "chat.completion.chunk"},
            {"created", ids_.created_unix},
            {"model", model_},
            {"system_fingerprint", nullptr}};
  }
  json Chunk(json delta, const char* finish_reason) const {
    json j = Base();
    j["choices"] =
        json::array({{{"index", 0},
                      {"delta", std::move(delta)},
                      {"logprobs", nullptr},
                      {"finish_reason", finish_reason ? json(finish_reason) : json(nullptr)}}});
    if (include_usage_) j["usage"] = nullptr;
    return j;
  }

  static constexpr const char* kMarker = "\x01switchboard-text\x01";
  ReplyIds ids_;
  bool include_usage_;
  std::string model_;
  std::string text_prefix_, text_suffix_;  // a text chunk around its escaped text
};

json ModelJson(const ModelEntry& m) {
  return {{"id", m.id},
          {"object", "model"},
          {"created", m.created_unix_ms / 1000},
          {"owned_by", "switchboard"}};
}

}  // namespace

ErrorReply OpenAiDialect::Error(const absl::Status& status, int http_status) const {
  Mapping m = MapCode(status.code());
  if (IsBillingError(status)) m = {402, "insufficient_quota", "insufficient_quota", 0};
  if (http_status != 0) m.http_status = http_status;
  const std::string kind = LimitKind(status);
  if (status.code() == absl::StatusCode::kResourceExhausted && !kind.empty()) m.type = kind.c_str();
  if (RetryAfterSeconds(status) > 0) m.retry_after = RetryAfterSeconds(status);
  return {m.http_status, sb::json::Dump(ErrorJson(status, m)), m.retry_after};
}

std::string OpenAiDialect::ReplyId(std::string_view ulid) const {
  return "chatcmpl-" + std::string(ulid);
}

absl::StatusOr<ApiRequest> OpenAiDialect::Parse(const json& j, ParseMode) const {
  ApiRequest out;
  out.generate = std::make_shared<pipeline::Request>();
  auto& g = *out.generate;

  SB_ASSIGN_OR_RETURN(std::string model, RequiredString(j, "model", "model", kMaxModelIdBytes));
  g.set_model(std::move(model));
  SB_RETURN_IF_ERROR(RefuseUnsupported(j));

  auto messages = j.find("messages");
  if (messages == j.end() || messages->is_null()) return FieldError("messages", "Field required");
  if (!messages->is_array()) return FieldError("messages", "Input should be a valid list");
  if (messages->empty()) return FieldError("messages", "at least one message is required");
  if (messages->size() > kMaxMessages) {
    return FieldError("messages", "at most " + std::to_string(kMaxMessages) + " messages");
  }
  bool leading = true;  // system/developer messages before the first other one
  for (size_t i = 0; i < messages->size(); ++i) {
    const json& m = (*messages)[i];
    const std::string at = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) return FieldError(at, "Input should be an object");
    auto role_it = m.find("role");
    const std::string role =
        role_it != m.end() && role_it->is_string() ? role_it->get<std::string>() : "";
    if (role != "system" && role != "developer" && role != "user" && role != "assistant") {
      if (role == "tool" || role == "function") {
        return FieldError(at + ".role", "tool messages are not supported yet");
      }
      return FieldError(at + ".role",
                        "Input should be 'system', 'developer', 'user' or 'assistant'");
    }
    if (m.contains("tool_calls") && !m["tool_calls"].is_null()) {
      return FieldError(at + ".tool_calls", "tool calling is not supported yet");
    }
    auto content = m.find("content");
    if (content == m.end() || content->is_null())
      return FieldError(at + ".content", "Field required");
    const bool instructions = role == "system" || role == "developer";
    if (instructions && leading) {
      // Leading instructions are the request's system prompt; later ones
      // stay in place, as role "system".
      SB_RETURN_IF_ERROR(ParseContent(*content, at + ".content", g.mutable_system()));
      continue;
    }
    leading = false;
    auto* pm = g.add_messages();
    pm->set_role(instructions ? "system" : role);
    SB_RETURN_IF_ERROR(ParseContent(*content, at + ".content", pm->mutable_content()));
  }
  if (g.messages_size() == 0) {
    return FieldError("messages", "at least one user or assistant message is required");
  }

  SB_ASSIGN_OR_RETURN(auto max_tokens, OptionalInteger(j, "max_tokens", 1, kMaxOutputTokens));
  SB_ASSIGN_OR_RETURN(auto max_completion,
                      OptionalInteger(j, "max_completion_tokens", 1, kMaxOutputTokens));
  g.set_max_tokens(
      static_cast<int>(max_completion.value_or(max_tokens.value_or(kOpenAiDefaultMaxTokens))));

  if (auto stop = j.find("stop"); stop != j.end() && !stop->is_null()) {
    std::vector<const json*> stops;
    if (stop->is_string()) {
      stops.push_back(&*stop);
    } else if (stop->is_array()) {
      if (stop->size() > kMaxStops) {
        return FieldError("stop", "at most " + std::to_string(kMaxStops) + " stop sequences");
      }
      for (const auto& s : *stop) stops.push_back(&s);
    } else {
      return FieldError("stop", "Input should be a string or a list of strings");
    }
    for (const json* s : stops) {
      if (!s->is_string() || s->get_ref<const std::string&>().empty()) {
        return FieldError("stop", "each stop sequence should be a non-empty string");
      }
      SB_RETURN_IF_ERROR(
          CheckText(s->get_ref<const std::string&>(), "stop", kMaxStopSequenceBytes));
      g.add_stop_sequences(s->get<std::string>());
    }
  }
  SB_ASSIGN_OR_RETURN(auto temperature, OptionalNumber(j, "temperature", 0, 2));
  if (temperature) g.set_temperature(*temperature);
  SB_ASSIGN_OR_RETURN(auto top_p, OptionalNumber(j, "top_p", 0, 1));
  if (top_p) g.set_top_p(*top_p);
  for (const char* penalty : {"presence_penalty", "frequency_penalty"}) {
    SB_ASSIGN_OR_RETURN(auto unused, OptionalNumber(j, penalty, -2, 2));
    (void)unused;  // validated; the simulated engine has no such knob
  }
  if (auto user = j.find("user"); user != j.end() && !user->is_null()) {
    if (!user->is_string()) return FieldError("user", "Input should be a valid string");
    SB_RETURN_IF_ERROR(CheckText(user->get_ref<const std::string&>(), "user", kMaxUserIdBytes));
    g.set_end_user_id(user->get<std::string>());
  }

  SB_ASSIGN_OR_RETURN(out.stream, OptionalBool(j, "stream", false));
  if (auto opts = j.find("stream_options"); opts != j.end() && !opts->is_null()) {
    if (!out.stream) return FieldError("stream_options", "only allowed when stream is true");
    if (!opts->is_object()) return FieldError("stream_options", "Input should be an object");
    SB_ASSIGN_OR_RETURN(out.include_usage, OptionalBool(*opts, "include_usage", false));
  }
  return out;
}

std::unique_ptr<StreamEncoder> OpenAiDialect::NewStream(const ReplyIds& ids,
                                                        const ApiRequest& request) const {
  return std::make_unique<OpenAiStream>(ids, request.include_usage);
}

std::string OpenAiDialect::Whole(const ReplyIds& ids, const Completion& c) const {
  json j = {{"id", ids.id},
            {"object", "chat.completion"},
            {"created", ids.created_unix},
            {"model", c.start.model},
            {"choices",
             json::array(
                 {{{"index", 0},
                   {"message", {{"role", "assistant"}, {"content", c.text}, {"refusal", nullptr}}},
                   {"logprobs", nullptr},
                   {"finish_reason", FinishReason(c.finish.stop_reason)}}})},
            {"usage", UsageJson(c.finish)},
            {"system_fingerprint", nullptr}};
  return sb::json::Dump(j);
}

std::string OpenAiDialect::ModelList(const std::vector<ModelEntry>& page, bool) const {
  json data = json::array();
  for (const auto& m : page) data.push_back(ModelJson(m));
  return sb::json::Dump(json({{"object", "list"}, {"data", data}}));
}

std::string OpenAiDuration(absl::Duration d) {
  // As OpenAI writes them: "20ms", "1.5s", "6m0s".
  if (d < absl::ZeroDuration()) d = absl::ZeroDuration();
  // Rounded to what is shown: "59.9996s" is "1m0s".
  d = absl::Milliseconds(absl::ToInt64Milliseconds(d + absl::Microseconds(500)));
  if (d < absl::Seconds(1)) return std::to_string(absl::ToInt64Milliseconds(d)) + "ms";
  if (d < absl::Minutes(1)) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.3f", absl::ToDoubleSeconds(d));
    std::string s = buf;
    while (s.back() == '0') s.pop_back();
    if (s.back() == '.') s.pop_back();
    return s + "s";
  }
  const int64_t seconds = absl::ToInt64Seconds(d);
  return std::to_string(seconds / 60) + "m" + std::to_string(seconds % 60) + "s";
}

http::Headers OpenAiDialect::RateLimitHeaders(const RateLimitView& view, absl::Time now) const {
  http::Headers out;
  auto add = [&](const char* name, const LimitState& s) {
    if (!s.present) return;
    out.emplace_back(std::string("x-ratelimit-limit-") + name, std::to_string(s.limit));
    out.emplace_back(std::string("x-ratelimit-remaining-") + name,
                     std::to_string(std::max<int64_t>(0, s.remaining)));
    out.emplace_back(std::string("x-ratelimit-reset-") + name, OpenAiDuration(s.reset - now));
  };
  add("requests", view.requests);
  // OpenAI has one token limit: show the tighter of input and output.
  const LimitState* tokens = &view.input_tokens;
  if (view.output_tokens.present &&
      (!tokens->present || view.output_tokens.remaining < tokens->remaining)) {
    tokens = &view.output_tokens;
  }
  add("tokens", *tokens);
  return out;
}

std::string OpenAiDialect::Model(const ModelEntry& m) const { return sb::json::Dump(ModelJson(m)); }

}  // namespace sb::gateway
