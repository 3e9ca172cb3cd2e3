// Consumes usage.events into the ledger. Runs on its own thread; a database
// outage pauses consumption (the event is retried, never skipped), and a
// malformed event is logged and stepped over.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "billing/ledger.h"
#include "storage/kafka.h"

namespace sb::billing {

class MeteringConsumer {
 public:
  MeteringConsumer(Ledger& ledger, std::string brokers, std::string group, std::string topic);
  ~MeteringConsumer();

  absl::Status Start();
  void Stop();

 private:
  void Loop();

  Ledger& ledger_;
  std::string brokers_, group_, topic_;
  std::unique_ptr<KafkaConsumer> consumer_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace sb::billing
