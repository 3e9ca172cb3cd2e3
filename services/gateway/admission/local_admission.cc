#include "gateway/admission/local_admission.h"

#include <algorithm>
#include <cmath>

namespace sb::gateway {

LocalAdmission::RowState& LocalAdmission::StateFor(const LimitRow& row) {
  return rows_[row.Scope()];
}

TokenBucket& LocalAdmission::Bucket(RowState& s, Dimension d, int64_t limit, absl::Time now) {
  auto it = s.buckets.find(static_cast<int>(d));
  if (it == s.buckets.end()) {
    it = s.buckets.emplace(static_cast<int>(d), TokenBucket(static_cast<double>(limit), now)).first;
  } else if (it->second.capacity() != static_cast<double>(limit)) {
    it->second.SetCapacity(static_cast<double>(limit), now);
  }
  return it->second;
}

void LocalAdmission::Expire(RowState& s, absl::Time now) {
  for (auto it = s.leases.begin(); it != s.leases.end();) {
    it = it->second <= now ? s.leases.erase(it) : std::next(it);
  }
}

void LocalAdmission::Admit(const AdmissionRequest& req, const std::vector<LimitRow>& rows,
                           absl::Time now, Done done) {
  done(Decide(req, rows, now));  // outside the lock: `done` answers requests
}

AdmissionDecision LocalAdmission::Decide(const AdmissionRequest& req,
                                         const std::vector<LimitRow>& rows, absl::Time now) {
  AdmissionDecision d;
  d.local = true;
  std::vector<LimitState> states;
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t costs[3] = {1, req.input_tokens, req.max_tokens};
  // Check every bucket first: all or nothing.
  for (const auto& row : rows) {
    RowState& s = StateFor(row);
    const int64_t full[3] = {row.rpm, row.input_tpm, row.output_tpm};
    const int64_t limits[4] = {Share(row.rpm), Share(row.input_tpm), Share(row.output_tpm),
                               Share(row.concurrency)};
    for (int dim = 0; dim < 3; ++dim) {
      if (limits[dim] == 0) continue;
      // "Never" is judged against the whole limit, not this replica's
      // share: a cost between the two fits once Redis is back.
      if (costs[dim] > full[dim]) {
        d.refusal = {static_cast<Dimension>(dim), full[dim], absl::ZeroDuration(), true,
                     row.Scope()};
        return d;
      }
      TokenBucket& b = Bucket(s, static_cast<Dimension>(dim), limits[dim], now);
      if (costs[dim] > limits[dim]) {
        d.refusal = {static_cast<Dimension>(dim), limits[dim], absl::Seconds(1), false,
                     row.Scope()};
        return d;
      }
      if (b.tokens(now) < static_cast<double>(costs[dim])) {
        d.refusal = {static_cast<Dimension>(dim), limits[dim],
                     b.TimeUntil(static_cast<double>(costs[dim]), now), false, row.Scope()};
        return d;
      }
    }
    if (limits[3] > 0) {
      Expire(s, now);
      if (static_cast<int64_t>(s.leases.size()) >= limits[3]) {
        d.refusal = {Dimension::kConcurrency, limits[3], absl::Seconds(1), false, row.Scope()};
        return d;
      }
    }
  }
  for (const auto& row : rows) {
    RowState& s = StateFor(row);
    const int64_t limits[4] = {Share(row.rpm), Share(row.input_tpm), Share(row.output_tpm),
                               Share(row.concurrency)};
    for (int dim = 0; dim < 3; ++dim) {
      LimitState st;
      if (limits[dim] > 0) {
        TokenBucket& b = Bucket(s, static_cast<Dimension>(dim), limits[dim], now);
        b.TryTake(static_cast<double>(costs[dim]), now);
        st = {true, limits[dim], static_cast<int64_t>(std::floor(b.tokens(now))), b.FullAt(now)};
      }
      states.push_back(st);
    }
    if (limits[3] > 0) s.leases[req.lease_id] = now + lease_ttl_;
  }
  d.admitted = true;
  d.view = TightestView(states);
  return d;
}

void LocalAdmission::Complete(const AdmissionRequest& req, const std::vector<LimitRow>& rows,
                              absl::Time now, int64_t input_tokens, int64_t output_tokens,
                              Settled settled) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& row : rows) {
      RowState& s = StateFor(row);
      if (row.input_tpm > 0) {
        Bucket(s, Dimension::kInputTokens, Share(row.input_tpm), now)
            .Give(static_cast<double>(req.input_tokens - input_tokens), now);
      }
      if (row.output_tpm > 0) {
        Bucket(s, Dimension::kOutputTokens, Share(row.output_tpm), now)
            .Give(static_cast<double>(std::max<int64_t>(0, req.max_tokens - output_tokens)), now);
      }
      s.leases.erase(req.lease_id);
    }
  }
  if (settled) settled(absl::OkStatus());
}

void LocalAdmission::Renew(const AdmissionRequest& req, const std::vector<LimitRow>& rows,
                           absl::Time now, Settled settled) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& row : rows) {
      RowState& s = StateFor(row);
      auto it = s.leases.find(req.lease_id);
      if (it != s.leases.end()) it->second = now + lease_ttl_;
    }
  }
  if (settled) settled(absl::OkStatus());
}

size_t LocalAdmission::leases(const LimitRow& row, absl::Time now) {
  std::lock_guard<std::mutex> lock(mu_);
  RowState& s = StateFor(row);
  Expire(s, now);
  return s.leases.size();
}

}  // namespace sb::gateway
