// What the cluster benchmarks share: a process's CPU time and memory from
// /proc, a counter family's sum from a /metrics page, and one run of
// bench/build/bench/gateway_load's rps mode.
#pragma once

#include <sys/types.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace sb::bench {

// CPU time (user + system) a process has used, in µs.
double CpuUs(pid_t pid);
// Its resident set, in KiB (VmRSS).
double RssKib(pid_t pid);
// The sum of a family's series on a /metrics page (0 when unreachable).
double MetricSum(int port, const std::string& name);
// gateway_load --mode=rps at `concurrency` for `duration_s` against
// 127.0.0.1:port, with `extra` flags; the JSON line it prints. Exits on
// failure.
nlohmann::json Load(const std::string& load_binary, int port, const std::string& key,
                    const std::string& model, int concurrency, double duration_s,
                    const std::vector<std::string>& extra = {});

}  // namespace sb::bench
