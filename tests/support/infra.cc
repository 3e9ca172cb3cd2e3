#include "support/infra.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <pqxx/pqxx>
#include <random>
#include <thread>

#include "sbadmin/admin.h"
#include "storage/redis.h"

namespace sb::testing {
namespace {

std::string PgBin() {
  std::string best;
  for (const auto& e : std::filesystem::directory_iterator("/usr/lib/postgresql")) {
    const std::string bin = e.path().string() + "/bin";
    if (std::filesystem::exists(bin + "/initdb") && bin > best) best = bin;
  }
  return best;
}

// initdb and postgres refuse to run as root: run them as `postgres` then.
std::vector<std::string> AsPostgres(std::vector<std::string> argv) {
  if (geteuid() != 0) return argv;
  std::vector<std::string> out = {"runuser", "-u", "postgres", "--"};
  out.insert(out.end(), argv.begin(), argv.end());
  return out;
}

template <typename Pred>
bool WaitFor(Pred pred, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return pred();
}

}  // namespace

std::string Infra::BuildDir() { return SB_BUILD_DIR; }
std::string Infra::SourceDir() { return SB_SOURCE_DIR; }

std::string Infra::pg_uri() const {
  return "postgresql://postgres@127.0.0.1:" + std::to_string(pg_port_) + "/switchboard";
}

absl::StatusOr<std::unique_ptr<Infra>> Infra::Start(InfraOptions options) {
  std::unique_ptr<Infra> infra(new Infra());
  char tmpl[] = "/tmp/sbtest-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) return absl::InternalError("mkdtemp failed");
  infra->dir_ = tmpl;
  chmod(tmpl, 0755);

  if (options.postgres) {
    if (auto st = infra->InitPostgres(); !st.ok()) return st;
  }
  if (options.redis) {
    infra->redis_port_ = FreePort();
    infra->redis_ = Process("redis",
                            {"/usr/bin/redis-server", "--port", std::to_string(infra->redis_port_),
                             "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir",
                             infra->dir_},
                            infra->dir_ + "/redis.log");
    RedisClient probe({.port = infra->redis_port_, .pool_size = 1});
    if (!WaitFor([&] { return probe.Command({"PING"}).ok(); }, std::chrono::seconds(10))) {
      return absl::UnavailableError("redis did not start:\n" + Tail(infra->dir_ + "/redis.log", 20));
    }
  }
  if (options.redis_cluster) {
    if (auto st = infra->StartRedisCluster(); !st.ok()) return st;
  }
  if (options.kafka) {
    const std::string file = infra->dir_ + "/kafka.bootstrap";
    infra->broker_ =
        Process("dev-broker",
                {BuildDir() + "/tools/dev-broker", "--port=0", "--bootstrap_file=" + file,
                 "--partitions=" + std::to_string(options.kafka_partitions)},
                infra->dir_ + "/dev-broker.log");
    if (!WaitFor([&] { return std::filesystem::exists(file); }, std::chrono::seconds(10))) {
      return absl::UnavailableError("dev-broker did not start:\n" +
                                    Tail(infra->dir_ + "/dev-broker.log", 20));
    }
    std::ifstream in(file);
    std::getline(in, infra->kafka_);
  }
  return infra;
}

absl::Status Infra::StartRedisCluster() {
  // The cluster bus listens on port + 10000: both must be free. Both are
  // taken below Linux's ephemeral range (32768 and up by default), where
  // no outgoing connection of a test running alongside can grab one
  // between the check and the bind.
  std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int> pick(12000, 22767);
  while (cluster_ports_.size() < 3) {
    const int p = pick(rng);
    if (PortFree(p) && PortFree(p + 10000) &&
        std::find(cluster_ports_.begin(), cluster_ports_.end(), p) == cluster_ports_.end()) {
      cluster_ports_.push_back(p);
    }
  }
  std::vector<std::string> create = {"redis-cli", "--cluster", "create"};
  for (int p : cluster_ports_) {
    const std::string port = std::to_string(p);
    const std::string d = dir_ + "/redis-cluster-" + port;
    std::filesystem::create_directories(d);
    cluster_nodes_.emplace_back(
        "redis-" + port,
        std::vector<std::string>{"/usr/bin/redis-server", "--port", port, "--bind", "127.0.0.1",
                                 "--cluster-enabled", "yes", "--cluster-config-file",
                                 d + "/nodes.conf", "--save", "", "--appendonly", "no", "--dir", d},
        d + "/redis.log");
    RedisClient probe({.port = p, .pool_size = 1});
    if (!WaitFor([&] { return probe.Command({"PING"}).ok(); }, std::chrono::seconds(10))) {
      return absl::UnavailableError("redis cluster node did not start:\n" +
                                    Tail(d + "/redis.log", 20));
    }
    create.push_back("127.0.0.1:" + port);
  }
  create.insert(create.end(), {"--cluster-replicas", "0", "--cluster-yes"});
  std::string out;
  if (RunCommand(create, &out) != 0)
    return absl::InternalError("redis-cli --cluster create: " + out);
  // Every node must agree that the cluster is up before it is used.
  for (int p : cluster_ports_) {
    RedisClient probe({.port = p, .pool_size = 1});
    if (!WaitFor(
            [&] {
              auto info = probe.Command({"CLUSTER", "INFO"});
              return info.ok() && info->str.find("cluster_state:ok") != std::string::npos;
            },
            std::chrono::seconds(20))) {
      return absl::UnavailableError("redis cluster did not reach cluster_state:ok");
    }
  }
  return absl::OkStatus();
}

absl::Status Infra::InitPostgres() {
  const std::string pg = dir_ + "/pg";
  std::filesystem::create_directories(pg);
  if (geteuid() == 0) {
    std::string out;
    RunCommand({"chown", "-R", "postgres:postgres", pg}, &out);
  }
  std::string out;
  if (RunCommand(AsPostgres({PgBin() + "/initdb", "-D", pg + "/data", "-U", "postgres", "-A", "trust",
                             "-E", "UTF8", "--no-locale", "--no-sync"}),
                 &out) != 0) {
    return absl::InternalError("initdb failed: " + out);
  }
  pg_port_ = FreePort();
  if (auto st = StartPostgres(); !st.ok()) return st;
  out.clear();
  if (RunCommand({"psql", "-h", "127.0.0.1", "-p", std::to_string(pg_port_), "-U", "postgres", "-qc",
                  "CREATE DATABASE switchboard"},
                 &out) != 0) {
    return absl::InternalError("create database failed: " + out);
  }
  auto applied = admin::Admin(pg_uri()).Migrate(SourceDir() + "/migrations");
  if (!applied.ok()) return applied.status();
  return absl::OkStatus();
}

absl::Status Infra::StartPostgres() {
  const std::string pg = dir_ + "/pg";
  std::string out;
  if (RunCommand(AsPostgres({PgBin() + "/pg_ctl", "-D", pg + "/data", "-l", pg + "/pg.log", "-w", "-o",
                             "-c listen_addresses=127.0.0.1 -p " + std::to_string(pg_port_) + " -k " +
                                 pg + " -c fsync=off -c max_connections=200",
                             "start"}),
                 &out) != 0) {
    return absl::InternalError("postgres start failed: " + out + Tail(pg + "/pg.log", 20));
  }
  pg_running_ = true;
  return absl::OkStatus();
}

absl::StatusOr<int64_t> Infra::AddPlatformSafetyPolicy(const std::string& document) {
  try {
    pqxx::connection c(pg_uri());
    pqxx::work tx(c);
    auto r = tx.exec_params1(
        "INSERT INTO safety_platform_policies (version, document) "
        "SELECT COALESCE(max(version), 0) + 1, $1::jsonb FROM safety_platform_policies "
        "RETURNING version",
        document);
    tx.commit();
    return r[0].as<int64_t>();
  } catch (const std::exception& e) {
    return absl::InternalError(std::string("adding a platform safety policy: ") + e.what());
  }
}

absl::Status Infra::StopPostgres() {
  std::string out;
  if (RunCommand(AsPostgres({PgBin() + "/pg_ctl", "-D", dir_ + "/pg/data", "-m", "immediate", "-w",
                             "stop"}),
                 &out) != 0) {
    return absl::InternalError("postgres stop failed: " + out);
  }
  pg_running_ = false;
  return absl::OkStatus();
}

Infra::~Infra() {
  broker_.Stop(2000);
  redis_.Stop(2000);
  for (auto& node : cluster_nodes_) node.Stop(2000);
  if (pg_running_) (void)StopPostgres();
  if (std::getenv("SB_KEEP_TEST_DIRS") == nullptr) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

}  // namespace sb::testing
