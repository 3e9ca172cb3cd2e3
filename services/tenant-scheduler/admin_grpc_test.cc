// ModelAdmin in process: the gRPC service on a loopback port (plaintext,
// so authorization allows every call) over a registry in a real, migrated
// PostgreSQL started for the suite.
#include "tenant-scheduler/admin_grpc.h"

#include <grpcpp/grpcpp.h>

#include "core/metrics.h"
#include "core/thread_pool.h"
#include "gtest/gtest.h"
#include "storage/pg.h"
#include "support/infra.h"
#include "tenant-scheduler/breaker.h"
#include "tenant-scheduler/model_registry.h"
#include "testing/manual_clock.h"

namespace sb::scheduler {
namespace {

namespace pb = switchboard::scheduler::v1;
using sb::testing::Infra;

class ModelAdminTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto infra = Infra::Start({.postgres = true, .redis = false, .kafka = false});
    ASSERT_TRUE(infra.ok()) << infra.status();
    infra_ = std::move(*infra).release();
  }
  static void TearDownTestSuite() {
    delete infra_;
    infra_ = nullptr;
  }

  ModelAdminTest()
      : pg_(infra_->pg_uri(), 2),
        registry_(pg_, metrics_),
        pool_(2, 64),
        breaker_(clock_, Breaker::Options{}, metrics_),
        service_(registry_, pool_, &breaker_) {}

  void SetUp() override {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(port, 0);
    stub_ = pb::ModelAdmin::NewStub(grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                                        grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    server_->Shutdown();
    pool_.Stop();
  }

  std::unique_ptr<grpc::ClientContext> Context() {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    return ctx;
  }
  // A new version of the platform's safety policy: one a model version
  // may pin.
  std::string NewPlatformPolicy() {
    auto v = infra_->AddPlatformSafetyPolicy();
    EXPECT_TRUE(v.ok()) << v.status();
    return v.ok() ? std::to_string(*v) : "";
  }
  grpc::Status CreateVersion(const std::string& id, const std::string& model,
                             const std::string& config = "") {
    pb::CreateVersionRequest req;
    req.set_version(id);
    req.set_served_model(model);
    req.set_serving_config_json(config);
    pb::CreateVersionResponse resp;
    return stub_->CreateVersion(Context().get(), req, &resp);
  }

  static Infra* infra_;
  metrics::Registry metrics_;
  sb::testing::ManualClock clock_;
  PgPool pg_;
  ModelRegistry registry_;
  ThreadPool pool_;
  Breaker breaker_;
  ModelAdminServiceImpl service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<pb::ModelAdmin::Stub> stub_;
};

Infra* ModelAdminTest::infra_ = nullptr;

TEST_F(ModelAdminTest, CreatePromoteCanaryRollbackAndList) {
  {
    pb::CreateVersionRequest req;
    req.set_version("sim-small-20261101");
    req.set_served_model("sim-small");
    req.set_serving_config_json(R"({"temperature_max": 1})");
    const std::string pin = NewPlatformPolicy();
    req.set_safety_policy_version(pin);
    pb::CreateVersionResponse resp;
    auto st = stub_->CreateVersion(Context().get(), req, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
    EXPECT_EQ(resp.version().version(), "sim-small-20261101");
    EXPECT_EQ(resp.version().served_model(), "sim-small");
    EXPECT_EQ(resp.version().safety_policy_version(), pin);
    EXPECT_GT(resp.version().created_unix_ms(), 0);
  }
  ASSERT_TRUE(CreateVersion("sim-small-20261201", "sim-small").ok());
  for (const char* version : {"sim-small-20261101", "sim-small-20261201"}) {
    pb::SetAliasRequest req;
    req.set_alias("sim-small");
    req.set_version(version);
    pb::SetAliasResponse resp;
    auto st = stub_->SetAlias(Context().get(), req, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
    EXPECT_EQ(resp.alias().stable_version(), version);
  }
  ASSERT_TRUE(CreateVersion("sim-small-20270101", "sim-small").ok());
  {
    pb::SetCanaryRequest req;
    req.set_alias("sim-small");
    req.set_version("sim-small-20270101");
    req.set_weight(5);
    pb::SetCanaryResponse resp;
    auto st = stub_->SetCanary(Context().get(), req, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
    EXPECT_EQ(resp.alias().canary_version(), "sim-small-20270101");
    EXPECT_EQ(resp.alias().canary_weight(), 5);
    EXPECT_EQ(resp.alias().previous_stable_version(), "sim-small-20261101");
  }
  // The scheduler serving the call routes by the change at once.
  EXPECT_EQ(registry_.Snapshot()->FindAlias("sim-small")->canary_weight, 5);
  {
    pb::RollbackRequest req;
    req.set_alias("sim-small");
    pb::RollbackResponse resp;
    auto st = stub_->Rollback(Context().get(), req, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
    EXPECT_EQ(resp.alias().stable_version(), "sim-small-20261101");
    EXPECT_EQ(resp.alias().canary_version(), "");
    EXPECT_EQ(resp.alias().canary_weight(), 0);
  }
  // An open breaker shows in the listing.
  for (int i = 0; i < 20; ++i) breaker_.Record("sim-small-20261201", false);
  {
    pb::ListModelRegistryResponse resp;
    auto st = stub_->ListModels(Context().get(), {}, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
    ASSERT_EQ(resp.aliases_size(), 1);
    EXPECT_EQ(resp.aliases(0).alias(), "sim-small");
    EXPECT_EQ(resp.aliases(0).stable_version(), "sim-small-20261101");
    EXPECT_GT(resp.aliases(0).updated_unix_ms(), 0);
    ASSERT_EQ(resp.versions_size(), 3);
    EXPECT_EQ(resp.versions(0).version(), "sim-small-20261101");
    EXPECT_EQ(resp.versions(0).serving_config_json(), R"({"temperature_max": 1})");
    EXPECT_EQ(resp.versions(0).breaker(), pb::BREAKER_STATE_CLOSED);
    EXPECT_EQ(resp.versions(1).version(), "sim-small-20261201");
    EXPECT_EQ(resp.versions(1).breaker(), pb::BREAKER_STATE_OPEN);
    EXPECT_GT(resp.loaded_unix_ms(), 0);
  }
}

TEST_F(ModelAdminTest, AnUnknownVersionIsNotFound) {
  pb::SetAliasRequest req;
  req.set_alias("sim-small");
  req.set_version("sim-small-19990101");
  pb::SetAliasResponse resp;
  auto st = stub_->SetAlias(Context().get(), req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(st.error_message(),
            "no model version 'sim-small-19990101': create it first (model create-version)");
  pb::RollbackRequest rollback;
  rollback.set_alias("nobody");
  pb::RollbackResponse rolled;
  EXPECT_EQ(stub_->Rollback(Context().get(), rollback, &rolled).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_F(ModelAdminTest, MalformedRequestsAreInvalidArguments) {
  auto st = CreateVersion("v1", "sim-small", "[1]");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(st.error_message(), "serving config must be a JSON object, such as {}");
  EXPECT_EQ(CreateVersion("", "sim-small").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // An empty request of every write: what the authorization matrix sends.
  pb::SetCanaryResponse canary;
  EXPECT_EQ(stub_->SetCanary(Context().get(), {}, &canary).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  pb::SetAliasResponse alias;
  EXPECT_EQ(stub_->SetAlias(Context().get(), {}, &alias).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  pb::RollbackResponse rolled;
  EXPECT_EQ(stub_->Rollback(Context().get(), {}, &rolled).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  ASSERT_TRUE(CreateVersion("v1", "sim-small").ok());
  EXPECT_EQ(CreateVersion("v1", "sim-large").error_code(), grpc::StatusCode::ALREADY_EXISTS);
}

TEST_F(ModelAdminTest, WithPostgresDownCallersGetAPlainUnavailable) {
  ASSERT_TRUE(infra_->StopPostgres().ok());
  auto st = CreateVersion("down-1", "sim-small");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(st.error_message(), "the model registry's database is unavailable; retry later");
  // The listing is this scheduler's snapshot: it still answers.
  pb::ListModelRegistryResponse list;
  EXPECT_TRUE(stub_->ListModels(Context().get(), {}, &list).ok());
  ASSERT_TRUE(infra_->StartPostgres().ok());
}

}  // namespace
}  // namespace sb::scheduler
