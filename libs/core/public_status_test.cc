#include "core/public_status.h"

#include "gtest/gtest.h"

namespace sb {
namespace {

TEST(PublicStatusTest, CallerFacingMessagesAreKept) {
  const auto st = PublicStatus(absl::NotFoundError("model: sim-x"), "req_1", "generation");
  EXPECT_EQ(st, absl::NotFoundError("model: sim-x"));
  EXPECT_TRUE(PublicStatus(absl::OkStatus(), "req_1", "x").ok());
}

TEST(PublicStatusTest, InternalsAreReplacedButTheCodeIsKept) {
  const auto st = PublicStatus(
      absl::InternalError("postgres: ERROR:  invalid byte sequence for encoding \"UTF8\": 0x00"),
      "req_42", "creating the conversation");
  EXPECT_EQ(st.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(st.message(),
            "creating the conversation failed with an internal error (request req_42)");
  const auto gone = PublicStatus(
      absl::UnavailableError("worker worker-vm-1 failed: Socket closed 10.0.0.7:50055"), "r",
      "generation");
  EXPECT_EQ(gone.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(gone.message().find("worker"), std::string_view::npos);
  EXPECT_EQ(gone.message().find("10.0.0.7"), std::string_view::npos);
  const auto dup = PublicStatus(
      absl::AlreadyExistsError("duplicate key value violates unique constraint"), "r", "sending");
  EXPECT_EQ(dup.message().find("constraint"), std::string_view::npos);
}

TEST(PublicStatusTest, ABackendsExhaustionIsOverloadNotARateLimit) {
  const auto st = PublicStatus(
      absl::ResourceExhaustedError("Received message larger than max (5242880 vs. 4194304)"), "r",
      "listing messages");
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(st.message().find("4194304"), std::string_view::npos);
}

}  // namespace
}  // namespace sb
