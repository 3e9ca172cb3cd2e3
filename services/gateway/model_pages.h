// A page of the model list, as Anthropic's GET /v1/models pages it: by id,
// `limit` at a time, after `after_id` or (the `limit` just) before
// `before_id`.
#pragma once

#include <string>
#include <vector>

#include "gateway/dialects/dialect.h"

namespace sb::gateway {

struct ModelPage {
  std::vector<ModelEntry> models;
  bool has_more = false;  // more beyond the page in the direction paged
};

// `sorted` is sorted by id. With both ids set, before_id wins.
ModelPage PageModels(const std::vector<ModelEntry>& sorted, size_t limit,
                     const std::string& after_id, const std::string& before_id);

}  // namespace sb::gateway
