#!/usr/bin/env bash
# Benchmark under workload W1: starts ragq (scripts/up.sh: services, simulator with W1
# latencies, api, RAGQ_WORKERS workers, demo data), then runs the load generator at each
# concurrency level and prints, per level: TTFC p50/p99, the ideal TTFC, ragq's overhead,
# success, req/s, and CPU seconds and peak RSS of the api and the workers.
#
#   RAGQ_BENCH_LEVELS="1 10 100 500 1000 2000"   concurrent users per level
#   RAGQ_BENCH_REQUESTS=3                        requests per user (the 1-user level runs 30)
#   RAGQ_BENCH_RAMP=0                            closed levels: seconds over which the users start
#                                                (0: all in the same instant, as in the recorded
#                                                tables; the first wave is then a burst)
#   RAGQ_BENCH_TYPE=stream                       loadgen --test-type
#   RAGQ_WORKERS=1
#   RAGQ_BROKER=rabbitmq RAGQ_BUS=redis           (or nats; see scripts/bench-brokers.sh)
#   RAGQ_BENCH_CORPUS=realistic                  the generated corpus (`ragq-probe bench-corpus`:
#                                                ~100 documents, ~2,000 chunks, questions that hit
#                                                a few percent of the chunks), loaded once per seed
#                                                into .ragq/bench-corpus/; `demo` = demo/docs and
#                                                the demo chat, one question (the old behaviour)
#   RAGQ_BENCH_SEED=42 RAGQ_BENCH_DOCS=100       the corpus
#   RAGQ_BENCH_QUESTIONS=50                      questions sent (from its questions.txt; users cycle)
#   RAGQ_BENCH_PIN=0                             1: the simulator and the load generator on CPU 0,
#                                                ragq and its services (PostgreSQL, RabbitMQ, Redis,
#                                                NATS) on CPU 1 (taskset -a; restored at exit)
#   RAGQ_BENCH_OPEN_RATES=                       open-loop rates (requests/s, Poisson arrivals) after
#                                                the closed levels; default none, and with
#                                                RAGQ_BENCH_PIN=1 "50 60 70 80 90 100 120 150"
#                                                (around the pinned capacity measured here, 80/s)
#   RAGQ_BENCH_OPEN_DURATION=20                  seconds of arrivals per rate
#   RAGQ_BENCH_OPEN_PER_SESSION=10               open loop: questions per chat session
# Per level and rate: CPU ms per question answered of each process group (from /proc).
# Results: .ragq/bench/level-N.json, open-R.json, open-capacity.json and summary.txt
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
LEVELS=${RAGQ_BENCH_LEVELS:-1 10 100 500 1000 2000}
REQUESTS=${RAGQ_BENCH_REQUESTS:-3}
RAMP=${RAGQ_BENCH_RAMP:-0}
TYPE=${RAGQ_BENCH_TYPE:-stream}
CORPUS=${RAGQ_BENCH_CORPUS:-realistic}
SEED=${RAGQ_BENCH_SEED:-42}
DOCS=${RAGQ_BENCH_DOCS:-100}
NQUESTIONS=${RAGQ_BENCH_QUESTIONS:-50}
PIN=${RAGQ_BENCH_PIN:-0}
if [ "$PIN" = 1 ]; then
  OPEN_RATES=${RAGQ_BENCH_OPEN_RATES-50 60 70 80 90 100 120 150}
else
  OPEN_RATES=${RAGQ_BENCH_OPEN_RATES-}
fi
OPEN_DURATION=${RAGQ_BENCH_OPEN_DURATION:-20}
OPEN_PER_SESSION=${RAGQ_BENCH_OPEN_PER_SESSION:-10}
case $CORPUS in realistic | demo) ;; *) echo "RAGQ_BENCH_CORPUS must be realistic or demo" >&2; exit 2 ;; esac
unset RAGQ_UPSTREAM_URL
# Workload W1 for the simulator.
export RAGQ_SIM_EMBED_MS=15 RAGQ_SIM_RERANK_MS=80 RAGQ_SIM_TTFT_MS=250 RAGQ_SIM_TOKENS=48 RAGQ_SIM_TOKEN_GAP_MS=15

bash scripts/up.sh >/dev/null
# shellcheck disable=SC1091
set -a; source .ragq/run.env; set +a
BIN=${RAGQ_BIN_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/release}
OUT=.ragq/bench
mkdir -p "$OUT"
# The `ragq` CLI reads model keys with the key up.sh used.
if [ -z "${RAGQ_SECRET_KEY:-}" ] && [ -s .ragq/secret.key ]; then
  RAGQ_SECRET_KEY=$(cat .ragq/secret.key)
  export RAGQ_SECRET_KEY
fi

# The chat and the questions of the run.
CHAT=$RAGQ_CHAT_ID
QUESTION_ARGS=()
if [ "$CORPUS" = realistic ]; then
  CDIR=.ragq/bench-corpus/seed-$SEED-docs-$DOCS
  if [ ! -s "$CDIR/corpus.json" ]; then
    if [ ! -x "$BIN/ragq-probe" ]; then
      echo "[bench] building ragq-probe (release)" >&2
      cargo build --release --locked -p ragq-probe 2>&1 | tail -n 1 >&2
    fi
    "$BIN/ragq-probe" bench-corpus --out "$CDIR" --docs "$DOCS" --seed "$SEED" --questions 200 >&2
  fi
  # Dataset and chat: reused while they exist in this tenant with all their chunks.
  BENCH_TENANT_ID= BENCH_DATASET_ID= BENCH_CHAT_ID= BENCH_CHUNKS=
  # shellcheck disable=SC1091
  [ -f "$CDIR/ragq.env" ] && source "$CDIR/ragq.env"
  sql() { psql "$RAGQ_DATABASE_URL" -tAc "$1" 2>/dev/null; }
  if [ "$BENCH_TENANT_ID" = "$RAGQ_TENANT_ID" ] && [ -n "$BENCH_CHAT_ID" ] &&
    [ "$(sql "SELECT count(*) FROM chats WHERE id = '$BENCH_CHAT_ID' AND tenant_id = '$RAGQ_TENANT_ID'")" = 1 ] &&
    [ "$(sql "SELECT count(*) FROM chunks WHERE dataset_id = '$BENCH_DATASET_ID'")" = "$BENCH_CHUNKS" ]; then
    echo "[bench] reusing the corpus dataset $BENCH_DATASET_ID ($BENCH_CHUNKS chunks) and chat $BENCH_CHAT_ID" >&2
  else
    echo "[bench] loading $CDIR/docs into a dataset of tenant $RAGQ_TENANT_ID" >&2
    loaded=$("$BIN/ragq" load-dataset --tenant "$RAGQ_TENANT_ID" --name "bench-s$SEED-d$DOCS-$(date +%s)" \
      --embedding-model demo-embed "$CDIR/docs")
    BENCH_DATASET_ID=$(sed -n 's/^RAGQ_DATASET_ID=//p' <<<"$loaded")
    # As autovacuum would have done by the time users ask: statistics for the common lexemes.
    sql "ANALYZE chunks" >/dev/null
    BENCH_CHUNKS=$(sql "SELECT count(*) FROM chunks WHERE dataset_id = '$BENCH_DATASET_ID'")
    chat=$("$BIN/ragq" create-chat --tenant "$RAGQ_TENANT_ID" --name "bench-s$SEED-d$DOCS" --llm demo-llm \
      --dataset "$BENCH_DATASET_ID" --rerank demo-rerank --top-n 6 --similarity-threshold 0.2 \
      --vector-similarity-weight 0.3 --refine-multiturn false)
    BENCH_CHAT_ID=$(sed -n 's/^RAGQ_CHAT_ID=//p' <<<"$chat")
    BENCH_TENANT_ID=$RAGQ_TENANT_ID
    printf 'BENCH_TENANT_ID=%s\nBENCH_DATASET_ID=%s\nBENCH_CHAT_ID=%s\nBENCH_CHUNKS=%s\n' \
      "$BENCH_TENANT_ID" "$BENCH_DATASET_ID" "$BENCH_CHAT_ID" "$BENCH_CHUNKS" >"$CDIR/ragq.env"
  fi
  CHAT=$BENCH_CHAT_ID
  while IFS= read -r q; do QUESTION_ARGS+=(--question "$q"); done < <(head -n "$NQUESTIONS" "$CDIR/questions.txt")
  python3 - "$CDIR/corpus.json" "$BENCH_CHUNKS" "${#QUESTION_ARGS[@]}" >"$OUT/corpus.txt" <<'PY'
import json, sys
c, chunks, nq = json.load(open(sys.argv[1])), sys.argv[2], int(sys.argv[3]) // 2
m, s = c["measured"], c["measured"]["selectivity"]
pct = lambda v: f"{100 * v:.2f}%"
print(f"corpus: realistic (ragq-probe bench-corpus, seed {c['seed']}, {c['docs']} documents, version {c['version']}): "
      f"{chunks} chunks loaded (the generator predicted {m['chunks']}), {m['chunk_chars']['mean']:.0f} characters each on average; "
      f"{nq} of its {c['questions']} questions sent. Chunks matched by a question's terms: median {pct(s['question_any_term']['p50'])} "
      f"(p90 {pct(s['question_any_term']['p90'])}); by the worker's keyword query: median {pct(s['question_keyword_query']['p50'])}.")
PY
else
  echo "corpus: demo (demo/docs, the demo chat, the load generator's default question)" >"$OUT/corpus.txt"
fi
cat "$OUT/corpus.txt" >&2
LOADGEN_TARGET=(--chat-id "$CHAT" "${QUESTION_ARGS[@]}")

# Pinning: the simulator, the load generator and this script on CPU 0; ragq and the services it
# drives on CPU 1, every thread (taskset -a). The previous masks are restored at exit, also those
# of PostgreSQL backends forked meanwhile (they inherit the pinned postmaster's mask).
SAVED_AFFINITY=$OUT/affinity.saved
LOADGEN_PIN=()
mask_of() { taskset -p "$1" 2>/dev/null | awk '{print $NF}' || true; }
descendants() { local c; for c in $(pgrep -P "$1" 2>/dev/null); do echo "$c"; descendants "$c"; done; }
service_pids() {
  local p
  cat .ragq/pids/api*.pid .ragq/pids/worker-*.pid 2>/dev/null
  pgrep -x postgres; pgrep -x redis-server; pgrep -x nats-server; pgrep -x epmd
  for p in $(pgrep -x beam.smp); do echo "$p"; descendants "$p"; done
}
pin() { # pin CPU PID...
  local cpu=$1 pid mask; shift
  for pid in "$@"; do
    mask=$(mask_of "$pid"); [ -n "$mask" ] || continue
    grep -q "^$pid " "$SAVED_AFFINITY" 2>/dev/null || echo "$pid $mask" >>"$SAVED_AFFINITY"
    taskset -a -p -c "$cpu" "$pid" >/dev/null 2>&1 || echo "[bench] could not pin pid $pid" >&2
  done
}
restore_affinity() {
  local pid mask parent all
  all=$(printf '%x' $(((1 << $(nproc --all)) - 1)))
  for pid in $(service_pids) $(cat .ragq/pids/sim.pid 2>/dev/null); do
    mask=$(awk -v p="$pid" '$1 == p {print $2}' "$SAVED_AFFINITY" || true)
    if [ -z "$mask" ]; then # forked during the run: its parent's previous mask
      parent=$(awk '/^PPid:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
      mask=$(awk -v p="$parent" '$1 == p {print $2}' "$SAVED_AFFINITY" || true)
    fi
    taskset -a -p "${mask:-$all}" "$pid" >/dev/null 2>&1 || true
  done
  echo "[bench] CPU affinities restored" >&2
}
if [ "$PIN" = 1 ]; then
  [ "$(nproc --all)" -ge 2 ] || { echo "RAGQ_BENCH_PIN=1 needs 2 CPUs" >&2; exit 2; }
  : >"$SAVED_AFFINITY"
  SHELL_MASK=$(mask_of $$)
  trap restore_affinity EXIT
  pin 0 "$(cat .ragq/pids/sim.pid)"
  # shellcheck disable=SC2046
  pin 1 $(service_pids | sort -un)
  taskset -p -c 0 $$ >/dev/null
  LOADGEN_PIN=(taskset -c 0)
  echo "[bench] pinned: ragq-sim and ragq-loadgen on CPU 0; api, workers, postgres, beam.smp (and its children), epmd, redis-server, nats-server on CPU 1 ($(($(wc -l <"$SAVED_AFFINITY") - 1)) processes)" >&2
fi
# The load generator, pinned as above, its CPU time written to $1 (it leaves /proc before the
# second snapshot).
loadgen() { local usage=$1; shift; "${LOADGEN_PIN[@]}" python3 scripts/lib/rusage.py "$usage" "$BIN/ragq-loadgen" "$@"; }

cpu_ticks() { # utime+stime of a pid, in clock ticks
  awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0
}
peak_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
api_pid=$(cat .ragq/pids/api.pid)
worker_pids=$(cat .ragq/pids/worker-*.pid)
sum_ticks() { local t=0; for p in "$@"; do t=$((t + $(cpu_ticks "$p"))); done; echo $t; }
sum_peak() { local m=0; for p in "$@"; do m=$((m + $(peak_kb "$p"))); done; echo $m; }
HZ=$(getconf CLK_TCK)
# CPU ticks of every process whose command name matches, summed (PostgreSQL forks per connection).
group_ticks() { local t=0 p; for p in $(pgrep -x "$1" 2>/dev/null); do t=$((t + $(cpu_ticks "$p"))); done; echo $t; }
PROC_GROUPS="beam.smp postgres redis-server nats-server ragq-sim ragq-loadgen"
# Whole machine: busy and total ticks from /proc/stat (the load generator exits before the
# second snapshot, so its share is what the machine spent beyond the named processes).
machine_ticks() { awk '/^cpu / {busy=$2+$3+$4+$7+$8+$9; total=busy+$5+$6; print "machine_busy=" busy " machine_total=" total}' /proc/stat; }
snapshot_groups() { local g; for g in $PROC_GROUPS; do printf '%s=%s ' "$g" "$(group_ticks "$g")"; done; machine_ticks; }

# Warm-up: connections, caches. The simulator's counters around it tell which model calls a
# question makes (a chat with a rerank model does not embed the question).
SIM_URL="http://${RAGQ_SIM_ADDR:-127.0.0.1:9390}"
sim_stats() { python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1] + "/stats").read().decode())' "$SIM_URL"; }
sim_stats >"$OUT/sim-stats-0.json"
loadgen "$OUT/warmup.rusage" --users 4 --requests 2 --test-type "$TYPE" --quiet "${LOADGEN_TARGET[@]}" >/dev/null
sim_stats >"$OUT/sim-stats-1.json"
# The simulator's own latencies as a client sees them (its timers add ~1-2 ms per call over the
# nominal W1), summed over the calls on a question's path to its first chunk: the empirical
# ideal, the baseline for ragq's own overhead (and, x 1.5, the open-loop target). The nominal
# ideal is W1's 345 ms, or 330 ms when questions are not embedded.
python3 scripts/lib/sim_latency.py "$SIM_URL" 7 "$OUT/sim-stats-0.json" "$OUT/sim-stats-1.json" >"$OUT/sim-latency.json"
EMPIRICAL_IDEAL_MS=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ideal_ms"])' "$OUT/sim-latency.json")
IDEAL_MS=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["nominal_ms"])' "$OUT/sim-latency.json")
echo "[bench] simulator latencies: $(cat "$OUT/sim-latency.json")" >&2

for users in $LEVELS; do
  reqs=$REQUESTS
  [ "$users" -eq 1 ] && reqs=30
  a0=$(cpu_ticks "$api_pid"); w0=$(sum_ticks $worker_pids); g0=$(snapshot_groups); t0=$(date +%s.%N)
  echo "[bench] $users users x $reqs requests" >&2
  loadgen "$OUT/level-$users.rusage" --users "$users" --requests "$reqs" --ramp "$RAMP" --test-type "$TYPE" --quiet \
    --max-duration 300 --timeout 120 --json-out "$OUT/level-$users.json" "${LOADGEN_TARGET[@]}" >/dev/null
  a1=$(cpu_ticks "$api_pid"); w1=$(sum_ticks $worker_pids); g1=$(snapshot_groups); t1=$(date +%s.%N)
  python3 scripts/lib/bench_cpu.py annotate "$OUT/level-$users.json" mode=closed users="$users" hz="$HZ" \
    api0="$a0" api1="$a1" w0="$w0" w1="$w1" g0="$g0" g1="$g1" t0="$t0" t1="$t1" pinned="$PIN" \
    api_rss="$(peak_kb "$api_pid")" wrk_rss="$(sum_peak $worker_pids)" ideal="$IDEAL_MS" \
    empirical="$EMPIRICAL_IDEAL_MS" loadgen="$OUT/level-$users.rusage"
done

# Profiling (RAGQ_BENCH_PROFILE=1): during each open-loop rate, `perf record` samples the whole
# machine (flat profile by process and symbol) and pg_stat_statements counts PostgreSQL's
# statements (when the server preloads it: shared_preload_libraries = 'pg_stat_statements').
PROFILE=${RAGQ_BENCH_PROFILE:-0}
PGSS=0
if [ "$PROFILE" = 1 ]; then
  command -v perf >/dev/null || { echo "RAGQ_BENCH_PROFILE=1 needs perf (apt-get install linux-perf)" >&2; exit 2; }
  if psql "$RAGQ_DATABASE_URL" -tAc "SHOW shared_preload_libraries" 2>/dev/null | grep -q pg_stat_statements; then
    psql "$RAGQ_DATABASE_URL" -qc "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null && PGSS=1
  else
    echo "[bench] PostgreSQL does not preload pg_stat_statements: no statement profile" >&2
  fi
fi
profile_start() { # profile_start NAME
  [ "$PROFILE" = 1 ] || return 0
  [ "$PGSS" = 1 ] && psql "$RAGQ_DATABASE_URL" -qtAc "SELECT pg_stat_statements_reset()" >/dev/null
  perf record -a -F 499 -o "$OUT/perf-$1.data" -q -- sleep 3600 >/dev/null 2>&1 &
  PERF_PID=$!
  # Pinned: system calls and context switches on ragq's CPU (everything there is ragq's stack).
  PERF_STAT_PID=
  if [ "$PIN" = 1 ]; then
    perf stat -C 1 -x, -e raw_syscalls:sys_enter,context-switches -o "$OUT/perf-stat-$1.csv" -- sleep 3600 >/dev/null 2>&1 &
    PERF_STAT_PID=$!
  fi
}
profile_stop() { # profile_stop NAME ANSWERED
  [ "$PROFILE" = 1 ] || return 0
  # perf waits for its `sleep`, which ignores SIGINT as a background job: end the sleep.
  pkill -P "$PERF_PID" sleep 2>/dev/null || true; wait "$PERF_PID" 2>/dev/null || true
  if [ -n "$PERF_STAT_PID" ]; then
    pkill -P "$PERF_STAT_PID" sleep 2>/dev/null || true; wait "$PERF_STAT_PID" 2>/dev/null || true
    python3 - "$OUT/perf-stat-$1.csv" "$2" >"$OUT/perf-stat-$1.txt" <<'PY' || true
import sys
path, answered = sys.argv[1], max(1, int(sys.argv[2]))
for line in open(path):
    f = line.strip().split(",")
    if len(f) > 2 and f[0].replace(".", "").isdigit():
        print(f"{f[2]}: {int(float(f[0])):,} on ragq's CPU, {float(f[0]) / answered:,.0f} per question answered")
PY
    cat "$OUT/perf-stat-$1.txt" >&2
  fi
  perf report -i "$OUT/perf-$1.data" --no-children --sort comm,dso,sym --stdio 2>/dev/null |
    grep -v '^$' | head -250 >"$OUT/perf-$1.txt" || true
  perf report -i "$OUT/perf-$1.data" --no-children --sort comm --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' >"$OUT/perf-$1-comm.txt" || true
  [ "$PGSS" = 1 ] && psql "$RAGQ_DATABASE_URL" -P pager=off -c "SELECT calls, round(calls::numeric / greatest($2, 1), 2) AS per_q,
      round(total_exec_time::numeric, 1) AS total_ms, round((total_exec_time / greatest(calls, 1))::numeric, 3) AS mean_ms,
      round((total_exec_time / greatest($2, 1))::numeric, 3) AS ms_per_q, rows, shared_blks_hit AS hit,
      left(regexp_replace(query, '\s+', ' ', 'g'), 110) AS query
    FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
    ORDER BY total_exec_time DESC LIMIT 25" >"$OUT/pgss-$1.txt" 2>&1 || true
  echo "[bench] profile: $OUT/perf-$1.txt, $OUT/perf-$1-comm.txt$([ "$PGSS" = 1 ] && echo ", $OUT/pgss-$1.txt")" >&2
}

# Open loop: Poisson arrivals at each rate, latency from the scheduled arrival.
for rate in $OPEN_RATES; do
  sessions=$(python3 -c 'import math,sys; r,d,k=map(float,sys.argv[1:]); print(max(20, math.ceil(r*d/k)))' "$rate" "$OPEN_DURATION" "$OPEN_PER_SESSION")
  echo "[bench] open loop: $rate requests/s for ${OPEN_DURATION}s (Poisson), $sessions sessions" >&2
  a0=$(cpu_ticks "$api_pid"); w0=$(sum_ticks $worker_pids); g0=$(snapshot_groups); t0=$(date +%s.%N)
  profile_start "open-$rate"
  loadgen "$OUT/open-$rate.rusage" --users "$sessions" --rate "$rate" --duration "$OPEN_DURATION" \
    --arrivals poisson --seed "$SEED" --test-type "$TYPE" --quiet --max-duration $((OPEN_DURATION + 120)) \
    --timeout 120 --json-out "$OUT/open-$rate.json" "${LOADGEN_TARGET[@]}" >/dev/null
  profile_stop "open-$rate" "$(python3 -c 'import json,sys; t=next(iter(json.load(open(sys.argv[1]))["types"].values())); print(t["ok"])' "$OUT/open-$rate.json")"
  a1=$(cpu_ticks "$api_pid"); w1=$(sum_ticks $worker_pids); g1=$(snapshot_groups); t1=$(date +%s.%N)
  python3 scripts/lib/bench_cpu.py annotate "$OUT/open-$rate.json" mode=open users="$sessions" hz="$HZ" \
    rate="$rate" duration="$OPEN_DURATION" api0="$a0" api1="$a1" w0="$w0" w1="$w1" g0="$g0" g1="$g1" \
    t0="$t0" t1="$t1" pinned="$PIN" api_rss="$(peak_kb "$api_pid")" wrk_rss="$(sum_peak $worker_pids)" \
    ideal="$IDEAL_MS" empirical="$EMPIRICAL_IDEAL_MS" loadgen="$OUT/open-$rate.rusage"
  sleep 2 # let the queue drain
done

{ cat "$OUT/corpus.txt"; [ "$PIN" = 1 ] && echo "pinned: ragq-sim and ragq-loadgen on CPU 0; ragq and its services on CPU 1"; true; } | tee "$OUT/summary.txt"
python3 - "$OUT" $LEVELS <<'PY' | tee -a "$OUT/summary.txt"
import json, sys, os
out, levels = sys.argv[1], sys.argv[2:]
print("ideal = W1's nominal latencies of the calls on a question's path (345 ms, 330 without the embedding);")
print("sim = the simulator's measured latencies of those calls (scripts/lib/sim_latency.py);")
print("ovh = TTFC - ideal, own = TTFC - sim (ragq's own overhead)")
print(f"{'users':>6} {'reqs':>6} {'ok%':>6} {'req/s':>7} {'ttfc_p50':>9} {'ttfc_p99':>9} {'ideal':>6} {'sim':>6} {'ovh_p50':>8} {'ovh_p99':>8} {'own_p50':>8} {'own_p99':>8} {'api_cpu_s':>9} {'wrk_cpu_s':>9} {'api_rss_MB':>10} {'wrk_rss_MB':>10}")
for n in levels:
    r = json.load(open(os.path.join(out, f"level-{n}.json")))
    b = r["bench"]
    t = next(iter(r["types"].values()))
    ttfc = t.get("ttfc_ms") or {}
    p50, p99 = ttfc.get("p50") or 0, ttfc.get("p99") or 0
    ok = 100.0 * t["ok"] / max(1, t["requests"])
    ideal = b["ideal_ttfc_ms"]
    sim = b.get("empirical_ideal_ttfc_ms", ideal)
    print(f"{n:>6} {t['requests']:>6} {ok:>6.1f} {t['rps']:>7.1f} {p50:>9.1f} {p99:>9.1f} {ideal:>6} {sim:>6.1f} {p50-ideal:>8.1f} {p99-ideal:>8.1f} {p50-sim:>8.1f} {p99-sim:>8.1f} "
          f"{b['api_cpu_s']:>9.2f} {b['workers_cpu_s']:>9.2f} {b['api_peak_rss_kb']/1024:>10.1f} {b['workers_peak_rss_kb']/1024:>10.1f}")
PY
python3 - "$OUT" $LEVELS <<'PY' | tee -a "$OUT/summary.txt"
import json, sys, os
out, levels = sys.argv[1], sys.argv[2:]
print("\nCPU seconds per process during each level (and share of the 2-core machine's capacity):")
names = ["api", "workers", "beam.smp", "postgres", "redis-server", "nats-server", "ragq-sim", "other", "idle"]
print(f"{'users':>6} {'wall_s':>7} " + " ".join(f"{n:>13}" for n in names))
for n in levels:
    b = json.load(open(os.path.join(out, f"level-{n}.json")))["bench"]
    cpu = dict(b["cpu_s"], api=b["api_cpu_s"], workers=b["workers_cpu_s"])
    cap = 2 * b["wall_s"]
    busy = cpu.pop("machine_busy", 0)
    total = cpu.pop("machine_total", 0) or 1
    named = sum(v for k, v in cpu.items() if k in names)
    # The load generator (gone at the second snapshot) and everything else on the machine:
    cpu["other"] = max(0.0, busy - named)
    cpu["idle"] = max(0.0, total - busy)
    cap = total
    print(f"{n:>6} {b['wall_s']:>7.1f} " + " ".join(f"{cpu.get(k, 0):>6.2f} ({100*cpu.get(k, 0)/cap:>3.0f}%)" for k in names))
PY
level_names=(); for n in $LEVELS; do level_names+=("level-$n"); done
for r in $OPEN_RATES; do level_names+=("open-$r"); done
python3 scripts/lib/bench_cpu.py per-question "$OUT" "${level_names[@]}" | tee -a "$OUT/summary.txt"
# shellcheck disable=SC2086
[ -n "$OPEN_RATES" ] && python3 scripts/lib/bench_cpu.py open "$OUT" $OPEN_RATES | tee -a "$OUT/summary.txt"
# RabbitMQ's own cost beside ragq's, in the same run and pinning: the probe's round trips
# (publish, confirm, deliver, ack of a job-sized message on a quorum queue) paced at the first
# open-loop rate, and the broker's CPU per round trip (RAGQ_BENCH_BROKER_PROBE=0 skips it).
first_rate=${OPEN_RATES%% *}
if [ "$PIN" = 1 ] && [ -n "$first_rate" ] && [ "${RAGQ_BENCH_BROKER_PROBE:-1}" = 1 ] &&
  [ "${RAGQ_BROKER:-rabbitmq}" = rabbitmq ]; then
  echo "[bench] RabbitMQ probe paced at $first_rate/s (pinned as ragq was)" >&2
  "${LOADGEN_PIN[@]}" "$BIN/ragq-probe" rabbitmq --seconds 10 --inflight 256 --rate "$first_rate" \
    --json-out "$OUT/probe-rabbitmq-paced.json" 2>/dev/null | tee -a "$OUT/summary.txt" || true
fi
if [ "$PIN" = 1 ]; then # the probes below run unpinned
  restore_affinity; trap - EXIT
  taskset -p "$SHELL_MASK" $$ >/dev/null
fi
# Component probes: retrieval at 100k chunks, RabbitMQ and Redis ceilings, and the relay
# latency through the running api (tools/probes). Skip with RAGQ_BENCH_PROBES=0.
if [ "${RAGQ_BENCH_PROBES:-1}" = 1 ]; then
  bash scripts/probes.sh 2>&1 | tee "$OUT/probes.txt"
fi
echo "[bench] done; ragq is still running (scripts/down.sh stops it)" >&2
