#include "safety/safety_grpc.h"

#include <spdlog/spdlog.h>

#include <functional>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/metrics.h"
#include "core/public_status.h"
#include "grpcx/authz.h"
#include "grpcx/status.h"
#include "safety/gate.h"
#include "safety/policy.h"

namespace sb::safety {
namespace {

using switchboard::safety::v1::CheckRequest;
using switchboard::safety::v1::CheckResponse;
using switchboard::safety::v1::ModerateOutputRequest;
using switchboard::safety::v1::ModerateOutputResponse;
using ModerateReactorBase = grpc::ServerBidiReactor<ModerateOutputRequest, ModerateOutputResponse>;

void ToProto(const Finding& f, Action action, switchboard::safety::v1::Finding* out) {
  out->set_category(f.category);
  out->set_start(static_cast<int>(f.start));
  out->set_end(static_cast<int>(f.end));
  out->set_action(std::string(ActionName(action)));
}

void CountCheck(const char* direction, const char* verdict) {
  metrics::Default()
      .GetCounter("sb_safety_checks_total", "Safety checks by direction and verdict",
                  {{"direction", direction}, {"verdict", verdict}})
      .Inc();
}

// Every match the policy acted on (categories and actions are bounded
// sets: a series each).
void CountFinding(const char* direction, const std::string& category, Action action) {
  metrics::Default()
      .GetCounter("sb_safety_findings_total",
                  "Matches the org's policy acted on, by direction, rule and action",
                  {{"direction", direction},
                   {"category", category},
                   {"action", std::string(ActionName(action))}})
      .Inc();
}

// A pinned platform version this replica has not loaded: no verdict (the
// caller fails closed), until a refresh loads it.
grpc::Status UnknownPin(const std::string& request_id, int64_t version) {
  spdlog::error("request_id={} the pinned platform safety policy version {} is not loaded",
                request_id, version);
  return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                      "the pinned safety policy version is not available; retry");
}

grpc::ServerUnaryReactor* Check(grpc::CallbackServerContext* ctx, const CheckRequest* req,
                                CheckResponse* resp, Direction direction, const Policy* pinned,
                                InputThrottle* throttle, AuditLog* audit) {
  if (pinned == nullptr) {
    auto* reactor = ctx->DefaultReactor();
    reactor->Finish(UnknownPin(req->request_id(), req->platform_policy_version()));
    return reactor;
  }
  const Policy& policy = *pinned;
  const char* dir = DirectionName(direction);
  const absl::Time now = absl::Now();
  const AuditScope scope{req->request_id(), req->org_id(),    req->end_user_id(),
                         direction,         policy.version(), policy.platform_version()};
  if (throttle != nullptr) {
    if (const absl::Duration wait = throttle->Wait(req->org_id(), req->end_user_id(), now);
        wait > absl::ZeroDuration()) {
      const int64_t seconds = absl::ToInt64Seconds(absl::Ceil(wait, absl::Seconds(1)));
      resp->set_verdict(CheckResponse::THROTTLED);
      resp->set_retry_after_seconds(static_cast<int>(seconds));
      resp->set_reason(absl::StrCat(
          "this end user has recently sent too many inputs that the safety policy refused, so "
          "their requests are refused for a while; retry after ",
          seconds, " s"));
      resp->set_policy_version(policy.version());
      resp->set_platform_policy_version(policy.platform_version());
      CountCheck(dir, "throttled");
      if (audit != nullptr) audit->Record(scope, "throttle", "throttle", 0, 0, {});
      auto* reactor = ctx->DefaultReactor();
      reactor->Finish(grpc::Status::OK);
      return reactor;
    }
  }
  const Verdict v = Evaluate(req->text(), direction, policy);
  resp->set_verdict(v.allowed ? CheckResponse::ALLOW : CheckResponse::BLOCK);
  resp->set_reason(v.reason);
  resp->set_policy_version(v.policy_version);
  resp->set_platform_policy_version(v.platform_policy_version);
  for (const auto& d : v.decisions) ToProto(d.finding, d.action, resp->add_findings());
  for (const auto& d : v.decisions) {
    CountFinding(dir, d.finding.category, d.action);
    if (audit != nullptr && d.action != Action::kAllow) {
      const Finding& f = d.finding;
      audit->Record(scope, f.category, AuditAction(d.action, direction), f.start, f.end,
                    std::string_view(req->text()).substr(f.start, f.end - f.start));
    }
    if (d.action == Action::kFlag) {
      spdlog::info(
          "request_id={} org={} {} flagged: {} at {}..{} (policy version {}, platform's {})",
          req->request_id(), req->org_id(), dir, d.finding.category, d.finding.start, d.finding.end,
          v.policy_version, v.platform_policy_version);
    }
  }
  CountCheck(dir, v.allowed ? "allow" : "block");
  if (!v.allowed) {
    spdlog::info("request_id={} org={} {} blocked: {}", req->request_id(), req->org_id(), dir,
                 v.reason);
    if (throttle != nullptr && throttle->RecordBlocked(req->org_id(), req->end_user_id(), now)) {
      spdlog::warn("request_id={} org={} end user throttled for {}: more than {} refused inputs",
                   req->request_id(), req->org_id(),
                   absl::FormatDuration(throttle->options().cooldown), throttle->options().limit);
      static metrics::Counter& cooldowns = metrics::Default().GetCounter(
          "sb_safety_throttle_cooldowns_total",
          "End users refused for a cool-down after too many refused inputs");
      cooldowns.Inc();
    }
  }
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

// Reads a message, answers it, reads the next: one message in flight each
// way, so the gate is only touched by one callback at a time.
class ModerateReactor final : public ModerateReactorBase {
 public:
  ModerateReactor(PolicyStore& policies, size_t window, AuditLog* audit, grpc::Status refused)
      : policies_(policies), window_(window), audit_(audit) {
    if (!refused.ok()) {
      Finish(refused);
      return;
    }
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      // The client closed its side (or went away) without an end: nothing
      // more is released, so nothing more needs saying.
      Finish(grpc::Status::OK);
      return;
    }
    if (request_.has_start() && !gate_) {
      request_id_ = request_.start().request_id();
      org_id_ = request_.start().org_id();
      const int64_t pin = request_.start().platform_policy_version();
      auto policy = policies_.For(org_id_, pin);
      if (!policy) {
        Finish(UnknownPin(request_id_, pin));
        return;
      }
      GateOptions options{.policy = policy, .window = window_};
      if (audit_ != nullptr) {
        options.on_decision = [this, scope = AuditScope{request_id_, org_id_,
                                                        request_.start().end_user_id(),
                                                        Direction::kOutput, policy->version(),
                                                        policy->platform_version()}](
                                  const Finding& f, Action action, std::string_view span) {
          audit_->Record(scope, f.category, AuditAction(action, Direction::kOutput), f.start, f.end,
                         span);
        };
      }
      gate_.emplace(std::move(options));
    }
    if (!gate_) {
      Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "the first message must name the generation (start)"));
      return;
    }
    response_.Clear();
    const size_t redacted = gate_->redacted().size(), flagged = gate_->flagged().size();
    GateResult r = gate_->Push(request_.text());
    if (request_.end() && !r.stopped) {
      GateResult rest = gate_->Finish();
      r.release += rest.release;
      r.stopped = rest.stopped;
    }
    response_.set_release(std::move(r.release));
    response_.set_policy_version(gate_->policy().version());
    response_.set_platform_policy_version(gate_->policy().platform_version());
    for (size_t i = redacted; i < gate_->redacted().size(); ++i) {
      ToProto(gate_->redacted()[i], Action::kRedact, response_.add_redacted());
      CountFinding("output", gate_->redacted()[i].category, Action::kRedact);
    }
    for (size_t i = flagged; i < gate_->flagged().size(); ++i) {
      const Finding& f = gate_->flagged()[i];
      ToProto(f, Action::kFlag, response_.add_flagged());
      CountFinding("output", f.category, Action::kFlag);
      spdlog::info("request_id={} org={} output flagged: {} at {}..{} (policy version {})",
                   request_id_, org_id_, f.category, f.start, f.end, gate_->policy().version());
    }
    done_ = request_.end() || r.stopped;
    if (r.stopped) {
      const std::string reason = Explain({*r.stopped}, Direction::kOutput);
      ToProto(*r.stopped, Action::kBlock, response_.mutable_stopped());
      CountFinding("output", r.stopped->category, Action::kBlock);
      response_.set_reason(reason);
      spdlog::info("request_id={} org={} output stopped: {} (policy version {})", request_id_,
                   org_id_, reason, gate_->policy().version());
    }
    // Once per message of every reply: the series is looked up once.
    static metrics::Counter& moderated = metrics::Default().GetCounter(
        "sb_safety_moderated_bytes_total", "Output bytes moderated by stream");
    moderated.Inc(static_cast<double>(request_.text().size()));
    if (done_) CountCheck("output", r.stopped ? "block" : "allow");
    StartWrite(&response_);
  }

  void OnWriteDone(bool ok) override {
    if (!ok || done_) {
      Finish(grpc::Status::OK);
      return;
    }
    StartRead(&request_);
  }

  void OnDone() override { delete this; }

 private:
  PolicyStore& policies_;
  const size_t window_;
  AuditLog* const audit_;
  ModerateOutputRequest request_;
  ModerateOutputResponse response_;
  std::optional<OutputGate> gate_;
  std::string request_id_, org_id_;
  bool done_ = false;
};

void ToProto(const std::string& org, const StoredPolicy& p,
             switchboard::safety::v1::PolicyResponse* out) {
  out->set_org_id(org);
  out->set_platform(org.empty());
  out->set_version(org.empty() ? p.policy->platform_version() : p.policy->version());
  out->set_document(p.policy->json());
  out->set_created_at(p.created_at);
  out->set_created_by(p.created_by);
}

// The store's messages for caller-facing codes are written for the
// operator; the others may carry library text: logged, not sent.
grpc::Status ForCaller(const absl::Status& st, std::string_view method) {
  if (st.ok() || IsCallerFacing(st.code())) return ToGrpcStatus(st);
  spdlog::error("SafetyAdmin/{}: {}", method, st.ToString());
  if (st.code() == absl::StatusCode::kUnavailable) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        "the policy database is unavailable; retry later");
  }
  return grpc::Status(grpc::StatusCode::INTERNAL, "storing or reading the policy failed");
}

// Runs `fn` (which blocks) on `pool` and finishes the call with its status.
grpc::ServerUnaryReactor* OnPool(grpc::CallbackServerContext* ctx, ThreadPool& pool,
                                 std::function<grpc::Status()> fn) {
  auto* reactor = ctx->DefaultReactor();
  if (!pool.Submit([reactor, fn = std::move(fn)] { reactor->Finish(fn()); })) {
    reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "safety admin is busy"));
  }
  return reactor;
}

}  // namespace

ModerateReactorBase* SafetyServiceImpl::ModerateOutput(grpc::CallbackServerContext* ctx) {
  return new ModerateReactor(
      policies_, window_, audit_,
      grpcx::Authorize(*ctx, "/switchboard.safety.v1.Safety/ModerateOutput"));
}

grpc::ServerUnaryReactor* SafetyServiceImpl::CheckInput(grpc::CallbackServerContext* ctx,
                                                        const CheckRequest* req,
                                                        CheckResponse* resp) {
  if (auto* refused = grpcx::RefuseUnlessAllowed(ctx, "/switchboard.safety.v1.Safety/CheckInput"))
    return refused;
  auto policy = policies_.For(req->org_id(), req->platform_policy_version());
  return Check(ctx, req, resp, Direction::kInput, policy.get(), &throttle_, audit_);
}

grpc::ServerUnaryReactor* SafetyServiceImpl::CheckOutput(grpc::CallbackServerContext* ctx,
                                                         const CheckRequest* req,
                                                         CheckResponse* resp) {
  if (auto* refused = grpcx::RefuseUnlessAllowed(ctx, "/switchboard.safety.v1.Safety/CheckOutput"))
    return refused;
  auto policy = policies_.For(req->org_id(), req->platform_policy_version());
  return Check(ctx, req, resp, Direction::kOutput, policy.get(), nullptr, audit_);
}

grpc::ServerUnaryReactor* SafetyAdminImpl::SetPolicy(
    grpc::CallbackServerContext* ctx, const switchboard::safety::v1::SetPolicyRequest* req,
    switchboard::safety::v1::PolicyResponse* resp) {
  if (auto* refused =
          grpcx::RefuseUnlessAllowed(ctx, "/switchboard.safety.v1.SafetyAdmin/SetPolicy"))
    return refused;
  return OnPool(ctx, pool_, [this, req, resp] {
    if (req->platform()) {
      if (!req->org_id().empty()) {
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            "a platform policy names no org_id");
      }
      auto stored = policies_.SetPlatform(req->document(), req->created_by());
      if (!stored.ok()) return ForCaller(stored.status(), "SetPolicy");
      ToProto("", *stored, resp);
      policies_.InstallPlatform(stored->policy);
      return grpc::Status::OK;
    }
    if (req->org_id().empty()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "org_id is required (or platform, for the platform's policy)");
    }
    auto stored = policies_.Set(req->org_id(), req->document(), req->created_by());
    if (!stored.ok()) return ForCaller(stored.status(), "SetPolicy");
    ToProto(req->org_id(), *stored, resp);
    // In force here at once; other replicas at their next refresh.
    policies_.Install(req->org_id(), stored->policy);
    return grpc::Status::OK;
  });
}

grpc::ServerUnaryReactor* SafetyAdminImpl::GetPolicy(
    grpc::CallbackServerContext* ctx, const switchboard::safety::v1::GetPolicyRequest* req,
    switchboard::safety::v1::PolicyResponse* resp) {
  if (auto* refused =
          grpcx::RefuseUnlessAllowed(ctx, "/switchboard.safety.v1.SafetyAdmin/GetPolicy"))
    return refused;
  return OnPool(ctx, pool_, [this, req, resp] {
    if (req->platform() && !req->org_id().empty()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "a platform policy names no org_id");
    }
    auto stored = req->platform() ? policies_.GetPlatform(req->version())
                                  : policies_.Get(req->org_id(), req->version());
    if (!stored.ok()) return ForCaller(stored.status(), "GetPolicy");
    ToProto(req->platform() ? "" : req->org_id(), *stored, resp);
    return grpc::Status::OK;
  });
}

grpc::ServerUnaryReactor* SafetyAdminImpl::ListAudit(
    grpc::CallbackServerContext* ctx, const switchboard::safety::v1::ListAuditRequest* req,
    switchboard::safety::v1::ListAuditResponse* resp) {
  if (auto* refused =
          grpcx::RefuseUnlessAllowed(ctx, "/switchboard.safety.v1.SafetyAdmin/ListAudit"))
    return refused;
  return OnPool(ctx, pool_, [this, req, resp] {
    if (audit_db_ == nullptr) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          "this safety replica has no audit database (--pg)");
    }
    auto listed = sb::safety::ListAudit(*audit_db_, *req);
    if (!listed.ok()) return ForCaller(listed.status(), "ListAudit");
    *resp = std::move(*listed);
    return grpc::Status::OK;
  });
}

}  // namespace sb::safety
