#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include "absl/flags/flag.h"
#include "chat/chat_grpc.h"
#include "chat/chat_store.h"
#include "chat/turn_runner.h"
#include "grpcx/common_flags.h"
#include "grpcx/server.h"
#include "storage/kafka.h"
#include "storage/pg.h"
#include "storage/redis.h"
#include "storage/token_stream.h"

ABSL_FLAG(int, grpc_port, 50051, "gRPC port");
ABSL_FLAG(int, metrics_port, 9101, "HTTP port for /metrics");
ABSL_FLAG(std::string, pg, "postgresql://postgres@127.0.0.1:5432/switchboard",
          "PostgreSQL connection URI");
ABSL_FLAG(int, pg_pool_size, 8, "PostgreSQL connections");
ABSL_FLAG(std::string, redis_host, "127.0.0.1", "Redis host");
ABSL_FLAG(int, redis_port, 6379, "Redis port");
ABSL_FLAG(std::string, kafka_brokers, "127.0.0.1:19092", "Kafka bootstrap servers");
ABSL_FLAG(std::string, events_topic, "chat.events", "Topic for chat events");
ABSL_FLAG(std::string, scheduler_address, "127.0.0.1:50054", "tenant-scheduler gRPC address");
ABSL_FLAG(std::string, safety_address, "127.0.0.1:50053", "safety gRPC address");
ABSL_FLAG(int, turn_threads, 32, "Chat turns generated at once");
ABSL_FLAG(int, stream_retention_seconds, 300, "How long a finished reply stays replayable from Redis");

int main(int argc, char** argv) {
  sb::InitService("chat", argc, argv);
  sb::PgPool pg(absl::GetFlag(FLAGS_pg), absl::GetFlag(FLAGS_pg_pool_size));
  if (auto st = pg.Ping(); !st.ok()) {
    spdlog::critical("chat: {}", st.ToString());
    return 1;
  }
  sb::RedisClient redis({.host = absl::GetFlag(FLAGS_redis_host),
                         .port = absl::GetFlag(FLAGS_redis_port),
                         .pool_size = absl::GetFlag(FLAGS_turn_threads)});
  auto producer = sb::KafkaProducer::Create(absl::GetFlag(FLAGS_kafka_brokers));
  if (!producer.ok()) {
    spdlog::critical("chat: {}", producer.status().ToString());
    return 1;
  }
  const std::string topic = absl::GetFlag(FLAGS_events_topic);
  sb::UlidGenerator ids;
  sb::chat::EventPublisher publish = [&](const switchboard::chat::v1::ChatEvent& e) {
    auto copy = e;
    copy.set_event_id(ids.Next(absl::Now()));
    if (auto st = (*producer)->Produce(topic, e.conversation_id(), copy.SerializeAsString());
        !st.ok()) {
      spdlog::error("chat event {} for {} not queued: {}", e.type(), e.conversation_id(),
                    st.ToString());
    }
  };
  auto scheduler = switchboard::scheduler::v1::TenantScheduler::NewStub(grpc::CreateChannel(
      absl::GetFlag(FLAGS_scheduler_address), grpc::InsecureChannelCredentials()));
  auto safety = switchboard::safety::v1::Safety::NewStub(
      grpc::CreateChannel(absl::GetFlag(FLAGS_safety_address), grpc::InsecureChannelCredentials()));

  sb::chat::ChatStore store(pg, ids);
  sb::TokenStreamWriter stream(redis, std::chrono::seconds(absl::GetFlag(FLAGS_stream_retention_seconds)));
  sb::chat::TurnRunner turns(store, stream, *scheduler, *safety, publish,
                             absl::GetFlag(FLAGS_turn_threads));
  sb::ThreadPool pool(absl::GetFlag(FLAGS_pg_pool_size), 4096);
  sb::chat::ChatServiceImpl service(store, turns, *safety, publish, pool);

  sb::ServiceRunner runner("chat");
  runner.AddService(&service);
  if (auto st = runner.Start(sb::GrpcListenAddress(absl::GetFlag(FLAGS_grpc_port)),
                             absl::GetFlag(FLAGS_metrics_port), absl::GetFlag(FLAGS_listen_host));
      !st.ok()) {
    spdlog::critical("chat: {}", st.ToString());
    return 1;
  }
  runner.WaitForShutdown(sb::DrainGrace());
  return 0;
}
