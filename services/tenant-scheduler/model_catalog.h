// What the model registry says, as an immutable in-memory snapshot: versions
// (the model workers serve under each, its serving config and safety policy
// version) and aliases (a stable version, the stable version before it, and
// an optional canary taking a percentage of the alias's requests).
// ModelRegistry (model_registry.h) loads one from PostgreSQL; tests build
// them by hand. Resolution is a pure function of the snapshot and the
// caller's inputs, so it is deterministic:
//
//   ModelCatalog catalog(versions, aliases);
//   // A hash of the request id picks canary or stable; an open breaker
//   // steers the alias away from a version.
//   auto r = catalog.Resolve("sim-small", HashOf(request_id),
//                            [&](std::string_view v) { return !breaker.Allow(v); });
//   // r.version: "sim-small-20261101" (what the response names in `model`)
//   // r.model:   "sim-small"          (what the chosen workers serve)
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/time/time.h"

namespace sb::scheduler {

struct ModelVersion {
  std::string id;                     // "sim-small-20261101"
  std::string model;                  // what workers serve (and register): "sim-small"
  std::string serving_config = "{}";  // a JSON object
  // The platform safety policy version its replies are moderated under
  // (a number; "" for the version in force).
  std::string safety_policy_version;
  absl::Time created_at = absl::UnixEpoch();

  bool operator==(const ModelVersion&) const = default;
};

struct ModelAlias {
  std::string name;             // "sim-small"
  std::string stable;           // a version id
  std::string previous_stable;  // "" when there is none
  std::string canary;           // "" when there is none
  int canary_weight = 0;        // percent of the alias's requests, 0..100
  absl::Time updated_at = absl::UnixEpoch();

  bool operator==(const ModelAlias&) const = default;
};

struct Resolution {
  std::string version;  // the version id responses name; the name itself if unregistered
  std::string model;    // the model name of the workers to route to
  bool canary = false;  // the alias's canary was chosen
  int64_t safety_policy_version = 0;  // the version's pin (0: none)
  // The first choice (canary or stable) was avoided and another version
  // chosen; or every candidate was avoided and the stable version is
  // returned anyway (then `all_avoided` is also set).
  bool fell_back = false;
  bool all_avoided = false;
};

class ModelCatalog {
 public:
  // Returns true for a version the caller wants to avoid (its breaker is
  // open). Resolve asks about candidates in order of preference, at most
  // once each, and stops at the first it may use: a predicate that takes a
  // half-open breaker's probe ticket (Breaker::Allow) takes it only for the
  // version it routes to.
  using AvoidFn = std::function<bool(std::string_view version)>;

  ModelCatalog() = default;
  ModelCatalog(std::vector<ModelVersion> versions, std::vector<ModelAlias> aliases);

  // Resolves a requested model name:
  //  - an alias: its canary when `pick % 100 < canary_weight`, else its
  //    stable version. With `avoid`, an avoided canary gives way to the
  //    stable version, an avoided stable version to the previous stable
  //    one; when every candidate is avoided, the stable version.
  //  - a version id: that version (`avoid` is not consulted: the caller
  //    asked for exactly it).
  //  - anything else: the name itself as both version and model, so models
  //    nobody registered still reach the workers that serve them.
  // `pick` is uniform over its range (a hash of the request id); tests pass
  // 0..99 to step through the split exactly.
  Resolution Resolve(std::string_view name, uint64_t pick, const AvoidFn& avoid = nullptr) const;

  const ModelVersion* FindVersion(std::string_view id) const;
  const ModelAlias* FindAlias(std::string_view name) const;
  // Sorted by id and by name.
  const std::map<std::string, ModelVersion, std::less<>>& versions() const { return versions_; }
  const std::map<std::string, ModelAlias, std::less<>>& aliases() const { return aliases_; }

  bool operator==(const ModelCatalog&) const = default;

 private:
  std::map<std::string, ModelVersion, std::less<>> versions_;
  std::map<std::string, ModelAlias, std::less<>> aliases_;
};

}  // namespace sb::scheduler
