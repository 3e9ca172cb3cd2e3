#include "gateway/sse_stream.h"

namespace sb::gateway {

SseStream::SseStream(std::shared_ptr<RequestContext> ctx, Timers& timers,
                     absl::Duration ping_interval, std::string ping)
    : ctx_(std::move(ctx)),
      timers_(timers),
      ping_interval_(ping_interval),
      ping_(std::move(ping)) {}

void SseStream::Start() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (started_) return;
    started_ = true;
    last_write_ = ctx_->clock().Now();
    ctx_->StartStream();
  }
  SchedulePing(ping_interval_);
}

bool SseStream::started() const {
  std::lock_guard<std::mutex> lock(mu_);
  return started_;
}

void SseStream::Write(std::string data, std::function<void(bool ok)> done) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!ended_) {
      last_write_ = ctx_->clock().Now();
      ctx_->Tap(data);
      // Write only queues (its callback never runs inline), so holding mu_
      // here keeps a ping from slipping between this write and the end.
      ctx_->exchange().Write(std::move(data), std::move(done));
      return;
    }
  }
  if (done) done(false);
}

void SseStream::End(std::string last) {
  std::lock_guard<std::mutex> lock(mu_);
  if (ended_ || !started_) return;
  ended_ = true;
  if (ping_timer_ != 0) timers_.Cancel(ping_timer_);
  if (!last.empty()) {
    ctx_->Tap(last);
    ctx_->exchange().Write(std::move(last), nullptr);
  }
  ctx_->EndStream();
}

void SseStream::SchedulePing(absl::Duration after) {
  if (ping_interval_ <= absl::ZeroDuration() || ping_.empty()) return;
  std::weak_ptr<SseStream> weak = shared_from_this();
  std::lock_guard<std::mutex> lock(mu_);
  if (ended_) return;
  ping_timer_ = timers_.After(after, [weak] {
    if (auto self = weak.lock()) self->OnPingTimer();
  });
}

void SseStream::OnPingTimer() {
  absl::Duration next = ping_interval_;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ping_timer_ = 0;
    if (ended_) return;
    const absl::Time now = ctx_->clock().Now();
    const absl::Duration idle = now - last_write_;
    if (idle >= ping_interval_) {
      last_write_ = now;
      ctx_->exchange().Write(ping_, nullptr);
    } else {
      next = ping_interval_ - idle;
    }
  }
  SchedulePing(next);
}

}  // namespace sb::gateway
