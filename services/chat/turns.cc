#include "chat/turns.h"

#include <spdlog/spdlog.h>

#include "absl/time/clock.h"
#include "core/metrics.h"
#include "core/public_status.h"

namespace sb::chat {

namespace cpb = switchboard::chat::v1;

namespace {

StreamEntry Entry(int64_t offset, StreamEntry::Kind kind) {
  StreamEntry e;
  e.offset = offset;
  e.kind = kind;
  return e;
}

StreamEntry ErrorEntry(int64_t offset, const absl::Status& status) {
  StreamEntry e = Entry(offset, StreamEntry::Kind::kError);
  e.error_code = static_cast<int>(status.code());
  e.error_message = std::string(status.message());
  return e;
}

}  // namespace

// Writes one turn's reply: every event to the Redis Stream, in order (the
// appender retries what Redis did not take), then the reply to PostgreSQL
// before the stream's last event, so that a reader who sees the end finds
// the message complete. A stream that cannot be written even so fails the
// turn visibly: the generation stops, and the reply ends with an error right
// after the last event written, holding exactly the text written before it
// (no reader ever gets text with a hole, nor the stored message text that
// no reader could have had).
class ChatTurnSink final : public pipeline::Sink,
                           public std::enable_shared_from_this<ChatTurnSink> {
 public:
  ChatTurnSink(Turns& turns, TurnSpec spec) : turns_(turns), spec_(std::move(spec)) {
    if (spec_.resume) {
      // Taken over: the buffer holds these already; events go on after them.
      const Resume& r = *spec_.resume;
      offset_ = r.offset;
      result_.content = r.text;
      result_.delta_lengths = r.delta_lengths;
      result_.model = r.model;
      result_.input_tokens = r.input_tokens;
      written_ = {r.offset, r.text.size(), r.delta_lengths.size()};
      prior_deltas_ = static_cast<int>(r.delta_lengths.size());
    }
  }

  void OnStart(const pipeline::StartInfo& info, Ready ready) override {
    if (spec_.resume) {  // message_start (and content_block_start) were sent
      if (offset_ == 1) {
        Append({Entry(++offset_, StreamEntry::Kind::kBlockStart)}, std::move(ready));
      } else {
        ready(true);
      }
      return;
    }
    result_.model = info.model;
    result_.input_tokens = info.input_tokens;
    StreamEntry start = Entry(++offset_, StreamEntry::Kind::kMessageStart);
    start.model = info.model;
    start.input_tokens = info.input_tokens;
    Append({std::move(start), Entry(++offset_, StreamEntry::Kind::kBlockStart)}, std::move(ready));
  }

  void OnText(std::string text, Ready ready) override {
    if (broken()) {  // the generation is being stopped
      ready(true);
      return;
    }
    result_.content += text;
    result_.delta_lengths.push_back(static_cast<int>(text.size()));
    StreamEntry delta = Entry(++offset_, StreamEntry::Kind::kDelta);
    delta.text = std::move(text);
    Append({std::move(delta)}, std::move(ready));
  }

  void OnFinish(const pipeline::FinishInfo& info) override {
    if (broken()) {
      OnError(absl::UnavailableError(
          "the reply's stream could not be written; its text so far is in the message"));
      return;
    }
    result_.status = "complete";
    result_.safety_result = info.refusal               ? "filtered"
                            : info.safety_redacted > 0 ? "redacted"
                            : info.safety_flagged > 0  ? "flagged"
                                                       : "pass";
    result_.stop_reason = info.stop_reason;
    // A turn taken over: the input its first message_start announced, and
    // the output as the deltas before (about a token each) plus the new.
    if (!spec_.resume) result_.input_tokens = info.input_tokens;
    result_.output_tokens = info.output_tokens + prior_deltas_;
    if (result_.model.empty()) result_.model = spec_.model;
    if (offset_ == 0) {
      // Stopped before the worker started: the stream still opens.
      StreamEntry start = Entry(++offset_, StreamEntry::Kind::kMessageStart);
      start.model = result_.model;
      closing_.push_back(std::move(start));
      closing_.push_back(Entry(++offset_, StreamEntry::Kind::kBlockStart));
    }
    closing_.push_back(Entry(++offset_, StreamEntry::Kind::kBlockStop));
    StreamEntry delta = Entry(++offset_, StreamEntry::Kind::kMessageDelta);
    delta.stop_reason = info.stop_reason;
    delta.stop_sequence = info.stop_sequence;
    delta.input_tokens = result_.input_tokens;
    delta.output_tokens = result_.output_tokens;
    closing_.push_back(std::move(delta));
    closing_.push_back(Entry(++offset_, StreamEntry::Kind::kMessageStop));
    result_.stream_last_offset = offset_;
    Persist(true);
  }

  void OnError(const absl::Status& status) override {
    spdlog::warn("request_id={} turn {} failed: {}", spec_.request_id, spec_.assistant_message_id,
                 status.ToString());
    result_.status = "failed";
    result_.stop_reason = "error";
    if (result_.model.empty()) result_.model = spec_.model;
    if (broken()) {
      // Right after the last event written, with the text written.
      std::lock_guard<std::mutex> lock(mu_);
      offset_ = written_.offset;
      result_.content.resize(written_.bytes);
      result_.delta_lengths.resize(written_.deltas);
    }
    closing_.push_back(ErrorEntry(++offset_, status));
    result_.stream_last_offset = offset_;
    Persist(false);
  }

 private:
  // What the stream holds: through `offset`, with `bytes` of text in
  // `deltas` deltas.
  struct Written {
    int64_t offset = 0;
    size_t bytes = 0;
    size_t deltas = 0;
  };

  bool broken() {
    std::lock_guard<std::mutex> lock(mu_);
    return broken_;
  }

  void Append(std::vector<StreamEntry> entries, Ready ready) {
    Written after;
    {
      std::lock_guard<std::mutex> lock(mu_);
      after = written_;
    }
    for (const auto& e : entries) {
      after.offset = e.offset;
      if (e.kind == StreamEntry::Kind::kDelta) {
        after.bytes += e.text.size();
        ++after.deltas;
      }
    }
    turns_.stream_.Append(
        spec_.assistant_message_id, std::move(entries),
        [self = shared_from_this(), after, ready = std::move(ready)](absl::Status st) {
          if (st.ok()) {
            std::lock_guard<std::mutex> lock(self->mu_);
            self->written_ = after;
          } else {
            self->Break(st);
          }
          if (ready) ready(true);  // a turn runs on without readers
        });
  }

  // The stream could not take an event even after retries: stop the
  // generation; the turn ends failed (OnFinish/OnError above).
  void Break(const absl::Status& st) {
    AppendFailed(st);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (broken_) return;
      broken_ = true;
    }
    turns_.Cancel(spec_.assistant_message_id);
  }

  void AppendFailed(const absl::Status& st) {
    turns_.append_failures_.Inc();
    spdlog::error("request_id={} stream append for {}: {}", spec_.request_id,
                  spec_.assistant_message_id, st.ToString());
  }

  // The reply to PostgreSQL, then the stream's closing entries, then the
  // announcement.
  void Persist(bool ok) {
    auto self = shared_from_this();
    const bool queued = turns_.pool_.Submit([self, ok] {
      // A finished reply is announced (chat.events, through the outbox).
      const cpb::ChatEvent announce = self->Announcement();
      if (auto st = self->turns_.store_.CompleteReply(self->spec_.conversation_id,
                                                      self->spec_.assistant_message_id,
                                                      self->result_, ok ? &announce : nullptr);
          !st.ok()) {
        spdlog::error("request_id={} persisting reply {}: {}", self->spec_.request_id,
                      self->spec_.assistant_message_id, st.ToString());
      }
      self->turns_.stream_.Append(self->spec_.assistant_message_id, std::move(self->closing_),
                                  [self, ok](absl::Status st) {
                                    if (!st.ok()) self->AppendFailed(st);
                                    self->turns_.Ended(self->spec_.assistant_message_id, ok);
                                  });
    });
    if (!queued) {
      spdlog::error("request_id={} reply {} not persisted: the database queue is full",
                    spec_.request_id, spec_.assistant_message_id);
      // The stream still ends, right after what was written.
      const int64_t next = offset_ - static_cast<int64_t>(closing_.size()) + 1;
      turns_.stream_.Append(
          spec_.assistant_message_id,
          {ErrorEntry(next, absl::UnavailableError("chat is overloaded"))},
          [self](absl::Status) { self->turns_.Ended(self->spec_.assistant_message_id, false); });
    }
  }

  cpb::ChatEvent Announcement() const {
    cpb::ChatEvent ev;
    ev.set_type("message.completed");
    ev.set_org_id(spec_.scope.org_id);
    ev.set_user_id(spec_.scope.user_id);
    ev.set_conversation_id(spec_.conversation_id);
    auto* m = ev.mutable_message();
    m->set_id(spec_.assistant_message_id);
    m->set_conversation_id(spec_.conversation_id);
    m->set_parent_id(spec_.user_message_id);
    m->set_role("assistant");
    m->set_content(result_.content);
    m->set_status("complete");
    m->set_stop_reason(result_.stop_reason);
    m->set_safety_result(result_.safety_result);
    m->set_input_tokens(result_.input_tokens);
    m->set_output_tokens(result_.output_tokens);
    m->set_model(result_.model);
    m->set_stream_last_offset(result_.stream_last_offset);
    return ev;
  }

  Turns& turns_;
  TurnSpec spec_;
  int64_t offset_ = 0;
  TurnResult result_;
  std::vector<StreamEntry> closing_;
  std::mutex mu_;  // guards written_ and broken_ (set on the appender's threads)
  Written written_;
  bool broken_ = false;
  int prior_deltas_ = 0;  // a turn taken over: the deltas streamed before
};

int EstimateTokens(std::string_view text) {
  constexpr int kPerMessage = 4;
  return static_cast<int>((text.size() + 2) / 3) + kPerMessage;
}

size_t FirstThatFits(const std::vector<std::pair<std::string, std::string>>& history,
                     int64_t budget_tokens) {
  size_t first = history.size();
  int64_t tokens = 0;
  size_t bytes = 0;
  while (first > 0) {
    const std::string& text = history[first - 1].second;
    const bool newest = first == history.size();
    if (!newest &&
        (tokens + EstimateTokens(text) > budget_tokens || bytes + text.size() > kMaxPromptBytes)) {
      break;
    }
    tokens += EstimateTokens(text);
    bytes += text.size();
    --first;
  }
  // A prompt starts with a user message (chat templates insist).
  while (first + 1 < history.size() && history[first].first != "user") ++first;
  return first;
}

Turns::Turns(ChatStore& store, TokenStreamAppender& stream, pipeline::Pipeline& pipeline,
             ThreadPool& pool, int max_turns)
    : store_(store),
      stream_(stream),
      pipeline_(pipeline),
      pool_(pool),
      max_turns_(max_turns),
      active_gauge_(
          metrics::Default().GetGauge("sb_chat_turns_in_progress", "Chat turns generating now")),
      completed_(metrics::Default().GetCounter("sb_chat_turns_total", "Chat turns by outcome",
                                               {{"outcome", "complete"}})),
      failed_(metrics::Default().GetCounter("sb_chat_turns_total", "Chat turns by outcome",
                                            {{"outcome", "failed"}})),
      append_failures_(metrics::Default().GetCounter(
          "sb_chat_stream_append_failures_total",
          "Reply events the Redis stream did not take (readers fall back to the stored message)")) {
}

void Turns::Start(TurnSpec spec) {
  if (active_.fetch_add(1) >= max_turns_) {
    active_.fetch_sub(1);
    failed_.Inc();
    FailEarly(spec, absl::UnavailableError("too many chat turns in progress; retry later"));
    return;
  }
  active_gauge_.Add(1);
  {
    std::lock_guard lock(running_mu_);
    running_.emplace(spec.assistant_message_id, Running{});
  }
  if (!pool_.Submit([this, spec] { Run(spec); })) {
    FailEarly(spec, absl::UnavailableError("chat is overloaded; retry later"));
    Ended(spec.assistant_message_id, false);
  }
}

bool Turns::Cancel(const std::string& assistant_message_id) {
  std::shared_ptr<pipeline::Generation> generation;
  {
    std::lock_guard lock(running_mu_);
    auto it = running_.find(assistant_message_id);
    if (it == running_.end()) return false;
    it->second.cancelled = true;
    generation = it->second.generation.lock();
  }
  if (generation) generation->Cancel();  // outside the lock: it may end the turn
  return true;
}

bool Turns::Runs(const std::string& assistant_message_id) {
  std::lock_guard lock(running_mu_);
  return running_.count(assistant_message_id) > 0;
}

void Turns::Ended(const std::string& assistant_message_id, bool ok) {
  {
    std::lock_guard lock(running_mu_);
    running_.erase(assistant_message_id);
  }
  active_.fetch_sub(1);
  active_gauge_.Add(-1);
  (ok ? completed_ : failed_).Inc();
}

void Turns::Run(TurnSpec spec) {
  auto history = store_.History(spec.conversation_id, spec.user_message_id);
  if (!history.ok()) {
    FailEarly(spec, PublicStatus(history.status(), spec.request_id, "loading the conversation"));
    Ended(spec.assistant_message_id, false);
    return;
  }
  // The prompt: the most recent history that fits the model's context
  // window with room for the reply (and one gRPC message).
  const int window = context_window_ ? context_window_(spec.model) : kDefaultContextWindowTokens;
  const size_t first =
      FirstThatFits(*history, static_cast<int64_t>(window) - static_cast<int64_t>(spec.max_tokens));
  history->erase(history->begin(), history->begin() + static_cast<std::ptrdiff_t>(first));
  auto req = std::make_shared<pipeline::Request>();
  req->set_request_id(spec.request_id);
  req->set_org_id(spec.scope.org_id);
  req->set_end_user_id(spec.scope.user_id);
  req->set_model(spec.model);
  req->set_max_tokens(spec.max_tokens);
  req->set_source("chat");
  // A turn taken over: the text streamed so far starts the model's reply.
  if (spec.resume && !spec.resume->text.empty())
    history->emplace_back("assistant", spec.resume->text);
  for (auto& [role, content] : *history) {
    auto* m = req->add_messages();
    m->set_role(role);
    auto* b = m->add_content();
    b->set_type("text");
    b->set_text(std::move(content));
  }
  // The new message passed input safety before it was stored; the rest of
  // the history passed it on earlier turns.
  const trace::SpanContext trace = spec.trace;
  const std::string reply_id = spec.assistant_message_id;
  auto generation =
      pipeline_.Run(std::move(req), std::make_shared<ChatTurnSink>(*this, std::move(spec)),
                    {.check_input = false, .trace = trace});
  // A stop that came while the history loaded applies now.
  bool cancelled = false;
  {
    std::lock_guard lock(running_mu_);
    if (auto it = running_.find(reply_id); it != running_.end()) {
      it->second.generation = generation;
      cancelled = it->second.cancelled;
    }
  }
  if (cancelled && generation) generation->Cancel();
}

void Turns::FailEarly(const TurnSpec& spec, const absl::Status& status) {
  spdlog::warn("request_id={} turn {} not run: {}", spec.request_id, spec.assistant_message_id,
               status.ToString());
  // After what a turn taken over had streamed.
  const int64_t offset = (spec.resume ? spec.resume->offset : 0) + 1;
  stream_.Append(spec.assistant_message_id, {ErrorEntry(offset, status)}, [](absl::Status) {});
  TurnResult r;
  r.status = "failed";
  r.stop_reason = "error";
  r.model = spec.model;
  r.stream_last_offset = offset;
  if (spec.resume) r.content = spec.resume->text;
  auto st = pool_.Submit([this, spec, r] {
    if (auto s = store_.CompleteReply(spec.conversation_id, spec.assistant_message_id, r);
        !s.ok()) {
      spdlog::error("request_id={} persisting failed reply: {}", spec.request_id, s.ToString());
    }
  });
  if (!st) spdlog::error("request_id={} failed reply not persisted: queue full", spec.request_id);
}

void Turns::StartLeases(std::string owner, absl::Duration ttl, StreamReader read) {
  lease_owner_ = std::move(owner);
  lease_ttl_ = ttl;
  read_ = std::move(read);
  last_renewed_ = absl::Now();
  renew_ = std::make_unique<Periodic>(ttl / 3, [this] { RenewOnce(); });
  sweep_ = std::make_unique<Periodic>(std::min(ttl / 3, absl::Seconds(2)), [this] {
    if (int n = TakeOverOnce(); n > 0) {
      spdlog::warn("took over {} turn(s) whose replica stopped renewing them", n);
    }
  });
  renew_->Start();
  sweep_->Start();
}

void Turns::StopLeases() {
  if (sweep_) sweep_->Stop();
  if (renew_) renew_->Stop();
}

void Turns::RenewOnce() {
  static auto& failures =
      metrics::Default().GetCounter("sb_chat_lease_renew_failures_total",
                                    "Rounds that could not renew this replica's turn leases");
  auto renewed = store_.RenewLeases(lease_owner_, lease_ttl_);
  const absl::Time now = absl::Now();
  if (renewed.ok()) {
    last_renewed_ = now;
    return;
  }
  failures.Inc();
  spdlog::warn("renewing turn leases: {}", renewed.status().ToString());
  // Fenced: before the leases can lapse and another replica continue these
  // turns, they stop here (a reply is never written by two replicas).
  if (now - last_renewed_ > lease_ttl_ / 2 && active_.load() > 0) {
    spdlog::error("turn leases not renewed for {}: stopping this replica's turns",
                  absl::FormatDuration(now - last_renewed_));
    CancelAll();
  }
}

void Turns::CancelAll() {
  std::vector<std::string> ids;
  {
    std::lock_guard lock(running_mu_);
    for (const auto& [id, running] : running_) ids.push_back(id);
  }
  for (const auto& id : ids) Cancel(id);
}

int Turns::TakeOverOnce() {
  static auto& taken =
      metrics::Default().GetCounter("sb_chat_turns_taken_over_total",
                                    "Turns continued after their replica stopped renewing them");
  auto orphans = store_.TakeOverExpired(lease_owner_, lease_ttl_, 50);
  if (!orphans.ok()) {
    spdlog::warn("taking over turns: {}", orphans.status().ToString());
    return 0;
  }
  for (auto& orphan : *orphans) {
    taken.Inc();
    if (!pool_.Submit([this, orphan] { Continue(orphan); })) {
      spdlog::error(
          "turn {} taken over but not continued: the queue is full (its lease lapses "
          "again for another replica)",
          orphan.reply_id);
    }
  }
  return static_cast<int>(orphans->size());
}

void Turns::Continue(const ChatStore::Orphan& orphan) {
  TurnSpec spec{.scope = orphan.scope,
                // Its own id (each generation is metered once by it).
                .request_id = "req_takeover_" + orphan.reply_id + "_" +
                              std::to_string(absl::ToUnixMillis(absl::Now())),
                .conversation_id = orphan.conversation_id,
                .user_message_id = orphan.user_message_id,
                .assistant_message_id = orphan.reply_id,
                .model = orphan.model};
  auto entries = read_(orphan.reply_id);
  if (!entries.ok()) {
    // What readers were sent is unknown: the turn ends (its lease lapses
    // for another try only if storing this fails too).
    spdlog::error("turn {} taken over: its buffer is unreadable: {}", orphan.reply_id,
                  entries.status().ToString());
    FailEarly(spec, absl::UnavailableError("the reply was interrupted; retry"));
    return;
  }
  Resume r;
  const StreamEntry* last = nullptr;
  for (const auto& e : *entries) {
    r.offset = e.offset;
    last = &e;
    if (e.kind == StreamEntry::Kind::kMessageStart) {
      r.model = e.model;
      r.input_tokens = e.input_tokens;
    } else if (e.kind == StreamEntry::Kind::kDelta) {
      r.text += e.text;
      r.delta_lengths.push_back(static_cast<int>(e.text.size()));
    }
  }
  if (last != nullptr && last->final()) {
    // The buffer ended (the replica died between it and the database): the
    // reply is what it says.
    TurnResult done;
    done.content = r.text;
    done.delta_lengths = r.delta_lengths;
    done.model = r.model.empty() ? orphan.model : r.model;
    done.input_tokens = r.input_tokens;
    done.stream_last_offset = r.offset;
    done.status = last->kind == StreamEntry::Kind::kMessageStop ? "complete" : "failed";
    done.stop_reason = done.status == "complete" ? "end_turn" : "error";
    for (const auto& e : *entries) {
      if (e.kind == StreamEntry::Kind::kMessageDelta) {
        done.stop_reason = e.stop_reason;
        done.output_tokens = e.output_tokens;
      }
    }
    if (auto st = store_.CompleteReply(orphan.conversation_id, orphan.reply_id, done); !st.ok()) {
      spdlog::error("turn {} taken over: storing its ended reply: {}", orphan.reply_id,
                    st.ToString());
    }
    return;
  }
  if (r.offset > 0) spec.resume = std::move(r);
  Start(std::move(spec));
}

}  // namespace sb::chat
