#include "gateway/admission/redis_admission.h"

#include <memory>

#include "core/crypto.h"

namespace sb::gateway {
namespace {

// Shared by the scripts: a bucket's level now (absent = full), refilled at
// limit per minute since it was last written.
constexpr const char* kLevel = R"lua(
local function level(key, limit, now)
  local h = redis.call('HMGET', key, 't', 'ts')
  local t, ts = tonumber(h[1]), tonumber(h[2])
  if t == nil then return limit, now end
  if now > ts then t = math.min(limit, t + (now - ts) * limit / 60000) end
  return t, math.max(ts, now)
end
local function store(key, limit, t, ts)
  redis.call('HSET', key, 't', t, 'ts', ts)
  -- absent means full: keep it until it would be full again
  redis.call('PEXPIRE', key, math.ceil((limit - t) * 60000 / limit) + 1000)
end
)lua";

// KEYS: 4 a row (requests, input, output buckets; leases).
// ARGV: now_ms, lease_ttl_ms, lease_id, rows, input cost, output cost,
//       then 4 limits a row (rpm, input_tpm, output_tpm, concurrency; 0 = none).
// Returns {1, (limit, left) x 3 a row} or
//         {0, row, dimension 1-4, limit, retry_after_ms, never}.
constexpr const char* kAdmit = R"lua(
local now, ttl, lease, n = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local cost = {1, tonumber(ARGV[5]), tonumber(ARGV[6])}
local levels = {}
for i = 0, n - 1 do
  for d = 1, 3 do
    local limit = tonumber(ARGV[7 + i * 4 + d - 1])
    if limit > 0 then
      if cost[d] > limit then return {0, i, d, limit, 0, 1} end
      local t, ts = level(KEYS[i * 4 + d], limit, now)
      if t < cost[d] then return {0, i, d, limit, math.ceil((cost[d] - t) * 60000 / limit), 0} end
      levels[i * 3 + d] = {t, ts}
    end
  end
  local climit = tonumber(ARGV[7 + i * 4 + 3])
  if climit > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[i * 4 + 4], '-inf', now)
    if redis.call('ZCARD', KEYS[i * 4 + 4]) >= climit then return {0, i, 4, climit, 1000, 0} end
  end
end
local out = {1}
for i = 0, n - 1 do
  for d = 1, 3 do
    local limit = tonumber(ARGV[7 + i * 4 + d - 1])
    if limit > 0 then
      local left = levels[i * 3 + d][1] - cost[d]
      store(KEYS[i * 4 + d], limit, left, levels[i * 3 + d][2])
      table.insert(out, limit)
      table.insert(out, math.floor(left))
    else
      table.insert(out, 0)
      table.insert(out, 0)
    end
  end
  if tonumber(ARGV[7 + i * 4 + 3]) > 0 then
    redis.call('ZADD', KEYS[i * 4 + 4], now + ttl, lease)
    redis.call('PEXPIRE', KEYS[i * 4 + 4], ttl * 2)
  end
end
return out
)lua";

// KEYS as for admit. ARGV: now_ms, lease_id, rows, input given back (may
// be negative: an extra charge), output given back, then 4 limits a row.
constexpr const char* kComplete = R"lua(
local now, lease, n = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local give = {0, tonumber(ARGV[4]), tonumber(ARGV[5])}
for i = 0, n - 1 do
  for d = 2, 3 do
    local limit = tonumber(ARGV[6 + i * 4 + d - 1])
    if limit > 0 and give[d] ~= 0 then
      local t, ts = level(KEYS[i * 4 + d], limit, now)
      store(KEYS[i * 4 + d], limit, math.min(limit, t + give[d]), ts)
    end
  end
  if tonumber(ARGV[6 + i * 4 + 3]) > 0 then redis.call('ZREM', KEYS[i * 4 + 4], lease) end
end
return 1
)lua";

// KEYS: the lease sets. ARGV: expiry_ms, lease_id, ttl_ms.
constexpr const char* kRenew = R"lua(
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], 'XX', ARGV[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[i], ARGV[3] * 2)
end
return 1
)lua";

std::string Ms(absl::Time t) { return std::to_string(absl::ToUnixMillis(t)); }

std::vector<std::string> LimitArgs(const std::vector<LimitRow>& rows) {
  std::vector<std::string> out;
  for (const auto& r : rows) {
    for (int64_t v : {r.rpm, r.input_tpm, r.output_tpm, r.concurrency})
      out.push_back(std::to_string(v));
  }
  return out;
}

int64_t Int(const RedisReply& r) {
  return r.type == RedisReply::Type::kInteger ? r.integer : std::atoll(r.str.c_str());
}

// A reply to a settling script, for whoever asked to hear it.
AsyncRedis::Callback Report(Admission::Settled settled) {
  return [settled = std::move(settled)](absl::StatusOr<RedisReply> r) {
    if (!settled) return;
    settled(r.ok() ? absl::OkStatus()
                   : absl::UnavailableError("rate limits: " + std::string(r.status().message())));
  };
}

}  // namespace

RedisAdmission::RedisAdmission(AsyncRedis& redis, absl::Duration lease_ttl)
    : redis_(redis),
      lease_ttl_(lease_ttl),
      admit_(std::string(kLevel) + kAdmit),
      complete_(std::string(kLevel) + kComplete),
      renew_(kRenew) {}

std::vector<std::string> RedisAdmission::Keys(const LimitRow& row) {
  // The org is the hash tag; the rest names the row without ambiguity.
  const std::string base =
      "rl:{" + row.org_id + "}:" + HexEncode(Sha256(row.key_id + "\n" + row.model)).substr(0, 16);
  return {base + ":req", base + ":in", base + ":out", base + ":conc"};
}

void RedisAdmission::Admit(const AdmissionRequest& req, const std::vector<LimitRow>& rows,
                           absl::Time now, Done done) {
  std::vector<std::string> keys;
  for (const auto& row : rows) {
    for (auto& k : Keys(row)) keys.push_back(std::move(k));
  }
  std::vector<std::string> args = {Ms(now),
                                   std::to_string(absl::ToInt64Milliseconds(lease_ttl_)),
                                   req.lease_id,
                                   std::to_string(rows.size()),
                                   std::to_string(req.input_tokens),
                                   std::to_string(req.max_tokens)};
  for (auto& a : LimitArgs(rows)) args.push_back(std::move(a));
  admit_.Run(
      redis_, std::move(keys), std::move(args),
      [rows, now, done = std::move(done)](absl::StatusOr<RedisReply> r) {
        if (!r.ok()) {
          done(absl::UnavailableError("rate limits: " + std::string(r.status().message())));
          return;
        }
        const auto& e = r->elements;
        if (r->type != RedisReply::Type::kArray || e.empty()) {
          done(absl::InternalError("rate limits: unexpected reply from the admission script"));
          return;
        }
        AdmissionDecision d;
        if (Int(e[0]) == 0 && e.size() >= 6) {
          const size_t row = static_cast<size_t>(Int(e[1]));
          d.refusal = {static_cast<Dimension>(Int(e[2]) - 1), Int(e[3]),
                       absl::Milliseconds(Int(e[4])), Int(e[5]) == 1,
                       row < rows.size() ? rows[row].Scope() : ""};
          done(d);
          return;
        }
        std::vector<LimitState> states;
        for (size_t i = 1; i + 1 < e.size(); i += 2) {
          const int64_t limit = Int(e[i]), left = Int(e[i + 1]);
          states.push_back(limit > 0 ? LimitState{true, limit, left, FullAt(limit, left, now)}
                                     : LimitState{});
        }
        d.admitted = true;
        d.view = TightestView(states);
        done(d);
      });
}

void RedisAdmission::Complete(const AdmissionRequest& req, const std::vector<LimitRow>& rows,
                              absl::Time now, int64_t input_tokens, int64_t output_tokens,
                              Settled settled) {
  std::vector<std::string> keys;
  for (const auto& row : rows) {
    for (auto& k : Keys(row)) keys.push_back(std::move(k));
  }
  std::vector<std::string> args = {
      Ms(now), req.lease_id, std::to_string(rows.size()),
      std::to_string(req.input_tokens - input_tokens),
      std::to_string(std::max<int64_t>(0, req.max_tokens - output_tokens))};
  for (auto& a : LimitArgs(rows)) args.push_back(std::move(a));
  // A lost completion is bounded: the lease expires, the buckets refill.
  complete_.Run(redis_, std::move(keys), std::move(args), Report(std::move(settled)));
}

void RedisAdmission::Renew(const AdmissionRequest& req, const std::vector<LimitRow>& rows,
                           absl::Time now, Settled settled) {
  std::vector<std::string> keys;
  for (const auto& row : rows) {
    if (row.concurrency > 0) keys.push_back(Keys(row)[3]);
  }
  if (keys.empty()) {
    if (settled) settled(absl::OkStatus());
    return;
  }
  renew_.Run(
      redis_, std::move(keys),
      {Ms(now + lease_ttl_), req.lease_id, std::to_string(absl::ToInt64Milliseconds(lease_ttl_))},
      Report(std::move(settled)));
}

}  // namespace sb::gateway
