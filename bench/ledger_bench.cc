// Billing's ledger throughput (issue 13), on a throwaway PostgreSQL and the
// dev broker started here:
//   1. Ledger::Record, one transaction per event (what billing did), against
//      Ledger::RecordBatch, one transaction per batch, on the same kind of
//      events (each request a running report then its final one), with
//      PostgreSQL's CPU per event (every postgres process of the instance);
//   2. the whole consumer (MeteringConsumer: poll, signature check, batch
//      write) draining a backlog of signed events from the dev broker.
//
//   build/bench/ledger_bench [--single_events=4000] [--batch_events=40000]
//                            [--batch=500] [--consumer_events=60000]
#include <dirent.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "bench_support.h"
#include "billing/ledger.h"
#include "billing/metering_consumer.h"
#include "storage/kafka.h"
#include "storage/message_signing.h"
#include "support/infra.h"

ABSL_FLAG(int, single_events, 4000, "Events recorded one transaction each");
ABSL_FLAG(int, batch_events, 40000, "Events recorded in batches");
ABSL_FLAG(int, batch, 500, "Events per batch");
ABSL_FLAG(int, consumer_events, 60000, "Events the consumer drains from the broker (0: skip)");

namespace {

namespace bpb = switchboard::billing::v1;
using Clock = std::chrono::steady_clock;

// The instance's processes: the postmaster (its pid file) and its children.
std::vector<pid_t> PostgresPids(const std::string& data_dir) {
  std::ifstream pidfile(data_dir + "/postmaster.pid");
  pid_t postmaster = 0;
  pidfile >> postmaster;
  std::vector<pid_t> out{postmaster};
  DIR* proc = opendir("/proc");
  while (dirent* d = proc ? readdir(proc) : nullptr) {
    const pid_t pid = static_cast<pid_t>(std::atoi(d->d_name));
    if (pid <= 0) continue;
    std::ifstream stat("/proc/" + std::string(d->d_name) + "/stat");
    std::string line;
    std::getline(stat, line);
    // pid (comm) state ppid ...: comm may hold spaces, so read after ')'.
    const size_t close = line.rfind(')');
    if (close == std::string::npos) continue;
    char state = 0;
    int ppid = 0;
    if (std::sscanf(line.c_str() + close + 1, " %c %d", &state, &ppid) == 2 && ppid == postmaster) {
      out.push_back(pid);
    }
  }
  if (proc) closedir(proc);
  return out;
}

double PostgresCpuUs(const std::string& data_dir) {
  double us = 0;
  for (pid_t pid : PostgresPids(data_dir)) us += sb::bench::CpuUs(pid);
  return us;
}

// Request i's report: running (half its output) or final.
bpb::UsageEvent Report(const std::string& prefix, int i, bool final) {
  bpb::UsageEvent e;
  e.set_request_id(prefix + std::to_string(i));
  e.set_org_id("org-" + std::to_string(i % 50));
  e.set_model(i % 2 ? "sim-small" : "sim-large");
  e.set_worker_id("w" + std::to_string(i % 4));
  e.set_source("api");
  e.set_input_tokens(200 + i % 300);
  e.set_output_tokens(final ? 64 + i % 100 : 32);
  e.set_stop_reason(final ? "end_turn" : "");
  e.set_final(final);
  e.set_at_unix_ms(1'795'000'000'000 + i * 10LL);
  return e;
}

// n reports as they arrive: each block of `block` holds the running
// reports of block/2 new requests and the finals of the block before's (a
// request's reports come about a second apart).
std::vector<bpb::UsageEvent> Arrivals(const std::string& prefix, int n, int block) {
  std::vector<bpb::UsageEvent> out;
  const int half = std::max(1, block / 2);
  for (int b = 0; static_cast<int>(out.size()) < n; ++b) {
    for (int k = 0; k < half; ++k) out.push_back(Report(prefix, b * half + k, false));
    for (int k = 0; k < half && b > 0; ++k) out.push_back(Report(prefix, (b - 1) * half + k, true));
  }
  out.resize(n);
  return out;
}

struct Phase {
  double seconds = 0;
  double pg_cpu_us = 0;
};

void Print(const char* name, int events, const Phase& p) {
  std::printf(
      "%-34s %8d events  %7.2f s  %9.0f events/s  PostgreSQL %6.1f us/event (%.3f of a core "
      "per 1,000 events/s)\n",
      name, events, p.seconds, events / p.seconds, p.pg_cpu_us / events,
      p.pg_cpu_us / events * 1000 / 1e6);
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  auto infra = sb::testing::Infra::Start({.postgres = true, .redis = false, .kafka = true});
  if (!infra.ok()) {
    std::fprintf(stderr, "infra: %s\n", infra.status().ToString().c_str());
    return 1;
  }
  const std::string data_dir = (*infra)->dir() + "/pg/data";
  sb::PgPool pg((*infra)->pg_uri(), 1);
  sb::billing::Ledger ledger(pg);
  if (!ledger.NextOffset("warm", "t", 0).ok()) return 1;  // the connection, opened

  const int single = absl::GetFlag(FLAGS_single_events);
  Phase one;
  {
    const auto events = Arrivals("one-", single, absl::GetFlag(FLAGS_batch));
    double cpu0 = PostgresCpuUs(data_dir);
    const auto t0 = Clock::now();
    for (int i = 0; i < single; ++i) {
      auto r = ledger.Record(events[i], {"bench", "usage.events", 0, i});
      if (!r.ok()) {
        std::fprintf(stderr, "record: %s\n", r.status().ToString().c_str());
        return 1;
      }
    }
    one.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    one.pg_cpu_us = PostgresCpuUs(data_dir) - cpu0;
  }

  const int batched_events = absl::GetFlag(FLAGS_batch_events);
  const int batch = absl::GetFlag(FLAGS_batch);
  Phase many;
  {
    const auto all = Arrivals("many-", batched_events, batch);
    double cpu0 = PostgresCpuUs(data_dir);
    const auto t0 = Clock::now();
    for (int i = 0; i < batched_events; i += batch) {
      std::vector<bpb::UsageEvent> events;
      std::vector<sb::billing::KafkaPosition> consumed;
      for (int j = i; j < std::min(batched_events, i + batch); ++j) {
        events.push_back(all[j]);
        consumed.push_back({"bench", "usage.events", 1, j});
      }
      auto r = ledger.RecordBatch(events, consumed);
      if (!r.ok()) {
        std::fprintf(stderr, "record batch: %s\n", r.status().ToString().c_str());
        return 1;
      }
    }
    many.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    many.pg_cpu_us = PostgresCpuUs(data_dir) - cpu0;
  }
  std::printf("ledger writes (one PostgreSQL connection, synchronous_commit on)\n");
  Print("one transaction per event", single, one);
  char name[64];
  std::snprintf(name, sizeof name, "one transaction per %d events", batch);
  Print(name, batched_events, many);
  std::printf("batched / one by one: %.1fx events/s, %.1fx less PostgreSQL CPU per event\n",
              (batched_events / many.seconds) / (single / one.seconds),
              (one.pg_cpu_us / single) / (many.pg_cpu_us / batched_events));

  const int consumer_events = absl::GetFlag(FLAGS_consumer_events);
  if (consumer_events <= 0) return 0;
  // A backlog of signed events (running then final for each request), then
  // the consumer drains it.
  const sb::MessageSigner signer = *sb::MessageSigner::FromKeys({std::string(64, 'k')});
  auto producer = sb::KafkaProducer::Create((*infra)->kafka());
  if (!producer.ok()) return 1;
  const auto backlog = Arrivals("drain-", consumer_events, batch);
  int requests = 0;
  for (const auto& e : backlog) requests += e.final() ? 1 : 0;
  for (const bpb::UsageEvent& e : backlog) {
    const std::string value = e.SerializeAsString();
    while (true) {
      auto st = (*producer)->Publish("usage.bench", e.request_id(), value,
                                     {{sb::kSignatureHeader, signer.Sign(e.request_id(), value)}});
      if (st.ok()) break;
      (*producer)->Flush(std::chrono::milliseconds(100)).IgnoreError();
    }
  }
  if (!(*producer)->Flush(std::chrono::seconds(60)).ok()) return 1;
  sb::PgPool consumer_pg((*infra)->pg_uri(), 2);
  sb::billing::Ledger consumer_ledger(consumer_pg);
  sb::billing::MeteringConsumer consumer(
      consumer_ledger, signer,
      {.brokers = (*infra)->kafka(), .group = "bench", .topic = "usage.bench", .max_batch = batch});
  const double cpu0 = PostgresCpuUs(data_dir);
  const auto t0 = Clock::now();
  if (!consumer.Start().ok()) return 1;
  // Timed from the first row (joining the group takes seconds on the dev
  // broker) to the last request settled.
  int64_t seen = 0;
  std::optional<Clock::time_point> first;
  while (Clock::now() - t0 < std::chrono::minutes(5)) {
    auto n = pg.Run<std::pair<int64_t, int64_t>>([](pqxx::connection& c) {
      pqxx::read_transaction tx(c);
      auto r = tx.exec1(
          "SELECT count(*), count(*) FILTER (WHERE final) FROM usage_ledger "
          "WHERE request_id LIKE 'drain-%'");
      return std::pair{r[0].as<int64_t>(), r[1].as<int64_t>()};
    });
    if (n.ok()) {
      if (n->first > 0 && !first) first = Clock::now();
      seen = n->second;
    }
    if (seen >= requests) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  Phase drain{std::chrono::duration<double>(Clock::now() - first.value_or(t0)).count(),
              PostgresCpuUs(data_dir) - cpu0};
  consumer.Stop();
  if (seen < requests) {
    std::fprintf(stderr, "the consumer settled %lld of %d requests in 5 minutes\n",
                 static_cast<long long>(seen), requests);
    return 1;
  }
  std::printf(
      "\nthe consumer draining a backlog from the dev broker (signature checked, "
      "--ledger_max_batch=%d)\n",
      batch);
  Print("poll, check, write", consumer_events, drain);
  return 0;
}
