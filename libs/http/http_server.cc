#include "http/http_server.h"

#include <sys/socket.h>

#include <cerrno>
#include <deque>
#include <optional>

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include <spdlog/spdlog.h>

#include "absl/strings/ascii.h"

namespace sb::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr auto kIdleTimeout = std::chrono::seconds(120);
constexpr auto kWriteTimeout = std::chrono::seconds(60);

std::string ReasonPhrase(int status) {
  std::string_view r = bhttp::obsolete_reason(static_cast<bhttp::status>(status));
  return r.empty() ? "Unknown" : std::string(r);
}

// One connection. Everything that touches the socket runs on the strand.
class Session : public Exchange, public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, const Handler& handler, size_t max_body)
      : stream_(std::move(socket)), handler_(handler), max_body_(max_body) {}

  void Begin() {
    asio::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->ReadRequest(); });
  }

  const Request& request() const override { return request_; }

  void Respond(int status, Headers headers, std::string body) override {
    asio::post(stream_.get_executor(),
               [self = shared_from_this(), status, headers = std::move(headers),
                body = std::move(body)] { self->DoRespond(status, headers, body); });
  }

  void StartStream(int status, Headers headers) override {
    std::string head = "HTTP/1.1 " + std::to_string(status) + " " + ReasonPhrase(status) + "\r\n";
    for (const auto& [k, v] : headers) head += k + ": " + v + "\r\n";
    head += "Transfer-Encoding: chunked\r\n";
    if (!keep_alive_) head += "Connection: close\r\n";
    head += "\r\n";
    QueueWrite(std::move(head), nullptr);
  }

  void Write(std::string data, std::function<void(bool)> done) override {
    if (data.empty()) {  // an empty chunk would end the body
      asio::post(stream_.get_executor(), [self = shared_from_this(), done = std::move(done)] {
        if (done) done(!self->broken_);
      });
      return;
    }
    char size[20];
    std::snprintf(size, sizeof size, "%zx\r\n", data.size());
    QueueWrite(std::string(size) + data + "\r\n", std::move(done));
  }

  void OnClientGone(std::function<void()> fn) override {
    asio::post(stream_.get_executor(), [self = shared_from_this(), fn = std::move(fn)]() mutable {
      if (self->peer_gone_) {
        fn();
      } else if (self->watching_) {
        self->on_gone_ = std::move(fn);
      }
      // Otherwise the response already ended: nothing left to abandon.
    });
  }

  void EndStream() override {
    asio::post(stream_.get_executor(), [self = shared_from_this()] {
      self->StopWatchingPeer();
      self->ending_ = true;
      self->pending_.push_back({"0\r\n\r\n", nullptr});
      self->PumpWrites();
    });
  }

 private:
  struct PendingWrite {
    std::string data;
    std::function<void(bool)> done;
  };

  void QueueWrite(std::string data, std::function<void(bool)> done) {
    asio::post(stream_.get_executor(), [self = shared_from_this(), data = std::move(data),
                                        done = std::move(done)]() mutable {
      self->pending_.push_back({std::move(data), std::move(done)});
      self->PumpWrites();
    });
  }

  void PumpWrites() {
    if (writing_) return;
    if (pending_.empty()) {
      if (ending_) FinishExchange();
      return;
    }
    if (broken_) {
      auto w = std::move(pending_.front());
      pending_.pop_front();
      if (w.done) w.done(false);
      PumpWrites();
      return;
    }
    writing_ = true;
    current_ = std::move(pending_.front());
    pending_.pop_front();
    stream_.expires_after(kWriteTimeout);
    asio::async_write(stream_, asio::buffer(current_.data),
                      [self = shared_from_this()](beast::error_code ec, size_t) {
                        self->writing_ = false;
                        if (ec) self->broken_ = true;
                        auto done = std::move(self->current_.done);
                        if (done) done(!ec);
                        self->PumpWrites();
                      });
  }

  void FinishExchange() {
    ending_ = false;
    StopWatchingPeer();
    if (broken_ || !keep_alive_) {
      Close();
      return;
    }
    ReadRequest();
  }

  // While a handler works on a request nothing reads the socket, so a
  // client that leaves would go unnoticed until the first write. A peek
  // decides: 0 bytes is the peer's FIN, an error is a reset, bytes are a
  // pipelined next request (left in the socket for the next read), and
  // "would block" means wait for readability and peek again. Readiness alone
  // proves nothing (an edge-triggered wake-up can be stale), and a FIN that
  // came with the request raises no new edge: hence the peek first.
  void WatchPeer() {
    watching_ = true;
    if (!PeekPeer()) AwaitPeer();
  }

  void AwaitPeer() {
    stream_.socket().async_wait(tcp::socket::wait_read, [self = shared_from_this(),
                                                         gen =
                                                             exchange_gen_](beast::error_code ec) {
      if (gen != self->exchange_gen_ || !self->watching_ || ec == asio::error::operation_aborted) {
        return;
      }
      if (ec) {
        self->PeerGone();
      } else if (!self->PeekPeer()) {
        self->AwaitPeer();
      }
    });
  }

  // True when the peek decided (the client left, or sent more).
  bool PeekPeer() {
    char byte;
    const ssize_t n = ::recv(stream_.socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0) {
      watching_ = false;  // a pipelined request: the next read takes it
      return true;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return false;
    PeerGone();
    return true;
  }

  void PeerGone() {
    watching_ = false;
    peer_gone_ = true;
    broken_ = true;  // later writes fail at once instead of timing out
    if (auto fn = std::move(on_gone_)) {
      on_gone_ = nullptr;
      fn();
    }
  }

  // The response is complete (or about to be written whole): a client
  // that leaves now has not abandoned anything. A wait still pending
  // completes later and is ignored (its generation is stale).
  void StopWatchingPeer() {
    ++exchange_gen_;
    watching_ = false;
    on_gone_ = nullptr;
  }

  void ReadRequest() {
    parser_.emplace();
    parser_->body_limit(max_body_);
    parser_->header_limit(64 * 1024);
    stream_.expires_after(kIdleTimeout);
    bhttp::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->OnRead(ec); });
  }

  void OnRead(beast::error_code ec) {
    if (ec == bhttp::error::end_of_stream || ec == asio::error::eof ||
        ec == beast::error::timeout || ec == asio::error::operation_aborted ||
        ec == asio::error::connection_reset) {
      Close();
      return;
    }
    if (ec) {
      keep_alive_ = false;
      if (ec == bhttp::error::body_limit) {
        DoRespond(413, {{"content-type", "application/json"}},
                  ErrorJson("request_too_large",
                            "request body exceeds " + std::to_string(max_body_) + " bytes"));
      } else {
        DoRespond(400, {{"content-type", "application/json"}},
                  ErrorJson("invalid_request_error", "malformed HTTP request"));
      }
      return;
    }
    auto msg = parser_->release();
    request_ = Request{};
    request_.method = std::string(msg.method_string());
    request_.target = std::string(msg.target());
    const auto q = request_.target.find('?');
    request_.path = request_.target.substr(0, q);
    if (q != std::string::npos) request_.query = request_.target.substr(q + 1);
    for (const auto& field : msg) {
      std::string name(field.name_string());
      absl::AsciiStrToLower(&name);
      request_.headers[std::move(name)] = std::string(field.value());
    }
    request_.body = std::move(msg.body());
    keep_alive_ = msg.keep_alive();
    stream_.expires_never();
    WatchPeer();
    handler_(shared_from_this());
  }

  void DoRespond(int status, const Headers& headers, const std::string& body) {
    std::string out = "HTTP/1.1 " + std::to_string(status) + " " + ReasonPhrase(status) + "\r\n";
    for (const auto& [k, v] : headers) out += k + ": " + v + "\r\n";
    // A 204 or 304 has no body and must not say it has one (RFC 9110 8.6).
    if (status != 204 && status != 304)
      out += "Content-Length: " + std::to_string(body.size()) + "\r\n";
    if (!keep_alive_) out += "Connection: close\r\n";
    out += "\r\n";
    if (request_.method != "HEAD") out += body;
    StopWatchingPeer();
    ending_ = true;
    pending_.push_back({std::move(out), nullptr});
    PumpWrites();
  }

  void Close() {
    on_gone_ = nullptr;  // it may hold this exchange: no cycle outlives the connection
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();
  }

  beast::tcp_stream stream_;
  const Handler& handler_;
  size_t max_body_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  Request request_;
  bool keep_alive_ = true;
  std::deque<PendingWrite> pending_;
  PendingWrite current_;
  bool writing_ = false;
  bool ending_ = false;
  bool broken_ = false;
  // Client-gone detection for the exchange in progress (see WatchPeer).
  bool watching_ = false;
  bool peer_gone_ = false;
  uint64_t exchange_gen_ = 0;
  std::function<void()> on_gone_;
};

}  // namespace

std::string Request::Header(const std::string& name) const {
  auto it = headers.find(name);
  return it == headers.end() ? std::string() : it->second;
}

std::string Request::QueryParam(const std::string& name) const {
  size_t pos = 0;
  while (pos <= query.size()) {
    size_t amp = query.find('&', pos);
    if (amp == std::string::npos) amp = query.size();
    const std::string_view part(query.data() + pos, amp - pos);
    const size_t eq = part.find('=');
    if (part.substr(0, eq) == name) {
      return eq == std::string_view::npos ? std::string() : std::string(part.substr(eq + 1));
    }
    pos = amp + 1;
  }
  return "";
}

std::string ErrorJson(const std::string& type, const std::string& message) {
  nlohmann::json j = {{"type", "error"}, {"error", {{"type", type}, {"message", message}}}};
  // A message may quote what a client sent: never throw on invalid UTF-8.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

struct Server::Impl {
  ServerOptions options;
  Handler handler;
  asio::io_context io;
  std::optional<tcp::acceptor> acceptor;
  std::vector<std::thread> threads;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;

  void Accept() {
    acceptor->async_accept(asio::make_strand(io), [this](beast::error_code ec, tcp::socket s) {
      if (ec) {
        if (ec == asio::error::operation_aborted) return;
        spdlog::warn("http accept failed: {}", ec.message());
      } else {
        s.set_option(tcp::no_delay(true));
        std::make_shared<Session>(std::move(s), handler, options.max_body_bytes)->Begin();
      }
      Accept();
    });
  }
};

Server::Server(ServerOptions options, Handler handler) : impl_(std::make_unique<Impl>()) {
  impl_->options = std::move(options);
  impl_->handler = std::move(handler);
}

Server::~Server() { Stop(); }

absl::Status Server::Start() {
  beast::error_code ec;
  const auto address = asio::ip::make_address(impl_->options.host, ec);
  if (ec) return absl::InvalidArgumentError("bad listen address " + impl_->options.host);
  impl_->acceptor.emplace(impl_->io);
  tcp::endpoint endpoint(address, static_cast<unsigned short>(impl_->options.port));
  impl_->acceptor->open(endpoint.protocol(), ec);
  if (!ec) impl_->acceptor->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) impl_->acceptor->bind(endpoint, ec);
  if (!ec) impl_->acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError("cannot listen on " + impl_->options.host + ":" +
                                  std::to_string(impl_->options.port) + ": " + ec.message());
  }
  port_ = impl_->acceptor->local_endpoint().port();
  impl_->work.emplace(impl_->io.get_executor());
  impl_->Accept();
  for (int i = 0; i < std::max(1, impl_->options.threads); ++i) {
    impl_->threads.emplace_back([this] { impl_->io.run(); });
  }
  return absl::OkStatus();
}

void Server::Stop() {
  if (!impl_ || impl_->threads.empty()) return;
  asio::post(impl_->io, [this] {
    beast::error_code ignored;
    impl_->acceptor->close(ignored);
  });
  impl_->work.reset();
  impl_->io.stop();
  for (auto& t : impl_->threads) t.join();
  impl_->threads.clear();
}

}  // namespace sb::http
