// IdempotencyFilter: a request carrying `Idempotency-Key` (1 to 255
// printable ASCII characters, as in the IETF httpapi draft) runs at most
// once per org, route and key (chat: and user) within the retention:
//
//   first        claims the record and runs; its response is teed into
//                the record as it is written (SSE data as it streams) and
//                its generation goes on if the client leaves, for the retry
//   retry, done  gets the recorded response, `idempotent-replayed: true`:
//                the same message id, content and usage, metered once
//   retry while  streaming: attaches and receives the whole stream from the
//   running      start; whole: waits, then gets the same response
//   other body   422 invalid_request_error
//
// Only a good response is kept: a request refused before it started (400,
// 429, 529), one that failed or was cancelled (a gateway shutting down
// under it), or one whose record lost a write releases its key, and the
// retry runs. A gateway that dies leaves a record whose lease lapses; the
// next retry runs it again, and should the first owner still be alive, it
// stops its generation when it finds the record gone. Redis unreachable: a
// request with a key gets 503 api_error (retryable) rather than risk
// running twice; requests without one are unaffected.
//
// It sits after the parser (bad requests never claim a key) and before
// admission (a replay costs no limits).
#pragma once

#include <memory>
#include <string>

#include "core/thread_pool.h"
#include "core/timers.h"
#include "gateway/filters/filter.h"
#include "gateway/idempotency/idempotency_store.h"

namespace sb::gateway {

class IdempotencyFilter final : public Filter {
 public:
  IdempotencyFilter(IdempotencyStore& store, Timers& timers, ThreadPool& pool,
                    absl::Duration ping_interval)
      : store_(store), timers_(timers), pool_(pool), ping_interval_(ping_interval) {}
  std::string_view name() const override { return "idempotency"; }
  void Handle(const std::shared_ptr<RequestContext>& ctx, Next next) override;

  static constexpr size_t kMaxKeyBytes = 255;
  // How often a retry looks again at a record that is still running: a
  // stream's new data every kPoll; a whole response from kPoll, backing off
  // to kMaxPoll.
  static constexpr absl::Duration kPoll = absl::Milliseconds(20);
  static constexpr absl::Duration kMaxPoll = absl::Milliseconds(250);

 private:
  struct Attempt;
  void Claim(std::shared_ptr<Attempt> a);
  void OnClaim(const std::shared_ptr<Attempt>& a, const absl::StatusOr<ClaimResult>& claim);
  void Own(const std::shared_ptr<Attempt>& a);
  void Replay(const std::shared_ptr<Attempt>& a, const ClaimResult& claim);
  void Follow(const std::shared_ptr<Attempt>& a);

  IdempotencyStore& store_;
  Timers& timers_;
  ThreadPool& pool_;
  const absl::Duration ping_interval_;
};

}  // namespace sb::gateway
