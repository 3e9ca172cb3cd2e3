#include "storage/pg.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "absl/time/clock.h"

namespace sb {

PgPool::PgPool(std::string conninfo, int size) : conninfo_(std::move(conninfo)), size_(size) {}

PgPool::~PgPool() = default;

absl::Status PgPool::Ping() {
  return RunVoid([](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    tx.exec("SELECT 1");
  });
}

absl::Status WaitFor(std::string_view what, absl::Duration limit,
                     const std::function<bool()>& give_up,
                     const std::function<absl::Status()>& attempt) {
  const absl::Time deadline = absl::Now() + limit;
  absl::Duration backoff = absl::Milliseconds(200);
  for (;;) {
    absl::Status st = attempt();
    if (st.ok()) return st;
    if (absl::Now() >= deadline) return st;
    spdlog::warn("waiting for {} ({} left): {}", what,
                 absl::FormatDuration(absl::Trunc(deadline - absl::Now(), absl::Seconds(1))),
                 st.ToString());
    const absl::Time wake = std::min(deadline, absl::Now() + backoff);
    while (absl::Now() < wake) {
      if (give_up && give_up()) {
        return absl::CancelledError(std::string("gave up waiting for ") + std::string(what));
      }
      absl::SleepFor(std::min(absl::Milliseconds(100), wake - absl::Now()));
    }
    backoff = std::min(backoff * 2, absl::Seconds(5));
  }
}

absl::Status PgPool::WaitReady(absl::Duration limit, const std::function<bool()>& give_up) {
  return WaitFor("PostgreSQL", limit, give_up, [this] { return Ping(); });
}

std::unique_ptr<pqxx::connection> PgPool::Acquire(absl::Status* error) {
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return !idle_.empty() || open_ < size_; });
    if (!idle_.empty()) {
      auto c = std::move(idle_.back());
      idle_.pop_back();
      return c;
    }
    ++open_;
  }
  try {
    return std::make_unique<pqxx::connection>(conninfo_);
  } catch (const std::exception& e) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      --open_;
    }
    cv_.notify_one();
    *error = absl::UnavailableError(std::string("postgres connect: ") + e.what());
    return nullptr;
  }
}

void PgPool::Release(std::unique_ptr<pqxx::connection> c) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (c && c->is_open()) {
      idle_.push_back(std::move(c));
    } else {
      --open_;
    }
  }
  cv_.notify_one();
}

absl::Status PgPool::RunImpl(const std::function<void(pqxx::connection&)>& fn) {
  absl::Status error;
  auto conn = Acquire(&error);
  if (!conn) return error;
  absl::Status result;
  try {
    fn(*conn);
  } catch (const pqxx::broken_connection& e) {
    conn.reset();  // reopened on a later Acquire
    result = absl::UnavailableError(std::string("postgres connection lost: ") + e.what());
  } catch (const pqxx::unique_violation& e) {
    result = absl::AlreadyExistsError(e.what());
  } catch (const pqxx::check_violation& e) {
    // The schema refuses the row: retrying the same row cannot succeed.
    result = absl::FailedPreconditionError(e.what());
  } catch (const pqxx::serialization_failure& e) {
    result = absl::AbortedError(e.what());
  } catch (const pqxx::in_doubt_error& e) {
    conn.reset();
    result = absl::UnavailableError(std::string("postgres commit in doubt: ") + e.what());
  } catch (const std::exception& e) {
    result = absl::InternalError(std::string("postgres: ") + e.what());
  }
  Release(std::move(conn));
  return result;
}

namespace {

// `{e1,e2,...}` with `append` writing each element.
template <typename T, typename Append>
std::string ArrayLiteral(const std::vector<T>& values, Append append) {
  std::string out = "{";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out += ',';
    append(out, values[i]);
  }
  out += '}';
  return out;
}

}  // namespace

std::string PgArray(const std::vector<std::string>& values) {
  return ArrayLiteral(values, [](std::string& out, const std::string& v) {
    out += '"';
    for (char c : v) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  });
}

std::string PgArray(const std::vector<int64_t>& values) {
  return ArrayLiteral(values, [](std::string& out, int64_t v) { out += std::to_string(v); });
}

std::string PgArray(const std::vector<bool>& values) {
  return ArrayLiteral(values, [](std::string& out, bool v) { out += v ? 't' : 'f'; });
}

}  // namespace sb
