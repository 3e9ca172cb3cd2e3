#include "http/http_client.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "absl/strings/ascii.h"

namespace sb::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

namespace {

absl::StatusOr<Response> DoExchange(const ClientRequest& req,
                                  const std::function<bool(std::string_view)>* on_data) {
  try {
    asio::io_context io;
    beast::tcp_stream stream(io);
    stream.expires_after(req.timeout);
    tcp::resolver resolver(io);
    stream.connect(resolver.resolve(req.host, std::to_string(req.port)));

    bhttp::request<bhttp::string_body> out(bhttp::string_to_verb(req.method), req.target, 11);
    out.set(bhttp::field::host, req.host + ":" + std::to_string(req.port));
    for (const auto& [k, v] : req.headers) out.set(k, v);
    out.body() = req.body;
    if (!req.body.empty() || req.method == "POST" || req.method == "PUT" ||
        req.method == "PATCH") {
      out.prepare_payload();
    }
    bhttp::write(stream, out);

    beast::flat_buffer buffer;
    bhttp::response_parser<bhttp::buffer_body> parser;
    parser.body_limit(boost::none);
    bhttp::read_header(stream, buffer, parser);
    Response resp;
    resp.status = static_cast<int>(parser.get().result_int());
    for (const auto& f : parser.get()) {
      std::string name(f.name_string());
      absl::AsciiStrToLower(&name);
      resp.headers[std::move(name)] = std::string(f.value());
    }
    while (!parser.is_done()) {
      char tmp[8192];
      parser.get().body().data = tmp;
      parser.get().body().size = sizeof tmp;
      beast::error_code ec;
      bhttp::read_some(stream, buffer, parser, ec);  // returns with what has arrived
      if (ec == bhttp::error::need_buffer) ec = {};
      if (ec) return absl::UnavailableError("reading response: " + ec.message());
      const size_t n = sizeof tmp - parser.get().body().size;
      if (n == 0) continue;
      if (on_data != nullptr) {
        if (!(*on_data)(std::string_view(tmp, n))) {
          beast::error_code ignored;
          stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
          stream.socket().close(ignored);
          return resp;
        }
      } else {
        resp.body.append(tmp, n);
      }
    }
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    return resp;
  } catch (const std::exception& e) {
    return absl::UnavailableError(std::string("http ") + req.method + " " + req.target + ": " +
                                  e.what());
  }
}

}  // namespace

absl::StatusOr<Response> Fetch(const ClientRequest& req) { return DoExchange(req, nullptr); }

absl::StatusOr<Response> FetchStreaming(const ClientRequest& req,
                                        const std::function<bool(std::string_view)>& on_data) {
  return DoExchange(req, &on_data);
}

}  // namespace sb::http
