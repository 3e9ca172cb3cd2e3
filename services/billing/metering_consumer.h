// Consumes usage.events into the ledger. Runs on its own thread; a database
// outage pauses consumption (the event is retried, never skipped). What has
// arrived is recorded in batches (up to max_batch messages), each in one
// transaction with the partitions' next offsets.
//
// An event that fails UsageValidator (unsigned, forged, malformed, or usage
// that cannot be true), or whose row the database's constraints refuse, is
// refused: counted in sb_billing_usage_events_rejected_total{reason}, logged
// as a warning with its request id, and stepped over — its offset is stored
// like any other, so it is neither retried forever nor in the way of the
// valid events behind it.
//
// Never skip silently: where the offset stored for a partition lies outside
// the partition's log (beyond its end or before its start: the broker lost
// its data, the topic was recreated, a cluster was restored), the consumer
// stops consuming that partition, sets sb_billing_partition_stalled{topic,
// partition} to 1, logs an error naming topic, partition, offset and the
// log's bounds, and waits for an operator decision (`sbadmin billing
// reset-offsets`, a row in consumer_offset_resets) which it applies within
// about a second. Recording is idempotent per request id, so replaying from
// the earliest offset is always safe.
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "billing/ledger.h"
#include "billing/usage_validation.h"
#include "core/clock.h"
#include "storage/kafka.h"
#include "storage/message_signing.h"
#include "storage/publisher.h"

namespace sb::billing {

struct MeteringOptions {
  std::string brokers;
  std::string group;
  std::string topic;
  UsageLimits limits;
  // Where budget alerts go (Kafka billing.alerts); none: they wait in
  // budget_alerts.
  Publisher* alerts = nullptr;
  std::string alerts_topic = "billing.alerts";
  // How long the group waits for a consumer that stopped heartbeating (one
  // killed) before giving its partitions to another.
  std::chrono::milliseconds session_timeout{10000};
  // Messages written to the ledger in one transaction, at most.
  int max_batch = 500;
  // How often the operator's offset decisions are looked for.
  std::chrono::milliseconds reset_check_interval{1000};
  // How often sb_billing_consumer_lag is measured.
  std::chrono::milliseconds lag_interval{5000};
};

class MeteringConsumer {
 public:
  // `ledger`, `signer` and `clock` must outlive the consumer.
  MeteringConsumer(Ledger& ledger, const MessageSigner& signer, MeteringOptions options,
                   const Clock& clock = RealClock());
  ~MeteringConsumer();

  absl::Status Start();
  void Stop();

  // Partitions stopped on a stored offset outside their log (any thread).
  int stalled_partitions() const { return stalled_count_.load(); }

 private:
  using Partition = std::pair<std::string, int32_t>;
  struct Stall {
    int64_t offset = 0;
    KafkaConsumer::Watermarks log;
  };

  void Loop();
  // Where an assigned partition starts: its stored offset, if that lies in
  // its log; paused otherwise.
  KafkaConsumer::StartAt StartAt(const std::string& topic, int32_t partition);
  void Stalled(const std::string& topic, int32_t partition, int64_t offset,
               const KafkaConsumer::Watermarks& log);
  // Whether an operator's offset decision waits for the partition.
  bool DecisionWaits(const std::string& topic, int32_t partition);
  // Applies the operator's decisions for the partitions this consumer holds.
  void ApplyResets();
  // Publishes the budget alerts not yet published (an outbox).
  void PublishAlerts();
  // sb_billing_consumer_lag of every partition this consumer holds: the
  // events in its log it has not read (0 for those it no longer holds).
  void ReportLag();
  // Validates a batch and records it in one transaction, or event by event
  // when the database refuses a row of it.
  void RecordBatch(const std::vector<KafkaMessage>& batch);
  void RecordOne(const KafkaMessage& msg);
  void Counted(const switchboard::billing::v1::UsageEvent& event, Ledger::Recorded outcome);
  // Counts and logs a refused message.
  void CountRejected(const KafkaMessage& msg, const CheckedUsage& checked);
  // The same, and steps over it (stores its offset).
  void Reject(const KafkaMessage& msg, const KafkaPosition& pos, const CheckedUsage& checked);

  Ledger& ledger_;
  MeteringOptions options_;
  UsageValidator validator_;
  std::unique_ptr<KafkaConsumer> consumer_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  // The consumer thread's (the Kafka callbacks run inside Poll).
  std::map<Partition, Stall> stalled_;
  std::map<Partition, int64_t> resume_at_;  // decided, but the seek failed: retried
  std::atomic<int> stalled_count_{0};
  int64_t alerts_seen_ = -1;  // ledger_.alerts_written() at the last PublishAlerts
  std::set<Partition> lag_reported_;
};

}  // namespace sb::billing
