#include "http/request_parse.h"

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <string>

#include "absl/strings/ascii.h"
#include "http/beast_request.h"

namespace sb::http {

namespace bhttp = boost::beast::http;

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

Request RequestFromBeastHeader(const bhttp::request_header<>& msg) {
  Request r;
  r.method = std::string(msg.method_string());
  r.target = std::string(msg.target());
  const auto q = r.target.find('?');
  r.path = r.target.substr(0, q);
  if (q != std::string::npos) r.query = r.target.substr(q + 1);
  for (const auto& field : msg) {
    std::string name(field.name_string());
    absl::AsciiStrToLower(&name);
    r.headers[std::move(name)] = std::string(field.value());
  }
  return r;
}

Request RequestFromBeast(bhttp::request<bhttp::string_body>&& msg) {
  Request r = RequestFromBeastHeader(msg);
  r.body = std::move(msg.body());
  return r;
}

absl::StatusOr<Request> ParseRequest(std::string_view wire, size_t max_body) {
  bhttp::request_parser<bhttp::string_body> parser;
  parser.body_limit(max_body);
  parser.header_limit(static_cast<std::uint32_t>(kMaxHeaderBytes));
  // Everything is already here: parse the body in the same pass as the
  // header instead of stopping after it.
  parser.eager(true);
  boost::beast::error_code ec;
  while (!parser.is_done()) {
    const size_t used = parser.put(boost::asio::buffer(wire.data(), wire.size()), ec);
    wire.remove_prefix(used);
    if (ec == bhttp::error::need_more) ec = {};
    if (ec == bhttp::error::body_limit) {
      return absl::ResourceExhaustedError("request body exceeds " + std::to_string(max_body) +
                                          " bytes");
    }
    if (ec) return absl::InvalidArgumentError("malformed HTTP request: " + ec.message());
    // All the bytes there will be are here: a parser that wants more has
    // a truncated request (a request's body never runs to end of input,
    // so put_eof could only fail; and it must not see an empty input).
    if (used == 0 && !parser.is_done()) {
      return absl::InvalidArgumentError("truncated HTTP request");
    }
  }
  if (!wire.empty()) return absl::InvalidArgumentError("bytes after the HTTP request");
  return RequestFromBeast(parser.release());
}

}  // namespace sb::http
