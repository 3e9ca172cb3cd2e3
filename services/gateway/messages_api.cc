#include "gateway/messages_api.h"

#include <nlohmann/json.hpp>

#include "core/status.h"

namespace sb::gateway {

using nlohmann::json;

namespace {

constexpr int kMaxTokensLimit = 64 * 1024;

absl::Status Invalid(const std::string& msg) { return absl::InvalidArgumentError(msg); }

// A content field: a string, or an array of blocks of which only text
// blocks are understood here.
absl::StatusOr<std::string> ContentText(const json& content, const std::string& where) {
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) return Invalid(where + ": Input should be a valid string or list");
  std::string text;
  for (size_t i = 0; i < content.size(); ++i) {
    const json& block = content[i];
    const std::string at = where + "." + std::to_string(i);
    if (!block.is_object()) return Invalid(at + ": Input should be an object");
    auto type = block.find("type");
    if (type == block.end() || !type->is_string()) return Invalid(at + ".type: Field required");
    if (*type != "text") {
      return Invalid(at + ".type: content blocks of type '" + type->get<std::string>() +
                     "' are not supported; use 'text'");
    }
    auto t = block.find("text");
    if (t == block.end() || !t->is_string()) return Invalid(at + ".text: Field required");
    if (!text.empty()) text += "\n";
    text += t->get<std::string>();
  }
  return text;
}

json UsageJson(const Usage& u) {
  return {{"input_tokens", u.input_tokens}, {"output_tokens", u.output_tokens}};
}

json NullableString(const std::string& s) { return s.empty() ? json(nullptr) : json(s); }

}  // namespace

absl::StatusOr<json> ParseJsonObject(const std::string& body) {
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Invalid("the request body is not valid JSON");
  if (!j.is_object()) return Invalid("the request body must be a JSON object");
  return j;
}

absl::StatusOr<MessagesRequest> ParseMessagesRequest(const std::string& body) {
  SB_ASSIGN_OR_RETURN(const json j, ParseJsonObject(body));
  MessagesRequest out;
  auto& g = out.generate;

  auto model = j.find("model");
  if (model == j.end()) return Invalid("model: Field required");
  if (!model->is_string() || model->get<std::string>().empty()) {
    return Invalid("model: Input should be a non-empty string");
  }
  g.set_model(model->get<std::string>());

  auto max_tokens = j.find("max_tokens");
  if (max_tokens == j.end()) return Invalid("max_tokens: Field required");
  if (!max_tokens->is_number_integer()) return Invalid("max_tokens: Input should be a valid integer");
  const int64_t mt = max_tokens->get<int64_t>();
  if (mt < 1) return Invalid("max_tokens: Input should be greater than or equal to 1");
  if (mt > kMaxTokensLimit) {
    return Invalid("max_tokens: " + std::to_string(mt) + " > " + std::to_string(kMaxTokensLimit) +
                   ", which is the maximum allowed");
  }
  g.set_max_tokens(static_cast<int>(mt));

  auto messages = j.find("messages");
  if (messages == j.end()) return Invalid("messages: Field required");
  if (!messages->is_array()) return Invalid("messages: Input should be a valid list");
  if (messages->empty()) return Invalid("messages: at least one message is required");
  for (size_t i = 0; i < messages->size(); ++i) {
    const json& m = (*messages)[i];
    const std::string at = "messages." + std::to_string(i);
    if (!m.is_object()) return Invalid(at + ": Input should be an object");
    auto role = m.find("role");
    if (role == m.end()) return Invalid(at + ".role: Field required");
    if (!role->is_string() || (*role != "user" && *role != "assistant")) {
      return Invalid(at + ".role: Input should be 'user' or 'assistant'");
    }
    auto content = m.find("content");
    if (content == m.end()) return Invalid(at + ".content: Field required");
    auto text = ContentText(*content, at + ".content");
    if (!text.ok()) return text.status();
    auto* pm = g.add_messages();
    pm->set_role(role->get<std::string>());
    pm->set_content(*text);
  }
  if ((*messages)[0]["role"] != "user") return Invalid("messages: the first message must use the 'user' role");

  if (auto system = j.find("system"); system != j.end() && !system->is_null()) {
    auto text = ContentText(*system, "system");
    if (!text.ok()) return text.status();
    g.set_system(*text);
  }
  if (auto stream = j.find("stream"); stream != j.end() && !stream->is_null()) {
    if (!stream->is_boolean()) return Invalid("stream: Input should be a valid boolean");
    out.stream = stream->get<bool>();
  }
  if (auto stops = j.find("stop_sequences"); stops != j.end() && !stops->is_null()) {
    if (!stops->is_array()) return Invalid("stop_sequences: Input should be a valid list");
    for (const auto& s : *stops) {
      if (!s.is_string()) return Invalid("stop_sequences: each item should be a string");
      g.add_stop_sequences(s.get<std::string>());
    }
  }
  if (auto t = j.find("temperature"); t != j.end() && !t->is_null()) {
    if (!t->is_number()) return Invalid("temperature: Input should be a valid number");
    const double v = t->get<double>();
    if (v < 0 || v > 1) return Invalid("temperature: Input should be between 0 and 1");
    g.set_temperature(static_cast<float>(v));
  }
  return out;
}

std::string SseEvent(const std::string& type, const std::string& json_text, const std::string& id) {
  std::string out;
  if (!id.empty()) out += "id: " + id + "\n";
  out += "event: " + type + "\ndata: " + json_text + "\n\n";
  return out;
}

std::string MessageStartEvent(const std::string& message_id, const std::string& model,
                              const Usage& usage, const std::string& id) {
  json j = {{"type", "message_start"},
            {"message",
             {{"id", message_id},
              {"type", "message"},
              {"role", "assistant"},
              {"content", json::array()},
              {"model", model},
              {"stop_reason", nullptr},
              {"stop_sequence", nullptr},
              {"usage", UsageJson(usage)}}}};
  return SseEvent("message_start", j.dump(), id);
}

std::string ContentBlockStartEvent(const std::string& id) {
  json j = {{"type", "content_block_start"},
            {"index", 0},
            {"content_block", {{"type", "text"}, {"text", ""}}}};
  return SseEvent("content_block_start", j.dump(), id);
}

std::string TextDeltaEvent(const std::string& text, const std::string& id) {
  json j = {{"type", "content_block_delta"},
            {"index", 0},
            {"delta", {{"type", "text_delta"}, {"text", text}}}};
  return SseEvent("content_block_delta", j.dump(), id);
}

std::string ContentBlockStopEvent(const std::string& id) {
  json j = {{"type", "content_block_stop"}, {"index", 0}};
  return SseEvent("content_block_stop", j.dump(), id);
}

std::string MessageDeltaEvent(const std::string& stop_reason, const std::string& stop_sequence,
                              const Usage& usage, const std::string& id) {
  json j = {{"type", "message_delta"},
            {"delta", {{"stop_reason", stop_reason}, {"stop_sequence", NullableString(stop_sequence)}}},
            {"usage", UsageJson(usage)}};
  return SseEvent("message_delta", j.dump(), id);
}

std::string MessageStopEvent(const std::string& id) {
  return SseEvent("message_stop", json({{"type", "message_stop"}}).dump(), id);
}

std::string MessageJson(const std::string& message_id, const std::string& model,
                        const std::string& text, const std::string& stop_reason,
                        const std::string& stop_sequence, const Usage& usage) {
  json j = {{"id", message_id},
            {"type", "message"},
            {"role", "assistant"},
            {"model", model},
            {"content", json::array({{{"type", "text"}, {"text", text}}})},
            {"stop_reason", stop_reason},
            {"stop_sequence", NullableString(stop_sequence)},
            {"usage", UsageJson(usage)}};
  return j.dump();
}

}  // namespace sb::gateway
