// Shared request-field validation for the dialects: the documented caps on
// what a request may hold, and errors that name the field.
//
// A field error is InvalidArgument("<field>: <what is wrong>") with the
// field's path also attached as a payload, so that the OpenAI dialect can
// fill its `param` from it:
//
//   return FieldError("messages.3.content", "Input should be a valid string or list");
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/retry_after.h"

namespace sb::gateway {

// Caps (README "Limits"). JSON nesting depth (64) and the number of JSON
// values are enforced by the body parser (libs/json).
inline constexpr int kMaxOutputTokens = 64 * 1024;
inline constexpr size_t kMaxMessages = 10000;
inline constexpr size_t kMaxBlocksPerMessage = 1000;
// Blocks with cache_control in one request (Anthropic's limit).
inline constexpr int kMaxCacheBreakpoints = 4;
inline constexpr size_t kMaxStopSequences = 16;
inline constexpr size_t kMaxStopSequenceBytes = 256;
inline constexpr size_t kMaxModelIdBytes = 256;
inline constexpr size_t kMaxUserIdBytes = 256;
inline constexpr size_t kMaxIdBytes = 128;  // path ids, client message ids

absl::Status FieldError(std::string_view field, std::string_view message);
// The field a FieldError names, or "" for any other status.
std::string ErrorField(const absl::Status& status);

// A caller's own limit was hit: ResourceExhausted carrying when to retry
// (retry-after, whole seconds, at least 1) and which kind of limit it was
// ("requests" or "tokens": OpenAI's error type).
absl::Status RateLimitError(std::string_view message, absl::Duration retry_after,
                            std::string_view kind);
// The caller's budget is spent: 402 (Anthropic billing_error, OpenAI
// insufficient_quota). PermissionDenied underneath, marked.
absl::Status BillingError(std::string_view message);
bool IsBillingError(const absl::Status& status);
std::string LimitKind(const absl::Status& status);  // "" when not set

// Validators that return the value or a FieldError. `field` is the path
// used in the error.
absl::StatusOr<std::string> RequiredString(const nlohmann::json& obj, const char* key,
                                           std::string_view field, size_t max_bytes);
absl::StatusOr<std::optional<float>> OptionalNumber(const nlohmann::json& obj, const char* key,
                                                    double min, double max);
absl::StatusOr<std::optional<int64_t>> OptionalInteger(const nlohmann::json& obj, const char* key,
                                                       int64_t min, int64_t max);
absl::StatusOr<bool> OptionalBool(const nlohmann::json& obj, const char* key, bool fallback);
// Text that is not valid UTF-8, holds a NUL character, or is longer than
// max_bytes, is an error naming the field.
absl::Status CheckText(std::string_view text, std::string_view field, size_t max_bytes);
bool IsValidUtf8(std::string_view s);

}  // namespace sb::gateway
