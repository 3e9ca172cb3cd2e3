#include "core/timers.h"

#include "absl/time/clock.h"

namespace sb {

TimerThread::TimerThread() : thread_([this] { Loop(); }) {}

TimerThread::~TimerThread() { Stop(); }

void TimerThread::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return;
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

Timers::Id TimerThread::After(absl::Duration delay, std::function<void()> fn) {
  const absl::Time at = absl::Now() + delay;
  Id id;
  bool earliest;
  {
    std::lock_guard<std::mutex> lock(mu_);
    id = next_id_++;
    earliest = due_.empty() || at < due_.begin()->first;
    due_.emplace(at, id);
    timers_.emplace(id, std::make_pair(at, std::move(fn)));
  }
  if (earliest) cv_.notify_all();
  return id;
}

bool TimerThread::Cancel(Id id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = timers_.find(id);
  if (it == timers_.end()) return false;
  auto [first, last] = due_.equal_range(it->second.first);
  for (auto d = first; d != last; ++d) {
    if (d->second == id) {
      due_.erase(d);
      break;
    }
  }
  timers_.erase(it);
  return true;
}

size_t TimerThread::pending() const {
  std::lock_guard<std::mutex> lock(mu_);
  return timers_.size();
}

void TimerThread::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    if (due_.empty()) {
      cv_.wait(lock);
      continue;
    }
    const absl::Time at = due_.begin()->first;
    const absl::Time now = absl::Now();
    if (at > now) {
      cv_.wait_for(lock, absl::ToChronoNanoseconds(at - now));
      continue;
    }
    const Id id = due_.begin()->second;
    due_.erase(due_.begin());
    auto it = timers_.find(id);
    std::function<void()> fn = std::move(it->second.second);
    timers_.erase(it);
    lock.unlock();
    fn();
    lock.lock();
  }
}

void Repeating::Stop() {
  std::lock_guard<std::mutex> lock(mu_);
  stopped_ = true;
  if (timer_ != 0) timers_.Cancel(timer_);
  timer_ = 0;
}

void Repeating::Schedule() {
  std::weak_ptr<Repeating> weak = shared_from_this();
  std::lock_guard<std::mutex> lock(mu_);
  if (stopped_) return;
  timer_ = timers_.After(every_, [weak] {
    if (auto self = weak.lock()) self->Tick();
  });
}

void Repeating::Tick() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) return;
    timer_ = 0;
  }
  fn_();
  Schedule();
}

}  // namespace sb
