// Trace context over gRPC: the caller puts `traceparent` in a call's
// metadata (Inject); every server that runs the interceptor below starts a
// SERVER span for each call that carries one, a child of the caller's span,
// and ends it with the call's status. A handler that calls further services
// takes its call's span as their parent (ServerSpanContext).
//
// Calls that carry no trace context (heartbeats, health checks, admin
// tools) get no span.
#pragma once

#include <memory>

#include "trace/trace.h"

namespace grpc {
class ClientContext;
class ServerContextBase;
namespace experimental {
class ServerInterceptorFactoryInterface;
}
}  // namespace grpc

namespace sb::trace {

// Adds `traceparent` for `parent` (nothing when it is not valid).
void Inject(grpc::ClientContext& ctx, const SpanContext& parent);

// The span of the call `ctx` serves (its context only), valid from when the
// handler is called until the call's status is sent; without the
// interceptor, the caller's span (this service records none, but what it
// calls joins the trace); invalid when the caller sent no trace context.
SpanContext ServerSpanContext(const grpc::ServerContextBase* ctx);

// For grpc::ServerBuilder::experimental().SetInterceptorCreators. Worth its
// cost (it runs on every call) only while spans are exported (Exporting()).
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
NewServerInterceptorFactory();

}  // namespace sb::trace
