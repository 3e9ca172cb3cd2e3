#include "gateway/last_event_id.h"

#include <charconv>
#include <limits>
#include <string>

namespace sb::gateway {

absl::StatusOr<int64_t> ParseLastEventId(std::string_view header, std::string_view message_id) {
  if (header.empty()) return 0;
  const auto invalid = [&] {
    return absl::InvalidArgumentError("Last-Event-ID must be '" + std::string(message_id) +
                                      ":<offset>' as sent in this stream's id: lines");
  };
  const auto colon = header.rfind(':');
  if (colon == std::string_view::npos || header.substr(0, colon) != message_id) return invalid();
  // Unsigned: no sign is accepted, not even "-0".
  uint64_t offset = 0;
  const char* const end = header.data() + header.size();
  const auto [stop, ec] = std::from_chars(header.data() + colon + 1, end, offset);
  // The whole rest must be the number: "id:5x" is not an id the stream sent.
  if (ec != std::errc() || stop != end ||
      offset > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return invalid();
  }
  return static_cast<int64_t>(offset);
}

absl::StatusOr<std::string> ParseEventCursor(std::string_view header) {
  if (header.empty()) return std::string();
  const auto whole_u64 = [](std::string_view s) {
    uint64_t n = 0;
    const auto [stop, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
    return !s.empty() && ec == std::errc() && stop == s.data() + s.size();
  };
  const auto dash = header.find('-');
  if (dash == std::string_view::npos || !whole_u64(header.substr(0, dash)) ||
      !whole_u64(header.substr(dash + 1))) {
    return absl::InvalidArgumentError(
        "Last-Event-ID must be the id of an event this stream sent (<digits>-<digits>)");
  }
  return std::string(header);
}

}  // namespace sb::gateway
