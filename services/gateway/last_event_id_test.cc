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
  for (const char* header : {"msg_2:17", "msg_1", "msg_1:", ":17", "msg_1:x", "msg_1:-1",
                             "msg_1:9223372036854775808", "msg_1:17 "}) {
    auto r = ParseLastEventId(header, "msg_1");
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << header;
  }
}

// Found by tests/fuzz/last_event_id: from_chars stops at the first
// non-digit, so "5x" read as 5 and "-0" as 0.
TEST(LastEventIdTest, RefusesTrailingBytesAndSigns) {
  for (const char* header : {"msg_1:5x", "msg_1:5:", "msg_1:-0", "msg_1:+5", "msg_1: 5"}) {
    auto r = ParseLastEventId(header, "msg_1");
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << header;
  }
}

TEST(EventCursorTest, AcceptsEventIdsAndNothingElse) {
  EXPECT_EQ(*ParseEventCursor(""), "");
  EXPECT_EQ(*ParseEventCursor("1764748800123-0"), "1764748800123-0");
  EXPECT_EQ(*ParseEventCursor("18446744073709551615-18446744073709551615"),
            "18446744073709551615-18446744073709551615");
  for (const char* header : {"17", "17-", "-3", "17-3-1", "17-x", "+1-2", "1- 2", "1-2 ",
                             "18446744073709551616-0", "msg_1:17"}) {
    EXPECT_EQ(ParseEventCursor(header).status().code(), absl::StatusCode::kInvalidArgument)
        << header;
  }
}

}  // namespace
}  // namespace sb::gateway
