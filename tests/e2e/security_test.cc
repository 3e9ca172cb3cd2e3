// End-to-end checks of the hardened edge and of API keys on the real
// cluster: no body is read without a valid key; unfinished headers are cut
// off while real requests go on; mistyped keys are refused without a
// database look-up; a flood of well-formed unknown keys from one address is
// refused with 429 once its look-ups are spent; a revoked key stops working
// on every gateway within a second; list-keys shows ids and prefixes,
// never secrets; a service picks up renewed certificates without a
// restart.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <thread>

#include "core/api_key.h"
#include "core/crypto.h"
#include "e2e/e2e_helpers.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "sbadmin/admin.h"
#include "testing/raw_client.h"

namespace sb::testing {
namespace {

using namespace std::chrono_literals;

std::string WellFormedUnknownKey() {
  // A valid ULID shape and a valid check: only the database can tell.
  return FormatApiKey("01JD00000000000000000000ZZ", RandomHex(16));
}

int ModelsStatus(int port, const std::string& key) {
  auto r = http::Fetch({.port = port, .target = "/v1/models", .headers = {{"x-api-key", key}}});
  return r.ok() ? r->status : -1;
}

// A request without a key that announces a 4 MiB body and sends none of it
// is answered 401 at once: the gateway never waits for (or buffers) a body
// it would refuse.
TEST(EdgeTest, NoBodyIsReadBeforeTheKeyIsChecked) {
  RawClient c(g_cluster->http_port());
  c.Send(
      "POST /v1/messages HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
      "Content-Length: 4194304\r\n\r\n");
  bool closed = false;
  const std::string got = c.ReadToClose(&closed);
  EXPECT_EQ(got.rfind("HTTP/1.1 401", 0), 0u) << got;
  EXPECT_NE(got.find("authentication_error"), std::string::npos) << got;
  EXPECT_TRUE(closed) << "the unread body means the connection closes after the answer";
}

// Slowloris on a gateway with a 1 s header deadline: connections that
// never finish their headers are closed, and a real request made
// meanwhile is served.
TEST(EdgeTest, UnfinishedHeadersAreCutOffWhileRealRequestsGoOn) {
  auto gw = g_cluster->StartGateway("gateway-slowloris", {"--http_header_timeout_seconds=1"});
  ASSERT_TRUE(gw.ok()) << gw.status();
  std::vector<std::unique_ptr<RawClient>> slow;
  for (int i = 0; i < 50; ++i) {
    slow.push_back(std::make_unique<RawClient>(gw->http_port));
    slow.back()->Send("POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-");
  }
  EXPECT_EQ(ModelsStatus(gw->http_port, g_cluster->api_key()), 200);
  int closed_count = 0;
  for (auto& c : slow) {
    bool closed = false;
    c->ReadToClose(&closed);
    closed_count += closed ? 1 : 0;
  }
  EXPECT_EQ(closed_count, 50) << "every unfinished request is closed by the header deadline";
  // The timer closes the socket, then the read's handler counts it: a client
  // may see the close first.
  const std::string series = "sb_http_refused_total{listener=\"api\",reason=\"header_timeout\"}";
  for (int i = 0; i < 40 && MetricValue(gw->metrics_port, series) < 50; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_GE(MetricValue(gw->metrics_port, series), 50);
}

TEST(KeysTest, AMistypedKeyIsRefusedWithoutADatabaseLookup) {
  const int metrics = g_cluster->metrics_port("gateway");
  std::string typo = g_cluster->api_key();
  typo[10] = typo[10] == 'A' ? 'B' : 'A';
  const double lookups = MetricValue(metrics, "sb_gateway_key_lookups_total");
  ExpectError(Post("/v1/messages", MessagesBody("hi", false), typo), 401, "authentication_error");
  auto openai = http::Fetch({.port = g_cluster->http_port(),
                             .target = "/v1/models",
                             .headers = {{"authorization", "Bearer " + typo}}});
  ASSERT_TRUE(openai.ok());
  EXPECT_EQ(openai->status, 401);
  EXPECT_EQ(MetricValue(metrics, "sb_gateway_key_lookups_total"), lookups);
  EXPECT_GE(MetricValue(metrics, "sb_gateway_auth_total{result=\"checksum\"}"), 2);
}

// Well-formed keys that exist nowhere each cost a look-up; one address
// gets a burst of them (20, then one a second here), then 429s, and the
// database is spared.
TEST(KeysTest, AFloodOfUnknownKeysFromOneAddressIsRateLimited) {
  // One look-up a second after the burst: the bounds below hold even if a
  // loaded machine takes seconds over the 100 requests.
  auto gw = g_cluster->StartGateway("gateway-keyflood", {"--auth_lookups_per_second_per_ip=1"});
  ASSERT_TRUE(gw.ok()) << gw.status();
  ASSERT_EQ(ModelsStatus(gw->http_port, g_cluster->api_key()), 200);  // now cached
  int unauthorized = 0, limited = 0;
  for (int i = 0; i < 100; ++i) {
    const int status = ModelsStatus(gw->http_port, WellFormedUnknownKey());
    unauthorized += status == 401 ? 1 : 0;
    limited += status == 429 ? 1 : 0;
  }
  std::printf(
      "[figure] 100 unknown keys from one address: %d answered 401 after a look-up, "
      "%d refused 429 without one; look-ups made: %.0f\n",
      unauthorized, limited, MetricValue(gw->metrics_port, "sb_gateway_key_lookups_total"));
  EXPECT_EQ(unauthorized + limited, 100);
  EXPECT_GE(limited, 70);
  EXPECT_LE(MetricValue(gw->metrics_port, "sb_gateway_key_lookups_total"), 31);
  // The flood evicted nothing: the real key is still served from the
  // cache, even to the flooding address.
  EXPECT_EQ(ModelsStatus(gw->http_port, g_cluster->api_key()), 200);
}

// A key in use (so cached by every gateway) is revoked with sbadmin's
// code; both gateways refuse it within a second, far inside the minute a
// cached key used to live.
TEST(KeysTest, ARevokedKeyStopsWorkingOnEveryGatewayWithinASecond) {
  const std::string key = KeyOfNewOrg("revoke-me");
  auto second = g_cluster->StartGateway("gateway-revoke");
  ASSERT_TRUE(second.ok()) << second.status();
  const std::vector<int> ports = {g_cluster->http_port(), second->http_port};
  for (int port : ports) ASSERT_EQ(ModelsStatus(port, key), 200);

  admin::Admin admin(g_cluster->infra().pg_uri());
  auto keys = admin.ListKeys("revoke-me");
  ASSERT_TRUE(keys.ok()) << keys.status();
  ASSERT_EQ(keys->size(), 1u);
  const admin::KeyInfo& info = (*keys)[0];
  EXPECT_EQ(key.rfind(info.prefix, 0), 0u) << "the prefix is the start of the key";
  EXPECT_LT(info.prefix.size(), key.size() - 30) << "the prefix gives away almost no secret";
  EXPECT_EQ(ParseApiKey(key).key_id, info.id);
  EXPECT_EQ(info.revoked_at, "");

  const auto revoked_at = std::chrono::steady_clock::now();
  ASSERT_TRUE(admin.RevokeKey(info.id).ok());
  for (int port : ports) {
    while (ModelsStatus(port, key) != 401 && std::chrono::steady_clock::now() - revoked_at < 5s) {
      std::this_thread::sleep_for(10ms);
    }
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - revoked_at)
                        .count();
    std::printf("[figure] gateway on port %d refuses the revoked key %lld ms after revoke-key\n",
                port, static_cast<long long>(ms));
    EXPECT_EQ(ModelsStatus(port, key), 401);
    EXPECT_LT(ms, 5000) << "the cache alone would have kept the key for 60 s";
  }
  keys = admin.ListKeys("revoke-me");
  ASSERT_TRUE(keys.ok());
  EXPECT_NE((*keys)[0].revoked_at, "");
  EXPECT_EQ(admin.ListKeys("no-such-org").status().code(), absl::StatusCode::kNotFound);
}

// A service re-reads its TLS files: after its CA and certificate are
// replaced by a new CA's (a rotation), a client of the new CA is served
// without a restart, and one of the old CA no longer is.
TEST(ServiceIdentityTest, RenewedCertificatesAreUsedWithoutARestart) {
  const std::string dir = g_cluster->infra().dir() + "/rotating-tls";
  const std::string next = g_cluster->infra().dir() + "/rotating-tls-next";
  std::string out;
  ASSERT_EQ(RunCommand({Infra::SourceDir() + "/tools/certs", dir}, &out), 0) << out;
  ASSERT_EQ(RunCommand({Infra::SourceDir() + "/tools/certs", next}, &out), 0) << out;
  const int port = FreePort();
  // No Kafka: no audit trail, so no audit key, and this instance stays out of
  // the cluster safety's audit consumer group (safety-audit).
  Process safety(
      "safety-rotating",
      {Infra::BuildDir() + "/services/safety/safety", "--grpc_port=" + std::to_string(port),
       "--metrics_port=" + std::to_string(FreePort()), "--tls_ca=" + dir + "/ca.crt",
       "--tls_cert=" + dir + "/safety.crt", "--tls_key=" + dir + "/safety.key",
       "--tls_reload_seconds=1", "--pg=" + g_cluster->infra().pg_uri(), "--kafka_brokers="},
      g_cluster->infra().dir() + "/safety-rotating.log");
  const std::string address = "127.0.0.1:" + std::to_string(port);
  auto health = [&](const std::string& tls_dir) {
    // A fresh channel each time: a new handshake.
    auto channel =
        grpcx::Dial(address, "safety",
                    {tls_dir + "/ca.crt", tls_dir + "/operator.crt", tls_dir + "/operator.key", 1});
    auto stub = grpc::health::v1::Health::NewStub(channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    grpc::health::v1::HealthCheckResponse resp;
    return stub->Check(&ctx, {}, &resp).error_code();
  };
  bool up = false;
  for (int i = 0; i < 100 && !(up = health(dir) == grpc::StatusCode::OK); ++i) {
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(up) << Tail(g_cluster->infra().dir() + "/safety-rotating.log", 20);
  EXPECT_EQ(health(next), grpc::StatusCode::UNAVAILABLE) << "another CA is not trusted yet";

  // The rotation, as an operator (or Kubernetes) would write it.
  for (const char* f : {"ca.crt", "safety.crt", "safety.key"}) {
    std::filesystem::copy_file(next + "/" + f, dir + "/" + f + ".new",
                               std::filesystem::copy_options::overwrite_existing);
    std::filesystem::rename(dir + "/" + f + ".new", dir + "/" + f);
  }
  const auto rotated = std::chrono::steady_clock::now();
  grpc::StatusCode now = grpc::StatusCode::UNAVAILABLE;
  while ((now = health(next)) != grpc::StatusCode::OK &&
         std::chrono::steady_clock::now() - rotated < 15s) {
    std::this_thread::sleep_for(200ms);
  }
  EXPECT_EQ(now, grpc::StatusCode::OK) << "the new CA's client is served without a restart";
  EXPECT_TRUE(safety.running());
}

}  // namespace
}  // namespace sb::testing
