"""Measures the upstream simulator's own latencies as a client sees them (median of N calls):
embeddings, rerank, and the chat stream's first content token. Their sum is the *empirical*
ideal time to first chunk under W1: what a system with zero overhead would achieve against this
simulator on this machine (the simulator's timers add ~1-2 ms per call over the nominal W1).
With the simulator's /stats before and after some questions, only the calls those questions made
count (a chat with a rerank model does not embed its question: then the ideal is rerank + first
token, W1's nominal 330 ms instead of 345).
Prints JSON. Usage: python3 sim_latency.py http://127.0.0.1:9390 [samples [stats-before stats-after]]"""
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
# Which calls a question makes: at least one per two chat requests counts as on the path.
embedded, reranked = True, True
if len(sys.argv) > 4:
    before, after = (json.load(open(p)) for p in sys.argv[3:5])
    delta = {k: after[k] - before[k] for k in ("chat_requests", "embedding_requests", "rerank_requests")}
    chats = max(delta["chat_requests"], 1)
    embedded = 2 * delta["embedding_requests"] >= chats
    reranked = 2 * delta["rerank_requests"] >= chats
ideal = (embed if embedded else 0) + (rerank if reranked else 0) + ttft
nominal = (15 if embedded else 0) + (80 if reranked else 0) + 250
print(json.dumps({"embed_ms": round(embed, 2), "rerank_ms": round(rerank, 2), "ttft_ms": round(ttft, 2),
                  "embedded": embedded, "reranked": reranked,
                  "ideal_ms": round(ideal, 2), "nominal_ms": nominal}))
