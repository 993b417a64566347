"""Measures the upstream simulator's own latencies as a client sees them (median of N calls):
embeddings, rerank, and the chat stream's first content token. Their sum is the *empirical*
ideal time to first chunk under W1: what a system with zero overhead would achieve against this
simulator on this machine (the simulator's timers add ~1-2 ms per call over the nominal W1).
Prints JSON. Usage: python3 sim_latency.py http://127.0.0.1:9390 [samples]"""
import http.client
import json
import statistics
import sys
import time
from urllib.parse import urlparse

base = urlparse(sys.argv[1])
samples = int(sys.argv[2]) if len(sys.argv) > 2 else 7


def timed_post(path, body, until_first_content=False):
    conn = http.client.HTTPConnection(base.hostname, base.port, timeout=30)
    started = time.perf_counter()
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if until_first_content:
        while True:
            line = resp.readline()
            if not line:
                break
            if line.startswith(b"data:") and b'"content":"' in line and b'"content":""' not in line:
                break
    else:
        resp.read()
    elapsed = (time.perf_counter() - started) * 1000
    conn.close()
    return elapsed


def median(fn):
    fn()  # warm-up
    return statistics.median(fn() for _ in range(samples))


embed = median(lambda: timed_post("/v1/embeddings", {"model": "sim-embed", "input": "delivery limit"}))
rerank = median(lambda: timed_post("/v1/rerank", {"model": "sim-rerank", "query": "q", "documents": ["a", "b"]}))
ttft = median(lambda: timed_post(
    "/v1/chat/completions",
    {"model": "sim", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
    until_first_content=True,
))
print(json.dumps({"embed_ms": round(embed, 2), "rerank_ms": round(rerank, 2), "ttft_ms": round(ttft, 2),
                  "ideal_ms": round(embed + rerank + ttft, 2)}))
