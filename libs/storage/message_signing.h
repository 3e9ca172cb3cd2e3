// Authenticity of bus messages: an HMAC-SHA256, keyed by a secret that only
// the producers and consumers of a topic hold, over a message's key and value,
// carried hex-encoded in the `sb-signature` header. Anyone who can reach the
// brokers can still produce; only a holder of the key can produce a message
// that a verifying consumer accepts. A replayed message verifies (it is the
// same bytes), so consumers stay idempotent on their own ids.
//
//   SB_ASSIGN_OR_RETURN(auto signer, MessageSigner::FromKeyFile(path));
//   producer.Publish(topic, key, value, {{kSignatureHeader, signer.Sign(key, value)}});
//   ...
//   if (!signer.Verify(msg.key, msg.value, msg.Header(kSignatureHeader))) { /* refuse */ }
//
// The MAC covers the 8-byte big-endian length of the key, the key, then the
// value, so that no bytes can move between key and value unnoticed.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/status/statusor.h"

ABSL_DECLARE_FLAG(std::string, usage_signing_key_file);

namespace sb {

inline constexpr char kSignatureHeader[] = "sb-signature";

class MessageSigner {
 public:
  // A key shorter than this is refused: it could be guessed.
  static constexpr size_t kMinKeyLength = 32;

  // Keys from a file of one key per line (surrounding whitespace and blank
  // lines ignored; `openssl rand -hex 32` makes one). The first key signs;
  // every key verifies, so that a new key can be rolled out to consumers
  // before producers sign with it. The key is the line's text itself.
  // NotFound / PermissionDenied when the file cannot be read;
  // InvalidArgument when it holds no key or a key that is too short.
  static absl::StatusOr<MessageSigner> FromKeyFile(const std::string& path);
  // The same from keys in memory (first signs).
  static absl::StatusOr<MessageSigner> FromKeys(std::vector<std::string> keys);

  // Lower-case hex of the MAC of (key, value) under the first key.
  std::string Sign(std::string_view key, std::string_view value) const;
  // True when `signature` is the hex MAC of (key, value) under one of the
  // keys. Compared in constant time; a missing or non-hex signature is false.
  bool Verify(std::string_view key, std::string_view value,
              const std::optional<std::string>& signature) const;

 private:
  explicit MessageSigner(std::vector<std::string> keys) : keys_(std::move(keys)) {}

  std::vector<std::string> keys_;
};

// The signer of usage events, from --usage_signing_key_file (which the
// inference workers and billing share): InvalidArgument naming the flag when
// it is not set, the file's own error (prefixed with the flag) otherwise.
// Both fail closed on it: billing could not tell usage from a forgery, and a
// worker would serve for free.
absl::StatusOr<MessageSigner> UsageSignerFromFlags();

}  // namespace sb
