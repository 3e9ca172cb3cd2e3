#include "tenant-scheduler/worker_registry.h"

namespace sb::scheduler {

bool WorkerRegistry::IsLive(const WorkerState& w, absl::Time now) const {
  return !w.down && now - w.last_heartbeat < ttl_;
}

void WorkerRegistry::Register(const std::string& id, const std::string& address,
                              const std::vector<std::string>& models, int max_concurrency,
                              absl::Time now) {
  std::lock_guard<std::mutex> lock(mu_);
  WorkerState& w = workers_[id];
  w.id = id;
  w.address = address;
  w.models = std::set<std::string>(models.begin(), models.end());
  w.max_concurrency = max_concurrency;
  w.last_heartbeat = now;
  w.down = false;
}

bool WorkerRegistry::Heartbeat(const std::string& id, int in_flight, absl::Time now) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = workers_.find(id);
  if (it == workers_.end() || it->second.down) return false;
  it->second.last_heartbeat = now;
  it->second.reported_in_flight = in_flight;
  return true;
}

bool WorkerRegistry::ModelKnown(const std::string& model) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [id, w] : workers_) {
    if (w.models.count(model)) return true;
  }
  return false;
}

std::vector<std::string> WorkerRegistry::Models() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::set<std::string> all;
  for (const auto& [id, w] : workers_) all.insert(w.models.begin(), w.models.end());
  return {all.begin(), all.end()};
}

std::optional<Pick> WorkerRegistry::Acquire(const std::string& model, absl::Time now) {
  std::lock_guard<std::mutex> lock(mu_);
  WorkerState* best = nullptr;
  for (auto& [id, w] : workers_) {
    if (!w.models.count(model) || !IsLive(w, now)) continue;
    if (best == nullptr || w.in_flight < best->in_flight) best = &w;
  }
  if (best == nullptr) return std::nullopt;
  ++best->in_flight;
  return Pick{best->id, best->address};
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
