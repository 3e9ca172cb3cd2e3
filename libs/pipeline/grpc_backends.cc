#include "pipeline/grpc_backends.h"

#include <grpcpp/grpcpp.h>

#include "core/hash.h"
#include "grpcx/status.h"
#include "grpcx/streams.h"
#include "grpcx/tls.h"
#include "safety/output_window.h"
#include "trace/grpc_trace.h"

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
  trace::Inject(call->ctx, c.trace);
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
                                                      const trace::SpanContext& trace,
                                                      Callbacks callbacks) {
  auto* stub = &scheduler_;
  auto canceller = ClientStream<Event>::Start(
      std::chrono::system_clock::now() + deadline_,
      [stub, request, trace](grpc::ClientContext* c, grpc::ClientReadReactor<Event>* r) {
        trace::Inject(*c, trace);
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

namespace sb::pipeline {

namespace inf = switchboard::inference::v1;
namespace sched = switchboard::scheduler::v1;

SchedulerReplicas::SchedulerReplicas(const std::string& addresses) {
  size_t from = 0;
  while (from <= addresses.size()) {
    size_t comma = addresses.find(',', from);
    if (comma == std::string::npos) comma = addresses.size();
    const std::string address = addresses.substr(from, comma - from);
    if (!address.empty()) {
      channels_.push_back(grpcx::Dial(address, grpcx::kScheduler));
      stubs_.push_back(sched::TenantScheduler::NewStub(channels_.back()));
    }
    from = comma + 1;
  }
}

size_t SchedulerReplicas::Pick(const std::string& model) {
  const size_t n = stubs_.size();
  if (n == 1) return 0;
  // The same home in every process.
  const size_t start = static_cast<size_t>(Fnv1a(model) % n);
  for (size_t i = 0; i < n; ++i) {
    const size_t r = (start + i) % n;
    if (channels_[r]->GetState(true) != GRPC_CHANNEL_TRANSIENT_FAILURE) return r;
  }
  return start % n;
}

inf::InferenceWorker::StubInterface& WorkerStubs::For(const std::string& address) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& stub = stubs_[address];
  if (!stub) stub = inf::InferenceWorker::NewStub(grpcx::Dial(address, grpcx::kWorker));
  return *stub;
}

namespace {

// One leased generation: Admit, then the worker's stream.
class LeasedCall final : public GenerateCall, public std::enable_shared_from_this<LeasedCall> {
 public:
  LeasedCall(SchedulerReplicas& schedulers, WorkerStubs& workers,
             std::shared_ptr<const Request> request, const trace::SpanContext& trace,
             Generator::Callbacks callbacks, std::chrono::system_clock::time_point deadline)
      : schedulers_(schedulers),
        workers_(workers),
        request_(std::move(request)),
        trace_(trace),
        callbacks_(std::move(callbacks)),
        deadline_(deadline) {}

  void Admit() {
    auto admit = std::make_shared<AdmitCall>();
    admit->ctx.set_deadline(deadline_);
    trace::Inject(admit->ctx, trace_);
    if (admit_attempts_ == 0) {
      first_replica_ = schedulers_.Pick(request_->model());
      admit->replica = first_replica_;
    } else {
      admit->replica = schedulers_.Retry(first_replica_, admit_attempts_);
    }
    ++admit_attempts_;
    bool cancelled;
    {
      std::lock_guard<std::mutex> lock(mu_);
      cancelled = cancelled_;
      if (!cancelled) admit_ = admit;
    }
    if (cancelled) {
      Done(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled"));
      return;
    }
    schedulers_.at(admit->replica)
        .async()
        ->Admit(
            &admit->ctx, request_.get(), &admit->lease,
            [self = shared_from_this(), admit](grpc::Status st) { self->OnAdmitted(admit, st); });
  }

  void Cancel() override {
    std::shared_ptr<AdmitCall> admit;
    std::shared_ptr<ClientStream<Event>::Canceller> stream;
    {
      std::lock_guard<std::mutex> lock(mu_);
      cancelled_ = true;
      admit = admit_;
      stream = stream_;
    }
    if (admit) admit->ctx.TryCancel();
    if (stream) stream->Cancel();
  }

 private:
  struct AdmitCall {
    grpc::ClientContext ctx;
    sched::Lease lease;
    size_t replica = 0;
  };

  void OnAdmitted(const std::shared_ptr<AdmitCall>& admit, const grpc::Status& st) {
    bool cancelled;
    {
      std::lock_guard<std::mutex> lock(mu_);
      admit_ = nullptr;
      cancelled = cancelled_;
    }
    if (cancelled) {
      if (st.ok()) Release(admit);
      Done(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled"));
      return;
    }
    if (!st.ok()) {
      // Unreachable (or without a live worker): another replica may do.
      if (st.error_code() == grpc::StatusCode::UNAVAILABLE &&
          admit_attempts_ < schedulers_.size()) {
        Admit();
        return;
      }
      Done(st);
      return;
    }
    Stream(admit);
  }

  void Stream(const std::shared_ptr<AdmitCall>& admit) {
    auto leased = std::make_shared<Request>(*request_);
    leased->set_lease_id(admit->lease.lease_id());
    leased->set_model(admit->lease.model());
    auto& worker = workers_.For(admit->lease.worker_address());
    auto self = shared_from_this();
    auto canceller = ClientStream<Event>::Start(
        deadline_,
        [&worker, leased, trace = trace_](grpc::ClientContext* c,
                                          grpc::ClientReadReactor<Event>* r) {
          trace::Inject(*c, trace);
          worker.async()->Generate(c, leased.get(), r);
        },
        [self, admit](Event&& e, Generator::Next next) {
          if (e.has_started()) {
            self->started_.store(true);
            if (!admit->lease.version().empty())
              e.mutable_started()->set_model(admit->lease.version());
          }
          self->callbacks_.on_event(std::move(e), std::move(next));
        },
        [self, admit](const grpc::Status& st) { self->OnStreamDone(admit, st); }, leased);
    bool cancelled;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stream_ = canceller;
      cancelled = cancelled_;
    }
    if (cancelled) canceller->Cancel();
  }

  void OnStreamDone(const std::shared_ptr<AdmitCall>& admit, const grpc::Status& st) {
    if (started_.load() || st.ok()) {
      Done(st);
      return;
    }
    // Nothing came from the worker. A lease it refused, or that may never
    // have reached it, is given back; one it took and failed (its engine's
    // error) is the worker's to end: its report carries the failure to the
    // version's breaker, which a release first would hide.
    const auto code = st.error_code();
    if (code == grpc::StatusCode::FAILED_PRECONDITION ||
        code == grpc::StatusCode::PERMISSION_DENIED || code == grpc::StatusCode::UNAVAILABLE ||
        code == grpc::StatusCode::RESOURCE_EXHAUSTED || code == grpc::StatusCode::CANCELLED ||
        code == grpc::StatusCode::DEADLINE_EXCEEDED) {
      Release(admit);
    }
    bool cancelled;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stream_ = nullptr;
      cancelled = cancelled_;
    }
    const bool retry =
        !cancelled && !retried_ &&
        (code == grpc::StatusCode::FAILED_PRECONDITION ||
         code == grpc::StatusCode::PERMISSION_DENIED || code == grpc::StatusCode::UNAVAILABLE);
    if (retry) {
      // A stale lease, a worker that died or is draining: admitted again.
      retried_ = true;
      admit_attempts_ = 0;
      Admit();
      return;
    }
    if (code == grpc::StatusCode::FAILED_PRECONDITION ||
        code == grpc::StatusCode::PERMISSION_DENIED) {
      Done(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        "worker refused the lease: " + st.error_message()));
      return;
    }
    Done(st);
  }

  // Gives back a lease the worker never took (fire and forget: an unused
  // lease also expires).
  void Release(const std::shared_ptr<AdmitCall>& admit) {
    struct Call {
      grpc::ClientContext ctx;
      sched::ReleaseLeaseRequest req;
      sched::ReleaseLeaseResponse resp;
    };
    auto call = std::make_shared<Call>();
    call->ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    trace::Inject(call->ctx, trace_);
    call->req.set_lease_id(admit->lease.lease_id());
    schedulers_.at(admit->replica)
        .async()
        ->ReleaseLease(&call->ctx, &call->req, &call->resp, [call](grpc::Status) {});
  }

  void Done(const grpc::Status& st) {
    if (done_.exchange(true)) return;
    callbacks_.on_done(FromGrpcStatus(st));
  }

  SchedulerReplicas& schedulers_;
  WorkerStubs& workers_;
  const std::shared_ptr<const Request> request_;
  const trace::SpanContext trace_;
  Generator::Callbacks callbacks_;
  const std::chrono::system_clock::time_point deadline_;
  // Touched by one step at a time (each continues from the last).
  size_t admit_attempts_ = 0;
  size_t first_replica_ = 0;  // of the current admission's first try
  bool retried_ = false;
  std::atomic<bool> started_{false};
  std::atomic<bool> done_{false};
  std::mutex mu_;
  bool cancelled_ = false;
  std::shared_ptr<AdmitCall> admit_;
  std::shared_ptr<ClientStream<Event>::Canceller> stream_;
};

}  // namespace

std::shared_ptr<GenerateCall> LeasedGenerator::Generate(std::shared_ptr<const Request> request,
                                                        const trace::SpanContext& trace,
                                                        Callbacks callbacks) {
  auto call = std::make_shared<LeasedCall>(schedulers_, workers_, std::move(request), trace,
                                           std::move(callbacks),
                                           std::chrono::system_clock::now() + deadline_);
  call->Admit();
  return call;
}

}  // namespace sb::pipeline
