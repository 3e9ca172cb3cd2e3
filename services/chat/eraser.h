// Erasure of deleted conversations. A DELETE hides a conversation at once
// (ChatStore::DeleteConversation); the eraser then removes what it held —
// every message row, the conversation row and each reply's Redis replay
// buffer (`stream:{message_id}`) — once it has been deleted for
// `erase_after` (0: at once, and the DELETE asks for it right away).
//
// A reply still in progress is stopped first (here or on the replica that
// runs it) and the conversation erased when it has ended, or after a
// minute whatever its state (a replica that died mid-turn). The Redis
// buffers go before the rows (which name them): if Redis is down, nothing
// is removed and the next sweep, every second, tries again. (A reply that
// another replica stopped can still write its stream's last entries in the
// moment after its row says it ended; such a buffer expires with
// --stream_retention_seconds.)
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <thread>

#include "absl/time/time.h"
#include "chat/chat_store.h"
#include "chat/turns.h"
#include "core/thread_pool.h"
#include "storage/redis.h"

namespace sb::metrics {
class Counter;
}  // namespace sb::metrics

namespace sb::chat {

class Eraser {
 public:
  // `publish_cancel` (may be null) stops a reply another replica runs.
  Eraser(ChatStore& store, BlockingRedis& redis, Turns& turns, ThreadPool& pool,
         std::function<absl::Status(const std::string&)> publish_cancel,
         absl::Duration erase_after);
  ~Eraser();  // stops the sweeper

  absl::Duration erase_after() const { return erase_after_; }
  // Starts the sweeper: every second, the deleted conversations due.
  void Start();
  // A conversation just deleted: with erase_after 0, erased now (on the
  // pool), else when due.
  void Deleted(const std::string& conversation_id);
  // One sweep: the conversations erased.
  int SweepOnce();
  // Erases one deleted conversation (`overdue`: even with a reply in
  // progress). Unavailable while a reply runs or a store is down.
  absl::Status Erase(const std::string& conversation_id, bool overdue);

 private:
  ChatStore& store_;
  BlockingRedis& redis_;
  Turns& turns_;
  ThreadPool& pool_;
  const std::function<absl::Status(const std::string&)> publish_cancel_;
  const absl::Duration erase_after_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  metrics::Counter& erased_;
  metrics::Counter& failures_;
};

}  // namespace sb::chat
