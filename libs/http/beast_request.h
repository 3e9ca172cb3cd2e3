// Internal to sb_http: the conversion from a message Beast parsed to
// sb::http::Request, shared by ParseRequest and the server. Only
// for sources compiled like sb_http's, with BOOST_BEAST_USE_STD_STRING_VIEW.
#pragma once

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>

#include "http/http_server.h"

namespace sb::http {

// The request line and headers (the server converts them before it reads
// the body).
Request RequestFromBeastHeader(const boost::beast::http::request_header<>& msg);
// Moves the body out of `msg`; read msg.keep_alive() before calling.
Request RequestFromBeast(boost::beast::http::request<boost::beast::http::string_body>&& msg);

}  // namespace sb::http
