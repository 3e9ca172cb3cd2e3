#include "http/http_server.h"

#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <array>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cerrno>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <unordered_map>

#include "absl/strings/match.h"
#include "core/metrics.h"
#include "http/beast_request.h"

namespace sb::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

namespace {

using SteadyClock = std::chrono::steady_clock;

constexpr auto kWriteTimeout = std::chrono::seconds(60);
constexpr size_t kHeaderLimit = 64 * 1024;
constexpr size_t kFirstReadBytes = 4096;

std::string ReasonPhrase(int status) {
  std::string_view r = bhttp::obsolete_reason(static_cast<bhttp::status>(status));
  return r.empty() ? "Unknown" : std::string(r);
}

// Caps (ServerOptions) shared by one server's connections, with their
// metrics. Sessions hold it too: an exchange can outlive its server.
class Edge {
 public:
  enum Refusal {
    kConnections,
    kConnectionsPerIp,
    kRequestsInFlight,
    kBufferedBytes,
    kHeaderTimeout,
    kBodyTimeout,
    kRefusals
  };

  explicit Edge(const ServerOptions& options) : options_(options) {
    const std::string& listener = options.metrics_listener;
    if (listener.empty()) return;
    auto& m = metrics::Default();
    connections_gauge_ =
        &m.GetGauge("sb_http_connections", "Open client connections", {{"listener", listener}});
    requests_gauge_ = &m.GetGauge("sb_http_requests_in_flight",
                                  "Requests handed to the handler and not yet answered in full",
                                  {{"listener", listener}});
    bytes_gauge_ = &m.GetGauge("sb_http_buffered_body_bytes",
                               "Request body bytes reserved by requests in progress",
                               {{"listener", listener}});
    static constexpr const char* kReasons[kRefusals] = {"connections",        "connections_per_ip",
                                                        "requests_in_flight", "buffered_bytes",
                                                        "header_timeout",     "body_timeout"};
    for (int r = 0; r < kRefusals; ++r) {
      refused_[r] = &m.GetCounter(
          "sb_http_refused_total",
          "Connections and requests refused or cut off at the edge, by the limit that did it",
          {{"listener", listener}, {"reason", kReasons[r]}});
    }
  }

  const ServerOptions& options() const { return options_; }

  void Refused(Refusal r) {
    if (refused_[r] != nullptr) refused_[r]->Inc();
  }

  // False (and counted) when a connection cap is reached.
  bool AdmitConnection(const std::string& ip) {
    std::lock_guard<std::mutex> lock(mu_);
    if (options_.max_connections > 0 && connections_ >= options_.max_connections) {
      Refused(kConnections);
      return false;
    }
    size_t& mine = per_ip_[ip];
    if (options_.max_connections_per_ip > 0 && mine >= options_.max_connections_per_ip) {
      if (mine == 0) per_ip_.erase(ip);
      Refused(kConnectionsPerIp);
      return false;
    }
    ++mine;
    ++connections_;
    if (connections_gauge_ != nullptr) connections_gauge_->Set(static_cast<double>(connections_));
    return true;
  }

  void ReleaseConnection(const std::string& ip) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = per_ip_.find(ip);
    if (it != per_ip_.end() && --it->second == 0) per_ip_.erase(it);
    --connections_;
    if (connections_gauge_ != nullptr) connections_gauge_->Set(static_cast<double>(connections_));
  }

  bool AdmitRequest() {
    if (!Take(in_flight_, 1, options_.max_requests_in_flight, requests_gauge_)) {
      Refused(kRequestsInFlight);
      return false;
    }
    return true;
  }
  void ReleaseRequest() { Give(in_flight_, 1, requests_gauge_); }
  size_t requests_in_flight() const { return in_flight_.load(std::memory_order_relaxed); }

  bool ReserveBytes(size_t n) {
    if (!Take(buffered_, n, options_.max_buffered_bytes, bytes_gauge_)) {
      Refused(kBufferedBytes);
      return false;
    }
    return true;
  }
  void ReleaseBytes(size_t n) { Give(buffered_, n, bytes_gauge_); }

 private:
  static bool Take(std::atomic<size_t>& v, size_t n, size_t cap, metrics::Gauge* gauge) {
    size_t cur = v.load(std::memory_order_relaxed);
    do {
      if (cap > 0 && cur + n > cap) return false;
    } while (!v.compare_exchange_weak(cur, cur + n, std::memory_order_relaxed));
    if (gauge != nullptr) gauge->Add(static_cast<double>(n));
    return true;
  }
  static void Give(std::atomic<size_t>& v, size_t n, metrics::Gauge* gauge) {
    v.fetch_sub(n, std::memory_order_relaxed);
    if (gauge != nullptr) gauge->Add(-static_cast<double>(n));
  }

  const ServerOptions options_;
  std::mutex mu_;
  size_t connections_ = 0;
  std::unordered_map<std::string, size_t> per_ip_;
  std::atomic<size_t> in_flight_{0};
  std::atomic<size_t> buffered_{0};
  metrics::Gauge* connections_gauge_ = nullptr;
  metrics::Gauge* requests_gauge_ = nullptr;
  metrics::Gauge* bytes_gauge_ = nullptr;
  std::array<metrics::Counter*, kRefusals> refused_{};
};

std::string OverloadedJson(const std::string& message) {
  return ErrorJson("overloaded_error", message);
}

// Over a connection cap: a best-effort 503 without reading the request
// (a client that reads its socket sees why), then close. Never blocks.
void RefuseConnection(tcp::socket& socket) {
  static const std::string kResponse = [] {
    const std::string body = OverloadedJson("too many connections; retry shortly");
    return "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
           "retry-after: 1\r\nConnection: close\r\nContent-Length: " +
           std::to_string(body.size()) + "\r\n\r\n" + body;
  }();
  [[maybe_unused]] const ssize_t n = ::send(socket.native_handle(), kResponse.data(),
                                            kResponse.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  beast::error_code ignored;
  socket.shutdown(tcp::socket::shutdown_both, ignored);
  socket.close(ignored);
}

// One connection. Everything that touches the socket runs on the strand.
//
// Per request: the headers (under a deadline) -> the handler, with the body
// read first unless the server defers it -> the response -> the next
// request's first bytes (under the keep-alive timeout), or close. A request
// holds a slot of max_requests_in_flight from the handler until its
// response is complete, and its body's bytes of max_buffered_bytes as long.
class Session : public Exchange, public std::enable_shared_from_this<Session> {
 public:
  Session(std::shared_ptr<asio::io_context> io, tcp::socket socket, const Handler& handler,
          std::shared_ptr<Edge> edge, std::string ip)
      : io_(std::move(io)),
        stream_(std::move(socket)),
        handler_(handler),
        edge_(std::move(edge)),
        options_(edge_->options()),
        ip_(std::move(ip)) {}

  ~Session() override {
    EndExchange();
    ReleaseConnection();
  }

  void Begin() {
    asio::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->ReadHeader(); });
  }

  const Request& request() const override { return request_; }

  void ReadBody(std::function<void(absl::Status)> done) override {
    asio::post(stream_.get_executor(),
               [self = shared_from_this(), done = std::move(done)]() mutable {
                 switch (self->body_) {
                   case BodyState::kDone:
                     done(absl::OkStatus());
                     return;
                   case BodyState::kFailed:
                     done(self->body_error_);
                     return;
                   case BodyState::kReading:
                     done(absl::FailedPreconditionError("the body is already being read"));
                     return;
                   case BodyState::kUnread:
                     self->StartBody(std::move(done));
                     return;
                 }
               });
  }

  void Respond(int status, Headers headers, std::string body) override {
    asio::post(stream_.get_executor(),
               [self = shared_from_this(), status, headers = std::move(headers),
                body = std::move(body)] { self->DoRespond(status, headers, body); });
  }

  void StartStream(int status, Headers headers) override {
    asio::post(stream_.get_executor(),
               [self = shared_from_this(), status, headers = std::move(headers)] {
                 self->DoStartStream(status, headers);
               });
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
      } else if (self->answering_) {
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
  enum class BodyState { kUnread, kReading, kDone, kFailed };

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
    EndExchange();
    if (broken_ || !keep_alive_) {
      Close();
      return;
    }
    AwaitNextRequest();
  }

  // Gives back what the request held. Idempotent.
  void EndExchange() {
    if (in_flight_) {
      in_flight_ = false;
      edge_->ReleaseRequest();
    }
    if (reserved_ > 0) {
      edge_->ReleaseBytes(reserved_);
      reserved_ = 0;
    }
  }

  void ReleaseConnection() {
    if (counted_) {
      counted_ = false;
      edge_->ReleaseConnection(ip_);
    }
  }

  // While a handler works on a request nothing reads the socket, so a
  // client that leaves would go unnoticed until the first write. A peek
  // decides: 0 bytes is the peer's FIN, an error is a reset, bytes are a
  // pipelined next request (left in the socket for the next read), and
  // "would block" means wait for readability and peek again. Readiness alone
  // proves nothing (an edge-triggered wake-up can be stale), and a FIN that
  // came with the request raises no new edge: hence the peek first. Only
  // once the body is in: until then its bytes are not a next request.
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
    answering_ = false;
    on_gone_ = nullptr;
  }

  // Between requests: the next one's first bytes, within the keep-alive
  // timeout; its header deadline starts when they arrive.
  void AwaitNextRequest() {
    if (buffer_.size() > 0) {
      ReadHeader();
      return;
    }
    stream_.expires_after(options_.keepalive_timeout);
    stream_.async_read_some(buffer_.prepare(kFirstReadBytes),
                            [self = shared_from_this()](beast::error_code ec, size_t n) {
                              if (ec) {
                                self->Close();
                                return;
                              }
                              self->buffer_.commit(n);
                              self->ReadHeader();
                            });
  }

  void ReadHeader() {
    parser_.emplace();
    parser_->body_limit(options_.max_body_bytes);
    parser_->header_limit(kHeaderLimit);
    body_ = BodyState::kUnread;
    stream_.expires_after(options_.header_timeout);
    bhttp::async_read_header(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->OnHeader(ec); });
  }

  void OnHeader(beast::error_code ec) {
    if (ec == beast::error::timeout) edge_->Refused(Edge::kHeaderTimeout);
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
                  ErrorJson("request_too_large", BodyTooLarge()));
      } else if (ec == bhttp::error::header_limit) {
        DoRespond(431, {{"content-type", "application/json"}},
                  ErrorJson("invalid_request_error", "request headers are too large"));
      } else {
        DoRespond(400, {{"content-type", "application/json"}},
                  ErrorJson("invalid_request_error", "malformed HTTP request"));
      }
      return;
    }
    const auto& msg = parser_->get();
    request_ = RequestFromBeastHeader(msg);
    request_.client_ip = ip_;
    keep_alive_ = msg.keep_alive();
    stream_.expires_never();
    if (parser_->is_done()) body_ = BodyState::kDone;

    if (!edge_->AdmitRequest()) {
      DoRespond(503, {{"content-type", "application/json"}, {"retry-after", "1"}},
                OverloadedJson("too many requests in progress; retry shortly"));
      return;
    }
    in_flight_ = true;
    answering_ = true;
    if (body_ == BodyState::kDone) {
      WatchPeer();
      handler_(shared_from_this());
    } else if (options_.defer_body) {
      handler_(shared_from_this());
    } else {
      StartBody([self = shared_from_this()](absl::Status st) {
        if (st.ok()) {
          self->handler_(self);
        } else if (!self->broken_) {
          const int status = HttpStatusOfBodyError(st);
          Headers headers = {{"content-type", "application/json"}};
          if (status == 503) headers.push_back({"retry-after", "1"});
          self->DoRespond(status, headers,
                          ErrorJson(status == 413   ? "request_too_large"
                                    : status == 503 ? "overloaded_error"
                                                    : "invalid_request_error",
                                    std::string(st.message())));
        } else {
          self->Close();
        }
      });
    }
  }

  std::string BodyTooLarge() const {
    return "request body exceeds " + std::to_string(options_.max_body_bytes) + " bytes";
  }

  void StartBody(std::function<void(absl::Status)> done) {
    body_ = BodyState::kReading;
    body_done_ = std::move(done);
    body_start_ = SteadyClock::now();
    // A declared length is reserved up front, so that a body that cannot
    // be afforded is refused before it is read; a chunked one as it grows.
    if (const auto length = parser_->content_length(); length && !Reserve(*length)) {
      FailBody(
          absl::UnavailableError("the server is busy receiving other requests; retry shortly"));
      return;
    }
    // A client that waits to be asked for its body (curl does above 1 KiB)
    // is asked now, once the handler wants it: never for a refused request.
    if (absl::EqualsIgnoreCase(request_.Header("expect"), "100-continue")) {
      pending_.push_back({"HTTP/1.1 100 Continue\r\n\r\n", nullptr});
      PumpWrites();
    }
    ReadMoreBody();
  }

  bool Reserve(size_t n) {
    if (!edge_->ReserveBytes(n)) return false;
    reserved_ += n;
    return true;
  }

  void ReadMoreBody() {
    if (parser_->is_done()) {
      body_ = BodyState::kDone;
      request_.body = std::move(parser_->get().body());
      stream_.expires_never();
      WatchPeer();
      std::exchange(body_done_, nullptr)(absl::OkStatus());
      return;
    }
    // The allowance grows with what arrived: a client above the minimum
    // rate never runs out, one below it does, however it paces its bytes.
    auto allowance = std::chrono::duration_cast<SteadyClock::duration>(options_.body_timeout);
    if (options_.min_body_rate > 0) {
      const size_t received = parser_->get().body().size();
      allowance += std::chrono::milliseconds(received * 1000 / options_.min_body_rate);
    }
    stream_.expires_at(body_start_ + allowance);
    bhttp::async_read_some(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->OnBody(ec); });
  }

  void OnBody(beast::error_code ec) {
    if (!ec) {
      const size_t size = parser_->get().body().size();
      if (!parser_->content_length() && size > reserved_ && !Reserve(size - reserved_)) {
        FailBody(
            absl::UnavailableError("the server is busy receiving other requests; retry shortly"));
        return;
      }
      ReadMoreBody();
      return;
    }
    if (ec == beast::error::timeout) {
      edge_->Refused(Edge::kBodyTimeout);
      broken_ = true;  // the stream closed the socket
      FailBody(absl::DeadlineExceededError("the request body arrived too slowly"));
    } else if (ec == bhttp::error::body_limit) {
      FailBody(absl::OutOfRangeError(BodyTooLarge()));
    } else if (ec == bhttp::error::end_of_stream || ec == asio::error::eof ||
               ec == asio::error::connection_reset || ec == asio::error::operation_aborted) {
      broken_ = true;
      peer_gone_ = true;
      FailBody(absl::CancelledError("the client went away"));
    } else {
      FailBody(absl::InvalidArgumentError("malformed HTTP request body"));
    }
  }

  void FailBody(absl::Status st) {
    body_ = BodyState::kFailed;
    body_error_ = st;
    keep_alive_ = false;
    stream_.expires_never();
    std::exchange(body_done_, nullptr)(std::move(st));
  }

  std::string Head(int status, const Headers& headers) {
    // A body left unread cannot be skipped reliably: close after answering.
    if (body_ != BodyState::kDone) keep_alive_ = false;
    std::string out = "HTTP/1.1 " + std::to_string(status) + " " + ReasonPhrase(status) + "\r\n";
    for (const auto& [k, v] : headers) out += k + ": " + v + "\r\n";
    return out;
  }

  void DoStartStream(int status, const Headers& headers) {
    std::string head = Head(status, headers);
    head += "Transfer-Encoding: chunked\r\n";
    if (!keep_alive_) head += "Connection: close\r\n";
    head += "\r\n";
    pending_.push_back({std::move(head), nullptr});
    PumpWrites();
  }

  void DoRespond(int status, const Headers& headers, const std::string& body) {
    std::string out = Head(status, headers);
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
    EndExchange();
    ReleaseConnection();
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();
  }

  // The socket's io_context lives as long as the socket: an exchange that
  // its handler still holds may outlive the server (destroying a socket
  // after its io_context is undefined).
  const std::shared_ptr<asio::io_context> io_;
  beast::tcp_stream stream_;
  const Handler& handler_;
  const std::shared_ptr<Edge> edge_;
  const ServerOptions& options_;  // edge_'s
  const std::string ip_;
  bool counted_ = true;  // holds a connection slot
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  Request request_;
  bool keep_alive_ = true;
  // The request in progress.
  bool in_flight_ = false;  // holds a max_requests_in_flight slot
  size_t reserved_ = 0;     // bytes of max_buffered_bytes it holds
  BodyState body_ = BodyState::kUnread;
  absl::Status body_error_;
  std::function<void(absl::Status)> body_done_;
  SteadyClock::time_point body_start_;
  // Writes.
  std::deque<PendingWrite> pending_;
  PendingWrite current_;
  bool writing_ = false;
  bool ending_ = false;
  bool broken_ = false;
  // Client-gone detection for the exchange in progress (see WatchPeer).
  bool answering_ = false;  // handed to the handler, response not yet begun to end
  bool watching_ = false;
  bool peer_gone_ = false;
  uint64_t exchange_gen_ = 0;
  std::function<void()> on_gone_;
};

}  // namespace

int HttpStatusOfBodyError(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOutOfRange:
      return 413;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 408;
    case absl::StatusCode::kCancelled:
      return 499;
    default:
      return 400;
  }
}

std::string ErrorJson(const std::string& type, const std::string& message) {
  nlohmann::json j = {{"type", "error"}, {"error", {{"type", type}, {"message", message}}}};
  // A message may quote what a client sent: never throw on invalid UTF-8.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

struct Server::Impl {
  ServerOptions options;
  std::shared_ptr<Edge> edge;
  Handler handler;
  std::shared_ptr<asio::io_context> io = std::make_shared<asio::io_context>();
  std::optional<tcp::acceptor> acceptor;
  std::vector<std::thread> threads;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;

  void Accept() {
    acceptor->async_accept(asio::make_strand(*io), [this](beast::error_code ec, tcp::socket s) {
      if (ec) {
        if (ec == asio::error::operation_aborted) return;
        spdlog::warn("http accept failed: {}", ec.message());
      } else {
        beast::error_code peer_ec;
        const auto peer = s.remote_endpoint(peer_ec);
        std::string ip = peer_ec ? std::string() : peer.address().to_string();
        if (!edge->AdmitConnection(ip)) {
          RefuseConnection(s);
        } else {
          s.set_option(tcp::no_delay(true), peer_ec);
          std::make_shared<Session>(io, std::move(s), handler, edge, std::move(ip))->Begin();
        }
      }
      Accept();
    });
  }
};

size_t Server::requests_in_flight() const {
  return impl_->edge ? impl_->edge->requests_in_flight() : 0;
}

Server::Server(ServerOptions options, Handler handler) : impl_(std::make_unique<Impl>()) {
  impl_->options = std::move(options);
  impl_->edge = std::make_shared<Edge>(impl_->options);
  impl_->handler = std::move(handler);
}

Server::~Server() { Stop(); }

absl::Status Server::Start() {
  beast::error_code ec;
  const auto address = asio::ip::make_address(impl_->options.host, ec);
  if (ec) return absl::InvalidArgumentError("bad listen address " + impl_->options.host);
  impl_->acceptor.emplace(*impl_->io);
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
  impl_->work.emplace(impl_->io->get_executor());
  impl_->Accept();
  for (int i = 0; i < std::max(1, impl_->options.threads); ++i) {
    impl_->threads.emplace_back([this] { impl_->io->run(); });
  }
  return absl::OkStatus();
}

void Server::Stop() {
  if (!impl_ || impl_->threads.empty()) return;
  asio::post(*impl_->io, [this] {
    beast::error_code ignored;
    impl_->acceptor->close(ignored);
  });
  impl_->work.reset();
  impl_->io->stop();
  for (auto& t : impl_->threads) t.join();
  impl_->threads.clear();
}

}  // namespace sb::http
