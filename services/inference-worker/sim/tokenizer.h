// The simulator's word-level tokenizer: a run of letters, digits and UTF-8
// bytes is one token, and so is every other non-space character. Each token
// has a 32-bit id (a hash of its text), which is what the KV cache and the
// prefix hashes are keyed on.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace sb::worker {

int CountWordTokens(std::string_view text);

namespace sim {

uint32_t TokenId(std::string_view token);
// A 64-bit finalizer (splitmix/murmur style): the simulator's hashes of
// block contents and reply seeds mix through it.
uint64_t Mix64(uint64_t x);
std::vector<uint32_t> WordTokenIds(std::string_view text);

}  // namespace sim
}  // namespace sb::worker
