#include "inference-worker/sim/kv_cache.h"

#include "gtest/gtest.h"
#include "inference-worker/sim/tokenizer.h"

namespace sb::worker::sim {
namespace {

TEST(KvCacheTest, AllocatesUntilEmptyAndReleasesBack) {
  KvCache kv(3);
  std::vector<int> got;
  for (int i = 0; i < 3; ++i) got.push_back(*kv.Allocate());
  EXPECT_FALSE(kv.Allocate().has_value());
  EXPECT_EQ(kv.free(), 0);
  for (int b : got) kv.Release(b);
  EXPECT_EQ(kv.free(), 3);
}

TEST(KvCacheTest, SharedBlocksAreReferenceCounted) {
  KvCache kv(4);
  const int b = *kv.Allocate();
  kv.MarkCached(b, 42);
  kv.Ref(kv.LookupPrefix({42}, 10));  // a second holder
  EXPECT_EQ(kv.ref_count(b), 2);
  kv.Release(b);
  EXPECT_EQ(kv.free(), 3) << "still held once";
  kv.Release(b);
  EXPECT_EQ(kv.free(), 4);
  EXPECT_EQ(kv.LookupPrefix({42}, 10), std::vector<int>{b}) << "freed but still cached";
}

TEST(KvCacheTest, EvictsCachedBlocksLeastRecentlyUsedFirstAndOnlyWhenNeeded) {
  KvCache kv(4);
  std::vector<int> b;
  for (int i = 0; i < 4; ++i) b.push_back(*kv.Allocate());
  for (int i = 0; i < 3; ++i) kv.MarkCached(b[i], 100 + i);
  // Released in the order 1, 0, 2; block 3 was never cached.
  kv.Release(b[1]);
  kv.Release(b[0]);
  kv.Release(b[2]);
  kv.Release(b[3]);
  EXPECT_EQ(kv.cached(), 3);
  EXPECT_EQ(*kv.Allocate(), b[3]) << "an uncached block goes first";
  EXPECT_EQ(kv.cached(), 3);
  EXPECT_EQ(*kv.Allocate(), b[1]) << "then the least recently used";
  EXPECT_TRUE(kv.LookupPrefix({101}, 1).empty());
  EXPECT_EQ(kv.LookupPrefix({100}, 1).size(), 1u);
  // Using block 0 again makes it recent: 2 is evicted next.
  kv.Ref({b[0]});
  EXPECT_EQ(*kv.Allocate(), b[2]);
  EXPECT_FALSE(kv.Allocate().has_value());
  EXPECT_EQ(kv.RecentHashes(10), std::vector<uint64_t>{100});
}

TEST(KvCacheTest, LookupStopsAtTheFirstMiss) {
  KvCache kv(4);
  const int a = *kv.Allocate();
  const int c = *kv.Allocate();
  kv.MarkCached(a, 1);
  kv.MarkCached(c, 3);
  EXPECT_EQ(kv.LookupPrefix({1, 2, 3}, 10).size(), 1u);
  EXPECT_EQ(kv.LookupPrefix({1, 2, 3}, 0).size(), 0u);
}

TEST(KvCacheTest, ADuplicateHashStaysUncached) {
  KvCache kv(2);
  const int a = *kv.Allocate();
  const int b = *kv.Allocate();
  kv.MarkCached(a, 9);
  kv.MarkCached(b, 9);
  EXPECT_EQ(kv.cached(), 1);
  EXPECT_EQ(kv.LookupPrefix({9}, 1), std::vector<int>{a});
}

TEST(PrefixHashTest, ChainsFullBlocksOfTokenIds) {
  std::string text;
  for (int i = 0; i < 40; ++i) text += "w" + std::to_string(i) + " ";
  const auto h = PrefixBlockHashes(text);
  ASSERT_EQ(h.size(), 2u) << "40 tokens: two full blocks";
  EXPECT_NE(h[0], h[1]);
  // The same first block, a different second: the first hash is shared.
  std::string other = text;
  other.replace(other.find("w20 "), 4, "x20 ");
  const auto g = PrefixBlockHashes(other);
  EXPECT_EQ(g[0], h[0]);
  EXPECT_NE(g[1], h[1]);
  // A different first block changes every hash after it.
  const auto f = PrefixBlockHashes("zz " + text);
  EXPECT_NE(f[0], h[0]);
  EXPECT_NE(f[1], h[1]);
  EXPECT_EQ(WordTokenIds("a, b").size(), 3u);
  EXPECT_EQ(TokenId("a"), WordTokenIds("  a ")[0]);
}

}  // namespace
}  // namespace sb::worker::sim
