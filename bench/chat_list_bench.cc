// Listing a user's conversations (issue 10): ChatStore::ListConversations
// for a user with --conversations conversations among --others other
// users' (one org), on a throwaway PostgreSQL started here. Every page is
// timed: the first page again and again, the first page of the archived
// ones, then a walk through all of them by cursor. Run twice in one process: with the list's
// indexes (conversations_active/archived, migration 0016), then with only the index they replaced
// (conversations_recent: no id, no archived state), so the ratio is measured on one machine at one
// time.
//
//   build/bench/chat_list_bench [--conversations=10000] [--others=200000]
//                               [--limit=20] [--first_pages=2000] [--archive_every=100]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "chat/chat_store.h"
#include "sbadmin/admin.h"
#include "support/infra.h"

ABSL_FLAG(int, conversations, 10000, "The listed user's conversations");
ABSL_FLAG(int, others, 200000, "Other users' conversations in the same org (1,000 users)");
ABSL_FLAG(int, limit, 20, "Conversations a page");
ABSL_FLAG(int, first_pages, 2000, "Times the first page is read");
ABSL_FLAG(int, archive_every, 100, "One of this many of the user's conversations is archived");
ABSL_FLAG(bool, explain, false, "Print the plans of a first and a later page");

namespace {

using Clock = std::chrono::steady_clock;

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

struct Figures {
  std::vector<double> first_ms, walk_ms, archived_ms;
  int listed = 0;
};

Figures Measure(sb::chat::ChatStore& store, const sb::chat::Scope& scope) {
  Figures f;
  const int limit = absl::GetFlag(FLAGS_limit);
  for (int i = 0; i < absl::GetFlag(FLAGS_first_pages); ++i) {
    const auto t0 = Clock::now();
    auto page = store.ListConversations(scope, limit, "", false);
    f.first_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    if (!page.ok() || page->conversations_size() != limit) {
      std::fprintf(stderr, "first page: %s\n", page.status().ToString().c_str());
      std::exit(1);
    }
  }
  for (int i = 0; i < absl::GetFlag(FLAGS_first_pages); ++i) {
    const auto t0 = Clock::now();
    auto page = store.ListConversations(scope, limit, "", true);
    f.archived_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    if (!page.ok()) std::exit(1);
  }
  std::string cursor;
  do {
    const auto t0 = Clock::now();
    auto page = store.ListConversations(scope, limit, cursor, false);
    f.walk_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    if (!page.ok()) {
      std::fprintf(stderr, "walk: %s\n", page.status().ToString().c_str());
      std::exit(1);
    }
    f.listed += page->conversations_size();
    cursor = page->has_more() ? page->next_cursor() : "";
  } while (!cursor.empty());
  return f;
}

void Print(const char* name, const Figures& f) {
  std::printf(
      "%-28s first page p50 %.3f ms p99 %.3f ms (%zu reads) | every page p50 %.3f ms p99 %.3f "
      "ms max %.3f ms (%zu pages, %d listed) | archived first page p50 %.3f ms p99 %.3f ms\n",
      name, Percentile(f.first_ms, 0.5), Percentile(f.first_ms, 0.99), f.first_ms.size(),
      Percentile(f.walk_ms, 0.5), Percentile(f.walk_ms, 0.99), Percentile(f.walk_ms, 1.0),
      f.walk_ms.size(), f.listed, Percentile(f.archived_ms, 0.5), Percentile(f.archived_ms, 0.99));
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  auto infra = sb::testing::Infra::Start({.postgres = true, .redis = false, .kafka = false});
  if (!infra.ok()) {
    std::fprintf(stderr, "infra: %s\n", infra.status().ToString().c_str());
    return 1;
  }
  sb::admin::Admin admin((*infra)->pg_uri());
  if (!admin.CreateOrg("bench", "bench").ok()) return 1;
  sb::PgPool pg((*infra)->pg_uri(), 2);
  const int mine = absl::GetFlag(FLAGS_conversations);
  const int others = absl::GetFlag(FLAGS_others);
  // Rows as chat writes them (ULID-like ids in time order), each with its
  // own last message time; a tenth of the user's archived.
  auto loaded = pg.RunVoid([&](pqxx::connection& c) {
    pqxx::work tx(c);
    tx.exec_params(
        "INSERT INTO conversations (id, org_id, user_id, title, model, created_at, "
        " last_message_at, archived_at) "
        "SELECT lpad(to_hex(g), 26, '0'), 'bench', "
        " CASE WHEN g <= $1 THEN 'me' ELSE 'user-' || (g % 1000) END, 't', 'sim-small', "
        " now() - g * interval '1 second', now() - (random() * 86400 * 30) * interval '1 second', "
        " CASE WHEN g <= $1 AND g % $3 = 0 THEN now() END "
        "FROM generate_series(1, $1::int + $2::int) g",
        mine, others, absl::GetFlag(FLAGS_archive_every));
    tx.commit();
    pqxx::nontransaction(c).exec("ANALYZE conversations");
  });
  if (!loaded.ok()) {
    std::fprintf(stderr, "load: %s\n", loaded.ToString().c_str());
    return 1;
  }
  std::printf(
      "%d conversations of one user (1 in %d archived) among %d of 1,000 others; limit %d\n", mine,
      absl::GetFlag(FLAGS_archive_every), others, absl::GetFlag(FLAGS_limit));
  if (absl::GetFlag(FLAGS_explain)) {
    auto st = pg.RunVoid([](pqxx::connection& c) {
      pqxx::work tx(c);
      for (const char* q : {"EXPLAIN ANALYZE SELECT id FROM conversations WHERE org_id = 'bench' "
                            "AND user_id = 'me' "
                            "AND deleted_at IS NULL AND archived_at IS NULL "
                            "ORDER BY last_message_at DESC, id DESC LIMIT 21"}) {
        for (const auto& r : tx.exec(q)) std::printf("%s\n", r[0].c_str());
      }
    });
    if (!st.ok()) std::printf("%s\n", st.ToString().c_str());
  }
  sb::UlidGenerator ids;
  sb::chat::ChatStore store(pg, ids);
  const sb::chat::Scope me{"bench", "me"};
  Print("conversations_active (0016)", Measure(store, me));
  auto swapped = pg.RunVoid([](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    tx.exec("DROP INDEX conversations_active");
    tx.exec("DROP INDEX conversations_archived");
    tx.exec(
        "CREATE INDEX conversations_recent ON conversations "
        "(org_id, user_id, last_message_at DESC)");
    tx.exec("ANALYZE conversations");
  });
  if (!swapped.ok()) return 1;
  Print("conversations_recent (0001)", Measure(store, me));
  return 0;
}
