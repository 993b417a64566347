#!/usr/bin/env bash
# Compatibility tests: drives a running ragq with the official Python clients (ragflow-sdk and
# openai, pinned in tests/compat/requirements.txt) and checks what they get back.
#
# Steps: create or reuse the virtualenv .venv and install the pinned clients; start ragq with
# scripts/up.sh (two workers, the simulator with fast latencies); load .ragq/run.env; run pytest
# on tests/compat; stop ragq with scripts/down.sh whatever happens. Exits with pytest's status,
# except that "no tests collected" (pytest's 5) counts as a failure.
#
# Environment:
#   RAGQ_COMPAT_VENV=.venv     virtualenv to create or reuse
#   RAGQ_SIM_*                 simulator latencies (defaults below are faster than W1 to keep
#                              the run short, but slow enough for several streamed events)
# Extra arguments go to pytest, e.g. `scripts/compat.sh -k openai -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/services.sh

VENV=${RAGQ_COMPAT_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  log "creating the virtualenv $VENV"
  python3 -m venv "$VENV"
fi
log "installing tests/compat/requirements.txt into $VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r tests/compat/requirements.txt

# The tests predict the simulator's deterministic answers, so they always run against it.
if [ -n "${RAGQ_UPSTREAM_URL:-}" ]; then
  log "ignoring RAGQ_UPSTREAM_URL: the compatibility tests need the simulator"
  unset RAGQ_UPSTREAM_URL
fi
# About 0.5 s per answer: 48 words, 8 ms apart, so a stream has several coalesced (40 ms) events.
export RAGQ_SIM_EMBED_MS=${RAGQ_SIM_EMBED_MS:-0}
export RAGQ_SIM_RERANK_MS=${RAGQ_SIM_RERANK_MS:-0}
export RAGQ_SIM_TTFT_MS=${RAGQ_SIM_TTFT_MS:-20}
export RAGQ_SIM_TOKENS=${RAGQ_SIM_TOKENS:-48}
export RAGQ_SIM_TOKEN_GAP_MS=${RAGQ_SIM_TOKEN_GAP_MS:-8}

trap 'bash scripts/down.sh >/dev/null 2>&1 || true' EXIT
RAGQ_WORKERS=2 bash scripts/up.sh

set -a
# shellcheck disable=SC1091
source .ragq/run.env
set +a

log "running the compatibility tests (tests/compat)"
status=0
"$VENV/bin/python" -m pytest tests/compat -p no:cacheprovider -rfEs "$@" || status=$?
if [ "$status" -eq 5 ]; then
  log "pytest collected no tests: failing"
  status=1
fi
exit "$status"
