// Status helpers: Debian's abseil ships no status macros, so these are ours.
//
//   SB_RETURN_IF_ERROR(store.Insert(row));
//   SB_ASSIGN_OR_RETURN(auto user, store.FindUser(id));
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define SB_STATUS_CONCAT_INNER(a, b) a##b
#define SB_STATUS_CONCAT(a, b) SB_STATUS_CONCAT_INNER(a, b)

#define SB_RETURN_IF_ERROR(expr)                         \
  do {                                                   \
    ::absl::Status sb_status_ = (expr);                  \
    if (!sb_status_.ok()) return sb_status_;             \
  } while (false)

#define SB_ASSIGN_OR_RETURN(lhs, expr) \
  SB_ASSIGN_OR_RETURN_IMPL(SB_STATUS_CONCAT(sb_statusor_, __LINE__), lhs, expr)

#define SB_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.ok()) return tmp.status();            \
  lhs = std::move(tmp).value()
