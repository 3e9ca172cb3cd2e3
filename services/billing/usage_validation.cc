#include "billing/usage_validation.h"

namespace sb::billing {

std::string_view RejectionReason(Rejection r) {
  switch (r) {
    case Rejection::kSignature:
      return "signature";
    case Rejection::kMalformed:
      return "malformed";
    case Rejection::kEmptyRequestId:
      return "empty_request_id";
    case Rejection::kEmptyOrg:
      return "empty_org";
    case Rejection::kNegativeTokens:
      return "negative_tokens";
    case Rejection::kTooManyTokens:
      return "too_many_tokens";
    case Rejection::kBadTimestamp:
      return "bad_timestamp";
    case Rejection::kConstraint:
      return "constraint";
  }
  return "unknown";
}

CheckedUsage UsageValidator::Check(const KafkaMessage& message) const {
  CheckedUsage out;
  auto refuse = [&](Rejection r) {
    out.rejection = r;
    return out;
  };
  if (!signer_.Verify(message.key, message.value, message.Header(kSignatureHeader))) {
    return refuse(Rejection::kSignature);
  }
  if (!out.event.ParseFromString(message.value)) return refuse(Rejection::kMalformed);
  const auto& e = out.event;
  for (const std::string* id : {&e.request_id(), &e.org_id(), &e.model(), &e.worker_id(),
                                &e.end_user_id(), &e.source(), &e.stop_reason(), &e.api_key_id()}) {
    if (id->size() > kMaxIdLength) return refuse(Rejection::kMalformed);
  }
  if (e.request_id().empty()) return refuse(Rejection::kEmptyRequestId);
  if (e.org_id().empty()) return refuse(Rejection::kEmptyOrg);
  if (e.input_tokens() < 0 || e.output_tokens() < 0 || e.cache_read_tokens() < 0 ||
      e.cache_write_tokens() < 0) {
    return refuse(Rejection::kNegativeTokens);
  }
  // The cached tokens are part of the input.
  if (e.input_tokens() > limits_.max_input_tokens ||
      e.output_tokens() > limits_.max_output_tokens ||
      static_cast<int64_t>(e.cache_read_tokens()) + e.cache_write_tokens() > e.input_tokens()) {
    return refuse(Rejection::kTooManyTokens);
  }
  const absl::Time at = absl::FromUnixMillis(e.at_unix_ms());
  if (e.at_unix_ms() <= 0 || at > clock_.Now() + limits_.max_clock_skew) {
    return refuse(Rejection::kBadTimestamp);
  }
  return out;
}

}  // namespace sb::billing
