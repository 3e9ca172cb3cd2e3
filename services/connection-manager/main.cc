#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include "absl/flags/flag.h"
#include "connection-manager/connection_grpc.h"
#include "connection-manager/subscription_hub.h"
#include "grpcx/common_flags.h"
#include "grpcx/server.h"
#include "grpcx/status.h"
#include "grpcx/tls.h"
#include "storage/kafka.h"
#include "storage/redis.h"
#include "storage/redis_cluster.h"
#include "storage/token_stream.h"
#include "switchboard/chat/v1/chat.grpc.pb.h"

ABSL_FLAG(int, grpc_port, 50052, "gRPC port");
ABSL_FLAG(int, metrics_port, 9102, "HTTP port for /metrics");
ABSL_FLAG(std::string, redis_host, "127.0.0.1", "Redis host");
ABSL_FLAG(int, redis_port, 6379, "Redis port");
ABSL_FLAG(bool, redis_cluster, false,
          "--redis_host:--redis_port is a node of a Redis Cluster (the others are discovered)");
ABSL_FLAG(std::string, redis_password, "",
          "Redis AUTH password (requirepass); better from SWITCHBOARD_REDIS_PASSWORD");
ABSL_FLAG(std::string, chat_address, "127.0.0.1:50051", "chat gRPC address");
ABSL_FLAG(int, lookup_threads, 4, "Threads for message look-ups");
ABSL_FLAG(std::string, kafka_brokers, "127.0.0.1:19092", "Kafka bootstrap servers");
ABSL_FLAG(std::string, events_topic, "chat.events", "Topic of chat events (GET /v1/events)");
ABSL_FLAG(std::string, events_group, "connection-manager",
          "Consumer group of chat events (every replica the same: each event is indexed once)");
ABSL_FLAG(absl::Duration, events_retention, absl::Hours(24),
          "How long a user's events stay resumable after their last one");
ABSL_FLAG(int, events_per_user, 1000, "The most events kept per user for resuming");

// chat restarts (a rollout, a crash): found again within a second, where
// gRPC's own backoff grows to two minutes and fails calls meanwhile.
constexpr sb::grpcx::DialOptions kFindAgain{.max_reconnect_backoff_ms = 1000};

int main(int argc, char** argv) {
  sb::InitService("connection-manager", argc, argv);
  // The lookups', the pollers' and the event indexer's connections: two
  // pollers on a single Redis, on a cluster one per shard in use (of a node).
  const bool cluster = absl::GetFlag(FLAGS_redis_cluster);
  const sb::RedisOptions redis_options{
      .host = absl::GetFlag(FLAGS_redis_host),
      .port = absl::GetFlag(FLAGS_redis_port),
      .pool_size = absl::GetFlag(FLAGS_lookup_threads) + 3 +
                   (cluster ? sb::kStreamShards + sb::connection::kEventShards : 0),
      .password = absl::GetFlag(FLAGS_redis_password)};
  auto redis_client = sb::NewBlockingRedis(redis_options, cluster);
  sb::BlockingRedis& redis = *redis_client;
  auto chat = switchboard::chat::v1::Chat::NewStub(
      sb::grpcx::Dial(absl::GetFlag(FLAGS_chat_address), sb::grpcx::kChat, kFindAgain));
  sb::connection::MessageLookup lookup = [&](const switchboard::connection::v1::SubscribeRequest& r)
      -> absl::StatusOr<switchboard::chat::v1::ChatMessage> {
    switchboard::chat::v1::GetMessageRequest req;
    req.set_org_id(r.org_id());
    req.set_user_id(r.user_id());
    req.set_conversation_id(r.conversation_id());
    req.set_message_id(r.message_id());
    switchboard::chat::v1::ChatMessage m;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(3));
    grpc::Status st = chat->GetMessage(&ctx, req, &m);
    if (!st.ok()) return sb::FromGrpcStatus(st);
    return m;
  };
  sb::connection::SubscriptionHub hub(redis, lookup, absl::GetFlag(FLAGS_lookup_threads));
  sb::connection::EventHub events(redis, absl::GetFlag(FLAGS_lookup_threads));
  const sb::connection::UserEventsOptions event_options{
      .retention = absl::GetFlag(FLAGS_events_retention),
      .max_per_user = absl::GetFlag(FLAGS_events_per_user)};
  // Low fetch waits: a device should see an event well within a second.
  auto consumer = sb::KafkaConsumer::Create(
      absl::GetFlag(FLAGS_kafka_brokers), absl::GetFlag(FLAGS_events_group),
      {absl::GetFlag(FLAGS_events_topic)}, {{"fetch.wait.max.ms", "50"}});
  if (!consumer.ok()) {
    spdlog::critical("connection-manager: {}", consumer.status().ToString());
    return 1;
  }
  sb::connection::EventIndexer indexer(**consumer, redis, event_options);
  sb::connection::ConnectionServiceImpl service(hub, events);
  sb::ServiceRunner runner("connection-manager");
  runner.AddService(&service);
  if (auto st = runner.Start(sb::GrpcListenAddress(absl::GetFlag(FLAGS_grpc_port)),
                             absl::GetFlag(FLAGS_metrics_port), absl::GetFlag(FLAGS_listen_host));
      !st.ok()) {
    spdlog::critical("connection-manager: {}", st.ToString());
    return 1;
  }
  indexer.Start();
  runner.OnDrain([&] {
    hub.Stop();
    events.Stop();
    indexer.Stop();
  });
  runner.WaitForShutdown(sb::DrainGrace());
  return 0;
}
