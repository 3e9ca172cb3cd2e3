// The Redis Cluster client against a real 3-master cluster (started for the
// suite): slots, routing, and following MOVED and ASK while slots move.
#include "storage/redis_cluster.h"

#include <future>
#include <map>
#include <set>

#include "gtest/gtest.h"
#include "storage/redis.h"
#include "support/infra.h"

namespace sb {
namespace {

using sb::testing::Infra;

TEST(RedisClusterSlotTest, MatchesTheClusterSpecification) {
  // CRC16/XMODEM("123456789") is 0x31C3.
  EXPECT_EQ(RedisCluster::Slot("123456789"), 0x31C3 % 16384);
  EXPECT_EQ(RedisCluster::Slot("{user1000}.following"), RedisCluster::Slot("{user1000}.followers"));
  EXPECT_EQ(RedisCluster::Slot("{user1000}.following"), RedisCluster::Slot("user1000"));
  // An empty tag does not count; only the first {...} does.
  EXPECT_NE(RedisCluster::Slot("foo{}{bar}"), RedisCluster::Slot("bar"));
  EXPECT_EQ(RedisCluster::Slot("foo{{bar}}zap"), RedisCluster::Slot("{bar"));
  EXPECT_EQ(RedisCluster::Slot("foo{bar}{zap}"), RedisCluster::Slot("bar"));
}

TEST(RedisClusterSlotTest, RoutesByTheFirstKey) {
  EXPECT_EQ(RedisCluster::RoutingKey({"GET", "a"}), "a");
  EXPECT_EQ(RedisCluster::RoutingKey({"EVALSHA", "sha", "2", "k1", "k2", "arg"}), "k1");
  EXPECT_EQ(RedisCluster::RoutingKey({"eval", "return 1", "0"}), "");
  EXPECT_EQ(RedisCluster::RoutingKey({"XREAD", "BLOCK", "10", "STREAMS", "s1", "$"}), "s1");
  EXPECT_EQ(RedisCluster::RoutingKey({"PING"}), "");
}

class RedisClusterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto infra =
        Infra::Start({.postgres = false, .redis = false, .kafka = false, .redis_cluster = true});
    ASSERT_TRUE(infra.ok()) << infra.status();
    infra_ = std::move(*infra).release();
  }
  static void TearDownTestSuite() {
    delete infra_;
    infra_ = nullptr;
  }

  static absl::StatusOr<RedisReply> Call(AsyncRedis& redis, std::vector<std::string> args) {
    std::promise<absl::StatusOr<RedisReply>> p;
    auto f = p.get_future();
    redis.Command(std::move(args), [&p](absl::StatusOr<RedisReply> r) { p.set_value(r); });
    EXPECT_EQ(f.wait_for(std::chrono::seconds(10)), std::future_status::ready);
    return f.get();
  }
  // Each node's id, by port.
  static std::map<int, std::string> NodeIds() {
    std::map<int, std::string> ids;
    for (int port : infra_->redis_cluster_ports()) {
      auto id = RedisClient({.port = port, .pool_size = 1}).Command({"CLUSTER", "MYID"});
      EXPECT_TRUE(id.ok());
      ids[port] = id->str;
    }
    return ids;
  }
  // The port of the master that owns a slot, as the first node sees it.
  static int PortOwning(int slot) {
    RedisClient node({.port = infra_->redis_cluster_ports()[0], .pool_size = 1});
    auto slots = node.Command({"CLUSTER", "SLOTS"});
    EXPECT_TRUE(slots.ok()) << slots.status();
    for (const auto& range : slots->elements) {
      if (range.elements[0].integer <= slot && slot <= range.elements[1].integer) {
        return static_cast<int>(range.elements[2].elements[1].integer);
      }
    }
    return 0;
  }
  static Infra* infra_;
};

Infra* RedisClusterTest::infra_ = nullptr;

TEST_F(RedisClusterTest, EveryKeyLandsOnTheNodeThatOwnsItsSlot) {
  RedisCluster redis({.port = infra_->redis_cluster_ports()[0]});
  std::set<int> nodes_used;
  for (int i = 0; i < 100; ++i) {
    const std::string key = "key-" + std::to_string(i);
    ASSERT_TRUE(Call(redis, {"SET", key, std::to_string(i)}).ok()) << key;
    const int port = PortOwning(RedisCluster::Slot(key));
    nodes_used.insert(port);
    // Read straight from the owner: a node that does not own it answers MOVED.
    auto direct = RedisClient({.port = port, .pool_size = 1}).Command({"GET", key});
    ASSERT_TRUE(direct.ok()) << direct.status();
    EXPECT_EQ(direct->str, std::to_string(i));
  }
  EXPECT_EQ(nodes_used.size(), 3u) << "100 keys spread over the three masters";
}

TEST_F(RedisClusterTest, FollowsASlotThatMoved) {
  RedisCluster redis({.port = infra_->redis_cluster_ports()[0]});
  const std::string key = "{moving}counter";
  const int slot = RedisCluster::Slot(key);
  ASSERT_TRUE(Call(redis, {"GET", key}).ok());  // the map is learned by now
  const int from = PortOwning(slot);
  EXPECT_EQ(redis.OwnerOf(slot), "127.0.0.1:" + std::to_string(from));
  // Give the (empty) slot to another master, on every node.
  const auto ids = NodeIds();
  int to = 0;
  for (const auto& [port, id] : ids) {
    if (port != from) to = port;
  }
  for (const auto& [port, id] : ids) {
    auto r = RedisClient({.port = port, .pool_size = 1})
                 .Command({"CLUSTER", "SETSLOT", std::to_string(slot), "NODE", ids.at(to)});
    ASSERT_TRUE(r.ok()) << r.status();
  }
  // The client's map is stale: MOVED, then the new owner.
  auto r = Call(redis, {"INCR", key});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->integer, 1);
  EXPECT_EQ(redis.OwnerOf(slot), "127.0.0.1:" + std::to_string(to));
  auto direct = RedisClient({.port = to, .pool_size = 1}).Command({"GET", key});
  ASSERT_TRUE(direct.ok());
  EXPECT_EQ(direct->str, "1");
}

TEST_F(RedisClusterTest, FollowsASlotBeingMigrated) {
  RedisCluster redis({.port = infra_->redis_cluster_ports()[0]});
  const std::string key = "{migrating}k";
  const int slot = RedisCluster::Slot(key);
  ASSERT_TRUE(Call(redis, {"GET", key}).ok());
  const int from = PortOwning(slot);
  const auto ids = NodeIds();
  int to = 0;
  for (const auto& [port, id] : ids) {
    if (port != from) to = port;
  }
  RedisClient source({.port = from, .pool_size = 1}), target({.port = to, .pool_size = 1});
  ASSERT_TRUE(
      target.Command({"CLUSTER", "SETSLOT", std::to_string(slot), "IMPORTING", ids.at(from)}).ok());
  ASSERT_TRUE(
      source.Command({"CLUSTER", "SETSLOT", std::to_string(slot), "MIGRATING", ids.at(to)}).ok());
  // A new key in a migrating slot goes to the target: ASK, then ASKING.
  auto r = Call(redis, {"SET", key, "v"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(redis.OwnerOf(slot), "127.0.0.1:" + std::to_string(from)) << "ASK does not move it";
  auto on_target = target.Command({"CLUSTER", "COUNTKEYSINSLOT", std::to_string(slot)});
  ASSERT_TRUE(on_target.ok());
  EXPECT_EQ(on_target->integer, 1);
  // Finish the move so the cluster is whole again.
  for (const auto& [port, id] : ids) {
    ASSERT_TRUE(RedisClient({.port = port, .pool_size = 1})
                    .Command({"CLUSTER", "SETSLOT", std::to_string(slot), "NODE", ids.at(to)})
                    .ok());
  }
}

TEST_F(RedisClusterTest, KeysOfDifferentSlotsInOneCommandAreRefused) {
  RedisCluster redis({.port = infra_->redis_cluster_ports()[0]});
  auto r = Call(redis, {"EVAL", "return 1", "2", "{a}x", "{b}y"});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.status().message()).find("CROSSSLOT"), std::string::npos) << r.status();
}

// The blocking client: the same routing, MOVED and ASK, without callbacks.
TEST_F(RedisClusterTest, TheBlockingClientRoutesAndFollowsMovedAndAsk) {
  RedisClusterClient redis({.port = infra_->redis_cluster_ports()[0]});
  std::set<int> nodes_used;
  for (int i = 0; i < 30; ++i) {
    const std::string key = "blocking-" + std::to_string(i);
    ASSERT_TRUE(redis.Command({"SET", key, std::to_string(i)}).ok()) << key;
    const int port = PortOwning(RedisCluster::Slot(key));
    nodes_used.insert(port);
    auto direct = RedisClient({.port = port, .pool_size = 1}).Command({"GET", key});
    ASSERT_TRUE(direct.ok()) << direct.status();
    EXPECT_EQ(direct->str, std::to_string(i));
  }
  EXPECT_EQ(nodes_used.size(), 3u);
  EXPECT_EQ(redis.ReadGroupOf("{x}a"), redis.ReadGroupOf("{x}b"));
  EXPECT_NE(redis.ReadGroupOf("{x}a"), redis.ReadGroupOf("{y}a"));

  // A slot moved: MOVED, then the new owner.
  const auto ids = NodeIds();
  const std::string moved = "{blocking-moved}n";
  const int slot = RedisCluster::Slot(moved);
  const int from = PortOwning(slot);
  int to = 0;
  for (const auto& [port, id] : ids) {
    if (port != from) to = port;
  }
  for (const auto& [port, id] : ids) {
    ASSERT_TRUE(RedisClient({.port = port, .pool_size = 1})
                    .Command({"CLUSTER", "SETSLOT", std::to_string(slot), "NODE", ids.at(to)})
                    .ok());
  }
  auto r = redis.Command({"INCR", moved});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->integer, 1);
  EXPECT_EQ(redis.OwnerOf(slot), "127.0.0.1:" + std::to_string(to));

  // A slot being migrated: a new key goes to the target after ASKING.
  const std::string migrating = "{blocking-migrating}k";
  const int mslot = RedisCluster::Slot(migrating);
  const int source_port = PortOwning(mslot);
  int target_port = 0;
  for (const auto& [port, id] : ids) {
    if (port != source_port) target_port = port;
  }
  RedisClient source({.port = source_port, .pool_size = 1}),
      target({.port = target_port, .pool_size = 1});
  ASSERT_TRUE(
      target
          .Command({"CLUSTER", "SETSLOT", std::to_string(mslot), "IMPORTING", ids.at(source_port)})
          .ok());
  ASSERT_TRUE(
      source
          .Command({"CLUSTER", "SETSLOT", std::to_string(mslot), "MIGRATING", ids.at(target_port)})
          .ok());
  auto set = redis.Command({"SET", migrating, "v"});
  ASSERT_TRUE(set.ok()) << set.status();
  auto on_target = target.Command({"CLUSTER", "COUNTKEYSINSLOT", std::to_string(mslot)});
  ASSERT_TRUE(on_target.ok());
  EXPECT_EQ(on_target->integer, 1);
  for (const auto& [port, id] : ids) {
    ASSERT_TRUE(
        RedisClient({.port = port, .pool_size = 1})
            .Command({"CLUSTER", "SETSLOT", std::to_string(mslot), "NODE", ids.at(target_port)})
            .ok());
  }
  // Cross-slot reads are refused, as on the server.
  auto cross = redis.Command({"XREAD", "STREAMS", "{x}a", "{y}a", "0", "0"});
  ASSERT_FALSE(cross.ok());
  EXPECT_NE(std::string(cross.status().message()).find("CROSSSLOT"), std::string::npos);
}

}  // namespace
}  // namespace sb
