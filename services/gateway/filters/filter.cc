#include "gateway/filters/filter.h"

#include "core/thread_pool.h"
#include "gateway/context.h"

namespace sb::gateway {
namespace {

void RunFrom(const std::vector<Filter*>& filters, size_t i,
             const std::shared_ptr<RequestContext>& ctx, std::function<void()> last) {
  if (i == filters.size()) {
    last();
    return;
  }
  filters[i]->Handle(ctx, [&filters, i, ctx, last = std::move(last)]() mutable {
    RunFrom(filters, i + 1, ctx, std::move(last));
  });
}

}  // namespace

void RunChain(const std::vector<Filter*>& filters, const std::shared_ptr<RequestContext>& ctx,
              std::function<void()> last) {
  RunFrom(filters, 0, ctx, std::move(last));
}

void ContinueOn(ThreadPool& pool, const std::shared_ptr<RequestContext>& ctx,
                std::function<void()> fn) {
  if (!pool.Submit(std::move(fn))) {
    ctx->Fail(absl::UnavailableError("the gateway is overloaded; retry shortly"));
  }
}

}  // namespace sb::gateway
