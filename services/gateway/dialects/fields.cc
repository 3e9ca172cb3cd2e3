#include "gateway/dialects/fields.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/cord.h"

namespace sb::gateway {
namespace {

constexpr char kFieldPayload[] = "type.switchboard.dev/field";
constexpr char kLimitKindPayload[] = "type.switchboard.dev/limit-kind";
constexpr char kBillingPayload[] = "type.switchboard.dev/billing";

std::string Num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

}  // namespace

absl::Status FieldError(std::string_view field, std::string_view message) {
  absl::Status st = absl::InvalidArgumentError(std::string(field) + ": " + std::string(message));
  st.SetPayload(kFieldPayload, absl::Cord(std::string(field)));
  return st;
}

std::string ErrorField(const absl::Status& status) {
  auto payload = status.GetPayload(kFieldPayload);
  return payload ? std::string(*payload) : std::string();
}

bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 1;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n >= s.size()) return false;  // truncated
    for (size_t k = 1; k <= n; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    // Overlong forms, surrogates and values beyond Unicode are not UTF-8.
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
        (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) {
      return false;
    }
    i += n + 1;
  }
  return true;
}

absl::Status RateLimitError(std::string_view message, absl::Duration retry_after,
                            std::string_view kind) {
  absl::Status st = WithRetryAfter(absl::ResourceExhaustedError(std::string(message)), retry_after);
  st.SetPayload(kLimitKindPayload, absl::Cord(std::string(kind)));
  return st;
}

absl::Status BillingError(std::string_view message) {
  absl::Status st = absl::PermissionDeniedError(std::string(message));
  st.SetPayload(kBillingPayload, absl::Cord("1"));
  return st;
}

bool IsBillingError(const absl::Status& status) {
  return status.GetPayload(kBillingPayload).has_value();
}

std::string LimitKind(const absl::Status& status) {
  auto p = status.GetPayload(kLimitKindPayload);
  return p ? std::string(*p) : std::string();
}

absl::Status CheckText(std::string_view text, std::string_view field, size_t max_bytes) {
  if (text.size() > max_bytes) {
    return FieldError(field, "must be at most " + std::to_string(max_bytes) + " bytes");
  }
  if (text.find('\0') != std::string_view::npos)
    return FieldError(field, "must not contain NUL characters");
  if (!IsValidUtf8(text)) return FieldError(field, "must be valid UTF-8");
  return absl::OkStatus();
}

absl::StatusOr<std::string> RequiredString(const nlohmann::json& obj, const char* key,
                                           std::string_view field, size_t max_bytes) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return FieldError(field, "Field required");
  if (!it->is_string() || it->get_ref<const std::string&>().empty()) {
    return FieldError(field, "Input should be a non-empty string");
  }
  const std::string& s = it->get_ref<const std::string&>();
  if (auto st = CheckText(s, field, max_bytes); !st.ok()) return st;
  return s;
}

absl::StatusOr<std::optional<float>> OptionalNumber(const nlohmann::json& obj, const char* key,
                                                    double min, double max) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::optional<float>();
  if (!it->is_number()) return FieldError(key, "Input should be a valid number");
  const double v = it->get<double>();
  if (!(v >= min && v <= max)) {
    return FieldError(key, "Input should be between " + Num(min) + " and " + Num(max));
  }
  return std::optional<float>(static_cast<float>(v));
}

absl::StatusOr<std::optional<int64_t>> OptionalInteger(const nlohmann::json& obj, const char* key,
                                                       int64_t min, int64_t max) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::optional<int64_t>();
  if (!it->is_number_integer()) return FieldError(key, "Input should be a valid integer");
  if (it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(max)) {
    return FieldError(key, "Input should be less than or equal to " + std::to_string(max));
  }
  const int64_t v = it->get<int64_t>();
  if (v < min)
    return FieldError(key, "Input should be greater than or equal to " + std::to_string(min));
  if (v > max)
    return FieldError(key, "Input should be less than or equal to " + std::to_string(max));
  return std::optional<int64_t>(v);
}

absl::StatusOr<bool> OptionalBool(const nlohmann::json& obj, const char* key, bool fallback) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) return FieldError(key, "Input should be a valid boolean");
  return it->get<bool>();
}

}  // namespace sb::gateway
