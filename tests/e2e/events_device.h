// A device following its user's chat events (GET /v1/events) through a
// gateway, for the e2e tests and the fan-out benchmark: the events as they
// arrive, each with the time it arrived. Many devices share one AsyncClient
// (no thread per device); destroying a device closes its connection at once.
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "http/async_client.h"

namespace sb::testing {

class EventsDevice {
 public:
  struct Event {
    std::string id;
    std::string type;
    nlohmann::json data;
    std::chrono::steady_clock::time_point arrived;
  };

  EventsDevice(http::AsyncClient& client, int port, const std::string& api_key,
               const std::string& last_event_id = "");
  ~EventsDevice();
  EventsDevice(const EventsDevice&) = delete;
  EventsDevice& operator=(const EventsDevice&) = delete;

  // The gateway answers 200 only once the subscription is in place: events
  // after that reach this device. False after `timeout`, or on another status.
  bool WaitSubscribed(std::chrono::milliseconds timeout = std::chrono::seconds(20));
  // The response's status (0 until it arrives) and, for an error, its body.
  int status() const;
  std::string error_body() const;
  // The events so far (pings left out), once there are at least `n` or
  // `timeout` has passed.
  std::vector<Event> Events(size_t n, std::chrono::milliseconds timeout = std::chrono::seconds(20));

 private:
  struct State;
  std::shared_ptr<State> state_;
  std::shared_ptr<http::AsyncCall> call_;
};

}  // namespace sb::testing
