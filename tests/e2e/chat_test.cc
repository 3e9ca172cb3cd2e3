// The chat product's routes through the running cluster (issue 10):
// conversation lists, reads, renames, archives and deletes, and optimistic
// concurrency on sends.
#include <atomic>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "e2e/e2e_helpers.h"
#include "gtest/gtest.h"
#include "http/http_client.h"
#include "sbadmin/admin.h"

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

  http::Response Call(const std::string& method, const std::string& target,
                      const std::string& body = "", http::Headers extra = {}) const {
    http::Headers headers = {{"x-api-key", key_}, {"content-type", "application/json"}};
    headers.insert(headers.end(), extra.begin(), extra.end());
    auto r = http::Fetch({.port = g_cluster->http_port(),
                          .method = method,
                          .target = target,
                          .headers = headers,
                          .body = body,
                          .timeout = std::chrono::seconds(10)});
    EXPECT_TRUE(r.ok()) << method << " " << target << ": " << r.status();
    return r.ok() ? *r : http::Response{};
  }

  std::string NewConversation(const std::string& title = "") const {
    const std::string body = title.empty() ? R"({"model":"sim-small"})"
                                           : json{{"model", "sim-small"}, {"title", title}}.dump();
    auto r = Call("POST", "/v1/conversations", body);
    EXPECT_EQ(r.status, 201) << r.body;
    return r.status == 201 ? json::parse(r.body)["id"].get<std::string>() : "";
  }

  http::Response Send(const std::string& conversation_id, const std::string& content,
                      const json& extra = json::object(), http::Headers headers = {}) const {
    json body = {{"content", content}, {"max_tokens", 4}};
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

}  // namespace
}  // namespace sb::testing
