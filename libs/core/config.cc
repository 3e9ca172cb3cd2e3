#include "core/config.h"

#include <cctype>
#include <cstdio>
#include <cstdlib>

#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"

namespace sb {

std::string EnvNameForFlag(const std::string& name) {
  std::string env = "SWITCHBOARD_";
  for (char c : name) env += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return env;
}

std::vector<std::string> ParseConfig(int argc, char** argv) {
  // Environment first, so that the command line parsed afterwards wins.
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    const std::string env = EnvNameForFlag(std::string(name));
    const char* value = std::getenv(env.c_str());
    if (value == nullptr) continue;
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      std::fprintf(stderr, "invalid value in %s for --%s: %s\n", env.c_str(),
                   std::string(name).c_str(), error.c_str());
      std::exit(2);
    }
  }
  std::vector<std::string> positional;
  for (char* arg : absl::ParseCommandLine(argc, argv)) positional.emplace_back(arg);
  return positional;
}

}  // namespace sb
