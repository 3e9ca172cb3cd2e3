#include "http/async_client.h"

#include <openssl/ssl.h>
#include <spdlog/spdlog.h>

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"

namespace sb::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;

absl::StatusOr<Url> Url::Parse(std::string_view url) {
  Url out;
  if (absl::StartsWithIgnoreCase(absl::string_view(url.data(), url.size()), "https://")) {
    out.tls = true;
    url.remove_prefix(8);
  } else if (absl::StartsWithIgnoreCase(absl::string_view(url.data(), url.size()), "http://")) {
    url.remove_prefix(7);
  } else {
    return absl::InvalidArgumentError("URL must start with http:// or https://");
  }
  const size_t slash = url.find('/');
  std::string_view authority = url.substr(0, slash);
  out.path = slash == std::string_view::npos ? "/" : std::string(url.substr(slash));
  std::string_view port;
  if (!authority.empty() && authority[0] == '[') {
    const size_t close = authority.find(']');
    if (close == std::string_view::npos) return absl::InvalidArgumentError("bad IPv6 host in URL");
    out.host = std::string(authority.substr(1, close - 1));
    std::string_view rest = authority.substr(close + 1);
    if (!rest.empty()) {
      if (rest[0] != ':') return absl::InvalidArgumentError("bad port in URL");
      port = rest.substr(1);
    }
  } else {
    const size_t colon = authority.rfind(':');
    out.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) port = authority.substr(colon + 1);
  }
  if (out.host.empty()) return absl::InvalidArgumentError("URL has no host");
  if (port.empty()) {
    out.port = out.tls ? 443 : 80;
  } else if (!absl::SimpleAtoi(absl::string_view(port.data(), port.size()), &out.port) ||
             out.port <= 0 || out.port > 65535) {
    return absl::InvalidArgumentError("bad port in URL");
  }
  return out;
}

struct AsyncClient::Impl {
  explicit Impl(AsyncClientOptions opts) : options(std::move(opts)) {}

  AsyncClientOptions options;
  asio::io_context io;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work{io.get_executor()};
  ssl::context tls{ssl::context::tls_client};
  std::vector<std::thread> threads;

  std::mutex mu;
  uint64_t next_call = 0;
  std::unordered_map<uint64_t, std::weak_ptr<AsyncCall>> live;
  bool stopping = false;
};

namespace {

// One call. Everything that touches the socket runs on the strand. One
// timer serves both deadlines: the connect phase (resolve, connect, TLS
// handshake) and the idle timeout between bytes; when it fires, or Cancel
// runs, the socket is closed and the pending operation fails, and the
// reason recorded here decides the status.
template <class Stream>
class Call final : public AsyncCall, public std::enable_shared_from_this<Call<Stream>> {
 public:
  Call(std::shared_ptr<AsyncClient::Impl> impl, uint64_t key, Url url, AsyncRequest request,
       std::shared_ptr<ResponseHandler> handler)
      : impl_(std::move(impl)),
        key_(key),
        strand_(asio::make_strand(impl_->io)),
        resolver_(strand_),
        stream_(MakeStream()),
        timer_(strand_),
        url_(std::move(url)),
        request_(std::move(request)),
        handler_(std::move(handler)) {}

  void Begin() {
    asio::dispatch(strand_, [self = this->shared_from_this()] { self->Resolve(); });
  }

  void Cancel() override {
    asio::dispatch(strand_, [self = this->shared_from_this()] {
      if (self->done_) return;
      self->reason_ = Reason::kCancelled;
      self->CloseSocket();
      self->resolver_.cancel();
      self->timer_.cancel();
    });
  }

 private:
  enum class Reason { kNone, kCancelled, kTimedOut };

  Stream MakeStream() {
    if constexpr (std::is_same_v<Stream, tcp::socket>) {
      return Stream(strand_);
    } else {
      return Stream(strand_, impl_->tls);
    }
  }

  tcp::socket& Socket() {
    if constexpr (std::is_same_v<Stream, tcp::socket>) {
      return stream_;
    } else {
      return stream_.next_layer();
    }
  }

  void CloseSocket() {
    beast::error_code ignored;
    Socket().shutdown(tcp::socket::shutdown_both, ignored);
    Socket().close(ignored);
  }

  void Arm(std::chrono::milliseconds after) {
    ++timer_gen_;
    if (after.count() <= 0) {
      timer_.cancel();
      return;
    }
    timer_.expires_after(after);
    timer_.async_wait([self = this->shared_from_this(), gen = timer_gen_](beast::error_code ec) {
      if (ec || gen != self->timer_gen_ || self->done_ || self->reason_ != Reason::kNone) return;
      self->reason_ = Reason::kTimedOut;
      self->resolver_.cancel();
      self->CloseSocket();
    });
  }

  void Resolve() {
    if (reason_ == Reason::kCancelled) return Complete(absl::CancelledError("cancelled"));
    Arm(request_.connect_timeout);
    resolver_.async_resolve(
        url_.host, std::to_string(url_.port),
        [self = this->shared_from_this()](beast::error_code ec, tcp::resolver::results_type r) {
          if (ec) return self->Fail(ec, "resolving", absl::StatusCode::kUnavailable);
          self->Connect(r);
        });
  }

  void Connect(const tcp::resolver::results_type& endpoints) {
    if (reason_ != Reason::kNone) return Fail(asio::error::operation_aborted, "connecting", {});
    asio::async_connect(Socket(), endpoints,
                        [self = this->shared_from_this()](beast::error_code ec, const auto&) {
                          if (ec) {
                            return self->Fail(ec, "connecting", absl::StatusCode::kUnavailable);
                          }
                          beast::error_code ignored;
                          self->Socket().set_option(tcp::no_delay(true), ignored);
                          self->Handshake();
                        });
  }

  void Handshake() {
    if constexpr (std::is_same_v<Stream, tcp::socket>) {
      Send();
    } else {
      if (!SSL_set_tlsext_host_name(stream_.native_handle(), url_.host.c_str())) {
        return Complete(absl::InternalError("cannot set TLS SNI for " + url_.host));
      }
      stream_.set_verify_mode(ssl::verify_peer);
      stream_.set_verify_callback(ssl::host_name_verification(url_.host));
      stream_.async_handshake(
          ssl::stream_base::client, [self = this->shared_from_this()](beast::error_code ec) {
            if (ec) {
              return self->Fail(ec, "TLS handshake", absl::StatusCode::kInternal);
            }
            self->Send();
          });
    }
  }

  void Send() {
    Arm(request_.idle_timeout);
    out_.method_string(request_.method);
    out_.target(url_.path);
    out_.version(11);
    const bool default_port = url_.port == (url_.tls ? 443 : 80);
    const std::string host =
        url_.host.find(':') != std::string::npos ? "[" + url_.host + "]" : url_.host;
    out_.set(bhttp::field::host, default_port ? host : host + ":" + std::to_string(url_.port));
    out_.set(bhttp::field::user_agent, impl_->options.user_agent);
    for (const auto& [k, v] : request_.headers) out_.set(k, v);
    out_.body() = std::move(request_.body);
    if (!out_.body().empty() || request_.method == "POST" || request_.method == "PUT" ||
        request_.method == "PATCH") {
      out_.prepare_payload();
    }
    bhttp::async_write(
        stream_, out_, [self = this->shared_from_this()](beast::error_code ec, size_t) {
          if (ec) {
            return self->Fail(ec, "sending the request", absl::StatusCode::kUnavailable);
          }
          self->ReadHeader();
        });
  }

  void ReadHeader() {
    Arm(request_.idle_timeout);
    parser_.body_limit(boost::none);
    parser_.header_limit(static_cast<uint32_t>(impl_->options.max_header_bytes));
    bhttp::async_read_header(
        stream_, buffer_, parser_, [self = this->shared_from_this()](beast::error_code ec, size_t) {
          if (ec) {
            return self->Fail(ec, "reading the response", absl::StatusCode::kUnavailable);
          }
          self->OnHeader();
        });
  }

  void OnHeader() {
    std::map<std::string, std::string> headers;
    for (const auto& f : parser_.get()) {
      std::string name(f.name_string());
      absl::AsciiStrToLower(&name);
      headers[std::move(name)] = std::string(f.value());
    }
    handler_->OnResponse(static_cast<int>(parser_.get().result_int()), headers);
    ReadBody();
  }

  void ReadBody() {
    if (parser_.is_done()) {
      ++timer_gen_;
      timer_.cancel();
      CloseSocket();
      return Complete(absl::OkStatus());
    }
    if (reason_ != Reason::kNone) return Fail(asio::error::operation_aborted, "reading", {});
    Arm(request_.idle_timeout);
    parser_.get().body().data = chunk_;
    parser_.get().body().size = sizeof chunk_;
    bhttp::async_read_some(
        stream_, buffer_, parser_, [self = this->shared_from_this()](beast::error_code ec, size_t) {
          if (ec == bhttp::error::need_buffer) ec = {};
          const size_t n = sizeof self->chunk_ - self->parser_.get().body().size;
          if (n > 0 && self->reason_ == Reason::kNone) {
            self->handler_->OnBody(std::string_view(self->chunk_, n));
          }
          if (ec) {
            return self->Fail(ec, "reading the body", absl::StatusCode::kInternal);
          }
          self->ReadBody();
        });
  }

  // `code` is the status of an error that was neither a cancel nor a timeout.
  void Fail(beast::error_code ec, const char* what, absl::StatusCode code) {
    if (reason_ == Reason::kCancelled) return Complete(absl::CancelledError("cancelled"));
    const std::string where = std::string(what) + " " + url_.host + ":" + std::to_string(url_.port);
    if (reason_ == Reason::kTimedOut) {
      return Complete(absl::DeadlineExceededError("timed out " + where));
    }
    if (code == absl::StatusCode::kOk) code = absl::StatusCode::kInternal;
    Complete(absl::Status(code, where + ": " + ec.message()));
  }

  void Complete(absl::Status status) {
    if (done_) return;
    done_ = true;
    ++timer_gen_;
    timer_.cancel();
    CloseSocket();
    auto handler = std::move(handler_);
    handler->OnComplete(status);
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->live.erase(key_);
  }

  const std::shared_ptr<AsyncClient::Impl> impl_;
  const uint64_t key_;
  asio::strand<asio::io_context::executor_type> strand_;
  tcp::resolver resolver_;
  Stream stream_;
  asio::steady_timer timer_;
  uint64_t timer_gen_ = 0;
  const Url url_;
  AsyncRequest request_;
  std::shared_ptr<ResponseHandler> handler_;
  bhttp::request<bhttp::string_body> out_;
  beast::flat_buffer buffer_;
  bhttp::response_parser<bhttp::buffer_body> parser_;
  char chunk_[16 << 10];
  Reason reason_ = Reason::kNone;
  bool done_ = false;
};

// A call that cannot start (a URL that does not parse).
class FailedCall final : public AsyncCall {
 public:
  void Cancel() override {}
};

}  // namespace

AsyncClient::AsyncClient(AsyncClientOptions options)
    : impl_(std::make_shared<Impl>(std::move(options))) {
  beast::error_code ec;
  impl_->tls.set_default_verify_paths(ec);
  if (ec) spdlog::warn("http client: no system CA certificates: {}", ec.message());
  if (!impl_->options.ca_file.empty()) {
    impl_->tls.load_verify_file(impl_->options.ca_file, ec);
    if (ec) spdlog::error("http client: cannot load {}: {}", impl_->options.ca_file, ec.message());
  }
  for (int i = 0; i < std::max(1, impl_->options.threads); ++i) {
    impl_->threads.emplace_back([impl = impl_.get()] { impl->io.run(); });
  }
}

AsyncClient::~AsyncClient() {
  std::vector<std::shared_ptr<AsyncCall>> calls;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stopping = true;
    for (auto& [key, weak] : impl_->live) {
      if (auto call = weak.lock()) calls.push_back(std::move(call));
    }
  }
  for (auto& call : calls) call->Cancel();
  calls.clear();
  impl_->work.reset();  // run() returns once the cancelled calls have completed
  for (auto& t : impl_->threads) t.join();
}

std::shared_ptr<AsyncCall> AsyncClient::Start(AsyncRequest request,
                                              std::shared_ptr<ResponseHandler> handler) {
  auto url = Url::Parse(request.url);
  if (!url.ok()) {
    asio::post(impl_->io, [handler, st = url.status()] { handler->OnComplete(st); });
    return std::make_shared<FailedCall>();
  }
  std::shared_ptr<AsyncCall> call;
  std::function<void()> begin;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (impl_->stopping) {
      asio::post(impl_->io, [handler] {
        handler->OnComplete(absl::CancelledError("the client is shutting down"));
      });
      return std::make_shared<FailedCall>();
    }
    const uint64_t key = ++impl_->next_call;
    if (url->tls) {
      auto c = std::make_shared<Call<ssl::stream<tcp::socket>>>(impl_, key, *std::move(url),
                                                                std::move(request), handler);
      begin = [c] { c->Begin(); };
      call = c;
    } else {
      auto c = std::make_shared<Call<tcp::socket>>(impl_, key, *std::move(url), std::move(request),
                                                   handler);
      begin = [c] { c->Begin(); };
      call = c;
    }
    impl_->live[key] = call;
  }
  begin();
  return call;
}

}  // namespace sb::http
