// The Last-Event-ID header of a reconnecting EventSource, against the
// message id in the URL: ParseLastEventId must accept exactly the ids the
// stream sends ("<message_id>:<offset>") and nothing else; and the same
// header as GET /v1/events takes it: ParseEventCursor accepts exactly
// "<u64>-<u64>".
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_check.h"
#include "gateway/last_event_id.h"

namespace {

// GET /v1/events' Last-Event-ID: accepted exactly when it is two unsigned
// 64-bit decimals joined by '-', and returned as is.
void CheckEventCursor(const std::string& header) {
  auto r = sb::gateway::ParseEventCursor(header);
  if (!r.ok()) {
    SB_FUZZ_CHECK(r.status().code() == absl::StatusCode::kInvalidArgument);
    SB_FUZZ_CHECK(!header.empty());
    return;
  }
  SB_FUZZ_CHECK(*r == header);
  if (header.empty()) return;
  const size_t dash = header.find('-');
  SB_FUZZ_CHECK(dash != std::string::npos && dash > 0 && dash + 1 < header.size());
  for (size_t i = 0; i < header.size(); ++i) {
    if (i != dash) SB_FUZZ_CHECK(header[i] >= '0' && header[i] <= '9');
  }
  // Each part fits in 64 bits: at most 20 digits (leading zeros aside).
  for (const std::string& part : {header.substr(0, dash), header.substr(dash + 1)}) {
    const size_t first = part.find_first_not_of('0');
    const std::string significant = first == std::string::npos ? "0" : part.substr(first);
    SB_FUZZ_CHECK(significant.size() < 20 ||
                  (significant.size() == 20 && significant <= "18446744073709551615"));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  const std::string message_id = in.ConsumeRandomLengthString(160);
  const int64_t offset = in.ConsumeIntegral<int64_t>();
  // Most headers a client sends name the right message: start from it
  // half of the time so that the offset parsing gets exercised.
  std::string header = in.ConsumeBool() ? message_id + ":" : "";
  header += in.ConsumeRemainingBytesAsString();

  // What the stream itself sends is always accepted, as sent.
  if (offset >= 0) {
    auto sent =
        sb::gateway::ParseLastEventId(message_id + ":" + std::to_string(offset), message_id);
    SB_FUZZ_CHECK(sent.ok() && *sent == offset);
  }

  CheckEventCursor(header);
  // What an event's id looks like: always accepted.
  CheckEventCursor(std::to_string(static_cast<uint64_t>(offset)) + "-" + std::to_string(size));
  SB_FUZZ_CHECK(sb::gateway::ParseEventCursor(std::to_string(static_cast<uint64_t>(offset)) + "-" +
                                              std::to_string(size))
                    .ok());

  auto r = sb::gateway::ParseLastEventId(header, message_id);
  if (!r.ok()) {
    SB_FUZZ_CHECK(r.status().code() == absl::StatusCode::kInvalidArgument);
    return 0;
  }
  SB_FUZZ_CHECK(*r >= 0);
  if (header.empty()) {
    SB_FUZZ_CHECK(*r == 0);
    return 0;
  }
  // Accepted: exactly "<message_id>:<digits>", and the digits are the value.
  SB_FUZZ_CHECK(header.size() > message_id.size() + 1);
  SB_FUZZ_CHECK(header.compare(0, message_id.size(), message_id) == 0);
  SB_FUZZ_CHECK(header[message_id.size()] == ':');
  const std::string digits = header.substr(message_id.size() + 1);
  for (char c : digits) SB_FUZZ_CHECK(c >= '0' && c <= '9');
  int64_t value = 0;
  for (char c : digits) value = value * 10 + (c - '0');  // no overflow: *r parsed it
  SB_FUZZ_CHECK(value == *r);
  return 0;
}
