#include "core/log.h"

#include <string>

namespace sb {

void InitLogging(std::string_view service, std::string_view level) {
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %l service=" + std::string(service) + " %v",
                      spdlog::pattern_time_type::utc);
  spdlog::set_level(spdlog::level::from_str(std::string(level)));
}

}  // namespace sb
