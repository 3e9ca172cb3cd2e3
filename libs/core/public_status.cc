#include "core/public_status.h"

#include <string>

#include <spdlog/spdlog.h>

namespace sb {

bool IsCallerFacing(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kUnauthenticated:
      return true;
    default:
      return false;
  }
}

absl::Status PublicStatus(const absl::Status& status, std::string_view request_id,
                          std::string_view what) {
  if (status.ok() || IsCallerFacing(status.code())) return status;
  spdlog::warn("request_id={} {} failed: {}", request_id, what, status.ToString());
  const std::string w(what);
  std::string message;
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
      message = w + " is unavailable right now; retry shortly";
      break;
    case absl::StatusCode::kResourceExhausted:
      // A backend's (or gRPC's own) exhaustion is overload, never the
      // caller's rate limit: a 529, not a 429.
      return absl::UnavailableError(w + " is overloaded right now; retry shortly");
    case absl::StatusCode::kDeadlineExceeded:
      message = w + " took too long";
      break;
    case absl::StatusCode::kCancelled:
      message = w + " was cancelled";
      break;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted:
      message = w + " conflicted with a concurrent change; retry";
      break;
    default:
      message = w + " failed with an internal error (request " + std::string(request_id) + ")";
  }
  return absl::Status(status.code(), message);
}

}  // namespace sb
