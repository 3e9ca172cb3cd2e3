// The ledger and the metering consumer against a real PostgreSQL and the
// dev Kafka-protocol broker, both started for this suite.
#include "billing/ledger.h"

#include <chrono>
#include <thread>

#include "billing/metering_consumer.h"
#include "billing/reconcile.h"
#include "core/metrics.h"
#include "gtest/gtest.h"
#include "storage/kafka.h"
#include "storage/message_signing.h"
#include "support/infra.h"

namespace sb::billing {
namespace {

namespace bpb = switchboard::billing::v1;
using sb::testing::Infra;

Infra* g_infra = nullptr;

class Environment : public ::testing::Environment {
 public:
  void SetUp() override {
    auto infra = Infra::Start({.postgres = true, .redis = false, .kafka = true});
    ASSERT_TRUE(infra.ok()) << infra.status();
    infra_ = std::move(*infra);
    g_infra = infra_.get();
  }
  void TearDown() override {
    g_infra = nullptr;
    infra_.reset();
  }

 private:
  std::unique_ptr<Infra> infra_;
};

bpb::UsageEvent Event(const std::string& org, const std::string& request_id, int in, int out,
                      int64_t at_ms = 1'795'000'000'000) {
  bpb::UsageEvent e;
  e.set_request_id(request_id);
  e.set_org_id(org);
  e.set_model("sim-small");
  e.set_worker_id("w1");
  e.set_source("api");
  e.set_input_tokens(in);
  e.set_output_tokens(out);
  e.set_stop_reason("end_turn");
  e.set_at_unix_ms(at_ms);
  e.set_end_user_id("end-user-7");
  return e;
}

bpb::GetUsageResponse Usage(Ledger& ledger, const std::string& org, const std::string& request_id = "") {
  bpb::GetUsageRequest req;
  req.set_org_id(org);
  req.set_request_id(request_id);
  auto r = ledger.Query(req);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : bpb::GetUsageResponse();
}

class LedgerTest : public ::testing::Test {
 protected:
  LedgerTest() : pg_(g_infra->pg_uri(), 2), ledger_(pg_) {}
  PgPool pg_;
  Ledger ledger_;
};

TEST_F(LedgerTest, ARedeliveredEventCountsOnceAndTheOffsetStillMoves) {
  const KafkaPosition first{"billing", "usage.events", 0, 5};
  auto inserted = ledger_.Record(Event("org-dup", "req-1", 10, 20), first);
  ASSERT_TRUE(inserted.ok()) << inserted.status();
  EXPECT_EQ(*inserted, Ledger::Recorded::kNew);
  // The same request again (a producer retry lands at a later offset).
  auto again = ledger_.Record(Event("org-dup", "req-1", 10, 20), {"billing", "usage.events", 0, 6});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, Ledger::Recorded::kUnchanged);

  auto usage = Usage(ledger_, "org-dup");
  EXPECT_EQ(usage.requests(), 1);
  EXPECT_EQ(usage.total_input_tokens(), 10);
  EXPECT_EQ(usage.total_output_tokens(), 20);
  ASSERT_EQ(usage.records_size(), 1);
  EXPECT_EQ(usage.records(0).request_id(), "req-1");
  EXPECT_EQ(usage.records(0).at_unix_ms(), 1'795'000'000'000);
  EXPECT_EQ(usage.records(0).stop_reason(), "end_turn");
  EXPECT_EQ(usage.records(0).end_user_id(), "end-user-7") << "metadata.user_id reaches the ledger";

  // The hourly roll-up counted it once too.
  auto hourly = pg_.Run<int64_t>([](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    return tx.exec1("SELECT requests FROM usage_hourly WHERE org_id = 'org-dup'")[0].as<int64_t>();
  });
  ASSERT_TRUE(hourly.ok()) << hourly.status();
  EXPECT_EQ(*hourly, 1);

  auto next = ledger_.NextOffset("billing", "usage.events", 0);
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(next->value_or(-1), 7);
}

// Running reports (every second while a request generates), then the
// final one, arrive in any order and any number of times: the row keeps the
// highest counts and the final stop reason, and the rollup counts the
// request once with the same totals. A worker killed after its second
// report leaves those counts.
TEST_F(LedgerTest, RunningReportsRaiseTheRowAndTheRollupToTheHighestCounts) {
  auto running = [](int out, int64_t at) {
    bpb::UsageEvent e = Event("org-run", "run-1", 12, out, at);
    e.set_stop_reason("");
    e.set_final(false);
    return e;
  };
  const int64_t t0 = 1'795'000'000'000;
  int64_t offset = 0;
  auto record = [&](const bpb::UsageEvent& e) {
    auto r = ledger_.Record(e, {"ledger-run", "usage.events", 0, offset++});
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : Ledger::Recorded::kUnchanged;
  };
  EXPECT_EQ(record(running(10, t0)), Ledger::Recorded::kNew);
  EXPECT_EQ(record(running(25, t0 + 1000)), Ledger::Recorded::kRaised);
  EXPECT_EQ(record(running(10, t0)), Ledger::Recorded::kUnchanged) << "a redelivered older report";
  auto mid = Usage(ledger_, "org-run");
  EXPECT_EQ(mid.requests(), 1);
  EXPECT_EQ(mid.total_output_tokens(), 25) << "what a crash now would leave";

  bpb::UsageEvent final = Event("org-run", "run-1", 12, 40, t0 + 2000);
  final.set_final(true);
  EXPECT_EQ(record(final), Ledger::Recorded::kSettled);
  EXPECT_EQ(record(running(25, t0 + 1000)), Ledger::Recorded::kUnchanged);
  EXPECT_EQ(record(final), Ledger::Recorded::kUnchanged);

  auto usage = Usage(ledger_, "org-run");
  EXPECT_EQ(usage.requests(), 1);
  EXPECT_EQ(usage.total_input_tokens(), 12);
  EXPECT_EQ(usage.total_output_tokens(), 40);
  ASSERT_EQ(usage.records_size(), 1);
  EXPECT_EQ(usage.records(0).stop_reason(), "end_turn");
  EXPECT_EQ(usage.records(0).at_unix_ms(), t0) << "the request's time is its first report's";
  auto hourly = pg_.Run<std::vector<int64_t>>([](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    auto r = tx.exec1(
        "SELECT requests, input_tokens, output_tokens FROM usage_hourly WHERE org_id = 'org-run'");
    return std::vector<int64_t>{r[0].as<int64_t>(), r[1].as<int64_t>(), r[2].as<int64_t>()};
  });
  ASSERT_TRUE(hourly.ok()) << hourly.status();
  EXPECT_EQ(*hourly, (std::vector<int64_t>{1, 12, 40}));
}

// Reports run ahead of delivery: a running report may hold more than the
// request ended with. The final report sets the exact counts, down if need
// be, in the row and the rollup, and settles the row for good.
TEST_F(LedgerTest, TheFinalReportSetsTheExactCountsEvenBelowARunningOne) {
  const int64_t t0 = 1'795'000'000'000;
  int64_t offset = 0;
  auto record = [&](const bpb::UsageEvent& e) {
    auto r = ledger_.Record(e, {"ledger-settle", "usage.events", 0, offset++});
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : Ledger::Recorded::kUnchanged;
  };
  bpb::UsageEvent ahead = Event("org-settle", "settle-1", 7, 32, t0);
  ahead.set_stop_reason("");
  ahead.set_final(false);
  bpb::UsageEvent other = Event("org-settle", "settle-2", 3, 5, t0);
  other.set_final(true);
  EXPECT_EQ(record(ahead), Ledger::Recorded::kNew);
  EXPECT_EQ(record(other), Ledger::Recorded::kNew);
  EXPECT_EQ(Usage(ledger_, "org-settle").total_output_tokens(), 37);

  bpb::UsageEvent final = Event("org-settle", "settle-1", 7, 21, t0 + 500);
  final.set_final(true);
  EXPECT_EQ(record(final), Ledger::Recorded::kSettled);
  EXPECT_EQ(record(ahead), Ledger::Recorded::kUnchanged) << "a redelivered running report";
  EXPECT_EQ(record(final), Ledger::Recorded::kUnchanged);
  auto usage = Usage(ledger_, "org-settle");
  EXPECT_EQ(usage.requests(), 2);
  EXPECT_EQ(usage.total_output_tokens(), 26);
  auto hourly = pg_.Run<int64_t>([](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    return tx.exec1("SELECT output_tokens FROM usage_hourly WHERE org_id = 'org-settle'")[0]
        .as<int64_t>();
  });
  ASSERT_TRUE(hourly.ok()) << hourly.status();
  EXPECT_EQ(*hourly, 26);
}

TEST_F(LedgerTest, QueriesFilterByOrgRequestAndTime) {
  const KafkaPosition pos{"ledger-query", "usage.events", 1, 0};
  ASSERT_TRUE(ledger_.Record(Event("org-q", "q-1", 1, 2, 1000), pos).ok());
  ASSERT_TRUE(ledger_.Record(Event("org-q", "q-2", 3, 4, 2000), pos).ok());
  ASSERT_TRUE(ledger_.Record(Event("org-other", "q-3", 100, 100, 1500), pos).ok());

  EXPECT_EQ(Usage(ledger_, "org-q").requests(), 2);
  auto one = Usage(ledger_, "org-q", "q-2");
  EXPECT_EQ(one.requests(), 1);
  EXPECT_EQ(one.total_output_tokens(), 4);
  // Another org's request id is not visible.
  EXPECT_EQ(Usage(ledger_, "org-q", "q-3").requests(), 0);

  bpb::GetUsageRequest window;
  window.set_org_id("org-q");
  window.set_since_unix_ms(1500);
  window.set_until_unix_ms(2500);
  auto w = ledger_.Query(window);
  ASSERT_TRUE(w.ok());
  ASSERT_EQ(w->records_size(), 1);
  EXPECT_EQ(w->records(0).request_id(), "q-2");
}

TEST_F(LedgerTest, UnknownPartitionHasNoOffsetAndSkipMovesIt) {
  auto none = ledger_.NextOffset("skip-group", "usage.events", 3);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  ASSERT_TRUE(ledger_.Skip({"skip-group", "usage.events", 3, 41}).ok());
  auto next = ledger_.NextOffset("skip-group", "usage.events", 3);
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(next->value_or(-1), 42);
}

TEST_F(LedgerTest, TheSchemaRefusesRowsThatCannotBeTrue) {
  // Whatever writes the ledger, migrations 0004's and 0013's constraints hold; the
  // refusal is FailedPrecondition (never worth retrying) and writes nothing.
  const KafkaPosition pos{"ledger-check", "usage.events", 0, 0};
  bpb::UsageEvent cached_beyond_input = Event("org-check", "cache-over", 5, 1);
  cached_beyond_input.set_cache_read_tokens(4);
  cached_beyond_input.set_cache_write_tokens(2);
  for (const auto& bad : {Event("org-check", "neg-in", -1, 5), Event("org-check", "neg-out", 5, -1),
                          Event("", "no-org", 1, 1), Event("org-check", "", 1, 1),
                          Event("org-check", "at-epoch", 1, 1, 0), cached_beyond_input}) {
    auto r = ledger_.Record(bad, pos);
    ASSERT_FALSE(r.ok()) << bad.ShortDebugString();
    EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
  }
  EXPECT_EQ(Usage(ledger_, "org-check").requests(), 0);
  EXPECT_EQ(Usage(ledger_, "").requests(), 0);
  auto next = ledger_.NextOffset("ledger-check", "usage.events", 0);
  ASSERT_TRUE(next.ok());
  EXPECT_FALSE(next->has_value()) << "a refused row moves no offset";
  // The rollup cannot go negative either, nor the prices.
  auto rollup = pg_.RunVoid([](pqxx::connection& c) {
    pqxx::work tx(c);
    tx.exec(
        "INSERT INTO usage_hourly (org_id, model, hour, requests, input_tokens, "
        "output_tokens) VALUES ('org-check', 'm', now(), 1, -5, 0)");
    tx.commit();
  });
  EXPECT_EQ(rollup.code(), absl::StatusCode::kFailedPrecondition) << rollup;
  auto price = pg_.RunVoid([](pqxx::connection& c) {
    pqxx::work tx(c);
    tx.exec(
        "INSERT INTO model_prices (model, effective_from, input_per_mtok_micros, "
        "output_per_mtok_micros) VALUES ('m-check', now(), -1, 0)");
    tx.commit();
  });
  EXPECT_EQ(price.code(), absl::StatusCode::kFailedPrecondition) << price;
}

// Rows of `org`'s requests, with the request id's first two characters
// (the org's prefix) cut, and its hourly rollup: what two orgs fed the same
// events compare by.
std::string LedgerState(PgPool& pg, const std::string& org) {
  auto state = pg.Run<std::string>([&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    std::string out;
    for (const auto& r : tx.exec_params(
             "SELECT substr(request_id, 3), input_tokens, output_tokens, stop_reason, final, "
             " worker_id, source, end_user_id, (extract(epoch from occurred_at) * 1000)::bigint, "
             " cost_micros, cache_read_tokens, cache_write_tokens "
             "FROM usage_ledger WHERE org_id = $1 ORDER BY 1",
             org)) {
      for (const auto& f : r) out += f.c_str() + std::string(" ");
      out += "\n";
    }
    for (const auto& r :
         tx.exec_params("SELECT model, hour, requests, input_tokens, output_tokens, cost_micros, "
                        " cache_read_tokens, cache_write_tokens FROM usage_hourly "
                        "WHERE org_id = $1 ORDER BY 1, 2",
                        org)) {
      for (const auto& f : r) out += f.c_str() + std::string(" ");
      out += "\n";
    }
    return out;
  });
  EXPECT_TRUE(state.ok()) << state.status();
  return state.ok() ? *state : "";
}

// Batches record what events one at a time (batches of one, Record) do:
// the same outcomes, rows, costs and rollups for the same events, whatever
// the batch size, with running reports up and down, finals, repeats,
// reports after the final, requests across hours and a price change, and
// batches that hold several reports of one request; and each partition's
// offset moves past the batch.
TEST_F(LedgerTest, ABatchRecordsWhatEventByEventRecordingDoes) {
  // sim-a's price changes in the middle of the events' hours; sim-b has one.
  ASSERT_TRUE(ledger_
                  .SetPrice("sim-a", {.input_per_mtok = 3'000'000,
                                      .output_per_mtok = 15'000'000,
                                      .cache_read_per_mtok = 300'000,
                                      .cache_write_per_mtok = 3'750'000})
                  .ok());
  ASSERT_TRUE(ledger_
                  .SetPrice("sim-a", {.from = absl::FromUnixMillis(1'795'000'000'000 + 18'000'000),
                                      .input_per_mtok = 1'000'000,
                                      .output_per_mtok = 5'000'000,
                                      .cache_read_per_mtok = 100'000,
                                      .cache_write_per_mtok = 1'250'000})
                  .ok());
  ASSERT_TRUE(
      ledger_.SetPrice("sim-b", {.input_per_mtok = 250'000, .output_per_mtok = 1'250'000}).ok());
  uint64_t seed = 12345;
  auto next = [&](int n) {
    seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<int>((seed >> 33) % static_cast<uint64_t>(n));
  };
  std::vector<bpb::UsageEvent> events;
  for (int i = 0; i < 400; ++i) {
    const int req = next(60);
    bpb::UsageEvent e = Event("", "r" + std::to_string(req), 10 + next(5), next(40),
                              1'795'000'000'000 + req * 600'000LL + next(1000));
    e.set_final(next(5) == 0);
    e.set_stop_reason(e.final() ? (next(2) ? "end_turn" : "max_tokens") : "");
    if (e.final()) {  // as workers do: the cache counts come with the final report
      e.set_cache_read_tokens(next(e.input_tokens() + 1));
      e.set_cache_write_tokens(next(e.input_tokens() - e.cache_read_tokens() + 1));
    }
    e.set_model(req % 3 == 0 ? "sim-a" : "sim-b");
    e.set_worker_id("w" + std::to_string(next(3)));
    events.push_back(e);
  }
  auto as_org = [](bpb::UsageEvent e, const std::string& org, const std::string& prefix) {
    e.set_org_id(org);
    e.set_request_id(prefix + e.request_id());
    return e;
  };
  std::vector<Ledger::Recorded> one_by_one;
  for (size_t i = 0; i < events.size(); ++i) {
    auto r = ledger_.Record(
        as_org(events[i], "org-single", "s-"),
        {"single", "usage.events", static_cast<int32_t>(i % 4), static_cast<int64_t>(i)});
    ASSERT_TRUE(r.ok()) << r.status();
    one_by_one.push_back(*r);
  }
  std::vector<Ledger::Recorded> batched;
  for (size_t i = 0; i < events.size();) {
    const size_t n = std::min(events.size() - i, static_cast<size_t>(1 + next(50)));
    std::vector<bpb::UsageEvent> batch;
    std::vector<KafkaPosition> consumed;
    for (size_t j = i; j < i + n; ++j) {
      batch.push_back(as_org(events[j], "org-batch", "b-"));
      consumed.push_back(
          {"batch", "usage.events", static_cast<int32_t>(j % 4), static_cast<int64_t>(j)});
    }
    auto r = ledger_.RecordBatch(batch, consumed);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->size(), n);
    batched.insert(batched.end(), r->begin(), r->end());
    i += n;
  }
  EXPECT_EQ(batched, one_by_one);
  const std::string single = LedgerState(pg_, "org-single");
  EXPECT_GT(single.size(), 1000u);
  EXPECT_GT(Usage(ledger_, "org-single").total_cost_micros(), 0);
  EXPECT_EQ(LedgerState(pg_, "org-batch"), single);
  for (int32_t p = 0; p < 4; ++p) {
    auto a = ledger_.NextOffset("single", "usage.events", p);
    auto b = ledger_.NextOffset("batch", "usage.events", p);
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(*b, *a) << "partition " << p;
    EXPECT_EQ(b->value_or(-1), 397 + p);
  }

  // Text goes through PostgreSQL's array syntax intact: quotes,
  // backslashes, commas, braces, NULL and spaces.
  const std::string odd = "q\"uo\\te, {NULL} ";
  auto quoted = ledger_.RecordBatch({Event("org-quote", odd, 3, 4)}, {});
  ASSERT_TRUE(quoted.ok()) << quoted.status();
  const auto usage = Usage(ledger_, "org-quote", odd);
  ASSERT_EQ(usage.records_size(), 1);
  EXPECT_EQ(usage.records(0).request_id(), odd);
  EXPECT_EQ(usage.total_output_tokens(), 4);

  // A row the schema refuses fails the whole batch, which stores nothing.
  auto bad = ledger_.RecordBatch(
      {Event("org-bad-batch", "fine", 1, 1), Event("org-bad-batch", "neg", -1, 1)},
      {{"bad", "usage.events", 0, 0}, {"bad", "usage.events", 0, 1}});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kFailedPrecondition) << bad.status();
  EXPECT_EQ(Usage(ledger_, "org-bad-batch").requests(), 0);
  auto none = ledger_.NextOffset("bad", "usage.events", 0);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  // Only refused messages (no events): the offsets still move.
  auto skipped = ledger_.RecordBatch({}, {{"bad", "usage.events", 0, 7}});
  ASSERT_TRUE(skipped.ok()) << skipped.status();
  EXPECT_EQ(ledger_.NextOffset("bad", "usage.events", 0)->value_or(-1), 8);
}

// A request is priced at the price in force when it started (its first
// event), whenever its later reports arrive; a model without a price costs
// 0 and is counted; the hourly rollup sums the cost.
TEST_F(LedgerTest, ARequestIsPricedAtThePriceInForceWhenItStarted) {
  const int64_t t0 = 1'796'000'000'000;  // ms
  const absl::Time change = absl::FromUnixMillis(t0 + 60'000);
  ASSERT_TRUE(
      ledger_.SetPrice("sim-priced", {.input_per_mtok = 3'000'000, .output_per_mtok = 15'000'000})
          .ok());
  ASSERT_TRUE(
      ledger_
          .SetPrice("sim-priced",
                    {.from = change, .input_per_mtok = 6'000'000, .output_per_mtok = 30'000'000})
          .ok());
  auto again = ledger_.SetPrice("sim-priced", {.from = change, .input_per_mtok = 1});
  EXPECT_EQ(again.code(), absl::StatusCode::kAlreadyExists) << "prices are history: " << again;
  auto event = [&](const std::string& id, const std::string& model, int in, int out, int64_t at,
                   bool final) {
    bpb::UsageEvent e = Event("org-priced", id, in, out, at);
    e.set_model(model);
    e.set_final(final);
    return e;
  };
  const KafkaPosition pos{"price-test", "usage.events", 0, 0};
  // Started before the change, finished after it: the old price.
  ASSERT_TRUE(ledger_.Record(event("before", "sim-priced", 1000, 100, t0, false), pos).ok());
  ASSERT_TRUE(
      ledger_.Record(event("before", "sim-priced", 1000, 500, t0 + 90'000, true), pos).ok());
  // Started after it: the new one.
  ASSERT_TRUE(ledger_.Record(event("after", "sim-priced", 1000, 500, t0 + 61'000, true), pos).ok());
  const double unpriced_before =
      metrics::Default()
          .GetCounter("sb_billing_unpriced_events_total",
                      "Ledger rows written at cost 0 because their model has no price in force",
                      {{"model", "sim-unpriced"}})
          .Value();
  ASSERT_TRUE(ledger_.Record(event("free", "sim-unpriced", 1000, 500, t0, true), pos).ok());
  EXPECT_EQ(
      metrics::Default()
          .GetCounter("sb_billing_unpriced_events_total",
                      "Ledger rows written at cost 0 because their model has no price in force",
                      {{"model", "sim-unpriced"}})
          .Value(),
      unpriced_before + 1);

  auto cost = [&](const std::string& id) {
    const auto u = Usage(ledger_, "org-priced", id);
    return u.records_size() == 1 ? u.records(0).cost_micros() : -1;
  };
  EXPECT_EQ(cost("before"), 3'000 + 7'500);  // 1,000 at $3, 500 at $15 per MTok
  EXPECT_EQ(cost("after"), 6'000 + 15'000);  // at $6 and $30
  EXPECT_EQ(cost("free"), 0);
  EXPECT_EQ(Usage(ledger_, "org-priced").total_cost_micros(), 10'500 + 21'000);
  auto hourly = pg_.Run<int64_t>([](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    return tx.exec1("SELECT sum(cost_micros) FROM usage_hourly WHERE org_id = 'org-priced'")[0]
        .as<int64_t>();
  });
  ASSERT_TRUE(hourly.ok()) << hourly.status();
  EXPECT_EQ(*hourly, 31'500);

  auto listed = ledger_.ListPrices("sim-priced");
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->size(), 2u);
  EXPECT_EQ((*listed)[0].second.from, absl::InfinitePast());
  EXPECT_EQ((*listed)[1].second.from, change);
  EXPECT_EQ((*listed)[1].second.output_per_mtok, 30'000'000);
}

// Prompt-cache tokens are part of the input, each kind at its own price;
// they come with the final report and stay in the rollup and GetUsage.
TEST_F(LedgerTest, CacheReadsAndWritesAreBilledAtTheirPrices) {
  const int64_t t0 = 1'796'100'000'000;
  ASSERT_TRUE(ledger_
                  .SetPrice("sim-cached", {.input_per_mtok = 3'000'000,
                                           .output_per_mtok = 15'000'000,
                                           .cache_read_per_mtok = 300'000,
                                           .cache_write_per_mtok = 3'750'000})
                  .ok());
  auto event = [&](const std::string& id, int in, int out, int read, int written, bool final) {
    bpb::UsageEvent e = Event("org-cached", id, in, out, t0);
    e.set_model("sim-cached");
    e.set_final(final);
    e.set_cache_read_tokens(read);
    e.set_cache_write_tokens(written);
    return e;
  };
  const KafkaPosition pos{"cache-test", "usage.events", 0, 0};
  // A running report knows no cache counts yet: all input at the input price.
  ASSERT_TRUE(ledger_.Record(event("cache-1", 10'000, 100, 0, 0, false), pos).ok());
  auto u = Usage(ledger_, "org-cached", "cache-1");
  ASSERT_EQ(u.records_size(), 1);
  EXPECT_EQ(u.records(0).cost_micros(), 30'000 + 1'500);
  // The final: 6,000 read ($0.30/MTok), 3,000 written ($3.75), 1,000 not
  // cached ($3), 200 out ($15).
  ASSERT_TRUE(ledger_.Record(event("cache-1", 10'000, 200, 6'000, 3'000, true), pos).ok());
  u = Usage(ledger_, "org-cached", "cache-1");
  ASSERT_EQ(u.records_size(), 1);
  EXPECT_EQ(u.records(0).input_tokens(), 10'000);
  EXPECT_EQ(u.records(0).cache_read_tokens(), 6'000);
  EXPECT_EQ(u.records(0).cache_write_tokens(), 3'000);
  EXPECT_EQ(u.records(0).cost_micros(), 1'800 + 11'250 + 3'000 + 3'000);
  // A request served all from the cache, in a batch with another.
  ASSERT_TRUE(ledger_
                  .RecordBatch({event("cache-2", 1'000, 0, 1'000, 0, true),
                                event("cache-3", 1'000, 0, 0, 1'000, true)},
                               {pos})
                  .ok());
  EXPECT_EQ(Usage(ledger_, "org-cached", "cache-2").records(0).cost_micros(), 300);
  EXPECT_EQ(Usage(ledger_, "org-cached", "cache-3").records(0).cost_micros(), 3'750);
  const auto all = Usage(ledger_, "org-cached");
  EXPECT_EQ(all.total_cache_read_tokens(), 7'000);
  EXPECT_EQ(all.total_cache_write_tokens(), 4'000);
  auto hourly = pg_.Run<std::string>([](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    auto r = tx.exec1(
        "SELECT sum(input_tokens), sum(cache_read_tokens), sum(cache_write_tokens), "
        " sum(cost_micros) FROM usage_hourly WHERE org_id = 'org-cached'");
    return std::string(r[0].c_str()) + " " + r[1].c_str() + " " + r[2].c_str() + " " + r[3].c_str();
  });
  ASSERT_TRUE(hourly.ok()) << hourly.status();
  EXPECT_EQ(*hourly, "12000 7000 4000 23100");
}

// Each month's spend per org and per key moves with the ledger's costs in
// the same transaction; crossing 80 % and 100 % of a budget writes one
// alert each, whatever the number of batches that cross it.
TEST_F(LedgerTest, SpendFollowsTheLedgerAndCrossingABudgetWritesOneAlertPerThreshold) {
  ASSERT_TRUE(pg_.RunVoid([](pqxx::connection& c) {
                   pqxx::work tx(c);
                   tx.exec("INSERT INTO orgs (id, name) VALUES ('org-budget', 'b')");
                   tx.exec(
                       "INSERT INTO api_keys (id, org_id, prefix, secret_sha256) VALUES "
                       "('key-b1', 'org-budget', 'p', 'h1'), ('key-b2', 'org-budget', 'p', "
                       "'h2')");
                   tx.commit();
                 })
                  .ok());
  // $1 per million input tokens: a token is a micro-dollar.
  ASSERT_TRUE(ledger_.SetPrice("sim-budget", {.input_per_mtok = 1'000'000}).ok());
  ASSERT_TRUE(ledger_.SetBudget("org-budget", "", 1000).ok());
  ASSERT_TRUE(ledger_.SetBudget("org-budget", "key-b1", 500).ok());
  EXPECT_EQ(ledger_.SetBudget("org-budget", "key-of-another-org", 5).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(ledger_.SetBudget("no-such-org", "", 5).code(), absl::StatusCode::kNotFound);

  const int64_t now_ms = absl::ToUnixMillis(absl::Now());
  int n = 0;
  auto spend = [&](const std::string& key, int tokens, bool final = true) {
    bpb::UsageEvent e = Event("org-budget", "b-" + std::to_string(n++), tokens, 0, now_ms);
    e.set_model("sim-budget");
    e.set_api_key_id(key);
    e.set_final(final);
    return e;
  };
  const KafkaPosition pos{"budget", "usage.events", 0, 0};
  auto alerts = [&] {
    auto a = ledger_.UnpublishedAlerts(100);
    EXPECT_TRUE(a.ok()) << a.status();
    std::vector<std::string> out;
    for (const auto& x : *a) {
      if (x.org == "org-budget")
        out.push_back((x.key.empty() ? "org" : x.key) + "@" + std::to_string(x.percent));
    }
    return out;
  };
  ASSERT_TRUE(ledger_.RecordBatch({spend("key-b1", 300), spend("key-b2", 300)}, {pos}).ok());
  EXPECT_TRUE(alerts().empty()) << "600 of 1000, 300 of 500";
  const int64_t written = ledger_.alerts_written();
  // key-b1 reaches 400 of 500 (80 %); the org 700 of 1000.
  ASSERT_TRUE(ledger_.Record(spend("key-b1", 100), pos).ok());
  EXPECT_EQ(alerts(), (std::vector<std::string>{"key-b1@80"}));
  EXPECT_EQ(ledger_.alerts_written(), written + 1);
  // Past 80 % of the org's budget and to 100 % of key-b1's, in one batch
  // of two reports of one request (running, then final).
  const auto running = spend("key-b1", 50, /*final=*/false);
  bpb::UsageEvent final = running;
  final.set_input_tokens(100);
  final.set_final(true);
  ASSERT_TRUE(ledger_.RecordBatch({running, final}, {pos}).ok());
  EXPECT_EQ(alerts(), (std::vector<std::string>{"key-b1@80", "org@80", "key-b1@100"}));
  // Further spend crosses nothing new.
  ASSERT_TRUE(ledger_.Record(spend("key-b1", 50), pos).ok());
  EXPECT_EQ(alerts().size(), 3u);

  auto budgets = ledger_.Budgets("org-budget");
  ASSERT_TRUE(budgets.ok()) << budgets.status();
  ASSERT_EQ(budgets->size(), 2u);
  EXPECT_EQ((*budgets)[0].key, "");
  EXPECT_EQ((*budgets)[0].spent_micros, 300 + 300 + 100 + 100 + 50);
  EXPECT_EQ((*budgets)[1].key, "key-b1");
  EXPECT_EQ((*budgets)[1].spent_micros, 300 + 100 + 100 + 50);

  auto unpublished = ledger_.UnpublishedAlerts(100);
  ASSERT_TRUE(unpublished.ok());
  for (const auto& a : *unpublished) {
    if (a.org == "org-budget") {
      ASSERT_TRUE(ledger_.MarkAlertPublished(a).ok());
    }
  }
  EXPECT_TRUE(alerts().empty());
  // A removed budget is gone from the list.
  ASSERT_TRUE(ledger_.SetBudget("org-budget", "key-b1", 0).ok());
  EXPECT_EQ(ledger_.Budgets("org-budget")->size(), 1u);
}

TEST_F(LedgerTest, AnOutageIsAnErrorNotACrash) {
  ASSERT_TRUE(g_infra->StopPostgres().ok());
  auto r = ledger_.Record(Event("org-outage", "o-1", 1, 1), {"g", "t", 0, 0});
  ASSERT_TRUE(g_infra->StartPostgres().ok());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  // The pool reconnects afterwards.
  auto again = ledger_.Record(Event("org-outage", "o-1", 1, 1), {"g", "t", 0, 0});
  EXPECT_TRUE(again.ok()) << again.status();
}

// A service started before its database waits for it (PgPool::WaitReady)
// instead of exiting: it returns once PostgreSQL answers, gives up after
// its limit, and at once when asked to (a SIGTERM while starting).
TEST(PgPoolTest, WaitReadyWaitsForADatabaseThatComesUp) {
  PgPool pg(g_infra->pg_uri(), 1);
  ASSERT_TRUE(g_infra->StopPostgres().ok());
  auto start = absl::Now();
  EXPECT_EQ(pg.WaitReady(absl::Seconds(1)).code(), absl::StatusCode::kUnavailable);
  EXPECT_GE(absl::Now() - start, absl::Seconds(1)) << "gave up before its limit";
  start = absl::Now();
  EXPECT_EQ(pg.WaitReady(absl::Seconds(30), [] { return true; }).code(),
            absl::StatusCode::kCancelled);
  EXPECT_LT(absl::Now() - start, absl::Seconds(5)) << "did not stop when asked";
  std::thread later([] {
    std::this_thread::sleep_for(std::chrono::seconds(2));
    EXPECT_TRUE(g_infra->StartPostgres().ok());
  });
  start = absl::Now();
  const absl::Status st = pg.WaitReady(absl::Seconds(60));
  later.join();
  EXPECT_TRUE(st.ok()) << st;
  EXPECT_GE(absl::Now() - start, absl::Seconds(2));
  EXPECT_TRUE(pg.Ping().ok());
}

// Waits until `org` has `requests` ledger rows; false on timeout.
bool WaitForRequests(Ledger& ledger, const std::string& org, int64_t requests) {
  for (int i = 0; i < 300; ++i) {
    if (Usage(ledger, org).requests() >= requests) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

TEST(MeteringConsumerTest, EveryEventOnceAcrossRedeliveryMalformedInputAndRestart) {
  PgPool pg(g_infra->pg_uri(), 2);
  Ledger ledger(pg);
  const std::string topic = "usage.events";
  const MessageSigner signer = *MessageSigner::FromKeys({std::string(64, 's')});
  const MeteringOptions options{
      .brokers = g_infra->kafka(), .group = "billing-test", .topic = topic};
  auto producer = KafkaProducer::Create(g_infra->kafka());
  ASSERT_TRUE(producer.ok()) << producer.status();
  auto publish_signed = [&](const std::string& key, const std::string& value) {
    ASSERT_TRUE((*producer)
                    ->Publish(topic, key, value, {{kSignatureHeader, signer.Sign(key, value)}})
                    .ok());
  };
  auto produce = [&](const bpb::UsageEvent& e) {
    publish_signed(e.request_id(), e.SerializeAsString());
  };
  produce(Event("org-consume", "c-1", 5, 7));
  produce(Event("org-consume", "c-2", 6, 8));
  produce(Event("org-consume", "c-1", 5, 7));  // the worker retried: same request_id
  publish_signed("junk", "\xff\xff not a protobuf");
  produce(Event("org-consume", "c-3", 1, 1));
  ASSERT_TRUE((*producer)->Flush(std::chrono::seconds(10)).ok());

  {
    MeteringConsumer consumer(ledger, signer, options);
    ASSERT_TRUE(consumer.Start().ok());
    ASSERT_TRUE(WaitForRequests(ledger, "org-consume", 3));
    // Give a duplicate that would be wrongly counted time to arrive.
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  auto usage = Usage(ledger, "org-consume");
  EXPECT_EQ(usage.requests(), 3);
  EXPECT_EQ(usage.total_input_tokens(), 12);
  EXPECT_EQ(usage.total_output_tokens(), 16);

  // A new consumer in the same group resumes from the ledger's offsets:
  // nothing is counted twice, and what arrived meanwhile is counted.
  produce(Event("org-consume", "c-4", 2, 3));
  ASSERT_TRUE((*producer)->Flush(std::chrono::seconds(10)).ok());
  {
    MeteringConsumer consumer(ledger, signer, options);
    ASSERT_TRUE(consumer.Start().ok());
    ASSERT_TRUE(WaitForRequests(ledger, "org-consume", 4));
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  usage = Usage(ledger, "org-consume");
  EXPECT_EQ(usage.requests(), 4);
  EXPECT_EQ(usage.total_input_tokens(), 14);
  EXPECT_EQ(usage.total_output_tokens(), 19);
  // The second consumer did not re-read the first one's events: the one
  // duplicate and the one malformed message were each seen exactly once.
  auto outcome = [](const std::string& o) {
    return metrics::Default()
        .GetCounter("sb_billing_events_total", "Usage events by outcome", {{"outcome", o}})
        .Value();
  };
  EXPECT_EQ(outcome("recorded"), 4);
  EXPECT_EQ(outcome("duplicate"), 1);
  EXPECT_EQ(outcome("rejected"), 1);
  EXPECT_EQ(
      metrics::Default()
          .GetCounter("sb_billing_usage_events_rejected_total",
                      "Usage events refused and not applied, by reason", {{"reason", "malformed"}})
          .Value(),
      1);
}

// After the broker lost its log (a restart of the dev broker, a recreated
// topic, a restored cluster) the offsets stored with the ledger lie beyond
// the new log's end. Consuming on from them would skip the new log's first
// events without a word; the consumer stops those partitions instead and
// waits for the operator's decision.
TEST(MeteringConsumerTest, AStoredOffsetOutsideTheLogStopsThePartitionUntilAnOperatorDecides) {
  PgPool pg(g_infra->pg_uri(), 2);
  Ledger ledger(pg);
  const std::string topic = "usage.restored";
  const MessageSigner signer = *MessageSigner::FromKeys({std::string(64, 's')});
  const MeteringOptions options{.brokers = g_infra->kafka(),
                                .group = "billing-stale",
                                .topic = topic,
                                .reset_check_interval = std::chrono::milliseconds(100)};
  auto producer = KafkaProducer::Create(g_infra->kafka());
  ASSERT_TRUE(producer.ok()) << producer.status();
  for (const char* id : {"r-1", "r-2", "r-3", "r-4", "r-5", "r-6"}) {
    const std::string value = Event("org-restored", id, 1, 2).SerializeAsString();
    ASSERT_TRUE(
        (*producer)->Publish(topic, id, value, {{kSignatureHeader, signer.Sign(id, value)}}).ok());
  }
  ASSERT_TRUE((*producer)->Flush(std::chrono::seconds(10)).ok());
  // What the ledger kept from the broker's previous life: 150 events read
  // from each of the topic's 4 partitions (the dev broker's default).
  constexpr int kPartitions = 4;
  for (int32_t p = 0; p < kPartitions; ++p) {
    ASSERT_TRUE(ledger.Skip({options.group, topic, p, 149}).ok());
  }
  auto stalled_gauge = [&](int32_t p) {
    return metrics::Default()
        .GetGauge("sb_billing_partition_stalled",
                  "1 while a partition is not consumed: its stored offset lies outside the log",
                  {{"topic", topic}, {"partition", std::to_string(p)}})
        .Value();
  };

  MeteringConsumer consumer(ledger, signer, options);
  ASSERT_TRUE(consumer.Start().ok());
  for (int i = 0; i < 200 && consumer.stalled_partitions() < kPartitions; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(consumer.stalled_partitions(), kPartitions);
  for (int32_t p = 0; p < kPartitions; ++p) EXPECT_EQ(stalled_gauge(p), 1) << p;
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_EQ(Usage(ledger, "org-restored").requests(), 0) << "nothing consumed while stopped";
  auto stored = ledger.NextOffset(options.group, topic, 0);
  ASSERT_TRUE(stored.ok() && stored->has_value());
  EXPECT_EQ(**stored, 150) << "the stored offset waits for the decision";

  // A decision outside the log is refused; the partition stays stopped.
  auto parts = ledger.RequestReset(options.group, topic, 0, "999");
  ASSERT_TRUE(parts.ok()) << parts.status();
  for (int i = 0; i < 100; ++i) {
    auto pending = ledger.PendingResets(options.group);
    ASSERT_TRUE(pending.ok());
    if (pending->empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(ledger.PendingResets(options.group)->empty());
  EXPECT_EQ(consumer.stalled_partitions(), kPartitions);
  EXPECT_FALSE(ledger.RequestReset(options.group, topic, 0, "soon").ok());

  // The operator replays the new log from its start: every event counts once.
  parts = ledger.RequestReset(options.group, topic, std::nullopt, "earliest");
  ASSERT_TRUE(parts.ok()) << parts.status();
  EXPECT_EQ(parts->size(), static_cast<size_t>(kPartitions));
  ASSERT_TRUE(WaitForRequests(ledger, "org-restored", 6));
  for (int i = 0; i < 100 && consumer.stalled_partitions() > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(consumer.stalled_partitions(), 0);
  for (int32_t p = 0; p < kPartitions; ++p) EXPECT_EQ(stalled_gauge(p), 0) << p;
  EXPECT_TRUE(ledger.PendingResets(options.group)->empty());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const auto usage = Usage(ledger, "org-restored");
  EXPECT_EQ(usage.requests(), 6);
  EXPECT_EQ(usage.total_output_tokens(), 12);
  int64_t next_total = 0;
  for (int32_t p = 0; p < kPartitions; ++p) {
    auto next = ledger.NextOffset(options.group, topic, p);
    ASSERT_TRUE(next.ok() && next->has_value());
    next_total += **next;
  }
  EXPECT_EQ(next_total, 6) << "each partition's stored offset is its new log's end";

  // A decision made before billing starts (what tools/dev up does for a
  // fresh dev broker) is applied without stopping anything or an alarm.
  const double alarms =
      metrics::Default()
          .GetCounter("sb_billing_offsets_out_of_range_total",
                      "Partitions stopped because their offset lay outside the log")
          .Value();
  MeteringOptions decided = options;
  decided.group = "billing-decided";
  for (int32_t p = 0; p < kPartitions; ++p) {
    ASSERT_TRUE(ledger.Skip({decided.group, topic, p, 149}).ok());
  }
  ASSERT_TRUE(ledger.RequestReset(decided.group, topic, std::nullopt, "earliest").ok());
  MeteringConsumer second(ledger, signer, decided);
  ASSERT_TRUE(second.Start().ok());
  for (int i = 0; i < 200; ++i) {
    auto pending = ledger.PendingResets(decided.group);
    ASSERT_TRUE(pending.ok());
    if (pending->empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(ledger.PendingResets(decided.group)->empty());
  EXPECT_EQ(second.stalled_partitions(), 0);
  EXPECT_EQ(metrics::Default()
                .GetCounter("sb_billing_offsets_out_of_range_total",
                            "Partitions stopped because their offset lay outside the log")
                .Value(),
            alarms);
}

// Reconciliation reads the topic as billing does and finds the ledger
// equal to it; a row changed or lost afterwards is drift, named.
// sb_billing_consumer_lag: what each partition's log holds beyond where the
// consumer reads, also (and especially) while a partition is stopped.
TEST(MeteringConsumerTest, LagCountsTheEventsNotReadYetAlsoWhileStopped) {
  PgPool pg(g_infra->pg_uri(), 2);
  Ledger ledger(pg);
  const std::string topic = "usage.lagging";
  const MessageSigner signer = *MessageSigner::FromKeys({std::string(64, 's')});
  const MeteringOptions options{.brokers = g_infra->kafka(),
                                .group = "billing-lag",
                                .topic = topic,
                                .reset_check_interval = std::chrono::milliseconds(100),
                                .lag_interval = std::chrono::milliseconds(100)};
  constexpr int kPartitions = 4;
  constexpr int64_t kStored = 150;
  for (int32_t p = 0; p < kPartitions; ++p) {
    ASSERT_TRUE(ledger.Skip({options.group, topic, p, kStored - 1}).ok());
  }
  auto producer = KafkaProducer::Create(g_infra->kafka());
  ASSERT_TRUE(producer.ok()) << producer.status();
  auto produce = [&](int from, int n) {
    for (int i = from; i < from + n; ++i) {
      const std::string id = "lag-" + std::to_string(i);
      const std::string value = Event("org-lag", id, 1, 1).SerializeAsString();
      ASSERT_TRUE((*producer)
                      ->Publish(topic, id, value, {{kSignatureHeader, signer.Sign(id, value)}})
                      .ok());
    }
    ASSERT_TRUE((*producer)->Flush(std::chrono::seconds(10)).ok());
  };
  produce(0, 8);  // the topic exists, its logs far below the stored offsets
  auto lag = [&] {
    double sum = 0;
    for (int32_t p = 0; p < kPartitions; ++p) {
      sum += metrics::Default()
                 .GetGauge("sb_billing_consumer_lag", "",
                           {{"topic", topic}, {"partition", std::to_string(p)}})
                 .Value();
    }
    return sum;
  };
  MeteringConsumer consumer(ledger, signer, options);
  ASSERT_TRUE(consumer.Start().ok());
  for (int i = 0; i < 200 && consumer.stalled_partitions() < kPartitions; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(consumer.stalled_partitions(), kPartitions);
  // The logs grow past the stored offsets while billing waits for a decision.
  produce(8, 1200);
  auto probe = KafkaConsumer::Create(g_infra->kafka(), "lag-probe", {topic});
  ASSERT_TRUE(probe.ok()) << probe.status();
  int64_t expected = 0;
  for (int32_t p = 0; p < kPartitions; ++p) {
    auto w = (*probe)->QueryWatermarks(topic, p, std::chrono::seconds(5));
    ASSERT_TRUE(w.ok()) << w.status();
    expected += std::max<int64_t>(0, w->high - kStored);
  }
  ASSERT_GT(expected, 0);
  for (int i = 0; i < 100 && lag() != static_cast<double>(expected); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(lag(), static_cast<double>(expected)) << "every event beyond the stopped offsets";

  // Replayed from the start: nothing left to read.
  ASSERT_TRUE(ledger.RequestReset(options.group, topic, std::nullopt, "earliest").ok());
  ASSERT_TRUE(WaitForRequests(ledger, "org-lag", 1208));
  for (int i = 0; i < 100 && lag() != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(lag(), 0);
}

TEST(ReconcileTest, TheLedgerEqualsTheTopicAndDriftIsNamed) {
  PgPool pg(g_infra->pg_uri(), 2);
  Ledger ledger(pg);
  const std::string topic = "usage.reconcile";
  const MessageSigner signer = *MessageSigner::FromKeys({std::string(64, 's')});
  const absl::Time since = absl::Now() - absl::Milliseconds(1);
  const int64_t now_ms = absl::ToUnixMillis(absl::Now());
  auto producer = KafkaProducer::Create(g_infra->kafka());
  ASSERT_TRUE(producer.ok()) << producer.status();
  auto produce = [&](const std::string& id, int in, int out, bool final, bool sign = true,
                     int cache_read = 0) {
    bpb::UsageEvent e = Event("org-reconcile", id, in, out, now_ms);
    e.set_final(final);
    e.set_cache_read_tokens(cache_read);
    const std::string value = e.SerializeAsString();
    KafkaHeaders headers;
    if (sign) headers.push_back({kSignatureHeader, signer.Sign(id, value)});
    ASSERT_TRUE((*producer)->Publish(topic, id, value, headers).ok());
  };
  produce("rc-1", 1, 5, false);
  produce("rc-1", 1, 4, true);    // the final report, below the running one
  produce("rc-2", 2, 10, false);  // never settled (a worker killed)
  produce("rc-3", 3, 3, true, true, /*cache_read=*/2);
  produce("rc-forged", 100, 100, true, /*sign=*/false);  // refused by both
  ASSERT_TRUE((*producer)->Flush(std::chrono::seconds(10)).ok());
  {
    MeteringConsumer consumer(ledger, signer,
                              {.brokers = g_infra->kafka(), .group = "billing-rc", .topic = topic});
    ASSERT_TRUE(consumer.Start().ok());
    ASSERT_TRUE(WaitForRequests(ledger, "org-reconcile", 3));
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  auto drift = Reconcile(ledger, signer, g_infra->kafka(), topic, since);
  ASSERT_TRUE(drift.ok()) << drift.status();
  EXPECT_TRUE(drift->zero()) << "missing " << drift->missing.size() << ", extra "
                             << drift->extra.size() << ", differing " << drift->differing.size();
  EXPECT_EQ(drift->topic_requests, 3);
  EXPECT_EQ(drift->ledger_requests, 3);
  EXPECT_TRUE(drift->topic_complete);

  ASSERT_TRUE(pg.RunVoid([](pqxx::connection& c) {
                  pqxx::work tx(c);
                  tx.exec(
                      "UPDATE usage_ledger SET output_tokens = output_tokens + 1, "
                      " cache_read_tokens = 1 WHERE request_id = 'rc-3'");
                  tx.exec("DELETE FROM usage_ledger WHERE request_id = 'rc-2'");
                  tx.commit();
                }).ok());
  drift = Reconcile(ledger, signer, g_infra->kafka(), topic, since);
  ASSERT_TRUE(drift.ok()) << drift.status();
  EXPECT_FALSE(drift->zero());
  EXPECT_EQ(drift->differing, (std::vector<std::string>{"rc-3"}));
  EXPECT_EQ(drift->missing, (std::vector<std::string>{"rc-2"}));
  EXPECT_TRUE(drift->extra.empty());
  EXPECT_EQ(drift->output_tokens, 1 - 10);
  EXPECT_EQ(drift->input_tokens, -2);
  EXPECT_EQ(drift->cache_read_tokens, -1) << "a cache count is drift too";
}

}  // namespace
}  // namespace sb::billing

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  ::testing::AddGlobalTestEnvironment(new sb::billing::Environment);
  return RUN_ALL_TESTS();
}
