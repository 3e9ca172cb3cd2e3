#include "tenant-scheduler/model_registry.h"

#include <spdlog/spdlog.h>

#include <functional>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/metrics.h"
#include "storage/pg.h"

namespace sb::scheduler {
namespace {

// Every write takes this lock first: operator changes are rare, and
// serialising them makes each read-check-write obviously safe.
constexpr const char* kWriteLock = "SELECT pg_advisory_xact_lock(7210007)";
constexpr const char* kVersionColumns =
    "version, model, serving_config::text, safety_policy_version,"
    " (extract(epoch from created_at) * 1000000)::bigint";
constexpr const char* kAliasColumns =
    "alias, stable_version, coalesce(previous_stable_version, ''), coalesce(canary_version, ''),"
    " canary_weight, (extract(epoch from updated_at) * 1000000)::bigint";
constexpr const char* kSelectVersionsSql = "FROM model_versions ORDER BY version";
constexpr const char* kSelectAliasesSql = "FROM model_aliases ORDER BY alias";
constexpr const char* kSelectVersionSql = "FROM model_versions WHERE version = $1";
constexpr const char* kSelectAliasSql = "FROM model_aliases WHERE alias = $1";
constexpr const char* kSameVersion =
    "SELECT model = $2 AND serving_config = $3::jsonb AND safety_policy_version = $4 "
    "FROM model_versions WHERE version = $1";
constexpr const char* kParseJsonb = "SELECT $1::jsonb";
constexpr const char* kIsVersion = "SELECT 1 FROM model_versions WHERE version = $1";
constexpr const char* kIsAlias = "SELECT 1 FROM model_aliases WHERE alias = $1";
constexpr const char* kIsPlatformPolicy =
    "SELECT 1 FROM safety_platform_policies WHERE version = $1::bigint";
constexpr const char* kInsertVersion =
    "INSERT INTO model_versions (version, model, serving_config, safety_policy_version) "
    "VALUES ($1, $2, $3::jsonb, $4)";
constexpr const char* kUpsertAlias =
    "INSERT INTO model_aliases (alias, stable_version, previous_stable_version, canary_version,"
    " canary_weight) VALUES ($1, $2, NULLIF($3, ''), NULLIF($4, ''), $5) "
    "ON CONFLICT (alias) DO UPDATE SET stable_version = EXCLUDED.stable_version,"
    " previous_stable_version = EXCLUDED.previous_stable_version,"
    " canary_version = EXCLUDED.canary_version, canary_weight = EXCLUDED.canary_weight,"
    " updated_at = clock_timestamp()";
constexpr const char* kInsertHistory =
    "INSERT INTO model_alias_history (alias, action, stable_version, previous_stable_version,"
    " canary_version, canary_weight) VALUES ($1, $2, $3, NULLIF($4, ''), NULLIF($5, ''), $6)";
// What a version replaced when it was last promoted: where a rollback to
// it leaves the alias's previous version.
constexpr const char* kReplacedAtPromotion =
    "SELECT coalesce(previous_stable_version, '') FROM model_alias_history "
    "WHERE alias = $1 AND action = 'promote' AND stable_version = $2 ORDER BY id DESC LIMIT 1";

constexpr size_t kMaxNameLength = 200;
constexpr size_t kMaxConfigBytes = 64 * 1024;

std::string Select(const char* columns, const char* rest) {
  return absl::StrCat("SELECT ", columns, " ", rest);
}

ModelVersion VersionOf(const pqxx::row& r) {
  return {.id = r[0].as<std::string>(),
          .model = r[1].as<std::string>(),
          .serving_config = r[2].as<std::string>(),
          .safety_policy_version = r[3].as<std::string>(),
          .created_at = absl::FromUnixMicros(r[4].as<int64_t>())};
}

ModelAlias AliasOf(const pqxx::row& r) {
  return {.name = r[0].as<std::string>(),
          .stable = r[1].as<std::string>(),
          .previous_stable = r[2].as<std::string>(),
          .canary = r[3].as<std::string>(),
          .canary_weight = r[4].as<int>(),
          .updated_at = absl::FromUnixMicros(r[5].as<int64_t>())};
}

std::optional<ModelAlias> FindAlias(pqxx::work& tx, const std::string& alias) {
  auto rows = tx.exec_params(Select(kAliasColumns, kSelectAliasSql), alias);
  if (rows.empty()) return std::nullopt;
  return AliasOf(rows[0]);
}

bool IsVersion(pqxx::work& tx, const std::string& id) {
  return !tx.exec_params(kIsVersion, id).empty();
}

// Stores the alias as `a` says and records the change.
ModelAlias Store(pqxx::work& tx, const ModelAlias& a, std::string_view action) {
  tx.exec_params(kUpsertAlias, a.name, a.stable, a.previous_stable, a.canary, a.canary_weight);
  tx.exec_params(kInsertHistory, a.name, std::string(action), a.stable, a.previous_stable, a.canary,
                 a.canary_weight);
  return *FindAlias(tx, a.name);
}

// The database's own words go to the log; the caller gets a plain status.
absl::Status DatabaseError(const absl::Status& st, std::string_view what_view) {
  const std::string what(what_view);  // Debian's abseil: StrCat takes no std::string_view
  spdlog::error("model registry: {}: {}", what, st.ToString());
  switch (st.code()) {
    case absl::StatusCode::kUnavailable:
      return absl::UnavailableError(
          absl::StrCat("the model registry's database is unavailable (", what, "); retry later"));
    case absl::StatusCode::kAborted:
      return absl::AbortedError(absl::StrCat("a concurrent change interfered (", what, "); retry"));
    default:
      return absl::InternalError(
          absl::StrCat("the model registry failed (", what, "); the scheduler's log has details"));
  }
}

// Runs `fn` in a transaction holding the write lock; commits when it
// returns a value.
template <typename T>
absl::StatusOr<T> Write(PgPool& pg, std::string_view what,
                        const std::function<absl::StatusOr<T>(pqxx::work&)>& fn) {
  auto result = pg.Run<absl::StatusOr<T>>([&](pqxx::connection& c) -> absl::StatusOr<T> {
    pqxx::work tx(c);
    tx.exec(kWriteLock);
    absl::StatusOr<T> out = fn(tx);
    if (out.ok()) tx.commit();
    return out;
  });
  if (!result.ok()) return DatabaseError(result.status(), what);
  return std::move(*result);
}

absl::Status ValidateWeight(int weight) {
  if (weight < 0 || weight > 100) {
    return absl::InvalidArgumentError(
        absl::StrCat("canary weight ", weight, " is not a percentage from 0 to 100"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateModelName(std::string_view what_view, std::string_view name) {
  const std::string what(what_view);  // Debian's abseil: StrCat takes no std::string_view
  if (name.empty()) return absl::InvalidArgumentError(absl::StrCat(what, " is required"));
  if (name.size() > kMaxNameLength) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " is longer than ", kMaxNameLength, " characters"));
  }
  auto alnum = [](char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
  };
  bool ok = alnum(name[0]);
  for (char ch : name) {
    ok = ok && (alnum(ch) || std::string_view("._-:/@+").find(ch) != std::string_view::npos);
  }
  if (!ok) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " '", std::string(name.substr(0, 64)),
                     "' may hold only letters, digits and . _ - : / @ + and must start with a "
                     "letter or digit"));
  }
  return absl::OkStatus();
}

ModelRegistry::ModelRegistry(PgPool& pg) : ModelRegistry(pg, metrics::Default()) {}

ModelRegistry::ModelRegistry(PgPool& pg, metrics::Registry& metrics)
    : pg_(pg), metrics_(metrics), snapshot_(std::make_shared<const ModelCatalog>()) {}

ModelRegistry::~ModelRegistry() { Stop(); }

std::shared_ptr<const ModelCatalog> ModelRegistry::Snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  return snapshot_;
}

absl::Time ModelRegistry::LastLoaded() const {
  std::lock_guard<std::mutex> lock(mu_);
  return loaded_;
}

absl::StatusOr<ModelCatalog> ModelRegistry::Load() {
  return pg_.Run<ModelCatalog>([](pqxx::connection& c) {
    // One snapshot of both tables.
    pqxx::transaction<pqxx::repeatable_read, pqxx::read_only> tx(c);
    std::vector<ModelVersion> versions;
    for (const auto& r : tx.exec(Select(kVersionColumns, kSelectVersionsSql))) {
      versions.push_back(VersionOf(r));
    }
    std::vector<ModelAlias> aliases;
    for (const auto& r : tx.exec(Select(kAliasColumns, kSelectAliasesSql))) {
      aliases.push_back(AliasOf(r));
    }
    tx.commit();
    return ModelCatalog(std::move(versions), std::move(aliases));
  });
}

absl::Status ModelRegistry::Refresh() {
  auto catalog = Load();
  std::lock_guard<std::mutex> lock(mu_);
  if (!catalog.ok()) {
    metrics_
        .GetCounter("sb_scheduler_registry_reload_failures_total",
                    "Reloads of the model registry from PostgreSQL that failed (the last good "
                    "snapshot stays in use)")
        .Inc();
    if (!failing_) {
      spdlog::warn("model registry: reload failed, routing on the snapshot of {}: {}",
                   loaded_ == absl::InfinitePast() ? std::string("(none: names resolve to "
                                                                 "themselves)")
                                                   : absl::FormatTime(loaded_),
                   catalog.status().ToString());
    }
    failing_ = true;
    return catalog.status();
  }
  if (failing_) spdlog::info("model registry: reloading works again");
  failing_ = false;
  loaded_ = absl::Now();
  if (*catalog != *snapshot_) {
    spdlog::info("model registry: {} alias(es), {} version(s)", catalog->aliases().size(),
                 catalog->versions().size());
    snapshot_ = std::make_shared<const ModelCatalog>(std::move(*catalog));
  }
  return absl::OkStatus();
}

void ModelRegistry::Start(absl::Duration interval) {
  std::lock_guard<std::mutex> lock(reload_mu_);
  if (reload_ || stopped_) return;
  reload_ = std::make_unique<Periodic>(std::max(interval, absl::Milliseconds(10)),
                                       [this] { (void)Refresh(); });  // logs its failures
  reload_->Start();
}

void ModelRegistry::Stop() {
  std::lock_guard<std::mutex> lock(reload_mu_);
  stopped_ = true;
  if (reload_) reload_->Stop();
}

void ModelRegistry::Wake() {
  std::lock_guard<std::mutex> lock(reload_mu_);
  if (reload_) reload_->Wake();
}

absl::StatusOr<ModelVersion> ModelRegistry::CreateVersion(const ModelVersion& in) {
  if (auto st = ValidateModelName("version id", in.id); !st.ok()) return st;
  if (auto st = ValidateModelName("served model", in.model); !st.ok()) return st;
  // A pin names a version of the platform's safety policy (safety's
  // safety_platform_policies, in the same database).
  int64_t pin = 0;
  if (!in.safety_policy_version.empty() &&
      (!absl::SimpleAtoi(in.safety_policy_version, &pin) || pin <= 0 ||
       in.safety_policy_version.size() > kMaxNameLength)) {
    return absl::InvalidArgumentError(
        "safety policy version must be a version number of the platform's safety policy "
        "(sbadmin safety show-policy --platform)");
  }
  const std::string config = in.serving_config.empty() ? "{}" : in.serving_config;
  if (config.size() > kMaxConfigBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("serving config is larger than ", kMaxConfigBytes, " bytes"));
  }
  const auto parsed = nlohmann::json::parse(config, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded() || !parsed.is_object()) {
    return absl::InvalidArgumentError("serving config must be a JSON object, such as {}");
  }
  auto stored = Write<ModelVersion>(
      pg_, "creating a version", [&](pqxx::work& tx) -> absl::StatusOr<ModelVersion> {
        if (!tx.exec_params(kIsAlias, in.id).empty()) {
          return absl::AlreadyExistsError(
              absl::StrCat("'", in.id, "' is an alias; a version needs an id of its own"));
        }
        try {
          pqxx::subtransaction check(tx);
          check.exec_params(kParseJsonb, config);
          check.commit();
        } catch (const pqxx::data_exception&) {
          // JSON that jsonb refuses (a \u0000 in a string).
          return absl::InvalidArgumentError(
              "serving config is JSON that PostgreSQL cannot store (a \\u0000 in a string?)");
        }
        if (pin > 0 && tx.exec_params(kIsPlatformPolicy, pin).empty()) {
          return absl::NotFoundError(
              absl::StrCat("the platform has no safety policy version ", pin,
                           " (sbadmin safety set-policy --platform adds one)"));
        }
        auto same = tx.exec_params(kSameVersion, in.id, in.model, config, in.safety_policy_version);
        if (!same.empty() && !same[0][0].as<bool>()) {
          return absl::AlreadyExistsError(
              absl::StrCat("version '", in.id,
                           "' exists with other content; versions are immutable: create a new "
                           "version id"));
        }
        if (same.empty()) {
          tx.exec_params(kInsertVersion, in.id, in.model, config, in.safety_policy_version);
        }
        return VersionOf(tx.exec_params(Select(kVersionColumns, kSelectVersionSql), in.id)[0]);
      });
  if (stored.ok()) Wake();
  return stored;
}

absl::StatusOr<ModelAlias> ModelRegistry::SetAlias(const std::string& alias,
                                                   const std::string& version) {
  if (auto st = ValidateModelName("alias", alias); !st.ok()) return st;
  if (auto st = ValidateModelName("version id", version); !st.ok()) return st;
  auto stored = Write<ModelAlias>(
      pg_, "promoting a version", [&](pqxx::work& tx) -> absl::StatusOr<ModelAlias> {
        if (IsVersion(tx, alias)) {
          return absl::InvalidArgumentError(
              absl::StrCat("'", alias, "' is a version id; an alias needs a name of its own"));
        }
        if (!IsVersion(tx, version)) {
          return absl::NotFoundError(absl::StrCat("no model version '", version,
                                                  "': create it first (model create-version)"));
        }
        std::optional<ModelAlias> current = FindAlias(tx, alias);
        if (current && current->stable == version) return *current;
        ModelAlias next{.name = alias, .stable = version};
        if (current) {
          next.previous_stable = current->stable;
          if (current->canary != version) {
            next.canary = current->canary;
            next.canary_weight = current->canary_weight;
          }
        }
        return Store(tx, next, "promote");
      });
  if (stored.ok()) Wake();
  return stored;
}

absl::StatusOr<ModelAlias> ModelRegistry::SetCanary(const std::string& alias,
                                                    const std::string& version, int weight) {
  if (auto st = ValidateModelName("alias", alias); !st.ok()) return st;
  if (auto st = ValidateWeight(weight); !st.ok()) return st;
  if (weight > 0) {
    if (auto st = ValidateModelName("version id", version); !st.ok()) return st;
  }
  auto stored =
      Write<ModelAlias>(pg_, "setting a canary", [&](pqxx::work& tx) -> absl::StatusOr<ModelAlias> {
        std::optional<ModelAlias> current = FindAlias(tx, alias);
        if (!current) {
          return absl::NotFoundError(absl::StrCat(
              "no alias '", alias, "': give it a stable version first (model set-alias)"));
        }
        ModelAlias next = *current;
        next.canary = "";
        next.canary_weight = 0;
        if (weight > 0) {
          if (!IsVersion(tx, version)) {
            return absl::NotFoundError(absl::StrCat("no model version '", version,
                                                    "': create it first (model create-version)"));
          }
          if (version == current->stable) {
            return absl::InvalidArgumentError(
                absl::StrCat("'", version, "' is already the stable version of '", alias, "'"));
          }
          next.canary = version;
          next.canary_weight = weight;
        }
        return Store(tx, next, "canary");
      });
  if (stored.ok()) Wake();
  return stored;
}

absl::StatusOr<ModelAlias> ModelRegistry::Rollback(const std::string& alias) {
  if (auto st = ValidateModelName("alias", alias); !st.ok()) return st;
  auto stored =
      Write<ModelAlias>(pg_, "rolling back", [&](pqxx::work& tx) -> absl::StatusOr<ModelAlias> {
        std::optional<ModelAlias> current = FindAlias(tx, alias);
        if (!current) return absl::NotFoundError(absl::StrCat("no alias '", alias, "'"));
        if (current->previous_stable.empty()) {
          return absl::FailedPreconditionError(
              absl::StrCat("alias '", alias, "' has no previous stable version to roll back to"));
        }
        ModelAlias next{.name = alias, .stable = current->previous_stable};
        auto before = tx.exec_params(kReplacedAtPromotion, alias, next.stable);
        if (!before.empty()) next.previous_stable = before[0][0].as<std::string>();
        // Never back to the version being rolled away from, nor to itself.
        if (next.previous_stable == current->stable || next.previous_stable == next.stable) {
          next.previous_stable.clear();
        }
        return Store(tx, next, "rollback");
      });
  if (stored.ok()) Wake();
  return stored;
}

absl::StatusOr<ModelCatalog> ModelRegistry::List() {
  auto catalog = Load();
  if (!catalog.ok()) return DatabaseError(catalog.status(), "listing the registry");
  return catalog;
}

}  // namespace sb::scheduler
