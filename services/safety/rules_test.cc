#include "safety/rules.h"

#include <cstdio>
#include <fstream>

#include "gtest/gtest.h"
#include "safety/policy.h"

namespace sb::safety {
namespace {

// What Scan found in `text`, as "category:span" strings.
std::vector<std::string> Found(const std::string& text) {
  std::vector<std::string> out;
  for (const Finding& f : Scan(text)) {
    out.push_back(f.category + ":" + text.substr(f.start, f.end - f.start));
  }
  return out;
}

using V = std::vector<std::string>;

TEST(RulesTest, FindsEmailAddresses) {
  EXPECT_EQ(Found("write to jane.doe+x@example.co.uk. or bob@corp.io"),
            (V{"pii.email:jane.doe+x@example.co.uk", "pii.email:bob@corp.io"}));
}

TEST(RulesTest, IgnoresThingsThatAreNotAddresses) {
  EXPECT_TRUE(Found("meet @ noon, a@b, user@localhost, x@y.1").empty());
}

TEST(RulesTest, FindsLuhnValidCardNumbersOnly) {
  EXPECT_TRUE(LuhnValid("4111111111111111"));
  EXPECT_FALSE(LuhnValid("4111111111111112"));
  EXPECT_EQ(Found("card 4111 1111 1111 1111 and 4111-1111-1111-1112 and 79927398713"),
            (V{"pii.card_number:4111 1111 1111 1111"}));
  EXPECT_EQ(Found("(4242.4242.4242.4242)"), (V{"pii.card_number:4242.4242.4242.4242"}));
  // An ISBN passes Luhn now and then, but no card number starts with 9.
  EXPECT_TRUE(Found("ISBN 978-0-306-40615-7").empty());
}

TEST(RulesTest, DigitsInsideWordsAreNotCards) {
  EXPECT_TRUE(Found("id x4111111111111111 and 4111111111111111y").empty());
}

TEST(RulesTest, FindsPhoneNumbersAsWritten) {
  EXPECT_EQ(Found("call +44 20 7946 0958 or (212) 555-0123, 1-800-555-0199, 212.555.0123"),
            (V{"pii.phone:+44 20 7946 0958", "pii.phone:(212) 555-0123", "pii.phone:1-800-555-0199",
               "pii.phone:212.555.0123"}));
  EXPECT_EQ(Found("+14155550123"), (V{"pii.phone:+14155550123"}));
  // Not phone numbers: dates, times, versions, bare numbers, area code 0/1.
  EXPECT_TRUE(
      Found("on 2026-11-25 at 10:30, v1.2.3, 2125550123 items, 123-456-7890, +0 12").empty());
}

TEST(RulesTest, FindsSocialSecurityNumbersThatCanExist) {
  EXPECT_EQ(Found("ssn 078-05-1120."), (V{"pii.ssn:078-05-1120"}));
  EXPECT_EQ(Found("ssn 078 05 1120"), (V{"pii.ssn:078 05 1120"}));
  EXPECT_TRUE(Found("000-12-3456 666-12-3456 912-12-3456 123-00-4567 123-45-0000").empty());
  EXPECT_TRUE(Found("078-05 1120").empty());  // mixed separators
}

TEST(RulesTest, FindsIbansThatPassTheirCheck) {
  EXPECT_TRUE(IbanValid("DE89370400440532013000"));
  EXPECT_FALSE(IbanValid("DE89370400440532013001"));
  EXPECT_EQ(Found("pay DE89 3704 0044 0532 0130 00 by friday"),
            (V{"pii.iban:DE89 3704 0044 0532 0130 00"}));
  EXPECT_EQ(Found("iban: gb82west12345698765432."), (V{"pii.iban:gb82west12345698765432"}));
  EXPECT_TRUE(Found("DE89 3704 0044 0532 0130 02 and AB12 is a code").empty());
}

TEST(RulesTest, FindsSecretsOfKnownShapes) {
  const std::string platform = "sk-sb-01jd5z7q8r9s0t1v2w3x4y5z6a-" + std::string(48, 'f');
  EXPECT_EQ(Found("key=" + platform + "; done"), (V{"secret.api_key:" + platform}));
  EXPECT_EQ(Found("export ANTHROPIC_API_KEY=sk-ant-api03-abcdefghijklmnopqrstuv"),
            (V{"secret.api_key:sk-ant-api03-abcdefghijklmnopqrstuv"}));
  EXPECT_EQ(Found("ghp_" + std::string(36, 'a')),
            (V{"secret.api_key:ghp_" + std::string(36, 'a')}));
  EXPECT_EQ(Found("aws_access_key_id = AKIAIOSFODNN7EXAMPLE\n"),
            (V{"secret.cloud_key:AKIAIOSFODNN7EXAMPLE"}));
  // (Split so that this file holds no private-key marker: tests/deploy.)
  const std::string pem =
      "-----BEGIN RSA PRIVATE"
      " KEY-----";
  EXPECT_EQ(Found("x\n" + pem + "\nMIIEow"), (V{"secret.private_key:" + pem}));
  // Short or other shapes are not keys.
  EXPECT_TRUE(Found("sk-short, risk-averse, AKIA1234, -----BEGIN CERTIFICATE-----").empty());
}

TEST(RulesTest, LookAlikeSpellingsAreCaught) {
  EXPECT_EQ(Found("ｂｏｂ＠ｃｏｒｐ．ｉｏ"), (V{"pii.email:ｂｏｂ＠ｃｏｒｐ．ｉｏ"}));
  EXPECT_EQ(Found("bob\u200b@\u200dcorp.io"), (V{"pii.email:bob\u200b@\u200dcorp.io"}));
  EXPECT_EQ(Found("４１１１ １１１１ １１１１ １１１１"),
            (V{"pii.card_number:４１１１ １１１１ １１１１ １１１１"}));
  EXPECT_EQ(Found("4\u0301111\u20111111\u20111111\u20111111"),
            (V{"pii.card_number:4\u0301111\u20111111\u20111111\u20111111"}));
  EXPECT_EQ(Found("ＡＫＩＡＩＯＳＦＯＤＮＮ７ＥＸＡＭＰＬＥ").size(), 1u);
}

// Where a match may still be in progress: only the text that could become
// or extend one waits.
TEST(RulesTest, PendingCoversOnlyWhatMayStillMatch) {
  auto pending = [](std::string_view s) { return s.size() - Pending(s); };  // bytes held
  EXPECT_EQ(pending("Hello there. "), 0u);
  EXPECT_EQ(pending("my card is 4111 11"), 7u);
  EXPECT_EQ(pending("call (21"), 3u);
  EXPECT_EQ(pending("iban de89 3704"), 9u);
  EXPECT_EQ(pending("iban de89 3704 "), 10u);
  EXPECT_EQ(pending("it is the end"), 3u) << "a word may be an address's local part";
  EXPECT_EQ(pending("key: -----beg"), 8u);
  EXPECT_EQ(pending("-----begin rsa private key----"), 30u);
  EXPECT_EQ(pending("-----begin rsa private key-----"), 8u) << "complete; \"key-----\" is a word";
  EXPECT_EQ(pending("done!"), 0u);
}

std::vector<std::string> CleanCorpus() {
  std::ifstream in(SB_SAFETY_TESTDATA "/clean_corpus.txt");
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}

// The false-positive rate on ordinary text in many scripts, full of dates,
// prices, versions, ISBNs and other numbers: none of it may be flagged.
TEST(RulesTest, CleanTextInManyScriptsIsNotFlagged) {
  const auto lines = CleanCorpus();
  ASSERT_GE(lines.size(), 200u);
  size_t flagged = 0;
  for (const std::string& line : lines) {
    const auto found = Found(line);
    if (!found.empty()) {
      ++flagged;
      ADD_FAILURE() << found.front() << " in: " << line;
    }
  }
  std::printf("false positives: %zu of %zu lines (%.2f%%)\n", flagged, lines.size(),
              100.0 * static_cast<double>(flagged) / static_cast<double>(lines.size()));
}

TEST(PolicyTest, BlocksInputWithPiiAndExplains) {
  auto v = Evaluate("my card is 5500 0000 0000 0004, mail me at a@b.org", Direction::kInput);
  EXPECT_FALSE(v.allowed);
  EXPECT_NE(v.reason.find("payment card number"), std::string::npos) << v.reason;
  EXPECT_NE(v.reason.find("e-mail address"), std::string::npos) << v.reason;
  EXPECT_TRUE(Evaluate("hello there", Direction::kInput).allowed);
}

}  // namespace
}  // namespace sb::safety
