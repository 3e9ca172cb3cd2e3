// sbadmin: operator commands against the Switchboard database.
//
//   sbadmin --pg=URI migrate [--migrations_dir=DIR]
//   sbadmin --pg=URI create-org ORG_ID [NAME]
//   sbadmin --pg=URI create-key ORG_ID [USER_ID]   # prints the secret once
//   sbadmin --pg=URI list-keys ORG_ID                # id, prefix, user, created, revoked
//   sbadmin --pg=URI revoke-key KEY_ID
//   sbadmin --pg=URI set-limits ORG_ID [--key=KEY_ID] [--model=MODEL] [--rpm=N]
//           [--input_tpm=N] [--output_tpm=N] [--concurrency=N]   # 0 removes a limit
//   sbadmin --pg=URI show-limits ORG_ID
//   sbadmin --pg=URI set-org ORG_ID [--weight=N] [--tier=NAME]   # fairness weight, tier label
//   sbadmin --pg=URI show-org ORG_ID                             # name, weight, tier
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "core/config.h"
#include "sbadmin/admin.h"

ABSL_FLAG(std::string, pg, "postgresql://postgres@127.0.0.1:5432/switchboard",
          "PostgreSQL connection URI");
ABSL_FLAG(std::string, migrations_dir, SB_DEFAULT_MIGRATIONS_DIR, "Directory of *.sql migrations");
ABSL_FLAG(std::string, key, "", "set-limits: narrow the limits to this API key id");
ABSL_FLAG(std::string, model, "", "set-limits: narrow the limits to this model");
ABSL_FLAG(int64_t, rpm, -1, "set-limits: requests per minute (0 removes the limit)");
ABSL_FLAG(int64_t, input_tpm, -1, "set-limits: input tokens per minute (0 removes the limit)");
ABSL_FLAG(int64_t, output_tpm, -1, "set-limits: output tokens per minute (0 removes the limit)");
ABSL_FLAG(int64_t, concurrency, -1, "set-limits: requests at once (0 removes the limit)");
ABSL_FLAG(std::string, weight, "",
          "set-org: the org's share of tokens when a model is contended (> 0; 1 is the default)");
ABSL_FLAG(std::string, tier, "", "set-org: the org's tier, a label (e.g. standard, premium)");

namespace {

std::optional<int64_t> Given(const absl::Flag<int64_t>& flag) {
  const int64_t v = absl::GetFlag(flag);
  return v < 0 ? std::nullopt : std::optional<int64_t>(v);
}

std::string Show(const std::optional<int64_t>& v) { return v ? std::to_string(*v) : "-"; }

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

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "sbadmin --pg=URI (migrate | create-org ORG [NAME] | create-key ORG [USER] | "
      "list-keys ORG | revoke-key KEY_ID | set-limits ORG [--key=KEY_ID] [--model=MODEL] [--rpm=N] "
      "[--input_tpm=N] [--output_tpm=N] [--concurrency=N] | show-limits ORG | "
      "set-org ORG [--weight=N] [--tier=NAME] | show-org ORG)");
  auto args = sb::ParseConfig(argc, argv);
  if (args.size() < 2) {
    std::fprintf(stderr, "%s\n", absl::ProgramUsageMessage().data());
    return 2;
  }
  sb::admin::Admin admin(absl::GetFlag(FLAGS_pg));
  const std::string cmd = args[1];
  absl::Status st;
  if (cmd == "migrate") {
    auto applied = admin.Migrate(absl::GetFlag(FLAGS_migrations_dir));
    st = applied.status();
    if (applied.ok()) std::printf("applied %d migration(s)\n", *applied);
  } else if (cmd == "create-org" && args.size() >= 3) {
    st = admin.CreateOrg(args[2], args.size() >= 4 ? args[3] : args[2]);
  } else if (cmd == "create-key" && args.size() >= 3) {
    auto key = admin.CreateKey(args[2], args.size() >= 4 ? args[3] : "");
    st = key.status();
    if (key.ok()) std::printf("%s\n", key->c_str());
  } else if (cmd == "list-keys" && args.size() >= 3) {
    auto keys = admin.ListKeys(args[2]);
    st = keys.status();
    if (keys.ok()) {
      std::printf("%-26s  %-37s  %-16s  %-20s  %s\n", "id", "prefix", "user", "created", "revoked");
      for (const auto& k : *keys) {
        std::printf("%-26s  %-37s  %-16s  %-20s  %s\n", k.id.c_str(), k.prefix.c_str(),
                    k.user_id.empty() ? "-" : k.user_id.c_str(), k.created_at.c_str(),
                    k.revoked_at.empty() ? "-" : k.revoked_at.c_str());
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
