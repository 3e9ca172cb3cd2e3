// Publishing to the event bus (Kafka in production, FakePublisher in
// libs/testing), behind the one call the services need.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace sb {

class Publisher {
 public:
  virtual ~Publisher() = default;
  // Queues the message for delivery; an error means it was not queued
  // (ResourceExhausted: the local buffer is full), never a silent drop.
  virtual absl::Status Publish(const std::string& topic, const std::string& key,
                               const std::string& value) = 0;
};

}  // namespace sb
