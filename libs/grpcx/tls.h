// Service identity inside Switchboard: mutual TLS on every gRPC connection.
//
// Every binary holds a certificate from the platform's CA (tools/certs)
// whose common name is its identity: gateway, chat, connection-manager,
// safety, tenant-scheduler, inference-worker, billing, or operator (the
// shell: grpcurl, tests). A server accepts only clients with such a
// certificate and learns who they are (CallerIdentity); a client accepts a
// server only if its certificate names the identity it meant to reach, so a
// stolen address cannot impersonate a service. The files are re-read every
// --tls_reload_seconds, so a renewed certificate (written in place or
// swapped in as a new symlink, as Kubernetes does with Secrets) is used
// without a restart.
//
// --insecure_internal turns all of it off (plaintext, no identities): for a
// laptop or a test that wants it, never for a deployment.
//
//   auto creds = sb::grpcx::ServerCredentials();   // in ServiceRunner
//   auto stub = Safety::NewStub(sb::grpcx::Dial(address, sb::grpcx::kSafety));
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/flags/declare.h"
#include "absl/status/statusor.h"

ABSL_DECLARE_FLAG(std::string, tls_ca);
ABSL_DECLARE_FLAG(std::string, tls_cert);
ABSL_DECLARE_FLAG(std::string, tls_key);
ABSL_DECLARE_FLAG(int, tls_reload_seconds);
ABSL_DECLARE_FLAG(bool, insecure_internal);

namespace grpc {
class Channel;
class ServerCredentials;
class ServerContextBase;
}  // namespace grpc

namespace sb::grpcx {

inline constexpr std::string_view kGateway = "gateway";
inline constexpr std::string_view kChat = "chat";
inline constexpr std::string_view kConnectionManager = "connection-manager";
inline constexpr std::string_view kSafety = "safety";
inline constexpr std::string_view kScheduler = "tenant-scheduler";
inline constexpr std::string_view kWorker = "inference-worker";
inline constexpr std::string_view kBilling = "billing";
inline constexpr std::string_view kOperator = "operator";

// The files a process proves its identity with.
struct TlsFiles {
  std::string ca, cert, key;
  int reload_seconds = 10;
};

// From the flags. InvalidArgument naming what is missing or unreadable,
// unless --insecure_internal (then an empty TlsFiles).
absl::StatusOr<TlsFiles> TlsFilesFromFlags();
bool InsecureInternal();

// Server credentials: mutual TLS requiring a client certificate from the
// CA, or plaintext when `files` is empty (--insecure_internal).
std::shared_ptr<grpc::ServerCredentials> ServerCredentials(const TlsFiles& files);

// A channel to `address` whose server must hold a certificate for
// `identity`, presenting this process's own certificate; plaintext when
// `files` is empty. The two-argument form uses the flags, and exits with
// the reason when they are missing or unreadable (a start-up error).
//
// `options.max_reconnect_backoff_ms` caps how long the channel waits
// between attempts to reach a server that went away (gRPC's backoff grows to
// two minutes, and calls fail at once while it waits): for a peer that must
// be found again soon after it restarts.
struct DialOptions {
  int max_reconnect_backoff_ms = 0;  // 0: gRPC's default
};
std::shared_ptr<grpc::Channel> Dial(const std::string& address, std::string_view identity,
                                    const TlsFiles& files, const DialOptions& options = {});
std::shared_ptr<grpc::Channel> Dial(const std::string& address, std::string_view identity,
                                    const DialOptions& options = {});

// The identity of the caller of this call: its certificate's common name,
// or "" without one (plaintext).
std::string CallerIdentity(const grpc::ServerContextBase& ctx);

}  // namespace sb::grpcx
