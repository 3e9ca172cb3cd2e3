// The shape of a Switchboard API key:
//
//   sk-sb-<key id>-<secret><check>
//
// the key id a ULID (26 characters of Crockford's base32: the id that
// `sbadmin list-keys` shows and `revoke-key` takes), the secret 32 lower-case
// hex digits (128 random bits), the check 8 hex digits: the CRC-32 of
// everything before it. The fixed prefix lets secret scanners recognise a
// leaked key; the check lets the gateway refuse a mistyped or made-up key
// without asking the database.
//
// Keys made before the check existed (`sk-sb-<key id>-<48 hex digits>`) are
// still accepted, as kLegacy: they are looked up like any other.
#pragma once

#include <string>
#include <string_view>

namespace sb {

enum class KeyShape {
  kValid,        // well formed, and the check matches
  kLegacy,       // the shape of a key made before the check existed
  kMalformed,    // not a Switchboard key at all
  kBadChecksum,  // the shape is right, the check is not: a typo, or made up
};

struct ParsedKey {
  KeyShape shape = KeyShape::kMalformed;
  std::string key_id;  // set for kValid and kLegacy
};

ParsedKey ParseApiKey(std::string_view key);

// A key from its id and 32 hex digits of secret.
std::string FormatApiKey(std::string_view key_id, std::string_view secret_hex);

// CRC-32 (IEEE 802.3, as zlib computes it).
uint32_t Crc32(std::string_view data);

}  // namespace sb
