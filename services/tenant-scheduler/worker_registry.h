// The set of inference workers, their models and their liveness. Time is
// passed in (no clock inside), so tests advance it by hand.
//
// A worker is live while its last heartbeat is younger than `ttl`.
// Acquire() chooses, among live workers serving the model that have room
// (fewer requests in flight, as this scheduler counts them plus those
// other replicas leased there, than the worker's max_concurrency), the one with the best RouteScore
// (router.h: load, KV cache use, prefix-cache affinity), ties by id.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_set>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace sb::scheduler {

// What a worker's engine reported holding at its last heartbeat.
struct ReportedLoad {
  int running = 0;
  int waiting = 0;
  int64_t kv_blocks_total = 0;  // 0: unknown
  int64_t kv_blocks_free = 0;
  double kv_cache_usage = 0;
  std::vector<uint64_t> cached_prefixes;  // most recent first
  // Requests running there under other scheduler replicas' leases: they
  // take room this replica does not count itself.
  int foreign_in_flight = 0;
};

struct WorkerState {
  std::string id;
  std::string address;
  std::set<std::string> models;
  int max_concurrency = 0;
  absl::Time last_heartbeat;
  int reported_in_flight = 0;
  ReportedLoad load;
  // load.cached_prefixes as a set, built once per heartbeat for routing.
  std::unordered_set<uint64_t> cached;
  int in_flight = 0;  // routed here and not finished
  bool down = false;  // declared dead (missed heartbeats or failed a stream)
  std::string session;  // proves the registration (RegisterWorkerResponse.session)
};

struct Pick {
  std::string worker_id;
  std::string address;
};

struct ModelEntry {
  std::string id;
  absl::Time first_seen;
  int live_workers = 0;
};

// Why Acquire() found no worker.
enum class NoPick { kUnknownModel, kNoLiveWorker, kAllFull };

class WorkerRegistry {
 public:
  explicit WorkerRegistry(absl::Duration ttl) : ttl_(ttl) {}

  // Registers (or renews) worker `id` and returns the registration's
  // session. AlreadyExists when a live worker holds the id and `session`
  // is not its session: an id cannot be taken over while its worker lives.
  // A new registration gets `new_session` (random, from the caller).
  absl::StatusOr<std::string> Register(const std::string& id, const std::string& address,
                                       const std::vector<std::string>& models, int max_concurrency,
                                       absl::Time now, const std::string& session,
                                       const std::string& new_session);
  enum class Beat { kOk, kUnknown, kWrongSession };
  // kUnknown when the worker is unknown (or was declared dead): it must
  // register again. kWrongSession changes nothing.
  Beat Heartbeat(const std::string& id, int in_flight, absl::Time now, const std::string& session,
                 ReportedLoad load = {});

  // Whether `session` is that of worker `id`'s registration.
  bool SessionMatches(const std::string& id, const std::string& session) const;

  // True when some registered worker (live or not) serves the model.
  bool ModelKnown(const std::string& model) const;

  // Every model a registered worker serves, by id, with when it was first
  // seen and how many live workers serve it now.
  std::vector<ModelEntry> ListModels(absl::Time now) const;

  // Reserves one in-flight slot on the chosen worker; Release it after.
  // `prefix`: the request's prompt prefix hashes, for cache-aware routing
  // (router.h); without it, the least loaded.
  std::optional<Pick> Acquire(const std::string& model, absl::Time now, NoPick* why = nullptr,
                              const std::vector<uint64_t>& prefix = {});
  // Free slots and capacity of the live workers serving the model (a
  // worker without a limit counts as a very large one).
  struct Room {
    int64_t free = 0;
    int64_t capacity = 0;
  };
  Room RoomFor(const std::string& model, absl::Time now) const;
  // Any live worker serving the model, without reserving a slot (for calls
  // that cost the worker next to nothing, such as counting tokens).
  std::optional<Pick> AnyLive(const std::string& model, absl::Time now,
                              NoPick* why = nullptr) const;
  void Release(const std::string& worker_id);
  // A stream to the worker failed: stop routing to it until it registers.
  void MarkDown(const std::string& worker_id);

  // Declares workers whose heartbeats stopped dead; returns their ids.
  std::vector<std::string> Sweep(absl::Time now);
  std::vector<WorkerState> List() const;
  bool IsLive(const WorkerState& w, absl::Time now) const;

 private:
  absl::Duration ttl_;
  mutable std::mutex mu_;
  std::map<std::string, WorkerState> workers_;
  std::map<std::string, absl::Time> model_first_seen_;
};

}  // namespace sb::scheduler
