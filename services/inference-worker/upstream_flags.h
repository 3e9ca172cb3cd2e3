// The --upstream_* flags, read into UpstreamOptions. Linked into the worker
// binary only (its main calls UpstreamOptionsFromFlags when --engine is
// openai or anthropic).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "inference-worker/upstream_engine.h"

namespace sb::worker {

// `models` is the worker's --models. Errors (a bad map, an unreadable key
// file, no URL) are configuration errors: the caller exits with them.
absl::StatusOr<UpstreamOptions> UpstreamOptionsFromFlags(std::vector<std::string> models);

// Parses "a=b,c=d" (platform model = upstream model).
absl::StatusOr<std::map<std::string, std::string>> ParseModelMap(std::string_view text);

}  // namespace sb::worker
