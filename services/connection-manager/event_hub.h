// Live chat events for the devices of each user: every subscription reads
// its user's event stream (user_events.h) after its cursor and then follows
// it. As the SubscriptionHub does for replies, a poller thread per read
// group (group_pollers.h: one on a single Redis) serves its subscriptions
// with one multi-key `XREAD BLOCK` per round (one key per user, however
// many devices follow it), and a subscriber whose gRPC queue is full sits
// out rounds until it drains.
#pragma once

#include <condition_variable>
#include <list>
#include <memory>
#include <mutex>

#include "connection-manager/group_pollers.h"
#include "connection-manager/user_events.h"
#include "core/thread_pool.h"
#include "grpcx/streams.h"
#include "switchboard/connection/v1/connection.pb.h"

namespace sb::connection {

using EventOut = ServerStream<switchboard::connection::v1::UserEvent>::Handle;

class EventHub {
 public:
  EventHub(BlockingRedis& redis, int start_threads);
  ~EventHub();  // Stop()

  void Stop();  // ends every subscription with UNAVAILABLE (the device resumes elsewhere)

  // req's org and user are the caller's (the gateway authenticated them).
  void Subscribe(switchboard::connection::v1::SubscribeEventsRequest req,
                 std::shared_ptr<EventOut> out);
  size_t active() const;

 private:
  struct Sub {
    std::string key;
    std::string group;  // the key's read group
    StreamId cursor;
    std::shared_ptr<EventOut> out;
  };

  void Begin(const std::shared_ptr<Sub>& sub, const std::string& after);
  void Loop(const std::string& group);

  BlockingRedis& redis_;
  ThreadPool starts_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::list<std::shared_ptr<Sub>> subs_;
  bool stop_ = false;
  GroupPollers pollers_;  // last: its threads use the above
};

}  // namespace sb::connection
