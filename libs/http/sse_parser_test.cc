#include "http/sse_parser.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace sb::http {
namespace {

std::vector<SseEvent> ParseInPieces(const std::string& text, size_t piece) {
  SseParser parser;
  std::vector<SseEvent> out;
  for (size_t i = 0; i < text.size(); i += piece) {
    EXPECT_TRUE(parser
                    .Feed(std::string_view(text).substr(i, piece),
                          [&](const SseEvent& ev) { out.push_back(ev); })
                    .ok());
  }
  return out;
}

TEST(SseParserTest, FieldsMultiLineDataAndComments) {
  const std::string text =
      ": keep-alive\n"
      "event: message_start\n"
      "id: 7\n"
      "data: {\"a\":1}\n"
      "\n"
      "data: line one\n"
      "data:line two\n"
      "data\n"
      "\n"
      "event: ignored-without-data\n"
      "\n"
      "retry: 100\n"
      "data: [DONE]\n\n";
  for (size_t piece = 1; piece <= text.size(); ++piece) {
    auto events = ParseInPieces(text, piece);
    ASSERT_EQ(events.size(), 3u) << "piece " << piece;
    EXPECT_EQ(events[0].event, "message_start");
    EXPECT_EQ(events[0].data, "{\"a\":1}");
    EXPECT_EQ(events[0].id, "7");
    EXPECT_EQ(events[1].event, "");
    EXPECT_EQ(events[1].data, "line one\nline two\n");
    EXPECT_EQ(events[1].id, "7");  // the last id carries over
    EXPECT_EQ(events[2].data, "[DONE]");
  }
}

TEST(SseParserTest, CrLfAndLoneCrLineEndsSplitAnywhere) {
  const std::string text = "data: a\r\n\r\nevent: e\rdata: b\r\rdata: c\n\ndata: d\r\n\r\n";
  for (size_t piece = 1; piece <= text.size(); ++piece) {
    auto events = ParseInPieces(text, piece);
    ASSERT_EQ(events.size(), 4u) << "piece " << piece;
    EXPECT_EQ(events[0].data, "a");
    EXPECT_EQ(events[1].event, "e");
    EXPECT_EQ(events[1].data, "b");
    EXPECT_EQ(events[2].data, "c");
    EXPECT_EQ(events[3].data, "d");
  }
}

TEST(SseParserTest, IncompleteEventIsNotDispatched) {
  SseParser parser;
  int n = 0;
  ASSERT_TRUE(parser.Feed("data: partial\n", [&](const SseEvent&) { ++n; }).ok());
  EXPECT_EQ(n, 0);
  ASSERT_TRUE(parser.Feed("\n", [&](const SseEvent&) { ++n; }).ok());
  EXPECT_EQ(n, 1);
}

TEST(SseParserTest, OverlongLineFailsTheStream) {
  SseParser parser(16);
  auto st = parser.Feed("data: " + std::string(64, 'x'), [](const SseEvent&) {});
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_FALSE(parser.Feed("\n\n", [](const SseEvent&) {}).ok());
}

}  // namespace
}  // namespace sb::http
