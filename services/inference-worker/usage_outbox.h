// Where the worker's metering events wait when Kafka cannot take them.
//
// Report() hands an event to the publisher at once when nothing is waiting.
// When the publisher pushes back (its queue is full: ResourceExhausted), the
// event waits here and a thread offers the backlog again until it is taken.
// Nothing is dropped: a report replaces the running report waiting for the
// same request, in its place (billing keeps the highest count, so only the
// latest matters); a final report is never replaced. While anything waits, `backed_up()` is
// true and the worker admits no new requests, so the backlog stays bounded by
// what is already in flight.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "switchboard/billing/v1/billing.pb.h"

namespace sb::worker {

class UsageOutbox {
 public:
  // Runs once the event is stored (OK) or refused for good.
  using Stored = std::function<void(const absl::Status&)>;
  // Queues the event; `stored` (may be null) runs later only when this
  // returns OK.
  using Publish =
      std::function<absl::Status(const switchboard::billing::v1::UsageEvent&, Stored stored)>;

  // `retry`: how often the backlog is offered again. `ack_timeout`: how long
  // a report with a `stored` callback may wait for it before the outbox
  // counts as backed up (Kafka is not storing).
  explicit UsageOutbox(Publish publish, absl::Duration retry = absl::Milliseconds(50),
                       absl::Duration ack_timeout = absl::Seconds(5));
  ~UsageOutbox();  // stops the retry thread; what still waits is logged

  // `stored` runs once the publisher has stored this event or one that
  // replaced it, or refused it for good.
  void Report(const switchboard::billing::v1::UsageEvent& event, Stored stored = nullptr);
  // Something waits for room, or a report has waited for Kafka to store it
  // longer than the ack timeout: the worker takes no new work.
  bool backed_up() const;
  size_t backlog() const;
  // Waits until the backlog is empty or `deadline`; true when it emptied.
  bool WaitEmpty(absl::Time deadline);

 private:
  using Refusals = std::vector<std::pair<Stored, absl::Status>>;
  void Loop();
  // Offers the backlog in order until the publisher pushes back; the
  // callbacks of events refused for good go to `refused`, for the caller to
  // run once mu_ is released. Requires mu_.
  void OfferLocked(Refusals& refused);
  // Puts the event in the backlog (or in place of its request's waiting
  // running report). Requires mu_.
  void Enqueue(const switchboard::billing::v1::UsageEvent& event, Stored stored);

  Publish publish_;
  absl::Duration retry_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  struct Waiting {
    switchboard::billing::v1::UsageEvent event;
    std::vector<Stored> stored;
  };
  static Stored Combine(std::vector<Stored> callbacks);
  // Reports handed to the publisher and not yet stored, by sequence (the
  // first is the oldest). Shared with the callbacks, which may run after
  // the outbox is gone (the producer flushes last).
  struct Unstored {
    std::mutex mu;
    std::map<uint64_t, absl::Time> since;
    uint64_t next = 0;
  };
  // Wraps `stored` to track its report until it is stored; `seq` gets its
  // sequence (for Untrack when the publisher does not take it).
  Stored Track(Stored stored, uint64_t* seq);
  void Untrack(uint64_t seq);
  std::deque<Waiting> backlog_;
  absl::Duration ack_timeout_;
  std::shared_ptr<Unstored> unstored_ = std::make_shared<Unstored>();
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace sb::worker
