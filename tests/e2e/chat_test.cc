// The chat product's routes through the running cluster (issue 10):
// conversation lists, reads, renames, archives and deletes, and optimistic
// concurrency on sends.
#include <algorithm>
#include <atomic>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "connection-manager/user_events.h"
#include "e2e/e2e_helpers.h"
#include "e2e/events_device.h"
#include "gtest/gtest.h"
#include "http/async_client.h"
#include "http/http_client.h"
#include "http/sse_parser.h"
#include "sbadmin/admin.h"
#include "storage/redis.h"
#include "storage/redis_cluster.h"
#include "storage/token_stream.h"

namespace sb::testing {
namespace {

using json = nlohmann::json;

// One user's calls on the chat routes.
class ChatUser {
 public:
  ChatUser(const std::string& org, const std::string& user) {
    admin::Admin admin(g_cluster->infra().pg_uri());
    (void)admin.CreateOrg(org, org);  // the second user of an org finds it there
    auto key = admin.CreateKey(org, user);
    EXPECT_TRUE(key.ok()) << key.status();
    key_ = key.ok() ? *key : "";
  }

  const std::string& key() const { return key_; }

  // `port`: another gateway's (0: the cluster's).
  http::Response Call(const std::string& method, const std::string& target,
                      const std::string& body = "", http::Headers extra = {}, int port = 0) const {
    http::Headers headers = {{"x-api-key", key_}, {"content-type", "application/json"}};
    headers.insert(headers.end(), extra.begin(), extra.end());
    auto r = http::Fetch({.port = port != 0 ? port : g_cluster->http_port(),
                          .method = method,
                          .target = target,
                          .headers = headers,
                          .body = body,
                          .timeout = std::chrono::seconds(10)});
    EXPECT_TRUE(r.ok()) << method << " " << target << ": " << r.status();
    return r.ok() ? *r : http::Response{};
  }

  std::string NewConversation(const std::string& title = "",
                              const std::string& model = "sim-small") const {
    const std::string body = title.empty() ? json{{"model", model}}.dump()
                                           : json{{"model", model}, {"title", title}}.dump();
    auto r = Call("POST", "/v1/conversations", body);
    EXPECT_EQ(r.status, 201) << r.body;
    return r.status == 201 ? json::parse(r.body)["id"].get<std::string>() : "";
  }

  http::Response Send(const std::string& conversation_id, const std::string& content,
                      const json& extra = json::object(), http::Headers headers = {}) const {
    json body = {{"content", content}, {"max_tokens", 4}};  // `extra` may say otherwise
    body.update(extra);
    return Call("POST", "/v1/conversations/" + conversation_id + "/messages", body.dump(),
                std::move(headers));
  }

  // Every conversation id of the list, page by page.
  std::vector<std::string> ListAll(const std::string& query, int* pages = nullptr) const {
    std::vector<std::string> ids;
    std::string cursor;
    int n = 0;
    do {
      auto r =
          Call("GET", "/v1/conversations?" + query + (cursor.empty() ? "" : "&cursor=" + cursor));
      EXPECT_EQ(r.status, 200) << r.body;
      if (r.status != 200) break;
      const json page = json::parse(r.body);
      for (const auto& c : page["data"]) ids.push_back(c["id"]);
      cursor = page["has_more"].get<bool>() ? page["next_cursor"].get<std::string>() : "";
      EXPECT_EQ(page["has_more"].get<bool>(), !page["next_cursor"].is_null());
    } while (!cursor.empty() && ++n < 50);
    if (pages != nullptr) *pages = n + 1;
    return ids;
  }

 private:
  std::string key_;
};

TEST(ConversationsTest, ListReadRenameArchiveAndDelete) {
  const ChatUser alice("convs", "alice");
  const ChatUser bob("convs", "bob");
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(alice.NewConversation("chat " + std::to_string(i)));
  const std::string untitled = alice.NewConversation();
  bob.NewConversation("bob's");

  // Most recent last message first: a send moves a conversation up, and an
  // untitled one is named by its first message.
  auto sent = alice.Send(untitled, "  What is the capital\n of Portugal? ");
  ASSERT_EQ(sent.status, 202) << sent.body;
  int pages = 0;
  EXPECT_EQ(alice.ListAll("limit=2", &pages),
            (std::vector<std::string>{untitled, ids[4], ids[3], ids[2], ids[1], ids[0]}));
  EXPECT_EQ(pages, 3);

  auto got = alice.Call("GET", "/v1/conversations/" + untitled);
  ASSERT_EQ(got.status, 200) << got.body;
  json conv = json::parse(got.body);
  EXPECT_EQ(conv["type"], "conversation");
  EXPECT_EQ(conv["title"], "What is the capital of Portugal?");
  EXPECT_EQ(conv["archived"], false);
  EXPECT_EQ(conv["message_count"], 2);
  EXPECT_EQ(got.headers["etag"], "\"" + std::to_string(conv["version"].get<int64_t>()) + "\"");

  // Rename and archive: the version moves, the list leaves it out, the
  // archived list has it alone.
  auto patched =
      alice.Call("PATCH", "/v1/conversations/" + ids[2], R"({"title":"Renamed","archived":true})");
  ASSERT_EQ(patched.status, 200) << patched.body;
  conv = json::parse(patched.body);
  EXPECT_EQ(conv["title"], "Renamed");
  EXPECT_EQ(conv["archived"], true);
  EXPECT_EQ(conv["version"], 2);
  EXPECT_EQ(patched.headers["etag"], "\"2\"");
  EXPECT_EQ(alice.ListAll("archived=true"), (std::vector<std::string>{ids[2]}));
  EXPECT_EQ(alice.ListAll("limit=100").size(), 5u);

  // Deleted: gone from every read at once, and a second delete is a 404.
  auto deleted = alice.Call("DELETE", "/v1/conversations/" + ids[0]);
  ASSERT_EQ(deleted.status, 200) << deleted.body;
  EXPECT_EQ(json::parse(deleted.body), (json{{"id", ids[0]}, {"type", "conversation_deleted"}}));
  ExpectError(alice.Call("GET", "/v1/conversations/" + ids[0]), 404, "not_found_error");
  ExpectError(alice.Call("GET", "/v1/conversations/" + ids[0] + "/messages"), 404,
              "not_found_error");
  ExpectError(alice.Send(ids[0], "anyone there?"), 404, "not_found_error");
  ExpectError(alice.Call("DELETE", "/v1/conversations/" + ids[0]), 404, "not_found_error");
  EXPECT_EQ(alice.ListAll("limit=100").size(), 4u);

  // Another user of the org sees their own list and none of alice's.
  EXPECT_EQ(bob.ListAll("").size(), 1u);
  for (const char* method : {"GET", "PATCH", "DELETE"}) {
    ExpectError(bob.Call(method, "/v1/conversations/" + ids[1], R"({"title":"mine"})"), 404,
                "not_found_error");
  }
}

TEST(ConversationsTest, BadListsAndChangesAre400InTheErrorFormat) {
  const ChatUser carol("convs-bad", "carol");
  const std::string id = carol.NewConversation("c");
  for (const std::string query : {"limit=0", "limit=101", "limit=5x", "archived=maybe",
                                  "cursor=nope", "cursor=123.notanid"}) {
    SCOPED_TRACE(query);
    ExpectError(carol.Call("GET", "/v1/conversations?" + query), 400, "invalid_request_error");
  }
  const std::string path = "/v1/conversations/" + id;
  for (const std::string body :
       {R"({})", R"({"title":7})", R"({"archived":"yes"})", R"({"current_leaf_id":"x"})",
        R"({"title":"a\u0000b"})", R"({"title":"t","expected_version":0})", R"([1])"}) {
    SCOPED_TRACE(body);
    ExpectError(carol.Call("PATCH", path, body), 400, "invalid_request_error");
  }
  for (const std::string tag : {"1", "W/\"1\"", "\"one\"", "\"1\", \"2\""}) {
    SCOPED_TRACE(tag);
    ExpectError(carol.Call("PATCH", path, R"({"title":"t"})", {{"if-match", tag}}), 400,
                "invalid_request_error");
  }
  ExpectError(
      carol.Call("PATCH", path, R"({"title":"t","expected_version":1})", {{"if-match", "\"2\""}}),
      400, "invalid_request_error");
  // None of them changed it.
  auto got = carol.Call("GET", path);
  ASSERT_EQ(got.status, 200);
  EXPECT_EQ(json::parse(got.body)["version"], 1);
  EXPECT_EQ(json::parse(got.body)["title"], "c");
}

// Two devices sending at the same moment with the version they both saw:
// one wins, the other gets 409 with the version it is at — never two
// interleaved turns. A stale If-Match on a rename or delete is 409 too.
TEST(ConversationsTest, TwoDevicesSendingAtOnceOneWinsTheOtherGets409) {
  const ChatUser dave("convs-race", "dave");
  const std::string id = dave.NewConversation("race");
  int64_t version = 1;
  for (int round = 0; round < 5; ++round) {
    SCOPED_TRACE(round);
    std::vector<http::Response> replies(2);
    std::vector<std::thread> devices;
    for (int d = 0; d < 2; ++d) {
      devices.emplace_back([&, d] {
        replies[d] = d == 0 ? dave.Send(id, "from the phone", {{"expected_version", version}})
                            : dave.Send(id, "from the laptop", json::object(),
                                        {{"if-match", "\"" + std::to_string(version) + "\""}});
      });
    }
    for (auto& t : devices) t.join();
    const int won = replies[0].status == 202 ? 0 : 1;
    ASSERT_EQ(replies[won].status, 202) << replies[won].body;
    const http::Response& lost = replies[1 - won];
    ExpectError(lost, 409, "invalid_request_error");
    EXPECT_EQ(lost.headers.at("etag"), "\"" + std::to_string(version + 1) + "\"") << lost.body;
    EXPECT_NE(lost.body.find("version " + std::to_string(version + 1)), std::string::npos)
        << lost.body;
    const json accepted = json::parse(replies[won].body);
    EXPECT_EQ(accepted["conversation_version"], version + 1);
    EXPECT_EQ(replies[won].headers.at("etag"), lost.headers.at("etag"));
    version = accepted["conversation_version"];
  }
  // Five turns, one per round: ten messages, none from a losing send.
  auto list = dave.Call("GET", "/v1/conversations/" + id + "/messages?limit=200");
  ASSERT_EQ(list.status, 200);
  EXPECT_EQ(json::parse(list.body)["data"].size(), 10u);

  const std::string stale = "\"" + std::to_string(version - 1) + "\"";
  auto renamed =
      dave.Call("PATCH", "/v1/conversations/" + id, R"({"title":"x"})", {{"if-match", stale}});
  ExpectError(renamed, 409, "invalid_request_error");
  EXPECT_EQ(renamed.headers["etag"], "\"" + std::to_string(version) + "\"");
  ExpectError(dave.Call("DELETE", "/v1/conversations/" + id, "", {{"if-match", stale}}), 409,
              "invalid_request_error");
  auto current = "\"" + std::to_string(version) + "\"";
  EXPECT_EQ(
      dave.Call("PATCH", "/v1/conversations/" + id, R"({"title":"x"})", {{"if-match", current}})
          .status,
      200);
  EXPECT_EQ(dave.Call("DELETE", "/v1/conversations/" + id, "", {{"if-match", "*"}}).status, 200);
}

// Stop: a reply stopped through another chat replica than the one that
// runs it ends at once with the text so far and stop_reason "cancelled" —
// for its reader (message_delta, message_stop), in the stored message, and
// in the ledger, which meters what was generated.
TEST(ChatStopTest, AStopThroughAnyReplicaEndsTheReplyWithItsTextAndMetersIt) {
  // 20 tokens a second: a 300-token reply runs for 15 s unless stopped.
  auto worker = g_cluster->StartWorker("worker-stop", "sim-stop", {"--tokens_per_second=20"});
  ASSERT_TRUE(worker.ok()) << worker.status();
  ASSERT_TRUE(g_cluster->StartChatReplica("chat-b").ok());
  auto gateway_b = g_cluster->StartGateway("gateway-chat-b",
                                           {"--chat_address=" + g_cluster->grpc_address("chat-b")});
  ASSERT_TRUE(gateway_b.ok()) << gateway_b.status();

  const ChatUser erin("stop", "erin");
  const std::string id = erin.NewConversation("stop me", "sim-stop");
  auto sent = erin.Send(id, "tell me everything", {{"max_tokens", 300}});
  ASSERT_EQ(sent.status, 202) << sent.body;
  const std::string reply_id = json::parse(sent.body)["assistant_message_id"];
  const std::string reply_path = "/v1/conversations/" + id + "/messages/" + reply_id;

  std::string body;
  std::atomic<int> deltas{0};
  std::chrono::steady_clock::time_point stopped_at{}, ended_at{};
  std::thread reader([&] {
    auto r = http::FetchStreaming({.port = g_cluster->http_port(),
                                   .target = reply_path + "/stream",
                                   .headers = {{"x-api-key", erin.key()}},
                                   .timeout = std::chrono::seconds(30)},
                                  [&](std::string_view d) {
                                    body.append(d);
                                    deltas = CountEvents(body, "content_block_delta");
                                    if (CountEvents(body, "message_stop") > 0) {
                                      ended_at = std::chrono::steady_clock::now();
                                    }
                                    return true;
                                  });
    EXPECT_TRUE(r.ok()) << r.status();
  });
  for (int i = 0; i < 1000 && deltas < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_GE(deltas.load(), 3);
  // Through gateway B to chat B: the turn runs on the cluster's chat.
  stopped_at = std::chrono::steady_clock::now();
  auto stop = erin.Call("POST", reply_path + "/cancel", "", {}, gateway_b->http_port);
  reader.join();
  ASSERT_EQ(stop.status, 202) << stop.body;
  EXPECT_EQ(json::parse(stop.body)["id"], reply_id);
  std::printf(
      "[ figure   ] stop through another replica -> message_stop at the reader: %lld ms\n",
      static_cast<long long>(
          std::chrono::duration_cast<std::chrono::milliseconds>(ended_at - stopped_at).count()));

  const auto events = ParseSse(body);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.back().event, "message_stop") << body.substr(body.size() - 300);
  EXPECT_EQ(events[events.size() - 2].data["delta"]["stop_reason"], "cancelled");
  std::string streamed;
  for (const auto& e : events) {
    if (e.event == "content_block_delta") streamed += e.data["delta"]["text"].get<std::string>();
  }

  auto list = erin.Call("GET", "/v1/conversations/" + id + "/messages");
  ASSERT_EQ(list.status, 200);
  const json stored = json::parse(list.body)["data"][1];
  EXPECT_EQ(stored["id"], reply_id);
  EXPECT_EQ(stored["status"], "complete");
  EXPECT_EQ(stored["stop_reason"], "cancelled");
  EXPECT_EQ(stored["content"], streamed) << "the stored reply is what its reader was sent";
  const int output_tokens = stored["usage"]["output_tokens"];
  EXPECT_GT(output_tokens, 0);
  EXPECT_LT(output_tokens, 300);
  auto usage = UsageFor("stop", reply_id);
  ASSERT_EQ(usage.records_size(), 1);
  EXPECT_EQ(usage.records(0).stop_reason(), "cancelled");
  // Metered as generated: what the reader got, and what the worker made
  // before the stop reached it; the worker stopped (not all 300).
  EXPECT_GE(usage.records(0).output_tokens(), output_tokens);
  EXPECT_LT(usage.records(0).output_tokens(), 300);

  // Again: the reply as it ended. A user message is not a reply; another
  // user's reply is not found.
  auto again = erin.Call("POST", reply_path + "/cancel");
  ASSERT_EQ(again.status, 202) << again.body;
  EXPECT_EQ(json::parse(again.body)["stop_reason"], "cancelled");
  const std::string user_message_id = json::parse(sent.body)["user_message"]["id"];
  ExpectError(
      erin.Call("POST", "/v1/conversations/" + id + "/messages/" + user_message_id + "/cancel"),
      400, "invalid_request_error");
  const ChatUser frank("stop", "frank");
  ExpectError(frank.Call("POST", reply_path + "/cancel"), 404, "not_found_error");
  EXPECT_EQ(
      MetricValue(g_cluster->metrics_port("chat-b"), "sb_chat_cancels_total{where=\"elsewhere\"}"),
      1);
  EXPECT_GE(MetricValue(g_cluster->metrics_port("chat"), "sb_chat_cancel_bus_received_total"), 1);
  g_cluster->Kill("chat-b");
}

// What PostgreSQL and Redis still hold of a conversation: its rows, and the
// replay buffers of the replies named.
int Remains(const std::string& conversation_id, const std::vector<std::string>& reply_ids) {
  pqxx::connection c(g_cluster->infra().pg_uri());
  pqxx::read_transaction tx(c);
  int n = tx.exec_params1(
                "SELECT ((SELECT count(*) FROM messages WHERE conversation_id = $1) + "
                " (SELECT count(*) FROM conversations WHERE id = $1))::int",
                conversation_id)[0]
              .as<int>();
  RedisClient redis({.port = g_cluster->infra().redis_port()});
  for (const auto& id : reply_ids) {
    auto r = redis.Command({"EXISTS", TokenStreamKey(id)});
    EXPECT_TRUE(r.ok()) << r.status();
    if (r.ok()) n += static_cast<int>(r->integer);
  }
  return n;
}

// Erasure: a deleted conversation's rows and its replies' replay buffers
// are removed (at once: --erase_after is 0), also when a reply was still
// generating — it is stopped first.
TEST(ConversationsTest, ADeletedConversationLeavesNothingInPostgresOrRedis) {
  auto worker = g_cluster->StartWorker("worker-erase", "sim-erase", {"--tokens_per_second=20"});
  ASSERT_TRUE(worker.ok()) << worker.status();
  const ChatUser gina("erase", "gina");
  for (bool running : {false, true}) {
    SCOPED_TRACE(running ? "a reply still running" : "replies ended");
    const std::string id = gina.NewConversation("to forget", running ? "sim-erase" : "sim-small");
    std::vector<std::string> replies;
    for (int turn = 0; turn < 2; ++turn) {
      auto sent = gina.Send(id, "remember this " + std::to_string(turn),
                            {{"max_tokens", running ? 300 : 4}});
      ASSERT_EQ(sent.status, 202) << sent.body;
      replies.push_back(json::parse(sent.body)["assistant_message_id"]);
      // The reply's buffer exists (its first events are in).
      auto stream = http::FetchStreaming(
          {.port = g_cluster->http_port(),
           .target = "/v1/conversations/" + id + "/messages/" + replies.back() + "/stream",
           .headers = {{"x-api-key", gina.key()}},
           .timeout = std::chrono::seconds(30)},
          [&](std::string_view d) { return !running && d.find("message_stop") == d.npos; });
      ASSERT_TRUE(stream.ok()) << stream.status();
      if (running) break;  // one turn, still generating
    }
    ASSERT_GT(Remains(id, replies), 0);
    ASSERT_EQ(gina.Call("DELETE", "/v1/conversations/" + id).status, 200);
    int left = -1;
    for (int i = 0; i < 100 && left != 0; ++i) {
      left = Remains(id, replies);
      if (left != 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    EXPECT_EQ(left, 0) << "rows or replay buffers left 10 s after the delete";
  }
  EXPECT_GE(MetricValue(g_cluster->metrics_port("chat"), "sb_chat_erased_conversations_total"), 2);
}

// A long conversation keeps working: 30 messages of 200 KiB (6 MiB of
// history, over gRPC's 4 MiB message) each get a complete reply, because
// the history sent to the model is trimmed, oldest turns first.
TEST(LongConversationTest, ThirtyMessagesOf200KiBAllGetReplies) {
  const ChatUser hana("long", "hana");
  const std::string id = hana.NewConversation("long");
  std::string content;
  while (content.size() < 200 * 1024 - 16) content += "lorem ipsum dolor sit amet ";
  const auto started = std::chrono::steady_clock::now();
  for (int turn = 0; turn < 30; ++turn) {
    SCOPED_TRACE(turn);
    auto sent = hana.Send(id, std::to_string(turn) + " " + content);
    ASSERT_EQ(sent.status, 202) << sent.body;
    const std::string reply_id = json::parse(sent.body)["assistant_message_id"];
    auto stream = hana.Call("GET", "/v1/conversations/" + id + "/messages/" + reply_id + "/stream");
    ASSERT_EQ(stream.status, 200);
    const auto events = ParseSse(stream.body);
    ASSERT_FALSE(events.empty());
    ASSERT_EQ(events.back().event, "message_stop") << stream.body.substr(0, 400);
    EXPECT_EQ(events[events.size() - 2].data["delta"]["stop_reason"], "max_tokens");
  }
  std::printf("[ figure   ] 30 turns of 200 KiB each answered in %lld ms\n",
              static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                         std::chrono::steady_clock::now() - started)
                                         .count()));
}

// Branches through the API: an edit (a send naming an earlier reply as its
// parent) and a regenerate each add a sibling and become the listed branch;
// PATCH current_leaf_id switches back.
TEST(BranchesTest, EditRegenerateAndSwitch) {
  const ChatUser ida("branches", "ida");
  const std::string id = ida.NewConversation("branches");
  // Sends and waits for the reply's end; its id.
  auto turn = [&](const json& body) {
    auto sent = ida.Call("POST", "/v1/conversations/" + id + "/messages", body.dump());
    EXPECT_EQ(sent.status, 202) << sent.body;
    const std::string url = json::parse(sent.body)["stream_url"];
    EXPECT_EQ(ida.Call("GET", url).status, 200);
    return json::parse(sent.body)["assistant_message_id"].get<std::string>();
  };
  auto listed = [&] {
    auto r = ida.Call("GET", "/v1/conversations/" + id + "/messages");
    EXPECT_EQ(r.status, 200) << r.body;
    return json::parse(r.body)["data"];
  };
  const std::string first = turn({{"content", "first"}, {"max_tokens", 4}});
  const std::string second = turn({{"content", "second"}, {"max_tokens", 4}});
  json msgs = listed();
  ASSERT_EQ(msgs.size(), 4u);
  EXPECT_EQ(msgs[2]["parent_id"], first);

  // Edit "second": a sibling answering the same reply.
  const std::string edited =
      turn({{"content", "second, edited"}, {"max_tokens", 4}, {"parent_id", first}});
  msgs = listed();
  ASSERT_EQ(msgs.size(), 4u);
  EXPECT_EQ(msgs[2]["content"], "second, edited");
  EXPECT_EQ(msgs[2]["sibling_ids"].size(), 2u);
  EXPECT_EQ(msgs[3]["id"], edited);

  // Regenerate the edited reply: a sibling reply ends the branch.
  auto again = ida.Call("POST", "/v1/conversations/" + id + "/messages/" + edited + "/regenerate");
  ASSERT_EQ(again.status, 202) << again.body;
  const std::string regenerated = json::parse(again.body)["assistant_message_id"];
  EXPECT_EQ(ida.Call("GET", json::parse(again.body)["stream_url"].get<std::string>()).status, 200);
  msgs = listed();
  ASSERT_EQ(msgs.size(), 4u);
  EXPECT_EQ(msgs[3]["id"], regenerated);
  EXPECT_EQ(msgs[3]["sibling_ids"], (json{edited, regenerated}));

  // Back to the first branch.
  auto switched =
      ida.Call("PATCH", "/v1/conversations/" + id, json{{"current_leaf_id", second}}.dump());
  ASSERT_EQ(switched.status, 200) << switched.body;
  EXPECT_EQ(json::parse(switched.body)["current_leaf_id"], second);
  msgs = listed();
  ASSERT_EQ(msgs.size(), 4u);
  EXPECT_EQ(msgs[2]["content"], "second");
  EXPECT_EQ(msgs[3]["id"], second);

  // Errors: a user message is neither a leaf nor regenerated; a parent
  // must be a reply of the conversation.
  const std::string user_message = msgs[2]["id"];
  ExpectError(
      ida.Call("PATCH", "/v1/conversations/" + id, json{{"current_leaf_id", user_message}}.dump()),
      400, "invalid_request_error");
  ExpectError(
      ida.Call("POST", "/v1/conversations/" + id + "/messages/" + user_message + "/regenerate"),
      400, "invalid_request_error");
  ExpectError(ida.Call("POST", "/v1/conversations/" + id + "/messages",
                       json{{"content", "x"}, {"parent_id", user_message}}.dump()),
              400, "invalid_request_error");
}

TEST(ChatEventsTest, EveryDeviceOfTheUserSeesTheChangesAndResumesWithoutGapOrDuplicate) {
  const ChatUser gina("events", "gina");
  const ChatUser hal("events", "hal");           // same org, another user
  const ChatUser other("events-other", "gina");  // another org, the same user name
  http::AsyncClient client;
  const int port = g_cluster->http_port();
  EventsDevice phone(client, port, gina.key());
  EventsDevice laptop(client, port, gina.key());
  EventsDevice hals(client, port, hal.key());
  EventsDevice others(client, port, other.key());
  for (EventsDevice* d : {&phone, &laptop, &hals, &others}) ASSERT_TRUE(d->WaitSubscribed());

  const std::string id = gina.NewConversation("events");
  auto sent = gina.Send(id, "hello from the phone");
  ASSERT_EQ(sent.status, 202) << sent.body;
  const std::string reply_id = json::parse(sent.body)["assistant_message_id"];
  // created, the user message, the reply completed.
  ASSERT_EQ(phone.Events(3).size(), 3u);
  ASSERT_EQ(gina.Call("PATCH", "/v1/conversations/" + id, R"({"title":"renamed"})").status, 200);

  const auto events = phone.Events(4);
  ASSERT_EQ(events.size(), 4u);
  std::vector<std::string> types;
  for (const auto& e : events) {
    types.push_back(e.type);
    EXPECT_EQ(e.data["type"], e.type);
    EXPECT_EQ(e.data["conversation_id"], id);
    EXPECT_FALSE(e.id.empty());
  }
  EXPECT_EQ(types, (std::vector<std::string>{"conversation.created", "message.created",
                                             "message.completed", "conversation.updated"}));
  EXPECT_EQ(events[0].data["conversation"]["title"], "events");
  EXPECT_EQ(events[1].data["message"]["content"], "hello from the phone");
  EXPECT_EQ(events[2].data["message"]["id"], reply_id);
  EXPECT_EQ(events[2].data["message"]["status"], "complete");
  EXPECT_EQ(events[3].data["conversation"]["title"], "renamed");
  const auto on_laptop = laptop.Events(4);
  ASSERT_EQ(on_laptop.size(), 4u);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(on_laptop[i].id, events[i].id) << "the same stream";

  // A device that saw the first event resumes after it: the other three, once.
  {
    EventsDevice back(client, port, gina.key(), events[0].id);
    const auto resumed = back.Events(3);
    ASSERT_EQ(resumed.size(), 3u);
    for (size_t i = 0; i < 3; ++i) EXPECT_EQ(resumed[i].id, events[i + 1].id);
  }

  // The delete is announced, and erases the conversation's earlier events
  // (the text they carried): resuming from the first now finds only it.
  ASSERT_EQ(gina.Call("DELETE", "/v1/conversations/" + id).status, 200);
  const auto after_delete = phone.Events(5);
  ASSERT_EQ(after_delete.size(), 5u);
  EXPECT_EQ(after_delete[4].type, "conversation.deleted");
  EventsDevice late(client, port, gina.key(), events[0].id);
  const auto left = late.Events(1);
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left[0].id, after_delete[4].id);

  // Nobody else saw any of it.
  EXPECT_TRUE(hals.Events(1, std::chrono::milliseconds(300)).empty());
  EXPECT_TRUE(others.Events(1, std::chrono::milliseconds(300)).empty());

  // A cursor that is no event's is refused in the API's error format.
  auto bad = gina.Call("GET", "/v1/events", "", {{"last-event-id", "msg_1:4"}});
  ExpectError(bad, 400, "invalid_request_error");
}

TEST(ChatSearchTest, FindsTheCallersMessagesAndForgetsDeletedOnes) {
  const ChatUser ivy("search", "ivy");
  const ChatUser jon("search", "jon");
  const std::string id = ivy.NewConversation("holidays");
  ASSERT_EQ(ivy.Send(id, "which quokka islands can I visit?").status, 202);
  ASSERT_EQ(jon.Send(jon.NewConversation(), "a quokka for jon").status, 202);

  auto r = ivy.Call("GET", "/v1/conversations/search?q=Quokka+islands");
  ASSERT_EQ(r.status, 200) << r.body;
  const json page = json::parse(r.body);
  ASSERT_EQ(page["data"].size(), 1u) << r.body;
  EXPECT_FALSE(page["has_more"].get<bool>());
  const json& hit = page["data"][0];
  EXPECT_EQ(hit["type"], "search_result");
  EXPECT_EQ(hit["conversation_id"], id);
  EXPECT_EQ(hit["conversation_title"], "holidays");
  EXPECT_EQ(hit["role"], "user");
  EXPECT_NE(hit["snippet"].get<std::string>().find("which quokka islands"), std::string::npos)
      << hit["snippet"];
  EXPECT_FALSE(hit["message_id"].get<std::string>().empty());

  ExpectError(ivy.Call("GET", "/v1/conversations/search"), 400, "invalid_request_error");
  ExpectError(ivy.Call("GET", "/v1/conversations/search?q=%3F%21"), 400, "invalid_request_error");
  ExpectError(ivy.Call("GET", "/v1/conversations/search?q=quokka&limit=51"), 400,
              "invalid_request_error");
  ExpectError(ivy.Call("GET", "/v1/conversations/search?q=" + std::string(600, 'a')), 400,
              "invalid_request_error");

  ASSERT_EQ(ivy.Call("DELETE", "/v1/conversations/" + id).status, 200);
  auto after = ivy.Call("GET", "/v1/conversations/search?q=quokka");
  ASSERT_EQ(after.status, 200) << after.body;
  EXPECT_TRUE(json::parse(after.body)["data"].empty()) << "a deleted conversation is not found";
}

// sbadmin erase-user: everything the user has goes — conversations, their
// messages and search entries, replay buffers (a reply still generating is
// stopped first), the user's row and the events kept for their devices,
// whose last event is the tombstone — and nothing of another user's.
TEST(ChatEraseUserTest, LeavesNothingOfTheUserInPostgresOrRedis) {
  const ChatUser kim("erase-user", "kim");
  const ChatUser lee("erase-user", "lee");
  http::AsyncClient client;
  EventsDevice device(client, g_cluster->http_port(), kim.key());
  ASSERT_TRUE(device.WaitSubscribed());
  std::vector<std::string> conversations, replies;
  for (int tokens : {4, 300}) {  // one reply ends, the other is still generating
    conversations.push_back(kim.NewConversation("kim's"));
    auto sent = kim.Send(conversations.back(), "kim's secret", {{"max_tokens", tokens}});
    ASSERT_EQ(sent.status, 202) << sent.body;
    replies.push_back(json::parse(sent.body)["assistant_message_id"]);
  }
  const std::string kept = lee.NewConversation("lee's");
  ASSERT_EQ(lee.Send(kept, "lee's secret").status, 202);
  // kim's events so far: 2 created, 2 message.created, at least 1 completed.
  ASSERT_GE(device.Events(5).size(), 5u);

  std::string out;
  ASSERT_EQ(RunCommand({Infra::BuildDir() + "/tools/sbadmin", "--pg=" + g_cluster->infra().pg_uri(),
                        "erase-user", "erase-user", "kim"},
                       &out),
            0)
      << out;
  EXPECT_NE(out.find("2 conversation(s) deleted"), std::string::npos) << out;

  int left = -1;
  for (int i = 0; i < 100 && left != 0; ++i) {
    left = 0;
    for (size_t c = 0; c < conversations.size(); ++c)
      left += Remains(conversations[c], {replies[c]});
    if (left != 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(left, 0) << "rows or replay buffers left 10 s after erase-user";
  {
    pqxx::connection c(g_cluster->infra().pg_uri());
    pqxx::read_transaction tx(c);
    EXPECT_EQ(tx.exec1("SELECT count(*) FROM conversations WHERE org_id = 'erase-user' AND "
                       "user_id = 'kim'")[0]
                  .as<int>(),
              0);
    EXPECT_EQ(tx.exec1("SELECT count(*) FROM users WHERE org_id = 'erase-user' AND id = 'kim'")[0]
                  .as<int>(),
              0);
    EXPECT_EQ(tx.exec1("SELECT count(*) FROM messages WHERE content LIKE 'kim%'")[0].as<int>(), 0);
    EXPECT_EQ(
        tx.exec1("SELECT count(*) FROM messages WHERE content = 'lee''s secret'")[0].as<int>(), 1)
        << "another user's messages stay";
  }

  // Devices get the deletions and then the tombstone; what is kept for
  // them is the tombstone alone.
  std::vector<EventsDevice::Event> events;
  for (int i = 0; i < 300; ++i) {  // 30 s: the indexer may have a backlog from earlier suites
    events = device.Events(0, std::chrono::milliseconds(0));
    if (!events.empty() && events.back().type == "user.erased") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_FALSE(events.empty());
  std::string seen;
  for (const auto& e : events) seen += e.type + " ";
  EXPECT_EQ(events.back().type, "user.erased") << seen;
  EXPECT_TRUE(events.back().data["conversation_id"].is_null());
  RedisClient redis({.port = g_cluster->infra().redis_port()});
  auto kept_events =
      redis.Command({"XRANGE", connection::UserEventsKey("erase-user", "kim"), "-", "+"});
  ASSERT_TRUE(kept_events.ok()) << kept_events.status();
  ASSERT_EQ(kept_events->elements.size(), 1u);
  EXPECT_EQ(kept_events->elements[0].elements[1].elements[1].str, "user.erased");
  auto lee_events = redis.Command({"XLEN", connection::UserEventsKey("erase-user", "lee")});
  ASSERT_TRUE(lee_events.ok());
  EXPECT_GT(lee_events->integer, 0) << "another user's events stay";
}

// A reader of a reply stream that comes and goes: each connection resumes
// with the last id it saw (none at first) and leaves after `leave_after`
// events (0: reads to the end). Checks that the ids follow each other.
struct ReplyReader {
  std::string url;
  std::string key;
  std::string last_id;
  std::string text;
  bool ended = false;
  int connections = 0;
  int broken = 0;     // connections the gateway ended with an error of its own
  std::string error;  // the reply's error event, if it ended with one
  int next_offset = 1;
  std::function<void(int64_t offset)> on_event;  // after each event of the reply

  // One connection: its HTTP status (0 when it could not connect).
  int Connect(int leave_after, int port = 0) {
    http::Headers headers = {{"x-api-key", key}};
    if (!last_id.empty()) headers.push_back({"last-event-id", last_id});
    http::SseParser parser;
    int got = 0;
    ++connections;
    auto r = http::FetchStreaming(
        {.port = port != 0 ? port : g_cluster->http_port(),
         .target = url,
         .headers = headers,
         .timeout = std::chrono::seconds(30)},
        [&](std::string_view piece) {
          (void)parser.Feed(piece, [&](const http::SseEvent& e) {
            if (e.event == "ping" || ended) return;
            // An error of the gateway's own (its backend went away) has no
            // id of the reply's: the parser repeats the last one. Resume.
            if (e.event == "error" && e.id == last_id) {
              ++broken;
              return;
            }
            const std::string expected =
                url.substr(url.rfind("/messages/") + 10,
                           url.rfind("/stream") - url.rfind("/messages/") - 10) +
                ":" + std::to_string(next_offset);
            EXPECT_EQ(e.id, expected) << "after " << last_id;
            ++next_offset;
            last_id = e.id;
            ++got;
            if (e.event == "content_block_delta") {
              text += json::parse(e.data)["delta"]["text"].get<std::string>();
            }
            if (e.event == "error") error = e.data;
            if (e.event == "message_stop" || e.event == "error") ended = true;
            if (on_event) on_event(next_offset - 1);
          });
          return !ended && (leave_after == 0 || got < leave_after);
        });
    return r.ok() ? r->status : 0;
  }
};

// A message as the conversation's list shows it (null when it is not there).
json StoredMessage(const ChatUser& user, const std::string& conversation_id,
                   const std::string& message_id) {
  auto r = user.Call("GET", "/v1/conversations/" + conversation_id + "/messages?limit=100");
  EXPECT_EQ(r.status, 200) << r.body;
  if (r.status != 200) return nullptr;
  const json page = json::parse(r.body);
  for (const auto& m : page["data"]) {
    if (m["id"] == message_id) return m;
  }
  return nullptr;
}

// 1,000 random disconnects and reconnects while replies stream (60 at
// once, on a slow worker, each read by a client that leaves after one or two
// events and comes back with its Last-Event-ID): the text joined from each
// reply's connections is the stored reply, byte for byte.
TEST(ChatReconnectTest, AThousandRandomReconnectsJoinToTheStoredReplies) {
  auto worker =
      g_cluster->StartWorker("worker-reconnect", "sim-reconnect", {"--tokens_per_second=20"});
  ASSERT_TRUE(worker.ok()) << worker.status();
  const ChatUser mo("reconnect", "mo");
  constexpr int kReplies = 60;
  std::vector<std::string> conversations, replies;
  std::vector<ReplyReader> readers;
  for (int i = 0; i < kReplies; ++i) {
    conversations.push_back(mo.NewConversation("reconnects", "sim-reconnect"));
    auto sent =
        mo.Send(conversations.back(), "story number " + std::to_string(i), {{"max_tokens", 100}});
    ASSERT_EQ(sent.status, 202) << sent.body;
    replies.push_back(json::parse(sent.body)["assistant_message_id"]);
    readers.push_back({.url = json::parse(sent.body)["stream_url"], .key = mo.key()});
  }
  std::vector<std::thread> threads;
  for (int i = 0; i < kReplies; ++i) {
    threads.emplace_back([&reader = readers[i], i] {
      std::mt19937 rng(20261203 + i);
      std::uniform_int_distribution<int> events(1, 2);
      while (!reader.ended && reader.connections < 1000) {
        const int status = reader.Connect(events(rng));
        EXPECT_EQ(status, 200) << "connection " << reader.connections;
        if (status != 200) return;
      }
    });
  }
  for (auto& t : threads) t.join();
  int connections = 0;
  for (int i = 0; i < kReplies; ++i) {
    SCOPED_TRACE(replies[i]);
    ASSERT_TRUE(readers[i].ended);
    EXPECT_EQ(readers[i].error, "");
    connections += readers[i].connections;
    const json m = StoredMessage(mo, conversations[i], replies[i]);
    ASSERT_TRUE(m.is_object());
    EXPECT_EQ(m["status"], "complete");
    EXPECT_EQ(m["content"].get<std::string>(), readers[i].text) << "joined from every connection";
    EXPECT_FALSE(readers[i].text.empty());
  }
  EXPECT_GE(connections, 1000);
  std::printf("[ figure   ] %d connections for %d replies\n", connections, kReplies);
}

// chat and connection-manager on the suite's 3-master Redis Cluster
// (--redis_cluster), behind a gateway of their own: replies stream, resume
// from their middle with Last-Event-ID, and a device follows its user's
// events; the reply buffers are on the cluster (spread over its masters),
// none on the single Redis the rest of the suite uses.
TEST(ChatOnRedisClusterTest, RepliesStreamAndResumeAndEventsFollow) {
  const auto& nodes = g_cluster->infra().redis_cluster_ports();
  ASSERT_EQ(nodes.size(), 3u);
  const std::vector<std::string> on_cluster = {"--redis_cluster",
                                               "--redis_port=" + std::to_string(nodes[2])};
  ASSERT_TRUE(g_cluster->StartReplica("chat-rc", "chat", on_cluster).ok());
  std::vector<std::string> cm = on_cluster;
  cm.push_back("--chat_address=" + g_cluster->grpc_address("chat-rc"));
  cm.push_back("--events_group=connection-manager-rc");
  ASSERT_TRUE(g_cluster->StartReplica("cm-rc", "connection-manager", cm).ok());
  auto gateway = g_cluster->StartGateway(
      "gateway-rc", {"--chat_address=" + g_cluster->grpc_address("chat-rc"),
                     "--connection_manager_address=" + g_cluster->grpc_address("cm-rc")});
  ASSERT_TRUE(gateway.ok()) << gateway.status();
  const int port = gateway->http_port;

  const ChatUser kit("redis-cluster", "kit");
  http::AsyncClient client;
  EventsDevice device(client, port, kit.key());
  ASSERT_TRUE(device.WaitSubscribed());
  RedisClusterClient cluster({.port = nodes[0]});
  RedisClient single({.port = g_cluster->infra().redis_port()});
  // Eight replies generating at once, each read by its own client (so
  // connection-manager follows them together: one read per slot), which
  // leaves after 4 events and resumes.
  struct Turn {
    std::string conversation, reply;
    ReplyReader reader;
  };
  std::vector<Turn> turns(8);
  std::set<std::string> masters, replies;
  for (auto& t : turns) {
    auto created =
        kit.Call("POST", "/v1/conversations", json{{"model", "sim-small"}}.dump(), {}, port);
    ASSERT_EQ(created.status, 201) << created.body;
    t.conversation = json::parse(created.body)["id"];
    auto sent = kit.Call("POST", "/v1/conversations/" + t.conversation + "/messages",
                         json{{"content", "tell me more"}, {"max_tokens", 40}}.dump(), {}, port);
    ASSERT_EQ(sent.status, 202) << sent.body;
    t.reply = json::parse(sent.body)["assistant_message_id"];
    t.reader = ReplyReader{.url = json::parse(sent.body)["stream_url"], .key = kit.key()};
    replies.insert(t.reply);
  }
  std::vector<std::thread> readers;
  for (auto& t : turns) {
    readers.emplace_back([&t, port] {
      EXPECT_EQ(t.reader.Connect(4, port), 200);
      EXPECT_EQ(t.reader.Connect(0, port), 200) << "resumed after " << t.reader.last_id;
    });
  }
  for (auto& r : readers) r.join();
  for (auto& t : turns) {
    ASSERT_TRUE(t.reader.ended) << t.reply;
    EXPECT_EQ(t.reader.error, "");
    EXPECT_EQ(t.reader.connections, 2);
    const json m = StoredMessage(kit, t.conversation, t.reply);
    ASSERT_TRUE(m.is_object());
    EXPECT_EQ(m["content"].get<std::string>(), t.reader.text) << "streamed == stored";
    const std::string key = TokenStreamKey(t.reply);
    auto there = cluster.Command({"EXISTS", key});
    ASSERT_TRUE(there.ok()) << there.status();
    EXPECT_EQ(there->integer, 1) << key << " on the cluster";
    auto not_here = single.Command({"EXISTS", key});
    ASSERT_TRUE(not_here.ok());
    EXPECT_EQ(not_here->integer, 0) << key << " not on the single Redis";
    masters.insert(cluster.OwnerOf(RedisCluster::Slot(key)));
  }
  EXPECT_GE(masters.size(), 2u) << "8 replies' buffers on more than one master";

  // The new consumer group indexes the topic from its start: a minute at most.
  std::set<std::string> completed;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (completed.size() < replies.size() && std::chrono::steady_clock::now() < deadline) {
    completed.clear();
    for (const auto& e : device.Events(0, std::chrono::milliseconds(0))) {
      if (e.type == "message.completed") {
        completed.insert(e.data["message"]["id"].get<std::string>());
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(completed, replies) << "every reply's message.completed reached the device";
  // Read live: no poller's read failed (one XREAD across slots would, with
  // CROSSSLOT, and the replies would then come from the stored messages).
  const int metrics = g_cluster->metrics_port("cm-rc");
  EXPECT_GT(MetricValue(metrics, "sb_connection_events_delivered_total"), 0);
  for (const char* reads : {"replies", "events"}) {
    EXPECT_EQ(MetricValue(metrics, std::string("sb_connection_poll_failures_total{reads=\"") +
                                       reads + "\"}"),
              0)
        << reads;
  }
  g_cluster->Kill("cm-rc");
  g_cluster->Kill("chat-rc");
}

// kill -9 of chat mid-turn: another replica takes the turn over once its
// lease lapses (7 s) and continues it after the last event written; the
// reader sees one uninterrupted reply, and the stored reply is the text it
// was sent.
TEST(ZyChatKillTest, AnotherReplicaContinuesATurnWhoseReplicaDied) {
  auto worker =
      g_cluster->StartWorker("worker-chat-kill", "sim-chat-kill", {"--tokens_per_second=10"});
  ASSERT_TRUE(worker.ok()) << worker.status();
  ASSERT_TRUE(g_cluster->StartChatReplica("chat-c").ok());
  const ChatUser pat("chat-kill", "pat");
  const std::string id = pat.NewConversation("kill chat", "sim-chat-kill");
  auto sent = pat.Send(id, "go on and on", {{"max_tokens", 200}});
  ASSERT_EQ(sent.status, 202) << sent.body;
  const std::string reply_id = json::parse(sent.body)["assistant_message_id"];
  ReplyReader reader{.url = json::parse(sent.body)["stream_url"], .key = pat.key()};
  // One connection throughout (connection-manager's look-ups go to the
  // cluster's chat, which is down for a while): after two deltas the chat
  // running the turn is killed; then the gap, then the rest from the replica
  // that took it over.
  std::string before;
  std::chrono::steady_clock::time_point killed{}, resumed{};
  reader.on_event = [&](int64_t offset) {
    if (offset == 4) {
      before = reader.text;
      g_cluster->Kill("chat");
      killed = std::chrono::steady_clock::now();
    } else if (offset == 5) {
      resumed = std::chrono::steady_clock::now();
    }
  };
  EXPECT_EQ(reader.Connect(0), 200);
  ASSERT_TRUE(reader.ended);
  ASSERT_NE(killed, std::chrono::steady_clock::time_point{}) << "the reply ended before the kill";
  EXPECT_EQ(reader.error, "") << "the reply ended with message_stop";
  EXPECT_EQ(reader.text.substr(0, before.size()), before);
  std::printf(
      "[ figure   ] chat killed mid-turn -> the next event from the replica that took "
      "it over: %lld ms\n",
      static_cast<long long>(
          std::chrono::duration_cast<std::chrono::milliseconds>(resumed - killed).count()));
  EXPECT_EQ(MetricValue(g_cluster->metrics_port("chat-c"), "sb_chat_turns_taken_over_total"), 1);

  ASSERT_TRUE(g_cluster->Restart("chat").ok());
  // The gateway's channel to chat reconnects (with backoff) once it is back.
  for (int i = 0; i < 100; ++i) {
    auto r = http::Fetch({.port = g_cluster->http_port(),
                          .target = "/v1/conversations/" + id,
                          .headers = {{"x-api-key", pat.key()}}});
    if (r.ok() && r->status == 200) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const json m = StoredMessage(pat, id, reply_id);
  ASSERT_TRUE(m.is_object());
  EXPECT_EQ(m["status"], "complete");
  EXPECT_EQ(m["content"].get<std::string>(), reader.text) << "stored == streamed";
  g_cluster->Kill("chat-c");
}

// connection-manager killed mid-stream (SIGKILL): the client's stream ends,
// and it resumes with Last-Event-ID on the restarted one; the joined text is
// the stored reply. The last suite of the run (the last one registered): the
// restarted connection-manager's event consumer waits out its old member's
// session before it has partitions again.
TEST(ZzConnectionManagerKillTest, AClientResumesOnTheRestartedOne) {
  auto worker = g_cluster->StartWorker("worker-cm-kill", "sim-cm-kill", {"--tokens_per_second=5"});
  ASSERT_TRUE(worker.ok()) << worker.status();
  const ChatUser ned("cm-kill", "ned");
  const std::string id = ned.NewConversation("kill", "sim-cm-kill");
  auto sent = ned.Send(id, "keep talking", {{"max_tokens", 300}});
  ASSERT_EQ(sent.status, 202) << sent.body;
  const std::string reply_id = json::parse(sent.body)["assistant_message_id"];
  ReplyReader reader{.url = json::parse(sent.body)["stream_url"], .key = ned.key()};

  // Read a few events, then kill connection-manager while reading on (a
  // reply has 12 tokens or more: seconds at 5 a second). A 529 is retried,
  // as a client would: connection-manager's channel to chat may still be
  // reconnecting after the suite before this restarted chat.
  int first = reader.Connect(4);
  for (int i = 0; i < 30 && first == 529; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    first = reader.Connect(4);
  }
  ASSERT_EQ(first, 200);
  std::thread killer([] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    g_cluster->Kill("connection-manager");
  });
  EXPECT_EQ(reader.Connect(0), 200);
  killer.join();
  EXPECT_FALSE(reader.ended) << "the stream ended with the kill, not with the reply";
  ASSERT_TRUE(g_cluster->Restart("connection-manager").ok());
  const int before = reader.connections;
  while (!reader.ended && reader.connections < before + 100) {
    if (reader.Connect(0) != 200) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ASSERT_TRUE(reader.ended);
  EXPECT_EQ(reader.broken, 1) << "the stream the kill cut ended with an error event";
  const json m = StoredMessage(ned, id, reply_id);
  ASSERT_TRUE(m.is_object());
  EXPECT_EQ(m["status"], "complete");
  EXPECT_EQ(m["content"].get<std::string>(), reader.text);
}

}  // namespace
}  // namespace sb::testing
