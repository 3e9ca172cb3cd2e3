#include "storage/redis_cluster.h"

#include <spdlog/spdlog.h>

#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "core/metrics.h"

namespace sb {
namespace {

// A command follows at most this many redirections (a slot that moved
// while another move was under way, say) before its reply is returned.
constexpr int kMaxRedirects = 5;

uint16_t Crc16(std::string_view s) {
  uint16_t crc = 0;
  for (unsigned char c : s) {
    crc ^= static_cast<uint16_t>(c) << 8;
    for (int i = 0; i < 8; ++i) {
      crc = (crc & 0x8000) ? static_cast<uint16_t>((crc << 1) ^ 0x1021)
                           : static_cast<uint16_t>(crc << 1);
    }
  }
  return crc;
}

std::string Address(const std::string& host, int port) { return host + ":" + std::to_string(port); }

// "redis: MOVED 3999 127.0.0.1:6381" -> {"MOVED", 3999, "127.0.0.1:6381"}.
struct Redirect {
  std::string kind;
  int slot = -1;
  std::string address;
};
bool ParseRedirect(std::string_view message, Redirect* out) {
  constexpr std::string_view kPrefix = "redis: ";  // RedisPipeline's
  if (message.substr(0, kPrefix.size()) == kPrefix) message.remove_prefix(kPrefix.size());
  std::vector<std::string> parts = absl::StrSplit(std::string(message), ' ', absl::SkipEmpty());
  if (parts.size() != 3 || (parts[0] != "MOVED" && parts[0] != "ASK")) return false;
  if (!absl::SimpleAtoi(parts[1], &out->slot) || out->slot < 0 ||
      out->slot >= RedisCluster::kSlots) {
    return false;
  }
  if (parts[2].rfind(':') == std::string::npos) return false;
  out->kind = parts[0];
  out->address = parts[2];
  return true;
}

// No host ("MOVED 1 :7000"): the node that answered.
std::string RedirectAddress(const Redirect& redirect, const std::string& answered) {
  if (redirect.address[0] != ':') return redirect.address;
  return answered.substr(0, answered.rfind(':')) + redirect.address;
}

metrics::Counter& Redirected() {
  static auto& redirected = metrics::Default().GetCounter(
      "sb_redis_cluster_redirects_total", "Redis Cluster commands resent after MOVED or ASK");
  return redirected;
}

// Writes CLUSTER SLOTS' answer (from the node at `asked`) into a slot map.
void ApplySlotMap(const std::string& asked, const RedisReply& reply,
                  std::array<std::string, RedisCluster::kSlots>& owners) {
  // [[start, end, [host, port, id, ...], replicas...], ...]
  const std::string asked_host = asked.substr(0, asked.rfind(':'));
  for (const auto& range : reply.elements) {
    if (range.elements.size() < 3 || range.elements[2].elements.size() < 2) continue;
    const auto& master = range.elements[2];
    std::string host = master.elements[0].str;
    if (host.empty() || host == "?") host = asked_host;
    const long long start = range.elements[0].integer, end = range.elements[1].integer;
    const long long port = master.elements[1].integer;
    if (start < 0 || end >= RedisCluster::kSlots || start > end || port <= 0) continue;
    const std::string address = Address(host, static_cast<int>(port));
    for (long long s = start; s <= end; ++s) owners[s] = address;
  }
}

// The node to ask for the slot map: the seed, or (it may be the node that
// failed) the others, in turn.
template <typename Nodes>
std::string NextToAsk(const RedisOptions& seed, const Nodes& nodes, size_t& turn) {
  std::vector<std::string> known = {Address(seed.host, seed.port)};
  for (const auto& [a, n] : nodes) {
    if (a != known[0]) known.push_back(a);
  }
  return known[turn++ % known.size()];
}

bool ToLowerEquals(const std::string& a, std::string_view b) {
  return a.size() == b.size() && absl::AsciiStrToLower(a) == b;
}

}  // namespace

RedisCluster::RedisCluster(RedisOptions seed) : seed_(std::move(seed)) { Refresh(); }

RedisCluster::~RedisCluster() { Stop(); }

void RedisCluster::Stop() {
  std::vector<RedisPipeline*> pipelines;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) return;
    stopped_ = true;
    for (auto& [address, node] : nodes_) pipelines.push_back(node.pipeline.get());
  }
  // Outside the lock: stopping fails what is queued, and those callbacks
  // come back here.
  for (auto* p : pipelines) p->Stop();
}

int RedisCluster::Slot(std::string_view key) {
  const size_t open = key.find('{');
  if (open != std::string_view::npos) {
    const size_t close = key.find('}', open + 1);
    if (close != std::string_view::npos && close > open + 1) {
      key = key.substr(open + 1, close - open - 1);
    }
  }
  return Crc16(key) % kSlots;
}

std::string_view RedisCluster::RoutingKey(const std::vector<std::string>& args) {
  if (args.size() < 2) return {};
  const std::string& name = args[0];
  if (ToLowerEquals(name, "eval") || ToLowerEquals(name, "evalsha") ||
      ToLowerEquals(name, "eval_ro") || ToLowerEquals(name, "evalsha_ro") ||
      ToLowerEquals(name, "fcall")) {
    int keys = 0;
    if (args.size() < 4 || !absl::SimpleAtoi(args[2], &keys) || keys < 1) return {};
    return args[3];
  }
  if (ToLowerEquals(name, "xread") || ToLowerEquals(name, "xreadgroup")) {
    for (size_t i = 1; i + 1 < args.size(); ++i) {
      if (ToLowerEquals(args[i], "streams")) return args[i + 1];
    }
    return {};
  }
  if (ToLowerEquals(name, "ping") || ToLowerEquals(name, "cluster") ||
      ToLowerEquals(name, "script") || ToLowerEquals(name, "info")) {
    return {};
  }
  return args[1];
}

std::string RedisCluster::OwnerOf(int slot) const {
  std::lock_guard<std::mutex> lock(mu_);
  return owners_[slot];
}

RedisPipeline& RedisCluster::NodeAt(const std::string& address) {
  auto it = nodes_.find(address);
  if (it != nodes_.end()) return *it->second.pipeline;
  Node node;
  const size_t colon = address.rfind(':');
  node.host = address.substr(0, colon);
  if (node.host.empty()) node.host = seed_.host;
  node.port = std::atoi(address.c_str() + colon + 1);
  RedisOptions options = seed_;
  options.host = node.host;
  options.port = node.port;
  node.pipeline = std::make_unique<RedisPipeline>(options);
  return *nodes_.emplace(address, std::move(node)).first->second.pipeline;
}

void RedisCluster::Command(std::vector<std::string> args, Callback done) {
  const std::string_view key = RoutingKey(args);
  const int slot = key.empty() ? -1 : Slot(key);
  Send(slot, "", std::move(args), std::move(done), 0, false);
}

void RedisCluster::Send(int slot, std::string address, std::vector<std::string> args, Callback done,
                        int redirects, bool asking) {
  RedisPipeline* node = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stopped_) {
      if (address.empty() && slot >= 0) address = owners_[slot];
      if (address.empty()) address = Address(seed_.host, seed_.port);
      node = &NodeAt(address);
    }
  }
  if (node == nullptr) {
    done(absl::UnavailableError("redis cluster client is shutting down"));
    return;
  }
  // The arguments are kept for a redirection.
  auto resend = [this, slot, args, redirects, answered = address,
                 done = std::move(done)](absl::StatusOr<RedisReply> r) mutable {
    Redirect redirect;
    if (!r.ok() && r.status().code() == absl::StatusCode::kInternal && redirects < kMaxRedirects &&
        ParseRedirect(std::string(r.status().message()), &redirect)) {
      redirect.address = RedirectAddress(redirect, answered);
      Redirected().Inc();
      if (redirect.kind == "MOVED") {
        {
          std::lock_guard<std::mutex> lock(mu_);
          owners_[redirect.slot] = redirect.address;
        }
        Refresh();
        Send(slot, redirect.address, std::move(args), std::move(done), redirects + 1, false);
      } else {
        Send(slot, redirect.address, std::move(args), std::move(done), redirects + 1, true);
      }
      return;
    }
    // A node that cannot be reached may have failed over: learn the map again.
    if (!r.ok() && r.status().code() == absl::StatusCode::kUnavailable) Refresh();
    done(std::move(r));
  };
  if (asking) {
    node->Sequence({{"ASKING"}, std::move(args)}, std::move(resend));
  } else {
    node->Command(std::move(args), std::move(resend));
  }
}

void RedisCluster::Refresh() {
  std::string address;
  RedisPipeline* node;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_ || refreshing_) return;
    refreshing_ = true;
    address = NextToAsk(seed_, nodes_, refresh_turn_);
    node = &NodeAt(address);
  }
  node->Command({"CLUSTER", "SLOTS"}, [this, address](absl::StatusOr<RedisReply> r) {
    if (r.ok()) {
      ApplySlots(address, *r);
    } else {
      spdlog::warn("redis cluster: CLUSTER SLOTS from {}: {}", address, r.status().ToString());
    }
    std::lock_guard<std::mutex> lock(mu_);
    refreshing_ = false;
  });
}

void RedisCluster::ApplySlots(const std::string& asked, const RedisReply& reply) {
  std::lock_guard<std::mutex> lock(mu_);
  ApplySlotMap(asked, reply, owners_);
}

RedisClusterClient::RedisClusterClient(RedisOptions seed) : seed_(std::move(seed)) { Refresh(); }

RedisClusterClient::~RedisClusterClient() = default;

absl::StatusOr<RedisReply> RedisClusterClient::Command(const std::vector<std::string>& args) {
  return Send(args, std::chrono::milliseconds(0));
}

absl::StatusOr<RedisReply> RedisClusterClient::BlockingCommand(const std::vector<std::string>& args,
                                                               std::chrono::milliseconds block) {
  return Send(args, block);
}

std::string RedisClusterClient::ReadGroupOf(std::string_view key) const {
  return "slot " + std::to_string(RedisCluster::Slot(key));
}

std::string RedisClusterClient::OwnerOf(int slot) const {
  std::lock_guard<std::mutex> lock(mu_);
  return owners_[slot];
}

RedisClient& RedisClusterClient::NodeAt(const std::string& address) {
  auto& node = nodes_[address];
  if (!node) {
    RedisOptions options = seed_;
    const size_t colon = address.rfind(':');
    options.host = address.substr(0, colon);
    if (options.host.empty()) options.host = seed_.host;
    options.port = std::atoi(address.c_str() + colon + 1);
    node = std::make_unique<RedisClient>(options);
  }
  return *node;
}

absl::StatusOr<RedisReply> RedisClusterClient::Send(const std::vector<std::string>& args,
                                                    std::chrono::milliseconds block) {
  const std::string_view key = RedisCluster::RoutingKey(args);
  std::string address;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!key.empty()) address = owners_[RedisCluster::Slot(key)];
  }
  if (address.empty()) address = Address(seed_.host, seed_.port);
  bool asking = false;
  for (int redirects = 0;; ++redirects) {
    RedisClient* node;
    {
      std::lock_guard<std::mutex> lock(mu_);
      node = &NodeAt(address);
    }
    auto r = asking ? node->Asking(args, block) : node->BlockingCommand(args, block);
    Redirect redirect;
    if (r.ok() || r.status().code() != absl::StatusCode::kInternal || redirects >= kMaxRedirects ||
        !ParseRedirect(std::string(r.status().message()), &redirect)) {
      // A node that cannot be reached may have failed over: learn the map again.
      if (!r.ok() && r.status().code() == absl::StatusCode::kUnavailable) Refresh();
      return r;
    }
    Redirected().Inc();
    address = RedirectAddress(redirect, address);
    asking = redirect.kind == "ASK";
    if (!asking) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        owners_[redirect.slot] = address;
      }
      Refresh();
    }
  }
}

void RedisClusterClient::Refresh() {
  std::string address;
  RedisClient* node;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (refreshing_) return;  // another thread is asking
    refreshing_ = true;
    address = NextToAsk(seed_, nodes_, refresh_turn_);
    node = &NodeAt(address);
  }
  auto r = node->Command({"CLUSTER", "SLOTS"});
  if (!r.ok()) {
    spdlog::warn("redis cluster: CLUSTER SLOTS from {}: {}", address, r.status().ToString());
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (r.ok()) ApplySlotMap(address, *r, owners_);
  refreshing_ = false;
}

std::unique_ptr<BlockingRedis> NewBlockingRedis(const RedisOptions& options, bool cluster) {
  if (cluster) return std::make_unique<RedisClusterClient>(options);
  return std::make_unique<RedisClient>(options);
}

}  // namespace sb
