#include "gateway/last_event_id.h"

#include "gtest/gtest.h"

namespace sb::gateway {
namespace {

TEST(LastEventIdTest, AbsentMeansFromTheStart) {
  auto r = ParseLastEventId("", "msg_1");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, 0);
}

TEST(LastEventIdTest, AcceptsTheIdsTheStreamSends) {
  EXPECT_EQ(*ParseLastEventId("msg_1:17", "msg_1"), 17);
  EXPECT_EQ(*ParseLastEventId("a:b:0", "a:b"), 0) << "the offset follows the last colon";
  EXPECT_EQ(*ParseLastEventId("m:9223372036854775807", "m"), INT64_MAX);
}

TEST(LastEventIdTest, RefusesAnythingElse) {
  for (const char* header :
       {"msg_2:17", "msg_1", "msg_1:", ":17", "msg_1:x", "msg_1:-1", "msg_1:9223372036854775808"}) {
    auto r = ParseLastEventId(header, "msg_1");
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << header;
  }
}

}  // namespace
}  // namespace sb::gateway
