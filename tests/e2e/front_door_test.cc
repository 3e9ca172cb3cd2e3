// End-to-end checks of the front door on the real cluster: the OpenAI SDK,
// stop sequences in both dialects, exact chat-stream resumes, cancellation
// of abandoned requests, overload answers, bounded parsing, errors without
// internals, and 5,000 concurrent chat turns on one chat replica.
#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "e2e/e2e_helpers.h"
#include "gtest/gtest.h"
#include "sbadmin/admin.h"
#include "storage/pg.h"
#include "storage/redis.h"
#include "storage/token_stream.h"

namespace sb::testing {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

http::Response PostOpenAi(const std::string& body, const std::string& key = "") {
  auto r = http::Fetch(
      {.port = g_cluster->http_port(),
       .method = "POST",
       .target = "/v1/chat/completions",
       .headers = {{"authorization", "Bearer " + (key.empty() ? g_cluster->api_key() : key)},
                   {"content-type", "application/json"}},
       .body = body});
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : http::Response{};
}

std::string OpenAiBody(const std::string& prompt, bool stream,
                       const std::string& model = "sim-small", json extra = json::object()) {
  json j = {{"model", model},
            {"stream", stream},
            {"messages", {{{"role", "user"}, {"content", prompt}}}}};
  j.update(extra);
  return j.dump();
}

// Events with an id (chat streams), pings left out.
std::vector<SseEvent> WithIds(const std::vector<SseEvent>& events) {
  std::vector<SseEvent> out;
  for (const auto& e : events) {
    if (e.event != "ping") out.push_back(e);
  }
  return out;
}

// A field of /proc/PID/status in KiB (VmRSS now, VmHWM the peak).
int64_t StatusKiB(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1));
  }
  return -1;
}

// Restarts a process's peak RSS (VmHWM) from its current RSS (Linux >= 4.0).
bool ResetPeakRss(pid_t pid) {
  std::ofstream out("/proc/" + std::to_string(pid) + "/clear_refs");
  out << "5";
  out.close();
  return out.good();
}

// The official OpenAI TypeScript SDK, with only the base URL changed
// (tests/sdk/openai_check.mjs; tools/setup installs it with npm ci).
TEST(OpenAiSdkTest, OfficialOpenAiSdkWorksAgainstTheGateway) {
  const std::string dir = Infra::SourceDir() + "/tests/sdk";
  ASSERT_TRUE(std::filesystem::exists(dir + "/node_modules/openai"))
      << "the SDK is not installed: run tools/setup (npm ci --prefix tests/sdk)";
  std::string out;
  const int rc = RunCommand(
      {"env", "OPENAI_BASE_URL=http://127.0.0.1:" + std::to_string(g_cluster->http_port()) + "/v1",
       "OPENAI_API_KEY=" + g_cluster->api_key(), "node", dir + "/openai_check.mjs"},
      &out);
  EXPECT_EQ(rc, 0) << out << g_cluster->Logs(10);
  EXPECT_NE(out.find("openai sdk checks passed"), std::string::npos) << out;
}

TEST(StopSequenceTest, StreamsEndBeforeTheStopSequenceInBothDialects) {
  auto whole = Post("/v1/messages", MessagesBody("stop sequences please", false, 100));
  ASSERT_EQ(whole.status, 200) << whole.body;
  const std::string text = json::parse(whole.body)["content"][0]["text"];
  const std::string stop =
      text.substr(text.find(' ', text.find(' ') + 1), 4);  // the third word's start
  const std::string prefix = text.substr(0, text.find(stop));

  json anthropic = json::parse(MessagesBody("stop sequences please", true, 100));
  anthropic["stop_sequences"] = {stop};
  auto a = Post("/v1/messages", anthropic.dump());
  ASSERT_EQ(a.status, 200) << a.body;
  std::string streamed;
  json delta;
  for (const auto& e : ParseSse(a.body)) {
    if (e.event == "content_block_delta") streamed += e.data["delta"]["text"].get<std::string>();
    if (e.event == "message_delta") delta = e.data;
  }
  EXPECT_EQ(streamed, prefix);
  EXPECT_EQ(delta["delta"]["stop_reason"], "stop_sequence");
  EXPECT_EQ(delta["delta"]["stop_sequence"], stop);

  auto o = PostOpenAi(OpenAiBody("stop sequences please", true, "sim-small",
                                 {{"stop", stop}, {"max_tokens", 100}}));
  ASSERT_EQ(o.status, 200) << o.body;
  std::string content;
  std::string finish;
  auto events = ParseSse(o.body);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().raw_data, "[DONE]");
  for (const auto& e : events) {
    if (e.raw_data == "[DONE]") continue;
    const json& c = e.data["choices"][0];
    if (c["delta"].contains("content")) content += c["delta"]["content"].get<std::string>();
    if (!c["finish_reason"].is_null()) finish = c["finish_reason"];
  }
  EXPECT_EQ(content, prefix);
  EXPECT_EQ(finish, "stop");
}

// metadata.user_id (OpenAI: user) is the request's end user, through to the
// ledger.
TEST(MeteringTest, TheEndUserReachesTheLedger) {
  json body = json::parse(MessagesBody("who asked?", false, 3));
  body["metadata"] = {{"user_id", "end-user-42"}};
  auto r = Post("/v1/messages", body.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  auto usage = UsageFor("acme", r.headers["request-id"]);
  ASSERT_EQ(usage.records_size(), 1) << g_cluster->Logs();
  EXPECT_EQ(usage.records(0).end_user_id(), "end-user-42");

  auto o = PostOpenAi(OpenAiBody("who asked?", false, "sim-small", {{"user", "end-user-43"}}));
  ASSERT_EQ(o.status, 200) << o.body;
  auto openai_usage = UsageFor("acme", o.headers["request-id"]);
  ASSERT_EQ(openai_usage.records_size(), 1);
  EXPECT_EQ(openai_usage.records(0).end_user_id(), "end-user-43");
}

// Resuming a chat stream with Last-Event-ID set to any event's id yields
// exactly the events after it: from the live buffer, and for the framing
// events also once the buffer has expired (from the stored message).
TEST(ChatResumeTest, ResumesExactlyAfterEveryEvent) {
  auto created = Post("/v1/conversations", R"({"model":"sim-small"})");
  ASSERT_EQ(created.status, 201) << created.body;
  const std::string cid = json::parse(created.body)["id"];
  auto sent =
      Post("/v1/conversations/" + cid + "/messages", R"({"content":"resume me","max_tokens":6})");
  ASSERT_EQ(sent.status, 202) << sent.body;
  const std::string mid = json::parse(sent.body)["assistant_message_id"];
  const std::string url = json::parse(sent.body)["stream_url"];

  const auto all = WithIds(ParseSse(Get(url).body));
  ASSERT_GE(all.size(), 6u);
  for (size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(all[i].id, mid + ":" + std::to_string(i + 1)) << "every event has its own id";
  }
  EXPECT_EQ(all.front().event, "message_start");
  EXPECT_EQ(all[1].event, "content_block_start");
  EXPECT_EQ(all[all.size() - 3].event, "content_block_stop");
  EXPECT_EQ(all[all.size() - 2].event, "message_delta");
  EXPECT_EQ(all.back().event, "message_stop");

  for (size_t i = 0; i + 1 < all.size(); ++i) {
    const auto rest = WithIds(ParseSse(Get(url, {{"last-event-id", all[i].id}}).body));
    ASSERT_EQ(rest.size(), all.size() - i - 1) << "after " << all[i].id;
    for (size_t j = 0; j < rest.size(); ++j) {
      EXPECT_EQ(rest[j].id, all[i + 1 + j].id);
      EXPECT_EQ(rest[j].event, all[i + 1 + j].event);
      EXPECT_EQ(rest[j].raw_data, all[i + 1 + j].raw_data);
    }
  }
  EXPECT_EQ(Get(url, {{"last-event-id", all.back().id}}).status, 204);

  // The buffer expires: the stored message, which keeps its deltas'
  // lengths, serves the same events with the same ids — and after any of
  // them, in the middle of the text too, the same rest.
  RedisClient redis({.port = g_cluster->infra().redis_port()});
  ASSERT_TRUE(redis.Command({"DEL", TokenStreamKey(mid)}).ok());
  auto expect_tail = [&](const std::vector<SseEvent>& rest, size_t from, const std::string& what) {
    ASSERT_EQ(rest.size(), all.size() - from) << what << " (buffer expired)";
    for (size_t j = 0; j < rest.size(); ++j) {
      EXPECT_EQ(rest[j].id, all[from + j].id) << what;
      EXPECT_EQ(rest[j].event, all[from + j].event) << what;
      EXPECT_EQ(rest[j].raw_data, all[from + j].raw_data) << what;
    }
  };
  expect_tail(WithIds(ParseSse(Get(url).body)), 0, "from the start");
  for (size_t i = 0; i + 1 < all.size(); ++i) {
    expect_tail(WithIds(ParseSse(Get(url, {{"last-event-id", all[i].id}}).body)), i + 1,
                "after " + all[i].id);
  }
  EXPECT_EQ(Get(url, {{"last-event-id", all.back().id}}).status, 204);
}

// A client that leaves a non-streaming request cancels its generation: the
// worker counts a cancellation and the ledger holds only what was made.
TEST(DisconnectTest, LeavingANonStreamingRequestCancelsItsGeneration) {
  auto worker = g_cluster->StartWorker("worker-slow", "sim-slow", {"--tokens_per_second=5"});
  ASSERT_TRUE(worker.ok()) << worker.status();
  const std::string series = "sb_worker_requests_finished_total{stop_reason=\"cancelled\"}";
  const double before = MetricValue(worker->metrics_port, series);
  const std::string key = KeyOfNewOrg("leaver");
  const std::string body = MessagesBody("a reply nobody waits for", false, 200, "sim-slow");

  boost::asio::io_context io;
  boost::asio::ip::tcp::socket socket(io);
  socket.connect({boost::asio::ip::make_address("127.0.0.1"),
                  static_cast<unsigned short>(g_cluster->http_port())});
  const std::string request =
      "POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: " + key +
      "\r\ncontent-type: application/json\r\ncontent-length: " + std::to_string(body.size()) +
      "\r\n\r\n" + body;
  boost::asio::write(socket, boost::asio::buffer(request));
  std::this_thread::sleep_for(700ms);  // a few tokens in (5 a second)
  socket.close();

  double after = before;
  for (int i = 0; i < 100 && after == before; ++i) {
    std::this_thread::sleep_for(50ms);
    after = MetricValue(worker->metrics_port, series);
  }
  EXPECT_EQ(after, before + 1) << "the worker cancelled the generation";
  auto usage = UsageOfOrg("leaver", 1);
  ASSERT_EQ(usage.records_size(), 1) << g_cluster->Logs();
  EXPECT_EQ(usage.records(0).stop_reason(), "cancelled");
  // Every simulated reply has at least 12 tokens: far fewer were made, and
  // fewer than max_tokens.
  EXPECT_LT(usage.records(0).output_tokens(), 12);
  EXPECT_LT(usage.records(0).output_tokens(), 200);
}

// No capacity is 529 overloaded_error (OpenAI dialect: 503), never 429 (here
// after the request has waited the scheduler's --max_queue_wait_ms).
TEST(OverloadTest, NoCapacityIs529NotARateLimit) {
  auto tiny = g_cluster->StartWorker(
      "worker-tiny", "sim-tiny", {"--max_num_seqs=1", "--max_waiting=0", "--tokens_per_second=2"});
  ASSERT_TRUE(tiny.ok()) << tiny.status();
  std::atomic<bool> started{false}, release{false};
  std::thread holder([&] {
    auto held = http::FetchStreaming(
        {.port = g_cluster->http_port(),
         .method = "POST",
         .target = "/v1/messages",
         .headers = {{"x-api-key", g_cluster->api_key()}, {"content-type", "application/json"}},
         .body = MessagesBody("hold the only slot", true, 200, "sim-tiny")},
        [&](std::string_view d) {
          if (d.find("message_start") != std::string_view::npos) started = true;
          return !release.load();
        });
    EXPECT_TRUE(held.ok()) << held.status();
  });
  for (int i = 0; i < 200 && !started; ++i) std::this_thread::sleep_for(25ms);
  ASSERT_TRUE(started.load()) << "the first request holds the worker's one slot";

  auto r = Post("/v1/messages", MessagesBody("no room", false, 5, "sim-tiny"));
  ExpectError(r, 529, "overloaded_error");
  EXPECT_EQ(r.headers["retry-after"], "1");
  EXPECT_EQ(r.body.find("worker"), std::string::npos) << r.body;

  auto o = PostOpenAi(OpenAiBody("no room", false, "sim-tiny"));
  EXPECT_EQ(o.status, 503) << o.body;
  EXPECT_EQ(json::parse(o.body)["error"]["code"], "overloaded");

  release = true;
  holder.join();
}

// A worker killed mid-stream: the client gets a plain error, with no
// worker id, address or library text.
TEST(InternalsTest, AKilledWorkerLeaksNoInternals) {
  auto doomed = g_cluster->StartWorker("worker-doomed-7", "sim-doomed", {"--tokens_per_second=10"});
  ASSERT_TRUE(doomed.ok()) << doomed.status();
  std::string body;
  bool killed = false;
  auto r = http::FetchStreaming(
      {.port = g_cluster->http_port(),
       .method = "POST",
       .target = "/v1/messages",
       .headers = {{"x-api-key", g_cluster->api_key()}, {"content-type", "application/json"}},
       .body = MessagesBody("doomed", true, 200, "sim-doomed")},
      [&](std::string_view d) {
        body.append(d);
        if (!killed && body.find("content_block_delta") != std::string::npos) {
          doomed->process.Kill();
          killed = true;
        }
        return true;
      });
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(killed);
  auto events = ParseSse(body);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().event, "error") << body;
  const std::string message = events.back().data["error"]["message"];
  for (const char* internal : {"worker", "doomed", "127.0.0.1", "Socket", "closed"}) {
    EXPECT_EQ(message.find(internal), std::string::npos) << internal << " in: " << message;
  }
  EXPECT_FALSE(r->headers["request-id"].empty());

  auto after = Post("/v1/messages", MessagesBody("doomed again", false, 5, "sim-doomed"));
  ExpectError(after, 529, "overloaded_error");
  EXPECT_EQ(after.body.find("doomed-7"), std::string::npos) << after.body;
}

// Metering survives a crash: the worker reports usage ahead of delivery (a
// token reaches the stream only once Kafka has stored a report covering
// it), so a worker killed with kill -9 mid-stream leaves in the ledger at
// least every token the client received.
TEST(MeteringTest, AWorkerKilledMidStreamLeavesWhatItDeliveredInTheLedger) {
  auto doomed =
      g_cluster->StartWorker("worker-metered-kill", "sim-metered-kill",
                             {"--tokens_per_second=10", "--usage_report_interval_ms=200"});
  ASSERT_TRUE(doomed.ok()) << doomed.status();
  const std::string key = KeyOfNewOrg("killed-metering");
  // A worker that has been serving: its Kafka producer is connected (a
  // fresh one takes a moment to get its producer id and topic metadata).
  auto warm = Post("/v1/messages", MessagesBody("warm up", false, 2, "sim-metered-kill"), key);
  ASSERT_EQ(warm.status, 200) << warm.body;
  ASSERT_EQ(UsageFor("killed-metering", warm.headers["request-id"]).records_size(), 1);
  std::string body;
  int delivered = 0;
  bool killed = false;
  auto r = http::FetchStreaming(
      {.port = g_cluster->http_port(),
       .method = "POST",
       .target = "/v1/messages",
       .headers = {{"x-api-key", key}, {"content-type", "application/json"}},
       .body = MessagesBody("metered until killed", true, 400, "sim-metered-kill")},
      [&](std::string_view d) {
        body.append(d);
        if (!killed) {
          delivered = CountEvents(body, "content_block_delta");
          if (delivered >= 12) {
            doomed->process.Kill();
            killed = true;
          }
        }
        return true;
      });
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(killed) << "delivered " << delivered << ": "
                      << body.substr(body.size() > 600 ? body.size() - 600 : 0);
  const std::string request_id = r->headers["request-id"];
  auto usage = UsageFor("killed-metering", request_id, /*settled=*/false);
  ASSERT_EQ(usage.records_size(), 1) << "a killed worker used to leave no ledger row";
  std::printf("[figure] kill -9 after %d delivered tokens: the ledger holds %d\n", delivered,
              usage.records(0).output_tokens());
  EXPECT_GE(usage.records(0).output_tokens(), delivered);
  EXPECT_GT(usage.records(0).input_tokens(), 0);
}

TEST(InternalsTest, ANulByteIsRefusedByNameNotByTheDatabase) {
  auto r = Post("/v1/conversations", R"({"model":"sim-small","title":"a\u0000b"})");
  ExpectError(r, 400, "invalid_request_error");
  EXPECT_NE(r.body.find("title"), std::string::npos) << r.body;
  for (const char* internal : {"postgres", "UTF8", "0x00", "ERROR"}) {
    EXPECT_EQ(r.body.find(internal), std::string::npos) << r.body;
  }
}

// Parsing is bounded: a 4 MiB nesting bomb is refused at depth 64 and
// barely moves the gateway's peak memory.
TEST(ParsingTest, TheNestingBombIs400WithBoundedMemory) {
  const pid_t gateway = g_cluster->process("gateway").pid();
  // The peak from here on, not the process's whole life.
  ASSERT_TRUE(ResetPeakRss(gateway)) << "cannot reset the gateway's peak RSS";
  const int64_t before = StatusKiB(gateway, "VmRSS");
  ASSERT_GT(before, 0);
  auto r = Post("/v1/messages", std::string(4 << 20, '['));
  ExpectError(r, 400, "invalid_request_error");
  EXPECT_NE(r.body.find("deeper than 64"), std::string::npos) << r.body;
  auto o = PostOpenAi(std::string(4 << 20, '{'));
  EXPECT_EQ(o.status, 400) << o.body;
  const int64_t after = StatusKiB(gateway, "VmHWM");
  EXPECT_LT(after - before, 32 * 1024)
      << "peak RSS grew from " << before << " to " << after << " KiB";
}

// One chat replica carries 5,000 concurrent turns, and all complete. The
// worker is slow (a token every 20 s) so that every turn is still running
// when the last one starts.
TEST(ChatScaleTest, FiveThousandConcurrentTurnsOnOneReplicaAllComplete) {
  constexpr int kConversations = 500;
  constexpr int kTurnsEach = 10;
  constexpr int kTurns = kConversations * kTurnsEach;
  auto worker = g_cluster->StartWorker(
      "worker-chat", "sim-chat",
      {"--tokens_per_second=0.05", "--max_num_seqs=6000", "--max_waiting=0"});
  ASSERT_TRUE(worker.ok()) << worker.status();
  const int chat_metrics = g_cluster->metrics_port("chat");
  const std::string complete = "sb_chat_turns_total{outcome=\"complete\"}";
  const std::string failed = "sb_chat_turns_total{outcome=\"failed\"}";
  const double complete_before = MetricValue(chat_metrics, complete);
  const double failed_before = MetricValue(chat_metrics, failed);

  std::vector<std::string> conversations(kConversations);
  std::atomic<int> errors{0};
  std::mutex mu;
  std::string first_error;
  auto parallel = [&](int n, const std::function<void(int)>& fn) {
    std::atomic<int> next{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 50; ++t) {
      threads.emplace_back([&] {
        for (int i = next++; i < n; i = next++) fn(i);
      });
    }
    for (auto& t : threads) t.join();
  };
  parallel(kConversations, [&](int i) {
    auto r = Post("/v1/conversations", R"({"model":"sim-chat"})");
    if (r.status == 201)
      conversations[i] = json::parse(r.body)["id"];
    else
      ++errors;
  });
  ASSERT_EQ(errors.load(), 0);

  std::atomic<bool> sending{true};
  std::atomic<double> peak{0};
  std::thread watcher([&] {
    while (sending || MetricValue(chat_metrics, "sb_chat_turns_in_progress") > 0) {
      const double now = MetricValue(chat_metrics, "sb_chat_turns_in_progress");
      if (now > peak) peak = now;
      std::this_thread::sleep_for(250ms);
    }
  });
  const auto start = std::chrono::steady_clock::now();
  parallel(kTurns, [&](int i) {
    auto r = Post("/v1/conversations/" + conversations[i % kConversations] + "/messages",
                  R"({"content":"one of five thousand","max_tokens":3})");
    if (r.status != 202) {
      std::lock_guard<std::mutex> lock(mu);
      if (errors++ == 0) first_error = r.body;
    }
  });
  const double send_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  sending = false;
  EXPECT_EQ(errors.load(), 0) << first_error;
  watcher.join();

  EXPECT_EQ(peak.load(), kTurns) << "every turn was in progress at once (sends took "
                                 << send_seconds << " s)";
  EXPECT_EQ(MetricValue(chat_metrics, complete) - complete_before, kTurns);
  EXPECT_EQ(MetricValue(chat_metrics, failed) - failed_before, 0);

  // Every reply is stored complete, with its three tokens and its stream's
  // last offset (2 opening events, 1 to 3 deltas — tokens that arrive while
  // output safety checks the one before go as one — and 3 closing events).
  PgPool pg(g_cluster->infra().pg_uri(), 1);
  auto counts = pg.Run<std::pair<int64_t, int64_t>>([](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    auto r = tx.exec1(
        "SELECT count(*) FILTER (WHERE m.status = 'complete' AND m.output_tokens = 3 "
        "AND m.stream_last_offset BETWEEN 6 AND 8), count(*) FROM messages m JOIN conversations c "
        "ON c.id = m.conversation_id WHERE c.model = 'sim-chat' AND m.role = 'assistant'");
    return std::make_pair(r[0].as<int64_t>(), r[1].as<int64_t>());
  });
  ASSERT_TRUE(counts.ok()) << counts.status();
  EXPECT_EQ(counts->second, kTurns);
  EXPECT_EQ(counts->first, kTurns);
}

}  // namespace
}  // namespace sb::testing
