#include "http/http_server.h"

#include <thread>

#include "gtest/gtest.h"
#include "http/http_client.h"

namespace sb::http {
namespace {

TEST(HttpServerTest, WholeAndStreamedResponses) {
  Server server({}, [](std::shared_ptr<Exchange> ex) {
    if (ex->request().path == "/echo") {
      ex->Respond(200, {{"content-type", "text/plain"}},
                  ex->request().method + " " + ex->request().QueryParam("q") + " " +
                      ex->request().Header("x-test") + " " + ex->request().body);
      return;
    }
    // Three chunks, each written only after the previous one completed.
    ex->StartStream(200, {{"content-type", "text/event-stream"}});
    auto step = std::make_shared<std::function<void(int)>>();
    *step = [ex, step](int i) {
      if (i == 3) {
        ex->EndStream();
        *step = nullptr;  // break the cycle
        return;
      }
      ex->Write("chunk" + std::to_string(i) + "\n", [step, i](bool ok) {
        if (ok && *step) (*step)(i + 1);
      });
    };
    (*step)(0);
  });
  ASSERT_TRUE(server.Start().ok());

  auto r = Fetch({.port = server.port(), .method = "POST", .target = "/echo?a=1&q=hi",
                  .headers = {{"X-Test", "yes"}}, .body = "payload"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "POST hi yes payload");

  std::string streamed;
  auto s = FetchStreaming({.port = server.port(), .target = "/stream"},
                          [&](std::string_view d) {
                            streamed.append(d);
                            return true;
                          });
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->headers["transfer-encoding"], "chunked");
  EXPECT_EQ(streamed, "chunk0\nchunk1\nchunk2\n");
}

TEST(HttpServerTest, OversizedBodyIs413InErrorFormat) {
  Server server({.max_body_bytes = 10},
                [](std::shared_ptr<Exchange> ex) { ex->Respond(200, {}, "unexpected"); });
  ASSERT_TRUE(server.Start().ok());
  auto r = Fetch({.port = server.port(), .method = "POST", .target = "/", .body = std::string(100, 'x')});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, 413);
  EXPECT_NE(r->body.find("\"type\":\"request_too_large\""), std::string::npos) << r->body;
}

}  // namespace
}  // namespace sb::http
