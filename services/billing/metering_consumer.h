// Consumes usage.events into the ledger. Runs on its own thread; a database
// outage pauses consumption (the event is retried, never skipped).
//
// An event that fails UsageValidator (unsigned, forged, malformed, or usage
// that cannot be true), or whose row the database's constraints refuse, is
// refused: counted in sb_billing_usage_events_rejected_total{reason}, logged
// as a warning with its request id, and stepped over — its offset is stored
// like any other, so it is neither retried forever nor in the way of the
// valid events behind it.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "billing/ledger.h"
#include "billing/usage_validation.h"
#include "core/clock.h"
#include "storage/kafka.h"
#include "storage/message_signing.h"

namespace sb::billing {

struct MeteringOptions {
  std::string brokers;
  std::string group;
  std::string topic;
  UsageLimits limits;
};

class MeteringConsumer {
 public:
  // `ledger`, `signer` and `clock` must outlive the consumer.
  MeteringConsumer(Ledger& ledger, const MessageSigner& signer, MeteringOptions options,
                   const Clock& clock = RealClock());
  ~MeteringConsumer();

  absl::Status Start();
  void Stop();

 private:
  void Loop();
  // Counts, logs and steps over a refused message.
  void Reject(const KafkaMessage& msg, const KafkaPosition& pos, const CheckedUsage& checked);

  Ledger& ledger_;
  MeteringOptions options_;
  UsageValidator validator_;
  std::unique_ptr<KafkaConsumer> consumer_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace sb::billing
