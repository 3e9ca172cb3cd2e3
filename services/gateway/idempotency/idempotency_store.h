// Idempotency records in Redis: what a request with an `Idempotency-Key`
// did, so that a retry gets the same response instead of a second run.
//
// A record is a hash `idem:{ORG:H}` (H: SHA-256 of the route, the key and
// for chat the user) and, for a streamed response, a stream `...:ev` of
// the SSE data as written. Its life:
//
//   absent --Claim--> running (owner: the request, lease renewed while it
//                      runs) --Finish--> done (replayed for retention)
//   running --Release--> absent   refused before it started: not consumed
//   running, lease passed --Claim--> running (a new owner: the old one died)
//   any, retention passed --Claim--> running (a new record)
//
// A streamed response's pieces are numbered: one lost or out of order
// (a failed write, a script resent after NOSCRIPT) leaves a gap, and the
// record is released at the end rather than replayed broken.
//
// Every step is one Lua script on the record's slot (the keys share a hash
// tag), so two gateways that claim at once cannot both win. Time comes
// from the caller (one clock per gateway, as for admission). Every write
// of an owner checks that it still owns the record: one that lost it (its
// lease passed while it was cut off) writes nothing.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "storage/redis_pipeline.h"
#include "storage/redis_script.h"

namespace sb::gateway {

struct IdempotencyRecordKey {
  std::string record;  // idem:{...}
  std::string events;  // idem:{...}:ev

  // The record of `key` sent by `org` to `path` (the request's path: a chat
  // send's names its conversation) by `user` (chat; "" otherwise).
  static IdempotencyRecordKey For(const std::string& org, const std::string& path,
                                  const std::string& user, const std::string& key);
};

struct ClaimResult {
  enum class Kind { kClaimed, kRunning, kDone, kMismatch };
  Kind kind = Kind::kClaimed;
  bool stream = false;  // running or done: the response is a stream
  // done, whole responses:
  int status = 0;
  std::string content_type;
  std::string body;
};

struct EventsRead {
  enum class State { kAbsent, kRunning, kDone };
  State state = State::kAbsent;
  std::string owner;
  absl::Time lease_until;  // the owner's lease: past it, the owner is dead
  std::vector<std::pair<std::string, std::string>> data;  // (entry id, SSE data)
  bool ended = false;                                     // the last entry read is the stream's end
  bool gap = false;  // an append was lost: this run's record will not finish
};

class IdempotencyStore {
 public:
  IdempotencyStore(AsyncRedis& redis, absl::Duration lease, absl::Duration retention);

  using ClaimDone = std::function<void(absl::StatusOr<ClaimResult>)>;
  // `fingerprint`: SHA-256 of the body; `owner`: the request id.
  void Claim(const IdempotencyRecordKey& k, const std::string& fingerprint,
             const std::string& owner, absl::Time now, ClaimDone done);

  // The owner's writes. `done` (optional) gets whether it still owned the
  // record (false), or an error: Redis failed, or (DataLoss) the stream
  // has a gap.
  using WriteDone = std::function<void(absl::StatusOr<bool>)>;
  void Renew(const IdempotencyRecordKey& k, const std::string& owner, absl::Time now,
             WriteDone done = nullptr);
  void StartStream(const IdempotencyRecordKey& k, const std::string& owner, absl::Time now,
                   WriteDone done = nullptr);
  // The `seq`th piece of the stream (from 1). One out of order or missing
  // marks a gap: EndStream then releases the record instead (a replay must
  // be whole), and followers stop.
  void Append(const IdempotencyRecordKey& k, const std::string& owner, const std::string& data,
              int64_t seq, WriteDone done = nullptr);
  void EndStream(const IdempotencyRecordKey& k, const std::string& owner, absl::Time now,
                 int64_t appends, WriteDone done = nullptr);
  void FinishWhole(const IdempotencyRecordKey& k, const std::string& owner, absl::Time now,
                   int status, const std::string& content_type, const std::string& body,
                   WriteDone done = nullptr);
  void Release(const IdempotencyRecordKey& k, const std::string& owner, WriteDone done = nullptr);

  // A streamed response's data after entry `after` ("0-0": from the
  // start), at most `count` entries, with the record's state.
  void Read(const IdempotencyRecordKey& k, const std::string& after, int count,
            std::function<void(absl::StatusOr<EventsRead>)> done);

  absl::Duration lease() const { return lease_; }

 private:
  void Owned(const IdempotencyRecordKey& k, std::vector<std::string> args, WriteDone done);

  AsyncRedis& redis_;
  const absl::Duration lease_;
  const absl::Duration retention_;
  const RedisScript claim_, owned_, read_;
};

}  // namespace sb::gateway
