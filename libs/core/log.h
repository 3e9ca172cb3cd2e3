// Logging: spdlog with one line per event, the service's name on every line
// and, by convention, `request_id=<id>` as the first field of every line that
// belongs to a request:
//
//   spdlog::info("request_id={} generated {} tokens", rid, n);
#pragma once

#include <string_view>

#include <spdlog/spdlog.h>

namespace sb {

// Sets the process-wide pattern and level ("debug", "info", "warn", ...).
void InitLogging(std::string_view service, std::string_view level);

}  // namespace sb
