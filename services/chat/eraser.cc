#include "chat/eraser.h"

#include <spdlog/spdlog.h>

#include <chrono>

#include "core/metrics.h"
#include "storage/token_stream.h"

namespace sb::chat {

namespace {
constexpr int kSweepBatch = 100;
}  // namespace

Eraser::Eraser(ChatStore& store, BlockingRedis& redis, Turns& turns, ThreadPool& pool,
               std::function<absl::Status(const std::string&)> publish_cancel,
               absl::Duration erase_after)
    : store_(store),
      redis_(redis),
      turns_(turns),
      pool_(pool),
      publish_cancel_(std::move(publish_cancel)),
      erase_after_(erase_after),
      erased_(metrics::Default().GetCounter(
          "sb_chat_erased_conversations_total",
          "Deleted conversations whose rows and replay buffers were removed")),
      failures_(metrics::Default().GetCounter(
          "sb_chat_erase_failures_total",
          "Erasures put off (a reply still running, or PostgreSQL or Redis unreachable)")) {}

Eraser::~Eraser() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void Eraser::Start() {
  thread_ = std::thread([this] {
    while (!stop_) {
      SweepOnce();
      for (int i = 0; i < 10 && !stop_; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    }
  });
}

void Eraser::Deleted(const std::string& conversation_id) {
  if (erase_after_ > absl::ZeroDuration()) return;  // the sweeper's, when due
  pool_.Submit([this, conversation_id] {
    // Put off (a reply still running): the sweeper tries again.
    (void)Erase(conversation_id, /*overdue=*/false);
  });
}

int Eraser::SweepOnce() {
  auto due = store_.ErasableConversations(erase_after_, kSweepBatch);
  if (!due.ok()) {
    failures_.Inc();
    spdlog::warn("chat eraser: {}", due.status().ToString());
    return 0;
  }
  int erased = 0;
  for (const auto& c : *due) erased += Erase(c.conversation_id, c.overdue).ok();
  return erased;
}

absl::Status Eraser::Erase(const std::string& conversation_id, bool overdue) {
  auto messages = store_.MessagesOf(conversation_id);
  if (!messages.ok()) {
    failures_.Inc();
    return messages.status();
  }
  bool running = false;
  for (const auto& [id, status] : *messages) {
    // Stored but still writing its stream's last entries here: wait too.
    if (status != "in_progress" && !turns_.Runs(id)) continue;
    running = true;
    if (!overdue && !turns_.Cancel(id) && publish_cancel_) (void)publish_cancel_(id);
  }
  if (running && !overdue) {
    failures_.Inc();
    return absl::UnavailableError("a reply of the conversation is still running");
  }
  for (const auto& [id, status] : *messages) {
    if (auto r = redis_.Command({"DEL", TokenStreamKey(id)}); !r.ok()) {
      failures_.Inc();
      spdlog::warn("chat eraser: the replay buffer of {}: {}", id, r.status().ToString());
      return r.status();
    }
  }
  if (auto st = store_.EraseConversation(conversation_id); !st.ok()) {
    // FailedPrecondition: erased already (by the sweep and the DELETE's
    // own attempt at once); nothing was put off.
    if (st.code() != absl::StatusCode::kFailedPrecondition) failures_.Inc();
    return st;
  }
  erased_.Inc();
  return absl::OkStatus();
}

}  // namespace sb::chat
