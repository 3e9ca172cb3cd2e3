// The tenant scheduler's leases on workers, as the opaque string the holder
// passes to the worker (GenerateRequest.lease_id):
//
//   <scheduler id>.<sequence>.<expiry, unix ms>.<MAC>
//
// The MAC (HMAC-SHA256, first 16 bytes, hex) covers those fields and the
// worker id and request id the lease was granted for, under a key the
// granting replica gave that worker at registration. So a worker accepts
// only leases granted for itself and for this request, and knows which
// replica to report to; nothing else is needed from the scheduler on the
// request's path.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace sb {

struct LeaseClaims {
  std::string scheduler_id;  // letters, digits and '-' only
  uint64_t sequence = 0;
  int64_t expires_unix_ms = 0;
};

std::string SignLease(std::string_view key, const LeaseClaims& claims, std::string_view worker_id,
                      std::string_view request_id);

// The claims of a well-formed lease, unchecked (InvalidArgument otherwise).
absl::StatusOr<LeaseClaims> ParseLease(std::string_view lease);

// Whether `lease` was signed under `key` for this worker and request.
// Expiry is the caller's to check.
bool VerifyLease(std::string_view key, std::string_view lease, std::string_view worker_id,
                 std::string_view request_id);

}  // namespace sb
