// Publishes chat.events from the transactional outbox (migration 0018):
// the oldest rows, in id order, to Kafka (keyed by conversation), deleting
// each once the brokers have stored it (acks=all). One replica relays at a
// time; the others stand by and take over within half a second.
//
// Kafka down: events wait in PostgreSQL (nothing is lost; the table grows)
// and go, in order, when it is back. A row published but not yet deleted
// when the relay dies is published again: consumers dedupe on event_id.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "chat/chat_store.h"
#include "storage/kafka.h"

namespace sb::metrics {
class Counter;
}  // namespace sb::metrics

namespace sb::chat {

class OutboxRelay {
 public:
  OutboxRelay(ChatStore& store, KafkaProducer& producer, std::string topic);
  ~OutboxRelay();  // stops the loop

  void Start();
  // One round: the rows published (-1: another replica relays).
  int RelayOnce();

 private:
  // Queues `rows` and waits for their delivery: how many, from the first,
  // the brokers stored. While a batch that timed out still has deliveries
  // outstanding (Kafka down), nothing more is queued: the producer's queue
  // holds one batch at most, not one copy of it per round.
  size_t Publish(const std::vector<ChatStore::OutboxRow>& rows);

  struct Deliveries;
  std::shared_ptr<Deliveries> outstanding_;  // the relay thread's only

  ChatStore& store_;
  KafkaProducer& producer_;
  const std::string topic_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  metrics::Counter& published_;
  metrics::Counter& failures_;
};

}  // namespace sb::chat
