#!/usr/bin/env bash
# The brokers and buses side by side under W1: runs scripts/bench.sh once per combination of
# RAGQ_BROKER (rabbitmq | nats) and RAGQ_BUS (redis | nats), the combinations alternating, for
# RAGQ_BB_ROUNDS rounds, then the component probes (RabbitMQ, Redis, NATS JetStream and NATS
# core round-trip ceilings) beside them. Prints per combination the medians of TTFC p50/p99 at
# 1 and 100 users, questions/s at the saturation level, and CPU ms per question of the broker
# and the bus processes (beam.smp, redis-server, nats-server; one nats-server serves both when
# both are NATS).
#
#   RAGQ_BB_ROUNDS=3  RAGQ_BENCH_LEVELS="1 100 500"  RAGQ_BENCH_REQUESTS=3
#   RAGQ_BENCH_CORPUS=demo (the corpus of the recorded figures; `realistic` for the generated one)
#   RAGQ_BB_COMBOS="rabbitmq:redis nats:nats nats:redis rabbitmq:nats"
# Results: .ragq/bench-brokers/<broker>-<bus>-<round>/level-N.json, probe-*.json, summary.txt
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${RAGQ_BB_ROUNDS:-3}
COMBOS=${RAGQ_BB_COMBOS:-rabbitmq:redis nats:nats nats:redis rabbitmq:nats}
export RAGQ_BENCH_CORPUS=${RAGQ_BENCH_CORPUS:-demo} RAGQ_BENCH_OPEN_RATES=${RAGQ_BENCH_OPEN_RATES-}
export RAGQ_BENCH_LEVELS=${RAGQ_BENCH_LEVELS:-1 100 500} RAGQ_BENCH_PROBES=0
OUT=.ragq/bench-brokers
rm -rf "$OUT"; mkdir -p "$OUT"
for r in $(seq 1 "$ROUNDS"); do
  for combo in $COMBOS; do
    broker=${combo%:*} bus=${combo#*:}
    echo "[bench-brokers] round $r: broker $broker, bus $bus" >&2
    RAGQ_BROKER=$broker RAGQ_BUS=$bus bash scripts/bench.sh >/dev/null 2>&1
    cp -r .ragq/bench "$OUT/$broker-$bus-$r"
  done
done
bash scripts/down.sh >/dev/null 2>&1 || true
# The round-trip ceilings of each broker and bus, measured on the same machine right after.
if [ "${RAGQ_BB_PROBES:-1}" = 1 ]; then
  PROBE=${CARGO_TARGET_DIR:-target}/release/ragq-probe
  cargo build --release --locked -p ragq-probe 2>&1 | tail -n 1 >&2
  for p in rabbitmq redis nats nats-bus; do
    timeout 60 "$PROBE" "$p" --seconds 5 --json-out "$OUT/probe-$p.json" >"$OUT/probe-$p.txt" 2>&1 || echo "[bench-brokers] probe $p failed" >&2
  done
fi
python3 - "$OUT" "$ROUNDS" "$COMBOS" $RAGQ_BENCH_LEVELS <<'PY' | tee "$OUT/summary.txt"
import json, os, statistics, sys
out, rounds, combos, levels = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4:]
sat = levels[-1]
def level(combo, r, n):
    d = json.load(open(os.path.join(out, f"{combo.replace(':', '-')}-{r}", f"level-{n}.json")))
    t = next(iter(d["types"].values()))
    return t, d["bench"]
def med(xs):
    return statistics.median(xs) if xs else float("nan")
print(f"{rounds} alternating rounds per combination; medians. CPU ms per question: the process's CPU over the")
print(f"levels 100 and {sat} divided by the questions answered in them.")
hdr = ["broker:bus", "1u p50", "1u p99", "100u p50", "100u p99", f"{sat}u q/s", f"{sat}u ok%", "broker ms/q", "bus ms/q", "api ms/q", "wrk ms/q"]
print(" ".join(f"{h:>12}" for h in hdr))
for combo in combos:
    broker, bus = combo.split(":")
    cols = {k: [] for k in ["p50_1", "p99_1", "p50_100", "p99_100", "qps", "ok", "broker", "bus", "api", "wrk"]}
    for r in range(1, rounds + 1):
        t1, _ = level(combo, r, "1"); cols["p50_1"].append(t1["ttfc_ms"]["p50"]); cols["p99_1"].append(t1["ttfc_ms"]["p99"])
        t, _ = level(combo, r, "100"); cols["p50_100"].append(t["ttfc_ms"]["p50"]); cols["p99_100"].append(t["ttfc_ms"]["p99"])
        ts, _ = level(combo, r, sat); cols["qps"].append(ts["rps"]); cols["ok"].append(100.0 * ts["ok"] / max(1, ts["requests"]))
        cpu = {"broker": 0.0, "bus": 0.0, "api": 0.0, "wrk": 0.0}; answered = 0
        for n in ("100", sat):
            t, b = level(combo, r, n)
            answered += t["ok"]
            proc = {"rabbitmq": "beam.smp", "nats": "nats-server"}
            cpu["broker"] += b["cpu_s"].get(proc[broker], 0)
            cpu["bus"] += 0 if bus == broker == "nats" else b["cpu_s"].get({"redis": "redis-server", "nats": "nats-server"}[bus], 0)
            cpu["api"] += b["api_cpu_s"]; cpu["wrk"] += b["workers_cpu_s"]
        for k in ("broker", "bus", "api", "wrk"):
            cols[k].append(1000.0 * cpu[k] / max(1, answered))
    m = {k: med(v) for k, v in cols.items()}
    bus_cell = "(in broker)" if broker == bus == "nats" else f"{m['bus']:.2f}"
    print(f"{combo:>12} {m['p50_1']:>12.1f} {m['p99_1']:>12.1f} {m['p50_100']:>12.1f} {m['p99_100']:>12.1f} {m['qps']:>12.1f} {m['ok']:>12.1f} {m['broker']:>12.2f} {bus_cell:>12} {m['api']:>12.2f} {m['wrk']:>12.2f}")
    print(f"{'':>12} runs 100u p50/p99: " + " ".join(f"{a:.0f}/{b:.0f}" for a, b in zip(cols['p50_100'], cols['p99_100'])) + f"; {sat}u q/s: " + " ".join(f"{q:.0f}" for q in cols["qps"]))
print()
for p in ["rabbitmq", "redis", "nats", "nats-bus"]:
    path = os.path.join(out, f"probe-{p}.txt")
    if os.path.exists(path):
        print(open(path).read().rstrip()); print()
PY
