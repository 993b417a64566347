#!/usr/bin/env bash
# Benchmark under workload W1: starts ragq (scripts/up.sh: services, simulator with W1
# latencies, api, RAGQ_WORKERS workers, demo data), then runs the load generator at each
# concurrency level and prints, per level: TTFC p50/p99, the ideal TTFC, ragq's overhead,
# success, req/s, and CPU seconds and peak RSS of the api and the workers.
#
#   RAGQ_BENCH_LEVELS="1 10 100 500 1000 2000"   concurrent users per level
#   RAGQ_BENCH_REQUESTS=3                        requests per user (the 1-user level runs 30)
#   RAGQ_BENCH_TYPE=stream                       loadgen --test-type
#   RAGQ_WORKERS=1
#   RAGQ_BROKER=rabbitmq RAGQ_BUS=redis           (or nats; see scripts/bench-brokers.sh)
# Results: .ragq/bench/level-N.json and .ragq/bench/summary.txt
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
LEVELS=${RAGQ_BENCH_LEVELS:-1 10 100 500 1000 2000}
REQUESTS=${RAGQ_BENCH_REQUESTS:-3}
TYPE=${RAGQ_BENCH_TYPE:-stream}
unset RAGQ_UPSTREAM_URL
# Workload W1 for the simulator.
export RAGQ_SIM_EMBED_MS=15 RAGQ_SIM_RERANK_MS=80 RAGQ_SIM_TTFT_MS=250 RAGQ_SIM_TOKENS=48 RAGQ_SIM_TOKEN_GAP_MS=15
IDEAL_MS=345

bash scripts/up.sh >/dev/null
# shellcheck disable=SC1091
set -a; source .ragq/run.env; set +a
BIN=${RAGQ_BIN_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/release}
OUT=.ragq/bench
mkdir -p "$OUT"
# The simulator's own latencies as a client sees them (its timers add ~1-2 ms per call over the
# nominal W1): their sum is the empirical ideal, the baseline for ragq's own overhead.
python3 scripts/lib/sim_latency.py "http://${RAGQ_SIM_ADDR:-127.0.0.1:9390}" > "$OUT/sim-latency.json"
EMPIRICAL_IDEAL_MS=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ideal_ms"])' "$OUT/sim-latency.json")
echo "[bench] simulator latencies: $(cat "$OUT/sim-latency.json")" >&2

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

# Warm-up: connections, caches.
"$BIN/ragq-loadgen" --users 4 --requests 2 --test-type "$TYPE" --quiet >/dev/null

for users in $LEVELS; do
  reqs=$REQUESTS
  [ "$users" -eq 1 ] && reqs=30
  a0=$(cpu_ticks "$api_pid"); w0=$(sum_ticks $worker_pids); g0=$(snapshot_groups); t0=$(date +%s.%N)
  echo "[bench] $users users x $reqs requests" >&2
  "$BIN/ragq-loadgen" --users "$users" --requests "$reqs" --test-type "$TYPE" --quiet \
    --max-duration 300 --timeout 120 --json-out "$OUT/level-$users.json" >/dev/null
  a1=$(cpu_ticks "$api_pid"); w1=$(sum_ticks $worker_pids); g1=$(snapshot_groups); t1=$(date +%s.%N)
  python3 - "$OUT/level-$users.json" <<PY
import json, sys
p = sys.argv[1]
r = json.load(open(p))
r["bench"] = {"users": $users, "api_cpu_s": ($a1 - $a0) / $HZ, "workers_cpu_s": ($w1 - $w0) / $HZ,
              "api_peak_rss_kb": $(peak_kb "$api_pid"), "workers_peak_rss_kb": $(sum_peak $worker_pids),
              "ideal_ttfc_ms": $IDEAL_MS, "empirical_ideal_ttfc_ms": $EMPIRICAL_IDEAL_MS, "wall_s": $t1 - $t0,
              "cpu_s": {k: (int(b) - int(a)) / $HZ for (k, a), (_, b) in zip(
                  [kv.split("=") for kv in "$g0".split()], [kv.split("=") for kv in "$g1".split()])}}
json.dump(r, open(p, "w"), indent=1)
PY
done

python3 - "$OUT" $LEVELS <<'PY' | tee "$OUT/summary.txt"
import json, sys, os
out, levels = sys.argv[1], sys.argv[2:]
print("ideal = W1's nominal 345 ms; sim = the simulator's measured latencies (scripts/lib/sim_latency.py);")
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
# Component probes: retrieval at 100k chunks, RabbitMQ and Redis ceilings, and the relay
# latency through the running api (tools/probes). Skip with RAGQ_BENCH_PROBES=0.
if [ "${RAGQ_BENCH_PROBES:-1}" = 1 ]; then
  bash scripts/probes.sh 2>&1 | tee "$OUT/probes.txt"
fi
echo "[bench] done; ragq is still running (scripts/down.sh stops it)" >&2
