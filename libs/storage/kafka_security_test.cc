// The --kafka_* security flags: their mapping onto librdkafka's settings, the
// combinations refused at startup, and that every client is configured with
// them.
#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <fstream>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "gtest/gtest.h"
#include "storage/kafka.h"

ABSL_DECLARE_FLAG(std::string, kafka_security_protocol);
ABSL_DECLARE_FLAG(std::string, kafka_sasl_mechanism);
ABSL_DECLARE_FLAG(std::string, kafka_sasl_username);
ABSL_DECLARE_FLAG(std::string, kafka_sasl_password);
ABSL_DECLARE_FLAG(std::string, kafka_ssl_ca);

namespace sb {
namespace {

class TempFile {
 public:
  TempFile() {
    char name[] = "/tmp/sb_kafka_ca_XXXXXX";
    const int fd = mkstemp(name);
    path_ = name;
    if (fd >= 0) close(fd);
    std::ofstream(path_) << "-----BEGIN CERTIFICATE-----\n";
  }
  ~TempFile() { std::remove(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(KafkaSecurityTest, PlaintextIsTheDefaultAndSaysSo) {
  auto config = KafkaSecurityConfig(KafkaSecurity{});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(*config, (KafkaConfig{{"security.protocol", "plaintext"}}));
}

TEST(KafkaSecurityTest, SaslSslMapsEverySetting) {
  TempFile ca;
  auto config = KafkaSecurityConfig({.protocol = "SASL_SSL",
                                     .sasl_mechanism = "scram-sha-512",
                                     .sasl_username = "billing",
                                     .sasl_password = "s3cret",
                                     .ssl_ca = ca.path()});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(*config, (KafkaConfig{{"security.protocol", "sasl_ssl"},
                                  {"sasl.mechanisms", "SCRAM-SHA-512"},
                                  {"sasl.username", "billing"},
                                  {"sasl.password", "s3cret"},
                                  {"ssl.ca.location", ca.path()}}));
}

TEST(KafkaSecurityTest, SaslPlaintextAndSslAlone) {
  auto sasl = KafkaSecurityConfig({.protocol = "sasl_plaintext",
                                   .sasl_mechanism = "PLAIN",
                                   .sasl_username = "u",
                                   .sasl_password = "p"});
  ASSERT_TRUE(sasl.ok()) << sasl.status();
  EXPECT_EQ(sasl->at("sasl.mechanisms"), "PLAIN");
  EXPECT_EQ(sasl->count("ssl.ca.location"), 0u);

  auto tls = KafkaSecurityConfig({.protocol = "ssl"});
  ASSERT_TRUE(tls.ok()) << tls.status();
  EXPECT_EQ(*tls, (KafkaConfig{{"security.protocol", "ssl"}}));  // the system's CAs
}

TEST(KafkaSecurityTest, RefusesWhatWouldNotDoWhatTheOperatorMeant) {
  struct Case {
    KafkaSecurity security;
    std::string names;  // the flag the message must name
  };
  const std::vector<Case> cases = {
      {{.protocol = "tls"}, "--kafka_security_protocol=tls"},
      {{.protocol = "sasl_ssl", .sasl_username = "u", .sasl_password = "p"},
       "--kafka_sasl_mechanism"},
      {{.protocol = "sasl_ssl",
        .sasl_mechanism = "GSSAPI",
        .sasl_username = "u",
        .sasl_password = "p"},
       "--kafka_sasl_mechanism=GSSAPI"},
      {{.protocol = "sasl_plaintext", .sasl_mechanism = "PLAIN", .sasl_username = "u"},
       "--kafka_sasl_password"},
      {{.protocol = "sasl_plaintext", .sasl_mechanism = "PLAIN", .sasl_password = "p"},
       "--kafka_sasl_username"},
      // Credentials or a CA that the protocol would silently ignore.
      {{.protocol = "plaintext", .sasl_username = "u"}, "--kafka_sasl_*"},
      {{.protocol = "ssl", .sasl_mechanism = "PLAIN"}, "--kafka_sasl_*"},
      {{.protocol = "sasl_plaintext",
        .sasl_mechanism = "PLAIN",
        .sasl_username = "u",
        .sasl_password = "p",
        .ssl_ca = "/etc/hostname"},
       "--kafka_ssl_ca"},
      {{.protocol = "ssl", .ssl_ca = "/nonexistent/ca.pem"}, "--kafka_ssl_ca=/nonexistent/ca.pem"},
  };
  for (const auto& c : cases) {
    auto config = KafkaSecurityConfig(c.security);
    ASSERT_FALSE(config.ok()) << c.names;
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(config.status().message().find(c.names), std::string::npos) << config.status();
  }
}

// Restores the flags a test changed.
class KafkaSecurityFlagsTest : public ::testing::Test {
 protected:
  ~KafkaSecurityFlagsTest() override {
    absl::SetFlag(&FLAGS_kafka_security_protocol, "plaintext");
    absl::SetFlag(&FLAGS_kafka_sasl_mechanism, "");
    absl::SetFlag(&FLAGS_kafka_sasl_username, "");
    absl::SetFlag(&FLAGS_kafka_sasl_password, "");
    absl::SetFlag(&FLAGS_kafka_ssl_ca, "");
  }
};

TEST_F(KafkaSecurityFlagsTest, EveryClientIsConfiguredFromTheFlags) {
  // librdkafka accepts the settings (it was built with SASL and TLS); no
  // broker is needed to create a client.
  absl::SetFlag(&FLAGS_kafka_security_protocol, "sasl_ssl");
  absl::SetFlag(&FLAGS_kafka_sasl_mechanism, "SCRAM-SHA-256");
  absl::SetFlag(&FLAGS_kafka_sasl_username, "worker");
  absl::SetFlag(&FLAGS_kafka_sasl_password, "pw");
  EXPECT_EQ(KafkaSecurityFromFlags().sasl_username, "worker");
  auto producer = KafkaProducer::Create("127.0.0.1:1");
  EXPECT_TRUE(producer.ok()) << producer.status();
  auto consumer = KafkaConsumer::Create("127.0.0.1:1", "g", {"t"});
  EXPECT_TRUE(consumer.ok()) << consumer.status();
}

TEST_F(KafkaSecurityFlagsTest, ABadFlagFailsEveryClient) {
  absl::SetFlag(&FLAGS_kafka_security_protocol, "sasl_ssl");  // no mechanism, user or password
  auto producer = KafkaProducer::Create("127.0.0.1:1");
  ASSERT_FALSE(producer.ok());
  EXPECT_NE(producer.status().message().find("--kafka_sasl_mechanism"), std::string::npos);
  auto consumer = KafkaConsumer::Create("127.0.0.1:1", "g", {"t"});
  ASSERT_FALSE(consumer.ok());
  EXPECT_EQ(consumer.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace sb
