// sbadmin: operator commands against the Switchboard database.
//
//   sbadmin --pg=URI migrate [--migrations_dir=DIR]
//   sbadmin --pg=URI create-org ORG_ID [NAME]
//   sbadmin --pg=URI create-key ORG_ID [USER_ID]   # prints the secret once
//   sbadmin --pg=URI revoke-key KEY_ID
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "core/config.h"
#include "sbadmin/admin.h"

ABSL_FLAG(std::string, pg, "postgresql://postgres@127.0.0.1:5432/switchboard",
          "PostgreSQL connection URI");
ABSL_FLAG(std::string, migrations_dir, SB_DEFAULT_MIGRATIONS_DIR, "Directory of *.sql migrations");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "sbadmin --pg=URI (migrate | create-org ORG [NAME] | create-key ORG [USER] | "
      "revoke-key KEY_ID)");
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
  } else if (cmd == "revoke-key" && args.size() >= 3) {
    st = admin.RevokeKey(args[2]);
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
