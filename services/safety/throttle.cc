#include "safety/throttle.h"

#include <algorithm>
#include <vector>

namespace sb::safety {
namespace {

std::string Key(std::string_view org, std::string_view user) {
  std::string key(org);
  key += '\n';
  key += user;
  return key;
}

}  // namespace

absl::Duration InputThrottle::Wait(std::string_view org, std::string_view user, absl::Time now) {
  if (options_.limit <= 0 || user.empty()) return absl::ZeroDuration();
  std::lock_guard<std::mutex> lock(mu_);
  auto it = users_.find(Key(org, user));
  if (it == users_.end() || it->second.until <= now) return absl::ZeroDuration();
  return it->second.until - now;
}

bool InputThrottle::RecordBlocked(std::string_view org, std::string_view user, absl::Time now) {
  if (options_.limit <= 0 || user.empty()) return false;
  std::lock_guard<std::mutex> lock(mu_);
  // At most once a second (unless twice the bound is reached): a caller
  // rotating user ids must not make every refusal a sweep of every user.
  if ((users_.size() >= options_.max_users && now - last_forget_ >= absl::Seconds(1)) ||
      users_.size() >= 2 * options_.max_users) {
    last_forget_ = now;
    Forget(now);
  }
  User& u = users_[Key(org, user)];
  while (!u.blocked.empty() && u.blocked.front() <= now - options_.window) u.blocked.pop_front();
  u.blocked.push_back(now);
  if (static_cast<int>(u.blocked.size()) <= options_.limit || u.until > now) return false;
  u.until = now + options_.cooldown;
  u.blocked.clear();  // the cool-down starts a new count
  return true;
}

size_t InputThrottle::users() const {
  std::lock_guard<std::mutex> lock(mu_);
  return users_.size();
}

void InputThrottle::Forget(absl::Time now) {
  absl::erase_if(users_, [&](const auto& entry) {
    const User& u = entry.second;
    return u.until <= now && (u.blocked.empty() || u.blocked.back() <= now - options_.window);
  });
  if (users_.size() < options_.max_users) return;
  // Everyone is recent: the cool-downs that end first go (the bound holds).
  std::vector<std::pair<absl::Time, std::string>> by_end;
  by_end.reserve(users_.size());
  for (const auto& [key, u] : users_) by_end.emplace_back(u.until, key);
  const size_t drop = users_.size() - options_.max_users / 2;
  std::nth_element(by_end.begin(), by_end.begin() + static_cast<ptrdiff_t>(drop), by_end.end());
  for (size_t i = 0; i < drop; ++i) users_.erase(by_end[i].second);
}

}  // namespace sb::safety
