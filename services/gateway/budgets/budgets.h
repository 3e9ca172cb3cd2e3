// Monthly budgets at the edge (issue 13). Billing keeps each month's spend
// per org and per API key in PostgreSQL (spend_monthly) in the same
// transaction as the ledger rows; a BudgetCache reads every budget with its
// month's spend (Refresh, every --budgets_refresh_ms: one indexed query),
// and the BudgetFilter refuses a request whose org or key has spent its
// budget: 402 billing_error (OpenAI dialect: 402 insufficient_quota).
// Requests already running finish. A request admitted just before the
// refresh that shows the budget spent can still run: the overspend is at
// most what was admitted within one refresh period and what was running.
//
// PostgreSQL down: the cache keeps the spend and budgets it last read
// (sb_gateway_budget_refresh_failures_total).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "gateway/filters/filter.h"

namespace sb {
class PgPool;
}

namespace sb::gateway {

struct BudgetRow {
  std::string org_id;
  std::string key_id;  // "" for the org's budget
  int64_t monthly_micros = 0;
  int64_t spent_micros = 0;  // this month (UTC)
};

class BudgetSource {
 public:
  virtual ~BudgetSource() = default;
  // Every budget with its month's spend (blocks).
  virtual absl::StatusOr<std::vector<BudgetRow>> Load() = 0;
};

class PgBudgetSource final : public BudgetSource {
 public:
  explicit PgBudgetSource(PgPool& pg) : pg_(pg) {}
  absl::StatusOr<std::vector<BudgetRow>> Load() override;

 private:
  PgPool& pg_;
};

class BudgetCache {
 public:
  explicit BudgetCache(BudgetSource& source) : source_(source) {}

  // Reads every budget and spend (blocks); on an error it keeps what it has.
  absl::Status Refresh();
  // The budget a request of `org_id` with `key_id` has used up (the org's
  // first), if any.
  std::optional<BudgetRow> Exhausted(const std::string& org_id, const std::string& key_id) const;
  // Replaces every row (tests).
  void Replace(std::vector<BudgetRow> rows);

 private:
  BudgetSource& source_;
  mutable std::mutex mu_;
  std::map<std::pair<std::string, std::string>, BudgetRow> rows_;
};

// 402: the org's or key's monthly budget is spent. The message says which
// and how much, nothing else.
absl::Status BudgetExhaustedError(const BudgetRow& row);

class BudgetFilter final : public Filter {
 public:
  explicit BudgetFilter(const BudgetCache& budgets) : budgets_(budgets) {}
  std::string_view name() const override { return "budget"; }
  void Handle(const std::shared_ptr<RequestContext>& ctx, Next next) override;

 private:
  const BudgetCache& budgets_;
};

}  // namespace sb::gateway
