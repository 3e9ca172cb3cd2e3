#include "connection-manager/user_events.h"

#include <spdlog/spdlog.h>

#include <charconv>

#include "absl/time/clock.h"
#include "core/metrics.h"
#include "storage/token_stream.h"

namespace sb::connection {

namespace cpb = switchboard::chat::v1;

namespace {

// KEYS: stream, seen, trimmed, erased. ARGV: event id, its time (ms), ttl
// (s), the most entries to keep, type, conversation id, the serialized
// event. Returns the new entry's id, or nil when the event is there already
// or comes from before the user was erased. A user.erased tombstone drops
// everything kept and is then the stream's only entry.
constexpr std::string_view kAppend = R"lua(
if ARGV[5] == 'user.erased' then
  -- Emptied, not deleted: the stream keeps its last id, so the tombstone's
  -- id is past every cursor given before (a new stream could start lower,
  -- within the same millisecond).
  redis.call('XTRIM', KEYS[1], 'MAXLEN', 0)
  redis.call('DEL', KEYS[2], KEYS[3])
  redis.call('SET', KEYS[4], ARGV[2], 'EX', ARGV[3])
else
  local erased = redis.call('GET', KEYS[4])
  if erased and tonumber(ARGV[2]) <= tonumber(erased) then return false end
end
if redis.call('ZADD', KEYS[2], 'NX', ARGV[2], ARGV[1]) == 0 then return false end
local max = tonumber(ARGV[4])
if ARGV[5] == 'conversation.deleted' then
  for _, e in ipairs(redis.call('XRANGE', KEYS[1], '-', '+')) do
    local f = e[2]
    for i = 1, #f, 2 do
      if f[i] == 'c' and f[i + 1] == ARGV[6] then redis.call('XDEL', KEYS[1], e[1]) end
    end
  end
end
local id = redis.call('XADD', KEYS[1], '*', 't', ARGV[5], 'c', ARGV[6], 'p', ARGV[7])
while redis.call('XLEN', KEYS[1]) > max do
  local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
  redis.call('XDEL', KEYS[1], first[1][1])
  redis.call('SET', KEYS[3], first[1][1])
end
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(2 * max) - 1)
for i = 1, 3 do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('EXPIRE', KEYS[i], ARGV[3]) end
end
return id
)lua";

// KEYS: stream, trimmed. ARGV: the cursor (an entry id, its numbers
// without leading zeros). Returns {1, ""} when every event after the cursor
// is still kept, else {0, the last entry's id or "0-0"}: the stream is gone
// (expired), the cursor is older than the last entry dropped, or it is past
// every id the stream has given (not one of ours: it would wait for ids
// that may never come).
constexpr std::string_view kResolve = R"lua(
-- a < b for decimal numbers without leading zeros, as strings (exact
-- where Lua's doubles are not)
local function less(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
-- entry id a < entry id b
local function before(a, b)
  local da, db = string.find(a, '-', 1, true), string.find(b, '-', 1, true)
  local am, bm = string.sub(a, 1, da - 1), string.sub(b, 1, db - 1)
  return less(am, bm) or (am == bm and less(string.sub(a, da + 1), string.sub(b, db + 1)))
end
local cursor = ARGV[1]
local kept = redis.call('EXISTS', KEYS[1]) == 1
if kept then
  local dropped = redis.call('GET', KEYS[2])
  if dropped and before(cursor, dropped) then kept = false end
end
if kept then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' and before(info[i + 1], cursor) then kept = false end
  end
end
if kept then return {1, ''} end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last == 0 then return {0, '0-0'} end
return {0, last[1][1]}
)lua";

bool ParseUint(std::string_view s, uint64_t& out) {
  if (s.empty()) return false;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size();
}

// The id of the stream's last entry; 0-0 when it has none.
absl::StatusOr<StreamId> LastId(BlockingRedis& redis, const std::string& key) {
  auto last = redis.Command({"XREVRANGE", key, "+", "-", "COUNT", "1"});
  if (!last.ok()) return last.status();
  if (last->type != RedisReply::Type::kArray || last->elements.empty()) return StreamId{};
  const auto& entry = last->elements[0];
  if (entry.type != RedisReply::Type::kArray || entry.elements.empty()) {
    return absl::DataLossError("malformed entry in " + key);
  }
  auto id = StreamId::Parse(entry.elements[0].str);
  if (!id) return absl::DataLossError("malformed entry id in " + key);
  return *id;
}

}  // namespace

std::string UserEventsKey(std::string_view org_id, std::string_view user_id) {
  std::string user;
  user.append(org_id).append(":").append(user_id);
  return "uev:{" + ShardTag(user, kEventShards, 'e') + "}:" + user;
}

std::optional<StreamId> StreamId::Parse(std::string_view text) {
  const auto dash = text.find('-');
  if (dash == std::string_view::npos) return std::nullopt;
  StreamId id;
  if (!ParseUint(text.substr(0, dash), id.ms) || !ParseUint(text.substr(dash + 1), id.seq)) {
    return std::nullopt;
  }
  return id;
}

std::string StreamId::ToString() const { return std::to_string(ms) + "-" + std::to_string(seq); }

absl::StatusOr<std::optional<std::string>> AppendUserEvent(BlockingRedis& redis,
                                                           const cpb::ChatEvent& event,
                                                           const UserEventsOptions& options) {
  const std::string key = UserEventsKey(event.org_id(), event.user_id());
  const int64_t ttl = std::max<int64_t>(1, absl::ToInt64Seconds(options.retention));
  auto reply =
      redis.Command({"EVAL", std::string(kAppend), "4", key, key + ":seen", key + ":trimmed",
                     key + ":erased", event.event_id(), std::to_string(event.at_unix_ms()),
                     std::to_string(ttl), std::to_string(std::max(1, options.max_per_user)),
                     event.type(), event.conversation_id(), event.SerializeAsString()});
  if (!reply.ok()) return reply.status();
  if (reply->is_nil()) return std::nullopt;
  return reply->str;
}

absl::StatusOr<StartPoint> ResolveStart(BlockingRedis& redis, const std::string& key,
                                        std::string_view after) {
  if (after.empty()) {
    auto last = LastId(redis, key);
    if (!last.ok()) return last.status();
    return StartPoint{*last, false};
  }
  auto cursor = StreamId::Parse(after);
  if (!cursor) return absl::InvalidArgumentError("malformed event cursor");
  if (*cursor == StreamId{}) return StartPoint{};
  // One round trip: whether every event after the cursor is still kept,
  // and the last entry's id for a reset.
  auto reply = redis.Command(
      {"EVAL", std::string(kResolve), "2", key, key + ":trimmed", cursor->ToString()});
  if (!reply.ok()) return reply.status();
  if (reply->type != RedisReply::Type::kArray || reply->elements.size() != 2) {
    return absl::DataLossError("unexpected reply resolving a cursor of " + key);
  }
  if (reply->elements[0].integer == 1) return StartPoint{*cursor, false};
  auto last = StreamId::Parse(reply->elements[1].str);
  if (!last) return absl::DataLossError("malformed entry id in " + key);
  return StartPoint{*last, true};
}

absl::StatusOr<UserEventEntry> ParseUserEventEntry(const RedisReply& entry) {
  if (entry.type != RedisReply::Type::kArray || entry.elements.size() != 2 ||
      entry.elements[1].type != RedisReply::Type::kArray) {
    return absl::DataLossError("malformed event entry");
  }
  UserEventEntry out;
  auto id = StreamId::Parse(entry.elements[0].str);
  if (!id) return absl::DataLossError("malformed event entry id " + entry.elements[0].str);
  out.id = *id;
  const auto& fields = entry.elements[1].elements;
  for (size_t i = 0; i + 1 < fields.size(); i += 2) {
    if (fields[i].str != "p") continue;
    if (!out.event.ParseFromString(fields[i + 1].str)) {
      return absl::DataLossError("unreadable event in entry " + entry.elements[0].str);
    }
    return out;
  }
  return absl::DataLossError("event entry " + entry.elements[0].str + " has no event");
}

EventIndexer::EventIndexer(KafkaConsumer& consumer, BlockingRedis& redis, UserEventsOptions options)
    : consumer_(consumer), redis_(redis), options_(options) {}

EventIndexer::~EventIndexer() { Stop(); }

void EventIndexer::Start() {
  thread_ = std::thread([this] {
    while (!stop_) {
      auto n = IndexOnce(std::chrono::milliseconds(200));
      if (!n.ok()) {
        spdlog::warn("chat events: {}", n.status().ToString());
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
      }
    }
  });
}

void EventIndexer::Stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

absl::StatusOr<int> EventIndexer::IndexOnce(std::chrono::milliseconds wait) {
  static auto& indexed = metrics::Default().GetCounter(
      "sb_connection_events_indexed_total", "chat.events appended to their user's event stream");
  static auto& duplicates = metrics::Default().GetCounter(
      "sb_connection_events_duplicates_total",
      "chat.events delivered again by Kafka (already in their user's stream)");
  static auto& skipped = metrics::Default().GetCounter(
      "sb_connection_events_skipped_total",
      "chat.events not indexed: unreadable, or older than the retention");
  static auto& errors = metrics::Default().GetCounter(
      "sb_connection_events_index_errors_total",
      "Rounds that left chat.events pending (Redis or Kafka unreachable)");
  static auto& lag = metrics::Default().GetHistogram(
      "sb_connection_event_index_lag_seconds",
      "From a chat event's commit in chat to its append to the user's stream");
  if (next_ == batch_.size()) {
    batch_.clear();
    next_ = 0;
    if (auto st = consumer_.PollBatch(256, wait, batch_); !st.ok() && batch_.empty()) {
      errors.Inc();
      return st;
    }
  }
  const int64_t oldest = absl::ToUnixMillis(absl::Now() - options_.retention);
  int taken = 0;
  for (; next_ < batch_.size(); ++next_, ++taken) {
    cpb::ChatEvent event;
    if (!event.ParseFromString(batch_[next_].value) || event.org_id().empty() ||
        event.user_id().empty() || event.event_id().empty()) {
      spdlog::error("chat events: unreadable event at {}/{}@{}", batch_[next_].topic,
                    batch_[next_].partition, batch_[next_].offset);
      skipped.Inc();
      continue;
    }
    if (event.at_unix_ms() < oldest) {
      skipped.Inc();
      continue;
    }
    auto appended = AppendUserEvent(redis_, event, options_);
    if (!appended.ok()) {
      errors.Inc();
      return appended.status();
    }
    if (appended->has_value()) {
      indexed.Inc();
      lag.Observe(std::max<double>(0, absl::ToUnixMillis(absl::Now()) - event.at_unix_ms()) /
                  1000.0);
    } else {
      duplicates.Inc();
    }
  }
  if (!batch_.empty()) consumer_.CommitBatch(batch_);
  return taken;
}

}  // namespace sb::connection
