// Who may call what inside Switchboard: one table from every gRPC method to
// the identities (grpcx/tls.h) allowed to call it, and the check every
// handler makes first. A method missing from the table is refused to
// everyone, and the authorization matrix test (tests/e2e) fails until it is
// added, so a new method cannot slip through. `org_id` and `user_id` in a
// request are trusted because only these callers can make it.
//
//   grpc::ServerUnaryReactor* Impl::GetUsage(grpc::CallbackServerContext* ctx, ...) {
//     if (auto* refused = grpcx::RefuseUnlessAllowed(ctx, kGetUsage)) return refused;
//     ...
//
// Reflection and grpc.health.v1 are served to every authenticated caller.
// A plaintext server (--insecure_internal, or a unit test's own server)
// has no identities to check and allows every call.
#pragma once

#include <grpcpp/grpcpp.h>

#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace sb::grpcx {

// Full method name ("/package.Service/Method") -> identities allowed.
const std::map<std::string, std::vector<std::string_view>, std::less<>>& MethodCallers();

// OK, or PERMISSION_DENIED (counted in sb_grpc_denied_total and logged
// with the caller's identity).
grpc::Status Authorize(const grpc::ServerContextBase& ctx, std::string_view method);

// For unary callback handlers: nullptr when allowed, else the call's
// reactor, already finished with PERMISSION_DENIED, to return.
grpc::ServerUnaryReactor* RefuseUnlessAllowed(grpc::CallbackServerContext* ctx,
                                              std::string_view method);

// For server-streaming handlers: a reactor that only finishes with `status`.
template <typename T>
class RefusedWriter final : public grpc::ServerWriteReactor<T> {
 public:
  explicit RefusedWriter(const grpc::Status& status) { this->Finish(status); }
  void OnDone() override { delete this; }
};

}  // namespace sb::grpcx
