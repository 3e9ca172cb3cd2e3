// Server-sent events out of the gateway, read back the way a browser's
// EventSource reads them (WHATWG HTML, "Server-sent events", 9.2.6
// "Interpreting an event stream"), with a reader written here from the
// spec. Two parts:
//
//  1. sse::Event / sse::Data / sse::Comment with arbitrary names, ids and
//     data within their documented contract (sse.h): each event must come
//     back with exactly its type, data and last event id.
//  2. The dialects' stream encoders (Anthropic and OpenAI) with arbitrary
//     model names and token text, as the engine produces them: every event
//     must be one JSON document, and the text the client reassembles from
//     the deltas must be the text that went in (as valid UTF-8).
//
// Any mismatch aborts.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_check.h"
#include "gateway/dialects/anthropic.h"
#include "gateway/dialects/fields.h"
#include "gateway/dialects/openai.h"
#include "gateway/sse.h"
#include "json/bounded_json.h"

namespace {

// --- UTF-8 decode (WHATWG Encoding, "UTF-8 decoder") ----------------------
//
// An event stream is always decoded as UTF-8 with replacement; the result
// is kept as UTF-8 bytes here. Each maximal invalid subpart becomes one
// U+FFFD. `errors` counts the replacements.
std::string DecodeUtf8(std::string_view in, int* errors) {
  static constexpr char kReplacement[] = "\xEF\xBF\xBD";
  std::string out;
  size_t i = 0;
  while (i < in.size()) {
    const auto b = static_cast<unsigned char>(in[i]);
    if (b < 0x80) {
      out += static_cast<char>(b);
      ++i;
      continue;
    }
    size_t needed;
    unsigned char lower = 0x80, upper = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) {
      needed = 1;
    } else if (b >= 0xE0 && b <= 0xEF) {
      needed = 2;
      if (b == 0xE0) lower = 0xA0;
      if (b == 0xED) upper = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
      needed = 3;
      if (b == 0xF0) lower = 0x90;
      if (b == 0xF4) upper = 0x8F;
    } else {
      out += kReplacement;
      ++*errors;
      ++i;
      continue;
    }
    size_t seen = 0;
    bool bad = false;
    while (seen < needed) {
      if (i + 1 + seen >= in.size()) {
        bad = true;
        break;
      }
      const auto c = static_cast<unsigned char>(in[i + 1 + seen]);
      if (c < lower || c > upper) {
        bad = true;
        break;
      }
      lower = 0x80;
      upper = 0xBF;
      ++seen;
    }
    if (bad) {
      // The bytes consumed so far are one error; the offending byte is
      // read again as the start of what follows.
      out += kReplacement;
      ++*errors;
      i += 1 + seen;
      continue;
    }
    out.append(in.substr(i, 1 + needed));
    i += 1 + needed;
  }
  return out;
}

// --- event stream interpretation (WHATWG HTML 9.2.6) -----------------------

struct DispatchedEvent {
  std::string type;
  std::string data;
  std::string last_event_id;
  bool operator==(const DispatchedEvent&) const = default;
};

class EventStreamReader {
 public:
  // Feeds a whole stream (already decoded). An event not followed by a
  // blank line is incomplete and, at the end of the stream, discarded.
  std::vector<DispatchedEvent> Read(std::string_view stream) {
    std::vector<DispatchedEvent> events;
    // A leading U+FEFF BOM is ignored.
    if (stream.substr(0, 3) == "\xEF\xBB\xBF") stream.remove_prefix(3);
    size_t pos = 0;
    while (pos < stream.size()) {
      // Lines end in CRLF, a lone LF or a lone CR.
      size_t end = stream.find_first_of("\r\n", pos);
      if (end == std::string_view::npos) break;  // no end of line: incomplete
      const std::string_view line = stream.substr(pos, end - pos);
      pos = end + 1;
      if (stream[end] == '\r' && pos < stream.size() && stream[pos] == '\n') ++pos;
      ProcessLine(line, events);
    }
    return events;
  }

 private:
  void ProcessLine(std::string_view line, std::vector<DispatchedEvent>& events) {
    if (line.empty()) {
      Dispatch(events);
      return;
    }
    if (line.front() == ':') return;  // a comment
    std::string_view field = line, value;
    if (const size_t colon = line.find(':'); colon != std::string_view::npos) {
      field = line.substr(0, colon);
      value = line.substr(colon + 1);
      if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    }
    if (field == "event") {
      type_ = value;
    } else if (field == "data") {
      data_.append(value);
      data_ += '\n';
    } else if (field == "id") {
      if (value.find('\0') == std::string_view::npos) last_event_id_buffer_ = value;
    }
    // "retry" sets the reconnection time; other fields are ignored.
  }

  void Dispatch(std::vector<DispatchedEvent>& events) {
    last_event_id_ = last_event_id_buffer_;
    if (data_.empty()) {
      type_.clear();
      return;
    }
    data_.pop_back();  // the last line's LF
    events.push_back({type_.empty() ? "message" : type_, data_, last_event_id_});
    data_.clear();
    type_.clear();
  }

  std::string type_, data_, last_event_id_buffer_, last_event_id_;
};

std::vector<DispatchedEvent> ReadStream(std::string_view bytes) {
  int errors = 0;
  const std::string decoded = DecodeUtf8(bytes, &errors);
  return EventStreamReader().Read(decoded);
}

std::string Decoded(std::string_view s) {
  int errors = 0;
  return DecodeUtf8(s, &errors);
}

bool IsOneLine(std::string_view s) { return s.find_first_of("\r\n") == std::string_view::npos; }

// --- part 1: the framing functions -----------------------------------------

void FuzzFraming(FuzzedDataProvider& in) {
  std::string stream;
  std::vector<DispatchedEvent> expected;
  std::string last_id;
  const int count = in.ConsumeIntegralInRange(1, 8);
  for (int i = 0; i < count && in.remaining_bytes() > 0; ++i) {
    const int kind = in.ConsumeIntegralInRange(0, 2);
    const std::string a = in.ConsumeRandomLengthString(64);
    const std::string b = in.ConsumeRandomLengthString(256);
    const std::string id = in.ConsumeRandomLengthString(32);
    if (kind == 0) {
      // Event(name, data, id): sse.h asks for one-line arguments, non-empty
      // data, and an id without NUL.
      if (!IsOneLine(a) || !IsOneLine(b) || b.empty() || !IsOneLine(id) ||
          id.find('\0') != std::string::npos) {
        continue;
      }
      stream += sb::gateway::sse::Event(a, b, id);
      if (!id.empty()) last_id = Decoded(id);
      const std::string type = Decoded(a);
      expected.push_back({type.empty() ? "message" : type, Decoded(b), last_id});
    } else if (kind == 1) {
      if (!IsOneLine(b) || b.empty()) continue;
      stream += sb::gateway::sse::Data(b);
      expected.push_back({"message", Decoded(b), last_id});
    } else {
      if (!IsOneLine(a)) continue;
      stream += sb::gateway::sse::Comment(a);  // read and ignored
    }
  }
  SB_FUZZ_CHECK(ReadStream(stream) == expected);
}

// --- part 2: the dialects' streams -----------------------------------------

// The JSON of one event's data; every event the dialects write has one.
nlohmann::json EventJson(const DispatchedEvent& e) {
  auto j = sb::json::Parse(e.data);
  SB_FUZZ_CHECK(j.ok());
  return *std::move(j);
}

void FuzzDialectStreams(FuzzedDataProvider& in) {
  sb::pipeline::StartInfo start;
  start.model = in.ConsumeRandomLengthString(64);
  start.input_tokens = in.ConsumeIntegral<int>();
  std::vector<std::string> tokens;
  const int count = in.ConsumeIntegralInRange(0, 16);
  for (int i = 0; i < count; ++i) tokens.push_back(in.ConsumeRandomLengthString(32));
  sb::pipeline::FinishInfo finish;
  finish.stop_reason = in.ConsumeRandomLengthString(16);
  finish.stop_sequence = in.ConsumeRandomLengthString(16);
  finish.input_tokens = in.ConsumeIntegralInRange(0, 1 << 20);
  finish.output_tokens = in.ConsumeIntegralInRange(0, 1 << 20);
  const bool include_usage = in.ConsumeBool();
  const std::string error_message = in.ConsumeRandomLengthString(64);

  bool all_valid = sb::gateway::IsValidUtf8(start.model);
  std::string text;
  for (const auto& t : tokens) {
    all_valid = all_valid && sb::gateway::IsValidUtf8(t);
    text += t;
  }

  const sb::gateway::ReplyIds ids{"reply-id", 1700000000};
  sb::gateway::ApiRequest request;
  request.stream = true;
  request.include_usage = include_usage;

  // Anthropic: message_start, content_block_start, ping, deltas…,
  // content_block_stop, message_delta, message_stop.
  {
    sb::gateway::AnthropicDialect dialect;
    auto enc = dialect.NewStream(ids, request);
    std::string stream = enc->Start(start);
    for (const auto& t : tokens) stream += enc->Text(t);
    stream += enc->Finish(finish);
    stream += enc->Error(absl::UnavailableError(error_message));
    std::string got;
    const auto events = ReadStream(stream);
    SB_FUZZ_CHECK(events.size() == tokens.size() + 7);
    for (const auto& e : events) {
      const nlohmann::json j = EventJson(e);
      SB_FUZZ_CHECK(j.is_object() && j.contains("type") && j["type"] == e.type);
      if (e.type == "content_block_delta") got += j["delta"]["text"].get<std::string>();
      if (e.type == "message_start" && all_valid)
        SB_FUZZ_CHECK(j["message"]["model"] == start.model);
    }
    SB_FUZZ_CHECK(sb::gateway::IsValidUtf8(got));
    if (all_valid) SB_FUZZ_CHECK(got == text);
  }

  // OpenAI: chunks as unnamed events, an optional usage chunk, [DONE].
  {
    sb::gateway::OpenAiDialect dialect;
    auto enc = dialect.NewStream(ids, request);
    std::string stream = enc->Start(start);
    for (const auto& t : tokens) stream += enc->Text(t);
    stream += enc->Finish(finish);
    std::string got;
    const auto events = ReadStream(stream);
    SB_FUZZ_CHECK(events.size() == tokens.size() + 3 + (include_usage ? 1 : 0));
    SB_FUZZ_CHECK(events.back().data == "[DONE]");
    for (size_t i = 0; i + 1 < events.size(); ++i) {
      SB_FUZZ_CHECK(events[i].type == "message");
      const nlohmann::json j = EventJson(events[i]);
      SB_FUZZ_CHECK(j.is_object() && j["object"] == "chat.completion.chunk");
      if (all_valid) SB_FUZZ_CHECK(j["model"] == start.model);
      if (!j["choices"].empty() && j["choices"][0]["delta"].contains("content")) {
        got += j["choices"][0]["delta"]["content"].get<std::string>();
      }
    }
    SB_FUZZ_CHECK(sb::gateway::IsValidUtf8(got));
    if (all_valid) SB_FUZZ_CHECK(got == text);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  // The gateway's own UTF-8 check must agree with the WHATWG decoder on
  // what is valid: CheckText relies on it for everything clients send.
  {
    const std::string_view raw(reinterpret_cast<const char*>(data), size);
    int errors = 0;
    DecodeUtf8(raw, &errors);
    SB_FUZZ_CHECK(sb::gateway::IsValidUtf8(raw) == (errors == 0));
  }
  if (in.ConsumeBool()) {
    FuzzFraming(in);
  } else {
    FuzzDialectStreams(in);
  }
  return 0;
}
