#include "core/lease_token.h"

#include <charconv>
#include <vector>

#include "core/crypto.h"

namespace sb {

namespace {

constexpr size_t kMacBytes = 16;

std::string Mac(std::string_view key, const LeaseClaims& c, std::string_view worker_id,
                std::string_view request_id) {
  // Lengths first: no two different field tuples give the same input.
  std::string data = "sb-lease-v1|" + c.scheduler_id + "|" + std::to_string(c.sequence) + "|" +
                     std::to_string(c.expires_unix_ms) + "|" + std::to_string(worker_id.size()) +
                     ":";
  data.append(worker_id);
  data += "|" + std::to_string(request_id.size()) + ":";
  data.append(request_id);
  return HexEncode(HmacSha256(key, data).substr(0, kMacBytes));
}

template <typename T>
bool ParseNumber(std::string_view s, T* out) {
  if (s.empty()) return false;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && end == s.data() + s.size();
}

bool ValidId(std::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  for (char ch : id) {
    const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                    (ch >= '0' && ch <= '9') || ch == '-';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

std::string SignLease(std::string_view key, const LeaseClaims& claims, std::string_view worker_id,
                      std::string_view request_id) {
  return claims.scheduler_id + "." + std::to_string(claims.sequence) + "." +
         std::to_string(claims.expires_unix_ms) + "." + Mac(key, claims, worker_id, request_id);
}

absl::StatusOr<LeaseClaims> ParseLease(std::string_view lease) {
  std::vector<std::string_view> parts;
  for (size_t from = 0;;) {
    const size_t dot = lease.find('.', from);
    parts.push_back(lease.substr(from, dot == std::string_view::npos ? dot : dot - from));
    if (dot == std::string_view::npos || parts.size() > 4) break;
    from = dot + 1;
  }
  LeaseClaims c;
  if (parts.size() != 4 || !ValidId(parts[0]) || !ParseNumber(parts[1], &c.sequence) ||
      !ParseNumber(parts[2], &c.expires_unix_ms) || parts[3].size() != 2 * kMacBytes) {
    return absl::InvalidArgumentError("malformed lease");
  }
  c.scheduler_id = std::string(parts[0]);
  return c;
}

bool VerifyLease(std::string_view key, std::string_view lease, std::string_view worker_id,
                 std::string_view request_id) {
  auto claims = ParseLease(lease);
  if (!claims.ok()) return false;
  const std::string want = Mac(key, *claims, worker_id, request_id);
  return ConstantTimeEquals(want, lease.substr(lease.size() - want.size()));
}

}  // namespace sb
