#include "e2e/cluster.h"

#include <chrono>
#include <fstream>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "core/crypto.h"
#include "http/http_client.h"
#include "sbadmin/admin.h"
#include "switchboard/scheduler/v1/scheduler.grpc.pb.h"

namespace sb::testing {
namespace {

// Workers sign usage events with it and billing verifies them.
std::string UsageKeyFlag(const Infra& infra) {
  return "--usage_signing_key_file=" + infra.dir() + "/usage_signing.key";
}

// Safety hashes the spans of its audit trail with it (required with Kafka).
std::string AuditKeyFlag(const Infra& infra) {
  return "--audit_key_file=" + infra.dir() + "/audit.key";
}

}  // namespace

const std::vector<std::string>& Cluster::ServiceNames() {
  static const std::vector<std::string> names = {
      "gateway",          "chat",   "connection-manager", "safety", "tenant-scheduler",
      "inference-worker", "billing"};
  return names;
}

absl::StatusOr<std::unique_ptr<Cluster>> Cluster::Start(Options options) {
  std::unique_ptr<Cluster> c(new Cluster());
  c->tls_ = options.tls;
  c->service_flags_ = options.service_flags;
  c->services_dir_ =
      options.services_dir.empty() ? Infra::BuildDir() + "/services" : options.services_dir;
  // The Redis Cluster is for gateways started with --redis_cluster.
  auto infra = Infra::Start({.redis_cluster = true, .kafka_partitions = options.kafka_partitions});
  if (!infra.ok()) return infra.status();
  c->infra_ = std::move(*infra);
  std::string out;
  if (RunCommand({Infra::SourceDir() + "/tools/certs", c->infra_->dir() + "/tls"}, &out) != 0) {
    return absl::InternalError("tools/certs failed: " + out);
  }
  std::ofstream(c->infra_->dir() + "/usage_signing.key") << RandomHex(32) << "\n";
  std::ofstream(c->infra_->dir() + "/audit.key") << RandomHex(32) << "\n";
  for (const auto& s : ServiceNames()) {
    c->grpc_ports_[s] = FreePort();
    c->metrics_ports_[s] = FreePort();
  }
  c->grpc_ports_[SchedulerName(1)] = FreePort();
  c->metrics_ports_[SchedulerName(1)] = FreePort();
  c->http_port_ = FreePort();

  admin::Admin admin(c->infra_->pg_uri());
  for (const auto& org : {"acme", "globex"}) {
    if (auto st = admin.CreateOrg(org, org); !st.ok()) return st;
  }
  auto key = admin.CreateKey("acme", "");
  if (!key.ok()) return key.status();
  c->api_key_ = *key;
  auto other = admin.CreateKey("globex", "");
  if (!other.ok()) return other.status();
  c->other_key_ = *other;

  const std::string pg = "--pg=" + c->infra_->pg_uri();
  const std::string redis = "--redis_port=" + std::to_string(c->infra_->redis_port());
  const std::string kafka = "--kafka_brokers=" + c->infra_->kafka();
  auto addr = [&](const std::string& s) { return c->grpc_address(s); };
  const std::string schedulers = "--scheduler_address=" + c->scheduler_addresses();
  const std::vector<std::string> scheduler_flags = {pg, "--heartbeat_interval_ms=200",
                                                    "--worker_ttl_ms=1000"};
  std::vector<std::string> billing = {pg, kafka, UsageKeyFlag(*c->infra_)};
  billing.insert(billing.end(), options.billing_flags.begin(), options.billing_flags.end());
  const std::vector<std::pair<std::string, std::vector<std::string>>> order = {
      {"safety", {pg, "--policy_refresh=200ms", kafka, AuditKeyFlag(*c->infra_)}},
      {SchedulerName(0), scheduler_flags},
      {SchedulerName(1), scheduler_flags},
      {"inference-worker",
       {schedulers, kafka, "--tokens_per_second=100", "--worker_id=worker-e2e",
        UsageKeyFlag(*c->infra_)}},
      {"billing", billing},
      // Chat batches its output to safety by time (20 ms, 2 of the worker's
      // tokens), the gateway does not: the suites cover both.
      {"chat",
       {pg, redis, kafka, schedulers, "--safety_address=" + addr("safety"),
        "--safety_batch_ms=20"}},
      {"connection-manager", {redis, kafka, "--chat_address=" + addr("chat")}},
      {"gateway",
       {pg, redis, kafka, "--http_port=" + std::to_string(c->http_port_),
        "--safety_address=" + addr("safety"), schedulers, "--chat_address=" + addr("chat"),
        "--connection_manager_address=" + addr("connection-manager")}},
  };
  for (const auto& [name, flags] : order) {
    if (auto st = c->StartService(name, flags, name == SchedulerName(1) ? SchedulerName(0) : "");
        !st.ok()) {
      return st;
    }
  }

  // Ready when the worker is registered with both replicas and the public
  // port answers.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  bool ready = false;
  while (!ready && std::chrono::steady_clock::now() < deadline) {
    auto health = http::Fetch({.port = c->http_port_, .target = "/healthz"});
    ready = c->ListedLiveEverywhere("worker-e2e") && health.ok() && health->status == 200;
    if (!ready) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (!ready) return absl::UnavailableError("cluster not ready:\n" + c->Logs());
  return c;
}

std::string Cluster::SchedulerName(int replica) {
  return replica == 0 ? "tenant-scheduler" : "tenant-scheduler-b";
}

std::string Cluster::scheduler_addresses() const {
  std::string out;
  for (int i = 0; i < kSchedulerReplicas; ++i) {
    out += (i > 0 ? "," : "") + scheduler_address(i);
  }
  return out;
}

std::shared_ptr<grpc::Channel> Cluster::SchedulerChannel(int replica,
                                                         const std::string& identity) const {
  return grpcx::Dial(scheduler_address(replica), "tenant-scheduler", TlsFilesOf(identity));
}

void Cluster::KillScheduler(int replica) { Kill(SchedulerName(replica)); }

absl::Status Cluster::StartScheduler(int replica) { return Restart(SchedulerName(replica)); }

void Cluster::Kill(const std::string& service) {
  auto it = processes_.find(service);
  if (it != processes_.end()) it->second.Kill();
}

absl::Status Cluster::Restart(const std::string& service) {
  auto with = started_with_.find(service);
  if (with == started_with_.end()) return absl::NotFoundError("no service " + service);
  if (auto it = processes_.find(service); it != processes_.end()) {
    if (it->second.running()) return absl::FailedPreconditionError(service + " is running");
    processes_.erase(it);
  }
  const auto [flags, binary] = with->second;
  return StartService(service, flags, binary);
}

bool Cluster::ListedLiveEverywhere(const std::string& worker_id) const {
  for (int i = 0; i < kSchedulerReplicas; ++i) {
    auto p = processes_.find(SchedulerName(i));
    if (p == processes_.end() || !p->second.running()) continue;
    auto scheduler = switchboard::scheduler::v1::TenantScheduler::NewStub(SchedulerChannel(i));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(1));
    switchboard::scheduler::v1::ListWorkersResponse resp;
    if (!scheduler->ListWorkers(&ctx, {}, &resp).ok()) return false;
    bool live = false;
    for (const auto& w : resp.workers()) live |= w.worker_id() == worker_id && w.live();
    if (!live) return false;
  }
  return true;
}

absl::Status Cluster::StartService(const std::string& name, std::vector<std::string> flags,
                                   const std::string& binary) {
  started_with_[name] = {flags, binary};
  const std::string& bin = binary.empty() ? name : binary;
  std::vector<std::string> argv = {
      services_dir_ + "/" + bin + "/" + bin, "--grpc_port=" + std::to_string(grpc_ports_[name]),
      "--metrics_port=" + std::to_string(metrics_ports_[name]), "--drain_seconds=2"};
  for (auto& f : TlsFlags(bin)) argv.push_back(std::move(f));
  argv.insert(argv.end(), service_flags_.begin(), service_flags_.end());
  argv.insert(argv.end(), flags.begin(), flags.end());
  processes_.emplace(name, Process(name, argv, infra_->dir() + "/" + name + ".log"));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  while (std::chrono::steady_clock::now() < deadline) {
    auto r = http::Fetch({.port = metrics_ports_[name],
                          .target = "/healthz",
                          .timeout = std::chrono::milliseconds(500)});
    if (r.ok() && r->status == 200) return absl::OkStatus();
    if (!processes_.at(name).running()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return absl::UnavailableError(name + " did not start:\n" +
                                Tail(infra_->dir() + "/" + name + ".log", 30));
}

absl::Status Cluster::StartReplica(const std::string& name, const std::string& service,
                                   std::vector<std::string> flags) {
  if (processes_.count(name) > 0) return absl::AlreadyExistsError(name + " is running");
  grpc_ports_[name] = FreePort();
  metrics_ports_[name] = FreePort();
  std::vector<std::string> all = started_with_.at(service).first;
  all.insert(all.end(), flags.begin(), flags.end());
  return StartService(name, std::move(all), service);
}

absl::StatusOr<Cluster::Worker> Cluster::StartWorker(const std::string& worker_id,
                                                     const std::string& models,
                                                     std::vector<std::string> flags) {
  const int metrics_port = FreePort();
  std::vector<std::string> argv = {services_dir_ + "/inference-worker/inference-worker",
                                   "--grpc_port=" + std::to_string(FreePort()),
                                   "--metrics_port=" + std::to_string(metrics_port),
                                   "--scheduler_address=" + scheduler_addresses(),
                                   "--kafka_brokers=" + infra_->kafka(),
                                   "--worker_id=" + worker_id,
                                   "--models=" + models,
                                   "--drain_seconds=1",
                                   UsageKeyFlag(*infra_)};
  for (auto& f : TlsFlags("inference-worker")) argv.push_back(std::move(f));
  argv.insert(argv.end(), service_flags_.begin(), service_flags_.end());
  argv.insert(argv.end(), flags.begin(), flags.end());
  const std::string log = infra_->dir() + "/" + worker_id + ".log";
  Process p(worker_id, argv, log);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  while (std::chrono::steady_clock::now() < deadline && p.running()) {
    if (ListedLiveEverywhere(worker_id)) return Worker{std::move(p), metrics_port};
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return absl::UnavailableError("worker " + worker_id + " did not register:\n" + Tail(log, 30));
}

absl::StatusOr<Cluster::Gateway> Cluster::StartGateway(const std::string& name,
                                                       std::vector<std::string> flags) {
  Gateway g;
  g.http_port = FreePort();
  g.metrics_port = FreePort();
  std::vector<std::string> argv = {
      services_dir_ + "/gateway/gateway",
      "--grpc_port=" + std::to_string(FreePort()),
      "--metrics_port=" + std::to_string(g.metrics_port),
      "--http_port=" + std::to_string(g.http_port),
      "--drain_seconds=1",
      "--pg=" + infra_->pg_uri(),
      "--redis_port=" + std::to_string(infra_->redis_port()),
      "--kafka_brokers=" + infra_->kafka(),
      "--safety_address=" + grpc_address("safety"),
      "--scheduler_address=" + scheduler_addresses(),
      "--chat_address=" + grpc_address("chat"),
      "--connection_manager_address=" + grpc_address("connection-manager")};
  for (auto& f : TlsFlags("gateway")) argv.push_back(std::move(f));
  argv.insert(argv.end(), service_flags_.begin(), service_flags_.end());
  argv.insert(argv.end(), flags.begin(), flags.end());
  const std::string log = infra_->dir() + "/" + name + ".log";
  g.process = Process(name, argv, log);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  while (std::chrono::steady_clock::now() < deadline && g.process.running()) {
    auto r = http::Fetch(
        {.port = g.http_port, .target = "/healthz", .timeout = std::chrono::milliseconds(500)});
    if (r.ok() && r->status == 200) return g;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return absl::UnavailableError("gateway " + name + " did not start:\n" + Tail(log, 30));
}

grpcx::TlsFiles Cluster::TlsFilesOf(const std::string& identity) const {
  if (!tls_) return {};
  const std::string d = infra_->dir() + "/tls/";
  return {d + "ca.crt", d + identity + ".crt", d + identity + ".key", 1};
}

std::vector<std::string> Cluster::TlsFlags(const std::string& identity) const {
  if (!tls_) return {"--insecure_internal"};
  const grpcx::TlsFiles f = TlsFilesOf(identity);
  return {"--tls_ca=" + f.ca, "--tls_cert=" + f.cert, "--tls_key=" + f.key};
}

std::shared_ptr<grpc::Channel> Cluster::Channel(const std::string& service,
                                                const std::string& identity) const {
  return grpcx::Dial(grpc_address(service), service, TlsFilesOf(identity));
}

std::string Cluster::Logs(int lines) const {
  std::string out;
  std::vector<std::string> names = ServiceNames();
  names.push_back(SchedulerName(1));
  for (const auto& s : names) {
    out += "--- " + s + "\n" + Tail(infra_->dir() + "/" + s + ".log", lines);
  }
  return out;
}

Cluster::~Cluster() {
  // Front to back, so that nothing is left waiting on a stopped backend.
  for (const auto& s : ServiceNames()) {
    for (const auto& name :
         s == SchedulerName(0) ? std::vector<std::string>{s, SchedulerName(1)} : std::vector{s}) {
      auto it = processes_.find(name);
      if (it != processes_.end()) it->second.Stop(5000);
    }
  }
}

}  // namespace sb::testing
