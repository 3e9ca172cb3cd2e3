// Admission in this process only: the fallback when Redis cannot be
// reached (each gateway then admits limit / replicas), and the reference
// implementation of the arithmetic. Thread-safe.
#pragma once

#include <map>
#include <mutex>
#include <string>

#include "gateway/admission/admission.h"
#include "gateway/admission/token_bucket.h"

namespace sb::gateway {

class LocalAdmission final : public Admission {
 public:
  // Every limit is divided by `share` (the number of gateway replicas), and
  // concurrency leases last `lease_ttl` unless renewed.
  LocalAdmission(int share, absl::Duration lease_ttl)
      : share_(share < 1 ? 1 : share), lease_ttl_(lease_ttl) {}

  void Admit(const AdmissionRequest& req, const std::vector<LimitRow>& rows, absl::Time now,
             Done done) override;
  void Complete(const AdmissionRequest& req, const std::vector<LimitRow>& rows, absl::Time now,
                int64_t input_tokens, int64_t output_tokens, Settled settled = nullptr) override;
  void Renew(const AdmissionRequest& req, const std::vector<LimitRow>& rows, absl::Time now,
             Settled settled = nullptr) override;

  // Leases held on a row now (tests).
  size_t leases(const LimitRow& row, absl::Time now);

 private:
  struct RowState {
    std::map<int, TokenBucket> buckets;        // by Dimension
    std::map<std::string, absl::Time> leases;  // lease id -> expiry
  };
  int64_t Share(int64_t limit) const {
    return limit == 0 ? 0 : std::max<int64_t>(1, limit / share_);
  }
  AdmissionDecision Decide(const AdmissionRequest& req, const std::vector<LimitRow>& rows,
                           absl::Time now);
  RowState& StateFor(const LimitRow& row);                                       // requires mu_
  TokenBucket& Bucket(RowState& s, Dimension d, int64_t limit, absl::Time now);  // requires mu_
  static void Expire(RowState& s, absl::Time now);

  const int share_;
  const absl::Duration lease_ttl_;
  std::mutex mu_;
  std::map<std::string, RowState> rows_;  // by LimitRow::Scope()
};

}  // namespace sb::gateway
