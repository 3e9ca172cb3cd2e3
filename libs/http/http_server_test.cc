#include "http/http_server.h"

#include <atomic>
#include <future>
#include <thread>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>

#include "gtest/gtest.h"
#include "core/thread_pool.h"
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

  auto r = Fetch({.port = server.port(),
                  .method = "POST",
                  .target = "/echo?a=1&q=hi",
                  .headers = {{"X-Test", "yes"}},
                  .body = "payload"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "POST hi yes payload");

  std::string streamed;
  auto s = FetchStreaming({.port = server.port(), .target = "/stream"}, [&](std::string_view d) {
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
  auto r = Fetch(
      {.port = server.port(), .method = "POST", .target = "/", .body = std::string(100, 'x')});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, 413);
  EXPECT_NE(r->body.find("\"type\":\"request_too_large\""), std::string::npos) << r->body;
}

// A client that leaves while the handler is still working is noticed at
// once, before any byte of the response is written.
TEST(HttpServerTest, ClientGoneIsReportedWhileTheHandlerWorks) {
  std::promise<void> gone;
  std::shared_ptr<Exchange> held;
  std::mutex mu;
  Server server({}, [&](std::shared_ptr<Exchange> ex) {
    ex->OnClientGone([&gone, ex] {
      gone.set_value();
      ex->Respond(500, {}, "nobody reads this");
    });
    std::lock_guard<std::mutex> lock(mu);
    held = ex;  // no response yet: the handler "works"
  });
  ASSERT_TRUE(server.Start().ok());

  boost::asio::io_context io;
  boost::asio::ip::tcp::socket socket(io);
  socket.connect(
      {boost::asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(server.port())});
  const std::string request = "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n";
  boost::asio::write(socket, boost::asio::buffer(request));
  for (int i = 0; i < 200; ++i) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (held) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  socket.close();
  EXPECT_EQ(gone.get_future().wait_for(std::chrono::seconds(5)), std::future_status::ready);
}

// A client that sends its request and closes its side at once (the FIN
// arrives with the request, so no new readiness follows) is noticed too.
TEST(HttpServerTest, ARequestSentWithItsFinIsAGoneClient) {
  std::promise<void> gone;
  std::mutex mu;
  std::shared_ptr<Exchange> held;
  Server server({}, [&](std::shared_ptr<Exchange> ex) {
    std::lock_guard<std::mutex> lock(mu);
    held = ex;
    ex->OnClientGone([&gone] { gone.set_value(); });
  });
  ASSERT_TRUE(server.Start().ok());
  boost::asio::io_context io;
  boost::asio::ip::tcp::socket socket(io);
  socket.connect(
      {boost::asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(server.port())});
  boost::asio::write(socket,
                     boost::asio::buffer(std::string("GET /x HTTP/1.1\r\nHost: x\r\n\r\n")));
  socket.shutdown(boost::asio::ip::tcp::socket::shutdown_send);
  EXPECT_EQ(gone.get_future().wait_for(std::chrono::seconds(5)), std::future_status::ready);
  std::lock_guard<std::mutex> lock(mu);
  held->Respond(200, {}, "late");
}

// Keep-alive: the watch of one exchange ends with it and does not fire for
// a client that simply sends its next request on the same connection.
TEST(HttpServerTest, KeepAliveRequestsAreNotMistakenForAGoneClient) {
  std::atomic<int> gone{0};
  Server server({}, [&](std::shared_ptr<Exchange> ex) {
    ex->OnClientGone([&gone] { ++gone; });
    ex->Respond(200, {}, "ok");
  });
  ASSERT_TRUE(server.Start().ok());
  boost::asio::io_context io;
  boost::asio::ip::tcp::socket socket(io);
  socket.connect(
      {boost::asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(server.port())});
  // Two pipelined requests in one write.
  const std::string two = "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n";
  boost::asio::write(socket, boost::asio::buffer(two));
  std::string got;
  char buf[512];
  while (got.find("ok", got.find("ok") + 1) == std::string::npos) {
    boost::system::error_code ec;
    const size_t n = socket.read_some(boost::asio::buffer(buf), ec);
    if (ec) break;
    got.append(buf, n);
  }
  EXPECT_EQ(got.find("HTTP/1.1 200"), 0u) << got;
  EXPECT_NE(got.rfind("HTTP/1.1 200"), 0u) << "both requests answered: " << got;
  EXPECT_EQ(gone.load(), 0);
}

// Under load a readiness event can be stale (edge-triggered epoll reports
// data that a speculative read already took): the watch for a gone client
// must not take that for the client leaving. Many clients, each sending
// its request in two pieces, to handlers that answer a moment later.
TEST(HttpServerTest, StaleReadinessIsNotMistakenForAGoneClient) {
  std::atomic<int> gone{0};
  ThreadPool slow(4, 10000);
  Server server({.threads = 2}, [&](std::shared_ptr<Exchange> ex) {
    ex->OnClientGone([&gone] { ++gone; });
    slow.Submit([ex] {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      ex->Respond(200, {}, "ok");
    });
  });
  ASSERT_TRUE(server.Start().ok());
  std::atomic<int> answered{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 32; ++t) {
    clients.emplace_back([&] {
      for (int i = 0; i < 40; ++i) {
        boost::asio::io_context io;
        boost::asio::ip::tcp::socket socket(io);
        socket.connect({boost::asio::ip::make_address("127.0.0.1"),
                        static_cast<unsigned short>(server.port())});
        socket.set_option(boost::asio::ip::tcp::no_delay(true));
        const std::string head = "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n";
        boost::asio::write(socket, boost::asio::buffer(head));
        boost::asio::write(socket, boost::asio::buffer(std::string("hello")));
        std::string got;
        char buf[256];
        boost::system::error_code ec;
        while (got.find("ok") == std::string::npos && !ec) {
          const size_t n = socket.read_some(boost::asio::buffer(buf), ec);
          got.append(buf, n);
        }
        if (got.find("HTTP/1.1 200") == 0) ++answered;
      }
    });
  }
  for (auto& c : clients) c.join();
  EXPECT_EQ(answered.load(), 32 * 40);
  EXPECT_EQ(gone.load(), 0);
}

}  // namespace
}  // namespace sb::http
