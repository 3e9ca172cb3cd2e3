// Load spreads over replicas (issue 12): one client channel to a target that
// resolves to three replicas (the multi-address form a headless Service's
// dns:/// name resolves to) sends each about a third of its calls, with the
// channel configuration every Switchboard client uses (grpcx::Dial).
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "grpcx/server.h"
#include "grpcx/tls.h"
#include "switchboard/billing/v1/billing.grpc.pb.h"

namespace sb {
namespace {

namespace bpb = switchboard::billing::v1;

// A replica that only counts the calls it serves.
class CountingBilling final : public bpb::Billing::Service {
 public:
  grpc::Status GetUsage(grpc::ServerContext*, const bpb::GetUsageRequest*,
                        bpb::GetUsageResponse*) override {
    calls_.fetch_add(1);
    return grpc::Status::OK;
  }
  int calls() const { return calls_.load(); }

 private:
  std::atomic<int> calls_{0};
};

TEST(LoadSpreadTest, ThreeReplicasBehindOneTargetEachGetAThird) {
  absl::SetFlag(&FLAGS_insecure_internal, true);
  constexpr int kReplicas = 3;
  constexpr int kCalls = 3000;
  std::vector<std::unique_ptr<CountingBilling>> services;
  std::vector<std::unique_ptr<ServiceRunner>> runners;
  std::string target = "ipv4:";
  for (int i = 0; i < kReplicas; ++i) {
    services.push_back(std::make_unique<CountingBilling>());
    runners.push_back(std::make_unique<ServiceRunner>("billing"));
    runners.back()->AddService(services.back().get());
    ASSERT_TRUE(runners.back()->Start("127.0.0.1:0", 0).ok());
    target += (i > 0 ? "," : "") + std::string("127.0.0.1:") +
              std::to_string(runners.back()->grpc_port());
  }
  auto stub = bpb::Billing::NewStub(grpcx::Dial(target, grpcx::kBilling, grpcx::TlsFiles{}));
  for (int i = 0; i < kCalls; ++i) {
    grpc::ClientContext ctx;
    bpb::GetUsageResponse resp;
    ASSERT_TRUE(stub->GetUsage(&ctx, bpb::GetUsageRequest(), &resp).ok()) << "call " << i;
  }
  const double even = static_cast<double>(kCalls) / kReplicas;
  std::string shares;
  for (int i = 0; i < kReplicas; ++i) {
    const int calls = services[i]->calls();
    shares += (i > 0 ? ", " : "") + std::to_string(calls);
    EXPECT_GE(calls, even * 0.85) << "replica " << i;
    EXPECT_LE(calls, even * 1.15) << "replica " << i;
  }
  std::printf("[ figure   ] %d calls over %d replicas through one channel: %s\n", kCalls, kReplicas,
              shares.c_str());
  for (auto& r : runners) r->Shutdown(absl::ZeroDuration());
}

}  // namespace
}  // namespace sb
