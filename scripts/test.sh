#!/usr/bin/env bash
# The whole test suite: starts the services it needs (PostgreSQL, Redis, RabbitMQ, NATS on 127.0.0.1),
# then runs every unit and end-to-end test against them.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/services.sh
ensure_cargo
ensure_services

# Databases left behind by interrupted test runs.
psql -h 127.0.0.1 -U postgres -d postgres -tAc \
  "SELECT datname FROM pg_database WHERE datname LIKE 'ragq_test_%'" 2>/dev/null |
  while read -r db; do [ -n "$db" ] && psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true; done

ulimit -n 65536 2>/dev/null || true
log "running the test suite"
# Fault tests spawn the worker binary as a separate process.
cargo build --workspace --bins --locked
# Structure: no import cycle inside a crate; the "where things happen" map names real functions.
for crate in common api worker cli; do python3 scripts/lib/module_cycles.py "$crate/src"; done
python3 scripts/lib/where_things_happen.py
# docs/CONFIG.md is generated from the binaries' flags: it must match them.
python3 scripts/lib/config_reference.py --check "${CARGO_TARGET_DIR:-target}/debug"
cargo test --workspace --all-targets --locked -- --test-threads="${RAGQ_TEST_THREADS:-4}"
# The same end-to-end and fault suites on the other brokers and buses (RAGQ_TEST_BROKER /
# RAGQ_TEST_BUS choose them in the harness): NATS for both, and each mix.
for combo in nats:nats nats:redis rabbitmq:nats; do
  broker=${combo%:*} bus=${combo#*:}
  suites=(--test backbone --test streams --test cancel --test faults --test dead_notices)
  [ "$combo" = nats:nats ] || suites=(--test backbone --test streams --test faults)
  log "end-to-end and fault suites on broker $broker, bus $bus"
  RAGQ_TEST_BROKER=$broker RAGQ_TEST_BUS=$bus \
    cargo test -p ragq-tests --locked "${suites[@]}" -- --test-threads="${RAGQ_TEST_THREADS:-4}"
done
# The off-by-default OTLP span export: a job span continues the caller's trace.
cargo test -p ragq-common --features otlp --lib --locked telemetry

# Compatibility: the official Python clients (ragflow-sdk 0.22.1, openai) against a running ragq
# (scripts/up.sh with two workers and the simulator).
log "running the compatibility tests (official Python clients)"
bash scripts/compat.sh
# The same official clients against ragq on NATS (broker and bus), the pinned SDK only.
RAGQ_BROKER=nats RAGQ_BUS=nats RAGQ_COMPAT_VENV_NEWEST= bash scripts/compat.sh

# Container and manifest files, validated without an engine (compose schema, kubernetes-validate,
# the KEDA CRD schema, the Dockerfile's build line run as-is).
log "checking deploy/ and docker-compose.yml"
bash scripts/check-deploy.sh

# Outage tests stop and restart the local RabbitMQ, Redis and PostgreSQL: alone, one at a time.
log "running the outage tests (they restart the local services)"
cargo test -p ragq-tests --test outages --locked -- --ignored --test-threads=1
# PostgreSQL's outage on NATS (broker and bus); NATS's own restart is `nats_restart.rs` (its own
# server, run with the other tests).
RAGQ_TEST_BROKER=nats RAGQ_TEST_BUS=nats \
  cargo test -p ragq-tests --test outages --locked -- --ignored --test-threads=1 postgres_outage
