// The whole platform for end-to-end tests: PostgreSQL, Redis and the dev
// broker (support/infra.h) and the seven service binaries, each on free
// loopback ports, with an org and API key seeded. The tenant scheduler runs
// as two replicas (the second, "tenant-scheduler-b", with the same flags
// and its own ports); every worker, the gateway and chat are given both.
// Logs go to the cluster's temporary directory; set SB_KEEP_TEST_DIRS=1 to
// keep them.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcx/tls.h"
#include "support/infra.h"
#include "support/process.h"

namespace grpc {
class Channel;
}

namespace sb::testing {

class Cluster {
 public:
  struct Options {
    // Mutual TLS between the services (false: every service runs with
    // --insecure_internal, for benchmarks that compare the two).
    bool tls = true;
    // Added to billing's flags.
    std::vector<std::string> billing_flags;
    // Added to every service's flags (e.g. --otlp_endpoint).
    std::vector<std::string> service_flags;
    // Where the service binaries are (<dir>/<service>/<service>); empty: this
    // build's. Benchmarks point it at an older build for "before" figures.
    std::string services_dir;
    // Of each dev-broker topic (see InfraOptions).
    int kafka_partitions = 4;
  };
  static absl::StatusOr<std::unique_ptr<Cluster>> Start(Options options);
  static absl::StatusOr<std::unique_ptr<Cluster>> Start() { return Start(Options{}); }
  ~Cluster();

  // One process of each service: the first scheduler replica stands for
  // the scheduler (see SchedulerReplicas for both).
  static const std::vector<std::string>& ServiceNames();
  int http_port() const { return http_port_; }
  int grpc_port(const std::string& service) const { return grpc_ports_.at(service); }
  std::string grpc_address(const std::string& service) const {
    return "127.0.0.1:" + std::to_string(grpc_port(service));
  }
  int metrics_port(const std::string& service) const { return metrics_ports_.at(service); }
  const std::string& api_key() const { return api_key_; }          // org "acme"
  const std::string& other_api_key() const { return other_key_; }  // org "globex"
  Infra& infra() { return *infra_; }

  // Every service runs with mutual TLS, each with its own identity's
  // certificate from the cluster's CA (tools/certs, in <dir>/tls); without
  // Options::tls, plaintext (empty files, --insecure_internal).
  grpcx::TlsFiles TlsFilesOf(const std::string& identity) const;
  std::vector<std::string> TlsFlags(const std::string& identity) const;
  // A channel to `service`, proving `identity` (the operator by default).
  std::shared_ptr<grpc::Channel> Channel(const std::string& service,
                                         const std::string& identity = "operator") const;
  Process& process(const std::string& service) { return processes_.at(service); }

  // The tenant scheduler's replicas: 0 is "tenant-scheduler" (of
  // ServiceNames), 1 is "tenant-scheduler-b". They share PostgreSQL; each
  // has its own fair queues, leases, breakers and metrics.
  static constexpr int kSchedulerReplicas = 2;
  static std::string SchedulerName(int replica);
  std::string scheduler_address(int replica) const { return grpc_address(SchedulerName(replica)); }
  int scheduler_metrics_port(int replica) const { return metrics_port(SchedulerName(replica)); }
  // "A,B": what workers, the gateway and chat are given.
  std::string scheduler_addresses() const;
  // A channel to one replica, proving `identity`.
  std::shared_ptr<grpc::Channel> SchedulerChannel(int replica,
                                                  const std::string& identity = "operator") const;
  // SIGKILL of one replica (a crash); StartScheduler starts it again with
  // the same flags and ports and waits until it answers (workers register
  // with it at their next heartbeat).
  void KillScheduler(int replica);
  absl::Status StartScheduler(int replica);
  // SIGKILL of one of ServiceNames() (or a scheduler replica); Restart
  // starts it again with the same flags and ports and waits until it is
  // healthy.
  void Kill(const std::string& service);
  absl::Status Restart(const std::string& service);

  // The last lines of every service's log, for failure messages.
  std::string Logs(int lines = 30) const;

  // Starts one more inference worker, registered with the cluster's
  // scheduler replicas, serving `models` (comma-separated) with `flags`
  // added; waits until every running replica lists it live. Its log is
  // <dir>/<worker_id>.log.
  struct Worker {
    Process process;
    int metrics_port = 0;
  };
  absl::StatusOr<Worker> StartWorker(const std::string& worker_id, const std::string& models,
                                     std::vector<std::string> flags = {});

  // Starts one more gateway replica sharing the cluster's services, Redis
  // and database, with `flags` added (they win over the defaults); waits
  // until it answers. Its log is <dir>/<name>.log.
  struct Gateway {
    Process process;
    int http_port = 0;
    int metrics_port = 0;
  };
  absl::StatusOr<Gateway> StartGateway(const std::string& name,
                                       std::vector<std::string> flags = {});

  // Starts one more replica of `service` (chat, connection-manager) named
  // `name`, with the flags the cluster's has (its database, Redis, Kafka,
  // peers) and `flags` after them (they win); its ports are grpc_port(name)
  // and metrics_port(name), and Kill/Restart take the name.
  absl::Status StartReplica(const std::string& name, const std::string& service,
                            std::vector<std::string> flags = {});
  absl::Status StartChatReplica(const std::string& name) { return StartReplica(name, "chat"); }

 private:
  Cluster() = default;
  // `binary`: the service whose binary runs under `name` ("": name).
  absl::Status StartService(const std::string& name, std::vector<std::string> flags,
                            const std::string& binary = "");
  // Whether every running scheduler replica lists `worker_id` live.
  bool ListedLiveEverywhere(const std::string& worker_id) const;

  std::unique_ptr<Infra> infra_;
  std::map<std::string, int> grpc_ports_, metrics_ports_;
  std::map<std::string, Process> processes_;
  // What each service was started with: flags and binary.
  std::map<std::string, std::pair<std::vector<std::string>, std::string>> started_with_;
  int http_port_ = 0;
  std::string api_key_, other_key_;
  bool tls_ = true;
  std::vector<std::string> service_flags_;
  std::string services_dir_;
};

}  // namespace sb::testing
