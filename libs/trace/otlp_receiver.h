// A small OTLP/gRPC trace receiver for tests: it keeps every span it is sent,
// with the service.name of the resource it came in.
//
//   OtlpReceiver receiver;            // listens on 127.0.0.1, a free port
//   ... run services with --otlp_endpoint=receiver.address() ...
//   auto spans = receiver.WaitForSpans([](auto& s) { return s.size() >= 4; });
#pragma once

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "opentelemetry/proto/collector/trace/v1/trace_service.grpc.pb.h"

namespace grpc {
class Server;
}

namespace sb::trace {

struct ReceivedSpan {
  std::string service;
  opentelemetry::proto::trace::v1::Span span;
};

class OtlpReceiver final
    : public opentelemetry::proto::collector::trace::v1::TraceService::CallbackService {
 public:
  OtlpReceiver();
  ~OtlpReceiver() override;

  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  int64_t exports() const;
  std::vector<ReceivedSpan> Spans() const;
  // Waits until `done(spans so far)` holds or `timeout` passes; returns the
  // spans either way.
  std::vector<ReceivedSpan> WaitForSpans(
      const std::function<bool(const std::vector<ReceivedSpan>&)>& done,
      absl::Duration timeout = absl::Seconds(10)) const;

  grpc::ServerUnaryReactor* Export(
      grpc::CallbackServerContext* ctx,
      const opentelemetry::proto::collector::trace::v1::ExportTraceServiceRequest* request,
      opentelemetry::proto::collector::trace::v1::ExportTraceServiceResponse* response) override;

 private:
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::vector<ReceivedSpan> spans_;
  int64_t exports_ = 0;
};

}  // namespace sb::trace
