// The audit trail's writer against a real PostgreSQL and the dev broker
// (started for the suite): Kafka safety.audit into the safety_audit table,
// each event once however often Kafka delivers it, a message that is no
// storable event skipped and counted, and PostgreSQL away and back with
// nothing lost (the batch waits; its offsets are committed only once the
// rows are in).
#include <set>
#include <thread>

#include "absl/time/clock.h"
#include "core/metrics.h"
#include "core/ulid.h"
#include "gtest/gtest.h"
#include "safety/audit.h"
#include "storage/kafka.h"
#include "storage/pg.h"
#include "support/infra.h"

namespace sb::safety {
namespace {

namespace spb = switchboard::safety::v1;
using sb::testing::Infra;

class AuditWriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto infra = Infra::Start({.postgres = true, .redis = false, .kafka = true});
    ASSERT_TRUE(infra.ok()) << infra.status();
    infra_ = std::move(*infra);
    pg_ = std::make_unique<PgPool>(infra_->pg_uri(), 2);
    auto producer = KafkaProducer::Create(infra_->kafka());
    ASSERT_TRUE(producer.ok()) << producer.status();
    producer_ = std::move(*producer);
  }

  spb::AuditEvent Event(const std::string& rule) {
    const absl::Time now = absl::Now();
    spb::AuditEvent e;
    e.set_event_id(ids_.Next(now));
    e.set_org_id("audited");
    e.set_request_id("req-" + rule);
    e.set_direction("output");
    e.set_rule(rule);
    e.set_action("redact");
    e.set_policy_version(3);
    e.set_platform_policy_version(2);
    e.set_start(4);
    e.set_end(20);
    e.set_span_hash("ab12");
    e.set_source("safety");
    e.set_at_unix_ms(absl::ToUnixMillis(now));
    return e;
  }
  void Publish(const std::string& value) {
    ASSERT_TRUE(producer_->Publish(kAuditTopic, "audited", value).ok());
    ASSERT_TRUE(producer_->Flush(std::chrono::seconds(10)).ok());
  }
  // The org's trail once it holds `n` events (or after 30 s).
  std::vector<spb::AuditEvent> Trail(size_t n) {
    std::vector<spb::AuditEvent> out;
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (absl::Now() < deadline) {
      spb::ListAuditRequest req;
      req.set_org_id("audited");
      auto page = ListAudit(*pg_, req);
      if (page.ok()) out.assign(page->events().begin(), page->events().end());
      if (out.size() >= n) break;
      absl::SleepFor(absl::Milliseconds(100));
    }
    return out;
  }
  static double Counted(const char* outcome) {
    return metrics::Default()
        .GetCounter("sb_safety_audit_stored_total", "", {{"outcome", outcome}})
        .Value();
  }

  std::unique_ptr<Infra> infra_;
  std::unique_ptr<PgPool> pg_;
  std::unique_ptr<KafkaProducer> producer_;
  UlidGenerator ids_;
};

TEST_F(AuditWriterTest, EachEventOnceNothingUnreadableAndNothingLostWhilePostgresIsAway) {
  auto consumer =
      KafkaConsumer::Create(infra_->kafka(), "audit-writer-test", {kAuditTopic},
                            {{"fetch.wait.max.ms", "50"}, {"auto.offset.reset", "earliest"}});
  ASSERT_TRUE(consumer.ok()) << consumer.status();
  auto writer = std::make_unique<AuditWriter>(
      *pg_, std::move(*consumer), AuditWriterOptions{.retention = absl::ZeroDuration()});
  const double invalid_before = Counted("invalid");

  const spb::AuditEvent first = Event("pii.email");
  Publish(first.SerializeAsString());
  Publish(first.SerializeAsString());  // delivered again, as after a producer's retry
  Publish("not an audit event");
  spb::AuditEvent sideways = Event("pii.phone");
  sideways.set_direction("sideways");  // a value the table cannot hold
  Publish(sideways.SerializeAsString());
  const spb::AuditEvent second = Event("secrets.api_key");
  Publish(second.SerializeAsString());
  writer->Start();

  auto trail = Trail(2);
  ASSERT_EQ(trail.size(), 2u);
  EXPECT_EQ(trail[0].event_id(), first.event_id());
  EXPECT_EQ(trail[0].rule(), "pii.email");
  EXPECT_EQ(trail[0].span_hash(), "ab12");
  EXPECT_EQ(trail[0].policy_version(), 3);
  EXPECT_EQ(trail[0].platform_policy_version(), 2);
  EXPECT_EQ(trail[1].event_id(), second.event_id());
  EXPECT_EQ(Counted("invalid") - invalid_before, 2) << "the unreadable and the unstorable one";

  // PostgreSQL away: the event waits in Kafka and goes in once it is back.
  ASSERT_TRUE(infra_->StopPostgres().ok());
  const spb::AuditEvent third = Event("pii.card_number");
  Publish(third.SerializeAsString());
  absl::SleepFor(absl::Seconds(2));  // rounds that fail
  ASSERT_TRUE(infra_->StartPostgres().ok());
  trail = Trail(3);
  ASSERT_EQ(trail.size(), 3u);
  EXPECT_EQ(trail[2].event_id(), third.event_id());
  absl::SleepFor(absl::Seconds(1));  // its offsets are committed right after the rows
  writer.reset();                    // stopped, and its consumer leaves the group

  // The offsets were committed: the group's next writer reads on from
  // there, and stores the next event alone.
  auto again = KafkaConsumer::Create(infra_->kafka(), "audit-writer-test", {kAuditTopic},
                                     {{"fetch.wait.max.ms", "50"}});
  ASSERT_TRUE(again.ok()) << again.status();
  const double stored_before = Counted("stored");
  const spb::AuditEvent fourth = Event("secrets.private_key");
  Publish(fourth.SerializeAsString());
  AuditWriter next(*pg_, std::move(*again), {.retention = absl::ZeroDuration()});
  next.Start();
  trail = Trail(4);
  ASSERT_EQ(trail.size(), 4u);
  EXPECT_EQ(trail[3].event_id(), fourth.event_id());
  next.Stop();
  EXPECT_EQ(Counted("stored") - stored_before, 1) << "nothing before it read again";
}

}  // namespace
}  // namespace sb::safety
