// gateway_load: a load generator for the gateway's front door, and for one
// inference worker directly, so that the two can be subtracted.
//
//   gateway_load --mode=rps --concurrency=10 --duration_s=10 --api_key=$KEY
//   gateway_load --mode=ttft --concurrency=20 --requests=2000 --api_key=$KEY
//   gateway_load --mode=ttft_direct --worker=127.0.0.1:50055 --concurrency=20 --requests=2000
//   gateway_load --mode=streams --streams=5000 --open_rate=400 --hold_s=5 --api_key=$KEY
//   gateway_load --mode=chat_turns --turns=5000 --concurrency=50 --api_key=$KEY
//
// Each run prints one line of JSON on stdout; diagnostics go to stderr.
// bench/front_door.sh starts throwaway clusters and drives this.
//
// The HTTP side is a hand-rolled HTTP/1.1 keep-alive client on Asio
// coroutines: every simulated client is a coroutine, not a thread, so the
// many-streams mode holds thousands of connections on a couple of threads.
// Requests are serialized once up front so that the generator spends as
// little of the (shared) CPU as possible on its own side.
// The direct-worker mode uses the gRPC sync API on a few threads: it is never
// asked for more than a few dozen concurrent calls.

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <google/protobuf/unknown_field_set.h>
#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "switchboard/inference/v1/inference.grpc.pb.h"

ABSL_FLAG(std::string, mode, "rps", "rps | ttft | ttft_direct | streams | chat_turns");
ABSL_FLAG(std::string, host, "127.0.0.1", "Gateway HTTP address (an IP address)");
ABSL_FLAG(int, port, 8080, "Gateway HTTP port");
ABSL_FLAG(std::string, api_key, "", "API key sent as x-api-key (default: $SWITCHBOARD_API_KEY)");
ABSL_FLAG(std::string, model, "sim-small", "Model to ask for");
ABSL_FLAG(std::string, content, "hi", "User message text");
ABSL_FLAG(int, concurrency, 1, "Parallel clients (connections, or gRPC calls for ttft_direct)");
ABSL_FLAG(double, duration_s, 10, "rps: measured duration");
ABSL_FLAG(double, warmup_s, 1, "rps: discarded warm-up before the measured duration");
ABSL_FLAG(int, requests, 1000, "ttft, ttft_direct: measured requests");
ABSL_FLAG(int, warmup_requests, 20, "ttft, ttft_direct: discarded requests sent first");
ABSL_FLAG(int, max_tokens, 8, "ttft, ttft_direct, streams, chat_turns: max_tokens per request");
ABSL_FLAG(int, rps_max_tokens, 1, "rps: max_tokens per (non-streamed) request");
ABSL_FLAG(std::string, worker, "127.0.0.1:50055", "ttft_direct: inference worker gRPC address");
ABSL_FLAG(int, streams, 1000, "streams: concurrent streaming requests to hold open");
ABSL_FLAG(double, open_rate, 0, "streams: new streams per second (0: as fast as possible)");
ABSL_FLAG(double, hold_s, 5, "streams: how long to hold them once all are open");
ABSL_FLAG(double, open_timeout_s, 120, "streams: give up waiting for first events after this");
ABSL_FLAG(int, turns, 1000, "chat_turns: messages to send");
ABSL_FLAG(int, turns_per_conversation, 10, "chat_turns: messages per conversation");
ABSL_FLAG(double, settle_s, 0,
          "chat_turns: pause between creating the conversations and sending (to sample memory)");
ABSL_FLAG(std::string, ready_file, "",
          "streams: written once every stream is open; chat_turns: once the conversations exist");
ABSL_FLAG(std::string, progress_file, "",
          "chat_turns: rewritten every 100 ms with the number of sends accepted so far");
ABSL_FLAG(int, threads, 1, "Event-loop threads for the HTTP modes");
ABSL_FLAG(bool, idempotency_keys, false,
          "rps: every request carries its own Idempotency-Key (each one a new record)");

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace inf = switchboard::inference::v1;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

// Every awaited operation yields (error_code, ...) instead of throwing: a
// refused or reset connection is a counted error here, not an exception.
constexpr auto kAwait = asio::as_tuple(asio::use_awaitable);
// Generous, so that only a hung server trips them.
constexpr auto kOpTimeout = std::chrono::seconds(60);
constexpr auto kStreamReadTimeout = std::chrono::seconds(300);

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

double Round(double v, int digits) {
  const double scale = std::pow(10.0, digits);
  return std::round(v * scale) / scale;
}

// Nearest-rank percentile of sorted samples (q in (0, 1]).
double Percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(sorted.size())));
  rank = std::clamp<size_t>(rank, 1, sorted.size());
  return sorted[rank - 1];
}

void AddPercentiles(json& out, const std::string& prefix, std::vector<double> samples) {
  std::sort(samples.begin(), samples.end());
  out[prefix + "p50_ms"] = Round(Percentile(samples, 0.50), 3);
  out[prefix + "p90_ms"] = Round(Percentile(samples, 0.90), 3);
  out[prefix + "p99_ms"] = Round(Percentile(samples, 0.99), 3);
}

// The first failure of a run goes to stderr in full; the rest are counted.
void ReportFirstError(const std::string& what) {
  static std::atomic<bool> reported{false};
  if (!reported.exchange(true)) std::cerr << "first error: " << what << "\n";
}

void WriteReadyFile() {
  const std::string path = absl::GetFlag(FLAGS_ready_file);
  if (path.empty()) return;
  std::ofstream(path) << "ready\n";
}

// Publishes a counter to --progress_file every 100 ms while alive, so that a
// script sampling something else at the same time can line the two up.
class ProgressFile {
 public:
  explicit ProgressFile(const std::atomic<int64_t>& value)
      : path_(absl::GetFlag(FLAGS_progress_file)), value_(value) {
    if (path_.empty()) return;
    thread_ = std::thread([this] {
      std::unique_lock<std::mutex> lock(mu_);
      do {
        Write();
      } while (!cv_.wait_for(lock, std::chrono::milliseconds(100), [this] { return stop_; }));
      Write();
    });
  }
  ~ProgressFile() {
    if (!thread_.joinable()) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  // Write and rename: a reader never sees a half-written number.
  void Write() {
    const std::string tmp = path_ + ".tmp";
    std::ofstream(tmp) << value_.load() << "\n";
    std::rename(tmp.c_str(), path_.c_str());
  }

  std::string path_;
  const std::atomic<int64_t>& value_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

// ---------------------------------------------------------------------------
// HTTP/1.1 client

struct Target {
  tcp::endpoint endpoint;
  std::string host_header;
  std::string api_key;
};

std::string SerializeRequest(const Target& t, std::string_view method, std::string_view path,
                             std::string_view body, std::string_view idempotency_key = {}) {
  std::string out;
  out.reserve(256 + body.size());
  out.append(method).append(" ").append(path).append(" HTTP/1.1\r\n");
  out.append("host: ").append(t.host_header).append("\r\n");
  if (!idempotency_key.empty())
    out.append("idempotency-key: ").append(idempotency_key).append("\r\n");
  out.append("x-api-key: ").append(t.api_key).append("\r\n");
  out.append("anthropic-version: 2023-06-01\r\n");
  out.append("content-type: application/json\r\n");
  out.append("content-length: ").append(std::to_string(body.size())).append("\r\n\r\n");
  out.append(body);
  return out;
}

std::string MessagesBody(bool stream, int max_tokens) {
  json body = {
      {"model", absl::GetFlag(FLAGS_model)},
      {"max_tokens", max_tokens},
      {"messages", json::array({{{"role", "user"}, {"content", absl::GetFlag(FLAGS_content)}}})}};
  if (stream) body["stream"] = true;
  return body.dump();
}

// An SSE error event carries the Anthropic error JSON; no other event does.
bool HasSseError(std::string_view body) {
  return body.find("event: error") != std::string_view::npos ||
         body.find("event:error") != std::string_view::npos;
}

struct Exchange {
  beast::error_code ec;  // transport failure: no status
  int status = 0;
  std::string body;
};

// One keep-alive connection, used by one coroutine at a time. It reconnects
// lazily after the server closes or a transport error.
class Connection {
 public:
  Connection(asio::any_io_executor ex, const Target& target) : stream_(ex), target_(target) {}

  // Sends `request` and reads the whole response.
  asio::awaitable<Exchange> RoundTrip(const std::string& request) {
    Exchange x;
    if (x.ec = co_await Send(request); x.ec) co_return x;
    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(boost::none);
    stream_.expires_after(kOpTimeout);
    auto [ec, n] = co_await bhttp::async_read(stream_, buffer_, parser, kAwait);
    if (ec) {
      x.ec = ec;
      Close();
      co_return x;
    }
    x.status = static_cast<int>(parser.get().result_int());
    x.body = std::move(parser.get().body());
    if (!parser.keep_alive()) Close();
    co_return x;
  }

  // Sends a streaming request and reads its body as it arrives, calling
  // `on_data(body_so_far)` after every read until it returns false (stop
  // reading: the connection is dropped) or the body ends. A non-200 is read
  // whole and returned without calling `on_data`.
  template <typename OnData>
  asio::awaitable<Exchange> Stream(const std::string& request, Clock::duration read_timeout,
                                   OnData on_data) {
    Exchange x;
    if (x.ec = co_await Send(request); x.ec) co_return x;
    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(boost::none);
    stream_.expires_after(read_timeout);
    if (auto [ec, n] = co_await bhttp::async_read_header(stream_, buffer_, parser, kAwait); ec) {
      x.ec = ec;
      Close();
      co_return x;
    }
    x.status = static_cast<int>(parser.get().result_int());
    while (!parser.is_done()) {
      stream_.expires_after(read_timeout);
      auto [ec, n] = co_await bhttp::async_read_some(stream_, buffer_, parser, kAwait);
      if (ec) {
        x.ec = ec;
        Close();
        co_return x;
      }
      if (x.status == 200 && !on_data(std::string_view(parser.get().body()))) {
        Close();
        co_return x;
      }
    }
    x.body = std::move(parser.get().body());
    if (!parser.keep_alive()) Close();
    co_return x;
  }

  void Close() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();
    open_ = false;
    buffer_.clear();
  }

 private:
  asio::awaitable<beast::error_code> Send(const std::string& request) {
    if (!open_) {
      stream_.expires_after(kOpTimeout);
      if (auto [ec] = co_await stream_.async_connect(target_.endpoint, kAwait); ec) {
        Close();  // a fresh socket for the next attempt
        co_return ec;
      }
      stream_.socket().set_option(tcp::no_delay(true));
      open_ = true;
    }
    stream_.expires_after(kOpTimeout);
    auto [ec, n] = co_await asio::async_write(stream_, asio::buffer(request), kAwait);
    if (ec) Close();
    co_return ec;
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  const Target& target_;
  bool open_ = false;
};

std::string Describe(const Exchange& x) {
  if (x.ec) return "transport: " + x.ec.message();
  return "HTTP " + std::to_string(x.status) + ": " + x.body;
}

// Runs coroutines on `threads` threads until all have returned. Each client
// gets its own strand, so its connection is only ever touched by one thread
// at a time.
class EventLoop {
 public:
  explicit EventLoop(int threads) : threads_(std::max(1, threads)) {}

  template <typename Fn>  // Fn: () -> asio::awaitable<void>
  void Spawn(Fn fn) {
    asio::co_spawn(asio::make_strand(io_), std::move(fn), [](std::exception_ptr e) {
      if (e) std::rethrow_exception(e);  // a bug, not load: fail loudly
    });
  }

  asio::io_context& io() { return io_; }

  // Returns once every spawned coroutine has finished (or Stop was called).
  void Run() {
    std::vector<std::thread> extra;
    for (int i = 1; i < threads_; ++i) extra.emplace_back([this] { io_.run(); });
    io_.run();
    for (auto& t : extra) t.join();
  }

  void Stop() { io_.stop(); }

 private:
  int threads_;
  asio::io_context io_;
};

asio::awaitable<void> SleepFor(Clock::duration d) {
  asio::steady_timer timer(co_await asio::this_coro::executor, d);
  co_await timer.async_wait(kAwait);
}

// ---------------------------------------------------------------------------
// rps: non-streaming 1-token requests back to back on keep-alive connections.

struct LatencyLog {
  std::mutex mu;
  std::vector<double> ms;
  int64_t errors = 0;

  void Merge(const std::vector<double>& more, int64_t more_errors) {
    std::lock_guard<std::mutex> lock(mu);
    ms.insert(ms.end(), more.begin(), more.end());
    errors += more_errors;
  }
};

json RunRps(const Target& target) {
  const int concurrency = absl::GetFlag(FLAGS_concurrency);
  const double duration_s = absl::GetFlag(FLAGS_duration_s);
  const std::string body = MessagesBody(false, absl::GetFlag(FLAGS_rps_max_tokens));
  const std::string request = SerializeRequest(target, "POST", "/v1/messages", body);
  const bool keyed = absl::GetFlag(FLAGS_idempotency_keys);
  // Keys unique to this run, so that every request is a new record.
  const std::string key_prefix =
      "load-" + std::to_string(std::chrono::system_clock::now().time_since_epoch().count());
  std::atomic<int64_t> next_key{0};
  const auto measure_from =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(
                         std::chrono::duration<double>(absl::GetFlag(FLAGS_warmup_s)));
  const auto end = measure_from + std::chrono::duration_cast<Clock::duration>(
                                      std::chrono::duration<double>(duration_s));
  LatencyLog log;
  EventLoop loop(absl::GetFlag(FLAGS_threads));
  for (int i = 0; i < concurrency; ++i) {
    loop.Spawn([&]() -> asio::awaitable<void> {
      Connection conn(co_await asio::this_coro::executor, target);
      std::vector<double> ms;
      int64_t errors = 0;
      for (auto t0 = Clock::now(); t0 < end; t0 = Clock::now()) {
        const std::string keyed_request =
            keyed ? SerializeRequest(target, "POST", "/v1/messages", body,
                                     key_prefix + "-" + std::to_string(next_key++))
                  : std::string();
        Exchange x = co_await conn.RoundTrip(keyed ? keyed_request : request);
        const auto t1 = Clock::now();
        // Only exchanges wholly inside the window count, so that the rate is
        // completions per second of the window.
        const bool measured = t0 >= measure_from && t1 <= end;
        if (x.ec || x.status != 200) {
          if (measured) ++errors;
          ReportFirstError(Describe(x));
          // Do not spin on a refused connection.
          if (x.ec) co_await SleepFor(std::chrono::milliseconds(10));
          continue;
        }
        if (measured) ms.push_back(Ms(t1 - t0));
      }
      log.Merge(ms, errors);
    });
  }
  loop.Run();
  json out = {{"mode", "rps"},
              {"concurrency", concurrency},
              {"requests", log.ms.size()},
              {"errors", log.errors},
              {"rps", Round(static_cast<double>(log.ms.size()) / duration_s, 1)}};
  AddPercentiles(out, "", log.ms);
  return out;
}

// ---------------------------------------------------------------------------
// ttft: streaming requests; time to the first content_block_delta.

struct TtftLog {
  std::mutex mu;
  std::vector<double> ttft_ms, total_ms;
  int64_t errors = 0;
};

json TtftJson(const std::string& mode, int concurrency, TtftLog& log) {
  json out = {{"mode", mode},
              {"concurrency", concurrency},
              {"requests", log.ttft_ms.size()},
              {"errors", log.errors}};
  AddPercentiles(out, "ttft_", log.ttft_ms);
  AddPercentiles(out, "total_", log.total_ms);
  return out;
}

json RunTtft(const Target& target) {
  const int concurrency = absl::GetFlag(FLAGS_concurrency);
  const int warmup = absl::GetFlag(FLAGS_warmup_requests);
  const int total = warmup + absl::GetFlag(FLAGS_requests);
  const std::string request = SerializeRequest(target, "POST", "/v1/messages",
                                               MessagesBody(true, absl::GetFlag(FLAGS_max_tokens)));
  std::atomic<int> next{0};
  TtftLog log;
  EventLoop loop(absl::GetFlag(FLAGS_threads));
  for (int i = 0; i < concurrency; ++i) {
    loop.Spawn([&]() -> asio::awaitable<void> {
      Connection conn(co_await asio::this_coro::executor, target);
      for (int n = next++; n < total; n = next++) {
        const auto t0 = Clock::now();
        std::optional<Clock::time_point> first;
        Exchange x = co_await conn.Stream(request, kOpTimeout, [&](std::string_view body) {
          if (!first && body.find("content_block_delta") != std::string_view::npos) {
            first = Clock::now();
          }
          return true;
        });
        const auto t1 = Clock::now();
        const bool ok = !x.ec && x.status == 200 && first && !HasSseError(x.body);
        std::lock_guard<std::mutex> lock(log.mu);
        if (n < warmup) continue;
        if (!ok) {
          ++log.errors;
          ReportFirstError(Describe(x));
          continue;
        }
        log.ttft_ms.push_back(Ms(*first - t0));
        log.total_ms.push_back(Ms(t1 - t0));
      }
    });
  }
  loop.Run();
  return TtftJson("ttft", concurrency, log);
}

// ---------------------------------------------------------------------------
// ttft_direct: the same measurement against one inference worker's Generate.

// Message.content has two shapes among the builds this harness compares:
// `string content = 2` (the baseline) and `repeated ContentBlock content = 3`
// with ContentBlock {string type = 1; string text = 2;} (the rewrite). This
// binary is compiled against one of them and talks to workers of either, so it
// sets the compiled shape through reflection and adds the other one as an
// unknown field: each worker reads its own field and skips the other, and both
// see the same prompt.
constexpr int kStringContentField = 2;
constexpr int kBlockContentField = 3;

void SetUserText(inf::Message& m, const std::string& text) {
  namespace pb = google::protobuf;
  const pb::Reflection* r = m.GetReflection();
  const pb::FieldDescriptor* content = m.GetDescriptor()->FindFieldByName("content");
  if (content == nullptr) {
    std::cerr << "inference.proto's Message has no `content` field; update SetUserText\n";
    std::exit(2);
  }
  pb::UnknownFieldSet block;  // a ContentBlock, encoded by hand
  block.AddLengthDelimited(1, "text");
  block.AddLengthDelimited(2, text);
  std::string block_bytes;
  block.SerializeToString(&block_bytes);
  if (content->type() == pb::FieldDescriptor::TYPE_STRING && !content->is_repeated()) {
    r->SetString(&m, content, text);
    r->MutableUnknownFields(&m)->AddLengthDelimited(kBlockContentField, block_bytes);
  } else if (content->type() == pb::FieldDescriptor::TYPE_MESSAGE && content->is_repeated()) {
    r->AddMessage(&m, content)->ParseFromString(block_bytes);
    r->MutableUnknownFields(&m)->AddLengthDelimited(kStringContentField, text);
  } else {
    std::cerr << "inference.proto's Message.content has an unknown shape; update SetUserText\n";
    std::exit(2);
  }
}

// Only request_id, org_id, model, max_tokens and messages are set: the
// fields every version of the proto this harness compares keeps.
void FillDirectRequest(int n, inf::GenerateRequest& req) {
  req.set_request_id("bench-" + std::to_string(::getpid()) + "-" + std::to_string(n));
  req.set_org_id("bench");
  req.set_model(absl::GetFlag(FLAGS_model));
  req.set_max_tokens(absl::GetFlag(FLAGS_max_tokens));
  auto* m = req.add_messages();
  m->set_role("user");
  SetUserText(*m, absl::GetFlag(FLAGS_content));
}

json RunTtftDirect() {
  const int concurrency = absl::GetFlag(FLAGS_concurrency);
  const int warmup = absl::GetFlag(FLAGS_warmup_requests);
  const int total = warmup + absl::GetFlag(FLAGS_requests);
  auto stub = inf::InferenceWorker::NewStub(
      grpc::CreateChannel(absl::GetFlag(FLAGS_worker), grpc::InsecureChannelCredentials()));
  std::atomic<int> next{0};
  TtftLog log;
  std::vector<std::thread> threads;
  for (int i = 0; i < concurrency; ++i) {
    threads.emplace_back([&] {
      for (int n = next++; n < total; n = next++) {
        inf::GenerateRequest req;
        FillDirectRequest(n, req);
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + kOpTimeout);
        const auto t0 = Clock::now();
        auto reader = stub->Generate(&ctx, req);
        std::optional<Clock::time_point> first;
        inf::GenerateEvent event;
        while (reader->Read(&event)) {
          if (!first && event.has_token()) first = Clock::now();
        }
        const grpc::Status st = reader->Finish();
        const auto t1 = Clock::now();
        std::lock_guard<std::mutex> lock(log.mu);
        if (n < warmup) continue;
        if (!st.ok() || !first) {
          ++log.errors;
          ReportFirstError(st.ok() ? "stream ended without a token"
                                   : "gRPC " + std::to_string(st.error_code()) + ": " +
                                         st.error_message());
          continue;
        }
        log.ttft_ms.push_back(Ms(*first - t0));
        log.total_ms.push_back(Ms(t1 - t0));
      }
    });
  }
  for (auto& t : threads) t.join();
  return TtftJson("ttft_direct", concurrency, log);
}

// ---------------------------------------------------------------------------
// streams: many concurrent SSE streams held open (a slow worker keeps them
// long), so that the caller can sample the gateway's memory meanwhile.

json RunStreams(const Target& target) {
  const int streams = absl::GetFlag(FLAGS_streams);
  const double open_rate = absl::GetFlag(FLAGS_open_rate);
  const std::string request = SerializeRequest(target, "POST", "/v1/messages",
                                               MessagesBody(true, absl::GetFlag(FLAGS_max_tokens)));
  std::atomic<int> opened{0}, failed{0}, ended_after_open{0};
  std::mutex mu;
  std::vector<double> first_event_ms;
  EventLoop loop(absl::GetFlag(FLAGS_threads));
  // Keeps run() from returning between the spawner's batches; released by
  // Stop() at the end.
  auto work = asio::make_work_guard(loop.io());

  const auto start = Clock::now();
  auto one_stream = [&]() -> asio::awaitable<void> {
    Connection conn(co_await asio::this_coro::executor, target);
    const auto t0 = Clock::now();
    bool got_first = false;
    Exchange x = co_await conn.Stream(request, kStreamReadTimeout, [&](std::string_view body) {
      // Open once the first complete event (message_start) has arrived.
      if (!got_first && body.find("\n\n") != std::string_view::npos) {
        got_first = true;
        const auto t1 = Clock::now();
        {
          std::lock_guard<std::mutex> lock(mu);
          first_event_ms.push_back(Ms(t1 - t0));
        }
        ++opened;
      }
      return true;
    });
    if (got_first) {
      ++ended_after_open;
      if (x.ec || HasSseError(x.body)) ReportFirstError("stream ended badly: " + Describe(x));
    } else {
      ++failed;
      ReportFirstError(Describe(x));
    }
  };
  loop.Spawn([&]() -> asio::awaitable<void> {
    for (int i = 0; i < streams; ++i) {
      if (open_rate > 0) {
        const auto due = start + std::chrono::duration_cast<Clock::duration>(
                                     std::chrono::duration<double>(i / open_rate));
        if (due > Clock::now()) co_await SleepFor(due - Clock::now());
      }
      loop.Spawn(one_stream);
    }
  });
  std::thread runner([&] { loop.Run(); });

  const auto open_deadline =
      start + std::chrono::duration_cast<Clock::duration>(
                  std::chrono::duration<double>(absl::GetFlag(FLAGS_open_timeout_s)));
  while (opened + failed < streams && Clock::now() < open_deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const double open_s = std::chrono::duration<double>(Clock::now() - start).count();
  const int opened_at_ready = opened.load();
  const int open_at_ready = opened_at_ready - ended_after_open.load();
  WriteReadyFile();
  std::cerr << "streams: " << open_at_ready << " open after " << Round(open_s, 2) << " s\n";
  std::this_thread::sleep_for(std::chrono::duration<double>(absl::GetFlag(FLAGS_hold_s)));
  const int open_after_hold = opened.load() - ended_after_open.load();
  work.reset();
  loop.Stop();  // drops every connection with the coroutines' frames
  runner.join();

  std::lock_guard<std::mutex> lock(mu);
  json out = {{"mode", "streams"},
              {"streams", streams},
              {"opened", opened_at_ready},
              {"failed", failed.load()},
              {"open_at_ready", open_at_ready},
              {"open_s", Round(open_s, 3)},
              {"hold_s", absl::GetFlag(FLAGS_hold_s)},
              {"open_after_hold", open_after_hold}};
  AddPercentiles(out, "first_event_", first_event_ms);
  return out;
}

// ---------------------------------------------------------------------------
// chat_turns: conversations first, then messages as fast as they are taken
// (202: the reply runs in the background on the chat service).

json RunChatTurns(const Target& target) {
  const int concurrency = absl::GetFlag(FLAGS_concurrency);
  const int turns = absl::GetFlag(FLAGS_turns);
  const int per_conversation = std::max(1, absl::GetFlag(FLAGS_turns_per_conversation));
  const int conversations = (turns + per_conversation - 1) / per_conversation;
  const std::string create = SerializeRequest(target, "POST", "/v1/conversations",
                                              json{{"model", absl::GetFlag(FLAGS_model)}}.dump());

  std::vector<std::string> ids(conversations);
  std::atomic<int> next{0};
  std::atomic<int> create_errors{0};
  {
    EventLoop loop(absl::GetFlag(FLAGS_threads));
    for (int i = 0; i < concurrency; ++i) {
      loop.Spawn([&]() -> asio::awaitable<void> {
        Connection conn(co_await asio::this_coro::executor, target);
        for (int n = next++; n < conversations; n = next++) {
          Exchange x = co_await conn.RoundTrip(create);
          const json body = json::parse(x.body, nullptr, /*allow_exceptions=*/false);
          if (x.ec || x.status != 201 || !body.is_object() || !body.contains("id") ||
              !body["id"].is_string()) {
            ++create_errors;
            ReportFirstError("creating a conversation: " + Describe(x));
            continue;
          }
          ids[n] = body["id"].get<std::string>();
        }
      });
    }
    loop.Run();
  }
  if (create_errors > 0) {
    return {{"mode", "chat_turns"},
            {"error", "could not create every conversation"},
            {"create_errors", create_errors.load()}};
  }
  WriteReadyFile();
  std::this_thread::sleep_for(std::chrono::duration<double>(absl::GetFlag(FLAGS_settle_s)));

  // Turn n goes to conversation n % conversations, so that concurrent sends
  // land on different conversations (each send locks its conversation's row).
  const int max_tokens = absl::GetFlag(FLAGS_max_tokens);
  next = 0;
  LatencyLog log;
  std::atomic<int64_t> accepted{0};
  std::optional<ProgressFile> progress(std::in_place, accepted);
  const auto start = Clock::now();
  EventLoop loop(absl::GetFlag(FLAGS_threads));
  for (int i = 0; i < concurrency; ++i) {
    loop.Spawn([&]() -> asio::awaitable<void> {
      Connection conn(co_await asio::this_coro::executor, target);
      std::vector<double> ms;
      int64_t errors = 0;
      for (int n = next++; n < turns; n = next++) {
        const json body = {{"content", absl::GetFlag(FLAGS_content) + " #" + std::to_string(n)},
                           {"max_tokens", max_tokens}};
        const std::string request = SerializeRequest(
            target, "POST", "/v1/conversations/" + ids[n % conversations] + "/messages",
            body.dump());
        const auto t0 = Clock::now();
        Exchange x = co_await conn.RoundTrip(request);
        const auto t1 = Clock::now();
        if (x.ec || x.status != 202) {
          ++errors;
          ReportFirstError(Describe(x));
          continue;
        }
        ++accepted;
        ms.push_back(Ms(t1 - t0));
      }
      log.Merge(ms, errors);
    });
  }
  loop.Run();
  const double elapsed_s = std::chrono::duration<double>(Clock::now() - start).count();
  progress.reset();  // the final count is on disk before the JSON is printed
  json out = {{"mode", "chat_turns"},
              {"concurrency", concurrency},
              {"conversations", conversations},
              {"turns", turns},
              {"accepted", log.ms.size()},
              {"errors", log.errors},
              {"send_s", Round(elapsed_s, 3)},
              {"sends_per_s", Round(static_cast<double>(log.ms.size()) / elapsed_s, 1)}};
  AddPercentiles(out, "", log.ms);
  return out;
}

Target MakeTarget() {
  Target t;
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(absl::GetFlag(FLAGS_host), ec);
  if (ec) {
    std::cerr << "--host must be an IP address: " << absl::GetFlag(FLAGS_host) << "\n";
    std::exit(2);
  }
  t.endpoint = tcp::endpoint(address, static_cast<unsigned short>(absl::GetFlag(FLAGS_port)));
  t.host_header = absl::GetFlag(FLAGS_host) + ":" + std::to_string(absl::GetFlag(FLAGS_port));
  t.api_key = absl::GetFlag(FLAGS_api_key);
  if (t.api_key.empty()) {
    const char* env = std::getenv("SWITCHBOARD_API_KEY");
    t.api_key = env == nullptr ? "" : env;
  }
  if (t.api_key.empty()) {
    std::cerr << "no API key: pass --api_key or set SWITCHBOARD_API_KEY\n";
    std::exit(2);
  }
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Load generator for the gateway's front door; see the modes in bench/gateway_load.cc");
  absl::ParseCommandLine(argc, argv);
  const std::string mode = absl::GetFlag(FLAGS_mode);
  json out;
  if (mode == "ttft_direct") {
    out = RunTtftDirect();
  } else if (mode == "rps" || mode == "ttft" || mode == "streams" || mode == "chat_turns") {
    const Target target = MakeTarget();
    if (mode == "rps") out = RunRps(target);
    if (mode == "ttft") out = RunTtft(target);
    if (mode == "streams") out = RunStreams(target);
    if (mode == "chat_turns") out = RunChatTurns(target);
  } else {
    std::cerr << "unknown --mode=" << mode << "\n";
    return 2;
  }
  std::cout << out.dump() << std::endl;
  return 0;
}
