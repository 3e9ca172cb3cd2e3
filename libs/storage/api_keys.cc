#include "storage/api_keys.h"

#include <optional>

#include "storage/pg.h"

namespace sb {
namespace {

constexpr const char* kFindKey =
    "SELECT id, org_id, coalesce(user_id, '') FROM api_keys "
    "WHERE secret_sha256 = $1 AND revoked_at IS NULL";

}  // namespace

absl::StatusOr<Principal> PgKeyStore::FindBySecretHash(const std::string& sha256) {
  std::optional<Principal> found;
  absl::Status st = pg_.RunVoid([&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    pqxx::binarystring hash(sha256);
    auto r = tx.exec_params(kFindKey, hash);
    if (!r.empty()) {
      found = Principal{r[0][0].as<std::string>(), r[0][1].as<std::string>(),
                        r[0][2].as<std::string>()};
    }
  });
  if (!st.ok()) return st;
  if (!found) return absl::NotFoundError("no such key");
  return *found;
}

}  // namespace sb
