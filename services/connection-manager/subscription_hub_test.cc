#include "connection-manager/subscription_hub.h"

#include "gtest/gtest.h"

namespace sb::connection {
namespace {

switchboard::chat::v1::ChatMessage Complete(const std::string& text, int tokens) {
  switchboard::chat::v1::ChatMessage m;
  m.set_status("complete");
  m.set_content(text);
  m.set_output_tokens(tokens);
  m.set_input_tokens(3);
  m.set_stop_reason("end_turn");
  m.set_model("sim-small");
  return m;
}

TEST(FromPersistedTest, FromTheStartServesTheWholeTextThenTheEnd) {
  auto events = FromPersisted(Complete("Hello there friend", 3), 0);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].delta().text(), "Hello there friend");
  EXPECT_EQ(events[0].offset(), 3);
  EXPECT_TRUE(events[1].has_end());
  EXPECT_EQ(events[1].offset(), 4);  // the same offset the live end had
  EXPECT_EQ(events[1].end().output_tokens(), 3);
}

TEST(FromPersistedTest, AfterEverythingOnlyTheEnd) {
  auto events = FromPersisted(Complete("Hello there friend", 3), 3);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_TRUE(events[0].has_end());
}

TEST(FromPersistedTest, AfterTheEndNothingRemains) {
  EXPECT_TRUE(FromPersisted(Complete("Hello there friend", 3), 4).empty());
  auto failed = Complete("", 0);
  failed.set_status("failed");
  EXPECT_TRUE(FromPersisted(failed, 1).empty());
}

TEST(FromPersistedTest, MidwayCannotBeSplicedAndSaysSo) {
  auto events = FromPersisted(Complete("Hello there friend", 3), 1);
  ASSERT_EQ(events.size(), 1u);
  ASSERT_TRUE(events[0].has_error());
  EXPECT_NE(events[0].error().message().find("expired"), std::string::npos);
}

TEST(FromPersistedTest, FailedReplyIsAnError) {
  auto m = Complete("", 0);
  m.set_status("failed");
  auto events = FromPersisted(m, 0);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_TRUE(events[0].has_error());
}

TEST(ToEventTest, ConvertsEachKind) {
  StreamEntry d;
  d.offset = 7;
  d.text = "hi";
  EXPECT_EQ(ToEvent(d).delta().text(), "hi");
  EXPECT_EQ(ToEvent(d).offset(), 7);
  StreamEntry end;
  end.kind = StreamEntry::Kind::kEnd;
  end.stop_reason = "max_tokens";
  EXPECT_EQ(ToEvent(end).end().stop_reason(), "max_tokens");
}

}  // namespace
}  // namespace sb::connection
