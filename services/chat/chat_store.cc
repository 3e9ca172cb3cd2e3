#include "chat/chat_store.h"

#include <charconv>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "chat/sql.h"

namespace sb::chat {

namespace cpb = switchboard::chat::v1;

namespace {

cpb::ChatMessage RowToMessage(const pqxx::row& r) {
  cpb::ChatMessage m;
  m.set_id(r[0].as<std::string>());
  m.set_conversation_id(r[1].as<std::string>());
  m.set_parent_id(r[2].as<std::string>());
  m.set_role(r[3].as<std::string>());
  m.set_content(r[4].as<std::string>());
  m.set_status(r[5].as<std::string>());
  m.set_stop_reason(r[6].as<std::string>());
  m.set_input_tokens(r[7].as<int>());
  m.set_output_tokens(r[8].as<int>());
  m.set_model(r[9].as<std::string>());
  m.set_created_at_unix_ms(r[10].as<int64_t>());
  m.set_stream_last_offset(r[11].as<int64_t>());
  // Replies stored before the results were told apart say "allow".
  const std::string safety = r[12].as<std::string>();
  m.set_safety_result(safety == "allow" ? "pass" : safety);
  if (r.size() > 13) {  // GetMessage's: the deltas' lengths ("" elsewhere)
    for (absl::string_view n : absl::StrSplit(r[13].as<std::string>(), ',', absl::SkipEmpty())) {
      int v = 0;
      if (absl::SimpleAtoi(n, &v)) m.add_delta_lengths(v);
    }
  }
  if (r.size() > 14) {  // the message's siblings, itself included
    for (absl::string_view id : absl::StrSplit(r[14].as<std::string>(), ',', absl::SkipEmpty())) {
      m.add_sibling_ids(std::string(id));
    }
  }
  return m;
}

// The columns of sql.h's conversation reads.
cpb::Conversation RowToConversation(const Scope& scope, const pqxx::row& r) {
  cpb::Conversation c;
  c.set_id(r[0].as<std::string>());
  c.set_org_id(scope.org_id);
  c.set_user_id(scope.user_id);
  c.set_title(r[1].as<std::string>());
  c.set_model(r[2].as<std::string>());
  c.set_version(r[3].as<int64_t>());
  c.set_message_count(r[4].as<int>());
  c.set_created_at_unix_ms(r[5].as<int64_t>());
  c.set_last_message_at_unix_ms(r[6].as<int64_t>());
  c.set_archived(r[7].as<bool>());
  c.set_current_leaf_id(r[9].as<std::string>());
  return c;
}

// A conversations cursor: "{last_message_at in microseconds}.{id}" of the
// page's last conversation.
struct ConversationCursor {
  int64_t last_message_at_us = 0;
  std::string id;
};

std::optional<ConversationCursor> ParseCursor(const std::string& cursor) {
  const size_t dot = cursor.find('.');
  if (dot == std::string::npos) return std::nullopt;
  ConversationCursor c;
  const char* end = cursor.data() + dot;
  const auto [stop, ec] = std::from_chars(cursor.data(), end, c.last_message_at_us);
  if (ec != std::errc() || stop != end || c.last_message_at_us < 0) return std::nullopt;
  c.id = cursor.substr(dot + 1);
  if (!IsValidUlid(c.id)) return std::nullopt;
  return c;
}

constexpr char kVersionPayload[] = "type.switchboard.dev/chat.conversation_version";

// Under the conversation's row lock: NotFound, a conflict, or its row
// (kLockConversation's columns: version, model, title, current leaf).
absl::StatusOr<pqxx::row> LockForChange(pqxx::work& tx, const Scope& scope,
                                        const std::string& conversation_id,
                                        std::optional<int64_t> expected_version) {
  auto conv = tx.exec_params(sql::kLockConversation, conversation_id, scope.org_id, scope.user_id);
  if (conv.empty()) return absl::NotFoundError("conversation " + conversation_id + " not found");
  const int64_t version = conv[0][0].as<int64_t>();
  if (expected_version && *expected_version != version) {
    return VersionConflict(*expected_version, version);
  }
  return conv[0];
}

}  // namespace

absl::Status VersionConflict(int64_t expected, int64_t current) {
  absl::Status st = absl::AbortedError("the conversation is at version " + std::to_string(current) +
                                       ", not " + std::to_string(expected));
  st.SetPayload(kVersionPayload, absl::Cord(std::to_string(current)));
  return st;
}

std::optional<int64_t> ConflictVersion(const absl::Status& status) {
  if (status.code() != absl::StatusCode::kAborted) return std::nullopt;
  auto payload = status.GetPayload(kVersionPayload);
  if (!payload) return std::nullopt;
  const std::string text(*payload);
  int64_t v = 0;
  const auto [stop, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || stop != text.data() + text.size()) return std::nullopt;
  return v;
}

std::string TitleFrom(std::string_view content) {
  auto is_space = [](char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
  };
  // UTF-8 continuation bytes are 10xxxxxx.
  auto continues = [](char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; };
  std::string title;
  size_t last_word_end = 0;  // where the title ends if cut at a word
  size_t i = 0;
  while (i < content.size()) {
    if (is_space(content[i])) {
      ++i;
      continue;
    }
    if (!title.empty()) {
      if (title.size() + 1 >= kMaxAutoTitleBytes) break;
      last_word_end = title.size();
      title.push_back(' ');
    }
    while (i < content.size() && !is_space(content[i]) && title.size() < kMaxAutoTitleBytes) {
      title.push_back(content[i++]);
    }
    if (title.size() == kMaxAutoTitleBytes) break;
  }
  // Stopped inside a word: cut at the last whole word if that keeps at
  // least half of the title, else at the limit, never inside a character.
  const bool mid_word =
      i > 0 && i < content.size() && !is_space(content[i - 1]) && !is_space(content[i]);
  while (i < content.size() && is_space(content[i])) ++i;
  if (i == content.size()) return title;
  if (mid_word && last_word_end >= kMaxAutoTitleBytes / 2) {
    title.resize(last_word_end);
  } else if (mid_word && continues(content[i])) {
    while (!title.empty() && continues(title.back())) title.pop_back();
    if (!title.empty()) title.pop_back();  // the character's first byte
  }
  while (!title.empty() && title.back() == ' ') title.pop_back();
  return title + "\u2026";
}

void ChatStore::Enqueue(pqxx::work& tx, cpb::ChatEvent ev) {
  const absl::Time now = absl::Now();
  ev.set_event_id(ids_.Next(now));
  ev.set_at_unix_ms(absl::ToUnixMillis(now));
  const std::string bytes = ev.SerializeAsString();
  tx.exec_params(sql::kEnqueueEvent, ev.conversation_id(), pqxx::binarystring(bytes));
}

namespace {

cpb::ChatEvent Event(const char* type, const Scope& scope, const std::string& conversation_id) {
  cpb::ChatEvent ev;
  ev.set_type(type);
  ev.set_org_id(scope.org_id);
  ev.set_user_id(scope.user_id);
  ev.set_conversation_id(conversation_id);
  return ev;
}

}  // namespace

absl::StatusOr<cpb::Conversation> ChatStore::CreateConversation(const Scope& scope,
                                                                const std::string& model,
                                                                const std::string& title) {
  const std::string id = ids_.Next(absl::Now());
  return pg_.Run<cpb::Conversation>([&](pqxx::connection& c) {
    pqxx::work tx(c);
    tx.exec_params(sql::kEnsureUser, scope.org_id, scope.user_id);
    auto r =
        tx.exec_params1(sql::kInsertConversation, id, scope.org_id, scope.user_id, title, model);
    cpb::Conversation conv;
    conv.set_id(id);
    conv.set_org_id(scope.org_id);
    conv.set_user_id(scope.user_id);
    conv.set_title(title);
    conv.set_model(model);
    conv.set_version(r[0].as<int64_t>());
    conv.set_message_count(r[1].as<int>());
    conv.set_created_at_unix_ms(r[2].as<int64_t>());
    conv.set_last_message_at_unix_ms(r[3].as<int64_t>());
    cpb::ChatEvent ev = Event("conversation.created", scope, id);
    *ev.mutable_conversation() = conv;
    Enqueue(tx, std::move(ev));
    tx.commit();
    return conv;
  });
}

absl::StatusOr<NewTurn> ChatStore::AppendTurn(
    const Scope& scope, const std::string& conversation_id, const std::string& content,
    const std::string& client_message_id, std::optional<int64_t> expected_version,
    std::optional<std::string> parent_id, const std::string& input_safety) {
  std::optional<NewTurn> turn;
  absl::Status refused;
  absl::Status st = pg_.RunVoid([&](pqxx::connection& c) {
    pqxx::work tx(c);
    auto conv =
        tx.exec_params(sql::kLockConversation, conversation_id, scope.org_id, scope.user_id);
    if (conv.empty()) return;  // not found (or not theirs)
    NewTurn t;
    t.model = conv[0][1].as<std::string>();
    const int64_t version = conv[0][0].as<int64_t>();
    if (!client_message_id.empty()) {
      auto seen = tx.exec_params(sql::kFindByClientId, conversation_id, client_message_id);
      if (!seen.empty()) {
        t.user_message = RowToMessage(seen[0]);
        auto reply = tx.exec_params(sql::kFindReply, conversation_id, t.user_message.id());
        if (!reply.empty()) t.assistant_message_id = reply[0][0].as<std::string>();
        t.replayed = true;
        tx.commit();
        turn = std::move(t);
        return;
      }
    }
    // Checked after the replay: a retry of an accepted send is the same
    // turn, however the conversation moved since.
    if (expected_version && *expected_version != version) {
      refused = VersionConflict(*expected_version, version);
      return;
    }
    // The reply the message answers: the one named (an edit: a sibling of
    // the message that answered it before; "" the first message), else the
    // end of the branch the user sees.
    std::string parent = conv[0][3].as<std::string>();
    if (parent_id) {
      parent = *parent_id;
      if (!parent.empty()) {
        auto named = tx.exec_params(sql::kMessageRole, conversation_id, parent);
        if (named.empty() || named[0][0].as<std::string>() != "assistant") {
          refused = absl::InvalidArgumentError("parent_id must be a reply of this conversation");
          return;
        }
      }
    }
    const std::string user_id = ids_.Next(absl::Now());
    const std::string reply_id = ids_.Next(absl::Now());
    auto created =
        tx.exec_params1(sql::kInsertMessage, conversation_id, user_id, parent, "user", content,
                        "complete", client_message_id, "", "", 0.0, input_safety);
    tx.exec_params(sql::kInsertMessage, conversation_id, reply_id, user_id, "assistant", "",
                   "in_progress", "", t.model, lease_owner_, absl::ToDoubleSeconds(lease_ttl_), "");
    t.conversation_version =
        tx.exec_params1(sql::kBumpForTurn, conversation_id, TitleFrom(content), reply_id)[0]
            .as<int64_t>();
    t.user_message.set_id(user_id);
    t.user_message.set_parent_id(parent);
    t.user_message.set_conversation_id(conversation_id);
    t.user_message.set_role("user");
    t.user_message.set_content(content);
    t.user_message.set_status("complete");
    t.user_message.set_safety_result(input_safety);
    t.user_message.set_created_at_unix_ms(created[0].as<int64_t>());
    cpb::ChatEvent ev = Event("message.created", scope, conversation_id);
    *ev.mutable_message() = t.user_message;
    Enqueue(tx, std::move(ev));
    tx.commit();
    t.assistant_message_id = reply_id;
    turn = std::move(t);
  });
  if (!st.ok()) return st;
  if (!refused.ok()) return refused;
  if (!turn) return absl::NotFoundError("conversation " + conversation_id + " not found");
  return std::move(*turn);
}

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ChatStore::History(
    const std::string& conversation_id, const std::string& through_id) {
  using History = std::vector<std::pair<std::string, std::string>>;
  return pg_.Run<History>([&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    History out;
    for (const auto& r : tx.exec_params(sql::kHistory, conversation_id, through_id)) {
      out.emplace_back(r[0].as<std::string>(), r[1].as<std::string>());
    }
    return out;
  });
}

absl::Status ChatStore::CompleteReply(const std::string& conversation_id,
                                      const std::string& message_id, const TurnResult& r,
                                      const cpb::ChatEvent* announce) {
  return pg_.RunVoid([&](pqxx::connection& c) {
    pqxx::work tx(c);
    std::string lengths;
    for (int n : r.delta_lengths) {
      if (!lengths.empty()) lengths += ',';
      lengths += std::to_string(n);
    }
    tx.exec_params(sql::kCompleteMessage, conversation_id, message_id, r.content, r.status,
                   r.stop_reason, r.input_tokens, r.output_tokens, r.model, r.safety_result,
                   r.stream_last_offset, lengths);
    // Its row lock first. A deleted conversation announces nothing more: its
    // events are erased from the users' streams, and this one would carry
    // the text again.
    auto live = tx.exec_params(sql::kTouchConversation, conversation_id);
    if (announce != nullptr && !live.empty() && live[0][0].as<bool>()) Enqueue(tx, *announce);
    tx.commit();
  });
}

absl::StatusOr<cpb::ListMessagesResponse> ChatStore::ListMessages(
    const Scope& scope, const std::string& conversation_id, int limit, const std::string& cursor) {
  std::optional<cpb::ListMessagesResponse> out;
  absl::Status st = pg_.RunVoid([&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    if (tx.exec_params(sql::kFindConversation, conversation_id, scope.org_id, scope.user_id)
            .empty()) {
      return;
    }
    cpb::ListMessagesResponse resp;
    auto rows = tx.exec_params(sql::kListMessages, conversation_id, cursor, limit + 1);
    size_t bytes = 0;
    for (const auto& r : rows) {
      // A page also ends at kMaxPageBytes of text, so that it always fits
      // one gRPC message.
      if (resp.messages_size() == limit || (resp.messages_size() > 0 && bytes > kMaxPageBytes)) {
        resp.set_has_more(true);
        break;
      }
      *resp.add_messages() = RowToMessage(r);
      bytes += resp.messages(resp.messages_size() - 1).content().size();
    }
    if (resp.has_more()) resp.set_next_cursor(resp.messages(resp.messages_size() - 1).id());
    out = std::move(resp);
  });
  if (!st.ok()) return st;
  if (!out) return absl::NotFoundError("conversation " + conversation_id + " not found");
  return std::move(*out);
}

absl::StatusOr<cpb::ChatMessage> ChatStore::GetMessage(const Scope& scope,
                                                       const std::string& conversation_id,
                                                       const std::string& message_id) {
  std::optional<cpb::ChatMessage> out;
  absl::Status st = pg_.RunVoid([&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    auto rows =
        tx.exec_params(sql::kGetMessage, conversation_id, message_id, scope.org_id, scope.user_id);
    if (!rows.empty()) out = RowToMessage(rows[0]);
  });
  if (!st.ok()) return st;
  if (!out) return absl::NotFoundError("message " + message_id + " not found");
  return std::move(*out);
}

absl::StatusOr<cpb::ListConversationsResponse> ChatStore::ListConversations(
    const Scope& scope, int limit, const std::string& cursor, bool archived) {
  std::optional<ConversationCursor> after;
  if (!cursor.empty()) {
    after = ParseCursor(cursor);
    if (!after) return absl::InvalidArgumentError("cursor is not a next_cursor of this list");
  }
  return pg_.Run<cpb::ListConversationsResponse>([&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    const std::string& sql = sql::ListConversationsSql(archived, after.has_value());
    const pqxx::result rows = after ? tx.exec_params(sql, scope.org_id, scope.user_id, limit + 1,
                                                     after->last_message_at_us, after->id)
                                    : tx.exec_params(sql, scope.org_id, scope.user_id, limit + 1);
    cpb::ListConversationsResponse resp;
    for (const auto& r : rows) {
      if (resp.conversations_size() == limit) {
        resp.set_has_more(true);
        const auto& last = rows[limit - 1];
        resp.set_next_cursor(std::to_string(last[8].as<int64_t>()) + "." +
                             last[0].as<std::string>());
        break;
      }
      *resp.add_conversations() = RowToConversation(scope, r);
    }
    return resp;
  });
}

absl::Status ChatStore::LeaseReply(const std::string& conversation_id, const std::string& reply_id,
                                   const std::string& owner, absl::Duration ttl) {
  return pg_.RunVoid([&](pqxx::connection& c) {
    pqxx::work tx(c);
    tx.exec_params(sql::kLeaseReply, conversation_id, reply_id, owner, absl::ToDoubleSeconds(ttl));
    tx.commit();
  });
}

absl::StatusOr<int> ChatStore::RenewLeases(const std::string& owner, absl::Duration ttl) {
  return pg_.Run<int>([&](pqxx::connection& c) {
    pqxx::work tx(c);
    auto r = tx.exec_params(sql::kRenewLeases, owner, absl::ToDoubleSeconds(ttl));
    tx.commit();
    return static_cast<int>(r.affected_rows());
  });
}

absl::StatusOr<std::vector<ChatStore::Orphan>> ChatStore::TakeOverExpired(const std::string& owner,
                                                                          absl::Duration ttl,
                                                                          int limit) {
  return pg_.Run<std::vector<Orphan>>([&](pqxx::connection& c) {
    pqxx::work tx(c);
    auto rows = tx.exec_params(sql::kTakeOverExpired, owner, absl::ToDoubleSeconds(ttl), limit);
    tx.commit();
    std::vector<Orphan> out;
    for (const auto& r : rows) {
      out.push_back({{r[4].as<std::string>(), r[5].as<std::string>()},
                     r[0].as<std::string>(),
                     r[2].is_null() ? "" : r[2].as<std::string>(),
                     r[1].as<std::string>(),
                     r[3].as<std::string>()});
    }
    return out;
  });
}

absl::StatusOr<int> ChatStore::EraseUser(const Scope& scope) {
  return pg_.Run<int>([&](pqxx::connection& c) {
    pqxx::work tx(c);
    // The update holds each conversation's row lock: its event follows
    // the ones already in the outbox, as DeleteConversation's does.
    auto deleted = tx.exec_params(sql::kDeleteUsersConversations, scope.org_id, scope.user_id);
    for (const auto& r : deleted) {
      Enqueue(tx, Event("conversation.deleted", scope, r[0].as<std::string>()));
    }
    tx.exec_params(sql::kDeleteUser, scope.org_id, scope.user_id);
    Enqueue(tx, Event("user.erased", scope, ""));
    tx.commit();
    return static_cast<int>(deleted.size());
  });
}

absl::StatusOr<cpb::SearchMessagesResponse> ChatStore::SearchMessages(const Scope& scope,
                                                                      const std::string& query,
                                                                      int limit) {
  std::optional<cpb::SearchMessagesResponse> out;
  absl::Status st = pg_.RunVoid([&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    // A query of punctuation or nothing has no word to look for.
    auto words = tx.exec_params("SELECT numnode(websearch_to_tsquery('simple', $1))", query);
    if (words.empty() || words[0][0].as<int>() == 0) return;
    auto rows = tx.exec_params(sql::kSearchMessages, scope.org_id, scope.user_id, query, limit + 1);
    cpb::SearchMessagesResponse resp;
    for (const auto& r : rows) {
      if (resp.hits_size() == limit) {
        resp.set_has_more(true);
        break;
      }
      auto* hit = resp.add_hits();
      hit->set_conversation_id(r[0].as<std::string>());
      hit->set_conversation_title(r[1].as<std::string>());
      hit->set_message_id(r[2].as<std::string>());
      hit->set_role(r[3].as<std::string>());
      hit->set_created_at_unix_ms(r[4].as<int64_t>());
      hit->set_snippet(r[5].as<std::string>());
    }
    out = std::move(resp);
  });
  if (!st.ok()) return st;
  if (!out) return absl::InvalidArgumentError("q has no word to search for");
  return std::move(*out);
}

absl::StatusOr<cpb::Conversation> ChatStore::GetConversation(const Scope& scope,
                                                             const std::string& conversation_id) {
  std::optional<cpb::Conversation> out;
  absl::Status st = pg_.RunVoid([&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    auto rows = tx.exec_params(sql::kGetConversation, conversation_id, scope.org_id, scope.user_id);
    if (!rows.empty()) out = RowToConversation(scope, rows[0]);
  });
  if (!st.ok()) return st;
  if (!out) return absl::NotFoundError("conversation " + conversation_id + " not found");
  return std::move(*out);
}

absl::StatusOr<cpb::Conversation> ChatStore::UpdateConversation(const Scope& scope,
                                                                const std::string& conversation_id,
                                                                const ConversationPatch& patch) {
  if (!patch.title && !patch.archived && !patch.current_leaf_id) {
    return absl::InvalidArgumentError("nothing to change");
  }
  std::optional<cpb::Conversation> out;
  absl::Status refused;
  absl::Status st = pg_.RunVoid([&](pqxx::connection& c) {
    pqxx::work tx(c);
    auto locked = LockForChange(tx, scope, conversation_id, patch.expected_version);
    if (!locked.ok()) {
      refused = locked.status();
      return;
    }
    if (patch.current_leaf_id) {
      auto leaf = tx.exec_params(sql::kMessageRole, conversation_id, *patch.current_leaf_id);
      if (leaf.empty() || leaf[0][0].as<std::string>() != "assistant") {
        refused =
            absl::InvalidArgumentError("current_leaf_id must be a reply of this conversation");
        return;
      }
    }
    auto row = tx.exec_params1(sql::kUpdateConversation, conversation_id, patch.title,
                               patch.archived, patch.current_leaf_id);
    out = RowToConversation(scope, row);
    cpb::ChatEvent ev = Event("conversation.updated", scope, conversation_id);
    *ev.mutable_conversation() = *out;
    Enqueue(tx, std::move(ev));
    tx.commit();
  });
  if (!st.ok()) return st;
  if (!refused.ok()) return refused;
  return std::move(*out);
}

absl::StatusOr<NewTurn> ChatStore::Regenerate(const Scope& scope,
                                              const std::string& conversation_id,
                                              const std::string& reply_id,
                                              std::optional<int64_t> expected_version) {
  std::optional<NewTurn> out;
  absl::Status refused;
  absl::Status st = pg_.RunVoid([&](pqxx::connection& c) {
    pqxx::work tx(c);
    auto conv = LockForChange(tx, scope, conversation_id, expected_version);
    if (!conv.ok()) {
      refused = conv.status();
      return;
    }
    auto reply = tx.exec_params(sql::kMessageRole, conversation_id, reply_id);
    if (reply.empty()) {
      refused = absl::NotFoundError("message " + reply_id + " not found");
      return;
    }
    if (reply[0][0].as<std::string>() != "assistant") {
      refused = absl::InvalidArgumentError("only a reply (an assistant message) is regenerated");
      return;
    }
    if (reply[0][1].as<std::string>() == "in_progress") {
      refused = absl::FailedPreconditionError("the reply is still being generated: stop it first");
      return;
    }
    NewTurn t;
    t.model = (*conv)[1].as<std::string>();
    t.user_message = RowToMessage(
        tx.exec_params1(sql::kFindMessage, conversation_id, reply[0][2].as<std::string>()));
    t.assistant_message_id = ids_.Next(absl::Now());
    tx.exec_params(sql::kInsertMessage, conversation_id, t.assistant_message_id,
                   t.user_message.id(), "assistant", "", "in_progress", "", t.model, lease_owner_,
                   absl::ToDoubleSeconds(lease_ttl_), "");
    t.conversation_version =
        tx.exec_params1(sql::kBumpForRegenerate, conversation_id, t.assistant_message_id)[0]
            .as<int64_t>();
    tx.commit();
    out = std::move(t);
  });
  if (!st.ok()) return st;
  if (!refused.ok()) return refused;
  return std::move(*out);
}

absl::Status ChatStore::DeleteConversation(const Scope& scope, const std::string& conversation_id,
                                           std::optional<int64_t> expected_version) {
  absl::Status refused;
  absl::Status st = pg_.RunVoid([&](pqxx::connection& c) {
    pqxx::work tx(c);
    auto locked = LockForChange(tx, scope, conversation_id, expected_version);
    if (!locked.ok()) {
      refused = locked.status();
      return;
    }
    tx.exec_params(sql::kDeleteConversation, conversation_id);
    Enqueue(tx, Event("conversation.deleted", scope, conversation_id));
    tx.commit();
  });
  return st.ok() ? refused : st;
}

absl::StatusOr<std::vector<ChatStore::Erasable>> ChatStore::ErasableConversations(
    absl::Duration deleted_for, int limit) {
  return pg_.Run<std::vector<Erasable>>([&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    std::vector<Erasable> out;
    for (const auto& r : tx.exec_params(sql::kErasableConversations,
                                        absl::ToDoubleMilliseconds(deleted_for), limit)) {
      out.push_back({r[0].as<std::string>(), r[1].as<bool>()});
    }
    return out;
  });
}

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ChatStore::MessagesOf(
    const std::string& conversation_id) {
  using Messages = std::vector<std::pair<std::string, std::string>>;
  return pg_.Run<Messages>([&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    Messages out;
    for (const auto& r : tx.exec_params(sql::kMessagesOf, conversation_id)) {
      out.emplace_back(r[0].as<std::string>(), r[1].as<std::string>());
    }
    return out;
  });
}

absl::Status ChatStore::EraseConversation(const std::string& conversation_id) {
  bool deleted = false;
  absl::Status st = pg_.RunVoid([&](pqxx::connection& c) {
    pqxx::work tx(c);
    deleted = !tx.exec_params(sql::kLockDeleted, conversation_id).empty();
    if (!deleted) return;  // never erase what was not deleted
    tx.exec_params(sql::kEraseMessages, conversation_id);
    tx.exec_params(sql::kEraseConversation, conversation_id);
    tx.commit();
  });
  if (st.ok() && !deleted) {
    return absl::FailedPreconditionError("conversation " + conversation_id + " is not deleted");
  }
  return st;
}

absl::StatusOr<int> ChatStore::RelayOutbox(
    int limit, const std::function<size_t(const std::vector<OutboxRow>&)>& publish) {
  return pg_.Run<int>([&](pqxx::connection& c) {
    pqxx::work tx(c);
    // Any constant names the relay's turn; this one spells "chatoutb".
    if (!tx.exec_params1(sql::kLockRelay, int64_t{0x636861746f757462})[0].as<bool>()) return -1;
    std::vector<OutboxRow> rows;
    for (const auto& r : tx.exec_params(sql::kOutboxBatch, limit)) {
      rows.push_back({r[0].as<int64_t>(), r[1].as<std::string>(), pqxx::binarystring(r[2]).str()});
    }
    if (rows.empty()) return 0;
    const size_t stored = std::min(publish(rows), rows.size());
    if (stored > 0) {
      std::string ids = "{";
      for (size_t i = 0; i < stored; ++i) ids += (i > 0 ? "," : "") + std::to_string(rows[i].id);
      tx.exec_params(sql::kDeleteOutbox, ids + "}");
    }
    tx.commit();
    return static_cast<int>(stored);
  });
}

}  // namespace sb::chat
