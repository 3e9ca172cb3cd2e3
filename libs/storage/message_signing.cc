#include "storage/message_signing.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/crypto.h"

ABSL_FLAG(std::string, usage_signing_key_file, "",
          "File of the key usage events are signed with, one key per line: inference workers "
          "sign with the first, billing accepts any (rotation). Required: both refuse to start "
          "without it");

namespace sb {
namespace {

std::string Mac(std::string_view secret, std::string_view key, std::string_view value) {
  std::string data;
  data.reserve(8 + key.size() + value.size());
  const uint64_t n = key.size();
  for (int shift = 56; shift >= 0; shift -= 8) data += static_cast<char>((n >> shift) & 0xff);
  data.append(key);
  data.append(value);
  return HmacSha256(secret, data);
}

}  // namespace

absl::StatusOr<MessageSigner> MessageSigner::FromKeyFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    const int err = errno;
    const std::string why = absl::StrCat(path, ": ", std::strerror(err));
    if (err == EACCES) return absl::PermissionDeniedError(why);
    return absl::NotFoundError(why);
  }
  std::stringstream text;
  text << in.rdbuf();
  std::vector<std::string> keys;
  for (absl::string_view line : absl::StrSplit(text.str(), '\n')) {
    line = absl::StripAsciiWhitespace(line);
    if (!line.empty()) keys.emplace_back(line);
  }
  auto signer = FromKeys(std::move(keys));
  if (!signer.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", signer.status().message()));
  }
  return signer;
}

absl::StatusOr<MessageSigner> MessageSigner::FromKeys(std::vector<std::string> keys) {
  if (keys.empty()) return absl::InvalidArgumentError("no signing key");
  for (size_t i = 0; i < keys.size(); ++i) {
    if (keys[i].size() < kMinKeyLength) {
      return absl::InvalidArgumentError(
          absl::StrCat("signing key ", i + 1, " has ", keys[i].size(), " characters; at least ",
                       kMinKeyLength, " are needed (openssl rand -hex 32 makes one)"));
    }
  }
  return MessageSigner(std::move(keys));
}

std::string MessageSigner::Sign(std::string_view key, std::string_view value) const {
  return HexEncode(Mac(keys_.front(), key, value));
}

bool MessageSigner::Verify(std::string_view key, std::string_view value,
                           const std::optional<std::string>& signature) const {
  if (!signature.has_value()) return false;
  const std::optional<std::string> given = HexDecode(*signature);
  if (!given.has_value()) return false;
  bool ok = false;
  // Every key is tried, whatever matched: the time taken does not tell which.
  for (const auto& secret : keys_) ok |= ConstantTimeEquals(Mac(secret, key, value), *given);
  return ok;
}

absl::StatusOr<MessageSigner> UsageSignerFromFlags() {
  const std::string path = absl::GetFlag(FLAGS_usage_signing_key_file);
  if (path.empty()) {
    return absl::InvalidArgumentError(
        "--usage_signing_key_file (or SWITCHBOARD_USAGE_SIGNING_KEY_FILE) is required: the key "
        "usage events are signed with (the inference workers sign, billing verifies)");
  }
  auto signer = MessageSigner::FromKeyFile(path);
  if (!signer.ok()) {
    return absl::Status(signer.status().code(),
                        "--usage_signing_key_file: " + std::string(signer.status().message()));
  }
  return signer;
}

}  // namespace sb
