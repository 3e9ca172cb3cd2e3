#include "storage/token_stream.h"

#include <atomic>
#include <charconv>
#include <memory>
#include <mutex>

#include "core/hash.h"
#include "storage/redis_pipeline.h"

namespace sb {
namespace {

struct KindName {
  StreamEntry::Kind kind;
  const char* name;
};
constexpr KindName kKindNames[] = {
    {StreamEntry::Kind::kMessageStart, "message_start"},
    {StreamEntry::Kind::kBlockStart, "content_block_start"},
    {StreamEntry::Kind::kDelta, "delta"},
    {StreamEntry::Kind::kBlockStop, "content_block_stop"},
    {StreamEntry::Kind::kMessageDelta, "message_delta"},
    {StreamEntry::Kind::kMessageStop, "message_stop"},
    {StreamEntry::Kind::kError, "error"},
};

const char* NameOf(StreamEntry::Kind kind) {
  for (const auto& k : kKindNames) {
    if (k.kind == kind) return k.name;
  }
  return "unknown";
}

int ToInt(const std::string& s) {
  int v = 0;
  std::from_chars(s.data(), s.data() + s.size(), v);
  return v;
}

}  // namespace

std::string ShardTag(std::string_view id, int shards, char prefix) {
  return prefix + std::to_string(Fnv1a(id) % static_cast<uint64_t>(shards));
}

std::string TokenStreamKey(const std::string& message_id) {
  return "stream:{" + ShardTag(message_id, kStreamShards, 's') + "}:" + message_id;
}

std::vector<std::string> TokenStreamAddArgs(const std::string& message_id, const StreamEntry& e) {
  std::vector<std::string> args = {"XADD", TokenStreamKey(message_id),
                                   "0-" + std::to_string(e.offset), "type", NameOf(e.kind)};
  switch (e.kind) {
    case StreamEntry::Kind::kMessageStart:
      args.insert(args.end(), {"model", e.model, "input_tokens", std::to_string(e.input_tokens)});
      break;
    case StreamEntry::Kind::kDelta:
      args.insert(args.end(), {"text", e.text});
      break;
    case StreamEntry::Kind::kMessageDelta:
      args.insert(args.end(), {"stop_reason", e.stop_reason, "stop_sequence", e.stop_sequence,
                               "input_tokens", std::to_string(e.input_tokens), "output_tokens",
                               std::to_string(e.output_tokens)});
      break;
    case StreamEntry::Kind::kError:
      args.insert(args.end(), {"code", std::to_string(e.error_code), "message", e.error_message});
      break;
    case StreamEntry::Kind::kBlockStart:
    case StreamEntry::Kind::kBlockStop:
    case StreamEntry::Kind::kMessageStop:
      break;
  }
  return args;
}

absl::StatusOr<StreamEntry> ParseStreamEntry(const RedisReply& entry) {
  if (entry.type != RedisReply::Type::kArray || entry.elements.size() != 2 ||
      entry.elements[1].type != RedisReply::Type::kArray) {
    return absl::DataLossError("malformed stream entry");
  }
  StreamEntry e;
  const std::string& id = entry.elements[0].str;
  const auto dash = id.find('-');
  if (dash == std::string::npos ||
      std::from_chars(id.data() + dash + 1, id.data() + id.size(), e.offset).ec != std::errc()) {
    return absl::DataLossError("malformed stream id " + id);
  }
  const auto& fields = entry.elements[1].elements;
  std::string type;
  for (size_t i = 0; i + 1 < fields.size(); i += 2) {
    const std::string& k = fields[i].str;
    const std::string& v = fields[i + 1].str;
    if (k == "type")
      type = v;
    else if (k == "text")
      e.text = v;
    else if (k == "model")
      e.model = v;
    else if (k == "input_tokens")
      e.input_tokens = ToInt(v);
    else if (k == "output_tokens")
      e.output_tokens = ToInt(v);
    else if (k == "stop_reason")
      e.stop_reason = v;
    else if (k == "stop_sequence")
      e.stop_sequence = v;
    else if (k == "code")
      e.error_code = ToInt(v);
    else if (k == "message")
      e.error_message = v;
  }
  for (const auto& k : kKindNames) {
    if (type == k.name) {
      e.kind = k.kind;
      return e;
    }
  }
  return absl::DataLossError("stream entry of unknown type '" + type + "'");
}

void RedisTokenStream::Append(const std::string& message_id, std::vector<StreamEntry> entries,
                              Done done) {
  if (entries.empty()) {
    done(absl::OkStatus());
    return;
  }
  Send(message_id, std::move(entries), 0, std::move(done));
}

void RedisTokenStream::Send(std::string message_id, std::vector<StreamEntry> entries,
                            size_t attempt, Done done) {
  // The commands go out in order on one connection; the last reply tells
  // that all before it were executed too. The first failure is reported.
  struct Batch {
    std::mutex mu;
    size_t left;
    absl::Status first_error;
    std::function<void(absl::Status)> finish;
  };
  const bool final = entries.back().final();
  const bool first = entries.front().offset == 1;
  auto batch = std::make_shared<Batch>();
  batch->left = entries.size() + (final ? 1 : 0) + (first && !final ? 1 : 0);
  std::vector<std::vector<std::string>> commands;
  for (const auto& e : entries) commands.push_back(TokenStreamAddArgs(message_id, e));
  if (first && !final) {
    commands.push_back({"EXPIRE", TokenStreamKey(message_id), std::to_string(live_ttl_.count())});
  }
  if (final) {
    commands.push_back({"EXPIRE", TokenStreamKey(message_id), std::to_string(retention_.count())});
  }
  batch->finish = [this, message_id, entries = std::move(entries), attempt,
                   done = std::move(done)](absl::Status status) mutable {
    if (status.ok() || timers_ == nullptr || attempt >= retry_delays_.size()) {
      done(status);
      return;
    }
    timers_->After(retry_delays_[attempt],
                   [this, message_id = std::move(message_id), entries = std::move(entries), attempt,
                    done = std::move(done)]() mutable {
                     Send(std::move(message_id), std::move(entries), attempt + 1, std::move(done));
                   });
  };
  auto on_reply = [batch](absl::StatusOr<RedisReply> r) {
    std::function<void(absl::Status)> finish;
    absl::Status status;
    {
      std::lock_guard<std::mutex> lock(batch->mu);
      // An entry stored by an earlier attempt: its id (its offset) is taken.
      const bool stored_before =
          !r.ok() && r.status().message().find("equal or smaller than the target stream top") !=
                         std::string_view::npos;
      if (!r.ok() && !stored_before && batch->first_error.ok()) batch->first_error = r.status();
      if (--batch->left > 0) return;
      finish = std::move(batch->finish);
      status = batch->first_error;
    }
    finish(status);
  };
  for (auto& c : commands) redis_.Command(std::move(c), on_reply);
}

}  // namespace sb
