// Configuration: every setting is an absl flag; an environment variable
// SWITCHBOARD_<FLAG_NAME_IN_UPPER_CASE> sets a flag that the command line does
// not name. Precedence: command line, then environment, then the default.
//
//   ABSL_FLAG(int, grpc_port, 50051, "gRPC listen port");
//   int main(int argc, char** argv) { sb::ParseConfig(argc, argv); ... }
#pragma once

#include <string>
#include <vector>

namespace sb {

// Parses flags (exits with a message on a bad flag or a bad environment
// value) and returns the positional arguments.
std::vector<std::string> ParseConfig(int argc, char** argv);

// The environment variable that overrides flag `name`.
std::string EnvNameForFlag(const std::string& name);

}  // namespace sb
