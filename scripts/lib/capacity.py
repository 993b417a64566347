#!/usr/bin/env python3
"""A capacity model from one benchmark level (docs/SCALING.md).

Reads `.ragq/bench/level-N.json` (scripts/bench.sh: requests answered, CPU seconds of every
process during the level, peak RSS) and turns the measured costs into what a target load needs:
CPU per question of each process → cores at the target rate (at a planned utilisation), jobs in
flight (Little's law) → worker processes by prefetch, open streams → ingress memory.

    python3 scripts/lib/capacity.py .ragq/bench/level-100.json [--rate 5000] [--streams 100000]
        [--stream-kib 58] [--answer-s 1.07] [--utilisation 0.6] [--prefetch 512]
"""
import argparse
import json
import math


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("level")
    ap.add_argument("--rate", type=float, default=5000.0, help="questions per second")
    ap.add_argument("--streams", type=int, default=100_000, help="concurrent open streams")
    ap.add_argument("--stream-kib", type=float, default=58.0,
                    help="ingress memory per open stream (measured at 2,000 streams)")
    ap.add_argument("--answer-s", type=float, default=1.07, help="a job's time in a worker (W1)")
    ap.add_argument("--utilisation", type=float, default=0.6, help="planned CPU utilisation")
    ap.add_argument("--prefetch", type=int, default=512, help="RAGQ_PREFETCH per worker")
    a = ap.parse_args()
    r = json.load(open(a.level))
    t = next(iter(r["types"].values()))
    n = max(1, t["ok"])
    b = r["bench"]
    cpu = dict(b["cpu_s"], api=b["api_cpu_s"], workers=b["workers_cpu_s"])
    parts = [("ingress (ragq-api)", "api"), ("workers (ragq-worker)", "workers"),
             ("PostgreSQL", "postgres"), ("RabbitMQ", "beam.smp"), ("Redis", "redis-server")]
    print(f"Measured at {b['users']} users: {n} questions answered in {b['wall_s']:.1f} s "
          f"({t['rps']:.1f} q/s), TTFC p50 {t['ttfc_ms']['p50']:.0f} ms, p99 {t['ttfc_ms']['p99']:.0f} ms.\n")
    print(f"Target: {a.rate:,.0f} questions/s and {a.streams:,} concurrent open streams; "
          f"cores sized for {a.utilisation:.0%} utilisation.\n")
    print("| component | CPU per question (measured) | cores at the target rate | note |")
    print("| --- | ---: | ---: | --- |")
    total = 0.0
    for name, key in parts:
        ms = 1000.0 * cpu.get(key, 0.0) / n
        total += ms
        cores = a.rate * ms / 1000.0 / a.utilisation
        note = ""
        if key == "workers":
            inflight = a.rate * a.answer_s
            by_prefetch = math.ceil(inflight / a.prefetch)
            note = (f"{inflight:,.0f} jobs in flight (rate × {a.answer_s} s); ≥ {by_prefetch} "
                    f"workers by prefetch {a.prefetch}")
        if key == "api":
            mem_gib = a.streams * a.stream_kib / 1024 / 1024
            note = f"{a.streams:,} streams × {a.stream_kib:.0f} KiB = {mem_gib:.1f} GiB of stream state"
        print(f"| {name} | {ms:.2f} ms | {cores:.1f} | {note} |")
    print(f"| **all of ragq's stack** | **{total:.2f} ms** | **{a.rate * total / 1000 / a.utilisation:.1f}** | |")


if __name__ == "__main__":
    main()
