// sbadmin: operator commands against the Switchboard database.
//
//   sbadmin --pg=URI migrate [--migrations_dir=DIR]
//   sbadmin --pg=URI create-org ORG_ID [NAME]
//   sbadmin --pg=URI create-key ORG_ID [USER_ID] [--admin]   # prints the secret once
//   sbadmin --pg=URI list-keys ORG_ID                # id, prefix, user, created, revoked
//   sbadmin --pg=URI revoke-key KEY_ID
//   sbadmin --pg=URI set-limits ORG_ID [--key=KEY_ID] [--model=MODEL] [--rpm=N]
//           [--input_tpm=N] [--output_tpm=N] [--concurrency=N]   # 0 removes a limit
//   sbadmin --pg=URI show-limits ORG_ID
//   sbadmin --pg=URI model create-version VERSION --served_model=NAME [--config=JSON] [--policy=V]
//   sbadmin --pg=URI model set-alias ALIAS VERSION        # promotes VERSION to ALIAS's stable
//   sbadmin --pg=URI model set-canary ALIAS VERSION --weight=N   # N percent; 0 ends the canary
//   sbadmin --pg=URI model rollback ALIAS                 # back to the previous stable version
//   sbadmin --pg=URI model list
//   sbadmin --pg=URI set-org ORG_ID [--weight=N] [--tier=NAME]   # fairness weight, tier label
//   sbadmin --pg=URI show-org ORG_ID                             # name, weight, tier
//   sbadmin --pg=URI price set MODEL --input=3.00 --output=15.00 [--cache_read=0.30]
//           [--cache_write=3.75] [--from=DATE]   # dollars per million tokens, from now or DATE
//   sbadmin --pg=URI price list [MODEL]
//   sbadmin --pg=URI budget set ORG [--key=KEY_ID] --monthly=500.00   # 0 removes it
//   sbadmin --pg=URI budget show ORG                  # budgets and this month's spend
//   sbadmin --pg=URI billing reconcile --since=DATE --kafka_brokers=H:P --usage_signing_key_file=F
//   sbadmin --pg=URI billing reset-offsets --to=earliest|latest|OFFSET [--partition=N]
//           [--group=billing] [--topic=usage.events]   # a stopped partition's decision
//   sbadmin --pg=URI safety set-policy ORG FILE.json [--by=WHO]   # a new policy version
//   sbadmin --pg=URI safety show-policy ORG [--policy_version=N]
//   sbadmin --pg=URI safety set-policy --platform FILE.json   # the platform's, under every org's
//   sbadmin --pg=URI safety show-policy --platform [--policy_version=N]
//   sbadmin --pg=URI safety audit ORG [--since=24h|DATE]   # decisions other than allow
//   sbadmin health [HOST:]METRICS_PORT   # exit 0 when the service is ready (a container probe)
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "billing/ledger.h"
#include "billing/reconcile.h"
#include "chat/chat_store.h"
#include "core/config.h"
#include "http/http_client.h"
#include "safety/audit.h"
#include "safety/policy_store.h"
#include "sbadmin/admin.h"
#include "storage/pg.h"
#include "tenant-scheduler/model_registry.h"

ABSL_FLAG(std::string, pg, "postgresql://postgres@127.0.0.1:5432/switchboard",
          "PostgreSQL connection URI");
ABSL_FLAG(std::string, migrations_dir, SB_DEFAULT_MIGRATIONS_DIR, "Directory of *.sql migrations");
ABSL_FLAG(std::string, key, "", "set-limits: narrow the limits to this API key id");
ABSL_FLAG(std::string, model, "", "set-limits: narrow the limits to this model");
ABSL_FLAG(int64_t, rpm, -1, "set-limits: requests per minute (0 removes the limit)");
ABSL_FLAG(int64_t, input_tpm, -1, "set-limits: input tokens per minute (0 removes the limit)");
ABSL_FLAG(int64_t, output_tpm, -1, "set-limits: output tokens per minute (0 removes the limit)");
ABSL_FLAG(int64_t, concurrency, -1, "set-limits: requests at once (0 removes the limit)");
ABSL_FLAG(std::string, served_model, "",
          "model create-version: the model workers serve under the version (as they register it)");
ABSL_FLAG(std::string, config, "", "model create-version: the serving config, a JSON object");
ABSL_FLAG(std::string, policy, "",
          "model create-version: a version of the platform's safety policy that the version's "
          "replies are moderated under (default: the version in force)");
ABSL_FLAG(std::string, weight, "",
          "set-org: the org's share of tokens when a model is contended (> 0; 1 is the default); "
          "model set-canary: percent of the alias's requests (0 ends the canary)");
ABSL_FLAG(std::string, tier, "", "set-org: the org's tier, a label (e.g. standard, premium)");
ABSL_FLAG(std::string, to, "",
          "billing reset-offsets: earliest, latest or an offset, where billing resumes");
ABSL_FLAG(int, partition, -1,
          "billing reset-offsets: one partition (default: every partition billing has stored an "
          "offset for)");
ABSL_FLAG(std::string, input, "", "price set: dollars per million input tokens, e.g. 3.00");
ABSL_FLAG(std::string, output, "", "price set: dollars per million output tokens, e.g. 15.00");
ABSL_FLAG(std::string, cache_read, "",
          "price set: dollars per million input tokens read from the prompt cache (default: the "
          "input price)");
ABSL_FLAG(std::string, cache_write, "",
          "price set: dollars per million input tokens written to the prompt cache (default: the "
          "input price)");
ABSL_FLAG(std::string, from, "",
          "price set: when the price takes effect, 2026-12-01 (UTC midnight) or RFC 3339 "
          "(2026-12-01T12:00:00Z); default now; not in the past");
ABSL_FLAG(bool, admin, false,
          "create-key: an Admin API key (usage and cost reports), which cannot call inference");
ABSL_FLAG(std::string, monthly, "",
          "budget set: the monthly budget in dollars, e.g. 500.00 (0 removes the budget)");
ABSL_FLAG(std::string, since, "",
          "billing reconcile: requests started from then on, 2026-12-01 (UTC) or RFC 3339; "
          "safety audit: decisions from then on, also a duration back from now (default 24h)");
ABSL_FLAG(std::string, by, "", "safety set-policy: who made the change (default: $USER)");
ABSL_FLAG(int64_t, policy_version, 0,
          "safety show-policy: this version (default: the one in force)");
ABSL_FLAG(bool, platform, false,
          "safety set-policy, show-policy: the platform's policy (no ORG), which every org's "
          "policy is layered on");
ABSL_FLAG(std::string, kafka_brokers, "127.0.0.1:19092",
          "billing reconcile: the Kafka bootstrap servers billing reads");
ABSL_FLAG(std::string, group, "billing", "billing reset-offsets: billing's --consumer_group");
ABSL_FLAG(std::string, topic, "usage.events",
          "billing reset-offsets and reconcile: billing's --usage_topic");

namespace {

std::optional<int64_t> Given(const absl::Flag<int64_t>& flag) {
  const int64_t v = absl::GetFlag(flag);
  return v < 0 ? std::nullopt : std::optional<int64_t>(v);
}

std::string Show(const std::optional<int64_t>& v) { return v ? std::to_string(*v) : "-"; }

constexpr const char* kModelUsage =
    "sbadmin --pg=URI model (create-version VERSION --served_model=NAME [--config=JSON] "
    "[--policy=V] | set-alias ALIAS VERSION | set-canary ALIAS VERSION --weight=N | "
    "rollback ALIAS | list)";

std::string OrNone(const std::string& s) { return s.empty() ? "-" : s; }

void PrintAlias(const sb::scheduler::ModelAlias& a) {
  std::printf("%s: stable %s, previous %s, canary %s", a.name.c_str(), a.stable.c_str(),
              OrNone(a.previous_stable).c_str(), OrNone(a.canary).c_str());
  if (!a.canary.empty()) std::printf(" at %d%%", a.canary_weight);
  std::printf("\n");
}

// `sbadmin model ...`: the model registry (services/tenant-scheduler).
// Returns the exit code.
int RunModel(const std::vector<std::string>& args) {
  const std::string sub = args.size() >= 3 ? args[2] : "";
  auto arg = [&](size_t i) { return args.size() > i ? args[i] : std::string(); };
  auto usage = [] {
    std::fprintf(stderr, "%s\n", kModelUsage);
    return 2;
  };
  sb::PgPool pg(absl::GetFlag(FLAGS_pg), 1);
  sb::scheduler::ModelRegistry registry(pg);
  absl::Status st;
  auto alias_done = [&](const absl::StatusOr<sb::scheduler::ModelAlias>& a) {
    st = a.status();
    if (a.ok()) PrintAlias(*a);
  };
  if (sub == "create-version" && args.size() == 4) {
    auto v = registry.CreateVersion({.id = args[3],
                                     .model = absl::GetFlag(FLAGS_served_model),
                                     .serving_config = absl::GetFlag(FLAGS_config),
                                     .safety_policy_version = absl::GetFlag(FLAGS_policy)});
    st = v.status();
    if (v.ok()) {
      std::printf("%s: serves %s, config %s, policy %s\n", v->id.c_str(), v->model.c_str(),
                  v->serving_config.c_str(), OrNone(v->safety_policy_version).c_str());
    }
  } else if (sub == "set-alias" && args.size() == 5) {
    alias_done(registry.SetAlias(args[3], args[4]));
  } else if (sub == "set-canary" && (args.size() == 5 || args.size() == 4)) {
    int weight = -1;
    if (!absl::SimpleAtoi(absl::GetFlag(FLAGS_weight), &weight)) weight = -1;
    if (weight < 0 || (weight > 0 && args.size() != 5)) {
      std::fprintf(stderr,
                   "sbadmin model set-canary ALIAS VERSION --weight=N: N percent of the alias's "
                   "requests, 1..100 (--weight=0 ends the canary)\n");
      return 2;
    }
    alias_done(registry.SetCanary(args[3], arg(4), weight));
  } else if (sub == "rollback" && args.size() == 4) {
    alias_done(registry.Rollback(args[3]));
  } else if (sub == "list" && args.size() == 3) {
    auto catalog = registry.List();
    st = catalog.status();
    if (catalog.ok()) {
      std::printf("%-32s %-32s %-32s %-32s %s\n", "alias", "stable", "previous", "canary",
                  "weight");
      for (const auto& [name, a] : catalog->aliases()) {
        std::printf("%-32s %-32s %-32s %-32s %d\n", name.c_str(), a.stable.c_str(),
                    OrNone(a.previous_stable).c_str(), OrNone(a.canary).c_str(), a.canary_weight);
      }
      std::printf("\n%-32s %-24s %-16s %-20s %s\n", "version", "served model", "policy", "created",
                  "config");
      for (const auto& [id, v] : catalog->versions()) {
        std::printf(
            "%-32s %-24s %-16s %-20s %s\n", id.c_str(), v.model.c_str(),
            OrNone(v.safety_policy_version).c_str(),
            absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", v.created_at, absl::UTCTimeZone()).c_str(),
            v.serving_config.c_str());
      }
    }
  } else {
    return usage();
  }
  if (!st.ok()) {
    std::fprintf(stderr, "sbadmin model %s: %s\n", sub.c_str(), st.ToString().c_str());
    return 1;
  }
  return 0;
}

constexpr const char* kBillingUsage =
    "sbadmin --pg=URI billing (reset-offsets --to=earliest|latest|OFFSET [--partition=N] "
    "[--group=billing] [--topic=usage.events] | reconcile --since=DATE [--kafka_brokers=H:P] "
    "--usage_signing_key_file=FILE [--topic=usage.events])";

// A time on the command line: a date (UTC midnight) or RFC 3339; with
// `ago`, also a duration back from now ("24h", "90m").
std::optional<absl::Time> ParseWhen(const std::string& text, bool ago = false) {
  absl::Time t;
  std::string err;
  if (absl::ParseTime("%Y-%m-%d", text, absl::UTCTimeZone(), &t, &err) ||
      absl::ParseTime(absl::RFC3339_full, text, &t, &err)) {
    return t;
  }
  absl::Duration back;
  if (ago && absl::ParseDuration(text, &back) && back >= absl::ZeroDuration()) {
    return absl::Now() - back;
  }
  return std::nullopt;
}

// `billing reconcile`: the ledger against the topic. 0: no drift; 3:
// drift (listed); 1: could not tell.
int RunReconcile() {
  const std::string text = absl::GetFlag(FLAGS_since);
  const std::optional<absl::Time> when = ParseWhen(text);
  if (!when) {
    std::fprintf(stderr, "sbadmin billing reconcile: --since=%s: want 2026-12-01 or RFC 3339\n",
                 text.c_str());
    return 2;
  }
  const absl::Time since = *when;
  auto signer = sb::UsageSignerFromFlags();
  if (!signer.ok()) {
    std::fprintf(stderr, "sbadmin billing reconcile: %s\n", signer.status().ToString().c_str());
    return 1;
  }
  sb::PgPool pg(absl::GetFlag(FLAGS_pg), 1);
  sb::billing::Ledger ledger(pg);
  auto drift = sb::billing::Reconcile(ledger, *signer, absl::GetFlag(FLAGS_kafka_brokers),
                                      absl::GetFlag(FLAGS_topic), since);
  if (!drift.ok()) {
    std::fprintf(stderr, "sbadmin billing reconcile: %s\n", drift.status().ToString().c_str());
    return 1;
  }
  std::printf("requests since %s: %lld in the topic, %lld in the ledger\n",
              absl::FormatTime(absl::RFC3339_sec, since, absl::UTCTimeZone()).c_str(),
              static_cast<long long>(drift->topic_requests),
              static_cast<long long>(drift->ledger_requests));
  auto list = [](const char* what, const std::vector<std::string>& ids) {
    std::printf("%s: %zu\n", what, ids.size());
    for (size_t i = 0; i < ids.size() && i < 20; ++i) std::printf("  %s\n", ids[i].c_str());
    if (ids.size() > 20) std::printf("  ...\n");
  };
  list("missing from the ledger", drift->missing);
  list("in the ledger, not in the topic", drift->extra);
  list("with other counts", drift->differing);
  std::printf(
      "drift (ledger minus topic): %lld input tokens (%lld cache read, %lld cache write), %lld "
      "output tokens\n",
      static_cast<long long>(drift->input_tokens), static_cast<long long>(drift->cache_read_tokens),
      static_cast<long long>(drift->cache_write_tokens),
      static_cast<long long>(drift->output_tokens));
  if (!drift->topic_complete) {
    std::printf(
        "note: the topic's retention has dropped its first events; rows of requests "
        "whose events are gone show as in the ledger only\n");
  }
  std::printf("%s\n", drift->zero() ? "no drift" : "DRIFT");
  return drift->zero() ? 0 : 3;
}

// `sbadmin billing ...`: decisions for the metering consumer
// (services/billing). Returns the exit code.
int RunBilling(const std::vector<std::string>& args) {
  if (args.size() == 3 && args[2] == "reconcile" && !absl::GetFlag(FLAGS_since).empty()) {
    return RunReconcile();
  }
  if (args.size() != 3 || args[2] != "reset-offsets" || absl::GetFlag(FLAGS_to).empty()) {
    std::fprintf(stderr, "%s\n", kBillingUsage);
    return 2;
  }
  sb::PgPool pg(absl::GetFlag(FLAGS_pg), 1);
  sb::billing::Ledger ledger(pg);
  const int partition = absl::GetFlag(FLAGS_partition);
  const std::string group = absl::GetFlag(FLAGS_group), topic = absl::GetFlag(FLAGS_topic);
  auto parts = ledger.RequestReset(group, topic,
                                   partition < 0 ? std::nullopt : std::optional<int32_t>(partition),
                                   absl::GetFlag(FLAGS_to));
  if (!parts.ok()) {
    std::fprintf(stderr, "sbadmin billing reset-offsets: %s\n", parts.status().ToString().c_str());
    return 1;
  }
  if (parts->empty()) {
    std::printf("no offsets stored for group %s, topic %s: billing starts from the log's start\n",
                group.c_str(), topic.c_str());
  }
  for (int32_t p : *parts) {
    std::printf(
        "%s[%d]: billing resumes from %s (applied within a second while it runs, else "
        "when it starts)\n",
        topic.c_str(), p, absl::GetFlag(FLAGS_to).c_str());
  }
  return 0;
}

constexpr const char* kPriceUsage =
    "sbadmin --pg=URI price (set MODEL --input=USD --output=USD [--cache_read=USD] "
    "[--cache_write=USD] [--from=DATE] | list [MODEL])   # USD per million tokens";

// --from: a date (UTC midnight) or an RFC 3339 time; now when not given.
absl::StatusOr<absl::Time> PriceFrom(absl::Time now) {
  const std::string text = absl::GetFlag(FLAGS_from);
  if (text.empty()) return now;
  const std::optional<absl::Time> when = ParseWhen(text);
  if (!when) {
    return absl::InvalidArgumentError("--from=" + text +
                                      ": want 2026-12-01 or 2026-12-01T12:00:00Z");
  }
  const absl::Time t = *when;
  // A request is priced when it is recorded, at the price in force when it
  // started: a price for the past would not reach what was recorded.
  if (t < now - absl::Minutes(1)) {
    return absl::InvalidArgumentError("--from=" + text +
                                      " is in the past: prices apply from now on");
  }
  return t;
}

// `sbadmin price ...`: model prices for billing. Returns the exit code.
int RunPrice(const std::vector<std::string>& args) {
  const std::string sub = args.size() >= 3 ? args[2] : "";
  sb::PgPool pg(absl::GetFlag(FLAGS_pg), 1);
  sb::billing::Ledger ledger(pg);
  absl::Status st;
  if (sub == "set" && args.size() == 4) {
    sb::billing::Price price;
    auto usd = [&](const absl::Flag<std::string>& flag, const char* name, int64_t* out) {
      if (!st.ok()) return;
      auto v = sb::ParseUsd(absl::GetFlag(flag), name);
      if (v.ok()) {
        *out = *v;
      } else {
        st = v.status();
      }
    };
    usd(FLAGS_input, "--input", &price.input_per_mtok);
    usd(FLAGS_output, "--output", &price.output_per_mtok);
    // A cache price not given is the input price: no discount, no premium.
    price.cache_read_per_mtok = price.input_per_mtok;
    price.cache_write_per_mtok = price.input_per_mtok;
    if (!absl::GetFlag(FLAGS_cache_read).empty()) {
      usd(FLAGS_cache_read, "--cache_read", &price.cache_read_per_mtok);
    }
    if (!absl::GetFlag(FLAGS_cache_write).empty()) {
      usd(FLAGS_cache_write, "--cache_write", &price.cache_write_per_mtok);
    }
    if (st.ok()) {
      auto from = PriceFrom(absl::Now());
      st = from.status();
      if (from.ok()) price.from = *from;
    }
    if (st.ok()) st = ledger.SetPrice(args[3], price);
    if (st.ok()) {
      std::printf(
          "%s: from %s, per million tokens: input $%s, output $%s, cache read $%s, "
          "cache write $%s\n",
          args[3].c_str(),
          absl::FormatTime(absl::RFC3339_sec, price.from, absl::UTCTimeZone()).c_str(),
          sb::FormatUsd(price.input_per_mtok).c_str(), sb::FormatUsd(price.output_per_mtok).c_str(),
          sb::FormatUsd(price.cache_read_per_mtok).c_str(),
          sb::FormatUsd(price.cache_write_per_mtok).c_str());
    }
  } else if (sub == "list" && args.size() <= 4) {
    auto prices = ledger.ListPrices(args.size() == 4 ? args[3] : "");
    st = prices.status();
    if (prices.ok()) {
      std::printf("%-28s %-22s %14s %14s %14s %14s\n", "model", "from", "input", "output",
                  "cache_read", "cache_write");
      for (const auto& [model, p] : *prices) {
        const std::string from =
            p.from == absl::InfinitePast()
                ? "(always)"
                : absl::FormatTime(absl::RFC3339_sec, p.from, absl::UTCTimeZone());
        std::printf("%-28s %-22s %14s %14s %14s %14s\n", model.c_str(), from.c_str(),
                    sb::FormatUsd(p.input_per_mtok).c_str(),
                    sb::FormatUsd(p.output_per_mtok).c_str(),
                    sb::FormatUsd(p.cache_read_per_mtok).c_str(),
                    sb::FormatUsd(p.cache_write_per_mtok).c_str());
      }
    }
  } else {
    std::fprintf(stderr, "%s\n", kPriceUsage);
    return 2;
  }
  if (!st.ok()) {
    std::fprintf(stderr, "sbadmin price %s: %s\n", sub.c_str(), st.ToString().c_str());
    return 1;
  }
  return 0;
}

constexpr const char* kSafetyUsage =
    "sbadmin --pg=URI safety (set-policy ORG FILE.json [--by=WHO] | show-policy ORG "
    "[--policy_version=N] | set-policy --platform FILE.json [--by=WHO] | show-policy --platform "
    "[--policy_version=N] | audit ORG [--since=24h|DATE])";

// `safety audit ORG`: the org's audit trail since --since, oldest first.
int RunSafetyAudit(const std::string& org) {
  const std::string text = absl::GetFlag(FLAGS_since).empty() ? "24h" : absl::GetFlag(FLAGS_since);
  const std::optional<absl::Time> since = ParseWhen(text, /*ago=*/true);
  if (!since) {
    std::fprintf(stderr, "sbadmin safety audit: --since=%s: want 24h, 2026-12-01 or RFC 3339\n",
                 text.c_str());
    return 2;
  }
  sb::PgPool pg(absl::GetFlag(FLAGS_pg), 1);
  switchboard::safety::v1::ListAuditRequest request;
  request.set_org_id(org);
  request.set_since_unix_ms(absl::ToUnixMillis(*since));
  request.set_limit(1000);
  // policy: the org's version / the platform's under it.
  std::printf("%-24s %-28s %-16s %-6s %-22s %-11s %9s %11s %s\n", "decided (UTC)", "request",
              "end user", "dir", "rule", "action", "policy", "span", "span hash");
  int64_t rows = 0;
  for (;;) {
    auto page = sb::safety::ListAudit(pg, request);
    if (!page.ok()) {
      std::fprintf(stderr, "sbadmin safety audit: %s\n", page.status().ToString().c_str());
      return 1;
    }
    for (const auto& e : page->events()) {
      const std::string span = absl::StrCat(e.start(), "..", e.end());
      const std::string policy = absl::StrCat(e.policy_version(), "/", e.platform_policy_version());
      std::printf("%-24s %-28s %-16s %-6s %-22s %-11s %9s %11s %s\n",
                  absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::FromUnixMillis(e.at_unix_ms()),
                                   absl::UTCTimeZone())
                      .c_str(),
                  e.request_id().c_str(), e.end_user_id().empty() ? "-" : e.end_user_id().c_str(),
                  e.direction().c_str(), e.rule().c_str(), e.action().c_str(), policy.c_str(),
                  span.c_str(), e.span_hash().empty() ? "-" : e.span_hash().substr(0, 16).c_str());
      ++rows;
    }
    if (page->next_after_event_id().empty()) break;
    request.set_after_event_id(page->next_after_event_id());
  }
  std::printf("%lld decisions since %s\n", static_cast<long long>(rows),
              absl::FormatTime(absl::RFC3339_sec, *since, absl::UTCTimeZone()).c_str());
  return 0;
}

// `sbadmin safety ...`: the orgs' safety policies. Returns the exit code.
int RunSafety(const std::vector<std::string>& args) {
  const std::string sub = args.size() >= 3 ? args[2] : "";
  // The platform's policy names no org: its arguments are one fewer.
  const bool platform = absl::GetFlag(FLAGS_platform);
  const size_t org_args = platform ? 0 : 1;
  if (!((sub == "set-policy" && args.size() == 4 + org_args) ||
        (sub == "show-policy" && args.size() == 3 + org_args) ||
        (sub == "audit" && !platform && args.size() == 4))) {
    std::fprintf(stderr, "%s\n", kSafetyUsage);
    return 2;
  }
  if (sub == "audit") return RunSafetyAudit(args[3]);
  const std::string org = platform ? "" : args[3];
  sb::PgPool pg(absl::GetFlag(FLAGS_pg), 1);
  sb::safety::PolicyStore store(&pg);
  absl::StatusOr<sb::safety::StoredPolicy> policy;
  if (sub == "set-policy") {
    const std::string& file = args[3 + org_args];
    std::ifstream in(file);
    std::stringstream document;
    document << in.rdbuf();
    if (!in) {
      std::fprintf(stderr, "sbadmin safety set-policy: cannot read %s\n", file.c_str());
      return 1;
    }
    std::string by = absl::GetFlag(FLAGS_by);
    if (by.empty() && std::getenv("USER") != nullptr) by = std::getenv("USER");
    if (by.empty()) by = "sbadmin";
    policy = platform ? store.SetPlatform(document.str(), by) : store.Set(org, document.str(), by);
  } else {
    const int64_t version = absl::GetFlag(FLAGS_policy_version);
    policy = platform ? store.GetPlatform(version) : store.Get(org, version);
  }
  if (!policy.ok()) {
    std::fprintf(stderr, "sbadmin safety %s: %s\n", sub.c_str(),
                 policy.status().ToString().c_str());
    return 1;
  }
  std::printf("org      %s\nversion  %lld\ncreated  %s by %s\npolicy   %s\n",
              platform ? "(the platform)" : org.c_str(),
              static_cast<long long>(platform ? policy->policy->platform_version()
                                              : policy->policy->version()),
              policy->created_at.c_str(), policy->created_by.c_str(),
              policy->policy->json().c_str());
  return 0;
}

constexpr const char* kBudgetUsage =
    "sbadmin --pg=URI budget (set ORG [--key=KEY_ID] --monthly=USD | show ORG)";

// `sbadmin budget ...`: monthly budgets per org and key. Returns the exit
// code.
int RunBudget(const std::vector<std::string>& args) {
  const std::string sub = args.size() >= 3 ? args[2] : "";
  if (!((sub == "set" && args.size() == 4 && !absl::GetFlag(FLAGS_monthly).empty()) ||
        (sub == "show" && args.size() == 4))) {
    std::fprintf(stderr, "%s\n", kBudgetUsage);
    return 2;
  }
  sb::PgPool pg(absl::GetFlag(FLAGS_pg), 1);
  sb::billing::Ledger ledger(pg);
  absl::Status st;
  if (sub == "set") {
    auto monthly = sb::ParseUsd(absl::GetFlag(FLAGS_monthly), "--monthly");
    st = monthly.ok() ? ledger.SetBudget(args[3], absl::GetFlag(FLAGS_key), *monthly)
                      : monthly.status();
  } else {
    auto budgets = ledger.Budgets(args[3]);
    st = budgets.status();
    if (budgets.ok()) {
      std::printf("%-28s %16s %16s %8s\n", "key", "monthly", "spent", "used");
      for (const auto& b : *budgets) {
        std::printf(
            "%-28s %16s %16s %7.1f%%\n", b.key.empty() ? "(the whole org)" : b.key.c_str(),
            sb::FormatUsd(b.monthly_micros).c_str(), sb::FormatUsd(b.spent_micros).c_str(),
            100.0 * static_cast<double>(b.spent_micros) / static_cast<double>(b.monthly_micros));
      }
    }
  }
  if (!st.ok()) {
    std::fprintf(stderr, "sbadmin budget %s: %s\n", sub.c_str(), st.ToString().c_str());
    return 1;
  }
  return 0;
}

// set-org's flags: an empty one is not given.
absl::StatusOr<sb::admin::OrgSettings> OrgChange() {
  sb::admin::OrgSettings change;
  const std::string weight = absl::GetFlag(FLAGS_weight);
  if (!weight.empty()) {
    double w = 0;
    if (!absl::SimpleAtod(weight, &w)) {
      return absl::InvalidArgumentError("--weight=" + weight + " is not a number");
    }
    change.weight = w;
  }
  const std::string tier = absl::GetFlag(FLAGS_tier);
  if (!tier.empty()) change.tier = tier;
  return change;
}

}  // namespace

// `sbadmin health [HOST:]PORT`: the service's readiness (/readyz on its
// metrics port: 503 while draining), for container healthchecks — the image
// has no curl, and the gRPC port wants a client certificate. No database.
int RunHealth(const std::vector<std::string>& args) {
  if (args.size() != 3) {
    std::fprintf(stderr, "usage: sbadmin health [HOST:]METRICS_PORT\n");
    return 2;
  }
  std::string host = "127.0.0.1";
  std::string port_text = args[2];
  if (const size_t colon = port_text.rfind(':'); colon != std::string::npos) {
    host = port_text.substr(0, colon);
    port_text = port_text.substr(colon + 1);
  }
  int port = 0;
  if (!absl::SimpleAtoi(port_text, &port) || port <= 0 || port > 65535 || host.empty()) {
    std::fprintf(stderr, "sbadmin health: not [HOST:]PORT: %s\n", args[2].c_str());
    return 2;
  }
  auto r = sb::http::Fetch({.host = host,
                            .port = port,
                            .target = "/readyz",
                            .timeout = std::chrono::milliseconds(2000)});
  if (!r.ok()) {
    std::printf("unreachable: %s\n", std::string(r.status().message()).c_str());
    return 1;
  }
  std::printf("%s\n", r->status == 200 ? "ready"
                                       : ("not ready (" + std::to_string(r->status) + ")").c_str());
  return r->status == 200 ? 0 : 1;
}

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "sbadmin --pg=URI (migrate | create-org ORG [NAME] | create-key ORG [USER] [--admin] | "
      "list-keys ORG | revoke-key KEY_ID | set-limits ORG [--key=KEY_ID] [--model=MODEL] [--rpm=N] "
      "[--input_tpm=N] [--output_tpm=N] [--concurrency=N] | show-limits ORG | "
      "set-org ORG [--weight=N] [--tier=NAME] | show-org ORG | erase-user ORG USER | "
      "model ... | price ... | "
      "budget ... | billing ... | safety ...)\n"
      "sbadmin health [HOST:]METRICS_PORT\n" +
      std::string(kModelUsage) + "\n" + kPriceUsage + "\n" + kBudgetUsage + "\n" + kBillingUsage +
      "\n" + kSafetyUsage);
  auto args = sb::ParseConfig(argc, argv);
  if (args.size() < 2) {
    std::fprintf(stderr, "%s\n", absl::ProgramUsageMessage().data());
    return 2;
  }
  const std::string cmd = args[1];
  if (cmd == "health") return RunHealth(args);
  if (cmd == "model") return RunModel(args);
  if (cmd == "billing") return RunBilling(args);
  if (cmd == "price") return RunPrice(args);
  if (cmd == "budget") return RunBudget(args);
  if (cmd == "safety") return RunSafety(args);
  sb::admin::Admin admin(absl::GetFlag(FLAGS_pg));
  absl::Status st;
  if (cmd == "migrate") {
    auto applied = admin.Migrate(absl::GetFlag(FLAGS_migrations_dir));
    st = applied.status();
    if (applied.ok()) std::printf("applied %d migration(s)\n", *applied);
  } else if (cmd == "create-org" && args.size() >= 3) {
    st = admin.CreateOrg(args[2], args.size() >= 4 ? args[3] : args[2]);
  } else if (cmd == "create-key" && args.size() >= 3) {
    auto key =
        admin.CreateKey(args[2], args.size() >= 4 ? args[3] : "", absl::GetFlag(FLAGS_admin));
    st = key.status();
    if (key.ok()) std::printf("%s\n", key->c_str());
  } else if (cmd == "list-keys" && args.size() >= 3) {
    auto keys = admin.ListKeys(args[2]);
    st = keys.status();
    if (keys.ok()) {
      std::printf("%-26s  %-37s  %-16s  %-20s  %-20s  %s\n", "id", "prefix", "user", "created",
                  "revoked", "kind");
      for (const auto& k : *keys) {
        std::printf("%-26s  %-37s  %-16s  %-20s  %-20s  %s\n", k.id.c_str(), k.prefix.c_str(),
                    k.user_id.empty() ? "-" : k.user_id.c_str(), k.created_at.c_str(),
                    k.revoked_at.empty() ? "-" : k.revoked_at.c_str(), k.admin ? "admin" : "api");
      }
    }
  } else if (cmd == "revoke-key" && args.size() >= 3) {
    st = admin.RevokeKey(args[2]);
  } else if (cmd == "set-limits" && args.size() >= 3) {
    st = admin.SetLimits(
        args[2], {absl::GetFlag(FLAGS_key), absl::GetFlag(FLAGS_model), Given(FLAGS_rpm),
                  Given(FLAGS_input_tpm), Given(FLAGS_output_tpm), Given(FLAGS_concurrency)});
  } else if (cmd == "show-limits" && args.size() >= 3) {
    auto rows = admin.ShowLimits(args[2]);
    st = rows.status();
    if (rows.ok()) {
      std::printf("%-28s %-24s %10s %12s %12s %12s\n", "key", "model", "rpm", "input_tpm",
                  "output_tpm", "concurrency");
      for (const auto& r : *rows) {
        // A row whose every limit was removed stays (so gateways see the
        // change) but limits nothing.
        if (!r.rpm && !r.input_tpm && !r.output_tpm && !r.concurrency) continue;
        std::printf("%-28s %-24s %10s %12s %12s %12s\n",
                    r.key_id.empty() ? "(every key)" : r.key_id.c_str(),
                    r.model.empty() ? "(every model)" : r.model.c_str(), Show(r.rpm).c_str(),
                    Show(r.input_tpm).c_str(), Show(r.output_tpm).c_str(),
                    Show(r.concurrency).c_str());
      }
    }
  } else if (cmd == "erase-user" && args.size() >= 4) {
    // Chat's eraser removes the conversations' rows and replay buffers
    // (within its --erase_after); connection-manager drops the user's events
    // when the tombstone reaches it.
    sb::PgPool pg(absl::GetFlag(FLAGS_pg), 1);
    sb::UlidGenerator ids;
    sb::chat::ChatStore store(pg, ids);
    auto erased = store.EraseUser({args[2], args[3]});
    st = erased.status();
    if (erased.ok()) {
      std::printf("erasing %s/%s: %d conversation(s) deleted, a user.erased tombstone queued\n",
                  args[2].c_str(), args[3].c_str(), *erased);
    }
  } else if (cmd == "set-org" && args.size() >= 3) {
    auto change = OrgChange();
    st = change.ok() ? admin.SetOrg(args[2], *change) : change.status();
  } else if (cmd == "show-org" && args.size() >= 3) {
    auto org = admin.ShowOrg(args[2]);
    st = org.status();
    if (org.ok()) {
      std::printf(
          "org      %s\nname     %s\nweight   %.10g\ntier     %s\ncreated  %s\nupdated  %s\n",
          org->id.c_str(), org->name.c_str(), org->weight, org->tier.c_str(),
          org->created_at.c_str(), org->updated_at.c_str());
    }
  } else {
    std::fprintf(stderr, "%s\n", absl::ProgramUsageMessage().data());
    return 2;
  }
  if (!st.ok()) {
    std::fprintf(stderr, "sbadmin %s: %s\n", cmd.c_str(), st.ToString().c_str());
    return 1;
  }
  return 0;
}
