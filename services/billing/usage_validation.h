// What billing accepts from usage.events: a message signed by a holder of the
// usage signing key, that parses, and that describes usage that could have
// happened. Anything else is refused with a reason; the consumer counts it,
// logs it and moves past it, and it never reaches the ledger.
//
//   UsageValidator validator(signer, UsageLimits{}, RealClock());
//   CheckedUsage checked = validator.Check(message);
//   if (checked.rejection) { /* count, log, skip */ } else { ledger.Record(checked.event, ...); }
//
// Refusing an event makes that inference free, so only what cannot be true is
// refused: an empty model, say, is still billed.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "absl/time/time.h"
#include "core/clock.h"
#include "storage/kafka.h"
#include "storage/message_signing.h"
#include "switchboard/billing/v1/billing.pb.h"

namespace sb::billing {

struct UsageLimits {
  // More tokens than any model's context window holds in one request: a bug
  // or a forgery, never usage. Defaults match --max_*_tokens_per_event.
  int64_t max_input_tokens = 2'000'000;
  int64_t max_output_tokens = 1'000'000;
  // How far in the future an event may say it happened (clock skew between
  // a worker and billing).
  absl::Duration max_clock_skew = absl::Hours(1);
};

// The label values of sb_billing_usage_events_rejected_total{reason}.
enum class Rejection {
  kSignature,  // no sb-signature header, or not this message's MAC
  kMalformed,  // not a UsageEvent, or an id longer than kMaxIdLength
  kEmptyRequestId,
  kEmptyOrg,
  kNegativeTokens,
  kTooManyTokens,  // above UsageLimits
  kBadTimestamp,   // at or before the epoch, or beyond the clock skew ahead
  kConstraint,     // the database refused the row (a CHECK constraint)
};
std::string_view RejectionReason(Rejection r);

// request_id, org_id, model, worker_id, end_user_id: ids, not documents.
inline constexpr size_t kMaxIdLength = 256;

struct CheckedUsage {
  // As far as it parsed: for the log when refused.
  switchboard::billing::v1::UsageEvent event;
  std::optional<Rejection> rejection;  // nullopt: record it
};

class UsageValidator {
 public:
  // Keeps references: `signer` and `clock` must outlive the validator.
  UsageValidator(const MessageSigner& signer, UsageLimits limits, const Clock& clock)
      : signer_(signer), limits_(limits), clock_(clock) {}

  // The signature is checked first, so an unauthenticated message is never
  // parsed beyond its header.
  CheckedUsage Check(const KafkaMessage& message) const;

 private:
  const MessageSigner& signer_;
  UsageLimits limits_;
  const Clock& clock_;
};

}  // namespace sb::billing
