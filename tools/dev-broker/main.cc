// dev-broker: a Kafka-protocol broker for development and tests ONLY.
//
// No Kafka broker is packaged for the build machines, so this wraps
// librdkafka's mock cluster (rdkafka_mock.h): produce/consume, consumer
// groups, idempotent producers. It keeps nothing on disk and is not Kafka;
// docker-compose and Kubernetes run Apache Kafka.
//
// The mock cluster listens on random ports. This program puts a forwarder on
// a fixed loopback port (--port) in front of the first mock broker, so that
// clients can bootstrap from a known address; metadata then points them at
// the mock brokers' own ports. --bootstrap_file receives the address to use.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "absl/flags/flag.h"
#include "absl/strings/str_split.h"
#include "core/config.h"

ABSL_FLAG(int, port, 19092, "Fixed loopback port for bootstrapping (0: pick one)");
ABSL_FLAG(int, brokers, 1, "Number of mock brokers");
ABSL_FLAG(std::string, topics, "usage.events,chat.events,safety.audit",
          "Topics to create at start (comma-separated)");
ABSL_FLAG(int, partitions, 4, "Partitions per created topic");
ABSL_FLAG(std::string, bootstrap_file, "", "Write the bootstrap address here once ready");

namespace {

volatile sig_atomic_t g_stop = 0;
void OnSignal(int) { g_stop = 1; }

int Listen(int port, int* bound_port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(fd, 64) != 0) {
    std::perror("dev-broker: listen");
    return -1;
  }
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  *bound_port = ntohs(addr.sin_port);
  return fd;
}

int Dial(const std::string& host_port) {
  const auto colon = host_port.rfind(':');
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(std::stoi(host_port.substr(colon + 1))));
  inet_pton(AF_INET, host_port.substr(0, colon).c_str(), &addr.sin_addr);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

int main(int argc, char** argv) {
  sb::ParseConfig(argc, argv);
  signal(SIGTERM, OnSignal);
  signal(SIGINT, OnSignal);
  signal(SIGPIPE, SIG_IGN);

  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  // The mock brokers' sockets take this client's settings. Without
  // TCP_NODELAY a response written while the previous one is unacknowledged
  // waits for the client's delayed ACK: 40 ms whenever a producer has more
  // than one request in flight (a worker's reports come in bursts, one per
  // sequence each engine step), which a real broker (TCP_NODELAY) never adds.
  if (rd_kafka_conf_set(conf, "socket.nagle.disable", "true", err, sizeof err) !=
      RD_KAFKA_CONF_OK) {
    std::fprintf(stderr, "dev-broker: %s\n", err);
    return 1;
  }
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  if (rk == nullptr) {
    std::fprintf(stderr, "dev-broker: %s\n", err);
    return 1;
  }
  rd_kafka_mock_cluster_t* cluster = rd_kafka_mock_cluster_new(rk, absl::GetFlag(FLAGS_brokers));
  if (cluster == nullptr) {
    std::fprintf(stderr, "dev-broker: cannot start the mock cluster\n");
    return 1;
  }
  for (const auto& t : absl::StrSplit(absl::GetFlag(FLAGS_topics), ',', absl::SkipEmpty())) {
    rd_kafka_mock_topic_create(cluster, std::string(t).c_str(), absl::GetFlag(FLAGS_partitions), 1);
  }
  const std::string mock_bootstrap = rd_kafka_mock_cluster_bootstraps(cluster);
  const std::string first = std::string(*absl::StrSplit(mock_bootstrap, ',').begin());

  int port = 0;
  int listen_fd = Listen(absl::GetFlag(FLAGS_port), &port);
  if (listen_fd < 0) return 1;
  const std::string bootstrap = "127.0.0.1:" + std::to_string(port);
  if (!absl::GetFlag(FLAGS_bootstrap_file).empty()) {
    const std::string path = absl::GetFlag(FLAGS_bootstrap_file);
    std::ofstream(path + ".tmp") << bootstrap << "\n";
    std::rename((path + ".tmp").c_str(), path.c_str());
  }
  std::printf("dev-broker (librdkafka mock cluster, for development and tests only)\n"
              "bootstrap %s -> mock brokers %s\n",
              bootstrap.c_str(), mock_bootstrap.c_str());
  std::fflush(stdout);

  // Forward each accepted connection to the first mock broker.
  std::map<int, int> peer;  // fd -> the fd it forwards to
  while (!g_stop) {
    std::vector<pollfd> fds{{listen_fd, POLLIN, 0}};
    for (const auto& [fd, other] : peer) fds.push_back({fd, POLLIN, 0});
    if (poll(fds.data(), fds.size(), 200) <= 0) continue;
    for (const auto& p : fds) {
      if (!(p.revents & (POLLIN | POLLHUP | POLLERR))) continue;
      if (p.fd == listen_fd) {
        int client = accept(listen_fd, nullptr, nullptr);
        if (client < 0) continue;
        int upstream = Dial(first);
        if (upstream < 0) {
          close(client);
          continue;
        }
        peer[client] = upstream;
        peer[upstream] = client;
        continue;
      }
      auto it = peer.find(p.fd);
      if (it == peer.end()) continue;  // closed earlier in this round
      char buf[65536];
      ssize_t n = read(p.fd, buf, sizeof buf);
      bool ok = n > 0;
      for (ssize_t off = 0; ok && off < n;) {
        ssize_t w = write(it->second, buf + off, static_cast<size_t>(n - off));
        if (w <= 0) ok = false;
        off += w;
      }
      if (!ok) {
        const int other = it->second;
        close(p.fd);
        close(other);
        peer.erase(p.fd);
        peer.erase(other);
      }
    }
  }
  for (const auto& [fd, other] : peer) close(fd);
  close(listen_fd);
  rd_kafka_mock_cluster_destroy(cluster);
  rd_kafka_destroy(rk);
  return 0;
}
