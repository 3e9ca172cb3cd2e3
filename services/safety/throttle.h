// Per-user throttling as a safety measure: an end user whose inputs the
// policy refused more than `limit` times within `window` is refused
// outright for `cooldown`, whatever they send (a person probing the filter,
// or a script replaying refused prompts). Users are per org; requests that
// name no end user are not throttled here (the org's own limits apply).
//
//   InputThrottle throttle({.limit = 5});
//   if (absl::Duration wait = throttle.Wait(org, user, now); wait > absl::ZeroDuration()) ...
//   if (blocked) throttle.RecordBlocked(org, user, now);
//
// State is in this process (one safety replica's view); thread-safe.
#pragma once

#include <deque>
#include <mutex>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"

namespace sb::safety {

struct ThrottleOptions {
  int limit = 5;  // refused inputs allowed within `window`; 0: off
  absl::Duration window = absl::Minutes(1);
  absl::Duration cooldown = absl::Minutes(5);
  // Users remembered (about) at most: past it, at most once a second, the
  // ones with nothing recent are forgotten, then the cool-downs that end
  // first.
  size_t max_users = 100'000;
};

class InputThrottle {
 public:
  explicit InputThrottle(ThrottleOptions options) : options_(options) {}

  // How long `user` must still wait; zero when they may send.
  absl::Duration Wait(std::string_view org, std::string_view user, absl::Time now);
  // One of the user's inputs was refused. True when it starts a cool-down.
  bool RecordBlocked(std::string_view org, std::string_view user, absl::Time now);

  const ThrottleOptions& options() const { return options_; }
  size_t users() const;

 private:
  struct User {
    std::deque<absl::Time> blocked;  // within the window, oldest first
    absl::Time until = absl::InfinitePast();
  };
  void Forget(absl::Time now);  // mu_ held

  const ThrottleOptions options_;
  mutable std::mutex mu_;
  absl::flat_hash_map<std::string, User> users_;  // org '\n' user
  absl::Time last_forget_ = absl::InfinitePast();
};

}  // namespace sb::safety
