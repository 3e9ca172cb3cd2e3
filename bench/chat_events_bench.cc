// Chat figures (issue 10) on a throwaway cluster on loopback (tests/e2e's
// Cluster), in one run:
//
//   1. event fan-out: --users users with --devices_per_user devices each
//      follow GET /v1/events (1,000 devices by default, on one
//      AsyncClient); --messages sends (one conversation each, users in
//      turn, at --rate a second) and, for every device of the sender, the
//      time from the send's request to that device receiving its
//      message.created — p50/p99 over every device, and over each message's
//      slowest device; the CPU connection-manager and the gateway spent;
//   2. send -> first token through chat: --first_token_samples sends, each
//      followed at once by its reply's stream; the time from the send's
//      request to the first content_block_delta.
//
//   ninja -C build chat_events_bench && build/bench/chat_events_bench
//
// Prints Markdown for bench/RESULTS.md.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "bench_support.h"
#include "e2e/cluster.h"
#include "e2e/events_device.h"
#include "http/async_client.h"
#include "http/http_client.h"
#include "sbadmin/admin.h"

ABSL_FLAG(int, users, 100, "Users following their events");
ABSL_FLAG(int, devices_per_user, 10, "Devices each user follows them on");
ABSL_FLAG(int, messages, 1000, "Messages sent during the fan-out phase");
ABSL_FLAG(double, rate, 20, "Sends a second during the fan-out phase");
ABSL_FLAG(int, first_token_samples, 200, "Sends measured to their reply's first token");

namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;
using sb::testing::EventsDevice;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  return v[i];
}

sb::http::Response Call(int port, const std::string& key, const std::string& method,
                        const std::string& target, const std::string& body) {
  auto r = sb::http::Fetch({.port = port,
                            .method = method,
                            .target = target,
                            .headers = {{"x-api-key", key}, {"content-type", "application/json"}},
                            .body = body,
                            .timeout = std::chrono::seconds(30)});
  if (!r.ok()) {
    std::fprintf(stderr, "%s %s: %s\n", method.c_str(), target.c_str(),
                 r.status().ToString().c_str());
    std::exit(1);
  }
  return *r;
}

// A new conversation of the key's user: its id.
std::string NewConversation(int port, const std::string& key) {
  auto r = Call(port, key, "POST", "/v1/conversations", R"({"model":"sim-small"})");
  if (r.status != 201) {
    std::fprintf(stderr, "create: %d %s\n", r.status, r.body.c_str());
    std::exit(1);
  }
  return json::parse(r.body)["id"];
}

// Sends `content`: the reply's stream URL.
std::string Send(int port, const std::string& key, const std::string& conversation,
                 const std::string& content) {
  auto r = Call(port, key, "POST", "/v1/conversations/" + conversation + "/messages",
                json{{"content", content}, {"max_tokens", 2}}.dump());
  if (r.status != 202) {
    std::fprintf(stderr, "send: %d %s\n", r.status, r.body.c_str());
    std::exit(1);
  }
  return json::parse(r.body)["stream_url"];
}

// Where the time goes: from a change's commit in chat to its append to the
// user's stream (chat's outbox relay, Kafka, connection-manager's consumer),
// as connection-manager's histogram counts it: (le, cumulative count), in
// the page's order.
std::vector<std::pair<std::string, uint64_t>> LagBuckets(int metrics_port) {
  std::vector<std::pair<std::string, uint64_t>> out;
  auto page = sb::http::Fetch({.port = metrics_port, .target = "/metrics"});
  if (!page.ok()) return out;
  std::istringstream lines(page->body);
  const std::string prefix = "sb_connection_event_index_lag_seconds_bucket{le=\"";
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(prefix, 0) != 0) continue;
    const auto end = line.find('"', prefix.size());
    out.emplace_back(line.substr(prefix.size(), end - prefix.size()),
                     std::stoull(line.substr(line.rfind(' ') + 1)));
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int users = absl::GetFlag(FLAGS_users);
  const int per_user = absl::GetFlag(FLAGS_devices_per_user);
  const int messages = absl::GetFlag(FLAGS_messages);
  auto started = sb::testing::Cluster::Start();
  if (!started.ok()) {
    std::fprintf(stderr, "cluster: %s\n", started.status().ToString().c_str());
    return 1;
  }
  auto& c = **started;
  // A gateway that takes 1,000 connections and 100 new keys from one
  // address (the defaults allow 256 connections and a burst of 20 key
  // look-ups an address: the edge's defences against one abusive client).
  auto gateway = c.StartGateway("gateway-fanout", {"--http_max_connections_per_ip=4096",
                                                   "--auth_lookups_per_second_per_ip=0"});
  if (!gateway.ok()) {
    std::fprintf(stderr, "gateway: %s\n", gateway.status().ToString().c_str());
    return 1;
  }
  const int port = gateway->http_port;
  sb::admin::Admin admin(c.infra().pg_uri());
  (void)admin.CreateOrg("fanout", "fanout");
  std::vector<std::string> keys;
  for (int u = 0; u < users; ++u)
    keys.push_back(admin.CreateKey("fanout", "u" + std::to_string(u)).value());

  // 1. Fan-out.
  sb::http::AsyncClient client({.threads = 1});
  std::vector<std::unique_ptr<EventsDevice>> devices;  // user u's are [u * per_user, ...)
  for (int u = 0; u < users; ++u) {
    for (int d = 0; d < per_user; ++d) {
      devices.push_back(std::make_unique<EventsDevice>(client, port, keys[u]));
    }
  }
  for (auto& d : devices) {
    if (!d->WaitSubscribed(std::chrono::seconds(60))) {
      std::fprintf(stderr, "a device did not subscribe: %d %s\n", d->status(),
                   d->error_body().c_str());
      return 1;
    }
  }
  std::vector<std::string> conversations;
  for (int m = 0; m < messages; ++m)
    conversations.push_back(NewConversation(port, keys[m % users]));

  // Steady state: every device has had its user's conversation.created
  // events (the event consumer has joined its group and caught up).
  for (int u = 0; u < users; ++u) {
    const size_t created = static_cast<size_t>(messages / users + (u < messages % users ? 1 : 0));
    for (int d = 0; d < per_user; ++d) {
      if (devices[u * per_user + d]->Events(created, std::chrono::seconds(60)).size() < created) {
        std::fprintf(stderr, "device %d of user %d missed conversation.created events\n", d, u);
        return 1;
      }
    }
  }
  std::map<std::string, uint64_t> lag_before;
  for (const auto& [le, n] : LagBuckets(c.metrics_port("connection-manager"))) lag_before[le] = n;
  const pid_t cm = c.process("connection-manager").pid();
  const pid_t gw = gateway->process.pid();
  const double cm_cpu0 = sb::bench::CpuUs(cm), gw_cpu0 = sb::bench::CpuUs(gw);
  std::vector<Clock::time_point> sent_at(messages);
  const auto interval = std::chrono::duration<double>(1.0 / absl::GetFlag(FLAGS_rate));
  const auto begin = Clock::now();
  for (int m = 0; m < messages; ++m) {
    std::this_thread::sleep_until(begin +
                                  std::chrono::duration_cast<Clock::duration>(interval * m));
    sent_at[m] = Clock::now();
    Send(port, keys[m % users], conversations[m], "msg-" + std::to_string(m));
  }
  const double send_s = std::chrono::duration<double>(Clock::now() - begin).count();

  // Each device's message.created events, by content.
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  std::vector<double> every, slowest;
  int missing = 0;
  for (int m = 0; m < messages; ++m) {
    const int u = m % users;
    const std::string content = "msg-" + std::to_string(m);
    double worst = 0;
    for (int d = 0; d < per_user; ++d) {
      auto& device = *devices[u * per_user + d];
      bool found = false;
      while (!found) {
        for (const auto& e : device.Events(0, std::chrono::milliseconds(0))) {
          if (e.type == "message.created" && e.data["message"]["content"] == content) {
            const double ms = Ms(e.arrived - sent_at[m]);
            every.push_back(ms);
            worst = std::max(worst, ms);
            found = true;
            break;
          }
        }
        if (found || Clock::now() > deadline) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      if (!found) ++missing;
    }
    slowest.push_back(worst);
  }
  const double cm_cpu = sb::bench::CpuUs(cm) - cm_cpu0, gw_cpu = sb::bench::CpuUs(gw) - gw_cpu0;
  const auto lag_after = LagBuckets(c.metrics_port("connection-manager"));
  std::string lag;
  for (const auto& [le, n] : lag_after) {
    lag += "    le=" + le + ": " + std::to_string(n - lag_before[le]) + "\n";
  }
  devices.clear();

  // 2. Send -> first token.
  std::vector<double> first_token;
  const std::string key = keys[0];
  for (int i = 0; i < absl::GetFlag(FLAGS_first_token_samples); ++i) {
    const std::string conversation = NewConversation(port, key);
    const auto t0 = Clock::now();
    const std::string stream = Send(port, key, conversation, "first token " + std::to_string(i));
    std::string body;
    Clock::time_point at{};
    auto r = sb::http::FetchStreaming({.port = port,
                                       .target = stream,
                                       .headers = {{"x-api-key", key}},
                                       .timeout = std::chrono::seconds(30)},
                                      [&](std::string_view piece) {
                                        body.append(piece);
                                        if (body.find("content_block_delta") == std::string::npos) {
                                          return true;
                                        }
                                        at = Clock::now();
                                        return false;
                                      });
    if (!r.ok() || at == Clock::time_point{}) {
      std::fprintf(stderr, "stream %s: no first token (%s)\n", stream.c_str(),
                   r.ok() ? body.substr(0, 300).c_str() : r.status().ToString().c_str());
      return 1;
    }
    first_token.push_back(Ms(at - t0));
  }

  std::printf(
      "| devices | messages (sends/s) | deliveries | missing | send -> device p50 / p99 / max "
      "| each message's slowest device p50 / p99 | CPU connection-manager / gateway |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  std::printf(
      "| %d (%d users x %d) | %d (%.1f) | %zu | %d | %.1f / %.1f / %.1f ms | %.1f / %.1f ms "
      "| %.2f / %.2f s (%.0f%% / %.0f%% of a core) |\n",
      users * per_user, users, per_user, messages, messages / send_s, every.size(), missing,
      Percentile(every, 0.5), Percentile(every, 0.99), Percentile(every, 1.0),
      Percentile(slowest, 0.5), Percentile(slowest, 0.99), cm_cpu / 1e6, gw_cpu / 1e6,
      100 * cm_cpu / 1e6 / send_s, 100 * gw_cpu / 1e6 / send_s);
  std::printf(
      "\n| send -> first token through chat | samples | p50 | p99 | max "
      "|\n|---|---|---|---|---|\n");
  std::printf(
      "| POST .../messages, then GET its stream_url | %zu | %.1f ms | %.1f ms | %.1f ms |\n",
      first_token.size(), Percentile(first_token, 0.5), Percentile(first_token, 0.99),
      Percentile(first_token, 1.0));
  std::printf(
      "\nThe fan-out phase's events (message.created and .completed) in connection-manager's "
      "commit -> indexed histogram (cumulative, seconds):\n\n%s",
      lag.c_str());
  return missing == 0 ? 0 : 1;
}
