#include "gateway/api_error.h"

#include "http/http_server.h"

namespace sb::gateway {

ApiError ToApiError(const absl::Status& status) {
  ApiError e;
  e.message = std::string(status.message());
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition:
      e.http_status = 400;
      e.type = "invalid_request_error";
      break;
    case absl::StatusCode::kUnauthenticated:
      e.http_status = 401;
      e.type = "authentication_error";
      break;
    case absl::StatusCode::kPermissionDenied:
      e.http_status = 403;
      e.type = "permission_error";
      break;
    case absl::StatusCode::kNotFound:
      e.http_status = 404;
      e.type = "not_found_error";
      break;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted:
      e.http_status = 409;
      e.type = "invalid_request_error";
      break;
    case absl::StatusCode::kResourceExhausted:
      e.http_status = 429;
      e.type = "rate_limit_error";
      e.retry_after_seconds = 1;
      break;
    case absl::StatusCode::kUnavailable:
      e.http_status = 529;
      e.type = "overloaded_error";
      e.retry_after_seconds = 1;
      break;
    case absl::StatusCode::kDeadlineExceeded:
      e.http_status = 504;
      e.type = "api_error";
      break;
    default:
      e.http_status = 500;
      e.type = "api_error";
  }
  if (e.message.empty()) e.message = "internal error";
  return e;
}

std::string ErrorBody(const ApiError& e) { return http::ErrorJson(e.type, e.message); }

std::string ErrorEvent(const ApiError& e) { return "event: error\ndata: " + ErrorBody(e) + "\n\n"; }

}  // namespace sb::gateway
