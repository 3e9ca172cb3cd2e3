// A raw HTTP client for tests of the edge: it sends exactly the bytes a
// slow or abusive client would, and reads what comes back with a 5 s
// timeout (a server that never answers fails the test instead of hanging
// it). Header-only; blocking.
#pragma once

#include <sys/socket.h>
#include <sys/time.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <cerrno>
#include <string>

namespace sb::testing {

class RawClient {
 public:
  explicit RawClient(int port) : socket_(io_) {
    socket_.connect(
        {boost::asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)});
    // Reads give up after 5 s: a server that never answers fails the test
    // instead of hanging it.
    timeval tv{.tv_sec = 5, .tv_usec = 0};
    ::setsockopt(socket_.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  void Send(const std::string& data) {
    boost::system::error_code ec;
    boost::asio::write(socket_, boost::asio::buffer(data), ec);
  }
  // Everything until the server closes (or 5 s of silence).
  std::string ReadToClose(bool* closed = nullptr) {
    std::string got;
    char buf[1024];
    for (;;) {
      const ssize_t n = ::recv(socket_.native_handle(), buf, sizeof buf, 0);
      if (n <= 0) {
        if (closed != nullptr) *closed = (n == 0 || errno == ECONNRESET);
        return got;
      }
      got.append(buf, static_cast<size_t>(n));
    }
  }
  // What arrives until `needle` has (or 5 s of silence).
  std::string ReadUntil(const std::string& needle) {
    std::string got;
    char buf[1024];
    while (got.find(needle) == std::string::npos) {
      const ssize_t n = ::recv(socket_.native_handle(), buf, sizeof buf, 0);
      if (n <= 0) break;
      got.append(buf, static_cast<size_t>(n));
    }
    return got;
  }
  // One response whose head contains "Content-Length" (enough for these tests).
  std::string ReadResponse() {
    std::string got;
    char buf[1024];
    while (true) {
      const auto head_end = got.find("\r\n\r\n");
      if (head_end != std::string::npos) {
        const auto cl = got.find("Content-Length: ");
        if (cl != std::string::npos && cl < head_end) {
          const size_t len = std::stoul(got.substr(cl + 16));
          if (got.size() >= head_end + 4 + len) return got;
        }
      }
      const ssize_t n = ::recv(socket_.native_handle(), buf, sizeof buf, 0);
      if (n <= 0) return got;
      got.append(buf, static_cast<size_t>(n));
    }
  }

 private:
  boost::asio::io_context io_;
  boost::asio::ip::tcp::socket socket_;
};

}  // namespace sb::testing
