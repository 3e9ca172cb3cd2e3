#include "gateway/admission/limits.h"

#include "storage/pg.h"

namespace sb::gateway {
namespace {

constexpr const char* kChangedSince =
    "SELECT org_id, key_id, model, coalesce(rpm, 0), coalesce(input_tpm, 0), "
    " coalesce(output_tpm, 0), coalesce(concurrency, 0), "
    " (extract(epoch from updated_at) * 1000000)::bigint "
    "FROM rate_limits WHERE updated_at >= to_timestamp($1::double precision / 1000000)";

}  // namespace

std::string LimitRow::Scope() const {
  std::string s = org_id;
  if (!key_id.empty()) s += "/key=" + key_id;
  if (!model.empty()) s += "/model=" + model;
  return s;
}

absl::StatusOr<std::vector<LimitRow>> PgLimitsSource::ChangedSince(absl::Time since) {
  const int64_t since_us = since == absl::InfinitePast() ? 0 : absl::ToUnixMicros(since);
  return pg_.Run<std::vector<LimitRow>>([&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    std::vector<LimitRow> out;
    for (const auto& r : tx.exec_params(kChangedSince, since_us)) {
      LimitRow row;
      row.org_id = r[0].as<std::string>();
      row.key_id = r[1].as<std::string>();
      row.model = r[2].as<std::string>();
      row.rpm = r[3].as<int64_t>();
      row.input_tpm = r[4].as<int64_t>();
      row.output_tpm = r[5].as<int64_t>();
      row.concurrency = r[6].as<int64_t>();
      row.updated_at = absl::FromUnixMicros(r[7].as<int64_t>());
      out.push_back(std::move(row));
    }
    return out;
  });
}

absl::Status LimitsCache::Refresh() {
  absl::Time since;
  {
    std::lock_guard<std::mutex> lock(mu_);
    since = high_water_ == absl::InfinitePast() ? high_water_ : high_water_ - overlap_;
  }
  auto changed = source_.ChangedSince(since);
  if (!changed.ok()) return changed.status();
  for (auto& row : *changed) Put(std::move(row));
  return absl::OkStatus();
}

void LimitsCache::Put(LimitRow row) {
  std::lock_guard<std::mutex> lock(mu_);
  if (row.updated_at > high_water_) high_water_ = row.updated_at;
  auto& org = rows_[row.org_id];
  const auto key = std::make_pair(row.key_id, row.model);
  if (row.limits_nothing()) {
    org.erase(key);
  } else {
    org[key] = std::move(row);
  }
}

std::vector<LimitRow> LimitsCache::For(const std::string& org_id, const std::string& key_id,
                                       const std::string& model) const {
  std::vector<LimitRow> out;
  std::lock_guard<std::mutex> lock(mu_);
  auto org = rows_.find(org_id);
  if (org == rows_.end()) return out;
  for (const auto& k : {std::string(), key_id}) {
    for (const auto& m : {std::string(), model}) {
      auto it = org->second.find({k, m});
      if (it != org->second.end()) out.push_back(it->second);
      if (m == model) break;  // model "" : do not look it up twice
    }
    if (k == key_id) break;
  }
  return out;
}

}  // namespace sb::gateway
