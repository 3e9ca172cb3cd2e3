// When to retry, carried on an absl::Status as a payload so that it crosses
// layers (the pipeline, the dialects) to the client's retry-after header.
//
//   return WithRetryAfter(absl::ResourceExhaustedError("slow down"), absl::Seconds(30));
//   ... RetryAfterSeconds(status)  // 30
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "absl/time/time.h"

namespace sb {

inline constexpr char kRetryAfterPayload[] = "type.switchboard.dev/retry-after";

// Any error the client should retry after `retry_after` (whole seconds,
// rounded up, at least 1).
inline absl::Status WithRetryAfter(absl::Status status, absl::Duration retry_after) {
  const int64_t seconds =
      std::max<int64_t>(1, absl::ToInt64Seconds(absl::Ceil(retry_after, absl::Seconds(1))));
  status.SetPayload(kRetryAfterPayload, absl::Cord(std::to_string(seconds)));
  return status;
}

// 0 when not set.
inline int RetryAfterSeconds(const absl::Status& status) {
  auto p = status.GetPayload(kRetryAfterPayload);
  return p ? std::atoi(std::string(*p).c_str()) : 0;
}

}  // namespace sb
