// The upstream engines end to end: a worker with --engine=openai in front of
// tools/mock-upstream (a stand-in for vLLM's OpenAI server), reached through
// the gateway in both dialects and with both official SDKs.
#include <grpcpp/grpcpp.h>

#include <filesystem>
#include <map>
#include <pqxx/pqxx>
#include <thread>

#include "e2e/e2e_helpers.h"
#include "gtest/gtest.h"
#include "http/http_client.h"
#include "nlohmann/json.hpp"
#include "support/process.h"
#include "switchboard/safety/v1/safety.grpc.pb.h"
#include "switchboard/scheduler/v1/admin.grpc.pb.h"
#include "switchboard/scheduler/v1/scheduler.grpc.pb.h"

namespace sb::testing {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

class UpstreamEngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    mock_port_ = FreePort();
    mock_ = new Process("mock-upstream",
                        {Infra::BuildDir() + "/tools/mock-upstream/mock-upstream",
                         "--port=" + std::to_string(mock_port_), "--models=mock-model",
                         "--reply_tokens=24", "--tokens_per_second=200"},
                        g_cluster->infra().dir() + "/mock-upstream.log");
    for (int i = 0; i < 100; ++i) {
      auto r = http::Fetch({.port = mock_port_, .target = "/v1/models"});
      if (r.ok() && r->status == 200) break;
      std::this_thread::sleep_for(50ms);
    }
    auto worker = g_cluster->StartWorker(
        "worker-upstream", "llama-8b",
        {"--engine=openai", "--upstream_url=http://127.0.0.1:" + std::to_string(mock_port_) + "/v1",
         "--upstream_model=mock-model", "--upstream_idle_timeout_ms=1000",
         "--upstream_metrics_interval_ms=200"});
    ASSERT_TRUE(worker.ok()) << worker.status();
    worker_ = new Cluster::Worker(*std::move(worker));
  }
  static void TearDownTestSuite() {
    delete worker_;
    worker_ = nullptr;
    delete mock_;
    mock_ = nullptr;
  }

  static json MockStats() {
    auto r = http::Fetch({.port = mock_port_, .target = "/mock/stats"});
    return r.ok() ? json::parse(r->body, nullptr, false) : json();
  }

  static inline int mock_port_ = 0;
  static inline Process* mock_ = nullptr;
  static inline Cluster::Worker* worker_ = nullptr;
};

std::string Text(const http::Response& r) {
  const json j = json::parse(r.body, nullptr, false);
  return j.is_object() && j.contains("content") ? j["content"][0]["text"].get<std::string>() : "";
}

// A reply carrying personal data split across tokens (the mock's pii mode):
// the client gets the text before it, then a refusal with its category, in
// both dialects, streamed and whole; no byte of the data.
TEST_F(UpstreamEngineTest, PersonalDataInAReplyEndsItAsARefusalWithNoByteOfIt) {
  const std::string key = KeyOfNewOrg("upstream-refusal");
  struct Case {
    std::string kind, before, category, forbidden;
  };
  for (const Case& c : {Case{"email", "The quick brown write to ", "pii.email", "jane"},
                        Case{"card", "The quick brown pay with ", "pii.card_number", "4111"}}) {
    SCOPED_TRACE(c.kind);
    const std::string prompt = "tell me [mock:pii=" + c.kind + "]";
    auto whole = Post("/v1/messages", MessagesBody(prompt, false, 30, "llama-8b"), key);
    ASSERT_EQ(whole.status, 200) << whole.body;
    const json j = json::parse(whole.body);
    EXPECT_EQ(Text(whole), c.before);
    EXPECT_EQ(j["stop_reason"], "refusal");
    EXPECT_EQ(j["stop_details"]["type"], "refusal");
    EXPECT_EQ(j["stop_details"]["category"], c.category);
    EXPECT_GT(j["usage"]["output_tokens"].get<int>(), 3) << "the tokens up to the refusal";

    auto streamed = Post("/v1/messages", MessagesBody(prompt, true, 30, "llama-8b"), key);
    ASSERT_EQ(streamed.status, 200) << streamed.body;
    EXPECT_EQ(streamed.body.find(c.forbidden), std::string::npos) << streamed.body;
    std::string text;
    json delta;
    for (const auto& e : ParseSse(streamed.body)) {
      if (e.event == "content_block_delta") text += e.data["delta"]["text"].get<std::string>();
      if (e.event == "message_delta") delta = e.data["delta"];
    }
    EXPECT_EQ(text, c.before);
    EXPECT_EQ(delta["stop_reason"], "refusal") << streamed.body;
    EXPECT_EQ(delta["stop_details"]["category"], c.category);

    auto o = Post("/v1/chat/completions",
                  R"({"model":"llama-8b","max_tokens":30,"messages":[{"role":"user","content":")" +
                      prompt + R"("}]})",
                  key);
    ASSERT_EQ(o.status, 200) << o.body;
    const json oj = json::parse(o.body);
    EXPECT_EQ(oj["choices"][0]["message"]["content"], c.before);
    EXPECT_EQ(oj["choices"][0]["finish_reason"], "content_filter");
  }
}

// An org whose policy redacts: the reply goes on with the data replaced in
// place, the same streamed, whole and in the OpenAI dialect, and no byte of
// it reaches the client.
TEST_F(UpstreamEngineTest, AnOrgThatRedactsGetsTheReplyWithTheDataReplaced) {
  const std::string key = KeyOfNewOrg("upstream-redact");
  ASSERT_TRUE(SetSafetyPolicy("upstream-redact", R"({"rules": {
      "pii.email": {"output": "redact"}, "pii.card_number": {"output": "redact"}}})")
                  .ok());
  struct Case {
    std::string kind, before, redaction, forbidden;
  };
  for (const Case& c :
       {Case{"email", "The quick brown write to ", "[REDACTED:pii.email]", "jane"},
        Case{"card", "The quick brown pay with ", "\u2022\u2022\u2022\u2022 1111", "4111"}}) {
    SCOPED_TRACE(c.kind);
    const std::string prompt = "tell me [mock:pii=" + c.kind + "]";
    auto whole = Post("/v1/messages", MessagesBody(prompt, false, 30, "llama-8b"), key);
    ASSERT_EQ(whole.status, 200) << whole.body;
    const std::string text = Text(whole);
    EXPECT_EQ(text.rfind(c.before + c.redaction, 0), 0u) << text;
    EXPECT_GT(text.size(), c.before.size() + c.redaction.size()) << "the reply goes on";
    EXPECT_EQ(whole.body.find(c.forbidden), std::string::npos) << whole.body;
    EXPECT_NE(json::parse(whole.body)["stop_reason"], "refusal");

    auto streamed = Post("/v1/messages", MessagesBody(prompt, true, 30, "llama-8b"), key);
    ASSERT_EQ(streamed.status, 200) << streamed.body;
    EXPECT_EQ(streamed.body.find(c.forbidden), std::string::npos) << streamed.body;
    std::string deltas;
    for (const auto& e : ParseSse(streamed.body)) {
      if (e.event == "content_block_delta") deltas += e.data["delta"]["text"].get<std::string>();
    }
    EXPECT_EQ(deltas, text);

    auto o = Post("/v1/chat/completions",
                  R"({"model":"llama-8b","max_tokens":30,"messages":[{"role":"user","content":")" +
                      prompt + R"("}]})",
                  key);
    ASSERT_EQ(o.status, 200) << o.body;
    EXPECT_EQ(json::parse(o.body)["choices"][0]["message"]["content"], text);
  }
}

// A chat turn runs the same gate: under a redacting policy readers are sent
// the reply with the data replaced, the stored message is exactly that, and
// each message records what safety did (the user's, whose address the
// policy only flags on input, "flagged").
TEST_F(UpstreamEngineTest, AChatReplyIsRedactedAsStreamedAndStoredSo) {
  const std::string key = KeyOfNewOrg("chat-redact");
  ASSERT_TRUE(SetSafetyPolicy("chat-redact",
                              R"({"rules": {"pii.email": {"input": "flag", "output": "redact"}}})")
                  .ok());
  auto created = Post("/v1/conversations", R"({"model":"llama-8b"})", key);
  ASSERT_EQ(created.status, 201) << created.body;
  const std::string cid = json::parse(created.body)["id"];
  auto sent = Post("/v1/conversations/" + cid + "/messages",
                   R"({"content":"I am kim@example.org, tell me [mock:pii=email]"})", key);
  ASSERT_EQ(sent.status, 202) << sent.body;
  const json s = json::parse(sent.body);
  auto stream = Get(s["stream_url"], {}, key);
  ASSERT_EQ(stream.status, 200) << stream.body;
  std::string streamed;
  for (const auto& e : ParseSse(stream.body)) {
    if (e.event == "content_block_delta") streamed += e.data["delta"]["text"].get<std::string>();
  }
  EXPECT_EQ(streamed.rfind("The quick brown write to [REDACTED:pii.email] today", 0), 0u)
      << streamed;
  EXPECT_EQ(stream.body.find("jane"), std::string::npos) << stream.body;

  auto listed = Get("/v1/conversations/" + cid + "/messages", {}, key);
  ASSERT_EQ(listed.status, 200) << listed.body;
  const json messages = json::parse(listed.body)["data"];
  ASSERT_EQ(messages.size(), 2u) << listed.body;
  const json& reply = messages[1];
  EXPECT_EQ(reply["id"], s["assistant_message_id"]);
  EXPECT_EQ(reply["content"], streamed) << "stored == streamed";
  EXPECT_EQ(reply["safety_result"], "redacted");
  EXPECT_EQ(messages[0]["safety_result"], "flagged") << "the input's address, let through";
  EXPECT_EQ(listed.body.find("jane"), std::string::npos) << listed.body;
}

// The audit trail: every decision other than a plain allow, input and
// output, is one row (through Kafka safety.audit into safety_audit) with
// its rule, action, policy version, offsets and a keyed hash of the span —
// never the text; the table refuses changes; sbadmin lists it.
// A model version that pins a version of the platform's safety policy:
// its replies are moderated under that version (with the org's own policy
// on it), while the same model asked by its own name gets the version in
// force; the audit trail records which platform version each decision was
// made under.
TEST_F(UpstreamEngineTest, AModelVersionsSafetyPolicyPinDecidesHowItsRepliesAreModerated) {
  namespace spb = switchboard::safety::v1;
  namespace sched = switchboard::scheduler::v1;
  const std::string key = KeyOfNewOrg("pinned-policy");
  auto safety = spb::SafetyAdmin::NewStub(g_cluster->Channel("safety"));
  auto set_platform = [&](const std::string& document) -> int64_t {
    spb::SetPolicyRequest req;
    req.set_platform(true);
    req.set_document(document);
    req.set_created_by("e2e");
    spb::PolicyResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 10s);
    auto st = safety->SetPolicy(&ctx, req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    EXPECT_TRUE(resp.platform());
    return resp.version();
  };
  const int64_t redacting = set_platform(R"({"rules": {"pii.email": {"output": "redact"}}})");
  // In force from here on: the built-in default's equal, as every other
  // test expects.
  const int64_t in_force = set_platform("{}");
  ASSERT_GT(in_force, redacting);

  auto admin = [](int replica) {
    return sched::ModelAdmin::NewStub(g_cluster->SchedulerChannel(replica));
  };
  auto create = [&](const std::string& version, const std::string& pin) {
    sched::CreateVersionRequest req;
    req.set_version(version);
    req.set_served_model("llama-8b");
    req.set_safety_policy_version(pin);
    sched::CreateVersionResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 10s);
    return admin(0)->CreateVersion(&ctx, req, &resp);
  };
  EXPECT_EQ(create("llama-8b-badpin", "999999").error_code(), grpc::NOT_FOUND)
      << "a pin names a platform version that exists";
  auto created = create("llama-8b-pinned", std::to_string(redacting));
  ASSERT_TRUE(created.ok()) << created.error_message();
  {
    sched::SetAliasRequest req;
    req.set_alias("llama-pinned");
    req.set_version("llama-8b-pinned");
    sched::SetAliasResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 10s);
    auto st = admin(0)->SetAlias(&ctx, req, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
  }
  // Until every scheduler replica routes the alias.
  for (int tries = 0;; ++tries) {
    int routing = 0;
    for (int i = 0; i < Cluster::kSchedulerReplicas; ++i) {
      sched::ListModelRegistryResponse resp;
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + 5s);
      if (!admin(i)->ListModels(&ctx, {}, &resp).ok()) continue;
      for (const auto& a : resp.aliases()) routing += a.alias() == "llama-pinned";
    }
    if (routing == Cluster::kSchedulerReplicas) break;
    ASSERT_LT(tries, 150) << "the schedulers did not load the alias";
    std::this_thread::sleep_for(100ms);
  }

  const std::string prompt = "tell me [mock:pii=email]";
  for (const bool stream : {false, true}) {
    SCOPED_TRACE(stream ? "streamed" : "whole");
    auto pinned = Post("/v1/messages", MessagesBody(prompt, stream, 30, "llama-pinned"), key);
    ASSERT_EQ(pinned.status, 200) << pinned.body;
    EXPECT_EQ(pinned.body.find("jane"), std::string::npos) << pinned.body;
    EXPECT_EQ(pinned.body.find("refusal"), std::string::npos) << pinned.body;
    std::string text = stream ? "" : Text(pinned);
    for (const auto& e : stream ? ParseSse(pinned.body) : std::vector<SseEvent>{}) {
      if (e.event == "content_block_delta") text += e.data["delta"]["text"].get<std::string>();
    }
    EXPECT_EQ(text.rfind("The quick brown write to [REDACTED:pii.email]", 0), 0u) << text;
    EXPECT_NE(pinned.body.find("llama-8b-pinned"), std::string::npos) << "the version served";
  }
  // The older relayed path (the scheduler's own Generate stream) carries
  // the pin in its start as well.
  auto relayed = g_cluster->StartGateway("gateway-relayed", {"--direct_streaming=false"});
  ASSERT_TRUE(relayed.ok()) << relayed.status();
  auto through_scheduler = Post("/v1/messages", MessagesBody(prompt, false, 30, "llama-pinned"),
                                key, relayed->http_port);
  ASSERT_EQ(through_scheduler.status, 200) << through_scheduler.body;
  EXPECT_EQ(Text(through_scheduler).rfind("The quick brown write to [REDACTED:pii.email]", 0), 0u)
      << through_scheduler.body;

  auto current = Post("/v1/messages", MessagesBody(prompt, false, 30, "llama-8b"), key);
  ASSERT_EQ(current.status, 200) << current.body;
  EXPECT_EQ(json::parse(current.body)["stop_reason"], "refusal") << "the version in force blocks";
  EXPECT_EQ(current.body.find("jane"), std::string::npos);

  // Three redactions (whole, streamed, relayed) under the pinned version,
  // one block under the version in force.
  const auto trail = AuditOf("pinned-policy", 4);
  int redacted = 0, blocked = 0;
  for (const auto& e : trail) {
    if (e.direction() != "output" || e.rule() != "pii.email") continue;
    if (e.action() == "redact") {
      ++redacted;
      EXPECT_EQ(e.platform_policy_version(), redacting);
    } else if (e.action() == "block") {
      ++blocked;
      EXPECT_EQ(e.platform_policy_version(), in_force);
    }
  }
  EXPECT_EQ(redacted, 3);
  EXPECT_EQ(blocked, 1);
}

TEST_F(UpstreamEngineTest, EveryDecisionButAnAllowIsAuditedOnceWithoutItsText) {
  const std::string org = "audit-org";
  const std::string key = KeyOfNewOrg(org);
  ASSERT_TRUE(SetSafetyPolicy(org, R"({"rules": {
      "pii.email": {"input": "flag", "output": "redact"},
      "pii.card_number": {"output": "block"}},
      "blocklist": {"terms": ["Project Bluebird"], "input": "block"}})")
                  .ok());
  auto send = [&](const std::string& prompt) {
    json b = json::parse(MessagesBody(prompt, false, 30, "llama-8b"));
    b["metadata"] = {{"user_id", "auditor-1"}};
    return Post("/v1/messages", b.dump(), key);
  };
  struct Expected {
    std::string request_id, direction, rule, action;
    int start, end;
  };
  std::vector<Expected> expected;
  auto r = send("mail me at bob@corp.io");
  ASSERT_EQ(r.status, 200) << r.body;
  expected.push_back({r.headers["request-id"], "input", "pii.email", "flag", 11, 22});
  r = send("tell me about Project Bluebird");
  ExpectError(r, 400, "invalid_request_error");
  expected.push_back({r.headers["request-id"], "input", "blocklist.term", "block", 14, 30});
  // "The quick brown write to jane.doe@example.com today ..." (the mock), twice.
  for (int i = 0; i < 2; ++i) {
    r = send("tell me [mock:pii=email]");
    ASSERT_EQ(r.status, 200) << r.body;
    expected.push_back({r.headers["request-id"], "output", "pii.email", "redact", 25, 45});
  }
  r = send("tell me [mock:pii=card]");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body)["stop_reason"], "refusal");
  expected.push_back({r.headers["request-id"], "output", "pii.card_number", "block", 25, 44});

  auto events = AuditOf(org, expected.size());
  // Anything late (a duplicate) would show up by now.
  std::this_thread::sleep_for(1500ms);
  events = AuditOf(org, expected.size());
  ASSERT_EQ(events.size(), expected.size()) << g_cluster->Logs();
  std::map<std::string, std::string> hash_of;
  for (const Expected& want : expected) {
    SCOPED_TRACE(want.rule + " " + want.action);
    int found = 0;
    for (const auto& e : events) {
      if (e.request_id() != want.request_id) continue;
      ++found;
      EXPECT_EQ(e.org_id(), org);
      EXPECT_EQ(e.end_user_id(), "auditor-1");
      EXPECT_EQ(e.direction(), want.direction);
      EXPECT_EQ(e.rule(), want.rule);
      EXPECT_EQ(e.action(), want.action);
      EXPECT_EQ(e.policy_version(), 1);
      EXPECT_EQ(e.start(), want.start);
      EXPECT_EQ(e.end(), want.end);
      EXPECT_EQ(e.source(), "safety");
      EXPECT_EQ(e.span_hash().size(), 64u);
      const std::string all = e.DebugString();
      for (const char* text : {"bob", "corp.io", "jane", "example.com", "4111", "Bluebird"}) {
        EXPECT_EQ(all.find(text), std::string::npos) << text << " in " << all;
      }
      hash_of[want.request_id] = e.span_hash();
    }
    EXPECT_EQ(found, 1) << "exactly one row per decision";
  }
  EXPECT_EQ(hash_of[expected[2].request_id], hash_of[expected[3].request_id])
      << "the same address hashes alike";
  EXPECT_NE(hash_of[expected[2].request_id], hash_of[expected[0].request_id]);

  // Append-only: no change, no early delete.
  pqxx::connection c(g_cluster->infra().pg_uri());
  {
    pqxx::work tx(c);
    EXPECT_THROW(tx.exec_params("UPDATE safety_audit SET rule = 'x' WHERE org_id = $1", org),
                 pqxx::sql_error);
  }
  {
    pqxx::work tx(c);
    EXPECT_THROW(tx.exec_params("DELETE FROM safety_audit WHERE org_id = $1", org),
                 pqxx::sql_error);
  }

  std::string out;
  ASSERT_EQ(RunCommand({Infra::BuildDir() + "/tools/sbadmin", "--pg=" + g_cluster->infra().pg_uri(),
                        "safety", "audit", org, "--since=1h"},
                       &out),
            0)
      << out;
  EXPECT_NE(out.find("5 decisions since"), std::string::npos) << out;
  EXPECT_NE(out.find("pii.card_number"), std::string::npos) << out;
  EXPECT_NE(out.find(expected[1].request_id), std::string::npos) << out;
}

// Fail closed, for real: safety is killed while a slow reply streams. The
// reply stops with an error event and no more text (at most the one token
// already on its way); a request while safety is down is refused; both
// stops are in the audit trail once safety is back.
TEST_F(UpstreamEngineTest, SafetyKilledMidStreamStopsTheReplyAndTheStopIsAudited) {
  const std::string org = "failclosed-org";
  const std::string key = KeyOfNewOrg(org);
  std::string body;
  int deltas = 0, deltas_at_kill = -1;
  auto streamed = http::FetchStreaming(
      {.port = g_cluster->http_port(),
       .method = "POST",
       .target = "/v1/messages",
       .headers = {{"x-api-key", key}, {"content-type", "application/json"}},
       // 200 tokens at 20 a second: ten seconds, were it not stopped.
       .body = MessagesBody("[mock:tps=20,tokens=200] go on", true, 200, "llama-8b")},
      [&](std::string_view d) {
        body.append(d);
        deltas = CountEvents(body, "content_block_delta");
        if (deltas >= 3 && deltas_at_kill < 0) {
          deltas_at_kill = deltas;
          g_cluster->Kill("safety");
        }
        return true;
      });
  ASSERT_TRUE(streamed.ok()) << streamed.status();
  ASSERT_GE(deltas_at_kill, 3) << body;
  EXPECT_LE(deltas, deltas_at_kill + 1) << "no text after safety went away\n" << body;
  EXPECT_EQ(body.find("message_stop"), std::string::npos) << body;
  const auto events = ParseSse(body);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().event, "error") << body;
  EXPECT_EQ(body.find("127.0.0.1"), std::string::npos) << body;
  const std::string stopped = streamed->headers["request-id"];

  auto refused = Post("/v1/messages", MessagesBody("hello", false, 10, "llama-8b"), key);
  ExpectError(refused, 529, "overloaded_error");
  EXPECT_NE(refused.body.find("safety check is unavailable"), std::string::npos) << refused.body;
  // A chat send meanwhile: chat checks it, so chat refuses and records it.
  auto conversation = Post("/v1/conversations", R"({"model":"llama-8b"})", key);
  ASSERT_EQ(conversation.status, 201) << conversation.body;
  auto send = Post(
      "/v1/conversations/" + json::parse(conversation.body)["id"].get<std::string>() + "/messages",
      R"({"content":"hello"})", key);
  ExpectError(send, 529, "overloaded_error");

  ASSERT_TRUE(g_cluster->Restart("safety").ok()) << g_cluster->Logs();
  // The gateway's channel reconnects (backing off) before the next tests.
  for (int i = 0; i < 100 && Post("/v1/messages", MessagesBody("hello", false, 5)).status != 200;
       ++i) {
    std::this_thread::sleep_for(200ms);
  }
  const auto audit = AuditOf(org, 3);
  ASSERT_EQ(audit.size(), 3u) << g_cluster->Logs();
  std::map<std::string, std::string> seen;  // request id -> "direction by source"
  for (const auto& e : audit) {
    EXPECT_EQ(e.action(), "fail_closed");
    EXPECT_EQ(e.rule(), "safety.unavailable");
    seen[e.request_id()] = e.direction() + " by " + e.source();
  }
  EXPECT_EQ(seen[stopped], "output by gateway");
  EXPECT_EQ(seen[refused.headers["request-id"]], "input by gateway");
  EXPECT_EQ(seen[send.headers["request-id"]], "input by chat");
}

TEST_F(UpstreamEngineTest, ServesTheUpstreamsTextWithItsUsageInBothDialectsAndTheLedger) {
  const std::string key = KeyOfNewOrg("upstream-usage");
  auto r = Post("/v1/messages", MessagesBody("hello upstream", false, 10, "llama-8b"), key);
  ASSERT_EQ(r.status, 200) << r.body;
  const json j = json::parse(r.body);
  EXPECT_EQ(j["model"], "llama-8b");
  EXPECT_EQ(Text(r), "The quick brown fox jumps over the lazy dog.");  // "." is a token
  EXPECT_EQ(j["stop_reason"], "max_tokens");
  EXPECT_EQ(j["usage"]["output_tokens"], 10);
  const int input = j["usage"]["input_tokens"];
  EXPECT_GT(input, 0);
  auto usage = UsageFor("upstream-usage", r.headers["request-id"]);
  ASSERT_EQ(usage.records_size(), 1);
  EXPECT_EQ(usage.records(0).output_tokens(), 10);
  EXPECT_EQ(usage.records(0).input_tokens(), input) << "the upstream's own count is billed";

  // Streamed, the deltas add up to the same text.
  auto s = Post("/v1/messages", MessagesBody("hello upstream", true, 10, "llama-8b"), key);
  ASSERT_EQ(s.status, 200) << s.body;
  std::string streamed;
  for (const auto& e : ParseSse(s.body)) {
    if (e.event == "content_block_delta") streamed += e.data["delta"]["text"].get<std::string>();
  }
  EXPECT_EQ(streamed, Text(r));

  // The OpenAI dialect, with a stop sequence the upstream reports.
  auto o = Post("/v1/chat/completions",
                R"({"model":"llama-8b","max_tokens":20,"stop":[" fox"],)"
                R"("messages":[{"role":"user","content":"hi"}]})",
                key);
  ASSERT_EQ(o.status, 200) << o.body;
  const json oj = json::parse(o.body);
  EXPECT_EQ(oj["choices"][0]["message"]["content"], "The quick brown");
  EXPECT_EQ(oj["choices"][0]["finish_reason"], "stop");
  const json sent = MockStats();
  EXPECT_GE(sent.value("completed", 0), 3) << sent.dump();
}

TEST_F(UpstreamEngineTest, UpstreamErrorsBecomeThePlatformsWithoutInternals) {
  // 429 and 503 from the upstream: overloaded (retryable), not the caller's
  // rate limit.
  for (const char* mode : {"fail=429", "fail=503"}) {
    auto r = Post("/v1/messages",
                  MessagesBody(std::string("[mock:") + mode + "] hi", false, 10, "llama-8b"));
    ExpectError(r, 529, "overloaded_error");
    EXPECT_EQ(r.body.find("127.0.0.1"), std::string::npos) << r.body;
  }
  auto failed = Post("/v1/messages", MessagesBody("[mock:fail=500] hi", false, 10, "llama-8b"));
  ExpectError(failed, 500, "api_error");
  for (const char* internal : {"127.0.0.1", "mock", "upstream", "worker-upstream"}) {
    EXPECT_EQ(failed.body.find(internal), std::string::npos) << failed.body;
  }
  // Silence longer than the idle timeout (1 s here) before the first token.
  auto slow = Post("/v1/messages", MessagesBody("[mock:ttft=3000] hi", false, 10, "llama-8b"));
  ExpectError(slow, 504, "timeout_error");
  // The OpenAI dialect's overloaded is a 503.
  auto o = Post("/v1/chat/completions",
                R"({"model":"llama-8b","max_tokens":5,)"
                R"("messages":[{"role":"user","content":"[mock:fail=429] hi"}]})");
  EXPECT_EQ(o.status, 503) << o.body;
}

// A client that leaves closes the upstream request: the mock records the
// abort (vLLM frees the request's KV cache on it).
TEST_F(UpstreamEngineTest, AClientThatLeavesAbortsTheUpstreamRequest) {
  const int before = MockStats().value("aborted", 0);
  int deltas = 0;
  auto r = http::FetchStreaming(
      {.port = g_cluster->http_port(),
       .method = "POST",
       .target = "/v1/messages",
       .headers = {{"x-api-key", g_cluster->api_key()}, {"content-type", "application/json"}},
       .body = MessagesBody("[mock:tps=20,tokens=400] a long one", true, 400, "llama-8b")},
      [&](std::string_view d) {
        for (size_t p = 0; (p = d.find("content_block_delta", p)) != std::string::npos; ++p) {
          ++deltas;
        }
        return deltas < 3;  // leave after a few tokens
      });
  EXPECT_GE(deltas, 3);
  int aborted = before;
  for (int i = 0; i < 100 && aborted == before; ++i) {
    std::this_thread::sleep_for(50ms);
    aborted = MockStats().value("aborted", 0);
  }
  EXPECT_EQ(aborted, before + 1) << MockStats().dump();
}

// Both official SDKs, with only the base URL changed, against a model an
// upstream serves.
TEST_F(UpstreamEngineTest, BothOfficialSdksWork) {
  const std::string dir = Infra::SourceDir() + "/tests/sdk";
  ASSERT_TRUE(std::filesystem::exists(dir + "/node_modules/openai"))
      << "the SDKs are not installed: run tools/setup (npm ci --prefix tests/sdk)";
  const std::string base = "http://127.0.0.1:" + std::to_string(g_cluster->http_port());
  std::string out;
  int rc =
      RunCommand({"env", "ANTHROPIC_BASE_URL=" + base, "ANTHROPIC_API_KEY=" + g_cluster->api_key(),
                  "SB_MODEL=llama-8b", "SB_EXACT_COUNTS=0", "node", dir + "/sdk_check.mjs"},
                 &out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("sdk checks passed"), std::string::npos) << out;
  rc = RunCommand(
      {"env", "OPENAI_BASE_URL=" + base + "/v1", "OPENAI_API_KEY=" + g_cluster->api_key(),
       "SB_MODEL=llama-8b", "node", dir + "/openai_check.mjs"},
      &out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("openai sdk checks passed"), std::string::npos) << out;
}

// The worker reports its engine's load with its heartbeats: the upstream's
// own figures (scraped from its /metrics) for an upstream engine, and the
// simulated KV cache for the sim.
TEST_F(UpstreamEngineTest, HeartbeatsCarryTheEnginesLoad) {
  auto scheduler =
      switchboard::scheduler::v1::TenantScheduler::NewStub(g_cluster->Channel("tenant-scheduler"));
  auto config = http::Fetch({.port = mock_port_,
                             .method = "POST",
                             .target = "/mock/config",
                             .body = R"({"waiting":7,"kv_cache_usage":0.25})"});
  ASSERT_TRUE(config.ok() && config->status == 200);
  bool upstream_seen = false, sim_seen = false;
  for (int i = 0; i < 100 && !(upstream_seen && sim_seen); ++i) {
    grpc::ClientContext ctx;
    switchboard::scheduler::v1::ListWorkersResponse resp;
    ASSERT_TRUE(scheduler->ListWorkers(&ctx, {}, &resp).ok());
    for (const auto& w : resp.workers()) {
      if (w.worker_id() == "worker-upstream") {
        upstream_seen = w.load().waiting() == 7 && w.load().kv_cache_usage() == 0.25;
      } else if (w.worker_id() == "worker-e2e") {
        sim_seen = w.load().kv_blocks_total() > 0 &&
                   w.load().kv_blocks_free() <= w.load().kv_blocks_total();
      }
    }
    if (!(upstream_seen && sim_seen)) std::this_thread::sleep_for(100ms);
  }
  EXPECT_TRUE(upstream_seen) << "the upstream's vllm:num_requests_waiting reached the scheduler";
  EXPECT_TRUE(sim_seen) << "the simulator's KV cache reached the scheduler";
}

}  // namespace
}  // namespace sb::testing

namespace sb::testing {
namespace {

// SIGTERM: the worker stops taking work, lets its sequences run for most
// of --drain_seconds (1 s here), cancels the rest, and meters every one of
// them (a final report: settled in the ledger) before it exits.
TEST(DrainTest, SigtermMetersEverySequenceBeforeExit) {
  // Two tokens a second: the reply (12 tokens at least) outlives the
  // half-second drain by seconds, however loaded the machine.
  auto worker = g_cluster->StartWorker("worker-term", "sim-term", {"--tokens_per_second=2"});
  ASSERT_TRUE(worker.ok()) << worker.status();
  const std::string key = KeyOfNewOrg("drained");
  int deltas = 0;
  std::string body;
  std::thread stopper;
  auto r = http::FetchStreaming(
      {.port = g_cluster->http_port(),
       .method = "POST",
       .target = "/v1/messages",
       .headers = {{"x-api-key", key}, {"content-type", "application/json"}},
       .body = MessagesBody("drained mid-stream", true, 400, "sim-term")},
      [&](std::string_view d) {
        body.append(d);
        deltas = CountEvents(body, "content_block_delta");
        if (deltas >= 2 && !stopper.joinable()) {
          stopper = std::thread([&] { worker->process.Stop(10000); });
        }
        return true;
      });
  ASSERT_TRUE(stopper.joinable()) << "only " << deltas << " deltas";
  stopper.join();
  ASSERT_TRUE(r.ok()) << r.status();
  auto usage = UsageFor("drained", r->headers["request-id"]);  // settled: the final report
  ASSERT_EQ(usage.records_size(), 1);
  EXPECT_EQ(usage.records(0).stop_reason(), "cancelled");
  EXPECT_GE(usage.records(0).output_tokens(), deltas);
  EXPECT_NE(body.find("event: error"), std::string::npos)
      << "the client learns its stream was cut: "
      << body.substr(body.size() > 400 ? body.size() - 400 : 0);
}

}  // namespace
}  // namespace sb::testing
