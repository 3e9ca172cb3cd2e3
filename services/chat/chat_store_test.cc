// ChatStore against a real, migrated PostgreSQL started for the suite.
#include "chat/chat_store.h"

#include "gtest/gtest.h"
#include "sbadmin/admin.h"
#include "support/infra.h"

namespace sb::chat {
namespace {

using sb::testing::Infra;

class ChatStoreTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto infra = Infra::Start({.postgres = true, .redis = false, .kafka = false});
    ASSERT_TRUE(infra.ok()) << infra.status();
    infra_ = std::move(*infra).release();
    admin::Admin admin(infra_->pg_uri());
    ASSERT_TRUE(admin.CreateOrg("acme", "Acme").ok());
    ASSERT_TRUE(admin.CreateOrg("globex", "Globex").ok());
  }
  static void TearDownTestSuite() {
    delete infra_;
    infra_ = nullptr;
  }

  ChatStoreTest() : pg_(infra_->pg_uri(), 2), store_(pg_, ids_) {}

  std::string NewConversation(const Scope& scope) {
    auto c = store_.CreateConversation(scope, "sim-small", "a title");
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? c->id() : "";
  }

  static Infra* infra_;
  PgPool pg_;
  UlidGenerator ids_;
  ChatStore store_;
  const Scope alice_{"acme", "alice"};
};

Infra* ChatStoreTest::infra_ = nullptr;

TEST_F(ChatStoreTest, ATurnStoresTheUserMessageAndAnInProgressReplyInUlidOrder) {
  auto conv = store_.CreateConversation(alice_, "sim-small", "first");
  ASSERT_TRUE(conv.ok()) << conv.status();
  EXPECT_TRUE(IsValidUlid(conv->id()));
  EXPECT_EQ(conv->title(), "first");

  auto turn = store_.AppendTurn(alice_, conv->id(), "hello", "");
  ASSERT_TRUE(turn.ok()) << turn.status();
  EXPECT_FALSE(turn->replayed);
  EXPECT_TRUE(IsValidUlid(turn->user_message.id()));
  EXPECT_TRUE(IsValidUlid(turn->assistant_message_id));
  EXPECT_LT(turn->user_message.id(), turn->assistant_message_id);
  EXPECT_EQ(turn->model, "sim-small");

  auto list = store_.ListMessages(alice_, conv->id(), 50, "");
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->messages_size(), 2);
  EXPECT_EQ(list->messages(0).role(), "user");
  EXPECT_EQ(list->messages(0).content(), "hello");
  EXPECT_EQ(list->messages(1).role(), "assistant");
  EXPECT_EQ(list->messages(1).status(), "in_progress");
  EXPECT_EQ(list->messages(1).parent_id(), turn->user_message.id());
  EXPECT_FALSE(list->has_more());
}

TEST_F(ChatStoreTest, TheSameClientMessageIdIsTheSameTurn) {
  const std::string conv = NewConversation(alice_);
  auto first = store_.AppendTurn(alice_, conv, "once", "client-1");
  ASSERT_TRUE(first.ok()) << first.status();
  auto again = store_.AppendTurn(alice_, conv, "once", "client-1");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->replayed);
  EXPECT_EQ(again->user_message.id(), first->user_message.id());
  EXPECT_EQ(again->assistant_message_id, first->assistant_message_id);
  auto list = store_.ListMessages(alice_, conv, 50, "");
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->messages_size(), 2) << "a retried send must not add messages";
}

TEST_F(ChatStoreTest, CompletingAReplyMakesItPartOfTheHistory) {
  const std::string conv = NewConversation(alice_);
  auto turn = store_.AppendTurn(alice_, conv, "question", "");
  ASSERT_TRUE(turn.ok());
  TurnResult result{.content = "answer",
                    .status = "complete",
                    .stop_reason = "end_turn",
                    .input_tokens = 3,
                    .output_tokens = 1,
                    .model = "sim-small",
                    .safety_result = "allowed",
                    .stream_last_offset = 6};
  ASSERT_TRUE(store_.CompleteReply(conv, turn->assistant_message_id, result).ok());

  auto reply = store_.GetMessage(alice_, conv, turn->assistant_message_id);
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(reply->content(), "answer");
  EXPECT_EQ(reply->status(), "complete");
  EXPECT_EQ(reply->output_tokens(), 1);
  EXPECT_EQ(reply->stream_last_offset(), 6) << "where its stream ended, for exact resumes";

  // The next turn's prompt: everything complete so far, oldest first.
  auto next = store_.AppendTurn(alice_, conv, "follow-up", "");
  ASSERT_TRUE(next.ok());
  auto history = store_.History(conv, next->user_message.id());
  ASSERT_TRUE(history.ok()) << history.status();
  ASSERT_EQ(history->size(), 3u);
  EXPECT_EQ((*history)[0], (std::pair<std::string, std::string>{"user", "question"}));
  EXPECT_EQ((*history)[1], (std::pair<std::string, std::string>{"assistant", "answer"}));
  EXPECT_EQ((*history)[2], (std::pair<std::string, std::string>{"user", "follow-up"}));
}

TEST_F(ChatStoreTest, AnotherTenantSeesNothing) {
  const std::string conv = NewConversation(alice_);
  auto turn = store_.AppendTurn(alice_, conv, "mine", "");
  ASSERT_TRUE(turn.ok());
  for (const Scope& other : {Scope{"globex", "alice"}, Scope{"acme", "bob"}}) {
    EXPECT_EQ(store_.AppendTurn(other, conv, "theirs", "").status().code(), absl::StatusCode::kNotFound);
    EXPECT_EQ(store_.ListMessages(other, conv, 50, "").status().code(), absl::StatusCode::kNotFound);
    EXPECT_EQ(store_.GetMessage(other, conv, turn->assistant_message_id).status().code(),
              absl::StatusCode::kNotFound);
  }
  EXPECT_EQ(store_.AppendTurn(alice_, "01ZZZZZZZZZZZZZZZZZZZZZZZZ", "x", "").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(ChatStoreTest, ListingPagesWithACursor) {
  const std::string conv = NewConversation(alice_);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(store_.AppendTurn(alice_, conv, "m" + std::to_string(i), "").ok());
  std::vector<std::string> ids;
  std::string cursor;
  int pages = 0;
  do {
    auto page = store_.ListMessages(alice_, conv, 4, cursor);
    ASSERT_TRUE(page.ok()) << page.status();
    for (const auto& m : page->messages()) ids.push_back(m.id());
    cursor = page->has_more() ? page->next_cursor() : "";
    ++pages;
  } while (!cursor.empty() && pages < 10);
  EXPECT_EQ(pages, 2);
  ASSERT_EQ(ids.size(), 6u);
  EXPECT_TRUE(std::is_sorted(ids.begin(), ids.end()));
  EXPECT_EQ(std::adjacent_find(ids.begin(), ids.end()), ids.end()) << "a message listed twice";
}

}  // namespace
}  // namespace sb::chat
