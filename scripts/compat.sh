#!/usr/bin/env bash
# Compatibility tests: drives a running ragq with the official Python clients (ragflow-sdk and
# openai, pinned in tests/compat/requirements.txt) and checks what they get back.
#
# Steps: create or reuse two virtualenvs — .venv with the pinned clients (ragflow-sdk 0.22.1) and
# .venv-newest with the newest ragflow-sdk on PyPI (tests/compat/requirements-newest.txt,
# installed with --ignore-requires-python: versions >= 0.23 declare Python >= 3.12); start ragq with
# scripts/up.sh (two workers, the simulator with fast latencies); load .ragq/run.env; run pytest
# on tests/compat; stop ragq with scripts/down.sh whatever happens. Exits with pytest's status,
# except that "no tests collected" (pytest's 5) counts as a failure.
#
# Environment:
#   RAGQ_COMPAT_VENV=.venv     virtualenv of the pinned clients
#   RAGQ_COMPAT_VENV_NEWEST=.venv-newest  virtualenv of the newest ragflow-sdk ("" = skip it)
#   RAGQ_SIM_*                 simulator latencies (defaults below are faster than W1 to keep
#                              the run short, but slow enough for several streamed events)
# Extra arguments go to pytest, e.g. `scripts/compat.sh -k openai -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/services.sh

VENV=${RAGQ_COMPAT_VENV:-.venv}
VENV_NEWEST=${RAGQ_COMPAT_VENV_NEWEST-.venv-newest}
make_venv() { # venv requirements [pip flags…]
  local venv=$1 req=$2
  shift 2
  if [ ! -x "$venv/bin/python" ]; then
    log "creating the virtualenv $venv"
    python3 -m venv "$venv"
  fi
  log "installing $req into $venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "$@" -r "$req"
}
make_venv "$VENV" tests/compat/requirements.txt
VENVS=("$VENV")
if [ -n "$VENV_NEWEST" ]; then
  make_venv "$VENV_NEWEST" tests/compat/requirements-newest.txt --upgrade --ignore-requires-python
  VENVS+=("$VENV_NEWEST")
fi

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

status=0
for venv in "${VENVS[@]}"; do
  sdk=$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("ragflow-sdk"))')
  if [ "$venv" = "$VENV_NEWEST" ]; then
    # The newer SDKs read RAGFlow >= 0.25's response shapes (docs/ARCHITECTURE.md,
    # RAGQ_RAGFLOW_COMPAT): restart ragq answering with them; the demo data stays.
    log "restarting ragq with RAGQ_RAGFLOW_COMPAT=0.25 for ragflow-sdk $sdk"
    RAGQ_RAGFLOW_COMPAT=0.25 RAGQ_WORKERS=2 bash scripts/up.sh >/dev/null
  fi
  log "running the compatibility tests (tests/compat) with ragflow-sdk $sdk ($venv)"
  one=0
  "$venv/bin/python" -m pytest tests/compat -p no:cacheprovider -rfEs "$@" || one=$?
  if [ "$one" -eq 5 ]; then
    log "pytest collected no tests: failing"
    one=1
  fi
  [ "$one" -eq 0 ] || status=$one
done
exit "$status"
