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
#include <mutex>
#include <thread>
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

  // `retry`: how often the backlog is offered again.
  explicit UsageOutbox(Publish publish, absl::Duration retry = absl::Milliseconds(50));
  ~UsageOutbox();  // stops the retry thread; what still waits is logged

  // `stored` runs once the publisher has stored this event or one that
  // replaced it (never when it is refused outright).
  void Report(const switchboard::billing::v1::UsageEvent& event, Stored stored = nullptr);
  bool backed_up() const;
  size_t backlog() const;
  // Waits until the backlog is empty or `deadline`; true when it emptied.
  bool WaitEmpty(absl::Time deadline);

 private:
  void Loop();
  // Offers the backlog in order until the publisher pushes back. Requires mu_.
  void OfferLocked();

  Publish publish_;
  absl::Duration retry_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  struct Waiting {
    switchboard::billing::v1::UsageEvent event;
    std::vector<Stored> stored;
  };
  static Stored Combine(std::vector<Stored> callbacks);
  std::deque<Waiting> backlog_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace sb::worker
