// Hashing and randomness for secrets (OpenSSL's libcrypto).
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace sb {

// The 32-byte SHA-256 digest of `data`.
std::string Sha256(std::string_view data);
// Lower-case hex of arbitrary bytes.
std::string HexEncode(std::string_view bytes);
// The bytes that `hex` spells (either case), or nullopt when it is not an
// even-length run of hex digits.
std::optional<std::string> HexDecode(std::string_view hex);
// The 32-byte HMAC-SHA256 of `data` under `key` (RFC 2104).
std::string HmacSha256(std::string_view key, std::string_view data);
// Whether `a` and `b` hold the same bytes, in time that depends only on their
// lengths: comparing a secret-derived value (a MAC) with `==` leaks, through
// timing, how many leading bytes an attacker already guessed right.
bool ConstantTimeEquals(std::string_view a, std::string_view b);
// `n` bytes from a cryptographically secure generator, hex-encoded (2n chars).
std::string RandomHex(size_t n);

}  // namespace sb
