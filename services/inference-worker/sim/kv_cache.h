// A paged KV cache with automatic prefix caching, as vLLM keeps one.
//
// The cache is `num_blocks` blocks of `block_size` (16) tokens. A sequence
// holds a table of blocks; only its last block can be partly filled. A full
// block is registered under a hash of (its parent block's hash, its token
// ids), so a later request whose prompt starts with the same tokens takes
// the same blocks (reference counted) instead of computing them again.
//
// Blocks nobody references sit in one free queue: never-cached blocks at the
// front (handed out first), cached ones behind them in the order they were
// released (least recently used first). A cached block keeps its contents
// until it is handed out again, at which point it leaves the cache.
//
//   KvCache kv(1000);
//   auto hits = kv.LookupPrefix(hashes);   // cached blocks, from the start
//   kv.Ref(hits);                          // now in use: not evictable
//   std::optional<int> b = kv.Allocate();  // a fresh block (may evict)
//   kv.MarkCached(*b, hash);               // once it is full
//   kv.Release(*b);                        // back to the queue, still cached
#pragma once

#include <cstdint>
#include <list>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace sb::worker::sim {

inline constexpr int kBlockSize = 16;

// Extends `hashes` to the chained hashes of the first `full_blocks` full
// blocks of `ids`: hashes[i] stands for ids[0, 16 (i + 1)). What `hashes`
// already holds is kept (a sequence only ever grows).
void ExtendBlockHashes(const std::vector<uint32_t>& ids, size_t full_blocks,
                       std::vector<uint64_t>& hashes);

// The prefix block hashes of a prompt under the simulator's tokenizer (pass
// EngineRequest::Flatten()): the keys the engine caches blocks under, so a
// scheduler can route a request to the worker that already holds its prefix.
std::vector<uint64_t> PrefixBlockHashes(std::string_view prompt);

class KvCache {
 public:
  explicit KvCache(int64_t num_blocks);

  int64_t total() const { return static_cast<int64_t>(blocks_.size()); }
  // Blocks with no reference (cached ones included: they can be evicted).
  int64_t free() const { return static_cast<int64_t>(free_queue_.size()); }
  int64_t cached() const { return static_cast<int64_t>(cached_.size()); }

  // The longest run of cached blocks matching hashes[0..]: block ids.
  std::vector<int> LookupPrefix(const std::vector<uint64_t>& hashes, size_t max_blocks) const;
  // How many of `blocks` have no reference now (referencing them takes them
  // out of the free queue).
  int64_t CountUnreferenced(const std::vector<int>& blocks) const;

  void Ref(const std::vector<int>& blocks);
  // nullopt when no block is free.
  std::optional<int> Allocate();
  // Registers a full block's contents; a hash already cached elsewhere is
  // left alone (the duplicate block stays uncached).
  void MarkCached(int block, uint64_t hash);
  void Release(int block);

  int ref_count(int block) const { return blocks_[block].refs; }
  // Hashes of cached blocks, most recently used first, at most `limit`.
  std::vector<uint64_t> RecentHashes(size_t limit) const;

 private:
  struct Block {
    int refs = 0;
    bool cached = false;
    uint64_t hash = 0;
    uint64_t last_used = 0;
    std::list<int>::iterator in_queue;  // valid when refs == 0
  };

  std::vector<Block> blocks_;
  std::list<int> free_queue_;
  std::unordered_map<uint64_t, int> cached_;
  uint64_t tick_ = 0;
};

}  // namespace sb::worker::sim
