#include "pipeline/grpc_backends.h"

#include <grpcpp/grpcpp.h>

#include "grpcx/status.h"
#include "grpcx/streams.h"
#include "safety/output_window.h"

namespace sb::pipeline {

namespace spb = switchboard::safety::v1;

namespace {

// A transport failure is never a verdict: whatever its code, it means "no
// answer" (the pipeline fails closed on it); only a not-ALLOW verdict
// refuses.
absl::Status NoVerdict(const grpc::Status& st) {
  return absl::UnavailableError("safety: " + st.error_message());
}

struct CheckCall {
  grpc::ClientContext ctx;
  spb::CheckRequest request;
  spb::CheckResponse response;
};

std::shared_ptr<CheckCall> NewCheck(const CheckContext& c, std::string text,
                                    std::chrono::milliseconds deadline) {
  auto call = std::make_shared<CheckCall>();
  call->ctx.set_deadline(std::chrono::system_clock::now() + deadline);
  call->request.set_request_id(c.request_id);
  call->request.set_org_id(c.org_id);
  call->request.set_end_user_id(c.end_user_id);
  call->request.set_text(std::move(text));
  return call;
}

class UnaryOutputGate final : public OutputGate {
 public:
  UnaryOutputGate(spb::Safety::StubInterface& safety, std::chrono::milliseconds deadline,
                  CheckContext ctx)
      : safety_(safety), deadline_(deadline), ctx_(std::move(ctx)) {}

  void Push(std::string piece, Done done) override {
    // Calls are one at a time (the pipeline waits for each), so text_ is
    // only touched by the callback of the call in flight.
    auto call = NewCheck(ctx_, safety::OutputCheckText(text_, piece), deadline_);
    safety_.async()->CheckOutput(
        &call->ctx, &call->request, &call->response,
        [this, call, piece = std::move(piece), done = std::move(done)](grpc::Status st) mutable {
          if (!st.ok()) {
            done(NoVerdict(st));
            return;
          }
          if (call->response.verdict() != spb::CheckResponse::ALLOW) {
            done(absl::InvalidArgumentError("output blocked by safety policy: " +
                                            call->response.reason()));
            return;
          }
          text_ += piece;
          done(std::move(piece));
        });
  }

  void Flush(Done done) override { done(std::string()); }

 private:
  spb::Safety::StubInterface& safety_;
  std::chrono::milliseconds deadline_;
  CheckContext ctx_;
  std::string text_;
};

class GrpcCall final : public GenerateCall {
 public:
  explicit GrpcCall(std::shared_ptr<ClientStream<Event>::Canceller> canceller)
      : canceller_(std::move(canceller)) {}
  void Cancel() override { canceller_->Cancel(); }

 private:
  std::shared_ptr<ClientStream<Event>::Canceller> canceller_;
};

}  // namespace

void GrpcInputGuard::Check(const CheckContext& ctx, std::string text,
                           std::function<void(absl::Status)> done) {
  auto call = NewCheck(ctx, std::move(text), deadline_);
  safety_.async()->CheckInput(
      &call->ctx, &call->request, &call->response, [call, done = std::move(done)](grpc::Status st) {
        if (!st.ok()) {
          done(NoVerdict(st));
        } else if (call->response.verdict() != spb::CheckResponse::ALLOW) {
          done(absl::InvalidArgumentError("input blocked by safety policy: " +
                                          call->response.reason()));
        } else {
          done(absl::OkStatus());
        }
      });
}

std::unique_ptr<OutputGate> UnaryOutputGates::Open(const CheckContext& ctx) {
  return std::make_unique<UnaryOutputGate>(safety_, deadline_, ctx);
}

std::shared_ptr<GenerateCall> GrpcGenerator::Generate(std::shared_ptr<const Request> request,
                                                      Callbacks callbacks) {
  auto* stub = &scheduler_;
  auto canceller = ClientStream<Event>::Start(
      std::chrono::system_clock::now() + deadline_,
      [stub, request](grpc::ClientContext* c, grpc::ClientReadReactor<Event>* r) {
        stub->async()->Generate(c, request.get(), r);
      },
      std::move(callbacks.on_event),
      [on_done = std::move(callbacks.on_done)](const grpc::Status& st) {
        on_done(FromGrpcStatus(st));
      },
      std::const_pointer_cast<Request>(request));
  return std::make_shared<GrpcCall>(std::move(canceller));
}

}  // namespace sb::pipeline
