#include "inference-worker/sim/kv_cache.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "inference-worker/sim/tokenizer.h"

namespace sb::worker::sim {
namespace {

[[noreturn]] void Die(const char* what) {
  std::fprintf(stderr, "KvCache: %s\n", what);
  std::abort();
}

}  // namespace

void ExtendBlockHashes(const std::vector<uint32_t>& ids, size_t full_blocks,
                       std::vector<uint64_t>& hashes) {
  full_blocks = std::min(full_blocks, ids.size() / kBlockSize);
  for (size_t b = hashes.size(); b < full_blocks; ++b) {
    uint64_t h = Mix64((b == 0 ? 0x9e3779b97f4a7c15ull : hashes[b - 1]) + 1);
    for (size_t i = b * kBlockSize; i < (b + 1) * kBlockSize; ++i) h = Mix64(h ^ ids[i]);
    hashes.push_back(h);
  }
}

std::vector<uint64_t> PrefixBlockHashes(std::string_view prompt) {
  const std::vector<uint32_t> ids = WordTokenIds(prompt);
  std::vector<uint64_t> hashes;
  ExtendBlockHashes(ids, ids.size() / kBlockSize, hashes);
  return hashes;
}

KvCache::KvCache(int64_t num_blocks)
    : blocks_(static_cast<size_t>(std::max<int64_t>(0, num_blocks))) {
  for (int i = 0; i < static_cast<int>(blocks_.size()); ++i) {
    blocks_[i].in_queue = free_queue_.insert(free_queue_.end(), i);
  }
}

std::vector<int> KvCache::LookupPrefix(const std::vector<uint64_t>& hashes,
                                       size_t max_blocks) const {
  std::vector<int> hits;
  for (size_t i = 0; i < hashes.size() && i < max_blocks; ++i) {
    auto it = cached_.find(hashes[i]);
    if (it == cached_.end()) break;
    hits.push_back(it->second);
  }
  return hits;
}

int64_t KvCache::CountUnreferenced(const std::vector<int>& blocks) const {
  int64_t n = 0;
  for (int b : blocks) n += blocks_[b].refs == 0;
  return n;
}

void KvCache::Ref(const std::vector<int>& blocks) {
  for (int b : blocks) {
    Block& block = blocks_[b];
    if (block.refs == 0) free_queue_.erase(block.in_queue);
    ++block.refs;
    block.last_used = ++tick_;
  }
}

std::optional<int> KvCache::Allocate() {
  if (free_queue_.empty()) return std::nullopt;
  const int b = free_queue_.front();
  free_queue_.pop_front();
  Block& block = blocks_[b];
  if (block.cached) {  // evict the least recently used cached block
    cached_.erase(block.hash);
    block.cached = false;
  }
  block.refs = 1;
  block.last_used = ++tick_;
  return b;
}

void KvCache::MarkCached(int block, uint64_t hash) {
  Block& b = blocks_[block];
  if (b.cached) return;
  if (!cached_.emplace(hash, block).second) return;
  b.cached = true;
  b.hash = hash;
  b.last_used = ++tick_;
}

void KvCache::Release(int block) {
  Block& b = blocks_[block];
  if (b.refs <= 0) Die("released a block nobody holds");
  if (--b.refs > 0) return;
  // An uncached block has nothing worth keeping: hand it out first.
  b.in_queue = b.cached ? free_queue_.insert(free_queue_.end(), block)
                        : free_queue_.insert(free_queue_.begin(), block);
}

std::vector<uint64_t> KvCache::RecentHashes(size_t limit) const {
  std::vector<std::pair<uint64_t, uint64_t>> by_use;  // (last_used, hash)
  by_use.reserve(cached_.size());
  for (const auto& [hash, b] : cached_) by_use.emplace_back(blocks_[b].last_used, hash);
  const size_t n = std::min(limit, by_use.size());
  std::partial_sort(by_use.begin(), by_use.begin() + n, by_use.end(),
                    [](const auto& a, const auto& b) { return a > b; });
  std::vector<uint64_t> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) out.push_back(by_use[i].second);
  return out;
}

}  // namespace sb::worker::sim
