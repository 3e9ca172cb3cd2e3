// Admission and idempotency records against real Redis, on a single node and on a 3-master Redis
// Cluster (both started for the suite): the Lua scripts' exactness under
// concurrency across replicas, refunds, lease expiry after a replica dies,
// and what happens when Redis cannot be reached. "Replicas" here are
// RedisAdmission objects on their own connections, as two gateways would
// be; the gateway processes themselves are exercised in tests/e2e.
#include <signal.h>

#include <atomic>
#include <future>
#include <memory>
#include <thread>

#include "core/metrics.h"
#include "gateway/admission/admission_filter.h"
#include "gateway/admission/local_admission.h"
#include "gateway/admission/redis_admission.h"
#include "gateway/idempotency/idempotency_store.h"
#include "gtest/gtest.h"
#include "storage/redis.h"
#include "storage/redis_cluster.h"
#include "storage/redis_pipeline.h"
#include "support/infra.h"

namespace sb::gateway {
namespace {

using sb::testing::Infra;

enum class Topology { kSingle, kCluster };

// Complete and Renew, waiting until they took effect.
void Settle(std::function<void(Admission::Settled)> op) {
  std::promise<absl::Status> p;
  auto f = p.get_future();
  op([&p](absl::Status st) { p.set_value(st); });
  ASSERT_EQ(f.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_TRUE(f.get().ok());
}

absl::StatusOr<AdmissionDecision> Decide(Admission& a, const AdmissionRequest& req,
                                         const std::vector<LimitRow>& rows, absl::Time now) {
  std::promise<absl::StatusOr<AdmissionDecision>> p;
  auto f = p.get_future();
  a.Admit(req, rows, now, [&p](absl::StatusOr<AdmissionDecision> d) { p.set_value(d); });
  if (f.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
    // The callback still holds &p: a hang is a failure the test cannot survive.
    ADD_FAILURE() << "admission hung";
    std::abort();
  }
  return f.get();
}

class AdmissionRedisTest : public ::testing::TestWithParam<Topology> {
 protected:
  static void SetUpTestSuite() {
    auto infra =
        Infra::Start({.postgres = false, .redis = true, .kafka = false, .redis_cluster = true});
    ASSERT_TRUE(infra.ok()) << infra.status();
    infra_ = std::move(*infra).release();
  }
  static void TearDownTestSuite() {
    delete infra_;
    infra_ = nullptr;
  }

  // A connection, as one gateway replica has.
  std::unique_ptr<AsyncRedis> Connect() {
    if (GetParam() == Topology::kSingle) {
      return std::make_unique<RedisPipeline>(RedisOptions{.port = infra_->redis_port()});
    }
    return std::make_unique<RedisCluster>(RedisOptions{.port = infra_->redis_cluster_ports()[0]});
  }

  // A fresh org per test: no state carries over.
  LimitRow Row(int64_t rpm, int64_t in, int64_t out, int64_t conc, std::string key = "") {
    static std::atomic<int> n{0};
    if (org_.empty()) org_ = "org-" + std::to_string(getpid()) + "-" + std::to_string(++n);
    LimitRow r;
    r.org_id = org_;
    r.key_id = std::move(key);
    r.rpm = rpm;
    r.input_tpm = in;
    r.output_tpm = out;
    r.concurrency = conc;
    return r;
  }
  AdmissionRequest Req(std::string id, int64_t in = 10, int64_t max_tokens = 100) {
    return {org_, "k1", "m", std::move(id), in, max_tokens};
  }

  static Infra* infra_;
  std::string org_;
  const absl::Time t0_ = absl::Now();
};

Infra* AdmissionRedisTest::infra_ = nullptr;

TEST_P(AdmissionRedisTest, TwentyOfFiftyConcurrentClientsOverTwoReplicas) {
  auto conn_a = Connect(), conn_b = Connect();
  RedisAdmission a(*conn_a, absl::Seconds(30)), b(*conn_b, absl::Seconds(30));
  const std::vector<LimitRow> rows = {Row(20, 0, 0, 0)};
  std::atomic<int> admitted{0}, refused{0}, failed{0};
  std::vector<std::thread> clients;
  std::atomic<bool> go{false};
  for (int i = 0; i < 50; ++i) {
    clients.emplace_back([&, i] {
      while (!go.load()) std::this_thread::yield();
      // All in the same first window: the time is the test's.
      auto d = Decide(i % 2 ? a : b, Req("r" + std::to_string(i)), rows, t0_);
      if (!d.ok()) {
        ++failed;
      } else if (d->admitted) {
        ++admitted;
      } else {
        EXPECT_EQ(d->refusal.dimension, Dimension::kRequests);
        EXPECT_EQ(d->refusal.retry_after, absl::Seconds(3)) << "one request every 3 s";
        ++refused;
      }
    });
  }
  go = true;
  for (auto& t : clients) t.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(admitted.load(), 20);
  EXPECT_EQ(refused.load(), 30);
  // The bucket refills continuously: one more every 3 s.
  auto later = Decide(a, Req("later"), rows, t0_ + absl::Seconds(3));
  ASSERT_TRUE(later.ok()) << later.status();
  EXPECT_TRUE(later->admitted);
  EXPECT_EQ(later->view.requests.remaining, 0);
  auto again = Decide(b, Req("again"), rows, t0_ + absl::Seconds(3));
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->admitted);
}

TEST_P(AdmissionRedisTest, UnusedOutputTokensComeBack) {
  auto conn = Connect();
  RedisAdmission a(*conn, absl::Seconds(30));
  const std::vector<LimitRow> rows = {Row(0, 0, 1000, 0)};
  auto first = Decide(a, Req("first", 10, 1000), rows, t0_);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(first->admitted);
  EXPECT_EQ(first->view.output_tokens.remaining, 0) << "max_tokens is reserved";
  auto none = Decide(a, Req("none", 10, 1), rows, t0_);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->admitted);
  EXPECT_EQ(none->refusal.dimension, Dimension::kOutputTokens);
  // The reply stopped after 10 tokens: 990 come back.
  Settle([&](auto done) { a.Complete(Req("first", 10, 1000), rows, t0_, 10, 10, done); });
  auto too_many = Decide(a, Req("991", 10, 991), rows, t0_);
  ASSERT_TRUE(too_many.ok());
  EXPECT_FALSE(too_many->admitted);
  auto exact = Decide(a, Req("990", 10, 990), rows, t0_);
  ASSERT_TRUE(exact.ok());
  EXPECT_TRUE(exact->admitted);
  EXPECT_EQ(exact->view.output_tokens.remaining, 0);
}

TEST_P(AdmissionRedisTest, ExactInputCountsCorrectTheEstimate) {
  auto conn = Connect();
  RedisAdmission a(*conn, absl::Seconds(30));
  const std::vector<LimitRow> rows = {Row(0, 100, 0, 0)};
  auto first = Decide(a, Req("first", 40), rows, t0_);
  ASSERT_TRUE(first.ok() && first->admitted);
  EXPECT_EQ(first->view.input_tokens.remaining, 60);
  // The worker counted 70, not the estimated 40: 30 more are charged.
  Settle([&](auto done) { a.Complete(Req("first", 40), rows, t0_, 70, 0, done); });
  auto second = Decide(a, Req("second", 30), rows, t0_);
  ASSERT_TRUE(second.ok() && second->admitted);
  EXPECT_EQ(second->view.input_tokens.remaining, 0);
}

TEST_P(AdmissionRedisTest, ADeadReplicasLeasesExpire) {
  const std::vector<LimitRow> rows = {Row(0, 0, 0, 10)};
  const absl::Duration ttl = absl::Seconds(2);
  {
    auto conn = Connect();
    RedisAdmission dying(*conn, ttl);
    for (int i = 0; i < 10; ++i) {
      auto d = Decide(dying, Req("held" + std::to_string(i)), rows, t0_);
      ASSERT_TRUE(d.ok() && d->admitted) << i;
    }
    // One is still running and renewed; the replica then dies without
    // completing any of them.
    Settle([&](auto done) { dying.Renew(Req("held0"), rows, t0_ + absl::Seconds(1.5), done); });
  }
  auto conn = Connect();
  RedisAdmission survivor(*conn, ttl);
  auto full = Decide(survivor, Req("full"), rows, t0_ + absl::Seconds(1));
  ASSERT_TRUE(full.ok());
  EXPECT_FALSE(full->admitted);
  EXPECT_EQ(full->refusal.dimension, Dimension::kConcurrency);
  // Past the TTL nine slots are back; the renewed one is held until 3.5 s.
  int admitted = 0;
  for (int i = 0; i < 10; ++i) {
    auto d = Decide(survivor, Req("new" + std::to_string(i)), rows, t0_ + absl::Seconds(2.1));
    ASSERT_TRUE(d.ok());
    admitted += d->admitted;
  }
  EXPECT_EQ(admitted, 9);
}

TEST_P(AdmissionRedisTest, OneAdmissionIsAllOrNothingAcrossRows) {
  auto conn = Connect();
  RedisAdmission a(*conn, absl::Seconds(30));
  const LimitRow org = Row(100, 0, 0, 0), key = Row(1, 0, 0, 0, "k1");
  auto first = Decide(a, Req("first"), {org, key}, t0_);
  ASSERT_TRUE(first.ok() && first->admitted);
  EXPECT_EQ(first->view.requests.remaining, 0) << "the tightest: the key's";
  auto second = Decide(a, Req("second"), {org, key}, t0_);
  ASSERT_TRUE(second.ok());
  EXPECT_FALSE(second->admitted);
  // The org's bucket was charged once, by the first.
  auto other_key = Decide(a, Req("third"), {org}, t0_);
  ASSERT_TRUE(other_key.ok() && other_key->admitted);
  EXPECT_EQ(other_key->view.requests.remaining, 98);
}

TEST_P(AdmissionRedisTest, ARowsKeysShareOneSlot) {
  RedisClient probe({.port = GetParam() == Topology::kSingle ? infra_->redis_port()
                                                             : infra_->redis_cluster_ports()[0],
                     .pool_size = 1});
  const auto keys = RedisAdmission::Keys(Row(1, 1, 1, 1, "k1"));
  for (const auto& k : keys) {
    EXPECT_EQ(RedisCluster::Slot(k), RedisCluster::Slot(keys[0])) << k;
    if (GetParam() == Topology::kCluster) {
      auto slot = probe.Command({"CLUSTER", "KEYSLOT", k});
      ASSERT_TRUE(slot.ok()) << slot.status();
      EXPECT_EQ(slot->integer, RedisCluster::Slot(k)) << "the server agrees";
    }
  }
}

TEST_P(AdmissionRedisTest, AFlushedScriptCacheIsRefilled) {
  auto conn = Connect();
  RedisAdmission a(*conn, absl::Seconds(30));
  const std::vector<LimitRow> rows = {Row(5, 0, 0, 0)};
  ASSERT_TRUE(Decide(a, Req("1"), rows, t0_).ok());
  for (int port : GetParam() == Topology::kSingle ? std::vector<int>{infra_->redis_port()}
                                                  : infra_->redis_cluster_ports()) {
    ASSERT_TRUE(RedisClient({.port = port, .pool_size = 1}).Command({"SCRIPT", "FLUSH"}).ok());
  }
  auto d = Decide(a, Req("2"), rows, t0_);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(d->admitted);
  EXPECT_EQ(d->view.requests.remaining, 3);
}

// The idempotency record's state machine (its Lua scripts), on the
// test's clock: times are passed in, so expiry needs no waiting.
template <typename T>
T Await(std::function<void(std::function<void(T)>)> call) {
  std::promise<T> p;
  auto f = p.get_future();
  call([&p](T v) { p.set_value(std::move(v)); });
  EXPECT_EQ(f.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  return f.get();
}

TEST_P(AdmissionRedisTest, IdempotencyRecordsGoFromAbsentToRunningToDone) {
  auto conn = Connect();
  IdempotencyStore store(*conn, absl::Seconds(30), absl::Hours(24));
  const auto k = IdempotencyRecordKey::For(Row(0, 0, 0, 0).org_id, "/v1/messages", "", "key-1");
  EXPECT_EQ(RedisCluster::Slot(k.record), RedisCluster::Slot(k.events));
  using Claimed = absl::StatusOr<ClaimResult>;
  auto claim = [&](const std::string& fp, const std::string& owner, absl::Time at) {
    return Await<Claimed>([&](auto done) { store.Claim(k, fp, owner, at, done); });
  };
  auto write = [&](auto op) { return Await<absl::StatusOr<bool>>(op); };

  auto first = claim("fp-a", "req-1", t0_);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->kind, ClaimResult::Kind::kClaimed);
  auto running = claim("fp-a", "req-2", t0_ + absl::Seconds(1));
  EXPECT_EQ(running->kind, ClaimResult::Kind::kRunning);
  EXPECT_FALSE(running->stream);
  EXPECT_EQ(claim("fp-b", "req-3", t0_)->kind, ClaimResult::Kind::kMismatch);

  // The owner streams, then ends; readers see the data from the start.
  EXPECT_TRUE(*write([&](auto done) { store.StartStream(k, "req-1", t0_, done); }));
  EXPECT_TRUE(claim("fp-a", "req-2", t0_)->stream);
  EXPECT_TRUE(*write([&](auto done) { store.Append(k, "req-1", "event: a\n\n", 1, done); }));
  EXPECT_FALSE(*write([&](auto done) { store.Append(k, "req-9", "not the owner", 2, done); }));
  auto partial =
      Await<absl::StatusOr<EventsRead>>([&](auto done) { store.Read(k, "0-0", 100, done); });
  ASSERT_TRUE(partial.ok()) << partial.status();
  EXPECT_EQ(partial->state, EventsRead::State::kRunning);
  EXPECT_EQ(partial->owner, "req-1");
  EXPECT_FALSE(partial->ended);
  EXPECT_TRUE(*write([&](auto done) { store.Append(k, "req-1", "event: b\n\n", 2, done); }));
  EXPECT_TRUE(*write([&](auto done) { store.EndStream(k, "req-1", t0_, 2, done); }));
  auto all = Await<absl::StatusOr<EventsRead>>(
      [&](auto done) { store.Read(k, partial->data.back().first, 100, done); });
  ASSERT_TRUE(all.ok());
  EXPECT_TRUE(all->ended);
  ASSERT_EQ(all->data.size(), 2u) << "b, then the end";
  EXPECT_EQ(all->data[0].second, "event: b\n\n");
  auto done = claim("fp-a", "req-4", t0_ + absl::Hours(23));
  EXPECT_EQ(done->kind, ClaimResult::Kind::kDone);
  EXPECT_TRUE(done->stream);
  // After the retention, the key is new again.
  EXPECT_EQ(claim("fp-b", "req-5", t0_ + absl::Hours(24) + absl::Seconds(31))->kind,
            ClaimResult::Kind::kClaimed);
}

TEST_P(AdmissionRedisTest, IdempotencyRecordsAreReleasedOrTakenOver) {
  auto conn = Connect();
  IdempotencyStore store(*conn, absl::Seconds(30), absl::Hours(24));
  const auto k = IdempotencyRecordKey::For(Row(0, 0, 0, 0).org_id, "/v1/messages", "", "key-2");
  using Claimed = absl::StatusOr<ClaimResult>;
  auto claim = [&](const std::string& owner, absl::Time at) {
    return Await<Claimed>([&](auto done) { store.Claim(k, "fp", owner, at, done); })->kind;
  };
  auto write = [&](auto op) { return *Await<absl::StatusOr<bool>>(op); };

  ASSERT_EQ(claim("req-1", t0_), ClaimResult::Kind::kClaimed);
  // Refused before it started: released, and the retry runs.
  EXPECT_TRUE(write([&](auto done) { store.Release(k, "req-1", done); }));
  EXPECT_EQ(claim("req-2", t0_), ClaimResult::Kind::kClaimed);
  // Renewed, it stays running; once the lease lapses, a retry takes over and
  // the old owner's writes go nowhere.
  EXPECT_TRUE(write([&](auto done) { store.Renew(k, "req-2", t0_ + absl::Seconds(20), done); }));
  EXPECT_EQ(claim("req-3", t0_ + absl::Seconds(45)), ClaimResult::Kind::kRunning);
  EXPECT_EQ(claim("req-3", t0_ + absl::Seconds(51)), ClaimResult::Kind::kClaimed);
  EXPECT_FALSE(write(
      [&](auto done) { store.FinishWhole(k, "req-2", t0_, 200, "application/json", "{}", done); }));
  EXPECT_TRUE(write([&](auto done) {
    store.FinishWhole(k, "req-3", t0_ + absl::Seconds(52), 200, "application/json", "{\"id\":3}",
                      done);
  }));
  auto replay = Await<Claimed>(
      [&](auto done) { store.Claim(k, "fp", "req-4", t0_ + absl::Seconds(60), done); });
  EXPECT_EQ(replay->kind, ClaimResult::Kind::kDone);
  EXPECT_EQ(replay->status, 200);
  EXPECT_EQ(replay->content_type, "application/json");
  EXPECT_EQ(replay->body, "{\"id\":3}");
}

// A lost or reordered piece of a stream: the record is released at the
// end rather than replayed with a hole, and followers see the gap at once.
TEST_P(AdmissionRedisTest, AStreamWithAGapIsNeverReplayed) {
  auto conn = Connect();
  IdempotencyStore store(*conn, absl::Seconds(30), absl::Hours(24));
  const auto k = IdempotencyRecordKey::For(Row(0, 0, 0, 0).org_id, "/v1/messages", "", "key-3");
  using Written = absl::StatusOr<bool>;
  auto write = [&](auto op) { return Await<Written>(op); };
  auto claim = [&](const std::string& owner) {
    return Await<absl::StatusOr<ClaimResult>>(
               [&](auto done) { store.Claim(k, "fp", owner, t0_, done); })
        ->kind;
  };
  ASSERT_EQ(claim("req-1"), ClaimResult::Kind::kClaimed);
  EXPECT_TRUE(*write([&](auto done) { store.StartStream(k, "req-1", t0_, done); }));
  EXPECT_TRUE(*write([&](auto done) { store.Append(k, "req-1", "one", 1, done); }));
  auto skipped = write([&](auto done) { store.Append(k, "req-1", "three", 3, done); });
  EXPECT_EQ(skipped.status().code(), absl::StatusCode::kDataLoss);
  auto read =
      Await<absl::StatusOr<EventsRead>>([&](auto done) { store.Read(k, "0-0", 100, done); });
  ASSERT_TRUE(read.ok());
  EXPECT_TRUE(read->gap);
  EXPECT_EQ(claim("req-2"), ClaimResult::Kind::kRunning) << "still its owner's until it ends";
  auto ended = write([&](auto done) { store.EndStream(k, "req-1", t0_, 3, done); });
  EXPECT_EQ(ended.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(claim("req-2"), ClaimResult::Kind::kClaimed) << "released: the retry runs";
}

INSTANTIATE_TEST_SUITE_P(Topologies, AdmissionRedisTest,
                         ::testing::Values(Topology::kSingle, Topology::kCluster),
                         [](const auto& info) {
                           return info.param == Topology::kSingle ? "SingleNode" : "Cluster";
                         });

// Redis down: a refused connection, and a server that stopped answering.
class AdmissionFallbackTest : public ::testing::Test {
 protected:
  static LimitRow Row(int64_t rpm) {
    LimitRow r;
    r.org_id = "org";
    r.rpm = rpm;
    return r;
  }
};

TEST_F(AdmissionFallbackTest, AnUnreachableRedisFallsBackAndNeverHangs) {
  // A Redis that stopped answering (SIGSTOP): the command times out.
  auto infra = Infra::Start({.postgres = false, .redis = true, .kafka = false});
  ASSERT_TRUE(infra.ok()) << infra.status();
  RedisPipeline redis({.port = (*infra)->redis_port(), .timeout = std::chrono::milliseconds(250)});
  RedisAdmission shared(redis, absl::Seconds(30));
  LocalAdmission local(2, absl::Seconds(30));
  const std::vector<LimitRow> rows = {Row(20)};
  const AdmissionRequest req{"org", "k", "m", "r", 1, 1};
  const absl::Time now = absl::Now();

  FallbackAdmission by_local(shared, local, FallbackMode::kLocal);
  ASSERT_TRUE(Decide(by_local, req, rows, now).value().admitted);  // Redis up
  ASSERT_EQ(kill((*infra)->redis_pid(), SIGSTOP), 0);
  auto& fallbacks = metrics::Default().GetCounter("sb_gateway_ratelimit_fallbacks_total", "");
  const double before = fallbacks.Value();
  int admitted = 0;
  for (int i = 0; i < 15; ++i) {
    auto d = Decide(by_local, req, rows, now);
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_TRUE(d->local);
    admitted += d->admitted;
  }
  EXPECT_EQ(admitted, 10) << "each of 2 replicas admits 20 / 2";
  EXPECT_EQ(fallbacks.Value() - before, 15);

  FallbackAdmission open(shared, local, FallbackMode::kOpen);
  auto o = Decide(open, req, rows, now);
  ASSERT_TRUE(o.ok());
  EXPECT_TRUE(o->admitted);
  FallbackAdmission closed(shared, local, FallbackMode::kClosed);
  auto c = Decide(closed, req, rows, now);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kUnavailable);
  kill((*infra)->redis_pid(), SIGCONT);
}

}  // namespace
}  // namespace sb::gateway
