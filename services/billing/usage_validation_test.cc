// UsageValidator without Kafka or a database: signatures, parsing and every
// reason an event is refused.
#include "billing/usage_validation.h"

#include "gtest/gtest.h"

namespace sb::billing {
namespace {

namespace bpb = switchboard::billing::v1;

class FixedClock final : public Clock {
 public:
  absl::Time Now() const override { return absl::FromUnixMillis(1'795'000'000'000); }
};

bpb::UsageEvent Valid() {
  bpb::UsageEvent e;
  e.set_request_id("req-1");
  e.set_org_id("acme");
  e.set_model("sim-small");
  e.set_worker_id("w1");
  e.set_input_tokens(12);
  e.set_output_tokens(34);
  e.set_stop_reason("end_turn");
  e.set_at_unix_ms(1'795'000'000'000 - 5'000);
  return e;
}

class UsageValidatorTest : public ::testing::Test {
 protected:
  UsageValidatorTest()
      : signer_(*MessageSigner::FromKeys({std::string(64, 'k')})),
        validator_(signer_, UsageLimits{}, clock_) {}

  KafkaMessage Signed(const std::string& key, const std::string& value) const {
    KafkaMessage m{.topic = "usage.events", .key = key, .value = value};
    m.headers = {{kSignatureHeader, signer_.Sign(key, value)}};
    return m;
  }
  KafkaMessage Signed(const bpb::UsageEvent& e) const {
    return Signed(e.request_id(), e.SerializeAsString());
  }
  std::optional<Rejection> Verdict(const bpb::UsageEvent& e) const {
    return validator_.Check(Signed(e)).rejection;
  }

  FixedClock clock_;
  MessageSigner signer_;
  UsageValidator validator_;
};

TEST_F(UsageValidatorTest, ASignedPlausibleEventIsAccepted) {
  const CheckedUsage checked = validator_.Check(Signed(Valid()));
  EXPECT_FALSE(checked.rejection.has_value());
  EXPECT_EQ(checked.event.org_id(), "acme");
  EXPECT_EQ(checked.event.output_tokens(), 34);
  // Zero tokens is possible (a request cancelled before its first token).
  bpb::UsageEvent zero = Valid();
  zero.set_input_tokens(0);
  zero.set_output_tokens(0);
  EXPECT_EQ(Verdict(zero), std::nullopt);
  // So is usage up to the limits, and an empty model: still billed.
  bpb::UsageEvent big = Valid();
  big.set_input_tokens(2'000'000);
  big.set_output_tokens(1'000'000);
  big.clear_model();
  EXPECT_EQ(Verdict(big), std::nullopt);
}

TEST_F(UsageValidatorTest, UnsignedOrForgedEventsAreRefusedBeforeParsing) {
  const bpb::UsageEvent e = Valid();
  KafkaMessage unsigned_msg{.key = e.request_id(), .value = e.SerializeAsString()};
  const CheckedUsage checked = validator_.Check(unsigned_msg);
  EXPECT_EQ(checked.rejection, Rejection::kSignature);
  EXPECT_TRUE(checked.event.org_id().empty()) << "not parsed";

  KafkaMessage wrong = Signed(e);
  wrong.headers = {{kSignatureHeader, std::string(64, '0')}};
  EXPECT_EQ(validator_.Check(wrong).rejection, Rejection::kSignature);

  // Signed by someone with another key.
  const MessageSigner other = *MessageSigner::FromKeys({std::string(64, 'x')});
  KafkaMessage foreign = Signed(e);
  foreign.headers = {{kSignatureHeader, other.Sign(foreign.key, foreign.value)}};
  EXPECT_EQ(validator_.Check(foreign).rejection, Rejection::kSignature);

  // A valid signature moved onto a changed value.
  bpb::UsageEvent more = e;
  more.set_input_tokens(1);
  KafkaMessage tampered = Signed(e);
  tampered.value = more.SerializeAsString();
  EXPECT_EQ(validator_.Check(tampered).rejection, Rejection::kSignature);

  // The same signature under another header name does not count.
  KafkaMessage renamed = Signed(e);
  renamed.headers[0].first = "signature";
  EXPECT_EQ(validator_.Check(renamed).rejection, Rejection::kSignature);
}

TEST_F(UsageValidatorTest, RefusesWhatCannotBeTrue) {
  auto with = [](auto change) {
    bpb::UsageEvent e = Valid();
    change(e);
    return e;
  };
  EXPECT_EQ(Verdict(with([](auto& e) { e.set_input_tokens(-1); })), Rejection::kNegativeTokens);
  EXPECT_EQ(Verdict(with([](auto& e) { e.set_output_tokens(-500); })), Rejection::kNegativeTokens);
  EXPECT_EQ(Verdict(with([](auto& e) { e.set_input_tokens(2'000'001); })),
            Rejection::kTooManyTokens);
  EXPECT_EQ(Verdict(with([](auto& e) { e.set_output_tokens(1'000'001); })),
            Rejection::kTooManyTokens);
  EXPECT_EQ(Verdict(with([](auto& e) { e.set_cache_read_tokens(-1); })),
            Rejection::kNegativeTokens);
  // Cached tokens are part of the input: never more than it.
  EXPECT_EQ(Verdict(with([](auto& e) {
              e.set_input_tokens(100);
              e.set_cache_read_tokens(60);
              e.set_cache_write_tokens(41);
            })),
            Rejection::kTooManyTokens);
  EXPECT_FALSE(Verdict(with([](auto& e) {
                 e.set_input_tokens(100);
                 e.set_cache_read_tokens(60);
                 e.set_cache_write_tokens(40);
               })).has_value());
  EXPECT_EQ(Verdict(with([](auto& e) { e.clear_org_id(); })), Rejection::kEmptyOrg);
  EXPECT_EQ(Verdict(with([](auto& e) { e.clear_request_id(); })), Rejection::kEmptyRequestId);
  EXPECT_EQ(Verdict(with([](auto& e) { e.set_at_unix_ms(0); })), Rejection::kBadTimestamp);
  EXPECT_EQ(Verdict(with([](auto& e) { e.set_at_unix_ms(-1); })), Rejection::kBadTimestamp);
  // Two hours ahead of billing's clock; an hour of skew is tolerated.
  EXPECT_EQ(Verdict(with([](auto& e) { e.set_at_unix_ms(1'795'000'000'000 + 7'200'000); })),
            Rejection::kBadTimestamp);
  EXPECT_EQ(Verdict(with([](auto& e) { e.set_at_unix_ms(1'795'000'000'000 + 3'000'000); })),
            std::nullopt);
  EXPECT_EQ(Verdict(with([](auto& e) { e.set_org_id(std::string(kMaxIdLength + 1, 'o')); })),
            Rejection::kMalformed);
}

TEST_F(UsageValidatorTest, ASignedMessageThatIsNotAUsageEventIsMalformed) {
  EXPECT_EQ(validator_.Check(Signed("junk", "\xff\xff not a protobuf")).rejection,
            Rejection::kMalformed);
}

TEST_F(UsageValidatorTest, LimitsComeFromTheOptions) {
  const UsageValidator strict(signer_, {.max_input_tokens = 10, .max_output_tokens = 100}, clock_);
  bpb::UsageEvent e = Valid();
  e.set_input_tokens(11);
  e.set_output_tokens(1);
  EXPECT_EQ(strict.Check(Signed(e)).rejection, Rejection::kTooManyTokens);
  e.set_input_tokens(10);
  e.set_output_tokens(101);
  EXPECT_EQ(strict.Check(Signed(e)).rejection, Rejection::kTooManyTokens);
  e.set_output_tokens(100);
  EXPECT_EQ(strict.Check(Signed(e)).rejection, std::nullopt);
}

TEST(RejectionReasonTest, LabelsAreStable) {
  // Dashboards and alerts select on these.
  EXPECT_EQ(RejectionReason(Rejection::kSignature), "signature");
  EXPECT_EQ(RejectionReason(Rejection::kMalformed), "malformed");
  EXPECT_EQ(RejectionReason(Rejection::kEmptyRequestId), "empty_request_id");
  EXPECT_EQ(RejectionReason(Rejection::kEmptyOrg), "empty_org");
  EXPECT_EQ(RejectionReason(Rejection::kNegativeTokens), "negative_tokens");
  EXPECT_EQ(RejectionReason(Rejection::kTooManyTokens), "too_many_tokens");
  EXPECT_EQ(RejectionReason(Rejection::kBadTimestamp), "bad_timestamp");
  EXPECT_EQ(RejectionReason(Rejection::kConstraint), "constraint");
}

}  // namespace
}  // namespace sb::billing
