#!/usr/bin/env bash
# Many open streams (issue 14 part 4): RAGQ_STREAMS_N concurrent SSE streams on ONE api process,
# each a slow answer (first token after RAGQ_STREAMS_TTFT_MS, then RAGQ_STREAMS_TOKENS tokens
# RAGQ_STREAMS_GAP_MS apart: one every 3 s for 90 s by default — at one a second the whole
# co-located system, not the api, saturates a 2-core machine at ~20,000 streams: see
# docs/BENCHMARKS.md), held until every answer has ended. Reports the api's memory per open stream, its CPU per relayed event, the relay latency
# at that count and how many streams ended with their terminal event. docs/BENCHMARKS.md
# ("Many open streams") has the method and the results.
#
# It starts its own simulators, api and workers on their own ports, database, queue and channel
# prefix, so it never meets scripts/up.sh's system (or another benchmark's), and stops all of
# them on exit. PostgreSQL, Redis and RabbitMQ are shared (started if absent, never restarted).
#
# Environment (defaults in brackets):
#   RAGQ_STREAMS_N [20000]          streams to hold; capped to what the api's open-files limit
#                                   allows (one fd per client socket, see below)
#   RAGQ_STREAMS_TTFT_MS [1000], RAGQ_STREAMS_TOKENS [30], RAGQ_STREAMS_GAP_MS [3000]
#   RAGQ_STREAMS_RAMP_S [40]        the streams open spread evenly over this time (keep it well
#                                   below the answer's length: all N are open only after it)
#   RAGQ_STREAMS_TYPE [openai-stream]  loadgen --test-type (stream = RAGFlow SSE, one session
#                                   per stream and one saved turn each)
#   RAGQ_STREAMS_WORKERS [4], RAGQ_STREAMS_SIMS [2], RAGQ_STREAMS_LOADGENS [2]
#   RAGQ_STREAMS_PROBE [100]        relay-probe streams run while all N are open (0: none)
#   RAGQ_STREAMS_API_PORT [9480], RAGQ_STREAMS_SIM_PORT [9490] (sims count up from it),
#   RAGQ_STREAMS_HEALTH_PORT [9500] (workers' /healthz count up from it + 1)
#   RAGQ_STREAMS_DB [ragq_streams], RAGQ_STREAMS_PREFIX [ragqstreams] (queues and channels)
#   RAGQ_STREAMS_OUT [.ragq/bench-streams]  results: <stamp>-n<N>.json, logs and samples beside
#   RAGQ_BIN_DIR                    prebuilt binaries (default: build them in release)
#   RAGQ_STREAMS_API_WRAP           a command the api runs under, e.g. "heaptrack -o PATH"
#                                   (memory figures are then the wrapper's, not the api's)
#
# One process can hold at most `ulimit -Hn` files (20,000 on the benchmark machine, and it
# cannot be raised there): the api needs one per client socket plus its own connections, so the
# script measures at min(N, hard limit - 300 - probe streams) and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source scripts/lib/services.sh
ensure_cargo
ensure_services

REQUESTED=${RAGQ_STREAMS_N:-20000}
TTFT_MS=${RAGQ_STREAMS_TTFT_MS:-1000}
TOKENS=${RAGQ_STREAMS_TOKENS:-30}
GAP_MS=${RAGQ_STREAMS_GAP_MS:-3000}
RAMP_S=${RAGQ_STREAMS_RAMP_S:-40}
TYPE=${RAGQ_STREAMS_TYPE:-openai-stream}
WORKERS=${RAGQ_STREAMS_WORKERS:-4}
SIMS=${RAGQ_STREAMS_SIMS:-2}
LOADGENS=${RAGQ_STREAMS_LOADGENS:-2}
PROBE=${RAGQ_STREAMS_PROBE:-100}
API_PORT=${RAGQ_STREAMS_API_PORT:-9480}
SIM_PORT=${RAGQ_STREAMS_SIM_PORT:-9490}
HEALTH_PORT=${RAGQ_STREAMS_HEALTH_PORT:-9500}
DB_NAME=${RAGQ_STREAMS_DB:-ragq_streams}
PREFIX=${RAGQ_STREAMS_PREFIX:-ragqstreams}
OUT=${RAGQ_STREAMS_OUT:-$ROOT/.ragq/bench-streams}

# This benchmark's ports must be free (another run of it, or anything else, would mix in).
for port in "$API_PORT" $(seq "$SIM_PORT" $((SIM_PORT + SIMS - 1))) $(seq $((HEALTH_PORT + 1)) $((HEALTH_PORT + WORKERS))); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    log "port $port is in use (another bench-streams.sh run?); set RAGQ_STREAMS_*_PORT"
    exit 1
  fi
done

# Every process started below inherits the hard open-files limit as its soft limit.
HARD=$(ulimit -Hn)
[ "$HARD" = unlimited ] && HARD=1048576
ulimit -n "$HARD"
FIT=$((HARD - 300 - PROBE))
N=$REQUESTED
if [ "$N" -gt "$FIT" ]; then
  N=$((FIT / 100 * 100))
  log "RAGQ_STREAMS_N=$REQUESTED does not fit one api process (open-files limit $HARD, which this machine cannot raise): holding $N streams"
fi
PER_LOADGEN=$(((N + LOADGENS - 1) / LOADGENS))
N=$((PER_LOADGEN * LOADGENS))

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RUN=$OUT/$STAMP-n$N
mkdir -p "$RUN"
export RAGQ_DATABASE_URL=postgres://postgres@127.0.0.1:5432/$DB_NAME
export RAGQ_QUEUE_PREFIX=$PREFIX RAGQ_CHANNEL_PREFIX=$PREFIX
# Idle queues of this benchmark disappear 10 minutes after its last run.
export RAGQ_QUEUE_EXPIRES_MS=600000
[ -s "$OUT/secret.key" ] || (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$OUT/secret.key")
RAGQ_SECRET_KEY=$(cat "$OUT/secret.key")
export RAGQ_SECRET_KEY

if [ -n "${RAGQ_BIN_DIR:-}" ]; then
  BIN=$RAGQ_BIN_DIR
else
  log "building release binaries"
  cargo build --release --locked -p ragq-api -p ragq-worker -p ragq-cli -p ragq-sim -p ragq-loadgen -p ragq-probe 2>&1 | tail -n 2 >&2
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
fi

PIDS=()
SAMPLER=
stop_all() {
  local rc=$?
  [ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null || true
  # Loadgens and the probe first, then the api, workers and simulators.
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    # Under RAGQ_STREAMS_API_WRAP the api is the wrapper's child, which may not pass the
    # signal on (the wrapper's other children, e.g. heaptrack's writer, finish by themselves).
    pkill -TERM -P "${PIDS[i]}" -x ragq-api 2>/dev/null || true
    kill "${PIDS[i]}" 2>/dev/null || true
  done
  for _ in $(seq 1 100); do
    local alive=0
    for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.2
  done
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  exit $rc
}
trap stop_all EXIT
trap 'exit 130' INT TERM

start() { # start NAME COMMAND... (stdout and stderr to $RUN/NAME.log)
  local name=$1; shift
  "$@" >"$RUN/$name.log" 2>&1 &
  PIDS+=($!)
}

psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'" | grep -q 1 ||
  psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE $DB_NAME"
"$BIN/ragq" migrate >/dev/null

for i in $(seq 0 $((SIMS - 1))); do
  start "sim-$i" "$BIN/ragq-sim" --addr "127.0.0.1:$((SIM_PORT + i))"
done
for i in $(seq 0 $((SIMS - 1))); do wait_for 15 simulator curl -sf "http://127.0.0.1:$((SIM_PORT + i))/healthz"; done

API_URL=http://127.0.0.1:$API_PORT
# Admission must not refuse any of the N: open streams and queue depth above them.
RAGQ_API_ADDR=127.0.0.1:$API_PORT RAGQ_INSTANCE=streams-api RAGQ_DB_MAX_CONNECTIONS=8 \
  RAGQ_MAX_OPEN_STREAMS=$((N + PROBE + 1000)) RAGQ_MAX_QUEUE_DEPTH=$((N + 1000)) \
  RAGQ_JOB_DEADLINE_S=600 RAGQ_SHUTDOWN_GRACE_S=2 \
  start api ${RAGQ_STREAMS_API_WRAP:-} "$BIN/ragq-api"
API_PID=${PIDS[-1]}
# Each worker runs its share of the N generations at once: one upstream connection each.
PREFETCH=$((N / WORKERS + 200))
[ "$PREFETCH" -gt 65535 ] && PREFETCH=65535
for i in $(seq 1 "$WORKERS"); do
  RAGQ_WORKER_ID=streams-worker-$i RAGQ_WORKER_HEALTH_ADDR=127.0.0.1:$((HEALTH_PORT + i)) \
    RAGQ_PREFETCH=$PREFETCH RAGQ_DB_MAX_CONNECTIONS=4 \
    RAGQ_LLM_FIRST_TOKEN_TIMEOUT_MS=$((TTFT_MS + 60000)) RAGQ_LLM_IDLE_TIMEOUT_MS=$((GAP_MS + 60000)) \
    start "worker-$i" "$BIN/ragq-worker"
done
wait_for 30 api curl -sf "$API_URL/readyz"
for i in $(seq 1 "$WORKERS"); do wait_for 30 worker curl -sf "http://127.0.0.1:$((HEALTH_PORT + i))/readyz"; done

# A tenant, one slow chat model and one chat per simulator (no datasets: the answer is the
# model's), and a fast chat for the warm-up.
eval "$("$BIN/ragq" create-tenant --name "streams-$STAMP")"
SLOW_MODEL="sim:ttft=$TTFT_MS:tokens=$TOKENS:gap=$GAP_MS"
CHATS=()
for i in $(seq 0 $((SIMS - 1))); do
  "$BIN/ragq" add-model --tenant "$RAGQ_TENANT_ID" --kind chat --name "slow-$i" --provider openai \
    --base-url "http://127.0.0.1:$((SIM_PORT + i))/v1" --model "$SLOW_MODEL" >/dev/null
  eval "$("$BIN/ragq" create-chat --tenant "$RAGQ_TENANT_ID" --name "slow-$i" --llm "slow-$i" --refine-multiturn false)"
  CHATS+=("$RAGQ_CHAT_ID")
done
"$BIN/ragq" add-model --tenant "$RAGQ_TENANT_ID" --kind chat --name fast --provider openai \
  --base-url "http://127.0.0.1:$SIM_PORT/v1" --model "sim:ttft=5:tokens=8:gap=5" >/dev/null
eval "$("$BIN/ragq" create-chat --tenant "$RAGQ_TENANT_ID" --name fast --llm fast --refine-multiturn false)"
FAST_CHAT=$RAGQ_CHAT_ID

# Warm-up: every code path once (and the allocator's caches filled), then the idle baseline.
log "warm-up (200 fast answers), then the idle baseline"
"$BIN/ragq-loadgen" --url "$API_URL" --api-key "$RAGQ_API_KEY" --chat-id "$FAST_CHAT" \
  --users 100 --requests 2 --test-type "$TYPE" --quiet --require-success >"$RUN/warmup.txt"
sleep 3
IDLE_KIB=$(awk '/^VmRSS:/ {print $2}' "/proc/$API_PID/status")

python3 scripts/lib/streams_sample.py sample "$API_PID" "$API_URL/metrics" "$RUN/samples.jsonl" 1 &
SAMPLER=$!

# The load generators: each holds its share of the streams from its own two source addresses
# (127.0.0.2 and up), so no single address runs out of ephemeral ports.
TIMEOUT=$((RAMP_S + (TTFT_MS + TOKENS * GAP_MS) / 1000 + 120))
LOADGEN_PIDS=()
for k in $(seq 0 $((LOADGENS - 1))); do
  chat=${CHATS[$((k % SIMS))]}
  addrs=127.0.0.$((2 + 2 * k)),127.0.0.$((3 + 2 * k))
  start "loadgen-$k" "$BIN/ragq-loadgen" --url "$API_URL" --api-key "$RAGQ_API_KEY" --chat-id "$chat" \
    --users "$PER_LOADGEN" --requests 1 --ramp "$RAMP_S" --source-addrs "$addrs" \
    --test-type "$TYPE" --timeout "$TIMEOUT" --max-duration "$TIMEOUT" --quiet \
    --json-out "$RUN/loadgen-$k.json"
  LOADGEN_PIDS+=("${PIDS[-1]}")
done
log "opening $N streams over ${RAMP_S}s ($LOADGENS load generators, model $SLOW_MODEL)"

open_streams() {
  curl -sf "$API_URL/metrics" | awk '$1 == "ragq_open_streams" {printf "%d", $2}'
}
# Wait until (almost) every stream is open, or give up at the ramp plus a minute. A few refused
# streams (they are counted as failures) must not leave the run without a steady window.
ALMOST=$((N * 99 / 100))
held=0
for _ in $(seq 1 $(((RAMP_S + 60) * 2))); do
  held=$(open_streams || echo 0)
  [ "${held:-0}" -ge "$ALMOST" ] && break
  sleep 0.5
done
log "open streams: $held of $N"

PROBE_ARGS=()
if [ "$PROBE" -gt 0 ] && [ "${held:-0}" -ge "$ALMOST" ]; then
  # Relay latency at this count: the probe's streams beside the N (worker publish → client read).
  PROBE_EVENTS=$(((TTFT_MS + TOKENS * GAP_MS) / 1000 - RAMP_S - 10))
  [ "$PROBE_EVENTS" -lt 5 ] && PROBE_EVENTS=5
  RAGQ_API_URL=$API_URL RAGQ_API_KEY=$RAGQ_API_KEY RAGQ_TENANT_ID=$RAGQ_TENANT_ID \
    "$BIN/ragq-probe" --json-out "$RUN/probe-relay.json" relay --channel-prefix "$PREFIX" \
    --streams "$PROBE" --events "$PROBE_EVENTS" --gap-ms 1000 >"$RUN/probe-relay.txt" 2>&1 || true
  PROBE_ARGS=(--probe "$RUN/probe-relay.json")
fi

rc=0
for p in "${LOADGEN_PIDS[@]}"; do wait "$p" || rc=1; done
sleep 2
kill "$SAMPLER" 2>/dev/null || true
wait "$SAMPLER" 2>/dev/null || true
SAMPLER=

LOADGEN_JSON=()
for k in $(seq 0 $((LOADGENS - 1))); do LOADGEN_JSON+=("$RUN/loadgen-$k.json"); done
python3 scripts/lib/streams_sample.py report "$RUN/samples.jsonl" "$IDLE_KIB" "$N" "${LOADGEN_JSON[@]}" "${PROBE_ARGS[@]}" \
  >"$RUN/summary.json"
python3 - "$RUN/summary.json" "$OUT/$STAMP-n$N.json" "$REQUESTED" "$SLOW_MODEL" "$TYPE" "$RAMP_S" "$WORKERS" "$SIMS" "$LOADGENS" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
s.update(requested=int(sys.argv[3]), model=sys.argv[4], test_type=sys.argv[5], ramp_s=float(sys.argv[6]),
         workers=int(sys.argv[7]), sims=int(sys.argv[8]), loadgens=int(sys.argv[9]))
json.dump(s, open(sys.argv[2], "w"), indent=2)
lg, p = s["loadgen"], s.get("relay_probe") or {}
lat = p.get("latency_us") or {}
mib = lambda k: "-" if k is None else f"{k / 1024:.1f} MiB"
print(f"streams held: {s['max_open']} (target {s['held']}, requested {s['requested']}); "
      f"ended with their terminal event: {lg['ok']} of {s['held']}, failed {lg['failed']} {lg['failures'] or ''}")
print(f"api RSS: idle {mib(s['idle_rss_kib'])}, peak {mib(s['peak_rss_kib'])}, steady {mib(s['steady_rss_kib'])} "
      f"over {s['steady_window_s']} s -> {s['kib_per_stream_steady']} KiB per open stream "
      f"(peak {s['kib_per_stream_peak']})")
print(f"api CPU: {s['cpu_ms_per_event']} ms per relayed event ({s['events_per_s']} events/s, "
      f"{s.get('cpu_cores')} cores)")
if lat:
    print(f"relay (probe, {p.get('streams')} streams beside them): p50 {lat.get('p50_us', 0) / 1000:.2f} ms, "
          f"p99 {lat.get('p99_us', 0) / 1000:.2f} ms, max {lat.get('max_us', 0) / 1000:.2f} ms; "
          f"{p.get('streams_ended')} of {p.get('streams')} ended")
for g in lg["gap_ms"]:
    print(f"client inter-token gap (ms): p50 {g['p50']}, p99 {g['p99']}, max {g['max']}")
print(f"-> {sys.argv[2]}")
PY
exit $rc
