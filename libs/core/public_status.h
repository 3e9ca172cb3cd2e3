// Errors that reach clients carry no internals: no addresses, worker ids,
// SQL or library messages. PublicStatus keeps the code of an error from a
// backend and, unless the code is one whose message is written for the
// caller (InvalidArgument, NotFound, FailedPrecondition, OutOfRange,
// PermissionDenied, Unauthenticated), replaces the message with a plain one
// that names the request id; the original is logged with the request id so
// an operator can find it. A backend's ResourceExhausted (a full engine,
// gRPC's own message-size limit) becomes Unavailable: overload, not the
// caller's rate limit.
//
//   auto st = PublicStatus(FromGrpcStatus(grpc_status), rid, "listing messages");
//   // Internal("postgres: ERROR: invalid byte sequence ...") becomes
//   // Internal("listing messages failed with an internal error (request req_01J...)")
#pragma once

#include <string_view>

#include "absl/status/status.h"

namespace sb {

// True when `code` carries a message meant for the caller.
bool IsCallerFacing(absl::StatusCode code);

absl::Status PublicStatus(const absl::Status& status, std::string_view request_id,
                          std::string_view what);

}  // namespace sb
