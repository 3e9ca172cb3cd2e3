// Output moderation over one stream: the pipeline's StreamingOutputGates
// against the safety service's ModerateOutput, in process.
#include <grpcpp/grpcpp.h>

#include <future>
#include <memory>
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

absl::StatusOr<std::string> Push(pipeline::OutputGate& gate, std::string piece) {
  std::promise<absl::StatusOr<std::string>> done;
  gate.Push(std::move(piece), [&](absl::StatusOr<std::string> r) { done.set_value(std::move(r)); });
  return done.get_future().get();
}

absl::StatusOr<std::string> Flush(pipeline::OutputGate& gate) {
  std::promise<absl::StatusOr<std::string>> done;
  gate.Flush([&](absl::StatusOr<std::string> r) { done.set_value(std::move(r)); });
  return done.get_future().get();
}

const pipeline::CheckContext kCheck{.request_id = "req_1", .org_id = "acme"};

TEST(ModerateOutputTest, ClearTextComesBackWholeInOrder) {
  SafetyServiceImpl service;
  Server server(&service);
  pipeline::StreamingOutputGates gates(server.stub(), milliseconds(2000));
  auto gate = gates.Open(kCheck);
  std::string released;
  for (const char* piece : {"The answer", " is 42", ", as the", " book says."}) {
    auto r = Push(*gate, piece);
    ASSERT_TRUE(r.ok()) << r.status();
    released += *r;
  }
  auto rest = Flush(*gate);
  ASSERT_TRUE(rest.ok()) << rest.status();
  EXPECT_EQ(released + *rest, "The answer is 42, as the book says.");
  EXPECT_NE(released, "The answer is 42, as the book says.") << "the last word waits for more";
}

// An address streamed in pieces: no piece of it is released, what came
// before is, and the piece that completes it ends the reply as refused.
TEST(ModerateOutputTest, NoPieceOfAnAddressSplitAcrossTokensIsReleased) {
  SafetyServiceImpl service;
  Server server(&service);
  pipeline::StreamingOutputGates gates(server.stub(), milliseconds(2000));
  auto gate = gates.Open(kCheck);
  std::string released;
  absl::Status end;
  for (const char* piece : {"Write to ", "jane", ".doe", "@", "example", ".com", " today"}) {
    auto r = Push(*gate, piece);
    if (!r.ok()) {
      end = r.status();
      break;
    }
    released += *r;
  }
  EXPECT_EQ(released, "Write to ");
  EXPECT_EQ(end.code(), absl::StatusCode::kInvalidArgument) << end;
  EXPECT_NE(end.message().find("e-mail address"), std::string::npos) << end;
}

// Fail closed: safety gone mid-reply ends it with no verdict, not a pass.
TEST(ModerateOutputTest, SafetyGoneMidStreamEndsTheReply) {
  SafetyServiceImpl service;
  auto server = std::make_unique<Server>(&service);
  pipeline::StreamingOutputGates gates(server->stub(), milliseconds(2000));
  auto gate = gates.Open(kCheck);
  ASSERT_TRUE(Push(*gate, "Hello there ").ok());
  server->Stop();
  auto r = Push(*gate, "and more");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  auto rest = Flush(*gate);
  EXPECT_EQ(rest.status().code(), absl::StatusCode::kUnavailable) << rest.status();
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
  Server server(&service);
  pipeline::StreamingOutputGates gates(server.stub(), milliseconds(200));
  auto gate = gates.Open(kCheck);
  auto r = Push(*gate, "Hello");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
}

}  // namespace
}  // namespace sb::safety
