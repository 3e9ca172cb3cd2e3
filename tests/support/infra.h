// Real backing services for integration and end-to-end tests, each on a
// free loopback port with its data in a fresh temporary directory:
// PostgreSQL (initdb'd, migrated), Redis (no persistence) and the dev
// Kafka-protocol broker. Everything is stopped and deleted on destruction.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "support/process.h"

namespace sb::testing {

struct InfraOptions {
  bool postgres = true;
  bool redis = true;
  bool kafka = true;
  // Also a 3-master Redis Cluster (no replicas), for code that must run on
  // one as well as on a single node.
  bool redis_cluster = false;
  // Partitions of each dev-broker topic. The dev broker (librdkafka's mock
  // cluster) keeps a bounded log per partition and drops its oldest events
  // beyond it, so a long run needs more of them.
  int kafka_partitions = 4;
};

class Infra {
 public:
  static absl::StatusOr<std::unique_ptr<Infra>> Start(InfraOptions options = {});
  ~Infra();

  const std::string& dir() const { return dir_; }
  std::string pg_uri() const;
  int pg_port() const { return pg_port_; }
  int redis_port() const { return redis_port_; }
  pid_t redis_pid() const { return redis_.pid(); }
  // The cluster's nodes (empty without InfraOptions::redis_cluster); any
  // one is a seed.
  const std::vector<int>& redis_cluster_ports() const { return cluster_ports_; }
  const std::string& kafka() const { return kafka_; }
  // Where binaries are: the build tree.
  static std::string BuildDir();
  static std::string SourceDir();

  // Adds a version of the platform's safety policy (`document`) straight to
  // safety's table, for tests of what may pin one; returns its number.
  absl::StatusOr<int64_t> AddPlatformSafetyPolicy(const std::string& document = "{}");

  // Stops PostgreSQL (to test outages) and starts it again.
  absl::Status StopPostgres();
  absl::Status StartPostgres();

 private:
  Infra() = default;
  absl::Status InitPostgres();
  absl::Status StartRedisCluster();

  std::string dir_;
  int pg_port_ = 0;
  int redis_port_ = 0;
  std::string kafka_;
  bool pg_running_ = false;
  Process redis_;
  std::vector<int> cluster_ports_;
  std::vector<Process> cluster_nodes_;
  Process broker_;
};

}  // namespace sb::testing
