#include "gateway/admission/admission_filter.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <thread>

#include "core/metrics.h"
#include "gateway/context.h"
#include "gateway/dialects/fields.h"

namespace sb::gateway {

bool LimitsConcurrency(const std::vector<LimitRow>& rows) {
  return std::any_of(rows.begin(), rows.end(), [](const LimitRow& r) { return r.concurrency > 0; });
}

absl::StatusOr<FallbackMode> ParseFallbackMode(std::string_view s) {
  if (s == "local") return FallbackMode::kLocal;
  if (s == "open") return FallbackMode::kOpen;
  if (s == "closed") return FallbackMode::kClosed;
  return absl::InvalidArgumentError("--ratelimit_fallback must be local, open or closed");
}

FallbackAdmission::FallbackAdmission(Admission& primary, LocalAdmission& local, FallbackMode mode)
    : primary_(primary),
      local_(local),
      mode_(mode),
      fallbacks_(metrics::Default().GetCounter(
          "sb_gateway_ratelimit_fallbacks_total",
          "Admissions decided without Redis (it could not be reached)")) {}

void FallbackAdmission::Admit(const AdmissionRequest& req, const std::vector<LimitRow>& rows,
                              absl::Time now, Done done) {
  primary_.Admit(req, rows, now, [this, req, rows, now, done](absl::StatusOr<AdmissionDecision> d) {
    if (d.ok() || d.status().code() != absl::StatusCode::kUnavailable) {
      done(std::move(d));
      return;
    }
    fallbacks_.Inc();
    // The script may have run with only its reply lost: free the lease it
    // would have taken (a no-op otherwise), so it does not hold a slot for
    // its whole TTL. Its charges stand: they refill.
    if (LimitsConcurrency(rows))
      primary_.Complete(req, rows, now, req.input_tokens, req.max_tokens);
    // One line a second at most: an outage must not flood the log.
    const int64_t ms = absl::ToUnixMillis(now);
    int64_t last = last_log_ms_.load();
    if (ms - last >= 1000 && last_log_ms_.compare_exchange_strong(last, ms)) {
      spdlog::warn("rate limits: {}; admitting by the fallback ({})", d.status().ToString(),
                   mode_ == FallbackMode::kLocal  ? "local"
                   : mode_ == FallbackMode::kOpen ? "open"
                                                  : "closed");
    }
    switch (mode_) {
      case FallbackMode::kLocal:
        local_.Admit(req, rows, now, done);
        return;
      case FallbackMode::kOpen: {
        AdmissionDecision open;
        open.admitted = true;
        open.local = true;
        done(open);
        return;
      }
      case FallbackMode::kClosed:
        done(absl::UnavailableError("rate limiting is unavailable; retry shortly"));
        return;
    }
  });
}

void FallbackAdmission::Complete(const AdmissionRequest& req, const std::vector<LimitRow>& rows,
                                 absl::Time now, int64_t input_tokens, int64_t output_tokens,
                                 Settled settled) {
  if (!req.local) {
    primary_.Complete(req, rows, now, input_tokens, output_tokens, std::move(settled));
  } else if (mode_ == FallbackMode::kLocal) {
    local_.Complete(req, rows, now, input_tokens, output_tokens, std::move(settled));
  } else if (settled) {
    settled(absl::OkStatus());  // admitted open: nothing was charged
  }
}

void FallbackAdmission::Renew(const AdmissionRequest& req, const std::vector<LimitRow>& rows,
                              absl::Time now, Settled settled) {
  if (!req.local) {
    primary_.Renew(req, rows, now, std::move(settled));
  } else if (mode_ == FallbackMode::kLocal) {
    local_.Renew(req, rows, now, std::move(settled));
  } else if (settled) {
    settled(absl::OkStatus());
  }
}

int64_t EstimateInputTokens(const pipeline::Request& request) {
  size_t bytes = 0;
  for (const auto& b : request.system()) bytes += b.text().size();
  for (const auto& m : request.messages()) {
    for (const auto& b : m.content()) bytes += b.text().size();
  }
  return std::max<int64_t>(1, static_cast<int64_t>((bytes + 3) / 4));
}

absl::Status RefusalStatus(const Refusal& refusal, const AdmissionRequest& req) {
  const std::string limit = std::to_string(refusal.limit);
  if (refusal.never) {
    if (refusal.dimension == Dimension::kOutputTokens) {
      return FieldError("max_tokens", std::to_string(req.max_tokens) +
                                          " is more than the output tokens per minute limit (" +
                                          limit + ") allows");
    }
    return absl::InvalidArgumentError(
        "the request's input (about " + std::to_string(req.input_tokens) +
        " tokens) is more than the input tokens per minute limit (" + limit + ") allows");
  }
  std::string what;
  switch (refusal.dimension) {
    case Dimension::kRequests:
      what = "requests per minute (" + limit + ")";
      break;
    case Dimension::kInputTokens:
      what = "input tokens per minute (" + limit + ")";
      break;
    case Dimension::kOutputTokens:
      what = "output tokens per minute (" + limit + ")";
      break;
    case Dimension::kConcurrency:
      what = "concurrent requests (" + limit + ")";
      break;
  }
  return RateLimitError(
      "rate limit reached: " + what + "; retry after the retry-after header", refusal.retry_after,
      refusal.dimension == Dimension::kRequests || refusal.dimension == Dimension::kConcurrency
          ? "requests"
          : "tokens");
}

// One admitted request's part in admission, shared by the callbacks that
// renew and settle it (one copy of its rows, not one per callback).
struct AdmissionFilter::Admitted {
  AdmissionRequest req;
  std::vector<LimitRow> rows;
};

void AdmissionFilter::Handle(const std::shared_ptr<RequestContext>& ctx, Next next) {
  const pipeline::Request& g = *ctx->api.generate;
  std::vector<LimitRow> rows =
      limits_.For(ctx->principal->org_id, ctx->principal->key_id, g.model());
  if (rows.empty()) {
    next();
    return;
  }
  auto a = std::make_shared<Admitted>(
      Admitted{{ctx->principal->org_id, ctx->principal->key_id, g.model(), ctx->request_id(),
                EstimateInputTokens(g), g.max_tokens()},
               std::move(rows)});
  const absl::Time now = ctx->clock().Now();
  const std::thread::id caller = std::this_thread::get_id();
  admission_.Admit(a->req, a->rows, now,
                   [this, ctx, next = std::move(next), a, now,
                    caller](absl::StatusOr<AdmissionDecision> d) mutable {
                     auto decided = [this, ctx, next = std::move(next), a, now,
                                     d = std::move(d)]() mutable {
                       Decided(ctx, std::move(next), std::move(a), now, d);
                     };
                     // Decided in this thread (the in-process limiter): go on. On the
                     // Redis thread: what follows is request work.
                     if (std::this_thread::get_id() == caller) {
                       decided();
                     } else {
                       ContinueOn(pool_, ctx, std::move(decided));
                     }
                   });
}

void AdmissionFilter::Decided(const std::shared_ptr<RequestContext>& ctx, Next next,
                              std::shared_ptr<Admitted> a, absl::Time now,
                              const absl::StatusOr<AdmissionDecision>& d) {
  if (!d.ok()) {
    ctx->Fail(d.status());
    return;
  }
  if (!d->admitted) {
    // The refused dimension, for the headers: empty, full again after a
    // minute.
    LimitState refused{true, d->refusal.limit, 0, FullAt(d->refusal.limit, 0, now)};
    RateLimitView view;
    if (d->refusal.dimension == Dimension::kRequests) view.requests = refused;
    if (d->refusal.dimension == Dimension::kInputTokens) view.input_tokens = refused;
    if (d->refusal.dimension == Dimension::kOutputTokens) view.output_tokens = refused;
    ctx->AddResponseHeaders(ctx->dialect->RateLimitHeaders(view, now));
    ctx->Fail(RefusalStatus(d->refusal, a->req));
    return;
  }
  ctx->AddResponseHeaders(ctx->dialect->RateLimitHeaders(d->view, now));
  a->req.local = d->local;  // before the callbacks below share it
  std::shared_ptr<const Admitted> admitted = std::move(a);
  auto* admission = &admission_;
  Clock* clock = &ctx->clock();
  // The concurrency leases are renewed every third of their life while the
  // request runs.
  std::shared_ptr<Repeating> keeper;
  if (LimitsConcurrency(admitted->rows)) {
    keeper = std::make_shared<Repeating>(timers_, lease_ttl_ / 3, [admission, clock, admitted] {
      admission->Renew(admitted->req, admitted->rows, clock->Now());
    });
    keeper->Start();
  }
  ctx->OnComplete([admission, clock, admitted, keeper](const RequestContext::Outcome& o) {
    if (keeper) keeper->Stop();
    const AdmissionRequest& req = admitted->req;
    // Not started: the input stays counted, the whole output comes back.
    admission->Complete(req, admitted->rows, clock->Now(),
                        o.started ? o.input_tokens : req.input_tokens,
                        o.started ? o.output_tokens : 0);
  });
  next();
}

}  // namespace sb::gateway
