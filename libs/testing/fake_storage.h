// In-memory fakes of the storage adapters (libs/storage), for unit tests of
// logic. Integration tests use the real PostgreSQL, Redis and broker.
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "core/crypto.h"
#include "storage/api_keys.h"
#include "storage/publisher.h"
#include "storage/token_stream.h"

namespace sb::testing {

class FakeKeyStore final : public KeyStore {
 public:
  // Registers `secret` for `principal`.
  void Add(const std::string& secret, Principal principal) {
    std::lock_guard<std::mutex> lock(mu_);
    keys_[Sha256(secret)] = std::move(principal);
  }
  void set_available(bool available) {
    std::lock_guard<std::mutex> lock(mu_);
    available_ = available;
  }
  int lookups() const {
    std::lock_guard<std::mutex> lock(mu_);
    return lookups_;
  }
  absl::StatusOr<Principal> FindBySecretHash(const std::string& sha256) override {
    std::lock_guard<std::mutex> lock(mu_);
    ++lookups_;
    if (!available_) return absl::UnavailableError("fake key store is down");
    auto it = keys_.find(sha256);
    if (it == keys_.end()) return absl::NotFoundError("no such key");
    return it->second;
  }

 private:
  mutable std::mutex mu_;
  std::map<std::string, Principal> keys_;
  bool available_ = true;
  int lookups_ = 0;
};

class FakePublisher final : public Publisher {
 public:
  struct Message {
    std::string topic, key, value;
  };
  absl::Status Publish(const std::string& topic, const std::string& key,
                       const std::string& value) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!status_.ok()) return status_;
    messages_.push_back({topic, key, value});
    return absl::OkStatus();
  }
  void set_status(absl::Status st) {
    std::lock_guard<std::mutex> lock(mu_);
    status_ = std::move(st);
  }
  std::vector<Message> messages() const {
    std::lock_guard<std::mutex> lock(mu_);
    return messages_;
  }

 private:
  mutable std::mutex mu_;
  absl::Status status_;
  std::vector<Message> messages_;
};

// Stores entries per message; completes every append at once.
class FakeTokenStream final : public TokenStreamAppender {
 public:
  void Append(const std::string& message_id, std::vector<StreamEntry> entries, Done done) override {
    absl::Status st;
    {
      std::lock_guard<std::mutex> lock(mu_);
      st = ++calls_ == fail_call_ ? absl::UnavailableError("redis: connection refused") : status_;
      if (st.ok()) {
        auto& out = streams_[message_id];
        out.insert(out.end(), entries.begin(), entries.end());
      }
    }
    done(st);
  }
  void set_status(absl::Status st) {
    std::lock_guard<std::mutex> lock(mu_);
    status_ = std::move(st);
  }
  // The n-th call from now (1: the next) fails, as a writer that gave up
  // retrying reports it; the others do as set_status says.
  void fail_call(int n) {
    std::lock_guard<std::mutex> lock(mu_);
    fail_call_ = calls_ + n;
  }
  std::vector<StreamEntry> entries(const std::string& message_id) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = streams_.find(message_id);
    return it == streams_.end() ? std::vector<StreamEntry>{} : it->second;
  }

 private:
  mutable std::mutex mu_;
  absl::Status status_;
  int calls_ = 0;
  int fail_call_ = 0;
  std::map<std::string, std::vector<StreamEntry>> streams_;
};

}  // namespace sb::testing
