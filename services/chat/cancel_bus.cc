#include "chat/cancel_bus.h"

#include <spdlog/spdlog.h>

#include <chrono>

#include "core/metrics.h"

namespace sb::chat {

namespace {
constexpr std::chrono::milliseconds kBlock{500};
}  // namespace

CancelBus::CancelBus(BlockingRedis& redis, std::function<void(const std::string&)> on_cancel)
    : redis_(redis),
      on_cancel_(std::move(on_cancel)),
      received_(metrics::Default().GetCounter("sb_chat_cancel_bus_received_total",
                                              "Stops read from the replicas' cancel stream")),
      read_errors_(metrics::Default().GetCounter("sb_chat_cancel_bus_errors_total",
                                                 "Failed reads of the replicas' cancel stream")) {}

CancelBus::~CancelBus() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void CancelBus::Start() {
  thread_ = std::thread([this] { Loop(); });
}

absl::Status CancelBus::Publish(const std::string& message_id) {
  auto r = redis_.Command({"XADD", kCancelStream, "MAXLEN", "~",
                           std::to_string(kCancelStreamLength), "*", "m", message_id});
  return r.ok() ? absl::OkStatus() : r.status();
}

void CancelBus::Loop() {
  // "$": what arrives after the first read; then the last id read, so that
  // nothing published while a read was being renewed is missed.
  std::string last = "$";
  while (!stop_) {
    auto r = redis_.BlockingCommand(
        {"XREAD", "BLOCK", std::to_string(kBlock.count()), "STREAMS", kCancelStream, last},
        kBlock + std::chrono::milliseconds(1500));
    if (!r.ok()) {
      read_errors_.Inc();
      spdlog::warn("chat cancel stream: {}", r.status().ToString());
      std::this_thread::sleep_for(kBlock);
      continue;
    }
    // [[stream, [[id, [field, value, ...]], ...]]], or nil on timeout.
    if (r->is_nil() || r->elements.empty() || r->elements[0].elements.size() < 2) continue;
    for (const auto& entry : r->elements[0].elements[1].elements) {
      if (entry.elements.size() < 2) continue;
      last = entry.elements[0].str;
      const auto& fields = entry.elements[1].elements;
      for (size_t i = 0; i + 1 < fields.size(); i += 2) {
        if (fields[i].str == "m") {
          received_.Inc();
          on_cancel_(fields[i + 1].str);
        }
      }
    }
  }
}

}  // namespace sb::chat
