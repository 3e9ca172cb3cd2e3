#include "gateway/budgets/budgets.h"

#include "core/metrics.h"
#include "gateway/context.h"
#include "gateway/dialects/fields.h"
#include "storage/pg.h"

namespace sb::gateway {

namespace {

constexpr const char* kLoadBudgets =
    "SELECT b.org_id, b.key_id, b.monthly_micros, coalesce(s.cost_micros, 0) FROM budgets b "
    "LEFT JOIN spend_monthly s ON s.org_id = b.org_id AND s.key_id = b.key_id "
    " AND s.month = date_trunc('month', now() AT TIME ZONE 'UTC')::date";

// Micro-dollars as dollars and cents, rounded up ($500.00).
std::string Dollars(int64_t micros) {
  const int64_t cents = (micros + 9'999) / 10'000;
  std::string c = std::to_string(cents % 100);
  if (c.size() < 2) c.insert(0, 1, '0');
  return "$" + std::to_string(cents / 100) + "." + c;
}

}  // namespace

absl::StatusOr<std::vector<BudgetRow>> PgBudgetSource::Load() {
  return pg_.Run<std::vector<BudgetRow>>([](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    std::vector<BudgetRow> out;
    for (const auto& r : tx.exec(kLoadBudgets)) {
      out.push_back(
          {r[0].as<std::string>(), r[1].as<std::string>(), r[2].as<int64_t>(), r[3].as<int64_t>()});
    }
    return out;
  });
}

absl::Status BudgetCache::Refresh() {
  auto rows = source_.Load();
  if (!rows.ok()) {
    metrics::Default()
        .GetCounter("sb_gateway_budget_refresh_failures_total",
                    "Budget and spend reloads that failed (the last ones stay in force)")
        .Inc();
    return rows.status();
  }
  Replace(std::move(*rows));
  return absl::OkStatus();
}

void BudgetCache::Replace(std::vector<BudgetRow> rows) {
  std::map<std::pair<std::string, std::string>, BudgetRow> by_scope;
  for (auto& r : rows) {
    auto key = std::make_pair(r.org_id, r.key_id);
    by_scope.emplace(std::move(key), std::move(r));
  }
  std::lock_guard<std::mutex> lock(mu_);
  rows_ = std::move(by_scope);
}

std::optional<BudgetRow> BudgetCache::Exhausted(const std::string& org_id,
                                                const std::string& key_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto spent = [&](const std::string& key) -> std::optional<BudgetRow> {
    auto it = rows_.find({org_id, key});
    if (it != rows_.end() && it->second.spent_micros >= it->second.monthly_micros) {
      return it->second;
    }
    return std::nullopt;
  };
  if (auto org = spent("")) return org;
  if (!key_id.empty()) return spent(key_id);
  return std::nullopt;
}

absl::Status BudgetExhaustedError(const BudgetRow& row) {
  return BillingError(
      (row.key_id.empty() ? "your organization's monthly budget of "
                          : "this API key's monthly budget of ") +
      Dollars(row.monthly_micros) +
      " is used up; it renews on the first of next month (UTC), or an administrator can raise "
      "it");
}

void BudgetFilter::Handle(const std::shared_ptr<RequestContext>& ctx, Next next) {
  if (ctx->principal.has_value()) {
    if (auto spent = budgets_.Exhausted(ctx->principal->org_id, ctx->principal->key_id)) {
      metrics::Default()
          .GetCounter("sb_gateway_budget_refusals_total",
                      "Requests refused because a monthly budget is spent, by scope",
                      {{"scope", spent->key_id.empty() ? "org" : "key"}})
          .Inc();
      ctx->Fail(BudgetExhaustedError(*spent));
      return;
    }
  }
  next();
}

}  // namespace sb::gateway
