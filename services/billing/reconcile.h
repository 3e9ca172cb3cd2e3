// Reconciliation (issue 13): the ledger against the workers' own record of
// what they served, the usage.events topic itself. Every valid event (the
// same UsageValidator billing applies) of a request that started at or
// after `since` is folded as the ledger folds it (running reports raise,
// the final one sets the exact counts); the result is compared request by
// request with the ledger's rows since then. Zero drift means the ledger
// holds exactly what the workers reported.
//
//   sbadmin --pg=URI billing reconcile --since=2026-12-01 --kafka_brokers=HOST:PORT
//       --usage_signing_key_file=FILE
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "billing/ledger.h"
#include "billing/usage_validation.h"

namespace sb::billing {

struct Drift {
  int64_t topic_requests = 0;          // in the topic, started since
  int64_t ledger_requests = 0;         // in the ledger, started since
  std::vector<std::string> missing;    // in the topic, not in the ledger
  std::vector<std::string> extra;      // in the ledger, not in the topic
  std::vector<std::string> differing;  // in both, with other counts
  int64_t input_tokens = 0;            // ledger minus topic, over every request
  int64_t output_tokens = 0;
  int64_t cache_read_tokens = 0;
  int64_t cache_write_tokens = 0;
  // Whether the topic still holds everything from its first offset 0 (if
  // retention has dropped events, rows "extra" in the ledger are expected).
  bool topic_complete = true;

  bool zero() const {
    return missing.empty() && extra.empty() && differing.empty() && input_tokens == 0 &&
           output_tokens == 0 && cache_read_tokens == 0 && cache_write_tokens == 0;
  }
};

// Compares what the topic says with what the ledger holds.
Drift Compare(const std::map<std::string, RequestCounts>& topic,
              const std::map<std::string, RequestCounts>& ledger);

// Folds the events of `topic` from its start to its end as of the call
// (every partition), validated as billing validates them, and compares
// them with the ledger's rows of requests started at or after `since`.
absl::StatusOr<Drift> Reconcile(Ledger& ledger, const MessageSigner& signer,
                                const std::string& brokers, const std::string& topic,
                                absl::Time since);

}  // namespace sb::billing
