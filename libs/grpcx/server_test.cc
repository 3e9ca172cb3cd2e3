#include "grpcx/server.h"

#include "absl/flags/flag.h"
#include "grpcx/tls.h"
#include "gtest/gtest.h"
#include "http/http_client.h"

namespace sb {
namespace {

int Status(int port, const std::string& path) {
  auto r = http::Fetch({.port = port, .target = path});
  return r.ok() ? r->status : -1;
}

// /readyz follows grpc.health: ready while serving, 503 from the start of
// a drain (while in-flight calls finish), so that a readiness probe that
// cannot speak mutual TLS still takes a draining pod out of its Service.
// /healthz stays 200: the process is alive.
TEST(ServiceRunnerTest, ReadinessTurnsOffWhenTheDrainStarts) {
  absl::SetFlag(&FLAGS_insecure_internal, true);
  ServiceRunner runner("test");
  int during_drain = 0, alive_during_drain = 0;
  runner.OnDrain([&] {
    during_drain = Status(runner.metrics_port(), "/readyz");
    alive_during_drain = Status(runner.metrics_port(), "/healthz");
  });
  ASSERT_TRUE(runner.Start("127.0.0.1:0", 0).ok());
  EXPECT_EQ(Status(runner.metrics_port(), "/readyz"), 200);
  runner.Shutdown(absl::ZeroDuration());
  EXPECT_EQ(during_drain, 503);
  EXPECT_EQ(alive_during_drain, 200);
}

// Without TLS files, and without --insecure_internal, a service does not
// start, and says which flags it needs.
TEST(ServiceRunnerTest, NoTlsFilesIsAStartUpError) {
  absl::SetFlag(&FLAGS_insecure_internal, false);
  ServiceRunner runner("test");
  auto st = runner.Start("127.0.0.1:0", 0);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("--tls_ca"), std::string::npos) << st;
}

}  // namespace
}  // namespace sb
