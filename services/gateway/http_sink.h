// The pipeline's sink for an API request: a stream of SSE events through
// the dialect's encoder (SseStream keeps it alive with pings while idle),
// or a buffer answered as one JSON reply. It records time to first token
// and inter-token latency. The pipeline calls one method at a time. A
// detached request's generation goes on when the client has gone.
#pragma once

#include <memory>

#include "core/timers.h"
#include "gateway/context.h"
#include "gateway/sse_stream.h"
#include "pipeline/pipeline.h"

namespace sb::gateway {

class HttpSink final : public pipeline::Sink {
 public:
  HttpSink(std::shared_ptr<RequestContext> ctx, ReplyIds ids, Timers& timers,
           absl::Duration ping_interval);

  void OnStart(const pipeline::StartInfo& info, Ready ready) override;
  void OnText(std::string text, Ready ready) override;
  void OnFinish(const pipeline::FinishInfo& info) override;
  void OnError(const absl::Status& status) override;

 private:
  void RecordText();
  Ready Keep(Ready ready) const;

  std::shared_ptr<RequestContext> ctx_;
  ReplyIds ids_;
  std::unique_ptr<StreamEncoder> encoder_;  // streaming only
  std::shared_ptr<SseStream> stream_;       // streaming only
  Completion whole_;                        // otherwise
  const GatewayMetrics::Series* series_ = nullptr;
  bool had_text_ = false;
  absl::Time last_text_;
};

}  // namespace sb::gateway
