#include "tenant-scheduler/worker_registry.h"

#include "tenant-scheduler/router.h"

namespace sb::scheduler {

bool WorkerRegistry::IsLive(const WorkerState& w, absl::Time now) const {
  return !w.down && now - w.last_heartbeat < ttl_;
}

absl::StatusOr<std::string> WorkerRegistry::Register(const std::string& id,
                                                     const std::string& address,
                                                     const std::vector<std::string>& models,
                                                     int max_concurrency, absl::Time now,
                                                     const std::string& session,
                                                     const std::string& new_session) {
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = workers_.find(id);
      it != workers_.end() && IsLive(it->second, now) && it->second.session != session) {
    return absl::AlreadyExistsError("worker id " + id + " is held by a live worker");
  }
  WorkerState& w = workers_[id];
  if (w.session.empty() || w.session != session) w.session = new_session;
  w.id = id;
  w.address = address;
  w.models = std::set<std::string>(models.begin(), models.end());
  w.max_concurrency = max_concurrency;
  w.last_heartbeat = now;
  w.down = false;
  for (const auto& m : models) model_first_seen_.emplace(m, now);
  return w.session;
}

WorkerRegistry::Beat WorkerRegistry::Heartbeat(const std::string& id, int in_flight, absl::Time now,
                                               const std::string& session, ReportedLoad load) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = workers_.find(id);
  if (it == workers_.end() || it->second.down) return Beat::kUnknown;
  if (it->second.session != session) return Beat::kWrongSession;
  it->second.last_heartbeat = now;
  it->second.reported_in_flight = in_flight;
  it->second.cached = {load.cached_prefixes.begin(), load.cached_prefixes.end()};
  it->second.load = std::move(load);
  return Beat::kOk;
}

bool WorkerRegistry::SessionMatches(const std::string& id, const std::string& session) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = workers_.find(id);
  return it != workers_.end() && !session.empty() && it->second.session == session;
}

bool WorkerRegistry::ModelKnown(const std::string& model) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [id, w] : workers_) {
    if (w.models.count(model)) return true;
  }
  return false;
}

std::vector<ModelEntry> WorkerRegistry::ListModels(absl::Time now) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<ModelEntry> out;
  for (const auto& [model, first_seen] : model_first_seen_) {
    ModelEntry e{model, first_seen, 0};
    for (const auto& [id, w] : workers_) {
      if (w.models.count(model) && IsLive(w, now)) ++e.live_workers;
    }
    out.push_back(std::move(e));
  }
  return out;
}

std::optional<Pick> WorkerRegistry::Acquire(const std::string& model, absl::Time now, NoPick* why,
                                            const std::vector<uint64_t>& prefix) {
  std::lock_guard<std::mutex> lock(mu_);
  WorkerState* best = nullptr;
  double best_score = 0;
  bool known = false, live = false;
  for (auto& [id, w] : workers_) {
    if (!w.models.count(model)) continue;
    known = true;
    if (!IsLive(w, now)) continue;
    live = true;
    if (w.max_concurrency > 0 && w.in_flight + w.load.foreign_in_flight >= w.max_concurrency) {
      continue;
    }
    const double score = RouteScore(w, prefix, RouterWeights{});
    if (best == nullptr || score < best_score) {
      best = &w;
      best_score = score;
    }
  }
  if (best == nullptr) {
    if (why != nullptr) {
      *why = !known ? NoPick::kUnknownModel : !live ? NoPick::kNoLiveWorker : NoPick::kAllFull;
    }
    return std::nullopt;
  }
  ++best->in_flight;
  return Pick{best->id, best->address};
}

WorkerRegistry::Room WorkerRegistry::RoomFor(const std::string& model, absl::Time now) const {
  constexpr int64_t kUnlimited = 1 << 20;
  std::lock_guard<std::mutex> lock(mu_);
  Room room;
  for (const auto& [id, w] : workers_) {
    if (!w.models.count(model) || !IsLive(w, now)) continue;
    const int64_t cap = w.max_concurrency > 0 ? w.max_concurrency : kUnlimited;
    room.capacity += cap;
    room.free += std::max<int64_t>(0, cap - w.in_flight - w.load.foreign_in_flight);
  }
  return room;
}

std::optional<Pick> WorkerRegistry::AnyLive(const std::string& model, absl::Time now,
                                            NoPick* why) const {
  std::lock_guard<std::mutex> lock(mu_);
  bool known = false;
  for (const auto& [id, w] : workers_) {
    if (!w.models.count(model)) continue;
    known = true;
    if (IsLive(w, now)) return Pick{w.id, w.address};
  }
  if (why != nullptr) *why = known ? NoPick::kNoLiveWorker : NoPick::kUnknownModel;
  return std::nullopt;
}

void WorkerRegistry::Release(const std::string& worker_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = workers_.find(worker_id);
  if (it != workers_.end() && it->second.in_flight > 0) --it->second.in_flight;
}

void WorkerRegistry::MarkDown(const std::string& worker_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = workers_.find(worker_id);
  if (it != workers_.end()) it->second.down = true;
}

std::vector<std::string> WorkerRegistry::Sweep(absl::Time now) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> dead;
  for (auto& [id, w] : workers_) {
    if (!w.down && now - w.last_heartbeat >= ttl_) {
      w.down = true;
      dead.push_back(id);
    }
  }
  return dead;
}

std::vector<WorkerState> WorkerRegistry::List() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<WorkerState> out;
  for (const auto& [id, w] : workers_) out.push_back(w);
  return out;
}

}  // namespace sb::scheduler
