#include "connection-manager/subscription_hub.h"

#include <spdlog/spdlog.h>

#include "absl/time/clock.h"
#include "core/metrics.h"

namespace sb::connection {

namespace cpb = switchboard::chat::v1;
namespace conn = switchboard::connection::v1;

namespace {

constexpr int kBlockMs = 100;
constexpr int kReadCount = 64;
constexpr absl::Duration kStallCheck = absl::Seconds(3);
constexpr absl::Duration kGiveUp = absl::Minutes(15);

}  // namespace

conn::StreamEvent ToEvent(const StreamEntry& e) {
  conn::StreamEvent out;
  out.set_offset(e.offset);
  switch (e.kind) {
    case StreamEntry::Kind::kMessageStart:
      out.mutable_message_start()->set_model(e.model);
      out.mutable_message_start()->set_input_tokens(e.input_tokens);
      break;
    case StreamEntry::Kind::kBlockStart:
      out.mutable_content_block_start();
      break;
    case StreamEntry::Kind::kDelta:
      out.mutable_delta()->set_text(e.text);
      break;
    case StreamEntry::Kind::kBlockStop:
      out.mutable_content_block_stop();
      break;
    case StreamEntry::Kind::kMessageDelta: {
      auto* d = out.mutable_message_delta();
      d->set_stop_reason(e.stop_reason);
      d->set_stop_sequence(e.stop_sequence);
      d->set_input_tokens(e.input_tokens);
      d->set_output_tokens(e.output_tokens);
      break;
    }
    case StreamEntry::Kind::kMessageStop:
      out.mutable_message_stop();
      break;
    case StreamEntry::Kind::kError:
      out.mutable_error()->set_code(e.error_code);
      out.mutable_error()->set_message(e.error_message);
      break;
  }
  return out;
}

namespace {

conn::StreamEvent At(int64_t offset) {
  conn::StreamEvent e;
  e.set_offset(offset);
  return e;
}

}  // namespace

std::vector<conn::StreamEvent> FromPersisted(const cpb::ChatMessage& m, int64_t after_offset) {
  std::vector<conn::StreamEvent> out;
  const bool failed = m.status() == "failed";
  // The stream ended at `last`: a complete reply's events are
  //   1 message_start, 2 content_block_start, 3..last-3 deltas,
  //   last-2 content_block_stop, last-1 message_delta, last message_stop;
  // a failed one ends with an error at `last`.
  int64_t last = m.stream_last_offset();
  if (last == 0) last = failed ? 1 : (m.content().empty() ? 5 : 6);  // stored before offsets were
  if (after_offset >= last) return out;  // the client has seen the end: nothing remains
  if (failed) {
    auto e = At(last);
    e.mutable_error()->set_code(static_cast<int>(absl::StatusCode::kInternal));
    e.mutable_error()->set_message("the reply failed; its partial content is in the message");
    out.push_back(std::move(e));
    return out;
  }
  const int64_t last_delta = last - 3;  // == 2 when the reply has no text
  if (after_offset < 1) {
    auto e = At(1);
    e.mutable_message_start()->set_model(m.model());
    e.mutable_message_start()->set_input_tokens(m.input_tokens());
    out.push_back(std::move(e));
  }
  if (after_offset < 2) {
    auto e = At(2);
    e.mutable_content_block_start();
    out.push_back(std::move(e));
  }
  if (last_delta > 2 && after_offset < last_delta) {
    // With the deltas' lengths (replies stored since they are kept), every
    // delta as it was, at its own offset.
    const auto& lengths = m.delta_lengths();
    int64_t total = 0;
    for (int n : lengths) total += n;
    if (static_cast<int64_t>(lengths.size()) == last_delta - 2 &&
        total == static_cast<int64_t>(m.content().size())) {
      size_t begin = 0;
      for (int i = 0; i < lengths.size(); ++i) {
        const int64_t offset = 3 + i;
        if (offset > after_offset) {
          auto e = At(offset);
          e.mutable_delta()->set_text(m.content().substr(begin, lengths[i]));
          out.push_back(std::move(e));
        }
        begin += static_cast<size_t>(lengths[i]);
      }
    } else if (after_offset > 2) {
      // Token boundaries are not stored: the rest cannot be cut out exactly.
      auto e = At(after_offset + 1);
      e.mutable_error()->set_code(static_cast<int>(absl::StatusCode::kNotFound));
      e.mutable_error()->set_message(
          "the replay buffer for this reply has expired; read the complete message instead");
      out.push_back(std::move(e));
      return out;
    } else {
      // The whole text as one delta, at the offset the last delta had.
      auto e = At(last_delta);
      e.mutable_delta()->set_text(m.content());
      out.push_back(std::move(e));
    }
  }
  if (after_offset < last - 2) {
    auto e = At(last - 2);
    e.mutable_content_block_stop();
    out.push_back(std::move(e));
  }
  if (after_offset < last - 1) {
    auto e = At(last - 1);
    auto* d = e.mutable_message_delta();
    d->set_stop_reason(m.stop_reason());
    d->set_input_tokens(m.input_tokens());
    d->set_output_tokens(m.output_tokens());
    out.push_back(std::move(e));
  }
  auto stop = At(last);
  stop.mutable_message_stop();
  out.push_back(std::move(stop));
  return out;
}

SubscriptionHub::SubscriptionHub(BlockingRedis& redis, MessageLookup lookup, int lookup_threads)
    : redis_(redis),
      lookup_(std::move(lookup)),
      lookups_(lookup_threads, 4096),
      pollers_([this](const std::string& group) { Loop(group); }) {}

SubscriptionHub::~SubscriptionHub() { Stop(); }

void SubscriptionHub::Stop() {
  std::list<std::shared_ptr<Sub>> subs;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return;
    stop_ = true;
    subs.swap(subs_);
  }
  cv_.notify_all();
  pollers_.Join();
  for (auto& s : subs) {
    s->out->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "connection-manager is draining"));
  }
}

size_t SubscriptionHub::active() const {
  std::lock_guard<std::mutex> lock(mu_);
  return subs_.size();
}

void SubscriptionHub::Subscribe(conn::SubscribeRequest req, std::shared_ptr<StreamOut> out) {
  auto sub = std::make_shared<Sub>();
  sub->req = std::move(req);
  sub->out = std::move(out);
  sub->key = TokenStreamKey(sub->req.message_id());
  sub->group = redis_.ReadGroupOf(sub->key);
  sub->last_offset = sub->req.after_offset();
  sub->last_entry = absl::Now();
  sub->next_check = sub->last_entry + kStallCheck;
  if (!lookups_.Submit([this, sub] { Begin(sub); })) {
    sub->out->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "too many subscriptions; retry"));
  }
}

void SubscriptionHub::Begin(const std::shared_ptr<Sub>& sub) {
  // Authorises the subscriber (the message must be theirs) and decides
  // between the live buffer and the stored message.
  auto message = lookup_(sub->req);
  if (!message.ok()) {
    const auto code = message.status().code() == absl::StatusCode::kNotFound
                          ? grpc::StatusCode::NOT_FOUND
                          : grpc::StatusCode::UNAVAILABLE;
    sub->out->Finish(grpc::Status(code, std::string(message.status().message())));
    return;
  }
  // The buffer's last entry tells whether it exists and whether the client
  // has already seen its end.
  auto last = redis_.Command({"XREVRANGE", sub->key, "+", "-", "COUNT", "1"});
  if (!last.ok() || last->type != RedisReply::Type::kArray) {
    sub->out->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "stream buffer unavailable"));
    return;
  }
  if (last->elements.empty() && message->status() != "in_progress") {
    ServePersisted(*sub, *message);
    if (sub->done) return;
    std::lock_guard<std::mutex> lock(mu_);
    Follow(sub);  // the poller sends the rest
    return;
  }
  if (!last->elements.empty()) {
    auto entry = ParseStreamEntry(last->elements[0]);
    if (entry.ok() && entry->final() && entry->offset <= sub->req.after_offset()) {
      sub->out->Finish(grpc::Status::OK);  // the client has seen the end: nothing remains
      return;
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!Follow(sub)) return;
  }
  cv_.notify_all();
}

bool SubscriptionHub::Follow(const std::shared_ptr<Sub>& sub) {
  if (stop_) {
    sub->out->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "connection-manager is draining"));
    return false;
  }
  subs_.push_back(sub);
  pollers_.Ensure(sub->group);
  return true;
}

void SubscriptionHub::ServePersisted(Sub& sub, const cpb::ChatMessage& m) {
  // After what this subscriber was sent live; a long reply's events go as
  // the queue makes room (the poller drains the rest).
  auto events = FromPersisted(m, sub.last_offset);
  sub.backlog.assign(std::make_move_iterator(events.begin()),
                     std::make_move_iterator(events.end()));
  sub.serving = true;
  DrainBacklog(sub);
}

void SubscriptionHub::DrainBacklog(Sub& sub) {
  while (!sub.backlog.empty() && sub.out->space() > 0) {
    if (!sub.out->Push(std::move(sub.backlog.front()))) break;
    sub.backlog.pop_front();
  }
  if (sub.backlog.empty()) {
    sub.out->Finish(grpc::Status::OK);
    sub.done = true;
  }
}

bool SubscriptionHub::Deliver(Sub& sub, const StreamEntry& e) {
  if (e.offset <= sub.last_offset) return false;  // already delivered
  if (e.offset != sub.last_offset + 1) {
    // A hole in the buffer: nothing past it is delivered. Once the reply
    // has ended, its stored message serves the rest (CheckStalled).
    if (!sub.gap) {
      static auto& gaps = metrics::Default().GetCounter(
          "sb_connection_stream_gaps_total",
          "Reply buffers found with a missing event (the rest served from the stored message)");
      gaps.Inc();
      sub.gap = true;
      sub.next_check = absl::Now();
    }
    return false;
  }
  sub.last_offset = e.offset;
  sub.last_entry = absl::Now();
  sub.next_check = sub.last_entry + kStallCheck;
  sub.out->Push(ToEvent(e));
  if (!e.final()) return false;
  sub.out->Finish(grpc::Status::OK);
  return true;
}

void SubscriptionHub::CheckStalled(const std::shared_ptr<Sub>& sub) {
  sub->checking = true;
  sub->next_check = absl::Now() + kStallCheck;
  const bool queued = lookups_.Submit([this, sub] {
    auto exists = redis_.Command({"EXISTS", sub->key});
    auto message = lookup_(sub->req);
    std::lock_guard<std::mutex> lock(mu_);
    sub->checking = false;
    // The next check a while after this one ended, not after it began: a
    // slow look-up (chat away) must leave the subscription rounds of reads
    // in between, or it would never read again.
    sub->next_check = absl::Now() + kStallCheck;
    if (sub->done) return;
    // The reply has ended and its buffer is gone, has a hole, or has been
    // quiet since (its last entries never came): the stored message has the rest.
    if (message.ok() && message->status() != "in_progress" &&
        ((exists.ok() && exists->integer == 0) || sub->gap ||
         absl::Now() - sub->last_entry >= kStallCheck)) {
      ServePersisted(*sub, *message);
    } else if (absl::Now() - sub->last_entry > kGiveUp) {
      sub->out->Finish(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "the reply stalled"));
      sub->done = true;
    }
  });
  if (!queued) sub->checking = false;
}

void SubscriptionHub::Loop(const std::string& group) {
  auto& active_gauge = metrics::Default().GetGauge("sb_connection_active_streams",
                                                   "Live token stream subscriptions");
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    // Drop what ended, and pick the subscriptions ready for more.
    std::vector<std::shared_ptr<Sub>> ready;
    const absl::Time now = absl::Now();
    for (auto it = subs_.begin(); it != subs_.end();) {
      Sub& s = **it;
      if (s.group != group) {  // another poller's
        ++it;
        continue;
      }
      if (s.done || s.out->ended()) {
        it = subs_.erase(it);
        continue;
      }
      if (s.serving) {  // the stored message's events, as the queue makes room
        if (!s.checking) DrainBacklog(s);
        ++it;
        continue;
      }
      if (!s.checking && now >= s.next_check) CheckStalled(*it);
      // Only a subscriber with room for a whole read joins the round, so
      // that no entry read for it is ever refused by its queue.
      if (!s.checking && !s.gap && s.out->space() >= static_cast<size_t>(kReadCount)) {
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
    for (const auto& s : ready) args.push_back(s->key);
    for (const auto& s : ready) args.push_back("0-" + std::to_string(s->last_offset));
    auto reply = redis_.BlockingCommand(args, std::chrono::milliseconds(kBlockMs));
    lock.lock();
    if (!reply.ok()) {
      spdlog::warn("connection-manager XREAD: {}", reply.status().ToString());
      CountPollFailure("replies");
      cv_.wait_for(lock, std::chrono::milliseconds(200));
      continue;
    }
    if (reply->type != RedisReply::Type::kArray) continue;  // nothing new
    for (const auto& stream : reply->elements) {
      if (stream.elements.size() != 2) continue;
      const std::string& key = stream.elements[0].str;
      for (const auto& s : ready) {
        if (s->done || s->key != key) continue;
        for (const auto& raw : stream.elements[1].elements) {
          auto entry = ParseStreamEntry(raw);
          if (!entry.ok()) {
            spdlog::error("bad entry in {}: {}", key, entry.status().ToString());
            continue;
          }
          if (Deliver(*s, *entry)) {
            s->done = true;
            break;
          }
        }
      }
    }
  }
}

}  // namespace sb::connection
