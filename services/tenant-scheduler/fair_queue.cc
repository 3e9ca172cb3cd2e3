#include "tenant-scheduler/fair_queue.h"

#include <algorithm>

namespace sb::scheduler {

FairQueue::FairQueue(Options options) : options_(options) {}

void FairQueue::SetWeight(const std::string& org, double weight) {
  if (weight <= 0) return;
  if (active_.count(org)) active_weight_ += weight - Weight(org);
  weights_[org] = weight;
}

void FairQueue::Activity(const std::string& org, int delta) {
  auto [it, added] = active_.try_emplace(org, 0);
  it->second += delta;
  if (added) active_weight_ += Weight(org);
  if (it->second > 0) return;
  active_.erase(it);
  // Exactly 0 with nobody active, whatever rounding the sums gathered.
  active_weight_ = active_.empty() ? 0 : active_weight_ - Weight(org);
}

bool FairQueue::UnderShare(const std::string& org, int capacity) const {
  auto it = active_.find(org);
  int held = 0;
  for (const Lane& lane : lanes_) {
    if (auto o = lane.orgs.find(org); o != lane.orgs.end()) held += o->second.in_service;
  }
  if (held == 0) return true;
  // Alone, it is the org the kept slots are kept from.
  if (active_.size() <= (it == active_.end() ? 0u : 1u)) return false;
  const double weights = active_weight_ + (it == active_.end() ? Weight(org) : 0);
  const double share = capacity * Weight(org) / weights;
  return held + 1 <= share;
}

void FairQueue::SetConcurrencyCap(const std::string& org, int cap) {
  caps_[org] = std::max(0, cap);
}

double FairQueue::Weight(const std::string& org) const {
  auto it = weights_.find(org);
  return it == weights_.end() ? 1.0 : it->second;
}

int FairQueue::Cap(const std::string& org) const {
  auto it = caps_.find(org);
  return it == caps_.end() ? 0 : it->second;
}

void FairQueue::Charge(Lane& lane, const std::string& org, double amount) {
  OrgState& s = lane.orgs[org];
  const bool listed = !s.queue.empty();
  if (listed) lane.backlogged.erase(KeyOf(org, s));
  s.counter += amount;
  if (listed) lane.backlogged.insert(KeyOf(org, s));
}

absl::Status FairQueue::Push(QueuedRequest r, std::optional<uint64_t>* evicted) {
  Lane& lane = lanes_[Index(r.priority)];
  if (where_.count(r.id)) {
    return absl::InvalidArgumentError("request " + std::to_string(r.id) + " is already queued");
  }
  if (lane.queued >= options_.max_queued) {
    // The longest queue gives up its newest request, unless it is this
    // org's own (or no longer than it would be).
    const OrgState* own = nullptr;
    if (auto it = lane.orgs.find(r.org); it != lane.orgs.end()) own = &it->second;
    const size_t own_queued = own == nullptr ? 0 : own->queue.size();
    const OrgState* longest = nullptr;
    for (const auto& [name, s] : lane.orgs) {
      if (longest == nullptr || s.queue.size() > longest->queue.size()) longest = &s;
    }
    if (evicted == nullptr || longest == nullptr || longest->queue.size() <= own_queued + 1) {
      return absl::ResourceExhaustedError("the queue is full");
    }
    const uint64_t victim = longest->queue.back().id;
    Remove(victim);
    *evicted = victim;
  }
  where_.emplace(r.id, std::make_pair(r.priority, r.org));
  Activity(r.org, 1);
  OrgState& s = lane.orgs[r.org];
  if (s.queue.empty()) {
    // Backlogged again: lifted so that idle time banks no credit (and, under
    // its share, lowered: see the header).
    const double floor =
        lane.backlogged.empty() ? lane.last_served : std::get<0>(*lane.backlogged.begin());
    const bool under_share = capacity_ > 0 && UnderShare(r.org, capacity_);
    s.counter = under_share ? floor : std::max(s.counter, floor);
    s.since = ++lane.backlogs;
    lane.backlogged.insert(KeyOf(r.org, s));
  }
  lane.queued += 1;
  lane.queued_tokens += static_cast<int64_t>(r.input_tokens) + r.max_tokens;
  s.queued_tokens += static_cast<int64_t>(r.input_tokens) + r.max_tokens;
  s.queue.push_back(std::move(r));
  return absl::OkStatus();
}

std::optional<std::pair<int, std::string>> FairQueue::Next() const {
  for (int i = 0; i < kPriorities; ++i) {
    const Lane& lane = lanes_[i];
    for (const auto& [counter, since, org] : lane.backlogged) {
      if (UnderCap(org, static_cast<Priority>(i))) return std::make_pair(i, org);
    }
  }
  return std::nullopt;
}

const QueuedRequest* FairQueue::Peek() const {
  auto next = Next();
  if (!next) return nullptr;
  return &lanes_[next->first].orgs.at(next->second).queue.front();
}

std::optional<QueuedRequest> FairQueue::Pop() {
  auto next = Next();
  if (!next) return std::nullopt;
  Lane& lane = lanes_[next->first];
  const std::string& org = next->second;
  OrgState& s = lane.orgs[org];
  lane.backlogged.erase(KeyOf(org, s));
  QueuedRequest r = std::move(s.queue.front());
  s.queue.pop_front();
  where_.erase(r.id);
  lane.queued -= 1;
  lane.queued_tokens -= static_cast<int64_t>(r.input_tokens) + r.max_tokens;
  s.queued_tokens -= static_cast<int64_t>(r.input_tokens) + r.max_tokens;
  s.in_service += 1;
  s.input_served += r.input_tokens;
  s.counter += options_.w_in * r.input_tokens / Weight(org);
  lane.last_served = s.counter;
  if (!s.queue.empty()) lane.backlogged.insert(KeyOf(org, s));
  return r;
}

bool FairQueue::UnderCap(const std::string& org, Priority priority) const {
  const int cap = Cap(org);
  return cap <= 0 || in_service(org, priority) < cap;
}

void FairQueue::AdmitDirect(const std::string& org, Priority priority, int input_tokens) {
  Lane& lane = lanes_[Index(priority)];
  OrgState& s = lane.orgs[org];
  s.in_service += 1;
  s.input_served += input_tokens;
  Activity(org, 1);
  Charge(lane, org, options_.w_in * input_tokens / Weight(org));
}

void FairQueue::ChargeOutput(const std::string& org, Priority priority, int tokens) {
  if (tokens <= 0) return;
  Lane& lane = lanes_[Index(priority)];
  lane.orgs[org].output_served += tokens;
  Charge(lane, org, options_.w_out * tokens / Weight(org));
}

void FairQueue::ChargeInput(const std::string& org, Priority priority, int tokens) {
  if (tokens == 0) return;
  Lane& lane = lanes_[Index(priority)];
  lane.orgs[org].input_served += tokens;
  Charge(lane, org, options_.w_in * tokens / Weight(org));
}

std::vector<FairQueue::OrgView> FairQueue::Orgs(Priority priority) const {
  std::vector<OrgView> out;
  for (const auto& [org, s] : lanes_[Index(priority)].orgs) {
    out.push_back({org, s.counter, static_cast<int>(s.queue.size()), s.in_service, s.input_served,
                   s.output_served});
  }
  return out;
}

void FairQueue::Finished(const std::string& org, Priority priority) {
  Lane& lane = lanes_[Index(priority)];
  auto it = lane.orgs.find(org);
  if (it != lane.orgs.end() && it->second.in_service > 0) {
    it->second.in_service -= 1;
    Activity(org, -1);
  }
}

bool FairQueue::Remove(uint64_t id) {
  auto w = where_.find(id);
  if (w == where_.end()) return false;
  const auto [priority, org] = w->second;
  where_.erase(w);
  Lane& lane = lanes_[Index(priority)];
  OrgState& s = lane.orgs[org];
  auto it = std::find_if(s.queue.begin(), s.queue.end(),
                         [id](const QueuedRequest& r) { return r.id == id; });
  if (it == s.queue.end()) return false;
  lane.queued -= 1;
  lane.queued_tokens -= static_cast<int64_t>(it->input_tokens) + it->max_tokens;
  s.queued_tokens -= static_cast<int64_t>(it->input_tokens) + it->max_tokens;
  s.queue.erase(it);
  if (s.queue.empty()) lane.backlogged.erase(KeyOf(org, s));
  Activity(org, -1);
  return true;
}

int64_t FairQueue::TokensAhead(const std::string& org, Priority priority, int64_t tokens) const {
  const Lane& lane = lanes_[Index(priority)];
  int64_t own = tokens;
  if (auto it = lane.orgs.find(org); it != lane.orgs.end()) own += it->second.queued_tokens;
  const double per_weight = static_cast<double>(own) / Weight(org);
  int64_t ahead = own;
  for (const auto& [counter, since, other] : lane.backlogged) {
    if (other == org) continue;
    const int64_t queued = lane.orgs.at(other).queued_tokens;
    ahead += std::min(queued, static_cast<int64_t>(per_weight * Weight(other)));
  }
  if (priority == Priority::kBatch) ahead += lanes_[Index(Priority::kInteractive)].queued_tokens;
  return ahead;
}

double FairQueue::counter(const std::string& org, Priority priority) const {
  const Lane& lane = lanes_[Index(priority)];
  auto it = lane.orgs.find(org);
  return it == lane.orgs.end() ? 0 : it->second.counter;
}

int FairQueue::in_service(const std::string& org, Priority priority) const {
  const Lane& lane = lanes_[Index(priority)];
  auto it = lane.orgs.find(org);
  return it == lane.orgs.end() ? 0 : it->second.in_service;
}

}  // namespace sb::scheduler
