#include "core/api_key.h"

#include "gtest/gtest.h"

namespace sb {
namespace {

constexpr std::string_view kId = "01JD5Z7Q8R9S0T1V2W3X4Y5Z6A";
constexpr std::string_view kSecret = "0123456789abcdef0123456789abcdef";

TEST(ApiKeyTest, Crc32MatchesTheStandardCheckValue) {
  EXPECT_EQ(Crc32("123456789"), 0xCBF43926u);  // the catalogued check value of CRC-32
  EXPECT_EQ(Crc32(""), 0u);
}

TEST(ApiKeyTest, AFormattedKeyParsesBackToItsId) {
  const std::string key = FormatApiKey(kId, kSecret);
  EXPECT_EQ(key.rfind("sk-sb-" + std::string(kId) + "-" + std::string(kSecret), 0), 0u);
  EXPECT_EQ(key.size(), 73u);  // sk-sb- + 26 + - + 32 + 8
  const ParsedKey p = ParseApiKey(key);
  EXPECT_EQ(p.shape, KeyShape::kValid);
  EXPECT_EQ(p.key_id, kId);
}

TEST(ApiKeyTest, EverySingleCharacterTypoIsCaught) {
  const std::string key = FormatApiKey(kId, kSecret);
  for (size_t i = 6; i < key.size(); ++i) {
    for (char c : std::string_view("0123456789abcdefABCDEFXYZ-")) {
      if (key[i] == c) continue;
      std::string typo = key;
      typo[i] = c;
      EXPECT_NE(ParseApiKey(typo).shape, KeyShape::kValid) << typo;
    }
  }
}

TEST(ApiKeyTest, ShapesThatAreNotKeys) {
  const std::string key = FormatApiKey(kId, kSecret);
  EXPECT_EQ(ParseApiKey("").shape, KeyShape::kMalformed);
  EXPECT_EQ(ParseApiKey("sk-ant-api03-xyz").shape, KeyShape::kMalformed);
  EXPECT_EQ(ParseApiKey(key.substr(0, key.size() - 1)).shape, KeyShape::kMalformed);
  EXPECT_EQ(ParseApiKey(key + "0").shape, KeyShape::kMalformed);
  EXPECT_EQ(
      ParseApiKey("sk-sb-01jd5z7q8r9s0t1v2w3x4y5z6a-" + std::string(kSecret) + "00000000").shape,
      KeyShape::kMalformed);  // a ULID is upper case
  std::string bad_check = key;
  bad_check.back() = bad_check.back() == '0' ? '1' : '0';
  const ParsedKey p = ParseApiKey(bad_check);
  EXPECT_EQ(p.shape, KeyShape::kBadChecksum);
  EXPECT_EQ(p.key_id, "");
}

TEST(ApiKeyTest, KeysFromBeforeTheCheckAreLegacy) {
  const std::string legacy = "sk-sb-" + std::string(kId) + "-" + std::string(48, 'a');
  const ParsedKey p = ParseApiKey(legacy);
  EXPECT_EQ(p.shape, KeyShape::kLegacy);
  EXPECT_EQ(p.key_id, kId);
}

}  // namespace
}  // namespace sb
