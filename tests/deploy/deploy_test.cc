// No container engine runs on the build machines, so the deploy files are
// checked against the binaries themselves: every service is there, every
// `--flag` and SWITCHBOARD_<FLAG> variable is one its binary accepts (from
// `--helpfull`), every port a flag opens is declared, and every address
// names a service of the same file on that service's gRPC port.
#include <functional>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
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

// The flags that name another service's gRPC endpoint, and whose.
const std::map<std::string, std::string> kAddressFlags = {
    {"safety_address", "safety"},
    {"scheduler_address", "tenant-scheduler"},
    {"chat_address", "chat"},
    {"connection_manager_address", "connection-manager"},
};

// Every address flag names its service on that service's gRPC port, and
// every datastore host is something the same file defines.
void ExpectAddressesResolve(const std::string& name, const std::map<std::string, std::string>& flags,
                            const std::map<std::string, int>& grpc_ports,
                            const std::function<bool(const std::string&)>& defined) {
  for (const auto& [flag, target] : kAddressFlags) {
    if (!flags.count(flag)) continue;
    auto [host, port] = HostPort(flags.at(flag));
    EXPECT_EQ(host, target) << name << " --" << flag;
    EXPECT_EQ(port, grpc_ports.at(target)) << name << " --" << flag;
  }
  for (const std::string flag : {"kafka_brokers", "redis_host"}) {
    if (!flags.count(flag)) continue;
    const std::string host = HostPort(flags.at(flag)).first;
    EXPECT_TRUE(defined(host)) << name << " --" << flag << " names nothing defined: " << host;
  }
}

// The port flags each service sets and must declare.
std::vector<std::string> PortFlags(const std::string& service) {
  if (service == "gateway") return {"http_port", "grpc_port", "metrics_port"};
  return {"grpc_port", "metrics_port"};
}

// ---------------------------------------------------------------------------
// docker-compose

// yaml-cpp does not resolve `<<: *anchor` merges: look there second.
YAML::Node Field(const YAML::Node& map, const std::string& key) {
  if (map[key]) return map[key];
  if (map["<<"] && map["<<"][key]) return map["<<"][key];
  return YAML::Node();
}

class ComposeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = YAML::LoadFile(Infra::SourceDir() + "/deploy/docker-compose.yml");
    services_ = root_["services"];
    ASSERT_TRUE(services_.IsMap());
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
    ExpectAddressesResolve(name, flags, grpc_ports,
                           [&](const std::string& host) { return bool(services_[host]); });
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
  for (const std::string svc : {"gateway", "chat", "billing"}) {
    EXPECT_EQ(Field(services_[svc], "depends_on")["migrate"]["condition"].as<std::string>(""),
              "service_completed_successfully")
        << svc << " must start after the migrations";
  }
}

TEST(ComposeConfigTest, DockerComposeAcceptsTheFile) {
  std::string out;
  ASSERT_EQ(RunCommand({"docker-compose", "-f", Infra::SourceDir() + "/deploy/docker-compose.yml",
                        "config", "-q"},
                       &out),
            0)
      << out;
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

class KubernetesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string dir = Infra::SourceDir() + "/deploy/k8s/";
    const YAML::Node kustomization = YAML::LoadFile(dir + "kustomization.yaml");
    for (const auto& file : Strings(kustomization["resources"])) {
      for (const auto& doc : YAML::LoadAllFromFile(dir + file)) {
        const std::string key =
            doc["kind"].as<std::string>() + "/" + doc["metadata"]["name"].as<std::string>();
        ASSERT_FALSE(objects_.count(key)) << "duplicate " << key;
        objects_[key] = doc;
      }
    }
  }
  YAML::Node Get(const std::string& kind, const std::string& name) {
    auto it = objects_.find(kind + "/" + name);
    return it == objects_.end() ? YAML::Node() : it->second;
  }
  std::map<std::string, YAML::Node> objects_;
};

TEST_F(KubernetesTest, EveryServiceHasADeploymentAndServiceThatAgreeWithItsFlags) {
  const YAML::Node common = Get("ConfigMap", "switchboard-common");
  ASSERT_TRUE(common);
  std::map<std::string, int> grpc_ports;
  for (const auto& name : kServices) {
    const YAML::Node deployment = Get("Deployment", name);
    ASSERT_TRUE(deployment) << "no Deployment " << name;
    const YAML::Node pod = deployment["spec"]["template"]["spec"];
    ASSERT_EQ(pod["containers"].size(), 1u);
    const YAML::Node c = pod["containers"][0];
    EXPECT_EQ(Strings(c["command"]), std::vector<std::string>{name});
    const auto flags = FlagArgs(Strings(c["args"]));
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
    grpc_ports[name] = std::stoi(flags.at("grpc_port"));
    // Probes: readiness is grpc.health.v1 on the gRPC port, liveness /healthz on metrics.
    EXPECT_EQ(c["readinessProbe"]["grpc"]["port"].as<int>(0), grpc_ports[name]) << name;
    EXPECT_EQ(c["livenessProbe"]["httpGet"]["path"].as<std::string>(""), "/healthz") << name;
    EXPECT_EQ(c["livenessProbe"]["httpGet"]["port"].as<std::string>(""), "metrics") << name;
    // The pod outlives the drain.
    EXPECT_GT(pod["terminationGracePeriodSeconds"].as<int>(0),
              std::stoi(common["data"]["SWITCHBOARD_DRAIN_SECONDS"].as<std::string>("0")));
  }
  for (const auto& name : kServices) {
    const auto flags = FlagArgs(Strings(Get("Deployment", name)["spec"]["template"]["spec"]["containers"][0]["args"]));
    ExpectAddressesResolve(name, flags, grpc_ports,
                           [&](const std::string& host) { return bool(Get("Service", host)); });
  }
}

TEST_F(KubernetesTest, MigrationsJobAndScalingObjectsReferToRealThings) {
  const YAML::Node job = Get("Job", "switchboard-migrate");
  ASSERT_TRUE(job);
  const YAML::Node c = job["spec"]["template"]["spec"]["containers"][0];
  EXPECT_EQ(Strings(c["command"]), std::vector<std::string>{"sbadmin"});
  ExpectFlagsAccepted("sbadmin", FlagArgs(Strings(c["args"])), "k8s migrate job");
  for (const auto& e : c["env"]) ExpectEnvAccepted("sbadmin", e["name"].as<std::string>(), "k8s migrate job");

  int hpas = 0, pdbs = 0;
  for (const auto& [key, obj] : objects_) {
    if (absl::StartsWith(key, "HorizontalPodAutoscaler/")) {
      ++hpas;
      EXPECT_TRUE(Get("Deployment", obj["spec"]["scaleTargetRef"]["name"].as<std::string>())) << key;
    }
    if (absl::StartsWith(key, "PodDisruptionBudget/")) {
      ++pdbs;
      const std::string target = obj["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"].as<std::string>();
      const YAML::Node d = Get("Deployment", target);
      ASSERT_TRUE(d) << key;
      EXPECT_GT(d["spec"]["replicas"].as<int>(), obj["spec"]["minAvailable"].as<int>())
          << key << " would block every voluntary eviction";
    }
  }
  EXPECT_GE(hpas, 1);
  EXPECT_GE(pdbs, 1);
}

TEST(KustomizeTest, RendersWithKubectl) {
  std::string which;
  if (RunCommand({"sh", "-c", "command -v kubectl"}, &which) != 0) {
    GTEST_SKIP() << "kubectl is not installed; the manifests were checked file by file above";
  }
  std::string out;
  ASSERT_EQ(RunCommand({"kubectl", "kustomize", Infra::SourceDir() + "/deploy/k8s"}, &out), 0) << out;
  const auto docs = YAML::LoadAll(out);
  int deployments = 0;
  for (const auto& d : docs) {
    if (d["kind"].as<std::string>() == "Deployment") ++deployments;
    if (d["kind"].as<std::string>() != "Namespace") {
      EXPECT_EQ(d["metadata"]["namespace"].as<std::string>(""), "switchboard")
          << d["metadata"]["name"].as<std::string>();
    }
  }
  EXPECT_GE(deployments, static_cast<int>(kServices.size()));
}

}  // namespace
}  // namespace sb::testing
