// The usage ledger in PostgreSQL. Record() writes one metering event and the
// consumer's next Kafka offset in one transaction: a redelivered event (same
// request_id) changes nothing, and a restarted consumer resumes from the
// stored offset, so every event counts exactly once.
#pragma once

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "storage/pg.h"
#include "switchboard/billing/v1/billing.pb.h"

namespace sb::billing {

struct KafkaPosition {
  std::string group;
  std::string topic;
  int32_t partition = 0;
  int64_t offset = 0;  // of the event being recorded
};

class Ledger {
 public:
  explicit Ledger(PgPool& pg) : pg_(pg) {}

  // True when the event was new, false when its request_id was already in
  // the ledger (the offset is stored either way).
  absl::StatusOr<bool> Record(const switchboard::billing::v1::UsageEvent& event,
                              const KafkaPosition& position);
  // A malformed event: only move the stored offset past it.
  absl::Status Skip(const KafkaPosition& position);
  absl::StatusOr<std::optional<int64_t>> NextOffset(const std::string& group,
                                                    const std::string& topic, int32_t partition);
  absl::StatusOr<switchboard::billing::v1::GetUsageResponse> Query(
      const switchboard::billing::v1::GetUsageRequest& req);

 private:
  PgPool& pg_;
};

}  // namespace sb::billing
