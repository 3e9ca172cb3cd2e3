// switchboard.billing.v1.Billing: usage queries. Database work runs on a
// worker pool, never on gRPC's callback threads.
#pragma once

#include "billing/ledger.h"
#include "core/thread_pool.h"
#include "switchboard/billing/v1/billing.grpc.pb.h"

namespace sb::billing {

class BillingServiceImpl final : public switchboard::billing::v1::Billing::CallbackService {
 public:
  BillingServiceImpl(Ledger& ledger, ThreadPool& pool) : ledger_(ledger), pool_(pool) {}

  grpc::ServerUnaryReactor* GetUsage(grpc::CallbackServerContext* ctx,
                                     const switchboard::billing::v1::GetUsageRequest* req,
                                     switchboard::billing::v1::GetUsageResponse* resp) override;

 private:
  Ledger& ledger_;
  ThreadPool& pool_;
};

}  // namespace sb::billing
