#!/usr/bin/env bash
# Measurement probes (tools/probes, `ragq-probe`): each isolates one building block of ragq.
#   retrieval  the worker's retrieval step on RAGQ_PROBE_CHUNKS synthetic chunks (target p99 <= 20 ms at 100k)
#   rabbitmq   publish-confirm-deliver-ack round trips on a quorum queue
#   redis      pub/sub events/s into one subscriber connection (plain PUBLISH and ragq's XADD+PUBLISH)
#   nats       JetStream publish-PubAck-pull-ack round trips on a work-queue stream (double_ack, plain ack)
#   nats-bus   NATS events/s into one subscriber connection (core publishes, JetStream publishes
#              awaiting the ack) with a replay stream capturing them
#   relay      worker publish -> real ingress -> SSE read, only if ragq is running (.ragq/run.env and
#              /healthz answer); never starts or stops ragq (target p99 <= 2 ms at 100 streams)
# Makes sure PostgreSQL, Redis, RabbitMQ and NATS run, builds the probe in release, runs the probes and
# writes .ragq/bench/probe-{retrieval,rabbitmq,redis,nats,nats-bus,relay}.json. About 4 minutes after the build
# (the first run also builds the 100k-chunk database ragq_probe, ~10 s; later runs reuse it).
#
#   RAGQ_PROBE_CHUNKS=100000   RAGQ_PROBE_QUERIES=500   RAGQ_PROBE_SECONDS=5 (rabbitmq, nats, and each redis and nats-bus phase)
#   RAGQ_PROBE_STREAMS=100
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source scripts/lib/services.sh
ensure_cargo
ensure_services
ulimit -n 65536 2>/dev/null || true

CHUNKS=${RAGQ_PROBE_CHUNKS:-100000}
QUERIES=${RAGQ_PROBE_QUERIES:-500}
SECONDS_PER=${RAGQ_PROBE_SECONDS:-5}
STREAMS=${RAGQ_PROBE_STREAMS:-100}
OUT=.ragq/bench
mkdir -p "$OUT"

log "building ragq-probe (release)"
cargo build --release --locked -p ragq-probe 2>&1 | tail -n 1 >&2
PROBE=${CARGO_TARGET_DIR:-$ROOT/target}/release/ragq-probe

# Each probe is bounded by its own limits; `timeout` is the backstop (together at most 6 minutes).
run() { # run NAME SECONDS ARGS...
  local name=$1 limit=$2; shift 2
  echo
  timeout "$limit" "$PROBE" "$@" --json-out "$OUT/probe-$name.json" || log "probe $name failed (exit $?)"
}

run retrieval 170 retrieval --chunks "$CHUNKS" --queries "$QUERIES"
run rabbitmq 30 rabbitmq --seconds "$SECONDS_PER"
run redis 45 redis --seconds "$SECONDS_PER"
run nats 30 nats --seconds "$SECONDS_PER"
run nats-bus 45 nats-bus --seconds "$SECONDS_PER"

if [ -f .ragq/run.env ]; then
  # shellcheck disable=SC1091
  set -a; source .ragq/run.env; set +a
  if curl -sf -m 2 "${RAGQ_API_URL:-http://127.0.0.1:9380}/healthz" >/dev/null; then
    run relay 40 relay --streams "$STREAMS"
  else
    log "relay skipped: ragq does not answer ${RAGQ_API_URL:-http://127.0.0.1:9380}/healthz (scripts/up.sh starts it)"
  fi
else
  log "relay skipped: no .ragq/run.env (scripts/up.sh starts ragq and writes it)"
fi
log "probe results: $OUT/probe-*.json"
