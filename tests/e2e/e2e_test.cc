// End-to-end: the real cluster (PostgreSQL, Redis, the dev broker, seven
// binaries) on loopback, driven the way clients drive it: HTTP for the
// public API, gRPC for operators.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "core/ulid.h"
#include "e2e/cluster.h"
#include "e2e/e2e_helpers.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "gtest/gtest.h"
#include "http/http_client.h"
#include "storage/pg.h"
#include "switchboard/billing/v1/billing.grpc.pb.h"
#include "switchboard/safety/v1/safety.grpc.pb.h"

namespace sb::testing {
namespace {

using nlohmann::json;

// 1. Streaming: the exact event sequence, the same text as without
// streaming, and usage equal to what the worker counted.
TEST(MessagesApiTest, StreamingEventSequenceMatchesNonStreamedReply) {
  auto streamed = Post("/v1/messages", MessagesBody("Tell me about fair queues", true));
  ASSERT_EQ(streamed.status, 200) << streamed.body;
  EXPECT_EQ(streamed.headers["content-type"].rfind("text/event-stream", 0), 0u);
  auto events = ParseSse(streamed.body);
  ASSERT_GE(events.size(), 6u) << streamed.body;

  std::vector<std::string> kinds;
  for (const auto& e : events) {
    EXPECT_EQ(e.event, e.data["type"]) << "event name and data type agree";
    if (e.event == "ping") continue;
    if (kinds.empty() || kinds.back() != e.event || e.event != "content_block_delta") {
      kinds.push_back(e.event);
    }
  }
  EXPECT_EQ(kinds, (std::vector<std::string>{"message_start", "content_block_start",
                                             "content_block_delta", "content_block_stop",
                                             "message_delta", "message_stop"}))
      << streamed.body;

  std::string text;
  int deltas = 0;
  for (const auto& e : events) {
    if (e.event != "content_block_delta") continue;
    EXPECT_EQ(e.data["delta"]["type"], "text_delta");
    text += e.data["delta"]["text"].get<std::string>();
    ++deltas;
  }
  const json& start = events[0].data["message"];
  EXPECT_EQ(start["role"], "assistant");
  EXPECT_EQ(start["model"], "sim-small");
  EXPECT_TRUE(start["id"].get<std::string>().rfind("msg_", 0) == 0);
  const json& delta = events[events.size() - 2].data;
  EXPECT_EQ(delta["delta"]["stop_reason"], "end_turn");
  // A delta carries one token or, when tokens arrived while output safety
  // checked the one before, several (batching on the safety stream).
  const int told = delta["usage"]["output_tokens"];
  EXPECT_GE(told, deltas);
  EXPECT_GT(deltas, 0);

  auto whole = Post("/v1/messages", MessagesBody("Tell me about fair queues", false));
  ASSERT_EQ(whole.status, 200) << whole.body;
  json j = json::parse(whole.body);
  EXPECT_EQ(j["content"][0]["text"], text);
  EXPECT_EQ(j["usage"]["output_tokens"], told);

  // The worker's own count, as metered into the ledger.
  auto usage = UsageFor("acme", streamed.headers["request-id"]);
  ASSERT_EQ(usage.records_size(), 1) << g_cluster->Logs();
  EXPECT_EQ(usage.records(0).output_tokens(), told);
  EXPECT_EQ(usage.records(0).input_tokens(), start["usage"]["input_tokens"].get<int>());
}

// 2. The whole-response shape.
TEST(MessagesApiTest, NonStreamingResponseShape) {
  auto r = Post("/v1/messages", MessagesBody("hello", false, 5));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.headers["content-type"], "application/json");
  EXPECT_FALSE(r.headers["request-id"].empty());
  json j = json::parse(r.body);
  EXPECT_TRUE(j["id"].get<std::string>().rfind("msg_", 0) == 0);
  EXPECT_EQ(j["type"], "message");
  EXPECT_EQ(j["role"], "assistant");
  EXPECT_EQ(j["model"], "sim-small");
  ASSERT_EQ(j["content"].size(), 1u);
  EXPECT_EQ(j["content"][0]["type"], "text");
  EXPECT_FALSE(j["content"][0]["text"].get<std::string>().empty());
  EXPECT_EQ(j["stop_reason"], "max_tokens");
  EXPECT_TRUE(j["stop_sequence"].is_null());
  EXPECT_EQ(j["usage"]["output_tokens"], 5);
  EXPECT_EQ(j["usage"]["input_tokens"], 1);
}

// 3. Errors in the error format with the right status codes.
TEST(MessagesApiTest, ErrorsUseTheErrorFormat) {
  ExpectError(Post("/v1/messages", MessagesBody("hi", false), "sk-sb-not-a-key"), 401,
              "authentication_error");
  {
    auto r = http::Fetch({.port = g_cluster->http_port(), .method = "POST", .target = "/v1/messages",
                          .body = MessagesBody("hi", false)});
    ASSERT_TRUE(r.ok());
    ExpectError(*r, 401, "authentication_error");
  }
  ExpectError(Post("/v1/messages", "{\"model\": \"sim-small\", "), 400, "invalid_request_error");
  auto missing = Post("/v1/messages",
                      R"({"model":"sim-small","messages":[{"role":"user","content":"hi"}]})");
  ExpectError(missing, 400, "invalid_request_error");
  EXPECT_NE(missing.body.find("max_tokens"), std::string::npos);
  ExpectError(Post("/v1/messages", MessagesBody("hi", false, 10, "no-such-model")), 404,
              "not_found_error");
  ExpectError(Post("/v1/messages", MessagesBody("hi", true, 10, "no-such-model")), 404,
              "not_found_error");
  ExpectError(Get("/v1/nothing-here"), 404, "not_found_error");
}

TEST(MessagesApiTest, SafetyBlocksPersonalDataInTheInput) {
  auto r = Post("/v1/messages", MessagesBody("my card is 4111 1111 1111 1111", true));
  ExpectError(r, 400, "invalid_request_error");
  EXPECT_NE(r.body.find("payment card"), std::string::npos) << r.body;
}

// An end user whose inputs safety keeps refusing (more than safety's
// --throttle_blocked_inputs, 5, within a minute) is refused for a cool-down
// with 429 and a retry-after, whatever they send; other users of the org,
// and the same user id in another org, are not.
TEST(MessagesApiTest, AnEndUserWithTooManyRefusedInputsIsThrottled) {
  const std::string user =
      "probe-" + std::to_string(std::chrono::system_clock::now().time_since_epoch().count());
  auto body = [](const std::string& prompt, const std::string& end_user) {
    json b = json::parse(MessagesBody(prompt, false, 20));
    b["metadata"] = {{"user_id", end_user}};
    return b.dump();
  };
  for (int i = 0; i < 6; ++i) {
    ExpectError(Post("/v1/messages", body("my card is 4111 1111 1111 1111", user)), 400,
                "invalid_request_error");
  }
  auto r = Post("/v1/messages", body("hello there", user));
  ExpectError(r, 429, "rate_limit_error");
  EXPECT_NE(r.body.find("refused"), std::string::npos) << r.body;
  const int retry_after = std::atoi(r.headers["retry-after"].c_str());
  EXPECT_GT(retry_after, 200) << "about the 5 min cool-down";
  EXPECT_LE(retry_after, 300);
  EXPECT_EQ(Post("/v1/messages", body("hello there", user + "-other")).status, 200);
  EXPECT_EQ(Post("/v1/messages", body("hello there", user), g_cluster->other_api_key()).status,
            200);
  // Without an end user there is no one to throttle.
  for (int i = 0; i < 7; ++i) {
    ExpectError(Post("/v1/messages", MessagesBody("mail me at a@b.org", false, 20)), 400,
                "invalid_request_error");
  }
}

// Per-org safety policies: set as the operator, in force for that org at
// once and for it alone, versioned; a bad document is refused with what is
// wrong; the API's services cannot set one.
TEST(SafetyPolicyTest, AnOrgsPolicyAppliesToItAloneAndIsVersioned) {
  const std::string key = KeyOfNewOrg("policy-org");
  auto v1 = SetSafetyPolicy("policy-org", R"({"rules": {"pii.email": {"input": "flag"}},
      "blocklist": {"terms": ["Project Bluebird"], "input": "block"}})");
  ASSERT_TRUE(v1.ok()) << v1.status();
  EXPECT_EQ(*v1, 1);
  const std::string mail = MessagesBody("mail me at bob@corp.io", false, 20);
  const std::string term = MessagesBody("tell me about ｐｒｏｊｅｃｔ bluebird", false, 20);
  EXPECT_EQ(Post("/v1/messages", mail, key).status, 200) << "flagged, not refused";
  auto refused = Post("/v1/messages", term, key);
  ExpectError(refused, 400, "invalid_request_error");
  EXPECT_NE(refused.body.find("policy blocks"), std::string::npos) << refused.body;
  // Another org keeps the default.
  ExpectError(Post("/v1/messages", mail), 400, "invalid_request_error");
  EXPECT_EQ(Post("/v1/messages", term).status, 200);

  auto v2 = SetSafetyPolicy("policy-org", "{}");
  ASSERT_TRUE(v2.ok()) << v2.status();
  EXPECT_EQ(*v2, 2);
  ExpectError(Post("/v1/messages", mail, key), 400, "invalid_request_error");

  auto bad = SetSafetyPolicy("policy-org", R"({"rules": {"pii.email": {"input": "redact"}}})");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("redact is an output action"), std::string::npos)
      << bad.status();
  EXPECT_EQ(SetSafetyPolicy("no-such-org", "{}").status().code(), absl::StatusCode::kNotFound);

  auto stub = switchboard::safety::v1::SafetyAdmin::NewStub(g_cluster->Channel("safety"));
  switchboard::safety::v1::GetPolicyRequest get;
  get.set_org_id("policy-org");
  get.set_version(1);
  switchboard::safety::v1::PolicyResponse got;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub->GetPolicy(&ctx, get, &got).ok());
  EXPECT_EQ(got.version(), 1);
  EXPECT_NE(got.document().find("Project Bluebird"), std::string::npos) << got.document();
  EXPECT_EQ(got.created_by(), "e2e");

  auto as_gateway =
      switchboard::safety::v1::SafetyAdmin::NewStub(g_cluster->Channel("safety", "gateway"));
  grpc::ClientContext gw;
  EXPECT_EQ(as_gateway->GetPolicy(&gw, get, &got).error_code(), grpc::PERMISSION_DENIED);
}

TEST(MessagesApiTest, ClientDisconnectCancelsAndMetersWhatWasGenerated) {
  std::string seen;
  std::string rid;
  auto r = http::FetchStreaming(
      {.port = g_cluster->http_port(),
       .method = "POST",
       .target = "/v1/messages",
       .headers = {{"x-api-key", g_cluster->api_key()}, {"content-type", "application/json"}},
       .body = MessagesBody("a long one please", true, 4000, "sim-small")},
      [&](std::string_view d) {
        seen.append(d);
        return seen.find("content_block_delta") == std::string::npos;  // leave after the first token
      });
  ASSERT_TRUE(r.ok()) << r.status();
  rid = r->headers["request-id"];
  auto usage = UsageFor("acme", rid);
  ASSERT_EQ(usage.records_size(), 1) << g_cluster->Logs();
  // Cancelled early: far fewer than the natural length of the reply.
  EXPECT_GE(usage.records(0).output_tokens(), 1);
  EXPECT_LT(usage.records(0).output_tokens(), 52);
}

// 4. Chat: create, send, stream, drop mid-stream, resume with
// Last-Event-ID: no gap, no duplicate; the history lists both messages.
TEST(ChatTest, ResumableStreamAndHistory) {
  auto created = Post("/v1/conversations", R"({"model":"sim-small","title":"resume test"})");
  ASSERT_EQ(created.status, 201) << created.body;
  const std::string cid = json::parse(created.body)["id"];
  EXPECT_TRUE(IsValidUlid(cid));

  auto sent = Post("/v1/conversations/" + cid + "/messages",
                   R"({"content":"tell me a long story","client_message_id":"c-1"})");
  ASSERT_EQ(sent.status, 202) << sent.body;
  json s = json::parse(sent.body);
  const std::string mid = s["assistant_message_id"];
  const std::string url = s["stream_url"];
  EXPECT_EQ(url, "/v1/conversations/" + cid + "/messages/" + mid + "/stream");

  // First connection: leave after three deltas.
  std::string first_body;
  auto first = http::FetchStreaming(
      {.port = g_cluster->http_port(), .target = url, .headers = {{"x-api-key", g_cluster->api_key()}}},
      [&](std::string_view d) {
        first_body.append(d);
        return CountEvents(first_body, "content_block_delta") < 3;
      });
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(first->status, 200);
  // Keep only complete events, as a client does.
  first_body = first_body.substr(0, first_body.rfind("\n\n") + 2);
  auto part1 = ParseSse(first_body);
  ASSERT_GE(part1.size(), 3u);
  ASSERT_NE(part1.back().event, "message_stop") << "the first connection must leave mid-stream";
  EXPECT_EQ(part1[0].event, "message_start");
  EXPECT_EQ(part1[0].id, mid + ":1");
  std::string last_id;
  std::string text;
  std::vector<int64_t> offsets;
  for (const auto& e : part1) {
    last_id = e.id;
    if (e.event == "content_block_delta") {
      text += e.data["delta"]["text"].get<std::string>();
      offsets.push_back(std::stoll(e.id.substr(e.id.find(':') + 1)));
    }
  }

  // Reconnect with Last-Event-ID.
  auto second = Get(url, {{"last-event-id", last_id}});
  ASSERT_EQ(second.status, 200) << second.body;
  auto part2 = ParseSse(second.body);
  ASSERT_FALSE(part2.empty());
  EXPECT_NE(part2[0].event, "message_start") << "a resumed stream continues, it does not restart";
  for (const auto& e : part2) {
    if (e.event == "content_block_delta") {
      text += e.data["delta"]["text"].get<std::string>();
      offsets.push_back(std::stoll(e.id.substr(e.id.find(':') + 1)));
    }
  }
  EXPECT_EQ(part2.back().event, "message_stop");
  for (size_t i = 0; i < offsets.size(); ++i) {
    ASSERT_EQ(offsets[i], static_cast<int64_t>(i + 3)) << "gap or duplicate at " << i;
  }

  // Resuming after the end: nothing remains, and 204 tells an EventSource
  // to stop reconnecting.
  auto after_end = Get(url, {{"last-event-id", part2.back().id}});
  EXPECT_EQ(after_end.status, 204) << after_end.body;
  EXPECT_EQ(after_end.body, "");

  // The same client_message_id again is the same message, not a new turn.
  auto again = Post("/v1/conversations/" + cid + "/messages",
                    R"({"content":"tell me a long story","client_message_id":"c-1"})");
  ASSERT_EQ(again.status, 202);
  EXPECT_EQ(json::parse(again.body)["assistant_message_id"], mid);

  // A bad Last-Event-ID is a clear 400.
  ExpectError(Get(url, {{"last-event-id", "someone-else:3"}}), 400, "invalid_request_error");

  // The history: both messages, in ULID order, the reply complete and equal
  // to what was streamed.
  json history;
  for (int i = 0; i < 50; ++i) {
    history = json::parse(Get("/v1/conversations/" + cid + "/messages").body);
    if (history["data"].size() == 2 && history["data"][1]["status"] == "complete") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(history["data"].size(), 2u) << history.dump();
  const json& user = history["data"][0];
  const json& reply = history["data"][1];
  EXPECT_EQ(user["role"], "user");
  EXPECT_EQ(user["content"], "tell me a long story");
  EXPECT_EQ(reply["role"], "assistant");
  EXPECT_EQ(reply["id"], mid);
  EXPECT_EQ(reply["parent_id"], user["id"]);
  EXPECT_TRUE(IsValidUlid(user["id"].get<std::string>()));
  EXPECT_LT(user["id"].get<std::string>(), reply["id"].get<std::string>());
  EXPECT_EQ(reply["content"], text);
  // A delta per token, or fewer (tokens batched through output safety).
  const int told = reply["usage"]["output_tokens"];
  EXPECT_GE(told, static_cast<int>(offsets.size()));
  EXPECT_EQ(history["has_more"], false);

  // A finished reply replays whole from the start.
  auto replay = ParseSse(Get(url).body);
  std::string replayed;
  for (const auto& e : replay) {
    if (e.event == "content_block_delta") replayed += e.data["delta"]["text"].get<std::string>();
  }
  EXPECT_EQ(replayed, text);

  // 5. The turn was metered under the reply's id.
  auto usage = UsageFor("acme", mid);
  ASSERT_EQ(usage.records_size(), 1) << g_cluster->Logs();
  EXPECT_EQ(usage.records(0).output_tokens(), told);
}

TEST(ChatTest, AnotherOrgSeesNotFound) {
  auto created = Post("/v1/conversations", R"({"model":"sim-small"})");
  ASSERT_EQ(created.status, 201);
  const std::string cid = json::parse(created.body)["id"];
  ExpectError(Get("/v1/conversations/" + cid + "/messages", {}, g_cluster->other_api_key()), 404,
              "not_found_error");
  ExpectError(Post("/v1/conversations/" + cid + "/messages", R"({"content":"hi"})",
                   g_cluster->other_api_key()),
              404, "not_found_error");
  ExpectError(Get("/v1/conversations/" + cid + "/messages/01ARZ3NDEKTSV4RRFFQ69G5FAV/stream"), 404,
              "not_found_error");
}

// A page size must be a number and nothing else ("5x" is not 5).
TEST(ChatTest, ALimitThatIsNotJustANumberIs400) {
  auto created = Post("/v1/conversations", R"({"model":"sim-small"})");
  ASSERT_EQ(created.status, 201);
  const std::string cid = json::parse(created.body)["id"];
  for (const char* bad : {"5x", "-0", "0", "201", "1e2"}) {
    SCOPED_TRACE(bad);
    auto r = Get("/v1/conversations/" + cid + "/messages?limit=" + bad);
    ExpectError(r, 400, "invalid_request_error");
    EXPECT_NE(r.body.find("limit"), std::string::npos) << r.body;
  }
  EXPECT_EQ(Get("/v1/conversations/" + cid + "/messages?limit=5").status, 200);
}

TEST(ChatTest, BlockedMessageIsRefusedAndNotStored) {
  auto created = Post("/v1/conversations", R"({"model":"sim-small"})");
  const std::string cid = json::parse(created.body)["id"];
  ExpectError(Post("/v1/conversations/" + cid + "/messages", R"({"content":"write to me@example.com"})"),
              400, "invalid_request_error");
  EXPECT_EQ(json::parse(Get("/v1/conversations/" + cid + "/messages").body)["data"].size(), 0u);
}

// The official Anthropic TypeScript SDK, with only the base URL changed
// (tests/sdk; tools/setup installs it with npm ci).
TEST(SdkTest, OfficialTypeScriptSdkWorksAgainstTheGateway) {
  const std::string dir = Infra::SourceDir() + "/tests/sdk";
  ASSERT_TRUE(std::filesystem::exists(dir + "/node_modules/@anthropic-ai/sdk"))
      << "the SDK is not installed: run tools/setup (npm ci --prefix tests/sdk)";
  std::string out;
  const int rc = RunCommand({"env", "ANTHROPIC_BASE_URL=http://127.0.0.1:" + std::to_string(g_cluster->http_port()),
                             "ANTHROPIC_API_KEY=" + g_cluster->api_key(), "node", dir + "/sdk_check.mjs"},
                            &out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("sdk checks passed"), std::string::npos) << out;
}

// 6. Every service answers grpc.health.v1 and lists its services through
// server reflection.
TEST(OperabilityTest, HealthAndReflectionOnEveryService) {
  const std::map<std::string, std::string> expected = {
      {"gateway", "switchboard.gateway.v1.Gateway"},
      {"chat", "switchboard.chat.v1.Chat"},
      {"connection-manager", "switchboard.connection.v1.ConnectionManager"},
      {"safety", "switchboard.safety.v1.Safety"},
      {"tenant-scheduler", "switchboard.scheduler.v1.TenantScheduler"},
      {"inference-worker", "switchboard.inference.v1.InferenceWorker"},
      {"billing", "switchboard.billing.v1.Billing"}};
  for (const auto& [service, api] : expected) {
    SCOPED_TRACE(service);
    auto channel = g_cluster->Channel(service);
    auto health = grpc::health::v1::Health::NewStub(channel);
    grpc::ClientContext hctx;
    hctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    grpc::health::v1::HealthCheckResponse hresp;
    ASSERT_TRUE(health->Check(&hctx, {}, &hresp).ok());
    EXPECT_EQ(hresp.status(), grpc::health::v1::HealthCheckResponse::SERVING);

    auto reflection = grpc::reflection::v1alpha::ServerReflection::NewStub(channel);
    grpc::ClientContext rctx;
    rctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    auto stream = reflection->ServerReflectionInfo(&rctx);
    grpc::reflection::v1alpha::ServerReflectionRequest list;
    list.set_list_services("");
    ASSERT_TRUE(stream->Write(list));
    grpc::reflection::v1alpha::ServerReflectionResponse resp;
    ASSERT_TRUE(stream->Read(&resp));
    std::set<std::string> names;
    for (const auto& s : resp.list_services_response().service()) names.insert(s.name());
    EXPECT_TRUE(names.count(api)) << "missing " << api;
    EXPECT_TRUE(names.count("grpc.health.v1.Health"));

    // grpcurl's `describe`: the descriptor of the service is served too.
    grpc::reflection::v1alpha::ServerReflectionRequest describe;
    describe.set_file_containing_symbol(api);
    ASSERT_TRUE(stream->Write(describe));
    ASSERT_TRUE(stream->Read(&resp));
    EXPECT_GT(resp.file_descriptor_response().file_descriptor_proto_size(), 0);
    stream->WritesDone();
    stream->Finish();
  }
}

// What the tenants dashboard reads: refusals by reason (the same in both
// dialects) at the gateway, output tokens by org at the schedulers.
TEST(OperabilityTest, RefusalsByReasonAndTokensByOrgAreCounted) {
  const int gw = g_cluster->metrics_port("gateway");
  const std::string auth =
      R"(sb_gateway_refusals_total{route="/v1/messages",reason="authentication"})";
  const std::string bad =
      R"(sb_gateway_refusals_total{route="/v1/messages",reason="invalid_request"})";
  const double auth_before = MetricValue(gw, auth), bad_before = MetricValue(gw, bad);
  EXPECT_EQ(Post("/v1/messages", MessagesBody("hi", false, 5), "sk-sb-nope").status, 401);
  EXPECT_EQ(Post("/v1/messages", R"({"model":"sim-small"})").status, 400);
  EXPECT_EQ(MetricValue(gw, auth), auth_before + 1);
  EXPECT_EQ(MetricValue(gw, bad), bad_before + 1);

  const std::string key = KeyOfNewOrg("tokens-by-org");
  auto r = Post("/v1/messages", MessagesBody("count me", false, 7), key);
  ASSERT_EQ(r.status, 200) << r.body;
  const int output = nlohmann::json::parse(r.body)["usage"]["output_tokens"].get<int>();
  const std::string series = R"(sb_scheduler_org_output_tokens_total{org="tokens-by-org"})";
  for (int i = 0; i < 50 && SchedulerMetric(series) < output; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the worker's report
  }
  EXPECT_EQ(SchedulerMetric(series), output);
}

// Every PostgreSQL reader's pod runs `sbadmin migrate` first (Kubernetes'
// init step): several at once on a fresh database all succeed, once each.
TEST(OperabilityTest, MigrationsRunConcurrentlyOnAFreshDatabase) {
  const std::string uri = g_cluster->infra().pg_uri();
  const std::string fresh = uri.substr(0, uri.rfind('/') + 1) + "migrate_race";
  {
    pqxx::connection c(uri);
    pqxx::nontransaction tx(c);
    tx.exec("DROP DATABASE IF EXISTS migrate_race");
    tx.exec("CREATE DATABASE migrate_race");
  }
  std::vector<std::thread> runs;
  std::vector<int> codes(6, -1);
  std::vector<std::string> outs(6);
  for (size_t i = 0; i < codes.size(); ++i) {
    runs.emplace_back([&, i] {
      codes[i] =
          RunCommand({Infra::BuildDir() + "/tools/sbadmin", "--pg=" + fresh, "migrate"}, &outs[i]);
    });
  }
  for (auto& t : runs) t.join();
  for (size_t i = 0; i < codes.size(); ++i) EXPECT_EQ(codes[i], 0) << outs[i];
  pqxx::connection c(fresh);
  pqxx::read_transaction tx(c);
  const auto applied = tx.exec1("SELECT count(*), count(DISTINCT name) FROM schema_migrations");
  EXPECT_GT(applied[0].as<int>(), 10);
  EXPECT_EQ(applied[0].as<int>(), applied[1].as<int>());
}

// The containers' readiness probe: `sbadmin health PORT` exits 0 for a
// ready service (its metrics port's /readyz), 1 for a port nobody serves.
TEST(OperabilityTest, SbadminHealthProbesReadiness) {
  for (const auto& service : Cluster::ServiceNames()) {
    std::string out;
    EXPECT_EQ(RunCommand({Infra::BuildDir() + "/tools/sbadmin", "health",
                          std::to_string(g_cluster->metrics_port(service))},
                         &out),
              0)
        << service << ": " << out;
    EXPECT_NE(out.find("ready"), std::string::npos) << out;
  }
  std::string out;
  EXPECT_EQ(RunCommand({Infra::BuildDir() + "/tools/sbadmin", "health",
                        "127.0.0.1:" + std::to_string(FreePort())},
                       &out),
            1)
      << out;
  EXPECT_EQ(RunCommand({Infra::BuildDir() + "/tools/sbadmin", "health", "nonsense"}, &out), 2);
}

// Prometheus' own parser and linter (promtool check metrics) takes every
// service's exposition: format, types, HELP, counter suffixes. The only lint
// allowed is the ':' in the worker's vllm:* series, named as vLLM names them
// so that one dashboard shows both.
TEST(OperabilityTest, MetricsInPrometheusFormatOnEveryService) {
  const std::string file = g_cluster->infra().dir() + "/metrics.txt";
  for (const auto& service : Cluster::ServiceNames()) {
    auto r = http::Fetch({.port = g_cluster->metrics_port(service), .target = "/metrics"});
    ASSERT_TRUE(r.ok()) << service;
    EXPECT_EQ(r->status, 200);
    EXPECT_NE(r->body.find("# TYPE sb_build_info gauge"), std::string::npos) << service;
    {
      std::ofstream out(file, std::ios::trunc);
      out << r->body;
    }
    std::string lint;
    const int rc = RunCommand({"sh", "-c", "promtool check metrics < " + file}, &lint);
    std::istringstream lines(lint);
    for (std::string line; std::getline(lines, line);) {
      if (line.empty()) continue;
      EXPECT_TRUE(line.rfind("vllm:", 0) == 0 &&
                  line.find(" metric names should not contain ':'") != std::string::npos)
          << service << ": " << line;
    }
    EXPECT_NE(rc, 1) << service << " (promtool could not parse it): " << lint;
  }
}

}  // namespace
}  // namespace sb::testing

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  ::testing::AddGlobalTestEnvironment(new sb::testing::ClusterEnvironment());
  return RUN_ALL_TESTS();
}
