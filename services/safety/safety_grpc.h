// switchboard.safety.v1.Safety: converts protos and applies the policy.
#pragma once

#include "switchboard/safety/v1/safety.grpc.pb.h"

namespace sb::safety {

class SafetyServiceImpl final : public switchboard::safety::v1::Safety::CallbackService {
 public:
  grpc::ServerUnaryReactor* CheckInput(grpc::CallbackServerContext* ctx,
                                       const switchboard::safety::v1::CheckRequest* req,
                                       switchboard::safety::v1::CheckResponse* resp) override;
  grpc::ServerUnaryReactor* CheckOutput(grpc::CallbackServerContext* ctx,
                                        const switchboard::safety::v1::CheckRequest* req,
                                        switchboard::safety::v1::CheckResponse* resp) override;
};

}  // namespace sb::safety
