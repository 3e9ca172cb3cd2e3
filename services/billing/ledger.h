// The usage ledger in PostgreSQL: one row per request. Record() applies one
// metering event and the consumer's next Kafka offset in one transaction.
// Events of a request may come several times (running reports every second,
// then the final one, and Kafka's redeliveries): the row keeps the highest
// counts seen and the first stop reason, and the hourly rollup moves by the
// difference, so repeats change nothing, a later report only raises, and a
// restarted consumer resumes from the stored offset: every token counts
// exactly once. Each row carries its cost at the price in force when the
// request started (pricing.h), recomputed whenever its counts change.
#pragma once

#include <atomic>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "billing/pricing.h"
#include "storage/pg.h"
#include "switchboard/billing/v1/billing.pb.h"

namespace sb::billing {

struct KafkaPosition {
  std::string group;
  std::string topic;
  int32_t partition = 0;
  int64_t offset = 0;  // of the event being recorded
};

// An operator's decision for a partition whose stored offset lies outside
// its log (`sbadmin billing reset-offsets`).
struct OffsetReset {
  std::string topic;
  int32_t partition = 0;
  std::string to;  // "earliest", "latest" or a decimal offset
};

// A budget's threshold crossed in a month (budget_alerts).
struct BudgetAlert {
  std::string org;
  std::string key;    // "" for the org's budget
  std::string month;  // YYYY-MM-01
  int percent = 0;    // 80 or 100
  int64_t spend_micros = 0;
  int64_t budget_micros = 0;
};

// A request's counts in the ledger (or folded from the topic).
struct RequestCounts {
  int64_t input = 0;  // every prompt token
  int64_t output = 0;
  int64_t cache_read = 0;  // of input
  int64_t cache_write = 0;
  bool operator==(const RequestCounts&) const = default;
};

class Ledger {
 public:
  explicit Ledger(PgPool& pg) : pg_(pg) {}

  enum class Recorded {
    kNew,        // the request's first event
    kRaised,     // a later running report with higher counts (or the stop reason)
    kSettled,    // the final report set the exact counts
    kUnchanged,  // nothing new: a repeat, an older report, or the row was settled
  };
  // The offset is stored in every case.
  absl::StatusOr<Recorded> Record(const switchboard::billing::v1::UsageEvent& event,
                                  const KafkaPosition& position);
  // Many events, in order, in one transaction of a few set-based statements,
  // with the next offset of every partition `consumed` names (the positions
  // of every message the events came from, refused ones too). The same
  // outcomes as Record() event by event. FailedPrecondition when the
  // schema refuses a row (then nothing is stored: record one by one to find
  // it).
  absl::StatusOr<std::vector<Recorded>> RecordBatch(
      const std::vector<switchboard::billing::v1::UsageEvent>& events,
      const std::vector<KafkaPosition>& consumed);
  // A malformed event: only move the stored offset past it.
  absl::Status Skip(const KafkaPosition& position);
  absl::StatusOr<std::optional<int64_t>> NextOffset(const std::string& group,
                                                    const std::string& topic, int32_t partition);
  // The operator's decisions waiting for `group`'s consumers.
  absl::StatusOr<std::vector<OffsetReset>> PendingResets(const std::string& group);
  // Applies `reset`: stores `next_offset` as the partition's next offset and
  // removes the decision, in one transaction.
  absl::Status ApplyReset(const std::string& group, const OffsetReset& reset, int64_t next_offset);
  // Removes a decision that cannot be applied (an offset outside the log).
  absl::Status DropReset(const std::string& group, const OffsetReset& reset);
  // Records a decision for `partition`, or (nullopt) for every partition of
  // `topic` with a stored offset; returns the partitions it names. `to` is
  // "earliest", "latest" or a decimal offset (InvalidArgument otherwise).
  absl::StatusOr<std::vector<int32_t>> RequestReset(const std::string& group,
                                                    const std::string& topic,
                                                    std::optional<int32_t> partition,
                                                    const std::string& to);

  // Every request started at or after `since`: its counts (reconciliation).
  absl::StatusOr<std::map<std::string, RequestCounts>> CountsSince(absl::Time since);

  // Alerts not yet published to billing.alerts, oldest first; and marking
  // one published.
  absl::StatusOr<std::vector<BudgetAlert>> UnpublishedAlerts(int limit);
  absl::Status MarkAlertPublished(const BudgetAlert& alert);
  // How many alerts RecordBatch has written (any thread): when it moves,
  // there are alerts to publish.
  int64_t alerts_written() const { return alerts_written_.load(); }

  // An org's (key "") or one of its keys' monthly budget, in micro-dollars;
  // 0 removes it. NotFound for an unknown org, or a key not the org's.
  absl::Status SetBudget(const std::string& org, const std::string& key, int64_t monthly_micros);
  struct Budget {
    std::string key;  // "" for the org's
    int64_t monthly_micros = 0;
    int64_t spent_micros = 0;  // this month (UTC)
  };
  absl::StatusOr<std::vector<Budget>> Budgets(const std::string& org);

  // Adds a model's price from `price.from` on (AlreadyExists for one
  // already given at that time: prices are history).
  absl::Status SetPrice(const std::string& model, const Price& price);
  // Every price of `model` (every model's when empty), by model and time.
  absl::StatusOr<std::vector<std::pair<std::string, Price>>> ListPrices(const std::string& model);

  absl::StatusOr<switchboard::billing::v1::GetUsageResponse> Query(
      const switchboard::billing::v1::GetUsageRequest& req);

 private:
  // A change of a request's cost, for its month's spend.
  struct SpendDelta {
    std::string org, key;
    int64_t at_ms = 0;  // the request's start
    int64_t micros = 0;
  };
  // Adds `deltas` to the months' spend and writes the budget alerts the new
  // totals cross, in `tx`.
  void ChargeSpend(pqxx::work& tx, const std::vector<SpendDelta>& deltas);

  PgPool& pg_;
  std::atomic<int64_t> alerts_written_{0};
};

}  // namespace sb::billing
