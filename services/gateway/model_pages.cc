#include "gateway/model_pages.h"

#include <algorithm>

namespace sb::gateway {

ModelPage PageModels(const std::vector<ModelEntry>& sorted, size_t limit,
                     const std::string& after_id, const std::string& before_id) {
  const auto by_id = [](const ModelEntry& m, const std::string& id) { return m.id < id; };
  size_t from = 0, to = sorted.size();
  if (!before_id.empty()) {
    to = std::lower_bound(sorted.begin(), sorted.end(), before_id, by_id) - sorted.begin();
    from = to > limit ? to - limit : 0;
  } else if (!after_id.empty()) {
    from = std::upper_bound(sorted.begin(), sorted.end(), after_id,
                            [](const std::string& id, const ModelEntry& m) { return id < m.id; }) -
           sorted.begin();
  }
  ModelPage page;
  page.has_more = before_id.empty() ? to - from > limit : from > 0;
  if (to - from > limit) to = from + limit;
  page.models.assign(sorted.begin() + from, sorted.begin() + to);
  return page;
}

}  // namespace sb::gateway
