// The fairness table (issue 9): the fair queue in front of the simulated
// accelerator (sim-small, max_num_seqs 8), on its virtual clock. Per
// scenario and org: the share of the service (w_in * input + w_out * output
// tokens, w_in 1, w_out 2) against the org's weighted entitlement, Jain's
// index over the backlogged orgs, and a light org's TTFT with and without a
// flood. The clock is virtual, so every figure but the wall time is exact
// and the same on any machine. Prints Markdown for bench/RESULTS.md.
//
//   build/bench/fairness_bench
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "tenant-scheduler/fairness_sim.h"

namespace sb::scheduler {
namespace {

constexpr absl::Duration kDuration = absl::Seconds(60);
// Shares are measured after the first seconds, once every queue has filled.
constexpr absl::Duration kFrom = absl::Seconds(5);
// An org counts as backlogged when it had requests queued this much of the
// time (a Poisson org starts with an empty queue).
constexpr double kBackloggedFraction = 0.9;

struct Named {
  std::string name;
  FairnessScenario scenario;
};

std::string Pattern(const OrgSpec& o) {
  char buf[96];
  if (const auto* c = std::get_if<ClosedLoop>(&o.arrivals)) {
    std::snprintf(buf, sizeof buf, "closed loop, depth %d", c->depth);
  } else if (const auto* p = std::get_if<Poisson>(&o.arrivals)) {
    std::snprintf(buf, sizeof buf, "Poisson %.1f/s", p->rate);
  } else {
    const auto& b = std::get<Bursts>(o.arrivals);
    std::snprintf(buf, sizeof buf, "bursts of %d every %.0f s", b.size,
                  absl::ToDoubleSeconds(b.every));
  }
  std::string s = buf;
  if (o.priority == Priority::kBatch) s += ", batch";
  if (o.stop < kDuration) {
    std::snprintf(buf, sizeof buf, ", until %.0f s", absl::ToDoubleSeconds(o.stop));
    s += buf;
  }
  return s;
}

double Ms(absl::Duration d) { return absl::ToDoubleMilliseconds(d); }

struct Wall {
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  double Seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
};

double total_virtual = 0;
double total_wall = 0;

void ShareTable(const std::vector<Named>& scenarios) {
  std::printf(
      "| scenario | org | weight | arrivals | admitted | tokens in / out | backlogged | share | "
      "entitlement | wait p99 (ms) |\n"
      "|---|---|---|---|---|---|---|---|---|---|\n");
  std::vector<std::string> jain_rows;
  for (const Named& n : scenarios) {
    const Wall wall;
    const FairnessResult r = RunFairnessSim(n.scenario);
    total_wall += wall.Seconds();
    total_virtual += absl::ToDoubleSeconds(r.simulated);
    const absl::Duration to = n.scenario.duration;
    // Entitlement: the weight's share among the backlogged orgs of the top
    // priority with any; the others get what those leave.
    std::vector<bool> backlogged(r.orgs.size());
    double weights = 0;
    Priority top = Priority::kBatch;
    for (size_t i = 0; i < r.orgs.size(); ++i) {
      backlogged[i] = r.orgs[i].backlogged >= kBackloggedFraction * to;
      if (backlogged[i] && r.orgs[i].priority == Priority::kInteractive) top = r.orgs[i].priority;
    }
    for (size_t i = 0; i < r.orgs.size(); ++i) {
      if (backlogged[i] && r.orgs[i].priority == top) weights += r.orgs[i].weight;
    }
    // What the orgs not backlogged took leaves the rest to the backlogged.
    double rest = 1;
    for (size_t i = 0; i < r.orgs.size(); ++i) {
      if (!backlogged[i]) rest -= r.Share(r.orgs[i].name, kFrom, to);
    }
    std::vector<double> x;
    for (size_t i = 0; i < r.orgs.size(); ++i) {
      const OrgResult& o = r.orgs[i];
      const OrgSpec& spec = n.scenario.orgs[i];
      char entitled[32] = "—";
      if (backlogged[i] && o.priority == top) {
        std::snprintf(entitled, sizeof entitled, "%.1f%%", 100 * rest * o.weight / weights);
        x.push_back(r.Service(i, kFrom, to) / o.weight);
      } else if (backlogged[i]) {
        std::snprintf(entitled, sizeof entitled, "leftover");
      } else {
        std::snprintf(entitled, sizeof entitled, "its demand");
      }
      std::printf("| %s | %s | %g | %s | %lld | %lld / %lld | %.0f%% | %.1f%% | %s | %.0f |\n",
                  n.name.c_str(), o.name.c_str(), o.weight, Pattern(spec).c_str(),
                  static_cast<long long>(o.admitted), static_cast<long long>(o.input_tokens),
                  static_cast<long long>(o.output_tokens),
                  100 * absl::FDivDuration(o.backlogged, to), 100 * r.Share(o.name, kFrom, to),
                  entitled, Ms(Percentile(r.Waits(i), 99)));
    }
    double gap = 0;
    double bound = 0;
    for (const PairGap& g : r.gaps) {
      if (g.max_gap > gap) {
        gap = g.max_gap;
        bound = g.bound_at_max;
      }
    }
    char row[256];
    std::snprintf(row, sizeof row, "| %s | %zu | %.4f | %.0f / %.0f | %.0f | %lld | %.2f |",
                  n.name.c_str(), x.size(), JainIndex(x), gap, bound,
                  absl::ToDoubleSeconds(r.simulated), static_cast<long long>(r.engine_steps),
                  wall.Seconds());
    jain_rows.push_back(row);
  }
  std::printf(
      "\n| scenario | backlogged orgs | Jain's index (S_i / w_i) | max service gap / bound | "
      "virtual s | engine steps | wall s |\n|---|---|---|---|---|---|---|\n");
  for (const auto& row : jain_rows) std::printf("%s\n", row.c_str());
}

// Batch gets only what interactive leaves: an interactive org backlogged
// until 30 s, a batch org backlogged throughout; shares and admissions per
// 10 s.
void PriorityTable() {
  OrgSpec interactive{.name = "interactive", .arrivals = ClosedLoop{32}, .stop = absl::Seconds(30)};
  OrgSpec batch{.name = "batch", .priority = Priority::kBatch, .arrivals = ClosedLoop{32}};
  const Wall wall;
  const FairnessResult r = RunFairnessSim({.orgs = {interactive, batch}});
  total_wall += wall.Seconds();
  total_virtual += absl::ToDoubleSeconds(r.simulated);
  const size_t i = r.Org("interactive");
  const size_t b = r.Org("batch");
  std::printf(
      "| virtual seconds | interactive share | batch share | interactive admissions | batch "
      "admissions |\n|---|---|---|---|---|\n");
  for (absl::Duration t = absl::ZeroDuration(); t < kDuration; t += absl::Seconds(10)) {
    const absl::Duration end = t + absl::Seconds(10);
    std::printf("| %.0f–%.0f | %.1f%% | %.1f%% | %lld | %lld |\n", absl::ToDoubleSeconds(t),
                absl::ToDoubleSeconds(end), 100 * r.Share("interactive", t, end),
                100 * r.Share("batch", t, end), static_cast<long long>(r.Admitted(i, t, end)),
                static_cast<long long>(r.Admitted(b, t, end)));
  }
  std::printf("\nBatch admissions while an interactive request was queued: %lld.\n",
              static_cast<long long>(r.orgs[b].admitted_past_interactive));
}

OrgSpec Light() { return {.name = "light", .arrivals = Poisson{5}}; }

void TtftTable() {
  struct Case {
    std::string name;
    std::vector<OrgSpec> others;
    int max_num_seqs = 8;
    int slots = 0;
    int reserved = 0;
  };
  std::vector<Case> cases;
  for (int seqs : {8, 16}) {
    const OrgSpec flood{.name = "heavy", .arrivals = ClosedLoop{64}};
    OrgSpec long_prompts = flood;
    long_prompts.input_tokens = {1000, 2000};
    OrgSpec capped = flood;
    capped.concurrency_cap = seqs - 6;
    OrgSpec deep = flood;
    deep.arrivals = ClosedLoop{1100};
    cases.push_back({"alone", {}, seqs});
    cases.push_back({"flood: closed loop, depth 64", {flood}, seqs});
    cases.push_back({"flood: closed loop, depth 64, prompts 1,000–2,000", {long_prompts}, seqs});
    cases.push_back({"flood: closed loop, depth 64, weight 4", {flood}, seqs});
    cases.back().others[0].weight = 4;
    cases.push_back({"flood: Poisson 400/s (10× capacity)",
                     {{.name = "heavy", .arrivals = Poisson{400}}},
                     seqs});
    cases.push_back({"flood capped at max_num_seqs − 6", {capped}, seqs});
    cases.push_back(
        {"flood, depth 1,100, admitted up to max_num_seqs + 1,024", {deep}, seqs, seqs + 1024});
    // The same floods with --reserved_slots=1 (cases 1-4 again).
    const size_t first = cases.size() - 6;
    for (size_t i = first; i < first + 4; ++i) {
      Case kept = cases[i];
      kept.reserved = 1;
      cases.push_back(std::move(kept));
    }
  }
  std::printf(
      "| light org (Poisson 5/s, weight 1) vs | max_num_seqs | reserved_slots | served | refused "
      "| TTFT p50 (ms) | TTFT p99 (ms) | p99 / alone | queue wait p99 (ms) | heavy's share | "
      "admissions/s, all orgs |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
  double alone_p99 = 0;
  for (const Case& c : cases) {
    // Drained, so that every light request that was queued has its TTFT.
    FairnessScenario s{.orgs = {Light()},
                       .duration = kDuration,
                       .max_num_seqs = c.max_num_seqs,
                       .slots = c.slots,
                       .reserved_slots = c.reserved};
    for (const OrgSpec& o : c.others) s.orgs.push_back(o);
    const Wall wall;
    const FairnessResult r = RunFairnessSim(s);
    total_wall += wall.Seconds();
    total_virtual += absl::ToDoubleSeconds(r.simulated);
    const size_t light = r.Org("light");
    const auto ttfts = r.Ttfts(light);
    const double p99 = Ms(Percentile(ttfts, 99));
    if (c.others.empty()) alone_p99 = p99;
    char heavy[16] = "—";
    if (!c.others.empty()) {
      std::snprintf(heavy, sizeof heavy, "%.0f%%", 100 * r.Share("heavy", kFrom, kDuration));
    }
    int64_t admitted = 0;
    for (size_t i = 0; i < r.orgs.size(); ++i) admitted += r.Admitted(i, kFrom, kDuration);
    std::printf("| %s | %d | %d | %zu | %lld | %.1f | %.1f | %.2f× | %.1f | %s | %.1f |\n",
                c.name.c_str(), c.max_num_seqs, c.reserved, ttfts.size(),
                static_cast<long long>(r.orgs[light].refused), Ms(Percentile(ttfts, 50)), p99,
                p99 / alone_p99, Ms(Percentile(r.Waits(light), 99)), heavy,
                static_cast<double>(admitted) / absl::ToDoubleSeconds(kDuration - kFrom));
  }
}

}  // namespace
}  // namespace sb::scheduler

int main() {
  using namespace sb::scheduler;
  const Wall wall;
  auto closed = [](std::string name, double weight, int depth = 32) {
    return OrgSpec{.name = std::move(name), .weight = weight, .arrivals = ClosedLoop{depth}};
  };
  // sim-small at max_num_seqs 8 serves about 40 of these requests a second:
  // 12/s is above a quarter of it, so a, b and c stay backlogged.
  auto poisson = [](std::string name, double rate) {
    return OrgSpec{.name = std::move(name), .arrivals = Poisson{rate}};
  };
  const std::vector<Named> scenarios = {
      {"1:1", {.orgs = {closed("a", 1), closed("b", 1)}}},
      {"1:3", {.orgs = {closed("a", 1), closed("b", 3)}}},
      {"1:1:1:1, d sends 10×",
       {.orgs = {poisson("a", 12), poisson("b", 12), poisson("c", 12), poisson("d", 120)},
        .drain = false}},
      {"1:2:4", {.orgs = {closed("a", 1), closed("b", 2), closed("c", 4)}}},
      {"mix with batch",
       {.orgs = {closed("flood", 1, 64),
                 {.name = "light", .arrivals = Poisson{5}},
                 {.name = "bursty", .arrivals = Bursts{.size = 40, .every = absl::Seconds(10)}},
                 {.name = "low", .weight = 0.25, .arrivals = ClosedLoop{8}},
                 {.name = "batch",
                  .priority = Priority::kBatch,
                  .arrivals = ClosedLoop{64},
                  .input_tokens = {500, 1500}}},
        .drain = false}},
  };
  std::printf(
      "### Shares (sim-small, max_num_seqs 8; service = input + 2 × output tokens, over 5–60 "
      "s)\n\n");
  ShareTable(scenarios);
  std::printf("\n### Priorities (interactive backlogged until 30 s, batch throughout)\n\n");
  PriorityTable();
  std::printf("\n### Light-org TTFT under a flood (60 s each)\n\n");
  TtftTable();
  std::printf("\n%.0f virtual seconds simulated in %.2f s of wall time (%.2f s in all)\n",
              total_virtual, total_wall, wall.Seconds());
  return 0;
}
