#include "bench_support.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>

#include "http/http_client.h"
#include "support/process.h"

namespace sb::bench {

double CpuUs(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // Fields after the command's closing parenthesis; utime and stime are
  // the 14th and 15th of the line.
  std::istringstream rest(stat.substr(stat.rfind(')') + 2));
  std::string field;
  double ticks = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i >= 14) ticks += std::stod(field);
  }
  return ticks * 1e6 / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double RssKib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stod(line.substr(6));
  }
  return 0;
}

double MetricSum(int port, const std::string& name) {
  auto r = http::Fetch({.port = port, .target = "/metrics"});
  if (!r.ok()) return 0;
  std::istringstream lines(r->body);
  double sum = 0;
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(name + "{", 0) == 0 || line.rfind(name + " ", 0) == 0) {
      sum += std::stod(line.substr(line.rfind(' ') + 1));
    }
  }
  return sum;
}

nlohmann::json Load(const std::string& load_binary, int port, const std::string& key,
                    const std::string& model, int concurrency, double duration_s,
                    const std::vector<std::string>& extra) {
  std::vector<std::string> argv = {
      load_binary,        "--port=" + std::to_string(port),
      "--api_key=" + key, "--mode=rps",
      "--model=" + model, "--concurrency=" + std::to_string(concurrency),
      "--threads=1",      "--duration_s=" + std::to_string(duration_s)};
  argv.insert(argv.end(), extra.begin(), extra.end());
  std::string out;
  if (testing::RunCommand(argv, &out) != 0) {
    std::fprintf(stderr, "gateway_load failed: %s\n", out.c_str());
    std::exit(1);
  }
  // The JSON line is the last line.
  return nlohmann::json::parse(out.substr(out.rfind('{')), nullptr, false);
}

}  // namespace sb::bench
