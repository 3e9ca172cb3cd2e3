// The `Last-Event-ID` a reconnecting EventSource sends to resume a chat
// reply stream. Every event of that stream carries
// `id: {message_id}:{offset}` (handlers/chat.h); the header must be one of
// those ids, and the stream resumes after that offset.
#pragma once

#include <cstdint>
#include <string_view>

#include "absl/status/statusor.h"

namespace sb::gateway {

// The offset to resume after: 0 when `header` is empty (a first
// connection), the decimal offset when `header` is exactly
// "<message_id>:<digits>". Anything else is InvalidArgument, including a
// header naming another message, a sign, trailing bytes, or an offset
// beyond int64.
absl::StatusOr<int64_t> ParseLastEventId(std::string_view header, std::string_view message_id);

// The `Last-Event-ID` of GET /v1/events: an event's id, "<ms>-<seq>" (two
// unsigned 64-bit decimals), returned as is; empty when the header is.
// Anything else is InvalidArgument.
absl::StatusOr<std::string> ParseEventCursor(std::string_view header);

}  // namespace sb::gateway
