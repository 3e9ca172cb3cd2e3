#include "chat/chat_store.h"

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
  return m;
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
    tx.commit();
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
    return conv;
  });
}

absl::StatusOr<NewTurn> ChatStore::AppendTurn(const Scope& scope,
                                              const std::string& conversation_id,
                                              const std::string& content,
                                              const std::string& client_message_id) {
  std::optional<NewTurn> turn;
  absl::Status st = pg_.RunVoid([&](pqxx::connection& c) {
    pqxx::work tx(c);
    auto conv =
        tx.exec_params(sql::kLockConversation, conversation_id, scope.org_id, scope.user_id);
    if (conv.empty()) return;  // not found (or not theirs)
    NewTurn t;
    t.model = conv[0][1].as<std::string>();
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
    const std::string user_id = ids_.Next(absl::Now());
    const std::string reply_id = ids_.Next(absl::Now());
    auto created = tx.exec_params1(sql::kInsertMessage, conversation_id, user_id, "", "user",
                                   content, "complete", client_message_id, "");
    tx.exec_params(sql::kInsertMessage, conversation_id, reply_id, user_id, "assistant", "",
                   "in_progress", "", t.model);
    tx.exec_params(sql::kBumpConversation, conversation_id, 2);
    tx.commit();
    t.user_message.set_id(user_id);
    t.user_message.set_conversation_id(conversation_id);
    t.user_message.set_role("user");
    t.user_message.set_content(content);
    t.user_message.set_status("complete");
    t.user_message.set_created_at_unix_ms(created[0].as<int64_t>());
    t.assistant_message_id = reply_id;
    turn = std::move(t);
  });
  if (!st.ok()) return st;
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
                                      const std::string& message_id, const TurnResult& r) {
  return pg_.RunVoid([&](pqxx::connection& c) {
    pqxx::work tx(c);
    tx.exec_params(sql::kCompleteMessage, conversation_id, message_id, r.content, r.status,
                   r.stop_reason, r.input_tokens, r.output_tokens, r.model, r.safety_result,
                   r.stream_last_offset);
    tx.exec_params(sql::kBumpConversation, conversation_id, 0);
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

}  // namespace sb::chat
