// No container engine runs on the build machines, so the deploy files are
// checked against the binaries themselves: every service is there, every
// `--flag` and SWITCHBOARD_<FLAG> variable is one its binary accepts (from
// `--helpfull`), every port a flag opens is declared, and every address
// names a service of the same file on that service's gRPC port (the
// scheduler's list names every one of its replicas). The trust
// rules are checked too: mutual TLS with the service's own pair on every
// service, credentials for Redis and Kafka on every client (and safety's
// audit key wherever it has Kafka), a NetworkPolicy
// per workload admitting exactly the callers the flags imply, nothing but the
// gateway's HTTP port published beyond loopback, and no key material in git.
// So is operability: every pod template fits Pod Security "restricted" on a
// read-only root, services sleep in preStop within their grace period, every
// multi-replica workload has a disruption budget, HPAs own their replica
// counts, and the datastores keep their data on volumes. Upgrades re-apply
// cleanly: the services that read PostgreSQL migrate it first, in an init
// container of their own image (no migrations Job, whose pod template is
// immutable), and a Job that remains deletes itself once done.
// Key material is gitignored, so the files that need it (compose's env
// files, kustomize's secretGenerator) are checked on a copy of deploy/ that
// deploy/make-secrets fills in.
#include <stdlib.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest-spi.h"
#include "gtest/gtest.h"
#include "support/infra.h"
#include "support/process.h"

namespace sb::testing {
namespace {

const std::vector<std::string> kServices = {"gateway",          "chat",
                                            "connection-manager", "safety",
                                            "tenant-scheduler", "inference-worker",
                                            "billing"};

std::string BinaryPath(const std::string& name) {
  if (name == "sbadmin") return Infra::BuildDir() + "/tools/sbadmin";
  return Infra::BuildDir() + "/services/" + name + "/" + name;
}

// The flags a binary accepts, from its --helpfull.
const std::set<std::string>& FlagsOf(const std::string& binary) {
  static std::map<std::string, std::set<std::string>> cache;
  auto it = cache.find(binary);
  if (it != cache.end()) return it->second;
  std::string out;
  RunCommand({BinaryPath(binary), "--helpfull"}, &out);
  std::set<std::string> flags;
  static const std::regex kFlag(R"(^\s+--([A-Za-z0-9_]+) \()");
  for (absl::string_view line : absl::StrSplit(out, '\n')) {
    std::cmatch m;
    if (std::regex_search(line.begin(), line.end(), m, kFlag)) flags.insert(m[1].str());
  }
  return cache.emplace(binary, std::move(flags)).first->second;
}

// `--name=value` arguments as name -> value.
std::map<std::string, std::string> FlagArgs(const std::vector<std::string>& args) {
  std::map<std::string, std::string> out;
  for (const auto& a : args) {
    if (!absl::StartsWith(a, "--")) continue;
    const size_t eq = a.find('=');
    out[a.substr(2, eq == std::string::npos ? std::string::npos : eq - 2)] =
        eq == std::string::npos ? "" : a.substr(eq + 1);
  }
  return out;
}

void ExpectFlagsAccepted(const std::string& binary, const std::map<std::string, std::string>& flags,
                         const std::string& where) {
  const auto& accepted = FlagsOf(binary);
  ASSERT_GT(accepted.size(), 3u) << "could not read " << binary << " --helpfull";
  for (const auto& [name, value] : flags) {
    EXPECT_TRUE(accepted.count(name)) << where << ": " << binary << " has no flag --" << name;
  }
}

void ExpectEnvAccepted(const std::string& binary, const std::string& var, const std::string& where) {
  if (!absl::StartsWith(var, "SWITCHBOARD_")) return;
  const std::string flag = absl::AsciiStrToLower(var.substr(strlen("SWITCHBOARD_")));
  EXPECT_TRUE(FlagsOf(binary).count(flag))
      << where << ": " << var << " overrides no flag of " << binary;
}

std::vector<std::string> Strings(const YAML::Node& n) {
  std::vector<std::string> out;
  if (!n) return out;
  for (const auto& e : n) out.push_back(e.as<std::string>());
  return out;
}

std::pair<std::string, int> HostPort(const std::string& address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) return {address, 0};
  return {address.substr(0, colon), std::stoi(address.substr(colon + 1))};
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Deletes a directory tree when the test binary exits.
struct RemovedAtExit {
  std::string path;
  ~RemovedAtExit() {
    if (!path.empty()) RunCommand({"rm", "-rf", path}, nullptr);
  }
};

// A copy of deploy/ (compose file and k8s/) with the gitignored secrets that
// deploy/make-secrets writes, made once per test binary. Empty on failure.
const std::string& GeneratedDeploy() {
  static RemovedAtExit cleanup;
  static const std::string dir = [] {
    char tmpl[] = "/tmp/sb-deploy-test-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) return std::string();
    const std::string root = tmpl, src = Infra::SourceDir() + "/deploy";
    cleanup.path = root;
    std::string out;
    for (const auto& argv : std::vector<std::vector<std::string>>{
             {"mkdir", "-p", root + "/deploy"},
             {"cp", src + "/docker-compose.yml", root + "/deploy/"},
             {"cp", "-r", src + "/k8s", root + "/deploy/"},
             {"rm", "-rf", root + "/deploy/k8s/overlays/dev/secrets"},
             {"bash", src + "/make-secrets", "compose", root + "/deploy"},
             {"bash", src + "/make-secrets", "k8s", root + "/deploy"}}) {
      if (RunCommand(argv, &out) != 0) {
        ADD_FAILURE() << absl::StrJoin(argv, " ") << ": " << out;
        return std::string();
      }
    }
    return root + "/deploy";
  }();
  return dir;
}

// KEY=VALUE lines of an env file.
std::map<std::string, std::string> EnvFile(const std::string& path) {
  std::map<std::string, std::string> out;
  for (absl::string_view line : absl::StrSplit(ReadFile(path), '\n')) {
    const size_t eq = line.find('=');
    if (line.empty() || line[0] == '#' || eq == absl::string_view::npos) continue;
    out[std::string(line.substr(0, eq))] = std::string(line.substr(eq + 1));
  }
  return out;
}

// A service that uses Redis has its password, and one that uses Kafka logs
// in with SASL and has its password (given as an env file in compose, a
// Secret's variable in Kubernetes: the callers say which they found).
void ExpectDatastoreCredentials(const std::string& name,
                                const std::map<std::string, std::string>& flags,
                                bool has_redis_password, bool has_kafka_password) {
  if (flags.count("redis_host")) {
    EXPECT_TRUE(has_redis_password) << name << " uses Redis without its password";
  }
  if (flags.count("kafka_brokers")) {
    EXPECT_TRUE(flags.count("kafka_security_protocol") &&
                absl::StartsWith(flags.at("kafka_security_protocol"), "sasl_"))
        << name << " must log in to Kafka";
    EXPECT_TRUE(flags.count("kafka_sasl_mechanism")) << name;
    EXPECT_TRUE(flags.count("kafka_sasl_username")) << name;
    EXPECT_TRUE(has_kafka_password) << name << " uses Kafka without its password";
  }
}

// The flags every service needs for mutual TLS; --insecure_internal must not
// be set (or be false).
void ExpectMutualTls(const std::string& where, const std::map<std::string, std::string>& flags) {
  for (const std::string f : {"tls_ca", "tls_cert", "tls_key"}) {
    EXPECT_TRUE(flags.count(f) && !flags.at(f).empty()) << where << " must set --" << f;
  }
  if (flags.count("insecure_internal")) {
    EXPECT_EQ(flags.at("insecure_internal"), "false") << where << " turns mutual TLS off";
  }
}

std::string Dirname(const std::string& path) { return path.substr(0, path.rfind('/')); }
std::string Basename(const std::string& path) { return path.substr(path.rfind('/') + 1); }

// The flags that name another service's gRPC endpoint, and whose.
const std::map<std::string, std::string> kAddressFlags = {
    {"safety_address", "safety"},
    {"scheduler_address", "tenant-scheduler"},
    {"chat_address", "chat"},
    {"connection_manager_address", "connection-manager"},
};

// The replicas of the scheduler serve together: a worker registers with
// every one, and the gateway and chat spread Admit over them, so its clients
// list every replica's host:port in --scheduler_address (and dial each).
// Every other address names one name: on Kubernetes a dns:/// target of a
// headless Service (round robin over its pods), in compose the host.
//
// Every address flag names exactly the endpoints of its service (target ->
// host:port on the service's gRPC port, one per replica), each once, and
// every datastore host is something the same file defines.
void ExpectAddressesResolve(const std::string& name, const std::map<std::string, std::string>& flags,
                            const std::map<std::string, std::set<std::string>>& endpoints,
                            const std::function<bool(const std::string&)>& defined) {
  for (const auto& [flag, target] : kAddressFlags) {
    if (!flags.count(flag)) continue;
    const std::vector<std::string> listed = absl::StrSplit(flags.at(flag), ',');
    const std::set<std::string> got(listed.begin(), listed.end());
    EXPECT_EQ(got.size(), listed.size()) << name << " --" << flag << " names an endpoint twice";
    ASSERT_TRUE(endpoints.count(target)) << "no endpoints of " << target;
    EXPECT_EQ(got, endpoints.at(target))
        << name << " --" << flag << "=" << flags.at(flag) << " instead of "
        << absl::StrJoin(endpoints.at(target), ",");
  }
  for (const std::string flag : {"kafka_brokers", "redis_host"}) {
    if (!flags.count(flag)) continue;
    // (Kafka takes a list of brokers.)
    for (absl::string_view address : absl::StrSplit(flags.at(flag), ',')) {
      const std::string host = HostPort(std::string(address)).first;
      EXPECT_TRUE(defined(host)) << name << " --" << flag << " names nothing defined: " << host;
    }
  }
}

// The port flags each service sets and must declare.
std::vector<std::string> PortFlags(const std::string& service) {
  if (service == "gateway") return {"http_port", "grpc_port", "metrics_port"};
  return {"grpc_port", "metrics_port"};
}

// n[k1][k2]...: Undefined when a key is missing (yaml-cpp throws when
// indexing past a missing key, which a policy check meets on purpose).
YAML::Node Dig(const YAML::Node& n, std::initializer_list<std::string> keys) {
  YAML::Node cur;
  cur.reset(n);  // (assignment would write through)
  for (const auto& k : keys) {
    const YAML::Node& at = cur;
    if (!at.IsMap() || !at[k]) return YAML::Node(YAML::NodeType::Undefined);
    const YAML::Node next = at[k];
    cur.reset(next);
  }
  return cur;
}

// A directory is on a volume mounted at `mount`: the mount point or below it.
bool Under(const std::string& dir, std::string mount) {
  while (mount.size() > 1 && mount.back() == '/') mount.pop_back();
  return dir == mount || absl::StartsWith(dir, mount == "/" ? mount : mount + "/");
}

// A pg_isready command line asks over TCP (-h HOST, not a socket directory).
// Without it pg_isready asks the unix socket, where the image's init-phase
// server (listen_addresses='') already answers: "ready" before the real
// server, so the migrations would connect to nothing.
bool PgIsReadyOverTcp(const std::vector<std::string>& words) {
  auto it = std::find_if(words.begin(), words.end(),
                         [](const std::string& w) { return absl::EndsWith(w, "pg_isready"); });
  if (it == words.end()) return false;
  for (++it; it != words.end(); ++it) {
    std::string host;
    if ((*it == "-h" || *it == "--host") && it + 1 != words.end()) {
      host = *(it + 1);
    } else if (absl::StartsWith(*it, "--host=")) {
      host = it->substr(strlen("--host="));
    } else if (absl::StartsWith(*it, "-h") && it->size() > 2) {
      host = it->substr(2);
    }
    if (!host.empty() && host[0] != '/') return true;
  }
  return false;
}

// ---------------------------------------------------------------------------
// docker-compose

// yaml-cpp does not resolve `<<: *anchor` merges: look there second.
YAML::Node Field(const YAML::Node& map, const std::string& key) {
  if (map[key]) return map[key];
  if (map["<<"] && map["<<"][key]) return map["<<"][key];
  return YAML::Node();
}

// The secrets a service mounts: target (under /run/secrets) -> top-level secret name.
std::map<std::string, std::string> SecretTargets(const YAML::Node& svc) {
  std::map<std::string, std::string> out;
  for (const auto& s : Field(svc, "secrets")) {
    if (s.IsScalar()) {
      out[s.as<std::string>()] = s.as<std::string>();
    } else {
      const std::string source = s["source"].as<std::string>();
      out[s["target"] ? s["target"].as<std::string>() : source] = source;
    }
  }
  return out;
}

class ComposeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = YAML::LoadFile(Infra::SourceDir() + "/deploy/docker-compose.yml");
    services_ = root_["services"];
    ASSERT_TRUE(services_.IsMap());
  }
  // The services whose containers run `binary` (its first command word):
  // the service of that name, its replicas, the profiles' workers.
  std::vector<std::string> Running(const std::string& binary) {
    std::vector<std::string> out;
    for (const auto& kv : services_) {
      const auto command = Strings(Field(kv.second, "command"));
      if (!command.empty() && command[0] == binary) out.push_back(kv.first.as<std::string>());
    }
    return out;
  }
  // The database a service reads: its --pg, else SWITCHBOARD_PG in its
  // environment (the compose file's one place for it); "" for neither.
  std::string PgUri(const std::string& name) {
    const YAML::Node svc = services_[name];
    const auto flags = FlagArgs(Strings(Field(svc, "command")));
    if (flags.count("pg")) return flags.at("pg");
    const YAML::Node env = Field(svc, "environment");
    if (env.IsMap() && env["SWITCHBOARD_PG"]) return env["SWITCHBOARD_PG"].as<std::string>("");
    return "";
  }
  YAML::Node root_, services_;
};

TEST_F(ComposeTest, RunsEveryServiceWithFlagsItAccepts) {
  std::map<std::string, int> grpc_ports;
  for (const auto& name : kServices) {
    const YAML::Node svc = services_[name];
    ASSERT_TRUE(svc) << "docker-compose.yml has no service " << name;
    const auto command = Strings(Field(svc, "command"));
    ASSERT_FALSE(command.empty()) << name;
    EXPECT_EQ(command[0], name) << "the " << name << " container runs another binary";
    const auto flags = FlagArgs(command);
    ExpectFlagsAccepted(name, flags, "compose " + name);
    for (const auto& kv : Field(svc, "environment")) {
      ExpectEnvAccepted(name, kv.first.as<std::string>(), "compose " + name);
    }
    ASSERT_TRUE(flags.count("grpc_port")) << name << " must pin its gRPC port";
    grpc_ports[name] = std::stoi(flags.at("grpc_port"));
    EXPECT_EQ(Field(svc, "image").as<std::string>(""), "switchboard:dev") << name;
  }
  for (const auto& name : kServices) {
    const auto flags = FlagArgs(Strings(Field(services_[name], "command")));
    // Ports: published (host:container) or exposed.
    std::set<int> declared;
    for (const auto& p : Strings(Field(services_[name], "ports"))) declared.insert(HostPort(p).second);
    for (const auto& p : Strings(Field(services_[name], "expose"))) declared.insert(std::stoi(p));
    for (const auto& pf : PortFlags(name)) {
      ASSERT_TRUE(flags.count(pf)) << name << " must set --" << pf;
      EXPECT_TRUE(declared.count(std::stoi(flags.at(pf))))
          << name << " does not declare its --" << pf << "=" << flags.at(pf);
    }
  }
  // What an address may name: every container that runs the service, on its
  // gRPC port. Checked from every container that runs one of the services
  // (the scheduler's replicas and the profiles' workers too).
  std::map<std::string, std::set<std::string>> endpoints;
  for (const auto& [flag, target] : kAddressFlags) {
    for (const auto& name : Running(target)) {
      const auto flags = FlagArgs(Strings(Field(services_[name], "command")));
      ASSERT_TRUE(flags.count("grpc_port")) << name << " must pin its gRPC port";
      endpoints[target].insert(name + ":" + flags.at("grpc_port"));
    }
  }
  for (const auto& binary : kServices) {
    for (const auto& name : Running(binary)) {
      ExpectAddressesResolve(name, FlagArgs(Strings(Field(services_[name], "command"))), endpoints,
                             [&](const std::string& host) { return bool(services_[host]); });
    }
  }
  // The listeners must bind beyond loopback inside a container.
  EXPECT_EQ(FlagArgs(Strings(Field(services_["gateway"], "command"))).at("http_host"), "0.0.0.0");
}

TEST_F(ComposeTest, UsesRealDatastoresAndMigratesFirst) {
  EXPECT_TRUE(absl::StartsWith(services_["postgres"]["image"].as<std::string>(""), "postgres:"));
  EXPECT_TRUE(absl::StartsWith(services_["redis"]["image"].as<std::string>(""), "redis:"));
  EXPECT_TRUE(absl::StartsWith(services_["kafka"]["image"].as<std::string>(""), "apache/kafka:"));
  EXPECT_EQ(services_["kafka"]["environment"]["KAFKA_PROCESS_ROLES"].as<std::string>(""),
            "broker,controller")
      << "Kafka runs in KRaft mode";
  const YAML::Node migrate = services_["migrate"];
  ASSERT_TRUE(migrate);
  ASSERT_EQ(Strings(Field(migrate, "entrypoint")), std::vector<std::string>{"sbadmin"});
  ExpectFlagsAccepted("sbadmin", FlagArgs(Strings(Field(migrate, "command"))), "compose migrate");
  // Whatever reads PostgreSQL starts after the migrations.
  std::set<std::string> readers;
  for (const auto& binary : kServices) {
    for (const auto& name : Running(binary)) {
      if (PgUri(name).empty()) continue;
      readers.insert(name);
      EXPECT_EQ(Field(services_[name], "depends_on")["migrate"]["condition"].as<std::string>(""),
                "service_completed_successfully")
          << name << " must start after the migrations";
    }
  }
  for (const std::string svc : {"gateway", "chat", "billing", "tenant-scheduler"}) {
    EXPECT_TRUE(readers.count(svc)) << svc << " has no --pg";
  }
  // One database URI, in one place (x-pg-env), not a flag per service.
  std::set<std::string> uris;
  for (const auto& name : readers) {
    uris.insert(PgUri(name));
    EXPECT_FALSE(FlagArgs(Strings(Field(services_[name], "command"))).count("pg"))
        << name << " sets its own --pg instead of the shared SWITCHBOARD_PG";
  }
  EXPECT_EQ(uris.size(), 1u) << absl::StrJoin(uris, " ");
}

// Every Switchboard container is probed for readiness with the image's own
// probe (`sbadmin health` on its metrics port: /readyz), and a service that
// needs another starts once that one is healthy, not merely started.
TEST_F(ComposeTest, EveryServiceHasAReadinessHealthcheckAndWaitsForWhatItNeeds) {
  std::set<std::string> ours;
  for (const auto& binary : kServices) {
    for (const auto& name : Running(binary)) ours.insert(name);
  }
  for (const auto& name : ours) {
    const YAML::Node svc = services_[name];
    const auto flags = FlagArgs(Strings(Field(svc, "command")));
    ASSERT_TRUE(flags.count("metrics_port")) << name;
    EXPECT_EQ(Strings(Field(svc, "healthcheck")["test"]),
              (std::vector<std::string>{"CMD", "sbadmin", "health", flags.at("metrics_port")}))
        << name << " needs a healthcheck probing its own metrics port";
    for (const auto& dep : Field(svc, "depends_on")) {
      const std::string other = dep.first.as<std::string>();
      if (!ours.count(other)) continue;
      EXPECT_EQ(dep.second["condition"].as<std::string>(""), "service_healthy")
          << name << " starts before " << other << " is ready";
    }
  }
}

// Kafka's log dirs are on its named volume (the image's default is under
// /tmp in the container, lost when it is recreated).
TEST_F(ComposeTest, KafkaKeepsItsLogsOnItsVolume) {
  const YAML::Node kafka = services_["kafka"];
  ASSERT_TRUE(kafka);
  const std::string dirs = kafka["environment"]["KAFKA_LOG_DIRS"].as<std::string>("");
  ASSERT_FALSE(dirs.empty()) << "KAFKA_LOG_DIRS is unset: the image keeps the logs under /tmp";
  for (absl::string_view d : absl::StrSplit(dirs, ',')) {
    bool on_volume = false;
    for (const auto& v : Strings(kafka["volumes"])) {
      const std::vector<std::string> parts = absl::StrSplit(v, ':');
      // "name:/path[:mode]" with a top-level named volume, not a bind mount.
      if (parts.size() >= 2 && root_["volumes"][parts[0]])
        on_volume |= Under(std::string(d), parts[1]);
    }
    EXPECT_TRUE(on_volume) << "Kafka log dir " << d << " is not on a named volume";
  }
}

TEST_F(ComposeTest, PostgresIsHealthyOnlyWhenItAnswersOverTcp) {
  std::vector<std::string> test = Strings(services_["postgres"]["healthcheck"]["test"]);
  ASSERT_FALSE(test.empty()) << "PostgreSQL has no healthcheck";
  if (test[0] == "CMD-SHELL" && test.size() == 2)
    test = absl::StrSplit(test[1], ' ', absl::SkipEmpty());
  EXPECT_TRUE(PgIsReadyOverTcp(test)) << "pg_isready without -h HOST: " << absl::StrJoin(test, " ");
  // The parser itself.
  EXPECT_TRUE(PgIsReadyOverTcp({"CMD", "pg_isready", "-h", "127.0.0.1", "-U", "x"}));
  EXPECT_TRUE(PgIsReadyOverTcp({"pg_isready", "--host=localhost"}));
  EXPECT_FALSE(PgIsReadyOverTcp({"CMD", "pg_isready", "-U", "switchboard", "-d", "switchboard"}));
  EXPECT_FALSE(PgIsReadyOverTcp({"pg_isready", "-h", "/var/run/postgresql"}));
}

// The scheduler's replicas serve together (issue 9): identical containers
// with the scheduler's own identity, reading PostgreSQL with the gateway's
// login, and every client of the scheduler lists all of them.
TEST_F(ComposeTest, RunsSchedulerReplicasThatEveryClientLists) {
  const auto replicas = Running("tenant-scheduler");
  ASSERT_GE(replicas.size(), 2u) << "one scheduler: nothing takes over when it stops";
  const YAML::Node first = services_["tenant-scheduler"];
  ASSERT_TRUE(first);
  const auto command = Strings(Field(first, "command"));
  ASSERT_FALSE(PgUri("gateway").empty());
  EXPECT_EQ(PgUri("tenant-scheduler"), PgUri("gateway")) << "the scheduler reads another database";
  std::set<std::string> listed;
  for (const auto& name : replicas) {
    const YAML::Node svc = services_[name];
    EXPECT_EQ(Field(svc, "image").as<std::string>(""), "switchboard:dev") << name;
    // Same flags, so the same TLS paths, which must be the same secrets.
    EXPECT_EQ(Strings(Field(svc, "command")), command) << name << " is configured unlike tenant-scheduler";
    EXPECT_EQ(SecretTargets(svc), SecretTargets(first)) << name << " must hold the tenant-scheduler identity";
    listed.insert(name + ":" + FlagArgs(command)["grpc_port"]);
  }
  // Every client, the optional profiles' workers included.
  std::set<std::string> clients;
  for (const auto& kv : services_) {
    const auto flags = FlagArgs(Strings(Field(kv.second, "command")));
    if (!flags.count("scheduler_address")) continue;
    clients.insert(kv.first.as<std::string>());
    const std::vector<std::string> got = absl::StrSplit(flags.at("scheduler_address"), ',');
    EXPECT_EQ(std::set<std::string>(got.begin(), got.end()), listed)
        << kv.first.as<std::string>() << " --scheduler_address does not list every replica";
  }
  for (const std::string c : {"inference-worker", "worker-vllm", "worker-ollama", "chat", "gateway"}) {
    EXPECT_TRUE(clients.count(c)) << c << " has no --scheduler_address";
  }
}

// On the copy with secrets: compose refuses a missing env_file.
TEST(ComposeConfigTest, DockerComposeAcceptsTheFile) {
  ASSERT_FALSE(GeneratedDeploy().empty());
  std::string out;
  ASSERT_EQ(RunCommand({"docker-compose", "-f", GeneratedDeploy() + "/docker-compose.yml", "config", "-q"},
                       &out),
            0)
      << out;
}

// The optional profiles wire a worker with an upstream engine to a real
// model server: flags the worker accepts, the upstream a service of the
// file, the worker's own identity, and nothing started without the profile.
TEST_F(ComposeTest, OptionalProfilesPutAWorkerInFrontOfVllmAndOllama) {
  const std::map<std::string, std::pair<std::string, std::string>> workers = {
      {"worker-vllm", {"vllm", "http://vllm:8000/v1"}},
      {"worker-ollama", {"ollama", "http://ollama:11434/v1"}}};
  for (const auto& [name, upstream] : workers) {
    const YAML::Node svc = services_[name];
    ASSERT_TRUE(svc) << "docker-compose.yml has no service " << name;
    const auto command = Strings(Field(svc, "command"));
    ASSERT_FALSE(command.empty());
    EXPECT_EQ(command[0], "inference-worker");
    const auto flags = FlagArgs(command);
    ExpectFlagsAccepted("inference-worker", flags, "compose " + name);
    EXPECT_EQ(flags.at("engine"), "openai") << name;
    EXPECT_EQ(flags.at("upstream_url"), upstream.second) << name;
    const YAML::Node server = services_[upstream.first];
    ASSERT_TRUE(server) << name << " points at a service the file does not have";
    EXPECT_EQ(Strings(Field(server, "profiles")), std::vector<std::string>{upstream.first});
    EXPECT_EQ(Strings(Field(svc, "profiles")), std::vector<std::string>{upstream.first})
        << name << " must start only with its profile";
    ExpectMutualTls("compose " + name, flags);
    EXPECT_EQ(SecretTargets(svc).at("tls.crt"), "inference_worker_crt") << name;
  }
}

TEST_F(ComposeTest, EveryServiceTalksMutualTlsWithItsOwnPair) {
  const YAML::Node secrets = root_["secrets"];
  ASSERT_TRUE(secrets.IsMap()) << "docker-compose.yml declares no secrets";
  for (const auto& name : kServices) {
    const YAML::Node svc = services_[name];
    const auto flags = FlagArgs(Strings(Field(svc, "command")));
    ExpectMutualTls("compose " + name, flags);
    const auto mounted = SecretTargets(svc);
    // Each TLS path is a secret this service mounts, from deploy/.tls and
    // for its own identity (the CA for --tls_ca).
    const std::map<std::string, std::string> want = {
        {"tls_ca", "ca.crt"}, {"tls_cert", name + ".crt"}, {"tls_key", name + ".key"}};
    for (const auto& [flag, file] : want) {
      if (!flags.count(flag)) continue;
      const std::string path = flags.at(flag);
      ASSERT_EQ(Dirname(path), "/run/secrets") << name << " --" << flag << " is not a mounted secret";
      ASSERT_TRUE(mounted.count(Basename(path))) << name << " does not mount " << path;
      const std::string source = mounted.at(Basename(path));
      EXPECT_EQ(secrets[source]["file"].as<std::string>(""), ".tls/" + file)
          << name << " --" << flag << " is not its own pair from deploy/.tls";
    }
  }
}

TEST_F(ComposeTest, DatastoreClientsHaveCredentialsAndDatastoresRequireThem) {
  ASSERT_FALSE(GeneratedDeploy().empty());
  const YAML::Node secrets = root_["secrets"];
  auto env_files = [&](const YAML::Node& svc) {
    std::set<std::string> out;
    for (const auto& f : Strings(Field(svc, "env_file"))) out.insert(f);
    return out;
  };
  for (const auto& name : kServices) {
    const YAML::Node svc = services_[name];
    const auto flags = FlagArgs(Strings(Field(svc, "command")));
    const auto files = env_files(svc);
    // Every variable of its env files overrides a flag of this binary.
    for (const auto& f : files) {
      for (const auto& [var, value] : EnvFile(GeneratedDeploy() + "/" + f)) {
        ExpectEnvAccepted(name, var, "compose " + name + " " + f);
      }
    }
    ExpectDatastoreCredentials(name, flags, files.count(".secrets/redis.env") > 0,
                               files.count(".secrets/kafka.env") > 0);
    // A binary that takes --kafka_brokers has a loopback default, which
    // names nothing in a container: it is told where Kafka is.
    if (FlagsOf(name).count("kafka_brokers")) {
      EXPECT_TRUE(flags.count("kafka_brokers")) << name << " is not told where Kafka is";
    }
  }
  // Safety hashes the spans of its audit trail with its own key, which it
  // requires whenever it has Kafka.
  {
    const auto flags = FlagArgs(Strings(Field(services_["safety"], "command")));
    ASSERT_TRUE(flags.count("kafka_brokers")) << "safety does not publish its audit trail";
    ASSERT_TRUE(flags.count("audit_key_file")) << "safety has Kafka but no --audit_key_file";
    const auto mounted = SecretTargets(services_["safety"]);
    const std::string path = flags.at("audit_key_file");
    EXPECT_EQ(Dirname(path), "/run/secrets");
    ASSERT_TRUE(mounted.count(Basename(path))) << "safety does not mount " << path;
    const std::string file = secrets[mounted.at(Basename(path))]["file"].as<std::string>("");
    EXPECT_EQ(file, ".secrets/audit_key");
    EXPECT_GE(absl::StripAsciiWhitespace(ReadFile(GeneratedDeploy() + "/" + file)).size(), 32u)
        << "deploy/make-secrets writes no audit key";
  }
  // Both ends of the usage events sign with the same key.
  for (const std::string name : {"inference-worker", "billing"}) {
    const auto flags = FlagArgs(Strings(Field(services_[name], "command")));
    ASSERT_TRUE(flags.count("usage_signing_key_file")) << name;
    const auto mounted = SecretTargets(services_[name]);
    const std::string path = flags.at("usage_signing_key_file");
    ASSERT_TRUE(mounted.count(Basename(path))) << name << " does not mount " << path;
    EXPECT_EQ(mounted.at(Basename(path)), "usage_signing_key") << name;
  }
  // Redis loads requirepass from a mounted config file.
  const auto redis_cmd = Strings(services_["redis"]["command"]);
  ASSERT_GE(redis_cmd.size(), 2u);
  ASSERT_TRUE(absl::StartsWith(redis_cmd[1], "/run/secrets/")) << "redis-server runs without its config";
  const std::string redis_conf =
      ReadFile(GeneratedDeploy() + "/" +
               secrets[SecretTargets(services_["redis"]).at(Basename(redis_cmd[1]))]["file"].as<std::string>());
  const auto redis_env = EnvFile(GeneratedDeploy() + "/.secrets/redis.env");
  ASSERT_TRUE(redis_env.count("SWITCHBOARD_REDIS_PASSWORD"));
  EXPECT_TRUE(absl::StrContains(redis_conf, "requirepass " + redis_env.at("SWITCHBOARD_REDIS_PASSWORD")))
      << "Redis and its clients disagree on the password";
  // Kafka: every client listener is SASL, and the clients' user is in the JAAS file.
  const YAML::Node kenv = services_["kafka"]["environment"];
  for (absl::string_view l : absl::StrSplit(kenv["KAFKA_ADVERTISED_LISTENERS"].as<std::string>(""), ',')) {
    EXPECT_TRUE(absl::StartsWith(l, "SASL_")) << "Kafka advertises a listener without SASL: " << l;
  }
  EXPECT_TRUE(absl::StrContains(kenv["KAFKA_OPTS"].as<std::string>(""), "java.security.auth.login.config=/run/secrets/"));
  const std::string jaas = ReadFile(GeneratedDeploy() + "/.secrets/kafka_server_jaas.conf");
  const auto kafka_env = EnvFile(GeneratedDeploy() + "/.secrets/kafka.env");
  ASSERT_TRUE(kafka_env.count("SWITCHBOARD_KAFKA_SASL_PASSWORD"));
  const auto worker = FlagArgs(Strings(Field(services_["inference-worker"], "command")));
  EXPECT_TRUE(absl::StrContains(jaas, "user_" + worker.at("kafka_sasl_username") + "=\"" +
                                          kafka_env.at("SWITCHBOARD_KAFKA_SASL_PASSWORD") + "\""))
      << "the broker does not know the services' Kafka login";
}

// "[host_ip:]host:container[/proto]", a bare port, or the long form.
std::vector<std::pair<std::string, int>> Published(const YAML::Node& ports) {
  std::vector<std::pair<std::string, int>> out;  // host ip ("" = every interface), container port
  for (const auto& p : ports) {
    if (p.IsMap()) {
      out.emplace_back(p["host_ip"].as<std::string>(""), p["target"].as<int>(0));
      continue;
    }
    std::string spec = p.as<std::string>();
    spec = spec.substr(0, spec.find('/'));
    const size_t last = spec.rfind(':');
    const int container = std::stoi(spec.substr(last + 1));
    std::string ip;
    if (last != std::string::npos) {
      const std::string rest = spec.substr(0, last);  // [ip:]host_port
      const size_t colon = rest.rfind(':');
      if (colon != std::string::npos) ip = rest.substr(0, colon);
    }
    if (ip.size() > 1 && ip.front() == '[') ip = ip.substr(1, ip.size() - 2);
    out.emplace_back(ip, container);
  }
  return out;
}

TEST_F(ComposeTest, PublishesOnlyTheGatewayHttpPortBeyondLoopback) {
  const int http = std::stoi(FlagArgs(Strings(Field(services_["gateway"], "command"))).at("http_port"));
  for (const auto& kv : services_) {
    const std::string name = kv.first.as<std::string>();
    for (const auto& [ip, port] : Published(Field(kv.second, "ports"))) {
      if (ip == "127.0.0.1" || ip == "::1") continue;
      EXPECT_TRUE(name == "gateway" && port == http)
          << name << " publishes port " << port << " on " << (ip.empty() ? "every interface" : ip);
    }
  }
  // The published-ports parser itself.
  const auto parsed = Published(YAML::Load(R"(["8080", "127.0.0.1:1:2", "0.0.0.0:3:4/tcp", "[::1]:5:6"])"));
  ASSERT_EQ(parsed.size(), 4u);
  EXPECT_EQ(parsed[0], std::make_pair(std::string(), 8080));
  EXPECT_EQ(parsed[1], std::make_pair(std::string("127.0.0.1"), 2));
  EXPECT_EQ(parsed[2], std::make_pair(std::string("0.0.0.0"), 4));
  EXPECT_EQ(parsed[3], std::make_pair(std::string("::1"), 6));
}

TEST(DockerfileTest, BuildsAndShipsEveryBinary) {
  std::string out;
  ASSERT_EQ(RunCommand({"cat", Infra::SourceDir() + "/deploy/Dockerfile"}, &out), 0);
  const size_t target = out.find("--target");
  ASSERT_NE(target, std::string::npos);
  const std::string line = out.substr(target, out.find("&&", target) - target);
  for (const auto& name : kServices) {
    EXPECT_TRUE(absl::StrContains(line, " " + name)) << "the Dockerfile does not build " << name;
  }
  EXPECT_TRUE(absl::StrContains(line, "sbadmin"));
  EXPECT_TRUE(absl::StrContains(out, "COPY --from=build /opt/switchboard"));
}

// ---------------------------------------------------------------------------
// Kubernetes

// The pod template of a workload object (a CronJob's through its job
// template); Undefined for anything that runs no pods.
YAML::Node PodTemplateOf(const YAML::Node& obj) {
  const std::string kind = obj["kind"].as<std::string>("");
  if (kind == "CronJob") return Dig(obj, {"spec", "jobTemplate", "spec", "template"});
  if (kind == "Deployment" || kind == "StatefulSet" || kind == "Job" || kind == "DaemonSet" ||
      kind == "ReplicaSet") {
    return Dig(obj, {"spec", "template"});
  }
  return YAML::Node(YAML::NodeType::Undefined);
}

// How long a container's preStop hook waits: `sleep N` (exec) or the
// kubelet's own sleep action; -1 without one.
int PreStopSleepSeconds(const YAML::Node& c) {
  const YAML::Node hook = Dig(c, {"lifecycle", "preStop"});
  if (Dig(hook, {"sleep"})) return Dig(hook, {"sleep", "seconds"}).as<int>(-1);
  const auto command = Strings(Dig(hook, {"exec", "command"}));
  if (command.size() == 2 && (command[0] == "sleep" || absl::EndsWith(command[0], "/sleep"))) {
    int seconds = -1;
    return absl::SimpleAtoi(command[1], &seconds) ? seconds : -1;
  }
  return -1;
}

// Containers ("Kind/name/container") whose root filesystem stays writable,
// and why. Pod Security "restricted" does not require a read-only root; we
// do, except here.
const std::map<std::string, std::string> kWritableRoot = {
    // apache/kafka's start script renders server.properties into the image's
    // config directories, which also hold the shipped defaults, and the broker
    // logs under /opt/kafka/logs: an emptyDir over them would hide those files.
    {"StatefulSet/kafka/kafka", "the image writes its config and logs into its own directories"},
};

// The paths a read-only-root container writes besides /tmp, each of which
// must be a writable volume (emptyDir or claim).
const std::map<std::string, std::vector<std::string>> kWrites = {
    {"StatefulSet/postgres/postgres", {"/var/lib/postgresql/data", "/var/run/postgresql"}},
    {"Deployment/redis/redis", {"/data"}},
    {"Job/kafka-topics/topics", {"/opt/kafka/logs"}},
    // components/vllm-workers: its HOME, the weights, PyTorch's shared memory.
    {"Deployment/vllm/vllm", {"/home/vllm", "/models", "/dev/shm"}},
};

// Pod Security "restricted" and more, on one workload (`key` is Kind/name):
// no service account token; non-root with a uid (images that name their user
// cannot be checked by the kubelet otherwise), RuntimeDefault seccomp and an
// fsGroup for its volumes; every container without privilege escalation or
// capabilities, on a read-only root (kWritableRoot excepted) with writable
// volumes where it writes, and with resources. The services' containers
// also: probes, and a preStop sleep that, with --drain_seconds
// (`drain_seconds`), fits in the grace period.
void ExpectRestrictedPod(const std::string& key, const YAML::Node& workload, int drain_seconds) {
  const YAML::Node pod = Dig(PodTemplateOf(workload), {"spec"});
  ASSERT_TRUE(pod.IsMap()) << key << " has no pod template";
  EXPECT_FALSE(pod["automountServiceAccountToken"].as<bool>(true))
      << key << ": automountServiceAccountToken must be false";
  const YAML::Node psc = Dig(pod, {"securityContext"});
  EXPECT_TRUE(psc["runAsNonRoot"].as<bool>(false)) << key << ": pod runAsNonRoot";
  EXPECT_EQ(Dig(psc, {"seccompProfile", "type"}).as<std::string>(""), "RuntimeDefault") << key;
  EXPECT_GT(psc["fsGroup"].as<int>(0), 0) << key << ": no fsGroup (volumes stay root's)";
  for (const std::string host : {"hostNetwork", "hostPID", "hostIPC"}) {
    EXPECT_FALSE(pod[host].as<bool>(false)) << key << ": " << host;
  }
  // Writable volumes by name: emptyDirs, claims, the claim templates.
  std::set<std::string> writable;
  for (const auto& v : pod["volumes"]) {
    EXPECT_FALSE(v["hostPath"]) << key << ": hostPath volume " << v["name"].as<std::string>("");
    if (v["emptyDir"] || v["persistentVolumeClaim"] || v["ephemeral"]) {
      writable.insert(v["name"].as<std::string>());
    }
  }
  for (const auto& t : Dig(workload, {"spec", "volumeClaimTemplates"})) {
    writable.insert(t["metadata"]["name"].as<std::string>());
  }
  const std::string kind = workload["kind"].as<std::string>("");
  const std::string name = workload["metadata"]["name"].as<std::string>("");
  const bool service = (kind == "Deployment" || kind == "StatefulSet") &&
                       std::find(kServices.begin(), kServices.end(), name) != kServices.end();
  int containers = 0;
  for (const std::string list : {"initContainers", "containers"}) {
    for (const auto& c : pod[list]) {
      ++containers;
      const std::string where = key + "/" + c["name"].as<std::string>("");
      const YAML::Node sc = Dig(c, {"securityContext"});
      EXPECT_GT(sc["runAsUser"].as<int>(psc["runAsUser"].as<int>(0)), 0)
          << where << ": no runAsUser (the kubelet cannot check a named or root image user)";
      EXPECT_FALSE(sc["runAsNonRoot"].IsDefined() && !sc["runAsNonRoot"].as<bool>(true)) << where;
      EXPECT_FALSE(sc["allowPrivilegeEscalation"].as<bool>(true))
          << where << ": allowPrivilegeEscalation must be false";
      EXPECT_FALSE(sc["privileged"].as<bool>(false)) << where;
      EXPECT_EQ(Strings(Dig(sc, {"capabilities", "drop"})), std::vector<std::string>{"ALL"})
          << where << ": capabilities must drop ALL";
      EXPECT_FALSE(Dig(sc, {"capabilities", "add"})) << where << " adds capabilities";
      if (Dig(sc, {"seccompProfile"})) {
        EXPECT_EQ(Dig(sc, {"seccompProfile", "type"}).as<std::string>(""), "RuntimeDefault")
            << where;
      }
      const auto exempt = kWritableRoot.find(where);
      if (exempt != kWritableRoot.end()) {
        // Exempt, and visibly so in the manifest.
        EXPECT_TRUE(sc["readOnlyRootFilesystem"].IsDefined() &&
                    !sc["readOnlyRootFilesystem"].as<bool>(true))
            << where << " is exempt from a read-only root (" << exempt->second
            << "): say readOnlyRootFilesystem: false, or drop the exemption";
      } else {
        EXPECT_TRUE(sc["readOnlyRootFilesystem"].as<bool>(false))
            << where << ": root filesystem not read-only";
        std::vector<std::string> writes = {"/tmp"};
        if (kWrites.count(where)) {
          writes.insert(writes.end(), kWrites.at(where).begin(), kWrites.at(where).end());
        }
        for (const auto& path : writes) {
          bool ok = false;
          for (const auto& m : c["volumeMounts"]) {
            ok |= m["mountPath"].as<std::string>("") == path && !m["readOnly"].as<bool>(false) &&
                  writable.count(m["name"].as<std::string>(""));
          }
          EXPECT_TRUE(ok) << where << " writes " << path
                          << ": mount a writable volume (emptyDir) there";
        }
      }
      EXPECT_TRUE(Dig(c, {"resources", "requests", "cpu"}) &&
                  Dig(c, {"resources", "requests", "memory"}))
          << where << ": no cpu and memory requests";
      // An init container runs to completion before the others start (unless
      // it is a sidecar, restartPolicy: Always): the API server refuses probes
      // and lifecycle hooks on it, and nothing could act on them.
      const bool runs_to_completion =
          list == "initContainers" && c["restartPolicy"].as<std::string>("") != "Always";
      if (runs_to_completion) {
        for (const std::string hook :
             {"readinessProbe", "livenessProbe", "startupProbe", "lifecycle"}) {
          EXPECT_FALSE(c[hook]) << where << ": an init container takes no " << hook;
        }
      } else if (kind == "Deployment" || kind == "StatefulSet") {
        EXPECT_TRUE(c["readinessProbe"]) << where << ": no readinessProbe";
      }
      if (!service || list != "containers") continue;
      EXPECT_TRUE(c["livenessProbe"]) << where << ": no livenessProbe";
      EXPECT_TRUE(Dig(c, {"resources", "limits", "memory"})) << where << ": no memory limit";
      // Endpoints drop a terminating pod while preStop runs; only then does
      // SIGTERM start the drain, which must end inside the grace period.
      const int pre_stop = PreStopSleepSeconds(c);
      EXPECT_GT(pre_stop, 0) << where << ": no preStop sleep, so calls reach a closing listener";
      EXPECT_GT(pod["terminationGracePeriodSeconds"].as<int>(30), pre_stop + drain_seconds)
          << where << ": the grace period must outlast preStop (" << pre_stop << " s) + drain ("
          << drain_seconds << " s)";
    }
  }
  EXPECT_GT(containers, 0) << key;
}

bool HaveKubectl() {
  std::string out;
  return RunCommand({"sh", "-c", "command -v kubectl"}, &out) == 0;
}

// `kubectl kustomize DIR` (DIR under the copy GeneratedDeploy() makes), once
// per directory. Empty, with a failure, when it does not render.
const std::vector<YAML::Node>& Rendered(const std::string& dir) {
  static std::map<std::string, std::vector<YAML::Node>> cache;
  auto it = cache.find(dir);
  if (it != cache.end()) return it->second;
  std::vector<YAML::Node> docs;
  std::string out;
  if (GeneratedDeploy().empty()) {
    ADD_FAILURE() << "no copy of deploy/ to render";
  } else if (RunCommand({"kubectl", "kustomize", GeneratedDeploy() + "/k8s/" + dir}, &out) != 0) {
    ADD_FAILURE() << "kubectl kustomize deploy/k8s/" << dir << ": " << out;
  } else {
    docs = YAML::LoadAll(out);
  }
  return cache.emplace(dir, std::move(docs)).first->second;
}

// The overlays, each checked as kustomize renders it.
const std::vector<std::string> kOverlays = {"dev", "prod"};

// What the prod overlay expects the operator to have created (its example,
// with every key the base reads): endpoints and credentials of the managed
// datastores.
const char kOperatorObjects[] = "/deploy/k8s/overlays/prod/datastores.example.yaml";

// Datastore settings: the flags naming where the datastores are and how to
// log in, which must come from the one ConfigMap (env), never from a flag in a
// Deployment (a flag beats the environment: an operator could not change it).
const std::set<std::string> kDatastoreFlags = {"redis_host",           "redis_port",
                                               "kafka_brokers",        "kafka_security_protocol",
                                               "kafka_sasl_mechanism", "kafka_sasl_username"};

// Kubernetes checks run on each overlay's render (GetParam(): "dev" or
// "prod"), on the copy with deploy/make-secrets' files.
class KubernetesTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!HaveKubectl()) GTEST_SKIP() << "kubectl is not installed";
    const std::string dev = Infra::SourceDir() + "/deploy/k8s/overlays/dev/";
    const YAML::Node kustomization = YAML::LoadFile(dev + "kustomization.yaml");
    // name -> (key -> file) of the Secrets the dev overlay generates from the
    // gitignored files deploy/make-secrets writes.
    for (const auto& gen : kustomization["secretGenerator"]) {
      auto& keys = generated_[gen["name"].as<std::string>()];
      for (const auto& f : Strings(gen["files"])) {
        const size_t eq = f.find('=');
        keys[eq == std::string::npos ? Basename(f) : f.substr(0, eq)] =
            eq == std::string::npos ? f : f.substr(eq + 1);
      }
    }
    const auto& docs = Rendered("overlays/" + GetParam());
    ASSERT_FALSE(docs.empty());
    for (const auto& doc : docs) {
      const std::string key =
          doc["kind"].as<std::string>() + "/" + doc["metadata"]["name"].as<std::string>();
      ASSERT_FALSE(objects_.count(key)) << "duplicate " << key;
      objects_[key] = doc;
    }
    if (prod()) {
      for (const auto& doc : YAML::LoadAllFromFile(Infra::SourceDir() + kOperatorObjects)) {
        operator_[doc["kind"].as<std::string>() + "/" + doc["metadata"]["name"].as<std::string>()] =
            doc;
      }
    }
  }
  bool prod() const { return GetParam() == "prod"; }
  // A rendered object's name without the hash kustomize appends to what its
  // generators make (switchboard-redis-h8659m4gm5 -> switchboard-redis).
  std::string Unhashed(const std::string& name) const {
    const size_t dash = name.rfind('-');
    if (dash != std::string::npos && name.size() - dash == 11 &&
        generated_.count(name.substr(0, dash))) {
      return name.substr(0, dash);
    }
    return name;
  }
  // A ConfigMap or Secret by name: rendered, or (prod) the operator's.
  YAML::Node Provided(const std::string& kind, const std::string& name) {
    const YAML::Node o = Get(kind, name);
    if (o.IsMap()) return o;
    auto it = operator_.find(kind + "/" + name);
    return it == operator_.end() ? YAML::Node(YAML::NodeType::Undefined) : it->second;
  }
  // What a container runs with: its --flags, and the flags its SWITCHBOARD_*
  // variables set where the command line does not (values from ConfigMaps
  // resolved; a Secret's value stays "<secret>").
  std::map<std::string, std::string> Settings(const YAML::Node& c) {
    auto flags = FlagArgs(Strings(c["args"]));
    for (const auto& e : c["env"]) {
      const std::string var = e["name"].as<std::string>("");
      if (!absl::StartsWith(var, "SWITCHBOARD_")) continue;
      const std::string flag = absl::AsciiStrToLower(var.substr(strlen("SWITCHBOARD_")));
      if (flags.count(flag)) continue;
      std::string value = e["value"].as<std::string>("");
      if (const YAML::Node ref = Dig(e, {"valueFrom", "configMapKeyRef"})) {
        const YAML::Node cm = Provided("ConfigMap", ref["name"].as<std::string>(""));
        value = cm.IsMap() ? cm["data"][ref["key"].as<std::string>("")].as<std::string>("") : "";
      } else if (Dig(e, {"valueFrom", "secretKeyRef"})) {
        value = "<secret>";
      }
      flags[flag] = value;
    }
    return flags;
  }
  // A datastore host is defined: a Service of the render, or (prod) a host the
  // operator's ConfigMap names.
  bool Defined(const std::string& host) {
    if (Get("Service", host)) return true;
    const YAML::Node cm = operator_["ConfigMap/switchboard-datastores"];
    if (!cm.IsMap()) return false;
    for (const auto& kv : cm["data"]) {
      for (absl::string_view hp : absl::StrSplit(kv.second.as<std::string>(""), ',')) {
        if (HostPort(std::string(hp)).first == host) return true;
      }
    }
    return false;
  }
  YAML::Node Get(const std::string& kind, const std::string& name) {
    auto it = objects_.find(kind + "/" + name);
    // Undefined, not YAML::Node(): a default Node is a null that tests true.
    return it == objects_.end() ? YAML::Node(YAML::NodeType::Undefined) : it->second;
  }
  // The pod template of a Deployment, StatefulSet or Job.
  YAML::Node Pod(const std::string& kind, const std::string& name) {
    const YAML::Node o = Get(kind, name);
    return o.IsMap() ? o["spec"]["template"] : YAML::Node(YAML::NodeType::Undefined);
  }
  // The Deployment or StatefulSet (the scheduler's replicas need stable
  // names) that runs a service, and its pod template.
  YAML::Node Workload(const std::string& name) {
    const YAML::Node d = Get("Deployment", name);
    return d.IsMap() ? d : Get("StatefulSet", name);
  }
  YAML::Node WorkloadPod(const std::string& name) {
    const YAML::Node w = Workload(name);
    return w.IsMap() ? w["spec"]["template"] : YAML::Node(YAML::NodeType::Undefined);
  }
  // The addresses that reach a service's pods on `port`: its Service's name,
  // or for a StatefulSet each pod's own name under the governing Service
  // (`name-0.name`, resolved through the namespace's search path).
  std::set<std::string> Endpoints(const std::string& name, int port) {
    const std::string p = ":" + std::to_string(port);
    const YAML::Node sts = Get("StatefulSet", name);
    // A Deployment's replicas behind one name: a dns:/// target that
    // resolves to every pod of its headless Service.
    if (!sts.IsMap()) return {"dns:///" + name + p};
    std::set<std::string> out;
    const std::string service = sts["spec"]["serviceName"].as<std::string>("");
    for (int i = 0; i < sts["spec"]["replicas"].as<int>(1); ++i) {
      out.insert(name + "-" + std::to_string(i) + "." + service + p);
    }
    return out;
  }
  // The secret a container's file path comes from, and its key: the volume
  // mounted at the path's directory. {"", ""} if none.
  std::pair<std::string, std::string> SecretFile(const YAML::Node& pod_spec, const YAML::Node& c,
                                                 const std::string& path) {
    for (const auto& m : c["volumeMounts"]) {
      if (m["mountPath"].as<std::string>() != Dirname(path) || m["subPath"]) continue;
      for (const auto& v : pod_spec["volumes"]) {
        if (v["name"].as<std::string>() == m["name"].as<std::string>() && v["secret"]) {
          return {v["secret"]["secretName"].as<std::string>(), Basename(path)};
        }
      }
    }
    return {"", ""};
  }
  // The fewest replicas a Deployment or StatefulSet runs: the minReplicas of
  // the HPA that scales it, else its own replicas (both default to 1).
  int MinReplicas(const YAML::Node& workload) {
    for (const auto& [key, obj] : objects_) {
      if (!absl::StartsWith(key, "HorizontalPodAutoscaler/") &&
          !absl::StartsWith(key, "ScaledObject/")) {
        continue;
      }
      const YAML::Node ref = obj["spec"]["scaleTargetRef"];
      const std::string name = workload["metadata"]["name"].as<std::string>("");
      if (absl::StartsWith(key, "HorizontalPodAutoscaler/") &&
          ref["kind"].as<std::string>("") == workload["kind"].as<std::string>("") &&
          ref["name"].as<std::string>("") == name) {
        return obj["spec"]["minReplicas"].as<int>(1);
      }
      // KEDA's ScaledObject (the observability component's): a Deployment
      // when its kind is left out.
      if (absl::StartsWith(key, "ScaledObject/") &&
          ref["kind"].as<std::string>("Deployment") == workload["kind"].as<std::string>("") &&
          ref["name"].as<std::string>("") == name) {
        return obj["spec"]["minReplicaCount"].as<int>(1);
      }
    }
    return workload["spec"]["replicas"].as<int>(1);
  }
  // --drain_seconds of every service, from the common ConfigMap.
  int DrainSeconds() {
    return std::stoi(
        Get("ConfigMap", "switchboard-common")["data"]["SWITCHBOARD_DRAIN_SECONDS"].as<std::string>(
            "0"));
  }
  std::map<std::string, YAML::Node> objects_, operator_;
  std::map<std::string, std::map<std::string, std::string>> generated_;
};

INSTANTIATE_TEST_SUITE_P(Overlays, KubernetesTest, ::testing::ValuesIn(kOverlays),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

TEST_P(KubernetesTest, EveryWorkloadMountsItsOwnTlsPairAndDatastoreCredentials) {
  for (const auto& name : kServices) {
    const YAML::Node pod = WorkloadPod(name)["spec"];
    ASSERT_TRUE(pod) << name;
    const YAML::Node c = pod["containers"][0];
    const auto flags = Settings(c);
    ExpectMutualTls("k8s " + name, flags);
    const std::map<std::string, std::string> want = {
        {"tls_ca", "secrets/tls/ca.crt"}, {"tls_cert", "secrets/tls/" + name + ".crt"},
        {"tls_key", "secrets/tls/" + name + ".key"}};
    for (const auto& [flag, file] : want) {
      if (!flags.count(flag)) continue;
      const auto [secret, key] = SecretFile(pod, c, flags.at(flag));
      ASSERT_FALSE(secret.empty()) << name << " --" << flag << "=" << flags.at(flag)
                                   << " is not in a mounted Secret (directory mounts only)";
      // The operator's Secret in prod: its name says whose pair it is.
      EXPECT_EQ(secret, "switchboard-tls-" + name)
          << name << " --" << flag << " is not its own pair";
      if (prod()) continue;
      ASSERT_TRUE(generated_.count(secret)) << name << ": no secretGenerator makes " << secret;
      EXPECT_EQ(generated_[secret][key], file) << name << " --" << flag << " is not its own pair";
    }
    std::set<std::string> env;
    for (const auto& e : c["env"]) {
      if (e["valueFrom"]["secretKeyRef"]) {
        const std::string secret = e["valueFrom"]["secretKeyRef"]["name"].as<std::string>();
        EXPECT_TRUE(generated_.count(Unhashed(secret)) || Get("Secret", secret) ||
                    operator_.count("Secret/" + secret))
            << name << ": no Secret " << secret;
      }
      env.insert(e["name"].as<std::string>());
    }
    ExpectDatastoreCredentials(name, flags, env.count("SWITCHBOARD_REDIS_PASSWORD") > 0,
                               env.count("SWITCHBOARD_KAFKA_SASL_PASSWORD") > 0);
    // (Its loopback default names nothing in a pod.)
    if (FlagsOf(name).count("kafka_brokers")) {
      EXPECT_TRUE(flags.count("kafka_brokers")) << name << " is not told where Kafka is";
    }
  }
  // Safety's audit key (required with Kafka), from its own Secret.
  {
    const YAML::Node pod = WorkloadPod("safety")["spec"];
    const auto flags = Settings(pod["containers"][0]);
    ASSERT_TRUE(flags.count("kafka_brokers")) << "safety does not publish its audit trail";
    ASSERT_TRUE(flags.count("audit_key_file")) << "safety has Kafka but no --audit_key_file";
    const auto [secret, key] = SecretFile(pod, pod["containers"][0], flags.at("audit_key_file"));
    EXPECT_EQ(Unhashed(secret), "switchboard-audit-key")
        << "safety does not mount its audit key (directory mounts only)";
    if (prod()) {
      ASSERT_TRUE(operator_.count("Secret/switchboard-audit-key"))
          << "datastores.example.yaml lacks the audit key";
      EXPECT_TRUE(Dig(operator_["Secret/switchboard-audit-key"], {"stringData", key})) << key;
    } else {
      EXPECT_EQ(generated_["switchboard-audit-key"][key], "secrets/audit-key");
    }
  }
  for (const std::string name : {"inference-worker", "billing"}) {
    const YAML::Node pod = WorkloadPod(name)["spec"];
    const auto flags = Settings(pod["containers"][0]);
    ASSERT_TRUE(flags.count("usage_signing_key_file")) << name;
    EXPECT_EQ(
        Unhashed(SecretFile(pod, pod["containers"][0], flags.at("usage_signing_key_file")).first),
        "switchboard-usage-signing")
        << name << " does not mount the shared signing key";
  }
  // The datastores (dev's) require what the clients present.
  if (prod()) return;
  const YAML::Node redis = Pod("Deployment", "redis")["spec"]["containers"][0];
  ASSERT_TRUE(redis);
  EXPECT_TRUE(absl::EndsWith(Strings(redis["args"]).at(0), ".conf")) << "redis-server runs without its config";
  EXPECT_EQ(
      Unhashed(SecretFile(Pod("Deployment", "redis")["spec"], redis, Strings(redis["args"]).at(0))
                   .first),
      "switchboard-redis");
  std::map<std::string, std::string> kafka_env;
  const YAML::Node kafka = Pod("StatefulSet", "kafka")["spec"]["containers"][0];
  for (const auto& e : kafka["env"]) kafka_env[e["name"].as<std::string>()] = e["value"].as<std::string>("");
  for (absl::string_view l : absl::StrSplit(kafka_env["KAFKA_ADVERTISED_LISTENERS"], ',')) {
    EXPECT_TRUE(absl::StartsWith(l, "SASL_")) << "Kafka advertises a listener without SASL: " << l;
  }
  EXPECT_TRUE(absl::StrContains(kafka_env["KAFKA_OPTS"], "java.security.auth.login.config="));
}

// Sources a NetworkPolicy rule admits: app names, "*" (anyone) or "scraper".
std::set<std::string> Sources(const YAML::Node& rule) {
  std::set<std::string> out;
  if (!rule["from"] || rule["from"].size() == 0) return {"*"};
  for (const auto& f : rule["from"]) {
    if (f["ipBlock"]) {
      out.insert("*");
    } else if (f["namespaceSelector"]) {
      out.insert(f["podSelector"]["matchLabels"]["switchboard.io/metrics-scraper"].as<std::string>("") == "true"
                     ? "scraper"
                     : "*");
    } else {
      out.insert(f["podSelector"]["matchLabels"]["app.kubernetes.io/name"].as<std::string>("*"));
    }
  }
  return out;
}

TEST_P(KubernetesTest, NetworkPoliciesAdmitExactlyTheCallersTheFlagsImply) {
  // Default deny: every pod, ingress, no rule.
  bool deny = false;
  // target app -> port name -> sources
  std::map<std::string, std::map<std::string, std::set<std::string>>> allowed;
  for (const auto& [key, np] : objects_) {
    if (!absl::StartsWith(key, "NetworkPolicy/")) continue;
    const YAML::Node sel = np["spec"]["podSelector"];
    if (sel.size() == 0 && !np["spec"]["ingress"]) {
      deny = absl::StrContains(absl::StrJoin(Strings(np["spec"]["policyTypes"]), ","), "Ingress");
      continue;
    }
    const std::string target = sel["matchLabels"]["app.kubernetes.io/name"].as<std::string>("");
    ASSERT_FALSE(target.empty()) << key << " selects no single workload";
    allowed[target];  // selected, even with no rule
    for (const auto& rule : np["spec"]["ingress"]) {
      ASSERT_TRUE(rule["ports"]) << key << " opens every port";
      for (const auto& p : rule["ports"]) {
        for (const auto& src : Sources(rule)) allowed[target][p["port"].as<std::string>()].insert(src);
      }
    }
  }
  EXPECT_TRUE(deny) << "no default-deny ingress NetworkPolicy";

  // Who should reach whom, from the flags.
  std::map<std::string, std::map<std::string, std::set<std::string>>> want;
  for (const auto& name : kServices) {
    const YAML::Node c = WorkloadPod(name)["spec"]["containers"][0];
    const auto flags = Settings(c);
    want[name]["grpc"];
    want[name]["metrics"] = {"scraper"};
    for (const auto& [flag, target] : kAddressFlags) {
      if (flags.count(flag)) want[target]["grpc"].insert(name);
    }
    if (flags.count("redis_host")) want["redis"]["redis"].insert(name);
    if (flags.count("kafka_brokers")) want["kafka"]["kafka"].insert(name);
  }
  // PostgreSQL: every pod a container of which (init containers included:
  // the migrations) reads SWITCHBOARD_PG.
  for (const auto& [key, obj] : objects_) {
    const YAML::Node pod = PodTemplateOf(obj);
    if (!pod.IsDefined()) continue;
    for (const std::string list : {"initContainers", "containers"}) {
      for (const auto& c : pod["spec"][list]) {
        for (const auto& e : c["env"]) {
          if (e["name"].as<std::string>() == "SWITCHBOARD_PG") {
            want["postgres"]["postgres"].insert(
                pod["metadata"]["labels"]["app.kubernetes.io/name"].as<std::string>(key));
          }
        }
      }
    }
  }
  // Workers are dialled at the address they registered (no flag): by the
  // scheduler (CountTokens), and by every other client of the scheduler,
  // which streams from the worker its Admit leased (issue 9).
  want["inference-worker"]["grpc"].insert("tenant-scheduler");
  for (const auto& name : want["tenant-scheduler"]["grpc"]) {
    if (name != "inference-worker") want["inference-worker"]["grpc"].insert(name);
  }
  want["gateway"]["http"] = {"*"};
  if (prod()) {
    // Managed datastores: outside the cluster, and these policies.
    for (const std::string ds : {"postgres", "redis", "kafka"}) want.erase(ds);
  } else {
    // sbadmin run by hand, labelled as the policy's comment says.
    want["postgres"]["postgres"].insert("sbadmin");
    want["kafka"]["kafka"].insert("kafka-topics");
    EXPECT_EQ(
        Pod("Job", "kafka-topics")["metadata"]["labels"]["app.kubernetes.io/name"].as<std::string>(
            ""),
        "kafka-topics");
  }

  for (const auto& [target, ports] : want) {
    ASSERT_TRUE(allowed.count(target)) << "no NetworkPolicy selects " << target;
    for (const auto& [port, sources] : ports) {
      std::set<std::string> got = allowed[target][port];
      EXPECT_EQ(got, sources) << target << " port " << port << " admits " << absl::StrJoin(got, ",")
                              << " instead of " << absl::StrJoin(sources, ",");
    }
    for (const auto& [port, sources] : allowed[target]) {
      EXPECT_TRUE(ports.count(port)) << target << " admits " << absl::StrJoin(sources, ",") << " on "
                                     << port << ", which nothing needs";
    }
  }
  // Every workload is selected by some policy.
  for (const auto& [key, obj] : objects_) {
    if (!absl::StartsWith(key, "Deployment/") && !absl::StartsWith(key, "StatefulSet/")) continue;
    const std::string app = obj["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"].as<std::string>("");
    EXPECT_TRUE(allowed.count(app)) << key << " has no NetworkPolicy";
  }
  // Port names in the policies are the pods' container port names.
  for (const auto& [target, ports] : allowed) {
    // (A yaml-cpp Node cannot be re-pointed: assignment writes through.)
    const YAML::Node pod = Pod("Deployment", target) ? Pod("Deployment", target) : Pod("StatefulSet", target);
    ASSERT_TRUE(pod) << "a NetworkPolicy selects " << target << ", which is not a workload";
    std::set<std::string> names;
    for (const auto& p : pod["spec"]["containers"][0]["ports"]) names.insert(p["name"].as<std::string>());
    for (const auto& [port, sources] : ports) {
      EXPECT_TRUE(names.count(port)) << target << " has no port named " << port;
    }
  }
}

TEST_P(KubernetesTest, EveryServiceHasAWorkloadAndServiceThatAgreeWithItsFlags) {
  const YAML::Node common = Get("ConfigMap", "switchboard-common");
  ASSERT_TRUE(common);
  std::map<std::string, std::set<std::string>> endpoints;
  for (const auto& name : kServices) {
    const YAML::Node deployment = Workload(name);
    ASSERT_TRUE(deployment) << "no Deployment or StatefulSet " << name;
    EXPECT_FALSE(Get("Deployment", name) && Get("StatefulSet", name)) << name << " runs twice";
    const YAML::Node pod = deployment["spec"]["template"]["spec"];
    ASSERT_EQ(pod["containers"].size(), 1u);
    const YAML::Node c = pod["containers"][0];
    EXPECT_EQ(Strings(c["command"]), std::vector<std::string>{name});
    const auto flags = Settings(c);
    ExpectFlagsAccepted(name, flags, "k8s " + name);
    for (const auto& e : c["env"]) ExpectEnvAccepted(name, e["name"].as<std::string>(), "k8s " + name);
    for (const auto& from : c["envFrom"]) {
      if (!from["configMapRef"]) continue;
      const YAML::Node cm = Get("ConfigMap", from["configMapRef"]["name"].as<std::string>());
      ASSERT_TRUE(cm);
      for (const auto& kv : cm["data"]) ExpectEnvAccepted(name, kv.first.as<std::string>(), "k8s " + name);
    }
    // The selector selects the pod template.
    EXPECT_EQ(deployment["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"].as<std::string>(""),
              name);
    EXPECT_EQ(deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"].as<std::string>(""),
              name);

    // Every port flag is a named container port and a Service port.
    std::map<int, std::string> container_ports;
    for (const auto& p : c["ports"]) container_ports[p["containerPort"].as<int>()] = p["name"].as<std::string>();
    const YAML::Node service = Get("Service", name);
    ASSERT_TRUE(service) << "no Service " << name;
    std::set<std::string> service_targets;
    for (const auto& p : service["spec"]["ports"]) service_targets.insert(p["targetPort"].as<std::string>());
    for (const auto& pf : PortFlags(name)) {
      ASSERT_TRUE(flags.count(pf)) << name << " must set --" << pf;
      const int port = std::stoi(flags.at(pf));
      ASSERT_TRUE(container_ports.count(port)) << name << " does not declare --" << pf << "=" << port;
      EXPECT_TRUE(service_targets.count(container_ports[port]))
          << "Service " << name << " does not expose " << container_ports[port];
    }
    endpoints[name] = Endpoints(name, std::stoi(flags.at("grpc_port")));
    // Probes on the metrics port: /readyz (follows grpc.health, so a draining
    // pod leaves the Service) and /healthz (alive). Not gRPC: the kubelet's gRPC probe cannot
    // present a client certificate, so under mutual TLS it would never pass.
    EXPECT_FALSE(c["readinessProbe"]["grpc"]) << name << ": the kubelet cannot pass mutual TLS";
    EXPECT_EQ(c["readinessProbe"]["httpGet"]["path"].as<std::string>(""), "/readyz") << name;
    EXPECT_EQ(c["readinessProbe"]["httpGet"]["port"].as<std::string>(""), "metrics") << name;
    EXPECT_EQ(c["livenessProbe"]["httpGet"]["path"].as<std::string>(""), "/healthz") << name;
    EXPECT_EQ(c["livenessProbe"]["httpGet"]["port"].as<std::string>(""), "metrics") << name;
    // The pod outlives its preStop sleep and the drain after it (the
    // gateway's also keeps its port open --drain_delay_seconds, 2 by default).
    const int drain_delay =
        name == "gateway"
            ? std::stoi(flags.count("drain_delay_seconds") ? flags.at("drain_delay_seconds") : "2")
            : 0;
    EXPECT_GT(pod["terminationGracePeriodSeconds"].as<int>(0),
              std::max(PreStopSleepSeconds(c), 0) + drain_delay +
                  std::stoi(common["data"]["SWITCHBOARD_DRAIN_SECONDS"].as<std::string>("0")))
        << name;
  }
  // Calls spread round robin over every pod a service's clients dial: its
  // Service is headless (a ClusterIP would take each client's one connection
  // to one pod).
  for (const auto& [flag, target] : kAddressFlags) {
    EXPECT_EQ(Get("Service", target)["spec"]["clusterIP"].as<std::string>(""), "None")
        << "Service " << target << " (--" << flag << ") must be headless";
  }
  for (const auto& name : kServices) {
    const auto flags = Settings(WorkloadPod(name)["spec"]["containers"][0]);
    ExpectAddressesResolve(name, flags, endpoints,
                           [&](const std::string& host) { return Defined(host); });
  }
}

// The scheduler's replicas serve together (issue 9): a StatefulSet, for the
// stable pod names its clients list one by one, governed by a headless
// Service that gives each pod its name; a disruption budget keeps one
// serving; and they read PostgreSQL with the gateway's login.
TEST_P(KubernetesTest, RunsSchedulerReplicasThatEveryClientLists) {
  const YAML::Node sts = Get("StatefulSet", "tenant-scheduler");
  ASSERT_TRUE(sts) << "the scheduler needs stable pod names: a StatefulSet";
  // dev runs one of everything; elsewhere one scheduler would leave nothing
  // to take over when it stops.
  EXPECT_EQ(sts["spec"]["replicas"].as<int>(1) >= 2, prod())
      << "tenant-scheduler runs " << sts["spec"]["replicas"].as<int>(1) << " replicas";
  EXPECT_EQ(sts["spec"]["serviceName"].as<std::string>(""), "tenant-scheduler");
  const YAML::Node service = Get("Service", "tenant-scheduler");
  ASSERT_TRUE(service);
  EXPECT_EQ(service["spec"]["clusterIP"].as<std::string>(""), "None")
      << "pods get their own DNS names only under a headless Service";
  // Every workload that dials the scheduler lists every replica (the other
  // test checks the services' own flags; this one every workload of the files).
  const int port = std::stoi(FlagArgs(Strings(sts["spec"]["template"]["spec"]["containers"][0]["args"])).at("grpc_port"));
  const std::set<std::string> replicas = Endpoints("tenant-scheduler", port);
  EXPECT_EQ(replicas.size(), static_cast<size_t>(sts["spec"]["replicas"].as<int>(1)));
  std::set<std::string> clients;
  for (const auto& [key, obj] : objects_) {
    if (!absl::StartsWith(key, "Deployment/") && !absl::StartsWith(key, "StatefulSet/")) continue;
    const auto flags = Settings(obj["spec"]["template"]["spec"]["containers"][0]);
    if (!flags.count("scheduler_address")) continue;
    clients.insert(obj["metadata"]["name"].as<std::string>());
    const std::vector<std::string> got = absl::StrSplit(flags.at("scheduler_address"), ',');
    EXPECT_EQ(std::set<std::string>(got.begin(), got.end()), replicas)
        << key << " --scheduler_address does not list every replica";
  }
  EXPECT_EQ(clients, (std::set<std::string>{"chat", "gateway", "inference-worker"}));
  // PostgreSQL: the same Secret and key as the gateway's --pg.
  auto pg = [&](const std::string& name) {
    for (const auto& e : WorkloadPod(name)["spec"]["containers"][0]["env"]) {
      if (e["name"].as<std::string>() != "SWITCHBOARD_PG") continue;
      const YAML::Node ref = e["valueFrom"]["secretKeyRef"];
      return ref["name"].as<std::string>("") + "/" + ref["key"].as<std::string>("");
    }
    return std::string();
  };
  EXPECT_FALSE(pg("gateway").empty());
  EXPECT_EQ(pg("tenant-scheduler"), pg("gateway")) << "the scheduler must read the gateway's database";
  bool pdb = false;
  for (const auto& [key, obj] : objects_) {
    pdb |= absl::StartsWith(key, "PodDisruptionBudget/") &&
           obj["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"].as<std::string>("") ==
               "tenant-scheduler";
  }
  EXPECT_EQ(pdb, prod()) << (prod()
                                 ? "no PodDisruptionBudget keeps a scheduler replica serving"
                                 : "a PodDisruptionBudget over dev's one scheduler blocks drains");
}

// Where the image has the migrations: deploy/Dockerfile installs the build
// under this prefix, tools/CMakeLists.txt the migrations under this directory
// of it (sbadmin's default is the source tree's, which the image lacks).
constexpr char kImagePrefix[] = "/opt/switchboard";
constexpr char kMigrationsDestination[] = "share/switchboard/migrations";

// The migrations run in an init container of every workload that reads
// PostgreSQL, not in a Job: a Job's pod template is immutable, so applying a
// new image to it fails, and nothing would make the services wait for it. The
// init container runs the service's image and database (so its pods migrate
// what that image ships before the service starts, and retry until
// PostgreSQL answers); `sbadmin migrate` takes an advisory lock and skips
// applied migrations, so every pod may run it. The Jobs left (dev's topics)
// delete themselves once finished, so the next apply creates them afresh.
TEST_P(KubernetesTest, PostgresReadersMigrateFirstInAnInitContainer) {
  EXPECT_TRUE(absl::StrContains(ReadFile(Infra::SourceDir() + "/deploy/Dockerfile"),
                                std::string("--prefix ") + kImagePrefix));
  EXPECT_TRUE(absl::StrContains(ReadFile(Infra::SourceDir() + "/tools/CMakeLists.txt"),
                                std::string("DESTINATION ") + kMigrationsDestination));
  const std::string image_migrations = std::string(kImagePrefix) + "/" + kMigrationsDestination;
  // The Secret and key a container reads SWITCHBOARD_PG from, "" if none.
  auto pg = [](const YAML::Node& c) {
    for (const auto& e : c["env"]) {
      if (e["name"].as<std::string>("") != "SWITCHBOARD_PG") continue;
      const YAML::Node ref = Dig(e, {"valueFrom", "secretKeyRef"});
      return ref["name"].as<std::string>("") + "/" + ref["key"].as<std::string>("");
    }
    return std::string();
  };
  std::set<std::string> readers;
  for (const auto& name : kServices) {
    const YAML::Node w = Workload(name);
    ASSERT_TRUE(w) << name;
    const std::string key = w["kind"].as<std::string>() + "/" + name;
    const YAML::Node spec = w["spec"]["template"]["spec"];
    const YAML::Node main = spec["containers"][0];
    const bool reads = !pg(main).empty() || FlagArgs(Strings(main["args"])).count("pg");
    if (reads) readers.insert(name);
    YAML::Node migrate(YAML::NodeType::Undefined);
    for (const auto& c : spec["initContainers"]) {
      if (c["name"].as<std::string>("") == "migrate") migrate.reset(c);
    }
    if (!reads) {
      EXPECT_FALSE(migrate.IsDefined()) << key << " reads no PostgreSQL but migrates it";
      continue;
    }
    ASSERT_TRUE(migrate.IsDefined()) << key << " reads PostgreSQL: it needs an init container "
                                     << "migrate (sbadmin migrate) so it starts on its schema";
    // A sidecar (restartPolicy: Always) would not hold the service back.
    EXPECT_FALSE(migrate["restartPolicy"]) << key << ": migrate must run to completion first";
    EXPECT_EQ(migrate["image"].as<std::string>(""), main["image"].as<std::string>(""))
        << key << ": migrate must run the service's own image (its migrations)";
    EXPECT_EQ(Strings(migrate["command"]), std::vector<std::string>{"sbadmin"}) << key;
    const std::vector<std::string> args = Strings(migrate["args"]);
    std::vector<std::string> words;
    for (const auto& a : args) {
      if (!absl::StartsWith(a, "-")) words.push_back(a);
    }
    EXPECT_EQ(words, std::vector<std::string>{"migrate"})
        << key << ": " << absl::StrJoin(args, " ");
    const auto flags = FlagArgs(args);
    ExpectFlagsAccepted("sbadmin", flags, key + "/migrate");
    for (const auto& e : migrate["env"]) {
      ExpectEnvAccepted("sbadmin", e["name"].as<std::string>(""), key + "/migrate");
    }
    EXPECT_EQ(flags.count("migrations_dir") ? flags.at("migrations_dir") : "", image_migrations)
        << key << ": --migrations_dir must be where the image has them";
    EXPECT_FALSE(flags.count("pg")) << key << ": migrate sets its own --pg";
    EXPECT_FALSE(pg(main).empty()) << key << " reads PostgreSQL from a flag, not the Secret";
    EXPECT_EQ(pg(migrate), pg(main)) << key << ": migrate must read the service's database";
  }
  EXPECT_EQ(readers,
            (std::set<std::string>{"billing", "chat", "gateway", "safety", "tenant-scheduler"}));

  // No migrations Job, in the base or an overlay; a Job that is left removes
  // itself when done, so the next apply creates it instead of patching it.
  std::set<std::string> jobs;
  for (const auto& [key, obj] : objects_) {
    if (!absl::StartsWith(key, "Job/")) continue;
    jobs.insert(key);
    EXPECT_GT(obj["spec"]["ttlSecondsAfterFinished"].as<int>(0), 0)
        << key << ": without ttlSecondsAfterFinished it stays, and the next apply with a new pod "
        << "template fails (\"field is immutable\")";
  }
  for (const auto& doc : Rendered("base")) {
    EXPECT_NE(doc["kind"].as<std::string>(""), "Job")
        << "the base renders Job/" << doc["metadata"]["name"].as<std::string>("");
  }
  if (prod()) {
    EXPECT_TRUE(jobs.empty()) << absl::StrJoin(jobs, ", ");
    return;
  }
  EXPECT_EQ(jobs, std::set<std::string>{"Job/kafka-topics"});
  // Re-running it leaves existing topics alone.
  const YAML::Node topics = Pod("Job", "kafka-topics")["spec"]["containers"][0];
  const std::string script = absl::StrJoin(Strings(topics["args"]), " ");
  EXPECT_TRUE(absl::StrContains(script, "--create") && absl::StrContains(script, "--if-not-exists"))
      << script;
}

TEST_P(KubernetesTest, ScalingObjectsReferToRealThings) {
  int hpas = 0, pdbs = 0;
  for (const auto& [key, obj] : objects_) {
    if (absl::StartsWith(key, "HorizontalPodAutoscaler/") ||
        absl::StartsWith(key, "ScaledObject/")) {
      ++hpas;
      EXPECT_TRUE(Get("Deployment", obj["spec"]["scaleTargetRef"]["name"].as<std::string>())) << key;
    }
    if (absl::StartsWith(key, "PodDisruptionBudget/")) {
      ++pdbs;
      const std::string target = obj["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"].as<std::string>();
      const YAML::Node d = Workload(target);
      ASSERT_TRUE(d) << key;
      EXPECT_GT(MinReplicas(d), obj["spec"]["minAvailable"].as<int>())
          << key << " would block every voluntary eviction";
    }
  }
  EXPECT_GE(hpas, 1);
  EXPECT_EQ(pdbs >= 1, prod()) << pdbs << " PodDisruptionBudgets";
}

// Every pod template (services, Jobs, datastores) can run in a namespace
// that enforces Pod Security "restricted", on a read-only root, and the
// services' rolling updates send nothing to a closing pod.
TEST_P(KubernetesTest, EveryPodRunsUnderRestrictedPodSecurity) {
  const int drain = DrainSeconds();
  ASSERT_GT(drain, 0);
  std::set<std::string> containers;
  for (const auto& [key, obj] : objects_) {
    if (!PodTemplateOf(obj).IsDefined()) continue;
    ExpectRestrictedPod(key, obj, drain);
    for (const std::string list : {"initContainers", "containers"}) {
      for (const auto& c : Dig(PodTemplateOf(obj), {"spec", list})) {
        containers.insert(key + "/" + c["name"].as<std::string>(""));
      }
    }
  }
  // The seven services and the migrations before four of them; in dev also
  // the topics Job and the three datastores.
  EXPECT_GE(containers.size(), kServices.size() + 4 + (prod() ? 0 : 4));
  if (prod()) return;
  // No exemption outlives its container (the vLLM component's aside).
  for (const auto& [where, why] : kWritableRoot) EXPECT_TRUE(containers.count(where)) << where;
  for (const auto& [where, paths] : kWrites) {
    if (!absl::StartsWith(where, "Deployment/vllm/")) {
      EXPECT_TRUE(containers.count(where)) << where;
    }
  }
}

// The policy check itself: a compliant pod passes, and taking away any one
// setting fails it.
TEST(RestrictedPodPolicyTest, FailsOnAnyMissingSetting) {
  const std::string good = R"(
kind: Deployment
metadata: {name: safety}
spec:
  template:
    spec:
      terminationGracePeriodSeconds: 30
      automountServiceAccountToken: false
      securityContext: {runAsNonRoot: true, runAsUser: 10001, fsGroup: 10001, seccompProfile: {type: RuntimeDefault}}
      containers:
        - name: safety
          readinessProbe: {httpGet: {path: /readyz, port: metrics}}
          livenessProbe: {httpGet: {path: /healthz, port: metrics}}
          resources: {requests: {cpu: 100m, memory: 64Mi}, limits: {memory: 64Mi}}
          lifecycle: {preStop: {exec: {command: [sleep, "5"]}}}
          securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
          volumeMounts: [{name: tmp, mountPath: /tmp}]
      initContainers:
        - name: migrate
          resources: {requests: {cpu: 100m, memory: 64Mi}}
          securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
          volumeMounts: [{name: tmp, mountPath: /tmp}]
      volumes: [{name: tmp, emptyDir: {}}]
)";
  {
    ::testing::TestPartResultArray failures;
    {
      ::testing::ScopedFakeTestPartResultReporter reporter(
          ::testing::ScopedFakeTestPartResultReporter::INTERCEPT_ONLY_CURRENT_THREAD, &failures);
      ExpectRestrictedPod("Deployment/safety", YAML::Load(good), 20);
    }
    EXPECT_EQ(failures.size(), 0) << (failures.size() ? failures.GetTestPartResult(0).message()
                                                      : "");
  }
  // Each edit breaks one rule.
  const std::vector<std::pair<std::string, std::string>> breaks = {
      {"automountServiceAccountToken: false", "automountServiceAccountToken: true"},
      {"runAsNonRoot: true, ", ""},
      {"runAsUser: 10001, ", ""},
      {", seccompProfile: {type: RuntimeDefault}", ""},
      {"fsGroup: 10001, ", ""},
      {"allowPrivilegeEscalation: false, ", ""},
      {"readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false"},
      {"capabilities: {drop: [ALL]}", "capabilities: {drop: [NET_RAW]}"},
      {"volumeMounts: [{name: tmp, mountPath: /tmp}]", "volumeMounts: []"},
      {"lifecycle: {preStop: {exec: {command: [sleep, \"5\"]}}}", "lifecycle: {}"},
      {"terminationGracePeriodSeconds: 30", "terminationGracePeriodSeconds: 25"},
      {"livenessProbe:", "notAProbe:"},
      {", limits: {memory: 64Mi}", ""},
      // The init container is held to the same rules, and takes no probe.
      {"{cpu: 100m, memory: 64Mi}}\n          securityContext: {allowPrivilegeEscalation: false, ",
       "{cpu: 100m, memory: 64Mi}}\n          securityContext: {"},
      {"- name: migrate\n",
       "- name: migrate\n          readinessProbe: {exec: {command: [true]}}\n"},
  };
  for (const auto& [from, to] : breaks) {
    std::string bad = good;
    ASSERT_NE(bad.find(from), std::string::npos) << from;
    bad.replace(bad.find(from), from.size(), to);
    ::testing::TestPartResultArray failures;
    {
      ::testing::ScopedFakeTestPartResultReporter reporter(
          ::testing::ScopedFakeTestPartResultReporter::INTERCEPT_ONLY_CURRENT_THREAD, &failures);
      ExpectRestrictedPod("Deployment/safety", YAML::Load(bad), 20);
    }
    EXPECT_GT(failures.size(), 0) << "not caught: " << from << " -> " << to;
  }
}

// Every workload that runs more than one replica has a disruption budget
// selecting its pods (safety fails closed: losing every replica at once
// refuses every request), and an HPA's Deployment leaves the count to it: a
// replicas field would reset the count on every apply.
TEST_P(KubernetesTest, MultiReplicaWorkloadsHaveDisruptionBudgetsAndHpasOwnTheirCount) {
  for (const auto& [key, hpa] : objects_) {
    if (!absl::StartsWith(key, "HorizontalPodAutoscaler/")) continue;
    const YAML::Node ref = hpa["spec"]["scaleTargetRef"];
    const YAML::Node target = Get(ref["kind"].as<std::string>(""), ref["name"].as<std::string>(""));
    ASSERT_TRUE(target.IsMap()) << key << " scales nothing";
    EXPECT_FALSE(target["spec"]["replicas"])
        << key << ": its target sets replicas, which fights the HPA";
  }
  int multi = 0;
  for (const auto& [key, w] : objects_) {
    if (!absl::StartsWith(key, "Deployment/") && !absl::StartsWith(key, "StatefulSet/")) continue;
    const int replicas = MinReplicas(w);
    if (replicas <= 1) continue;
    ++multi;
    const YAML::Node labels = w["spec"]["template"]["metadata"]["labels"];
    std::vector<std::string> budgets;
    for (const auto& [pkey, pdb] : objects_) {
      if (!absl::StartsWith(pkey, "PodDisruptionBudget/")) continue;
      const YAML::Node sel = pdb["spec"]["selector"];
      if (!sel["matchLabels"].IsMap() || sel["matchLabels"].size() == 0 || sel["matchExpressions"])
        continue;
      bool selects = true;
      for (const auto& kv : sel["matchLabels"]) {
        selects &= labels[kv.first.as<std::string>()].as<std::string>("\x01") ==
                   kv.second.as<std::string>();
      }
      if (!selects) continue;
      budgets.push_back(pkey);
      // Still lets a node drain one pod at a time.
      if (pdb["spec"]["minAvailable"]) {
        EXPECT_LT(pdb["spec"]["minAvailable"].as<int>(), replicas)
            << pkey << " blocks every eviction of " << key;
      } else {
        EXPECT_GE(pdb["spec"]["maxUnavailable"].as<int>(0), 1)
            << pkey << " blocks every eviction of " << key;
      }
    }
    EXPECT_EQ(budgets.size(), 1u) << key << " runs " << replicas << " replicas with "
                                  << (budgets.empty() ? "no" : absl::StrJoin(budgets, ", "))
                                  << " PodDisruptionBudget (want exactly one)";
  }
  if (prod()) {
    EXPECT_GE(multi, 6)
        << "gateway, chat, connection-manager, safety, tenant-scheduler, inference-worker";
  } else {
    EXPECT_EQ(multi, 0) << "dev runs one replica of everything";
  }
}

// The datastores keep their data on their claims, and PostgreSQL reports
// ready only over TCP (as in compose).
TEST_P(KubernetesTest, DatastoresKeepDataOnTheirClaimsAndPostgresIsReadyOverTcp) {
  if (prod()) GTEST_SKIP() << "prod runs no datastore";
  auto on_claim = [&](const YAML::Node& sts, const std::string& dir) {
    std::set<std::string> claims;
    for (const auto& t : sts["spec"]["volumeClaimTemplates"])
      claims.insert(t["metadata"]["name"].as<std::string>());
    for (const auto& m : sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]) {
      if (claims.count(m["name"].as<std::string>()) && Under(dir, m["mountPath"].as<std::string>()))
        return true;
    }
    return false;
  };
  auto env = [](const YAML::Node& c, const std::string& name) {
    for (const auto& e : c["env"]) {
      if (e["name"].as<std::string>() == name) return e["value"].as<std::string>("");
    }
    return std::string();
  };
  const YAML::Node kafka = Get("StatefulSet", "kafka");
  ASSERT_TRUE(kafka.IsMap());
  const std::string dirs =
      env(kafka["spec"]["template"]["spec"]["containers"][0], "KAFKA_LOG_DIRS");
  ASSERT_FALSE(dirs.empty()) << "KAFKA_LOG_DIRS is unset: the image keeps the logs under /tmp";
  for (absl::string_view d : absl::StrSplit(dirs, ',')) {
    EXPECT_TRUE(on_claim(kafka, std::string(d))) << "Kafka log dir " << d << " is not on its claim";
  }
  const YAML::Node pg = Get("StatefulSet", "postgres");
  ASSERT_TRUE(pg.IsMap());
  const YAML::Node c = pg["spec"]["template"]["spec"]["containers"][0];
  EXPECT_TRUE(on_claim(pg, env(c, "PGDATA"))) << "PGDATA is not on the claim";
  EXPECT_TRUE(PgIsReadyOverTcp(Strings(Dig(c, {"readinessProbe", "exec", "command"}))))
      << "PostgreSQL's readiness must ask over TCP (pg_isready -h 127.0.0.1)";
}

// Both overlays render (dev on the copy with make-secrets' files: its
// secretGenerator needs them), every Secret and ConfigMap a pod reads is in
// the render (dev needs nothing beyond make-secrets) or, in prod, is one the
// operator creates (its example), and everything lands in the namespace.
TEST_P(KubernetesTest, RendersEverythingItsPodsReadInItsNamespace) {
  std::set<std::string> rendered;
  for (const auto& [key, obj] : objects_) rendered.insert(key);
  auto provided = [&](const std::string& kind, const std::string& name) {
    if (rendered.count(kind + "/" + name)) return true;
    // prod: the operator's, as datastores.example.yaml and README list them.
    return prod() && (operator_.count(kind + "/" + name) ||
                      (kind == "Secret" && absl::StartsWith(name, "switchboard-tls-")));
  };
  int workloads = 0;
  for (const auto& [key, d] : objects_) {
    if (PodTemplateOf(d).IsDefined()) {
      ++workloads;
      const YAML::Node pod = PodTemplateOf(d)["spec"];
      for (const auto& v : pod["volumes"]) {
        if (v["secret"]) {
          EXPECT_TRUE(provided("Secret", v["secret"]["secretName"].as<std::string>())) << key;
        }
      }
      for (const std::string list : {"initContainers", "containers"}) {
        for (const auto& c : pod[list]) {
          for (const auto& e : c["env"]) {
            if (const YAML::Node r = Dig(e, {"valueFrom", "secretKeyRef"})) {
              EXPECT_TRUE(provided("Secret", r["name"].as<std::string>())) << key << ": " << e;
            }
            if (const YAML::Node r = Dig(e, {"valueFrom", "configMapKeyRef"})) {
              const YAML::Node cm = Provided("ConfigMap", r["name"].as<std::string>());
              EXPECT_TRUE(cm.IsMap() && cm["data"][r["key"].as<std::string>()]) << key << ": " << e;
            }
          }
          for (const auto& from : c["envFrom"]) {
            if (from["secretRef"]) {
              EXPECT_TRUE(provided("Secret", from["secretRef"]["name"].as<std::string>())) << key;
            }
            if (from["configMapRef"]) {
              EXPECT_TRUE(provided("ConfigMap", from["configMapRef"]["name"].as<std::string>()))
                  << key;
            }
          }
        }
      }
    }
    if (d["kind"].as<std::string>() != "Namespace") {
      EXPECT_EQ(d["metadata"]["namespace"].as<std::string>(""), "switchboard") << key;
    }
  }
  EXPECT_GE(workloads, static_cast<int>(kServices.size()));
  // prod renders no credential: every Secret is the operator's.
  if (prod()) {
    for (const auto& key : rendered) EXPECT_FALSE(absl::StartsWith(key, "Secret/")) << key;
  }
}

// Where each service finds PostgreSQL, Redis and Kafka comes from one place:
// the ConfigMap switchboard-datastores (endpoints, how to log in) and the
// Secrets (the PostgreSQL URI, passwords), read as SWITCHBOARD_* variables.
// No datastore flag in a Deployment, so pointing at managed datastores needs
// no patch of any Deployment. prod renders no datastore at all.
TEST_P(KubernetesTest, DatastoreSettingsComeFromOneConfigMapAndTheSecrets) {
  std::map<std::string, std::string> from;  // variable -> "ConfigMap/name" or "Secret/name"
  // The services' containers and their init containers (the migrations).
  std::vector<std::pair<std::string, YAML::Node>> containers;
  for (const auto& svc : kServices) {
    for (const std::string list : {"initContainers", "containers"}) {
      for (const auto& c : WorkloadPod(svc)["spec"][list]) {
        containers.emplace_back(
            list == "containers" ? svc : svc + "/" + c["name"].as<std::string>(""), c);
      }
    }
  }
  for (const auto& [name, c] : containers) {
    for (const auto& [flag, value] : FlagArgs(Strings(c["args"]))) {
      EXPECT_FALSE(kDatastoreFlags.count(flag) || flag == "pg")
          << name << " sets --" << flag << " in its Deployment: read SWITCHBOARD_"
          << absl::AsciiStrToUpper(flag) << " from switchboard-datastores";
    }
    for (const auto& e : c["env"]) {
      const std::string var = e["name"].as<std::string>("");
      const std::string flag =
          absl::AsciiStrToLower(var.substr(std::min(var.size(), strlen("SWITCHBOARD_"))));
      if (kDatastoreFlags.count(flag)) {
        EXPECT_EQ(Dig(e, {"valueFrom", "configMapKeyRef", "name"}).as<std::string>(""),
                  "switchboard-datastores")
            << name << " " << var;
      }
      if (var == "SWITCHBOARD_PG") {
        EXPECT_EQ(Dig(e, {"valueFrom", "secretKeyRef", "name"}).as<std::string>(""),
                  "switchboard-db")
            << name << " " << var;
      }
    }
  }
  // Every key the base reads is one the datastores' ConfigMap has (dev's
  // render; prod's example for the operator).
  const YAML::Node cm = Provided("ConfigMap", "switchboard-datastores");
  ASSERT_TRUE(cm.IsMap()) << "no ConfigMap switchboard-datastores";
  for (const auto& flag : kDatastoreFlags) {
    EXPECT_TRUE(cm["data"]["SWITCHBOARD_" + absl::AsciiStrToUpper(flag)])
        << "switchboard-datastores lacks " << flag;
  }
  if (!prod()) return;
  EXPECT_FALSE(Get("ConfigMap", "switchboard-datastores"))
      << "prod must use the operator's ConfigMap";
  for (const auto& [key, obj] : objects_) {
    if (!absl::StartsWith(key, "Deployment/") && !absl::StartsWith(key, "StatefulSet/")) continue;
    const std::string name = obj["metadata"]["name"].as<std::string>("");
    EXPECT_TRUE(std::find(kServices.begin(), kServices.end(), name) != kServices.end())
        << key << ": prod runs no in-cluster datastore (or anything but the services)";
  }
  for (const std::string ds : {"postgres", "redis", "kafka"}) {
    EXPECT_FALSE(Get("Service", ds)) << "prod defines a Service " << ds;
  }
}

// prod runs exactly the image it was given (by digest, not a tag that can be
// re-pushed), and every multi-replica workload spreads over nodes (required)
// and zones, selecting its own pods.
TEST_P(KubernetesTest, ProdPinsImagesByDigestAndSpreadsReplicas) {
  if (!prod()) GTEST_SKIP() << "dev runs switchboard:dev on one node";
  static const std::regex kDigest(R"(^[^@:]+(:[0-9]+)?/[^@]+@sha256:[0-9a-f]{64}$)");
  for (const auto& [key, obj] : objects_) {
    if (!PodTemplateOf(obj).IsDefined()) continue;
    for (const std::string list : {"initContainers", "containers"}) {
      for (const auto& c : Dig(PodTemplateOf(obj), {"spec", list})) {
        const std::string image = c["image"].as<std::string>("");
        EXPECT_TRUE(std::regex_match(image, kDigest))
            << key << "/" << c["name"].as<std::string>("") << " runs " << image
            << ", not REGISTRY/NAME@sha256:DIGEST";
      }
    }
  }
  for (const auto& [key, w] : objects_) {
    if (!absl::StartsWith(key, "Deployment/") && !absl::StartsWith(key, "StatefulSet/")) continue;
    if (MinReplicas(w) <= 1) continue;
    const std::string app =
        w["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"].as<std::string>("");
    std::map<std::string, std::string> spread;  // topology key -> whenUnsatisfiable
    for (const auto& t : w["spec"]["template"]["spec"]["topologySpreadConstraints"]) {
      EXPECT_EQ(t["labelSelector"]["matchLabels"]["app.kubernetes.io/name"].as<std::string>(""),
                app)
          << key << " spreads another workload's pods";
      EXPECT_EQ(t["maxSkew"].as<int>(0), 1) << key;
      spread[t["topologyKey"].as<std::string>("")] = t["whenUnsatisfiable"].as<std::string>("");
    }
    EXPECT_EQ(spread["kubernetes.io/hostname"], "DoNotSchedule")
        << key << ": replicas may share a node";
    EXPECT_TRUE(spread.count("topology.kubernetes.io/zone")) << key << ": not spread over zones";
  }
}

// Every optional component renders when an overlay adds it, and what it adds
// holds to the same rules: restricted pods, flags the binaries accept,
// NetworkPolicies for its pods. components/vllm-workers: a worker with the
// openai engine whose upstream is the vLLM Service, which requests a GPU and
// admits only that worker; the scheduler admits the worker.
TEST(KustomizeTest, EveryComponentRendersInEveryOverlay) {
  if (!HaveKubectl()) GTEST_SKIP() << "kubectl is not installed";
  ASSERT_FALSE(GeneratedDeploy().empty());
  std::string list;
  ASSERT_EQ(RunCommand({"ls", GeneratedDeploy() + "/k8s/components"}, &list), 0) << list;
  const std::vector<std::string> components = absl::StrSplit(list, '\n', absl::SkipEmpty());
  EXPECT_GE(components.size(), 2u) << list;
  for (const auto& overlay : kOverlays) {
    const YAML::Node own = YAML::LoadFile(GeneratedDeploy() + "/k8s/overlays/" + overlay +
                                          "/kustomization.yaml")["components"];
    for (const auto& component : components) {
      SCOPED_TRACE(overlay + " + " + component);
      bool included = false;  // prod has observability already: rendered as itself
      for (const auto& c : own)
        included |= c.as<std::string>("") == "../../components/" + component;
      if (included) continue;
      const std::string dir = "overlays/" + overlay + "-with-" + component;
      std::string out;
      ASSERT_EQ(RunCommand({"sh", "-c",
                            "mkdir -p " + GeneratedDeploy() + "/k8s/" + dir +
                                " && printf 'resources: [../" + overlay +
                                "]\\ncomponents: [../../components/" + component + "]\\n' > " +
                                GeneratedDeploy() + "/k8s/" + dir + "/kustomization.yaml"},
                           &out),
                0)
          << out;
      std::map<std::string, YAML::Node> objects;
      int drain = 0;
      for (const auto& d : Rendered(dir)) {
        objects[d["kind"].as<std::string>() + "/" + d["metadata"]["name"].as<std::string>()] = d;
        if (d["metadata"]["name"].as<std::string>() == "switchboard-common") {
          drain = std::stoi(d["data"]["SWITCHBOARD_DRAIN_SECONDS"].as<std::string>("0"));
        }
      }
      ASSERT_GT(drain, 0);
      std::set<std::string> selected;
      for (const auto& [key, o] : objects) {
        if (absl::StartsWith(key, "NetworkPolicy/")) {
          selected.insert(Dig(o, {"spec", "podSelector", "matchLabels", "app.kubernetes.io/name"})
                              .as<std::string>(""));
        }
      }
      for (const auto& [key, o] : objects) {
        if (!PodTemplateOf(o).IsDefined()) continue;
        ExpectRestrictedPod(key, o, drain);
        const YAML::Node c = PodTemplateOf(o)["spec"]["containers"][0];
        const auto command = Strings(c["command"]);
        if (!command.empty() &&
            std::find(kServices.begin(), kServices.end(), command[0]) != kServices.end()) {
          ExpectFlagsAccepted(command[0], FlagArgs(Strings(c["args"])), key);
          ExpectMutualTls(key, FlagArgs(Strings(c["args"])));
        }
        if (o["kind"].as<std::string>() != "Job") {
          EXPECT_TRUE(selected.count(
              PodTemplateOf(o)["metadata"]["labels"]["app.kubernetes.io/name"].as<std::string>("")))
              << key << " has no NetworkPolicy";
        }
      }
      if (component != "vllm-workers") continue;
      const YAML::Node worker = objects["Deployment/inference-worker-vllm"];
      ASSERT_TRUE(worker.IsMap());
      const auto flags =
          FlagArgs(Strings(worker["spec"]["template"]["spec"]["containers"][0]["args"]));
      EXPECT_EQ(flags.count("engine") ? flags.at("engine") : "", "openai");
      ASSERT_TRUE(flags.count("upstream_url"));
      const std::regex url(R"(^http://([a-z0-9-]+):([0-9]+)/v1$)");
      std::smatch m;
      ASSERT_TRUE(std::regex_match(flags.at("upstream_url"), m, url)) << flags.at("upstream_url");
      const YAML::Node svc = objects["Service/" + m[1].str()];
      ASSERT_TRUE(svc.IsMap()) << "--upstream_url names no Service: " << m[1];
      bool port = false;
      for (const auto& p : svc["spec"]["ports"])
        port |= p["port"].as<int>() == std::stoi(m[2].str());
      EXPECT_TRUE(port) << "Service " << m[1] << " has no port " << m[2];
      const YAML::Node vllm =
          objects["Deployment/" + m[1].str()]["spec"]["template"]["spec"]["containers"][0];
      EXPECT_TRUE(absl::StartsWith(vllm["image"].as<std::string>(""), "vllm/vllm-openai"))
          << vllm["image"];
      EXPECT_EQ(Dig(vllm, {"resources", "limits", "nvidia.com/gpu"}).as<int>(0), 1)
          << "vLLM needs its GPU";
      // The worker's callers reach it, it reaches the scheduler, and only it reaches vLLM.
      auto admits = [&](const std::string& policy, const std::string& app) {
        for (const auto& rule : objects["NetworkPolicy/" + policy]["spec"]["ingress"]) {
          if (Sources(rule).count(app)) return true;
        }
        return false;
      };
      EXPECT_TRUE(admits("tenant-scheduler", "inference-worker-vllm"));
      EXPECT_TRUE(admits("inference-worker-vllm", "tenant-scheduler"));
      EXPECT_TRUE(admits("inference-worker-vllm", "gateway"));
      EXPECT_TRUE(admits("vllm", "inference-worker-vllm"));
      EXPECT_FALSE(admits("vllm", "gateway"));
      if (overlay == "dev") {
        EXPECT_TRUE(admits("kafka", "inference-worker-vllm"));
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Key material

TEST(KeyMaterialTest, NoneIsCommittedAndTheGeneratedFilesAreIgnored) {
  const std::string src = Infra::SourceDir();
  std::string files;
  if (RunCommand({"git", "-C", src, "ls-files"}, &files) != 0) {
    GTEST_SKIP() << "not a git checkout: " << files;
  }
  // A PEM private key of any type (plain, EC, RSA, encrypted): a BEGIN line
  // naming a private key. The markers are assembled so this file does not match.
  const std::string begin = "-----" + std::string("BEGIN "), tag = std::string("PRIVATE") + " KEY-----";
  auto has_private_key = [&](const std::string& text) {
    for (size_t at = text.find(begin); at != std::string::npos; at = text.find(begin, at + 1)) {
      const size_t end = text.find('\n', at);
      if (absl::StrContains(text.substr(at, end == std::string::npos ? std::string::npos : end - at), tag)) {
        return true;
      }
    }
    return false;
  };
  for (absl::string_view f : absl::StrSplit(files, '\n', absl::SkipEmpty())) {
    const std::string path(f);
    EXPECT_FALSE(absl::EndsWith(path, ".key") || absl::StartsWith(path, "deploy/.tls") ||
                 absl::StartsWith(path, "deploy/.secrets/") ||
                 absl::StartsWith(path, "deploy/k8s/secrets/") ||
                 absl::StartsWith(path, "deploy/k8s/overlays/dev/secrets/"))
        << "committed key material: " << path;
    EXPECT_FALSE(has_private_key(ReadFile(src + "/" + path)))
        << "committed private key in " << path << " (generate it at run time, e.g. with tools/certs)";
  }
  // What deploy/make-secrets writes stays out of git.
  for (const std::string p :
       {"deploy/.tls/gateway.key", "deploy/.tls/ca.key", "deploy/.secrets/redis.env",
        "deploy/.secrets/kafka_server_jaas.conf", "deploy/.tls-k8s/ca.key",
        "deploy/k8s/overlays/dev/secrets/tls/chat.key",
        "deploy/k8s/overlays/dev/secrets/redis-password"}) {
    std::string out;
    EXPECT_EQ(RunCommand({"git", "-C", src, "check-ignore", "-q", "--no-index", p}, &out), 0)
        << p << " is not gitignored";
  }
}

}  // namespace
}  // namespace sb::testing
