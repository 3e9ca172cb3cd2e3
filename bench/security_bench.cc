// Security figures (issue 14), in one run on throwaway clusters on loopback
// (tests/e2e's Cluster):
//
//   1. mTLS on the hot path: the gateway's req/s and latency at c=50, and
//      the CPU the whole platform spends per request, with the services
//      talking plaintext and mutual TLS, alternating, two rounds;
//   2. slow clients without a key (from 127.0.0.2; the real client is
//      127.0.0.1): 500 connections that never finish
//      their headers, and 500 that announce a 4 MiB body and trickle it:
//      the gateway's extra memory, and the latency of a real request made
//      meanwhile; with --old_gateway (a gateway binary from before this
//      work), the same trickled uploads against it, for the before figure;
//   3. a flood of made-up keys from one address: how many reach the
//      database, and a real request's latency meanwhile;
//   4. revocation: how long a revoked, cached key keeps working, on this
//      gateway and (with --old_gateway) on the old one.
//
//   ninja -C build security_bench &&
//     build/bench/security_bench --load=bench/build/bench/gateway_load
//       [--old_gateway=/path/to/old/gateway]
//
// Prints Markdown for bench/RESULTS.md.
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "bench_support.h"
#include "core/api_key.h"
#include "core/crypto.h"
#include "e2e/cluster.h"
#include "http/http_client.h"
#include "sbadmin/admin.h"

ABSL_FLAG(std::string, load, "bench/build/bench/gateway_load", "The gateway_load binary");
ABSL_FLAG(double, duration_s, 10, "Each req/s run's measured duration");
ABSL_FLAG(int, connections, 500, "Slow connections per attack");
ABSL_FLAG(double, attack_s, 15, "How long each slow-client attack lasts");
ABSL_FLAG(std::string, old_gateway, "", "A gateway binary from before issue 14 (before figures)");
ABSL_FLAG(std::string, sections, "tls,slow,flood,revoke", "Which figures to measure");

namespace {

using Clock = std::chrono::steady_clock;
using sb::testing::Cluster;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

std::unique_ptr<Cluster> StartCluster(bool tls) {
  auto c = Cluster::Start({.tls = tls});
  if (!c.ok()) {
    std::fprintf(stderr, "%s\n", c.status().ToString().c_str());
    std::exit(1);
  }
  return std::move(*c);
}

double PlatformCpuUs(Cluster& c, const std::vector<pid_t>& extra) {
  double sum = 0;
  for (const auto& s : Cluster::ServiceNames()) sum += sb::bench::CpuUs(c.process(s).pid());
  for (pid_t p : extra) sum += sb::bench::CpuUs(p);
  return sum;
}

void MutualTls() {
  std::printf(
      "\n| run (c=50, %s) | req/s | p50 ms | p99 ms | errors | gateway CPU µs/req | all services' "
      "CPU µs/req |\n|---|---|---|---|---|---|---|\n",
      "8-token replies, one worker");
  for (int round = 1; round <= 2; ++round) {
    for (bool tls : {false, true}) {
      auto c = StartCluster(tls);
      auto worker = c->StartWorker("bench-fast", "sim-fast",
                                   {"--tokens_per_second=100000", "--max_num_seqs=256"});
      if (!worker.ok()) std::exit(1);
      const auto& gw = c->process("gateway");
      // Warm the connections (and the TLS sessions) first.
      (void)sb::bench::Load(absl::GetFlag(FLAGS_load), c->http_port(), c->api_key(), "sim-fast", 50,
                            2);
      const double answered0 =
          sb::bench::MetricSum(c->metrics_port("gateway"), "sb_gateway_responses_total");
      const double gw0 = sb::bench::CpuUs(gw.pid());
      const double all0 = PlatformCpuUs(*c, {worker->process.pid()});
      auto r = sb::bench::Load(absl::GetFlag(FLAGS_load), c->http_port(), c->api_key(), "sim-fast",
                               50, absl::GetFlag(FLAGS_duration_s));
      const double n =
          sb::bench::MetricSum(c->metrics_port("gateway"), "sb_gateway_responses_total") -
          answered0;
      std::printf("| %s (round %d) | %.0f | %.2f | %.2f | %lld | %.0f | %.0f |\n",
                  tls ? "mutual TLS" : "plaintext", round, r.value("rps", 0.0),
                  r.value("p50_ms", 0.0), r.value("p99_ms", 0.0),
                  static_cast<long long>(r.value("errors", 0)),
                  (sb::bench::CpuUs(gw.pid()) - gw0) / n,
                  (PlatformCpuUs(*c, {worker->process.pid()}) - all0) / n);
      std::fflush(stdout);
      worker->process.Stop(2000);
    }
  }
}

// From 127.0.0.2: the attacker is another address than the real client's
// (127.0.0.1), as it would be, so per-address caps can tell them apart.
int Connect(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in from{};
  from.sin_family = AF_INET;
  from.sin_addr.s_addr = htonl(INADDR_LOOPBACK + 1);
  ::bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof from);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  ::fcntl(fd, F_SETFL, O_NONBLOCK);
  return fd;
}

struct AttackResult {
  double peak_extra_mib = 0;
  double legit_p50_ms = 0, legit_max_ms = 0;
  int legit_failed = 0;
  int still_open = 0;  // attack connections the server had not closed at the end
};

// `connections` clients send `head`, then `piece` every `every`, for
// attack_s; meanwhile a real request (`legit`) every 250 ms and the
// gateway's RSS.
AttackResult Attack(pid_t gateway, int port, const std::string& head, const std::string& piece,
                    std::chrono::milliseconds every, const std::function<int()>& legit) {
  const double rss0 = sb::bench::RssKib(gateway);
  std::vector<int> fds;
  for (int i = 0; i < absl::GetFlag(FLAGS_connections); ++i) {
    int fd = Connect(port);
    if (fd >= 0 && ::send(fd, head.data(), head.size(), MSG_NOSIGNAL) >= 0) fds.push_back(fd);
  }
  std::atomic<bool> stop{false};
  std::thread trickle([&] {
    while (!stop) {
      for (int& fd : fds) {
        if (fd < 0) continue;
        char sink[4096];
        const ssize_t got = ::recv(fd, sink, sizeof sink, MSG_DONTWAIT);
        if (got == 0 || ::send(fd, piece.data(), piece.size(), MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
          if (got == 0 || errno != EAGAIN) {
            ::close(fd);
            fd = -1;
          }
        }
      }
      std::this_thread::sleep_for(every);
    }
  });
  AttackResult out;
  std::vector<double> latencies;
  const auto end = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                      std::chrono::duration<double>(absl::GetFlag(FLAGS_attack_s)));
  while (Clock::now() < end) {
    out.peak_extra_mib = std::max(out.peak_extra_mib, (sb::bench::RssKib(gateway) - rss0) / 1024);
    const auto t0 = Clock::now();
    const int status = legit();
    latencies.push_back(Ms(Clock::now() - t0));
    if (status != 200) ++out.legit_failed;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  stop = true;
  trickle.join();
  for (int fd : fds) {
    if (fd >= 0) {
      ++out.still_open;
      ::close(fd);
    }
  }
  std::sort(latencies.begin(), latencies.end());
  out.legit_p50_ms = latencies[latencies.size() / 2];
  out.legit_max_ms = latencies.back();
  return out;
}

void PrintAttack(const char* gateway, const char* attack, const AttackResult& r) {
  std::printf("| %s | %s | %.1f | %.1f / %.1f | %d | %d |\n", gateway, attack, r.peak_extra_mib,
              r.legit_p50_ms, r.legit_max_ms, r.legit_failed, r.still_open);
  std::fflush(stdout);
}

// A gateway from before this work: it predates mutual TLS, so it reaches
// no backend here, but it authenticates (PostgreSQL) and buffers bodies
// exactly as it did.
sb::testing::Process StartOldGateway(Cluster& c, int http_port, int metrics_port) {
  std::vector<std::string> argv = {absl::GetFlag(FLAGS_old_gateway),
                                   "--http_port=" + std::to_string(http_port),
                                   "--metrics_port=" + std::to_string(metrics_port),
                                   "--grpc_port=" + std::to_string(sb::testing::FreePort()),
                                   "--pg=" + c.infra().pg_uri(),
                                   "--redis_port=" + std::to_string(c.infra().redis_port())};
  sb::testing::Process p("gateway-old", argv, c.infra().dir() + "/gateway-old.log");
  for (int i = 0; i < 100; ++i) {
    auto r = sb::http::Fetch({.port = http_port, .target = "/healthz"});
    if (r.ok() && r->status == 200) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return p;
}

void SlowClients(Cluster& c) {
  const std::string message =
      R"({"model":"sim-small","max_tokens":1,"messages":[{"role":"user","content":"hi"}]})";
  auto real_request = [&](int port) {
    return [&c, port, message] {
      auto r = sb::http::Fetch(
          {.port = port,
           .method = "POST",
           .target = "/v1/messages",
           .headers = {{"x-api-key", c.api_key()}, {"content-type", "application/json"}},
           .body = message,
           .timeout = std::chrono::seconds(10)});
      return r.ok() ? r->status : -1;
    };
  };
  auto healthz = [](int port) {
    return [port] {
      auto r = sb::http::Fetch(
          {.port = port, .target = "/healthz", .timeout = std::chrono::seconds(10)});
      return r.ok() ? r->status : -1;
    };
  };
  const std::string slow_head = "POST /v1/messages HTTP/1.1\r\nHost: x\r\n";
  const std::string upload_head =
      "POST /v1/messages HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
      "Content-Length: 4194304\r\n\r\n";
  const std::string kib(1024, '[');
  std::printf(
      "\n| gateway | %d connections, no key, %.0f s | peak extra RSS MiB | real request p50 / "
      "max ms | real requests failed | attack connections still open at the end |\n"
      "|---|---|---|---|---|---|\n",
      absl::GetFlag(FLAGS_connections), absl::GetFlag(FLAGS_attack_s));
  for (bool per_ip_cap : {true, false}) {
    std::vector<std::string> flags;
    if (!per_ip_cap) flags.push_back("--http_max_connections_per_ip=0");
    auto g = c.StartGateway(per_ip_cap ? "gateway-slow" : "gateway-slow-nocap", flags);
    if (!g.ok()) std::exit(1);
    const char* name = per_ip_cap ? "this one (defaults)" : "this one, no per-address cap";
    PrintAttack(name, "headers: 1 byte a second, never finished",
                Attack(g->process.pid(), g->http_port, slow_head, "x", std::chrono::seconds(1),
                       real_request(g->http_port)));
    PrintAttack(name, "4 MiB body announced, 1 KiB every 100 ms",
                Attack(g->process.pid(), g->http_port, upload_head, kib,
                       std::chrono::milliseconds(100), real_request(g->http_port)));
    PrintAttack(name, "(the same, timing /healthz)",
                Attack(g->process.pid(), g->http_port, upload_head, kib,
                       std::chrono::milliseconds(100), healthz(g->http_port)));
    g->process.Stop(2000);
  }
  if (!absl::GetFlag(FLAGS_old_gateway).empty()) {
    const int port = sb::testing::FreePort();
    auto old = StartOldGateway(c, port, sb::testing::FreePort());
    PrintAttack(
        "before (e87f072)", "4 MiB body announced, 1 KiB every 100 ms (timing /healthz)",
        Attack(old.pid(), port, upload_head, kib, std::chrono::milliseconds(100), healthz(port)));
    old.Stop(2000);
  }
}

void KeyFlood(Cluster& c) {
  auto g = c.StartGateway("gateway-flood");
  if (!g.ok()) std::exit(1);
  const int port = g->http_port;
  auto models = [&](const std::string& key) {
    auto r =
        sb::http::Fetch({.port = port, .target = "/v1/models", .headers = {{"x-api-key", key}}});
    return r.ok() ? r->status : -1;
  };
  (void)models(c.api_key());  // cached, as a real client's key is
  std::atomic<bool> stop{false};
  std::atomic<int> sent{0}, refused_401{0}, refused_429{0};
  std::vector<std::thread> flood;
  for (int t = 0; t < 4; ++t) {
    flood.emplace_back([&] {
      while (!stop) {
        const int s = models(sb::FormatApiKey("01JD00000000000000000000ZZ", sb::RandomHex(16)));
        ++sent;
        if (s == 401) ++refused_401;
        if (s == 429) ++refused_429;
      }
    });
  }
  std::vector<double> latencies;
  const auto end = Clock::now() + std::chrono::seconds(10);
  while (Clock::now() < end) {
    const auto t0 = Clock::now();
    (void)models(c.api_key());
    latencies.push_back(Ms(Clock::now() - t0));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  stop = true;
  for (auto& t : flood) t.join();
  std::sort(latencies.begin(), latencies.end());
  const double lookups = sb::bench::MetricSum(g->metrics_port, "sb_gateway_key_lookups_total");
  std::printf(
      "\n| key flood, 10 s, 4 clients on one address | made-up keys sent | 401 (looked up) | 429 "
      "(no look-up) | PostgreSQL look-ups | real key's request p50 / max ms |\n"
      "|---|---|---|---|---|---|\n| well-formed keys, valid checksums | %d | %d | %d | %.0f | "
      "%.2f / %.2f |\n",
      sent.load(), refused_401.load(), refused_429.load(), lookups, latencies[latencies.size() / 2],
      latencies.back());
  g->process.Stop(2000);
}

double SecondsUntilRefused(int port, const std::string& key, Clock::time_point since,
                           int accepted_status) {
  while (Clock::now() - since < std::chrono::seconds(90)) {
    auto r =
        sb::http::Fetch({.port = port, .target = "/v1/models", .headers = {{"x-api-key", key}}});
    if (r.ok() && r->status == 401) return Ms(Clock::now() - since) / 1000;
    if (r.ok() && r->status != accepted_status) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return -1;
}

void Revocation(Cluster& c) {
  sb::admin::Admin admin(c.infra().pg_uri());
  (void)admin.CreateOrg("bench-revoke", "bench-revoke");
  const std::string key = admin.CreateKey("bench-revoke", "").value();
  const std::string id = sb::ParseApiKey(key).key_id;
  auto models = [&](int port) {
    auto r =
        sb::http::Fetch({.port = port, .target = "/v1/models", .headers = {{"x-api-key", key}}});
    return r.ok() ? r->status : -1;
  };
  // The old gateway reaches no scheduler here: a key it accepts is 503
  // (overloaded, in the OpenAI shape /v1/models answers without
  // anthropic-version).
  std::optional<sb::testing::Process> old;
  int old_port = 0;
  if (!absl::GetFlag(FLAGS_old_gateway).empty()) {
    old_port = sb::testing::FreePort();
    old.emplace(StartOldGateway(c, old_port, sb::testing::FreePort()));
    std::printf("\nold gateway accepts the key before revocation: %d\n", models(old_port));
  }
  std::printf("this gateway accepts the key before revocation: %d\n", models(c.http_port()));
  const auto t0 = Clock::now();
  if (!admin.RevokeKey(id).ok()) std::exit(1);
  std::printf("\n| gateway | a cached key refused after revoke-key, s |\n|---|---|\n");
  std::printf("| this one | %.3f |\n", SecondsUntilRefused(c.http_port(), key, t0, 200));
  if (old)
    std::printf("| before (e87f072) | %.3f |\n", SecondsUntilRefused(old_port, key, t0, 503));
  if (old) old->Stop(2000);
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string sections = absl::GetFlag(FLAGS_sections);
  auto wanted = [&](const char* s) { return sections.find(s) != std::string::npos; };
  if (wanted("tls")) MutualTls();
  auto c = StartCluster(true);
  if (wanted("slow")) SlowClients(*c);
  if (wanted("flood")) KeyFlood(*c);
  if (wanted("revoke")) Revocation(*c);
  return 0;
}
