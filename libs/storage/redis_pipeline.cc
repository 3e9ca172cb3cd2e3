#include "storage/redis_pipeline.h"

#include <hiredis/hiredis.h>
#include <spdlog/spdlog.h>

#include "core/metrics.h"

namespace sb {
namespace {

constexpr auto kReconnectPause = std::chrono::milliseconds(100);

}  // namespace

RedisPipeline::RedisPipeline(RedisOptions options, size_t max_queue, size_t max_batch)
    : options_(std::move(options)),
      max_queue_(max_queue),
      max_batch_(max_batch),
      thread_([this] { Loop(); }) {}

RedisPipeline::~RedisPipeline() {
  Stop();
  if (conn_ != nullptr) redisFree(conn_);
}

void RedisPipeline::Stop() {
  std::deque<Pending> left;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return;
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
  {
    std::lock_guard<std::mutex> lock(mu_);
    left.swap(queue_);
  }
  for (auto& p : left) p.done(absl::UnavailableError("redis pipeline is shutting down"));
}

size_t RedisPipeline::queued() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queue_.size();
}

void RedisPipeline::Command(std::vector<std::string> args, Callback done) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stop_ && queue_.size() < max_queue_) {
      queue_.push_back({std::move(args), std::move(done)});
      if (queue_.size() == 1) cv_.notify_one();
      return;
    }
  }
  static auto& refused = metrics::Default().GetCounter(
      "sb_redis_pipeline_refused_total", "Redis commands refused because the queue was full");
  refused.Inc();
  done(absl::ResourceExhaustedError("redis pipeline queue is full"));
}

void RedisPipeline::Sequence(std::vector<std::vector<std::string>> commands, Callback done) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stop_ && !commands.empty() && queue_.size() + commands.size() <= max_queue_) {
      const bool was_empty = queue_.empty();
      for (size_t i = 0; i + 1 < commands.size(); ++i) {
        queue_.push_back({std::move(commands[i]), [](absl::StatusOr<RedisReply>) {}});
      }
      queue_.push_back({std::move(commands.back()), std::move(done)});
      if (was_empty) cv_.notify_one();
      return;
    }
  }
  done(absl::ResourceExhaustedError("redis pipeline queue is full"));
}

bool RedisPipeline::Send(std::vector<Pending>& batch,
                         std::vector<absl::StatusOr<RedisReply>>& results) {
  if (conn_ == nullptr) {
    timeval tv{static_cast<long>(options_.timeout.count() / 1000),
               static_cast<long>((options_.timeout.count() % 1000) * 1000)};
    conn_ = redisConnectWithTimeout(options_.host.c_str(), options_.port, tv);
    if (conn_ == nullptr || conn_->err) {
      const std::string why = conn_ ? conn_->errstr : "out of memory";
      if (conn_) redisFree(conn_);
      conn_ = nullptr;
      for (size_t i = 0; i < batch.size(); ++i) {
        results.push_back(absl::UnavailableError("redis connect: " + why));
      }
      return false;
    }
    redisSetTimeout(conn_, tv);
    if (auto st = RedisAuth(conn_, options_.password); !st.ok()) {
      redisFree(conn_);
      conn_ = nullptr;
      for (size_t i = 0; i < batch.size(); ++i) results.push_back(st);
      return false;
    }
  }
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  for (const auto& p : batch) {
    argv.clear();
    lens.clear();
    for (const auto& a : p.args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    redisAppendCommandArgv(conn_, static_cast<int>(argv.size()), argv.data(), lens.data());
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    void* raw = nullptr;
    if (redisGetReply(conn_, &raw) != REDIS_OK || raw == nullptr) {
      const std::string why = conn_->errstr;
      redisFree(conn_);
      conn_ = nullptr;
      // What was sent may or may not have run: the callers decide.
      while (results.size() < batch.size())
        results.push_back(absl::UnavailableError("redis: " + why));
      return false;
    }
    auto* reply = static_cast<redisReply*>(raw);
    RedisReply out = ToRedisReply(reply);
    freeReplyObject(reply);
    if (out.type == RedisReply::Type::kError) {
      results.push_back(absl::InternalError("redis: " + out.str));
    } else {
      results.push_back(std::move(out));
    }
  }
  return true;
}

void RedisPipeline::Loop() {
  auto& batches = metrics::Default().GetCounter("sb_redis_pipeline_batches_total",
                                                "Pipelined batches sent to Redis");
  auto& commands = metrics::Default().GetCounter("sb_redis_pipeline_commands_total",
                                                 "Commands sent through the Redis pipeline");
  std::vector<Pending> batch;
  std::vector<absl::StatusOr<RedisReply>> results;
  for (;;) {
    batch.clear();
    results.clear();
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      while (!queue_.empty() && batch.size() < max_batch_) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    const bool ok = Send(batch, results);
    batches.Inc();
    commands.Inc(static_cast<double>(batch.size()));
    const std::string failure = ok ? "" : results.back().status().ToString();
    for (size_t i = 0; i < batch.size(); ++i) batch[i].done(std::move(results[i]));
    if (!ok) {
      spdlog::warn("redis pipeline to {}:{}: {}", options_.host, options_.port, failure);
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, kReconnectPause, [this] { return stop_; });
    }
  }
}

}  // namespace sb
