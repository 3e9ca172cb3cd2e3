#include "core/periodic.h"

namespace sb {

void Periodic::Start(bool run_now) {
  std::lock_guard<std::mutex> lock(mu_);
  if (thread_.joinable() || stop_) return;
  thread_ = std::thread([this, run_now] { Loop(run_now); });
}

void Periodic::Wake() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    wake_ = true;
  }
  cv_.notify_all();
}

void Periodic::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Periodic::Loop(bool run_now) {
  const auto every = absl::ToChronoNanoseconds(every_);
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    if (!run_now) {
      cv_.wait_for(lock, every, [this] { return stop_ || wake_; });
      if (stop_) return;
    }
    run_now = false;
    wake_ = false;
    lock.unlock();
    fn_();
    lock.lock();
  }
}

}  // namespace sb
