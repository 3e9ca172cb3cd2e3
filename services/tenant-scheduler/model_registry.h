// The model registry in PostgreSQL (migration 0007): reading it into
// ModelCatalog snapshots for the scheduler's request path, and the
// operator's writes (sbadmin model ..., the ModelAdmin gRPC service).
//
// The scheduler reloads the whole registry on a thread of its own every
// couple of seconds (it is a few rows; a full read also sees deletions and
// transactions that committed late, which polling by updated_at would
// have to allow for); a change reaches every scheduler within the period,
// with no restart. When PostgreSQL cannot be read, the last good snapshot
// stays in use (logged, and counted in
// sb_scheduler_registry_reload_failures_total).
//
//   PgPool pg(uri, 2);
//   ModelRegistry registry(pg);
//   (void)registry.Refresh();              // at startup; a failure is retried
//   registry.Start(absl::Seconds(2));
//   auto catalog = registry.Snapshot();    // cheap; hold it for one request
//   auto r = catalog->Resolve(name, hash);
//
// Writes are validated first (InvalidArgument, NotFound, AlreadyExists,
// FailedPrecondition, with messages meant for the operator) and serialised
// with one another across processes. Database failures come back as
// Unavailable or Internal with a plain message; the database's own text
// is logged, never returned. Calls that touch the database block: never
// make them on an event thread.
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/periodic.h"
#include "tenant-scheduler/model_catalog.h"

namespace sb {
class PgPool;
namespace metrics {
class Registry;
}
}  // namespace sb

namespace sb::scheduler {

class ModelRegistry {
 public:
  explicit ModelRegistry(PgPool& pg);
  ModelRegistry(PgPool& pg, metrics::Registry& metrics);
  ~ModelRegistry();  // Stop()
  ModelRegistry(const ModelRegistry&) = delete;
  ModelRegistry& operator=(const ModelRegistry&) = delete;

  // The registry as last read; an empty catalog before the first good read.
  std::shared_ptr<const ModelCatalog> Snapshot() const;
  // When the snapshot was last read successfully (InfinitePast: never).
  absl::Time LastLoaded() const;

  // Reads the registry now; on an error keeps the snapshot it has.
  absl::Status Refresh();
  // Refreshes every `interval` on a thread of its own (and soon after each
  // successful write through this object) until Stop(). Once.
  void Start(absl::Duration interval);
  void Stop();

  // Registers an immutable version. Creating the same version again with
  // the same content is a no-op; with other content, AlreadyExists.
  // `serving_config` must be a JSON object ("" means {}). Returns the
  // stored version.
  absl::StatusOr<ModelVersion> CreateVersion(const ModelVersion& version);
  // Promotes `version` to the alias's stable version (creating the alias):
  // the old stable version becomes the previous one, and a canary of this
  // very version ends. Promoting the current stable version changes nothing.
  absl::StatusOr<ModelAlias> SetAlias(const std::string& alias, const std::string& version);
  // Sends `weight` percent (1..100) of the alias's requests to `version`;
  // weight 0 ends the canary (`version` is then ignored).
  absl::StatusOr<ModelAlias> SetCanary(const std::string& alias, const std::string& version,
                                       int weight);
  // Makes the previous stable version stable again and ends any canary;
  // the version before that (as of its own promotion) becomes the previous
  // one. FailedPrecondition when there is nothing to roll back to.
  absl::StatusOr<ModelAlias> Rollback(const std::string& alias);
  // The registry as the database holds it now (not the snapshot).
  absl::StatusOr<ModelCatalog> List();

 private:
  absl::StatusOr<ModelCatalog> Load();
  void Wake();

  PgPool& pg_;
  metrics::Registry& metrics_;
  mutable std::mutex mu_;
  std::shared_ptr<const ModelCatalog> snapshot_;
  absl::Time loaded_ = absl::InfinitePast();
  bool failing_ = false;  // the last refresh failed (log transitions only)
  // The refresh thread, made by Start().
  std::mutex reload_mu_;
  std::unique_ptr<Periodic> reload_;
  bool stopped_ = false;
};

// The rules for version ids, served model names and aliases: 1..200
// characters, letters, digits and . _ - : / @ +, starting with a letter or
// digit. InvalidArgument naming `what` otherwise.
absl::Status ValidateModelName(std::string_view what, std::string_view name);

}  // namespace sb::scheduler
