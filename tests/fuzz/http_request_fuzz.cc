// Bytes from a client socket -> sb::http::ParseRequest, then what handlers
// do with a request: Header() and QueryParam(). Checks that an accepted
// request is what the server promises its handlers.
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "fuzz_check.h"
#include "http/request_parse.h"

namespace {

// A small body limit, so that the fuzzer also reaches the 413 path.
constexpr size_t kMaxBody = 4096;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view wire(reinterpret_cast<const char*>(data), size);
  auto r = sb::http::ParseRequest(wire, kMaxBody);
  if (!r.ok()) {
    SB_FUZZ_CHECK(r.status().code() == absl::StatusCode::kInvalidArgument ||
                  r.status().code() == absl::StatusCode::kResourceExhausted);
    return 0;
  }
  SB_FUZZ_CHECK(!r->method.empty());
  SB_FUZZ_CHECK(r->body.size() <= kMaxBody);
  SB_FUZZ_CHECK(r->body.size() <= wire.size());
  // The target splits at its first '?': nothing is lost or added.
  SB_FUZZ_CHECK(r->path.find('?') == std::string::npos);
  SB_FUZZ_CHECK(r->target ==
                (r->target.find('?') == std::string::npos ? r->path : r->path + "?" + r->query));
  for (const auto& [name, value] : r->headers) {
    SB_FUZZ_CHECK(!name.empty());
    for (char c : name) SB_FUZZ_CHECK(!(c >= 'A' && c <= 'Z'));
    SB_FUZZ_CHECK(r->Header(name) == value);
  }
  // Every parameter the query holds: QueryParam finds the first one of a
  // name, with the value after its first '='.
  std::map<std::string, std::string> first;
  size_t pos = 0;
  while (pos <= r->query.size()) {
    size_t amp = r->query.find('&', pos);
    if (amp == std::string::npos) amp = r->query.size();
    const std::string part = r->query.substr(pos, amp - pos);
    const size_t eq = part.find('=');
    first.try_emplace(part.substr(0, eq), eq == std::string::npos ? "" : part.substr(eq + 1));
    pos = amp + 1;
  }
  for (const auto& [name, value] : first) SB_FUZZ_CHECK(r->QueryParam(name) == value);
  for (const char* name : {"", "limit", "after_id", "before_id", "cursor", "beta"}) {
    SB_FUZZ_CHECK(r->QueryParam(name).size() <= r->query.size());
  }
  return 0;
}
