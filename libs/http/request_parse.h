// One HTTP/1.1 request from bytes to sb::http::Request, the way the server
// reads it (Boost.Beast's parser, the same header and body limits), as a
// pure function: no socket, no threads. It exists so that the parsing of
// what clients send can be unit-tested and fuzzed on its own.
//
//   auto r = sb::http::ParseRequest("GET /v1/models?limit=2 HTTP/1.1\r\n"
//                                   "Host: x\r\nX-Api-Key: k\r\n\r\n", 4 << 20);
//   r->path == "/v1/models"; r->QueryParam("limit") == "2"; r->Header("x-api-key") == "k"
#pragma once

#include <cstddef>
#include <string_view>

#include "absl/status/statusor.h"
#include "http/http_server.h"

namespace sb::http {

// The most header bytes (request line and fields) a request may have.
inline constexpr size_t kMaxHeaderBytes = 64 * 1024;

// Parses `wire`, which must hold exactly one complete request (with its
// whole body, chunked or not). Header names are lower-cased; a name sent
// twice keeps its last value (as the server does); `target` is split at
// the first '?' into `path` and `query`.
//
// Errors: ResourceExhausted when the body is longer than `max_body` (the
// server's 413); InvalidArgument for anything else that is not one whole,
// well-formed request: malformed syntax, a header over kMaxHeaderBytes,
// truncated input, or bytes after the request (the server's 400).
absl::StatusOr<Request> ParseRequest(std::string_view wire, size_t max_body);

}  // namespace sb::http
