#include "storage/message_signing.h"

#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <fstream>

#include "core/crypto.h"
#include "gtest/gtest.h"

namespace sb {
namespace {

const std::string kKeyA(64, 'a');
const std::string kKeyB(64, 'b');

MessageSigner Signer(std::vector<std::string> keys) {
  auto s = MessageSigner::FromKeys(std::move(keys));
  EXPECT_TRUE(s.ok()) << s.status();
  return *std::move(s);
}

TEST(MessageSignerTest, SignsKeyAndValueWithHmacSha256) {
  const MessageSigner signer = Signer({kKeyA});
  // An independent computation of the documented layout.
  const std::string expected =
      HexEncode(HmacSha256(kKeyA, std::string("\0\0\0\0\0\0\0\x05req-1value", 18)));
  EXPECT_EQ(signer.Sign("req-1", "value"), expected);
  EXPECT_EQ(signer.Sign("req-1", "value").size(), 64u);
  EXPECT_TRUE(signer.Verify("req-1", "value", signer.Sign("req-1", "value")));
}

TEST(MessageSignerTest, RefusesAnythingButTheExactMessage) {
  const MessageSigner signer = Signer({kKeyA});
  const std::string sig = signer.Sign("req-1", "value");
  EXPECT_FALSE(signer.Verify("req-1", "value", std::nullopt));
  EXPECT_FALSE(signer.Verify("req-1", "value", ""));
  EXPECT_FALSE(signer.Verify("req-1", "value", "not hex at all"));
  EXPECT_FALSE(signer.Verify("req-1", "valuE", sig));
  EXPECT_FALSE(signer.Verify("req-2", "value", sig));
  // Bytes moved from the key to the value.
  EXPECT_FALSE(signer.Verify("req-", "1value", sig));
  EXPECT_FALSE(signer.Verify("req-1", "value", sig.substr(0, 62)));
  std::string flipped = sig;
  flipped[10] = flipped[10] == '0' ? '1' : '0';
  EXPECT_FALSE(signer.Verify("req-1", "value", flipped));
  // Upper-case hex is the same signature.
  std::string upper = sig;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  EXPECT_TRUE(signer.Verify("req-1", "value", upper));
}

TEST(MessageSignerTest, AnotherKeysSignatureIsRefusedUnlessBothAreHeld) {
  const std::string by_b = Signer({kKeyB}).Sign("k", "v");
  EXPECT_FALSE(Signer({kKeyA}).Verify("k", "v", by_b));
  // Rotation: the consumer holds the new key and the old one.
  const MessageSigner both = Signer({kKeyA, kKeyB});
  EXPECT_TRUE(both.Verify("k", "v", by_b));
  EXPECT_EQ(both.Sign("k", "v"), Signer({kKeyA}).Sign("k", "v"));
}

TEST(MessageSignerTest, KeysMustBeLongEnough) {
  EXPECT_EQ(MessageSigner::FromKeys({}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MessageSigner::FromKeys({"short"}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(MessageSigner::FromKeys({kKeyA, std::string(31, 'x')}).ok());
  EXPECT_TRUE(MessageSigner::FromKeys({std::string(32, 'x')}).ok());
}

TEST(MessageSignerTest, ReadsOneKeyPerLineFromAFile) {
  char name[] = "/tmp/sb_signing_key_XXXXXX";
  const int fd = mkstemp(name);
  ASSERT_GE(fd, 0);
  close(fd);
  std::ofstream(name) << "  " << kKeyA << "  \n\n" << kKeyB << "\n";
  auto signer = MessageSigner::FromKeyFile(name);
  ASSERT_TRUE(signer.ok()) << signer.status();
  EXPECT_EQ(signer->Sign("k", "v"), Signer({kKeyA}).Sign("k", "v"));
  EXPECT_TRUE(signer->Verify("k", "v", Signer({kKeyB}).Sign("k", "v")));

  std::ofstream(name) << "\n  \n";
  auto empty = MessageSigner::FromKeyFile(name);
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(empty.status().message().find(name), std::string::npos) << empty.status();
  std::remove(name);

  auto missing = MessageSigner::FromKeyFile("/nonexistent/usage_signing.key");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("/nonexistent/usage_signing.key"), std::string::npos);
}

}  // namespace
}  // namespace sb
