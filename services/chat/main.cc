#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <map>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "chat/cancel_bus.h"
#include "chat/chat_grpc.h"
#include "chat/chat_store.h"
#include "chat/eraser.h"
#include "chat/outbox_relay.h"
#include "chat/turns.h"
#include "core/clock.h"
#include "core/timers.h"
#include "grpcx/common_flags.h"
#include "grpcx/server.h"
#include "grpcx/tls.h"
#include "pipeline/grpc_backends.h"
#include "storage/kafka.h"
#include "storage/pg.h"
#include "storage/redis.h"
#include "storage/redis_cluster.h"
#include "storage/redis_pipeline.h"
#include "storage/token_stream.h"

ABSL_FLAG(int, grpc_port, 50051, "gRPC port");
ABSL_FLAG(int, metrics_port, 9101, "HTTP port for /metrics");
ABSL_FLAG(std::string, pg, "postgresql://postgres@127.0.0.1:5432/switchboard",
          "PostgreSQL connection URI");
ABSL_FLAG(int, pg_pool_size, 8, "PostgreSQL connections (and threads that use them)");
ABSL_FLAG(std::string, redis_host, "127.0.0.1", "Redis host");
ABSL_FLAG(int, redis_port, 6379, "Redis port");
ABSL_FLAG(bool, redis_cluster, false,
          "--redis_host:--redis_port is a node of a Redis Cluster (the others are discovered)");
ABSL_FLAG(std::string, redis_password, "",
          "Redis AUTH password (requirepass); better from SWITCHBOARD_REDIS_PASSWORD");
ABSL_FLAG(std::string, kafka_brokers, "127.0.0.1:19092", "Kafka bootstrap servers");
ABSL_FLAG(std::string, events_topic, "chat.events", "Topic for chat events");
ABSL_FLAG(std::string, scheduler_address, "127.0.0.1:50054",
          "tenant-scheduler gRPC address; comma-separated for several replicas");
ABSL_FLAG(bool, direct_streaming, true,
          "Stream tokens from the worker under a scheduler lease (Admit); false: through the "
          "scheduler (its Generate relay, the older path)");
ABSL_FLAG(std::string, safety_address, "127.0.0.1:50053", "safety gRPC address");
ABSL_FLAG(int, max_turns, 10000,
          "Chat turns generating at once; beyond them a turn fails at once as overloaded");
ABSL_FLAG(int, stream_retention_seconds, 300,
          "How long a finished reply stays replayable from Redis");
ABSL_FLAG(int, safety_deadline_ms, 2000, "Deadline of each safety check");
ABSL_FLAG(int, safety_batch_ms, 0,
          "Output waits up to this long (at most 20 ms) for more text before it goes to output "
          "safety, unless --safety_batch_bytes gathered first; 0: a piece goes as soon as the one "
          "before it is checked");
ABSL_FLAG(int, safety_batch_bytes, 256, "Output that goes to output safety without waiting more");
ABSL_FLAG(int, context_window_tokens, sb::chat::kDefaultContextWindowTokens,
          "The context window of a model --context_windows does not name, in tokens: a turn's "
          "prompt is the conversation's most recent messages that fit it with the reply");
ABSL_FLAG(std::string, context_windows, "",
          "Context windows of models, in tokens: model=tokens,model=tokens");
ABSL_FLAG(std::string, replica_id, "",
          "This replica's name on its turns' leases (default: host, pid and a unique suffix)");
ABSL_FLAG(absl::Duration, turn_lease, absl::Seconds(7),
          "How long a turn stays this replica's without a renewal: another replica takes "
          "over the turns of one that died within about this");
ABSL_FLAG(absl::Duration, erase_after, absl::ZeroDuration(),
          "How long a deleted conversation's rows and replay buffers are kept before they are "
          "erased (0: at once)");

int main(int argc, char** argv) {
  sb::InitService("chat", argc, argv);
  const int pg_size = absl::GetFlag(FLAGS_pg_pool_size);
  sb::PgPool pg(absl::GetFlag(FLAGS_pg), pg_size);
  // Started before its database (a restart of both, a slow volume): wait
  // rather than exit and crash-loop; SIGTERM ends the wait.
  if (auto st = pg.WaitReady(sb::StartupWait(), sb::ShutdownRequested); !st.ok()) {
    spdlog::critical("chat: {}", st.ToString());
    return sb::ShutdownRequested() ? 0 : 1;
  }
  // Reply buffers are written through a pipeline (per node on a cluster).
  const bool cluster = absl::GetFlag(FLAGS_redis_cluster);
  const sb::RedisOptions redis_options{.host = absl::GetFlag(FLAGS_redis_host),
                                       .port = absl::GetFlag(FLAGS_redis_port),
                                       .password = absl::GetFlag(FLAGS_redis_password)};
  std::unique_ptr<sb::RedisCluster> redis_cluster;
  std::unique_ptr<sb::RedisPipeline> redis_node;
  sb::AsyncRedis* redis;
  if (cluster) {
    redis = (redis_cluster = std::make_unique<sb::RedisCluster>(redis_options)).get();
  } else {
    redis = (redis_node = std::make_unique<sb::RedisPipeline>(redis_options)).get();
  }
  auto producer = sb::KafkaProducer::Create(absl::GetFlag(FLAGS_kafka_brokers));
  if (!producer.ok()) {
    spdlog::critical("chat: {}", producer.status().ToString());
    return 1;
  }
  const std::string topic = absl::GetFlag(FLAGS_events_topic);
  sb::UlidGenerator ids;
  // Every replica of the scheduler: a model's calls go to its home replica,
  // or the next that answers (the relay, for comparison, to the first).
  sb::pipeline::SchedulerReplicas schedulers(absl::GetFlag(FLAGS_scheduler_address));
  if (schedulers.size() == 0) {
    spdlog::critical("chat: --scheduler_address is empty");
    return 1;
  }
  auto* scheduler = &schedulers.at(0);
  sb::pipeline::WorkerStubs workers;
  auto safety = switchboard::safety::v1::Safety::NewStub(
      sb::grpcx::Dial(absl::GetFlag(FLAGS_safety_address), sb::grpcx::kSafety));

  const std::chrono::milliseconds safety_deadline(absl::GetFlag(FLAGS_safety_deadline_ms));
  sb::pipeline::GrpcInputGuard input(*safety, safety_deadline);
  sb::pipeline::StreamingOutputGates gates(*safety, safety_deadline);
  sb::pipeline::LeasedGenerator leased(schedulers, workers, std::chrono::minutes(10));
  sb::pipeline::GrpcGenerator relayed(*scheduler, std::chrono::minutes(10));
  sb::pipeline::Generator& generator = absl::GetFlag(FLAGS_direct_streaming)
                                           ? static_cast<sb::pipeline::Generator&>(leased)
                                           : relayed;
  // Fail-closed stops (safety unreachable) go to the safety audit trail.
  const sb::pipeline::FailClosedRecorder fail_closed =
      sb::pipeline::AuditFailClosed(**producer, "chat");
  sb::TimerThread batch_timers;  // outlives the pipeline: its generations use it
  sb::pipeline::Pipeline pipeline("chat", input, generator, gates, sb::RealClock(), fail_closed);
  pipeline.set_output_batching(
      {.timers = &batch_timers,
       .wait = absl::Milliseconds(std::max(0, absl::GetFlag(FLAGS_safety_batch_ms))),
       .bytes = static_cast<size_t>(std::max(1, absl::GetFlag(FLAGS_safety_batch_bytes)))});

  // Every database call of the service runs here, one thread per connection;
  // the queue holds a burst of turns starting or ending at once.
  sb::ThreadPool pool(pg_size, 1 << 17);
  sb::chat::ChatStore store(pg, ids);
  std::string replica_id = absl::GetFlag(FLAGS_replica_id);
  if (replica_id.empty()) {
    char host[256] = {};
    gethostname(host, sizeof host - 1);
    replica_id = std::string(host) + "-" + std::to_string(getpid()) + "-" + ids.Next(absl::Now());
  }
  const absl::Duration turn_lease = absl::GetFlag(FLAGS_turn_lease);
  store.set_lease(replica_id, turn_lease);
  // A reply's events Redis did not take are sent again (after 0.1, 0.3 and
  // 0.9 s) before the turn gives up on its stream.
  sb::TimerThread stream_retries;
  sb::RedisTokenStream stream(*redis,
                              std::chrono::seconds(absl::GetFlag(FLAGS_stream_retention_seconds)),
                              std::chrono::hours(1), &stream_retries);
  // chat.events: written with each change, published from the outbox.
  sb::chat::OutboxRelay relay(store, **producer, topic);
  relay.Start();
  sb::chat::Turns turns(store, stream, pipeline, pool, absl::GetFlag(FLAGS_max_turns));
  std::map<std::string, int> windows;
  for (absl::string_view entry :
       absl::StrSplit(absl::GetFlag(FLAGS_context_windows), ',', absl::SkipEmpty())) {
    const std::vector<std::string> kv = absl::StrSplit(entry, absl::MaxSplits('=', 1));
    int tokens = 0;
    if (kv.size() != 2 || kv[0].empty() || !absl::SimpleAtoi(kv[1], &tokens) || tokens < 1) {
      spdlog::critical("chat: --context_windows: '{}' is not model=tokens", std::string(entry));
      return 1;
    }
    windows[kv[0]] = tokens;
  }
  const int default_window = absl::GetFlag(FLAGS_context_window_tokens);
  if (default_window < 1) {
    spdlog::critical("chat: --context_window_tokens must be positive");
    return 1;
  }
  turns.set_context_windows([windows, default_window](const std::string& model) {
    auto it = windows.find(model);
    return it != windows.end() ? it->second : default_window;
  });
  // Stops for replies another replica runs (cancel_bus.h), and erasure.
  sb::RedisOptions cancel_options = redis_options;
  cancel_options.pool_size = 4;
  auto cancel_client = sb::NewBlockingRedis(cancel_options, cluster);
  sb::BlockingRedis& cancel_redis = *cancel_client;
  sb::chat::CancelBus cancels(cancel_redis, [&turns](const std::string& id) { turns.Cancel(id); });
  cancels.Start();
  // Turns survive their replica: leases renewed here, expired ones taken
  // over and continued from their buffer.
  turns.StartLeases(
      replica_id, turn_lease,
      [&cancel_redis](const std::string& id) -> absl::StatusOr<std::vector<sb::StreamEntry>> {
        auto range = cancel_redis.Command({"XRANGE", sb::TokenStreamKey(id), "-", "+"});
        if (!range.ok()) return range.status();
        std::vector<sb::StreamEntry> out;
        for (const auto& raw : range->elements) {
          auto e = sb::ParseStreamEntry(raw);
          if (!e.ok()) return e.status();
          out.push_back(std::move(*e));
        }
        return out;
      });
  sb::chat::ChatServiceImpl service(
      store, turns, input, pool, fail_closed,
      [&cancels](const std::string& id) { return cancels.Publish(id); });
  sb::chat::Eraser eraser(
      store, cancel_redis, turns, pool,
      [&cancels](const std::string& id) { return cancels.Publish(id); },
      absl::GetFlag(FLAGS_erase_after));
  service.set_on_deleted([&eraser](const std::string& id) { eraser.Deleted(id); });
  eraser.Start();

  sb::ServiceRunner runner("chat");
  runner.AddService(&service);
  if (auto st = runner.Start(sb::GrpcListenAddress(absl::GetFlag(FLAGS_grpc_port)),
                             absl::GetFlag(FLAGS_metrics_port), absl::GetFlag(FLAGS_listen_host));
      !st.ok()) {
    spdlog::critical("chat: {}", st.ToString());
    return 1;
  }
  // On SIGTERM, turns in progress get the drain grace to finish.
  runner.OnDrain([&] {
    const absl::Time deadline = absl::Now() + sb::DrainGrace();
    while (turns.active() > 0 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(50));
  });
  runner.WaitForShutdown(sb::DrainGrace());
  turns.StopLeases();
  // Turns still running after the grace are stopped (their replies end as
  // cancelled), and their last writes land, before anything they use goes.
  pipeline.CancelAll();
  const absl::Time deadline = absl::Now() + absl::Seconds(2);
  while ((turns.active() > 0 || pipeline.active() > 0) && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  stream_retries.Stop();  // no retry runs once the stream's writer goes
  if (redis_cluster) redis_cluster->Stop();
  if (redis_node) redis_node->Stop();
  return 0;
}
