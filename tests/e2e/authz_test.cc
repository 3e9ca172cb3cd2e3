// The authorization matrix: every HTTP route of the running gateway and
// every gRPC method of every service, called as every kind of caller, with
// the outcome checked against the tables below. The tables are this test's
// own (not the production policy), and a route or method that is missing
// from them fails the test: a new one cannot slip through unreviewed.
#include <google/protobuf/descriptor.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <future>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "e2e/e2e_helpers.h"
#include "gtest/gtest.h"
#include "sbadmin/admin.h"
#include "switchboard/billing/v1/billing.pb.h"
#include "switchboard/chat/v1/chat.pb.h"
#include "switchboard/connection/v1/connection.pb.h"
#include "switchboard/gateway/v1/gateway.grpc.pb.h"
#include "switchboard/inference/v1/inference.pb.h"
#include "switchboard/safety/v1/safety.pb.h"
#include "switchboard/scheduler/v1/admin.pb.h"
#include "switchboard/scheduler/v1/scheduler.pb.h"

namespace sb::testing {
namespace {

const std::vector<std::string> kIdentities = {
    "gateway", "chat",    "connection-manager", "safety", "tenant-scheduler", "inference-worker",
    "billing", "operator"};

const std::set<std::string> kEveryone(kIdentities.begin(), kIdentities.end());

// Who may call each method. Everyone else: PERMISSION_DENIED.
const std::map<std::string, std::set<std::string>> kMethodCallers = {
    {"/grpc.health.v1.Health/Check", kEveryone},
    {"/grpc.health.v1.Health/Watch", kEveryone},
    {"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", kEveryone},
    {"/switchboard.billing.v1.Billing/GetUsage", {"gateway", "operator"}},
    {"/switchboard.chat.v1.Chat/CreateConversation", {"gateway"}},
    {"/switchboard.chat.v1.Chat/SendMessage", {"gateway"}},
    {"/switchboard.chat.v1.Chat/ListMessages", {"gateway", "connection-manager"}},
    {"/switchboard.chat.v1.Chat/GetMessage", {"gateway", "connection-manager"}},
    {"/switchboard.chat.v1.Chat/ListConversations", {"gateway"}},
    {"/switchboard.chat.v1.Chat/SearchMessages", {"gateway"}},
    {"/switchboard.chat.v1.Chat/GetConversation", {"gateway"}},
    {"/switchboard.chat.v1.Chat/UpdateConversation", {"gateway"}},
    {"/switchboard.chat.v1.Chat/DeleteConversation", {"gateway"}},
    {"/switchboard.chat.v1.Chat/CancelMessage", {"gateway"}},
    {"/switchboard.chat.v1.Chat/RegenerateMessage", {"gateway"}},
    {"/switchboard.connection.v1.ConnectionManager/Subscribe", {"gateway"}},
    {"/switchboard.connection.v1.ConnectionManager/SubscribeEvents", {"gateway"}},
    {"/switchboard.gateway.v1.Gateway/GetInfo", {"operator"}},
    {"/switchboard.inference.v1.InferenceWorker/Generate", {"tenant-scheduler", "gateway", "chat"}},
    {"/switchboard.inference.v1.InferenceWorker/CountTokens", {"tenant-scheduler"}},
    {"/switchboard.inference.v1.InferenceWorker/ListModels", {"tenant-scheduler", "operator"}},
    {"/switchboard.safety.v1.Safety/CheckInput", {"gateway", "chat"}},
    {"/switchboard.safety.v1.Safety/CheckOutput", {"gateway", "chat"}},
    {"/switchboard.safety.v1.Safety/ModerateOutput", {"gateway", "chat"}},
    {"/switchboard.safety.v1.SafetyAdmin/SetPolicy", {"operator"}},
    {"/switchboard.safety.v1.SafetyAdmin/GetPolicy", {"operator"}},
    {"/switchboard.safety.v1.SafetyAdmin/ListAudit", {"operator"}},
    {"/switchboard.scheduler.v1.TenantScheduler/RegisterWorker", {"inference-worker"}},
    {"/switchboard.scheduler.v1.TenantScheduler/Heartbeat", {"inference-worker"}},
    {"/switchboard.scheduler.v1.TenantScheduler/ListWorkers", {"operator"}},
    {"/switchboard.scheduler.v1.TenantScheduler/ListModels", {"gateway", "chat", "operator"}},
    {"/switchboard.scheduler.v1.TenantScheduler/Generate", {"gateway", "chat"}},
    {"/switchboard.scheduler.v1.TenantScheduler/CountTokens", {"gateway", "chat"}},
    {"/switchboard.scheduler.v1.TenantScheduler/Admit", {"gateway", "chat"}},
    {"/switchboard.scheduler.v1.TenantScheduler/ReleaseLease", {"gateway", "chat"}},
    {"/switchboard.scheduler.v1.TenantScheduler/ReportServed", {"inference-worker"}},
    {"/switchboard.scheduler.v1.TenantScheduler/GetFairness", {"operator"}},
    {"/switchboard.scheduler.v1.ModelAdmin/CreateVersion", {"operator"}},
    {"/switchboard.scheduler.v1.ModelAdmin/SetAlias", {"operator"}},
    {"/switchboard.scheduler.v1.ModelAdmin/SetCanary", {"operator"}},
    {"/switchboard.scheduler.v1.ModelAdmin/Rollback", {"operator"}},
    {"/switchboard.scheduler.v1.ModelAdmin/ListModels", {"operator"}},
};

// Which binary serves each gRPC service ("*": every one).
const std::map<std::string, std::string> kServedBy = {
    {"grpc.health.v1.Health", "*"},
    {"grpc.reflection.v1alpha.ServerReflection", "*"},
    {"switchboard.billing.v1.Billing", "billing"},
    {"switchboard.chat.v1.Chat", "chat"},
    {"switchboard.connection.v1.ConnectionManager", "connection-manager"},
    {"switchboard.gateway.v1.Gateway", "gateway"},
    {"switchboard.inference.v1.InferenceWorker", "inference-worker"},
    {"switchboard.safety.v1.Safety", "safety"},
    {"switchboard.safety.v1.SafetyAdmin", "safety"},
    {"switchboard.scheduler.v1.TenantScheduler", "tenant-scheduler"},
    {"switchboard.scheduler.v1.ModelAdmin", "tenant-scheduler"},
};

// Every method of every service in protos/: each .proto file's descriptor
// must be linked into this test (the references below), so a new file
// fails here until it is added.
std::vector<const google::protobuf::MethodDescriptor*> AllMethods() {
  // Linking the generated code registers the files in the generated pool.
  (void)switchboard::billing::v1::GetUsageRequest::descriptor();
  (void)switchboard::chat::v1::ChatMessage::descriptor();
  (void)switchboard::connection::v1::SubscribeRequest::descriptor();
  (void)switchboard::gateway::v1::GetInfoRequest::descriptor();
  (void)switchboard::inference::v1::GenerateRequest::descriptor();
  (void)switchboard::safety::v1::CheckRequest::descriptor();
  (void)switchboard::scheduler::v1::RegisterWorkerRequest::descriptor();
  (void)switchboard::scheduler::v1::CreateVersionRequest::descriptor();
  std::vector<const google::protobuf::MethodDescriptor*> out;
  const std::filesystem::path root = Infra::SourceDir() + "/protos";
  for (const auto& entry : std::filesystem::recursive_directory_iterator(root)) {
    if (entry.path().extension() != ".proto") continue;
    const std::string name = std::filesystem::relative(entry.path(), root).string();
    // OTLP's TraceService: a collector serves it, our services only call it.
    if (name.rfind("opentelemetry/", 0) == 0) continue;
    const auto* file = google::protobuf::DescriptorPool::generated_pool()->FindFileByName(name);
    EXPECT_NE(file, nullptr) << name << " is not linked into this test: add it above";
    if (file == nullptr) continue;
    for (int s = 0; s < file->service_count(); ++s) {
      for (int m = 0; m < file->service(s)->method_count(); ++m) {
        out.push_back(file->service(s)->method(m));
      }
    }
  }
  return out;
}

// One call of `method` with an empty request; its status code.
grpc::StatusCode Call(const std::shared_ptr<grpc::Channel>& channel, const std::string& method) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::ByteBuffer request, response;
  grpc::Slice empty("");
  request = grpc::ByteBuffer(&empty, 1);
  std::promise<grpc::Status> done;
  stub.UnaryCall(&ctx, method, grpc::StubOptions(), &request, &response,
                 [&done](grpc::Status st) { done.set_value(st); });
  return done.get_future().get().error_code();
}

TEST(AuthorizationMatrixTest, EveryGrpcMethodAgainstEveryIdentity) {
  const auto methods = AllMethods();
  ASSERT_GE(methods.size(), kMethodCallers.size());
  std::set<std::string> seen;
  for (const auto* m : methods) {
    const std::string full = "/" + m->service()->full_name() + "/" + m->name();
    seen.insert(full);
    SCOPED_TRACE(full);
    auto allowed = kMethodCallers.find(full);
    ASSERT_NE(allowed, kMethodCallers.end()) << "a method missing from the matrix";
    auto served = kServedBy.find(m->service()->full_name());
    ASSERT_NE(served, kServedBy.end()) << "a service missing from the matrix";
    // The shared services' streaming methods (health's Watch, reflection)
    // never end by themselves: their rows are checked by the handshake
    // (every service refuses a caller without an identity, below).
    const bool everywhere = served->second == "*";
    if (everywhere && (m->client_streaming() || m->server_streaming())) continue;
    const std::vector<std::string> servers =
        everywhere ? Cluster::ServiceNames() : std::vector<std::string>{served->second};
    for (const auto& server : servers) {
      for (const auto& identity : kIdentities) {
        const grpc::StatusCode code = Call(g_cluster->Channel(server, identity), full);
        if (allowed->second.contains(identity)) {
          EXPECT_NE(code, grpc::StatusCode::PERMISSION_DENIED)
              << identity << " should be allowed on " << server;
          EXPECT_NE(code, grpc::StatusCode::UNAVAILABLE) << identity << " on " << server;
        } else {
          EXPECT_EQ(code, grpc::StatusCode::PERMISSION_DENIED)
              << identity << " should be refused on " << server;
        }
      }
      // No identity at all: a plaintext client never gets past the
      // handshake (nor does a certificate from another CA: see below).
      auto plaintext =
          grpc::CreateChannel(g_cluster->grpc_address(server), grpc::InsecureChannelCredentials());
      EXPECT_EQ(Call(plaintext, full), grpc::StatusCode::UNAVAILABLE)
          << "no identity on " << server;
    }
  }
  for (const auto& [method, callers] : kMethodCallers) {
    EXPECT_TRUE(seen.contains(method)) << method << " is in the matrix but served by nobody";
  }
}

TEST(AuthorizationMatrixTest, ACertificateFromAnotherCaIsRefused) {
  const std::string dir = g_cluster->infra().dir() + "/foreign-tls";
  std::string out;
  ASSERT_EQ(RunCommand({Infra::SourceDir() + "/tools/certs", dir}, &out), 0) << out;
  // A foreign "operator" that trusts the real CA (so only the server's
  // check of the client can refuse it).
  grpcx::TlsFiles foreign = g_cluster->TlsFilesOf("operator");
  foreign.cert = dir + "/operator.crt";
  foreign.key = dir + "/operator.key";
  for (const auto& service : Cluster::ServiceNames()) {
    SCOPED_TRACE(service);
    auto channel = grpcx::Dial(g_cluster->grpc_address(service), service, foreign);
    EXPECT_EQ(Call(channel, "/grpc.health.v1.Health/Check"), grpc::StatusCode::UNAVAILABLE);
  }
  // A server must prove the identity the client asked for: the safety
  // service's address dialled as "billing" fails the handshake.
  auto wrong =
      grpcx::Dial(g_cluster->grpc_address("safety"), "billing", g_cluster->TlsFilesOf("operator"));
  EXPECT_EQ(Call(wrong, "/grpc.health.v1.Health/Check"), grpc::StatusCode::UNAVAILABLE);
}

// The HTTP side. Callers: the owner of the chat resources (a key bound to
// user alice), another user of the same org (bob), another org, no key,
// and a revoked key of the owner's org.
enum Caller { kOwner, kSameOrgOtherUser, kOtherOrg, kNoKey, kRevokedKey, kAdminKey };
const std::vector<std::pair<Caller, std::string>> kCallers = {
    {kOwner, "owner"},
    {kSameOrgOtherUser, "same org, other user"},
    {kOtherOrg, "other org"},
    {kNoKey, "no key"},
    {kRevokedKey, "revoked key"},
    {kAdminKey, "the owner's org's admin key"}};

struct RouteCase {
  std::string body;  // "" for none
  // Expected status per caller, in kCallers order.
  std::vector<int> expected;
  // The response never ends by itself (GET /v1/events): read its status
  // and the first piece of its body, then leave.
  bool endless = false;
};

// Every route, by "METHOD /pattern" (a query after '?' is sent, not part of
// the pattern). Inference routes are the org's (any valid key of any org
// works on its own org); chat resources are the owner's alone (another user
// or org: 404, never 403); an admin key calls the Admin API's reports only,
// which ordinary keys cannot.
const std::map<std::string, RouteCase> kRouteMatrix = {
    {"POST /v1/messages",
     {R"({"model":"sim-small","max_tokens":4,"messages":[{"role":"user","content":"hi"}]})",
      {200, 200, 200, 401, 401, 403}}},
    {"POST /v1/chat/completions",
     {R"({"model":"sim-small","max_tokens":4,"messages":[{"role":"user","content":"hi"}]})",
      {200, 200, 200, 401, 401, 403}}},
    {"POST /v1/messages/count_tokens",
     {R"({"model":"sim-small","messages":[{"role":"user","content":"hi"}]})",
      {200, 200, 200, 401, 401, 403}}},
    {"GET /v1/models", {"", {200, 200, 200, 401, 401, 403}}},
    {"GET /v1/models/{model_id}", {"", {200, 200, 200, 401, 401, 403}}},
    {"POST /v1/conversations", {R"({"model":"sim-small"})", {201, 201, 201, 401, 401, 403}}},
    {"GET /v1/conversations", {"", {200, 200, 200, 401, 401, 403}}},
    {"GET /v1/conversations/search?q=first", {"", {200, 200, 200, 401, 401, 403}}},
    {"GET /v1/conversations/{conversation_id}", {"", {200, 404, 404, 401, 401, 403}}},
    {"PATCH /v1/conversations/{conversation_id}",
     {R"({"title":"renamed"})", {200, 404, 404, 401, 401, 403}}},
    // Of a conversation of its own (the others' routes still need theirs).
    {"DELETE /v1/conversations/{conversation_id}", {"", {200, 404, 404, 401, 401, 403}}},
    {"GET /v1/conversations/{conversation_id}/messages", {"", {200, 404, 404, 401, 401, 403}}},
    {"POST /v1/conversations/{conversation_id}/messages",
     {R"({"content":"hello","max_tokens":4})", {202, 404, 404, 401, 401, 403}}},
    {"POST /v1/conversations/{conversation_id}/messages/{message_id}/cancel",
     {"", {202, 404, 404, 401, 401, 403}}},
    {"POST /v1/conversations/{conversation_id}/messages/{message_id}/regenerate",
     {"", {202, 404, 404, 401, 401, 403}}},
    {"GET /v1/conversations/{conversation_id}/messages/{message_id}/stream",
     {"", {200, 404, 404, 401, 401, 403}}},
    {"GET /v1/events", {"", {200, 200, 200, 401, 401, 403}, /*endless=*/true}},
    {"GET /v1/organizations/usage_report/messages?starting_at=2026-11-01T00:00:00Z",
     {"", {403, 403, 403, 401, 401, 200}}},
    {"GET /v1/organizations/cost_report?starting_at=2026-11-01T00:00:00Z",
     {"", {403, 403, 403, 401, 401, 200}}},
    {"GET /healthz", {"", {200, 200, 200, 200, 200, 200}}},
};

TEST(AuthorizationMatrixTest, EveryHttpRouteAgainstEveryCaller) {
  // The routes the running gateway actually serves.
  auto gateway = switchboard::gateway::v1::Gateway::NewStub(g_cluster->Channel("gateway"));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  switchboard::gateway::v1::GetInfoResponse info;
  ASSERT_TRUE(gateway->GetInfo(&ctx, {}, &info).ok());
  ASSERT_GT(info.routes_size(), 0);

  admin::Admin admin(g_cluster->infra().pg_uri());
  ASSERT_TRUE(admin.CreateOrg("matrix", "matrix").ok());
  ASSERT_TRUE(admin.CreateOrg("matrix-other", "matrix-other").ok());
  std::map<Caller, std::string> keys;
  keys[kOwner] = *admin.CreateKey("matrix", "alice");
  keys[kSameOrgOtherUser] = *admin.CreateKey("matrix", "bob");
  keys[kOtherOrg] = *admin.CreateKey("matrix-other", "alice");
  keys[kAdminKey] = *admin.CreateKey("matrix", "", /*admin=*/true);
  keys[kRevokedKey] = *admin.CreateKey("matrix", "alice");  // the last: revoked below
  auto listed = admin.ListKeys("matrix");
  ASSERT_TRUE(listed.ok());
  ASSERT_TRUE(admin.RevokeKey(listed->back().id).ok());

  // The owner's conversation and message, for the routes that name them.
  auto conv = Post("/v1/conversations", R"({"model":"sim-small"})", keys[kOwner]);
  ASSERT_EQ(conv.status, 201) << conv.body;
  const std::string conversation_id = nlohmann::json::parse(conv.body)["id"];
  auto sent = Post("/v1/conversations/" + conversation_id + "/messages",
                   R"({"content":"first","max_tokens":4})", keys[kOwner]);
  ASSERT_EQ(sent.status, 202) << sent.body;
  const std::string message_id = nlohmann::json::parse(sent.body)["assistant_message_id"];
  auto doomed = Post("/v1/conversations", R"({"model":"sim-small"})", keys[kOwner]);
  ASSERT_EQ(doomed.status, 201) << doomed.body;
  const std::string doomed_id = nlohmann::json::parse(doomed.body)["id"];

  // Revocation takes effect within a second (see KeysTest).
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));

  for (const auto& route : info.routes()) {
    SCOPED_TRACE(route);
    auto it = std::find_if(kRouteMatrix.begin(), kRouteMatrix.end(), [&](const auto& entry) {
      return entry.first.substr(0, entry.first.find('?')) == route;
    });
    ASSERT_NE(it, kRouteMatrix.end()) << "a route missing from the matrix";
    const std::string method = route.substr(0, route.find(' '));
    std::string path = it->first.substr(it->first.find(' ') + 1);
    auto replace = [&](const std::string& from, const std::string& to) {
      if (auto p = path.find(from); p != std::string::npos) path.replace(p, from.size(), to);
    };
    replace("{conversation_id}", method == "DELETE" ? doomed_id : conversation_id);
    replace("{message_id}", message_id);
    replace("{model_id}", "sim-small");
    for (size_t c = 0; c < kCallers.size(); ++c) {
      const auto& [caller, name] = kCallers[c];
      http::Headers headers = {{"content-type", "application/json"},
                               {"anthropic-version", "2023-06-01"}};
      if (caller != kNoKey) headers.push_back({"x-api-key", keys[caller]});
      const http::ClientRequest req{.port = g_cluster->http_port(),
                                    .method = method,
                                    .target = path,
                                    .headers = headers,
                                    .body = it->second.body,
                                    .timeout = std::chrono::seconds(10)};
      auto r = it->second.endless
                   ? http::FetchStreaming(req, [](std::string_view) { return false; })
                   : http::Fetch(req);
      ASSERT_TRUE(r.ok()) << name << ": " << r.status();
      EXPECT_EQ(r->status, it->second.expected[c]) << name << ": " << r->body;
    }
  }
  EXPECT_EQ(static_cast<size_t>(info.routes_size()), kRouteMatrix.size())
      << "a route in the matrix that the gateway no longer serves";
}

}  // namespace
}  // namespace sb::testing
