// Subscribe end to end within the service: a real Redis and a real 3-master
// Redis Cluster (started for the suite; every test runs on both), the hub,
// and the gRPC service on loopback. The message lookup (a call to chat in
// production) is a table here: chat is not under test.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "connection-manager/connection_grpc.h"
#include "gtest/gtest.h"
#include "storage/redis_cluster.h"
#include "storage/redis_pipeline.h"
#include "storage/token_stream.h"
#include "support/infra.h"

namespace sb::connection {
namespace {

namespace conn = switchboard::connection::v1;
namespace cpb = switchboard::chat::v1;
using sb::testing::Infra;

enum class Topology { kSingle, kCluster };

class ConnectionTest : public ::testing::TestWithParam<Topology> {
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

  void SetUp() override {
    if (GetParam() == Topology::kSingle) {
      const RedisOptions options{.port = infra_->redis_port(), .pool_size = 4};
      redis_ = std::make_unique<RedisClient>(options);
      pipeline_ = std::make_unique<RedisPipeline>(options);
    } else {
      const RedisOptions options{.port = infra_->redis_cluster_ports()[0], .pool_size = 8};
      redis_ = std::make_unique<RedisClusterClient>(options);
      pipeline_ = std::make_unique<RedisCluster>(options);
    }
    writer_ = std::make_unique<RedisTokenStream>(*pipeline_, std::chrono::seconds(60));
    hub_ = std::make_unique<SubscriptionHub>(
        *redis_,
        [this](const conn::SubscribeRequest& r) -> absl::StatusOr<cpb::ChatMessage> {
          if (chat_away_.load()) {  // a look-up that times out
            std::this_thread::sleep_for(std::chrono::milliseconds(3100));
            return absl::DeadlineExceededError("chat did not answer");
          }
          std::lock_guard<std::mutex> lock(mu_);
          auto it = messages_.find(r.message_id());
          if (it == messages_.end() || r.org_id() != "org")
            return absl::NotFoundError("no such message");
          return it->second;
        },
        2);
    events_ = std::make_unique<EventHub>(*redis_, 1);
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
    hub_->Stop();
    server_->Shutdown();
    server_->Wait();
  }

  void SetMessage(const std::string& id, const std::string& status, const std::string& content = "",
                  int output_tokens = 0, int64_t last_offset = 0,
                  const std::vector<int>& delta_lengths = {}) {
    cpb::ChatMessage m;
    m.set_id(id);
    m.set_status(status);
    m.set_content(content);
    m.set_output_tokens(output_tokens);
    m.set_input_tokens(2);
    m.set_stop_reason(status == "complete" ? "end_turn" : "");
    m.set_model("sim-small");
    m.set_stream_last_offset(last_offset);
    for (int n : delta_lengths) m.add_delta_lengths(n);
    std::lock_guard<std::mutex> lock(mu_);
    messages_[id] = m;
  }

  void Write(const std::string& id, std::vector<StreamEntry> entries) {
    std::promise<absl::Status> done;
    writer_->Append(id, std::move(entries), [&](absl::Status st) { done.set_value(st); });
    ASSERT_TRUE(done.get_future().get().ok());
  }
  static StreamEntry Entry(int64_t offset, StreamEntry::Kind kind, const std::string& text = "") {
    StreamEntry e;
    e.offset = offset;
    e.kind = kind;
    e.text = text;
    e.model = "sim-small";
    e.stop_reason = "end_turn";
    return e;
  }
  // A reply's opening: message_start, content_block_start.
  void Open(const std::string& id) {
    Write(id,
          {Entry(1, StreamEntry::Kind::kMessageStart), Entry(2, StreamEntry::Kind::kBlockStart)});
  }
  void Delta(const std::string& id, int offset, const std::string& text) {
    Write(id, {Entry(offset, StreamEntry::Kind::kDelta, text)});
  }
  // The closing three events from `offset`.
  void Close(const std::string& id, int offset) {
    Write(id, {Entry(offset, StreamEntry::Kind::kBlockStop),
               Entry(offset + 1, StreamEntry::Kind::kMessageDelta),
               Entry(offset + 2, StreamEntry::Kind::kMessageStop)});
  }

  struct Result {
    std::vector<conn::StreamEvent> events;
    grpc::Status status;
  };
  Result Subscribe(const std::string& id, int64_t after, const std::string& org = "org") {
    conn::SubscribeRequest req;
    req.set_org_id(org);
    req.set_user_id("user");
    req.set_conversation_id("conv");
    req.set_message_id(id);
    req.set_after_offset(after);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    auto reader = stub_->Subscribe(&ctx, req);
    Result r;
    conn::StreamEvent e;
    while (reader->Read(&e)) r.events.push_back(e);
    r.status = reader->Finish();
    return r;
  }

  static Infra* infra_;
  std::unique_ptr<BlockingRedis> redis_;
  std::unique_ptr<AsyncRedis> pipeline_;
  std::unique_ptr<RedisTokenStream> writer_;
  std::unique_ptr<SubscriptionHub> hub_;
  std::unique_ptr<EventHub> events_;  // not started: events_test.cc tests it
  std::unique_ptr<ConnectionServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<conn::ConnectionManager::Stub> stub_;
  std::mutex mu_;
  std::map<std::string, cpb::ChatMessage> messages_;
  std::atomic<bool> chat_away_{false};
};

Infra* ConnectionTest::infra_ = nullptr;

std::vector<int64_t> Offsets(const std::vector<conn::StreamEvent>& events) {
  std::vector<int64_t> out;
  for (const auto& e : events) out.push_back(e.offset());
  return out;
}

std::vector<int64_t> Range(int64_t from, int64_t to) {
  std::vector<int64_t> out;
  for (int64_t i = from; i <= to; ++i) out.push_back(i);
  return out;
}

// A retry of a batch Redis took in part (or whole) is not an error: the
// entries it already holds are taken as written, once.
TEST_P(ConnectionTest, AWriterRetryingABatchAlreadyStoredSucceedsAndStoresItOnce) {
  Open("m-retry");
  const std::vector<StreamEntry> batch = {Entry(3, StreamEntry::Kind::kDelta, "a"),
                                          Entry(4, StreamEntry::Kind::kDelta, "b")};
  Write("m-retry", batch);
  Write("m-retry", batch);  // the same batch again, as after a timeout
  Write("m-retry",
        {Entry(4, StreamEntry::Kind::kDelta, "b"), Entry(5, StreamEntry::Kind::kDelta, "c")});
  auto len = redis_->Command({"XLEN", TokenStreamKey("m-retry")});
  ASSERT_TRUE(len.ok());
  EXPECT_EQ(len->integer, 5);
}

// A stored reply longer than a subscription's queue goes whole, in order,
// as the queue makes room.
TEST_P(ConnectionTest, ALongStoredReplyIsServedWholeWhateverTheQueue) {
  std::string content;
  for (int i = 0; i < 600; ++i) content += "ab";
  SetMessage("m-long", "complete", content, 600, 605, std::vector<int>(600, 2));
  auto r = Subscribe("m-long", 0);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_EQ(r.events.size(), 605u);
  std::string text;
  for (size_t i = 0; i < r.events.size(); ++i) {
    EXPECT_EQ(r.events[i].offset(), static_cast<int64_t>(i + 1));
    if (r.events[i].has_delta()) text += r.events[i].delta().text();
  }
  EXPECT_EQ(text, content);
  EXPECT_TRUE(r.events.back().has_message_stop());
}

// A hole in a reply's buffer (an event the writer never stored): nothing
// past it is sent from the buffer; the ended reply's stored message fills
// it, so the reader gets every event once, in order.
TEST_P(ConnectionTest, AHoleInTheBufferIsFilledFromTheStoredMessage) {
  Open("m-gap");
  Delta("m-gap", 3, "a");
  Delta("m-gap", 5, "c");  // 4 ("b") missing
  Close("m-gap", 6);
  SetMessage("m-gap", "complete", "abc", 3, 8, {1, 1, 1});
  auto r = Subscribe("m-gap", 0);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_EQ(r.events.size(), 8u);
  std::string text;
  for (size_t i = 0; i < r.events.size(); ++i) {
    EXPECT_EQ(r.events[i].offset(), static_cast<int64_t>(i + 1));
    if (r.events[i].has_delta()) text += r.events[i].delta().text();
  }
  EXPECT_EQ(text, "abc");
}

TEST_P(ConnectionTest, FollowsALiveReplyToItsEnd) {
  SetMessage("live", "in_progress");
  std::thread producer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the subscriber is waiting
    Open("live");
    for (int i = 3; i <= 7; ++i) {
      Delta("live", i, " w" + std::to_string(i));
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    Close("live", 8);
  });
  auto r = Subscribe("live", 0);
  producer.join();
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(Offsets(r.events), Range(1, 10));
  EXPECT_TRUE(r.events[0].has_message_start());
  EXPECT_EQ(r.events[2].delta().text(), " w3");
  EXPECT_TRUE(r.events.back().has_message_stop());
}

// Resuming after any event's offset yields exactly the events after it.
TEST_P(ConnectionTest, ResumesAfterEveryOffsetWithNoGapAndNoDuplicate) {
  SetMessage("resume", "complete", "", 10);
  Open("resume");
  for (int i = 3; i <= 12; ++i) Delta("resume", i, "t");
  Close("resume", 13);
  for (int64_t after = 0; after < 15; ++after) {
    auto r = Subscribe("resume", after);
    ASSERT_TRUE(r.status.ok()) << after << ": " << r.status.error_message();
    EXPECT_EQ(Offsets(r.events), Range(after + 1, 15)) << "after " << after;
  }
  EXPECT_TRUE(Subscribe("resume", 15).events.empty()) << "after the end nothing remains";
  // The buffer expires some time after its end.
  auto ttl = redis_->Command({"TTL", TokenStreamKey("resume")});
  ASSERT_TRUE(ttl.ok());
  EXPECT_GT(ttl->integer, 0);
  EXPECT_LE(ttl->integer, 60);
}

// A reply quiet for longer than the stall check while chat is away (its
// look-ups take their whole deadline and fail): the reader still gets the
// rest live once it comes. (The checks once followed each other with no
// read in between, and the subscription never read again.)
TEST_P(ConnectionTest, ASlowStallCheckDoesNotStopTheReads) {
  SetMessage("quiet", "in_progress");
  std::thread producer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    Open("quiet");
    chat_away_ = true;  // the subscription began; its stall checks time out from now on
    std::this_thread::sleep_for(std::chrono::milliseconds(4000));  // quiet: a check runs
    for (int i = 3; i <= 5; ++i) Delta("quiet", i, "x");
    std::this_thread::sleep_for(std::chrono::milliseconds(3500));  // and another
    Close("quiet", 6);
  });
  auto r = Subscribe("quiet", 0);
  producer.join();
  chat_away_ = false;
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(Offsets(r.events), Range(1, 8));
}

TEST_P(ConnectionTest, AnErrorEndsTheStream) {
  SetMessage("failing", "in_progress");
  Open("failing");
  StreamEntry err = Entry(3, StreamEntry::Kind::kError);
  err.error_code = static_cast<int>(absl::StatusCode::kUnavailable);
  err.error_message = "no capacity";
  Write("failing", {err});
  auto r = Subscribe("failing", 0);
  ASSERT_TRUE(r.status.ok());
  ASSERT_EQ(r.events.size(), 3u);
  EXPECT_EQ(r.events[2].error().code(), 14);
  EXPECT_EQ(r.events[2].error().message(), "no capacity");
}

TEST_P(ConnectionTest, AnExpiredBufferIsServedFromTheStoredMessage) {
  SetMessage("stored", "complete", "Hello there", 2, /*last_offset=*/7);
  auto r = Subscribe("stored", 0);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(Offsets(r.events), (std::vector<int64_t>{1, 2, 4, 5, 6, 7}));
  EXPECT_EQ(r.events[2].delta().text(), "Hello there");
  EXPECT_TRUE(r.events.back().has_message_stop());
  EXPECT_EQ(Offsets(Subscribe("stored", 5).events), (std::vector<int64_t>{6, 7}));
}

TEST_P(ConnectionTest, SomeoneElsesMessageIsNotFound) {
  SetMessage("private", "complete", "secret", 1, 6);
  auto r = Subscribe("private", 0, "another-org");
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(r.events.empty());
}

// On one Redis all share one poller; on a cluster each shard's replies
// share one (a multi-key XREAD across slots fails with CROSSSLOT), and the
// replies' buffers are on all three masters.
TEST_P(ConnectionTest, ManyStreamsShareTheirShardsPoller) {
  constexpr int kStreams = 40;
  std::set<int> slots;
  for (int s = 0; s < kStreams; ++s) {
    slots.insert(RedisCluster::Slot(TokenStreamKey("many-" + std::to_string(s))));
  }
  EXPECT_GE(slots.size(), 12u) << "40 replies spread over the shards";
  for (int s = 0; s < kStreams; ++s) SetMessage("many-" + std::to_string(s), "in_progress");
  std::vector<Result> results(kStreams);
  std::vector<std::thread> readers;
  for (int s = 0; s < kStreams; ++s) {
    readers.emplace_back([&, s] { results[s] = Subscribe("many-" + std::to_string(s), 0); });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  for (int s = 0; s < kStreams; ++s) Open("many-" + std::to_string(s));
  for (int s = 0; s < kStreams; ++s) Delta("many-" + std::to_string(s), 3, "x");
  for (int s = 0; s < kStreams; ++s) Close("many-" + std::to_string(s), 4);
  for (auto& t : readers) t.join();
  for (int s = 0; s < kStreams; ++s) {
    ASSERT_TRUE(results[s].status.ok()) << s << ": " << results[s].status.error_message();
    EXPECT_EQ(Offsets(results[s].events), Range(1, 6)) << s;
  }
  EXPECT_EQ(hub_->active(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Topologies, ConnectionTest,
                         ::testing::Values(Topology::kSingle, Topology::kCluster),
                         [](const auto& info) {
                           return info.param == Topology::kSingle ? "SingleNode" : "Cluster";
                         });

}  // namespace
}  // namespace sb::connection
