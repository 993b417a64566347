#!/usr/bin/env bash
# Alternating A/B benchmark of two builds under W1: runs scripts/bench.sh with the binaries of
# build A, then B, then A, … (RAGQ_AB_ROUNDS rounds each), and prints per level the median TTFC
# p50/p99 and own overhead of each build and the B/A ratios — per closed level and per open-loop
# rate (RAGQ_BENCH_OPEN_RATES) —, then the CPU ms per question of each process of ragq's stack
# (pinned: RAGQ_BENCH_PIN=1). Alternation spreads the shared
# machine's noise over both builds; medians keep one noisy run from deciding.
#
#   scripts/bench-ab.sh DIR_A DIR_B     # folders with ragq-api, ragq-worker, ragq, ragq-sim, ragq-loadgen
#   RAGQ_AB_ROUNDS=3  RAGQ_BENCH_LEVELS="1 100"  RAGQ_BENCH_REQUESTS=3
#   RAGQ_BENCH_CORPUS=demo (the corpus of the recorded A/B figures; `realistic` for the generated one)
#   RAGQ_AB_BEFORE_A / RAGQ_AB_BEFORE_B: a shell command run before each of that side's runs (an
#   A/B of a setting rather than a build: give both sides the same DIR)
# Results: .ragq/bench-ab/{A,B}-<round>/level-N.json and .ragq/bench-ab/summary.txt
set -euo pipefail
cd "$(dirname "$0")/.."
A=${1:?usage: bench-ab.sh DIR_A DIR_B}
B=${2:?usage: bench-ab.sh DIR_A DIR_B}
ROUNDS=${RAGQ_AB_ROUNDS:-3}
export RAGQ_BENCH_CORPUS=${RAGQ_BENCH_CORPUS:-demo} RAGQ_BENCH_OPEN_RATES=${RAGQ_BENCH_OPEN_RATES-}
export RAGQ_BENCH_LEVELS=${RAGQ_BENCH_LEVELS:-1 100} RAGQ_BENCH_PROBES=0
OUT=.ragq/bench-ab
rm -rf "$OUT"; mkdir -p "$OUT"
for r in $(seq 1 "$ROUNDS"); do
  for side in A B; do
    dir=$A; [ "$side" = B ] && dir=$B
    echo "[bench-ab] round $r, build $side ($dir)" >&2
    # An A/B of a database or service setting: a command run before each side's bench.
    hook=RAGQ_AB_BEFORE_$side
    if [ -n "${!hook:-}" ]; then bash -c "${!hook}" >&2; fi
    RAGQ_BIN_DIR=$dir bash scripts/bench.sh >/dev/null 2>&1
    cp -r .ragq/bench "$OUT/$side-$r"
  done
done
bash scripts/down.sh >/dev/null 2>&1 || true
python3 - "$OUT" "$ROUNDS" "$RAGQ_BENCH_OPEN_RATES" $RAGQ_BENCH_LEVELS <<'PY' | tee "$OUT/summary.txt"
import json, os, statistics, sys
out, rounds, rates, levels = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4:]
def row(side, r, n):
    d = json.load(open(os.path.join(out, f"{side}-{r}", f"{n}.json")))
    t = next(iter(d["types"].values())); b = d["bench"]
    sim = b.get("empirical_ideal_ttfc_ms", b["ideal_ttfc_ms"])
    p50, p99 = t["ttfc_ms"]["p50"], t["ttfc_ms"]["p99"]
    return p50, p99, p50 - sim, p99 - sim, 100.0 * t["ok"] / max(1, t["requests"])
print(f"{rounds} alternating rounds per build (A, B, A, B, …); medians; own = TTFC - simulator's latencies")
print(f"{'run':>10} {'build':>5} {'p50':>8} {'p99':>8} {'own_p50':>8} {'own_p99':>8} {'ok%':>6}   runs (p50/p99)")
STACK = ["api", "workers", "postgres", "beam.smp", "redis-server", "nats-server"]
def cpu(side, r, n):
    c = json.load(open(os.path.join(out, f"{side}-{r}", f"{n}.json")))["bench"].get("cpu_ms_per_question") or {}
    return [c.get(k) or 0.0 for k in STACK] + [sum(c.get(k) or 0.0 for k in STACK)]
for n in [f"level-{l}" for l in levels] + [f"open-{r}" for r in rates]:
    med = {}
    for side in "AB":
        rows = [row(side, r, n) for r in range(1, rounds + 1)]
        med[side] = [statistics.median(x[i] for x in rows) for i in range(5)]
        runs = " ".join(f"{x[0]:.0f}/{x[1]:.0f}" for x in rows)
        m = med[side]
        print(f"{n:>10} {side:>5} {m[0]:>8.1f} {m[1]:>8.1f} {m[2]:>8.1f} {m[3]:>8.1f} {m[4]:>6.1f}   {runs}")
    a, b = med["A"], med["B"]
    print(f"{n:>10} {'B/A':>5} {b[0]/a[0]:>8.3f} {b[1]/a[1]:>8.3f}")
print("\nCPU ms per question answered (medians of the rounds): ragq's stack = api + workers + postgres + rabbitmq + redis + nats")
print(f"{'run':>10} {'build':>5} " + " ".join(f"{k:>9}" for k in ["api", "workers", "postgres", "rabbitmq", "redis", "nats", "stack"]))
for n in [f"level-{l}" for l in levels if l != "1"] + [f"open-{r}" for r in rates]:
    med = {}
    for side in "AB":
        rows = [cpu(side, r, n) for r in range(1, rounds + 1)]
        med[side] = [statistics.median(x[i] for x in rows) for i in range(len(STACK) + 1)]
        print(f"{n:>10} {side:>5} " + " ".join(f"{v:>9.2f}" for v in med[side]))
    a, b = med["A"], med["B"]
    print(f"{n:>10} {'B/A':>5} " + " ".join(f"{(y / x if x else 0):>9.3f}" for x, y in zip(a, b)))
PY
