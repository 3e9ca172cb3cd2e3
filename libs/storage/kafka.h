// Kafka through librdkafka's C API.
//
// KafkaProducer is idempotent (acks=all, retries without duplicates) and
// never expires a message: while the brokers are away messages wait in the
// local queue, and only a full queue is an error, returned to the caller as
// ResourceExhausted, never a silent drop.
//
// KafkaConsumer joins a consumer group. Where a consumer keeps its offsets
// in its own database (exactly-once processing), `offset_lookup` tells the
// position to resume each assigned partition from, and may keep a partition
// paused (a stored offset outside the log waits for an operator).
//
// Every client, producer or consumer, connects with the security the
// --kafka_security_protocol, --kafka_sasl_* and --kafka_ssl_ca flags describe
// (defined here, once, for every binary that uses Kafka); a bad combination
// fails Create() with InvalidArgument naming the flag, so a service refuses to
// start rather than run with security it was not asked for.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "storage/publisher.h"

typedef struct rd_kafka_s rd_kafka_t;
typedef struct rd_kafka_topic_partition_list_s rd_kafka_topic_partition_list_t;

namespace sb {

using KafkaConfig = std::map<std::string, std::string>;
// Message headers in order; a name may repeat.
using KafkaHeaders = std::vector<std::pair<std::string, std::string>>;

// How clients authenticate to the brokers and protect the connection.
struct KafkaSecurity {
  std::string protocol = "plaintext";  // plaintext | ssl | sasl_plaintext | sasl_ssl
  std::string sasl_mechanism;          // PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512 (SASL only)
  std::string sasl_username;
  std::string sasl_password;
  std::string ssl_ca;  // PEM file of the CAs to trust (TLS only; empty: the system's)
};

// The librdkafka settings (security.protocol, sasl.mechanisms, sasl.username,
// sasl.password, ssl.ca.location) for `security`. InvalidArgument, naming the
// flag, for an unknown protocol or mechanism, SASL without a mechanism, user
// or password, SASL or CA settings that the protocol would silently ignore,
// or a CA file that cannot be read.
absl::StatusOr<KafkaConfig> KafkaSecurityConfig(const KafkaSecurity& security);
// The security the --kafka_* flags (or their SWITCHBOARD_KAFKA_* environment
// overrides) ask for.
KafkaSecurity KafkaSecurityFromFlags();

class KafkaProducer final : public Publisher {
 public:
  static absl::StatusOr<std::unique_ptr<KafkaProducer>> Create(const std::string& brokers,
                                                               const KafkaConfig& extra = {});
  ~KafkaProducer() override;  // flushes for up to 10 s

  absl::Status Publish(const std::string& topic, const std::string& key,
                       const std::string& value) override;
  // The same, with headers (e.g. a signature) carried beside the value.
  absl::Status Publish(const std::string& topic, const std::string& key, const std::string& value,
                       const KafkaHeaders& headers);
  // The same; once queued (OK), `on_delivered` runs exactly once on the
  // producer's poll thread: OK when the brokers have stored the message
  // (acks=all), or the reason it was refused for good.
  using DeliveryCallback = std::function<void(const absl::Status&)>;
  absl::Status Publish(const std::string& topic, const std::string& key, const std::string& value,
                       const KafkaHeaders& headers, DeliveryCallback on_delivered);
  // Waits until every queued message is delivered or `timeout` passes.
  absl::Status Flush(std::chrono::milliseconds timeout);
  // OK once a broker has answered a metadata request within `timeout`;
  // Unavailable otherwise.
  absl::Status Ping(std::chrono::milliseconds timeout);

  uint64_t delivered() const { return delivered_.load(); }
  uint64_t failed() const { return failed_.load(); }

 private:
  KafkaProducer() = default;
  static void OnDelivery(rd_kafka_t* rk, const void* msg, void* opaque);

  rd_kafka_t* rk_ = nullptr;
  std::atomic<bool> stop_{false};
  std::thread poller_;
  std::atomic<uint64_t> delivered_{0};
  std::atomic<uint64_t> failed_{0};
};

struct KafkaMessage {
  std::string topic;
  int32_t partition = 0;
  int64_t offset = 0;
  std::string key;
  std::string value;
  KafkaHeaders headers;

  // The value of the first header called `name`, or nullopt.
  std::optional<std::string> Header(std::string_view name) const;
};

class KafkaConsumer {
 public:
  // A StartAt offset: the partition's first (librdkafka's logical offset).
  static constexpr int64_t kBeginning = -2;
  // Where an assigned partition starts.
  struct StartAt {
    std::optional<int64_t>
        offset;           // nullopt: the group's committed offset (else auto.offset.reset)
    bool paused = false;  // assigned but not fetched until Resume()
  };
  // Called on the polling thread (inside Poll) for each partition assigned.
  // Where a consumer keeps its offsets in its own database (exactly-once
  // processing), it says where to resume from.
  using OffsetLookup = std::function<StartAt(const std::string& topic, int32_t partition)>;
  // Called on the polling thread when the position of an assigned partition
  // lies outside its log while consuming. Only with auto.offset.reset=error
  // (otherwise librdkafka moves the position by itself); the partition is
  // paused until Resume().
  using OutOfRange =
      std::function<void(const std::string& topic, int32_t partition, int64_t offset)>;

  static absl::StatusOr<std::unique_ptr<KafkaConsumer>> Create(
      const std::string& brokers, const std::string& group, const std::vector<std::string>& topics,
      const KafkaConfig& extra = {}, OffsetLookup offset_lookup = nullptr,
      OutOfRange on_out_of_range = nullptr);
  ~KafkaConsumer();  // leaves the group

  // nullopt when nothing arrived in `timeout`. Errors are transient broker
  // trouble worth logging; keep polling.
  absl::StatusOr<std::optional<KafkaMessage>> Poll(std::chrono::milliseconds timeout);
  // Waits up to `wait` for a message, then takes what has already arrived
  // with it, appending at most `max` messages to `out` (a batch for one
  // transaction). A poll error ends the batch and is returned (what was
  // taken before it stays in `out`): transient broker trouble worth logging.
  absl::Status PollBatch(size_t max, std::chrono::milliseconds wait,
                         std::vector<KafkaMessage>& out);
  // Commits `msg.offset + 1` to the group (asynchronously).
  void Commit(const KafkaMessage& msg);
  // Commits everything `batch` read: the last message of each partition.
  void CommitBatch(const std::vector<KafkaMessage>& batch);

  // The partition's log: its first offset and the offset after its last
  // (the high watermark), asked of the partition's leader.
  struct Watermarks {
    int64_t low = 0;
    int64_t high = 0;
  };
  absl::StatusOr<Watermarks> QueryWatermarks(const std::string& topic, int32_t partition,
                                             std::chrono::milliseconds timeout);
  // Moves an assigned partition to `offset` and fetches it again (also one
  // paused by the OffsetLookup or after OutOfRange); the other partitions go
  // on from where they are. Call from the polling thread.
  absl::Status Resume(const std::string& topic, int32_t partition, int64_t offset);
  // Whether the partition is assigned to this consumer now.
  bool Assigned(const std::string& topic, int32_t partition);
  // Every partition assigned now and the next offset this consumer will
  // read from it (where it was assigned from, until it has read one).
  struct Position {
    std::string topic;
    int32_t partition = 0;
    int64_t next = 0;
  };
  std::vector<Position> Positions();

 private:
  KafkaConsumer() = default;
  static void OnRebalance(rd_kafka_t* rk, int err, void* partitions, void* opaque);
  using Partition = std::pair<std::string, int32_t>;
  // Pauses paused_ (assigning resumes every partition).
  void PauseAgain();
  // The assignment, each partition at the next offset this consumer reads
  // (where it was assigned from until it has read one); null when unknown.
  // The caller destroys it.
  rd_kafka_topic_partition_list_t* PositionedAssignment();

  rd_kafka_t* rk_ = nullptr;
  OffsetLookup offset_lookup_;
  OutOfRange on_out_of_range_;
  // The polling thread's: where each assigned partition started, and the
  // partitions kept paused.
  std::map<Partition, int64_t> start_;
  std::set<Partition> paused_;
};

}  // namespace sb
