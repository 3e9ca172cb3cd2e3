// The Anthropic Messages API shapes: request validation into a
// GenerateRequest, the SSE events of a streamed reply, and the JSON of a
// whole one. No I/O here.
#pragma once

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "switchboard/inference/v1/inference.pb.h"

namespace sb::gateway {

struct MessagesRequest {
  switchboard::inference::v1::GenerateRequest generate;
  bool stream = false;
};

// A request body that must be a JSON object; InvalidArgument otherwise.
absl::StatusOr<nlohmann::json> ParseJsonObject(const std::string& body);

// Parses and validates a POST /v1/messages body. Errors are InvalidArgument
// with the message a client needs ("max_tokens: Field required").
absl::StatusOr<MessagesRequest> ParseMessagesRequest(const std::string& body);

struct Usage {
  int input_tokens = 0;
  int output_tokens = 0;
};

// One SSE event: "event: <type>\ndata: <json>\n\n", with an `id:` line
// first when `id` is given.
std::string SseEvent(const std::string& type, const std::string& json,
                     const std::string& id = "");

std::string MessageStartEvent(const std::string& message_id, const std::string& model,
                              const Usage& usage, const std::string& id = "");
std::string ContentBlockStartEvent(const std::string& id = "");
std::string TextDeltaEvent(const std::string& text, const std::string& id = "");
std::string ContentBlockStopEvent(const std::string& id = "");
std::string MessageDeltaEvent(const std::string& stop_reason, const std::string& stop_sequence,
                              const Usage& usage, const std::string& id = "");
std::string MessageStopEvent(const std::string& id = "");

std::string MessageJson(const std::string& message_id, const std::string& model,
                        const std::string& text, const std::string& stop_reason,
                        const std::string& stop_sequence, const Usage& usage);

}  // namespace sb::gateway
