// The worker's stream and its metering, on a real gRPC server (plaintext)
// around the simulated engine: a usage sink stands in for Kafka, so the test
// decides when each report counts as stored.
#include "inference-worker/worker_grpc.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "inference-worker/sim_engine.h"

namespace sb::worker {
namespace {

namespace inf = switchboard::inference::v1;
using switchboard::billing::v1::UsageEvent;
using namespace std::chrono_literals;

// Stores running reports at once; holds the final report's acknowledgement
// until Release().
class HeldKafka {
 public:
  void Report(const UsageEvent& e, UsageStored stored) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!e.final()) {
      if (stored) stored(absl::OkStatus());
      return;
    }
    finals_.push_back(e);
    held_.push_back(std::move(stored));
    cv_.notify_all();
  }
  bool WaitForFinal(std::chrono::milliseconds limit) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, limit, [&] { return !finals_.empty(); });
  }
  void Release(const absl::Status& st) {
    std::vector<UsageStored> held;
    {
      std::lock_guard<std::mutex> lock(mu_);
      held.swap(held_);
    }
    for (auto& s : held) {
      if (s) s(st);
    }
  }
  UsageEvent final_report() {
    std::lock_guard<std::mutex> lock(mu_);
    return finals_.empty() ? UsageEvent() : finals_.front();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<UsageEvent> finals_;
  std::vector<UsageStored> held_;
};

// What a client read from one Generate stream, read on its own thread.
class StreamReader {
 public:
  StreamReader(inf::InferenceWorker::Stub& stub, const inf::GenerateRequest& req) {
    ctx_.set_deadline(std::chrono::system_clock::now() + 30s);
    reader_ = stub.Generate(&ctx_, req);
    thread_ = std::thread([this] {
      inf::GenerateEvent e;
      while (reader_->Read(&e)) {
        std::lock_guard<std::mutex> lock(mu_);
        events_.push_back(e);
        cv_.notify_all();
      }
      grpc::Status st = reader_->Finish();
      std::lock_guard<std::mutex> lock(mu_);
      status_ = st;
      done_ = true;
      cv_.notify_all();
    });
  }
  ~StreamReader() { thread_.join(); }

  int tokens() {
    std::lock_guard<std::mutex> lock(mu_);
    int n = 0;
    for (const auto& e : events_) n += e.has_token();
    return n;
  }
  bool finished() {
    std::lock_guard<std::mutex> lock(mu_);
    return !events_.empty() && events_.back().has_finished();
  }
  bool WaitFinished(std::chrono::milliseconds limit) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, limit, [&] { return done_; }) && status_.ok() && !events_.empty() &&
           events_.back().has_finished();
  }
  inf::Finished last() {
    std::lock_guard<std::mutex> lock(mu_);
    return events_.back().finished();
  }

 private:
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReader<inf::GenerateEvent>> reader_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<inf::GenerateEvent> events_;
  grpc::Status status_;
  bool done_ = false;
};

class WorkerStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    service_ = std::make_unique<WorkerServiceImpl>(
        engine_, "w-test",
        [this](const UsageEvent& e, UsageStored stored) { kafka_.Report(e, std::move(stored)); });
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    stub_ = inf::InferenceWorker::NewStub(grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                                              grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    kafka_.Release(absl::OkStatus());
    server_->Shutdown(std::chrono::system_clock::now() + 1s);
  }

  static inf::GenerateRequest Request(const std::string& id) {
    inf::GenerateRequest r;
    r.set_request_id(id);
    r.set_org_id("acme");
    r.set_model("sim-small");
    r.set_max_tokens(5);
    auto* m = r.add_messages();
    m->set_role("user");
    auto* b = m->add_content();
    b->set_type("text");
    b->set_text("hello there");
    return r;
  }

  SimulatedEngine engine_{{}, true};
  HeldKafka kafka_;
  std::unique_ptr<WorkerServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<inf::InferenceWorker::Stub> stub_;
};

TEST_F(WorkerStreamTest, TheEndWaitsUntilKafkaHasStoredTheFinalReport) {
  StreamReader stream(*stub_, Request("req-settle"));
  ASSERT_TRUE(kafka_.WaitForFinal(10s)) << "the engine finished and the final report went out";
  // Every token is out, the end is not: were the worker killed now, the
  // client would not have been told its request was answered.
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(stream.tokens(), 5);
  EXPECT_FALSE(stream.finished());
  kafka_.Release(absl::OkStatus());
  ASSERT_TRUE(stream.WaitFinished(10s));
  EXPECT_EQ(stream.last().output_tokens(), 5);
  EXPECT_EQ(kafka_.final_report().output_tokens(), 5);
  EXPECT_TRUE(kafka_.final_report().final());
}

TEST_F(WorkerStreamTest, AFinalReportKafkaRefusesForGoodStillEndsTheReply) {
  StreamReader stream(*stub_, Request("req-refused"));
  ASSERT_TRUE(kafka_.WaitForFinal(10s));
  kafka_.Release(absl::InvalidArgumentError("message too large"));
  ASSERT_TRUE(stream.WaitFinished(10s)) << "logged and counted unmetered, never hung";
}

}  // namespace
}  // namespace sb::worker
