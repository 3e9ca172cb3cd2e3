// One-shot timers for event-driven code: "call this in 10 s unless I cancel
// it first". Callbacks run on the timer's own thread, one at a time, and
// must be short: post real work elsewhere.
//
//   auto id = timers.After(absl::Seconds(10), [weak] { ...; });
//   timers.Cancel(id);  // no effect once it has run
//
// Timers is the interface (ManualTimers in libs/testing fires them when a
// test advances its clock); TimerThread is the real one.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "absl/time/time.h"

namespace sb {

class Timers {
 public:
  using Id = uint64_t;
  virtual ~Timers() = default;
  virtual Id After(absl::Duration delay, std::function<void()> fn) = 0;
  // True when the timer had not run yet (it now never will). A callback
  // that is already running is not waited for.
  virtual bool Cancel(Id id) = 0;
};

class TimerThread final : public Timers {
 public:
  TimerThread();
  ~TimerThread() override;  // Stop()
  // Drops pending timers without running them, waits for a callback that
  // is running, and runs none after. Idempotent.
  void Stop();
  TimerThread(const TimerThread&) = delete;
  TimerThread& operator=(const TimerThread&) = delete;

  Id After(absl::Duration delay, std::function<void()> fn) override;
  bool Cancel(Id id) override;
  size_t pending() const;

 private:
  void Loop();

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::multimap<absl::Time, Id> due_;
  std::unordered_map<Id, std::pair<absl::Time, std::function<void()>>> timers_;
  Id next_id_ = 1;
  bool stop_ = false;
  std::thread thread_;
};

// Runs `fn` every `every` until Stop() (or until it is destroyed): a
// lease kept alive while a request runs. Make it with std::make_shared and
// call Start(); a tick that is already running when Stop() is called may
// still finish, but none starts after.
class Repeating : public std::enable_shared_from_this<Repeating> {
 public:
  Repeating(Timers& timers, absl::Duration every, std::function<void()> fn)
      : timers_(timers), every_(every), fn_(std::move(fn)) {}
  void Start() { Schedule(); }
  void Stop();

 private:
  void Schedule();
  void Tick();

  Timers& timers_;
  const absl::Duration every_;
  const std::function<void()> fn_;
  std::mutex mu_;
  bool stopped_ = false;
  Timers::Id timer_ = 0;
};

}  // namespace sb
