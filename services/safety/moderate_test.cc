// Output moderation over one stream: the pipeline's StreamingOutputGates
// against the safety service's ModerateOutput, in process.
#include <grpcpp/grpcpp.h>

#include <future>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "pipeline/grpc_backends.h"
#include "safety/safety_grpc.h"

namespace sb::safety {
namespace {

namespace spb = switchboard::safety::v1;
using std::chrono::milliseconds;

class Server {
 public:
  explicit Server(grpc::Service* service) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(service);
    server_ = builder.BuildAndStart();
    stub_ = spb::Safety::NewStub(grpc::CreateChannel("127.0.0.1:" + std::to_string(port_),
                                                     grpc::InsecureChannelCredentials()));
  }
  ~Server() { Stop(); }
  void Stop() {
    if (server_) server_->Shutdown(std::chrono::system_clock::now());
    server_.reset();
  }
  spb::Safety::Stub& stub() { return *stub_; }

 private:
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<spb::Safety::Stub> stub_;
};

using Released = absl::StatusOr<pipeline::OutputGate::Released>;

Released Push(pipeline::OutputGate& gate, std::string piece) {
  std::promise<Released> done;
  gate.Push(std::move(piece), [&](Released r) { done.set_value(std::move(r)); });
  return done.get_future().get();
}

Released Flush(pipeline::OutputGate& gate) {
  std::promise<Released> done;
  gate.Flush([&](Released r) { done.set_value(std::move(r)); });
  return done.get_future().get();
}

// A gate of StreamingOutputGates over an in-process safety service.
struct Moderated {
  explicit Moderated(grpc::Service* service, milliseconds deadline = milliseconds(2000),
                     int64_t pin = 0)
      : server(service),
        gates(server.stub(), deadline),
        gate(
            gates.Open({.request_id = "req_1", .org_id = "acme", .platform_policy_version = pin})) {
  }
  Server server;
  pipeline::StreamingOutputGates gates;
  std::unique_ptr<pipeline::OutputGate> gate;
};

TEST(ModerateOutputTest, ClearTextComesBackWholeInOrder) {
  PolicyStore policies(nullptr);  // the default policy
  SafetyServiceImpl service(policies);
  Moderated m(&service);
  std::string released;
  for (const char* piece : {"The answer", " is 42", ", as the", " book says."}) {
    auto r = Push(*m.gate, piece);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_FALSE(r->refusal);
    released += r->text;
  }
  auto rest = Flush(*m.gate);
  ASSERT_TRUE(rest.ok()) << rest.status();
  EXPECT_EQ(released + rest->text, "The answer is 42, as the book says.");
  EXPECT_NE(released, "The answer is 42, as the book says.") << "the last word waits for more";
}

// An address streamed in pieces: no piece of it is released, what came
// before is, and the piece that completes it ends the reply as refused.
TEST(ModerateOutputTest, NoPieceOfAnAddressSplitAcrossTokensIsReleased) {
  PolicyStore policies(nullptr);  // the default policy
  SafetyServiceImpl service(policies);
  Moderated m(&service);
  std::string released;
  std::optional<pipeline::Refusal> refusal;
  for (const char* piece : {"Write to ", "jane", ".doe", "@", "example", ".com", " today"}) {
    auto r = Push(*m.gate, piece);
    ASSERT_TRUE(r.ok()) << r.status();
    released += r->text;
    if ((refusal = r->refusal)) break;
  }
  EXPECT_EQ(released, "Write to ");
  ASSERT_TRUE(refusal);
  EXPECT_EQ(refusal->category, "pii.email");
  EXPECT_NE(refusal->explanation.find("e-mail address"), std::string::npos);
}

// Text before a match in the same piece still goes out with the refusal.
TEST(ModerateOutputTest, TextBeforeAMatchInTheSamePieceIsReleased) {
  PolicyStore policies(nullptr);  // the default policy
  SafetyServiceImpl service(policies);
  Moderated m(&service);
  auto r = Push(*m.gate, "Hi, mail bob@corp.io now");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->text, "Hi, mail ");
  ASSERT_TRUE(r->refusal);
}

// Fail closed: safety gone mid-reply ends it with no verdict, not a pass.
TEST(ModerateOutputTest, SafetyGoneMidStreamEndsTheReply) {
  PolicyStore policies(nullptr);  // the default policy
  SafetyServiceImpl service(policies);
  Moderated m(&service);
  ASSERT_TRUE(Push(*m.gate, "Hello there ").ok());
  m.server.Stop();
  auto r = Push(*m.gate, "and more");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  auto rest = Flush(*m.gate);
  EXPECT_EQ(rest.status().code(), absl::StatusCode::kUnavailable) << rest.status();
}

// A reply pinned to a platform policy version this replica does not have
// gets no verdict: the gate fails closed, nothing is released.
TEST(ModerateOutputTest, APinnedPolicyVersionNotLoadedEndsTheReply) {
  PolicyStore policies(nullptr);  // no platform versions at all
  SafetyServiceImpl service(policies);
  Moderated m(&service, milliseconds(2000), /*pin=*/3);
  auto r = Push(*m.gate, "Hello there ");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  Moderated unpinned(&service);
  EXPECT_TRUE(Push(*unpinned.gate, "Hello there ").ok());
}

// A safety service that takes the stream and never answers.
class SilentSafety final : public spb::Safety::CallbackService {
 public:
  class Reactor final
      : public grpc::ServerBidiReactor<spb::ModerateOutputRequest, spb::ModerateOutputResponse> {
   public:
    Reactor() { StartRead(&request_); }
    void OnReadDone(bool ok) override {
      if (!ok) Finish(grpc::Status::OK);  // and otherwise: silence
    }
    void OnCancel() override { Finish(grpc::Status::CANCELLED); }
    void OnDone() override { delete this; }

   private:
    spb::ModerateOutputRequest request_;
  };
  grpc::ServerBidiReactor<spb::ModerateOutputRequest, spb::ModerateOutputResponse>* ModerateOutput(
      grpc::CallbackServerContext*) override {
    return new Reactor();
  }
};

TEST(ModerateOutputTest, AnAnswerPastTheDeadlineEndsTheReply) {
  SilentSafety service;
  Moderated m(&service, milliseconds(200));
  auto r = Push(*m.gate, "Hello");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
}

}  // namespace
}  // namespace sb::safety
