#include "gateway/idempotency/idempotency_filter.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <mutex>

#include "core/crypto.h"
#include "core/metrics.h"
#include "gateway/context.h"
#include "gateway/dialects/fields.h"
#include "gateway/sse_stream.h"

namespace sb::gateway {
namespace {

constexpr int kReadBatch = 256;

metrics::Counter& Requests(const std::string& outcome) {
  return metrics::Default().GetCounter(
      "sb_gateway_idempotent_requests_total",
      "Requests with an Idempotency-Key, by what became of them: new (ran), replayed (a done "
      "record), attached (joined a running one), released (refused before it started: the key "
      "was not consumed), mismatch (422), unavailable (503: Redis unreachable)",
      {{"outcome", outcome}});
}

metrics::Counter& WriteFailures() {
  static auto& c = metrics::Default().GetCounter(
      "sb_gateway_idempotency_write_failures_total",
      "Writes to idempotency records that failed (a retry may then run the request again)");
  return c;
}

bool ValidKey(const std::string& key) {
  if (key.empty() || key.size() > IdempotencyFilter::kMaxKeyBytes) return false;
  for (unsigned char c : key) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

const http::Headers kReplayed = {{"idempotent-replayed", "true"}};

absl::Status Unreachable() {
  return WithRetryAfter(
      absl::InternalError("idempotency keys cannot be checked right now; retry shortly"),
      absl::Seconds(1));
}

// The owner's side: tees the response into the record, keeps the lease
// alive while the request runs, and settles the record when it completes:
// finished when the response was whole and good, released otherwise (the
// retry then runs). A record this request no longer owns (its lease lapsed
// and a retry took it over) stops its generation: never two at once.
class Recorder final : public ResponseTap, public std::enable_shared_from_this<Recorder> {
 public:
  Recorder(IdempotencyStore& store, Clock& clock, IdempotencyRecordKey key, std::string owner,
           std::weak_ptr<RequestContext> ctx)
      : store_(store),
        clock_(clock),
        key_(std::move(key)),
        owner_(std::move(owner)),
        ctx_(std::move(ctx)) {}

  void OnWhole(int status, std::string_view content_type, const std::string& body) override {
    std::lock_guard<std::mutex> lock(mu_);
    status_ = status;
    content_type_ = std::string(content_type);
    body_ = body;
  }
  void OnStreamStart() override {
    streamed_ = true;
    store_.StartStream(key_, owner_, clock_.Now(), Check());
  }
  // Called in the stream's order (SseStream serialises its writes).
  void OnStreamData(const std::string& data) override {
    store_.Append(key_, owner_, data, ++appends_, Check());
  }

  void Complete(const RequestContext::Outcome& o) {
    bool good;
    {
      std::lock_guard<std::mutex> lock(mu_);
      completed_ = true;
      good = !o.cancelled && !o.failed && !broken_;
    }
    // The store is called without the lock: a refusal can come back inline
    // (a full queue), into Check, which takes it.
    if (good && streamed_) {
      store_.EndStream(key_, owner_, clock_.Now(), appends_, Check());
    } else if (good && status_ / 100 == 2) {
      store_.FinishWhole(key_, owner_, clock_.Now(), status_, content_type_, body_, Check());
    } else {
      // Refused before it started, failed, cancelled, or a write was lost:
      // nothing worth replaying, and the retry runs.
      Requests("released").Inc();
      store_.Release(key_, owner_, Check());
    }
  }

  void Renew() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (completed_) return;
    }
    store_.Renew(key_, owner_, clock_.Now(), Check());
  }

 private:
  IdempotencyStore::WriteDone Check() {
    return [weak = weak_from_this(), key = key_.record](absl::StatusOr<bool> owned) {
      if (owned.ok() && *owned) return;
      WriteFailures().Inc();
      auto self = weak.lock();
      bool lost = false;
      if (self) {
        std::lock_guard<std::mutex> lock(self->mu_);
        self->broken_ = true;
        lost = owned.ok() && !self->completed_;
      }
      if (!owned.ok()) {
        spdlog::warn("idempotency record {}: {}", key, owned.status().ToString());
        return;
      }
      spdlog::warn("idempotency record {}: no longer ours (its lease lapsed){}", key,
                   lost ? "; stopping the generation" : "");
      if (!lost) return;
      if (auto ctx = self->ctx_.lock()) ctx->CancelGeneration();
    };
  }

  IdempotencyStore& store_;
  Clock& clock_;
  const IdempotencyRecordKey key_;
  const std::string owner_;
  const std::weak_ptr<RequestContext> ctx_;
  std::atomic<bool> streamed_{false};
  std::atomic<int64_t> appends_{0};
  std::mutex mu_;
  bool completed_ = false;
  bool broken_ = false;  // a write failed or was refused
  int status_ = 0;
  std::string content_type_;
  std::string body_;
};

// A retry's side of a streamed response: the record's data from the start,
// as it is written, until its end. The next read waits for the client to
// take what was read (and, while nothing new comes, backs off).
class Follower final : public std::enable_shared_from_this<Follower> {
 public:
  Follower(std::shared_ptr<RequestContext> ctx, IdempotencyStore& store, Timers& timers,
           IdempotencyRecordKey key, std::shared_ptr<SseStream> stream, std::string error_event)
      : ctx_(std::move(ctx)),
        store_(store),
        timers_(timers),
        key_(std::move(key)),
        stream_(std::move(stream)),
        error_event_(std::move(error_event)) {}

  void Start() {
    std::weak_ptr<Follower> weak = shared_from_this();
    ctx_->exchange().OnClientGone([weak] {
      if (auto self = weak.lock()) self->gone_ = true;
    });
    stream_->Start();
    Read();
  }

 private:
  void Read() {
    store_.Read(
        key_, after_, kReadBatch,
        [self = shared_from_this()](absl::StatusOr<EventsRead> r) { self->OnRead(std::move(r)); });
  }
  void Later() {
    timers_.After(wait_, [self = shared_from_this()] { self->Read(); });
    wait_ = std::min(wait_ * 1.5, IdempotencyFilter::kMaxPoll);
  }
  void OnRead(absl::StatusOr<EventsRead> r) {
    if (!r.ok()) {
      spdlog::warn("idempotency record {} ({}): {}", key_.record, ctx_->request_id(),
                   r.status().ToString());
      stream_->End(error_event_);
      return;
    }
    if (owner_.empty()) owner_ = r->owner;
    std::string batch;
    for (auto& [id, data] : r->data) {
      after_ = id;
      batch += data;
    }
    if (r->ended || gone_) {
      if (!batch.empty()) stream_->Write(std::move(batch), nullptr);
      stream_->End("");
      return;
    }
    const bool more = r->data.size() == static_cast<size_t>(kReadBatch);
    // Released, run again by another owner, its owner died, or a piece was
    // lost: what this stream showed belongs to a run that will not finish
    // whole.
    if (r->gap || (!more && (r->state != EventsRead::State::kRunning || r->owner != owner_ ||
                             r->lease_until < ctx_->clock().Now()))) {
      if (!batch.empty()) stream_->Write(std::move(batch), nullptr);
      stream_->End(error_event_);
      return;
    }
    if (batch.empty()) {
      Later();
      return;
    }
    wait_ = IdempotencyFilter::kPoll;
    stream_->Write(std::move(batch), [self = shared_from_this(), more](bool ok) {
      if (!ok) self->gone_ = true;
      if (more || !ok) {
        self->Read();
      } else {
        self->Later();
      }
    });
  }

  std::shared_ptr<RequestContext> ctx_;
  IdempotencyStore& store_;
  Timers& timers_;
  const IdempotencyRecordKey key_;
  std::shared_ptr<SseStream> stream_;
  const std::string error_event_;
  std::string after_ = "0-0";
  std::string owner_;
  absl::Duration wait_ = IdempotencyFilter::kPoll;
  std::atomic<bool> gone_{false};
};

}  // namespace

struct IdempotencyFilter::Attempt {
  std::shared_ptr<RequestContext> ctx;
  Next next;
  IdempotencyRecordKey key;
  std::string fingerprint;
  std::atomic<bool> gone{false};
  bool watching = false;        // for the client leaving while it waits
  absl::Duration wait = kPoll;  // before looking again; grows to kMaxPoll
};

void IdempotencyFilter::Handle(const std::shared_ptr<RequestContext>& ctx, Next next) {
  const std::string key = ctx->request().Header("idempotency-key");
  if (key.empty()) {
    next();
    return;
  }
  if (!ValidKey(key)) {
    ctx->Fail(
        absl::InvalidArgumentError("Idempotency-Key must be 1 to 255 printable ASCII characters"));
    return;
  }
  auto a = std::make_shared<Attempt>();
  a->ctx = ctx;
  a->next = std::move(next);
  a->key =
      IdempotencyRecordKey::For(ctx->principal->org_id, ctx->request().path, ctx->user_id, key);
  a->fingerprint = HexEncode(Sha256(ctx->request().body));
  Claim(std::move(a));
}

void IdempotencyFilter::Claim(std::shared_ptr<Attempt> a) {
  store_.Claim(a->key, a->fingerprint, a->ctx->request_id(), a->ctx->clock().Now(),
               [this, a](absl::StatusOr<ClaimResult> claim) {
                 // Off the Redis thread: what follows is request work.
                 ContinueOn(pool_, a->ctx,
                            [this, a, claim = std::move(claim)] { OnClaim(a, claim); });
               });
}

void IdempotencyFilter::OnClaim(const std::shared_ptr<Attempt>& a,
                                const absl::StatusOr<ClaimResult>& claim) {
  auto& ctx = a->ctx;
  if (!claim.ok()) {
    Requests("unavailable").Inc();
    spdlog::warn("idempotency ({}): {}", ctx->request_id(), claim.status().ToString());
    // The claim may have run with only its reply lost: give the key back
    // (a no-op unless this request holds it), so the retry need not wait
    // out the lease.
    store_.Release(a->key, ctx->request_id());
    ctx->Fail(Unreachable(), 503);
    return;
  }
  switch (claim->kind) {
    case ClaimResult::Kind::kClaimed:
      Own(a);
      return;
    case ClaimResult::Kind::kMismatch:
      Requests("mismatch").Inc();
      ctx->Fail(absl::InvalidArgumentError("this Idempotency-Key was already used with a different "
                                           "request body; use a new key for a new request"),
                422);
      return;
    case ClaimResult::Kind::kDone:
      Replay(a, *claim);
      return;
    case ClaimResult::Kind::kRunning:
      if (ctx->api.stream && claim->stream) {
        Requests("attached").Inc();
        Follow(a);
        return;
      }
      // Not streaming yet, or a whole response: look again shortly
      // (unless the client has left).
      if (!a->watching) {
        a->watching = true;
        std::weak_ptr<Attempt> weak = a;
        ctx->exchange().OnClientGone([weak] {
          if (auto self = weak.lock()) self->gone = true;
        });
      }
      if (a->gone) {
        ctx->Fail(absl::CancelledError("the client left while waiting"));
        return;
      }
      timers_.After(a->wait, [this, a] { Claim(a); });
      a->wait = std::min(a->wait * 1.5, kMaxPoll);
      return;
  }
}

void IdempotencyFilter::Own(const std::shared_ptr<Attempt>& a) {
  Requests("new").Inc();
  auto& ctx = a->ctx;
  auto recorder = std::make_shared<Recorder>(store_, ctx->clock(), a->key, ctx->request_id(), ctx);
  auto renewal =
      std::make_shared<Repeating>(timers_, store_.lease() / 3, [recorder] { recorder->Renew(); });
  renewal->Start();
  ctx->detached = true;
  ctx->set_tap(recorder);
  ctx->OnComplete([recorder, renewal](const RequestContext::Outcome& o) {
    renewal->Stop();
    recorder->Complete(o);
  });
  a->next();
}

void IdempotencyFilter::Replay(const std::shared_ptr<Attempt>& a, const ClaimResult& claim) {
  Requests("replayed").Inc();
  if (claim.stream) {
    Follow(a);
    return;
  }
  if (claim.status < 200 || claim.status > 599) {
    spdlog::error("idempotency record {} ({}): done with status {}", a->key.record,
                  a->ctx->request_id(), claim.status);
    a->ctx->Fail(absl::InternalError("the recorded response is unreadable"));
    return;
  }
  a->ctx->Respond(claim.status, claim.content_type, claim.body, kReplayed);
}

void IdempotencyFilter::Follow(const std::shared_ptr<Attempt>& a) {
  auto& ctx = a->ctx;
  auto encoder = ctx->dialect->NewStream({}, ctx->api);
  auto stream = std::make_shared<SseStream>(ctx, timers_, ping_interval_, encoder->Ping());
  const std::string error = encoder->Error(WithRetryAfter(
      absl::InternalError("the original request with this Idempotency-Key was interrupted; retry"),
      absl::Seconds(1)));
  ctx->AddResponseHeaders(kReplayed);
  std::make_shared<Follower>(ctx, store_, timers_, a->key, std::move(stream), error)->Start();
}

}  // namespace sb::gateway
