// The public API's error contract: one mapping from absl::Status to an HTTP
// status and an Anthropic error type, and the error body
// {"type":"error","error":{"type":...,"message":...}}.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace sb::gateway {

struct ApiError {
  int http_status = 500;
  std::string type = "api_error";
  std::string message;
  int retry_after_seconds = 0;  // 0: no retry-after header
};

ApiError ToApiError(const absl::Status& status);
std::string ErrorBody(const ApiError& e);
// The SSE `error` event carrying the same body.
std::string ErrorEvent(const ApiError& e);

}  // namespace sb::gateway
