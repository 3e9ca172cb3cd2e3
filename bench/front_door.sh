#!/usr/bin/env bash
# The gateway's front door, two builds side by side in one run.
#
#   bench/front_door.sh OLD_BUILD_DIR [NEW_BUILD_DIR|-] [OUT_FILE]
#
# ("-" or "" for NEW runs the old build alone.)
# For each build dir in turn: start a throwaway cluster on loopback from that
# build's binaries (PostgreSQL, Redis, the dev broker, the seven services; own
# temp state dir, ports away from tools/dev's), drive it with
# bench/build/bench/gateway_load, stop it. Then print a Markdown table with
# one column per build, the machine, and the exact commands (also written to
# OUT_FILE when given). Everything started is stopped on exit, failure
# included.
#
# The load generator is built separately (it depends on neither build):
#   cmake -S . -B bench/build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
#   ninja -C bench/build gateway_load
#
# Knobs (environment): GATEWAY_LOAD (the generator binary), RPS_DURATION_S (10),
# TTFT_REQUESTS (2000), STREAMS (5000), STREAMS_OPEN_RATE (400/s),
# STREAMS_TPS (0.5), TURNS (5000), CHAT_TPS (1), CHAT_CONCURRENCY (50).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
if [ $# -lt 1 ] || [ $# -gt 3 ]; then
  echo "usage: bench/front_door.sh OLD_BUILD_DIR [NEW_BUILD_DIR|-] [OUT_FILE]" >&2
  exit 2
fi
OLD_BUILD="$(cd "$1" && pwd)"
NEW_BUILD=""
if [ -n "${2:-}" ] && [ "$2" != - ]; then NEW_BUILD="$(cd "$2" && pwd)"; fi
OUT_FILE="${3:-}"
LOAD="${GATEWAY_LOAD:-$ROOT/bench/build/bench/gateway_load}"
PGBIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)"

RPS_DURATION_S="${RPS_DURATION_S:-10}"
TTFT_REQUESTS="${TTFT_REQUESTS:-2000}"
STREAMS="${STREAMS:-5000}"
# The baseline engine admits at most 1024 waiting sequences and moves them into
# the batch only at its next decode step (every 1/tokens_per_second s), so the
# opening rate must stay under 1024 * STREAMS_TPS per second. At 0.5 token/s
# the shortest possible reply (12 tokens) still outlives the opening and hold.
STREAMS_OPEN_RATE="${STREAMS_OPEN_RATE:-400}"
STREAMS_TPS="${STREAMS_TPS:-0.5}"
STREAMS_HOLD_S=5
TURNS="${TURNS:-5000}"
CHAT_TPS="${CHAT_TPS:-1}"
CHAT_CONCURRENCY="${CHAT_CONCURRENCY:-50}"
CHAT_TAIL_S=5  # keep sampling after the last send: replies are still running

# Ports: clear of tools/dev (8080, 5005x, 910x, 55432, 56379, 19092).
HTTP_PORT=18080
GRPC_BASE=51050
METRICS_BASE=9200
PG_PORT=55532
REDIS_PORT=56479
KAFKA_PORT=19192
SERVICES=(gateway chat connection-manager safety tenant-scheduler inference-worker billing)
START_ORDER=(safety tenant-scheduler inference-worker billing chat connection-manager gateway)
FAST_WORKER=(--tokens_per_second=100000 --max_num_seqs=256)
STREAMS_WORKER=(--tokens_per_second="$STREAMS_TPS" --max_num_seqs=$((STREAMS + 1000)))
CHAT_WORKER=(--tokens_per_second="$CHAT_TPS" --max_num_seqs=$((TURNS + 1000)))

log() { printf '[front_door %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

service_index() { local i; for i in "${!SERVICES[@]}"; do [ "${SERVICES[$i]}" != "$1" ] || { echo "$i"; return 0; }; done; return 1; }
grpc_port() { echo $((GRPC_BASE + $(service_index "$1"))); }
metrics_port() { echo $((METRICS_BASE + $(service_index "$1"))); }
addr() { echo "127.0.0.1:$(grpc_port "$1")"; }
PG_URI="postgresql://postgres@127.0.0.1:$PG_PORT/switchboard"
KAFKA="127.0.0.1:$KAFKA_PORT"

# 5000 client sockets in the generator and as many in the gateway. The hard
# limit caps this in containers without CAP_SYS_RESOURCE.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -gt $((STREAMS + 1000)) ] ||
  die "ulimit -n is $(ulimit -n): too low for $STREAMS streams"

# ---------------------------------------------------------------------------
# One cluster at a time; this state belongs to it.

STATE=""
BUILD=""
LOAD_PID=""
declare -A PIDS=()

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

cluster_down() {
  [ -n "$LOAD_PID" ] && stop_pid "$LOAD_PID"
  LOAD_PID=""
  local i
  for ((i = ${#START_ORDER[@]} - 1; i >= 0; i--)); do
    local svc="${START_ORDER[$i]}"
    if [ -n "${PIDS[$svc]:-}" ]; then stop_pid "${PIDS[$svc]}"; unset "PIDS[$svc]"; fi
  done
  if [ -n "${PIDS[dev-broker]:-}" ]; then stop_pid "${PIDS[dev-broker]}"; unset "PIDS[dev-broker]"; fi
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
trap cluster_down EXIT
trap 'exit 130' INT TERM

port_free() { ! ss -Htln "sport = :$1" | grep -q .; }

binary() { echo "$BUILD/services/$1/$1"; }

# Every flag passed must be one that the binary declares: the two builds get
# the same flags, and a flag only the new build knows would fail the old one.
check_flags() {  # binary flag...
  local bin="$1" help flag name; shift
  help="$("$bin" --helpfull 2>&1 || true)"
  for flag in "$@"; do
    name="${flag%%=*}"
    grep -qE -- "^ +$name \(" <<<"$help" || die "$bin does not accept $name"
  done
}

flags_for() {
  local svc="$1"
  local common=(--grpc_port="$(grpc_port "$svc")" --metrics_port="$(metrics_port "$svc")" --drain_seconds=2)
  case "$svc" in
    gateway) echo "${common[*]} --http_port=$HTTP_PORT --pg=$PG_URI --safety_address=$(addr safety) --scheduler_address=$(addr tenant-scheduler) --chat_address=$(addr chat) --connection_manager_address=$(addr connection-manager)" ;;
    chat) echo "${common[*]} --pg=$PG_URI --redis_port=$REDIS_PORT --kafka_brokers=$KAFKA --scheduler_address=$(addr tenant-scheduler) --safety_address=$(addr safety)" ;;
    connection-manager) echo "${common[*]} --redis_port=$REDIS_PORT --chat_address=$(addr chat)" ;;
    safety | tenant-scheduler) echo "${common[*]}" ;;
    # The same id across restarts: the new process takes over the scheduler's entry.
    inference-worker) echo "${common[*]} --scheduler_address=$(addr tenant-scheduler) --kafka_brokers=$KAFKA --worker_id=bench-worker" ;;
    billing) echo "${common[*]} --pg=$PG_URI --kafka_brokers=$KAFKA" ;;
  esac
}

wait_healthz() {  # service
  local i
  for i in $(seq 1 150); do
    curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$(metrics_port "$1")/healthz" 2>/dev/null && return 0
    alive "${PIDS[$1]}" || break
    sleep 0.1
  done
  tail -n 20 "$STATE/$1.log" >&2 || true
  die "$1 did not become healthy"
}

start_service() {  # service extra-flag...
  local svc="$1"; shift
  # shellcheck disable=SC2207
  local flags=($(flags_for "$svc") "$@")
  # Builds since usage signing require the key; older ones do not know the flag.
  case "$svc" in inference-worker | billing)
    if "$(binary "$svc")" --helpfull 2>&1 | grep -qE -- '^ +--usage_signing_key_file \('; then
      flags+=(--usage_signing_key_file="$STATE/usage_signing.key")
    fi ;;
  esac
  # Builds since the safety audit trail: safety and the gateway publish to
  # Kafka, and safety then requires its audit key; older ones know neither flag.
  case "$svc" in safety)
    # Builds since per-org policies read them from PostgreSQL (and wait for it).
    if "$(binary "$svc")" --helpfull 2>&1 | grep -qE -- '^ +--pg \('; then
      flags+=(--pg="$PG_URI")
    fi
    if "$(binary "$svc")" --helpfull 2>&1 | grep -qE -- '^ +--audit_key_file \('; then
      flags+=(--kafka_brokers="$KAFKA" --audit_key_file="$STATE/audit.key")
    fi ;;
  gateway)
    if "$(binary "$svc")" --helpfull 2>&1 | grep -qE -- '^ +--kafka_brokers \('; then
      flags+=(--kafka_brokers="$KAFKA")
    fi ;;
  esac
  check_flags "$(binary "$svc")" "${flags[@]}"
  echo "$(binary "$svc") ${flags[*]}" >>"$STATE/commands"
  nohup "$(binary "$svc")" "${flags[@]}" >>"$STATE/$svc.log" 2>&1 &
  PIDS[$svc]=$!
  wait_healthz "$svc"
}

# Ready when a 1-token request goes through the whole path (the worker
# registers with the scheduler asynchronously).
wait_ready() {
  local i code
  for i in $(seq 1 150); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$HTTP_PORT/v1/messages" \
      -H "x-api-key: $KEY" -H 'anthropic-version: 2023-06-01' -H 'content-type: application/json' \
      -d '{"model":"sim-small","max_tokens":1,"messages":[{"role":"user","content":"ready?"}]}' || true)
    [ "$code" = 200 ] && return 0
    sleep 0.2
  done
  die "the gateway did not answer 200 (last: $code); logs in $STATE"
}

restart_worker() {  # worker flags...
  stop_pid "${PIDS[inference-worker]}"
  start_service inference-worker "$@"
  wait_ready
}

cluster_up() {  # build dir
  BUILD="$1"
  local p
  for p in "$HTTP_PORT" "$PG_PORT" "$REDIS_PORT" "$KAFKA_PORT" $(seq "$GRPC_BASE" $((GRPC_BASE + 6))) \
    $(seq "$METRICS_BASE" $((METRICS_BASE + 6))); do
    port_free "$p" || die "port $p is in use"
  done
  STATE="$(mktemp -d /tmp/sb-front-door.XXXXXX)"
  chmod 755 "$STATE"
  : >"$STATE/commands"
  (umask 077 && openssl rand -hex 32 >"$STATE/usage_signing.key")
  (umask 077 && openssl rand -hex 32 >"$STATE/audit.key")
  log "cluster from $BUILD in $STATE"

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

  nohup "$BUILD/tools/dev-broker" --port="$KAFKA_PORT" --bootstrap_file="$STATE/kafka.bootstrap" \
    >>"$STATE/dev-broker.log" 2>&1 &
  PIDS[dev-broker]=$!
  for i in $(seq 1 50); do [ -s "$STATE/kafka.bootstrap" ] && break; sleep 0.1; done
  [ -s "$STATE/kafka.bootstrap" ] || die "dev-broker did not start"

  # The migrations of the tree the build came from.
  local src
  src="$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$BUILD/CMakeCache.txt")"
  "$BUILD/tools/sbadmin" --pg="$PG_URI" --migrations_dir="$src/migrations" migrate >/dev/null
  "$BUILD/tools/sbadmin" --pg="$PG_URI" create-org bench "Front-door bench" >/dev/null
  KEY="$("$BUILD/tools/sbadmin" --pg="$PG_URI" create-key bench)"

  local svc
  for svc in "${START_ORDER[@]}"; do
    if [ "$svc" = inference-worker ]; then start_service "$svc" "${FAST_WORKER[@]}"; else start_service "$svc"; fi
  done
  wait_ready
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
# CPU time (user + system) a process has used, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# Sum of a Prometheus counter family's series (0 when absent).
metric_sum() {  # port name
  curl -fsS --max-time 1 "http://127.0.0.1:$1/metrics" 2>/dev/null |
    awk -v n="$2" '$1 == n || index($1, n "{") == 1 {s += $NF} END {printf "%d\n", s}'
}
metric_present() {  # port name
  curl -fsS --max-time 1 "http://127.0.0.1:$1/metrics" 2>/dev/null | grep -q "^# TYPE $2 "
}

# ---------------------------------------------------------------------------
# Results: R[LABEL.key] = value

declare -A R=()
LOAD_COMMON=(--host=127.0.0.1 --port="$HTTP_PORT")

run_load() {  # label key args... ; the JSON line lands in R[label.key]
  local label="$1" key="$2"; shift 2
  echo "$LOAD ${LOAD_COMMON[*]} --api_key=\$KEY $*" >>"$STATE/commands"
  log "$label $key: gateway_load $*"
  R[$label.$key]="$("$LOAD" "${LOAD_COMMON[@]}" --api_key="$KEY" "$@" 2>>"$STATE/load.err")" ||
    die "gateway_load failed: $(tail -n 5 "$STATE/load.err")"
  log "  ${R[$label.$key]}"
}

median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }

run_streams() {  # label
  local label="$1" gw="${PIDS[gateway]}" ready="$STATE/streams.ready" i
  local before after
  before="$(rss_kib "$gw")"
  local args=(--mode=streams --streams="$STREAMS" --open_rate="$STREAMS_OPEN_RATE" --hold_s="$STREAMS_HOLD_S"
    --max_tokens=4096 --threads=2 --ready_file="$ready")
  echo "$LOAD ${LOAD_COMMON[*]} --api_key=\$KEY ${args[*]}" >>"$STATE/commands"
  log "$label streams: gateway_load ${args[*]}"
  "$LOAD" "${LOAD_COMMON[@]}" --api_key="$KEY" "${args[@]}" >"$STATE/streams.json" 2>>"$STATE/load.err" &
  LOAD_PID=$!
  while [ ! -f "$ready" ] && alive "$LOAD_PID"; do sleep 0.05; done
  [ -f "$ready" ] || die "gateway_load streams ended early: $(tail -n 5 "$STATE/load.err")"
  # Every stream is open now (or failed): the median of a second's samples.
  after="$(for i in 1 2 3 4 5; do sleep 0.2; rss_kib "$gw"; done | median)"
  wait "$LOAD_PID" || die "gateway_load streams failed: $(tail -n 5 "$STATE/load.err")"
  LOAD_PID=""
  R[$label.streams]="$(cat "$STATE/streams.json")"
  R[$label.streams_rss_before]="$before"
  R[$label.streams_rss_open]="$after"
  log "  ${R[$label.streams]} gateway RSS $before -> $after KiB"
}

run_chat_turns() {  # label
  local label="$1" chat="${PIDS[chat]}" mport
  mport="$(metrics_port chat)"
  local ready="$STATE/chat.ready" progress="$STATE/chat.progress" samples="$STATE/chat.samples"
  local args=(--mode=chat_turns --turns="$TURNS" --turns_per_conversation=10 --concurrency="$CHAT_CONCURRENCY"
    --max_tokens=64 --settle_s=2 --ready_file="$ready" --progress_file="$progress")
  echo "$LOAD ${LOAD_COMMON[*]} --api_key=\$KEY ${args[*]}" >>"$STATE/commands"
  log "$label chat_turns: gateway_load ${args[*]}"
  "$LOAD" "${LOAD_COMMON[@]}" --api_key="$KEY" "${args[@]}" >"$STATE/chat.json" 2>>"$STATE/load.err" &
  LOAD_PID=$!
  while [ ! -f "$ready" ] && alive "$LOAD_PID"; do sleep 0.05; done
  [ -f "$ready" ] || die "gateway_load chat_turns ended early: $(tail -n 5 "$STATE/load.err")"
  # The conversations exist and nothing is being sent (settle_s): idle.
  sleep 1
  local idle ended0 counted=1
  idle="$(rss_kib "$chat")"
  ended0="$(metric_sum "$mport" sb_chat_turns_total)"
  # Every 100 ms: RSS, turns accepted (the generator's count), turns ended
  # (chat's counter). In flight = accepted - ended.
  : >"$samples"
  local tail_until=""
  while :; do
    local accepted=0
    [ -s "$progress" ] && accepted="$(cat "$progress")"
    echo "$(rss_kib "$chat") $accepted $(($(metric_sum "$mport" sb_chat_turns_total) - ended0))" >>"$samples"
    if [ -z "$tail_until" ] && ! alive "$LOAD_PID"; then
      tail_until=$(($(date +%s%N) + CHAT_TAIL_S * 1000000000))
    fi
    [ -n "$tail_until" ] && [ "$(date +%s%N)" -ge "$tail_until" ] && break
    sleep 0.1
  done
  wait "$LOAD_PID" || die "gateway_load chat_turns failed: $(tail -n 5 "$STATE/load.err")"
  LOAD_PID=""
  # The counter appears with the first turn that ends; absent, no turn ended
  # (or the build renamed it: then in flight is only an upper bound).
  metric_present "$mport" sb_chat_turns_total || counted=0
  R[$label.chat]="$(cat "$STATE/chat.json")"
  # The peak sample, and the turns in flight at that moment.
  local peak accepted ended
  read -r peak accepted ended < <(sort -n -k1,1 "$samples" | tail -n1)
  R[$label.chat_rss_idle]="$idle"
  R[$label.chat_rss_peak]="$peak"
  R[$label.chat_in_flight]=$((accepted - ended))
  R[$label.chat_counted]="$counted"
  R[$label.chat_max_in_flight]="$(awk '{f = $2 - $3; if (f > m) m = f} END {print m + 0}' "$samples")"
  R[$label.chat_failed]="$(curl -fsS --max-time 1 "http://127.0.0.1:$mport/metrics" |
    awk '/^sb_chat_turns_total\{.*outcome="failed"/ {s += $NF} END {printf "%d\n", s}')"
  log "  ${R[$label.chat]} chat RSS $idle -> $peak KiB, $((accepted - ended)) turns in flight at the peak"
}

j() { jq -r "$2" <<<"${R[$1]}"; }  # key filter
fmt() { printf "%.${2:-0}f" "$1"; }
calc() { bc <<<"scale=3; $1"; }
mib() { fmt "$(calc "$1 / 1024")" 1; }

run_build() {  # label build-dir
  local label="$1"
  cluster_up "$2"
  local c
  local gw_port ticks0 responses0
  gw_port="$(metrics_port gateway)"
  for c in 1 10 50; do
    ticks0="$(cpu_ticks "${PIDS[gateway]}")"
    responses0="$(metric_sum "$gw_port" sb_gateway_responses_total)"
    run_load "$label" "rps$c" --mode=rps --concurrency="$c" --duration_s="$RPS_DURATION_S"
    # The gateway's CPU per response over the whole run (warm-up included):
    # less sensitive to a noisy neighbour than requests/s.
    R[$label.rps$c.cpu_us]="$(calc "($(cpu_ticks "${PIDS[gateway]}") - $ticks0) * 1000000 / $(getconf CLK_TCK) / ($(metric_sum "$gw_port" sb_gateway_responses_total) - $responses0)")"
  done
  for c in 1 20; do
    run_load "$label" "ttft$c" --mode=ttft --concurrency="$c" --requests="$TTFT_REQUESTS" --max_tokens=8
    run_load "$label" "direct$c" --mode=ttft_direct --worker="$(addr inference-worker)" --concurrency="$c" \
      --requests="$TTFT_REQUESTS" --max_tokens=8
  done
  restart_worker "${STREAMS_WORKER[@]}"
  run_streams "$label"
  restart_worker "${CHAT_WORKER[@]}"
  run_chat_turns "$label"
  sed "s|$STATE|\$STATE|g; s|$KEY|\$KEY|g" "$STATE/commands" >"/tmp/front_door.$label.commands.$$"
  cluster_down
}


# ---------------------------------------------------------------------------
# Report: one row per figure; a cell function takes the label (and an arg).

row() {  # title fn [arg]
  local title="$1" fn="$2" arg="${3:-}" line label
  line="| $title |"
  for label in OLD NEW; do
    if [[ " ${LABELS[*]} " == *" $label "* ]]; then line+=" $($fn "$label" "$arg") |"; else line+=" — |"; fi
  done
  echo "$line"
}
rps() { fmt "$(j "$1.rps$2" .rps)"; }
rps_latency() { echo "$(j "$1.rps$2" .p50_ms) / $(j "$1.rps$2" .p90_ms) / $(j "$1.rps$2" .p99_ms)"; }
rps_errors() { echo "$(j "$1.rps$2" .errors) of $(j "$1.rps$2" '.requests + .errors')"; }
rps_cpu() { fmt "${R[$1.rps$2.cpu_us]}"; }
ttft_gateway() { echo "$(j "$1.ttft$2" .ttft_p50_ms) / $(j "$1.ttft$2" .ttft_p99_ms)"; }
ttft_direct() { echo "$(j "$1.direct$2" .ttft_p50_ms) / $(j "$1.direct$2" .ttft_p99_ms)"; }
ttft_added() {
  echo "$(fmt "$(calc "$(j "$1.ttft$2" .ttft_p50_ms) - $(j "$1.direct$2" .ttft_p50_ms)")" 2) /" \
    "$(fmt "$(calc "$(j "$1.ttft$2" .ttft_p99_ms) - $(j "$1.direct$2" .ttft_p99_ms)")" 2)"
}
ttft_errors() { echo "$(j "$1.ttft$2" .errors) / $(j "$1.direct$2" .errors)"; }
streams_open() {
  echo "$(j "$1.streams" .open_at_ready) ($(j "$1.streams" .failed) failed) in $(j "$1.streams" .open_s) s"
}
streams_rss() { echo "$(mib "${R[$1.streams_rss_before]}") → $(mib "${R[$1.streams_rss_open]}")"; }
streams_kib() {
  fmt "$(calc "(${R[$1.streams_rss_open]} - ${R[$1.streams_rss_before]}) / $(j "$1.streams" .open_at_ready)")" 1
}
streams_held() { j "$1.streams" .open_after_hold; }
chat_rate() { echo "$(fmt "$(j "$1.chat" .sends_per_s)") ($(j "$1.chat" .errors) errors)"; }
chat_latency() { echo "$(j "$1.chat" .p50_ms) / $(j "$1.chat" .p99_ms)"; }
chat_rss() { echo "$(mib "${R[$1.chat_rss_idle]}") → $(mib "${R[$1.chat_rss_peak]}")"; }
chat_in_flight() {
  local s="${R[$1.chat_in_flight]} (max ${R[$1.chat_max_in_flight]})"
  [ "${R[$1.chat_counted]}" = 1 ] || s+=" (no sb_chat_turns_total yet: 0 ended assumed)"
  echo "$s"
}
chat_kib() {
  if [ "${R[$1.chat_in_flight]}" -gt 0 ]; then
    fmt "$(calc "(${R[$1.chat_rss_peak]} - ${R[$1.chat_rss_idle]}) / ${R[$1.chat_in_flight]}")" 1
  else echo "n/a"; fi
}
chat_failed() { echo "${R[$1.chat_failed]} of $(j "$1.chat" .accepted)"; }
source_of() { git -C "$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$1/CMakeCache.txt")" describe --always --dirty 2>/dev/null || echo '?'; }

report() {
  echo "## Front door, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "- OLD: \`$OLD_BUILD\` ($(source_of "$OLD_BUILD"))"
  if [ -n "$NEW_BUILD" ]; then
    echo "- NEW: \`$NEW_BUILD\` ($(source_of "$NEW_BUILD"))"
  fi
  echo
  echo "| figure | OLD | NEW |"
  echo "|---|---|---|"
  for c in 1 10 50; do
    row "1-token requests/s, c=$c" rps "$c"
    row "latency p50 / p90 / p99 (ms), c=$c" rps_latency "$c"
    row "errors, c=$c" rps_errors "$c"
    row "gateway CPU per request (µs), c=$c" rps_cpu "$c"
  done
  for c in 1 20; do
    row "TTFT via gateway p50 / p99 (ms), c=$c" ttft_gateway "$c"
    row "TTFT direct to worker p50 / p99 (ms), c=$c" ttft_direct "$c"
    row "**TTFT added by the platform** (p50 diff / p99 diff, ms), c=$c" ttft_added "$c"
    row "errors gateway / direct, c=$c" ttft_errors "$c"
  done
  row "SSE streams open (of $STREAMS)" streams_open
  row "gateway RSS idle → all open (MiB)" streams_rss
  row "**gateway memory per SSE stream (KiB)**" streams_kib
  row "streams still open after the ${STREAMS_HOLD_S} s hold" streams_held
  row "chat sends/s ($TURNS turns, c=$CHAT_CONCURRENCY)" chat_rate
  row "chat send latency p50 / p99 (ms)" chat_latency
  row "chat RSS idle → peak (MiB)" chat_rss
  row "chat turns in flight at the peak" chat_in_flight
  row "**chat memory per turn in flight (KiB)**" chat_kib
  row "chat turns failed in the background" chat_failed
  cat <<NOTES

How the figures are computed (percentiles: nearest rank over all samples of a run):
- requests/s: 200 responses completed wholly inside the ${RPS_DURATION_S} s window that follows a 1 s
  warm-up, divided by ${RPS_DURATION_S}; latency is write-to-last-byte per request, keep-alive connections.
- TTFT: via the gateway, from writing the request to reading the first content_block_delta; direct,
  from starting the worker's Generate call to the first Token event (same prompt, max_tokens 8,
  ${TTFT_REQUESTS} requests after 20 discarded). "Added" is a difference of percentiles, not a
  percentile of differences.
- memory per SSE stream: (gateway VmRSS, median of 5 samples in the second after every stream got
  its first event) minus (VmRSS just before opening), divided by the streams open. The streams
  open at ${STREAMS_OPEN_RATE}/s (the baseline worker's waiting queue) and include the upstream gRPC stream.
- memory per chat turn: chat VmRSS sampled every 100 ms from the idle point (conversations created)
  to ${CHAT_TAIL_S} s after the last send; (peak - idle) / turns in flight at the peak sample, where in flight =
  sends answered 202 - turns ended (chat's sb_chat_turns_total, complete + failed). A turn that the
  chat service refuses (full turn pool) ends at once as failed and is not in flight.
NOTES
  echo
  echo "Machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs, $(free -g | awk '/^Mem:/ {print $2}') GiB," \
    "kernel $(uname -r); load generator on the same machine; fds $(ulimit -n)."
  echo
  echo "Workers: rps/ttft \`${FAST_WORKER[*]}\`; streams \`${STREAMS_WORKER[*]}\`;" \
    "chat \`${CHAT_WORKER[*]}\` (restarted between phases)."
  local label
  for label in "${LABELS[@]}"; do
    echo
    echo "Commands ($label; \$STATE is a temp dir, \$KEY a fresh key):"
    echo
    echo '```'
    cat "/tmp/front_door.$label.commands.$$"
    echo '```'
    rm -f "/tmp/front_door.$label.commands.$$"
  done
  echo
  echo "Raw results:"
  echo
  echo '```'
  local k
  for k in $(printf '%s\n' "${!R[@]}" | sort); do echo "$k ${R[$k]}"; done
  echo '```'
}

[ -x "$LOAD" ] || die "no load generator at $LOAD; build it: ninja -C bench/build gateway_load"
LABELS=(OLD)
run_build OLD "$OLD_BUILD"
if [ -n "$NEW_BUILD" ]; then
  LABELS+=(NEW)
  run_build NEW "$NEW_BUILD"
fi

if [ -n "$OUT_FILE" ]; then report | tee "$OUT_FILE"; else report; fi
