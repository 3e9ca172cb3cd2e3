// Admission at the edge: every limit row that applies to a request (its
// org's, its model's, its key's) must admit it, in four dimensions, as
// Anthropic documents its own limits:
//   requests       1 a request, from a bucket of `rpm` a minute;
//   input tokens   counted at admission (an estimate, corrected to the
//                  exact count when the request completes);
//   output tokens  `max_tokens` reserved at admission, the unused part
//                  given back when the request completes;
//   concurrency    a lease held for the life of the request, renewed while
//                  it runs, returned at the end — and if the gateway holding
//                  it dies, by expiry.
// One admission is all or nothing: no bucket is charged unless every one
// admits.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "gateway/admission/limits.h"

namespace sb::gateway {

enum class Dimension { kRequests = 0, kInputTokens = 1, kOutputTokens = 2, kConcurrency = 3 };
std::string_view DimensionName(Dimension d);  // "requests", "input tokens", ...

struct AdmissionRequest {
  std::string org_id;
  std::string key_id;
  std::string model;
  std::string lease_id;  // unique per request (its request id)
  int64_t input_tokens = 0;
  int64_t max_tokens = 0;
  bool local = false;  // admitted by the in-process fallback
};

// The state of one limit after an admission.
struct LimitState {
  bool present = false;
  int64_t limit = 0;
  int64_t remaining = 0;
  absl::Time reset;  // when the bucket is full again
};

// What the response headers show: per dimension, the tightest limit (the
// least remaining) among the rows that applied.
struct RateLimitView {
  LimitState requests, input_tokens, output_tokens;
};

struct Refusal {
  Dimension dimension = Dimension::kRequests;
  int64_t limit = 0;
  absl::Duration retry_after;
  // The request can never fit (max_tokens above the output limit, say).
  bool never = false;
  std::string scope;  // the row that refused
};

struct AdmissionDecision {
  bool admitted = false;
  RateLimitView view;
  Refusal refusal;     // when not admitted
  bool local = false;  // decided by the in-process fallback, not Redis
};

class Admission {
 public:
  using Done = std::function<void(absl::StatusOr<AdmissionDecision>)>;
  virtual ~Admission() = default;
  // Unavailable when the shared state cannot be reached.
  virtual void Admit(const AdmissionRequest& req, const std::vector<LimitRow>& rows, absl::Time now,
                     Done done) = 0;
  // Complete and Renew are sent without waiting; `settled` (optional) hears
  // when they took effect (or failed: the leases then expire by themselves
  // and the buckets refill).
  using Settled = std::function<void(absl::Status)>;
  // The request is over: corrects the input charge to `input_tokens`,
  // gives back the output tokens not used, frees the concurrency leases.
  virtual void Complete(const AdmissionRequest& req, const std::vector<LimitRow>& rows,
                        absl::Time now, int64_t input_tokens, int64_t output_tokens,
                        Settled settled = nullptr) = 0;
  // Extends the request's concurrency leases (it still runs).
  virtual void Renew(const AdmissionRequest& req, const std::vector<LimitRow>& rows, absl::Time now,
                     Settled settled = nullptr) = 0;
};

// The view (tightest per dimension) of per-row states, three a row
// (requests, input tokens, output tokens).
RateLimitView TightestView(const std::vector<LimitState>& states);
// When a bucket holding `remaining` of `per_minute` is full again.
absl::Time FullAt(int64_t per_minute, int64_t remaining, absl::Time now);

}  // namespace sb::gateway
