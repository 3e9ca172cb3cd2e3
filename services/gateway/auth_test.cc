#include "gateway/auth.h"

#include "core/crypto.h"
#include "gtest/gtest.h"

namespace sb::gateway {
namespace {

class FakeKeyStore : public KeyStore {
 public:
  absl::StatusOr<Principal> FindBySecretHash(const std::string& sha256) override {
    ++calls;
    if (!available) return absl::UnavailableError("down");
    if (sha256 == Sha256("sk-good")) return Principal{"k1", "org1", ""};
    return absl::NotFoundError("no");
  }
  int calls = 0;
  bool available = true;
};

const absl::Time kT0 = absl::FromUnixSeconds(1'700'000'000);

TEST(AuthenticatorTest, AcceptsKnownKeysAndCachesThem) {
  FakeKeyStore store;
  Authenticator auth(store, absl::Seconds(60), absl::Seconds(5));
  auto p = auth.Authenticate("sk-good", kT0);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->org_id, "org1");
  EXPECT_TRUE(auth.Authenticate("sk-good", kT0 + absl::Seconds(30)).ok());
  EXPECT_EQ(store.calls, 1);
  EXPECT_TRUE(auth.Authenticate("sk-good", kT0 + absl::Seconds(61)).ok());
  EXPECT_EQ(store.calls, 2);
}

TEST(AuthenticatorTest, RejectsUnknownAndMissingKeys) {
  FakeKeyStore store;
  Authenticator auth(store, absl::Seconds(60), absl::Seconds(5));
  EXPECT_EQ(auth.Authenticate("sk-bad", kT0).status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(auth.Authenticate("", kT0).status().code(), absl::StatusCode::kUnauthenticated);
}

TEST(AuthenticatorTest, StoreOutageServesKnownKeysAndRefusesOthersAsUnavailable) {
  FakeKeyStore store;
  Authenticator auth(store, absl::Seconds(60), absl::Seconds(5));
  ASSERT_TRUE(auth.Authenticate("sk-good", kT0).ok());
  store.available = false;
  EXPECT_TRUE(auth.Authenticate("sk-good", kT0 + absl::Minutes(5)).ok());
  EXPECT_EQ(auth.Authenticate("sk-other", kT0).status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace sb::gateway
