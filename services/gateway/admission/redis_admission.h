// Admission shared by every gateway replica: one Lua script per admission
// (one Redis round trip) checks and charges every bucket of every row that
// applies, atomically, so limits are exact under concurrency across
// replicas. Keys carry the org as a hash tag (`rl:{org}:...`), so the keys
// of one admission share a slot and the same script runs on Redis Cluster.
// Time comes from the gateway's clock (one per call), so the replicas'
// clocks should agree (NTP); a clock behind never refills a bucket twice.
//
// Per row, four keys: a hash {t: tokens, ts: ms} per token bucket
// (requests, input, output; absent = full; it expires once it would be
// full again) and a sorted set of concurrency leases scored by expiry.
#pragma once

#include <string>

#include "gateway/admission/admission.h"
#include "storage/redis_pipeline.h"
#include "storage/redis_script.h"

namespace sb::gateway {

class RedisAdmission final : public Admission {
 public:
  RedisAdmission(AsyncRedis& redis, absl::Duration lease_ttl);

  void Admit(const AdmissionRequest& req, const std::vector<LimitRow>& rows, absl::Time now,
             Done done) override;
  void Complete(const AdmissionRequest& req, const std::vector<LimitRow>& rows, absl::Time now,
                int64_t input_tokens, int64_t output_tokens, Settled settled = nullptr) override;
  void Renew(const AdmissionRequest& req, const std::vector<LimitRow>& rows, absl::Time now,
             Settled settled = nullptr) override;

  // The keys of a row's four counters (tests read them).
  static std::vector<std::string> Keys(const LimitRow& row);

 private:
  AsyncRedis& redis_;
  absl::Duration lease_ttl_;
  const RedisScript admit_, complete_, renew_;
};

}  // namespace sb::gateway
