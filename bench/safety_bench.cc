// Output safety's cost per token (issue 11): the safety service's CPU per
// 10k tokens/s and the round trip each token waits for, for the unary
// CheckOutput per token over a 256-byte window (how output was checked
// before the hold-back gate) against one ModerateOutput stream per reply
// (a message per token, and a message per 4 tokens). Then the generation
// pipeline itself (libs/pipeline, its gRPC output gate, a generator fed by
// this program): safety off (a gate that releases at once) against safety
// on, with tokens paced at --token_interval_us and unpaced (a worker ahead
// of safety): the latency each token gets from its arrival to the sink
// (p50/p99), and how many tokens go to safety per message (the pipeline
// reads ahead while a piece is checked; with batching by time, a piece also
// waits up to 5 or 20 ms for more). The service runs in a child
// process, so that its CPU (from /proc) is its own; the clients are threads
// here, one reply at a time each.
//
//   ninja -C build safety_bench && build/bench/safety_bench --replies=200
#include <grpcpp/grpcpp.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "core/clock.h"
#include "pipeline/grpc_backends.h"
#include "safety/policy_store.h"
#include "safety/safety_grpc.h"
#include "testing/fake_pipeline.h"

ABSL_FLAG(int, replies, 200, "replies per client and mode");
ABSL_FLAG(int, clients, 4, "replies moderated at once");
ABSL_FLAG(int, token_interval_us, 1000,
          "pipeline modes: the time between a reply's tokens when paced (1000: 1,000 a second)");

namespace {

namespace spb = switchboard::safety::v1;
using Clock = std::chrono::steady_clock;

// A reply of ~400 bytes in ~4-byte tokens, with numbers and words that
// make the gate hold text back now and then.
std::vector<std::string> ReplyTokens() {
  const std::string text =
      "Your order 10442 ships on 2026-11-30 from our warehouse in Leeds; the courier will call "
      "ahead. If the parcel is late, reply to this note with the order number and we will look "
      "into it the same day. Returns are free within 30 days, and refunds reach the card you "
      "paid with within five working days. Thank you for shopping with us, and have a good week.";
  std::vector<std::string> tokens;
  for (size_t at = 0; at < text.size(); at += 4) tokens.push_back(text.substr(at, 4));
  return tokens;
}

double CpuSeconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(in, line);
  std::istringstream fields(line.substr(line.rfind(')') + 2));
  std::string skip;
  for (int i = 3; i < 14; ++i) fields >> skip;  // state .. cmajflt
  long utime = 0, stime = 0;
  fields >> utime >> stime;
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

struct Result {
  const char* mode;
  size_t tokens = 0;
  double cpu = 0, wall = 0;
  std::vector<double> rtt_us;  // one per message
};

// One reply's tokens through `mode`; round trips appended to `rtt_us`.
void Moderate(spb::Safety::Stub& stub, const std::vector<std::string>& tokens, int mode,
              std::vector<double>& rtt_us) {
  if (mode == 0) {  // unary, the last 256 bytes of the reply each token
    std::string reply;
    for (const std::string& t : tokens) {
      reply += t;
      spb::CheckRequest req;
      req.set_org_id("bench");
      req.set_text(reply.size() > 256 ? reply.substr(reply.size() - 256) : reply);
      spb::CheckResponse resp;
      grpc::ClientContext ctx;
      const auto start = Clock::now();
      if (!stub.CheckOutput(&ctx, req, &resp).ok()) std::abort();
      rtt_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
    }
    return;
  }
  const size_t per_message = mode == 1 ? 1 : 4;
  grpc::ClientContext ctx;
  auto stream = stub.ModerateOutput(&ctx);
  spb::ModerateOutputRequest first;
  first.mutable_start()->set_org_id("bench");
  first.mutable_start()->set_request_id("req_bench");
  bool started = false;
  for (size_t at = 0; at < tokens.size(); at += per_message) {
    spb::ModerateOutputRequest m;
    if (!started) m = first;
    started = true;
    for (size_t k = at; k < std::min(tokens.size(), at + per_message); ++k) {
      m.mutable_text()->append(tokens[k]);
    }
    m.set_end(at + per_message >= tokens.size());
    const auto start = Clock::now();
    spb::ModerateOutputResponse resp;
    if (!stream->Write(m) || !stream->Read(&resp)) std::abort();
    rtt_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
  }
  stream->WritesDone();
  spb::ModerateOutputResponse rest;
  while (stream->Read(&rest)) {
  }
  (void)stream->Finish();
}

// Output safety off: everything released at once.
class OpenGates final : public sb::pipeline::OutputGates {
  class Gate final : public sb::pipeline::OutputGate {
    void Push(std::string piece, Done done) override { done(Released{.text = std::move(piece)}); }
    void Flush(Done done) override { done(Released{}); }
  };

 public:
  std::unique_ptr<sb::pipeline::OutputGate> Open(const sb::pipeline::CheckContext&) override {
    return std::make_unique<Gate>();
  }
};

// Counts the pieces a gate is handed.
class CountingGates final : public sb::pipeline::OutputGates {
  class Gate final : public sb::pipeline::OutputGate {
   public:
    Gate(std::unique_ptr<sb::pipeline::OutputGate> inner, std::atomic<size_t>& pushes)
        : inner_(std::move(inner)), pushes_(pushes) {}
    void Push(std::string piece, Done done) override {
      pushes_.fetch_add(1);
      inner_->Push(std::move(piece), std::move(done));
    }
    void Flush(Done done) override { inner_->Flush(std::move(done)); }

   private:
    std::unique_ptr<sb::pipeline::OutputGate> inner_;
    std::atomic<size_t>& pushes_;
  };

 public:
  explicit CountingGates(sb::pipeline::OutputGates& inner) : inner_(inner) {}
  std::unique_ptr<sb::pipeline::OutputGate> Open(const sb::pipeline::CheckContext& c) override {
    return std::make_unique<Gate>(inner_.Open(c), pushes);
  }
  std::atomic<size_t> pushes{0};

 private:
  sb::pipeline::OutputGates& inner_;
};

// Notes when each token's last byte reaches it, and the end.
class LatencySink final : public sb::pipeline::Sink {
 public:
  LatencySink(std::vector<Clock::time_point>& arrived, std::vector<size_t>& ends,
              std::vector<double>& latency_us)
      : arrived_(arrived), ends_(ends), latency_us_(latency_us) {}
  void OnStart(const sb::pipeline::StartInfo&, Ready ready) override { ready(true); }
  void OnText(std::string text, Ready ready) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      released_ += text.size();
      const auto now = Clock::now();
      for (; next_ < ends_.size() && ends_[next_] <= released_; ++next_) {
        latency_us_.push_back(
            std::chrono::duration<double, std::micro>(now - arrived_[next_]).count());
      }
    }
    ready(true);  // may come straight back here
  }
  void OnFinish(const sb::pipeline::FinishInfo&) override { End(); }
  void OnError(const absl::Status& status) override {
    std::fprintf(stderr, "generation failed: %s\n", status.ToString().c_str());
    std::abort();
  }
  void Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return done_; });
  }

 private:
  void End() {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
    cv_.notify_all();
  }
  std::vector<Clock::time_point>& arrived_;
  const std::vector<size_t>& ends_;
  std::vector<double>& latency_us_;
  std::mutex mu_;
  std::condition_variable cv_;
  size_t released_ = 0, next_ = 0;
  bool done_ = false;
};

// One reply through `pipeline`, its tokens fed from this thread every
// `interval` (zero: as fast as the pipeline takes them).
void Generate(sb::pipeline::Pipeline& pipeline, sb::testing::FakeGenerator& generator,
              const std::vector<std::string>& tokens, std::chrono::microseconds interval,
              std::vector<double>& latency_us) {
  std::vector<size_t> ends;
  size_t bytes = 0;
  for (const auto& t : tokens) ends.push_back(bytes += t.size());
  std::vector<Clock::time_point> arrived(tokens.size());
  auto sink = std::make_shared<LatencySink>(arrived, ends, latency_us);
  auto request = std::make_shared<sb::pipeline::Request>();
  request->set_request_id("req_bench");
  request->set_org_id("bench");
  pipeline.Run(request, sink, {.check_input = false});
  auto call = generator.last();
  auto emit = [&](sb::pipeline::Event e) {
    while (!call->Emit(e)) std::this_thread::sleep_for(std::chrono::microseconds(20));
  };
  emit(sb::testing::Started("bench", 1));
  auto at = Clock::now();
  for (size_t i = 0; i < tokens.size(); ++i) {
    // Paced: the token exists from its time on, taken or not.
    if (interval.count() > 0) std::this_thread::sleep_until(at += interval);
    arrived[i] = interval.count() > 0 ? at : Clock::now();
    emit(sb::testing::Token(tokens[i]));
  }
  emit(sb::testing::Finished("end_turn", 1, static_cast<int>(tokens.size())));
  while (!call->End(absl::OkStatus())) std::this_thread::sleep_for(std::chrono::microseconds(20));
  sink->Wait();
}

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  int ports[2];
  if (pipe(ports) != 0) return 1;
  const pid_t child = fork();
  if (child == 0) {  // the safety service, until the parent goes
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    sb::safety::PolicyStore policies(nullptr);
    sb::safety::SafetyServiceImpl service(policies);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service);
    auto server = builder.BuildAndStart();
    if (write(ports[1], &port, sizeof port) != sizeof port) return 1;
    server->Wait();
    return 0;
  }
  int port = 0;
  if (read(ports[0], &port, sizeof port) != sizeof port) return 1;
  auto channel =
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials());
  auto stub = spb::Safety::NewStub(channel);
  const auto tokens = ReplyTokens();
  const int replies = absl::GetFlag(FLAGS_replies), clients = absl::GetFlag(FLAGS_clients);
  // A warm-up reply per mode (connections, allocators).
  std::vector<double> ignored;
  for (int mode = 0; mode < 3; ++mode) Moderate(*stub, tokens, mode, ignored);

  std::vector<Result> results;
  for (int mode = 0; mode < 3; ++mode) {
    Result r{mode == 0   ? "unary CheckOutput per token (256-byte window)"
             : mode == 1 ? "ModerateOutput stream, a message per token"
                         : "ModerateOutput stream, a message per 4 tokens"};
    std::vector<std::vector<double>> rtts(clients);
    const double cpu0 = CpuSeconds(child);
    const auto start = Clock::now();
    std::vector<std::thread> threads;
    for (int c = 0; c < clients; ++c) {
      threads.emplace_back([&, c] {
        for (int i = 0; i < replies; ++i) Moderate(*stub, tokens, mode, rtts[c]);
      });
    }
    for (auto& t : threads) t.join();
    r.wall = std::chrono::duration<double>(Clock::now() - start).count();
    r.cpu = CpuSeconds(child) - cpu0;
    r.tokens = tokens.size() * static_cast<size_t>(replies) * static_cast<size_t>(clients);
    for (auto& v : rtts) r.rtt_us.insert(r.rtt_us.end(), v.begin(), v.end());
    results.push_back(std::move(r));
  }
  // The pipeline: safety off, then on, paced and unpaced.
  struct PipelineResult {
    std::string mode;
    size_t tokens = 0, pieces = 0;
    double cpu = 0, wall = 0;
    std::vector<double> latency_us;
  };
  std::vector<PipelineResult> pipeline_results;
  sb::pipeline::StreamingOutputGates streaming(*stub, std::chrono::seconds(5));
  const auto paced = std::chrono::microseconds(absl::GetFlag(FLAGS_token_interval_us));
  const int paced_replies = std::max(1, replies / 4);  // paced replies take tokens x interval
  struct PipelineMode {
    std::string name;
    bool safety;
    std::chrono::microseconds interval;
    int replies;
    absl::Duration batch = absl::ZeroDuration();  // OutputBatching::wait
  };
  sb::TimerThread batch_timers;
  const std::string pace = std::to_string(paced.count()) + " us apart";
  for (const PipelineMode& m :
       {PipelineMode{"pipeline, safety off, tokens " + pace, false, paced, paced_replies},
        PipelineMode{"pipeline, safety on, tokens " + pace, true, paced, paced_replies},
        PipelineMode{"pipeline, safety on, batches of up to 5 ms, tokens " + pace, true, paced,
                     paced_replies, absl::Milliseconds(5)},
        PipelineMode{"pipeline, safety on, batches of up to 20 ms, tokens " + pace, true, paced,
                     paced_replies, absl::Milliseconds(20)},
        PipelineMode{"pipeline, safety off, tokens as fast as taken", false, {}, replies},
        PipelineMode{"pipeline, safety on, tokens as fast as taken", true, {}, replies}}) {
    PipelineResult r{m.name};
    OpenGates open;
    CountingGates counted(streaming);
    sb::pipeline::OutputGates& gates =
        m.safety ? static_cast<sb::pipeline::OutputGates&>(counted) : open;
    std::vector<std::vector<double>> latencies(clients);
    const double cpu0 = CpuSeconds(child);
    const auto start = Clock::now();
    std::vector<std::thread> threads;
    for (int c = 0; c < clients; ++c) {
      threads.emplace_back([&, c] {
        sb::testing::FakeInputGuard input;
        sb::testing::FakeGenerator generator;
        sb::pipeline::Pipeline pipeline("bench", input, generator, gates, sb::RealClock());
        pipeline.set_output_batching({.timers = &batch_timers, .wait = m.batch});
        for (int i = 0; i < m.replies; ++i) {
          Generate(pipeline, generator, tokens, m.interval, latencies[c]);
        }
      });
    }
    for (auto& t : threads) t.join();
    r.wall = std::chrono::duration<double>(Clock::now() - start).count();
    r.cpu = CpuSeconds(child) - cpu0;
    r.tokens = tokens.size() * static_cast<size_t>(m.replies) * static_cast<size_t>(clients);
    r.pieces = m.safety ? counted.pushes.load() : r.tokens;
    for (auto& v : latencies) r.latency_us.insert(r.latency_us.end(), v.begin(), v.end());
    pipeline_results.push_back(std::move(r));
  }

  std::printf("%d clients x %d replies x %zu tokens (%zu bytes a token)\n", clients, replies,
              tokens.size(), tokens[0].size());
  std::printf("| mode | tokens/s | safety CPU s per 10k tokens | round trip p50 / p99 (us) |\n");
  std::printf("|---|---:|---:|---:|\n");
  for (const Result& r : results) {
    std::printf("| %s | %.0f | %.3f | %.0f / %.0f |\n", r.mode,
                static_cast<double>(r.tokens) / r.wall,
                r.cpu / static_cast<double>(r.tokens) * 10000.0, Percentile(r.rtt_us, 0.5),
                Percentile(r.rtt_us, 0.99));
  }
  std::printf(
      "\n| pipeline mode | tokens/s | safety CPU s per 10k tokens | tokens per message to "
      "safety | token arrival -> sink p50 / p99 (us) |\n");
  std::printf("|---|---:|---:|---:|---:|\n");
  for (const PipelineResult& r : pipeline_results) {
    std::printf("| %s | %.0f | %.3f | %.2f | %.0f / %.0f |\n", r.mode.c_str(),
                static_cast<double>(r.tokens) / r.wall,
                r.cpu / static_cast<double>(r.tokens) * 10000.0,
                static_cast<double>(r.tokens) / static_cast<double>(std::max<size_t>(1, r.pieces)),
                Percentile(r.latency_us, 0.5), Percentile(r.latency_us, 0.99));
  }
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  return 0;
}
