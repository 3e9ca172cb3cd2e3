#include "core/api_key.h"

#include <array>
#include <cstdint>
#include <cstdio>

namespace sb {
namespace {

constexpr std::string_view kPrefix = "sk-sb-";
constexpr size_t kIdLength = 26;
constexpr size_t kSecretLength = 32;
constexpr size_t kCheckLength = 8;
constexpr size_t kLegacySecretLength = 48;

constexpr std::array<uint32_t, 256> kCrcTable = [] {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    table[i] = c;
  }
  return table;
}();

bool IsLowerHex(std::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

// Crockford's base32 as ULIDs are written: digits and upper-case letters
// without I, L, O and U.
bool IsUlid(std::string_view s) {
  if (s.size() != kIdLength) return false;
  for (char c : s) {
    const bool digit = c >= '0' && c <= '9';
    const bool letter = c >= 'A' && c <= 'Z' && c != 'I' && c != 'L' && c != 'O' && c != 'U';
    if (!digit && !letter) return false;
  }
  return true;
}

std::string CheckOf(std::string_view body) {
  char out[kCheckLength + 1];
  std::snprintf(out, sizeof out, "%08x", Crc32(body));
  return std::string(out, kCheckLength);
}

}  // namespace

uint32_t Crc32(std::string_view data) {
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char b : data) c = kCrcTable[(c ^ b) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

std::string FormatApiKey(std::string_view key_id, std::string_view secret_hex) {
  std::string body = std::string(kPrefix) + std::string(key_id) + "-" + std::string(secret_hex);
  return body + CheckOf(body);
}

ParsedKey ParseApiKey(std::string_view key) {
  ParsedKey out;
  if (key.substr(0, kPrefix.size()) != kPrefix) return out;
  const std::string_view rest = key.substr(kPrefix.size());
  if (rest.size() <= kIdLength || rest[kIdLength] != '-' || !IsUlid(rest.substr(0, kIdLength))) {
    return out;
  }
  const std::string_view tail = rest.substr(kIdLength + 1);
  if (!IsLowerHex(tail)) return out;
  if (tail.size() == kSecretLength + kCheckLength) {
    const std::string_view body = key.substr(0, key.size() - kCheckLength);
    out.shape =
        CheckOf(body) == tail.substr(kSecretLength) ? KeyShape::kValid : KeyShape::kBadChecksum;
  } else if (tail.size() == kLegacySecretLength) {
    out.shape = KeyShape::kLegacy;
  } else {
    return out;
  }
  if (out.shape != KeyShape::kBadChecksum) out.key_id = std::string(rest.substr(0, kIdLength));
  return out;
}

}  // namespace sb
