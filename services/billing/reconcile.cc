#include "billing/reconcile.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <set>
#include <utility>

#include "core/clock.h"
#include "storage/kafka.h"

namespace sb::billing {

Drift Compare(const std::map<std::string, RequestCounts>& topic,
              const std::map<std::string, RequestCounts>& ledger) {
  Drift d;
  auto add = [&d](const RequestCounts& c, int sign) {
    d.input_tokens += sign * c.input;
    d.output_tokens += sign * c.output;
    d.cache_read_tokens += sign * c.cache_read;
    d.cache_write_tokens += sign * c.cache_write;
  };
  d.topic_requests = static_cast<int64_t>(topic.size());
  d.ledger_requests = static_cast<int64_t>(ledger.size());
  for (const auto& [id, t] : topic) {
    auto l = ledger.find(id);
    if (l == ledger.end()) {
      d.missing.push_back(id);
      add(t, -1);
    } else if (!(l->second == t)) {
      d.differing.push_back(id);
      add(l->second, 1);
      add(t, -1);
    }
  }
  for (const auto& [id, l] : ledger) {
    if (topic.contains(id)) continue;
    d.extra.push_back(id);
    add(l, 1);
  }
  return d;
}

absl::StatusOr<Drift> Reconcile(Ledger& ledger, const MessageSigner& signer,
                                const std::string& brokers, const std::string& topic,
                                absl::Time since) {
  using Partition = std::pair<std::string, int32_t>;
  std::map<Partition, KafkaConsumer::Watermarks> ends;  // as of assignment
  std::map<Partition, int64_t> next;                    // the next offset to read
  std::unique_ptr<KafkaConsumer> consumer;
  bool complete = true;
  // A group of its own, so that billing's offsets are not touched; every
  // partition from its start.
  const std::string group = "reconcile-" + std::to_string(absl::ToUnixNanos(absl::Now()));
  auto created = KafkaConsumer::Create(
      brokers, group, {topic}, {}, [&](const std::string& t, int32_t p) -> KafkaConsumer::StartAt {
        auto w = consumer->QueryWatermarks(t, p, std::chrono::seconds(10));
        if (w.ok()) {
          ends[{t, p}] = *w;
          next[{t, p}] = w->low;
          if (w->low > 0) complete = false;
        } else {
          spdlog::warn("reconcile: the log of {}[{}]: {}", t, p, w.status().ToString());
        }
        return {.offset = KafkaConsumer::kBeginning};
      });
  if (!created.ok()) return created.status();
  consumer = std::move(*created);

  struct Folded {
    RequestCounts counts;
    int64_t at_ms = 0;
    bool final = false;
  };
  std::map<std::string, Folded> folded;
  UsageValidator validator(signer, UsageLimits{}, RealClock());
  auto done = [&] {
    if (ends.empty()) return false;
    for (const auto& [p, w] : ends) {
      if (next[p] < w.high) return false;
    }
    return true;
  };
  const absl::Time deadline = absl::Now() + absl::Minutes(5);
  while (!done()) {
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError("reconcile: the topic was not read to its end in 5 min");
    }
    auto polled = consumer->Poll(std::chrono::milliseconds(200));
    if (!polled.ok() || !polled->has_value()) continue;
    const KafkaMessage& msg = **polled;
    next[{msg.topic, msg.partition}] = msg.offset + 1;
    CheckedUsage checked = validator.Check(msg);
    if (checked.rejection.has_value()) continue;  // billing refuses it too
    const auto& e = checked.event;
    auto [it, fresh] = folded.try_emplace(e.request_id());
    Folded& f = it->second;
    if (fresh) f.at_ms = e.at_unix_ms();
    if (f.final) continue;
    if (e.final()) {
      f.counts = {e.input_tokens(), e.output_tokens(), e.cache_read_tokens(),
                  e.cache_write_tokens()};
      f.final = true;
    } else {
      f.counts.input = std::max<int64_t>(f.counts.input, e.input_tokens());
      f.counts.output = std::max<int64_t>(f.counts.output, e.output_tokens());
      f.counts.cache_read = std::max<int64_t>(f.counts.cache_read, e.cache_read_tokens());
      f.counts.cache_write = std::max<int64_t>(f.counts.cache_write, e.cache_write_tokens());
    }
  }
  std::map<std::string, RequestCounts> from_topic;
  for (const auto& [id, f] : folded) {
    if (absl::FromUnixMillis(f.at_ms) >= since) from_topic[id] = f.counts;
  }
  auto rows = ledger.CountsSince(std::max(since, absl::UnixEpoch()));
  if (!rows.ok()) return rows.status();
  Drift d = Compare(from_topic, *rows);
  d.topic_complete = complete;
  return d;
}

}  // namespace sb::billing
