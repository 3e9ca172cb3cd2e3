#include "trace/grpc_trace.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/support/server_interceptor.h>

#include <mutex>
#include <string>
#include <unordered_map>

namespace sb::trace {

namespace {

using grpc::experimental::InterceptionHookPoints;

// The span of each traced call in progress, by its server context.
class CallRegistry {
 public:
  void Put(const grpc::ServerContextBase* ctx, const SpanContext& span) {
    std::lock_guard<std::mutex> lock(mu_);
    spans_[ctx] = span;
  }
  void Erase(const grpc::ServerContextBase* ctx) {
    std::lock_guard<std::mutex> lock(mu_);
    spans_.erase(ctx);
  }
  SpanContext Get(const grpc::ServerContextBase* ctx) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = spans_.find(ctx);
    return it == spans_.end() ? SpanContext{} : it->second;
  }

 private:
  std::mutex mu_;
  std::unordered_map<const grpc::ServerContextBase*, SpanContext> spans_;
};

// The `traceparent` a call arrived with (invalid: none, or malformed).
SpanContext CallersContext(const std::multimap<grpc::string_ref, grpc::string_ref>& metadata) {
  auto it = metadata.find("traceparent");
  if (it == metadata.end()) return {};
  return ParseTraceparent(std::string_view(it->second.data(), it->second.size()))
      .value_or(SpanContext{});
}

CallRegistry& Registry() {
  static auto* registry = new CallRegistry();
  return *registry;
}

class ServerInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit ServerInterceptor(grpc::experimental::ServerRpcInfo* info) : info_(info) {}

  ~ServerInterceptor() override {
    // A call cancelled before its status was sent.
    if (registered_) Registry().Erase(info_->server_context());
    if (span_.recording()) span_.SetError("call ended without a status");
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_INITIAL_METADATA)) {
      Begin(methods->GetRecvInitialMetadata());
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      Finish(methods->GetSendStatus());
    }
    methods->Proceed();
  }

 private:
  void Begin(std::multimap<grpc::string_ref, grpc::string_ref>* metadata) {
    if (metadata == nullptr) return;
    const SpanContext parent = CallersContext(*metadata);
    if (!parent.valid()) return;
    // "/package.Service/Method" -> "package.Service/Method", as OTel names
    // RPC spans.
    std::string_view method = info_->method();
    if (!method.empty() && method[0] == '/') method.remove_prefix(1);
    span_ = StartSpan(method, SpanKind::kServer, parent);
    if (span_.recording()) {
      span_.SetAttribute("rpc.system", "grpc");
      const size_t slash = method.find('/');
      if (slash != std::string_view::npos) {
        span_.SetAttribute("rpc.service", method.substr(0, slash));
        span_.SetAttribute("rpc.method", method.substr(slash + 1));
      }
    }
    Registry().Put(info_->server_context(), span_.context());
    registered_ = true;
  }

  void Finish(const grpc::Status& status) {
    if (registered_) {
      Registry().Erase(info_->server_context());
      registered_ = false;
    }
    if (!span_.recording()) return;
    span_.SetAttribute("rpc.grpc.status_code", static_cast<int64_t>(status.error_code()));
    if (!status.ok()) span_.SetError(status.error_message());
    span_.End();
  }

  grpc::experimental::ServerRpcInfo* info_;
  Span span_;
  bool registered_ = false;
};

class ServerInterceptorFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new ServerInterceptor(info);
  }
};

}  // namespace

void Inject(grpc::ClientContext& ctx, const SpanContext& parent) {
  if (parent.valid()) ctx.AddMetadata("traceparent", parent.Traceparent());
}

SpanContext ServerSpanContext(const grpc::ServerContextBase* ctx) {
  SpanContext span = Registry().Get(ctx);
  if (span.valid()) return span;
  // No span of our own (no interceptor: this service exports none): the
  // caller's span is the parent of what this call does.
  return CallersContext(ctx->client_metadata());
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
NewServerInterceptorFactory() {
  return std::make_unique<ServerInterceptorFactory>();
}

}  // namespace sb::trace
