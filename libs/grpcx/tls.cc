#include "grpcx/tls.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_certificate_verifier.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <mutex>

#include "absl/flags/flag.h"

ABSL_FLAG(std::string, tls_ca, "", "PEM file of the CA that issues the services' certificates");
ABSL_FLAG(std::string, tls_cert, "", "PEM file of this service's certificate (CN = its identity)");
ABSL_FLAG(std::string, tls_key, "", "PEM file of this service's private key");
ABSL_FLAG(int, tls_reload_seconds, 10, "How often the TLS files are re-read (renewals)");
ABSL_FLAG(bool, insecure_internal, false,
          "Plaintext gRPC without service identities (local development only)");

namespace sb::grpcx {
namespace {

// One watcher per set of files and process: each runs a refresh thread.
std::shared_ptr<grpc::experimental::FileWatcherCertificateProvider> Provider(
    const TlsFiles& files) {
  static std::mutex mu;
  static std::map<std::string, std::shared_ptr<grpc::experimental::FileWatcherCertificateProvider>>
      providers;
  std::lock_guard<std::mutex> lock(mu);
  auto& p = providers[files.ca + "\n" + files.cert + "\n" + files.key];
  if (!p) {
    p = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
        files.key, files.cert, files.ca, static_cast<unsigned>(std::max(1, files.reload_seconds)));
  }
  return p;
}

bool Readable(const std::string& path) {
  std::error_code ec;
  return std::filesystem::is_regular_file(path, ec);
}

}  // namespace

bool InsecureInternal() { return absl::GetFlag(FLAGS_insecure_internal); }

absl::StatusOr<TlsFiles> TlsFilesFromFlags() {
  if (InsecureInternal()) return TlsFiles{};
  TlsFiles f{absl::GetFlag(FLAGS_tls_ca), absl::GetFlag(FLAGS_tls_cert),
             absl::GetFlag(FLAGS_tls_key), absl::GetFlag(FLAGS_tls_reload_seconds)};
  if (f.ca.empty() || f.cert.empty() || f.key.empty()) {
    return absl::InvalidArgumentError(
        "internal gRPC is mutual TLS: set --tls_ca, --tls_cert and --tls_key (tools/certs makes "
        "them), or --insecure_internal for plaintext on a development machine");
  }
  for (const auto* path : {&f.ca, &f.cert, &f.key}) {
    if (!Readable(*path)) return absl::InvalidArgumentError("cannot read TLS file " + *path);
  }
  return f;
}

std::shared_ptr<grpc::ServerCredentials> ServerCredentials(const TlsFiles& files) {
  if (files.ca.empty()) return grpc::InsecureServerCredentials();
  grpc::experimental::TlsServerCredentialsOptions options(Provider(files));
  options.watch_root_certs();
  options.watch_identity_key_cert_pairs();
  options.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  return grpc::experimental::TlsServerCredentials(options);
}

constexpr const char* kRoundRobin = R"({"loadBalancingConfig": [{"round_robin": {}}]})";

std::shared_ptr<grpc::Channel> Dial(const std::string& address, std::string_view identity,
                                    const TlsFiles& files, const DialOptions& dial) {
  grpc::ChannelArguments args;
  // Every address the target resolves to (a multi-address ipv4: target, a
  // headless Service's dns:/// name) gets a connection, and calls take them
  // in turn: one long-lived channel no longer pins a client to one backend.
  // A backend that goes away (or ends its connections at their maximum age,
  // --grpc_max_connection_age_s) makes the channel resolve again.
  args.SetServiceConfigJSON(kRoundRobin);
  if (dial.max_reconnect_backoff_ms > 0) {
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, dial.max_reconnect_backoff_ms);
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
                std::min(1000, dial.max_reconnect_backoff_ms));
  }
  if (files.ca.empty()) {
    return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
  }
  grpc::experimental::TlsChannelCredentialsOptions options;
  options.set_certificate_provider(Provider(files));
  options.watch_root_certs();
  options.watch_identity_key_cert_pairs();
  options.set_verify_server_certs(true);
  options.set_certificate_verifier(
      std::make_shared<grpc::experimental::HostNameCertificateVerifier>());
  // The server is checked against the identity, whatever the address.
  args.SetSslTargetNameOverride(std::string(identity));
  return grpc::CreateCustomChannel(address, grpc::experimental::TlsCredentials(options), args);
}

std::shared_ptr<grpc::Channel> Dial(const std::string& address, std::string_view identity,
                                    const DialOptions& options) {
  auto files = TlsFilesFromFlags();
  if (!files.ok()) {
    // Bad configuration at start-up: fatal, with the reason.
    spdlog::critical("{}", std::string(files.status().message()));
    std::exit(2);
  }
  return Dial(address, identity, *files, options);
}

std::string CallerIdentity(const grpc::ServerContextBase& ctx) {
  auto auth = ctx.auth_context();
  if (!auth || !auth->IsPeerAuthenticated()) return "";
  auto cn = auth->FindPropertyValues("x509_common_name");
  if (cn.empty()) return "";
  return std::string(cn.front().data(), cn.front().size());
}

}  // namespace sb::grpcx
