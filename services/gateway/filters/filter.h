// A filter: one step every request of a route passes through before its
// handler (authenticate, admission, idempotency, parse). A filter either
// calls `next` (possibly later, from another thread, once its own work is
// done) or answers the request itself through ctx->Fail and stops there.
//
// The chain for generation routes is: AuthFilter, JsonBodyFilter,
// ParseFilter, IdempotencyFilter, AdmissionFilter (gateway.cc says why in
// that order). A new step is a new class, not a branch.
#pragma once

#include <functional>
#include <memory>
#include <string_view>
#include <vector>

namespace sb {
class ThreadPool;
}

namespace sb::gateway {

class RequestContext;

class Filter {
 public:
  using Next = std::function<void()>;
  virtual ~Filter() = default;
  virtual std::string_view name() const = 0;
  virtual void Handle(const std::shared_ptr<RequestContext>& ctx, Next next) = 0;
};

// Runs `filters` in order, then `last`.
void RunChain(const std::vector<Filter*>& filters, const std::shared_ptr<RequestContext>& ctx,
              std::function<void()> last);

// Runs `fn` on `pool`, off the thread it was called on (a Redis pipeline's,
// which must not run request work); a full pool answers 529.
void ContinueOn(ThreadPool& pool, const std::shared_ptr<RequestContext>& ctx,
                std::function<void()> fn);

}  // namespace sb::gateway
