#include "connection-manager/event_hub.h"

#include <spdlog/spdlog.h>

#include <map>

#include "core/metrics.h"

namespace sb::connection {

namespace conn = switchboard::connection::v1;

namespace {

constexpr int kBlockMs = 100;
constexpr int kReadCount = 64;

grpc::Status Draining() {
  return grpc::Status(grpc::StatusCode::UNAVAILABLE, "connection-manager is draining");
}

}  // namespace

EventHub::EventHub(BlockingRedis& redis, int start_threads)
    : redis_(redis),
      starts_(start_threads, 4096),
      pollers_([this](const std::string& group) { Loop(group); }) {}

EventHub::~EventHub() { Stop(); }

void EventHub::Stop() {
  std::list<std::shared_ptr<Sub>> subs;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return;
    stop_ = true;
    subs.swap(subs_);
  }
  cv_.notify_all();
  pollers_.Join();
  starts_.Stop();
  for (auto& s : subs) s->out->Finish(Draining());
}

size_t EventHub::active() const {
  std::lock_guard<std::mutex> lock(mu_);
  return subs_.size();
}

void EventHub::Subscribe(conn::SubscribeEventsRequest req, std::shared_ptr<EventOut> out) {
  auto sub = std::make_shared<Sub>();
  sub->key = UserEventsKey(req.org_id(), req.user_id());
  sub->group = redis_.ReadGroupOf(sub->key);
  sub->out = std::move(out);
  if (!starts_.Submit([this, sub, after = req.after()] { Begin(sub, after); })) {
    sub->out->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "too many subscriptions; retry"));
  }
}

void EventHub::Begin(const std::shared_ptr<Sub>& sub, const std::string& after) {
  static auto& resets = metrics::Default().GetCounter(
      "sb_connection_event_resets_total",
      "Event subscriptions whose cursor was older than the events kept (told to reload)");
  auto start = ResolveStart(redis_, sub->key, after);
  if (!start.ok()) {
    if (start.status().code() == absl::StatusCode::kInvalidArgument) {
      sub->out->Finish(
          grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::string(start.status().message())));
    } else {
      spdlog::warn("events of {}: {}", sub->key, start.status().ToString());
      sub->out->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "event stream unavailable"));
    }
    return;
  }
  sub->cursor = start->after;
  // The opening (and a reset) are the first messages: the queue has room.
  conn::UserEvent opening;
  opening.set_cursor(start->after.ToString());
  sub->out->Push(opening);
  if (start->reset) {
    resets.Inc();
    opening.set_reset(true);
    sub->out->Push(std::move(opening));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) {
      sub->out->Finish(Draining());
      return;
    }
    subs_.push_back(sub);
    pollers_.Ensure(sub->group);
  }
  cv_.notify_all();
}

void EventHub::Loop(const std::string& group) {
  auto& active_gauge = metrics::Default().GetGauge("sb_connection_event_subscribers",
                                                   "Devices following their user's chat events");
  auto& delivered = metrics::Default().GetCounter("sb_connection_events_delivered_total",
                                                  "Chat events sent to devices");
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    // Drop what ended; each user's stream is read from the earliest cursor
    // of its devices with room for a whole read.
    std::map<std::string, StreamId> from;
    std::vector<std::shared_ptr<Sub>> ready;
    for (auto it = subs_.begin(); it != subs_.end();) {
      Sub& s = **it;
      if (s.group != group) {  // another poller's
        ++it;
        continue;
      }
      if (s.out->ended()) {
        it = subs_.erase(it);
        continue;
      }
      if (s.out->space() >= static_cast<size_t>(kReadCount)) {
        auto [at, fresh] = from.emplace(s.key, s.cursor);
        if (!fresh && s.cursor < at->second) at->second = s.cursor;
        ready.push_back(*it);
      }
      ++it;
    }
    active_gauge.Set(static_cast<double>(subs_.size()));
    if (ready.empty()) {
      cv_.wait_for(lock, std::chrono::milliseconds(kBlockMs));
      continue;
    }
    lock.unlock();
    std::vector<std::string> args = {
        "XREAD", "COUNT", std::to_string(kReadCount), "BLOCK", std::to_string(kBlockMs), "STREAMS"};
    for (const auto& [key, cursor] : from) args.push_back(key);
    for (const auto& [key, cursor] : from) args.push_back(cursor.ToString());
    auto reply = redis_.BlockingCommand(args, std::chrono::milliseconds(kBlockMs));
    // Parsed once per user, whatever the number of devices.
    std::map<std::string, std::vector<UserEventEntry>> read;
    if (reply.ok() && reply->type == RedisReply::Type::kArray) {
      for (const auto& stream : reply->elements) {
        if (stream.elements.size() != 2) continue;
        auto& entries = read[stream.elements[0].str];
        for (const auto& raw : stream.elements[1].elements) {
          auto entry = ParseUserEventEntry(raw);
          if (!entry.ok()) {
            spdlog::error("events of {}: {}", stream.elements[0].str, entry.status().ToString());
            continue;
          }
          entries.push_back(std::move(*entry));
        }
      }
    }
    lock.lock();
    if (!reply.ok()) {
      spdlog::warn("connection-manager events XREAD: {}", reply.status().ToString());
      CountPollFailure("events");
      cv_.wait_for(lock, std::chrono::milliseconds(200));
      continue;
    }
    for (const auto& s : ready) {
      auto it = read.find(s->key);
      if (it == read.end()) continue;
      for (const auto& entry : it->second) {
        if (entry.id <= s->cursor) continue;  // this device has it
        s->cursor = entry.id;
        conn::UserEvent out;
        out.set_cursor(entry.id.ToString());
        *out.mutable_event() = entry.event;
        s->out->Push(std::move(out));
        delivered.Inc();
      }
    }
  }
}

}  // namespace sb::connection
