// Child processes for tests: start a binary with arguments and its output
// in a log file; stop it with SIGTERM (then SIGKILL) on destruction.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace sb::testing {

class Process {
 public:
  Process() = default;
  Process(const std::string& name, const std::vector<std::string>& argv, const std::string& log_path);
  ~Process();
  Process(Process&& other) noexcept;
  Process& operator=(Process&& other) noexcept;

  bool running() const;
  // SIGTERM, wait up to `grace_ms`, then SIGKILL. Returns the exit status.
  int Stop(int grace_ms = 5000);
  // SIGKILL at once (a crash).
  void Kill();
  pid_t pid() const { return pid_; }
  const std::string& name() const { return name_; }
  const std::string& log_path() const { return log_path_; }

 private:
  std::string name_;
  std::string log_path_;
  pid_t pid_ = -1;
};

// Runs a command to completion; returns its exit code and fills `output`.
int RunCommand(const std::vector<std::string>& argv, std::string* output);

// A port that was free a moment ago on 127.0.0.1.
int FreePort();
// Whether `port` on 127.0.0.1 could be bound a moment ago.
bool PortFree(int port);

// The last `lines` lines of a file.
std::string Tail(const std::string& path, int lines);

}  // namespace sb::testing
