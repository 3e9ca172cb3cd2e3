// AdmissionFilter: the request's limits (the rows of LimitsCache that apply
// to its org, key and model) must admit it before it runs. An admitted
// request carries the rate-limit headers of the tightest limits, keeps its
// concurrency leases alive while it runs, and gives back what it did not
// use when its response completes; a refused one gets 429 naming the limit
// and a retry-after (or 400, when it could never fit).
//
// FallbackAdmission is what the filter talks to: Redis, and when Redis
// cannot be reached, the configured fallback (`local`: an in-process
// limiter at limit / replicas; `open`: admit; `closed`: refuse with 529),
// counted in sb_gateway_ratelimit_fallbacks_total and logged.
#pragma once

#include <atomic>
#include <memory>

#include "core/thread_pool.h"
#include "core/timers.h"
#include "gateway/admission/admission.h"
#include "gateway/admission/limits.h"
#include "gateway/admission/local_admission.h"
#include "gateway/filters/filter.h"
#include "pipeline/pipeline.h"

namespace sb::metrics {
class Counter;
}

namespace sb::gateway {

enum class FallbackMode { kLocal, kOpen, kClosed };
absl::StatusOr<FallbackMode> ParseFallbackMode(std::string_view s);

class FallbackAdmission final : public Admission {
 public:
  FallbackAdmission(Admission& primary, LocalAdmission& local, FallbackMode mode);
  void Admit(const AdmissionRequest& req, const std::vector<LimitRow>& rows, absl::Time now,
             Done done) override;
  // Complete and Renew go where the request was admitted (req.local).
  void Complete(const AdmissionRequest& req, const std::vector<LimitRow>& rows, absl::Time now,
                int64_t input_tokens, int64_t output_tokens, Settled settled = nullptr) override;
  void Renew(const AdmissionRequest& req, const std::vector<LimitRow>& rows, absl::Time now,
             Settled settled = nullptr) override;

 private:
  Admission& primary_;
  LocalAdmission& local_;
  FallbackMode mode_;
  metrics::Counter& fallbacks_;
  std::atomic<int64_t> last_log_ms_{0};
};

class AdmissionFilter final : public Filter {
 public:
  AdmissionFilter(LimitsCache& limits, Admission& admission, Timers& timers, ThreadPool& pool,
                  absl::Duration lease_ttl)
      : limits_(limits),
        admission_(admission),
        timers_(timers),
        pool_(pool),
        lease_ttl_(lease_ttl) {}
  std::string_view name() const override { return "admission"; }
  void Handle(const std::shared_ptr<RequestContext>& ctx, Next next) override;

 private:
  struct Admitted;
  void Decided(const std::shared_ptr<RequestContext>& ctx, Next next, std::shared_ptr<Admitted> a,
               absl::Time now, const absl::StatusOr<AdmissionDecision>& d);

  LimitsCache& limits_;
  Admission& admission_;
  Timers& timers_;
  ThreadPool& pool_;
  absl::Duration lease_ttl_;
};

// Whether any of the rows limits concurrency (holds leases).
bool LimitsConcurrency(const std::vector<LimitRow>& rows);
// What admission counts as a request's input before the worker has
// counted it: about four bytes a token, never less than one.
int64_t EstimateInputTokens(const pipeline::Request& request);
// The error for a refusal: 429 with retry-after, or 400 when it can never
// fit.
absl::Status RefusalStatus(const Refusal& refusal, const AdmissionRequest& req);

}  // namespace sb::gateway
