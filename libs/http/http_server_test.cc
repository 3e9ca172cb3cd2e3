#include "http/http_server.h"

#include <sys/socket.h>
#include <sys/time.h>

#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <cerrno>
#include <functional>
#include <future>
#include <mutex>
#include <thread>

#include "core/metrics.h"
#include "core/thread_pool.h"
#include "gtest/gtest.h"
#include "http/http_client.h"
#include "testing/raw_client.h"

namespace sb::http {
namespace {

using sb::testing::RawClient;

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

// A handler may still hold an exchange when the server goes away (the
// gateway's contexts sit in a pool queue): releasing it afterwards must not
// touch the server's freed event loop (it did: a heap corruption, seen as
// "malloc(): mismatching next->prev_size", and by valgrind every time).
TEST(HttpServerTest, AnExchangeMayOutliveItsServer) {
  std::shared_ptr<Exchange> held;
  std::promise<void> got;
  {
    Server server({}, [&](std::shared_ptr<Exchange> ex) {
      held = ex;
      got.set_value();
    });
    ASSERT_TRUE(server.Start().ok());
    RawClient c(server.port());
    c.Send("GET /x HTTP/1.1\r\nHost: x\r\n\r\n");
    ASSERT_EQ(got.get_future().wait_for(std::chrono::seconds(5)), std::future_status::ready);
  }
  held->Respond(200, {}, "nobody reads this");  // a no-op now, not a crash
  held.reset();
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

// Waits (up to 1 s) until a handler has put an exchange in `held`.
void WaitUntilHeld(std::mutex& mu, const std::vector<std::shared_ptr<Exchange>>& held) {
  for (int i = 0; i < 200; ++i) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (!held.empty()) return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

// The status of `fetch` once it stops being 503 (a slot or bytes given
// back a moment after the client read the answer that freed them), or the
// last status after 2 s.
int StatusOnceFree(const std::function<absl::StatusOr<Response>()>& fetch) {
  int status = -1;
  for (int i = 0; i < 200; ++i) {
    auto r = fetch();
    status = r.ok() ? r->status : -1;
    if (status != 503) return status;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return status;
}

// With defer_body, a handler answers from the headers alone: a client that
// declared a body and never sends it still gets its answer at once, and the
// connection closes (the unread body cannot be skipped).
TEST(HttpServerEdgeTest, DeferredBodyLetsAHandlerRefuseFromTheHeaders) {
  std::atomic<int> handled{0};
  Server server({.defer_body = true}, [&](std::shared_ptr<Exchange> ex) {
    ++handled;
    ex->Respond(401, {{"content-type", "application/json"}}, "no key");
  });
  ASSERT_TRUE(server.Start().ok());
  RawClient c(server.port());
  c.Send("POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n");
  bool closed = false;
  const std::string got = c.ReadToClose(&closed);
  EXPECT_EQ(got.rfind("HTTP/1.1 401", 0), 0u) << got;
  EXPECT_NE(got.find("Connection: close"), std::string::npos) << got;
  EXPECT_TRUE(closed);
  EXPECT_EQ(handled.load(), 1);
}

TEST(HttpServerEdgeTest, DeferredBodyIsReadOnRequest) {
  Server server({.defer_body = true}, [](std::shared_ptr<Exchange> ex) {
    const bool before = ex->request().body.empty();
    ex->ReadBody([ex, before](absl::Status st) {
      ex->Respond(st.ok() ? 200 : 500, {},
                  std::string(before ? "empty-before " : "full-before ") + ex->request().body +
                      " from " + ex->request().client_ip);
    });
  });
  ASSERT_TRUE(server.Start().ok());
  auto r = Fetch({.port = server.port(), .method = "POST", .target = "/", .body = "payload"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "empty-before payload from 127.0.0.1");
}

// Slowloris: headers that never finish are cut off at the header deadline
// (they used to be allowed two minutes).
TEST(HttpServerEdgeTest, UnfinishedHeadersAreCutOffAtTheDeadline) {
  Server server({.header_timeout = std::chrono::milliseconds(200)},
                [](std::shared_ptr<Exchange> ex) { ex->Respond(200, {}, "ok"); });
  ASSERT_TRUE(server.Start().ok());
  RawClient c(server.port());
  c.Send("GET / HTTP/1.1\r\nHost: x\r\n");  // ...and nothing more
  bool closed = false;
  EXPECT_EQ(c.ReadToClose(&closed), "");
  EXPECT_TRUE(closed) << "the server should have closed the connection within 5 s";
}

// A body slower than the minimum rate fails with DeadlineExceeded; one at
// a fine pace, paced over longer than body_timeout, succeeds.
TEST(HttpServerEdgeTest, ABodyBelowTheMinimumRateIsCutOff) {
  std::promise<absl::Status> slow_result;
  Server server(
      {.defer_body = true, .body_timeout = std::chrono::milliseconds(300), .min_body_rate = 1000},
      [&](std::shared_ptr<Exchange> ex) {
        ex->ReadBody([ex, &slow_result](absl::Status st) {
          if (ex->request().path == "/slow") slow_result.set_value(st);
          ex->Respond(st.ok() ? 200 : HttpStatusOfBodyError(st), {}, "done");
        });
      });
  ASSERT_TRUE(server.Start().ok());

  RawClient slow(server.port());
  slow.Send("POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n0123456789");
  auto f = slow_result.get_future();
  ASSERT_EQ(f.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  EXPECT_EQ(f.get().code(), absl::StatusCode::kDeadlineExceeded);

  // 600 bytes in 6 pieces, 100 ms apart: 0.5 s in all, longer than the
  // 300 ms base allowance, but each piece earns 100 ms more.
  RawClient paced(server.port());
  paced.Send("POST /paced HTTP/1.1\r\nHost: x\r\nContent-Length: 600\r\n\r\n");
  for (int i = 0; i < 6; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    paced.Send(std::string(100, 'x'));
  }
  EXPECT_EQ(paced.ReadResponse().rfind("HTTP/1.1 200", 0), 0u);
}

TEST(HttpServerEdgeTest, ConnectionsPerClientAddressAreCapped) {
  Server server({.max_connections_per_ip = 2},
                [](std::shared_ptr<Exchange> ex) { ex->Respond(200, {}, "ok"); });
  ASSERT_TRUE(server.Start().ok());
  auto a = std::make_unique<RawClient>(server.port());
  RawClient b(server.port());
  // Both are open (a request on each is answered), so a third is refused.
  a->Send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  b.Send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(a->ReadResponse().rfind("HTTP/1.1 200", 0), 0u);
  EXPECT_EQ(b.ReadResponse().rfind("HTTP/1.1 200", 0), 0u);
  {
    RawClient third(server.port());
    const std::string got = third.ReadToClose();
    EXPECT_EQ(got.rfind("HTTP/1.1 503", 0), 0u) << got;
  }
  // A closed connection gives its slot back.
  a.reset();
  for (int i = 0; i < 100; ++i) {
    auto r = Fetch({.port = server.port(), .target = "/"});
    if (r.ok() && r->status == 200) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ADD_FAILURE() << "the slot of a closed connection never came back";
}

TEST(HttpServerEdgeTest, TotalConnectionsAreCapped) {
  Server server({.max_connections = 1},
                [](std::shared_ptr<Exchange> ex) { ex->Respond(200, {}, "ok"); });
  ASSERT_TRUE(server.Start().ok());
  RawClient first(server.port());
  first.Send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(first.ReadResponse().rfind("HTTP/1.1 200", 0), 0u);
  RawClient second(server.port());
  EXPECT_EQ(second.ReadToClose().rfind("HTTP/1.1 503", 0), 0u);
}

// Requests the handler has not finished answering count against the cap;
// one over it gets 503 until a slot frees up.
TEST(HttpServerEdgeTest, RequestsInFlightAreCapped) {
  std::mutex mu;
  std::vector<std::shared_ptr<Exchange>> held;
  Server server({.max_requests_in_flight = 1}, [&](std::shared_ptr<Exchange> ex) {
    if (ex->request().path == "/hold") {
      std::lock_guard<std::mutex> lock(mu);
      held.push_back(ex);
      return;
    }
    ex->Respond(200, {}, "ok");
  });
  ASSERT_TRUE(server.Start().ok());
  RawClient holder(server.port());
  holder.Send("GET /hold HTTP/1.1\r\nHost: x\r\n\r\n");
  WaitUntilHeld(mu, held);
  auto refused = Fetch({.port = server.port(), .target = "/"});
  ASSERT_TRUE(refused.ok()) << refused.status();
  EXPECT_EQ(refused->status, 503);
  EXPECT_EQ(refused->headers["retry-after"], "1");
  {
    std::lock_guard<std::mutex> lock(mu);
    held[0]->Respond(200, {}, "held");
  }
  EXPECT_EQ(holder.ReadResponse().rfind("HTTP/1.1 200", 0), 0u);
  // The slot is given back once the server has seen its write complete,
  // which can be just after the client has read it.
  EXPECT_EQ(StatusOnceFree([&] { return Fetch({.port = server.port(), .target = "/"}); }), 200);
}

// Bodies buffered at once are capped over all connections: a body that
// does not fit is refused before it is read; once the other is answered,
// the same body fits.
TEST(HttpServerEdgeTest, BufferedBodyBytesAreCappedInTotal) {
  std::mutex mu;
  std::vector<std::shared_ptr<Exchange>> held;
  Server server({.max_buffered_bytes = 1500}, [&](std::shared_ptr<Exchange> ex) {
    if (ex->request().path == "/hold") {
      std::lock_guard<std::mutex> lock(mu);
      held.push_back(ex);
      return;
    }
    ex->Respond(200, {}, std::to_string(ex->request().body.size()));
  });
  ASSERT_TRUE(server.Start().ok());
  RawClient holder(server.port());
  holder.Send("POST /hold HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" +
              std::string(1000, 'a'));
  WaitUntilHeld(mu, held);
  auto refused = Fetch(
      {.port = server.port(), .method = "POST", .target = "/", .body = std::string(1000, 'b')});
  ASSERT_TRUE(refused.ok()) << refused.status();
  EXPECT_EQ(refused->status, 503);
  EXPECT_NE(refused->body.find("overloaded_error"), std::string::npos) << refused->body;
  {
    std::lock_guard<std::mutex> lock(mu);
    held[0]->Respond(200, {}, "held");
  }
  EXPECT_EQ(holder.ReadResponse().rfind("HTTP/1.1 200", 0), 0u);
  std::string fits_body;
  EXPECT_EQ(StatusOnceFree([&] {
              auto r = Fetch({.port = server.port(),
                              .method = "POST",
                              .target = "/",
                              .body = std::string(1000, 'b')});
              if (r.ok()) fits_body = r->body;
              return r;
            }),
            200);
  EXPECT_EQ(fits_body, "1000");
}

// "Expect: 100-continue": the client is asked for its body when the
// handler reads it, and never when the handler refuses from the headers.
TEST(HttpServerEdgeTest, AClientWaitingForContinueIsAskedOnlyWhenTheBodyIsWanted) {
  Server server({.defer_body = true}, [](std::shared_ptr<Exchange> ex) {
    if (ex->request().path == "/refuse") {
      ex->Respond(401, {}, "no");
      return;
    }
    ex->ReadBody([ex](absl::Status st) {
      ex->Respond(st.ok() ? 200 : 500, {}, std::to_string(ex->request().body.size()));
    });
  });
  ASSERT_TRUE(server.Start().ok());
  RawClient wanted(server.port());
  wanted.Send(
      "POST /read HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
  const std::string asked = wanted.ReadUntil("\r\n\r\n");
  EXPECT_EQ(asked.rfind("HTTP/1.1 100 Continue\r\n\r\n", 0), 0u) << asked;
  wanted.Send("hello");
  const std::string answer = wanted.ReadResponse();
  EXPECT_EQ(answer.rfind("HTTP/1.1 200", 0), 0u) << answer;
  EXPECT_NE(answer.find("\r\n\r\n5"), std::string::npos) << answer;

  RawClient refused(server.port());
  refused.Send(
      "POST /refuse HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
  const std::string got = refused.ReadResponse();
  EXPECT_EQ(got.rfind("HTTP/1.1 401", 0), 0u) << "no 100 for a refused request: " << got;
}

TEST(HttpServerEdgeTest, RefusalsAreCountedPerListener) {
  // A listener of its own each run: the registry is the process's.
  static int run = 0;
  const std::string listener = "edge_test_" + std::to_string(++run);
  Server server({.max_connections = 1, .metrics_listener = listener},
                [](std::shared_ptr<Exchange> ex) { ex->Respond(200, {}, "ok"); });
  ASSERT_TRUE(server.Start().ok());
  RawClient first(server.port());
  first.Send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  first.ReadResponse();
  RawClient second(server.port());
  second.ReadToClose();
  const std::string text = metrics::Default().Render();
  EXPECT_NE(
      text.find("sb_http_refused_total{listener=\"" + listener + "\",reason=\"connections\"} 1"),
      std::string::npos)
      << text;
  EXPECT_NE(text.find("sb_http_connections{listener=\"" + listener + "\"} 1"), std::string::npos)
      << text;
}

}  // namespace
}  // namespace sb::http
