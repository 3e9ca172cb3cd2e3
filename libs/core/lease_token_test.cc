#include "core/lease_token.h"

#include <gtest/gtest.h>

namespace sb {
namespace {

const LeaseClaims kClaims{
    .scheduler_id = "a1b2c3", .sequence = 42, .expires_unix_ms = 1700000000000};

TEST(LeaseTokenTest, RoundTrips) {
  const std::string lease = SignLease("key", kClaims, "worker-1", "req-1");
  auto parsed = ParseLease(lease);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->scheduler_id, "a1b2c3");
  EXPECT_EQ(parsed->sequence, 42u);
  EXPECT_EQ(parsed->expires_unix_ms, 1700000000000);
  EXPECT_TRUE(VerifyLease("key", lease, "worker-1", "req-1"));
}

TEST(LeaseTokenTest, BoundToKeyWorkerAndRequest) {
  const std::string lease = SignLease("key", kClaims, "worker-1", "req-1");
  EXPECT_FALSE(VerifyLease("other key", lease, "worker-1", "req-1"));
  EXPECT_FALSE(VerifyLease("key", lease, "worker-2", "req-1"));
  EXPECT_FALSE(VerifyLease("key", lease, "worker-1", "req-2"));
  // Moving a character between the ids changes the MAC.
  EXPECT_FALSE(
      VerifyLease("key", SignLease("key", kClaims, "worker-1r", "eq-1"), "worker-1", "req-1"));
}

TEST(LeaseTokenTest, TamperedClaimsFail) {
  LeaseClaims later = kClaims;
  later.expires_unix_ms += 60000;
  const std::string lease = SignLease("key", kClaims, "w", "r");
  std::string forged = SignLease("key", later, "w", "r");
  forged = forged.substr(0, forged.rfind('.')) + lease.substr(lease.rfind('.'));
  EXPECT_FALSE(VerifyLease("key", forged, "w", "r"));
}

TEST(LeaseTokenTest, MalformedLeasesAreRefused) {
  for (const char* bad :
       {"", "a.b.c.d", "x.1.2", "x.1.2.3.4", "x y.1.2.00112233445566778899aabbccddeeff",
        "x.-1.2.00112233445566778899aabbccddeeff", "x.1.2.0011"}) {
    EXPECT_FALSE(ParseLease(bad).ok()) << bad;
    EXPECT_FALSE(VerifyLease("key", bad, "w", "r")) << bad;
  }
}

}  // namespace
}  // namespace sb
