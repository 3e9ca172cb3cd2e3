#include "billing/ledger.h"

#include <algorithm>

#include "absl/strings/numbers.h"

namespace sb::billing {
namespace {

namespace bpb = switchboard::billing::v1;

constexpr const char* kInsertLedger =
    "INSERT INTO usage_ledger (request_id, org_id, model, worker_id, source, input_tokens, "
    " output_tokens, stop_reason, occurred_at, end_user_id, final) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, to_timestamp($9::double precision / 1000), $10, $11) "
    "ON CONFLICT (request_id) DO NOTHING";
constexpr const char* kLockLedgerRow =
    "SELECT input_tokens, output_tokens, stop_reason, "
    " (extract(epoch from occurred_at) * 1000)::bigint, org_id, model, final "
    "FROM usage_ledger WHERE request_id = $1 FOR UPDATE";
constexpr const char* kUpdateLedgerRow =
    "UPDATE usage_ledger SET input_tokens = $2, output_tokens = $3, stop_reason = $4, final = $5 "
    "WHERE request_id = $1";
constexpr const char* kRollupHourly =
    "INSERT INTO usage_hourly (org_id, model, hour, requests, input_tokens, output_tokens) "
    "VALUES ($1, $2, date_trunc('hour', to_timestamp($3::double precision / 1000)), 1, $4, $5) "
    "ON CONFLICT (org_id, model, hour) DO UPDATE SET "
    " requests = usage_hourly.requests + 1,"
    " input_tokens = usage_hourly.input_tokens + EXCLUDED.input_tokens,"
    " output_tokens = usage_hourly.output_tokens + EXCLUDED.output_tokens";
// A later report of a request: its hour's row exists (its first event made
// it), and the request is counted there already. The deltas may be negative
// (a final report below the running one reported ahead of delivery).
constexpr const char* kAdjustHourly =
    "UPDATE usage_hourly SET input_tokens = input_tokens + $4, output_tokens = output_tokens + $5 "
    "WHERE org_id = $1 AND model = $2 "
    " AND hour = date_trunc('hour', to_timestamp($3::double precision / 1000))";
constexpr const char* kStoreOffset =
    "INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset) "
    "VALUES ($1, $2, $3, $4) "
    "ON CONFLICT (consumer_group, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset";
constexpr const char* kLoadOffset =
    "SELECT next_offset FROM consumer_offsets "
    "WHERE consumer_group = $1 AND topic = $2 AND partition = $3";
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
    " (extract(epoch from occurred_at) * 1000)::bigint, stop_reason, end_user_id "
    "FROM usage_ledger WHERE org_id = $1 AND ($2 = '' OR request_id = $2) "
    " AND occurred_at >= to_timestamp($3::double precision / 1000) "
    " AND ($4 = 0 OR occurred_at < to_timestamp($4::double precision / 1000)) "
    "ORDER BY occurred_at, request_id LIMIT 1000";
constexpr const char* kQueryTotals =
    "SELECT count(*), coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0) "
    "FROM usage_ledger WHERE org_id = $1 AND ($2 = '' OR request_id = $2) "
    " AND occurred_at >= to_timestamp($3::double precision / 1000) "
    " AND ($4 = 0 OR occurred_at < to_timestamp($4::double precision / 1000))";

}  // namespace

absl::StatusOr<Ledger::Recorded> Ledger::Record(const bpb::UsageEvent& e,
                                                const KafkaPosition& pos) {
  return pg_.Run<Recorded>([&](pqxx::connection& c) {
    pqxx::work tx(c);
    Recorded outcome = Recorded::kUnchanged;
    auto row = tx.exec_params(kLockLedgerRow, e.request_id());
    if (row.empty()) {
      tx.exec_params(kInsertLedger, e.request_id(), e.org_id(), e.model(), e.worker_id(),
                     e.source(), e.input_tokens(), e.output_tokens(), e.stop_reason(),
                     e.at_unix_ms(), e.end_user_id(), e.final());
      tx.exec_params(kRollupHourly, e.org_id(), e.model(), e.at_unix_ms(), e.input_tokens(),
                     e.output_tokens());
      outcome = Recorded::kNew;
    } else if (!row[0][6].as<bool>()) {
      // The row's org, model and hour stay the first event's. A running
      // report only raises its counts; the final one sets them exactly
      // (reports run ahead of delivery, so the end may be lower) and
      // settles the row.
      const int64_t old_in = row[0][0].as<int64_t>(), old_out = row[0][1].as<int64_t>();
      const std::string old_stop = row[0][2].as<std::string>();
      int64_t in = std::max<int64_t>(old_in, e.input_tokens());
      int64_t out = std::max<int64_t>(old_out, e.output_tokens());
      std::string stop = old_stop.empty() ? e.stop_reason() : old_stop;
      if (e.final()) {
        in = e.input_tokens();
        out = e.output_tokens();
        stop = e.stop_reason();
      }
      if (e.final() || in != old_in || out != old_out || stop != old_stop) {
        tx.exec_params(kUpdateLedgerRow, e.request_id(), in, out, stop, e.final());
        if (in != old_in || out != old_out) {
          tx.exec_params(kAdjustHourly, row[0][4].as<std::string>(), row[0][5].as<std::string>(),
                         row[0][3].as<int64_t>(), in - old_in, out - old_out);
        }
        outcome = e.final() ? Recorded::kSettled : Recorded::kRaised;
      }
    }
    tx.exec_params(kStoreOffset, pos.group, pos.topic, pos.partition, pos.offset + 1);
    tx.commit();
    return outcome;
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
    }
    auto t = tx.exec_params1(kQueryTotals, req.org_id(), req.request_id(), req.since_unix_ms(),
                             req.until_unix_ms());
    resp.set_requests(t[0].as<int64_t>());
    resp.set_total_input_tokens(t[1].as<int64_t>());
    resp.set_total_output_tokens(t[2].as<int64_t>());
    return resp;
  });
}

}  // namespace sb::billing
