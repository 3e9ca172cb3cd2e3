// The audit trail's events: what they hold and, above all, what they never
// hold (the text), and where they go.
#include "safety/audit.h"

#include "gtest/gtest.h"
#include "testing/fake_storage.h"

namespace sb::safety {
namespace {

MessageSigner Key(const std::string& k) { return *MessageSigner::FromKeys({k}); }

const AuditScope kScope{.request_id = "req_1",
                        .org_id = "acme",
                        .end_user_id = "u-7",
                        .direction = Direction::kOutput,
                        .policy_version = 3,
                        .platform_policy_version = 5};

TEST(AuditLogTest, AnEventNamesTheDecisionAndHashesTheSpanWithoutHoldingIt) {
  testing::FakePublisher bus;
  AuditLog audit(&bus, Key(std::string(40, 'k')));
  const std::string span = "jane.doe@example.com";
  audit.Record(kScope, "pii.email", "redact", 10, 10 + span.size(), span);
  const auto sent = bus.messages();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].topic, "safety.audit");
  EXPECT_EQ(sent[0].key, "acme") << "keyed by org";
  EXPECT_EQ(sent[0].value.find("jane"), std::string::npos) << "never the text";
  switchboard::safety::v1::AuditEvent e;
  ASSERT_TRUE(e.ParseFromString(sent[0].value));
  EXPECT_EQ(e.event_id().size(), 26u);
  EXPECT_EQ(e.org_id(), "acme");
  EXPECT_EQ(e.end_user_id(), "u-7");
  EXPECT_EQ(e.request_id(), "req_1");
  EXPECT_EQ(e.direction(), "output");
  EXPECT_EQ(e.rule(), "pii.email");
  EXPECT_EQ(e.action(), "redact");
  EXPECT_EQ(e.policy_version(), 3);
  EXPECT_EQ(e.platform_policy_version(), 5);
  EXPECT_EQ(e.start(), 10);
  EXPECT_EQ(e.end(), 10 + static_cast<int>(span.size()));
  EXPECT_EQ(e.source(), "safety");
  EXPECT_GT(e.at_unix_ms(), 0);
  EXPECT_EQ(e.span_hash().size(), 64u);
  EXPECT_EQ(e.span_hash().find_first_not_of("0123456789abcdef"), std::string::npos);
}

TEST(AuditLogTest, EqualSpansOfOneOrgHashAlikeAndNothingElseDoes) {
  AuditLog audit(nullptr, Key(std::string(40, 'k')));
  auto hash = [&](const AuditScope& scope, std::string_view span) {
    return audit.Event(scope, "pii.email", "flag", 0, span.size(), span).span_hash();
  };
  const std::string a = hash(kScope, "bob@corp.io");
  EXPECT_EQ(a, hash(kScope, "bob@corp.io"));
  EXPECT_NE(a, hash(kScope, "bob@corp.io.")) << "another span";
  AuditScope other = kScope;
  other.org_id = "globex";
  EXPECT_NE(a, hash(other, "bob@corp.io")) << "bound to the org";
  EXPECT_NE(a, Key(std::string(40, 'k')).Sign("acme", "bob@corp.io"))
      << "never a signature the same key would make for another use";
  AuditLog rekeyed(nullptr, Key(std::string(40, 'z')));
  EXPECT_NE(a, rekeyed.Event(kScope, "pii.email", "flag", 0, 11, "bob@corp.io").span_hash())
      << "keyed: without the key a hash cannot be checked against guesses";
  // No span (a throttle), no hash; without a key, no hash either.
  EXPECT_EQ(audit.Event(kScope, "throttle", "throttle", 0, 0, {}).span_hash(), "");
  AuditLog unkeyed(nullptr, std::nullopt);
  EXPECT_EQ(unkeyed.Event(kScope, "pii.email", "flag", 0, 11, "bob@corp.io").span_hash(), "");
}

TEST(AuditLogTest, EventIdsAreUniqueAndOrdered) {
  AuditLog audit(nullptr, std::nullopt);
  std::string last;
  for (int i = 0; i < 1000; ++i) {
    const std::string id = audit.Event(kScope, "pii.email", "flag", 0, 0, {}).event_id();
    ASSERT_GT(id, last);
    last = id;
  }
}

TEST(AuditLogTest, WithoutABusNothingIsPublishedAndAFullQueueIsNoCrash) {
  AuditLog off(nullptr, std::nullopt);
  EXPECT_FALSE(off.enabled());
  off.Record(kScope, "pii.email", "flag", 0, 3, "a@b");
  testing::FakePublisher bus;
  bus.set_status(absl::ResourceExhaustedError("queue full"));
  AuditLog audit(&bus, std::nullopt);
  audit.Record(kScope, "pii.email", "flag", 0, 3, "a@b");
  EXPECT_TRUE(bus.messages().empty());
}

TEST(AuditLogTest, AnInputTheyWouldRedactIsRecordedAsTheBlockItIs) {
  EXPECT_EQ(AuditAction(Action::kRedact, Direction::kInput), "block");
  EXPECT_EQ(AuditAction(Action::kRedact, Direction::kOutput), "redact");
  EXPECT_EQ(AuditAction(Action::kFlag, Direction::kInput), "flag");
  EXPECT_EQ(AuditAction(Action::kBlock, Direction::kOutput), "block");
}

}  // namespace
}  // namespace sb::safety
