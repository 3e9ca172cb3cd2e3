// An HTTP exchange in memory: a request to hand to a handler, and a record
// of what the handler answered. As the real server does, a Write's `done`
// never runs inside Write: it waits until the test calls RunPending() (ok
// unless the client is "gone"). OnClientGone fires when the test calls
// ClientLeaves(). ReadBody answers at once (inline, unlike the server: the
// body is already in the request), with the error set by FailBodyWith.
#pragma once

#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "http/http_server.h"

namespace sb::testing {

class FakeExchange final : public http::Exchange {
 public:
  explicit FakeExchange(http::Request request) : request_(std::move(request)) {}

  const http::Request& request() const override { return request_; }

  void ReadBody(std::function<void(absl::Status)> done) override {
    absl::Status st;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++body_reads_;
      st = body_error_;
    }
    done(st);
  }
  // Later ReadBody calls fail with `st` (a slow, oversized or lost body).
  void FailBodyWith(absl::Status st) {
    std::lock_guard<std::mutex> lock(mu_);
    body_error_ = std::move(st);
  }
  int body_reads() const {
    std::lock_guard<std::mutex> lock(mu_);
    return body_reads_;
  }

  void Respond(int status, http::Headers headers, std::string body) override {
    std::lock_guard<std::mutex> lock(mu_);
    ++responses_;
    status_ = status;
    headers_ = std::move(headers);
    body_ = std::move(body);
    done_ = true;
  }
  void StartStream(int status, http::Headers headers) override {
    std::lock_guard<std::mutex> lock(mu_);
    ++responses_;
    status_ = status;
    headers_ = std::move(headers);
  }
  void Write(std::string data, std::function<void(bool ok)> done) override {
    std::lock_guard<std::mutex> lock(mu_);
    const bool ok = !gone_ && !done_;
    if (ok) body_ += data;
    ++writes_;
    if (done) pending_.push_back([done = std::move(done), ok] { done(ok); });
  }
  // Completes the writes made so far (and those their callbacks make).
  void RunPending() {
    for (;;) {
      std::function<void()> next;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (pending_.empty()) return;
        next = std::move(pending_.front());
        pending_.erase(pending_.begin());
      }
      next();
    }
  }
  void EndStream() override {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
  }
  void OnClientGone(std::function<void()> fn) override {
    bool now;
    {
      std::lock_guard<std::mutex> lock(mu_);
      now = gone_;
      if (!now) on_gone_ = std::move(fn);
    }
    if (now) fn();
  }

  // The client closes its connection.
  void ClientLeaves() {
    std::function<void()> fn;
    {
      std::lock_guard<std::mutex> lock(mu_);
      gone_ = true;
      fn = std::move(on_gone_);
      on_gone_ = nullptr;
    }
    if (fn) fn();
  }

  int status() const {
    std::lock_guard<std::mutex> lock(mu_);
    return status_;
  }
  std::string body() const {
    std::lock_guard<std::mutex> lock(mu_);
    return body_;
  }
  std::string header(const std::string& name) const {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [k, v] : headers_) {
      if (k == name) return v;
    }
    return "";
  }
  bool done() const {
    std::lock_guard<std::mutex> lock(mu_);
    return done_;
  }
  int responses() const {
    std::lock_guard<std::mutex> lock(mu_);
    return responses_;
  }

 private:
  http::Request request_;
  mutable std::mutex mu_;
  absl::Status body_error_;
  int body_reads_ = 0;
  int status_ = 0;
  int responses_ = 0;
  int writes_ = 0;
  http::Headers headers_;
  std::string body_;
  bool done_ = false;
  bool gone_ = false;
  std::function<void()> on_gone_;
  std::vector<std::function<void()>> pending_;
};

// A request with the given method, path and headers (names lower case).
inline http::Request MakeRequest(std::string method, std::string path,
                                 std::map<std::string, std::string> headers = {},
                                 std::string body = "") {
  http::Request r;
  r.method = std::move(method);
  r.target = path;
  const auto q = path.find('?');
  r.path = path.substr(0, q);
  if (q != std::string::npos) r.query = path.substr(q + 1);
  r.headers = std::move(headers);
  r.body = std::move(body);
  return r;
}

}  // namespace sb::testing
