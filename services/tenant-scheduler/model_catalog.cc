#include "tenant-scheduler/model_catalog.h"

#include "absl/strings/numbers.h"

namespace sb::scheduler {

ModelCatalog::ModelCatalog(std::vector<ModelVersion> versions, std::vector<ModelAlias> aliases) {
  for (auto& v : versions) {
    std::string id = v.id;
    versions_.insert_or_assign(std::move(id), std::move(v));
  }
  for (auto& a : aliases) {
    std::string name = a.name;
    aliases_.insert_or_assign(std::move(name), std::move(a));
  }
}

const ModelVersion* ModelCatalog::FindVersion(std::string_view id) const {
  auto it = versions_.find(id);
  return it == versions_.end() ? nullptr : &it->second;
}

const ModelAlias* ModelCatalog::FindAlias(std::string_view name) const {
  auto it = aliases_.find(name);
  return it == aliases_.end() ? nullptr : &it->second;
}

Resolution ModelCatalog::Resolve(std::string_view name, uint64_t pick, const AvoidFn& avoid) const {
  // The database's foreign keys keep every alias's versions registered; a
  // hand-built catalog might not, and then the version id is the model.
  auto resolved = [this](const std::string& version) {
    Resolution r;
    r.version = version;
    const ModelVersion* v = FindVersion(version);
    r.model = v != nullptr ? v->model : version;
    // Checked to be a number when registered.
    if (v != nullptr && !absl::SimpleAtoi(v->safety_policy_version, &r.safety_policy_version)) {
      r.safety_policy_version = 0;
    }
    return r;
  };
  const ModelAlias* alias = FindAlias(name);
  if (alias == nullptr) {
    if (FindVersion(name) != nullptr) return resolved(std::string(name));
    return Resolution{.version = std::string(name), .model = std::string(name)};
  }
  // Candidates in order of preference.
  const std::string* candidates[3];
  int n = 0;
  const bool canary_first =
      !alias->canary.empty() && static_cast<int>(pick % 100) < alias->canary_weight;
  if (canary_first) candidates[n++] = &alias->canary;
  candidates[n++] = &alias->stable;
  if (!alias->previous_stable.empty() && alias->previous_stable != alias->stable) {
    candidates[n++] = &alias->previous_stable;
  }
  for (int i = 0; i < n; ++i) {
    if (avoid && avoid(*candidates[i])) continue;
    Resolution r = resolved(*candidates[i]);
    r.canary = canary_first && i == 0;
    r.fell_back = i > 0;
    return r;
  }
  Resolution r = resolved(alias->stable);
  r.fell_back = true;
  r.all_avoided = true;
  return r;
}

}  // namespace sb::scheduler
