#include "e2e/events_device.h"

#include "http/sse_parser.h"

namespace sb::testing {

struct EventsDevice::State final : http::ResponseHandler {
  void OnResponse(int code, const std::map<std::string, std::string>&) override {
    std::lock_guard<std::mutex> lock(mu);
    status = code;
    cv.notify_all();
  }
  void OnBody(std::string_view piece) override {
    const auto now = std::chrono::steady_clock::now();
    std::lock_guard<std::mutex> lock(mu);
    if (status != 200) {
      error_body.append(piece);
      return;
    }
    (void)parser.Feed(piece, [&](const http::SseEvent& e) {
      if (e.event == "ping") return;
      Event out{e.id, e.event, nlohmann::json::parse(e.data, nullptr, false), now};
      events.push_back(std::move(out));
    });
    cv.notify_all();
  }
  void OnComplete(const absl::Status&) override {
    std::lock_guard<std::mutex> lock(mu);
    done = true;
    cv.notify_all();
  }

  std::mutex mu;
  std::condition_variable cv;
  int status = 0;
  bool done = false;
  std::string error_body;
  http::SseParser parser;
  std::vector<Event> events;
};

EventsDevice::EventsDevice(http::AsyncClient& client, int port, const std::string& api_key,
                           const std::string& last_event_id)
    : state_(std::make_shared<State>()) {
  http::AsyncRequest req{.url = "http://127.0.0.1:" + std::to_string(port) + "/v1/events",
                         .headers = {{"x-api-key", api_key}},
                         .idle_timeout = std::chrono::milliseconds(0)};
  if (!last_event_id.empty()) req.headers.push_back({"last-event-id", last_event_id});
  call_ = client.Start(std::move(req), state_);
}

EventsDevice::~EventsDevice() { call_->Cancel(); }

bool EventsDevice::WaitSubscribed(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(state_->mu);
  state_->cv.wait_for(lock, timeout, [&] { return state_->status != 0 || state_->done; });
  return state_->status == 200;
}

int EventsDevice::status() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->status;
}

std::string EventsDevice::error_body() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->error_body;
}

std::vector<EventsDevice::Event> EventsDevice::Events(size_t n, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(state_->mu);
  state_->cv.wait_for(lock, timeout, [&] { return state_->events.size() >= n || state_->done; });
  return state_->events;
}

}  // namespace sb::testing
