// JSON request bodies parsed with bounds, so that no body can make the
// parser cost more than a small multiple of its own size: nesting deeper
// than `max_depth` or more than `max_values` values stop the parse at once
// with InvalidArgument (a body of 4 MiB of '[' stops after 65 bytes instead
// of building four million nested arrays).
//
//   auto body = sb::json::ParseObject(request.body);   // default limits
//   if (!body.ok()) return body.status();               // "... nests deeper than 64 levels"
//
// The DOM is nlohmann::json, built by our own SAX handler (nlohmann's parser
// calls back for every token; returning false aborts the parse).
#pragma once

#include <cstddef>
#include <string_view>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"

namespace sb::json {

struct Limits {
  int max_depth = 64;
  // Every value counts one: scalars, arrays, objects. Bounds the DOM to
  // about 100 bytes a value beyond the strings it holds.
  size_t max_values = 262144;
};

// Any JSON value.
absl::StatusOr<nlohmann::json> Parse(std::string_view text, const Limits& limits = {});
// A JSON object (a request body); anything else is InvalidArgument.
absl::StatusOr<nlohmann::json> ParseObject(std::string_view text, const Limits& limits = {});

// Serializes `j` compactly. Strings that are not valid UTF-8 (a path echoed
// in an error, a token split inside a character) have the bad bytes
// replaced by U+FFFD instead of throwing: every response body that may
// carry outside bytes is built with this.
std::string Dump(const nlohmann::json& j);

}  // namespace sb::json
