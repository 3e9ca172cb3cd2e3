// The SLO rules (issue 12): deploy/prometheus/rules.yml is valid and its
// alerts fire, and do not, as deploy/prometheus/rules_test.yml says (promtool,
// Debian's prometheus package); every metric it reads is one a service
// exports; and the observability component renders, wrapping exactly those
// rules for the Prometheus Operator.
#include <stdlib.h>
#include <yaml-cpp/yaml.h>

#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "support/infra.h"
#include "support/process.h"

namespace sb::testing {
namespace {

std::string Rules() { return Infra::SourceDir() + "/deploy/prometheus/rules.yml"; }

void RequirePromtool() {
  std::string out;
  ASSERT_EQ(RunCommand({"sh", "-c", "command -v promtool"}, &out), 0)
      << "promtool is missing: tools/setup installs Debian's prometheus package";
}

TEST(SloRulesTest, PromtoolFindsThemValid) {
  RequirePromtool();
  std::string out;
  EXPECT_EQ(RunCommand({"promtool", "check", "rules", Rules()}, &out), 0) << out;
}

TEST(SloRulesTest, AlertsFireAndStaySilentAsTheUnitTestsSay) {
  RequirePromtool();
  std::string out;
  EXPECT_EQ(RunCommand({"promtool", "test", "rules",
                        Infra::SourceDir() + "/deploy/prometheus/rules_test.yml"},
                       &out),
            0)
      << out;
}

// The metrics a PromQL expression reads (sb_* and the worker's vllm:*
// names, without histogram suffixes); recorded series (a:b:c) left out.
void MetricsIn(const std::string& expr, std::set<std::string>& names) {
  const std::regex metric(R"((^|[^:a-z_])((sb_|vllm:)[a-z_]+))");
  for (std::sregex_iterator it(expr.begin(), expr.end(), metric), end; it != end; ++it) {
    std::string name = (*it)[2];
    for (const char* suffix : {"_bucket", "_count", "_sum"}) {
      if (absl::EndsWith(name, suffix)) name.resize(name.size() - std::string(suffix).size());
    }
    names.insert(name);
  }
}

// Every metric in `names` is registered somewhere in the services' code.
void ExpectExported(const std::set<std::string>& names, const std::string& reader) {
  for (const auto& name : names) {
    std::string out;
    EXPECT_EQ(RunCommand({"grep", "-rqF", "--include=*.cc", "\"" + name + "\"",
                          Infra::SourceDir() + "/services", Infra::SourceDir() + "/libs"},
                         &out),
              0)
        << name << " is read by " << reader << " but no service registers it";
  }
}

// A renamed metric would leave an alert that can never fire: every series a
// rule reads must be registered somewhere in the services' code.
TEST(SloRulesTest, EveryMetricTheyReadIsOneAServiceExports) {
  const YAML::Node rules = YAML::LoadFile(Rules());
  std::set<std::string> names;
  for (const auto& group : rules["groups"]) {
    for (const auto& rule : group["rules"]) MetricsIn(rule["expr"].as<std::string>(), names);
  }
  ASSERT_GE(names.size(), 8u) << absl::StrJoin(names, " ");
  ExpectExported(names, "a rule");
}

// The Grafana dashboards: JSON Grafana takes (uid, title, panels with
// PromQL targets), reading only metrics a service exports or the rules
// record.
TEST(DashboardsTest, EveryPanelReadsWhatIsExportedOrRecorded) {
  const std::string dir = Infra::SourceDir() + "/deploy/k8s/components/observability/dashboards";
  std::set<std::string> recorded;
  for (const auto& group : YAML::LoadFile(Rules())["groups"]) {
    for (const auto& rule : group["rules"]) {
      if (rule["record"]) recorded.insert(rule["record"].as<std::string>());
    }
  }
  std::set<std::string> uids;
  for (const std::string name : {"overview", "serving", "tenants", "billing"}) {
    // JSON is YAML: yaml-cpp reads it.
    const YAML::Node d = YAML::LoadFile(dir + "/" + name + ".json");
    EXPECT_FALSE(d["uid"].as<std::string>("").empty()) << name;
    EXPECT_TRUE(uids.insert(d["uid"].as<std::string>("")).second) << name << ": uid taken";
    EXPECT_FALSE(d["title"].as<std::string>("").empty()) << name;
    ASSERT_GE(d["panels"].size(), 4u) << name;
    std::set<std::string> names;
    for (const auto& panel : d["panels"]) {
      ASSERT_GE(panel["targets"].size(), 1u) << name << ": " << panel["title"];
      for (const auto& t : panel["targets"]) {
        const std::string expr = t["expr"].as<std::string>("");
        EXPECT_FALSE(expr.empty()) << name << ": " << panel["title"];
        MetricsIn(expr, names);
        const std::regex record(R"([a-z_]+:[a-z_]+:[a-z0-9_]+)");
        for (std::sregex_iterator it(expr.begin(), expr.end(), record), end; it != end; ++it) {
          if (absl::StartsWith(it->str(), "vllm:")) continue;
          EXPECT_TRUE(recorded.count(it->str()))
              << name << " reads " << it->str() << ", which no rule records";
        }
      }
    }
    ExpectExported(names, "dashboard " + name);
  }
}

// Structural equality of two YAML trees (scalars as text).
bool Same(const YAML::Node& a, const YAML::Node& b) {
  if (a.Type() != b.Type()) return false;
  if (a.IsScalar()) return a.Scalar() == b.Scalar();
  if (a.IsSequence()) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i) {
      if (!Same(a[i], b[i])) return false;
    }
    return true;
  }
  if (a.IsMap()) {
    if (a.size() != b.size()) return false;
    for (const auto& kv : a) {
      const std::string key = kv.first.as<std::string>();
      if (!b[key] || !Same(kv.second, b[key])) return false;
    }
    return true;
  }
  return true;
}

// Rendered as the prod overlay, which includes the component (and needs no
// key material: its Secrets are the operator's).
TEST(ObservabilityComponentTest, RendersTheSloRulesDashboardsAndLoadBasedScaling) {
  std::string out;
  if (RunCommand({"sh", "-c", "command -v kubectl"}, &out) != 0) {
    GTEST_SKIP() << "kubectl is not installed";
  }
  char tmpl[] = "/tmp/sb-observability-test-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string root = tmpl, src = Infra::SourceDir() + "/deploy";
  out.clear();
  ASSERT_EQ(RunCommand({"cp", "-r", src + "/k8s", root + "/"}, &out), 0) << out;
  std::string rendered;
  const int rc = RunCommand({"kubectl", "kustomize", root + "/k8s/overlays/prod"}, &rendered);
  RunCommand({"rm", "-rf", root}, nullptr);
  ASSERT_EQ(rc, 0) << rendered;
  YAML::Node rule, monitor, dashboards;
  std::map<std::string, YAML::Node> scaled, hpas;
  std::set<std::string> deployments;
  for (const auto& d : YAML::LoadAll(rendered)) {
    const std::string kind = d["kind"].as<std::string>("");
    if (kind == "PrometheusRule") rule = d;
    if (kind == "PodMonitor") monitor = d;
    if (kind == "ScaledObject") scaled[d["metadata"]["name"].as<std::string>()] = d;
    if (kind == "HorizontalPodAutoscaler") hpas[d["metadata"]["name"].as<std::string>()] = d;
    if (kind == "Deployment") deployments.insert(d["metadata"]["name"].as<std::string>());
    if (kind == "ConfigMap" &&
        d["metadata"]["name"].as<std::string>("") == "switchboard-dashboards") {
      dashboards = d;
    }
  }
  ASSERT_TRUE(rule.IsMap()) << "no PrometheusRule rendered";
  ASSERT_TRUE(dashboards.IsMap()) << "no dashboards ConfigMap rendered";
  EXPECT_EQ(dashboards["metadata"]["labels"]["grafana_dashboard"].as<std::string>(""), "1");
  EXPECT_EQ(dashboards["data"].size(), 4u);
  ASSERT_TRUE(monitor.IsMap()) << "no PodMonitor rendered";
  EXPECT_EQ(rule["metadata"]["namespace"].as<std::string>(""), "switchboard");
  EXPECT_TRUE(Same(rule["spec"]["groups"], YAML::LoadFile(Rules())["groups"]))
      << "deploy/k8s/components/observability/prometheusrule.yaml differs from "
         "deploy/prometheus/rules.yml: run deploy/prometheus/make-prometheusrule";
  // The gateway and the workers scale on load through KEDA, which makes their
  // HPAs: the CPU ones are gone, and every trigger reads exported metrics.
  for (const std::string name : {"gateway", "inference-worker"}) {
    ASSERT_TRUE(scaled.count(name)) << "no ScaledObject " << name;
    EXPECT_FALSE(hpas.count(name)) << "two autoscalers for " << name;
    const YAML::Node spec = scaled[name]["spec"];
    EXPECT_TRUE(deployments.count(spec["scaleTargetRef"]["name"].as<std::string>(""))) << name;
    EXPECT_GE(spec["minReplicaCount"].as<int>(0), 2) << name;
    EXPECT_GT(spec["maxReplicaCount"].as<int>(0), spec["minReplicaCount"].as<int>(0)) << name;
    std::set<std::string> names;
    ASSERT_GE(spec["triggers"].size(), 1u) << name;
    for (const auto& t : spec["triggers"]) {
      EXPECT_EQ(t["type"].as<std::string>(""), "prometheus") << name;
      EXPECT_GT(std::stod(t["metadata"]["threshold"].as<std::string>("0")), 0) << name;
      MetricsIn(t["metadata"]["query"].as<std::string>(""), names);
    }
    EXPECT_FALSE(names.empty()) << name;
    ExpectExported(names, "ScaledObject " + name);
  }
  // It scrapes every service's metrics port.
  EXPECT_EQ(monitor["spec"]["podMetricsEndpoints"][0]["port"].as<std::string>(""), "metrics");
  std::set<std::string> scraped;
  for (const auto& v : monitor["spec"]["selector"]["matchExpressions"][0]["values"]) {
    scraped.insert(v.as<std::string>());
  }
  EXPECT_EQ(scraped, (std::set<std::string>{"gateway", "chat", "connection-manager", "safety",
                                            "tenant-scheduler", "inference-worker", "billing"}));
}

}  // namespace
}  // namespace sb::testing
