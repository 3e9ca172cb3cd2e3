// One unary gRPC call on the callback API: the context, request and
// response live together in a shared_ptr the completion callback holds.
//
//   auto call = NewUnary<ListModelsRequest, ListModelsResponse>(std::chrono::seconds(5),
//                                                              ctx->trace_context());
//   stub.async()->ListModels(&call->ctx, &call->req, &call->resp, [call](grpc::Status st) {...});
#pragma once

#include <grpcpp/client_context.h>

#include <chrono>
#include <memory>

#include "trace/grpc_trace.h"

namespace sb::gateway {

template <typename Req, typename Resp>
struct Unary {
  grpc::ClientContext ctx;
  Req req;
  Resp resp;
};

template <typename Req, typename Resp>
std::shared_ptr<Unary<Req, Resp>> NewUnary(std::chrono::milliseconds deadline,
                                           const trace::SpanContext& trace) {
  auto call = std::make_shared<Unary<Req, Resp>>();
  call->ctx.set_deadline(std::chrono::system_clock::now() + deadline);
  trace::Inject(call->ctx, trace);
  return call;
}

}  // namespace sb::gateway
