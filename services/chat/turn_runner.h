// Runs one chat turn to the end, whether or not anybody is watching:
// scheduler -> worker tokens -> output safety -> each released chunk
// appended to the reply's Redis Stream -> the reply persisted and announced.
//
// Turns run on a bounded pool of threads (blocking client calls); a full
// pool refuses the turn, which then ends at once with an error entry.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "chat/chat_store.h"
#include "core/thread_pool.h"
#include "storage/token_stream.h"
#include "switchboard/chat/v1/chat.pb.h"
#include "switchboard/safety/v1/safety.grpc.pb.h"
#include "switchboard/scheduler/v1/scheduler.grpc.pb.h"

namespace sb::chat {

using EventPublisher = std::function<void(const switchboard::chat::v1::ChatEvent&)>;

struct TurnSpec {
  Scope scope;
  std::string request_id;
  std::string conversation_id;
  std::string user_message_id;
  std::string assistant_message_id;
  std::string model;
  int max_tokens = 1024;
};

class TurnRunner {
 public:
  TurnRunner(ChatStore& store, TokenStreamWriter& stream,
             switchboard::scheduler::v1::TenantScheduler::StubInterface& scheduler,
             switchboard::safety::v1::Safety::StubInterface& safety, EventPublisher publish,
             int threads);

  // Queues the turn; false when the pool is full.
  bool Submit(TurnSpec spec);
  // Runs the turn on the calling thread.
  void Run(const TurnSpec& spec);
  // Ends a turn that could not run: error entry and a failed reply.
  void Fail(const TurnSpec& spec, int64_t offset, const std::string& type,
            const std::string& message, const std::string& partial = "");

 private:
  ChatStore& store_;
  TokenStreamWriter& stream_;
  switchboard::scheduler::v1::TenantScheduler::StubInterface& scheduler_;
  switchboard::safety::v1::Safety::StubInterface& safety_;
  EventPublisher publish_;
  ThreadPool pool_;
};

}  // namespace sb::chat
