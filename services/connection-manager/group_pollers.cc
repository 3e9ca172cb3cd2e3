#include "connection-manager/group_pollers.h"

#include "core/metrics.h"

namespace sb::connection {

GroupPollers::GroupPollers(std::function<void(const std::string&)> loop) : loop_(std::move(loop)) {}

GroupPollers::~GroupPollers() { Join(); }

void GroupPollers::Ensure(const std::string& group) {
  std::lock_guard<std::mutex> lock(mu_);
  auto [it, fresh] = threads_.try_emplace(group);
  if (fresh) it->second = std::thread([this, group] { loop_(group); });
}

void GroupPollers::Join() {
  std::map<std::string, std::thread> threads;
  {
    std::lock_guard<std::mutex> lock(mu_);
    threads.swap(threads_);
  }
  for (auto& [group, thread] : threads) {
    if (thread.joinable()) thread.join();
  }
}

void CountPollFailure(const std::string& reads) {
  metrics::Default()
      .GetCounter("sb_connection_poll_failures_total",
                  "Blocking reads of connection-manager's pollers that failed (each retried "
                  "after 200 ms), by what they read: replies or events",
                  {{"reads", reads}})
      .Inc();
}

}  // namespace sb::connection
