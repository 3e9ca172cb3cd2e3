// An incremental parser of server-sent events (the WHATWG "event stream"
// format) for clients of streaming APIs: feed it the body as it arrives, in
// pieces split anywhere, and it hands back each complete event.
//
// Lines end with LF, CRLF or a lone CR (a CR at the end of one piece and an
// LF at the start of the next are one line end). `data` lines of one event
// are joined with "\n"; comment lines (": ping") are skipped; an event is
// dispatched at a blank line, and only if it carried a data field. `id` is
// remembered across events as the specification says; `retry` is ignored.
//
//   SseParser parser;
//   absl::Status st = parser.Feed(piece, [&](const SseEvent& ev) {
//     if (ev.data == "[DONE]") ...;
//   });
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace sb::http {

struct SseEvent {
  std::string event;  // "" when the event named none ("message" by default)
  std::string data;
  std::string id;  // the last id seen on the stream
};

class SseParser {
 public:
  // A line (or an event's data) longer than `max_bytes` fails the stream:
  // an upstream cannot make the client buffer without bound.
  explicit SseParser(size_t max_bytes = 1 << 20) : max_bytes_(max_bytes) {}

  // Parses `piece`, calling `on_event` for each event it completes. After
  // an error (ResourceExhausted, over max_bytes) the parser is unusable.
  absl::Status Feed(std::string_view piece, const std::function<void(const SseEvent&)>& on_event);

 private:
  void Line(std::string_view line, const std::function<void(const SseEvent&)>& on_event);
  absl::Status Fail();

  const size_t max_bytes_;
  std::string line_;  // the partial line carried between pieces
  bool after_cr_ = false;
  bool has_data_ = false;
  SseEvent event_;
  std::string last_id_;
  bool failed_ = false;
};

}  // namespace sb::http
