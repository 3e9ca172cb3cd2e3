// PostgreSQL through libpqxx 6 behind a small pool. Run() lends a
// connection to a function and turns libpqxx's exceptions into statuses:
// a lost connection is Unavailable (retry later; the connection is
// reopened on next use), a unique violation AlreadyExists, a CHECK
// constraint violation FailedPrecondition (that row can never be stored), a
// serialization failure Aborted (retry the transaction), anything else
// Internal.
//
//   auto n = pool.Run<int64_t>([&](pqxx::connection& c) {
//     pqxx::work tx(c);
//     auto r = tx.exec_params1(kCountSql, org);
//     tx.commit();
//     return r[0].as<int64_t>();
//   });
//
// Calls block: run them on a worker thread, never on an event thread.
#pragma once

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <pqxx/pqxx>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace sb {

class PgPool {
 public:
  PgPool(std::string conninfo, int size);
  ~PgPool();

  // Opens one connection to check the settings.
  absl::Status Ping();
  // Pings until the database answers (WaitFor below): a service starting
  // before its database waits instead of exiting (and crash-looping).
  absl::Status WaitReady(absl::Duration limit, const std::function<bool()>& give_up = nullptr);

  template <typename T>
  absl::StatusOr<T> Run(const std::function<T(pqxx::connection&)>& fn) {
    std::optional<T> out;
    absl::Status st = RunImpl([&](pqxx::connection& c) { out.emplace(fn(c)); });
    if (!st.ok()) return st;
    return std::move(*out);
  }
  absl::Status RunVoid(const std::function<void(pqxx::connection&)>& fn) { return RunImpl(fn); }

 private:
  absl::Status RunImpl(const std::function<void(pqxx::connection&)>& fn);
  std::unique_ptr<pqxx::connection> Acquire(absl::Status* error);
  void Release(std::unique_ptr<pqxx::connection> c);

  std::string conninfo_;
  int size_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<pqxx::connection>> idle_;
  int open_ = 0;
};

// Calls `attempt` until it succeeds, backing off from 200 ms to 5 s with a
// warning each time ("waiting for WHAT"), for up to `limit` or until
// `give_up` says so (checked every 100 ms). The last error when it gives up.
absl::Status WaitFor(std::string_view what, absl::Duration limit,
                     const std::function<bool()>& give_up,
                     const std::function<absl::Status()>& attempt);

// PostgreSQL array literals, for passing many values as one parameter
// (`= ANY($1::text[])`, `unnest($1::bigint[], ...)`): libpqxx 6 has no
// conversion for containers. Text elements are quoted and escaped; a text
// must not hold a NUL (PostgreSQL refuses one anyway).
std::string PgArray(const std::vector<std::string>& values);
std::string PgArray(const std::vector<int64_t>& values);
std::string PgArray(const std::vector<bool>& values);

}  // namespace sb
