// The chat.events outbox against a real PostgreSQL and the dev broker,
// started for the suite: changes written while no relay runs (as after a
// crash between commit and publish) all reach Kafka once one does, in each
// conversation's order, and leave the outbox.
#include "chat/outbox_relay.h"

#include <chrono>
#include <map>
#include <set>

#include "gtest/gtest.h"
#include "sbadmin/admin.h"
#include "support/infra.h"

namespace sb::chat {
namespace {

namespace cpb = switchboard::chat::v1;
using sb::testing::Infra;

TEST(OutboxRelayTest, EveryChangeWrittenWithoutARelayReachesKafkaInOrderOnce) {
  auto infra = Infra::Start({.postgres = true, .redis = false, .kafka = true});
  ASSERT_TRUE(infra.ok()) << infra.status();
  ASSERT_TRUE(admin::Admin((*infra)->pg_uri()).CreateOrg("acme", "Acme").ok());
  PgPool pg((*infra)->pg_uri(), 2);
  UlidGenerator ids;
  ChatStore store(pg, ids);
  const Scope alice{"acme", "alice"};

  // Two conversations' changes, committed; no relay yet.
  std::map<std::string, std::vector<std::string>> expected;
  for (int c = 0; c < 2; ++c) {
    auto conv = store.CreateConversation(alice, "sim-small", "");
    ASSERT_TRUE(conv.ok()) << conv.status();
    const std::string id = conv->id();
    auto turn = store.AppendTurn(alice, id, "hello " + std::to_string(c), "");
    ASSERT_TRUE(turn.ok());
    cpb::ChatEvent done;
    done.set_type("message.completed");
    done.set_conversation_id(id);
    ASSERT_TRUE(store
                    .CompleteReply(id, turn->assistant_message_id,
                                   {.content = "hi", .status = "complete"}, &done)
                    .ok());
    ASSERT_TRUE(store.UpdateConversation(alice, id, {.title = "renamed"}).ok());
    ASSERT_TRUE(store.DeleteConversation(alice, id, std::nullopt).ok());
    expected[id] = {"conversation.created", "message.created", "message.completed",
                    "conversation.updated", "conversation.deleted"};
  }

  auto producer = KafkaProducer::Create((*infra)->kafka());
  ASSERT_TRUE(producer.ok()) << producer.status();
  OutboxRelay relay(store, **producer, "chat.events");
  EXPECT_EQ(relay.RelayOnce(), 10);
  EXPECT_EQ(relay.RelayOnce(), 0) << "published rows leave the outbox";

  auto consumer = KafkaConsumer::Create((*infra)->kafka(), "outbox-test", {"chat.events"});
  ASSERT_TRUE(consumer.ok()) << consumer.status();
  std::map<std::string, std::vector<std::string>> got;
  std::set<std::string> event_ids;
  int n = 0;
  for (auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
       n < 10 && std::chrono::steady_clock::now() < deadline;) {
    auto m = (*consumer)->Poll(std::chrono::milliseconds(200));
    ASSERT_TRUE(m.ok()) << m.status();
    if (!m->has_value()) continue;
    cpb::ChatEvent ev;
    ASSERT_TRUE(ev.ParseFromString((*m)->value));
    EXPECT_EQ((*m)->key, ev.conversation_id()) << "keyed by conversation";
    EXPECT_TRUE(event_ids.insert(ev.event_id()).second) << "each event its own id";
    got[ev.conversation_id()].push_back(ev.type());
    if (ev.type() == "conversation.updated") {
      EXPECT_EQ(ev.conversation().title(), "renamed");
    }
    ++n;
  }
  EXPECT_EQ(got, expected);
}

}  // namespace
}  // namespace sb::chat
