#include "inference-worker/worker_grpc.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <deque>
#include <limits>
#include <mutex>
#include <optional>

#include "absl/time/clock.h"
#include "core/metrics.h"
#include "grpcx/authz.h"
#include "grpcx/status.h"
#include "grpcx/streams.h"
#include "grpcx/tls.h"
#include "trace/grpc_trace.h"

namespace sb::worker {

namespace inf = switchboard::inference::v1;
using switchboard::billing::v1::UsageEvent;

namespace {

grpc::Status StatusOfEngineError(const absl::Status& error) {
  // The engine's message (an upstream's words) goes to the log, never to a
  // client.
  switch (error.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kResourceExhausted:
      // Overload, not this worker's failure: the scheduler keeps routing
      // here (UNAVAILABLE would mark the worker down).
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "the model is overloaded");
    case absl::StatusCode::kDeadlineExceeded:
      return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "the model did not answer in time");
    default:
      return grpc::Status(grpc::StatusCode::INTERNAL, "the model failed");
  }
}

}  // namespace

// Bridges the engine's threads to one gRPC stream. The engine never waits:
// what the stream cannot take yet waits here (at most max_tokens pieces).
//
// Metered ahead: a token reaches the stream only once Kafka has stored a
// usage report covering it. The sink reports ahead of delivery (a credit of
// one report interval of tokens at the request's own rate, at least
// kMinCredit) and asks for more credit when half of it is used, so the wait
// for Kafka's acknowledgement overlaps generation. If this process dies, the
// ledger holds at least every token a client received (at most one credit
// more). The end reaches the client only once Kafka has stored the final
// report, which sets the exact counts: a request answered is a request
// settled in the ledger, whenever the worker dies.
class WorkerServiceImpl::StreamSink final : public TokenObserver,
                                            public std::enable_shared_from_this<StreamSink> {
 public:
  static constexpr int kMinCredit = 16;
  static constexpr absl::Duration kStartedGrace = absl::Milliseconds(50);

  StreamSink(std::shared_ptr<ServerStream<inf::GenerateEvent>::Handle> out, WorkerServiceImpl* svc,
             const inf::GenerateRequest& req, const EngineRequest& er)
      : out_(std::move(out)),
        svc_(svc),
        id_(er.id),
        max_tokens_(er.max_tokens),
        started_at_(absl::Now()),
        lease_(req.lease_id()) {
    started_.mutable_started()->set_model(req.model());
    started_.mutable_started()->set_worker_id(svc->worker_id_);
    started_.mutable_started()->set_input_tokens(er.input_tokens);
    usage_.set_input_tokens(er.input_tokens);
    usage_.set_request_id(req.request_id());
    usage_.set_org_id(req.org_id());
    usage_.set_model(req.model());
    usage_.set_worker_id(svc->worker_id_);
    usage_.set_source(req.source());
    usage_.set_end_user_id(req.end_user_id());
    usage_.set_api_key_id(req.api_key_id());
  }

  // Wires the stream's callbacks to this sink once the engine has it.
  void Attach() {
    // The stream keeps the sink alive until the call is done (the engine
    // may drop it as soon as it has finished, with tokens still waiting
    // here); the reactor's OnDone drops this callback.
    out_->SetOnSpace([self = shared_from_this()] { self->Flush(); });
    // The client left: stop the generation, and end this side of it even if
    // the engine had already finished (tokens still waiting here).
    out_->SetOnCancel([svc = svc_, id = id_, weak = weak_from_this()] {
      svc->engine_.Cancel(id);
      if (auto self = weak.lock()) self->Flush();
    });
    Outgoing outgoing;
    {
      std::lock_guard<std::mutex> lock(mu_);
      attached_ = true;
      FlushLocked(outgoing);
    }
    Send(outgoing);
    // Started waits for the first token, the end, or the grace, whichever
    // comes first: an upstream that refuses at once (429, 503) fails the
    // call with its status, while a long prefill does not hold back the
    // client's response headers.
    svc_->timers_.After(kStartedGrace, [self = shared_from_this()] {
      Outgoing outgoing;
      {
        std::lock_guard<std::mutex> lock(self->mu_);
        self->start_now_ = true;
        self->FlushLocked(outgoing);
      }
      self->Send(outgoing);
    });
  }

  void OnToken(std::string_view text, int tokens) override {
    Outgoing outgoing;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (text.empty()) {
        // A token whose text is held back (it may begin a stop sequence):
        // counted, and delivered with the text that follows it.
        generated_ += tokens;
        carried_ += tokens;
        return;
      }
      inf::GenerateEvent e;
      e.mutable_token()->set_text(std::string(text));
      e.mutable_token()->set_index(
          std::max(0, tokens > 0 ? generated_ - carried_ : generated_ - 1));
      generated_ += tokens;
      pending_.push_back({std::move(e), tokens + carried_});
      carried_ = 0;
      FlushLocked(outgoing);
    }
    Send(outgoing);
    ReportLease(false);
  }

  void OnFinished(const FinishInfo& info) override {
    Outgoing outgoing;
    {
      std::lock_guard<std::mutex> lock(mu_);
      finish_ = info;
      finished_ = true;
      FlushLocked(outgoing);
    }
    Send(outgoing);
  }

  void Flush() {
    Outgoing outgoing;
    {
      std::lock_guard<std::mutex> lock(mu_);
      FlushLocked(outgoing);
    }
    Send(outgoing);
  }

 private:
  struct Piece {
    inf::GenerateEvent event;
    int tokens;
  };
  // Usage reports to publish once mu_ is released (the publisher may call
  // back into this sink).
  struct Outgoing {
    std::optional<UsageEvent> report;
    bool reservation = false;  // tokens wait for it to be stored
    bool settles = false;      // the final report the end waits for
  };

  // What the lease's request has been served, for the scheduler's fair
  // queue (totals; the reporter batches them).
  void ReportLease(bool done, bool failed = false) {
    if (lease_.empty() || svc_->leases_ == nullptr) return;
    int input, output;
    {
      std::lock_guard<std::mutex> lock(mu_);
      input = usage_.input_tokens();
      output = done ? usage_.output_tokens() : generated_;
    }
    svc_->leases_->Update(lease_, input, output, done, failed);
  }

  void Send(Outgoing& outgoing) {
    if (outgoing.report && outgoing.report->final()) {
      ReportLease(true, outgoing.report->stop_reason() == "error");
    }
    if (!outgoing.report) return;
    if (outgoing.settles) {
      svc_->usage_(*outgoing.report,
                   [self = shared_from_this()](const absl::Status& st) { self->OnSettled(st); });
      return;
    }
    if (!outgoing.reservation) {
      svc_->usage_(*outgoing.report, nullptr);
      return;
    }
    const int count = outgoing.report->output_tokens();
    svc_->usage_(*outgoing.report, [self = shared_from_this(), count](const absl::Status& st) {
      self->OnStored(count, st);
    });
  }

  void OnStored(int count, const absl::Status& st) {
    Outgoing outgoing;
    {
      std::lock_guard<std::mutex> lock(mu_);
      reserving_ = false;
      if (st.ok()) {
        acked_ = std::max(acked_, count);
      } else {
        // Refused for good (not merely late): metering ahead cannot work
        // for this request, and holding its tokens forever helps nobody.
        spdlog::error("request_id={} usage report refused by Kafka: {}; delivering unmetered",
                      usage_.request_id(), st.ToString());
        metrics::Default()
            .GetCounter("sb_worker_unmetered_requests_total",
                        "Requests delivered without a stored usage report ahead of them")
            .Inc();
        acked_ = std::numeric_limits<int>::max();
      }
      FlushLocked(outgoing);
    }
    Send(outgoing);
  }

  // The final report is stored (or refused for good): the end may go out.
  void OnSettled(const absl::Status& st) {
    Outgoing outgoing;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!st.ok()) {
        spdlog::error("request_id={} final usage report refused by Kafka: {}; ending unsettled",
                      usage_.request_id(), st.ToString());
        metrics::Default()
            .GetCounter("sb_worker_unmetered_requests_total",
                        "Requests delivered without a stored usage report ahead of them")
            .Inc();
      }
      settled_ = true;
      FlushLocked(outgoing);
    }
    Send(outgoing);
  }

  // Requires mu_.
  void FlushLocked(Outgoing& outgoing) {
    if (done_ || !attached_) return;
    if (out_->ended()) {
      // The client is gone (the cancel callback may not have run yet).
      pending_.clear();
      if (!cancel_sent_ && !finished_) {
        cancel_sent_ = true;
        svc_->engine_.Cancel(id_);
      }
      if (finished_) End(outgoing);
      return;
    }
    if (!started_sent_) {
      if (finished_ && pending_.empty() && !finish_.error.ok()) {
        // Failed before its first token: the call's status says why, so the
        // gateway answers with an error status rather than a broken stream.
        out_->Finish(StatusOfEngineError(finish_.error));
        End(outgoing);
        return;
      }
      if (pending_.empty() && !finished_ && !start_now_) {
        MaybeReserve(outgoing);
        return;
      }
      if (!out_->has_space()) return;
      out_->Push(started_);
      started_sent_ = true;
    }
    while (!pending_.empty() && out_->has_space()) {
      const int tokens = pending_.front().tokens;
      if (delivered_ + tokens > acked_) break;  // not metered yet
      if (!out_->Push(std::move(pending_.front().event))) break;
      pending_.pop_front();
      delivered_ += tokens;
    }
    if (!finished_ || !pending_.empty()) {
      MaybeReserve(outgoing);
      return;
    }
    if (!finish_.error.ok()) {
      out_->Finish(StatusOfEngineError(finish_.error));
    } else if (finish_.stop_reason == "cancelled") {
      // Cancelled while the client is still there: the worker is shutting
      // down (drain). The call fails so the client learns its reply was
      // cut, and the scheduler stops routing here.
      out_->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the worker stopped"));
    } else {
      if (!settling_) {
        // The final report first; the end once it is stored (OnSettled).
        settling_ = true;
        SettleLocked();
        outgoing.report = usage_;
        outgoing.settles = true;
        return;
      }
      if (!settled_ || !out_->has_space()) return;
      inf::GenerateEvent e;
      auto* f = e.mutable_finished();
      f->set_stop_reason(finish_.stop_reason);
      f->set_stop_sequence(finish_.stop_sequence);
      f->set_input_tokens(finish_.input_tokens);
      f->set_output_tokens(finish_.output_tokens);
      f->set_cache_read_input_tokens(finish_.cache_read_tokens);
      f->set_cache_creation_input_tokens(finish_.cache_creation_tokens);
      out_->Push(std::move(e));
      out_->Finish(grpc::Status::OK);
    }
    End(outgoing);
  }

  // Asks for more credit when half of it is used (or a token waits for
  // it), one report in flight at a time. Requires mu_.
  void MaybeReserve(Outgoing& outgoing) {
    if (reserving_) return;
    const int credit = Credit();
    if (delivered_ + credit / 2 < acked_ && generated_ <= acked_) return;
    // Once the engine is done nothing more will be generated.
    const int cap = finished_ ? generated_ : std::max(max_tokens_, generated_);
    const int count = std::min(cap, std::max(generated_, delivered_ + credit));
    if (count <= acked_) return;
    reserving_ = true;
    UsageEvent running = usage_;
    running.set_output_tokens(count);
    running.set_at_unix_ms(absl::ToUnixMillis(absl::Now()));
    running.set_final(false);
    outgoing.report = std::move(running);
    outgoing.reservation = true;
  }

  // One report interval of tokens at this request's rate so far.
  int Credit() const {
    const double seconds = absl::ToDoubleSeconds(absl::Now() - started_at_);
    const double rate = seconds > 0.05 ? generated_ / seconds : 0;
    const double ahead = rate * absl::ToDoubleSeconds(svc_->report_interval_);
    return std::max(kMinCredit, static_cast<int>(ahead));
  }

  // The final report, once (unless already sent to settle the request).
  // Requires mu_ and finished_.
  void End(Outgoing& outgoing) {
    done_ = true;
    if (!settling_) {
      SettleLocked();
      outgoing.report = usage_;
      outgoing.reservation = false;
    }
    svc_->in_flight_.fetch_sub(1);
    const std::string& reason = usage_.stop_reason();
    metrics::Default()
        .GetCounter("sb_worker_requests_finished_total", "Requests ended, by stop reason",
                    {{"stop_reason", reason}})
        .Inc();
    spdlog::info("request_id={} finished: {} input={} (cache read {}, written {}) output={}",
                 usage_.request_id(), reason, finish_.input_tokens, usage_.cache_read_tokens(),
                 usage_.cache_write_tokens(), usage_.output_tokens());
  }

  // Sets usage_ to the final report. Requires mu_ and finished_.
  void SettleLocked() {
    if (!finish_.error.ok()) {
      spdlog::warn("request_id={} engine failed after {} tokens: {}", usage_.request_id(),
                   finish_.output_tokens, finish_.error.ToString());
    }
    const std::string reason = finish_.error.ok() ? finish_.stop_reason : "error";
    if (!finish_.error.ok() && !started_sent_) {
      // Failed before anything reached the client (it got an error
      // status): nothing is billed, whatever was reserved ahead.
      usage_.set_input_tokens(0);
      usage_.set_output_tokens(0);
    } else {
      usage_.set_input_tokens(finish_.input_tokens);
      usage_.set_cache_read_tokens(finish_.cache_read_tokens);
      usage_.set_cache_write_tokens(finish_.cache_creation_tokens);
      // The engine's count (an upstream's own usage); after a failure never
      // below what the client may have received.
      usage_.set_output_tokens(finish_.error.ok() ? finish_.output_tokens
                                                  : std::max(finish_.output_tokens, delivered_));
    }
    usage_.set_stop_reason(reason);
    usage_.set_at_unix_ms(absl::ToUnixMillis(absl::Now()));
    usage_.set_final(true);
  }

  std::shared_ptr<ServerStream<inf::GenerateEvent>::Handle> out_;
  WorkerServiceImpl* svc_;
  const uint64_t id_;
  const int max_tokens_;
  const absl::Time started_at_;
  const std::string lease_;
  std::mutex mu_;
  bool attached_ = false;  // Submit accepted it: the stream may begin
  inf::GenerateEvent started_;
  std::deque<Piece> pending_;
  FinishInfo finish_;
  bool finished_ = false;
  bool started_sent_ = false;
  bool start_now_ = false;  // the grace for Started is over
  bool cancel_sent_ = false;
  bool done_ = false;
  int generated_ = 0;  // tokens the engine produced
  int carried_ = 0;    // of them, tokens with no text yet
  int delivered_ = 0;  // tokens handed to the stream
  int acked_ = 0;      // tokens covered by a stored usage report
  bool reserving_ = false;
  bool settling_ = false;  // the final report is sent: the end waits for it
  bool settled_ = false;   // ... and stored
  UsageEvent usage_;
};

WorkerServiceImpl::WorkerServiceImpl(Engine& engine, std::string worker_id, UsageSink usage,
                                     absl::Duration report_interval,
                                     std::function<bool()> admitting, LeaseReporter* leases)
    : engine_(engine),
      worker_id_(std::move(worker_id)),
      usage_(std::move(usage)),
      report_interval_(report_interval),
      admitting_(std::move(admitting)),
      leases_(leases) {}

grpc::ServerWriteReactor<inf::GenerateEvent>* WorkerServiceImpl::Generate(
    grpc::CallbackServerContext* ctx, const inf::GenerateRequest* req) {
  if (auto st = grpcx::Authorize(*ctx, "/switchboard.inference.v1.InferenceWorker/Generate");
      !st.ok()) {
    return new grpcx::RefusedWriter<inf::GenerateEvent>(st);
  }
  auto [reactor, out] = ServerStream<inf::GenerateEvent>::Create(64);
  if (req->lease_id().empty()) {
    const std::string caller = grpcx::CallerIdentity(*ctx);
    if (!caller.empty() && caller != grpcx::kScheduler) {
      out->Finish(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                               "a lease from the scheduler is required"));
      return reactor;
    }
  } else {
    absl::Status leased = leases_ == nullptr
                              ? absl::FailedPreconditionError("this worker takes no leases")
                              : leases_->Accept(req->lease_id(), req->request_id(), absl::Now());
    if (!leased.ok()) {
      spdlog::warn("request_id={} lease refused: {}", req->request_id(), leased.ToString());
      metrics::Default()
          .GetCounter("sb_worker_refused_total", "Generate calls refused, by reason",
                      {{"reason", "lease"}})
          .Inc();
      out->Finish(ToGrpcStatus(leased));
      return reactor;
    }
  }
  if (admitting_ && !admitting_()) {
    // Metering cannot keep up (Kafka's queue is full): serving more would
    // mean tokens nobody is billed for.
    metrics::Default()
        .GetCounter("sb_worker_refused_total", "Generate calls refused, by reason",
                    {{"reason", "metering_backlog"}})
        .Inc();
    EndLeaseUnserved(*req);
    out->Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "worker is overloaded"));
    return reactor;
  }
  EngineRequest er = ToEngineRequest(*req, engine_);
  er.id = next_id_.fetch_add(1);
  er.traceparent = trace::ServerSpanContext(ctx).Traceparent();
  auto sink = std::make_shared<StreamSink>(out, this, *req, er);
  in_flight_.fetch_add(1);
  absl::Status st = engine_.Submit(std::move(er), sink);
  if (!st.ok()) {
    in_flight_.fetch_sub(1);
    spdlog::warn("request_id={} refused: {}", req->request_id(), st.ToString());
    const char* reason = st.code() == absl::StatusCode::kResourceExhausted    ? "engine_full"
                         : st.code() == absl::StatusCode::kFailedPrecondition ? "draining"
                                                                              : "invalid";
    metrics::Default()
        .GetCounter("sb_worker_refused_total", "Generate calls refused, by reason",
                    {{"reason", reason}})
        .Inc();
    if (st.code() == absl::StatusCode::kFailedPrecondition) {
      // Draining: the scheduler tries another worker.
      st = absl::UnavailableError("worker is draining");
    }
    EndLeaseUnserved(*req);
    out->Finish(ToGrpcStatus(st));
    return reactor;
  }
  // The engine may already have produced tokens: they waited in the sink.
  sink->Attach();
  metrics::Default().GetCounter("sb_worker_requests_total", "Generate calls accepted").Inc();
  return reactor;
}

void WorkerServiceImpl::EndLeaseUnserved(const inf::GenerateRequest& req) {
  if (!req.lease_id().empty() && leases_ != nullptr) leases_->Update(req.lease_id(), 0, 0, true);
}

bool WorkerServiceImpl::Serves(const std::string& model) const {
  for (const auto& m : engine_.Models()) {
    if (m == model) return true;
  }
  return false;
}

grpc::ServerUnaryReactor* WorkerServiceImpl::CountTokens(grpc::CallbackServerContext* ctx,
                                                         const inf::GenerateRequest* req,
                                                         inf::CountTokensResponse* resp) {
  if (auto* refused =
          grpcx::RefuseUnlessAllowed(ctx, "/switchboard.inference.v1.InferenceWorker/CountTokens"))
    return refused;
  auto* reactor = ctx->DefaultReactor();
  if (!Serves(req->model())) {
    reactor->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND, "model: " + req->model()));
    return reactor;
  }
  resp->set_model(req->model());
  resp->set_input_tokens(ToEngineRequest(*req, engine_).input_tokens);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* WorkerServiceImpl::ListModels(grpc::CallbackServerContext* ctx,
                                                        const inf::ListModelsRequest*,
                                                        inf::ListModelsResponse* resp) {
  if (auto* refused =
          grpcx::RefuseUnlessAllowed(ctx, "/switchboard.inference.v1.InferenceWorker/ListModels"))
    return refused;
  for (const auto& m : engine_.Models()) resp->add_models(m);
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace sb::worker
