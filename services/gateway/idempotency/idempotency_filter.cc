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
// alive while the request runs, and settles the record when it completes.
class Recorder final : public ResponseTap {
 public:
  Recorder(IdempotencyStore& store, Clock& clock, IdempotencyRecordKey key, std::string owner)
      : store_(store), clock_(clock), key_(std::move(key)), owner_(std::move(owner)) {}

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
  void OnStreamData(const std::string& data) override {
    store_.Append(key_, owner_, data, Check());
  }

  void Complete(const RequestContext::Outcome& o) {
    std::lock_guard<std::mutex> lock(mu_);
    if (o.cancelled) {
      // It did not finish (the gateway shut down under it): the retry runs.
      store_.Release(key_, owner_, Check());
    } else if (streamed_) {
      store_.EndStream(key_, owner_, clock_.Now(), Check());
    } else if (status_ / 100 == 2 || o.started) {
      store_.FinishWhole(key_, owner_, clock_.Now(), status_, content_type_, body_, Check());
    } else {
      Requests("released").Inc();
      store_.Release(key_, owner_, Check());
    }
  }

  void Renew() { store_.Renew(key_, owner_, clock_.Now(), Check()); }

 private:
  IdempotencyStore::WriteDone Check() {
    return [key = key_.record](absl::StatusOr<bool> owned) {
      if (owned.ok() && *owned) return;
      WriteFailures().Inc();
      if (!owned.ok()) {
        spdlog::warn("idempotency record {}: {}", key, owned.status().ToString());
      } else {
        spdlog::warn("idempotency record {}: no longer ours (its lease lapsed)", key);
      }
    };
  }

  IdempotencyStore& store_;
  Clock& clock_;
  const IdempotencyRecordKey key_;
  const std::string owner_;
  std::atomic<bool> streamed_{false};
  std::mutex mu_;
  int status_ = 0;
  std::string content_type_;
  std::string body_;
};

// A retry's side of a streamed response: the record's data from the start,
// as it is written, until its end.
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
    auto self = shared_from_this();
    store_.Read(key_, after_, kReadBatch,
                [self](absl::StatusOr<EventsRead> r) { self->OnRead(std::move(r)); });
  }
  void OnRead(absl::StatusOr<EventsRead> r) {
    if (!r.ok()) {
      spdlog::warn("idempotency record {} ({}): {}", key_.record, ctx_->request_id(),
                   r.status().ToString());
      stream_->End(error_event_);
      return;
    }
    if (owner_.empty()) owner_ = r->owner;
    for (auto& [id, data] : r->data) {
      after_ = id;
      if (!data.empty()) stream_->Write(std::move(data), nullptr);
    }
    if (r->ended || gone_) {
      stream_->End("");
      return;
    }
    if (r->data.size() == static_cast<size_t>(kReadBatch)) {
      Read();
      return;
    }
    // Released, run again by another owner, or its owner died: what this
    // stream showed so far belongs to a run that will never finish.
    if (r->state != EventsRead::State::kRunning || r->owner != owner_ ||
        r->lease_until < ctx_->clock().Now()) {
      stream_->End(error_event_);
      return;
    }
    timers_.After(IdempotencyFilter::kPoll, [self = shared_from_this()] { self->Read(); });
  }

  std::shared_ptr<RequestContext> ctx_;
  IdempotencyStore& store_;
  Timers& timers_;
  const IdempotencyRecordKey key_;
  std::shared_ptr<SseStream> stream_;
  const std::string error_event_;
  std::string after_ = "0-0";
  std::string owner_;
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
  a->key = IdempotencyRecordKey::For(ctx->principal->org_id, ctx->route_name, ctx->user_id, key);
  a->fingerprint = HexEncode(Sha256(ctx->request().body));
  Claim(std::move(a));
}

void IdempotencyFilter::Claim(std::shared_ptr<Attempt> a) {
  const std::string owner = a->ctx->request_id();
  store_.Claim(
      a->key, a->fingerprint, owner, a->ctx->clock().Now(),
      [this, a](absl::StatusOr<ClaimResult> claim) {
        if (!claim.ok()) {
          Requests("unavailable").Inc();
          spdlog::warn("idempotency ({}): {}", a->ctx->request_id(), claim.status().ToString());
          a->ctx->Fail(Unreachable(), 503);
          return;
        }
        switch (claim->kind) {
          case ClaimResult::Kind::kClaimed:
            Own(a);
            return;
          case ClaimResult::Kind::kMismatch:
            Requests("mismatch").Inc();
            a->ctx->Fail(
                absl::InvalidArgumentError("this Idempotency-Key was already used with a different "
                                           "request body; use a new key for a new request"),
                422);
            return;
          case ClaimResult::Kind::kDone:
            Replay(a, *claim);
            return;
          case ClaimResult::Kind::kRunning:
            if (a->ctx->api.stream && claim->stream) {
              Requests("attached").Inc();
              Follow(a);
              return;
            }
            // Not streaming yet, or a whole response: look again
            // shortly (unless the client has left).
            if (!a->watching) {
              a->watching = true;
              std::weak_ptr<Attempt> weak = a;
              a->ctx->exchange().OnClientGone([weak] {
                if (auto self = weak.lock()) self->gone = true;
              });
            }
            if (a->gone) {
              a->ctx->Fail(absl::CancelledError("the client left while waiting"));
              return;
            }
            timers_.After(a->wait, [this, a] { Claim(a); });
            a->wait = std::min(a->wait * 1.5, kMaxPoll);
            return;
        }
      });
}

void IdempotencyFilter::Own(const std::shared_ptr<Attempt>& a) {
  Requests("new").Inc();
  auto& ctx = a->ctx;
  auto recorder = std::make_shared<Recorder>(store_, ctx->clock(), a->key, ctx->request_id());
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
