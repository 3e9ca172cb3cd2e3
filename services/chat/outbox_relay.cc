#include "chat/outbox_relay.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>

#include "core/metrics.h"

namespace sb::chat {

namespace {
constexpr int kBatch = 500;
constexpr auto kDeliveryTimeout = std::chrono::seconds(10);
}  // namespace

OutboxRelay::OutboxRelay(ChatStore& store, KafkaProducer& producer, std::string topic)
    : store_(store),
      producer_(producer),
      topic_(std::move(topic)),
      published_(metrics::Default().GetCounter("sb_chat_outbox_published_total",
                                               "chat.events published from the outbox")),
      failures_(metrics::Default().GetCounter(
          "sb_chat_outbox_failures_total",
          "Outbox rounds that left events for the next (PostgreSQL or Kafka unreachable)")) {}

OutboxRelay::~OutboxRelay() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void OutboxRelay::Start() {
  thread_ = std::thread([this] {
    while (!stop_) {
      const int n = RelayOnce();
      if (n == kBatch) continue;  // more waiting
      // Idle (or another replica relays, or a failure): look again soon.
      std::this_thread::sleep_for(std::chrono::milliseconds(n < 0 ? 500 : 20));
    }
  });
}

int OutboxRelay::RelayOnce() {
  bool short_of_all = false;
  auto n = store_.RelayOutbox(kBatch, [&](const std::vector<ChatStore::OutboxRow>& rows) {
    const size_t stored = Publish(rows);
    short_of_all = stored < rows.size();
    return stored;
  });
  if (!n.ok()) {
    failures_.Inc();
    spdlog::warn("chat outbox: {}", n.status().ToString());
    return 0;
  }
  if (short_of_all) failures_.Inc();
  if (*n > 0) published_.Inc(*n);
  return short_of_all ? 0 : *n;
}

struct OutboxRelay::Deliveries {
  std::mutex mu;
  std::condition_variable cv;
  size_t pending = 0;
  std::vector<bool> ok;
};

size_t OutboxRelay::Publish(const std::vector<ChatStore::OutboxRow>& rows) {
  if (outstanding_) {
    std::unique_lock lock(outstanding_->mu);
    if (!outstanding_->cv.wait_for(lock, kDeliveryTimeout,
                                   [&] { return outstanding_->pending == 0; })) {
      return 0;  // the last batch is still on its way: queue nothing more
    }
    lock.unlock();
    outstanding_.reset();  // delivered or refused: this round queues again
  }
  auto d = std::make_shared<Deliveries>();
  d->ok.assign(rows.size(), false);
  size_t queued = 0;
  for (; queued < rows.size(); ++queued) {
    {
      std::lock_guard lock(d->mu);
      ++d->pending;
    }
    const size_t i = queued;
    auto st = producer_.Publish(topic_, rows[i].conversation_id, rows[i].event, {},
                                [d, i](const absl::Status& delivered) {
                                  std::lock_guard lock(d->mu);
                                  d->ok[i] = delivered.ok();
                                  if (--d->pending == 0) d->cv.notify_all();
                                });
    if (!st.ok()) {
      std::lock_guard lock(d->mu);
      --d->pending;
      spdlog::warn("chat outbox: event not queued: {}", st.ToString());
      break;  // the rest wait for the next round, in order
    }
  }
  std::unique_lock lock(d->mu);
  if (!d->cv.wait_for(lock, kDeliveryTimeout, [&] { return d->pending == 0; })) {
    spdlog::warn("chat outbox: {} events not delivered within {} s", d->pending,
                 std::chrono::seconds(kDeliveryTimeout).count());
    outstanding_ = d;
  }
  size_t prefix = 0;
  while (prefix < queued && d->ok[prefix]) ++prefix;
  return prefix;
}

}  // namespace sb::chat
