#include "storage/kafka.h"

#include <librdkafka/rdkafka.h>
#include <spdlog/spdlog.h>

#include <fstream>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "core/metrics.h"

ABSL_FLAG(std::string, kafka_security_protocol, "plaintext",
          "How Kafka clients reach the brokers: plaintext, ssl, sasl_plaintext or sasl_ssl "
          "(plaintext is for local development only)");
ABSL_FLAG(std::string, kafka_sasl_mechanism, "",
          "SASL mechanism with sasl_plaintext or sasl_ssl: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512");
ABSL_FLAG(std::string, kafka_sasl_username, "", "SASL user name (sasl_* protocols)");
ABSL_FLAG(std::string, kafka_sasl_password, "",
          "SASL password (sasl_* protocols); prefer the SWITCHBOARD_KAFKA_SASL_PASSWORD "
          "environment variable, which process listings do not show");
ABSL_FLAG(std::string, kafka_ssl_ca, "",
          "PEM file of the CA certificates that sign the brokers' (ssl, sasl_ssl; empty: the "
          "system's CAs)");

namespace sb {
namespace {

absl::StatusOr<rd_kafka_conf_t*> MakeConf(const KafkaConfig& settings) {
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  char err[512];
  for (const auto& [k, v] : settings) {
    if (rd_kafka_conf_set(conf, k.c_str(), v.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) {
      rd_kafka_conf_destroy(conf);
      return absl::InvalidArgumentError("kafka config " + k + ": " + err);
    }
  }
  return conf;
}

KafkaConfig Merge(KafkaConfig base, const KafkaConfig& extra) {
  for (const auto& [k, v] : extra) base[k] = v;
  return base;
}

// The defaults, then the security flags, then the caller's own settings.
absl::StatusOr<KafkaConfig> WithSecurity(KafkaConfig base, const KafkaConfig& extra) {
  auto security = KafkaSecurityConfig(KafkaSecurityFromFlags());
  if (!security.ok()) return security.status();
  return Merge(Merge(std::move(base), *security), extra);
}

}  // namespace

absl::StatusOr<KafkaConfig> KafkaSecurityConfig(const KafkaSecurity& s) {
  const std::string protocol = absl::AsciiStrToLower(s.protocol);
  const bool sasl = protocol == "sasl_plaintext" || protocol == "sasl_ssl";
  const bool tls = protocol == "ssl" || protocol == "sasl_ssl";
  if (!sasl && !tls && protocol != "plaintext") {
    return absl::InvalidArgumentError(
        absl::StrCat("--kafka_security_protocol=", s.protocol,
                     ": expected plaintext, ssl, sasl_plaintext or sasl_ssl"));
  }
  KafkaConfig out{{"security.protocol", protocol}};
  if (sasl) {
    const std::string mechanism = absl::AsciiStrToUpper(s.sasl_mechanism);
    if (mechanism != "PLAIN" && mechanism != "SCRAM-SHA-256" && mechanism != "SCRAM-SHA-512") {
      return absl::InvalidArgumentError(
          absl::StrCat("--kafka_sasl_mechanism=", s.sasl_mechanism, ": with ", protocol,
                       " expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"));
    }
    if (s.sasl_username.empty() || s.sasl_password.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--kafka_security_protocol=", protocol,
          " needs --kafka_sasl_username and --kafka_sasl_password (or SWITCHBOARD_KAFKA_SASL_*)"));
    }
    out["sasl.mechanisms"] = mechanism;
    out["sasl.username"] = s.sasl_username;
    out["sasl.password"] = s.sasl_password;
  } else if (!s.sasl_mechanism.empty() || !s.sasl_username.empty() || !s.sasl_password.empty()) {
    // Credentials that would be ignored: the operator believes the brokers
    // see them, and they do not.
    return absl::InvalidArgumentError(
        absl::StrCat("--kafka_sasl_* is set but --kafka_security_protocol=", protocol,
                     " does not use SASL (sasl_plaintext or sasl_ssl does)"));
  }
  if (!s.ssl_ca.empty()) {
    if (!tls) {
      return absl::InvalidArgumentError(
          absl::StrCat("--kafka_ssl_ca is set but --kafka_security_protocol=", protocol,
                       " does not use TLS (ssl or sasl_ssl does)"));
    }
    // librdkafka only opens the file when it first connects; a typo should
    // stop the service now, not show up later as a connection error.
    if (!std::ifstream(s.ssl_ca).good()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--kafka_ssl_ca=", s.ssl_ca, ": cannot read the file"));
    }
    out["ssl.ca.location"] = s.ssl_ca;
  }
  return out;
}

KafkaSecurity KafkaSecurityFromFlags() {
  return KafkaSecurity{.protocol = absl::GetFlag(FLAGS_kafka_security_protocol),
                       .sasl_mechanism = absl::GetFlag(FLAGS_kafka_sasl_mechanism),
                       .sasl_username = absl::GetFlag(FLAGS_kafka_sasl_username),
                       .sasl_password = absl::GetFlag(FLAGS_kafka_sasl_password),
                       .ssl_ca = absl::GetFlag(FLAGS_kafka_ssl_ca)};
}

std::optional<std::string> KafkaMessage::Header(std::string_view name) const {
  for (const auto& [n, v] : headers) {
    if (n == name) return v;
  }
  return std::nullopt;
}

absl::StatusOr<std::unique_ptr<KafkaProducer>> KafkaProducer::Create(const std::string& brokers,
                                                                     const KafkaConfig& extra) {
  auto settings = WithSecurity({{"bootstrap.servers", brokers},
                                {"enable.idempotence", "true"},
                                {"acks", "all"},
                                {"linger.ms", "5"},
                                {"message.timeout.ms", "0"},  // never expire: deliver on recovery
                                {"queue.buffering.max.messages", "100000"}},
                               extra);
  if (!settings.ok()) return settings.status();
  auto conf = MakeConf(*settings);
  if (!conf.ok()) return conf.status();
  std::unique_ptr<KafkaProducer> p(new KafkaProducer());
  rd_kafka_conf_set_opaque(*conf, p.get());
  rd_kafka_conf_set_dr_msg_cb(*conf, [](rd_kafka_t* rk, const rd_kafka_message_t* m, void* op) {
    OnDelivery(rk, m, op);
  });
  char err[512];
  p->rk_ = rd_kafka_new(RD_KAFKA_PRODUCER, *conf, err, sizeof err);
  if (p->rk_ == nullptr) {
    rd_kafka_conf_destroy(*conf);
    return absl::InvalidArgumentError(std::string("kafka producer: ") + err);
  }
  p->poller_ = std::thread([raw = p.get()] {
    while (!raw->stop_.load()) rd_kafka_poll(raw->rk_, 100);
  });
  return p;
}

void KafkaProducer::OnDelivery(rd_kafka_t*, const void* msg, void* opaque) {
  auto* self = static_cast<KafkaProducer*>(opaque);
  const auto* m = static_cast<const rd_kafka_message_t*>(msg);
  if (auto* callback = static_cast<DeliveryCallback*>(m->_private)) {
    (*callback)(m->err ? absl::UnavailableError(rd_kafka_err2str(m->err)) : absl::OkStatus());
    delete callback;
  }
  if (m->err) {
    self->failed_.fetch_add(1);
    metrics::Default()
        .GetCounter("sb_kafka_delivery_failures_total", "Messages Kafka refused for good")
        .Inc();
    spdlog::error("kafka delivery to {} failed: {}", rd_kafka_topic_name(m->rkt),
                  rd_kafka_err2str(m->err));
  } else {
    self->delivered_.fetch_add(1);
  }
}

KafkaProducer::~KafkaProducer() {
  if (rk_ == nullptr) return;
  rd_kafka_flush(rk_, 10000);
  stop_.store(true);
  if (poller_.joinable()) poller_.join();
  if (rd_kafka_outq_len(rk_) > 0) {
    spdlog::error("kafka producer closing with {} undelivered messages", rd_kafka_outq_len(rk_));
  }
  rd_kafka_destroy(rk_);
}

absl::Status KafkaProducer::Ping(std::chrono::milliseconds timeout) {
  const rd_kafka_metadata_t* md = nullptr;
  const rd_kafka_resp_err_t err =
      rd_kafka_metadata(rk_, /*all_topics=*/0, nullptr, &md, static_cast<int>(timeout.count()));
  if (md != nullptr) rd_kafka_metadata_destroy(md);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return absl::UnavailableError(std::string("kafka: ") + rd_kafka_err2str(err));
  }
  return absl::OkStatus();
}

absl::Status KafkaProducer::Publish(const std::string& topic, const std::string& key,
                                    const std::string& value) {
  return Publish(topic, key, value, {});
}

absl::Status KafkaProducer::Publish(const std::string& topic, const std::string& key,
                                    const std::string& value, const KafkaHeaders& headers) {
  return Publish(topic, key, value, headers, nullptr);
}

absl::Status KafkaProducer::Publish(const std::string& topic, const std::string& key,
                                    const std::string& value, const KafkaHeaders& headers,
                                    DeliveryCallback on_delivered) {
  // Owned by the message once it is queued; OnDelivery runs and frees it.
  auto* callback = on_delivered ? new DeliveryCallback(std::move(on_delivered)) : nullptr;
  rd_kafka_resp_err_t err;
  if (headers.empty()) {
    err = rd_kafka_producev(rk_, RD_KAFKA_V_TOPIC(topic.c_str()),
                            RD_KAFKA_V_KEY(const_cast<char*>(key.data()), key.size()),
                            RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()),
                            RD_KAFKA_V_OPAQUE(callback), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                            RD_KAFKA_V_END);
  } else {
    // librdkafka owns the header list once the message is queued, and only then.
    rd_kafka_headers_t* hdrs = rd_kafka_headers_new(headers.size());
    for (const auto& [name, v] : headers) {
      rd_kafka_header_add(hdrs, name.data(), static_cast<ssize_t>(name.size()), v.data(),
                          static_cast<ssize_t>(v.size()));
    }
    err = rd_kafka_producev(rk_, RD_KAFKA_V_TOPIC(topic.c_str()),
                            RD_KAFKA_V_KEY(const_cast<char*>(key.data()), key.size()),
                            RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()),
                            RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(callback),
                            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
    if (err) rd_kafka_headers_destroy(hdrs);
  }
  if (err) delete callback;  // not queued: never delivered
  if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
    metrics::Default()
        .GetCounter("sb_kafka_queue_full_total", "Produce calls refused by a full local queue")
        .Inc();
    return absl::ResourceExhaustedError("kafka producer queue is full");
  }
  if (err) return absl::InternalError(std::string("kafka produce: ") + rd_kafka_err2str(err));
  return absl::OkStatus();
}

absl::Status KafkaProducer::Flush(std::chrono::milliseconds timeout) {
  rd_kafka_resp_err_t err = rd_kafka_flush(rk_, static_cast<int>(timeout.count()));
  if (err) return absl::DeadlineExceededError("kafka flush: messages still queued");
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<KafkaConsumer>> KafkaConsumer::Create(
    const std::string& brokers, const std::string& group, const std::vector<std::string>& topics,
    const KafkaConfig& extra, OffsetLookup offset_lookup, OutOfRange on_out_of_range) {
  auto settings = WithSecurity({{"bootstrap.servers", brokers},
                                {"group.id", group},
                                {"enable.auto.commit", "false"},
                                {"auto.offset.reset", "earliest"},
                                {"allow.auto.create.topics", "true"},
                                {"session.timeout.ms", "10000"},
                                {"heartbeat.interval.ms", "1000"},
                                {"topic.metadata.refresh.interval.ms", "2000"}},
                               extra);
  if (!settings.ok()) return settings.status();
  auto conf = MakeConf(*settings);
  if (!conf.ok()) return conf.status();
  std::unique_ptr<KafkaConsumer> c(new KafkaConsumer());
  c->offset_lookup_ = std::move(offset_lookup);
  c->on_out_of_range_ = std::move(on_out_of_range);
  rd_kafka_conf_set_opaque(*conf, c.get());
  rd_kafka_conf_set_rebalance_cb(
      *conf, [](rd_kafka_t* rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t* parts,
                void* opaque) { OnRebalance(rk, err, parts, opaque); });
  char err[512];
  c->rk_ = rd_kafka_new(RD_KAFKA_CONSUMER, *conf, err, sizeof err);
  if (c->rk_ == nullptr) {
    rd_kafka_conf_destroy(*conf);
    return absl::InvalidArgumentError(std::string("kafka consumer: ") + err);
  }
  rd_kafka_poll_set_consumer(c->rk_);
  rd_kafka_topic_partition_list_t* subs = rd_kafka_topic_partition_list_new(
      static_cast<int>(topics.size()));
  for (const auto& t : topics) rd_kafka_topic_partition_list_add(subs, t.c_str(), RD_KAFKA_PARTITION_UA);
  rd_kafka_resp_err_t serr = rd_kafka_subscribe(c->rk_, subs);
  rd_kafka_topic_partition_list_destroy(subs);
  if (serr) return absl::InternalError(std::string("kafka subscribe: ") + rd_kafka_err2str(serr));
  return c;
}

void KafkaConsumer::OnRebalance(rd_kafka_t* rk, int err, void* partitions, void* opaque) {
  auto* self = static_cast<KafkaConsumer*>(opaque);
  auto* parts = static_cast<rd_kafka_topic_partition_list_t*>(partitions);
  self->start_.clear();
  self->paused_.clear();
  if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
    for (int i = 0; i < parts->cnt; ++i) {
      auto& p = parts->elems[i];
      StartAt at;
      if (self->offset_lookup_) at = self->offset_lookup_(p.topic, p.partition);
      if (at.offset) p.offset = *at.offset;
      self->start_[{p.topic, p.partition}] = p.offset;
      if (at.paused) self->paused_.insert({p.topic, p.partition});
      spdlog::info("kafka assigned {}[{}] from offset {}{}", p.topic, p.partition, p.offset,
                   at.paused ? ", paused" : "");
    }
    rd_kafka_assign(rk, parts);
    // Assigning resumes every partition it names: pause after it.
    self->PauseAgain();
  } else {
    rd_kafka_assign(rk, nullptr);
  }
}

KafkaConsumer::~KafkaConsumer() {
  if (rk_ == nullptr) return;
  rd_kafka_consumer_close(rk_);
  rd_kafka_destroy(rk_);
}

absl::StatusOr<std::optional<KafkaMessage>> KafkaConsumer::Poll(std::chrono::milliseconds timeout) {
  rd_kafka_message_t* m = rd_kafka_consumer_poll(rk_, static_cast<int>(timeout.count()));
  if (m == nullptr) return std::optional<KafkaMessage>();
  if (m->err == RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET && m->rkt != nullptr) {
    // The position is outside the log and auto.offset.reset=error: stop
    // fetching the partition and let the owner decide.
    const std::string topic = rd_kafka_topic_name(m->rkt);
    const int32_t partition = m->partition;
    const int64_t offset = m->offset;
    spdlog::warn("kafka {}[{}]: {}", topic, partition, rd_kafka_message_errstr(m));
    rd_kafka_message_destroy(m);
    paused_.insert({topic, partition});
    PauseAgain();
    if (on_out_of_range_) on_out_of_range_(topic, partition, offset);
    return std::optional<KafkaMessage>();
  }
  if (m->err) {
    const bool benign = m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF;
    std::string why = rd_kafka_message_errstr(m);
    rd_kafka_message_destroy(m);
    if (benign) return std::optional<KafkaMessage>();
    return absl::UnavailableError("kafka consume: " + why);
  }
  KafkaMessage out;
  out.topic = rd_kafka_topic_name(m->rkt);
  out.partition = m->partition;
  out.offset = m->offset;
  if (m->key) out.key.assign(static_cast<const char*>(m->key), m->key_len);
  if (m->payload) out.value.assign(static_cast<const char*>(m->payload), m->len);
  rd_kafka_headers_t* hdrs = nullptr;  // owned by the message
  if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
    const char* name = nullptr;
    const void* v = nullptr;
    size_t size = 0;
    for (size_t i = 0;
         rd_kafka_header_get_all(hdrs, i, &name, &v, &size) == RD_KAFKA_RESP_ERR_NO_ERROR; ++i) {
      out.headers.emplace_back(name, v ? std::string(static_cast<const char*>(v), size) : "");
    }
  }
  rd_kafka_message_destroy(m);
  return std::optional<KafkaMessage>(std::move(out));
}

absl::Status KafkaConsumer::PollBatch(size_t max, std::chrono::milliseconds wait,
                                      std::vector<KafkaMessage>& out) {
  for (size_t taken = 0; taken < max; ++taken, wait = std::chrono::milliseconds(0)) {
    auto polled = Poll(wait);
    if (!polled.ok()) return polled.status();
    if (!polled->has_value()) break;
    out.push_back(std::move(**polled));
  }
  return absl::OkStatus();
}

void KafkaConsumer::CommitBatch(const std::vector<KafkaMessage>& batch) {
  std::map<Partition, const KafkaMessage*> last;
  for (const KafkaMessage& msg : batch) last[{msg.topic, msg.partition}] = &msg;
  for (const auto& [partition, msg] : last) Commit(*msg);
}

void KafkaConsumer::Commit(const KafkaMessage& msg) {
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(list, msg.topic.c_str(), msg.partition)->offset = msg.offset + 1;
  rd_kafka_commit(rk_, list, 1);
  rd_kafka_topic_partition_list_destroy(list);
}

static_assert(KafkaConsumer::kBeginning == RD_KAFKA_OFFSET_BEGINNING);

absl::StatusOr<KafkaConsumer::Watermarks> KafkaConsumer::QueryWatermarks(
    const std::string& topic, int32_t partition, std::chrono::milliseconds timeout) {
  Watermarks w;
  rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(
      rk_, topic.c_str(), partition, &w.low, &w.high, static_cast<int>(timeout.count()));
  if (err) {
    return absl::UnavailableError("kafka watermarks of " + topic + "[" + std::to_string(partition) +
                                  "]: " + rd_kafka_err2str(err));
  }
  return w;
}

absl::Status KafkaConsumer::Resume(const std::string& topic, int32_t partition, int64_t offset) {
  // A partition stopped by an offset out of range is in no fetch state a
  // seek can move (librdkafka refuses it with "Erroneous state"): assign
  // again, the partition from `offset` and every other from where it is.
  rd_kafka_topic_partition_list_t* list = PositionedAssignment();
  if (list == nullptr) return absl::UnavailableError("kafka: the consumer's assignment is unknown");
  const Partition target{topic, partition};
  bool found = false;
  for (int i = 0; i < list->cnt; ++i) {
    auto& p = list->elems[i];
    if (Partition{p.topic, p.partition} == target) {
      p.offset = offset;
      found = true;
    }
  }
  if (!found) {
    rd_kafka_topic_partition_list_destroy(list);
    return absl::FailedPreconditionError("kafka: " + topic + "[" + std::to_string(partition) +
                                         "] is not assigned to this consumer");
  }
  start_[target] = offset;
  paused_.erase(target);
  const rd_kafka_resp_err_t err = rd_kafka_assign(rk_, list);
  rd_kafka_topic_partition_list_destroy(list);
  // Whether assigning keeps a pause depends on the librdkafka version: pause
  // the paused ones again at once (before they fetch from an offset that may
  // lie outside their log), then resume the partition.
  PauseAgain();
  rd_kafka_topic_partition_list_t* resumed = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(resumed, topic.c_str(), partition);
  rd_kafka_resume_partitions(rk_, resumed);
  rd_kafka_topic_partition_list_destroy(resumed);
  if (err) {
    return absl::UnavailableError("kafka: assigning " + topic + "[" + std::to_string(partition) +
                                  "] from " + std::to_string(offset) + ": " +
                                  rd_kafka_err2str(err));
  }
  return absl::OkStatus();
}

void KafkaConsumer::PauseAgain() {
  if (paused_.empty()) return;
  rd_kafka_topic_partition_list_t* list =
      rd_kafka_topic_partition_list_new(static_cast<int>(paused_.size()));
  for (const auto& [topic, partition] : paused_) {
    rd_kafka_topic_partition_list_add(list, topic.c_str(), partition);
  }
  rd_kafka_pause_partitions(rk_, list);
  rd_kafka_topic_partition_list_destroy(list);
}

rd_kafka_topic_partition_list_t* KafkaConsumer::PositionedAssignment() {
  rd_kafka_topic_partition_list_t* list = nullptr;
  if (rd_kafka_assignment(rk_, &list) != RD_KAFKA_RESP_ERR_NO_ERROR) return nullptr;
  rd_kafka_position(rk_, list);
  for (int i = 0; i < list->cnt; ++i) {
    auto& p = list->elems[i];
    if (p.offset >= 0) continue;
    // Nothing consumed yet: where it was assigned from.
    if (auto it = start_.find({p.topic, p.partition}); it != start_.end()) p.offset = it->second;
  }
  return list;
}

std::vector<KafkaConsumer::Position> KafkaConsumer::Positions() {
  std::vector<Position> out;
  rd_kafka_topic_partition_list_t* list = PositionedAssignment();
  if (list == nullptr) return out;
  for (int i = 0; i < list->cnt; ++i) {
    const auto& p = list->elems[i];
    if (p.offset < 0) continue;  // not known yet (or from the log's start)
    out.push_back({p.topic, p.partition, p.offset});
  }
  rd_kafka_topic_partition_list_destroy(list);
  return out;
}

bool KafkaConsumer::Assigned(const std::string& topic, int32_t partition) {
  rd_kafka_topic_partition_list_t* list = nullptr;
  if (rd_kafka_assignment(rk_, &list) != RD_KAFKA_RESP_ERR_NO_ERROR) return false;
  const bool found = rd_kafka_topic_partition_list_find(list, topic.c_str(), partition) != nullptr;
  rd_kafka_topic_partition_list_destroy(list);
  return found;
}

}  // namespace sb
