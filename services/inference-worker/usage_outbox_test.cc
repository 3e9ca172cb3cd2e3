#include "inference-worker/usage_outbox.h"

#include <atomic>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "storage/kafka.h"

namespace sb::worker {
namespace {

using switchboard::billing::v1::UsageEvent;

UsageEvent Event(const std::string& request_id, int output_tokens, bool final) {
  UsageEvent e;
  e.set_request_id(request_id);
  e.set_output_tokens(output_tokens);
  e.set_final(final);
  return e;
}

// A publisher with room for `room` events; the test opens more room.
struct Publisher {
  std::mutex mu;
  int room = 0;
  std::vector<UsageEvent> taken;

  absl::Status Publish(const UsageEvent& e, const UsageOutbox::Stored& stored) {
    std::lock_guard<std::mutex> lock(mu);
    if (room == 0) return absl::ResourceExhaustedError("full");
    --room;
    taken.push_back(e);
    if (stored) stored(absl::OkStatus());
    return absl::OkStatus();
  }
  void Open(int n) {
    std::lock_guard<std::mutex> lock(mu);
    room += n;
  }
};

TEST(UsageOutboxTest, PassesEventsStraightThroughWhileThereIsRoom) {
  Publisher p;
  p.Open(10);
  UsageOutbox outbox([&](const UsageEvent& e, UsageOutbox::Stored s) { return p.Publish(e, s); });
  outbox.Report(Event("a", 1, false));
  outbox.Report(Event("a", 3, true));
  EXPECT_FALSE(outbox.backed_up());
  ASSERT_EQ(p.taken.size(), 2u);
  EXPECT_EQ(p.taken[1].output_tokens(), 3);
}

TEST(UsageOutboxTest, AFullQueueHoldsEventsBackAndDeliversThemInOrderLater) {
  Publisher p;
  UsageOutbox outbox([&](const UsageEvent& e, UsageOutbox::Stored s) { return p.Publish(e, s); },
                     absl::Milliseconds(5));
  outbox.Report(Event("a", 5, false));
  outbox.Report(Event("b", 2, true));
  outbox.Report(Event("a", 9, false));  // replaces a's waiting running report
  outbox.Report(Event("c", 4, true));
  outbox.Report(Event("c", 5, true));   // a final report is never replaced
  outbox.Report(Event("a", 12, true));  // and replaces a's, in its place
  EXPECT_TRUE(outbox.backed_up());
  EXPECT_EQ(outbox.backlog(), 4u);
  p.Open(100);
  ASSERT_TRUE(outbox.WaitEmpty(absl::Now() + absl::Seconds(10)));
  EXPECT_FALSE(outbox.backed_up());
  std::lock_guard<std::mutex> lock(p.mu);
  ASSERT_EQ(p.taken.size(), 4u);
  EXPECT_EQ(p.taken[0].request_id(), "a");
  EXPECT_EQ(p.taken[0].output_tokens(), 12);
  EXPECT_TRUE(p.taken[0].final());
  EXPECT_EQ(p.taken[1].request_id(), "b");
  EXPECT_EQ(p.taken[2].output_tokens(), 4);
  EXPECT_EQ(p.taken[3].output_tokens(), 5);
}

TEST(UsageOutboxTest, AReplacedReportsCallbackRunsWhenItsReplacementIsStored) {
  Publisher p;
  UsageOutbox outbox([&](const UsageEvent& e, UsageOutbox::Stored s) { return p.Publish(e, s); },
                     absl::Milliseconds(5));
  std::atomic<int> stored{0};
  outbox.Report(Event("a", 5, false), [&](const absl::Status& st) { stored += st.ok(); });
  outbox.Report(Event("a", 9, false), [&](const absl::Status& st) { stored += st.ok(); });
  EXPECT_EQ(stored.load(), 0);
  p.Open(1);
  ASSERT_TRUE(outbox.WaitEmpty(absl::Now() + absl::Seconds(10)));
  EXPECT_EQ(stored.load(), 2);
  std::lock_guard<std::mutex> lock(p.mu);
  ASSERT_EQ(p.taken.size(), 1u);
  EXPECT_EQ(p.taken[0].output_tokens(), 9);
}

TEST(UsageOutboxTest, WhileAnythingWaitsNewEventsQueueBehindIt) {
  Publisher p;
  UsageOutbox outbox([&](const UsageEvent& e, UsageOutbox::Stored s) { return p.Publish(e, s); },
                     absl::Hours(1));
  outbox.Report(Event("a", 1, true));
  p.Open(1);
  // Room for one: the waiting event goes first, the new one waits.
  outbox.Report(Event("b", 1, true));
  std::lock_guard<std::mutex> lock(p.mu);
  ASSERT_EQ(p.taken.size(), 1u);
  EXPECT_EQ(p.taken[0].request_id(), "a");
  EXPECT_EQ(outbox.backlog(), 1u);
}

// The real producer with a two-message queue and no broker: the third event
// is pushed back, not dropped, and the outbox says so.
TEST(UsageOutboxTest, KafkaProducersFullQueuePushesBack) {
  auto producer = KafkaProducer::Create("127.0.0.1:1", {{"queue.buffering.max.messages", "2"}});
  ASSERT_TRUE(producer.ok()) << producer.status();
  UsageOutbox outbox([&](const UsageEvent& e, UsageOutbox::Stored stored) {
    return (*producer)->Publish("usage.events", e.request_id(), e.SerializeAsString(), {},
                                std::move(stored));
  });
  for (int i = 0; i < 5; ++i) outbox.Report(Event("r" + std::to_string(i), i, true));
  EXPECT_TRUE(outbox.backed_up());
  EXPECT_EQ(outbox.backlog(), 3u);
  EXPECT_FALSE((*producer)->Ping(std::chrono::milliseconds(200)).ok());
}

}  // namespace
}  // namespace sb::worker
