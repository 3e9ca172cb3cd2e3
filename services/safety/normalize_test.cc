#include "safety/normalize.h"

#include "gtest/gtest.h"

namespace sb::safety {
namespace {

TEST(NormalizeTest, FoldsLookAlikesToWhatTheRulesRead) {
  EXPECT_EQ(Normalize("ＢＯＢ＠ｃｏｒｐ．ｉｏ").text, "bob@corp.io");         // fullwidth
  EXPECT_EQ(Normalize("b\u200bo\u200db\u2060@corp.io").text, "bob@corp.io");  // zero-width
  EXPECT_EQ(Normalize("bo\u0301b\u0327@corp.io").text, "bob@corp.io");        // combining marks
  EXPECT_EQ(Normalize("4111\u20101111\u00a01111\u22121111").text, "4111-1111 1111-1111");
  EXPECT_EQ(Normalize("Straße ＡＫＩＡ").text, "strasse akia");
  EXPECT_EQ(Normalize("𝟒𝟏𝟏𝟏").text, "4111");  // mathematical digits
}

TEST(NormalizeTest, EveryByteKnowsWhereItCameFrom) {
  const std::string text = "a＠\u200bb";  // "a", 3 bytes, 3 bytes (removed), "b"
  const Normalized n = Normalize(text);
  ASSERT_EQ(n.text, "a@b");
  EXPECT_EQ(n.from, (std::vector<uint32_t>{0, 1, 7}));
  EXPECT_EQ(n.to, (std::vector<uint32_t>{1, 4, 8}));
  EXPECT_EQ(n.consumed, text.size());
  // "@b" came from bytes 1..8, the zero-width space between included.
  EXPECT_EQ(n.OriginalStart(1), 1u);
  EXPECT_EQ(n.OriginalEnd(3), 8u);
}

TEST(NormalizeTest, AnIncompleteCodePointAtTheEndWaitsAndInvalidBytesStay) {
  const std::string text = "ab\xef\xbc";  // the first two bytes of "＠"
  const Normalized n = Normalize(text);
  EXPECT_EQ(n.text, "ab");
  EXPECT_EQ(n.consumed, 2u);
  EXPECT_EQ(n.OriginalStart(2), 2u);
  const Normalized bad = Normalize("a\xff\x80z");
  EXPECT_EQ(bad.text, "a\xff\x80z");
  EXPECT_EQ(bad.consumed, 4u);
}

TEST(NormalizeTest, TextInOtherScriptsKeepsItsLetters) {
  EXPECT_EQ(Normalize("Привет").text, "привет");
  EXPECT_EQ(Normalize("日本語").text, "日本語");
  EXPECT_EQ(Normalize("مرحبا").text, "مرحبا");
}

}  // namespace
}  // namespace sb::safety
