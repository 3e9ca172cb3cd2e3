// ChatStore against a real, migrated PostgreSQL started for the suite.
#include "chat/chat_store.h"

#include <mutex>
#include <thread>

#include "gtest/gtest.h"
#include "sbadmin/admin.h"
#include "support/infra.h"

namespace sb::chat {
namespace {

using sb::testing::Infra;
namespace cpb = switchboard::chat::v1;

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
  EXPECT_EQ(list->messages(0).safety_result(), "pass") << "input safety found nothing";
  EXPECT_EQ(list->messages(1).role(), "assistant");
  EXPECT_EQ(list->messages(1).status(), "in_progress");
  EXPECT_EQ(list->messages(1).safety_result(), "") << "not known before the reply ends";
  EXPECT_EQ(list->messages(1).parent_id(), turn->user_message.id());
  EXPECT_FALSE(list->has_more());

  // A message the org's policy flagged (let through and recorded).
  auto flagged = store_.AppendTurn(alice_, conv->id(), "mail me at kim@example.org", "",
                                   std::nullopt, std::nullopt, "flagged");
  ASSERT_TRUE(flagged.ok()) << flagged.status();
  EXPECT_EQ(flagged->user_message.safety_result(), "flagged");
  auto got = store_.GetMessage(alice_, conv->id(), flagged->user_message.id());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->safety_result(), "flagged");
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

// Every conversation of a user, in pages: most recent last message first,
// archived ones apart; no other user's.
TEST_F(ChatStoreTest, ConversationsListMostRecentFirstInPagesArchivedApart) {
  const Scope carol{"acme", "carol"};
  std::vector<std::string> created;
  for (int i = 0; i < 5; ++i) created.push_back(NewConversation(carol));
  NewConversation({"acme", "dave"});
  // A turn moves a conversation to the top.
  ASSERT_TRUE(store_.AppendTurn(carol, created[1], "bump", "").ok());
  ConversationPatch archive{.archived = true};
  auto archived = store_.UpdateConversation(carol, created[3], archive);
  ASSERT_TRUE(archived.ok()) << archived.status();
  EXPECT_TRUE(archived->archived());

  std::vector<std::string> listed;
  std::string cursor;
  int pages = 0;
  do {
    auto page = store_.ListConversations(carol, 2, cursor, false);
    ASSERT_TRUE(page.ok()) << page.status();
    for (const auto& c : page->conversations()) {
      listed.push_back(c.id());
      EXPECT_EQ(c.user_id(), "carol");
      EXPECT_FALSE(c.archived());
    }
    cursor = page->has_more() ? page->next_cursor() : "";
    ++pages;
  } while (!cursor.empty() && pages < 10);
  EXPECT_EQ(listed, (std::vector<std::string>{created[1], created[4], created[2], created[0]}));
  EXPECT_EQ(pages, 2);

  auto only_archived = store_.ListConversations(carol, 10, "", true);
  ASSERT_TRUE(only_archived.ok());
  ASSERT_EQ(only_archived->conversations_size(), 1);
  EXPECT_EQ(only_archived->conversations(0).id(), created[3]);
  EXPECT_FALSE(only_archived->has_more());

  // Unarchived, it is back among the others (in its place by last message).
  ASSERT_TRUE(store_.UpdateConversation(carol, created[3], {.archived = false}).ok());
  auto all = store_.ListConversations(carol, 10, "", false);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->conversations_size(), 5);

  for (const std::string& bad :
       std::vector<std::string>{"x", "12.notanid", "-5." + created[0], "5" + created[0]}) {
    EXPECT_EQ(store_.ListConversations(carol, 2, bad, false).status().code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
}

// Optimistic concurrency: a change that expected another version is
// refused with the version the conversation is at; a reply finishing does
// not move it, a retried send is the first turn whatever the version.
TEST_F(ChatStoreTest, AStaleExpectedVersionIsRefusedWithTheCurrentOne) {
  const std::string conv = NewConversation(alice_);
  auto at = store_.GetConversation(alice_, conv);
  ASSERT_TRUE(at.ok()) << at.status();
  const int64_t v1 = at->version();

  auto first = store_.AppendTurn(alice_, conv, "first", "c-1", v1);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->conversation_version, v1 + 1);
  TurnResult done{.content = "ok", .status = "complete", .stop_reason = "end_turn"};
  ASSERT_TRUE(store_.CompleteReply(conv, first->assistant_message_id, done).ok());

  auto stale = store_.AppendTurn(alice_, conv, "second device", "", v1);
  EXPECT_EQ(stale.status().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(ConflictVersion(stale.status()), v1 + 1);
  auto retried = store_.AppendTurn(alice_, conv, "first", "c-1", v1);
  ASSERT_TRUE(retried.ok()) << retried.status();
  EXPECT_TRUE(retried->replayed);
  EXPECT_TRUE(store_.AppendTurn(alice_, conv, "next", "", first->conversation_version).ok());

  auto renamed = store_.UpdateConversation(alice_, conv, {.title = "x", .expected_version = v1});
  EXPECT_EQ(ConflictVersion(renamed.status()), v1 + 2);
  EXPECT_EQ(ConflictVersion(store_.DeleteConversation(alice_, conv, v1)), v1 + 2);
  renamed =
      store_.UpdateConversation(alice_, conv, {.title = "renamed", .expected_version = v1 + 2});
  ASSERT_TRUE(renamed.ok()) << renamed.status();
  EXPECT_EQ(renamed->title(), "renamed");
  EXPECT_EQ(renamed->version(), v1 + 3);
  EXPECT_EQ(store_.UpdateConversation(alice_, conv, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(ConflictVersion(absl::AbortedError("a serialization failure")).has_value());
}

TEST_F(ChatStoreTest, ADeletedConversationIsGoneFromEveryRead) {
  const std::string conv = NewConversation(alice_);
  auto turn = store_.AppendTurn(alice_, conv, "soon gone", "");
  ASSERT_TRUE(turn.ok());
  EXPECT_EQ(store_.DeleteConversation({"globex", "alice"}, conv, std::nullopt).code(),
            absl::StatusCode::kNotFound);
  ASSERT_TRUE(store_.DeleteConversation(alice_, conv, std::nullopt).ok());
  EXPECT_EQ(store_.GetConversation(alice_, conv).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_.ListMessages(alice_, conv, 50, "").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_.GetMessage(alice_, conv, turn->assistant_message_id).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_.AppendTurn(alice_, conv, "more", "").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_.UpdateConversation(alice_, conv, {.title = "x"}).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_.DeleteConversation(alice_, conv, std::nullopt).code(),
            absl::StatusCode::kNotFound);
  for (bool archived : {false, true}) {
    auto list = store_.ListConversations(alice_, 100, "", archived);
    ASSERT_TRUE(list.ok());
    for (const auto& c : list->conversations()) EXPECT_NE(c.id(), conv);
  }
}

// A reply that ends after its conversation was deleted (the eraser stops
// it) announces nothing: the deletion erased the conversation's events from
// the users' streams, and a late message.completed would carry its text.
TEST_F(ChatStoreTest, AReplyEndingAfterTheDeleteAnnouncesNothing) {
  const std::string conv = NewConversation(alice_);
  auto turn = store_.AppendTurn(alice_, conv, "soon gone", "");
  ASSERT_TRUE(turn.ok());
  ASSERT_TRUE(store_.DeleteConversation(alice_, conv, std::nullopt).ok());
  cpb::ChatEvent done;
  done.set_type("message.completed");
  done.set_conversation_id(conv);
  ASSERT_TRUE(store_
                  .CompleteReply(conv, turn->assistant_message_id,
                                 {.content = "the secret", .status = "complete"}, &done)
                  .ok());
  std::vector<std::string> types;
  ASSERT_TRUE(store_
                  .RelayOutbox(100000,
                               [&](const std::vector<ChatStore::OutboxRow>& rows) {
                                 for (const auto& r : rows) {
                                   cpb::ChatEvent e;
                                   EXPECT_TRUE(e.ParseFromString(r.event));
                                   if (r.conversation_id == conv) types.push_back(e.type());
                                 }
                                 return size_t{0};
                               })
                  .ok());
  EXPECT_EQ(types, (std::vector<std::string>{"conversation.created", "message.created",
                                             "conversation.deleted"}));
}

// Search: the user's shown messages only, best match first, with a passage.
TEST_F(ChatStoreTest, SearchFindsTheUsersShownMessagesBestFirst) {
  const Scope searcher{"acme", "searcher"};
  auto say = [&](const std::string& conv, const std::string& text, const std::string& reply,
                 const std::string& safety = "pass", const std::string& status = "complete") {
    auto turn = store_.AppendTurn(searcher, conv, text, "");
    EXPECT_TRUE(turn.ok()) << turn.status();
    if (!turn.ok() || status == "in_progress") return std::string();
    EXPECT_TRUE(store_
                    .CompleteReply(conv, turn->assistant_message_id,
                                   {.content = reply, .status = status, .safety_result = safety})
                    .ok());
    return turn->assistant_message_id;
  };
  const std::string trip = NewConversation(searcher);
  const std::string best =
      say(trip, "plans for lyon", "Lyon, then Lyon again: the lyon food is why people go to lyon");
  say(trip, "and what about lyon by train?", "Two hours by TGV.");
  say(trip, "show me a lyon card number", "Here is one for lyon: 4242 ...", "filtered");
  say(trip, "one more about lyon", "", "", "in_progress");
  const std::string gone = NewConversation(searcher);
  say(gone, "lyon in a deleted conversation", "ok");
  ASSERT_TRUE(store_.DeleteConversation(searcher, gone, std::nullopt).ok());
  const std::string others = NewConversation(alice_);
  ASSERT_TRUE(store_.AppendTurn(alice_, others, "alice also likes lyon", "").ok());

  auto found = store_.SearchMessages(searcher, "LYON", 10);
  ASSERT_TRUE(found.ok()) << found.status();
  // The reply naming it four times first; then the four user messages
  // (case folded), and no reply filtered or in progress, nothing deleted or
  // another user's.
  ASSERT_EQ(found->hits_size(), 5) << found->DebugString();
  EXPECT_FALSE(found->has_more());
  EXPECT_EQ(found->hits(0).message_id(), best);
  EXPECT_EQ(found->hits(0).role(), "assistant");
  EXPECT_EQ(found->hits(0).conversation_id(), trip);
  EXPECT_EQ(found->hits(0).conversation_title(), "a title");
  EXPECT_NE(found->hits(0).snippet().find("lyon food"), std::string::npos)
      << found->hits(0).snippet();
  for (const auto& h : found->hits()) {
    EXPECT_EQ(h.conversation_id(), trip);
    EXPECT_EQ(h.snippet().find("4242"), std::string::npos) << "a filtered reply is not found";
    EXPECT_TRUE(h.role() == "user" || h.message_id() == best) << h.DebugString();
    EXPECT_GT(h.created_at_unix_ms(), 0);
  }

  auto phrase = store_.SearchMessages(searcher, "\"by train\"", 10);
  ASSERT_TRUE(phrase.ok());
  ASSERT_EQ(phrase->hits_size(), 1);
  EXPECT_EQ(phrase->hits(0).role(), "user");
  auto one = store_.SearchMessages(searcher, "lyon", 1);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->hits_size(), 1);
  EXPECT_TRUE(one->has_more());
  auto none = store_.SearchMessages(searcher, "marseille", 10);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->hits_size(), 0);
  EXPECT_EQ(store_.SearchMessages(searcher, "?! --", 10).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(ChatStoreTest, ErasingAUserDeletesAllTheirsAndQueuesATombstone) {
  const Scope gone{"acme", "gone"};
  const std::string a = NewConversation(gone), b = NewConversation(gone);
  const std::string others = NewConversation(alice_);
  ASSERT_TRUE(store_.AppendTurn(gone, a, "mine", "").ok());
  auto erased = store_.EraseUser(gone);
  ASSERT_TRUE(erased.ok()) << erased.status();
  EXPECT_EQ(*erased, 2);
  EXPECT_EQ(store_.GetConversation(gone, a).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_.GetConversation(gone, b).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(store_.GetConversation(alice_, others).ok());
  std::vector<std::string> tail;  // the last events of gone's in the outbox
  ASSERT_TRUE(store_
                  .RelayOutbox(100000,
                               [&](const std::vector<ChatStore::OutboxRow>& rows) {
                                 for (const auto& r : rows) {
                                   cpb::ChatEvent e;
                                   EXPECT_TRUE(e.ParseFromString(r.event));
                                   if (e.user_id() == "gone") tail.push_back(e.type());
                                 }
                                 return size_t{0};
                               })
                  .ok());
  ASSERT_GE(tail.size(), 3u);
  EXPECT_EQ(
      std::vector<std::string>(tail.end() - 3, tail.end()),
      (std::vector<std::string>{"conversation.deleted", "conversation.deleted", "user.erased"}));
  auto again = store_.EraseUser(gone);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, 0) << "nothing left to delete";
}

// Turn leases: a reply is its replica's while the replica renews the
// lease; once it lapses, one other replica (exactly one) takes it over.
TEST_F(ChatStoreTest, AnExpiredLeaseIsTakenOverByOneReplicaAndALiveOneIsNot) {
  const Scope leo{"acme", "leo"};
  const std::string conv = NewConversation(leo);
  auto dead = store_.AppendTurn(leo, conv, "the dead replica's turn", "");
  auto live = store_.AppendTurn(leo, NewConversation(leo), "the live replica's turn", "");
  ASSERT_TRUE(dead.ok() && live.ok());
  ASSERT_TRUE(
      store_.LeaseReply(conv, dead->assistant_message_id, "replica-a", absl::Milliseconds(300))
          .ok());
  ASSERT_TRUE(store_
                  .LeaseReply(live->user_message.conversation_id(), live->assistant_message_id,
                              "replica-b", absl::Milliseconds(300))
                  .ok());
  // A turn of a conversation since deleted is not continued (the eraser
  // stops it), nor is a replica's own turn taken over by itself.
  const std::string doomed = NewConversation(leo);
  auto gone = store_.AppendTurn(leo, doomed, "soon deleted", "");
  ASSERT_TRUE(gone.ok());
  ASSERT_TRUE(
      store_.LeaseReply(doomed, gone->assistant_message_id, "replica-a", absl::Milliseconds(1))
          .ok());
  ASSERT_TRUE(store_.DeleteConversation(leo, doomed, std::nullopt).ok());
  auto own = store_.TakeOverExpired("replica-a", absl::Seconds(10), 10);
  ASSERT_TRUE(own.ok()) << own.status();
  EXPECT_TRUE(own->empty());
  auto none = store_.TakeOverExpired("replica-c", absl::Seconds(10), 10);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_TRUE(none->empty()) << "both leases are live";

  // replica-b renews, replica-a (dead) does not.
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  auto renewed = store_.RenewLeases("replica-b", absl::Seconds(10));
  ASSERT_TRUE(renewed.ok());
  EXPECT_EQ(*renewed, 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(250));
  std::vector<ChatStore::Orphan> taken;
  std::vector<std::thread> sweeps;
  std::mutex mu;
  for (const char* replica : {"replica-c", "replica-d"}) {
    sweeps.emplace_back([&, replica] {
      auto got = store_.TakeOverExpired(replica, absl::Seconds(10), 10);
      ASSERT_TRUE(got.ok()) << got.status();
      std::lock_guard<std::mutex> lock(mu);
      taken.insert(taken.end(), got->begin(), got->end());
    });
  }
  for (auto& t : sweeps) t.join();
  ASSERT_EQ(taken.size(), 1u) << "one replica takes the dead turn, the live one stays";
  EXPECT_EQ(taken[0].reply_id, dead->assistant_message_id);
  EXPECT_EQ(taken[0].user_message_id, dead->user_message.id());
  EXPECT_EQ(taken[0].conversation_id, conv);
  EXPECT_EQ(taken[0].scope.org_id, "acme");
  EXPECT_EQ(taken[0].scope.user_id, "leo");
  EXPECT_EQ(taken[0].model, "sim-small");
  auto again = store_.TakeOverExpired("replica-e", absl::Seconds(10), 10);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->empty()) << "the new owner holds it now";
}

TEST_F(ChatStoreTest, AnUntitledConversationIsNamedByItsFirstMessage) {
  auto conv = store_.CreateConversation(alice_, "sim-small", "");
  ASSERT_TRUE(conv.ok());
  ASSERT_TRUE(store_.AppendTurn(alice_, conv->id(), "  Plan a\n trip   to Lisbon ", "").ok());
  ASSERT_TRUE(store_.AppendTurn(alice_, conv->id(), "second message", "").ok());
  auto named = store_.GetConversation(alice_, conv->id());
  ASSERT_TRUE(named.ok());
  EXPECT_EQ(named->title(), "Plan a trip to Lisbon");
  EXPECT_EQ(named->message_count(), 4);
  // A title given is kept.
  const std::string titled = NewConversation(alice_);
  ASSERT_TRUE(store_.AppendTurn(alice_, titled, "whatever", "").ok());
  EXPECT_EQ(store_.GetConversation(alice_, titled)->title(), "a title");
}

// Branches: a message answers the end of the current branch, an edit (a
// send naming an earlier reply as parent) adds a sibling and becomes the
// branch; the list and the model's history follow the branch only.
TEST_F(ChatStoreTest, AnEditIsASiblingAndTheBranchIsWhatIsListedAndGiven) {
  const std::string conv = NewConversation(alice_);
  auto done = [&](const NewTurn& t, const std::string& text) {
    TurnResult r{.content = text, .status = "complete", .stop_reason = "end_turn"};
    ASSERT_TRUE(store_.CompleteReply(conv, t.assistant_message_id, r).ok());
  };
  auto a = store_.AppendTurn(alice_, conv, "a", "");
  ASSERT_TRUE(a.ok());
  done(*a, "A");
  auto b = store_.AppendTurn(alice_, conv, "b", "");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->user_message.parent_id(), a->assistant_message_id);
  done(*b, "B");
  auto edited = store_.AppendTurn(alice_, conv, "b2", "", std::nullopt, a->assistant_message_id);
  ASSERT_TRUE(edited.ok()) << edited.status();
  done(*edited, "B2");

  auto list = store_.ListMessages(alice_, conv, 50, "");
  ASSERT_TRUE(list.ok()) << list.status();
  std::vector<std::string> texts;
  for (const auto& m : list->messages()) texts.push_back(m.content());
  EXPECT_EQ(texts, (std::vector<std::string>{"a", "A", "b2", "B2"}));
  const auto& b2 = list->messages(2);
  EXPECT_EQ(std::vector<std::string>(b2.sibling_ids().begin(), b2.sibling_ids().end()),
            (std::vector<std::string>{b->user_message.id(), edited->user_message.id()}));
  auto history = store_.History(conv, edited->user_message.id());
  ASSERT_TRUE(history.ok()) << history.status();
  ASSERT_EQ(history->size(), 3u);
  EXPECT_EQ((*history)[2].second, "b2") << "the model sees the branch, not b and B";

  // Only a reply of the conversation can be answered; "" edits the first.
  EXPECT_EQ(
      store_.AppendTurn(alice_, conv, "x", "", std::nullopt, a->user_message.id()).status().code(),
      absl::StatusCode::kInvalidArgument);
  auto root = store_.AppendTurn(alice_, conv, "a2", "", std::nullopt, "");
  ASSERT_TRUE(root.ok());
  list = store_.ListMessages(alice_, conv, 50, "");
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->messages_size(), 2);
  EXPECT_EQ(list->messages(0).content(), "a2");
  EXPECT_EQ(list->messages(0).sibling_ids_size(), 2);
}

TEST(TitleFromTest, FirstWordsCutAtAWordOrACharacterNeverInsideOne) {
  EXPECT_EQ(TitleFrom("hello"), "hello");
  EXPECT_EQ(TitleFrom(" \t\n "), "");
  EXPECT_EQ(TitleFrom("a\n\nb  "), "a b");
  const std::string words = "word " + std::string(50, 'x') + " tail " + std::string(60, 'y');
  const std::string cut = TitleFrom(words);
  EXPECT_EQ(cut, "word " + std::string(50, 'x') + " tail\u2026");
  // One long word: cut at the limit, but not inside a 2-byte character.
  std::string accents;
  for (int i = 0; i < 60; ++i) accents += "\u00e9";  // 120 bytes
  const std::string t = TitleFrom(accents);
  EXPECT_LE(t.size(), kMaxAutoTitleBytes + 3);
  EXPECT_EQ(t, std::string(accents, 0, 80) + "\u2026");
  std::string odd = "a" + accents;  // the limit falls inside a character
  EXPECT_EQ(TitleFrom(odd), "a" + std::string(accents, 0, 78) + "\u2026");
  // Whole words that fill it are kept whole.
  const std::string full = std::string(39, 'a') + " " + std::string(39, 'b') + " next";
  EXPECT_EQ(TitleFrom(full), std::string(39, 'a') + " " + std::string(39, 'b') + "\u2026");
}

}  // namespace
}  // namespace sb::chat
