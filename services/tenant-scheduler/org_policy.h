// How the tenant scheduler treats each org: its fairness weight and tier
// (orgs, set with `sbadmin set-org`) and its concurrency caps (rate_limits,
// set with `sbadmin set-limits --concurrency`), read from PostgreSQL.
//
// OrgPolicy reloads everything on its own thread every `refresh_every` (a
// full reload: two small tables, a few thousand rows at most; cheaper to
// reason about than an incremental read, which would have to handle late
// commits and deleted rows) and publishes an immutable snapshot when
// something changed. When PostgreSQL is down the last snapshot stays in
// force; before the first successful load every org has weight 1 and no
// cap.
//
//   sb::scheduler::PgOrgPolicySource source(pg);
//   sb::scheduler::OrgPolicy policy(source, absl::Seconds(2));
//   policy.OnChange([&](const auto& snapshot) {
//     std::lock_guard lock(queue_mu);
//     for (auto& [model, queue] : queues) snapshot->ApplyTo(model, queue);
//   });
//   policy.Start();
//
// Caps: an org's cap on a model is the concurrency of its org-wide row
// (key_id = '', model = '') or of its row for that model (key_id = '',
// model = M), the smaller when both exist. Key-scoped rows are the
// gateway's business. The scheduler holds one queue per model, so an
// org-wide cap bounds each model's queue separately; the gateway's
// admission enforces it across models.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/periodic.h"

namespace sb {
class PgPool;
}

namespace sb::metrics {
class Counter;
}

namespace sb::scheduler {

class FairQueue;

// One org's settings, as stored.
struct OrgRow {
  std::string org;
  double weight = 1;
  std::string tier;
};

// One concurrency cap: `model` "" for every model.
struct CapRow {
  std::string org;
  std::string model;
  int64_t concurrency = 0;
};

// What a reload reads. Blocks; called from OrgPolicy's thread.
class OrgPolicySource {
 public:
  virtual ~OrgPolicySource() = default;
  virtual absl::StatusOr<std::vector<OrgRow>> Orgs() = 0;
  // Org-wide and per-model concurrency rows with a limit set (no key rows).
  virtual absl::StatusOr<std::vector<CapRow>> Caps() = 0;
};

class PgOrgPolicySource final : public OrgPolicySource {
 public:
  explicit PgOrgPolicySource(PgPool& pg) : pg_(pg) {}
  absl::StatusOr<std::vector<OrgRow>> Orgs() override;
  absl::StatusOr<std::vector<CapRow>> Caps() override;

 private:
  PgPool& pg_;
};

// Immutable once published; share it freely between threads.
class OrgPolicySnapshot {
 public:
  OrgPolicySnapshot() = default;  // every org: weight 1, no tier, no cap
  OrgPolicySnapshot(const std::vector<OrgRow>& orgs, const std::vector<CapRow>& caps,
                    uint64_t version);

  // 1 for an org not known (yet).
  double Weight(const std::string& org) const;
  // "" for an org not known.
  std::string Tier(const std::string& org) const;
  // Most requests of `org` on `model` at once; 0 is no cap.
  int ConcurrencyCap(const std::string& org, const std::string& model) const;

  // Sets every known org's weight and cap on `model`'s queue (caps of 0
  // included, so a removed cap is lifted). FairQueue is not thread-safe:
  // hold the lock that guards `queue`. An org deleted from the database
  // keeps its last values in the queue (it can send no more requests).
  void ApplyTo(const std::string& model, FairQueue& queue) const;

  // 0 before the first load; grows by one with each published change.
  uint64_t version() const { return version_; }
  size_t org_count() const { return orgs_.size(); }
  // Same settings (the version aside).
  bool SameAs(const OrgPolicySnapshot& other) const;

 private:
  struct Org {
    double weight = 1;
    std::string tier;
    int all_models_cap = 0;           // 0: none
    std::map<std::string, int> caps;  // model -> cap
    bool operator==(const Org&) const = default;
  };
  std::map<std::string, Org> orgs_;
  uint64_t version_ = 0;
};

class OrgPolicy {
 public:
  using Listener = std::function<void(const std::shared_ptr<const OrgPolicySnapshot>&)>;

  // `source` must outlive the policy. Nothing is read before Start() or
  // Refresh().
  OrgPolicy(OrgPolicySource& source, absl::Duration refresh_every);
  ~OrgPolicy();  // Stop()
  OrgPolicy(const OrgPolicy&) = delete;
  OrgPolicy& operator=(const OrgPolicy&) = delete;

  // Registers a listener, called after each published change on the thread
  // that loaded it (the refresh thread, or Refresh()'s caller), outside the
  // policy's lock, one call at a time. Register before Start().
  void OnChange(Listener listener);
  // Starts the refresh thread; its first load runs at once.
  void Start();
  // Stops and joins the refresh thread (a reload under way finishes).
  // Idempotent.
  void Stop();
  // One reload now, on the caller's thread. On an error the last snapshot
  // stays and the failure is counted (and logged once per outage).
  absl::Status Refresh();

  // The settings in force; never null.
  std::shared_ptr<const OrgPolicySnapshot> Snapshot() const;
  uint64_t version() const { return Snapshot()->version(); }
  double Weight(const std::string& org) const { return Snapshot()->Weight(org); }
  std::string Tier(const std::string& org) const { return Snapshot()->Tier(org); }
  int ConcurrencyCap(const std::string& org, const std::string& model) const {
    return Snapshot()->ConcurrencyCap(org, model);
  }
  // Reloads that failed since this policy started.
  uint64_t failures() const { return failures_.load(); }

 private:
  OrgPolicySource& source_;
  metrics::Counter& failures_metric_;
  std::atomic<uint64_t> failures_{0};

  mutable std::mutex mu_;  // guards snapshot_, listeners_
  std::shared_ptr<const OrgPolicySnapshot> snapshot_;
  std::vector<Listener> listeners_;

  std::mutex refresh_mu_;  // one reload at a time; guards in_outage_
  bool in_outage_ = false;

  Periodic reload_;  // last: stopped before the members it uses go
};

}  // namespace sb::scheduler
