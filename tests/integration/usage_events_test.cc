// Billing against forged usage: the real billing binary, a real PostgreSQL
// (migrated) and the dev broker. Events are produced straight to
// usage.events, as anyone who can reach Kafka could; only the one signed with
// the workers' key and describing possible usage may reach the ledger, and
// every other is counted by reason on /metrics.
#include <chrono>
#include <fstream>
#include <map>
#include <thread>

#include "absl/strings/str_cat.h"
#include "core/crypto.h"
#include "gtest/gtest.h"
#include "http/http_client.h"
#include "storage/kafka.h"
#include "storage/message_signing.h"
#include "storage/pg.h"
#include "support/infra.h"
#include "support/process.h"
#include "switchboard/billing/v1/billing.pb.h"

namespace sb {
namespace {

namespace bpb = switchboard::billing::v1;
using sb::testing::FreePort;
using sb::testing::Infra;
using sb::testing::Process;
using sb::testing::RunCommand;
using sb::testing::Tail;

constexpr char kTopic[] = "usage.events";

std::string Billing() { return Infra::BuildDir() + "/services/billing/billing"; }
std::string Worker() { return Infra::BuildDir() + "/services/inference-worker/inference-worker"; }

class UsageEventsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto infra = Infra::Start({.postgres = true, .redis = false, .kafka = true});
    ASSERT_TRUE(infra.ok()) << infra.status();
    infra_ = std::move(*infra).release();
    key_file_ = infra_->dir() + "/usage_signing.key";
    std::ofstream(key_file_) << RandomHex(32) << "\n";
  }
  static void TearDownTestSuite() {
    delete infra_;
    infra_ = nullptr;
  }

  // Starts billing and waits until it is healthy.
  void StartBilling() {
    metrics_port_ = FreePort();
    billing_ = Process("billing",
                       {Billing(), "--grpc_port=" + std::to_string(FreePort()),
                        "--metrics_port=" + std::to_string(metrics_port_), "--drain_seconds=1",
                        "--pg=" + infra_->pg_uri(), "--kafka_brokers=" + infra_->kafka(),
                        "--usage_signing_key_file=" + key_file_, "--insecure_internal"},
                       infra_->dir() + "/billing.log");
    for (int i = 0; i < 150; ++i) {
      auto r = http::Fetch(
          {.port = metrics_port_, .target = "/healthz", .timeout = std::chrono::milliseconds(500)});
      if (r.ok() && r->status == 200) return;
      ASSERT_TRUE(billing_.running()) << Tail(billing_.log_path(), 30);
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    FAIL() << "billing did not start:\n" << Tail(billing_.log_path(), 30);
  }

  // The value of one series on billing's /metrics, 0 when absent.
  double Metric(const std::string& series) {
    auto r = http::Fetch({.port = metrics_port_, .target = "/metrics"});
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return -1;
    const std::string prefix = series + " ";
    for (size_t pos = 0; pos < r->body.size();) {
      size_t end = r->body.find('\n', pos);
      if (end == std::string::npos) end = r->body.size();
      const std::string line = r->body.substr(pos, end - pos);
      if (line.rfind(prefix, 0) == 0) return std::stod(line.substr(prefix.size()));
      pos = end + 1;
    }
    return 0;
  }
  double Rejected(const std::string& reason) {
    return Metric(absl::StrCat("sb_billing_usage_events_rejected_total{reason=\"", reason, "\"}"));
  }

  // request_id -> (input, output) of an org's ledger rows.
  std::map<std::string, std::pair<int, int>> Ledger(const std::string& org) {
    PgPool pg(infra_->pg_uri(), 1);
    auto rows = pg.Run<std::map<std::string, std::pair<int, int>>>([&](pqxx::connection& c) {
      pqxx::read_transaction tx(c);
      std::map<std::string, std::pair<int, int>> out;
      for (const auto& row :
           tx.exec_params("SELECT request_id, input_tokens, output_tokens FROM usage_ledger "
                          "WHERE org_id = $1 OR org_id = ''",
                          org)) {
        out[row[0].as<std::string>()] = {row[1].as<int>(), row[2].as<int>()};
      }
      return out;
    });
    EXPECT_TRUE(rows.ok()) << rows.status();
    return rows.ok() ? *rows : std::map<std::string, std::pair<int, int>>();
  }
  bool WaitForLedger(const std::string& org, const std::string& request_id) {
    for (int i = 0; i < 200; ++i) {
      if (Ledger(org).count(request_id)) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }

  static bpb::UsageEvent Event(const std::string& org, const std::string& request_id, int in,
                               int out) {
    bpb::UsageEvent e;
    e.set_request_id(request_id);
    e.set_org_id(org);
    e.set_model("sim-small");
    e.set_worker_id("w1");
    e.set_input_tokens(in);
    e.set_output_tokens(out);
    e.set_stop_reason("end_turn");
    e.set_at_unix_ms(absl::ToUnixMillis(absl::Now()));
    return e;
  }

  static Infra* infra_;
  static std::string key_file_;
  int metrics_port_ = 0;
  Process billing_;
};

Infra* UsageEventsTest::infra_ = nullptr;
std::string UsageEventsTest::key_file_;

TEST_F(UsageEventsTest, OnlyTheSignedPossibleEventReachesTheLedger) {
  ASSERT_NO_FATAL_FAILURE(StartBilling());
  auto signer = MessageSigner::FromKeyFile(key_file_);
  ASSERT_TRUE(signer.ok()) << signer.status();
  const MessageSigner attacker = *MessageSigner::FromKeys({RandomHex(32)});
  auto producer = KafkaProducer::Create(infra_->kafka());
  ASSERT_TRUE(producer.ok()) << producer.status();

  // Every message carries the valid event's request id as its Kafka key, so
  // all land on one partition, the valid one last: refused events must not
  // hold it up.
  const std::string key = "forge-valid";
  auto produce = [&](const bpb::UsageEvent& e, const KafkaHeaders& headers) {
    ASSERT_TRUE((*producer)->Publish(kTopic, key, e.SerializeAsString(), headers).ok());
  };
  auto sign = [&](const MessageSigner& s, const bpb::UsageEvent& e) {
    return KafkaHeaders{{kSignatureHeader, s.Sign(key, e.SerializeAsString())}};
  };
  // A worker's key in the wrong hands (or a bug) still cannot produce the
  // impossible.
  const bpb::UsageEvent negative = Event("org-forge", "forge-negative", -1'000'000, -5);
  produce(negative, sign(*signer, negative));
  const bpb::UsageEvent no_org = Event("", "forge-no-org", 10, 10);
  produce(no_org, sign(*signer, no_org));
  const bpb::UsageEvent no_id = Event("org-forge", "", 10, 10);
  produce(no_id, sign(*signer, no_id));
  const bpb::UsageEvent absurd = Event("org-forge", "forge-absurd", 5, 50'000'000);
  produce(absurd, sign(*signer, absurd));
  // Without the key: unsigned, and signed with another key.
  const bpb::UsageEvent unsigned_event = Event("org-forge", "forge-unsigned", 7, 7);
  produce(unsigned_event, {});
  const bpb::UsageEvent wrong = Event("org-forge", "forge-wrong-key", 8, 8);
  produce(wrong, sign(attacker, wrong));
  // A worker's genuine signature on a value changed after signing.
  const bpb::UsageEvent genuine = Event("org-forge", "forge-tampered", 3, 4);
  bpb::UsageEvent tampered = genuine;
  tampered.set_output_tokens(0);
  produce(tampered, sign(*signer, genuine));
  ASSERT_TRUE((*producer)
                  ->Publish(kTopic, key, "\xff\xff not a protobuf",
                            {{kSignatureHeader, signer->Sign(key, "\xff\xff not a protobuf")}})
                  .ok());
  const bpb::UsageEvent valid = Event("org-forge", "forge-valid", 120, 45);
  produce(valid, sign(*signer, valid));
  ASSERT_TRUE((*producer)->Flush(std::chrono::seconds(10)).ok());

  ASSERT_TRUE(WaitForLedger("org-forge", "forge-valid")) << Tail(billing_.log_path(), 30);
  const auto ledger = Ledger("org-forge");
  EXPECT_EQ(ledger.size(), 1u) << "only the valid event is in the ledger";
  EXPECT_EQ(ledger.at("forge-valid"), std::make_pair(120, 45));

  EXPECT_EQ(Rejected("signature"), 3);
  EXPECT_EQ(Rejected("negative_tokens"), 1);
  EXPECT_EQ(Rejected("empty_org"), 1);
  EXPECT_EQ(Rejected("empty_request_id"), 1);
  EXPECT_EQ(Rejected("too_many_tokens"), 1);
  EXPECT_EQ(Rejected("malformed"), 1);
  EXPECT_EQ(Metric("sb_billing_events_total{outcome=\"recorded\"}"), 1);
  EXPECT_EQ(Metric("sb_billing_events_total{outcome=\"rejected\"}"), 8);
  // Each refusal is a warning naming the request and the reason.
  const std::string log = Tail(billing_.log_path(), 200);
  EXPECT_NE(log.find("request_id=forge-negative usage event refused (negative_tokens)"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("request_id=forge-valid usage event refused (signature)"), std::string::npos)
      << log;

  // The refused events' offsets were stored with the rest: a restarted
  // billing does not read them again.
  billing_.Stop();
  ASSERT_NO_FATAL_FAILURE(StartBilling());
  const bpb::UsageEvent after = Event("org-forge", "forge-after-restart", 1, 2);
  ASSERT_TRUE((*producer)
                  ->Publish(kTopic, key, after.SerializeAsString(),
                            {{kSignatureHeader, signer->Sign(key, after.SerializeAsString())}})
                  .ok());
  ASSERT_TRUE((*producer)->Flush(std::chrono::seconds(10)).ok());
  ASSERT_TRUE(WaitForLedger("org-forge", "forge-after-restart")) << Tail(billing_.log_path(), 30);
  EXPECT_EQ(Ledger("org-forge").size(), 2u);
  EXPECT_EQ(Metric("sb_billing_events_total{outcome=\"rejected\"}"), 0);
  EXPECT_EQ(Metric("sb_billing_events_total{outcome=\"recorded\"}"), 1);
}

// Fail closed: a service that would sign or verify usage does not start
// without a usable key, nor with Kafka security it cannot honour.
TEST_F(UsageEventsTest, BillingAndWorkersRefuseToStartWithoutAKey) {
  const std::vector<std::string> billing = {Billing(), "--grpc_port=" + std::to_string(FreePort()),
                                            "--metrics_port=" + std::to_string(FreePort()),
                                            "--pg=" + infra_->pg_uri(),
                                            "--kafka_brokers=" + infra_->kafka(),
                                            "--insecure_internal"};
  const std::vector<std::string> worker = {Worker(), "--grpc_port=" + std::to_string(FreePort()),
                                           "--metrics_port=" + std::to_string(FreePort()),
                                           "--kafka_brokers=" + infra_->kafka(),
                                           "--insecure_internal"};
  const std::string short_key = infra_->dir() + "/short.key";
  std::ofstream(short_key) << "tooshort\n";
  for (const auto& base : {billing, worker}) {
    std::string out;
    EXPECT_NE(RunCommand(base, &out), 0);
    EXPECT_NE(out.find("--usage_signing_key_file (or SWITCHBOARD_USAGE_SIGNING_KEY_FILE) is "
                       "required"),
              std::string::npos)
        << out;

    auto with = [&](std::vector<std::string> extra) {
      std::vector<std::string> argv = base;
      argv.insert(argv.end(), extra.begin(), extra.end());
      return argv;
    };
    out.clear();
    EXPECT_NE(RunCommand(with({"--usage_signing_key_file=" + infra_->dir() + "/absent.key"}), &out),
              0);
    EXPECT_NE(out.find("absent.key"), std::string::npos) << out;
    out.clear();
    EXPECT_NE(RunCommand(with({"--usage_signing_key_file=" + short_key}), &out), 0);
    EXPECT_NE(out.find("at least 32"), std::string::npos) << out;
    out.clear();
    EXPECT_NE(RunCommand(with({"--usage_signing_key_file=" + key_file_,
                               "--kafka_security_protocol=sasl_ssl"}),
                         &out),
              0);
    EXPECT_NE(out.find("--kafka_sasl_mechanism"), std::string::npos) << out;
  }
}

}  // namespace
}  // namespace sb
