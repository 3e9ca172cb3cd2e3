#include "json/bounded_json.h"

#include <string>

#include "gtest/gtest.h"

namespace sb::json {
namespace {

TEST(BoundedJsonTest, ParsesLikeNlohmann) {
  const std::string text =
      R"({"a":[1,-2,3.5,true,null,"x\u00e9"],"b":{"c":{"d":[]}},"e":18446744073709551615})";
  auto parsed = Parse(text);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(*parsed, nlohmann::json::parse(text));
}

TEST(BoundedJsonTest, DuplicateKeysKeepTheLastValue) {
  auto parsed = ParseObject(R"({"k":1,"k":2})");
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ((*parsed)["k"], 2);
}

TEST(BoundedJsonTest, NestingDeeperThanTheLimitStopsAtOnce) {
  EXPECT_TRUE(Parse(std::string(64, '[') + std::string(64, ']')).ok());
  auto deep = Parse(std::string(65, '[') + std::string(65, ']'));
  ASSERT_FALSE(deep.ok());
  EXPECT_EQ(deep.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(deep.status().message().find("deeper than 64"), std::string::npos);
  // Objects count as levels too.
  std::string objects;
  for (int i = 0; i < 65; ++i) objects += R"({"a":)";
  objects += "1" + std::string(65, '}');
  EXPECT_FALSE(Parse(objects).ok());
}

TEST(BoundedJsonTest, TheNestingBombIsRefusedWithoutBuildingIt) {
  // 4 MiB of '[': rejected after the 65th byte.
  auto bomb = Parse(std::string(4 << 20, '['));
  ASSERT_FALSE(bomb.ok());
  EXPECT_NE(bomb.status().message().find("deeper than 64"), std::string::npos);
}

TEST(BoundedJsonTest, TooManyValuesAreRefused) {
  std::string wide = "[";
  for (int i = 0; i < 1000; ++i) wide += i ? ",0" : "0";
  wide += "]";
  EXPECT_TRUE(Parse(wide, {.max_values = 1001}).ok());
  auto over = Parse(wide, {.max_values = 1000});
  ASSERT_FALSE(over.ok());
  EXPECT_NE(over.status().message().find("more than 1000 JSON values"), std::string::npos);
}

TEST(BoundedJsonTest, SyntaxErrorsAndNonObjects) {
  auto bad = Parse(R"({"a": })");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("not valid JSON"), std::string::npos);
  EXPECT_FALSE(Parse("").ok());
  EXPECT_FALSE(Parse("{} trailing").ok());
  EXPECT_FALSE(Parse("\"\xff\"").ok()) << "invalid UTF-8 is refused";
  auto array = ParseObject("[1]");
  ASSERT_FALSE(array.ok());
  EXPECT_NE(array.status().message().find("must be a JSON object"), std::string::npos);
}

TEST(DumpTest, InvalidUtf8IsReplacedNotThrown) {
  EXPECT_EQ(Dump(nlohmann::json({{"path", "/v1/\xff"}})), "{\"path\":\"/v1/\xef\xbf\xbd\"}");
  EXPECT_EQ(Dump(nlohmann::json("caf\xc3\xa9")), "\"caf\xc3\xa9\"");
}

}  // namespace
}  // namespace sb::json
