#!/usr/bin/env bash
# Side by side on one mock upstream, in one run: the mock direct, Portkey's
# gateway in front of it, and Switchboard (gateway + the rest of the cluster,
# an inference worker with --engine=openai) in front of it.
#
#   bench/peers/run.sh [OUT_FILE]
#
# Installs what it needs (wrk from Debian if missing, Portkey from
# bench/peers/package-lock.json with npm ci), builds the binaries it needs in
# BUILD_DIR (default build/, with ninja), starts everything on loopback ports
# away from tools/dev's and bench/front_door.sh's, then measures the three
# with the same requests (POST /v1/chat/completions, one short user message,
# max_tokens MAX_TOKENS):
#   - non-streaming: wrk (bench/peers/chat.lua) for DURATION_S at each of
#     CONCURRENCY (1 10 50): 2xx responses/s, latency p50 / p99, and the CPU the
#     gateway's processes used per response;
#   - streaming: bench/peers/ttft.mjs, TTFT_REQUESTS requests at each of
#     TTFT_CONCURRENCY (1 10): time to the first content delta, and what each
#     gateway adds to the direct figure.
# Targets are interleaved (for each concurrency: direct, Portkey, Switchboard)
# so a noisy neighbour hurts all three alike. Prints a Markdown table (also
# written to OUT_FILE). Everything started is stopped on exit, failure
# included.
#
# Knobs (environment): BUILD_DIR, DURATION_S (10), WARMUP_S (5), CONCURRENCY
# ("1 10 50"), TTFT_REQUESTS (1000), TTFT_CONCURRENCY ("1 10"), MAX_TOKENS (16),
# INTERNAL_TLS (1: mutual TLS between Switchboard's services as deployed,
# tools/certs; 0: --insecure_internal), SWITCHBOARD_ENGINE (openai; "sim" runs
# the default simulated engine instead, for debugging this script),
# MOCK_UPSTREAM (a mock-upstream binary to use instead of building one),
# KEEP_STATE (keep the temp dir with the logs).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
OUT_FILE="${1:-}"
BUILD="${BUILD_DIR:-$ROOT/build}"
DURATION_S="${DURATION_S:-10}"
WARMUP_S="${WARMUP_S:-5}"
CONCURRENCY="${CONCURRENCY:-1 10 50}"
TTFT_REQUESTS="${TTFT_REQUESTS:-1000}"
TTFT_CONCURRENCY="${TTFT_CONCURRENCY:-1 10}"
MAX_TOKENS="${MAX_TOKENS:-16}"
INTERNAL_TLS="${INTERNAL_TLS:-1}"
SWITCHBOARD_ENGINE="${SWITCHBOARD_ENGINE:-openai}"
PORTKEY_VERSION=1.15.2
MODEL=mock-model  # the upstream's name, and the platform's (the worker serves it under the same name)
PROMPT="Say hello in one short sentence."

# Ports: clear of tools/dev (8080, 5005x, 910x, 55432, 56379, 19092) and of
# bench/front_door.sh (18080, 5105x, 920x, 55532, 56479, 19192), and below
# the kernel's ephemeral range (32768-60999 by default), where an outgoing
# connection (Portkey's to the mock, say) may already hold a port.
MOCK_PORT=28000
PORTKEY_PORT=28787
HTTP_PORT=28080
GRPC_BASE=28150
METRICS_BASE=28200
PG_PORT=28432
REDIS_PORT=28379
KAFKA_PORT=28092
SERVICES=(gateway chat connection-manager safety tenant-scheduler inference-worker billing)
START_ORDER=(safety tenant-scheduler inference-worker billing chat connection-manager gateway)

log() { printf '[peers %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

service_index() { local i; for i in "${!SERVICES[@]}"; do [ "${SERVICES[$i]}" != "$1" ] || { echo "$i"; return 0; }; done; return 1; }
grpc_port() { echo $((GRPC_BASE + $(service_index "$1"))); }
metrics_port() { echo $((METRICS_BASE + $(service_index "$1"))); }
addr() { echo "127.0.0.1:$(grpc_port "$1")"; }
PG_URI="postgresql://postgres@127.0.0.1:$PG_PORT/switchboard"
KAFKA="127.0.0.1:$KAFKA_PORT"
PGBIN="$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -n1)"

# ---------------------------------------------------------------------------
# Processes

STATE=""
declare -A PIDS=()
STOP_ORDER=(gateway connection-manager chat billing inference-worker tenant-scheduler safety dev-broker portkey mock)

# Our children stay zombies until reaped, and kill -0 succeeds on a zombie.
alive() { [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }

stop_pid() {  # pid: TERM, then KILL after 10 s
  local pid="$1" i
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
    alive "$pid" && kill -KILL "$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local name
  if [ -n "${LOAD_PID:-}" ]; then stop_pid "$LOAD_PID"; LOAD_PID=""; fi
  for name in "${STOP_ORDER[@]}"; do
    if [ -n "${PIDS[$name]:-}" ]; then stop_pid "${PIDS[$name]}"; unset "PIDS[$name]"; fi
  done
  if [ -n "$STATE" ]; then
    if [ -f "$STATE/redis.pid" ]; then
      redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || stop_pid "$(cat "$STATE/redis.pid")"
    fi
    if [ -f "$STATE/pg/data/PG_VERSION" ]; then
      runuser -u postgres -- "$PGBIN/pg_ctl" -D "$STATE/pg/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    if [ -n "${KEEP_STATE:-}" ]; then log "state kept in $STATE"; else rm -rf "$STATE"; fi
    STATE=""
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! ss -Htln "sport = :$1" | grep -q .; }

start_bg() {  # name command...
  local name="$1"; shift
  echo "$*" >>"$STATE/commands"
  nohup "$@" >>"$STATE/$name.log" 2>&1 &
  PIDS[$name]=$!
}

wait_http() {  # name url
  local i
  for i in $(seq 1 150); do
    curl -fsS -o /dev/null --max-time 1 "$2" 2>/dev/null && return 0
    alive "${PIDS[$1]}" || break
    sleep 0.1
  done
  tail -n 20 "$STATE/$1.log" >&2 || true
  die "$1 did not answer $2"
}

# CPU time (user + system) of some processes, in clock ticks.
cpu_ticks() { local p s=0; for p in "$@"; do s=$((s + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$s"; }

# ---------------------------------------------------------------------------
# Install and build

install_deps() {
  local t
  for t in node npm curl jq bc ss openssl redis-server redis-cli psql runuser cmake ninja; do
    command -v "$t" >/dev/null || die "$t is missing (tools/setup installs the build and datastore packages; node and npm come with the image)"
  done
  [ -n "$PGBIN" ] || die "PostgreSQL server binaries missing (apt-get install postgresql)"
  if ! command -v wrk >/dev/null; then
    log "installing wrk (Debian)"
    [ "$(id -u)" = 0 ] || die "wrk is missing and this is not root: apt-get install wrk"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends wrk >/dev/null ||
      { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends wrk >/dev/null; } ||
      die "apt-get install wrk failed"
  fi
  local installed=""
  installed="$(jq -r .version "$HERE/node_modules/@portkey-ai/gateway/package.json" 2>/dev/null || true)"
  if [ "$installed" != "$PORTKEY_VERSION" ]; then
    log "installing @portkey-ai/gateway@$PORTKEY_VERSION (npm ci in bench/peers)"
    (cd "$HERE" && npm ci --no-audit --no-fund >"${TMPDIR:-/tmp}/peers-npm.$$.log" 2>&1) ||
      die "npm ci failed: $(tail -n 5 "${TMPDIR:-/tmp}/peers-npm.$$.log")"
  fi
  [ "$(jq -r .version "$HERE/node_modules/@hono/node-server/package.json")" = 1.13.8 ] ||
    die "@hono/node-server is not 1.13.8: the override in bench/peers/package.json did not apply"
}

build() {
  if [ ! -f "$BUILD/CMakeCache.txt" ]; then
    log "configuring $BUILD"
    local launcher=()
    command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
    nice cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "${launcher[@]}" >/dev/null
  fi
  local targets=("${SERVICES[@]}" dev-broker sbadmin)
  if [ -z "${MOCK_UPSTREAM:-}" ]; then
    [ -f "$ROOT/tools/mock-upstream/CMakeLists.txt" ] ||
      die "no tools/mock-upstream in this tree (and no MOCK_UPSTREAM=binary)"
    targets+=(mock-upstream)
    MOCK_UPSTREAM="$BUILD/tools/mock-upstream/mock-upstream"
  fi
  log "building ${targets[*]} in $BUILD"
  nice ninja -C "$BUILD" "${targets[@]}" >"${TMPDIR:-/tmp}/peers-ninja.$$.log" 2>&1 ||
    die "build failed: $(tail -n 20 "${TMPDIR:-/tmp}/peers-ninja.$$.log")"
  rm -f "${TMPDIR:-/tmp}/peers-ninja.$$.log" "${TMPDIR:-/tmp}/peers-npm.$$.log"
}

# ---------------------------------------------------------------------------
# The three targets

start_mock() {
  # As fast as it goes: no time to the first token, unpaced tokens; the
  # gateways are what is measured.
  start_bg mock "$MOCK_UPSTREAM" --port="$MOCK_PORT" --threads=2 --ttft_ms=0 --tokens_per_second=0 \
    --reply_tokens="$MAX_TOKENS" --models="$MODEL" --log_level=warn
  wait_http mock "http://127.0.0.1:$MOCK_PORT/mock/stats"
}

start_portkey() {
  # --headless: no UI and no request log pushed to it (a server deployment).
  cd "$HERE"
  start_bg portkey node node_modules/@portkey-ai/gateway/build/start-server.js --port="$PORTKEY_PORT" --headless
  cd - >/dev/null
  local i code=""
  for i in $(seq 1 100); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$PORTKEY_PORT/v1/chat/completions" \
      "${PORTKEY_CURL[@]}" -d "$(body false 1)" || true)
    [ "$code" = 200 ] && return 0
    sleep 0.2
  done
  tail -n 20 "$STATE/portkey.log" >&2
  die "Portkey did not answer 200 (last: $code)"
}

tls_flags() {  # service
  if [ "$INTERNAL_TLS" = 1 ]; then
    echo "--tls_ca=$STATE/tls/ca.crt --tls_cert=$STATE/tls/$1.crt --tls_key=$STATE/tls/$1.key"
  else
    echo "--insecure_internal"
  fi
}

flags_for() {
  local svc="$1"
  local common
  common="--grpc_port=$(grpc_port "$svc") --metrics_port=$(metrics_port "$svc") --drain_seconds=1 $(tls_flags "$svc")"
  case "$svc" in
    gateway) echo "$common --http_port=$HTTP_PORT --pg=$PG_URI --redis_port=$REDIS_PORT --kafka_brokers=$KAFKA --safety_address=$(addr safety) --scheduler_address=$(addr tenant-scheduler) --chat_address=$(addr chat) --connection_manager_address=$(addr connection-manager)" ;;
    chat) echo "$common --pg=$PG_URI --redis_port=$REDIS_PORT --kafka_brokers=$KAFKA --scheduler_address=$(addr tenant-scheduler) --safety_address=$(addr safety)" ;;
    connection-manager) echo "$common --redis_port=$REDIS_PORT --chat_address=$(addr chat)" ;;
    safety) echo "$common --pg=$PG_URI --kafka_brokers=$KAFKA --audit_key_file=$STATE/audit.key" ;;
    tenant-scheduler) echo "$common" ;;
    inference-worker)
      echo "$common --scheduler_address=$(addr tenant-scheduler) --kafka_brokers=$KAFKA --worker_id=peers-worker --usage_signing_key_file=$STATE/usage_signing.key --models=$MODEL"
      if [ "$SWITCHBOARD_ENGINE" = openai ]; then
        echo "--engine=openai --upstream_url=http://127.0.0.1:$MOCK_PORT/v1 --upstream_model=$MODEL"
      else
        echo "--tokens_per_second=100000 --max_batch=256"
      fi ;;
    billing) echo "$common --pg=$PG_URI --kafka_brokers=$KAFKA --usage_signing_key_file=$STATE/usage_signing.key" ;;
  esac
}

start_switchboard() {
  mkdir -p "$STATE/pg" && chown postgres:postgres "$STATE/pg"
  runuser -u postgres -- "$PGBIN/initdb" -D "$STATE/pg/data" -U postgres -A trust -E UTF8 --no-locale \
    --no-sync >/dev/null
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$STATE/pg/data" -l "$STATE/pg/pg.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $STATE/pg" start >/dev/null
  psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc "CREATE DATABASE switchboard" >/dev/null

  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
    --pidfile "$STATE/redis.pid" --logfile "$STATE/redis.log" --dir "$STATE" >/dev/null
  local i
  for i in $(seq 1 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

  start_bg dev-broker "$BUILD/tools/dev-broker" --port="$KAFKA_PORT" --bootstrap_file="$STATE/kafka.bootstrap"
  for i in $(seq 1 50); do [ -s "$STATE/kafka.bootstrap" ] && break; sleep 0.1; done
  [ -s "$STATE/kafka.bootstrap" ] || die "dev-broker did not start"

  (umask 077 && openssl rand -hex 32 >"$STATE/usage_signing.key")
  (umask 077 && openssl rand -hex 32 >"$STATE/audit.key")
  if [ "$INTERNAL_TLS" = 1 ]; then "$ROOT/tools/certs" "$STATE/tls" >/dev/null 2>&1 || die "tools/certs failed"; fi

  local sbadmin=("$BUILD/tools/sbadmin" --pg="$PG_URI")
  "${sbadmin[@]}" --migrations_dir="$ROOT/migrations" migrate >/dev/null
  "${sbadmin[@]}" create-org bench "Peers bench" >/dev/null
  KEY="$("${sbadmin[@]}" create-key bench)"
  # Limits far above anything this machine can send: the bench measures the
  # path, not the limiter's refusals (the limiter itself still runs).
  "${sbadmin[@]}" set-limits bench --rpm=1000000000 --input_tpm=1000000000 --output_tpm=1000000000 \
    --concurrency=100000 >/dev/null
  echo "sbadmin --pg=\$PG set-limits bench --rpm=1000000000 --input_tpm=1000000000 --output_tpm=1000000000 --concurrency=100000" >>"$STATE/commands"

  local svc
  for svc in "${START_ORDER[@]}"; do
    # shellcheck disable=SC2046
    start_bg "$svc" "$BUILD/services/$svc/$svc" $(flags_for "$svc")
    wait_http "$svc" "http://127.0.0.1:$(metrics_port "$svc")/healthz"
  done
  SB_CURL=(-H "authorization: Bearer $KEY" -H 'content-type: application/json')
  # Ready when a request goes through the whole path (the worker registers
  # with the scheduler asynchronously).
  local code=""
  for i in $(seq 1 150); do
    code=$(curl -s -o "$STATE/ready.json" -w '%{http_code}' --max-time 5 "http://127.0.0.1:$HTTP_PORT/v1/chat/completions" \
      "${SB_CURL[@]}" -d "$(body false 1)" || true)
    [ "$code" = 200 ] && return 0
    sleep 0.2
  done
  die "Switchboard did not answer 200 (last: $code: $(head -c 300 "$STATE/ready.json")); logs in $STATE (KEEP_STATE=1 keeps them)"
}

# ---------------------------------------------------------------------------
# Load

body() {  # stream max_tokens
  jq -cn --arg m "$MODEL" --arg p "$PROMPT" --argjson s "$1" --argjson n "$2" \
    '{model: $m, max_tokens: $n, stream: $s, messages: [{role: "user", content: $p}]}'
}

TARGETS=(direct portkey switchboard)
declare -A URL=() HEADERS=() CPU_PIDS=() R=()
PORTKEY_CURL=(-H 'content-type: application/json' -H 'x-portkey-provider: openai'
  -H "x-portkey-custom-host: http://127.0.0.1:$MOCK_PORT/v1" -H 'authorization: Bearer unused')

setup_targets() {
  URL[direct]="http://127.0.0.1:$MOCK_PORT/v1/chat/completions"
  HEADERS[direct]=""
  URL[portkey]="http://127.0.0.1:$PORTKEY_PORT/v1/chat/completions"
  # Portkey forwards the bearer token to the upstream, which ignores it.
  HEADERS[portkey]="x-portkey-provider: openai|x-portkey-custom-host: http://127.0.0.1:$MOCK_PORT/v1|authorization: Bearer unused"
  URL[switchboard]="http://127.0.0.1:$HTTP_PORT/v1/chat/completions"
  HEADERS[switchboard]="authorization: Bearer $KEY"
  CPU_PIDS[direct]="${PIDS[mock]}"
  CPU_PIDS[portkey]="${PIDS[portkey]}"
  # Everything a request through Switchboard touches besides the mock: the
  # seven services, Redis (admission) and the broker (usage events).
  [ -n "$SB_PENDING" ] ||
    CPU_PIDS[switchboard]="$(for s in "${SERVICES[@]}" dev-broker; do echo -n "${PIDS[$s]} "; done)$(cat "$STATE/redis.pid")"
}

# A load generator runs in the background and is waited for: bash runs the
# INT/TERM trap only between commands, and `wait` is one it interrupts (a
# foreground wrk would hold the cleanup for the rest of its run).
LOAD_PID=""
run_load() {  # out-file command...
  local out="$1"; shift
  "$@" >"$out" &
  LOAD_PID=$!
  local rc=0
  wait "$LOAD_PID" || rc=$?
  LOAD_PID=""
  return "$rc"
}

WRK_JSON=""
wrk_run() {  # target concurrency seconds -> WRK_JSON (not stdout: no subshell, see run_load)
  local t="$1" c="$2" d="$3"
  BODY="$(body false "$MAX_TOKENS")" WRK_HEADERS="${HEADERS[$t]}"
  export BODY WRK_HEADERS
  run_load "$STATE/wrk.out" wrk -t1 -c"$c" -d"${d}s" --timeout 10s -s "$HERE/chat.lua" "${URL[$t]}" \
    2>>"$STATE/wrk.err" || die "wrk failed on $t: $(tail -n 3 "$STATE/wrk.err")"
  WRK_JSON="$(sed -n 's/^JSON //p' "$STATE/wrk.out")"
  [ -n "$WRK_JSON" ] || die "wrk printed no summary for $t: $(tail -n 3 "$STATE/wrk.out")"
}

run_rps() {  # target concurrency
  local t="$1" c="$2" t0 t1 json
  log "$t c=$c: wrk -t1 -c$c -d${DURATION_S}s"
  # shellcheck disable=SC2086
  t0="$(cpu_ticks ${CPU_PIDS[$t]})"
  local p; T0=(); for p in ${CPU_PIDS[$t]}; do T0+=("$(cpu_ticks "$p")"); done
  wrk_run "$t" "$c" "$DURATION_S"
  json="$WRK_JSON"
  # shellcheck disable=SC2086
  t1="$(cpu_ticks ${CPU_PIDS[$t]})"
  local ok per=() p
  ok="$(jq '.requests - .non2xx' <<<"$json")"
  ok=$((ok + (ok == 0)))
  for p in ${CPU_PIDS[$t]}; do per+=("$(cpu_ticks "$p")"); done
  # CPU per 2xx response: less sensitive to a noisy neighbour than req/s.
  json="$(jq -c --argjson us "$(bc <<<"scale=1; ($t1 - $t0) * 1000000 / $(getconf CLK_TCK) / $ok")" \
    '. + {cpu_us_per_request: $us}' <<<"$json")"
  if [ "$t" = switchboard ]; then
    # Where it goes, process by process (µs per 2xx response).
    local i=0 names=("${SERVICES[@]}" dev-broker redis) by="{}"
    for p in ${CPU_PIDS[$t]}; do
      by="$(jq -c --arg n "${names[$i]}" --argjson us "$(bc <<<"scale=1; (${per[$i]} - ${T0[$i]}) * 1000000 / $(getconf CLK_TCK) / $ok")" \
        '. + {($n): $us}' <<<"$by")"
      i=$((i + 1))
    done
    json="$(jq -c --argjson by "$by" '. + {cpu_us_by_process: $by}' <<<"$json")"
  fi
  R[$t.rps$c]="$json"
  log "  $json"
}

run_ttft() {  # target concurrency
  local t="$1" c="$2" args=() h
  IFS='|' read -r -a hs <<<"${HEADERS[$t]}"
  for h in "${hs[@]}"; do [ -n "$h" ] && args+=(--header="$h"); done
  log "$t streaming c=$c: $TTFT_REQUESTS requests"
  run_load "$STATE/ttft.out" node "$HERE/ttft.mjs" --url="${URL[$t]}" "${args[@]}" --model="$MODEL" \
    --prompt="$PROMPT" --max_tokens="$MAX_TOKENS" --requests="$TTFT_REQUESTS" --warmup=50 \
    --concurrency="$c" 2>>"$STATE/ttft.err" || die "ttft.mjs failed on $t: $(tail -n 3 "$STATE/ttft.err")"
  R[$t.ttft$c]="$(cat "$STATE/ttft.out")"
  log "  ${R[$t.ttft$c]}"
}

# ---------------------------------------------------------------------------
# Report

j() { jq -r "$2" <<<"${R[$1]}"; }
fmt() { printf "%.${2:-0}f" "$1"; }
title() {
  case "$1" in
    direct) echo "mock direct" ;;
    portkey) echo "Portkey $PORTKEY_VERSION" ;;
    switchboard) echo "Switchboard ($SWITCHBOARD_ENGINE engine)" ;;
  esac
}
cell() {  # target fn arg
  if [ "$1" = switchboard ] && [ -n "$SB_PENDING" ]; then echo "pending"; return; fi
  "$2" "$1" "$3"
}
row() {  # title fn arg
  local line="| $1 |" t
  for t in "${TARGETS[@]}"; do line+=" $(cell "$t" "$2" "$3") |"; done
  echo "$line"
}
c_rps() { fmt "$(j "$1.rps$2" .rps)"; }
c_lat() { echo "$(fmt "$(j "$1.rps$2" .p50_ms)" 2) / $(fmt "$(j "$1.rps$2" .p99_ms)" 2)"; }
c_err() { echo "$(j "$1.rps$2" '.non2xx + .socket_errors') of $(j "$1.rps$2" .requests)"; }
c_cpu() { fmt "$(j "$1.rps$2" .cpu_us_per_request)"; }
c_ttft() { echo "$(fmt "$(j "$1.ttft$2" .ttft_p50_ms)" 2) / $(fmt "$(j "$1.ttft$2" .ttft_p99_ms)" 2)"; }
c_added() {
  if [ "$1" = direct ]; then echo "—"; return; fi
  echo "$(fmt "$(bc <<<"$(j "$1.ttft$2" .ttft_p50_ms) - $(j "direct.ttft$2" .ttft_p50_ms)")" 2) /" \
    "$(fmt "$(bc <<<"$(j "$1.ttft$2" .ttft_p99_ms) - $(j "direct.ttft$2" .ttft_p99_ms)")" 2)"
}
c_terr() { echo "$(j "$1.ttft$2" .errors) of $(j "$1.ttft$2" '.requests + .errors')"; }

report() {
  local c t
  echo "### Side by side, $(date -u +%Y-%m-%dT%H:%MZ) ($(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?'))"
  echo
  local head="| figure |" sep="|---|"
  for t in "${TARGETS[@]}"; do head+=" $(title "$t") |"; sep+="---|"; done
  echo "$head"
  echo "$sep"
  for c in $CONCURRENCY; do row "**requests/s**, c=$c" c_rps "$c"; done
  for c in $CONCURRENCY; do row "latency p50 / p99 (ms), c=$c" c_lat "$c"; done
  for c in $CONCURRENCY; do row "errors, c=$c" c_err "$c"; done
  for c in $CONCURRENCY; do row "CPU per request (µs), c=$c" c_cpu "$c"; done
  for c in $TTFT_CONCURRENCY; do row "streaming TTFT p50 / p99 (ms), c=$c" c_ttft "$c"; done
  for c in $TTFT_CONCURRENCY; do row "**TTFT added** p50 / p99 (ms), c=$c" c_added "$c"; done
  for c in $TTFT_CONCURRENCY; do row "streaming errors, c=$c" c_terr "$c"; done
  echo
  echo "- Requests: POST /v1/chat/completions, model \`$MODEL\`, one user message (\"$PROMPT\"),"
  echo "  max_tokens $MAX_TOKENS; the mock answers $MAX_TOKENS tokens, no time to first token, unpaced."
  echo "- requests/s and latency: \`wrk -t1 -cC -d${DURATION_S}s -s bench/peers/chat.lua\` (2xx responses / s;"
  echo "  latency from writing a request to its last byte, kept-alive connections), after ${WARMUP_S} s of warm-up"
  echo "  per target at c=10. CPU per request: user + system time of the target's processes over the"
  echo "  run / 2xx responses (mock direct: the mock; Portkey: its node process; Switchboard: the seven"
  echo "  services, Redis and the dev broker; the mock itself is not counted for the gateways)."
  echo "- TTFT: \`node bench/peers/ttft.mjs\`, $TTFT_REQUESTS streamed requests after 50 discarded, C"
  echo "  sequential loops on their own kept-alive connections; from writing the request to the first"
  echo "  \`data:\` event with non-empty \`choices[0].delta.content\`. \"Added\" is a difference of"
  echo "  percentiles (gateway minus direct), not a percentile of differences."
  if [ "$INTERNAL_TLS" = 1 ]; then
    echo "- Switchboard: the seven services with mutual TLS between them (tools/certs), as deployed."
  else
    echo "- Switchboard: the seven services with --insecure_internal (plaintext gRPC inside)."
  fi
  [ -n "$SB_PENDING" ] && echo "- Switchboard: **pending** ($SB_PENDING)."
  echo "- The mock served, over the whole run (warm-ups and readiness checks included): $(j mock.stats \
    '"\(.requests) requests, \(.completed) completed, \(.failed) failed, \(.aborted) aborted"')."
  echo "- Load: $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min) at the end; at the start: $LOAD_START."
  echo "- Machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs, $(free -g | awk '/^Mem:/ {print $2}') GiB;"
  echo "  $(node --version) for Portkey and ttft.mjs; $(wrk --version 2>&1 | head -n1 | cut -d' ' -f1-2)."
  echo
  echo "Commands (\$STATE is a temp dir, \$KEY a fresh key):"
  echo
  echo '```'
  sed "s|$STATE|\$STATE|g; s|${KEY:-@@nokey@@}|\$KEY|g" "$STATE/commands"
  echo '```'
  echo
  echo "Raw results:"
  echo
  echo '```'
  local k
  for k in $(printf '%s\n' "${!R[@]}" | sort); do echo "$k ${R[$k]}"; done
  echo '```'
}

# ---------------------------------------------------------------------------

LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
install_deps
build

SB_PENDING=""
# (--helpfull exits 1: read it whole before grepping, or pipefail sees that.)
WORKER_HELP="$("$BUILD/services/inference-worker/inference-worker" --helpfull 2>&1 || true)"
if [ "$SWITCHBOARD_ENGINE" = openai ] && ! grep -qE -- '^ +--engine \(' <<<"$WORKER_HELP"; then
  SB_PENDING="this tree's inference-worker has no --engine=openai yet"
  log "Switchboard column pending: $SB_PENDING"
fi

for p in "$MOCK_PORT" "$PORTKEY_PORT" "$HTTP_PORT" "$PG_PORT" "$REDIS_PORT" "$KAFKA_PORT" \
  $(seq "$GRPC_BASE" $((GRPC_BASE + 6))) $(seq "$METRICS_BASE" $((METRICS_BASE + 6))); do
  port_free "$p" || die "port $p is in use"
done
STATE="$(mktemp -d /tmp/sb-peers.XXXXXX)"
chmod 755 "$STATE"
: >"$STATE/commands"
ulimit -n 65536 2>/dev/null || true

log "mock upstream on :$MOCK_PORT"
start_mock
log "Portkey on :$PORTKEY_PORT"
start_portkey
KEY=""
if [ -z "$SB_PENDING" ]; then
  log "Switchboard on :$HTTP_PORT (state in $STATE)"
  start_switchboard
fi
setup_targets
ACTIVE=(direct portkey)
[ -z "$SB_PENDING" ] && ACTIVE+=(switchboard)

for t in "${ACTIVE[@]}"; do
  log "$t: ${WARMUP_S} s warm-up at c=10"
  wrk_run "$t" 10 "$WARMUP_S"
done
for c in $CONCURRENCY; do for t in "${ACTIVE[@]}"; do run_rps "$t" "$c"; done; done
for c in $TTFT_CONCURRENCY; do for t in "${ACTIVE[@]}"; do run_ttft "$t" "$c"; done; done
# Every configuration reached the same mock: its own count of what it served.
R[mock.stats]="$(curl -fsS --max-time 2 "http://127.0.0.1:$MOCK_PORT/mock/stats" |
  jq -c '{requests, completed, failed, aborted}')"

if [ -n "$OUT_FILE" ]; then report | tee "$OUT_FILE"; else report; fi
