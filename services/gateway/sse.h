// Server-sent events framing, in one place for every stream the gateway
// writes (https://html.spec.whatwg.org/multipage/server-sent-events.html).
//
// The bytes are written as given, so every argument must be one line: no
// CR or LF (JSON as nlohmann dumps it qualifies; a line break would end the
// field and start another). `data` must not be empty (a reader drops an
// event with no data), and an `id` must not hold NUL (a reader ignores such
// an id). Within that, a reader gets back exactly the event type, data and
// id that went in (tests/fuzz/sse_roundtrip checks this).
#pragma once

#include <string>
#include <string_view>

namespace sb::gateway::sse {

// "id: <id>\nevent: <event>\ndata: <data>\n\n"; the id line only when given.
std::string Event(std::string_view event, std::string_view data, std::string_view id = {});
// "data: <data>\n\n": an event with no name (the OpenAI dialect).
std::string Data(std::string_view data);
// ": <text>\n\n": a comment, which readers ignore (keeps idle streams alive).
std::string Comment(std::string_view text);

}  // namespace sb::gateway::sse
