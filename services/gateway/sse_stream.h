// An SSE response being written: 200 with the event-stream headers, writes
// in order, one end after which nothing more is written, and a ping (the
// dialect's) whenever nothing was written for `ping_interval`.
//
// Threading: writes come from the producer's thread, pings from the timer
// thread; `mu_` orders them, so that no ping lands after the end.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "core/timers.h"
#include "gateway/context.h"

namespace sb::gateway {

class SseStream : public std::enable_shared_from_this<SseStream> {
 public:
  SseStream(std::shared_ptr<RequestContext> ctx, Timers& timers, absl::Duration ping_interval,
            std::string ping);

  // Sends the 200 and the headers, and arms the idle timer.
  void Start();
  bool started() const;
  // done(false) once the client has gone (or the stream has ended).
  void Write(std::string data, std::function<void(bool ok)> done);
  // Writes `last` and ends the response; later calls do nothing.
  void End(std::string last);

 private:
  void SchedulePing(absl::Duration after);
  void OnPingTimer();

  std::shared_ptr<RequestContext> ctx_;
  Timers& timers_;
  const absl::Duration ping_interval_;
  const std::string ping_;

  mutable std::mutex mu_;
  bool started_ = false;
  bool ended_ = false;
  absl::Time last_write_;
  Timers::Id ping_timer_ = 0;
};

}  // namespace sb::gateway
