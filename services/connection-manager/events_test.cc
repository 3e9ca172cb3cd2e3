// Users' chat events against a real Redis and the dev broker (started for
// the suite): the per-user streams (once per event, trimmed with a reset
// for a cursor older than what is kept, a deleted conversation's events
// erased), the EventHub through its gRPC service (each device its user's
// events only, resuming with no gap and no duplicate) and the indexer from
// Kafka (duplicates, unreadable and expired events, Redis away and back).
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <set>
#include <thread>

#include "absl/time/clock.h"
#include "connection-manager/connection_grpc.h"
#include "core/ulid.h"
#include "gtest/gtest.h"
#include "storage/redis_cluster.h"
#include "support/infra.h"

namespace sb::connection {
namespace {

namespace conn = switchboard::connection::v1;
namespace cpb = switchboard::chat::v1;
using sb::testing::Infra;

TEST(StreamIdTest, ParsesAndOrdersAsRedis) {
  EXPECT_EQ(StreamId::Parse("1700000000000-3")->ToString(), "1700000000000-3");
  EXPECT_LT(*StreamId::Parse("9-10"), *StreamId::Parse("10-0"));
  EXPECT_LT(*StreamId::Parse("10-2"), *StreamId::Parse("10-10"));
  for (const char* bad : {"", "10", "10-", "-1", "a-1", "1-2-3", "1-2 "}) {
    EXPECT_FALSE(StreamId::Parse(bad).has_value()) << bad;
  }
}

class UserEventsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto infra =
        Infra::Start({.postgres = false, .redis = true, .kafka = true, .redis_cluster = true});
    ASSERT_TRUE(infra.ok()) << infra.status();
    infra_ = std::move(*infra).release();
  }
  static void TearDownTestSuite() {
    delete infra_;
    infra_ = nullptr;
  }

  void SetUp() override {
    redis_ = std::make_unique<RedisClient>(RedisOptions{.host = "127.0.0.1",
                                                        .port = infra_->redis_port(),
                                                        .pool_size = 4,
                                                        .timeout = std::chrono::milliseconds(500)});
    ASSERT_TRUE(redis_->Command({"FLUSHALL"}).ok());
  }

  cpb::ChatEvent Event(const std::string& user, const std::string& type,
                       const std::string& conversation, const std::string& content = "") {
    cpb::ChatEvent e;
    e.set_event_id(ids_.Next(absl::Now()));
    e.set_type(type);
    e.set_org_id("acme");
    e.set_user_id(user);
    e.set_conversation_id(conversation);
    e.set_at_unix_ms(absl::ToUnixMillis(absl::Now()));
    if (!content.empty()) {
      e.mutable_message()->set_id(ids_.Next(absl::Now()));
      e.mutable_message()->set_content(content);
    }
    return e;
  }
  std::string Append(const cpb::ChatEvent& e, UserEventsOptions options = {}) {
    auto id = AppendUserEvent(*redis_, e, options);
    EXPECT_TRUE(id.ok()) << id.status();
    EXPECT_TRUE(id.ok() && id->has_value()) << "a new event is appended";
    return id.ok() && id->has_value() ? **id : "";
  }
  // The events of alice's stream, in order.
  std::vector<cpb::ChatEvent> Stored(const std::string& user = "alice") {
    auto range = redis_->Command({"XRANGE", UserEventsKey("acme", user), "-", "+"});
    EXPECT_TRUE(range.ok());
    std::vector<cpb::ChatEvent> out;
    for (const auto& raw : range->elements) {
      auto e = ParseUserEventEntry(raw);
      EXPECT_TRUE(e.ok()) << e.status();
      if (e.ok()) out.push_back(e->event);
    }
    return out;
  }

  static Infra* infra_;
  std::unique_ptr<BlockingRedis> redis_;
  UlidGenerator ids_;
};
Infra* UserEventsTest::infra_ = nullptr;

TEST_F(UserEventsTest, AnEventIsKeptOnceWhateverKafkaRedelivers) {
  const auto created = Event("alice", "conversation.created", "c1");
  Append(created);
  auto again = AppendUserEvent(*redis_, created, {});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->has_value()) << "a redelivered event is not appended again";
  Append(Event("alice", "message.created", "c1", "hello"));
  auto stored = Stored();
  ASSERT_EQ(stored.size(), 2u);
  EXPECT_EQ(stored[0].event_id(), created.event_id());
  EXPECT_EQ(stored[1].message().content(), "hello");
  EXPECT_TRUE(Stored("bob").empty()) << "another user's stream is another key";
}

TEST_F(UserEventsTest, ACursorOlderThanWhatIsKeptIsAReset) {
  const UserEventsOptions three{.retention = absl::Hours(1), .max_per_user = 3};
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i)
    ids.push_back(Append(Event("alice", "conversation.updated", "c1"), three));
  EXPECT_EQ(Stored().size(), 3u) << "only the newest three are kept";
  const std::string key = UserEventsKey("acme", "alice");

  // ids[1] was the last dropped: everything after it is still there.
  auto kept = ResolveStart(*redis_, key, ids[1]);
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_FALSE(kept->reset);
  EXPECT_EQ(kept->after.ToString(), ids[1]);
  // ids[0]: ids[1] is gone, so the device would miss it.
  auto lost = ResolveStart(*redis_, key, ids[0]);
  ASSERT_TRUE(lost.ok());
  EXPECT_TRUE(lost->reset);
  EXPECT_EQ(lost->after.ToString(), ids[4]) << "after a reset, from the newest";

  auto fresh = ResolveStart(*redis_, key, "");
  ASSERT_TRUE(fresh.ok());
  EXPECT_FALSE(fresh->reset);
  EXPECT_EQ(fresh->after.ToString(), ids[4]) << "no cursor: only new events";
  auto oldest = ResolveStart(*redis_, key, "0-0");
  ASSERT_TRUE(oldest.ok());
  EXPECT_FALSE(oldest->reset);
  EXPECT_EQ(oldest->after, StreamId{});

  auto future = ResolveStart(*redis_, key, "99999999999999-0");
  ASSERT_TRUE(future.ok());
  EXPECT_TRUE(future->reset) << "a cursor the stream never gave";
  const StreamId newest = *StreamId::Parse(ids[4]);
  auto next = ResolveStart(*redis_, key, StreamId{newest.ms, newest.seq + 1}.ToString());
  ASSERT_TRUE(next.ok());
  EXPECT_TRUE(next->reset) << "the same millisecond as the newest, a later sequence";
  auto padded = ResolveStart(*redis_, key, "000" + ids[1]);
  ASSERT_TRUE(padded.ok());
  EXPECT_FALSE(padded->reset) << "leading zeros: the same id";
  EXPECT_EQ(padded->after.ToString(), ids[1]);
  auto expired = ResolveStart(*redis_, UserEventsKey("acme", "carol"), ids[2]);
  ASSERT_TRUE(expired.ok());
  EXPECT_TRUE(expired->reset) << "a stream that expired (or never was)";
  EXPECT_EQ(ResolveStart(*redis_, key, "12x").status().code(), absl::StatusCode::kInvalidArgument);

  auto ttl = redis_->Command({"TTL", key});
  ASSERT_TRUE(ttl.ok());
  EXPECT_GT(ttl->integer, 3000) << "the stream expires after the retention";
  EXPECT_LE(ttl->integer, 3600);
}

TEST_F(UserEventsTest, DeletingAConversationErasesItsEarlierEvents) {
  Append(Event("alice", "conversation.created", "c1"));
  Append(Event("alice", "message.created", "c1", "my secret"));
  Append(Event("alice", "message.created", "c2", "keep me"));
  Append(Event("alice", "conversation.deleted", "c1"));
  auto stored = Stored();
  ASSERT_EQ(stored.size(), 2u);
  EXPECT_EQ(stored[0].message().content(), "keep me");
  EXPECT_EQ(stored[1].type(), "conversation.deleted");
  EXPECT_EQ(stored[1].conversation_id(), "c1");
}

TEST_F(UserEventsTest, AnErasedUsersEventsAreDroppedAndOlderOnesNotKeptAgain) {
  const std::string before = Append(Event("alice", "message.created", "c1", "my secret"));
  const auto late = Event("alice", "message.completed", "c1", "my secret reply");  // lagging
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  const auto tombstone = Event("alice", "user.erased", "");
  const std::string erased = Append(tombstone);
  EXPECT_LT(*StreamId::Parse(before), *StreamId::Parse(erased));
  // The tombstone's id is past the cursor a device holds even when it comes
  // in the same millisecond as the last event (a device would wait for it
  // forever otherwise).
  for (int i = 0; i < 20; ++i) {
    const std::string user = "u" + std::to_string(i);
    const std::string last = Append(Event(user, "conversation.deleted", "c"));
    const std::string gone = Append(Event(user, "user.erased", ""));
    EXPECT_LT(*StreamId::Parse(last), *StreamId::Parse(gone)) << last << " then " << gone;
  }
  auto stored = Stored();
  ASSERT_EQ(stored.size(), 1u);
  EXPECT_EQ(stored[0].type(), "user.erased");
  auto again = AppendUserEvent(*redis_, late, {});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->has_value()) << "an event from before the erasure arriving late";
  // The user starts again (a later millisecond: events are ordered by their
  // commit time, and one in the erasure's own millisecond counts as before it).
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  Append(Event("alice", "conversation.created", "c2"));
  EXPECT_EQ(Stored().size(), 2u);
}

enum class Topology { kSingle, kCluster };

// The hub through the gRPC service, as the gateway calls it, on one Redis
// and on a 3-master Redis Cluster (where a multi-key XREAD across slots
// fails with CROSSSLOT: each shard of users is read on its own).
class EventHubTest : public UserEventsTest, public ::testing::WithParamInterface<Topology> {
 protected:
  void SetUp() override {
    UserEventsTest::SetUp();
    if (GetParam() == Topology::kCluster) {
      for (int port : infra_->redis_cluster_ports()) {
        ASSERT_TRUE(RedisClient({.port = port, .pool_size = 1}).Command({"FLUSHALL"}).ok());
      }
      redis_ = std::make_unique<RedisClusterClient>(
          RedisOptions{.port = infra_->redis_cluster_ports()[0], .pool_size = 24});
    }
    hub_ = std::make_unique<SubscriptionHub>(
        *redis_, [](const conn::SubscribeRequest&) { return absl::NotFoundError("unused"); }, 1);
    events_ = std::make_unique<EventHub>(*redis_, 2);
    service_ = std::make_unique<ConnectionServiceImpl>(*hub_, *events_);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(port, 0);
    stub_ = conn::ConnectionManager::NewStub(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    events_->Stop();
    server_->Shutdown();
    server_->Wait();
  }

  // A device following `user`'s events after `after`.
  struct Device {
    grpc::ClientContext ctx;
    std::unique_ptr<grpc::ClientReader<conn::UserEvent>> reader;
    conn::UserEvent opening;
  };
  std::unique_ptr<Device> Connect(const std::string& user, const std::string& after = "") {
    auto d = std::make_unique<Device>();
    d->ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    conn::SubscribeEventsRequest req;
    req.set_org_id("acme");
    req.set_user_id(user);
    req.set_after(after);
    d->reader = stub_->SubscribeEvents(&d->ctx, req);
    EXPECT_TRUE(d->reader->Read(&d->opening)) << "the subscription opens";
    EXPECT_FALSE(d->opening.has_event());
    return d;
  }
  // The next `n` events of a device.
  static std::vector<conn::UserEvent> Next(Device& d, int n) {
    std::vector<conn::UserEvent> out;
    conn::UserEvent e;
    while (static_cast<int>(out.size()) < n && d.reader->Read(&e)) out.push_back(e);
    return out;
  }

  std::unique_ptr<SubscriptionHub> hub_;
  std::unique_ptr<EventHub> events_;
  std::unique_ptr<ConnectionServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<conn::ConnectionManager::Stub> stub_;
};

TEST_P(EventHubTest, EachDeviceGetsItsUsersEventsLiveAndResumesWithoutGapOrDuplicate) {
  Append(Event("alice", "conversation.created", "old"));  // before anyone follows
  auto phone = Connect("alice");
  auto laptop = Connect("alice");
  auto bobs = Connect("bob");
  std::vector<std::string> sent;
  for (int i = 0; i < 10; ++i) {
    sent.push_back(Append(Event("alice", "message.created", "c1", "m" + std::to_string(i))));
    if (i % 3 == 0) Append(Event("bob", "message.created", "b1", "bob's"));
  }
  for (Device* d : {phone.get(), laptop.get()}) {
    auto got = Next(*d, 10);
    ASSERT_EQ(got.size(), 10u);
    for (int i = 0; i < 10; ++i) {
      EXPECT_EQ(got[i].cursor(), sent[i]);
      EXPECT_EQ(got[i].event().message().content(), "m" + std::to_string(i))
          << "only new events, in order, and only alice's";
    }
  }
  auto bob_got = Next(*bobs, 4);
  ASSERT_EQ(bob_got.size(), 4u);
  for (const auto& e : bob_got) EXPECT_EQ(e.event().user_id(), "bob");

  // The laptop drops after the 4th event and comes back with its cursor.
  laptop->ctx.TryCancel();
  auto back = Connect("alice", sent[3]);
  EXPECT_EQ(back->opening.cursor(), sent[3]);
  sent.push_back(Append(Event("alice", "message.completed", "c1", "m10")));
  auto rest = Next(*back, 7);
  ASSERT_EQ(rest.size(), 7u);
  for (int i = 0; i < 7; ++i) EXPECT_EQ(rest[i].cursor(), sent[4 + i]);
  EXPECT_EQ(rest.back().event().type(), "message.completed");
}

TEST_P(EventHubTest, AStaleCursorIsToldToReloadAndAMalformedOneRefused) {
  const UserEventsOptions two{.retention = absl::Hours(1), .max_per_user = 2};
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i)
    ids.push_back(Append(Event("alice", "conversation.updated", "c"), two));
  auto device = Connect("alice", ids[0]);
  auto reset = Next(*device, 1);
  ASSERT_EQ(reset.size(), 1u);
  EXPECT_TRUE(reset[0].reset());
  EXPECT_EQ(reset[0].cursor(), ids[3]);
  const std::string next = Append(Event("alice", "conversation.updated", "c"), two);
  auto after = Next(*device, 1);
  ASSERT_EQ(after.size(), 1u);
  EXPECT_EQ(after[0].cursor(), next) << "events go on after the reset";

  grpc::ClientContext ctx;
  conn::SubscribeEventsRequest req;
  req.set_org_id("acme");
  req.set_user_id("alice");
  req.set_after("nope");
  auto reader = stub_->SubscribeEvents(&ctx, req);
  conn::UserEvent e;
  EXPECT_FALSE(reader->Read(&e));
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_P(EventHubTest, DrainingEndsSubscriptionsAsUnavailable) {
  auto device = Connect("alice");
  events_->Stop();
  conn::UserEvent e;
  EXPECT_FALSE(device->reader->Read(&e));
  EXPECT_EQ(device->reader->Finish().error_code(), grpc::StatusCode::UNAVAILABLE)
      << "the device resumes on another replica";
}

// Users in every shard followed at once: on a cluster their streams are on
// all three masters, and each device still gets its own events live.
TEST_P(EventHubTest, UsersInEveryShardAreFollowedAtOnce) {
  constexpr int kUsers = 48;
  std::set<int> slots;
  std::vector<std::unique_ptr<Device>> devices;
  for (int u = 0; u < kUsers; ++u) {
    const std::string user = "user-" + std::to_string(u);
    slots.insert(RedisCluster::Slot(UserEventsKey("acme", user)));
    devices.push_back(Connect(user));
  }
  EXPECT_EQ(slots.size(), static_cast<size_t>(kEventShards)) << "48 users cover every shard";
  std::vector<std::string> sent;
  for (int u = 0; u < kUsers; ++u) {
    sent.push_back(
        Append(Event("user-" + std::to_string(u), "message.created", "c", std::to_string(u))));
  }
  for (int u = 0; u < kUsers; ++u) {
    auto got = Next(*devices[u], 1);
    ASSERT_EQ(got.size(), 1u) << "user " << u;
    EXPECT_EQ(got[0].cursor(), sent[u]);
    EXPECT_EQ(got[0].event().message().content(), std::to_string(u));
  }
}

INSTANTIATE_TEST_SUITE_P(Topologies, EventHubTest,
                         ::testing::Values(Topology::kSingle, Topology::kCluster),
                         [](const auto& info) {
                           return info.param == Topology::kSingle ? "SingleNode" : "Cluster";
                         });

TEST_F(UserEventsTest, TheIndexerTakesEachEventOnceAndWaitsOutRedis) {
  auto producer = KafkaProducer::Create(infra_->kafka());
  ASSERT_TRUE(producer.ok()) << producer.status();
  auto consumer =
      KafkaConsumer::Create(infra_->kafka(), "events-test", {"chat.events"},
                            {{"fetch.wait.max.ms", "50"}, {"auto.offset.reset", "earliest"}});
  ASSERT_TRUE(consumer.ok()) << consumer.status();
  EventIndexer indexer(**consumer, *redis_, {});

  auto publish = [&](const cpb::ChatEvent& e) {
    ASSERT_TRUE(
        (*producer)->Publish("chat.events", e.conversation_id(), e.SerializeAsString()).ok());
  };
  const auto first = Event("alice", "conversation.created", "c1");
  publish(first);
  publish(first);  // a redelivery, as after a relay's retry
  ASSERT_TRUE((*producer)->Publish("chat.events", "c1", "not an event").ok());
  auto old = Event("alice", "conversation.updated", "c1");
  old.set_at_unix_ms(absl::ToUnixMillis(absl::Now() - absl::Hours(48)));
  publish(old);
  publish(Event("alice", "message.created", "c1", "hi"));
  ASSERT_TRUE((*producer)->Flush(std::chrono::seconds(10)).ok());

  const auto deadline = absl::Now() + absl::Seconds(30);
  int taken = 0;
  while (taken < 5 && absl::Now() < deadline) {
    auto n = indexer.IndexOnce(std::chrono::milliseconds(200));
    ASSERT_TRUE(n.ok()) << n.status();
    taken += *n;
  }
  ASSERT_EQ(taken, 5);
  auto stored = Stored();
  ASSERT_EQ(stored.size(), 2u) << "once each; the unreadable and the expired one left out";
  EXPECT_EQ(stored[0].event_id(), first.event_id());
  EXPECT_EQ(stored[1].message().content(), "hi");

  // Redis stops answering: the round fails and nothing is lost; once it is
  // back the pending event goes in.
  publish(Event("alice", "message.completed", "c1", "hi there"));
  ASSERT_TRUE((*producer)->Flush(std::chrono::seconds(10)).ok());
  ASSERT_EQ(kill(infra_->redis_pid(), SIGSTOP), 0);
  absl::StatusOr<int> frozen = 0;
  const auto until = absl::Now() + absl::Seconds(30);
  while (frozen.ok() && absl::Now() < until)
    frozen = indexer.IndexOnce(std::chrono::milliseconds(200));
  kill(infra_->redis_pid(), SIGCONT);
  EXPECT_FALSE(frozen.ok()) << "a round fails while Redis is away";
  absl::StatusOr<int> n = 0;
  for (int i = 0; i < 20 && (!n.ok() || *n == 0); ++i)
    n = indexer.IndexOnce(std::chrono::milliseconds(200));
  ASSERT_TRUE(n.ok()) << n.status();
  stored = Stored();
  ASSERT_EQ(stored.size(), 3u);
  EXPECT_EQ(stored[2].message().content(), "hi there");
}

}  // namespace
}  // namespace sb::connection
