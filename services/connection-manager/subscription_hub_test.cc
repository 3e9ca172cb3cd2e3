#include "connection-manager/subscription_hub.h"

#include "gtest/gtest.h"

namespace sb::connection {
namespace {

namespace conn = switchboard::connection::v1;

// A complete reply of three deltas: its live stream had offsets
// 1 start, 2 block start, 3-5 deltas, 6 block stop, 7 message delta, 8 stop.
switchboard::chat::v1::ChatMessage Complete() {
  switchboard::chat::v1::ChatMessage m;
  m.set_status("complete");
  m.set_content("Hello there friend");
  m.set_output_tokens(3);
  m.set_input_tokens(4);
  m.set_stop_reason("end_turn");
  m.set_model("sim-small");
  m.set_stream_last_offset(8);
  return m;
}

std::vector<int64_t> Offsets(const std::vector<conn::StreamEvent>& events) {
  std::vector<int64_t> out;
  for (const auto& e : events) out.push_back(e.offset());
  return out;
}

TEST(FromPersistedTest, FromTheStartEveryEventWithTheLiveOffsets) {
  auto events = FromPersisted(Complete(), 0);
  EXPECT_EQ(Offsets(events), (std::vector<int64_t>{1, 2, 5, 6, 7, 8}));
  EXPECT_EQ(events[0].message_start().model(), "sim-small");
  EXPECT_EQ(events[0].message_start().input_tokens(), 4);
  EXPECT_TRUE(events[1].has_content_block_start());
  EXPECT_EQ(events[2].delta().text(), "Hello there friend");
  EXPECT_TRUE(events[3].has_content_block_stop());
  EXPECT_EQ(events[4].message_delta().stop_reason(), "end_turn");
  EXPECT_EQ(events[4].message_delta().output_tokens(), 3);
  EXPECT_TRUE(events[5].has_message_stop());
}

TEST(FromPersistedTest, ResumesExactlyAfterEveryEventOutsideTheText) {
  EXPECT_EQ(Offsets(FromPersisted(Complete(), 1)), (std::vector<int64_t>{2, 5, 6, 7, 8}));
  EXPECT_EQ(Offsets(FromPersisted(Complete(), 2)), (std::vector<int64_t>{5, 6, 7, 8}));
  EXPECT_EQ(Offsets(FromPersisted(Complete(), 5)), (std::vector<int64_t>{6, 7, 8}));
  EXPECT_EQ(Offsets(FromPersisted(Complete(), 6)), (std::vector<int64_t>{7, 8}));
  EXPECT_EQ(Offsets(FromPersisted(Complete(), 7)), (std::vector<int64_t>{8}));
  EXPECT_TRUE(FromPersisted(Complete(), 8).empty()) << "after the end nothing remains";
}

// With the deltas' lengths stored, a resume after any event — in the
// middle of the text too — gets exactly the events the live stream had
// after it: each delta as it was, at its own offset.
TEST(FromPersistedTest, WithTheDeltasLengthsAResumeMidTextIsExact) {
  auto m = Complete();
  for (int n : {5, 6, 7}) m.add_delta_lengths(n);  // "Hello", " there", " friend"
  const std::vector<std::string> texts = {"Hello", " there", " friend"};
  auto whole = FromPersisted(m, 0);
  EXPECT_EQ(Offsets(whole), (std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8}));
  for (int i = 0; i < 3; ++i) EXPECT_EQ(whole[2 + i].delta().text(), texts[i]);
  for (int64_t after = 0; after <= 8; ++after) {
    SCOPED_TRACE(after);
    auto rest = FromPersisted(m, after);
    ASSERT_EQ(rest.size(), whole.size() - static_cast<size_t>(after));
    for (size_t i = 0; i < rest.size(); ++i) {
      EXPECT_EQ(rest[i].SerializeAsString(), whole[after + i].SerializeAsString());
    }
  }
  // Lengths that do not add up to the text (or to the deltas the offsets
  // leave room for) are not trusted: as without them.
  m.set_delta_lengths(0, 4);
  EXPECT_EQ(Offsets(FromPersisted(m, 0)), (std::vector<int64_t>{1, 2, 5, 6, 7, 8}));
  EXPECT_TRUE(FromPersisted(m, 3)[0].has_error());
}

TEST(FromPersistedTest, MidwayThroughTheTextCannotBeSplicedAndSaysSo) {
  for (int64_t after : {3, 4}) {
    auto events = FromPersisted(Complete(), after);
    ASSERT_EQ(events.size(), 1u);
    ASSERT_TRUE(events[0].has_error());
    EXPECT_EQ(events[0].offset(), after + 1);
    EXPECT_NE(events[0].error().message().find("expired"), std::string::npos);
  }
}

TEST(FromPersistedTest, AnEmptyReplyHasNoDelta) {
  auto m = Complete();
  m.set_content("");
  m.set_stream_last_offset(5);
  EXPECT_EQ(Offsets(FromPersisted(m, 0)), (std::vector<int64_t>{1, 2, 3, 4, 5}));
}

TEST(FromPersistedTest, AFailedReplyIsAnErrorAtItsLastOffset) {
  auto m = Complete();
  m.set_status("failed");
  m.set_stream_last_offset(4);
  auto events = FromPersisted(m, 0);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_TRUE(events[0].has_error());
  EXPECT_EQ(events[0].offset(), 4);
  EXPECT_TRUE(FromPersisted(m, 4).empty());
}

TEST(ToEventTest, ConvertsEachKind) {
  StreamEntry d;
  d.offset = 7;
  d.text = "hi";
  EXPECT_EQ(ToEvent(d).delta().text(), "hi");
  EXPECT_EQ(ToEvent(d).offset(), 7);
  StreamEntry md;
  md.kind = StreamEntry::Kind::kMessageDelta;
  md.stop_reason = "stop_sequence";
  md.stop_sequence = "END";
  EXPECT_EQ(ToEvent(md).message_delta().stop_sequence(), "END");
  StreamEntry err;
  err.kind = StreamEntry::Kind::kError;
  err.error_code = static_cast<int>(absl::StatusCode::kUnavailable);
  EXPECT_EQ(ToEvent(err).error().code(), 14);
  StreamEntry stop;
  stop.kind = StreamEntry::Kind::kMessageStop;
  EXPECT_TRUE(ToEvent(stop).has_message_stop());
}

}  // namespace
}  // namespace sb::connection
