#!/usr/bin/env bash
# Batch beside chat under workload W1 (issue 13): does a big batch delay the people chatting?
#
# Starts ragq (scripts/up.sh, W1 simulator latencies), then alternates load-generator runs of
# interactive chat at RAGQ_BENCH_USERS users without a batch ("alone") and while
# `ragq batch run` answers RAGQ_BENCH_BATCH_LINES questions through the same chat ("batch"),
# until the batch ends; a last "alone" run follows. Prints interactive TTFC p50/p99 of each run,
# the medians per kind and their ratio, the batch's duration and rate, and checks that every
# line is answered exactly once (results file and batch_lines).
#
#   RAGQ_BENCH_USERS=50  RAGQ_BENCH_REQUESTS=4  RAGQ_BENCH_BATCH_LINES=10000
#   RAGQ_BATCH_PREFETCH / RAGQ_BATCH_TENANT_CONCURRENCY: the workers' batch capacity
# Results: .ragq/bench-batch/
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ulimit -n 65536 2>/dev/null || true
USERS=${RAGQ_BENCH_USERS:-50}
REQUESTS=${RAGQ_BENCH_REQUESTS:-4}
LINES=${RAGQ_BENCH_BATCH_LINES:-10000}
export RAGQ_BATCH_PREFETCH=${RAGQ_BATCH_PREFETCH:-32}
export RAGQ_BATCH_TENANT_CONCURRENCY=${RAGQ_BATCH_TENANT_CONCURRENCY:-32}
unset RAGQ_UPSTREAM_URL
export RAGQ_SIM_EMBED_MS=15 RAGQ_SIM_RERANK_MS=80 RAGQ_SIM_TTFT_MS=250 RAGQ_SIM_TOKENS=48 RAGQ_SIM_TOKEN_GAP_MS=15

bash scripts/up.sh >/dev/null
set -a; source .ragq/run.env; set +a
BIN=${RAGQ_BIN_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/release}
OUT=.ragq/bench-batch
rm -rf "$OUT"; mkdir -p "$OUT"
python3 - "$OUT/questions.jsonl" "$LINES" <<'PY'
import json, sys
qs = ["What is the delivery limit of the job queue?",
      "How does hybrid retrieval combine keyword search and vector similarity?",
      "Do interactive chats and batch questions travel on separate queues?",
      "How are answer chunks streamed back to the client?",
      "What does an operator do with a dead-lettered job?"]
with open(sys.argv[1], "w") as f:
    for i in range(int(sys.argv[2])):
        f.write(json.dumps({"id": f"q-{i}", "question": f"{qs[i % len(qs)]} (#{i})"}) + "\n")
PY
"$BIN/ragq-loadgen" --users 4 --requests 2 --quiet >/dev/null   # warm-up

load() { # $1 = run name
  "$BIN/ragq-loadgen" --users "$USERS" --requests "$REQUESTS" --quiet --max-duration 300 \
    --timeout 120 --json-out "$OUT/$1.json" >/dev/null
}
load alone-1
t0=$(date +%s.%N)
"$BIN/ragq" batch run "$OUT/questions.jsonl" --chat "$RAGQ_CHAT_ID" --out "$OUT/results.jsonl" \
  --no-progress > "$OUT/batch-summary.txt" 2> "$OUT/batch-stderr.txt" &
batch_pid=$!
i=1
while kill -0 "$batch_pid" 2>/dev/null; do
  load "batch-$i"; i=$((i + 1))
  [ "$i" -gt 200 ] && break
done
wait "$batch_pid" || true
t1=$(date +%s.%N)
load alone-2
BATCH_ID=$(sed -n 's/^BATCH_ID=//p' "$OUT/batch-summary.txt")
psql "$RAGQ_DATABASE_URL" -tAc "SELECT status, count(*) FROM batch_lines WHERE batch_id = '$BATCH_ID' GROUP BY status" > "$OUT/lines.txt"

python3 - "$OUT" "$LINES" "$t0" "$t1" <<'PY' | tee "$OUT/summary.txt"
import glob, json, os, statistics, sys, collections
out, lines, t0, t1 = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
def ttfc(path):
    r = json.load(open(path)); t = next(iter(r["types"].values()))
    return t["ttfc_ms"]["p50"], t["ttfc_ms"]["p99"], 100.0 * t["ok"] / max(1, t["requests"])
runs = sorted(glob.glob(os.path.join(out, "*-*.json")), key=os.path.getmtime)
by = collections.defaultdict(list)
print(f"{'run':>10} {'ttfc_p50':>9} {'ttfc_p99':>9} {'ok%':>6}")
for p in runs:
    name = os.path.basename(p)[:-5]; p50, p99, ok = ttfc(p)
    by[name.split("-")[0]].append((p50, p99, ok))
    print(f"{name:>10} {p50:>9.1f} {p99:>9.1f} {ok:>6.1f}")
med = {k: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)) for k, v in by.items()}
for k, (p50, p99) in med.items():
    print(f"median {k:>6}: TTFC p50 {p50:.1f} ms, p99 {p99:.1f} ms over {len(by[k])} runs")
if "batch" in med and "alone" in med:
    print(f"p99 with the batch / alone: {med['batch'][1] / med['alone'][1]:.3f}; p50: {med['batch'][0] / med['alone'][0]:.3f}")
ids = collections.Counter(json.loads(l)["custom_id"] for l in open(os.path.join(out, "results.jsonl")))
status = dict(l.strip().split("|") for l in open(os.path.join(out, "lines.txt")) if l.strip())
print(f"batch: {lines} lines in {t1 - t0:.1f} s ({lines / (t1 - t0):.1f} lines/s); results file {len(ids)} ids, "
      f"max {max(ids.values()) if ids else 0} per id; batch_lines {status}")
assert len(ids) == lines and set(ids.values()) == {1}, "every line exactly once in the results"
assert status == {"completed": str(lines)}, f"every line completed once: {status}"
PY
echo "[bench-batch] done; ragq is still running (scripts/down.sh stops it)" >&2
