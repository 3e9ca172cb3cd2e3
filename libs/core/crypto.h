// Hashing and randomness for secrets (OpenSSL's libcrypto).
#pragma once

#include <string>
#include <string_view>

namespace sb {

// The 32-byte SHA-256 digest of `data`.
std::string Sha256(std::string_view data);
// Lower-case hex of arbitrary bytes.
std::string HexEncode(std::string_view bytes);
// `n` bytes from a cryptographically secure generator, hex-encoded (2n chars).
std::string RandomHex(size_t n);

}  // namespace sb
