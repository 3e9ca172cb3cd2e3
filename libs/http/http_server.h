// An asynchronous HTTP/1.1 server (Boost.Beast on a small pool of Asio
// threads) for the public API and for /metrics. Handlers run on a server
// thread and must not block: they answer at once, or hand the exchange to
// whatever produces the answer and return.
//
// A response is either whole (Respond) or streamed with chunked transfer
// encoding (StartStream, then Write one chunk at a time, then EndStream), as
// server-sent events need. Connections are kept alive between requests.
//
// The server faces the internet, so nobody gets to hold its resources for
// free: a request's headers must arrive within a deadline, its body at a
// minimum rate, and connections (in total and per client address), requests
// in flight and body bytes buffered are capped (ServerOptions). With
// `defer_body` the handler sees a request as soon as its headers are in and
// reads the body only if it wants it (Exchange::ReadBody): a request without
// a valid key is refused before a byte of its body is buffered.
//
//   HttpServer server({.port = 8080}, [](std::shared_ptr<HttpExchange> ex) {
//     ex->Respond(200, {{"content-type", "text/plain"}}, "ok\n");
//   });
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace sb::http {

using Headers = std::vector<std::pair<std::string, std::string>>;

struct Request {
  std::string method;
  std::string target;                          // as sent: path and query
  std::string path;                            // percent-decoding is left to the handler
  std::string query;                           // after '?', empty when absent
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;                            // see Exchange::ReadBody
  std::string client_ip;                       // the TCP peer's address

  // The header's value, or "" when absent. `name` is lower case.
  std::string Header(const std::string& name) const;
  // The value of a query parameter, or "" when absent (no percent-decoding).
  std::string QueryParam(const std::string& name) const;
};

class Exchange {
 public:
  virtual ~Exchange() = default;
  virtual const Request& request() const = 0;

  // Reads the request's body into request().body, then runs `done` once, on
  // a server thread, never inside ReadBody. Needed only when the server
  // runs with `defer_body` (otherwise the body is read before the handler
  // runs, and `done` gets OK at once). Errors, each answered by the handler
  // with HttpStatusOfBodyError's status: OutOfRange (too large),
  // Unavailable (the server buffers too many bodies now), InvalidArgument
  // (malformed), DeadlineExceeded (slower than the minimum rate; the
  // connection is already closed) and Cancelled (the client left). After an
  // error the connection closes once the response is written.
  virtual void ReadBody(std::function<void(absl::Status)> done) = 0;

  // A whole response. Content-Length is set here.
  virtual void Respond(int status, Headers headers, std::string body) = 0;

  // A streamed response. Writes go out in the order they were made; a
  // producer that wants backpressure issues the next Write from `done`.
  // `done(false)` means the client has gone away; every later Write fails
  // the same way. `done` never runs inside Write: always later, on a server
  // thread (so a caller may hold its own lock across Write).
  virtual void StartStream(int status, Headers headers) = 0;
  virtual void Write(std::string data, std::function<void(bool ok)> done) = 0;
  virtual void EndStream() = 0;

  // Runs `fn` once, on a server thread, if the client closes its connection
  // before the response is complete (Respond, or EndStream, not yet
  // called): the way to cancel work nobody will read. Runs at once if the
  // client has already gone. A client that half-closes its side after
  // sending the request counts as gone. Only the latest `fn` is kept.
  virtual void OnClientGone(std::function<void()> fn) = 0;
};

using Handler = std::function<void(std::shared_ptr<Exchange>)>;

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 0;  // 0: pick a free port
  int threads = 2;
  size_t max_body_bytes = 4 << 20;
  // Hand a request to the handler once its headers are in; the body is read
  // by Exchange::ReadBody. Otherwise the body is read first.
  bool defer_body = false;

  // Slow clients. A request's headers must be complete within
  // `header_timeout` of the connection opening (first request) or of the
  // request's first byte (later ones); a kept-alive connection may idle
  // `keepalive_timeout` between requests; a body may take `body_timeout`
  // plus one second for every `min_body_rate` bytes it has delivered.
  std::chrono::milliseconds header_timeout{10'000};
  std::chrono::milliseconds keepalive_timeout{60'000};
  std::chrono::milliseconds body_timeout{10'000};
  size_t min_body_rate = 8 << 10;  // bytes per second

  // Caps, 0 for none. A connection over either connection cap is answered
  // 503 and closed at once; a request over `max_requests_in_flight` (those
  // handed to the handler and not yet answered in full, streams included)
  // is answered 503; a body that would take the bodies buffered in total
  // over `max_buffered_bytes` fails with Unavailable (see ReadBody).
  size_t max_connections = 0;
  size_t max_connections_per_ip = 0;
  size_t max_requests_in_flight = 0;
  size_t max_buffered_bytes = 0;

  // Non-empty: export sb_http_* metrics labelled listener="<this>".
  std::string metrics_listener;
};

class Server {
 public:
  Server(ServerOptions options, Handler handler);
  ~Server();  // Stop()
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  absl::Status Start();
  int port() const { return port_; }
  // Requests handed to the handler and not yet answered in full (a stream
  // counts until its end).
  size_t requests_in_flight() const;
  // Stops accepting and closes every connection; joins the threads.
  void Stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
};

// The body of every error this server writes itself (malformed HTTP, body
// too large), in the public API's error format.
std::string ErrorJson(const std::string& type, const std::string& message);

// The HTTP status that answers a ReadBody error (413, 503, 400, 408, 499).
int HttpStatusOfBodyError(const absl::Status& status);

}  // namespace sb::http
