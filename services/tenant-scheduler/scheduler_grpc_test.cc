// Leases end to end on one process: the scheduler's service on a real gRPC
// server (plaintext), and a worker's side of them (LeaseReporter) reporting
// to it, without engines. Time is the real clock except where Sweep is
// handed a later one.
#include "tenant-scheduler/scheduler_grpc.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <future>
#include <mutex>
#include <thread>

#include "absl/time/clock.h"
#include "inference-worker/lease_reporter.h"

namespace sb::scheduler {
namespace {

namespace inf = switchboard::inference::v1;
namespace sched = switchboard::scheduler::v1;
using std::chrono_literals::operator""ms;

class LeaseTest : public ::testing::Test {
 protected:
  void Start(QueueOptions options, SchedulerServiceImpl*& out_service,
             WorkerRegistry*& out_registry, SchedulerHooks hooks = {}) {
    registries_.push_back(std::make_unique<WorkerRegistry>(absl::Minutes(1)));
    services_.push_back(std::make_unique<SchedulerServiceImpl>(
        *registries_.back(), absl::Milliseconds(100), options, std::move(hooks)));
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(services_.back().get());
    servers_.push_back(builder.BuildAndStart());
    stubs_.push_back(sched::TenantScheduler::NewStub(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials())));
    out_service = services_.back().get();
    out_registry = registries_.back().get();
  }
  void TearDown() override {
    for (auto& s : servers_) s->Shutdown(std::chrono::system_clock::now() + 1000ms);
  }

  sched::RegisterWorkerResponse Register(size_t replica, const std::string& worker, int capacity) {
    sched::RegisterWorkerRequest req;
    req.set_worker_id(worker);
    req.set_address("127.0.0.1:1");
    req.add_models("m");
    req.set_max_concurrency(capacity);
    sched::RegisterWorkerResponse resp;
    grpc::ClientContext ctx;
    EXPECT_TRUE(stubs_[replica]->RegisterWorker(&ctx, req, &resp).ok());
    return resp;
  }

  static inf::GenerateRequest Request(const std::string& id, const std::string& org = "acme") {
    inf::GenerateRequest r;
    r.set_request_id(id);
    r.set_org_id(org);
    r.set_model("m");
    r.set_max_tokens(8);
    auto* m = r.add_messages();
    m->set_role("user");
    m->add_content()->set_text("hello there");
    return r;
  }

  struct Pending {
    grpc::ClientContext ctx;
    inf::GenerateRequest req;
    sched::Lease lease;
    std::promise<grpc::Status> done;
    std::shared_future<grpc::Status> result = done.get_future().share();
  };
  std::shared_ptr<Pending> Admit(size_t replica, const std::string& id,
                                 const std::string& org = "acme") {
    auto p = std::make_shared<Pending>();
    p->req = Request(id, org);
    p->ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    stubs_[replica]->async()->Admit(&p->ctx, &p->req, &p->lease,
                                    [p](grpc::Status st) { p->done.set_value(st); });
    return p;
  }
  static bool Ready(const std::shared_ptr<Pending>& p, std::chrono::milliseconds wait) {
    return p->result.wait_for(wait) == std::future_status::ready;
  }

  std::vector<std::unique_ptr<WorkerRegistry>> registries_;
  std::vector<std::unique_ptr<SchedulerServiceImpl>> services_;
  std::vector<std::unique_ptr<grpc::Server>> servers_;
  std::vector<std::unique_ptr<sched::TenantScheduler::Stub>> stubs_;
};

TEST_F(LeaseTest, ALeaseIsForOneWorkerAndRequestAndItsEndFreesTheSlot) {
  SchedulerServiceImpl* service;
  WorkerRegistry* registry;
  Start({.max_wait = absl::Seconds(5)}, service, registry);
  const auto reg = Register(0, "w1", 1);
  ASSERT_EQ(reg.scheduler_id(), service->id());
  ASSERT_FALSE(reg.lease_key().empty());
  worker::LeaseReporter reporter("w1", absl::Milliseconds(20));
  reporter.Registered(reg.scheduler_id(), reg.lease_key(), reg.session(), stubs_[0].get());

  auto first = Admit(0, "r1");
  ASSERT_TRUE(Ready(first, 2000ms));
  ASSERT_TRUE(first->result.get().ok());
  EXPECT_EQ(first->lease.worker_id(), "w1");
  EXPECT_EQ(first->lease.model(), "m");
  const std::string lease = first->lease.lease_id();
  // Signed for w1 and r1 only.
  EXPECT_EQ(reporter.Accept(lease, "r2", absl::Now()).code(), absl::StatusCode::kPermissionDenied);
  worker::LeaseReporter other("w2");
  other.Registered(reg.scheduler_id(), reg.lease_key(), reg.session(), stubs_[0].get());
  EXPECT_EQ(other.Accept(lease, "r1", absl::Now()).code(), absl::StatusCode::kPermissionDenied);
  ASSERT_TRUE(reporter.Accept(lease, "r1", absl::Now()).ok());
  EXPECT_EQ(reporter.Accept(lease, "r1", absl::Now()).code(),
            absl::StatusCode::kFailedPrecondition);  // once

  // The worker's one slot is taken: the next request waits.
  auto second = Admit(0, "r2");
  EXPECT_FALSE(Ready(second, 300ms));
  reporter.Update(lease, 12, 5);
  EXPECT_FALSE(Ready(second, 300ms));
  reporter.Update(lease, 12, 8, /*done=*/true);
  ASSERT_TRUE(Ready(second, 2000ms)) << "the end report freed the slot";
  EXPECT_TRUE(second->result.get().ok());

  // What r1 was served is charged to its org.
  sched::GetFairnessRequest freq;
  sched::GetFairnessResponse fairness;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stubs_[0]->GetFairness(&ctx, freq, &fairness).ok());
  ASSERT_EQ(fairness.models_size(), 1);
  bool found = false;
  for (const auto& o : fairness.models(0).orgs()) {
    if (o.org_id() != "acme" || o.priority() != "interactive") continue;
    found = true;
    EXPECT_EQ(o.output_tokens_served(), 8);
    EXPECT_EQ(o.in_service(), 1);  // r2
    EXPECT_GT(o.input_tokens_served(), 0);
  }
  EXPECT_TRUE(found);
}

// The model version's safety policy pin goes with its lease, for the
// caller's output gate.
TEST_F(LeaseTest, ALeaseCarriesTheVersionsSafetyPolicyPin) {
  SchedulerServiceImpl* service;
  WorkerRegistry* registry;
  Start({.max_wait = absl::Seconds(5)}, service, registry,
        {.resolve = [](const inf::GenerateRequest& req) {
          return ResolvedModel{.model = "m",
                               .version = req.model() + "-v2",
                               .safety_policy_version = req.request_id() == "pinned" ? 4 : 0};
        }});
  Register(0, "w1", 2);
  auto pinned = Admit(0, "pinned");
  auto plain = Admit(0, "plain");
  ASSERT_TRUE(Ready(pinned, 2000ms) && Ready(plain, 2000ms));
  ASSERT_TRUE(pinned->result.get().ok());
  EXPECT_EQ(pinned->lease.version(), "m-v2");
  EXPECT_EQ(pinned->lease.safety_policy_version(), 4);
  EXPECT_EQ(plain->lease.safety_policy_version(), 0);
}

TEST_F(LeaseTest, AnUnusedLeaseExpiresAndAGivenBackOneIsFreedAtOnce) {
  SchedulerServiceImpl* service;
  WorkerRegistry* registry;
  Start({.max_wait = absl::Seconds(5), .lease_ttl = absl::Milliseconds(200)}, service, registry);
  Register(0, "w1", 1);
  auto first = Admit(0, "r1");
  ASSERT_TRUE(Ready(first, 2000ms));
  auto second = Admit(0, "r2");
  EXPECT_FALSE(Ready(second, 200ms));
  // Not yet: an unused lease gets a grace beyond its expiry.
  service->Sweep(absl::Now());
  EXPECT_FALSE(Ready(second, 200ms));
  service->Sweep(absl::Now() + absl::Seconds(3));
  ASSERT_TRUE(Ready(second, 2000ms)) << "the expired lease freed the slot";
  ASSERT_TRUE(second->result.get().ok());

  auto third = Admit(0, "r3");
  EXPECT_FALSE(Ready(third, 200ms));
  sched::ReleaseLeaseRequest release;
  release.set_lease_id(second->lease.lease_id());
  sched::ReleaseLeaseResponse released;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stubs_[0]->ReleaseLease(&ctx, release, &released).ok());
  ASSERT_TRUE(Ready(third, 2000ms)) << "the released lease freed the slot";
}

// A version's breaker hears how its requests ended from the worker's
// reports only. A lease given back unused (the holder could not reach the
// worker, or the worker refused it) or expired says nothing of the version;
// counting it a success would hide a failing version whose holders give
// back leases before the worker's failure report lands.
TEST_F(LeaseTest, TheBreakerHearsWorkerReportsNotReleasesOrExpiries) {
  std::mutex mu;
  std::vector<bool> outcomes;
  SchedulerServiceImpl* service;
  WorkerRegistry* registry;
  Start({.max_wait = absl::Seconds(5), .lease_ttl = absl::Milliseconds(100)}, service, registry,
        {.outcome = [&](const std::string& version, bool ok) {
          std::lock_guard<std::mutex> lock(mu);
          EXPECT_EQ(version, "m");
          outcomes.push_back(ok);
        }});
  const auto reg = Register(0, "w1", 4);
  worker::LeaseReporter reporter("w1", absl::Milliseconds(20));
  reporter.Registered(reg.scheduler_id(), reg.lease_key(), reg.session(), stubs_[0].get());
  auto heard = [&] {
    std::lock_guard<std::mutex> lock(mu);
    return outcomes;
  };
  auto wait_for = [&](size_t n) {
    for (int i = 0; i < 200 && heard().size() < n; ++i) std::this_thread::sleep_for(10ms);
    return heard();
  };

  auto released = Admit(0, "r1");
  auto expired = Admit(0, "r2");
  auto failed = Admit(0, "r3");
  auto served = Admit(0, "r4");
  for (const auto& p : {released, expired, failed, served}) {
    ASSERT_TRUE(Ready(p, 2000ms));
    ASSERT_TRUE(p->result.get().ok());
  }
  sched::ReleaseLeaseRequest release;
  release.set_lease_id(released->lease.lease_id());
  sched::ReleaseLeaseResponse ack;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stubs_[0]->ReleaseLease(&ctx, release, &ack).ok());
  // r3 and r4 start on the worker (their start goes with its next report
  // round); r2's lease is never used and expires.
  ASSERT_TRUE(reporter.Accept(failed->lease.lease_id(), "r3", absl::Now()).ok());
  ASSERT_TRUE(reporter.Accept(served->lease.lease_id(), "r4", absl::Now()).ok());
  reporter.Update(failed->lease.lease_id(), 5, 0);
  reporter.Update(served->lease.lease_id(), 5, 1);
  std::this_thread::sleep_for(200ms);
  service->Sweep(absl::Now() + absl::Seconds(3));
  reporter.Update(failed->lease.lease_id(), 5, 0, /*done=*/true, /*failed=*/true);
  reporter.Update(served->lease.lease_id(), 5, 3, /*done=*/true);
  // r3's failure and r4's success, in whichever order their reports land
  // (they go in one report round).
  const std::vector<bool> got = wait_for(2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(std::count(got.begin(), got.end(), false), 1);
  EXPECT_EQ(std::count(got.begin(), got.end(), true), 1);
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(heard().size(), 2u) << "a release and an expiry say nothing of the version";
}

TEST_F(LeaseTest, AStartedLeaseItsWorkerStopsListingIsFreedAfterThreeHeartbeats) {
  SchedulerServiceImpl* service;
  WorkerRegistry* registry;
  Start({.max_wait = absl::Seconds(5)}, service, registry);
  const auto reg = Register(0, "w1", 1);
  worker::LeaseReporter reporter("w1", absl::Milliseconds(20));
  reporter.Registered(reg.scheduler_id(), reg.lease_key(), reg.session(), stubs_[0].get());
  auto first = Admit(0, "r1");
  ASSERT_TRUE(Ready(first, 2000ms));
  ASSERT_TRUE(reporter.Accept(first->lease.lease_id(), "r1", absl::Now()).ok());
  std::this_thread::sleep_for(200ms);  // its start is reported
  auto second = Admit(0, "r2");
  auto beat = [&](bool list) {
    sched::HeartbeatRequest hb;
    hb.set_worker_id("w1");
    hb.set_session(reg.session());
    if (list) hb.add_leases(first->lease.lease_id());
    sched::HeartbeatResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stubs_[0]->Heartbeat(&ctx, hb, &resp).ok());
  };
  beat(true);
  beat(false);
  beat(false);
  EXPECT_FALSE(Ready(second, 200ms)) << "two missed listings are not enough";
  beat(false);
  ASSERT_TRUE(Ready(second, 2000ms)) << "the lost lease freed the slot";
}

TEST_F(LeaseTest, AnotherReplicasLeasesOnAWorkerTakeItsRoom) {
  SchedulerServiceImpl *a, *b;
  WorkerRegistry *ra, *rb;
  Start({.max_wait = absl::Seconds(5)}, a, ra);
  Start({.max_wait = absl::Seconds(5)}, b, rb);
  Register(0, "w1", 1);
  const auto reg_b = Register(1, "w1", 1);
  ASSERT_NE(a->id(), b->id());
  auto first = Admit(0, "r1");
  ASSERT_TRUE(Ready(first, 2000ms));
  // The worker tells replica B it runs replica A's lease: B has no room.
  sched::HeartbeatRequest hb;
  hb.set_worker_id("w1");
  hb.set_session(reg_b.session());
  hb.add_leases(first->lease.lease_id());
  sched::HeartbeatResponse resp;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stubs_[1]->Heartbeat(&ctx, hb, &resp).ok());
  auto second = Admit(1, "r2");
  EXPECT_FALSE(Ready(second, 300ms));
  // It ends (the next heartbeat lists nothing): B's request goes.
  hb.clear_leases();
  grpc::ClientContext ctx2;
  ASSERT_TRUE(stubs_[1]->Heartbeat(&ctx2, hb, &resp).ok());
  ASSERT_TRUE(Ready(second, 2000ms));
}

// The last slot (of 16) is kept for an org with nothing in service.
TEST_F(LeaseTest, TheReservedSlotGoesToAnOrgWithNothingInService) {
  SchedulerServiceImpl* service;
  WorkerRegistry* registry;
  Start({.max_wait = absl::Seconds(5), .reserved_slots = 1}, service, registry);
  Register(0, "w1", 16);
  std::vector<std::shared_ptr<Pending>> heavy;
  for (int i = 0; i < 15; ++i) {
    heavy.push_back(Admit(0, "h" + std::to_string(i), "heavy"));
    ASSERT_TRUE(Ready(heavy.back(), 2000ms));
  }
  auto more = Admit(0, "h15", "heavy");
  EXPECT_FALSE(Ready(more, 300ms)) << "the heavy org may not take the reserve";
  auto light = Admit(0, "l0", "light");
  ASSERT_TRUE(Ready(light, 2000ms)) << "a newcomer takes it at once";
  EXPECT_TRUE(light->result.get().ok());
}

TEST_F(LeaseTest, ANamelessOrOverloadedAdmitIsRefusedClearly) {
  SchedulerServiceImpl* service;
  WorkerRegistry* registry;
  Start({.max_wait = absl::Milliseconds(300)}, service, registry);
  auto unknown = Admit(0, "r0");
  ASSERT_TRUE(Ready(unknown, 2000ms));
  EXPECT_EQ(unknown->result.get().error_code(), grpc::StatusCode::NOT_FOUND);
  Register(0, "w1", 1);
  auto first = Admit(0, "r1");
  ASSERT_TRUE(Ready(first, 2000ms));
  auto second = Admit(0, "r2");
  ASSERT_TRUE(Ready(second, 3000ms));
  const grpc::Status st = second->result.get();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << "waited its longest: 529";
  EXPECT_EQ(st.error_message().find("w1"), std::string::npos)
      << "no worker id: " << st.error_message();
}

}  // namespace
}  // namespace sb::scheduler
