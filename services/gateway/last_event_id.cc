#include "gateway/last_event_id.h"

#include <charconv>
#include <string>

namespace sb::gateway {

absl::StatusOr<int64_t> ParseLastEventId(std::string_view header, std::string_view message_id) {
  if (header.empty()) return 0;
  const auto colon = header.rfind(':');
  int64_t offset = -1;
  if (colon == std::string_view::npos || header.substr(0, colon) != message_id ||
      std::from_chars(header.data() + colon + 1, header.data() + header.size(), offset).ec !=
          std::errc() ||
      offset < 0) {
    return absl::InvalidArgumentError("Last-Event-ID must be '" + std::string(message_id) +
                                      ":<offset>' as sent in this stream's id: lines");
  }
  return offset;
}

}  // namespace sb::gateway
