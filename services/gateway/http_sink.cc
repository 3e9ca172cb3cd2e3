#include "gateway/http_sink.h"

namespace sb::gateway {

HttpSink::HttpSink(std::shared_ptr<RequestContext> ctx, ReplyIds ids, Timers& timers,
                   absl::Duration ping_interval)
    : ctx_(std::move(ctx)), ids_(std::move(ids)) {
  if (ctx_->api.stream) {
    encoder_ = ctx_->dialect->NewStream(ids_, ctx_->api);
    stream_ = std::make_shared<SseStream>(ctx_, timers, ping_interval, encoder_->Ping());
  }
}

void HttpSink::OnStart(const pipeline::StartInfo& info, Ready ready) {
  ctx_->outcome().started = true;
  ctx_->outcome().input_tokens = info.input_tokens;
  ctx_->set_model(info.model);
  series_ = &ctx_->series();
  if (!stream_) {
    whole_.start = info;
    ready(true);
    return;
  }
  stream_->Start();
  stream_->Write(encoder_->Start(info), Keep(std::move(ready)));
}

HttpSink::Ready HttpSink::Keep(Ready ready) const {
  if (!ctx_->detached) return ready;
  // A detached generation goes on for its record when the client has gone.
  return [ready = std::move(ready)](bool) { ready(true); };
}

void HttpSink::RecordText() {
  const absl::Time now = ctx_->clock().Now();
  if (!had_text_) {
    series_->ttft->Observe(absl::ToDoubleSeconds(now - ctx_->start()));
    had_text_ = true;
  } else {
    series_->itl->Observe(absl::ToDoubleSeconds(now - last_text_));
  }
  last_text_ = now;
}

void HttpSink::OnText(std::string text, Ready ready) {
  RecordText();
  ++ctx_->outcome().output_tokens;  // pieces so far: the usage if it ends early
  if (!stream_) {
    whole_.text += text;
    ready(true);
    return;
  }
  stream_->Write(encoder_->Text(text), Keep(std::move(ready)));
}

void HttpSink::OnFinish(const pipeline::FinishInfo& info) {
  if (ctx_->outcome().started) {
    ctx_->outcome().input_tokens = info.input_tokens;
    ctx_->outcome().output_tokens = info.output_tokens;
  }
  if (info.stop_reason == "cancelled") {
    ctx_->outcome().cancelled = true;
    // Only a client that left cancels an API request: nobody reads this,
    // but it is counted as what it was (499), not as a reply.
    const absl::Status cancelled = absl::CancelledError("the request was cancelled");
    if (stream_ && stream_->started()) {
      stream_->End(encoder_->Error(cancelled));
    } else {
      ctx_->Fail(cancelled);
    }
    return;
  }
  if (!stream_) {
    whole_.finish = info;
    ctx_->RespondJson(200, ctx_->dialect->Whole(ids_, whole_));
    return;
  }
  stream_->End(encoder_->Finish(info));
}

void HttpSink::OnError(const absl::Status& status) {
  ctx_->outcome().failed = true;
  if (stream_ && stream_->started()) {
    stream_->End(encoder_->Error(status));
    return;
  }
  // Nothing sent yet: a plain HTTP error.
  ctx_->Fail(status);
}

}  // namespace sb::gateway
