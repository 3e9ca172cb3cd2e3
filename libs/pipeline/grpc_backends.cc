#include "pipeline/grpc_backends.h"

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include "absl/time/clock.h"
#include "core/hash.h"
#include "core/retry_after.h"
#include "core/ulid.h"
#include "grpcx/status.h"
#include "grpcx/streams.h"
#include "grpcx/tls.h"
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

// One ModerateOutput call. Send() writes a message and reads its answer,
// which goes to that Send's `done`; the next Send comes after it. An answer
// can arrive before gRPC reports its message written, so a message waits in
// `next_` until the write before it is done (one write in flight). Keeps
// itself alive until gRPC is done with it.
class ModerateStream final
    : public grpc::ClientBidiReactor<spb::ModerateOutputRequest, spb::ModerateOutputResponse>,
      public std::enable_shared_from_this<ModerateStream> {
 public:
  using Done = OutputGate::Done;

  ModerateStream(spb::Safety::StubInterface& safety, Timers& timers,
                 std::chrono::milliseconds deadline, CheckContext ctx)
      : safety_(safety), timers_(timers), deadline_(deadline), check_(std::move(ctx)) {}

  // Sends `text` (`end`: the reply ended); `done` gets what is released.
  void Send(std::string text, bool end, Done done) {
    bool start = false, write = false, ended;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ended = ended_;
      if (!ended) {
        spb::ModerateOutputRequest& m = writing_ ? next_ : written_;
        m.Clear();
        if (!started_) {
          started_ = start = true;
          self_ = shared_from_this();
          auto* first = m.mutable_start();
          first->set_request_id(check_.request_id);
          first->set_org_id(check_.org_id);
          first->set_end_user_id(check_.end_user_id);
          first->set_platform_policy_version(check_.platform_policy_version);
        }
        m.set_text(std::move(text));
        m.set_end(end);
        waiting_ = writing_;
        write = !writing_;
        writing_ = true;
        sent_end_ = end;
        pending_ = std::move(done);
        std::weak_ptr<ModerateStream> weak = shared_from_this();
        timer_ = timers_.After(absl::FromChrono(deadline_), [weak] {
          if (auto self = weak.lock()) self->ctx_.TryCancel();
        });
      }
    }
    if (ended) {
      done(absl::UnavailableError("safety: the moderation stream has ended"));
      return;
    }
    // gRPC calls outside mu_: a reaction may run on this thread.
    if (start) {
      trace::Inject(ctx_, check_.trace);
      safety_.async()->ModerateOutput(&ctx_, this);
      StartCall();
    }
    if (write) StartWrite(&written_);
    StartRead(&response_);
  }

  // The generation is over (or gone): the call ends if it has not.
  void Close() {
    bool cancel;
    {
      std::lock_guard<std::mutex> lock(mu_);
      cancel = started_ && !ended_ && !answered_end_;
    }
    if (cancel) ctx_.TryCancel();
  }

  void OnWriteDone(bool ok) override {
    bool write;
    {
      std::lock_guard<std::mutex> lock(mu_);
      write = ok && waiting_;
      waiting_ = false;
      writing_ = write;
      if (write) written_.Swap(&next_);
    }
    // A failed write fails the read too; OnDone answers.
    if (write) StartWrite(&written_);
  }

  void OnReadDone(bool ok) override {
    Done done;
    {
      std::lock_guard<std::mutex> lock(mu_);
      timers_.Cancel(timer_);
      if (!ok) return;  // OnDone answers the pending Send, with the status
      done = std::move(pending_);
      pending_ = nullptr;
      answered_end_ = sent_end_;  // the server ends the call itself
    }
    OutputGate::Released released{.text = std::move(*response_.mutable_release()),
                                  .redacted = response_.redacted_size(),
                                  .flagged = response_.flagged_size()};
    if (response_.has_stopped()) {
      released.refusal = Refusal{response_.stopped().category(), response_.reason()};
    }
    done(std::move(released));
  }

  void OnDone(const grpc::Status& status) override {
    Done done;
    std::shared_ptr<ModerateStream> keep;
    {
      std::lock_guard<std::mutex> lock(mu_);
      timers_.Cancel(timer_);
      ended_ = true;
      done = std::move(pending_);
      pending_ = nullptr;
      keep = std::move(self_);  // may be the last reference: freed on return
    }
    if (done) {
      done(absl::UnavailableError(
          "safety: moderation stream ended: " +
          (status.ok() ? std::string("no answer") : status.error_message())));
    }
  }

 private:
  spb::Safety::StubInterface& safety_;
  Timers& timers_;
  const std::chrono::milliseconds deadline_;
  const CheckContext check_;
  grpc::ClientContext ctx_;
  std::mutex mu_;
  spb::ModerateOutputRequest written_;  // the message being written
  spb::ModerateOutputRequest next_;     // the next, while written_ is
  spb::ModerateOutputResponse response_;
  Done pending_;
  Timers::Id timer_ = 0;
  bool started_ = false;
  bool writing_ = false;  // written_ is in flight
  bool waiting_ = false;  // next_ waits for it
  bool sent_end_ = false;
  bool answered_end_ = false;
  bool ended_ = false;
  std::shared_ptr<ModerateStream> self_;  // set while gRPC holds the call
};

class StreamingOutputGate final : public OutputGate {
 public:
  explicit StreamingOutputGate(std::shared_ptr<ModerateStream> stream)
      : stream_(std::move(stream)) {}
  ~StreamingOutputGate() override { stream_->Close(); }

  void Push(std::string piece, Done done) override {
    stream_->Send(std::move(piece), false, std::move(done));
  }
  void Flush(Done done) override { stream_->Send(std::string(), true, std::move(done)); }

 private:
  std::shared_ptr<ModerateStream> stream_;
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

void GrpcInputGuard::Check(const CheckContext& ctx, std::string text, Done done) {
  auto call = NewCheck(ctx, std::move(text), deadline_);
  safety_.async()->CheckInput(
      &call->ctx, &call->request, &call->response, [call, done = std::move(done)](grpc::Status st) {
        if (!st.ok()) {
          done(NoVerdict(st), {});
        } else if (call->response.verdict() == spb::CheckResponse::THROTTLED) {
          done(WithRetryAfter(absl::ResourceExhaustedError(call->response.reason()),
                              absl::Seconds(call->response.retry_after_seconds())),
               {});
        } else if (call->response.verdict() != spb::CheckResponse::ALLOW) {
          done(absl::InvalidArgumentError("input blocked by safety policy: " +
                                          call->response.reason()),
               {});
        } else {
          InputVerdict verdict;
          for (const auto& f : call->response.findings()) {
            if (f.action() == "flag") verdict.flagged = true;
          }
          done(absl::OkStatus(), verdict);
        }
      });
}

std::unique_ptr<OutputGate> StreamingOutputGates::Open(const CheckContext& ctx) {
  return std::make_unique<StreamingOutputGate>(
      std::make_shared<ModerateStream>(safety_, timers_, deadline_, ctx));
}

FailClosedRecorder AuditFailClosed(Publisher& publisher, std::string source) {
  auto ids = std::make_shared<UlidGenerator>();
  return [&publisher, ids, source = std::move(source)](const CheckContext& ctx,
                                                       std::string_view direction) {
    const absl::Time now = absl::Now();
    spb::AuditEvent e;
    e.set_event_id(ids->Next(now));
    e.set_org_id(ctx.org_id);
    e.set_end_user_id(ctx.end_user_id);
    e.set_request_id(ctx.request_id);
    e.set_direction(std::string(direction));
    e.set_rule("safety.unavailable");
    e.set_action("fail_closed");
    e.set_at_unix_ms(absl::ToUnixMillis(now));
    e.set_source(source);
    // Keyed by org, as safety's own events (one partition keeps an org's order).
    if (auto st = publisher.Publish("safety.audit", ctx.org_id, e.SerializeAsString()); !st.ok()) {
      spdlog::error("request_id={} fail-closed audit event not queued: {}", ctx.request_id,
                    st.ToString());
    }
  };
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
            e.mutable_started()->set_safety_policy_version(admit->lease.safety_policy_version());
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
