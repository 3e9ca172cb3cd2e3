#include "gateway/idempotency/idempotency_store.h"

#include "core/crypto.h"

namespace sb::gateway {
namespace {

// KEYS: record, events. ARGV: fingerprint, owner, now_ms, lease_ms,
// retention_ms.
// Returns {'claimed'} | {'mismatch'} | {'running', stream} |
//         {'done', stream, status, content_type, body}.
constexpr const char* kClaim = R"lua(
local now = tonumber(ARGV[3])
local h = redis.call('HMGET', KEYS[1], 'fp', 'state', 'lease', 'exp', 'stream', 'status', 'ctype', 'body')
local function claim()
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('HSET', KEYS[1], 'fp', ARGV[1], 'state', 'running', 'owner', ARGV[2],
             'lease', now + tonumber(ARGV[4]), 'exp', now + tonumber(ARGV[5]), 'stream', '0')
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return {'claimed'}
end
if not h[1] or tonumber(h[4]) <= now then return claim() end
if h[1] ~= ARGV[1] then return {'mismatch'} end
if h[2] == 'done' then return {'done', h[5], h[6] or '0', h[7] or '', h[8] or ''} end
-- Running, but its owner stopped renewing the lease: it died.
if tonumber(h[3]) <= now then return claim() end
return {'running', h[5]}
)lua";

// The owner's writes. KEYS: record, events. ARGV: owner, op, then per op:
//   renew   now_ms, lease_ms
//   stream  now_ms
//   append  data, seq (1, 2, ...: a gap or a repeat marks the record)
//   end     now_ms, appends (how many there were)
//   whole   now_ms, status, content_type, body
//   release
// Returns 1; 0 when the caller no longer owns the record; -1 when the
// stream has a gap (an append lost or out of order), in which case `end`
// releases the record instead of finishing it: a replay must be whole.
constexpr const char* kOwned = R"lua(
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
local op = ARGV[2]
local function keep(now)
  local left = tonumber(redis.call('HGET', KEYS[1], 'exp')) - now
  if left < 1 then left = 1 end
  redis.call('PEXPIRE', KEYS[1], left)
  if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('PEXPIRE', KEYS[2], left) end
end
if op == 'renew' then
  redis.call('HSET', KEYS[1], 'lease', tonumber(ARGV[3]) + tonumber(ARGV[4]))
elseif op == 'stream' then
  redis.call('HSET', KEYS[1], 'stream', '1', 'n', 0)
  redis.call('XADD', KEYS[2], '*', 's', '')
  keep(tonumber(ARGV[3]))
elseif op == 'append' then
  local n = tonumber(redis.call('HGET', KEYS[1], 'n') or '-1')
  if n < 0 or tonumber(ARGV[4]) ~= n + 1 then
    redis.call('HSET', KEYS[1], 'gap', '1')
    return -1
  end
  redis.call('XADD', KEYS[2], '*', 'd', ARGV[3])
  redis.call('HSET', KEYS[1], 'n', ARGV[4])
elseif op == 'end' then
  if redis.call('HGET', KEYS[1], 'gap') or redis.call('HGET', KEYS[1], 'n') ~= ARGV[4] then
    redis.call('DEL', KEYS[1], KEYS[2])
    return -1
  end
  redis.call('XADD', KEYS[2], '*', 'e', '')
  redis.call('HSET', KEYS[1], 'state', 'done', 'status', '200')
  keep(tonumber(ARGV[3]))
elseif op == 'whole' then
  redis.call('HSET', KEYS[1], 'state', 'done', 'status', ARGV[4], 'ctype', ARGV[5], 'body', ARGV[6])
  keep(tonumber(ARGV[3]))
elseif op == 'release' then
  redis.call('DEL', KEYS[1], KEYS[2])
end
return 1
)lua";

// KEYS: record, events. ARGV: after (an entry id), count.
// Returns {state, owner, entries, lease_ms, gap}.
constexpr const char* kRead = R"lua(
local h = redis.call('HMGET', KEYS[1], 'state', 'owner', 'lease', 'gap')
local entries = redis.call('XRANGE', KEYS[2], '(' .. ARGV[1], '+', 'COUNT', ARGV[2])
return {h[1] or '', h[2] or '', entries, h[3] or '0', h[4] or ''}
)lua";

std::string Ms(absl::Time t) { return std::to_string(absl::ToUnixMillis(t)); }
std::string Ms(absl::Duration d) { return std::to_string(absl::ToInt64Milliseconds(d)); }

const std::string& Str(const std::vector<RedisReply>& e, size_t i) {
  static const std::string kEmpty;
  return i < e.size() ? e[i].str : kEmpty;
}

}  // namespace

IdempotencyRecordKey IdempotencyRecordKey::For(const std::string& org, const std::string& path,
                                               const std::string& user, const std::string& key) {
  // The tag is the org and the key's hash: one record's two keys share a
  // slot, and an org's records spread over the cluster.
  const std::string h = HexEncode(Sha256(path + "\n" + user + "\n" + key)).substr(0, 32);
  const std::string base = "idem:{" + org + ":" + h + "}";
  return {base, base + ":ev"};
}

IdempotencyStore::IdempotencyStore(AsyncRedis& redis, absl::Duration lease,
                                   absl::Duration retention)
    : redis_(redis),
      lease_(lease),
      retention_(retention),
      claim_(kClaim),
      owned_(kOwned),
      read_(kRead) {}

void IdempotencyStore::Claim(const IdempotencyRecordKey& k, const std::string& fingerprint,
                             const std::string& owner, absl::Time now, ClaimDone done) {
  claim_.Run(redis_, {k.record, k.events},
             {fingerprint, owner, Ms(now), Ms(lease_), Ms(retention_)},
             [done = std::move(done)](absl::StatusOr<RedisReply> r) {
               if (!r.ok()) {
                 done(absl::UnavailableError("idempotency: " + std::string(r.status().message())));
                 return;
               }
               const auto& e = r->elements;
               const std::string& kind = Str(e, 0);
               ClaimResult out;
               if (kind == "claimed") {
                 out.kind = ClaimResult::Kind::kClaimed;
               } else if (kind == "mismatch") {
                 out.kind = ClaimResult::Kind::kMismatch;
               } else if (kind == "running") {
                 out.kind = ClaimResult::Kind::kRunning;
                 out.stream = Str(e, 1) == "1";
               } else if (kind == "done") {
                 out.kind = ClaimResult::Kind::kDone;
                 out.stream = Str(e, 1) == "1";
                 out.status = std::atoi(Str(e, 2).c_str());
                 out.content_type = Str(e, 3);
                 out.body = Str(e, 4);
               } else {
                 done(absl::InternalError("idempotency: unexpected reply from the claim script"));
                 return;
               }
               done(std::move(out));
             });
}

void IdempotencyStore::Owned(const IdempotencyRecordKey& k, std::vector<std::string> args,
                             WriteDone done) {
  owned_.Run(redis_, {k.record, k.events}, std::move(args),
             [done = std::move(done)](absl::StatusOr<RedisReply> r) {
               if (!done) return;
               if (!r.ok()) {
                 done(r.status());
               } else if (r->integer == -1) {
                 done(absl::DataLossError("the recorded stream has a gap"));
               } else {
                 done(r->integer == 1);
               }
             });
}

void IdempotencyStore::Renew(const IdempotencyRecordKey& k, const std::string& owner,
                             absl::Time now, WriteDone done) {
  Owned(k, {owner, "renew", Ms(now), Ms(lease_)}, std::move(done));
}

void IdempotencyStore::StartStream(const IdempotencyRecordKey& k, const std::string& owner,
                                   absl::Time now, WriteDone done) {
  Owned(k, {owner, "stream", Ms(now)}, std::move(done));
}

void IdempotencyStore::Append(const IdempotencyRecordKey& k, const std::string& owner,
                              const std::string& data, int64_t seq, WriteDone done) {
  Owned(k, {owner, "append", data, std::to_string(seq)}, std::move(done));
}

void IdempotencyStore::EndStream(const IdempotencyRecordKey& k, const std::string& owner,
                                 absl::Time now, int64_t appends, WriteDone done) {
  Owned(k, {owner, "end", Ms(now), std::to_string(appends)}, std::move(done));
}

void IdempotencyStore::FinishWhole(const IdempotencyRecordKey& k, const std::string& owner,
                                   absl::Time now, int status, const std::string& content_type,
                                   const std::string& body, WriteDone done) {
  Owned(k, {owner, "whole", Ms(now), std::to_string(status), content_type, body}, std::move(done));
}

void IdempotencyStore::Release(const IdempotencyRecordKey& k, const std::string& owner,
                               WriteDone done) {
  Owned(k, {owner, "release"}, std::move(done));
}

void IdempotencyStore::Read(const IdempotencyRecordKey& k, const std::string& after, int count,
                            std::function<void(absl::StatusOr<EventsRead>)> done) {
  read_.Run(redis_, {k.record, k.events}, {after, std::to_string(count)},
            [done = std::move(done)](absl::StatusOr<RedisReply> r) {
              if (!r.ok()) {
                done(absl::UnavailableError("idempotency: " + std::string(r.status().message())));
                return;
              }
              const auto& e = r->elements;
              if (e.size() != 5) {
                done(absl::InternalError("idempotency: unexpected reply from the read script"));
                return;
              }
              EventsRead out;
              out.state = e[0].str == "running" ? EventsRead::State::kRunning
                          : e[0].str == "done"  ? EventsRead::State::kDone
                                                : EventsRead::State::kAbsent;
              out.owner = e[1].str;
              out.lease_until = absl::FromUnixMillis(std::atoll(e[3].str.c_str()));
              out.gap = !e[4].str.empty();
              for (const auto& entry : e[2].elements) {
                if (entry.elements.size() != 2 || entry.elements[1].elements.size() < 2) continue;
                const std::string& id = entry.elements[0].str;
                const std::string& field = entry.elements[1].elements[0].str;
                if (field == "d") {
                  out.data.emplace_back(id, entry.elements[1].elements[1].str);
                } else if (field == "e") {
                  out.ended = true;
                  out.data.emplace_back(id, "");
                  break;
                } else {
                  out.data.emplace_back(id, "");  // the start marker: no data
                }
              }
              done(std::move(out));
            });
}

}  // namespace sb::gateway
