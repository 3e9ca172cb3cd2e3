// Subscribe end to end within the service: a real Redis (started for the
// suite), the hub, and the gRPC service on loopback. The message lookup (a
// call to chat in production) is a table here: chat is not under test.
#include <map>
#include <mutex>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "connection-manager/connection_grpc.h"
#include "gtest/gtest.h"
#include "storage/token_stream.h"
#include "support/infra.h"

namespace sb::connection {
namespace {

namespace conn = switchboard::connection::v1;
namespace cpb = switchboard::chat::v1;
using sb::testing::Infra;

class ConnectionTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto infra = Infra::Start({.postgres = false, .redis = true, .kafka = false});
    ASSERT_TRUE(infra.ok()) << infra.status();
    infra_ = std::move(*infra).release();
  }
  static void TearDownTestSuite() {
    delete infra_;
    infra_ = nullptr;
  }

  void SetUp() override {
    redis_ = std::make_unique<RedisClient>(RedisOptions{.host = "127.0.0.1", .port = infra_->redis_port(), .pool_size = 4});
    writer_ = std::make_unique<TokenStreamWriter>(*redis_, std::chrono::seconds(60));
    hub_ = std::make_unique<SubscriptionHub>(
        *redis_,
        [this](const conn::SubscribeRequest& r) -> absl::StatusOr<cpb::ChatMessage> {
          std::lock_guard<std::mutex> lock(mu_);
          auto it = messages_.find(r.message_id());
          if (it == messages_.end() || r.org_id() != "org") return absl::NotFoundError("no such message");
          return it->second;
        },
        2);
    hub_->Start();
    service_ = std::make_unique<ConnectionServiceImpl>(*hub_);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(port, 0);
    stub_ = conn::ConnectionManager::NewStub(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  }

  void TearDown() override {
    hub_->Stop();
    server_->Shutdown();
    server_->Wait();
  }

  void SetMessage(const std::string& id, const std::string& status, const std::string& content = "",
                  int output_tokens = 0) {
    cpb::ChatMessage m;
    m.set_id(id);
    m.set_status(status);
    m.set_content(content);
    m.set_output_tokens(output_tokens);
    m.set_input_tokens(2);
    m.set_stop_reason(status == "complete" ? "end_turn" : "");
    m.set_model("sim-small");
    std::lock_guard<std::mutex> lock(mu_);
    messages_[id] = m;
  }

  void Append(const std::string& id, int offset, const std::string& text) {
    StreamEntry e;
    e.offset = offset;
    e.text = text;
    ASSERT_TRUE(writer_->Append(id, e).ok());
  }
  void End(const std::string& id, int offset) {
    StreamEntry e;
    e.offset = offset;
    e.kind = StreamEntry::Kind::kEnd;
    e.stop_reason = "end_turn";
    e.input_tokens = 2;
    e.output_tokens = offset - 1;
    e.model = "sim-small";
    ASSERT_TRUE(writer_->Append(id, e).ok());
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
  std::unique_ptr<RedisClient> redis_;
  std::unique_ptr<TokenStreamWriter> writer_;
  std::unique_ptr<SubscriptionHub> hub_;
  std::unique_ptr<ConnectionServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<conn::ConnectionManager::Stub> stub_;
  std::mutex mu_;
  std::map<std::string, cpb::ChatMessage> messages_;
};

Infra* ConnectionTest::infra_ = nullptr;

std::vector<int64_t> Offsets(const std::vector<conn::StreamEvent>& events) {
  std::vector<int64_t> out;
  for (const auto& e : events) out.push_back(e.offset());
  return out;
}

TEST_F(ConnectionTest, FollowsALiveReplyToItsEnd) {
  SetMessage("live", "in_progress");
  std::thread producer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the subscriber is waiting
    for (int i = 1; i <= 5; ++i) {
      Append("live", i, " w" + std::to_string(i));
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    End("live", 6);
  });
  auto r = Subscribe("live", 0);
  producer.join();
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(Offsets(r.events), (std::vector<int64_t>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(r.events[2].delta().text(), " w3");
  ASSERT_TRUE(r.events.back().has_end());
  EXPECT_EQ(r.events.back().end().output_tokens(), 5);
}

TEST_F(ConnectionTest, ResumesAfterTheOffsetWithNoGapAndNoDuplicate) {
  SetMessage("resume", "complete", "", 10);
  for (int i = 1; i <= 10; ++i) Append("resume", i, "t");
  End("resume", 11);
  auto r = Subscribe("resume", 4);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(Offsets(r.events), (std::vector<int64_t>{5, 6, 7, 8, 9, 10, 11}));
}

TEST_F(ConnectionTest, AfterTheEndNothingRemains) {
  SetMessage("seen", "complete", "", 2);
  Append("seen", 1, "a");
  Append("seen", 2, "b");
  End("seen", 3);
  auto r = Subscribe("seen", 3);
  EXPECT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_TRUE(r.events.empty());
}

TEST_F(ConnectionTest, AnExpiredBufferIsServedFromTheStoredMessage) {
  SetMessage("stored", "complete", "Hello there", 2);
  auto r = Subscribe("stored", 0);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_EQ(r.events.size(), 2u);
  EXPECT_EQ(r.events[0].delta().text(), "Hello there");
  EXPECT_TRUE(r.events[1].has_end());
  EXPECT_EQ(r.events[1].offset(), 3);
}

TEST_F(ConnectionTest, SomeoneElsesMessageIsNotFound) {
  SetMessage("private", "complete", "secret", 1);
  auto r = Subscribe("private", 0, "another-org");
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(r.events.empty());
}

TEST_F(ConnectionTest, ManyStreamsShareOnePoller) {
  constexpr int kStreams = 40;
  for (int s = 0; s < kStreams; ++s) SetMessage("many-" + std::to_string(s), "in_progress");
  std::vector<Result> results(kStreams);
  std::vector<std::thread> readers;
  for (int s = 0; s < kStreams; ++s) {
    readers.emplace_back([&, s] { results[s] = Subscribe("many-" + std::to_string(s), 0); });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  for (int i = 1; i <= 3; ++i) {
    for (int s = 0; s < kStreams; ++s) Append("many-" + std::to_string(s), i, "x");
  }
  for (int s = 0; s < kStreams; ++s) End("many-" + std::to_string(s), 4);
  for (auto& t : readers) t.join();
  for (int s = 0; s < kStreams; ++s) {
    ASSERT_TRUE(results[s].status.ok()) << s << ": " << results[s].status.error_message();
    EXPECT_EQ(Offsets(results[s].events), (std::vector<int64_t>{1, 2, 3, 4})) << s;
  }
  EXPECT_EQ(hub_->active(), 0u);
}

}  // namespace
}  // namespace sb::connection
