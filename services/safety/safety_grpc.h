// switchboard.safety.v1.Safety and SafetyAdmin: convert protos and apply
// the org's policy (policy_store.h).
#pragma once

#include "core/thread_pool.h"
#include "safety/audit.h"
#include "safety/gate.h"
#include "safety/policy_store.h"
#include "safety/throttle.h"
#include "switchboard/safety/v1/safety.grpc.pb.h"

namespace sb::safety {

class SafetyServiceImpl final : public switchboard::safety::v1::Safety::CallbackService {
 public:
  // `window`: ModerateOutput's gates hold back at most this much.
  // `throttle`: CheckInput's per-user throttle (throttle.h). `audit`
  // (may be null): where every decision other than a plain allow goes.
  SafetyServiceImpl(PolicyStore& policies, size_t window = 256, ThrottleOptions throttle = {},
                    AuditLog* audit = nullptr)
      : policies_(policies), window_(window), throttle_(throttle), audit_(audit) {}

  grpc::ServerUnaryReactor* CheckInput(grpc::CallbackServerContext* ctx,
                                       const switchboard::safety::v1::CheckRequest* req,
                                       switchboard::safety::v1::CheckResponse* resp) override;
  grpc::ServerUnaryReactor* CheckOutput(grpc::CallbackServerContext* ctx,
                                        const switchboard::safety::v1::CheckRequest* req,
                                        switchboard::safety::v1::CheckResponse* resp) override;
  // One hold-back gate (safety/gate.h) per call, under the org's policy;
  // every request message is answered with one response, in order.
  grpc::ServerBidiReactor<switchboard::safety::v1::ModerateOutputRequest,
                          switchboard::safety::v1::ModerateOutputResponse>*
  ModerateOutput(grpc::CallbackServerContext* ctx) override;

 private:
  PolicyStore& policies_;
  const size_t window_;
  InputThrottle throttle_;
  AuditLog* const audit_;
};

// Policies and the audit trail are read and written on `pool` (PostgreSQL
// calls block). `audit_db` null: no audit table (ListAudit fails).
class SafetyAdminImpl final : public switchboard::safety::v1::SafetyAdmin::CallbackService {
 public:
  SafetyAdminImpl(PolicyStore& policies, ThreadPool& pool, PgPool* audit_db = nullptr)
      : policies_(policies), pool_(pool), audit_db_(audit_db) {}

  grpc::ServerUnaryReactor* SetPolicy(grpc::CallbackServerContext* ctx,
                                      const switchboard::safety::v1::SetPolicyRequest* req,
                                      switchboard::safety::v1::PolicyResponse* resp) override;
  grpc::ServerUnaryReactor* GetPolicy(grpc::CallbackServerContext* ctx,
                                      const switchboard::safety::v1::GetPolicyRequest* req,
                                      switchboard::safety::v1::PolicyResponse* resp) override;
  grpc::ServerUnaryReactor* ListAudit(grpc::CallbackServerContext* ctx,
                                      const switchboard::safety::v1::ListAuditRequest* req,
                                      switchboard::safety::v1::ListAuditResponse* resp) override;

 private:
  PolicyStore& policies_;
  ThreadPool& pool_;
  PgPool* const audit_db_;
};

}  // namespace sb::safety
