"""CPU accounting and the open-loop tables of scripts/bench.sh.

  bench_cpu.py annotate LEVEL_JSON key=value...   add the "bench" block to a loadgen report
  bench_cpu.py per-question OUT NAME...           CPU ms per question, per process group
  bench_cpu.py open OUT RATE...                   the open-loop table and the capacity found

`annotate` takes the /proc snapshots the script took around one load-generator run: the api's
and the workers' utime+stime (api0/api1, w0/w1, in clock ticks), the process groups' (g0/g1:
"name=ticks ... machine_busy=.. machine_total=.."), and the load generator's own CPU seconds from
scripts/lib/rusage.py (loadgen=FILE). Its "bench" block keeps the fields the closed-loop tables
always read (api_cpu_s, workers_cpu_s, cpu_s, ...) and adds `questions` (requests answered)
and `cpu_ms_per_question`.
"""
import json
import os
import sys

GROUPS = ["api", "workers", "postgres", "beam.smp", "redis-server", "nats-server", "ragq-sim",
          "ragq-loadgen", "other", "machine"]


# Column labels: beam.smp is RabbitMQ.
LABELS = {"postgres": "postgres", "beam.smp": "rabbitmq", "redis-server": "redis", "nats-server": "nats",
          "ragq-sim": "sim", "ragq-loadgen": "loadgen"}


def label(g):
    return LABELS.get(g, g)


def kv(args):
    return dict(a.split("=", 1) for a in args)


def ticks(snapshot):
    return {k: int(v) for k, v in (p.split("=") for p in snapshot.split())}


def only_type(report):
    return next(iter(report["types"].values()))


def annotate(path, args):
    a = kv(args)
    hz = float(a["hz"])
    r = json.load(open(path))
    g0, g1 = ticks(a["g0"]), ticks(a["g1"])
    cpu = {k: (g1[k] - g0[k]) / hz for k in g0}
    loadgen_s = 0.0
    if a.get("loadgen") and os.path.exists(a["loadgen"]):
        loadgen_s = json.load(open(a["loadgen"]))["cpu_s"]
    cpu["ragq-loadgen"] = loadgen_s
    api_s = (int(a["api1"]) - int(a["api0"])) / hz
    wrk_s = (int(a["w1"]) - int(a["w0"])) / hz
    questions = sum(k["ok"] for k in r["types"].values())
    named = api_s + wrk_s + sum(v for k, v in cpu.items() if not k.startswith("machine"))
    busy = cpu.get("machine_busy", 0.0)
    per_q = dict(api=api_s, workers=wrk_s, **{k: v for k, v in cpu.items() if not k.startswith("machine")})
    per_q["other"] = max(0.0, busy - named)
    per_q["machine"] = busy
    b = {
        "users": int(a.get("users", 0)),
        "mode": a.get("mode", "closed"),
        "pinned": a.get("pinned") == "1",
        "api_cpu_s": api_s, "workers_cpu_s": wrk_s,
        "api_peak_rss_kb": int(a["api_rss"]), "workers_peak_rss_kb": int(a["wrk_rss"]),
        "ideal_ttfc_ms": float(a["ideal"]), "empirical_ideal_ttfc_ms": float(a["empirical"]),
        "wall_s": float(a["t1"]) - float(a["t0"]),
        "cpu_s": cpu,
        "questions": questions,
        "cpu_ms_per_question": {k: (1000.0 * v / questions if questions else None)
                                for k, v in per_q.items()},
    }
    if "rate" in a:
        b["rate"] = float(a["rate"])
        b["duration_s"] = float(a["duration"])
    r["bench"] = b
    json.dump(r, open(path, "w"), indent=1)


def fmt(v, width=8, prec=2):
    return f"{'-':>{width}}" if v is None else f"{v:>{width}.{prec}f}"


def per_question(out, names):
    cols = GROUPS
    print("\nCPU ms per question answered, per process (utime+stime from /proc over the run, "
          "divided by the questions answered; ragq-loadgen from its rusage; other = the rest of "
          "the machine's busy time; machine = all of it):")
    print(f"{'run':>10} {'answered':>8} " + " ".join(f"{label(c):>8}" for c in cols))
    for n in names:
        p = os.path.join(out, f"{n}.json")
        if not os.path.exists(p):
            continue
        b = json.load(open(p))["bench"]
        c = b.get("cpu_ms_per_question") or {}
        print(f"{n:>10} {b.get('questions', 0):>8} " + " ".join(fmt(c.get(k)) for k in cols))


def open_loop(out, rates):
    rows = []
    ideal = None
    for rate in rates:
        p = os.path.join(out, f"open-{rate}.json")
        if not os.path.exists(p):
            continue
        r = json.load(open(p))
        b = r["bench"]
        t = only_type(r)
        ideal = b["empirical_ideal_ttfc_ms"]
        ttfc = t.get("ttfc_ms") or {}
        ok_pct = 100.0 * t["ok"] / max(1, t["requests"])
        rows.append({
            "rate": float(rate), "requests": t["requests"], "ok": t["ok"], "ok_pct": ok_pct,
            # Answers completed per second over the whole run, the drain after the last
            # arrival included (what the system sustained), and arrivals per second sent.
            "achieved_rps": t["rps"], "sent_rps": t["requests"] / b["duration_s"],
            "ttfc_p50_ms": ttfc.get("p50"), "ttfc_p99_ms": ttfc.get("p99"),
            "cpu_ms_per_question": b["cpu_ms_per_question"],
        })
    if not rows:
        return
    limit = 1.5 * ideal
    for row in rows:
        p99 = row["ttfc_p99_ms"]
        row["within"] = p99 is not None and p99 <= limit and row["ok"] == row["requests"]
    passing = [row["rate"] for row in rows if row["within"]]
    failing = [row["rate"] for row in rows if not row["within"]]
    capacity = max(passing) if passing else None
    print(f"\nOpen loop (Poisson arrivals): TTFC counted from each request's scheduled arrival. "
          f"Capacity = the highest rate with TTFC p99 <= 1.5 x the measured ideal "
          f"({ideal:.1f} ms -> {limit:.1f} ms) and 100% success.")
    print("achieved = answers completed per second from the first arrival to the last answer "
          "(below the rate when a queue built up and drained after the arrivals stopped)")
    print(f"{'rate':>6} {'sent':>6} {'ok%':>6} {'achieved':>8} {'ttfc_p50':>9} {'ttfc_p99':>9} {'ok?':>4}  "
          "CPU ms/question: " + " ".join(f"{label(c):>8}" for c in GROUPS))
    for row in rows:
        c = row["cpu_ms_per_question"]
        print(f"{row['rate']:>6.0f} {row['requests']:>6} {row['ok_pct']:>6.1f} {row['achieved_rps']:>8.1f} "
              f"{fmt(row['ttfc_p50_ms'], 9, 1)} {fmt(row['ttfc_p99_ms'], 9, 1)} {'yes' if row['within'] else 'no':>4}  "
              + " " * 17 + " ".join(fmt(c.get(k)) for k in GROUPS))
    if capacity is None:
        print("capacity: no rate met the target")
    else:
        above = [f for f in failing if f > capacity]
        tail = f"; the next rate tried, {min(above):.0f}/s, did not" if above else \
            "; every rate tried met it (try higher rates)"
        below = [f for f in failing if f < capacity]
        if below:
            tail += f" (but {', '.join(f'{f:.0f}' for f in below)}/s below it did not: noise)"
        print(f"capacity: {capacity:.0f} requests/s{tail}")
    json.dump({"ideal_ms": ideal, "limit_ms": limit, "capacity_rps": capacity, "rates": rows},
              open(os.path.join(out, "open-capacity.json"), "w"), indent=1)


def main():
    cmd = sys.argv[1]
    if cmd == "annotate":
        annotate(sys.argv[2], sys.argv[3:])
    elif cmd == "per-question":
        per_question(sys.argv[2], sys.argv[3:])
    elif cmd == "open":
        open_loop(sys.argv[2], sys.argv[3:])
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
