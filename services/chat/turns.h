// Chat turns on the generation pipeline. A turn runs to its end whether or
// not anybody is watching: the history is loaded (on the database pool),
// the pipeline generates (no thread per turn; the user's new message was
// checked by input safety before it was stored), and ChatTurnSink writes
// every event of the reply to its Redis Stream as one entry (so a reader
// can resume after any event), persists the reply, and announces it
// (message.completed, written to the outbox with the reply).
//
// At most `max_turns` run at once; a turn beyond them ends at once with an
// overloaded error entry and a failed reply.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "chat/chat_store.h"
#include "core/periodic.h"
#include "core/thread_pool.h"
#include "pipeline/pipeline.h"
#include "storage/token_stream.h"
#include "switchboard/chat/v1/chat.pb.h"
#include "trace/trace.h"

namespace sb::metrics {
class Counter;
class Gauge;
}  // namespace sb::metrics

namespace sb::chat {

// A turn's prompt: the conversation's most recent messages that fit the
// model's context window, less the reply's max_tokens, and this much text
// (one gRPC message); older ones are left out, the newest always goes.
inline constexpr size_t kMaxPromptBytes = 3 << 20;
// The context window of a model no flag names (Llama 3's).
inline constexpr int kDefaultContextWindowTokens = 128 * 1024;
// Tokens are estimated before any tokenizer sees the text: a byte in
// three (most English tokens are longer) and a few for each message's
// framing, so that the estimate errs on the side of fitting.
int EstimateTokens(std::string_view text);
// The most recent of `history` (oldest first) that fits `budget_tokens`
// and kMaxPromptBytes; always at least the newest.
size_t FirstThatFits(const std::vector<std::pair<std::string, std::string>>& history,
                     int64_t budget_tokens);

// What a turn taken over from a replica that died had already streamed
// (its Redis buffer): the turn goes on after it, with the text so far given
// to the model as the start of its reply.
struct Resume {
  int64_t offset = 0;  // of the last event written
  std::string text;    // the deltas so far
  std::vector<int> delta_lengths;
  int input_tokens = 0;
  std::string model;
};

// Reads a reply's buffer: its entries, in order (none when there is none).
using StreamReader =
    std::function<absl::StatusOr<std::vector<StreamEntry>>(const std::string& message_id)>;

struct TurnSpec {
  Scope scope;
  std::string request_id;
  std::string conversation_id;
  std::string user_message_id;
  std::string assistant_message_id;
  std::string model;
  int max_tokens = 1024;
  trace::SpanContext trace;  // the SendMessage call's span
  std::optional<Resume> resume;  // a turn taken over
};

class Turns {
 public:
  // `pool` runs the database calls; `max_turns` bounds turns in progress.
  Turns(ChatStore& store, TokenStreamAppender& stream, pipeline::Pipeline& pipeline,
        ThreadPool& pool, int max_turns);

  // Starts the turn; never blocks.
  void Start(TurnSpec spec);
  int64_t active() const { return active_.load(); }

  // The context window of each model, in tokens (default
  // kDefaultContextWindowTokens for every model). Set before Start.
  void set_context_windows(std::function<int(const std::string& model)> fn) {
    context_window_ = std::move(fn);
  }

  // Stops the reply `assistant_message_id` if this replica runs it (also
  // before its generation has started): it ends as a reply with
  // stop_reason "cancelled" holding the text so far. False when this
  // replica does not run it.
  bool Cancel(const std::string& assistant_message_id);
  // Whether this replica runs the reply (until its last stream entry is
  // written).
  bool Runs(const std::string& assistant_message_id);

  // Turns survive their replica. The replies this replica starts are leased
  // to `owner` (ChatStore::set_lease); StartLeases renews them every ttl/3
  // and, as often, takes over the replies whose lease expired (their
  // replica died) and continues them from their buffer (`read`): at the next
  // offset, with the text so far as the start of the model's reply, or from
  // the start when nothing was streamed; a reply whose buffer already ended
  // is stored as it ended. A replica that cannot renew its leases for half
  // the ttl stops its turns before another may take them over.
  void StartLeases(std::string owner, absl::Duration ttl, StreamReader read);
  void StopLeases();
  // One takeover round: how many turns were taken over (tests).
  int TakeOverOnce();

 private:
  friend class ChatTurnSink;
  void Run(TurnSpec spec);
  // Ends a turn that could not run: an error entry and a failed reply.
  void FailEarly(const TurnSpec& spec, const absl::Status& status);
  void Ended(const std::string& assistant_message_id, bool ok);
  void RenewOnce();
  // Continues a turn taken over (on the pool).
  void Continue(const ChatStore::Orphan& orphan);
  void CancelAll();

  // The turns this replica runs, by reply id: their generation once it has
  // started, and whether a stop came before it did.
  struct Running {
    std::weak_ptr<pipeline::Generation> generation;
    bool cancelled = false;
  };
  std::function<int(const std::string&)> context_window_;
  std::mutex running_mu_;
  std::unordered_map<std::string, Running> running_;

  ChatStore& store_;
  TokenStreamAppender& stream_;
  pipeline::Pipeline& pipeline_;
  ThreadPool& pool_;
  const int max_turns_;
  std::atomic<int64_t> active_{0};
  metrics::Gauge& active_gauge_;
  metrics::Counter& completed_;
  metrics::Counter& failed_;
  metrics::Counter& append_failures_;

  std::string lease_owner_;
  absl::Duration lease_ttl_;
  StreamReader read_;
  absl::Time last_renewed_;
  std::unique_ptr<Periodic> renew_;
  std::unique_ptr<Periodic> sweep_;
};

}  // namespace sb::chat
