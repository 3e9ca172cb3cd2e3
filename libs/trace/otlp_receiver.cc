#include "trace/otlp_receiver.h"

#include <grpcpp/grpcpp.h>

namespace sb::trace {

namespace collector = opentelemetry::proto::collector::trace::v1;

OtlpReceiver::OtlpReceiver() {
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
  builder.RegisterService(this);
  server_ = builder.BuildAndStart();
}

OtlpReceiver::~OtlpReceiver() {
  server_->Shutdown(std::chrono::system_clock::now());
  server_->Wait();
}

grpc::ServerUnaryReactor* OtlpReceiver::Export(grpc::CallbackServerContext* ctx,
                                               const collector::ExportTraceServiceRequest* request,
                                               collector::ExportTraceServiceResponse*) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++exports_;
    for (const auto& rs : request->resource_spans()) {
      std::string service;
      for (const auto& kv : rs.resource().attributes())
        if (kv.key() == "service.name") service = kv.value().string_value();
      for (const auto& ss : rs.scope_spans())
        for (const auto& span : ss.spans()) spans_.push_back({service, span});
    }
  }
  cv_.notify_all();
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

int64_t OtlpReceiver::exports() const {
  std::lock_guard<std::mutex> lock(mu_);
  return exports_;
}

std::vector<ReceivedSpan> OtlpReceiver::Spans() const {
  std::lock_guard<std::mutex> lock(mu_);
  return spans_;
}

std::vector<ReceivedSpan> OtlpReceiver::WaitForSpans(
    const std::function<bool(const std::vector<ReceivedSpan>&)>& done,
    absl::Duration timeout) const {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, absl::ToChronoMilliseconds(timeout), [&] { return done(spans_); });
  return spans_;
}

}  // namespace sb::trace
