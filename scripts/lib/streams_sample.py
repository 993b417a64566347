#!/usr/bin/env python3
"""Samples one api process for scripts/bench-streams.sh, and reports on the samples.

  streams_sample.py sample PID METRICS_URL OUT.jsonl [INTERVAL_S]
      One JSON line per interval until SIGTERM: t (monotonic s), rss_kib (VmRSS), hwm_kib
      (VmHWM), cpu_ticks (utime + stime, clock ticks), and from the api's /metrics the open
      streams (ragq_open_streams) and the events relayed (ragq_events_relayed_total).

  streams_sample.py report SAMPLES.jsonl IDLE_RSS_KIB HELD [LOADGEN.json ...] [--probe P.json]
      The steady window is every sample with at least 99 % of HELD open streams (all of the
      load generators' streams open and trickling); KiB per stream divides by the median open
      count in it. Prints a JSON summary: RSS idle / peak / steady
      (median over the window), KiB per open stream, CPU ms per relayed event over the window
      (utime + stime delta / events relayed delta), the load generators' successes and gaps,
      and the relay probe's latency when given.
"""

import json
import os
import signal
import statistics
import sys
import time
import urllib.request

TICKS = os.sysconf("SC_CLK_TCK")


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        # The command name may contain spaces: fields are counted after its closing ')'.
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])  # utime, stime (fields 14 and 15)


def scrape(url):
    wanted = {"ragq_open_streams": None, "ragq_events_relayed_total": None}
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            for line in r.read().decode().splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[0] in wanted:
                    wanted[parts[0]] = float(parts[1])
    except OSError:
        pass
    return wanted


def sample(pid, url, out, interval):
    running = True

    def stop(*_):
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    with open(out, "a", buffering=1) as f:
        while running:
            t = time.monotonic()
            try:
                row = {
                    "t": t,
                    "rss_kib": status_kib(pid, "VmRSS"),
                    "hwm_kib": status_kib(pid, "VmHWM"),
                    "cpu_ticks": cpu_ticks(pid),
                }
            except OSError:
                return  # the api is gone
            m = scrape(url)
            row["open"] = m["ragq_open_streams"]
            row["relayed"] = m["ragq_events_relayed_total"]
            f.write(json.dumps(row) + "\n")
            time.sleep(max(0.0, interval - (time.monotonic() - t)))


def loadgen_summary(paths):
    ok = failed = 0
    failures = {}
    gaps = []
    for p in paths:
        with open(p) as f:
            r = json.load(f)
        for kind in r.get("types", {}).values():
            ok += kind.get("ok", 0)
            failed += kind.get("failed", 0)
            for reason, n in (kind.get("failures") or {}).items():
                if n:
                    failures[reason] = failures.get(reason, 0) + n
            if kind.get("gap_ms"):
                gaps.append(kind["gap_ms"])
        for reason, n in (r.get("session_failures") or {}).items():
            failures["session: " + reason] = failures.get("session: " + reason, 0) + n
    return {
        "ok": ok,
        "failed": failed,
        "failures": failures,
        # Per load generator (one histogram each): the inter-event gaps the clients saw.
        "gap_ms": gaps,
    }


def report(samples_path, idle_kib, held, loadgens, probe):
    rows = []
    with open(samples_path) as f:
        for line in f:
            row = json.loads(line)
            if row.get("rss_kib") is not None:
                rows.append(row)
    # All of them open: at least 99 % (a few refused streams must not empty the window).
    steady = [r for r in rows if (r.get("open") or 0) >= held * 0.99]
    out = {
        "held": held,
        "samples": len(rows),
        "idle_rss_kib": idle_kib,
        "peak_rss_kib": max((r["rss_kib"] for r in rows), default=None),
        "hwm_kib": rows[-1]["hwm_kib"] if rows else None,
        "max_open": max(((r.get("open") or 0) for r in rows), default=0),
        "steady_window_s": None,
        "steady_rss_kib": None,
        "kib_per_stream_steady": None,
        "kib_per_stream_peak": None,
        "cpu_ms_per_event": None,
        "events_per_s": None,
    }
    if out["peak_rss_kib"] is not None and out["max_open"] > 0:
        out["kib_per_stream_peak"] = round((out["peak_rss_kib"] - idle_kib) / out["max_open"], 2)
    if len(steady) >= 2:
        first, last = steady[0], steady[-1]
        window = last["t"] - first["t"]
        events = (last["relayed"] or 0) - (first["relayed"] or 0)
        cpu_ms = (last["cpu_ticks"] - first["cpu_ticks"]) * 1000.0 / TICKS
        rss = statistics.median(r["rss_kib"] for r in steady)
        open_median = statistics.median(r["open"] for r in steady)
        out.update(
            steady_window_s=round(window, 1),
            steady_rss_kib=rss,
            steady_open=open_median,
            kib_per_stream_steady=round((rss - idle_kib) / open_median, 2),
            cpu_ms_per_event=round(cpu_ms / events, 4) if events > 0 else None,
            cpu_cores=round(cpu_ms / 1000.0 / window, 3) if window > 0 else None,
            events_per_s=round(events / window, 1) if window > 0 else None,
        )
    out["loadgen"] = loadgen_summary(loadgens)
    if probe and os.path.exists(probe):
        with open(probe) as f:
            p = json.load(f)
        out["relay_probe"] = {
            "streams": p.get("streams"),
            "streams_ended": p.get("streams_ended"),
            "events": p.get("events"),
            "expected": p.get("expected"),
            "latency_us": p.get("latency"),
            "failed": p.get("failed"),
        }
    print(json.dumps(out, indent=2))


def main(argv):
    if len(argv) >= 4 and argv[0] == "sample":
        interval = float(argv[4]) if len(argv) > 4 else 1.0
        sample(int(argv[1]), argv[2], argv[3], interval)
        return 0
    if len(argv) >= 4 and argv[0] == "report":
        args = argv[1:]
        probe = None
        if "--probe" in args:
            i = args.index("--probe")
            probe = args[i + 1]
            args = args[:i] + args[i + 2 :]
        report(args[0], int(args[1]), int(args[2]), args[3:], probe)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
