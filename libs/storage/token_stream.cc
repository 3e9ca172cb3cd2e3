#include "storage/token_stream.h"

#include <charconv>

namespace sb {

std::string TokenStreamKey(const std::string& message_id) { return "stream:{" + message_id + "}"; }

std::vector<std::string> TokenStreamAddArgs(const std::string& message_id, const StreamEntry& e) {
  std::vector<std::string> args = {"XADD", TokenStreamKey(message_id),
                                   "0-" + std::to_string(e.offset)};
  switch (e.kind) {
    case StreamEntry::Kind::kDelta:
      args.insert(args.end(), {"type", "delta", "text", e.text});
      break;
    case StreamEntry::Kind::kEnd:
      args.insert(args.end(), {"type", "end", "stop_reason", e.stop_reason, "input_tokens",
                               std::to_string(e.input_tokens), "output_tokens",
                               std::to_string(e.output_tokens), "model", e.model});
      break;
    case StreamEntry::Kind::kError:
      args.insert(args.end(),
                  {"type", "error", "error_type", e.error_type, "message", e.error_message});
      break;
  }
  return args;
}

absl::StatusOr<StreamEntry> ParseStreamEntry(const RedisReply& entry) {
  if (entry.type != RedisReply::Type::kArray || entry.elements.size() != 2 ||
      entry.elements[1].type != RedisReply::Type::kArray) {
    return absl::DataLossError("malformed stream entry");
  }
  StreamEntry e;
  const std::string& id = entry.elements[0].str;
  const auto dash = id.find('-');
  if (dash == std::string::npos) return absl::DataLossError("malformed stream id " + id);
  const char* first = id.data() + dash + 1;
  const char* last = id.data() + id.size();
  if (std::from_chars(first, last, e.offset).ec != std::errc()) {
    return absl::DataLossError("malformed stream id " + id);
  }
  const auto& fields = entry.elements[1].elements;
  std::string type;
  for (size_t i = 0; i + 1 < fields.size(); i += 2) {
    const std::string& k = fields[i].str;
    const std::string& v = fields[i + 1].str;
    if (k == "type") type = v;
    else if (k == "text") e.text = v;
    else if (k == "stop_reason") e.stop_reason = v;
    else if (k == "input_tokens") e.input_tokens = std::atoi(v.c_str());
    else if (k == "output_tokens") e.output_tokens = std::atoi(v.c_str());
    else if (k == "model") e.model = v;
    else if (k == "error_type") e.error_type = v;
    else if (k == "message") e.error_message = v;
  }
  if (type == "delta") e.kind = StreamEntry::Kind::kDelta;
  else if (type == "end") e.kind = StreamEntry::Kind::kEnd;
  else if (type == "error") e.kind = StreamEntry::Kind::kError;
  else return absl::DataLossError("stream entry of unknown type '" + type + "'");
  return e;
}

absl::Status TokenStreamWriter::Append(const std::string& message_id, const StreamEntry& e) {
  auto r = redis_.Command(TokenStreamAddArgs(message_id, e));
  if (!r.ok()) return r.status();
  if (e.kind != StreamEntry::Kind::kDelta) {
    auto x = redis_.Command({"EXPIRE", TokenStreamKey(message_id), std::to_string(retention_.count())});
    if (!x.ok()) return x.status();
  }
  return absl::OkStatus();
}

}  // namespace sb
