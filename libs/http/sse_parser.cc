#include "http/sse_parser.h"

namespace sb::http {

absl::Status SseParser::Feed(std::string_view piece,
                             const std::function<void(const SseEvent&)>& on_event) {
  if (failed_) return absl::FailedPreconditionError("the event stream already failed");
  size_t i = 0;
  if (after_cr_ && !piece.empty() && piece[0] == '\n') i = 1;  // CRLF split across pieces
  after_cr_ = false;
  while (i < piece.size()) {
    const size_t end = piece.find_first_of("\r\n", i);
    if (end == std::string_view::npos) {
      line_.append(piece.substr(i));
      break;
    }
    std::string_view line = piece.substr(i, end - i);
    if (!line_.empty()) {
      line_.append(line);
      line = line_;
    }
    if (line.size() > max_bytes_) return Fail();
    Line(line, on_event);
    if (event_.data.size() > max_bytes_) return Fail();
    line_.clear();
    i = end + 1;
    if (piece[end] == '\r') {
      if (i < piece.size()) {
        if (piece[i] == '\n') ++i;
      } else {
        after_cr_ = true;
      }
    }
  }
  if (line_.size() > max_bytes_) return Fail();
  return absl::OkStatus();
}

absl::Status SseParser::Fail() {
  failed_ = true;
  return absl::ResourceExhaustedError("an event stream line or event exceeds the limit");
}

void SseParser::Line(std::string_view line, const std::function<void(const SseEvent&)>& on_event) {
  if (line.empty()) {
    if (has_data_) {
      event_.id = last_id_;
      on_event(event_);
    }
    event_.event.clear();
    event_.data.clear();
    has_data_ = false;
    return;
  }
  if (line[0] == ':') return;  // a comment (keep-alive)
  std::string_view field = line;
  std::string_view value;
  if (const size_t colon = line.find(':'); colon != std::string_view::npos) {
    field = line.substr(0, colon);
    value = line.substr(colon + 1);
    if (!value.empty() && value[0] == ' ') value.remove_prefix(1);
  }
  if (field == "data") {
    if (has_data_) event_.data.push_back('\n');
    event_.data.append(value);
    has_data_ = true;
  } else if (field == "event") {
    event_.event.assign(value);
  } else if (field == "id") {
    if (value.find('\0') == std::string_view::npos) last_id_.assign(value);
  }
  // "retry" and unknown fields are ignored, as the specification says.
}

}  // namespace sb::http
