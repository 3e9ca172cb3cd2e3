#include "http/async_client.h"

#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

#include "gtest/gtest.h"

namespace sb::http {
namespace {

using namespace std::chrono_literals;

// Records one call; Wait() blocks until OnComplete (or 10 s: a hang fails).
class Recorder : public ResponseHandler {
 public:
  void OnResponse(int status, const std::map<std::string, std::string>& headers) override {
    std::lock_guard<std::mutex> lock(mu_);
    status_ = status;
    headers_ = headers;
  }
  void OnBody(std::string_view piece) override {
    std::lock_guard<std::mutex> lock(mu_);
    body_.append(piece);
    ++pieces_;
    cv_.notify_all();
  }
  void OnComplete(const absl::Status& status) override {
    std::lock_guard<std::mutex> lock(mu_);
    ++completions_;
    result_ = status;
    cv_.notify_all();
  }
  absl::Status Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    EXPECT_TRUE(cv_.wait_for(lock, 10s, [&] { return completions_ > 0; }));
    return result_;
  }
  bool WaitForBody(size_t bytes) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, 10s, [&] { return body_.size() >= bytes; });
  }
  int status() {
    std::lock_guard<std::mutex> lock(mu_);
    return status_;
  }
  std::string body() {
    std::lock_guard<std::mutex> lock(mu_);
    return body_;
  }
  std::map<std::string, std::string> headers() {
    std::lock_guard<std::mutex> lock(mu_);
    return headers_;
  }
  int completions() {
    std::lock_guard<std::mutex> lock(mu_);
    return completions_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int status_ = 0;
  std::map<std::string, std::string> headers_;
  std::string body_;
  int pieces_ = 0;
  int completions_ = 0;
  absl::Status result_;
};

bool WaitUntil(const std::function<bool()>& cond, std::chrono::milliseconds limit = 5s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!cond()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

// A server whose handler the test sets per case.
class AsyncClientTest : public ::testing::Test {
 protected:
  void Serve(Handler handler) {
    server_ = std::make_unique<Server>(ServerOptions{}, std::move(handler));
    ASSERT_TRUE(server_->Start().ok());
  }
  std::string UrlFor(const std::string& path) {
    return "http://127.0.0.1:" + std::to_string(server_->port()) + path;
  }
  std::unique_ptr<Server> server_;
};

TEST(UrlTest, Parses) {
  auto u = Url::Parse("https://api.example.com/v1");
  ASSERT_TRUE(u.ok());
  EXPECT_TRUE(u->tls);
  EXPECT_EQ(u->host, "api.example.com");
  EXPECT_EQ(u->port, 443);
  EXPECT_EQ(u->path, "/v1");
  u = Url::Parse("http://127.0.0.1:8000");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->port, 8000);
  EXPECT_EQ(u->path, "/");
  u = Url::Parse("http://[::1]:9/x?y=1");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->host, "::1");
  EXPECT_EQ(u->path, "/x?y=1");
  EXPECT_FALSE(Url::Parse("ftp://x").ok());
  EXPECT_FALSE(Url::Parse("http://:80/").ok());
  EXPECT_FALSE(Url::Parse("http://h:99999/").ok());
}

TEST_F(AsyncClientTest, WholeResponseWithRequestBodyAndHeaders) {
  Serve([](std::shared_ptr<Exchange> ex) {
    ex->Respond(201, {{"X-Reply", "yes"}},
                ex->request().method + " " + ex->request().target + " " +
                    ex->request().Header("authorization") + " " + ex->request().body);
  });
  AsyncClient client;
  auto rec = std::make_shared<Recorder>();
  client.Start({.method = "POST",
                .url = UrlFor("/v1/x?q=1"),
                .headers = {{"Authorization", "Bearer k"}},
                .body = "hello"},
               rec);
  ASSERT_TRUE(rec->Wait().ok());
  EXPECT_EQ(rec->status(), 201);
  EXPECT_EQ(rec->headers()["x-reply"], "yes");
  EXPECT_EQ(rec->body(), "POST /v1/x?q=1 Bearer k hello");
  EXPECT_EQ(rec->completions(), 1);
}

TEST_F(AsyncClientTest, ChunkedBodyArrivesPieceByPiece) {
  // The server writes the second chunk only after the client has seen the
  // first: the body is delivered as it arrives, not at the end.
  std::shared_ptr<Exchange> held;
  std::mutex mu;
  Serve([&](std::shared_ptr<Exchange> ex) {
    ex->StartStream(200, {{"content-type", "text/event-stream"}});
    ex->Write("data: one\n\n", nullptr);
    std::lock_guard<std::mutex> lock(mu);
    held = ex;
  });
  AsyncClient client;
  auto rec = std::make_shared<Recorder>();
  client.Start({.url = UrlFor("/")}, rec);
  ASSERT_TRUE(rec->WaitForBody(11));
  EXPECT_EQ(rec->body(), "data: one\n\n");
  EXPECT_EQ(rec->completions(), 0);
  {
    std::lock_guard<std::mutex> lock(mu);
    held->Write("data: two\n\n", nullptr);
    held->EndStream();
  }
  ASSERT_TRUE(rec->Wait().ok());
  EXPECT_EQ(rec->body(), "data: one\n\ndata: two\n\n");
}

TEST_F(AsyncClientTest, ConnectionRefusedIsUnavailable) {
  int port;
  {
    boost::asio::io_context io;
    boost::asio::ip::tcp::acceptor a(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
    port = a.local_endpoint().port();
  }
  AsyncClient client;
  auto rec = std::make_shared<Recorder>();
  client.Start({.url = "http://127.0.0.1:" + std::to_string(port) + "/"}, rec);
  EXPECT_EQ(rec->Wait().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(rec->status(), 0);
}

TEST_F(AsyncClientTest, HttpsToAPlainServerFailsTheHandshake) {
  // The TLS path runs (SNI, verification set up, handshake) and fails
  // cleanly against a server that does not speak TLS.
  Serve([](std::shared_ptr<Exchange> ex) { ex->Respond(200, {}, "plain"); });
  AsyncClient client;
  auto rec = std::make_shared<Recorder>();
  client.Start({.url = "https://127.0.0.1:" + std::to_string(server_->port()) + "/"}, rec);
  const absl::Status st = rec->Wait();
  EXPECT_EQ(st.code(), absl::StatusCode::kInternal) << st;
  EXPECT_NE(st.message().find("TLS handshake"), absl::string_view::npos) << st;
  EXPECT_EQ(rec->status(), 0);
}

TEST_F(AsyncClientTest, BadUrlIsInvalidArgument) {
  AsyncClient client;
  auto rec = std::make_shared<Recorder>();
  client.Start({.url = "nope://x"}, rec);
  EXPECT_EQ(rec->Wait().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(AsyncClientTest, SilenceLongerThanIdleTimeoutIsDeadlineExceeded) {
  std::vector<std::shared_ptr<Exchange>> held;
  std::mutex mu;
  Serve([&](std::shared_ptr<Exchange> ex) {
    ex->StartStream(200, {});
    ex->Write("first", nullptr);
    std::lock_guard<std::mutex> lock(mu);
    held.push_back(ex);  // and then nothing
  });
  AsyncClient client;
  auto rec = std::make_shared<Recorder>();
  const auto start = std::chrono::steady_clock::now();
  client.Start({.url = UrlFor("/"), .idle_timeout = 200ms}, rec);
  EXPECT_EQ(rec->Wait().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 200ms);
  EXPECT_EQ(rec->body(), "first");
}

TEST_F(AsyncClientTest, ConnectTimeoutIsDeadlineExceeded) {
  // A listener that never accepts, its backlog full: further SYNs go
  // unanswered and the connect hangs until the client's deadline.
  boost::asio::io_context io;
  boost::asio::ip::tcp::acceptor a(io);
  boost::asio::ip::tcp::endpoint ep(boost::asio::ip::make_address("127.0.0.1"), 0);
  a.open(ep.protocol());
  a.bind(ep);
  a.listen(0);
  const std::string url = "http://127.0.0.1:" + std::to_string(a.local_endpoint().port()) + "/";
  AsyncClient client;
  std::vector<std::shared_ptr<Recorder>> recs;
  for (int i = 0; i < 8; ++i) {
    recs.push_back(std::make_shared<Recorder>());
    client.Start({.url = url, .connect_timeout = 300ms, .idle_timeout = 300ms}, recs.back());
  }
  int timed_out = 0;
  for (auto& r : recs) {
    if (r->Wait().code() == absl::StatusCode::kDeadlineExceeded) ++timed_out;
  }
  EXPECT_EQ(timed_out, 8);  // connected ones time out waiting for a response
}

TEST_F(AsyncClientTest, CancelClosesTheConnectionAtOnce) {
  std::atomic<bool> gone{false};
  std::vector<std::shared_ptr<Exchange>> held;
  std::mutex mu;
  Serve([&](std::shared_ptr<Exchange> ex) {
    ex->OnClientGone([&] { gone = true; });
    ex->StartStream(200, {});
    ex->Write("x", nullptr);
    std::lock_guard<std::mutex> lock(mu);
    held.push_back(ex);
  });
  AsyncClient client;
  auto rec = std::make_shared<Recorder>();
  auto call = client.Start({.url = UrlFor("/")}, rec);
  ASSERT_TRUE(rec->WaitForBody(1));
  const auto cancelled_at = std::chrono::steady_clock::now();
  call->Cancel();
  EXPECT_EQ(rec->Wait().code(), absl::StatusCode::kCancelled);
  ASSERT_TRUE(WaitUntil([&] { return gone.load(); }));
  EXPECT_LT(std::chrono::steady_clock::now() - cancelled_at, 100ms);
  call->Cancel();  // again: nothing
  EXPECT_EQ(rec->completions(), 1);
}

TEST_F(AsyncClientTest, FiftyConcurrentStreamsOnOneThread) {
  constexpr int kStreams = 50;
  std::vector<std::shared_ptr<Exchange>> held;
  std::mutex mu;
  Serve([&](std::shared_ptr<Exchange> ex) {
    ex->StartStream(200, {});
    ex->Write("begin:" + ex->request().path + ";", nullptr);
    std::lock_guard<std::mutex> lock(mu);
    held.push_back(ex);
  });
  AsyncClient client({.threads = 1});
  std::vector<std::shared_ptr<Recorder>> recs;
  for (int i = 0; i < kStreams; ++i) {
    recs.push_back(std::make_shared<Recorder>());
    client.Start({.url = UrlFor("/s" + std::to_string(i))}, recs.back());
  }
  // All fifty are open at once before any ends.
  ASSERT_TRUE(WaitUntil([&] {
    std::lock_guard<std::mutex> lock(mu);
    return held.size() == kStreams;
  }));
  for (auto& ex : held) {
    ex->Write("end", nullptr);
    ex->EndStream();
  }
  for (int i = 0; i < kStreams; ++i) {
    ASSERT_TRUE(recs[i]->Wait().ok());
    EXPECT_EQ(recs[i]->body(), "begin:/s" + std::to_string(i) + ";end");
  }
}

TEST_F(AsyncClientTest, DestroyingTheClientCancelsItsCalls) {
  std::vector<std::shared_ptr<Exchange>> held;
  std::mutex mu;
  Serve([&](std::shared_ptr<Exchange> ex) {
    ex->StartStream(200, {});
    std::lock_guard<std::mutex> lock(mu);
    held.push_back(ex);
  });
  auto rec = std::make_shared<Recorder>();
  {
    AsyncClient client;
    client.Start({.url = UrlFor("/")}, rec);
    ASSERT_TRUE(WaitUntil([&] {
      std::lock_guard<std::mutex> lock(mu);
      return held.size() == 1;
    }));
  }
  EXPECT_EQ(rec->completions(), 1);
  EXPECT_EQ(rec->Wait().code(), absl::StatusCode::kCancelled);
}

}  // namespace
}  // namespace sb::http
