// switchboard.safety.v1.Safety: converts protos and applies the policy.
#pragma once

#include "safety/gate.h"
#include "switchboard/safety/v1/safety.grpc.pb.h"

namespace sb::safety {

class SafetyServiceImpl final : public switchboard::safety::v1::Safety::CallbackService {
 public:
  // `gate`: for ModerateOutput's gates (its action is block).
  explicit SafetyServiceImpl(GateOptions gate = {}) : gate_(gate) {}

  grpc::ServerUnaryReactor* CheckInput(grpc::CallbackServerContext* ctx,
                                       const switchboard::safety::v1::CheckRequest* req,
                                       switchboard::safety::v1::CheckResponse* resp) override;
  grpc::ServerUnaryReactor* CheckOutput(grpc::CallbackServerContext* ctx,
                                        const switchboard::safety::v1::CheckRequest* req,
                                        switchboard::safety::v1::CheckResponse* resp) override;
  // One hold-back gate (safety/gate.h) per call; every request message is
  // answered with one response, in order.
  grpc::ServerBidiReactor<switchboard::safety::v1::ModerateOutputRequest,
                          switchboard::safety::v1::ModerateOutputResponse>*
  ModerateOutput(grpc::CallbackServerContext* ctx) override;

 private:
  const GateOptions gate_;
};

}  // namespace sb::safety
