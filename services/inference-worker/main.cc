#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_split.h"
#include "core/metrics.h"
#include "grpcx/common_flags.h"
#include "grpcx/server.h"
#include "grpcx/tls.h"
#include "inference-worker/registrar.h"
#include "inference-worker/sim_engine.h"
#include "inference-worker/upstream_flags.h"
#include "inference-worker/usage_outbox.h"
#include "inference-worker/worker_grpc.h"
#include "storage/kafka.h"
#include "storage/message_signing.h"

ABSL_FLAG(int, grpc_port, 50055, "gRPC port");
ABSL_FLAG(int, metrics_port, 9105, "HTTP port for /metrics");
ABSL_FLAG(std::string, worker_id, "", "Worker id (default: worker-<host>-<port>)");
ABSL_FLAG(std::string, advertise_address, "",
          "host:port the scheduler dials (default: 127.0.0.1:<grpc_port>)");
ABSL_FLAG(std::string, scheduler_address, "127.0.0.1:50054",
          "tenant-scheduler gRPC address; comma-separated for several replicas (the worker "
          "registers and heartbeats with each)");
ABSL_FLAG(std::string, kafka_brokers, "127.0.0.1:19092", "Kafka bootstrap servers");
ABSL_FLAG(std::string, usage_topic, "usage.events", "Topic for metering events");
ABSL_FLAG(int, usage_report_interval_ms, 1000,
          "A request's running usage is reported ahead of delivery, about twice in this interval "
          "at its own token rate (a token reaches the client only once Kafka has stored a report "
          "covering it)");
ABSL_FLAG(std::string, models, "sim-small,sim-large", "Comma-separated models this worker serves");
ABSL_FLAG(std::string, engine, "sim",
          "sim (the simulated accelerator), openai (an OpenAI-compatible upstream: vLLM, SGLang, "
          "llama.cpp, Ollama, TGI, OpenAI; see --upstream_*) or anthropic (Anthropic's API)");
ABSL_FLAG(double, tokens_per_second, 0,
          "sim: at most this many tokens a second per sequence, a floor on the step time for "
          "tests and demos (0: as fast as the simulated GPU)");
ABSL_FLAG(int, max_num_seqs, 256, "sim: sequences in the running batch, per model (vLLM's)");
ABSL_FLAG(int, max_num_batched_tokens, 8192,
          "sim: tokens one step computes, prefill chunks included (vLLM's)");
ABSL_FLAG(int, sim_num_gpus, 0,
          "sim: GPUs per model (0: the profile's: 1 H100 for sim-small, 4 for sim-large)");
ABSL_FLAG(bool, enable_prefix_caching, true, "sim: automatic prefix caching (vLLM's)");
ABSL_FLAG(int, max_waiting, 1024,
          "sim: requests queued per model behind a full batch; beyond them the worker answers "
          "RESOURCE_EXHAUSTED");

namespace {

switchboard::scheduler::v1::WorkerLoad ToProto(const sb::worker::EngineLoad& load) {
  switchboard::scheduler::v1::WorkerLoad out;
  out.set_running(load.running);
  out.set_waiting(load.waiting);
  out.set_kv_blocks_total(load.kv_blocks_total);
  out.set_kv_blocks_free(load.kv_blocks_free);
  out.set_kv_cache_usage(load.kv_cache_usage);
  for (uint64_t h : load.cached_prefixes) out.add_cached_prefixes(h);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  sb::InitService("inference-worker", argc, argv);

  auto signer = sb::UsageSignerFromFlags();
  if (!signer.ok()) {
    spdlog::critical("inference-worker: {}", std::string(signer.status().message()));
    return 1;
  }
  // No linger: a token waits for the usage report covering it to be stored
  // (metering ahead of delivery), so a report must not wait to be batched.
  auto producer =
      sb::KafkaProducer::Create(absl::GetFlag(FLAGS_kafka_brokers), {{"linger.ms", "0"}});
  if (!producer.ok()) {
    spdlog::critical("inference-worker: {}", producer.status().ToString());
    return 1;
  }
  const std::string topic = absl::GetFlag(FLAGS_usage_topic);
  // A full producer queue pushes back: the event waits in the outbox and
  // the worker admits nothing new until it is taken. Tokens wait for the
  // reports covering them, so the time Kafka takes to store one is part of
  // every request's time to first token.
  sb::metrics::Histogram& store_time = sb::metrics::Default().GetHistogram(
      "sb_worker_usage_store_seconds",
      "From handing a usage report to Kafka until it is stored (or refused for good)");
  sb::worker::UsageOutbox outbox([&](const switchboard::billing::v1::UsageEvent& e,
                                     sb::worker::UsageOutbox::Stored stored) {
    const std::string value = e.SerializeAsString();
    const sb::KafkaHeaders headers = {{sb::kSignatureHeader, signer->Sign(e.request_id(), value)}};
    return (*producer)->Publish(
        topic, e.request_id(), value, headers,
        [&store_time, stored = std::move(stored), handed = absl::Now()](const absl::Status& st) {
          store_time.Observe(absl::ToDoubleSeconds(absl::Now() - handed));
          if (stored) stored(st);
        });
  });
  sb::worker::UsageSink usage = [&](const switchboard::billing::v1::UsageEvent& e,
                                    sb::worker::UsageStored stored) {
    outbox.Report(e, std::move(stored));
  };

  const std::vector<std::string> models =
      absl::StrSplit(absl::GetFlag(FLAGS_models), ',', absl::SkipEmpty());
  const std::string engine_name = absl::GetFlag(FLAGS_engine);
  std::unique_ptr<sb::worker::Engine> engine;
  int capacity = 0;  // requests the worker holds at once
  if (engine_name == "sim") {
    sb::worker::SimOptions sim;
    sim.models = models;
    sim.max_steps_per_second = absl::GetFlag(FLAGS_tokens_per_second);
    sim.max_num_seqs = std::max(1, absl::GetFlag(FLAGS_max_num_seqs));
    sim.max_num_batched_tokens = std::max(1, absl::GetFlag(FLAGS_max_num_batched_tokens));
    sim.num_gpus = absl::GetFlag(FLAGS_sim_num_gpus);
    sim.enable_prefix_caching = absl::GetFlag(FLAGS_enable_prefix_caching);
    sim.max_waiting = static_cast<size_t>(std::max(0, absl::GetFlag(FLAGS_max_waiting)));
    // The batch, not the queue behind it: what waits, waits in the
    // scheduler's fair queue, where a light org goes ahead of a flood, not in
    // the engine's first-come-first-served one (max_waiting is for callers
    // that are not the scheduler's).
    capacity = static_cast<int>(models.size()) * sim.max_num_seqs;
    engine = std::make_unique<sb::worker::SimulatedEngine>(sim, /*run_thread=*/true);
  } else {
    auto options = sb::worker::UpstreamOptionsFromFlags(models);
    if (!options.ok()) {
      spdlog::critical("inference-worker: {}", options.status().ToString());
      return 1;
    }
    capacity = options->max_concurrency;
    auto upstream = sb::worker::MakeUpstreamEngine(engine_name, *std::move(options));
    if (!upstream.ok()) {
      spdlog::critical("inference-worker: --engine: {}", upstream.status().ToString());
      return 1;
    }
    engine = *std::move(upstream);
  }

  std::string worker_id = absl::GetFlag(FLAGS_worker_id);
  if (worker_id.empty()) {
    char host[256] = {0};
    gethostname(host, sizeof host - 1);
    worker_id = std::string("worker-") + host + "-" + std::to_string(getpid());
  }
  // The scheduler replicas, dialled before the reporter that uses them. A
  // replica that restarts must hear from every worker within about a
  // heartbeat: reconnect attempts at most 250 ms apart, not gRPC's growing
  // backoff (seconds after an outage of a few seconds).
  std::vector<std::unique_ptr<switchboard::scheduler::v1::TenantScheduler::Stub>> schedulers;
  for (absl::string_view address :
       absl::StrSplit(absl::GetFlag(FLAGS_scheduler_address), ',', absl::SkipEmpty())) {
    schedulers.push_back(switchboard::scheduler::v1::TenantScheduler::NewStub(sb::grpcx::Dial(
        std::string(address), sb::grpcx::kScheduler, {.max_reconnect_backoff_ms = 250})));
  }
  if (schedulers.empty()) {
    spdlog::critical("inference-worker: --scheduler_address is empty");
    return 1;
  }
  sb::worker::LeaseReporter leases(worker_id);
  sb::worker::WorkerServiceImpl service(
      *engine, worker_id, usage,
      absl::Milliseconds(std::max(1, absl::GetFlag(FLAGS_usage_report_interval_ms))),
      [&] { return !outbox.backed_up(); }, &leases);

  std::atomic<bool> stopping{false};
  sb::ServiceRunner runner("inference-worker");
  runner.AddService(&service);
  if (auto st = runner.Start(sb::GrpcListenAddress(absl::GetFlag(FLAGS_grpc_port)),
                             absl::GetFlag(FLAGS_metrics_port), absl::GetFlag(FLAGS_listen_host));
      !st.ok()) {
    spdlog::critical("inference-worker: {}", st.ToString());
    return 1;
  }

  std::string advertise = absl::GetFlag(FLAGS_advertise_address);
  if (advertise.empty()) advertise = "127.0.0.1:" + std::to_string(runner.grpc_port());
  switchboard::scheduler::v1::RegisterWorkerRequest registration;
  registration.set_worker_id(worker_id);
  registration.set_address(advertise);
  for (const auto& m : engine->Models()) registration.add_models(m);
  // What it holds at once: the batches and the queues behind them, or the
  // requests an upstream engine keeps in flight.
  registration.set_max_concurrency(capacity);
  std::vector<std::unique_ptr<sb::worker::Registrar>> registrars;
  for (auto& scheduler : schedulers) {
    registrars.push_back(std::make_unique<sb::worker::Registrar>(
        *scheduler, registration, [&] { return service.in_flight(); },
        [&] { return ToProto(engine->Load()); }, &leases));
  }
  // No work until metering can be delivered: the worker registers (and the
  // scheduler routes here) only once a Kafka broker has answered.
  std::thread starter([&] {
    for (int attempt = 0;; ++attempt) {
      const absl::Status st = (*producer)->Ping(std::chrono::seconds(2));
      if (st.ok()) break;
      if (stopping.load()) return;
      if (attempt % 5 == 0) {
        spdlog::warn("waiting for Kafka before taking work: {}", std::string(st.message()));
      }
    }
    if (!stopping.load()) {
      for (auto& r : registrars) r->Start();
    }
  });
  // One budget for the whole shutdown, within --drain_seconds: half for
  // the engine's sequences to finish, half for the streams to end, then a
  // short flush of the metering that is left.
  const absl::Duration grace = sb::DrainGrace();
  runner.OnDrain([&] {
    // Stop taking new work first (the scheduler stops routing here once
    // the heartbeats stop), let what runs finish, cancel the rest: every
    // sequence ends, and is metered, before exit.
    const absl::Time deadline = absl::Now() + grace / 2;
    stopping.store(true);
    starter.join();
    for (auto& r : registrars) r->Stop();
    engine->Drain(deadline);
  });
  runner.WaitForShutdown(grace / 2);
  // The engine goes before the service its sequences' sinks point at.
  engine->Drain(absl::Now());
  engine.reset();
  leases.Stop(absl::Now() + absl::Seconds(1));  // the ends of the last leases
  if (!outbox.WaitEmpty(absl::Now() + absl::Seconds(2))) {
    spdlog::error("exiting with {} metering events Kafka did not take", outbox.backlog());
  }
  if (auto st = (*producer)->Flush(std::chrono::seconds(3)); !st.ok()) {
    spdlog::error("metering events undelivered at exit: {}", st.ToString());
  }
  return 0;
}
