// A thread that runs one function every `every`, and at once when woken,
// until stopped: the background reloads and report rounds of the services.
//
//   Periodic reload(absl::Seconds(2), [&] { (void)registry.Refresh(); });
//   reload.Start();          // or Start(/*run_now=*/true) to run first
//   reload.Wake();           // run again now (e.g. after a write)
//   reload.Stop();           // joins; a run under way finishes
//
// Runs never overlap. Start() after Stop() does nothing.
#pragma once

#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

#include "absl/time/time.h"

namespace sb {

class Periodic {
 public:
  Periodic(absl::Duration every, std::function<void()> fn) : every_(every), fn_(std::move(fn)) {}
  ~Periodic() { Stop(); }
  Periodic(const Periodic&) = delete;
  Periodic& operator=(const Periodic&) = delete;

  void Start(bool run_now = false);
  void Wake();
  void Stop();

 private:
  void Loop(bool run_now);

  const absl::Duration every_;
  const std::function<void()> fn_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool wake_ = false;
  std::thread thread_;
};

}  // namespace sb
