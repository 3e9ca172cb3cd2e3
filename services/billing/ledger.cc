#include "billing/ledger.h"

#include <algorithm>
#include <map>
#include <tuple>
#include <unordered_map>

#include "absl/strings/numbers.h"
#include "billing/pricing.h"
#include "core/metrics.h"

namespace sb::billing {
namespace {

namespace bpb = switchboard::billing::v1;

metrics::Counter& UnpricedEvents(const std::string& model) {
  return metrics::Default().GetCounter(
      "sb_billing_unpriced_events_total",
      "Ledger rows written at cost 0 because their model has no price in force",
      {{"model", model}});
}

constexpr const char* kStoreOffset =
    "INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset) "
    "VALUES ($1, $2, $3, $4) "
    "ON CONFLICT (consumer_group, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset";
constexpr const char* kLoadOffset =
    "SELECT next_offset FROM consumer_offsets "
    "WHERE consumer_group = $1 AND topic = $2 AND partition = $3";
// The batch's statements: rows as parallel arrays, unnested.
constexpr const char* kLockLedgerRows =
    "SELECT request_id, input_tokens, output_tokens, stop_reason, "
    " (extract(epoch from occurred_at) * 1000)::bigint, org_id, model, final, cost_micros, "
    " api_key_id, cache_read_tokens, cache_write_tokens "
    "FROM usage_ledger WHERE request_id = ANY($1::text[]) FOR UPDATE";
// The prices of the batch's models ('-infinity': since the beginning).
constexpr const char* kLoadPrices =
    "SELECT model, CASE WHEN effective_from = '-infinity' THEN NULL "
    "  ELSE (extract(epoch from effective_from) * 1000000)::bigint END, "
    " input_per_mtok_micros, output_per_mtok_micros, cache_read_per_mtok_micros, "
    " cache_write_per_mtok_micros "
    "FROM model_prices WHERE model = ANY($1::text[])";
constexpr const char* kInsertLedgerRows =
    "INSERT INTO usage_ledger (request_id, org_id, model, worker_id, source, input_tokens, "
    " output_tokens, stop_reason, occurred_at, end_user_id, final, cost_micros, api_key_id, "
    " cache_read_tokens, cache_write_tokens) "
    "SELECT id, org, model, worker, source, i, o, stop, to_timestamp(at::double precision / 1000), "
    " end_user, fin, cost, key, cr, cw "
    "FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], "
    " $7::bigint[], $8::text[], $9::bigint[], $10::text[], $11::boolean[], $12::bigint[], "
    " $13::text[], $14::bigint[], $15::bigint[]) "
    " AS v(id, org, model, worker, source, i, o, stop, at, end_user, fin, cost, key, cr, cw) "
    "ON CONFLICT (request_id) DO NOTHING";
constexpr const char* kUpdateLedgerRows =
    "UPDATE usage_ledger u SET input_tokens = v.i, output_tokens = v.o, stop_reason = v.stop, "
    " final = v.fin, cost_micros = v.cost, cache_read_tokens = v.cr, cache_write_tokens = v.cw "
    "FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::boolean[], "
    " $6::bigint[], $7::bigint[], $8::bigint[]) AS v(id, i, o, stop, fin, cost, cr, cw) "
    "WHERE u.request_id = v.id";
// New requests and later reports' differences, summed per hour. An hour
// with new requests is inserted or added to; one with only later reports
// exists (their first event made it) and is added to. (Apart, because a
// row's CHECK holds for the row an upsert would insert.)
constexpr const char* kRollupHourlyRows =
    "WITH v AS ("
    " SELECT org, model, date_trunc('hour', to_timestamp(at::double precision / 1000)) AS h, "
    "  sum(n) AS n, sum(i) AS i, sum(o) AS o, sum(cost) AS cost, sum(cr) AS cr, sum(cw) AS cw "
    " FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], "
    "  $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[]) "
    "  AS u(org, model, at, n, i, o, cost, cr, cw) GROUP BY org, model, h), "
    "adjusted AS ("
    " UPDATE usage_hourly SET input_tokens = usage_hourly.input_tokens + v.i,"
    "  output_tokens = usage_hourly.output_tokens + v.o,"
    "  cost_micros = usage_hourly.cost_micros + v.cost,"
    "  cache_read_tokens = usage_hourly.cache_read_tokens + v.cr,"
    "  cache_write_tokens = usage_hourly.cache_write_tokens + v.cw "
    " FROM v WHERE v.n = 0 AND usage_hourly.org_id = v.org AND usage_hourly.model = v.model "
    "  AND usage_hourly.hour = v.h) "
    "INSERT INTO usage_hourly (org_id, model, hour, requests, input_tokens, output_tokens, "
    " cost_micros, cache_read_tokens, cache_write_tokens) "
    "SELECT org, model, h, n, i, o, cost, cr, cw FROM v WHERE n > 0 "
    "ON CONFLICT (org_id, model, hour) DO UPDATE SET "
    " requests = usage_hourly.requests + EXCLUDED.requests,"
    " input_tokens = usage_hourly.input_tokens + EXCLUDED.input_tokens,"
    " output_tokens = usage_hourly.output_tokens + EXCLUDED.output_tokens,"
    " cost_micros = usage_hourly.cost_micros + EXCLUDED.cost_micros,"
    " cache_read_tokens = usage_hourly.cache_read_tokens + EXCLUDED.cache_read_tokens,"
    " cache_write_tokens = usage_hourly.cache_write_tokens + EXCLUDED.cache_write_tokens";
// Spend added per org ('' key) and per org and key for a month; returns the
// new totals. A negative difference (a final report below a running one)
// only lowers a month that exists (apart: a CHECK holds for the row an
// upsert would insert).
constexpr const char* kChargeSpend =
    "WITH v AS (SELECT org, key, month, sum(d) AS d "
    " FROM unnest($1::text[], $2::text[], $3::date[], $4::bigint[]) AS u(org, key, month, d) "
    " GROUP BY org, key, month), "
    "lowered AS ("
    " UPDATE spend_monthly s SET cost_micros = greatest(0, s.cost_micros + v.d) FROM v "
    " WHERE v.d < 0 AND s.org_id = v.org AND s.key_id = v.key AND s.month = v.month "
    " RETURNING s.org_id, s.key_id, s.month, s.cost_micros), "
    "raised AS ("
    " INSERT INTO spend_monthly (org_id, key_id, month, cost_micros) "
    " SELECT org, key, month, d FROM v WHERE d > 0 "
    " ON CONFLICT (org_id, key_id, month) DO UPDATE "
    "  SET cost_micros = spend_monthly.cost_micros + EXCLUDED.cost_micros "
    " RETURNING org_id, key_id, month, cost_micros) "
    "SELECT org_id, key_id, month::text, cost_micros FROM lowered "
    "UNION ALL SELECT org_id, key_id, month::text, cost_micros FROM raised";
constexpr const char* kBudgetsOf =
    "SELECT org_id, key_id, monthly_micros FROM budgets WHERE org_id = ANY($1::text[])";
constexpr const char* kInsertAlerts =
    "INSERT INTO budget_alerts (org_id, key_id, month, percent, spend_micros, budget_micros) "
    "SELECT * FROM unnest($1::text[], $2::text[], $3::date[], $4::integer[], $5::bigint[], "
    " $6::bigint[]) "
    "ON CONFLICT (org_id, key_id, month, percent) DO NOTHING RETURNING 1";
constexpr const char* kUnpublishedAlerts =
    "SELECT org_id, key_id, month::text, percent, spend_micros, budget_micros "
    "FROM budget_alerts WHERE published_at IS NULL ORDER BY created_at LIMIT $1";
constexpr const char* kMarkAlertPublished =
    "UPDATE budget_alerts SET published_at = clock_timestamp() "
    "WHERE org_id = $1 AND key_id = $2 AND month = $3::date AND percent = $4";
constexpr const char* kOrgExists = "SELECT 1 FROM orgs WHERE id = $1";
constexpr const char* kKeyOfOrg = "SELECT 1 FROM api_keys WHERE id = $1 AND org_id = $2";
constexpr const char* kSetBudget =
    "INSERT INTO budgets (org_id, key_id, monthly_micros) VALUES ($1, $2, $3) "
    "ON CONFLICT (org_id, key_id) DO UPDATE SET monthly_micros = EXCLUDED.monthly_micros, "
    " updated_at = clock_timestamp()";
constexpr const char* kRemoveBudget = "DELETE FROM budgets WHERE org_id = $1 AND key_id = $2";
// Budgets with this month's spend (what gateways read too).
constexpr const char* kBudgetsWithSpend =
    "SELECT b.key_id, b.monthly_micros, coalesce(s.cost_micros, 0) FROM budgets b "
    "LEFT JOIN spend_monthly s ON s.org_id = b.org_id AND s.key_id = b.key_id "
    " AND s.month = date_trunc('month', now() AT TIME ZONE 'UTC')::date "
    "WHERE b.org_id = $1 ORDER BY b.key_id";
constexpr const char* kStoreOffsets =
    "INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset) "
    "SELECT * FROM unnest($1::text[], $2::text[], $3::integer[], $4::bigint[]) "
    "ON CONFLICT (consumer_group, topic, partition) DO UPDATE SET next_offset = "
    "EXCLUDED.next_offset";
// A price already given for the same model and time is refused (unique):
// prices are history, not edited.
constexpr const char* kInsertPrice =
    "INSERT INTO model_prices (model, effective_from, input_per_mtok_micros, "
    " output_per_mtok_micros, cache_read_per_mtok_micros, cache_write_per_mtok_micros) "
    "VALUES ($1, CASE WHEN $7 THEN '-infinity' "
    " ELSE to_timestamp($2::double precision / 1000000) END, $3, $4, $5, $6)";
constexpr const char* kListPrices =
    "SELECT model, CASE WHEN effective_from = '-infinity' THEN NULL "
    "  ELSE (extract(epoch from effective_from) * 1000000)::bigint END, "
    " input_per_mtok_micros, output_per_mtok_micros, cache_read_per_mtok_micros, "
    " cache_write_per_mtok_micros "
    "FROM model_prices WHERE $1 = '' OR model = $1 ORDER BY model, effective_from";
constexpr const char* kPendingResets =
    "SELECT topic, partition, to_position FROM consumer_offset_resets "
    "WHERE consumer_group = $1 ORDER BY topic, partition";
constexpr const char* kDeleteReset =
    "DELETE FROM consumer_offset_resets "
    "WHERE consumer_group = $1 AND topic = $2 AND partition = $3 AND to_position = $4";
constexpr const char* kRequestReset =
    "INSERT INTO consumer_offset_resets (consumer_group, topic, partition, to_position) "
    "VALUES ($1, $2, $3, $4) "
    "ON CONFLICT (consumer_group, topic, partition) DO UPDATE SET "
    " to_position = EXCLUDED.to_position, requested_at = now()";
constexpr const char* kStoredPartitions =
    "SELECT partition FROM consumer_offsets WHERE consumer_group = $1 AND topic = $2 "
    "ORDER BY partition";
constexpr const char* kQueryUsage =
    "SELECT request_id, model, input_tokens, output_tokens, "
    " (extract(epoch from occurred_at) * 1000)::bigint, stop_reason, end_user_id, cost_micros, "
    " cache_read_tokens, cache_write_tokens "
    "FROM usage_ledger WHERE org_id = $1 AND ($2 = '' OR request_id = $2) "
    " AND occurred_at >= to_timestamp($3::double precision / 1000) "
    " AND ($4 = 0 OR occurred_at < to_timestamp($4::double precision / 1000)) "
    "ORDER BY occurred_at, request_id LIMIT 1000";
constexpr const char* kQueryTotals =
    "SELECT count(*), coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), "
    " coalesce(sum(cost_micros), 0), coalesce(sum(cache_read_tokens), 0), "
    " coalesce(sum(cache_write_tokens), 0) "
    "FROM usage_ledger WHERE org_id = $1 AND ($2 = '' OR request_id = $2) "
    " AND occurred_at >= to_timestamp($3::double precision / 1000) "
    " AND ($4 = 0 OR occurred_at < to_timestamp($4::double precision / 1000))";

// A row of kLoadPrices or kListPrices: model, from (NULL: -infinity), the
// four prices.
Price PriceOf(const pqxx::row& r) {
  return {.from = r[1].is_null() ? absl::InfinitePast() : absl::FromUnixMicros(r[1].as<int64_t>()),
          .input_per_mtok = r[2].as<int64_t>(),
          .output_per_mtok = r[3].as<int64_t>(),
          .cache_read_per_mtok = r[4].as<int64_t>(),
          .cache_write_per_mtok = r[5].as<int64_t>()};
}

}  // namespace

absl::StatusOr<Ledger::Recorded> Ledger::Record(const bpb::UsageEvent& e,
                                                const KafkaPosition& pos) {
  auto outcomes = RecordBatch({e}, {pos});
  if (!outcomes.ok()) return outcomes.status();
  return outcomes->front();
}

absl::StatusOr<std::vector<Ledger::Recorded>> Ledger::RecordBatch(
    const std::vector<bpb::UsageEvent>& events, const std::vector<KafkaPosition>& consumed) {
  // A request's row as the batch leaves it.
  struct Row {
    int64_t in = 0, out = 0;
    std::string stop;
    int64_t at_ms = 0;  // the first event's: its hour in the rollup
    std::string org, model, key;
    bool final = false;
    bool inserted = false;  // new in this batch
    bool updated = false;   // an existing row, changed
    int64_t cost = 0;       // micro-dollars
    int64_t cost_before = 0;
    int64_t cache_read = 0, cache_write = 0;  // of `in`
  };
  std::vector<std::string> ids;
  for (const auto& e : events) ids.push_back(e.request_id());
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  std::map<std::tuple<std::string, std::string, int32_t>, int64_t> next_offsets;
  for (const auto& p : consumed) {
    int64_t& next = next_offsets[{p.group, p.topic, p.partition}];
    next = std::max(next, p.offset + 1);
  }
  return pg_.Run<std::vector<Recorded>>([&](pqxx::connection& c) {
    pqxx::work tx(c);
    std::unordered_map<std::string, Row> rows;
    if (!ids.empty()) {
      for (const auto& r : tx.exec_params(kLockLedgerRows, PgArray(ids))) {
        rows[r[0].as<std::string>()] = {.in = r[1].as<int64_t>(),
                                        .out = r[2].as<int64_t>(),
                                        .stop = r[3].as<std::string>(),
                                        .at_ms = r[4].as<int64_t>(),
                                        .org = r[5].as<std::string>(),
                                        .model = r[6].as<std::string>(),
                                        .key = r[9].as<std::string>(),
                                        .final = r[7].as<bool>(),
                                        .cost = r[8].as<int64_t>(),
                                        .cost_before = r[8].as<int64_t>(),
                                        .cache_read = r[10].as<int64_t>(),
                                        .cache_write = r[11].as<int64_t>()};
      }
    }
    // Every price of the models the batch may price.
    PriceBook prices;
    std::vector<std::string> models;
    for (const auto& e : events) models.push_back(e.model());
    for (const auto& [id, row] : rows) models.push_back(row.model);
    std::sort(models.begin(), models.end());
    models.erase(std::unique(models.begin(), models.end()), models.end());
    if (!models.empty()) {
      for (const auto& r : tx.exec_params(kLoadPrices, PgArray(models))) {
        prices.Add(r[0].as<std::string>(), PriceOf(r));
      }
    }
    // The rollup's rows: org, model, time, and requests, input, output and
    // cost added.
    std::vector<std::string> h_org, h_model;
    std::vector<int64_t> h_at, h_n, h_in, h_out, h_cost, h_cr, h_cw;
    auto roll = [&](const Row& row, int64_t n, int64_t in, int64_t out, int64_t cost,
                    int64_t cache_read = 0, int64_t cache_write = 0) {
      h_org.push_back(row.org);
      h_model.push_back(row.model);
      h_at.push_back(row.at_ms);
      h_n.push_back(n);
      h_in.push_back(in);
      h_out.push_back(out);
      h_cost.push_back(cost);
      h_cr.push_back(cache_read);
      h_cw.push_back(cache_write);
    };
    std::vector<Recorded> outcomes;
    outcomes.reserve(events.size());
    for (const auto& e : events) {
      auto [it, fresh] = rows.try_emplace(e.request_id());
      Row& row = it->second;
      if (fresh) {
        row = {.in = e.input_tokens(),
               .out = e.output_tokens(),
               .stop = e.stop_reason(),
               .at_ms = e.at_unix_ms(),
               .org = e.org_id(),
               .model = e.model(),
               .key = e.api_key_id(),
               .final = e.final(),
               .inserted = true,
               .cache_read = e.cache_read_tokens(),
               .cache_write = e.cache_write_tokens()};
        roll(row, 1, row.in, row.out, 0, row.cache_read, row.cache_write);
        outcomes.push_back(Recorded::kNew);
        continue;
      }
      if (row.final) {
        outcomes.push_back(Recorded::kUnchanged);
        continue;
      }
      // As Record(): a running report only raises, the final one sets the
      // exact counts and settles the row.
      int64_t in = std::max<int64_t>(row.in, e.input_tokens());
      int64_t out = std::max<int64_t>(row.out, e.output_tokens());
      int64_t cache_read = std::max<int64_t>(row.cache_read, e.cache_read_tokens());
      int64_t cache_write = std::max<int64_t>(row.cache_write, e.cache_write_tokens());
      std::string stop = row.stop.empty() ? e.stop_reason() : row.stop;
      if (e.final()) {
        in = e.input_tokens();
        out = e.output_tokens();
        cache_read = e.cache_read_tokens();
        cache_write = e.cache_write_tokens();
        stop = e.stop_reason();
      }
      // Raised input with cached tokens from different reports: never more
      // cached than input (the final report settles all four).
      cache_write = std::min(cache_write, in - std::min(cache_read, in));
      cache_read = std::min(cache_read, in);
      const bool counts_changed = in != row.in || out != row.out || cache_read != row.cache_read ||
                                  cache_write != row.cache_write;
      if (!e.final() && !counts_changed && stop == row.stop) {
        outcomes.push_back(Recorded::kUnchanged);
        continue;
      }
      if (counts_changed) {
        roll(row, 0, in - row.in, out - row.out, 0, cache_read - row.cache_read,
             cache_write - row.cache_write);
      }
      row.in = in;
      row.out = out;
      row.cache_read = cache_read;
      row.cache_write = cache_write;
      row.stop = std::move(stop);
      row.final = e.final();
      if (!row.inserted) row.updated = true;
      outcomes.push_back(e.final() ? Recorded::kSettled : Recorded::kRaised);
    }
    // Each changed request's cost at the price in force when it started;
    // its difference goes to the rollup and the month's spend.
    std::vector<SpendDelta> spend;
    for (auto& [id, row] : rows) {
      if (!row.inserted && !row.updated) continue;
      const Price* price = prices.At(row.model, absl::FromUnixMillis(row.at_ms));
      if (price == nullptr) {
        UnpricedEvents(row.model).Inc();
        row.cost = 0;
      } else {
        row.cost = CostMicros(*price, {.input = row.in - row.cache_read - row.cache_write,
                                       .output = row.out,
                                       .cache_read = row.cache_read,
                                       .cache_write = row.cache_write});
      }
      if (row.cost != row.cost_before) {
        roll(row, 0, 0, 0, row.cost - row.cost_before);
        spend.push_back({row.org, row.key, row.at_ms, row.cost - row.cost_before});
      }
    }
    // The first event of each new request gives its worker, source and end
    // user.
    std::unordered_map<std::string, const bpb::UsageEvent*> first;
    for (const auto& e : events) first.try_emplace(e.request_id(), &e);
    std::vector<std::string> n_id, n_org, n_model, n_worker, n_source, n_stop, n_user, n_key;
    std::vector<int64_t> n_in, n_out, n_at, n_cost, n_cr, n_cw;
    std::vector<bool> n_final;
    std::vector<std::string> u_id, u_stop;
    std::vector<int64_t> u_in, u_out, u_cost, u_cr, u_cw;
    std::vector<bool> u_final;
    for (const auto& [id, row] : rows) {
      if (row.inserted) {
        const bpb::UsageEvent& e = *first.at(id);
        n_id.push_back(id);
        n_org.push_back(row.org);
        n_model.push_back(row.model);
        n_worker.push_back(e.worker_id());
        n_source.push_back(e.source());
        n_in.push_back(row.in);
        n_out.push_back(row.out);
        n_stop.push_back(row.stop);
        n_at.push_back(row.at_ms);
        n_user.push_back(e.end_user_id());
        n_final.push_back(row.final);
        n_cost.push_back(row.cost);
        n_key.push_back(row.key);
        n_cr.push_back(row.cache_read);
        n_cw.push_back(row.cache_write);
      } else if (row.updated) {
        u_id.push_back(id);
        u_in.push_back(row.in);
        u_out.push_back(row.out);
        u_stop.push_back(row.stop);
        u_final.push_back(row.final);
        u_cost.push_back(row.cost);
        u_cr.push_back(row.cache_read);
        u_cw.push_back(row.cache_write);
      }
    }
    if (!n_id.empty()) {
      tx.exec_params(kInsertLedgerRows, PgArray(n_id), PgArray(n_org), PgArray(n_model),
                     PgArray(n_worker), PgArray(n_source), PgArray(n_in), PgArray(n_out),
                     PgArray(n_stop), PgArray(n_at), PgArray(n_user), PgArray(n_final),
                     PgArray(n_cost), PgArray(n_key), PgArray(n_cr), PgArray(n_cw));
    }
    if (!u_id.empty()) {
      tx.exec_params(kUpdateLedgerRows, PgArray(u_id), PgArray(u_in), PgArray(u_out),
                     PgArray(u_stop), PgArray(u_final), PgArray(u_cost), PgArray(u_cr),
                     PgArray(u_cw));
    }
    if (!h_org.empty()) {
      tx.exec_params(kRollupHourlyRows, PgArray(h_org), PgArray(h_model), PgArray(h_at),
                     PgArray(h_n), PgArray(h_in), PgArray(h_out), PgArray(h_cost), PgArray(h_cr),
                     PgArray(h_cw));
    }
    if (!spend.empty()) ChargeSpend(tx, spend);
    if (!next_offsets.empty()) {
      std::vector<std::string> groups, topics;
      std::vector<int64_t> partitions, next;
      for (const auto& [key, offset] : next_offsets) {
        groups.push_back(std::get<0>(key));
        topics.push_back(std::get<1>(key));
        partitions.push_back(std::get<2>(key));
        next.push_back(offset);
      }
      tx.exec_params(kStoreOffsets, PgArray(groups), PgArray(topics), PgArray(partitions),
                     PgArray(next));
    }
    tx.commit();
    return outcomes;
  });
}

void Ledger::ChargeSpend(pqxx::work& tx, const std::vector<SpendDelta>& deltas) {
  std::vector<std::string> orgs, keys, months;
  std::vector<int64_t> amounts;
  auto add = [&](const std::string& org, const std::string& key, const std::string& month,
                 int64_t d) {
    orgs.push_back(org);
    keys.push_back(key);
    months.push_back(month);
    amounts.push_back(d);
  };
  for (const SpendDelta& d : deltas) {
    // The month (UTC) the request started in.
    const std::string month =
        absl::FormatTime("%Y-%m-01", absl::FromUnixMillis(d.at_ms), absl::UTCTimeZone());
    add(d.org, "", month, d.micros);
    if (!d.key.empty()) add(d.org, d.key, month, d.micros);
  }
  const pqxx::result totals =
      tx.exec_params(kChargeSpend, PgArray(orgs), PgArray(keys), PgArray(months), PgArray(amounts));
  // Budgets the new totals crossed 80 % or 100 % of.
  std::vector<std::string> touched = orgs;
  std::sort(touched.begin(), touched.end());
  touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
  std::map<std::pair<std::string, std::string>, int64_t> budgets;
  for (const auto& r : tx.exec_params(kBudgetsOf, PgArray(touched))) {
    budgets[{r[0].as<std::string>(), r[1].as<std::string>()}] = r[2].as<int64_t>();
  }
  if (budgets.empty()) return;
  std::vector<std::string> a_org, a_key, a_month;
  std::vector<int64_t> a_percent, a_spend, a_budget;
  for (const auto& r : totals) {
    auto b = budgets.find({r[0].as<std::string>(), r[1].as<std::string>()});
    if (b == budgets.end()) continue;
    const int64_t total = r[3].as<int64_t>();
    for (int percent : {80, 100}) {
      // total / budget >= percent / 100, in integers.
      if (total * 100 < b->second * percent) continue;
      a_org.push_back(b->first.first);
      a_key.push_back(b->first.second);
      a_month.push_back(r[2].as<std::string>());
      a_percent.push_back(percent);
      a_spend.push_back(total);
      a_budget.push_back(b->second);
    }
  }
  if (a_org.empty()) return;
  const auto inserted =
      tx.exec_params(kInsertAlerts, PgArray(a_org), PgArray(a_key), PgArray(a_month),
                     PgArray(a_percent), PgArray(a_spend), PgArray(a_budget));
  alerts_written_.fetch_add(static_cast<int64_t>(inserted.size()));
}

absl::StatusOr<std::map<std::string, RequestCounts>> Ledger::CountsSince(absl::Time since) {
  using Counts = std::map<std::string, RequestCounts>;
  return pg_.Run<Counts>([&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    Counts out;
    for (const auto& r :
         tx.exec_params("SELECT request_id, input_tokens, output_tokens, cache_read_tokens, "
                        " cache_write_tokens FROM usage_ledger "
                        "WHERE occurred_at >= to_timestamp($1::double precision / 1000000)",
                        absl::ToUnixMicros(since))) {
      out[r[0].as<std::string>()] = {r[1].as<int64_t>(), r[2].as<int64_t>(), r[3].as<int64_t>(),
                                     r[4].as<int64_t>()};
    }
    return out;
  });
}

absl::StatusOr<std::vector<BudgetAlert>> Ledger::UnpublishedAlerts(int limit) {
  return pg_.Run<std::vector<BudgetAlert>>([&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    std::vector<BudgetAlert> out;
    for (const auto& r : tx.exec_params(kUnpublishedAlerts, limit)) {
      out.push_back({.org = r[0].as<std::string>(),
                     .key = r[1].as<std::string>(),
                     .month = r[2].as<std::string>(),
                     .percent = r[3].as<int>(),
                     .spend_micros = r[4].as<int64_t>(),
                     .budget_micros = r[5].as<int64_t>()});
    }
    return out;
  });
}

absl::Status Ledger::MarkAlertPublished(const BudgetAlert& a) {
  return pg_.RunVoid([&](pqxx::connection& c) {
    pqxx::work tx(c);
    tx.exec_params(kMarkAlertPublished, a.org, a.key, a.month, a.percent);
    tx.commit();
  });
}

absl::Status Ledger::Skip(const KafkaPosition& pos) {
  return pg_.RunVoid([&](pqxx::connection& c) {
    pqxx::work tx(c);
    tx.exec_params(kStoreOffset, pos.group, pos.topic, pos.partition, pos.offset + 1);
    tx.commit();
  });
}

absl::StatusOr<std::optional<int64_t>> Ledger::NextOffset(const std::string& group,
                                                          const std::string& topic,
                                                          int32_t partition) {
  return pg_.Run<std::optional<int64_t>>([&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    auto r = tx.exec_params(kLoadOffset, group, topic, partition);
    if (r.empty()) return std::optional<int64_t>();
    return std::optional<int64_t>(r[0][0].as<int64_t>());
  });
}

absl::StatusOr<std::vector<OffsetReset>> Ledger::PendingResets(const std::string& group) {
  return pg_.Run<std::vector<OffsetReset>>([&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    std::vector<OffsetReset> out;
    for (const auto& row : tx.exec_params(kPendingResets, group)) {
      out.push_back({row[0].as<std::string>(), row[1].as<int32_t>(), row[2].as<std::string>()});
    }
    return out;
  });
}

absl::Status Ledger::ApplyReset(const std::string& group, const OffsetReset& reset,
                                int64_t next_offset) {
  return pg_.RunVoid([&](pqxx::connection& c) {
    pqxx::work tx(c);
    tx.exec_params(kStoreOffset, group, reset.topic, reset.partition, next_offset);
    tx.exec_params(kDeleteReset, group, reset.topic, reset.partition, reset.to);
    tx.commit();
  });
}

absl::Status Ledger::DropReset(const std::string& group, const OffsetReset& reset) {
  return pg_.RunVoid([&](pqxx::connection& c) {
    pqxx::work tx(c);
    tx.exec_params(kDeleteReset, group, reset.topic, reset.partition, reset.to);
    tx.commit();
  });
}

absl::StatusOr<std::vector<int32_t>> Ledger::RequestReset(const std::string& group,
                                                          const std::string& topic,
                                                          std::optional<int32_t> partition,
                                                          const std::string& to) {
  int64_t offset = 0;
  if (to != "earliest" && to != "latest" && !(absl::SimpleAtoi(to, &offset) && offset >= 0)) {
    return absl::InvalidArgumentError("--to=" + to +
                                      ": want earliest, latest or an offset (0 or more)");
  }
  if (partition && *partition < 0) {
    return absl::InvalidArgumentError("--partition=" + std::to_string(*partition) +
                                      ": want 0 or more");
  }
  return pg_.Run<std::vector<int32_t>>([&](pqxx::connection& c) {
    pqxx::work tx(c);
    std::vector<int32_t> parts;
    if (partition) {
      parts.push_back(*partition);
    } else {
      for (const auto& row : tx.exec_params(kStoredPartitions, group, topic)) {
        parts.push_back(row[0].as<int32_t>());
      }
    }
    // A canonical offset ("007" is 7), so the consumer's delete matches.
    const std::string position = to == "earliest" || to == "latest" ? to : std::to_string(offset);
    for (int32_t p : parts) tx.exec_params(kRequestReset, group, topic, p, position);
    tx.commit();
    return parts;
  });
}

absl::Status Ledger::SetBudget(const std::string& org, const std::string& key,
                               int64_t monthly_micros) {
  if (monthly_micros < 0) return absl::InvalidArgumentError("a budget cannot be negative");
  auto done = pg_.Run<absl::Status>([&](pqxx::connection& c) {
    pqxx::work tx(c);
    if (tx.exec_params(kOrgExists, org).empty()) return absl::NotFoundError("no org " + org);
    if (!key.empty() && tx.exec_params(kKeyOfOrg, key, org).empty()) {
      return absl::NotFoundError("org " + org + " has no key " + key);
    }
    if (monthly_micros == 0) {
      tx.exec_params(kRemoveBudget, org, key);
    } else {
      tx.exec_params(kSetBudget, org, key, monthly_micros);
    }
    tx.commit();
    return absl::OkStatus();
  });
  return done.ok() ? *done : done.status();
}

absl::StatusOr<std::vector<Ledger::Budget>> Ledger::Budgets(const std::string& org) {
  return pg_.Run<std::vector<Budget>>([&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    std::vector<Budget> out;
    for (const auto& r : tx.exec_params(kBudgetsWithSpend, org)) {
      out.push_back({r[0].as<std::string>(), r[1].as<int64_t>(), r[2].as<int64_t>()});
    }
    return out;
  });
}

absl::Status Ledger::SetPrice(const std::string& model, const Price& price) {
  if (model.empty()) return absl::InvalidArgumentError("a price needs a model");
  return pg_.RunVoid([&](pqxx::connection& c) {
    pqxx::work tx(c);
    const bool always = price.from == absl::InfinitePast();
    tx.exec_params(kInsertPrice, model, always ? 0 : absl::ToUnixMicros(price.from),
                   price.input_per_mtok, price.output_per_mtok, price.cache_read_per_mtok,
                   price.cache_write_per_mtok, always);
    tx.commit();
  });
}

absl::StatusOr<std::vector<std::pair<std::string, Price>>> Ledger::ListPrices(
    const std::string& model) {
  return pg_.Run<std::vector<std::pair<std::string, Price>>>([&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    std::vector<std::pair<std::string, Price>> out;
    for (const auto& r : tx.exec_params(kListPrices, model)) {
      out.push_back({r[0].as<std::string>(), PriceOf(r)});
    }
    return out;
  });
}

absl::StatusOr<bpb::GetUsageResponse> Ledger::Query(const bpb::GetUsageRequest& req) {
  return pg_.Run<bpb::GetUsageResponse>([&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    bpb::GetUsageResponse resp;
    for (const auto& row : tx.exec_params(kQueryUsage, req.org_id(), req.request_id(),
                                          req.since_unix_ms(), req.until_unix_ms())) {
      auto* r = resp.add_records();
      r->set_request_id(row[0].as<std::string>());
      r->set_model(row[1].as<std::string>());
      r->set_input_tokens(row[2].as<int>());
      r->set_output_tokens(row[3].as<int>());
      r->set_at_unix_ms(row[4].as<int64_t>());
      r->set_stop_reason(row[5].as<std::string>());
      r->set_end_user_id(row[6].as<std::string>());
      r->set_cost_micros(row[7].as<int64_t>());
      r->set_cache_read_tokens(row[8].as<int>());
      r->set_cache_write_tokens(row[9].as<int>());
    }
    auto t = tx.exec_params1(kQueryTotals, req.org_id(), req.request_id(), req.since_unix_ms(),
                             req.until_unix_ms());
    resp.set_requests(t[0].as<int64_t>());
    resp.set_total_input_tokens(t[1].as<int64_t>());
    resp.set_total_output_tokens(t[2].as<int64_t>());
    resp.set_total_cost_micros(t[3].as<int64_t>());
    resp.set_total_cache_read_tokens(t[4].as<int64_t>());
    resp.set_total_cache_write_tokens(t[5].as<int64_t>());
    return resp;
  });
}

}  // namespace sb::billing
