// A small blocking HTTP/1.1 client for tests, benchmarks and tools: one
// connection per call, a deadline on the whole exchange.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "http/http_server.h"

namespace sb::http {

struct Response {
  int status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
};

struct ClientRequest {
  std::string host = "127.0.0.1";
  int port = 0;
  std::string method = "GET";
  std::string target = "/";
  Headers headers;
  std::string body;
  std::chrono::milliseconds timeout{30000};
};

absl::StatusOr<Response> Fetch(const ClientRequest& req);

// Streams the body: `on_data` sees each piece as it arrives (the body is not
// kept in the result). Returning false from `on_data` drops the connection
// at once, as a client that goes away mid-stream does.
absl::StatusOr<Response> FetchStreaming(const ClientRequest& req,
                                        const std::function<bool(std::string_view)>& on_data);

}  // namespace sb::http
