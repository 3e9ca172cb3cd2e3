// The pipeline's backends over gRPC: safety's CheckInput and CheckOutput,
// and the tenant-scheduler's Generate stream. Every call has a deadline.
#pragma once

#include <chrono>
#include <memory>

#include "pipeline/pipeline.h"
#include "switchboard/safety/v1/safety.grpc.pb.h"
#include "switchboard/scheduler/v1/scheduler.grpc.pb.h"

namespace sb::pipeline {

class GrpcInputGuard final : public InputGuard {
 public:
  GrpcInputGuard(switchboard::safety::v1::Safety::StubInterface& safety,
                 std::chrono::milliseconds deadline)
      : safety_(safety), deadline_(deadline) {}
  void Check(const CheckContext& ctx, std::string text,
             std::function<void(absl::Status)> done) override;

 private:
  switchboard::safety::v1::Safety::StubInterface& safety_;
  std::chrono::milliseconds deadline_;
};

// Checks every piece as it comes, with the reply's recent text before it
// (safety/output_window.h), by one CheckOutput call per piece; releases the
// piece when allowed. The safety issue replaces this with a streaming
// hold-back gate behind the same interface.
class UnaryOutputGates final : public OutputGates {
 public:
  UnaryOutputGates(switchboard::safety::v1::Safety::StubInterface& safety,
                   std::chrono::milliseconds deadline)
      : safety_(safety), deadline_(deadline) {}
  std::unique_ptr<OutputGate> Open(const CheckContext& ctx) override;

 private:
  switchboard::safety::v1::Safety::StubInterface& safety_;
  std::chrono::milliseconds deadline_;
};

class GrpcGenerator final : public Generator {
 public:
  GrpcGenerator(switchboard::scheduler::v1::TenantScheduler::StubInterface& scheduler,
                std::chrono::seconds deadline)
      : scheduler_(scheduler), deadline_(deadline) {}
  std::shared_ptr<GenerateCall> Generate(std::shared_ptr<const Request> request,
                                         Callbacks callbacks) override;

 private:
  switchboard::scheduler::v1::TenantScheduler::StubInterface& scheduler_;
  std::chrono::seconds deadline_;
};

}  // namespace sb::pipeline
