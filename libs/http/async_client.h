// An asynchronous HTTP/1.1 client (Boost.Beast on Asio) for long streamed
// responses such as an upstream model's server-sent events. One client owns
// one io_context run by a few threads (1 by default) that every call shares:
// there is no thread per call.
//
// A call delivers, in order and never concurrently: OnResponse once when
// the status line and headers are in, OnBody for each piece of the body as
// it arrives (chunked transfer encoding decoded), then OnComplete exactly
// once. Callbacks run on the client's threads and must not block.
//
// OnComplete's status:
//   OK                 the whole body arrived;
//   Unavailable        the host did not resolve, or refused or reset the connection
//                      before a response began;
//   DeadlineExceeded   the connection (and TLS handshake) took longer than
//                      connect_timeout, or nothing arrived for idle_timeout;
//   Cancelled          Cancel() was called;
//   Internal           anything else (TLS failure, malformed response, the body
//                      cut short).
// Messages are for logs: they name the host and the library's error.
//
// http:// and https:// URLs are supported; https verifies the peer against
// the system's CA certificates (and the host name) and sends SNI. Each call
// opens its own connection and closes it at the end (no pool yet).
//
//   AsyncClient client;
//   auto call = client.Start({.method = "POST", .url = "http://127.0.0.1:8000/v1/x"}, handler);
//   call->Cancel();  // closes the socket at once; OnComplete(Cancelled) follows
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "http/http_server.h"

namespace sb::http {

struct Url {
  bool tls = false;
  std::string host;
  int port = 0;
  std::string path;  // with the query; "/" when empty

  // Parses http://host[:port][/path] and https://... (IPv6 hosts in []).
  static absl::StatusOr<Url> Parse(std::string_view url);
};

struct AsyncRequest {
  std::string method = "GET";
  std::string url;
  Headers headers;  // Host, Content-Length and User-Agent are added
  std::string body;
  std::chrono::milliseconds connect_timeout{5000};
  // The longest silence allowed while the request is written and the
  // response read; 0 for none.
  std::chrono::milliseconds idle_timeout{60000};
};

class ResponseHandler {
 public:
  virtual ~ResponseHandler() = default;
  // `headers` names are lower-cased.
  virtual void OnResponse(int status, const std::map<std::string, std::string>& headers) = 0;
  virtual void OnBody(std::string_view piece) = 0;
  virtual void OnComplete(const absl::Status& status) = 0;
};

class AsyncCall {
 public:
  virtual ~AsyncCall() = default;
  // Closes the connection at once (the server sees the client leave) and
  // completes the call with Cancelled unless it has completed already.
  // Safe from any thread, any number of times.
  virtual void Cancel() = 0;
};

struct AsyncClientOptions {
  int threads = 1;
  // PEM file of extra CA certificates to trust for https (tests); the
  // system's are always trusted.
  std::string ca_file;
  std::string user_agent = "switchboard";
  size_t max_header_bytes = 64 << 10;
};

class AsyncClient {
 public:
  explicit AsyncClient(AsyncClientOptions options = {});
  // Cancels every call still running, waits for their OnComplete, joins.
  ~AsyncClient();
  AsyncClient(const AsyncClient&) = delete;
  AsyncClient& operator=(const AsyncClient&) = delete;

  // Starts a call; `handler` is kept until OnComplete has returned. A URL
  // that does not parse completes with InvalidArgument (asynchronously, as
  // every other outcome).
  std::shared_ptr<AsyncCall> Start(AsyncRequest request, std::shared_ptr<ResponseHandler> handler);

  struct Impl;  // internal, shared with the calls

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace sb::http
