#include "tenant-scheduler/org_policy.h"

#include <algorithm>
#include <limits>

#include "core/log.h"
#include "core/metrics.h"
#include "storage/pg.h"
#include "tenant-scheduler/fair_queue.h"

namespace sb::scheduler {
namespace {

constexpr const char* kLoadOrgs = "SELECT id, weight, tier FROM orgs";
// Key-scoped rows bound one key at the gateway; the scheduler sees orgs.
constexpr const char* kLoadCaps =
    "SELECT org_id, model, concurrency FROM rate_limits "
    "WHERE key_id = '' AND concurrency IS NOT NULL";

int ToCap(int64_t concurrency) {
  return static_cast<int>(std::clamp<int64_t>(concurrency, 0, std::numeric_limits<int>::max()));
}

// The smaller of two caps, 0 being none.
int Tighter(int a, int b) {
  if (a == 0) return b;
  if (b == 0) return a;
  return std::min(a, b);
}

}  // namespace

absl::StatusOr<std::vector<OrgRow>> PgOrgPolicySource::Orgs() {
  return pg_.Run<std::vector<OrgRow>>([](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    std::vector<OrgRow> out;
    for (const auto& r : tx.exec(kLoadOrgs)) {
      out.push_back({r[0].as<std::string>(), r[1].as<double>(), r[2].as<std::string>()});
    }
    return out;
  });
}

absl::StatusOr<std::vector<CapRow>> PgOrgPolicySource::Caps() {
  return pg_.Run<std::vector<CapRow>>([](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    std::vector<CapRow> out;
    for (const auto& r : tx.exec(kLoadCaps)) {
      out.push_back({r[0].as<std::string>(), r[1].as<std::string>(), r[2].as<int64_t>()});
    }
    return out;
  });
}

OrgPolicySnapshot::OrgPolicySnapshot(const std::vector<OrgRow>& orgs,
                                     const std::vector<CapRow>& caps, uint64_t version)
    : version_(version) {
  for (const auto& row : orgs) {
    Org& org = orgs_[row.org];
    // The table's CHECKs keep weights > 0 and finite; a source that breaks
    // that must not stall an org's queue.
    org.weight =
        row.weight > 0 && row.weight < std::numeric_limits<double>::infinity() ? row.weight : 1;
    org.tier = row.tier;
  }
  for (const auto& row : caps) {
    const int cap = ToCap(row.concurrency);
    if (cap == 0) continue;
    Org& org = orgs_[row.org];
    if (row.model.empty()) {
      org.all_models_cap = cap;
    } else {
      org.caps[row.model] = cap;
    }
  }
}

double OrgPolicySnapshot::Weight(const std::string& org) const {
  auto it = orgs_.find(org);
  return it == orgs_.end() ? 1 : it->second.weight;
}

std::string OrgPolicySnapshot::Tier(const std::string& org) const {
  auto it = orgs_.find(org);
  return it == orgs_.end() ? std::string() : it->second.tier;
}

int OrgPolicySnapshot::ConcurrencyCap(const std::string& org, const std::string& model) const {
  auto it = orgs_.find(org);
  if (it == orgs_.end()) return 0;
  auto per_model = it->second.caps.find(model);
  return Tighter(it->second.all_models_cap,
                 per_model == it->second.caps.end() ? 0 : per_model->second);
}

void OrgPolicySnapshot::ApplyTo(const std::string& model, FairQueue& queue) const {
  for (const auto& [name, org] : orgs_) {
    queue.SetWeight(name, org.weight);
    auto per_model = org.caps.find(model);
    queue.SetConcurrencyCap(
        name, Tighter(org.all_models_cap, per_model == org.caps.end() ? 0 : per_model->second));
  }
}

bool OrgPolicySnapshot::SameAs(const OrgPolicySnapshot& other) const {
  return orgs_ == other.orgs_;
}

OrgPolicy::OrgPolicy(OrgPolicySource& source, absl::Duration refresh_every)
    : source_(source),
      failures_metric_(metrics::Default().GetCounter(
          "sb_scheduler_org_policy_reload_failures_total",
          "Reloads of org weights and caps from PostgreSQL that failed (the last ones stay)")),
      snapshot_(std::make_shared<const OrgPolicySnapshot>()),
      reload_(refresh_every, [this] { (void)Refresh(); }) {}  // Refresh counts its failures

OrgPolicy::~OrgPolicy() { Stop(); }

void OrgPolicy::OnChange(Listener listener) {
  std::lock_guard<std::mutex> lock(mu_);
  listeners_.push_back(std::move(listener));
}

void OrgPolicy::Start() { reload_.Start(/*run_now=*/true); }

void OrgPolicy::Stop() { reload_.Stop(); }

absl::Status OrgPolicy::Refresh() {
  std::lock_guard<std::mutex> reload(refresh_mu_);
  auto orgs = source_.Orgs();
  absl::StatusOr<std::vector<CapRow>> caps =
      orgs.ok() ? source_.Caps() : absl::StatusOr<std::vector<CapRow>>(orgs.status());
  if (!caps.ok()) {
    ++failures_;
    failures_metric_.Inc();
    if (!in_outage_) {
      in_outage_ = true;
      spdlog::warn("scheduler: org weights and caps not reloaded, the last ones stay: {}",
                   caps.status().ToString());
    }
    return caps.status();
  }
  if (in_outage_) {
    in_outage_ = false;
    spdlog::info("scheduler: org weights and caps reloaded again");
  }
  std::shared_ptr<const OrgPolicySnapshot> current = Snapshot();
  auto next = std::make_shared<const OrgPolicySnapshot>(*orgs, *caps, current->version() + 1);
  // Listeners re-apply every org to every queue: only on a real change.
  if (current->version() > 0 && next->SameAs(*current)) return absl::OkStatus();
  std::vector<Listener> listeners;
  {
    std::lock_guard<std::mutex> lock(mu_);
    snapshot_ = next;
    listeners = listeners_;
  }
  spdlog::info("scheduler: org policy version {}: {} orgs", next->version(), next->org_count());
  for (const auto& listener : listeners) listener(next);
  return absl::OkStatus();
}

std::shared_ptr<const OrgPolicySnapshot> OrgPolicy::Snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  return snapshot_;
}

}  // namespace sb::scheduler
