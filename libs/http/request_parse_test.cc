#include "http/request_parse.h"

#include <string>

#include "gtest/gtest.h"

namespace sb::http {
namespace {

constexpr size_t kMaxBody = 1024;

TEST(ParseRequestTest, SplitsTargetAndLowerCasesHeaders) {
  auto r = ParseRequest(
      "POST /v1/messages?beta=true&x=1 HTTP/1.1\r\nHost: a\r\nX-Api-Key: k\r\n"
      "Content-Length: 2\r\n\r\n{}",
      kMaxBody);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->method, "POST");
  EXPECT_EQ(r->target, "/v1/messages?beta=true&x=1");
  EXPECT_EQ(r->path, "/v1/messages");
  EXPECT_EQ(r->query, "beta=true&x=1");
  EXPECT_EQ(r->QueryParam("beta"), "true");
  EXPECT_EQ(r->Header("x-api-key"), "k");
  EXPECT_EQ(r->body, "{}");
}

TEST(ParseRequestTest, ReadsAChunkedBodyWhole) {
  auto r = ParseRequest(
      "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
      "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
      kMaxBody);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->body, "abcde");
}

TEST(ParseRequestTest, TheLastOfARepeatedHeaderWins) {
  auto r = ParseRequest("GET / HTTP/1.1\r\nX-A: 1\r\nx-a: 2\r\n\r\n", kMaxBody);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->Header("x-a"), "2");
}

TEST(ParseRequestTest, ABodyOverTheLimitIsResourceExhausted) {
  const std::string body(kMaxBody + 1, 'x');
  auto r = ParseRequest(
      "POST / HTTP/1.1\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body,
      kMaxBody);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(ParseRequestTest, RefusesWhatIsNotOneWholeRequest) {
  const std::string huge_header =
      "GET / HTTP/1.1\r\nX: " + std::string(kMaxHeaderBytes, 'a') + "\r\n\r\n";
  for (const std::string& wire :
       {std::string("GET / HTTP/1.1\r\nHost: a\r\n"), std::string("GET / HTTP/1.1\r\n\r\nGET"),
        std::string("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab"), std::string("GET /\r\n\r\n"),
        huge_header}) {
    EXPECT_EQ(ParseRequest(wire, kMaxBody).status().code(), absl::StatusCode::kInvalidArgument)
        << wire.substr(0, 40);
  }
}

// Found by tests/fuzz/http_request on its first input: Beast's put_eof
// must not be called before any byte arrived, and it then "completed" an
// empty request with no method.
TEST(ParseRequestTest, EmptyInputIsNotARequest) {
  EXPECT_EQ(ParseRequest("", kMaxBody).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace sb::http
