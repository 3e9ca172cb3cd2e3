// The hold-back gate's property: however a reply is split into tokens, no
// byte of a match is released, and everything else is released, in order,
// exactly once.
#include "safety/gate.h"

#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace sb::safety {
namespace {

struct Outcome {
  std::string released;
  std::optional<PiiFinding> stopped;
  size_t most_held = 0;
};

// Feeds `text` cut at `cuts` (ascending offsets) through a gate.
Outcome Gate(const std::string& text, const std::vector<size_t>& cuts, GateOptions options) {
  OutputGate gate(options);
  Outcome out;
  size_t from = 0;
  auto take = [&](const GateResult& r) {
    out.released += r.release;
    if (r.stopped) out.stopped = r.stopped;
  };
  for (size_t i = 0; i <= cuts.size(); ++i) {
    const size_t to = i < cuts.size() ? cuts[i] : text.size();
    take(gate.Push(std::string_view(text).substr(from, to - from)));
    out.most_held = std::max(out.most_held, gate.held());
    from = to;
    if (gate.stopped()) break;
  }
  take(gate.Finish());
  return out;
}

struct Case {
  std::string before, pii, after, category;
};

const std::vector<Case>& Cases() {
  static const std::vector<Case> cases = {
      {"write to ", "jane.doe+x@example.co.uk", ", thanks.", "pii.email"},
      {"a ", "x@y.io", " b", "pii.email"},
      {"card: ", "4111 1111 1111 1111", " exp 12/29", "pii.card_number"},
      {"card ", "4242-4242-4242-4242", ".", "pii.card_number"},
      {"pay with ", "378282246310005", " today", "pii.card_number"},
      {"", "bob@corp.io", "", "pii.email"},
  };
  return cases;
}

// Every way of cutting `n` bytes (2^(n-1) of them), as cut lists.
std::vector<std::vector<size_t>> AllCuts(size_t n) {
  std::vector<std::vector<size_t>> out;
  for (uint64_t mask = 0; mask < (uint64_t{1} << (n - 1)); ++mask) {
    std::vector<size_t> cuts;
    for (size_t i = 1; i < n; ++i) {
      if (mask & (uint64_t{1} << (i - 1))) cuts.push_back(i);
    }
    out.push_back(std::move(cuts));
  }
  return out;
}

std::vector<std::vector<size_t>> RandomCuts(size_t n, int count, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::vector<size_t>> out;
  for (int k = 0; k < count; ++k) {
    std::vector<size_t> cuts;
    // Token-like pieces of 1 to 8 bytes, and now and then one cut per byte.
    const int most = k % 10 == 0 ? 1 : 8;
    for (size_t at = 1 + rng() % most; at < n; at += 1 + rng() % most) cuts.push_back(at);
    out.push_back(std::move(cuts));
  }
  return out;
}

std::vector<std::vector<size_t>> CutsFor(const std::string& text) {
  return text.size() <= 16 ? AllCuts(text.size()) : RandomCuts(text.size(), 3000, text.size());
}

TEST(OutputGateTest, RedactionReleasesNoByteOfTheSpanAndEverythingElseOnceInOrder) {
  for (const Case& c : Cases()) {
    const std::string text = c.before + c.pii + c.after;
    const std::string expected = c.before + "[REDACTED:" + c.category + "]" + c.after;
    const auto cuts = CutsFor(text);
    for (const auto& cut : cuts) {
      const Outcome o = Gate(text, cut, {.action = GateAction::kRedact});
      ASSERT_EQ(o.released, expected) << "cut into " << cut.size() + 1 << " pieces";
      ASSERT_FALSE(o.stopped);
    }
  }
}

TEST(OutputGateTest, BlockingReleasesExactlyWhatCameBeforeTheSpan) {
  for (const Case& c : Cases()) {
    const std::string text = c.before + c.pii + c.after;
    for (const auto& cut : CutsFor(text)) {
      const Outcome o = Gate(text, cut, {.action = GateAction::kBlock});
      ASSERT_EQ(o.released, c.before) << text;
      ASSERT_TRUE(o.stopped);
      EXPECT_EQ(o.stopped->category, c.category);
      EXPECT_EQ(o.stopped->start, c.before.size());
      EXPECT_EQ(o.stopped->end, c.before.size() + c.pii.size());
    }
  }
}

TEST(OutputGateTest, CleanTextGoesThroughWhole) {
  const std::vector<std::string> texts = {
      "The meeting is at 10:30 in room 4, floor 12; call ext. 5512 if late.",
      "Order 12345 shipped on 2026-11-01 @ noon — see you@ the café.",
      "Numbers like 4111 1111 1111 1112 fail the Luhn check, so they pass.",
      "日本語のテキストと emoji 🎉 and mixed scripts: Ελληνικά, русский.",
  };
  for (const std::string& text : texts) {
    for (const auto& cut : RandomCuts(text.size(), 2000, 7)) {
      const Outcome o = Gate(text, cut, {.action = GateAction::kBlock});
      ASSERT_EQ(o.released, text);
      ASSERT_FALSE(o.stopped);
    }
  }
}

// What waits is only what may still become a match: a word (it may be an
// address's local part) or a run of digits, not the text before it.
TEST(OutputGateTest, HoldsBackOnlyWhatMayStillMatch) {
  OutputGate gate;
  EXPECT_EQ(gate.Push("Hello there, my card is ").release, "Hello there, my card is ");
  EXPECT_EQ(gate.Push("4111 1111").release, "");
  EXPECT_EQ(gate.held(), 9u);
  EXPECT_EQ(gate.Push(" ok").release, "4111 1111 ");
  EXPECT_EQ(gate.held(), 2u) << "\"ok\" may begin an address";
  EXPECT_EQ(gate.Finish().release, "ok");
}

// A run longer than the window is let out from its oldest end: the window
// bounds what waits, and a match longer than it is not held whole.
TEST(OutputGateTest, NoMoreThanTheWindowWaits) {
  const std::string text = "id " + std::string(100, '7') + " end";
  for (const auto& cut : RandomCuts(text.size(), 200, 3)) {
    const Outcome o = Gate(text, cut, {.action = GateAction::kBlock, .window = 32});
    EXPECT_LE(o.most_held, 32u);
    EXPECT_EQ(o.released, text);
  }
}

// After a stop nothing more comes out, whatever follows.
TEST(OutputGateTest, NothingAfterAStop) {
  OutputGate gate;
  EXPECT_EQ(gate.Push("mail bob@corp.io now").release, "mail ");
  EXPECT_TRUE(gate.stopped());
  EXPECT_EQ(gate.Push(" and more text").release, "");
  EXPECT_EQ(gate.Finish().release, "");
}

}  // namespace
}  // namespace sb::safety
